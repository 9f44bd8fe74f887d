//! Writes per second through the hub: 1 and 8 concurrent writers, each in a closed loop
//! (send, wait for the answer, send the next), over HTTP `PUT` and over the socket's
//! `upsert` frame, while two subscriber sockets are joined to the project (so every write
//! is also fanned out). Baseline, same run: pgbench calling the same SQL function
//! (`synchub.upsert_project_file`) with the same client count, interleaved with the hub's
//! blocks ([`Ctx::interleave`]: hub block = HTTP then socket writers; baseline block =
//! pgbench; judged on the median of the per-pair ratios).
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
use crate::report::{Goal, Report, Row, Unit, Value as V};
use crate::stats;
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

/// One block of the interleaved measurement: the hub's HTTP and socket writers (subject) or
/// pgbench (baseline, in `http`; `socket` unused).
struct Block {
    http: Side,
    socket: Side,
    command: String,
}

impl Block {
    fn empty() -> Side {
        Side { writes: 0, seconds: 1.0, latencies: Latencies::default() }
    }
}

#[derive(Clone, Copy)]
enum Via {
    Http,
    Socket,
}

async fn measure(ctx: &Ctx, two_hubs: bool) -> anyhow::Result<Report> {
    // Per block; pgbench takes whole seconds.
    let seconds: u64 = if ctx.quick { 1 } else { 4 };
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
    report.param("seconds per block (HTTP, socket, pgbench; --quick: hub blocks 0.5 s)", seconds);
    report.param("pairs (hub block | pgbench block)", ctx.pairs());
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
    // Warm-up: pool connections, prepared statements, the files exist (skipped by the
    // quick smoke check, whose numbers are not judged).
    if !ctx.quick {
        pgbench::upsert_throughput(ctx, project, 8, 1, "tp-warmup").await?;
        run_writers(ctx, hub, project, 8, Duration::from_secs(1), Via::Http).await?;
        run_writers(ctx, hub, project, 8, Duration::from_secs(1), Via::Socket).await?;
    }
    let mut command = String::new();
    // The quick smoke check's hub blocks are shorter than pgbench's whole second: its
    // numbers are not judged, and CI's run must stay short.
    let block_time = if ctx.quick { Duration::from_millis(500) } else { Duration::from_secs(seconds) };
    for writers in [1usize, 8] {
        let blocks = ctx
            .interleave(ctx.pairs(), async |side, pair| match side {
                harness::Side::Subject => Ok(Block {
                    http: run_writers(ctx, hub, project, writers, block_time, Via::Http).await?,
                    socket: run_writers(ctx, hub, project, writers, block_time, Via::Socket).await?,
                    command: String::new(),
                }),
                harness::Side::Baseline => {
                    let run =
                        pgbench::upsert_throughput(ctx, project, writers, seconds, &format!("tp-{writers}-{pair}"))
                            .await?;
                    let side = Side { writes: run.transactions, seconds: run.seconds, latencies: run.latencies };
                    Ok(Block { http: side, socket: Block::empty(), command: run.command })
                }
            })
            .await?;
        // The baseline's figure is pgbench's in both rows (it sits in `http`).
        let base_rate = |b: &Block| b.http.per_sec();
        let w = if writers == 1 { "1 writer".to_string() } else { format!("{writers} writers") };
        let http_rate = blocks.figures(|b: &Block| b.http.per_sec());
        let socket_rate: Vec<(f64, f64)> =
            blocks.pairs.iter().map(|p| (base_rate(&p.baseline), p.subject.socket.per_sec())).collect();
        report.rows.push(
            Row::paired(format!("writes/s, HTTP PUT, {w}"), Unit::PerSec, &http_rate).goal(Goal::RatioAtLeast(0.8)),
        );
        report.rows.push(
            Row::paired(format!("writes/s, socket upsert, {w}"), Unit::PerSec, &socket_rate)
                .goal(Goal::RatioAtLeast(0.8)),
        );
        let base_latency = blocks.merged(harness::Side::Baseline, |b| &b.http.latencies);
        let http_latency = blocks.merged(harness::Side::Subject, |b| &b.http.latencies);
        let socket_latency = blocks.merged(harness::Side::Subject, |b| &b.socket.latencies);
        report
            .rows
            .push(blocks.row(format!("write latency p50, HTTP PUT, {w}"), Unit::Ms, |b| b.http.latencies.ms(0.5)));
        report
            .rows
            .push(blocks.row(format!("write latency p99, HTTP PUT, {w}"), Unit::Ms, |b| b.http.latencies.ms(0.99)));
        // Relative to pgbench (same client count), so the two scenarios can be compared
        // even though the machine's load drifts between them.
        for (via, figures) in [("http", &http_rate), ("socket", &socket_rate)] {
            let key = format!("write_throughput/{via}/{writers}");
            let ratios: Vec<f64> = figures.iter().filter(|f| f.0 > 0.0).map(|f| f.1 / f.0).collect();
            let relative = stats::median(&ratios);
            if second.is_some() {
                if let Some(one_hub) = ctx.published(&key) {
                    report.rows.push(Row::compared(
                        format!("{via} writes/s ÷ pgbench (median of pairs), {w}: 2 hubs vs 1 hub (write_throughput)"),
                        V::count((one_hub * 1000.0).round() / 1000.0),
                        V::count((relative * 1000.0).round() / 1000.0),
                    ));
                }
            } else {
                ctx.publish(key, relative);
            }
        }
        report.notes.push(blocks.note(&format!("{w}: HTTP PUT writes/s (baseline: pgbench)"), |b| b.http.per_sec()));
        report.notes.push(format!(
            "{w}, all pairs: pgbench latency {}; HTTP PUT latency {}; socket upsert latency {}; socket upsert writes/s \
             per pair {:?}",
            base_latency.summary(),
            http_latency.summary(),
            socket_latency.summary(),
            socket_rate.iter().map(|f| f.1.round()).collect::<Vec<_>>()
        ));
        if let Some(pair) = blocks.pairs.first() {
            command.clone_from(&pair.baseline.command);
        }
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
         count, in blocks alternating with the hub's (ABAB…); transactions per second over the logged \
         transactions' span. Command (8 writers, first block): `{command}`"
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
