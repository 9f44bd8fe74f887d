//! write → event latency: from an HTTP PUT's scheduled send time to the moment the matching
//! `file:update` frame arrives on a socket joined to the project, one write every 10 ms.
//! Baseline, same run: pgbench committing the same SQL function
//! (`synchub.upsert_project_file`) from one client at the same pace. The two run in short
//! alternating blocks (hub, pgbench, hub, pgbench, …; [`Ctx::interleave`]) and the goals are
//! judged on the median of the per-pair figures. Both sides count queueing alike: latencies
//! run from each write's scheduled time (pgbench `-R` does so itself), so a write that waited
//! behind a slow one carries its wait on both sides (coordinated omission corrected).

use std::sync::Arc;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use futures_util::StreamExt;
use synchub_protocol::{ServerFrame, event_names};
use tokio_tungstenite::tungstenite::Message;

use super::Pending;
use crate::harness::{self, Ctx, Side, clock};
use crate::pgbench;
use crate::report::{Goal, Report, Row, Unit, Value as V};
use crate::stats::Latencies;

const RATE: f64 = 100.0;

pub fn run(ctx: &Ctx) -> Pending<'_> {
    Box::pin(measure(ctx, false))
}

/// The same with the subscriber on a second hub process: the event reaches it through the
/// post-commit NOTIFY and that hub's own read of the log.
pub fn run_two_hubs(ctx: &Ctx) -> Pending<'_> {
    Box::pin(measure(ctx, true))
}

/// One block's figures, either side (the hub-only ones stay empty for pgbench).
#[derive(Default)]
struct Block {
    /// Hub: scheduled send → frame received; pgbench: scheduled start → commit.
    latency: Latencies,
    /// pgbench: the commit alone (schedule lag subtracted).
    service: Latencies,
    put_ack: Latencies,
    created_to_event: Latencies,
    /// How late the load generator started each write after its scheduled time (hub: PUT
    /// handed to the HTTP client; pgbench: its schedule lag). In both sides' latencies.
    send_lag: Latencies,
    /// Hub: PUTs answered 503 (the database fell behind the pace; not in the latencies).
    refused: u64,
}

async fn measure(ctx: &Ctx, two_hubs: bool) -> anyhow::Result<Report> {
    let pairs = ctx.pairs();
    let per_block: u64 = if ctx.quick { 48 } else { 200 };
    let warmup: u64 = if ctx.quick { 20 } else { 50 };
    let name = if two_hubs { "write_event_latency_2hubs" } else { "write_event_latency" };
    let mut report = Report::new(
        name,
        if two_hubs { "#2 (2 hubs)" } else { "#2" },
        if two_hubs {
            "As write_event_latency, with two hub processes on the same database: the PUTs go to hub A, the \
             subscribed WebSocket is on hub B (the event travels with A's post-commit NOTIFY once B has said it \
             subscribes to the project, else by B's read of the log after it)."
        } else {
            "Time from an HTTP `PUT /v1/projects/{id}/files/lat/N.txt` (content `x`)'s scheduled send time to the \
             arrival of its `file:update` frame on one WebSocket joined to the project, paced at 100 writes/s (PUTs \
             are not waited for before the next one is sent)."
        },
    );
    report.param("hubs", if two_hubs { "2 (PUTs to A, subscriber on B)" } else { "1" });
    report.param("pairs of blocks (hub, pgbench)", pairs);
    report.param("writes per block", per_block);
    report.param("warm-up writes per side (not counted)", warmup);
    report.param("pace", format!("{RATE} writes/s"));

    let (hub, project) = ctx.hub_with_project(name).await?;
    let second = if two_hubs { Some(ctx.start_hub(&format!("{name}-b")).await?) } else { None };
    let subscriber_hub = second.as_ref().unwrap_or(&hub);
    let total = warmup + pairs as u64 * per_block;
    let result = async {
        let subscriber = Subscriber::start(ctx, subscriber_hub, project, total as usize).await?;
        // Warm-up of both sides, thrown away.
        pgbench::upsert(ctx, project, warmup, RATE, "warmup").await?;
        subscriber.block(ctx, &hub, project, 0, warmup).await?;
        ctx.statements_reset().await?;
        let mut command = String::new();
        let mut statement_ms = Vec::new();
        let measured = ctx
            .interleave(pairs, async |side, pair| match side {
                Side::Subject => {
                    subscriber.block(ctx, &hub, project, warmup + pair as u64 * per_block, per_block).await
                }
                Side::Baseline => {
                    let run = pgbench::upsert(ctx, project, per_block, RATE, &format!("b{pair}")).await?;
                    command = run.command;
                    statement_ms.extend(run.statement_avg_ms);
                    Ok(Block { latency: run.latencies, service: run.service, send_lag: run.lag, ..Block::default() })
                }
            })
            .await?;
        let statements = ctx.statements_report(total).await?;
        subscriber.stop();
        Ok::<_, anyhow::Error>((measured, command, statements, statement_ms))
    }
    .await;
    let mut log = hub.log_lines();
    hub.stop().await;
    if let Some(second) = second {
        log.extend(second.log_lines());
        second.stop().await;
    }
    let (measured, command, statements, statement_ms) = result?;

    report.baseline = format!(
        "`pgbench -M prepared -c 4 -j 1 -R {RATE} -l` (4 connections, so that a commit waiting behind another is not held back on the client side, as the hub's PUTs are not) running `SELECT * FROM synchub.upsert_project_file(:project, \
         'bench/' || :n || '.txt', 'x', NULL, NULL, 'bench-user', NULL)` (n random) against the same database and \
         project; latency per transaction from pgbench's own per-transaction log (`-l`), from the scheduled start \
         (schedule lag included, as on the hub side). {per_block} transactions per block, in blocks alternating with \
         the hub's. Command: `{command}`"
    );
    for (q, label) in [(0.5, "p50"), (0.99, "p99")] {
        let goal = if q == 0.5 { Goal::PlusAtMost(1.0) } else { Goal::PlusAtMost(2.0) };
        report.rows.push(
            measured
                .row(format!("write → event {label} (baseline: SQL commit {label})"), Unit::Ms, |b| b.latency.ms(q))
                .goal(goal),
        );
    }
    let hub_all = measured.merged(Side::Subject, |b| &b.latency);
    let commit_all = measured.merged(Side::Baseline, |b| &b.latency);
    if !two_hubs {
        ctx.publish("write_event_latency/p50_ms", hub_all.ms(0.5));
        ctx.publish("write_event_latency/p99_ms", hub_all.ms(0.99));
    }
    for (q, label) in [(0.5, "p50"), (0.99, "p99")] {
        report.rows.push(measured.row(
            format!("PUT → HTTP response {label} (baseline: SQL commit {label})"),
            Unit::Ms,
            |b| if b.put_ack.count() > 0 { b.put_ack.ms(q) } else { b.latency.ms(q) },
        ));
    }
    let created = measured.merged(Side::Subject, |b| &b.created_to_event);
    report.rows.push(Row::alone(
        "event row created → frame received p50",
        V::ms(created.ms(0.5)),
        "(hub-internal part)",
    ));
    report.rows.push(Row::alone(
        "event row created → frame received p99",
        V::ms(created.ms(0.99)),
        "(hub-internal part)",
    ));
    let refused: Vec<u64> = measured.pairs.iter().map(|p| p.subject.refused).collect();
    if refused.iter().any(|&r| r > 0) {
        report.notes.push(format!(
            "PUTs the hub answered 503 per hub block (its database pool's wait ran out: commits fell behind the \
             pace; those writes are not in the latencies, pgbench's late commits are): {refused:?}"
        ));
    }
    report.notes.push(measured.note("write → event p50 ms", |b| b.latency.ms(0.5)));
    report.notes.push(measured.note("write → event p99 ms", |b| b.latency.ms(0.99)));
    report.notes.push(format!("write → event, all blocks: {}", hub_all.summary()));
    report
        .notes
        .push(format!("PUT → HTTP response, all blocks: {}", measured.merged(Side::Subject, |b| &b.put_ack).summary()));
    report.notes.push(format!(
        "each load generator's own lateness, part of its side's latencies (hub: PUT handed to the HTTP client − \
         its scheduled time: {}; pgbench: its schedule lag: {})",
        measured.merged(Side::Subject, |b| &b.send_lag).summary(),
        measured.merged(Side::Baseline, |b| &b.send_lag).summary()
    ));
    report.notes.push(format!("SQL commit from schedule (pgbench, all blocks): {}", commit_all.summary()));
    report.notes.push(format!(
        "SQL commit alone (pgbench, schedule lag subtracted, all blocks): {}",
        measured.merged(Side::Baseline, |b| &b.service).summary()
    ));
    report.notes.push(format!(
        "event row created → frame received: from `synchub.events.created_at` (`clock_timestamp()` at the event \
         insert, shortly before commit; same machine clock) to the frame's arrival: what the hub adds after the \
         write itself (commit, wake-up, reading the log, sending). {}",
        created.summary()
    ));
    report.notes.push(format!(
        "pgbench `-r` statement latency average per baseline block: {:?} ms",
        statement_ms.iter().map(|v| (v * 1000.0).round() / 1000.0).collect::<Vec<_>>()
    ));
    report.notes.extend(statements);
    if !log.is_empty() {
        report.notes.push(format!("the hub logged {} warning/error lines, first: `{}`", log.len(), log[0]));
    }
    Ok(report)
}

/// One WebSocket joined to the project for the whole scenario, recording when each
/// `lat/N.txt` write's frame arrived.
struct Subscriber {
    received: Arc<Vec<AtomicU64>>,
    seqs: Arc<Vec<AtomicI64>>,
    reader: tokio::task::JoinHandle<()>,
}

impl Subscriber {
    async fn start(ctx: &Ctx, hub: &harness::Hub, project: uuid::Uuid, total: usize) -> anyhow::Result<Self> {
        let received: Arc<Vec<AtomicU64>> = Arc::new((0..total).map(|_| AtomicU64::new(0)).collect());
        let seqs: Arc<Vec<AtomicI64>> = Arc::new((0..total).map(|_| AtomicI64::new(0)).collect());
        let mut ws = harness::connect_joined(hub.addr, &ctx.token, None, project).await?;
        let reader = {
            let (received, seqs) = (received.clone(), seqs.clone());
            tokio::spawn(async move {
                while let Some(Ok(message)) = ws.next().await {
                    let Message::Text(text) = message else { continue };
                    let now = clock().now_ns();
                    let Ok(ServerFrame::Event(frame)) = ServerFrame::parse(text.as_str()) else { continue };
                    if frame.event != event_names::FILE_UPDATE {
                        continue;
                    }
                    let Some(i) = frame.payload["file_path"]
                        .as_str()
                        .and_then(|p| p.strip_prefix("lat/")?.strip_suffix(".txt")?.parse::<usize>().ok())
                    else {
                        continue;
                    };
                    if i < received.len() && received[i].load(Ordering::Relaxed) == 0 {
                        seqs[i].store(frame.seq, Ordering::Relaxed);
                        received[i].store(now, Ordering::Relaxed);
                    }
                }
            })
        };
        Ok(Subscriber { received, seqs, reader })
    }

    fn stop(&self) {
        self.reader.abort();
    }

    /// Writes `lat/{from}.txt` … `lat/{from+count-1}.txt` at RATE through `hub` and waits
    /// for all their frames.
    async fn block(
        &self,
        ctx: &Ctx,
        hub: &harness::Hub,
        project: uuid::Uuid,
        from: u64,
        count: u64,
    ) -> anyhow::Result<Block> {
        let mut puts = tokio::task::JoinSet::new();
        let start = tokio::time::Instant::now();
        for (k, i) in (from as usize..(from + count) as usize).enumerate() {
            let scheduled = start + Duration::from_secs_f64(k as f64 / RATE);
            harness::sleep_precisely_until(scheduled).await;
            let request = ctx
                .http
                .put(hub.url(&format!("/v1/projects/{project}/files/lat/{i}.txt")))
                .bearer_auth(&ctx.token)
                .json(&harness::put_body("x"))
                .build()?;
            let client = ctx.http.clone();
            let scheduled_ns = clock().ns_at(scheduled.into_std());
            puts.spawn(async move {
                let sent = clock().now_ns();
                let response = client.execute(request).await?;
                let acked = clock().now_ns();
                let status = response.status();
                if status == reqwest::StatusCode::SERVICE_UNAVAILABLE {
                    // The hub's answer to a database that commits slower than the writes
                    // arrive (its pool's wait ran out): counted, not a failure of the run.
                    return Ok(None);
                }
                if !status.is_success() {
                    bail!("PUT {i} answered {status}: {}", response.text().await.unwrap_or_default());
                }
                Ok(Some((i, scheduled_ns, sent, acked)))
            });
        }
        let mut sent = Vec::with_capacity(count as usize);
        let mut refused = 0;
        while let Some(result) = puts.join_next().await {
            match result?? {
                Some(write) => sent.push(write),
                None => refused += 1,
            }
        }
        let indices: Vec<usize> = sent.iter().map(|w| w.0).collect();
        let deadline = Instant::now() + Duration::from_secs(30);
        let arrived = || indices.iter().filter(|&&i| self.received[i].load(Ordering::Relaxed) > 0).count();
        while arrived() < indices.len() {
            if Instant::now() > deadline {
                bail!("only {} of {} events arrived within 30 s of the last write", arrived(), indices.len());
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        let seq_list: Vec<i64> = indices.iter().map(|&i| self.seqs[i].load(Ordering::Relaxed)).collect();
        let created = harness::event_times(ctx, project, &seq_list).await?;
        let mut block = Block { refused, ..Block::default() };
        for (i, scheduled, sent, acked) in sent {
            block.send_lag.record_ns(sent.saturating_sub(scheduled));
            let received = self.received[i].load(Ordering::Relaxed);
            block.latency.record_ns(received.saturating_sub(scheduled));
            block.put_ack.record_ns(acked.saturating_sub(scheduled));
            let created_us = created.get(&self.seqs[i].load(Ordering::Relaxed)).context("event row not found")?;
            let created_ns = clock().wall_us_to_ns(*created_us);
            block.created_to_event.record_ns((received as i64 - created_ns).max(0) as u64);
        }
        Ok(block)
    }
}
