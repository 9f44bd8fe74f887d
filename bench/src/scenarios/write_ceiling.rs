//! The ceiling of one PostgreSQL behind N hubs: 1, 2 and 4 hub processes on the run's one
//! database, each with its own closed-loop HTTP writers spread over many projects, and on
//! every hub one subscriber socket per project (so each write is delivered once per hub:
//! events/s = writes/s × hubs). Per step: writes/s and events/s delivered; the CPU of the
//! hubs, of PostgreSQL (postmaster and backends) and of this bench client, and how busy the
//! whole machine was; WAL (`pg_stat_wal`: records, bytes, fsyncs per write); and what the
//! database's backends were doing, sampled from `pg_stat_activity` (CPU, WAL fsync, WAL
//! write lock, row lock = the project lock, client wait). Baseline, same run: pgbench
//! calling the same SQL function with the same client count over the same projects.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use futures_util::StreamExt;
use serde_json::json;
use tokio_tungstenite::tungstenite::Message;
use uuid::Uuid;

use super::Pending;
use crate::harness::{self, Ctx, Hub};
use crate::pgbench;
use crate::procfs;
use crate::report::{Report, Row, Value as V};
use crate::stats::Latencies;

const HUB_COUNTS: [usize; 3] = [1, 2, 4];
/// Paths per writer (`wc/<hub>-<writer>/<k>.txt`).
const PATHS_PER_WRITER: u64 = 100;
/// How often backends' wait events are sampled.
const SAMPLE_EVERY: Duration = Duration::from_millis(20);

pub fn run(ctx: &Ctx) -> Pending<'_> {
    Box::pin(measure(ctx))
}

struct Shape {
    seconds: u64,
    /// How long to wait, after the writers stop, for the events still in flight.
    drain_limit: Duration,
    writers_per_hub: usize,
    projects: usize,
}

async fn measure(ctx: &Ctx) -> anyhow::Result<Report> {
    let shape = if ctx.quick {
        Shape { seconds: 1, drain_limit: Duration::from_secs(2), writers_per_hub: 4, projects: 8 }
    } else {
        Shape { seconds: 10, drain_limit: Duration::from_secs(10), writers_per_hub: 8, projects: 16 }
    };
    let mut report = Report::new(
        "write_ceiling",
        "issue #14",
        "The write ceiling of one PostgreSQL through 1, 2 and 4 hub processes: each hub has its own closed-loop \
         HTTP PUT writers (new content every write, each writer on its own 100 paths) spread over many projects, and one subscriber \
         socket joined to every project, so every write is delivered once per hub. Where it saturates is read \
         from the CPU of each side, the WAL statistics and the database's wait events.",
    );
    report.param("seconds per step", shape.seconds);
    report.param("hubs", "1, 2, 4 (separate processes, one database)");
    report.param("writers per hub", shape.writers_per_hub);
    report.param("projects", shape.projects);
    report.param("hub pool", "SYNCHUB_DB_POOL_SIZE default (16)");
    let setup = ctx.start_hub("write_ceiling-setup").await?;
    let mut projects = Vec::new();
    for i in 0..shape.projects {
        projects.push(ctx.create_project(&setup, &format!("bench write_ceiling {i}")).await?);
    }
    setup.stop().await;
    let postmaster = postmaster_pid(ctx).await?;
    let mut command = String::new();
    for hubs in HUB_COUNTS {
        let mut started = Vec::new();
        let mut failure = None;
        for i in 0..hubs {
            match ctx.start_hub(&format!("write_ceiling-{hubs}-{i}")).await {
                Ok(hub) => started.push(hub),
                Err(err) => {
                    failure = Some(err);
                    break;
                }
            }
        }
        let result = match failure {
            Some(err) => Err(err),
            None => step(ctx, &started, &projects, &shape, postmaster).await,
        };
        let mut log = Vec::new();
        for hub in started {
            log.extend(hub.log_lines());
            hub.stop().await;
        }
        let found = result?;
        if !log.is_empty() {
            report.notes.push(format!("{hubs} hubs: {} warning/error lines, first: `{}`", log.len(), log[0]));
        }
        let clients = hubs * shape.writers_per_hub;
        let baseline =
            pgbench::upsert_throughput_spread(ctx, &projects, clients, shape.seconds, &format!("wc-{hubs}")).await?;
        command = baseline.command.clone();
        let h = if hubs == 1 { "1 hub".to_string() } else { format!("{hubs} hubs") };
        report.rows.push(Row::compared(
            format!("writes/s, {h} × {} writers", shape.writers_per_hub),
            V::per_sec(baseline.per_sec()),
            V::per_sec(found.writes as f64 / found.seconds),
        ));
        report.rows.push(Row::alone(
            format!("events/s delivered while writing, {h} (one subscriber per project per hub)"),
            V::per_sec(found.events as f64 / found.seconds),
            "—",
        ));
        report.rows.push(Row::alone(
            format!("events/s delivered, {h}: the step's events ÷ (writing + draining)"),
            V::per_sec((found.writes * hubs as u64) as f64 / (found.seconds + found.drain_seconds)),
            "—",
        ));
        report.rows.push(Row::alone(
            format!("CPU, {h}: hubs (cores, all hubs)"),
            V::count(round2(found.hub_cores)),
            "—",
        ));
        report.rows.push(Row::alone(format!("CPU, {h}: PostgreSQL (cores)"), V::count(round2(found.pg_cores)), "—"));
        report.rows.push(Row::alone(
            format!("machine busy, {h} (of {} cores)", found.machine_cores),
            V::count(round2(found.machine_busy_cores)),
            "—",
        ));
        report.rows.push(Row::alone(
            format!("WAL fsyncs per write, {h}"),
            V::count(round2(found.wal_syncs as f64 / found.writes.max(1) as f64)),
            "—",
        ));
        report.notes.push(format!(
            "{h}: {} writes in {:.1} s (latency {}), {} events delivered meanwhile, {} behind when the writers \
             stopped, delivered {:.2} s later{}; CPU: hubs {:.2}, PostgreSQL {:.2}, bench \
             client {:.2} cores, machine {:.2} of {} cores busy; WAL: {} records, {:.0} bytes/write, {} fsyncs \
             ({:.2} per write; pg_stat_wal, flushed lazily: approximate over short steps); backends of the \
             database (mean active {:.1}): {}; pgbench, same clients and projects: {:.0}/s ({})",
            found.writes,
            found.seconds,
            found.latencies.summary(),
            found.events,
            found.behind_at_end,
            found.drain_seconds,
            if found.undelivered > 0 { format!(" ({} never arrived)", found.undelivered) } else { String::new() },
            found.hub_cores,
            found.pg_cores,
            found.client_cores,
            found.machine_busy_cores,
            found.machine_cores,
            found.wal_records,
            found.wal_bytes as f64 / found.writes.max(1) as f64,
            found.wal_syncs,
            found.wal_syncs as f64 / found.writes.max(1) as f64,
            found.mean_active,
            found.waits,
            baseline.per_sec(),
            baseline.latencies.summary(),
        ));
        report.notes.push(format!("{h}: saturation: {}", found.verdict()));
    }
    report.baseline = format!(
        "pgbench (closed loop, `-M prepared`, as many clients as the step's writers, one thread each) calling \
         `synchub.upsert_project_file` on the same projects (client c on project c mod {}), right after the \
         step. Command (4 hubs): `{command}`",
        shape.projects
    );
    Ok(report)
}

fn round2(value: f64) -> f64 {
    (value * 100.0).round() / 100.0
}

/// What one step measured.
struct Found {
    writes: u64,
    /// Events delivered while the writers ran.
    events: u64,
    /// Events not yet delivered when the writers stopped, and how long they took to arrive.
    behind_at_end: u64,
    drain_seconds: f64,
    /// Still missing after the drain limit.
    undelivered: u64,
    seconds: f64,
    latencies: Latencies,
    hub_cores: f64,
    pg_cores: f64,
    client_cores: f64,
    machine_busy_cores: f64,
    machine_cores: usize,
    wal_records: i64,
    wal_bytes: i64,
    wal_syncs: i64,
    mean_active: f64,
    /// The sampled wait events, most frequent first, as shares of the samples.
    waits: String,
    wait_shares: Vec<(String, f64)>,
}

impl Found {
    /// The first limit this step ran into, read from the figures (a heuristic; the
    /// numbers themselves are in the notes).
    fn verdict(&self) -> String {
        let share = |prefix: &str| -> f64 {
            self.wait_shares.iter().filter(|(name, _)| name.starts_with(prefix)).map(|(_, s)| s).sum()
        };
        let cpu_bound = self.machine_busy_cores >= 0.9 * self.machine_cores as f64;
        let wal = share("IO:WALSync") + share("LWLock:WALWrite") + share("IO:WALWrite");
        let lock = share("Lock:");
        let mut causes = Vec::new();
        if cpu_bound {
            causes.push(format!(
                "CPU: the machine is {:.0} % busy (hubs {:.2}, PostgreSQL {:.2}, bench client {:.2} cores)",
                100.0 * self.machine_busy_cores / self.machine_cores as f64,
                self.hub_cores,
                self.pg_cores,
                self.client_cores
            ));
        }
        if wal >= 0.25 {
            causes.push(format!("WAL flush: {:.0} % of active backend samples wait on WAL fsync/write", 100.0 * wal));
        }
        if lock >= 0.25 {
            causes.push(format!("row locks (the project lock): {:.0} % of active backend samples", 100.0 * lock));
        }
        if causes.is_empty() {
            format!(
                "none of CPU, WAL or locks dominates (machine {:.0} % busy, WAL waits {:.0} %, lock waits {:.0} %): \
                 the writers' round trips bound it",
                100.0 * self.machine_busy_cores / self.machine_cores as f64,
                100.0 * wal,
                100.0 * lock
            )
        } else {
            causes.join("; ")
        }
    }
}

/// The postmaster: the parent of this connection's backend.
async fn postmaster_pid(ctx: &Ctx) -> anyhow::Result<u32> {
    // The connection stays open until its backend's /proc entry is read: a temporary client
    // would end the backend at once, and /proc/PID would race with its exit (ENOENT).
    let client = ctx.sql().await?;
    let row = client.query_one("SELECT pg_backend_pid()", &[]).await?;
    let backend: i32 = row.try_get(0)?;
    let postmaster = procfs::parent_pid(u32::try_from(backend)?).context("reading the backend's parent in /proc")?;
    drop(client);
    Ok(postmaster)
}

/// CPU time of the postmaster and its children now, by pid.
fn pg_cpu(postmaster: u32) -> HashMap<u32, Duration> {
    procfs::with_children(postmaster)
        .into_iter()
        .filter_map(|pid| procfs::cpu_time(pid).ok().map(|cpu| (pid, cpu.total())))
        .collect()
}

/// CPU used between two readings; processes started in between count from zero.
fn pg_cpu_since(before: &HashMap<u32, Duration>, after: &HashMap<u32, Duration>) -> Duration {
    after.iter().map(|(pid, now)| now.saturating_sub(before.get(pid).copied().unwrap_or_default())).sum()
}

struct Wal {
    records: i64,
    bytes: i64,
    syncs: i64,
}

async fn wal(client: &tokio_postgres::Client) -> anyhow::Result<Wal> {
    let row = client.query_one("SELECT wal_records, wal_bytes::bigint, wal_sync FROM pg_stat_wal", &[]).await?;
    Ok(Wal { records: row.try_get(0)?, bytes: row.try_get(1)?, syncs: row.try_get(2)? })
}

async fn step(ctx: &Ctx, hubs: &[Hub], projects: &[Uuid], shape: &Shape, postmaster: u32) -> anyhow::Result<Found> {
    // Subscribers: one socket per project on every hub.
    let events = Arc::new(AtomicU64::new(0));
    let mut subscribers = tokio::task::JoinSet::new();
    for (h, hub) in hubs.iter().enumerate() {
        for (p, project) in projects.iter().enumerate() {
            let source = harness::source_addr(h * projects.len() + p);
            let mut ws = harness::connect_joined(hub.addr, &ctx.token, Some(source), *project).await?;
            let events = events.clone();
            subscribers.spawn(async move {
                while let Some(Ok(message)) = ws.next().await {
                    if matches!(&message, Message::Text(t) if t.as_str().starts_with(r#"{"type":"event""#)) {
                        events.fetch_add(1, Ordering::Relaxed);
                    }
                }
            });
        }
    }
    // Warm-up: pool connections and prepared statements on every hub.
    let (warm_writes, _) = run_writers(ctx, hubs, projects, shape.writers_per_hub, Duration::from_millis(500)).await?;

    let stats = ctx.sql().await?;
    let sampling = Arc::new(AtomicBool::new(true));
    let sampler = tokio::spawn(sample_waits(ctx.sql().await?, ctx.db_name(), sampling.clone()));
    let wal_before = wal(&stats).await?;
    let (pg_before, hubs_before) = (pg_cpu(postmaster), hub_cpu(hubs));
    let (client_before, machine_before) = (procfs::self_cpu_time()?, procfs::machine_ticks()?);
    let events_before = events.load(Ordering::Relaxed);
    let started = Instant::now();
    let (writes, latencies) =
        run_writers(ctx, hubs, projects, shape.writers_per_hub, Duration::from_secs(shape.seconds)).await?;
    let seconds = started.elapsed().as_secs_f64();
    let events_during = events.load(Ordering::Relaxed) - events_before;
    let (pg_after, hubs_after) = (pg_cpu(postmaster), hub_cpu(hubs));
    let (client_after, machine_after) = (procfs::self_cpu_time()?, procfs::machine_ticks()?);
    sampling.store(false, Ordering::Relaxed);
    let samples = sampler.await??;
    let wal_after = wal(&stats).await?;
    // Every write is delivered once per hub: wait (bounded) for the backlog to drain.
    let expected = (warm_writes + writes) * hubs.len() as u64;
    let behind_at_end = expected.saturating_sub(events.load(Ordering::Relaxed));
    let drain_started = Instant::now();
    while events.load(Ordering::Relaxed) < expected && drain_started.elapsed() < shape.drain_limit {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let drain_seconds = drain_started.elapsed().as_secs_f64();
    let undelivered = expected.saturating_sub(events.load(Ordering::Relaxed));
    subscribers.abort_all();
    if events_during == 0 {
        bail!("the subscribers received no event");
    }

    let machine_cores = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1);
    let (busy, all) = (machine_after.0 - machine_before.0, machine_after.1 - machine_before.1);
    let machine_busy_cores = if all == 0 { 0.0 } else { busy as f64 / all as f64 * machine_cores as f64 };
    let hub_cpu: Duration =
        hubs_after.iter().zip(&hubs_before).map(|(after, before)| after.saturating_sub(*before)).sum();
    let total_samples: u64 = samples.counts.values().sum();
    let mut wait_shares: Vec<(String, f64)> = samples
        .counts
        .iter()
        .map(|(name, count)| (name.clone(), *count as f64 / total_samples.max(1) as f64))
        .collect();
    wait_shares.sort_by(|a, b| b.1.total_cmp(&a.1));
    let waits = wait_shares
        .iter()
        .take(6)
        .map(|(name, share)| format!("{name} {:.0} %", 100.0 * share))
        .collect::<Vec<_>>()
        .join(", ");
    Ok(Found {
        writes,
        events: events_during,
        behind_at_end,
        drain_seconds,
        undelivered,
        seconds,
        latencies,
        hub_cores: hub_cpu.as_secs_f64() / seconds,
        pg_cores: pg_cpu_since(&pg_before, &pg_after).as_secs_f64() / seconds,
        client_cores: client_after.since(client_before).total().as_secs_f64() / seconds,
        machine_busy_cores,
        machine_cores,
        wal_records: wal_after.records - wal_before.records,
        wal_bytes: wal_after.bytes - wal_before.bytes,
        wal_syncs: wal_after.syncs - wal_before.syncs,
        mean_active: total_samples as f64 / samples.rounds.max(1) as f64,
        waits: if waits.is_empty() { "no active backend sampled".into() } else { waits },
        wait_shares,
    })
}

fn hub_cpu(hubs: &[Hub]) -> Vec<Duration> {
    hubs.iter().map(|hub| hub.cpu().map(|cpu| cpu.total()).unwrap_or_default()).collect()
}

struct Samples {
    rounds: u64,
    /// `wait_event_type:wait_event` (or `CPU`) of active backends → times seen.
    counts: HashMap<String, u64>,
}

/// Samples the wait events of the database's active backends until `running` is false.
async fn sample_waits(
    client: tokio_postgres::Client,
    database: &'static str,
    running: Arc<AtomicBool>,
) -> anyhow::Result<Samples> {
    let statement = client
        .prepare(
            "SELECT coalesce(wait_event_type || ':' || wait_event, 'CPU'), count(*)
             FROM pg_stat_activity
             WHERE datname = $1 AND state = 'active' AND pid <> pg_backend_pid()
             GROUP BY 1",
        )
        .await?;
    let mut samples = Samples { rounds: 0, counts: HashMap::new() };
    while running.load(Ordering::Relaxed) {
        for row in client.query(&statement, &[&database]).await? {
            let (name, count): (String, i64) = (row.try_get(0)?, row.try_get(1)?);
            *samples.counts.entry(name).or_default() += u64::try_from(count).unwrap_or(0);
        }
        samples.rounds += 1;
        tokio::time::sleep(SAMPLE_EVERY).await;
    }
    Ok(samples)
}

/// `per_hub` closed-loop HTTP writers on every hub for `duration`, writer w of hub h on
/// project (h × per_hub + w) mod projects; every write must succeed.
async fn run_writers(
    ctx: &Ctx,
    hubs: &[Hub],
    projects: &[Uuid],
    per_hub: usize,
    duration: Duration,
) -> anyhow::Result<(u64, Latencies)> {
    let deadline = Instant::now() + duration;
    // Content unique to this call too: the warm-up and the step write the same paths in the
    // same order, and a write of the content a file already has publishes no event.
    let round = Uuid::new_v4().simple().to_string();
    let mut tasks = tokio::task::JoinSet::new();
    for (h, hub) in hubs.iter().enumerate() {
        for w in 0..per_hub {
            let project = projects[(h * per_hub + w) % projects.len()];
            let base = hub.url(&format!("/v1/projects/{project}/files/wc/{h}-{w}"));
            let (http, token, round) = (ctx.http.clone(), ctx.token.clone(), round.clone());
            tasks.spawn(async move {
                let mut latencies = Latencies::default();
                let mut writes = 0u64;
                while Instant::now() < deadline {
                    let url = format!("{base}/{}.txt", writes % PATHS_PER_WRITER + 1);
                    // New content every time: rewriting identical content changes nothing and
                    // publishes no event.
                    let content = format!("{round}-{h}-{w}-{writes}");
                    let sent = Instant::now();
                    let response = http
                        .put(url)
                        .bearer_auth(&token)
                        .json(&json!({ "content": content }))
                        .timeout(Duration::from_secs(30))
                        .send()
                        .await
                        .context("PUT")?;
                    let status = response.status();
                    let body = response.bytes().await?;
                    if !status.is_success() {
                        bail!("PUT answered {status}: {}", String::from_utf8_lossy(&body));
                    }
                    latencies.record_ns(sent.elapsed().as_nanos() as u64);
                    writes += 1;
                }
                Ok::<_, anyhow::Error>((writes, latencies))
            });
        }
    }
    let (mut writes, mut latencies) = (0u64, Latencies::default());
    while let Some(result) = tasks.join_next().await {
        let (n, l) = result??;
        writes += n;
        latencies.merge(&l);
    }
    Ok((writes, latencies))
}
