//! Delta payloads (CONTRACT section 12): a 1-character edit of a 1 MiB file, written as a
//! Fossil delta (`PATCH …/files/{path}`) and as a full upsert (`PUT`), alternated in blocks
//! in the same run on the same file. Measured: the request body bytes (upstream), the event
//! frame bytes on a socket that saw the previous version (downstream; the hub sends it the
//! delta either way) against a full `file:update` of the file, and write → event latency.

use std::time::Duration;

use anyhow::{Context, bail};
use futures_util::StreamExt;
use serde_json::json;
use synchub_protocol::{ServerFrame, delta};
use tokio_tungstenite::tungstenite::Message;

use super::Pending;
use crate::harness::{self, Ctx, Ws, clock};
use crate::report::{Goal, Report, Row, Value as V};
use crate::stats::Latencies;

const FILE_BYTES: usize = 1 << 20;
const PATH: &str = "delta/big.ts";

pub fn run(ctx: &Ctx) -> Pending<'_> {
    Box::pin(measure(ctx))
}

#[derive(Default)]
struct Mode {
    latency: Latencies,
    request_bytes: Vec<usize>,
    event_bytes: Vec<usize>,
}

async fn measure(ctx: &Ctx) -> anyhow::Result<Report> {
    let (blocks, per_block) = if ctx.quick { (2, 5) } else { (10, 20) };
    let mut report = Report::new(
        "delta_payloads",
        "issue #15 (deltas)",
        "A 1-character edit of a 1 MiB source file: written as a Fossil delta (`PATCH …/files/{path}` \
         `{base_version, delta}`) or as a full `PUT` of the same file, alternated in blocks in one run, one edit at a \
         time (closed loop). Bytes: the HTTP request body and the WebSocket text frame of the event on a socket \
         that saw the previous version (HTTP headers and WebSocket/TCP framing not counted). Latency: just before \
         the request is sent → its `file:update` frame arrives on that socket.",
    );
    report.param("file", "1 MiB (1,048,576 bytes) of TypeScript-like lines");
    report.param("edits per mode", blocks * per_block);
    report.param("blocks", format!("{blocks} × {per_block} edits per mode, PATCH and PUT alternating"));
    report.baseline = "the same edit written as a full `PUT {content, expected_version}`; downstream, a full \
                       `file:update` frame of the file (what a socket that did not see the base receives)"
        .into();

    let hub = ctx.start_hub("delta_payloads").await?;
    let project = ctx.create_project(&hub, "bench delta_payloads").await?;
    let mut ws = harness::connect_joined(hub.addr, &ctx.token, None, project).await?;
    let mut content = String::with_capacity(FILE_BYTES + 64);
    for i in 0.. {
        if content.len() >= FILE_BYTES {
            break;
        }
        content.push_str(&format!("export const value{i:07} = {i} * 2; // line\n"));
    }
    content.truncate(FILE_BYTES);
    let url = hub.url(&format!("/v1/projects/{project}/files/{PATH}"));
    // Version 1, delivered in full: the socket has the base from now on.
    let first = ctx.http.put(&url).bearer_auth(&ctx.token).json(&json!({"content": content})).send().await?;
    if !first.status().is_success() {
        bail!("PUT answered {}", first.status());
    }
    let full_frame_bytes = next_update(&mut ws).await?.1;
    let mut version = 1u64;

    let (mut patch, mut put) = (Mode::default(), Mode::default());
    let mut edit = 0usize;
    for block in 0..blocks * 2 {
        let as_delta = block % 2 == 0;
        for _ in 0..per_block {
            // A different character each time, spread over the file.
            let at = (edit * 7919) % (FILE_BYTES - 1);
            let replacement = if content.as_bytes()[at] == b'#' { "@" } else { "#" };
            let mut next = content.clone();
            next.replace_range(at..at + 1, replacement);
            edit += 1;
            let body = if as_delta {
                json!({"base_version": version, "delta": delta::encode(&content, &next)})
            } else {
                json!({"content": next, "expected_version": version})
            };
            let body = serde_json::to_vec(&body)?;
            let request = if as_delta { ctx.http.patch(&url) } else { ctx.http.put(&url) };
            let sent = clock().now_ns();
            let response = request
                .bearer_auth(&ctx.token)
                .header("content-type", "application/json")
                .body(body.clone())
                .send()
                .await?;
            if !response.status().is_success() {
                bail!(
                    "{} answered {}: {}",
                    if as_delta { "PATCH" } else { "PUT" },
                    response.status(),
                    response.text().await?
                );
            }
            let (arrived, frame_bytes) = next_update(&mut ws).await?;
            let mode = if as_delta { &mut patch } else { &mut put };
            mode.latency.record_ns(arrived.saturating_sub(sent));
            mode.request_bytes.push(body.len());
            mode.event_bytes.push(frame_bytes);
            content = next;
            version += 1;
        }
    }
    let mut log = hub.log_lines();
    hub.stop().await;

    let median = |values: &[usize]| {
        let mut sorted = values.to_vec();
        sorted.sort_unstable();
        sorted[sorted.len() / 2] as f64 / 1024.0
    };
    report.rows.push(
        Row::compared(
            "upstream: request body, median (baseline: PUT)",
            V::kib(median(&put.request_bytes)),
            V::kib(median(&patch.request_bytes)),
        )
        .goal(Goal::AtMost(1.0)),
    );
    report.rows.push(
        Row::compared(
            "downstream: event frame, median (baseline: full file:update)",
            V::kib(full_frame_bytes as f64 / 1024.0),
            V::kib(median(&patch.event_bytes)),
        )
        .goal(Goal::AtMost(1.0)),
    );
    for q in [0.5, 0.99] {
        let label = if q == 0.5 { "p50" } else { "p99" };
        report.rows.push(Row::compared(
            format!("write → event {label}, PATCH (baseline: PUT {label})"),
            V::ms(put.latency.ms(q)),
            V::ms(patch.latency.ms(q)),
        ));
    }
    ctx.publish("delta_payloads/upstream_kib", median(&patch.request_bytes));
    ctx.publish("delta_payloads/downstream_kib", median(&patch.event_bytes));
    report.notes.push(format!("PATCH write → event: {}", patch.latency.summary()));
    report.notes.push(format!("PUT write → event: {}", put.latency.summary()));
    report.notes.push(format!(
        "event frames after a PUT (the socket saw the base, so the hub sends the delta there too): median {:.2} KiB",
        median(&put.event_bytes)
    ));
    log.truncate(3);
    if !log.is_empty() {
        report.notes.push(format!("the hub logged warning/error lines, first: `{}`", log[0]));
    }
    Ok(report)
}

/// The next `file:update` on the socket: when it arrived and its frame's size in bytes.
async fn next_update(ws: &mut Ws) -> anyhow::Result<(u64, usize)> {
    loop {
        let message = tokio::time::timeout(Duration::from_secs(30), ws.next())
            .await
            .context("no event within 30 s")?
            .context("socket closed")??;
        let Message::Text(text) = message else { continue };
        let arrived = clock().now_ns();
        if let ServerFrame::Event(frame) = ServerFrame::parse(text.as_str())?
            && frame.event == synchub_protocol::event_names::FILE_UPDATE
        {
            return Ok((arrived, text.len()));
        }
    }
}
