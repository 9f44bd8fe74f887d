//! The container agent (`synchub-agent`, the real release binary, one process per run
//! step) against a hub process:
//! - `agent_hydrate` (#6): `POST /v1/projects/{id}/sessions` → the agent started with the
//!   returned env answers 200 on `/readyz`, for 1,000 files / 10 MB and 10,000 files /
//!   100 MB; baseline: `curl` + `unzip` of the same archive from a fresh snapshot URL.
//! - `agent_edit_latency` (#7): paced HTTP PUTs of files the agent hydrated; per edit, from
//!   the PUT being sent to the new file being renamed into place in the agent's tree
//!   (inotify `IN_MOVED_TO`); the same writes' write → event latency on a subscriber
//!   socket (#2's measure) is the baseline, taken in the same phase.
//! - `agent_resume` (#8): the agent reaches the hub through a TCP proxy in this process;
//!   the proxy cuts every connection and refuses new ones for 10 s while 1,000 edits land,
//!   then heals; from the agent's first new connection to the last edit on disk.

use std::mem::MaybeUninit;
use std::net::SocketAddr;
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use futures_util::StreamExt;
use rustix::fs::inotify;
use serde_json::Value;
use synchub_protocol::CreateSessionRequest;
use synchub_protocol::ServerFrame;
use tokio::net::{TcpListener, TcpStream};
use tokio::process::{Child, Command};
use tokio::sync::watch;
use tokio_tungstenite::tungstenite::Message;
use uuid::Uuid;

use super::Pending;
use super::snapshot_build::{content, file_path};
use crate::harness::{self, Ctx, Hub, clock};
use crate::procfs;
use crate::report::{Goal, Report, Row, Value as V};
use crate::stats::Latencies;

pub fn run_hydrate(ctx: &Ctx) -> Pending<'_> {
    Box::pin(hydrate(ctx))
}

pub fn run_edit_latency(ctx: &Ctx) -> Pending<'_> {
    Box::pin(edit_latency(ctx))
}

pub fn run_resume(ctx: &Ctx) -> Pending<'_> {
    Box::pin(resume(ctx))
}

// ---------------------------------------------------------------------------------------
// The agent process.

struct Agent {
    child: Child,
    pid: u32,
    health: SocketAddr,
    log: PathBuf,
}

/// `POST /v1/projects/{id}/sessions` with the service token: what a container gets.
async fn create_session(ctx: &Ctx, hub: &Hub, project: Uuid) -> anyhow::Result<Value> {
    let response = ctx
        .http
        .post(hub.url(&format!("/v1/projects/{project}/sessions")))
        .bearer_auth(&ctx.service_token)
        .json(&CreateSessionRequest { ttl_seconds: None, max_lifetime_seconds: None })
        .timeout(Duration::from_secs(600))
        .send()
        .await?;
    let status = response.status();
    let body: Value = response.json().await?;
    if status.as_u16() != 201 {
        bail!("POST sessions answered {status}: {body}");
    }
    Ok(body)
}

impl Agent {
    /// Starts `synchub-agent --project-dir DIR --health-addr ADDR` with the session's env
    /// (and `SYNCHUB_URL` replaced by `hub_url` when given: the resume proxy).
    fn start(ctx: &Ctx, session: &Value, dir: &Path, hub_url: Option<&str>, label: &str) -> anyhow::Result<Agent> {
        if !ctx.agent_bin.exists() {
            bail!(
                "agent binary {} not found (build it: cargo build --release -p container-agent)",
                ctx.agent_bin.display()
            );
        }
        std::fs::create_dir_all(dir)?;
        let health = std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?;
        let log = ctx.work.join(format!("agent-{label}.log"));
        let log_file = std::fs::File::create(&log)?;
        let mut command = Command::new(&ctx.agent_bin);
        command.arg("--project-dir").arg(dir).arg("--health-addr").arg(health.to_string());
        for (name, value) in session["env"].as_object().context("session without env")? {
            command.env(name, value.as_str().unwrap_or_default());
        }
        if let Some(url) = hub_url {
            command.env("SYNCHUB_URL", url);
        }
        let child = command
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log_file)
            .kill_on_drop(true)
            .spawn()
            .with_context(|| format!("starting {}", ctx.agent_bin.display()))?;
        let pid = child.id().context("the agent exited at once")?;
        Ok(Agent { child, pid, health, log })
    }

    async fn get(&self, ctx: &Ctx, path: &str) -> Option<(u16, String)> {
        let response =
            ctx.http.get(format!("http://{}{path}", self.health)).timeout(Duration::from_secs(2)).send().await.ok()?;
        Some((response.status().as_u16(), response.text().await.ok()?))
    }

    async fn ready(&self, ctx: &Ctx) -> bool {
        self.get(ctx, "/readyz").await.is_some_and(|(code, _)| code == 200)
    }

    /// Polls `/readyz` every 2 ms until 200.
    async fn wait_ready(&mut self, ctx: &Ctx, limit: Duration) -> anyhow::Result<()> {
        let deadline = Instant::now() + limit;
        loop {
            if self.ready(ctx).await {
                return Ok(());
            }
            if let Some(status) = self.child.try_wait()? {
                bail!("the agent exited with {status}: {}", self.log_tail());
            }
            if Instant::now() > deadline {
                bail!("the agent was not ready within {} s: {}", limit.as_secs(), self.log_tail());
            }
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
    }

    async fn status(&self, ctx: &Ctx) -> anyhow::Result<Value> {
        let (_, body) = self.get(ctx, "/status").await.context("/status did not answer")?;
        Ok(serde_json::from_str(&body)?)
    }

    fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    fn log_tail(&self) -> String {
        let text = self.log_text();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(5)..].join(" | ")
    }

    /// SIGTERM, then SIGKILL after 5 s.
    async fn stop(mut self) {
        if matches!(self.child.try_wait(), Ok(None)) {
            let _ = Command::new("kill").args(["-TERM", &self.pid.to_string()]).status().await;
            if tokio::time::timeout(Duration::from_secs(5), self.child.wait()).await.is_err() {
                let _ = self.child.kill().await;
            }
        }
    }
}

// ---------------------------------------------------------------------------------------
// Watching the agent's tree: inotify IN_MOVED_TO (the agent writes a temp file next to the
// target, then renames it into place), on a blocking thread.

struct DirWatch {
    /// Per file index (`<index>.txt`): when it was last renamed into place (clock ns; 0 = not yet).
    arrivals: Arc<Vec<AtomicU64>>,
    fd: Arc<OwnedFd>,
    wd: i32,
}

impl DirWatch {
    fn start(dir: &Path, files: usize) -> anyhow::Result<DirWatch> {
        let fd = Arc::new(inotify::init(inotify::CreateFlags::CLOEXEC)?);
        let wd = inotify::add_watch(&*fd, dir, inotify::WatchFlags::MOVED_TO)
            .with_context(|| format!("inotify on {}", dir.display()))?;
        let arrivals: Arc<Vec<AtomicU64>> = Arc::new((0..files).map(|_| AtomicU64::new(0)).collect());
        let (reader_fd, slots) = (fd.clone(), arrivals.clone());
        std::thread::Builder::new().name("bench-inotify".into()).spawn(move || {
            let mut buffer = vec![MaybeUninit::<u8>::uninit(); 256 * 1024];
            let mut reader = inotify::Reader::new(&*reader_fd, &mut buffer);
            loop {
                let Ok(event) = reader.next() else { return };
                let now = clock().now_ns();
                if event.events().contains(inotify::ReadFlags::IGNORED) {
                    return; // the watch was removed: done
                }
                let index = event
                    .file_name()
                    .and_then(|name| name.to_str().ok())
                    .and_then(|name| name.strip_suffix(".txt")?.parse::<usize>().ok());
                if let Some(slot) = index.and_then(|i| slots.get(i)) {
                    slot.store(now, Ordering::Relaxed);
                }
            }
        })?;
        Ok(DirWatch { arrivals, fd, wd })
    }

    fn reset(&self) {
        for slot in self.arrivals.iter() {
            slot.store(0, Ordering::Relaxed);
        }
    }

    fn arrived(&self, index: usize) -> u64 {
        self.arrivals[index].load(Ordering::Relaxed)
    }

    fn all_arrived(&self, range: std::ops::Range<usize>) -> bool {
        range.into_iter().all(|i| self.arrived(i) != 0)
    }
}

impl Drop for DirWatch {
    fn drop(&mut self) {
        // Wakes the reader thread with IN_IGNORED.
        let _ = inotify::remove_watch(&*self.fd, self.wd);
    }
}

async fn wait_until(what: &str, limit: Duration, mut done: impl FnMut() -> bool) -> anyhow::Result<()> {
    let deadline = Instant::now() + limit;
    while !done() {
        if Instant::now() > deadline {
            bail!("{what}: not within {} s", limit.as_secs());
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    Ok(())
}

fn median(values: &mut [f64]) -> f64 {
    values.sort_by(f64::total_cmp);
    values[values.len() / 2]
}

fn rounded(values: &[f64]) -> Vec<f64> {
    values.iter().map(|v| (v * 10.0).round() / 10.0).collect()
}

/// Counts regular files under `dir`, not looking into `.synchub`.
fn count_files(dir: &Path) -> usize {
    let Ok(entries) = std::fs::read_dir(dir) else { return 0 };
    entries
        .flatten()
        .map(|entry| {
            let path = entry.path();
            match entry.file_type() {
                Ok(t) if t.is_dir() && entry.file_name() != ".synchub" => count_files(&path),
                Ok(t) if t.is_file() => 1,
                _ => 0,
            }
        })
        .sum()
}

// ---------------------------------------------------------------------------------------
// #6 hydrate.

struct Size {
    files: usize,
    file_bytes: usize,
}

async fn hydrate(ctx: &Ctx) -> anyhow::Result<Report> {
    let sizes: Vec<Size> = if ctx.quick {
        vec![Size { files: 200, file_bytes: 5_000 }]
    } else {
        vec![Size { files: 1_000, file_bytes: 10_000 }, Size { files: 10_000, file_bytes: 10_000 }]
    };
    let mut report = Report::new(
        "agent_hydrate",
        "#6",
        "A project's files (source-like text, as in snapshot_build) and a snapshot already built for them. Timed: \
         `POST /v1/projects/{id}/sessions` (service token; the snapshot is reused) → start `synchub-agent \
         --project-dir DIR --health-addr ADDR` with the returned env → the first 200 from its `/readyz`, polled \
         every 2 ms (download streamed to disk, every file checked against the manifest's sha256, extracted, \
         socket joined). Each repetition hydrates an empty directory with a new agent process.",
    );
    report.param(
        "sizes",
        sizes.iter().map(|s| format!("{} files × {} bytes", s.files, s.file_bytes)).collect::<Vec<_>>().join(", "),
    );
    report.param(
        "repetitions (median; agent and baseline alternate which goes first)",
        if ctx.quick { "1" } else { "5 at 1,000 files, 3 at 10,000" },
    );
    for tool in ["curl", "unzip"] {
        if Command::new(tool).arg("-v").stdout(Stdio::null()).stderr(Stdio::null()).status().await.is_err() {
            bail!("`{tool}` not found");
        }
    }
    let hub = ctx.start_hub("agent_hydrate").await?;
    let result = async {
        for size in &sizes {
            let reps = if ctx.quick {
                1
            } else if size.files > 5_000 {
                3
            } else {
                5
            };
            one_hydrate(ctx, &hub, size, reps, &mut report).await?;
        }
        Ok::<(), anyhow::Error>(())
    }
    .await;
    let log = hub.log_lines();
    hub.stop().await;
    result?;
    if !log.is_empty() {
        report.notes.push(format!("the hub logged {} warning/error lines, first: `{}`", log.len(), log[0]));
    }
    report.baseline = "`curl -sf -o snap.zip URL` then `unzip -q snap.zip -d DIR` (two processes, wall time of both) \
                       with a fresh URL of the same snapshot from `GET /v1/projects/{id}/snapshots/latest` (the \
                       hub serves it from local-disk storage, as it serves the agent); an empty DIR each time."
        .into();
    Ok(report)
}

async fn snapshot_call(
    ctx: &Ctx,
    hub: &Hub,
    method: reqwest::Method,
    project: Uuid,
    path: &str,
) -> anyhow::Result<Value> {
    let response = ctx
        .http
        .request(method, hub.url(&format!("/v1/projects/{project}/snapshots{path}")))
        .bearer_auth(&ctx.service_token)
        .timeout(Duration::from_secs(600))
        .send()
        .await?;
    let status = response.status();
    let body: Value = response.json().await?;
    if !status.is_success() {
        bail!("snapshots{path} answered {status}: {body}");
    }
    Ok(body)
}

/// The baseline once: fresh URL, curl, unzip; seconds.
async fn curl_unzip(ctx: &Ctx, hub: &Hub, project: Uuid, dir: &Path, files: usize) -> anyhow::Result<f64> {
    let latest = snapshot_call(ctx, hub, reqwest::Method::GET, project, "/latest").await?;
    let url = latest["url"].as_str().context("snapshot without url")?.to_string();
    let zip = ctx.work.join("hydrate-baseline.zip");
    let _ = std::fs::remove_file(&zip);
    if dir.exists() {
        std::fs::remove_dir_all(dir)?;
    }
    std::fs::create_dir_all(dir)?;
    let started = Instant::now();
    let curl = Command::new("curl").arg("-sf").arg("-o").arg(&zip).arg(&url).status().await?;
    let unzip = Command::new("unzip").arg("-q").arg(&zip).arg("-d").arg(dir).status().await?;
    let secs = started.elapsed().as_secs_f64();
    if !curl.success() || !unzip.success() {
        bail!("curl ({curl}) or unzip ({unzip}) failed");
    }
    let extracted = count_files(dir);
    if extracted != files {
        bail!("unzip extracted {extracted} files, {files} expected");
    }
    Ok(secs)
}

/// Sessions call → agent ready; (seconds in all, seconds of the sessions call).
async fn session_to_ready(
    ctx: &Ctx,
    hub: &Hub,
    project: Uuid,
    dir: &Path,
    files: usize,
    label: &str,
) -> anyhow::Result<(f64, f64, Value)> {
    if dir.exists() {
        std::fs::remove_dir_all(dir)?;
    }
    std::fs::create_dir_all(dir)?;
    let started = Instant::now();
    let session = create_session(ctx, hub, project).await?;
    let session_secs = started.elapsed().as_secs_f64();
    let mut agent = Agent::start(ctx, &session, dir, None, label)?;
    let ready = agent.wait_ready(ctx, Duration::from_secs(300)).await;
    let secs = started.elapsed().as_secs_f64();
    agent.stop().await;
    ready?;
    let on_disk = count_files(dir);
    if on_disk != files {
        bail!("the agent's tree holds {on_disk} files, {files} expected");
    }
    Ok((secs, session_secs, session))
}

async fn one_hydrate(ctx: &Ctx, hub: &Hub, size: &Size, reps: usize, report: &mut Report) -> anyhow::Result<()> {
    let label = format!("{} files / {:.0} MB", size.files, (size.files * size.file_bytes) as f64 / 1e6);
    let project = ctx.create_project(hub, &format!("bench hydrate {label}")).await?;
    let files: Vec<(String, String)> =
        (0..size.files).map(|i| (file_path(i), content(i as u64 + 1, size.file_bytes))).collect();
    ctx.bulk_upsert(hub, project, &files).await?;
    let built = snapshot_call(ctx, hub, reqwest::Method::POST, project, "").await?;

    let agent_dir = ctx.work.join(format!("hydrate-{}-agent", size.files));
    let unzip_dir = ctx.work.join(format!("hydrate-{}-unzip", size.files));
    let (mut agent_secs, mut base_secs, mut session_secs) = (Vec::new(), Vec::new(), Vec::new());
    for rep in 0..reps {
        let tag = format!("hydrate-{}-{rep}", size.files);
        if rep % 2 == 0 {
            base_secs.push(curl_unzip(ctx, hub, project, &unzip_dir, size.files).await?);
        }
        let (secs, session, body) = session_to_ready(ctx, hub, project, &agent_dir, size.files, &tag).await?;
        if body["snapshot"]["reused"] == false {
            report
                .notes
                .push(format!("{label}: the session built a new snapshot (expected reuse): {}", body["snapshot"]));
        }
        agent_secs.push(secs);
        session_secs.push(session);
        if rep % 2 == 1 {
            base_secs.push(curl_unzip(ctx, hub, project, &unzip_dir, size.files).await?);
        }
    }
    // Once more after a change: the sessions call also builds the snapshot (informative).
    ctx.put_file(hub, project, &file_path(0), &content(7_777_777, size.file_bytes)).await?;
    let (with_build, with_build_session, _) =
        session_to_ready(ctx, hub, project, &agent_dir, size.files, &format!("hydrate-{}-build", size.files)).await?;
    let _ = std::fs::remove_dir_all(&agent_dir);
    let _ = std::fs::remove_dir_all(&unzip_dir);

    let (agent_all, base_all, session_all) = (agent_secs.clone(), base_secs.clone(), session_secs.clone());
    let (agent_median, base_median) = (median(&mut agent_secs), median(&mut base_secs));
    report.rows.push(
        Row::compared(
            format!("{label}: sessions → agent /readyz, median"),
            V::ms(base_median * 1000.0),
            V::ms(agent_median * 1000.0),
        )
        .goal(Goal::RatioAtMost(1.2)),
    );
    report.rows.push(Row::compared(
        format!("{label}: sessions (with a snapshot build) → /readyz, 1 run"),
        V::ms(base_median * 1000.0),
        V::ms(with_build * 1000.0),
    ));
    report.notes.push(format!(
        "{label}: agent runs {:?} ms (of which the sessions call {:?} ms); curl + unzip {:?} ms; snapshot {} bytes; \
         with a snapshot build: {:.0} ms, of which the sessions call {:.0} ms",
        rounded(&agent_all.iter().map(|s| s * 1000.0).collect::<Vec<_>>()),
        rounded(&session_all.iter().map(|s| s * 1000.0).collect::<Vec<_>>()),
        rounded(&base_all.iter().map(|s| s * 1000.0).collect::<Vec<_>>()),
        built["bytes"],
        with_build * 1000.0,
        with_build_session * 1000.0,
    ));
    Ok(())
}

// ---------------------------------------------------------------------------------------
// #7 edit → file on disk.

const EDIT_RATE: f64 = 100.0;

async fn edit_latency(ctx: &Ctx) -> anyhow::Result<Report> {
    let samples: usize = if ctx.quick { 200 } else { 1_000 };
    let warmup: usize = if ctx.quick { 20 } else { 50 };
    let mut report = Report::new(
        "agent_edit_latency",
        "#7",
        "An agent hydrated with the project's files `e/N.txt`, and one subscriber WebSocket joined to the project; \
         HTTP PUTs of new content for `e/0.txt`, `e/1.txt`, … paced at 100/s (not waiting for answers). Per edit: \
         PUT sent → the file renamed into place in the agent's tree (inotify IN_MOVED_TO on `DIR/e`), and PUT sent → \
         its `file:update` frame on the subscriber (#2's measure, same writes, same moment).",
    );
    report.param("edits", samples);
    report.param("warm-up edits (not counted)", warmup);
    report.param("pace", format!("{EDIT_RATE} edits/s"));
    let hub = ctx.start_hub("agent_edit_latency").await?;
    let result = edit_phase(ctx, &hub, samples, warmup, &mut report).await;
    let log = hub.log_lines();
    hub.stop().await;
    result?;
    if !log.is_empty() {
        report.notes.push(format!("the hub logged {} warning/error lines, first: `{}`", log.len(), log[0]));
    }
    report.baseline = "write → event on a subscriber socket (the write_event_latency measure) for the same PUTs, \
                       recorded in the same phase; also write_event_latency's own p50 from earlier in this run."
        .into();
    Ok(report)
}

async fn edit_phase(ctx: &Ctx, hub: &Hub, samples: usize, warmup: usize, report: &mut Report) -> anyhow::Result<()> {
    let total = warmup + samples;
    let project = ctx.create_project(hub, "bench agent edits").await?;
    let seed: Vec<(String, String)> = (0..total).map(|i| (format!("e/{i}.txt"), format!("seed {i}\n"))).collect();
    ctx.bulk_upsert(hub, project, &seed).await?;
    let session = create_session(ctx, hub, project).await?;
    let dir = ctx.work.join("edit-agent");
    let mut agent = Agent::start(ctx, &session, &dir, None, "edit")?;
    let result = async {
        agent.wait_ready(ctx, Duration::from_secs(120)).await?;
        let watch = DirWatch::start(&dir.join("e"), total)?;

        let received: Arc<Vec<AtomicU64>> = Arc::new((0..total).map(|_| AtomicU64::new(0)).collect());
        let mut ws = harness::connect_joined(hub.addr, &ctx.token, None, project).await?;
        let reader = {
            let received = received.clone();
            tokio::spawn(async move {
                while let Some(Ok(message)) = ws.next().await {
                    let Message::Text(text) = message else { continue };
                    let now = clock().now_ns();
                    let Ok(ServerFrame::Event(frame)) = ServerFrame::parse(text.as_str()) else { continue };
                    let index = frame.payload["file_path"]
                        .as_str()
                        .and_then(|p| p.strip_prefix("e/")?.strip_suffix(".txt")?.parse::<usize>().ok());
                    if let Some(slot) = index.and_then(|i| received.get(i)) {
                        slot.store(now, Ordering::Relaxed);
                    }
                }
            })
        };
        let cpu_before = procfs::cpu_time(agent.pid)?;
        let sent: Arc<Vec<AtomicU64>> = Arc::new((0..total).map(|_| AtomicU64::new(0)).collect());
        let mut puts = tokio::task::JoinSet::new();
        let start = tokio::time::Instant::now();
        for i in 0..total {
            tokio::time::sleep_until(start + Duration::from_secs_f64(i as f64 / EDIT_RATE)).await;
            let request = ctx
                .http
                .put(hub.url(&format!("/v1/projects/{project}/files/e/{i}.txt")))
                .bearer_auth(&ctx.token)
                .json(&harness::put_body(&format!("edit {i}\n")))
                .build()?;
            let (client, sent) = (ctx.http.clone(), sent.clone());
            puts.spawn(async move {
                sent[i].store(clock().now_ns(), Ordering::Relaxed);
                let response = client.execute(request).await?;
                if !response.status().is_success() {
                    bail!("PUT {i} answered {}", response.status());
                }
                Ok(())
            });
        }
        while let Some(result) = puts.join_next().await {
            result??;
        }
        let all = 0..total;
        let waited = wait_until("every edit on disk and on the socket", Duration::from_secs(60), || {
            watch.all_arrived(all.clone()) && all.clone().all(|i| received[i].load(Ordering::Relaxed) != 0)
        })
        .await;
        reader.abort();
        waited?;
        let cpu = procfs::cpu_time(agent.pid)?.since(cpu_before);
        for i in [0, total / 2, total - 1] {
            let on_disk = std::fs::read_to_string(dir.join(format!("e/{i}.txt")))?;
            if on_disk != format!("edit {i}\n") {
                bail!("e/{i}.txt on disk is {on_disk:?}");
            }
        }

        let (mut disk, mut event) = (Latencies::default(), Latencies::default());
        for i in warmup..total {
            let s = sent[i].load(Ordering::Relaxed);
            disk.record_ns(watch.arrived(i).saturating_sub(s));
            event.record_ns(received[i].load(Ordering::Relaxed).saturating_sub(s));
        }
        report.rows.push(
            Row::compared(
                "edit → file on disk p50 (baseline: write → event p50, same writes)",
                V::ms(event.ms(0.5)),
                V::ms(disk.ms(0.5)),
            )
            .goal(Goal::PlusAtMost(2.0)),
        );
        report.rows.push(Row::compared(
            "edit → file on disk p99 (baseline: write → event p99, same writes)",
            V::ms(event.ms(0.99)),
            V::ms(disk.ms(0.99)),
        ));
        match ctx.published("write_event_latency/p50_ms") {
            Some(p50) => report.rows.push(
                Row::compared(
                    "edit → file on disk p50 (baseline: write_event_latency p50)",
                    V::ms(p50),
                    V::ms(disk.ms(0.5)),
                )
                .goal(Goal::PlusAtMost(2.0)),
            ),
            None => report.notes.push(
                "write_event_latency did not run before this: compared with the same-phase subscriber only".into(),
            ),
        }
        let status = agent.status(ctx).await?;
        report.notes.push(format!("edit → file on disk: {}", disk.summary()));
        report.notes.push(format!("write → event (subscriber socket, same writes): {}", event.summary()));
        report.notes.push(format!(
            "the agent used {:.2} s CPU (user {:.2} s, system {:.2} s) for {total} edits = {:.1} ms per 1,000 edits; \
             /status at the end: {status}",
            cpu.total().as_secs_f64(),
            cpu.user.as_secs_f64(),
            cpu.system.as_secs_f64(),
            cpu.total().as_secs_f64() * 1e6 / total as f64,
        ));
        Ok::<(), anyhow::Error>(())
    }
    .await;
    agent.stop().await;
    result
}

// ---------------------------------------------------------------------------------------
// #8 resume through a TCP proxy that can cut.

struct Proxy {
    addr: SocketAddr,
    open: Arc<AtomicBool>,
    cuts: watch::Sender<u64>,
    /// When each connection was let through (clock ns).
    accepted: Arc<Mutex<Vec<u64>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Proxy {
    async fn start(upstream: SocketAddr) -> anyhow::Result<Proxy> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let open = Arc::new(AtomicBool::new(true));
        let accepted: Arc<Mutex<Vec<u64>>> = Arc::default();
        let (cuts, cut_rx) = watch::channel(0u64);
        let (is_open, log) = (open.clone(), accepted.clone());
        let task = tokio::spawn(async move {
            while let Ok((mut client, _)) = listener.accept().await {
                if !is_open.load(Ordering::SeqCst) {
                    continue; // dropped at once: the connection is refused
                }
                log.lock().unwrap_or_else(|p| p.into_inner()).push(clock().now_ns());
                let mut cut = cut_rx.clone();
                cut.mark_unchanged();
                tokio::spawn(async move {
                    let Ok(mut server) = TcpStream::connect(upstream).await else { return };
                    let _ = client.set_nodelay(true);
                    let _ = server.set_nodelay(true);
                    tokio::select! {
                        _ = tokio::io::copy_bidirectional(&mut client, &mut server) => {}
                        _ = cut.changed() => {}
                    }
                });
            }
        });
        Ok(Proxy { addr, open, cuts, accepted, task })
    }

    /// Drops every open connection and refuses new ones until [`Proxy::restore`].
    fn cut(&self) {
        self.open.store(false, Ordering::SeqCst);
        self.cuts.send_modify(|n| *n += 1);
    }

    fn restore(&self) {
        self.open.store(true, Ordering::SeqCst);
    }

    /// The first connection let through at or after `since` (clock ns).
    fn first_accept_since(&self, since: u64) -> Option<u64> {
        self.accepted.lock().unwrap_or_else(|p| p.into_inner()).iter().copied().find(|&t| t >= since)
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn resume(ctx: &Ctx) -> anyhow::Result<Report> {
    let edits: usize = if ctx.quick { 100 } else { 1_000 };
    let away = Duration::from_secs(if ctx.quick { 2 } else { 10 });
    let reps: usize = if ctx.quick { 1 } else { 5 };
    let mut report = Report::new(
        "agent_resume",
        "#8",
        "An agent hydrated with `r/N.txt` reaches the hub through a TCP proxy inside the bench. The proxy drops every \
         connection and refuses new ones for the cut; meanwhile one PUT per file (`r/0.txt` … ) lands on the hub \
         directly, spread evenly over the cut. Then the proxy heals; the agent reconnects on its own backoff \
         schedule (250 ms doubling to 5 s, with jitter), joins with `since` = its last applied seq and applies the \
         missed events. Converged = the last edited file renamed into place in the agent's tree (inotify), checked \
         against the agent's `/status` and the files' contents.",
    );
    report.param("edits during the cut", edits);
    report.param("cut", format!("{} s", away.as_secs()));
    report.param("repetitions", reps);
    let hub = ctx.start_hub("agent_resume").await?;
    let result = resume_phase(ctx, &hub, edits, away, reps, &mut report).await;
    let log = hub.log_lines();
    hub.stop().await;
    result?;
    if !log.is_empty() {
        report.notes.push(format!("the hub logged {} warning/error lines, first: `{}`", log.len(), log[0]));
    }
    Ok(report)
}

async fn resume_phase(
    ctx: &Ctx,
    hub: &Hub,
    edits: usize,
    away: Duration,
    reps: usize,
    report: &mut Report,
) -> anyhow::Result<()> {
    let project = ctx.create_project(hub, "bench agent resume").await?;
    let seed: Vec<(String, String)> = (0..edits).map(|i| (format!("r/{i}.txt"), format!("seed {i}\n"))).collect();
    ctx.bulk_upsert(hub, project, &seed).await?;
    let proxy = Proxy::start(hub.addr).await?;
    let session = create_session(ctx, hub, project).await?;
    let dir = ctx.work.join("resume-agent");
    let mut agent = Agent::start(ctx, &session, &dir, Some(&format!("http://{}", proxy.addr)), "resume")?;
    let result = async {
        agent.wait_ready(ctx, Duration::from_secs(120)).await?;
        let watch = DirWatch::start(&dir.join("r"), edits)?;
        let (mut after_reconnect, mut after_restore, mut reconnect_wait) =
            (Latencies::default(), Latencies::default(), Latencies::default());
        let mut floor = Latencies::default();
        let floor_dir = ctx.work.join("resume-floor");
        let mut per_rep = Vec::new();
        for rep in 0..reps {
            watch.reset();
            proxy.cut();
            let cut_at = Instant::now();
            wait_until_async("the agent noticing the cut", Duration::from_secs(10), || async {
                !agent.ready(ctx).await
            })
            .await?;
            let noticed_ms = cut_at.elapsed().as_secs_f64() * 1000.0;
            let mut last_seq = 0;
            let spacing = away.mul_f64(0.9) / edits as u32;
            for i in 0..edits {
                tokio::time::sleep_until(tokio::time::Instant::from_std(cut_at + spacing * i as u32)).await;
                last_seq = last_seq
                    .max(ctx.put_file(hub, project, &format!("r/{i}.txt"), &format!("rep {rep} edit {i}\n")).await?);
            }
            if (0..edits).any(|i| watch.arrived(i) != 0) {
                bail!("edits reached the agent during the cut: the proxy did not cut");
            }
            // The edits are sent one after the other: on a loaded machine they may take
            // longer than the cut, which then lasts until the last one has landed.
            tokio::time::sleep_until(tokio::time::Instant::from_std(cut_at + away)).await;
            let cut_secs = cut_at.elapsed().as_secs_f64();
            let restore_at = clock().now_ns();
            proxy.restore();
            wait_until("every edit in the agent's tree after the cut", Duration::from_secs(60), || {
                watch.all_arrived(0..edits)
            })
            .await?;
            let converged = (0..edits).map(|i| watch.arrived(i)).max().unwrap_or(0);
            let reconnect = proxy.first_accept_since(restore_at).context("no connection after the restore")?;
            after_reconnect.record_ns(converged.saturating_sub(reconnect));
            after_restore.record_ns(converged.saturating_sub(restore_at));
            reconnect_wait.record_ns(reconnect.saturating_sub(restore_at));
            // The agent's own account, and the files' contents.
            let deadline = Instant::now() + Duration::from_secs(10);
            loop {
                let status = agent.status(ctx).await?;
                if status["applied"].as_i64().unwrap_or(0) >= last_seq {
                    break;
                }
                if Instant::now() > deadline {
                    bail!("the agent's /status never reached seq {last_seq}: {status}");
                }
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            for i in [0, edits / 2, edits - 1] {
                let on_disk = std::fs::read_to_string(dir.join(format!("r/{i}.txt")))?;
                if on_disk != format!("rep {rep} edit {i}\n") {
                    bail!("r/{i}.txt on disk is {on_disk:?} after rep {rep}");
                }
            }
            per_rep.push(format!(
                "cut for {cut_secs:.1} s; noticed the cut after {noticed_ms:.0} ms; reconnected {:.0} ms after the \
                 restore; converged {:.1} ms after reconnecting",
                reconnect.saturating_sub(restore_at) as f64 / 1e6,
                converged.saturating_sub(reconnect) as f64 / 1e6
            ));
            agent.wait_ready(ctx, Duration::from_secs(30)).await?;
            // The disk's own floor for the same work, right after: as many files replaced
            // the way the agent does it (new temp file, write, rename over the old one).
            let (dir, n) = (floor_dir.clone(), edits);
            let took = tokio::task::spawn_blocking(move || replace_files(&dir, n, rep)).await??;
            floor.record_ns(took.as_nanos() as u64);
        }
        report.rows.push(
            Row::alone("reconnect → converged p50", V::ms(after_reconnect.ms(0.5)), "— (the issue sets none)")
                .goal(Goal::AtMost(200.0)),
        );
        report.rows.push(Row::compared(
            format!("reconnect → converged p50 vs {edits} file replacements (temp file + rename) on the same disk"),
            V::ms(floor.ms(0.5)),
            V::ms(after_reconnect.ms(0.5)),
        ));
        report.rows.push(
            Row::alone("reconnect → converged max", V::ms(after_reconnect.max_ms()), "— (the issue sets none)")
                .goal(Goal::AtMost(200.0)),
        );
        report.rows.push(Row::alone(
            "proxy healed → agent reconnected p50 (its backoff)",
            V::ms(reconnect_wait.ms(0.5)),
            "—",
        ));
        report.notes.push(format!("reconnect → converged: {}", after_reconnect.summary()));
        report.notes.push(format!(
            "the disk's floor, {edits} files replaced by the bench itself after each repetition (create a temp file, \
             write the edit, rename it over the file; no fsync, like the agent): {}",
            floor.summary()
        ));
        report.notes.push(format!("proxy healed → converged: {}", after_restore.summary()));
        for (rep, line) in per_rep.iter().enumerate() {
            report.notes.push(format!("repetition {}: {line}", rep + 1));
        }
        let log = agent.log_text();
        let rehydrations = log.matches("rehydrat").count();
        report.notes.push(format!(
            "\"reconnect\" is the first connection the proxy let through after healing (the agent's WebSocket \
             upgrade); {}",
            if rehydrations == 0 {
                "the agent's log mentions no rehydration: it resumed by replaying the missed events".to_string()
            } else {
                format!("the agent's log mentions rehydration {rehydrations} times")
            }
        ));
        Ok::<(), anyhow::Error>(())
    }
    .await;
    agent.stop().await;
    result
}

/// Replaces `n` files in `dir` the way the agent applies an edit (a new temp file next to
/// the target, the content written, renamed over it; no fsync) and returns how long the
/// replacements took (seeding the files on the first call is not timed).
fn replace_files(dir: &Path, n: usize, rep: usize) -> std::io::Result<Duration> {
    use std::io::Write;
    std::fs::create_dir_all(dir)?;
    for i in 0..n {
        let target = dir.join(format!("{i}.txt"));
        if !target.exists() {
            std::fs::write(&target, format!("seed {i}\n"))?;
        }
    }
    let started = Instant::now();
    for i in 0..n {
        let temp = dir.join(format!(".tmp-{i}"));
        let mut file = std::fs::OpenOptions::new().write(true).create_new(true).open(&temp)?;
        file.write_all(format!("rep {rep} edit {i}\n").as_bytes())?;
        drop(file);
        std::fs::rename(&temp, dir.join(format!("{i}.txt")))?;
    }
    Ok(started.elapsed())
}

async fn wait_until_async<F, Fut>(what: &str, limit: Duration, mut done: F) -> anyhow::Result<()>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + limit;
    while !done().await {
        if Instant::now() > deadline {
            bail!("{what}: not within {} s", limit.as_secs());
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    Ok(())
}
