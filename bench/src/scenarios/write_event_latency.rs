//! write → event latency: from just before an HTTP PUT is sent to the moment the matching
//! `file:update` frame arrives on a socket joined to the project, one write every 10 ms.
//! Baseline, same run: pgbench committing the same SQL function
//! (`synchub.upsert_project_file`) from one client at the same pace, half before and half
//! after the hub phase (A-B-A), so drift in the machine's load hits both sides alike.

use std::sync::Arc;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use futures_util::StreamExt;
use synchub_protocol::{ServerFrame, event_names};
use tokio_tungstenite::tungstenite::Message;

use super::Pending;
use crate::harness::{self, Ctx, clock};
use crate::pgbench;
use crate::report::{Goal, Report, Row, Value as V};
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

async fn measure(ctx: &Ctx, two_hubs: bool) -> anyhow::Result<Report> {
    let samples: u64 = if ctx.quick { 200 } else { 1_000 };
    let warmup: u64 = if ctx.quick { 20 } else { 50 };
    let name = if two_hubs { "write_event_latency_2hubs" } else { "write_event_latency" };
    let mut report = Report::new(
        name,
        if two_hubs { "#2 (2 hubs)" } else { "#2" },
        if two_hubs {
            "As write_event_latency, with two hub processes on the same database: the PUTs go to hub A, the \
             subscribed WebSocket is on hub B (the event travels by A's post-commit NOTIFY and B's read of the log)."
        } else {
            "Time from just before an HTTP `PUT /v1/projects/{id}/files/lat/N.txt` (content `x`) is sent to the \
             arrival of its `file:update` frame on one WebSocket joined to the project, paced at 100 writes/s (PUTs \
             are not waited for before the next one is sent)."
        },
    );
    report.param("hubs", if two_hubs { "2 (PUTs to A, subscriber on B)" } else { "1" });
    report.param("samples", samples);
    report.param("warm-up writes (not counted)", warmup);
    report.param("pace", format!("{RATE} writes/s"));

    let hub = ctx.start_hub(name).await?;
    let second = if two_hubs { Some(ctx.start_hub(&format!("{name}-b")).await?) } else { None };
    let project = ctx.create_project(&hub, "bench write_event_latency").await?;

    // Baseline, first half (after a warm-up run that is thrown away).
    pgbench::upsert(ctx, project, warmup, RATE, "warmup").await?;
    let first = pgbench::upsert(ctx, project, samples / 2, RATE, "a").await?;

    // The hub.
    ctx.statements_reset().await?;
    let subscriber_hub = second.as_ref().unwrap_or(&hub);
    let hub_side = hub_phase(ctx, &hub, subscriber_hub, project, warmup, samples).await;
    let statements = ctx.statements_report(warmup + samples).await?;
    let mut log = hub.log_lines();
    hub.stop().await;
    if let Some(second) = second {
        log.extend(second.log_lines());
        second.stop().await;
    }
    let hub_side = hub_side?;

    // Baseline, second half.
    let second = pgbench::upsert(ctx, project, samples - samples / 2, RATE, "b").await?;
    let mut commit = Latencies::default();
    commit.merge(&first.latencies);
    commit.merge(&second.latencies);

    report.baseline = format!(
        "`pgbench -M prepared -c 1 -R {RATE} -l` running `SELECT * FROM synchub.upsert_project_file(:project, \
         'bench/' || :n || '.txt', 'x', NULL, NULL, 'bench-user', NULL)` (n random) against the same database and \
         project; latency per transaction from pgbench's own per-transaction log (`-l`), minus its schedule lag. \
         {} transactions before the hub phase and {} after it, merged. Command: `{}`",
        samples / 2,
        samples - samples / 2,
        first.command
    );
    for q in [0.5, 0.99] {
        let label = if q == 0.5 { "p50" } else { "p99" };
        let goal = if q == 0.5 { Goal::PlusAtMost(1.0) } else { Goal::AtMost(10.0) };
        report.rows.push(
            Row::compared(
                format!("write → event {label} (baseline: SQL commit {label})"),
                V::ms(commit.ms(q)),
                V::ms(hub_side.write_to_event.ms(q)),
            )
            .goal(goal),
        );
    }
    if !two_hubs {
        ctx.publish("write_event_latency/p50_ms", hub_side.write_to_event.ms(0.5));
        ctx.publish("write_event_latency/p99_ms", hub_side.write_to_event.ms(0.99));
    }
    for q in [0.5, 0.99] {
        let label = if q == 0.5 { "p50" } else { "p99" };
        report.rows.push(Row::compared(
            format!("PUT → HTTP response {label} (baseline: SQL commit {label})"),
            V::ms(commit.ms(q)),
            V::ms(hub_side.put_ack.ms(q)),
        ));
    }
    report.rows.push(Row::alone(
        "event row created → frame received p50",
        V::ms(hub_side.created_to_event.ms(0.5)),
        "(hub-internal part)",
    ));
    report.rows.push(Row::alone(
        "event row created → frame received p99",
        V::ms(hub_side.created_to_event.ms(0.99)),
        "(hub-internal part)",
    ));
    report.notes.push(format!("write → event: {}", hub_side.write_to_event.summary()));
    report.notes.push(format!("PUT → HTTP response: {}", hub_side.put_ack.summary()));
    report.notes.push(format!("SQL commit (pgbench, merged): {}", commit.summary()));
    report.notes.push(format!(
        "pgbench halves: before {}; after {}",
        first.latencies.summary(),
        second.latencies.summary()
    ));
    if let (Some(a), Some(b)) = (first.statement_avg_ms, second.statement_avg_ms) {
        report.notes.push(format!("pgbench `-r` statement latency average: {a:.3} ms before, {b:.3} ms after"));
    }
    report.notes.push(format!(
        "event row created → frame received: from `synchub.events.created_at` (`clock_timestamp()` at the event \
         insert, shortly before commit; same machine clock) to the frame's arrival: what the hub adds after the \
         write itself (commit, wake-up, reading the log, sending). {}",
        hub_side.created_to_event.summary()
    ));
    report.notes.extend(statements);
    if !log.is_empty() {
        report.notes.push(format!("the hub logged {} warning/error lines, first: `{}`", log.len(), log[0]));
    }
    Ok(report)
}

struct HubSide {
    write_to_event: Latencies,
    put_ack: Latencies,
    created_to_event: Latencies,
}

async fn hub_phase(
    ctx: &Ctx,
    hub: &harness::Hub,
    subscriber_hub: &harness::Hub,
    project: uuid::Uuid,
    warmup: u64,
    samples: u64,
) -> anyhow::Result<HubSide> {
    let total = (warmup + samples) as usize;
    let sent: Arc<Vec<AtomicU64>> = Arc::new((0..total).map(|_| AtomicU64::new(0)).collect());
    let acked: Arc<Vec<AtomicU64>> = Arc::new((0..total).map(|_| AtomicU64::new(0)).collect());
    let received: Arc<Vec<AtomicU64>> = Arc::new((0..total).map(|_| AtomicU64::new(0)).collect());
    let seqs: Arc<Vec<AtomicI64>> = Arc::new((0..total).map(|_| AtomicI64::new(0)).collect());
    let got = Arc::new(AtomicU64::new(0));

    let ws = harness::connect_joined(subscriber_hub.addr, &ctx.token, None, project).await?;
    let reader = {
        let (received, seqs, got) = (received.clone(), seqs.clone(), got.clone());
        tokio::spawn(async move {
            let mut ws = ws;
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
                    received[i].store(now, Ordering::Relaxed);
                    seqs[i].store(frame.seq, Ordering::Relaxed);
                    got.fetch_add(1, Ordering::Relaxed);
                }
            }
        })
    };

    let mut puts = tokio::task::JoinSet::new();
    let start = tokio::time::Instant::now();
    for i in 0..total {
        tokio::time::sleep_until(start + Duration::from_secs_f64(i as f64 / RATE)).await;
        let request = ctx
            .http
            .put(hub.url(&format!("/v1/projects/{project}/files/lat/{i}.txt")))
            .bearer_auth(&ctx.token)
            .json(&harness::put_body("x"))
            .build()?;
        let (client, sent, acked) = (ctx.http.clone(), sent.clone(), acked.clone());
        puts.spawn(async move {
            sent[i].store(clock().now_ns(), Ordering::Relaxed);
            let response = client.execute(request).await?;
            acked[i].store(clock().now_ns(), Ordering::Relaxed);
            if !response.status().is_success() {
                bail!("PUT {i} answered {}: {}", response.status(), response.text().await.unwrap_or_default());
            }
            Ok(())
        });
    }
    while let Some(result) = puts.join_next().await {
        result??;
    }
    let deadline = Instant::now() + Duration::from_secs(30);
    while got.load(Ordering::Relaxed) < total as u64 {
        if Instant::now() > deadline {
            reader.abort();
            bail!("only {} of {total} events arrived within 30 s of the last write", got.load(Ordering::Relaxed));
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    reader.abort();

    let measured = warmup as usize..total;
    let seq_list: Vec<i64> = measured.clone().map(|i| seqs[i].load(Ordering::Relaxed)).collect();
    let created = harness::event_times(ctx, project, &seq_list).await?;
    let mut side = HubSide {
        write_to_event: Latencies::default(),
        put_ack: Latencies::default(),
        created_to_event: Latencies::default(),
    };
    for i in measured {
        let (s, a, r) =
            (sent[i].load(Ordering::Relaxed), acked[i].load(Ordering::Relaxed), received[i].load(Ordering::Relaxed));
        side.write_to_event.record_ns(r.saturating_sub(s));
        side.put_ack.record_ns(a.saturating_sub(s));
        let created_us = created.get(&seqs[i].load(Ordering::Relaxed)).context("event row not found")?;
        let created_ns = clock().wall_us_to_ns(*created_us);
        side.created_to_event.record_ns((r as i64 - created_ns).max(0) as u64);
    }
    Ok(side)
}
