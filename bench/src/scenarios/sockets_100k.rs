//! `sockets_100k` (issue 16, on request only): 100,000 joined sockets on one project, one
//! event reaching all of them. One process may hold at most 20,000 descriptors here, so the
//! hub runs as several processes on one database and the clients as several worker
//! processes (`synchub-bench --client-worker`, [`crate::worker`]), worker k joined on hub k
//! from its own loopback addresses 127.0.k+1.2–9. The writes go to hub 0; the other hubs
//! learn of them through PostgreSQL, as in any multi-hub deployment.

use std::net::SocketAddr;
use std::process::Stdio;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context, bail};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader, Lines};
use tokio::process::{Child, ChildStdin, ChildStdout, Command};
use uuid::Uuid;

use super::Pending;
use crate::floor;
use crate::harness::{Ctx, Hub};
use crate::node_ws::BroadcastServer;
use crate::perf_window;
use crate::procfs;
use crate::report::{Goal, Report, Row, Value as V};
use crate::stats;

/// Sockets per hub process (and per worker): under the 20,000 descriptors with room for
/// the database pool, listeners and logs.
const PER_PROCESS: usize = 15_000;
const EVENTS: usize = 10;
const CONTENT_BYTES: usize = 1024;

pub fn run(ctx: &Ctx) -> Pending<'_> {
    Box::pin(measure(ctx, Servers::Hubs(Vec::new())))
}

/// `sockets_100k_floor`: the same sockets, workers and events served by floor servers
/// ([`crate::floor`]: one send(2) per socket and nothing else), one per worker.
pub fn run_floor(ctx: &Ctx) -> Pending<'_> {
    Box::pin(measure(ctx, Servers::Floors { floors: Vec::new(), project: Uuid::new_v4() }))
}

/// The processes the sockets join: hubs on one database (writes to hub 0), or floor
/// servers (each told of every write). Started empty; [`measure`] starts the processes.
enum Servers {
    Hubs(Vec<Hub>),
    Floors { floors: Vec<BroadcastServer>, project: Uuid },
}

impl Servers {
    fn len(&self) -> usize {
        match self {
            Servers::Hubs(hubs) => hubs.len(),
            Servers::Floors { floors, .. } => floors.len(),
        }
    }

    fn is_floor(&self) -> bool {
        matches!(self, Servers::Floors { .. })
    }

    fn who(&self) -> &'static str {
        match self {
            Servers::Hubs(_) => "hub",
            Servers::Floors { .. } => "floor server",
        }
    }

    fn addr(&self, k: usize) -> SocketAddr {
        match self {
            Servers::Hubs(hubs) => hubs[k].addr,
            Servers::Floors { floors, .. } => floors[k].addr,
        }
    }

    fn pid(&self, k: usize) -> u32 {
        match self {
            Servers::Hubs(hubs) => hubs[k].pid,
            Servers::Floors { floors, .. } => floors[k].pid,
        }
    }

    fn rss_kib(&self, k: usize) -> u64 {
        procfs::status_kib(self.pid(k), "VmRSS").unwrap_or(0)
    }

    fn cpu(&self, k: usize) -> anyhow::Result<procfs::Cpu> {
        procfs::cpu_time(self.pid(k))
    }

    async fn project(&self, ctx: &Ctx) -> anyhow::Result<Uuid> {
        match self {
            Servers::Hubs(hubs) => ctx.create_project(&hubs[0], "bench sockets_100k").await,
            Servers::Floors { project, .. } => Ok(*project),
        }
    }

    /// Writes `content`; returns the event's seq.
    async fn write(&self, ctx: &Ctx, project: Uuid, content: &str) -> anyhow::Result<i64> {
        match self {
            Servers::Hubs(hubs) => ctx.put_file(&hubs[0], project, "fanout.txt", content).await,
            Servers::Floors { floors, .. } => {
                let body = serde_json::json!({ "content": content });
                let answers = futures_util::future::try_join_all(floors.iter().map(|floor| async {
                    let answer: serde_json::Value =
                        ctx.http.post(floor.url("/broadcast")).json(&body).send().await?.json().await?;
                    answer["seq"].as_i64().with_context(|| format!("no seq in {answer}"))
                }))
                .await?;
                // Every floor server gets every write, so their seqs stay equal.
                if answers.iter().any(|seq| *seq != answers[0]) {
                    bail!("the floor servers answered different seqs: {answers:?}");
                }
                Ok(answers[0])
            }
        }
    }

    /// Stops them all; returns the hubs' warning and error lines.
    async fn stop(self) -> Vec<String> {
        let mut log = Vec::new();
        match self {
            Servers::Hubs(hubs) => {
                for hub in hubs {
                    log.extend(hub.log_lines());
                    hub.stop().await;
                }
            }
            Servers::Floors { floors, .. } => {
                for floor in floors {
                    floor.stop().await;
                }
            }
        }
        log
    }
}

struct Worker {
    child: Child,
    stdin: ChildStdin,
    lines: Lines<BufReader<ChildStdout>>,
    sockets: usize,
}

impl Worker {
    async fn line(&mut self, limit: Duration) -> anyhow::Result<String> {
        self.line_until(Instant::now() + limit)
            .await?
            .with_context(|| format!("worker said nothing within {} s", limit.as_secs()))
    }

    /// The next line, or None at `deadline`.
    async fn line_until(&mut self, deadline: Instant) -> anyhow::Result<Option<String>> {
        match tokio::time::timeout_at(deadline.into(), self.lines.next_line()).await {
            Ok(Ok(Some(line))) if line.starts_with("error") => bail!("worker: {line}"),
            Ok(Ok(Some(line))) => Ok(Some(line)),
            Ok(Ok(None)) => bail!("worker exited"),
            Ok(Err(err)) => Err(err.into()),
            Err(_) => Ok(None),
        }
    }

    /// Waits until `deadline` for this worker's `done SEQ` (every socket had the event).
    /// Then, if it has not come, asks for what arrived so far (`partial SEQ …`), so that a
    /// timeout still says how many sockets got the event and how late.
    async fn arrivals(&mut self, seq: i64, deadline: Instant) -> anyhow::Result<Arrivals> {
        while let Some(line) = self.line_until(deadline).await? {
            if let Some(arrivals) = Arrivals::parse(&line, seq, self.sockets)? {
                return Ok(arrivals);
            }
        }
        self.stdin.write_all(format!("r {seq}\n").as_bytes()).await?;
        self.stdin.flush().await?;
        let asked = Instant::now() + Duration::from_secs(30);
        while let Some(line) = self.line_until(asked).await? {
            if let Some(arrivals) = Arrivals::parse(&line, seq, self.sockets)? {
                return Ok(arrivals);
            }
        }
        bail!("no answer to the partial-count request for seq {seq} within 30 s")
    }
}

/// One worker's account of one event: how many of its sockets had it, and the send →
/// arrival latencies of those (ms).
#[derive(Clone, Copy, Debug, Default)]
struct Arrivals {
    count: usize,
    p50: f64,
    p99: f64,
    max: f64,
}

impl Arrivals {
    /// A `done SEQ P50 P99 MAX` or `partial SEQ COUNT P50 P99 MAX` line for `seq`; None
    /// for other lines (a late `done` of an earlier event).
    fn parse(line: &str, seq: i64, sockets: usize) -> anyhow::Result<Option<Arrivals>> {
        let fields: Vec<&str> = line.split_whitespace().collect();
        let (got, count, figures) = match fields[..] {
            ["done", got, ref rest @ ..] => (got, sockets.to_string(), rest),
            ["partial", got, count, ref rest @ ..] => (got, count.to_string(), rest),
            _ => bail!("worker: unexpected {line:?}"),
        };
        if got.parse::<i64>().ok() != Some(seq) {
            return Ok(None);
        }
        let us = |v: &str| v.parse::<f64>().unwrap_or(f64::NAN) / 1000.0;
        let [p50, p99, max] = figures[..] else { bail!("worker: unexpected {line:?}") };
        Ok(Some(Arrivals { count: count.parse()?, p50: us(p50), p99: us(p99), max: us(max) }))
    }
}

fn wall_us() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_micros() as i64).unwrap_or(0)
}

async fn measure(ctx: &Ctx, mut servers: Servers) -> anyhow::Result<Report> {
    let total: usize = std::env::var("SYNCHUB_BENCH_SOCKETS_100K")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(if ctx.quick { 2_000 } else { 100_000 });
    let processes = total.div_ceil(PER_PROCESS).max(1);
    let mut report = Report::new(
        if servers.is_floor() { "sockets_100k_floor" } else { "sockets_100k" },
        "issue 16",
        "Many joined sockets on one project, one 1 KiB event at a time reaching all of them (the next write only \
         after every socket had the previous one). The hub runs as several processes on one database (writes to \
         hub 0; the others learn of each write through PostgreSQL); the clients run as just as many worker \
         processes, worker k joined on hub k from 127.0.k+1.2–9, each reading all its sockets on one thread from \
         one epoll set (a minimal frame reader that answers pings: the clients share the cores with the hubs). \
         Latency: from the write's send (announced to the workers just before the PUT) to each socket's arrival.",
    );
    if servers.is_floor() {
        report.notes.push(
            "Here the hubs are replaced by floor servers (bench/src/floor.rs: one thread, one send(2) per socket \
             and nothing else per socket), one per worker, each told of every write by its own POST /broadcast: \
             the least CPU any server pays per delivery on this machine, so the best p99 any server could reach \
             here with these clients."
                .into(),
        );
    }
    report.param("sockets", total);
    report.param(&format!("{} processes = client processes", servers.who()), processes);
    report.param("events", EVENTS);
    report.param("content", format!("{CONTENT_BYTES} bytes"));
    if let Some(limit) = procfs::nofile_limit()
        && (limit as usize) < total.div_ceil(processes) + 512
    {
        bail!("RLIMIT_NOFILE is {limit}: run through scripts/bench (it raises it)");
    }
    for k in 0..processes {
        let started = match &mut servers {
            Servers::Hubs(hubs) => ctx.start_hub(&format!("sockets_100k-{k}")).await.map(|hub| hubs.push(hub)),
            Servers::Floors { floors, project } => floor::start(*project).await.map(|floor| floors.push(floor)),
        };
        if let Err(err) = started {
            servers.stop().await;
            return Err(err);
        }
    }
    let result = with_servers(ctx, &servers, total, &mut report).await;
    let log = servers.stop().await;
    if !log.is_empty() {
        report.notes.push(format!("the hubs logged {} warning/error lines, first: `{}`", log.len(), log[0]));
    }
    result?;
    Ok(report)
}

async fn with_servers(ctx: &Ctx, servers: &Servers, total: usize, report: &mut Report) -> anyhow::Result<()> {
    let project = servers.project(ctx).await?;
    let n = servers.len();
    let who = servers.who();
    let rss_before: u64 = (0..n).map(|k| servers.rss_kib(k)).sum();
    let exe = std::env::current_exe()?;
    let connect_started = Instant::now();
    let mut workers = Vec::new();
    for k in 0..n {
        let sockets = total / n + usize::from(k < total % n);
        let mut child = Command::new(&exe)
            .arg("--client-worker")
            .arg(servers.addr(k).to_string())
            .arg("--worker-project")
            .arg(project.to_string())
            .arg("--worker-sockets")
            .arg(sockets.to_string())
            .arg("--worker-net")
            .arg((k + 1).to_string())
            .env("SYNCHUB_BENCH_WORKER_TOKEN", &ctx.token)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .kill_on_drop(true)
            .spawn()
            .context("starting a client worker")?;
        let stdin = child.stdin.take().context("worker stdin")?;
        let lines = BufReader::new(child.stdout.take().context("worker stdout")?).lines();
        workers.push(Worker { child, stdin, lines, sockets });
    }
    for worker in &mut workers {
        let line = worker.line(Duration::from_secs(900)).await?;
        if !line.starts_with("ready") {
            bail!("worker: unexpected {line:?}");
        }
    }
    let connect_secs = connect_started.elapsed().as_secs_f64();
    tokio::time::sleep(Duration::from_secs(2)).await;
    let rss_joined: Vec<u64> = (0..n).map(|k| servers.rss_kib(k)).collect();
    let rss_total: u64 = rss_joined.iter().sum();
    let cpu_before: Vec<procfs::Cpu> = (0..n).map(|k| servers.cpu(k)).collect::<anyhow::Result<_>>()?;
    // The clients' CPU too: they receive and parse every frame on the same cores.
    let worker_cpu = |workers: &[Worker]| -> anyhow::Result<procfs::Cpu> {
        workers.iter().map(|worker| procfs::cpu_time(worker.child.id().context("worker ended")?)).sum()
    };
    let worker_cpu_before = worker_cpu(&workers)?;

    // One event at a time, every socket has it before the next. A worker that has not
    // seen the event on all its sockets within the wait reports what it has; the run then
    // stops after that event (stragglers would blur the next one).
    let wait = Duration::from_millis(
        std::env::var("SYNCHUB_BENCH_SOCKETS_100K_WAIT_MS").ok().and_then(|v| v.parse().ok()).unwrap_or(300_000),
    );
    report.param("wait per event (SYNCHUB_BENCH_SOCKETS_100K_WAIT_MS)", format!("{} ms", wait.as_millis()));
    let (mut p50s, mut p99s, mut maxes, mut walls) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    let mut delivered = Vec::new();
    let events_started = Instant::now();
    let profiled = perf_window::open()?;
    for i in 0..EVENTS {
        let mut content = format!("{i:08} ");
        content.push_str(&"x".repeat(CONTENT_BYTES - content.len()));
        let sent = wall_us();
        for worker in &mut workers {
            worker.stdin.write_all(format!("t {sent}\n").as_bytes()).await?;
            worker.stdin.flush().await?;
        }
        let seq = servers.write(ctx, project, &content).await?;
        let deadline = Instant::now() + wait;
        let (mut got, mut p50, mut p99, mut max) = (0usize, 0f64, 0f64, 0f64);
        let mut short = Vec::new();
        for (k, worker) in workers.iter_mut().enumerate() {
            let arrivals = worker
                .arrivals(seq, deadline)
                .await
                .with_context(|| format!("event {i} (seq {seq}): client worker {k} of {n}"))?;
            if arrivals.count < worker.sockets {
                short.push(format!("worker {k}: {} of {}", arrivals.count, worker.sockets));
            }
            got += arrivals.count;
            if arrivals.count > 0 {
                // Across workers: the median of per-process medians is not the median of
                // all, so the row takes the largest per-process p50 and p99 (an upper bound).
                p50 = p50.max(arrivals.p50);
                p99 = p99.max(arrivals.p99);
                max = max.max(arrivals.max);
            }
        }
        delivered.push(got);
        p50s.push(p50);
        p99s.push(p99);
        maxes.push(max);
        if !short.is_empty() {
            report.notes.push(format!(
                "event {i} (seq {seq}): delivered to {got} of {total} sockets within the wait ({:.1} s), so the run \
                 stopped there; short: {}",
                wait.as_secs_f64(),
                short.join(", ")
            ));
            break;
        }
        walls.push((wall_us() - sent) as f64 / 1000.0);
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    drop(profiled);
    let events_secs = events_started.elapsed().as_secs_f64();
    let cpu: Vec<procfs::Cpu> = cpu_before
        .iter()
        .enumerate()
        .map(|(k, before)| Ok(servers.cpu(k)?.since(*before)))
        .collect::<anyhow::Result<_>>()?;
    let cpu_total: f64 = cpu.iter().map(|c| c.total().as_secs_f64()).sum();
    let hub_system: f64 = cpu.iter().map(|c| c.system.as_secs_f64()).sum();
    let worker_cpu_used = worker_cpu(&workers)?.since(worker_cpu_before);
    let worker_cpu_total = worker_cpu_used.total().as_secs_f64();
    for worker in &mut workers {
        let _ = worker.stdin.shutdown().await;
    }
    for mut worker in workers.drain(..) {
        let _ = tokio::time::timeout(Duration::from_secs(10), worker.child.wait()).await;
        let _ = worker.child.kill().await;
        let _ = worker.sockets;
    }

    let per_10k = total as f64 / 10_000.0;
    let events = delivered.len();
    let fewest = delivered.iter().copied().min().unwrap_or(0);
    // Baseline column: every socket. Issue 16's goal (all of them, p99 < 1 s) can be met
    // only when every socket got every event, so a partial run's p99 is not judged.
    report.rows.push(
        Row::compared(
            format!("sockets that got the event within the wait, fewest over {events} events (of all)"),
            V::count(total as f64),
            V::count(fewest as f64),
        )
        .goal(Goal::RatioAtLeast(1.0)),
    );
    let p99_row = Row::alone(
        format!(
            "one event → {total} sockets: p99 of those that got it (median over {events} events; largest \
             per-process p99)"
        ),
        V::ms(stats::median(&p99s)),
        "— (no baseline: issue 16 sets < 1 s)",
    );
    report.rows.push(if fewest == total { p99_row.goal(Goal::AtMost(1000.0)) } else { p99_row });
    report.rows.push(Row::alone(
        format!("one event → {total} sockets: p50 of those that got it (median over events; largest per-process p50)"),
        V::ms(stats::median(&p50s)),
        "—",
    ));
    report.rows.push(Row::alone("one event → last socket (median over events)", V::ms(stats::median(&maxes)), "—"));
    report.rows.push(Row::compared(
        format!("{who} VmRSS, all {n} processes, 0 → {total} joined sockets"),
        V::kib(rss_before as f64),
        V::kib(rss_total as f64),
    ));
    report.rows.push(Row::alone(
        format!("{who} VmRSS per 10k joined sockets (growth)"),
        V::kib(((rss_total - rss_before.min(rss_total)) as f64 / per_10k).round()),
        "(RSS growth / 10k sockets)",
    ));
    report.rows.push(Row::alone(
        format!("{who} CPU ms per event per 10k sockets (all {who}s)"),
        V::count((cpu_total * 1000.0 / events.max(1) as f64 / per_10k * 100.0).round() / 100.0),
        "(CPU during the events / events / 10k)",
    ));
    report.rows.push(Row::alone(
        "client workers' CPU ms per event per 10k sockets (all workers)",
        V::count((worker_cpu_total * 1000.0 / events.max(1) as f64 / per_10k * 100.0).round() / 100.0),
        "(CPU during the events / events / 10k)",
    ));
    // What one event's work (hub and clients) takes of this machine's cores at best: the
    // last socket cannot get the event sooner, however the work is scheduled.
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get()) as f64;
    report.rows.push(Row::alone(
        format!("{who} + client CPU per event ÷ {cores} cores (the least time one event can take here)"),
        V::ms((cpu_total + worker_cpu_total) * 1000.0 / events.max(1) as f64 / cores),
        "—",
    ));
    // The same for the kernel's part alone (system CPU: on loopback, a send also runs the
    // receiving side's TCP work): what is left of the floor if hub and clients spent no
    // time in their own code at all.
    report.rows.push(Row::alone(
        format!("of which system CPU (kernel: both ends' TCP work on loopback) ÷ {cores} cores"),
        V::ms((hub_system + worker_cpu_used.system.as_secs_f64()) * 1000.0 / events.max(1) as f64 / cores),
        "—",
    ));
    report.notes.push(format!(
        "{total} sockets opened and joined in {connect_secs:.1} s; per {who} VmRSS {:?} KiB; per event: delivered to \
         {delivered:?}, p50 {:?} ms, \
         p99 {:?} ms, last {:?} ms, write sent → every worker reported {:?} ms; events phase {events_secs:.1} s, \
         {who} CPU {:.2} s (per {who} {:?} s)",
        rss_joined,
        p50s.iter().map(|v| (v * 10.0).round() / 10.0).collect::<Vec<_>>(),
        p99s.iter().map(|v| (v * 10.0).round() / 10.0).collect::<Vec<_>>(),
        maxes.iter().map(|v| (v * 10.0).round() / 10.0).collect::<Vec<_>>(),
        walls.iter().map(|v| (v * 10.0).round() / 10.0).collect::<Vec<_>>(),
        cpu_total,
        cpu.iter().map(|c| (c.total().as_secs_f64() * 100.0).round() / 100.0).collect::<Vec<_>>(),
    ));
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn done_and_partial_lines_are_read_and_other_events_skipped() {
        let done = Arrivals::parse("done 7 1500 2500 3000", 7, 40).unwrap().unwrap();
        assert_eq!((done.count, done.p50, done.p99, done.max), (40, 1.5, 2.5, 3.0));
        let partial = Arrivals::parse("partial 7 12 1000 2000 2000", 7, 40).unwrap().unwrap();
        assert_eq!((partial.count, partial.p50), (12, 1.0));
        // A late `done` of an earlier event is not this event's answer.
        assert!(Arrivals::parse("done 6 1 1 1", 7, 40).unwrap().is_none());
        assert!(Arrivals::parse("ready 40 1.0", 7, 40).is_err());
    }
}
