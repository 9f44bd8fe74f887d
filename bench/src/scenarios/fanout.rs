//! Fan-out: one project, many joined sockets, 1 KiB writes at a modest pace. For every
//! event: when it was created in the log (just before commit) and when the first and the
//! last socket got it; delivered frames per second; the hub's CPU time per 1,000 frames.

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::bail;
use futures_util::StreamExt;
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::Message;

use super::Pending;
use crate::harness::{self, Ctx, Hub, clock};
use crate::procfs;
use crate::report::{Report, Row, Value as V};
use crate::stats::Latencies;

/// Writes per second (each one event to every socket).
const RATE: f64 = 20.0;
/// File content per write; the frame adds ~300 bytes of envelope and metadata.
const CONTENT_BYTES: usize = 1024;
const WARMUP: u64 = 10;

pub fn run(ctx: &Ctx) -> Pending<'_> {
    Box::pin(measure(ctx))
}

/// Per seq: how many sockets got it, and when the first and the last did (clock ns).
struct Arrivals {
    count: AtomicU32,
    first: AtomicU64,
    last: AtomicU64,
}

async fn measure(ctx: &Ctx) -> anyhow::Result<Report> {
    let sockets: usize = if ctx.quick { 100 } else { 1_000 };
    let events: u64 = if ctx.quick { 200 } else { 1_000 };
    let mut report = Report::new(
        "fanout_1000",
        "One project with many joined WebSockets; one client writes 1 KiB files over HTTP (same path, new content \
         each time) at a steady pace; every socket receives every `file:update` frame.",
    );
    report.param("sockets", sockets);
    report.param("events", events);
    report.param("warm-up events (not counted)", WARMUP);
    report.param("pace", format!("{RATE} writes/s"));
    report.param("content", format!("{CONTENT_BYTES} bytes"));
    report.param("client source addresses", format!("127.0.0.2–127.0.0.{}", 1 + harness::SOURCE_ADDRESSES));

    let hub = ctx.start_hub("fanout").await?;
    let result = fan_out(ctx, &hub, sockets, events, &mut report).await;
    let log = hub.log_lines();
    hub.stop().await;
    result?;
    if !log.is_empty() {
        report.notes.push(format!("the hub logged {} warning/error lines, first: `{}`", log.len(), log[0]));
    }
    report.baseline = "none yet for this scenario (HOOK: `node_ws_baseline` in bench/src/scenarios/fanout.rs \
                       is where a Node `ws` broadcast server with the same sockets, frame size and pace goes)."
        .into();
    Ok(report)
}

/// HOOK(node-ws-baseline): a later task measures the same fan-out against a minimal
/// Node.js `ws` broadcast server (same socket count, frame size and pace, same client code
/// below) started by this scenario, and returns its numbers here; the rows then show
/// hub/Node ratios. Until then there is no fan-out baseline.
fn node_ws_baseline() -> Option<FanoutNumbers> {
    None
}

struct FanoutNumbers {
    created_to_last: Latencies,
    delivered_per_sec: f64,
}

async fn fan_out(ctx: &Ctx, hub: &Hub, sockets: usize, events: u64, report: &mut Report) -> anyhow::Result<()> {
    let project = ctx.create_project(hub, "bench fanout").await?;
    let connect_started = Instant::now();
    let sockets_open = ctx.open_joined(hub, project, sockets, 32).await?;
    let connect_secs = connect_started.elapsed().as_secs_f64();

    // The project is new: its seqs are 1, 2, 3, … (slack for anything else written to it).
    let capacity = (WARMUP + events) as usize + 64;
    let arrivals: Arc<Vec<Arrivals>> = Arc::new(
        (0..capacity)
            .map(|_| Arrivals { count: AtomicU32::new(0), first: AtomicU64::new(u64::MAX), last: AtomicU64::new(0) })
            .collect(),
    );
    let frames = Arc::new(AtomicU64::new(0));
    let mut readers = tokio::task::JoinSet::new();
    for mut ws in sockets_open {
        let (arrivals, frames) = (arrivals.clone(), frames.clone());
        readers.spawn(async move {
            while let Some(Ok(message)) = ws.next().await {
                let Message::Text(text) = message else { continue };
                let now = clock().now_ns();
                let Some(seq) = event_seq(text.as_str()) else { continue };
                frames.fetch_add(1, Ordering::Relaxed);
                if let Some(slot) = arrivals.get(seq) {
                    slot.count.fetch_add(1, Ordering::Relaxed);
                    slot.first.fetch_min(now, Ordering::Relaxed);
                    slot.last.fetch_max(now, Ordering::Relaxed);
                }
            }
        });
    }
    let all_arrived =
        |from: usize, to: usize| arrivals[from..to].iter().all(|a| a.count.load(Ordering::Relaxed) as usize >= sockets);

    // Warm-up: everything delivered everywhere before counting starts.
    let warm: Vec<(u64, i64)> = write_paced(ctx, hub, project, 0, WARMUP).await?;
    let warm_last = warm.iter().map(|(_, seq)| *seq).max().unwrap_or(0) as usize;
    wait_for(|| all_arrived(1, warm_last + 1), Duration::from_secs(30)).await?;

    let hub_cpu_before = hub.cpu()?;
    let own_cpu_before = procfs::self_cpu_time()?;
    let frames_before = frames.load(Ordering::Relaxed);
    ctx.statements_reset().await?;
    let written = write_paced(ctx, hub, project, WARMUP, events).await?;
    let seqs: Vec<usize> = written.iter().map(|(_, seq)| *seq as usize).collect();
    if seqs.iter().any(|&s| s >= capacity) {
        bail!("unexpected seqs (project not fresh?): {:?}", seqs.iter().max());
    }
    let complete = wait_for(
        || seqs.iter().all(|&s| arrivals[s].count.load(Ordering::Relaxed) as usize >= sockets),
        Duration::from_secs(30),
    )
    .await;
    let hub_cpu = hub.cpu()?.since(hub_cpu_before);
    let own_cpu = procfs::self_cpu_time()?.since(own_cpu_before);
    let delivered = frames.load(Ordering::Relaxed) - frames_before;
    readers.abort_all();
    let statements = ctx.statements_report(events).await?;
    if let Err(err) = complete {
        let missing: u64 = seqs
            .iter()
            .map(|&s| sockets as u64 - (arrivals[s].count.load(Ordering::Relaxed) as u64).min(sockets as u64))
            .sum();
        report.notes.push(format!("{missing} of {} deliveries had not arrived after 30 s", sockets as u64 * events));
        return Err(err);
    }

    let seq_list: Vec<i64> = written.iter().map(|(_, seq)| *seq).collect();
    let created = harness::event_times(ctx, project, &seq_list).await?;
    let (mut write_to_last, mut write_to_first, mut created_to_last, mut spread) =
        (Latencies::default(), Latencies::default(), Latencies::default(), Latencies::default());
    let first_sent = written.iter().map(|(sent, _)| *sent).min().unwrap_or(0);
    let mut last_arrival = 0;
    for (sent, seq) in &written {
        let slot = &arrivals[*seq as usize];
        let (first, last) = (slot.first.load(Ordering::Relaxed), slot.last.load(Ordering::Relaxed));
        last_arrival = last_arrival.max(last);
        write_to_last.record_ns(last.saturating_sub(*sent));
        write_to_first.record_ns(first.saturating_sub(*sent));
        spread.record_ns(last.saturating_sub(first));
        if let Some(created_us) = created.get(seq) {
            let created_ns = clock().wall_us_to_ns(*created_us);
            created_to_last.record_ns((last as i64 - created_ns).max(0) as u64);
        }
    }
    let window = (last_arrival.saturating_sub(first_sent)) as f64 / 1e9;
    let delivered_per_sec = delivered as f64 / window;
    let per_1000 = |d: Duration| d.as_secs_f64() * 1000.0 / (delivered as f64 / 1000.0);
    let cpu_per_1000_ms = per_1000(hub_cpu.total());

    let baseline = node_ws_baseline();
    const PENDING: &str = "(Node ws: pending)";
    for q in [0.5, 0.99] {
        let label = if q == 0.5 { "p50" } else { "p99" };
        let metric = format!("commit → last socket {label}");
        report.rows.push(match &baseline {
            Some(b) => Row::compared(metric, V::ms(b.created_to_last.ms(q)), V::ms(created_to_last.ms(q))),
            None => Row::alone(metric, V::ms(created_to_last.ms(q)), PENDING),
        });
    }
    report.rows.push(match &baseline {
        Some(b) => Row::compared("delivered events/s", V::per_sec(b.delivered_per_sec), V::per_sec(delivered_per_sec)),
        None => Row::alone("delivered events/s", V::per_sec(delivered_per_sec), PENDING),
    });
    report.rows.push(Row::alone("hub CPU per 1,000 delivered events (ms)", V::count(cpu_per_1000_ms), PENDING));
    report.rows.push(Row::alone("write → last socket p50", V::ms(write_to_last.ms(0.5)), PENDING));
    report.rows.push(Row::alone("write → last socket p99", V::ms(write_to_last.ms(0.99)), PENDING));

    report.notes.push(format!(
        "commit → last socket: from `synchub.events.created_at` (`clock_timestamp()` at the event insert, just \
         before commit) to the last of the {sockets} sockets receiving the frame: {}",
        created_to_last.summary()
    ));
    report.notes.push(format!("write (PUT sent) → first socket: {}", write_to_first.summary()));
    report.notes.push(format!("write (PUT sent) → last socket: {}", write_to_last.summary()));
    report.notes.push(format!("first → last socket, same event: {}", spread.summary()));
    report.notes.push(format!(
        "{delivered} frames delivered in {window:.1} s (offered: {sockets} sockets × {RATE} events/s = {:.0}/s); \
         the rate is paced, so this shows the hub keeping up, not its ceiling",
        sockets as f64 * RATE
    ));
    report.notes.push(format!(
        "CPU time while counting ({window:.1} s): hub {:.2} s = {:.0}% of one core ({cpu_per_1000_ms:.2} ms per \
         1,000 frames: user {:.2}, system {:.2}; on loopback the sender's system time includes the receiving \
         side's TCP processing); bench client {:.2} s (user {:.2}, system {:.2}), on the same 2 cores",
        hub_cpu.total().as_secs_f64(),
        hub_cpu.total().as_secs_f64() / window * 100.0,
        per_1000(hub_cpu.user),
        per_1000(hub_cpu.system),
        own_cpu.total().as_secs_f64(),
        own_cpu.user.as_secs_f64(),
        own_cpu.system.as_secs_f64(),
    ));
    report.notes.push(format!(
        "{sockets} sockets opened and joined in {connect_secs:.1} s ({:.0}/s, 32 handshakes at a time)",
        sockets as f64 / connect_secs
    ));
    report.notes.extend(statements);
    Ok(())
}

/// The seq of an event frame, without parsing the whole 1 KiB JSON: the hub writes
/// `{"type":"event","channel":"…","seq":N,…`.
fn event_seq(text: &str) -> Option<usize> {
    if !text.starts_with(r#"{"type":"event""#) {
        return None;
    }
    let rest = &text[text.find(r#""seq":"#)? + 6..];
    let end = rest.find(|c: char| !c.is_ascii_digit())?;
    rest[..end].parse().ok()
}

/// Writes files `from..from+count` at RATE; returns (clock ns just before sending, seq)
/// for each.
async fn write_paced(
    ctx: &Ctx,
    hub: &Hub,
    project: uuid::Uuid,
    from: u64,
    count: u64,
) -> anyhow::Result<Vec<(u64, i64)>> {
    let mut puts = tokio::task::JoinSet::new();
    let start = tokio::time::Instant::now();
    for k in 0..count {
        tokio::time::sleep_until(start + Duration::from_secs_f64(k as f64 / RATE)).await;
        let i = from + k;
        let mut content = format!("{i:08} ");
        content.push_str(&"x".repeat(CONTENT_BYTES - content.len()));
        let request = ctx
            .http
            .put(hub.url(&format!("/v1/projects/{project}/files/fanout.txt")))
            .bearer_auth(&ctx.token)
            .json(&json!({ "content": content }))
            .build()?;
        let client = ctx.http.clone();
        puts.spawn(async move {
            let sent = clock().now_ns();
            let response = client.execute(request).await?;
            let status = response.status();
            let body: Value = response.json().await?;
            if !status.is_success() {
                bail!("PUT {i} answered {status}: {body}");
            }
            let seq = body["seq"].as_i64().ok_or_else(|| anyhow::anyhow!("PUT {i}: no seq in {body}"))?;
            Ok((sent, seq))
        });
    }
    let mut written = Vec::with_capacity(count as usize);
    while let Some(result) = puts.join_next().await {
        written.push(result??);
    }
    Ok(written)
}

async fn wait_for(mut done: impl FnMut() -> bool, limit: Duration) -> anyhow::Result<()> {
    let deadline = Instant::now() + limit;
    while !done() {
        if Instant::now() > deadline {
            bail!("not every socket received every event within {} s", limit.as_secs());
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    Ok(())
}
