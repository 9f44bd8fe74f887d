//! Writes per second through the hub: 1 and 8 concurrent writers, each in a closed loop
//! (send, wait for the answer, send the next), over HTTP `PUT` and over the socket's
//! `upsert` frame, while two subscriber sockets are joined to the project (so every write
//! is also fanned out). Baseline, same run: pgbench calling the same SQL function
//! (`synchub.upsert_project_file`) with the same client count, half before and half after
//! the hub phases (A-B-A).
//!
//! The two-hub variant runs a second hub process on the same database: the writers stay on
//! hub A, one subscriber is on A and the other on B (B learns of each write through
//! PostgreSQL), and it also compares with the one-hub figures of the same run.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use futures_util::{SinkExt, StreamExt};
use synchub_protocol::{AckFrame, ClientFrame, Ref, ServerFrame, channel_name};
use tokio_tungstenite::tungstenite::Message;
use uuid::Uuid;

use super::Pending;
use crate::harness::{self, Ctx, Hub};
use crate::pgbench;
use crate::report::{Goal, Report, Row, Value as V};
use crate::stats::Latencies;

/// Paths per writer (`tp/<writer>/<k>.txt`): writers never touch each other's files.
const PATHS_PER_WRITER: u64 = 100;

pub fn run(ctx: &Ctx) -> Pending<'_> {
    Box::pin(measure(ctx, false))
}

pub fn run_two_hubs(ctx: &Ctx) -> Pending<'_> {
    Box::pin(measure(ctx, true))
}

struct Side {
    writes: u64,
    seconds: f64,
    latencies: Latencies,
}

impl Side {
    fn per_sec(&self) -> f64 {
        self.writes as f64 / self.seconds
    }
}

#[derive(Clone, Copy)]
enum Via {
    Http,
    Socket,
}

async fn measure(ctx: &Ctx, two_hubs: bool) -> anyhow::Result<Report> {
    let seconds: u64 = if ctx.quick { 1 } else { 10 };
    let name = if two_hubs { "write_throughput_2hubs" } else { "write_throughput" };
    let mut report = Report::new(
        name,
        "#1",
        if two_hubs {
            "The same as write_throughput with a second hub process on the same database: writers on hub A, one \
             subscriber socket joined on A and one on B. Compared with pgbench (same run) and with the one-hub \
             figures of write_throughput (same run)."
        } else {
            "Closed-loop writers (each sends a write, waits for its answer, sends the next) of content `x` to their \
             own 100 paths in one project: over HTTP `PUT /v1/projects/{id}/files/tp/W/K.txt`, and over one \
             WebSocket per writer with `upsert` frames (answered by `ack`). Two more sockets are joined to the \
             project as subscribers and receive every event."
        },
    );
    report.param("seconds per hub phase", seconds);
    report.param("writers", "1 and 8");
    report.param("hubs", if two_hubs { "2 (writers on A; subscribers on A and B)" } else { "1" });
    let hub = ctx.start_hub(name).await?;
    let second = if two_hubs { Some(ctx.start_hub(&format!("{name}-b")).await?) } else { None };
    let result = phases(ctx, &hub, second.as_ref(), seconds, &mut report).await;
    let mut log = hub.log_lines();
    hub.stop().await;
    if let Some(second) = second {
        log.extend(second.log_lines());
        second.stop().await;
    }
    result?;
    if !log.is_empty() {
        report.notes.push(format!("the hubs logged {} warning/error lines, first: `{}`", log.len(), log[0]));
    }
    Ok(report)
}

async fn phases(ctx: &Ctx, hub: &Hub, second: Option<&Hub>, seconds: u64, report: &mut Report) -> anyhow::Result<()> {
    let project = ctx.create_project(hub, &format!("bench {}", report.name)).await?;
    // Two subscribers that read every event (as an editor tab would): both on A, or one
    // on A and one on B.
    let frames = Arc::new(AtomicU64::new(0));
    let mut subscribers = tokio::task::JoinSet::new();
    for sub_hub in [hub, second.unwrap_or(hub)] {
        let mut ws = harness::connect_joined(sub_hub.addr, &ctx.token, None, project).await?;
        let frames = frames.clone();
        subscribers.spawn(async move {
            while let Some(Ok(message)) = ws.next().await {
                if matches!(&message, Message::Text(t) if t.as_str().starts_with(r#"{"type":"event""#)) {
                    frames.fetch_add(1, Ordering::Relaxed);
                }
            }
        });
    }
    // Warm-up: pool connections, prepared statements, the files exist.
    pgbench::upsert_throughput(ctx, project, 8, 1, "tp-warmup").await?;
    run_writers(ctx, hub, project, 8, Duration::from_secs(1), Via::Http).await?;
    run_writers(ctx, hub, project, 8, Duration::from_secs(1), Via::Socket).await?;
    let mut command = String::new();
    for writers in [1usize, 8] {
        let half = seconds.div_ceil(2);
        let before = pgbench::upsert_throughput(ctx, project, writers, half, &format!("tp-{writers}-a")).await?;
        let http = run_writers(ctx, hub, project, writers, Duration::from_secs(seconds), Via::Http).await?;
        let socket = run_writers(ctx, hub, project, writers, Duration::from_secs(seconds), Via::Socket).await?;
        let after = pgbench::upsert_throughput(ctx, project, writers, half, &format!("tp-{writers}-b")).await?;
        let mut base_latency = Latencies::default();
        base_latency.merge(&before.latencies);
        base_latency.merge(&after.latencies);
        let base_rate = (before.transactions + after.transactions) as f64 / (before.seconds + after.seconds);
        let w = if writers == 1 { "1 writer".to_string() } else { format!("{writers} writers") };
        report.rows.push(
            Row::compared(format!("writes/s, HTTP PUT, {w}"), V::per_sec(base_rate), V::per_sec(http.per_sec()))
                .goal(Goal::RatioAtLeast(0.8)),
        );
        report.rows.push(
            Row::compared(format!("writes/s, socket upsert, {w}"), V::per_sec(base_rate), V::per_sec(socket.per_sec()))
                .goal(Goal::RatioAtLeast(0.8)),
        );
        report.rows.push(Row::compared(
            format!("write latency p50, HTTP PUT, {w}"),
            V::ms(base_latency.ms(0.5)),
            V::ms(http.latencies.ms(0.5)),
        ));
        report.rows.push(Row::compared(
            format!("write latency p99, HTTP PUT, {w}"),
            V::ms(base_latency.ms(0.99)),
            V::ms(http.latencies.ms(0.99)),
        ));
        // Relative to pgbench (same client count), so the two scenarios can be compared
        // even though the machine's load drifts between them.
        for (via, side) in [("http", &http), ("socket", &socket)] {
            let key = format!("write_throughput/{via}/{writers}");
            let relative = side.per_sec() / base_rate;
            if second.is_some() {
                if let Some(one_hub) = ctx.published(&key) {
                    report.rows.push(Row::compared(
                        format!("{via} writes/s ÷ pgbench, {w}: 2 hubs vs 1 hub (write_throughput)"),
                        V::count((one_hub * 1000.0).round() / 1000.0),
                        V::count((relative * 1000.0).round() / 1000.0),
                    ));
                }
            } else {
                ctx.publish(key, relative);
            }
        }
        report.notes.push(format!(
            "{w}: pgbench {:.0}/s before and {:.0}/s after the hub phases (latency {}); HTTP PUT {} writes in {:.1} s \
             (latency {}); socket upsert {} writes in {:.1} s (latency {})",
            before.per_sec(),
            after.per_sec(),
            base_latency.summary(),
            http.writes,
            http.seconds,
            http.latencies.summary(),
            socket.writes,
            socket.seconds,
            socket.latencies.summary()
        ));
        command = before.command;
    }
    subscribers.abort_all();
    let frames = frames.load(Ordering::Relaxed);
    if frames == 0 {
        bail!("the subscribers received no event");
    }
    report.notes.push(format!("the two subscribers received {frames} event frames in all"));
    report.baseline = format!(
        "`pgbench -M prepared -c N -j N -T S -l` (closed loop) running `SELECT * FROM \
         synchub.upsert_project_file(:project, 'tp/' || :client_id || '/' || :k || '.txt', 'x', NULL, NULL, \
         'bench-user', NULL)` (k random in 1..100) against the same database and project with the same client \
         count, half of the time before the hub phases and half after; transactions per second over the logged \
         transactions' span. Command (1 writer, first half): `{command}`"
    );
    Ok(())
}

/// `writers` closed-loop writers for `duration`; every write must succeed.
async fn run_writers(
    ctx: &Ctx,
    hub: &Hub,
    project: Uuid,
    writers: usize,
    duration: Duration,
    via: Via,
) -> anyhow::Result<Side> {
    let started = Instant::now();
    let deadline = started + duration;
    let mut tasks = tokio::task::JoinSet::new();
    for w in 0..writers {
        let http = ctx.http.clone();
        let token = ctx.token.clone();
        let (addr, base) = (hub.addr, hub.url(&format!("/v1/projects/{project}/files")));
        tasks.spawn(async move {
            let mut latencies = Latencies::default();
            let mut writes = 0u64;
            match via {
                Via::Http => {
                    while Instant::now() < deadline {
                        let url = format!("{base}/tp/{w}/{}.txt", writes % PATHS_PER_WRITER + 1);
                        let sent = Instant::now();
                        let response = http.put(url).bearer_auth(&token).json(&harness::put_body("x")).send().await?;
                        let status = response.status();
                        let body = response.bytes().await?;
                        if !status.is_success() {
                            bail!("PUT answered {status}: {}", String::from_utf8_lossy(&body));
                        }
                        latencies.record_ns(sent.elapsed().as_nanos() as u64);
                        writes += 1;
                    }
                }
                Via::Socket => {
                    let mut ws = harness::connect(addr, &token, None).await?;
                    let channel = channel_name(project);
                    while Instant::now() < deadline {
                        let path = format!("tp/{w}/{}.txt", writes % PATHS_PER_WRITER + 1);
                        let reference = Ref::from(writes.to_string());
                        let frame = ClientFrame::Upsert {
                            reference: Some(reference.clone()),
                            channel: channel.clone(),
                            path,
                            content: Some("x".into()),
                            base_version: None,
                            delta: None,
                            file_type: None,
                            expected_version: None,
                            op_id: None,
                        };
                        let sent = Instant::now();
                        ws.send(Message::Text(frame.to_text().into())).await?;
                        loop {
                            let message = tokio::time::timeout(Duration::from_secs(30), ws.next())
                                .await
                                .context("no ack within 30 s")?
                                .context("socket closed")??;
                            let Message::Text(text) = message else { continue };
                            match ServerFrame::parse(text.as_str())? {
                                ServerFrame::Ack(AckFrame::Ok(ack)) if ack.reference.as_ref() == Some(&reference) => {
                                    break;
                                }
                                ServerFrame::Ack(AckFrame::Err(ack)) if ack.reference.as_ref() == Some(&reference) => {
                                    bail!("upsert refused: {}: {}", ack.error.code, ack.error.message)
                                }
                                _ => {}
                            }
                        }
                        latencies.record_ns(sent.elapsed().as_nanos() as u64);
                        writes += 1;
                    }
                    let _ = ws.close(None).await;
                }
            }
            Ok::<_, anyhow::Error>((writes, latencies))
        });
    }
    let mut side = Side { writes: 0, seconds: 0.0, latencies: Latencies::default() };
    while let Some(result) = tasks.join_next().await {
        let (writes, latencies) = result??;
        side.writes += writes;
        side.latencies.merge(&latencies);
    }
    side.seconds = started.elapsed().as_secs_f64();
    Ok(side)
}
