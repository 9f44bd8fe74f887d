//! Presence (CONTRACT section 12; issue 15): one project with N member sockets (every
//! socket sends a first `presence`, so all are listed; 1,000, quick: 50).
//!
//! - Cost on a fan-out (first): see below.
//! - Ladder: k of the members update their `meta` every 110 ms (just within the hub's one
//!   per 100 ms) for a few seconds; per step, the member updates each socket saw in
//!   `presence_diff` frames per second (mean and slowest socket), refused updates, sockets
//!   closed, and the hub's CPU. The hub sustains a step when every socket sees what was
//!   offered (diffs coalesce a member's updates within one 100 ms flush, so slightly less).
//! - Cost on a fan-out: the same sockets receive paced 1 KiB writes; blocks without
//!   presence traffic (A) alternate with blocks with it (B), ABAB…; the hub CPU of each
//!   block, and the median of the per-pair ratios B / A.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use anyhow::Context;
use futures_util::{SinkExt, StreamExt};
use serde_json::json;
use tokio_tungstenite::tungstenite::Message;

use super::Pending;
use crate::harness::{self, Ctx, Hub};
use crate::report::{Report, Row, Value as V};

/// A sender's pause between updates (the hub takes one per 100 ms per socket).
const SEND_EVERY: Duration = Duration::from_millis(110);
/// File content per fan-out write.
const CONTENT_BYTES: usize = 1024;

pub fn run(ctx: &Ctx) -> Pending<'_> {
    Box::pin(measure(ctx))
}

struct Plan {
    members: usize,
    /// Senders per ladder step.
    ladder: Vec<usize>,
    step: Duration,
    /// ABAB pairs and the length of each block.
    pairs: usize,
    block: Duration,
    /// Fan-out writes per second during the blocks.
    writes_per_sec: f64,
    /// Senders during the B blocks.
    b_senders: usize,
}

/// What one socket saw.
#[derive(Default)]
struct Seen {
    events: AtomicU64,
    /// Member entries (with a sender's meta) in `presence_diff` joins.
    updates: AtomicU64,
    refused: AtomicU64,
    closed: AtomicBool,
}

async fn measure(ctx: &Ctx) -> anyhow::Result<Report> {
    let plan = if ctx.quick {
        Plan {
            members: 50,
            ladder: vec![5],
            step: Duration::from_secs(2),
            pairs: 2,
            block: Duration::from_secs(1),
            writes_per_sec: 5.0,
            b_senders: 5,
        }
    } else {
        Plan {
            members: 1_000,
            ladder: vec![10, 50, 100, 200],
            step: Duration::from_secs(5),
            pairs: 4,
            block: Duration::from_secs(3),
            writes_per_sec: 20.0,
            b_senders: 20,
        }
    };
    let mut report = Report::new(
        "presence",
        "#15",
        "One project, every socket a presence member (its first `presence` frame after the join). Ladder: k members \
         update their meta every 110 ms; every socket counts the member updates it receives in `presence_diff` \
         frames. Then a fan-out of paced 1 KiB writes to the same sockets, in blocks without presence traffic (A) \
         and with k members updating (B), alternated ABAB; the hub's CPU time per block.",
    );
    report.param("members (sockets)", plan.members);
    report.param("ladder: updating members", plan.ladder.iter().map(|k| k.to_string()).collect::<Vec<_>>().join(", "));
    report.param("updates per member", format!("one per {} ms", SEND_EVERY.as_millis()));
    report.param("step", format!("{} s", plan.step.as_secs()));
    report.param(
        "fan-out blocks",
        format!(
            "{} ABAB pairs of {} s; {} writes/s of {CONTENT_BYTES} B; B: {} members updating",
            plan.pairs,
            plan.block.as_secs(),
            plan.writes_per_sec,
            plan.b_senders
        ),
    );
    report.baseline = "the same hub, sockets and fan-out in the same run without presence traffic (A blocks)".into();
    let hub = ctx.start_hub("presence").await?;
    let result = run_on(ctx, &hub, &plan, &mut report).await;
    let log = hub.log_lines();
    hub.stop().await;
    result?;
    if !log.is_empty() {
        report.notes.push(format!("the hub logged {} warning/error lines, first: `{}`", log.len(), log[0]));
    }
    Ok(report)
}

async fn run_on(ctx: &Ctx, hub: &Hub, plan: &Plan, report: &mut Report) -> anyhow::Result<()> {
    let project = ctx.create_project(hub, "bench presence").await?;
    let channel = synchub_protocol::channel_name(project);
    let opened = Instant::now();
    let sockets = ctx.open_joined(hub, project, plan.members, 32).await?;
    let seen: Vec<Arc<Seen>> = (0..plan.members).map(|_| Arc::new(Seen::default())).collect();
    // How many members update now (member i updates while i < active).
    let active = Arc::new(AtomicUsize::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let mut tasks = tokio::task::JoinSet::new();
    for (i, ws) in sockets.into_iter().enumerate() {
        let (mut sink, mut stream) = ws.split();
        let first = json!({"type": "presence", "channel": channel, "meta": null}).to_string();
        sink.send(Message::text(first)).await.context("first presence")?;
        let seen = seen[i].clone();
        tasks.spawn(async move {
            while let Some(Ok(message)) = stream.next().await {
                let Message::Text(text) = message else { continue };
                let text = text.as_str();
                if text.starts_with(r#"{"type":"event""#) {
                    seen.events.fetch_add(1, Ordering::Relaxed);
                } else if text.starts_with(r#"{"type":"presence_diff""#) {
                    seen.updates.fetch_add(text.matches(r#""meta":{"b":"#).count() as u64, Ordering::Relaxed);
                } else if text.contains(r#""code":"rate_limited""#) {
                    seen.refused.fetch_add(1, Ordering::Relaxed);
                }
            }
            seen.closed.store(true, Ordering::Relaxed);
        });
        let (active, stop, channel) = (active.clone(), stop.clone(), channel.clone());
        tasks.spawn(async move {
            let mut n = 0u64;
            let mut tick = tokio::time::interval(SEND_EVERY);
            while !stop.load(Ordering::Relaxed) {
                tick.tick().await;
                if i < active.load(Ordering::Relaxed) {
                    n += 1;
                    let frame = json!({"type": "presence", "channel": channel, "meta": {"b": n}}).to_string();
                    if sink.send(Message::text(frame)).await.is_err() {
                        return;
                    }
                }
            }
        });
    }
    report.notes.push(format!(
        "{} sockets opened, joined and present in {:.1} s",
        plan.members,
        opened.elapsed().as_secs_f64()
    ));
    // Let the join ramp's diffs drain.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let total = |f: &dyn Fn(&Seen) -> u64| seen.iter().map(|s| f(s)).sum::<u64>();
    let per_socket = || seen.iter().map(|s| s.updates.load(Ordering::Relaxed)).collect::<Vec<_>>();

    let result = async {
        // ABAB first (the ladder's top steps may overload sockets): the fan-out without and
        // with presence traffic.
        let mut ratios = Vec::new();
        let (mut a_cpu, mut b_cpu) = (Vec::new(), Vec::new());
        let mut written = 0u64;
        for pair in 0..plan.pairs {
            for with_presence in [false, true] {
                active.store(if with_presence { plan.b_senders } else { 0 }, Ordering::Relaxed);
                // One flush of settling, so the block measures its own traffic.
                tokio::time::sleep(Duration::from_millis(300)).await;
                let events_before = total(&|s| s.events.load(Ordering::Relaxed));
                let cpu_before = hub.cpu()?;
                let started = Instant::now();
                let writes = (plan.writes_per_sec * plan.block.as_secs_f64()).round() as u64;
                for k in 0..writes {
                    tokio::time::sleep_until((started + plan.block.mul_f64(k as f64 / writes as f64)).into()).await;
                    let mut content = format!("{pair}-{written:08} ");
                    content.push_str(&"x".repeat(CONTENT_BYTES - content.len()));
                    written += 1;
                    let response = ctx
                        .http
                        .put(hub.url(&format!("/v1/projects/{project}/files/fanout-{}.txt", written % 4)))
                        .bearer_auth(&ctx.token)
                        .json(&harness::put_body(&content))
                        .send()
                        .await?;
                    anyhow::ensure!(response.status().is_success(), "write answered {}", response.status());
                }
                tokio::time::sleep_until((started + plan.block).into()).await;
                let cpu = hub.cpu()?.since(cpu_before).total().as_secs_f64() * 1000.0;
                let events = total(&|s| s.events.load(Ordering::Relaxed)) - events_before;
                report.notes.push(format!(
                    "pair {pair} {}: hub CPU {cpu:.0} ms in {:.1} s, {events} events delivered",
                    if with_presence { "B (presence)" } else { "A" },
                    started.elapsed().as_secs_f64()
                ));
                if with_presence {
                    b_cpu.push(cpu);
                    ratios.push(cpu / a_cpu.last().copied().unwrap_or(cpu).max(1.0));
                } else {
                    a_cpu.push(cpu);
                }
            }
        }
        active.store(0, Ordering::Relaxed);
        let median = |mut v: Vec<f64>| {
            v.sort_by(f64::total_cmp);
            v[v.len() / 2]
        };
        report.rows.push(Row::compared(
            format!("fan-out block CPU ms, without → with {} members updating (medians)", plan.b_senders),
            V::ms(median(a_cpu)),
            V::ms(median(b_cpu)),
        ));
        report.rows.push(Row::alone(
            "hub CPU with / without presence traffic, median of per-pair ratios",
            V::count((median(ratios) * 100.0).round() / 100.0),
            "(ABAB blocks, same run)",
        ));
        // The ladder.
        for &senders in &plan.ladder {
            let senders = senders.min(plan.members);
            let before = per_socket();
            let refused_before = total(&|s| s.refused.load(Ordering::Relaxed));
            let cpu_before = hub.cpu()?;
            let started = Instant::now();
            active.store(senders, Ordering::Relaxed);
            tokio::time::sleep(plan.step).await;
            active.store(0, Ordering::Relaxed);
            // What was sent in the step arrives within a few flushes.
            tokio::time::sleep(Duration::from_millis(500)).await;
            let secs = started.elapsed().as_secs_f64();
            let cpu = hub.cpu()?.since(cpu_before).total().as_secs_f64();
            let rates: Vec<f64> = per_socket()
                .iter()
                .zip(&before)
                .map(|(after, before)| (after - before) as f64 / plan.step.as_secs_f64())
                .collect();
            let mean = rates.iter().sum::<f64>() / rates.len() as f64;
            let slowest = rates.iter().copied().fold(f64::INFINITY, f64::min);
            let offered = senders as f64 / SEND_EVERY.as_secs_f64();
            let refused = total(&|s| s.refused.load(Ordering::Relaxed)) - refused_before;
            let closed = seen.iter().filter(|s| s.closed.load(Ordering::Relaxed)).count();
            report.rows.push(Row::compared(
                format!("{senders} members updating: updates/s each member receives (offered → mean)"),
                V::per_sec(offered),
                V::per_sec(mean),
            ));
            report.rows.push(Row::alone(
                format!("{senders} members updating: slowest member receives"),
                V::per_sec(slowest),
                "(of the offered rate above)",
            ));
            report.notes.push(format!(
                "{senders} updating members: offered {offered:.0} updates/s; each of {} members received {mean:.0}/s \
                 (slowest {slowest:.0}/s, {:.0} member updates/s delivered in all); {refused} refused; {closed} \
                 sockets closed; hub CPU {:.0}% of one core",
                plan.members,
                mean * plan.members as f64,
                cpu / secs * 100.0
            ));
        }

        anyhow::Ok(())
    }
    .await;
    stop.store(true, Ordering::Relaxed);
    tasks.abort_all();
    result
}
