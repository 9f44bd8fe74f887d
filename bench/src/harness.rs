//! What every scenario runs against: one private PostgreSQL cluster for the whole run, a
//! fresh hub process (the real release binary) per scenario, and the client side (HTTP,
//! WebSockets from spread-out loopback source addresses).

use std::collections::HashMap;
use std::net::{Ipv4Addr, SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context, bail};
use futures_util::{SinkExt, StreamExt};
use synchub::embedded_pg::{Durability, EmbeddedPostgres};
use synchub_protocol::{
    BulkRequest, BulkUpsert, ClientFrame, CreateProjectRequest, Project, PutFileRequest, PutFileResponse, ServerFrame,
    channel_name,
};
use tokio::net::{TcpSocket, TcpStream};
use tokio::process::{Child, Command};
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::HeaderValue;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use uuid::Uuid;

use crate::procfs;
use crate::report::{Row, Unit};
use crate::stats::Latencies;

pub const USER: &str = "bench-user";
const DB_NAME: &str = "synchub_bench";

/// Everything shared by the scenarios of one run.
pub struct Ctx {
    pub quick: bool,
    pub pg: EmbeddedPostgres,
    pub durability: Durability,
    pub db_url: String,
    pub hub_bin: PathBuf,
    pub token: String,
    /// A service (orchestrator) token, for snapshots and sessions.
    pub service_token: String,
    pub http: reqwest::Client,
    pub work: PathBuf,
    /// pg_stat_statements is loaded (`--pg-stat-statements`): scenarios add the hub's
    /// statements per write to their notes.
    pub statements: bool,
    /// Socket counts for idle_socket_rss (`--idle-sockets`).
    pub idle_sockets: Vec<usize>,
    /// The container agent binary (`--agent-bin`).
    pub agent_bin: PathBuf,
    /// Figures scenarios publish for later ones of the same run (e.g. the one-hub
    /// throughput the two-hub variant compares with), by key.
    results: Mutex<HashMap<String, f64>>,
    jwt_secret: String,
    signing_key: String,
    _work_dir: tempfile::TempDir,
}

impl Ctx {
    /// Starts PostgreSQL, creates and migrates the bench database, mints the user token.
    pub async fn start(quick: bool, hub_bin: PathBuf, durability: Durability, statements: bool) -> anyhow::Result<Ctx> {
        if !hub_bin.exists() {
            bail!("hub binary {} not found (build it: cargo build --release -p synchub)", hub_bin.display());
        }
        let mut work_dir = tempfile::Builder::new().prefix("synchub-bench-").tempdir()?;
        if std::env::var_os("SYNCHUB_BENCH_KEEP_WORK").is_some() {
            // Diagnostics: keep the hub and agent logs, pgbench logs and trees after the run.
            work_dir.disable_cleanup(true);
            eprintln!("synchub-bench: keeping the work dir {}", work_dir.path().display());
        }
        let work = work_dir.path().to_path_buf();
        let pg_root = work.join("pg");
        let pg = tokio::task::spawn_blocking(move || EmbeddedPostgres::start(&pg_root, durability))
            .await?
            .context("starting PostgreSQL")?;
        let (client, connection) = tokio_postgres::connect(&pg.url("postgres"), tokio_postgres::NoTls).await?;
        let connection = tokio::spawn(connection);
        client.batch_execute(&format!("CREATE DATABASE {DB_NAME}")).await?;
        if statements {
            client.batch_execute("ALTER SYSTEM SET shared_preload_libraries = 'pg_stat_statements'").await?;
        }
        drop(client);
        let _ = connection.await;
        let pg = if statements {
            tokio::task::spawn_blocking(move || {
                pg.stop();
                pg.restart(durability).map(|()| pg)
            })
            .await?
            .context("restarting PostgreSQL with pg_stat_statements")?
        } else {
            pg
        };
        let db_url = pg.url(DB_NAME);
        synchub::db::migrate(&db_url, &synchub::config::Limits::default()).await.context("migrating")?;
        if statements {
            let (client, connection) = tokio_postgres::connect(&db_url, tokio_postgres::NoTls).await?;
            tokio::spawn(connection);
            client.batch_execute("CREATE EXTENSION IF NOT EXISTS pg_stat_statements").await?;
        }
        let jwt_secret = format!("bench-jwt-{}", Uuid::new_v4());
        let signing_key = format!("bench-signing-{}", Uuid::new_v4());
        let token =
            synchub::auth::users::UserVerifier::new(Some(&jwt_secret), None, &[], None, None)?.mint(USER, 6 * 3600)?;
        // reqwest is built with the hub's `rustls-no-provider` feature (one build of it in
        // the workspace): the process needs its crypto provider even for plain HTTP.
        let service_token = synchub::auth::tokens::HubKeys::new(Some(&signing_key)).service_token(6 * 3600)?;
        synchub::app::init_process();
        let http = reqwest::Client::builder().tcp_nodelay(true).pool_max_idle_per_host(64).build()?;
        Ok(Ctx {
            quick,
            pg,
            durability,
            db_url,
            hub_bin,
            token,
            service_token,
            http,
            work,
            statements,
            idle_sockets: vec![10_000],
            agent_bin: PathBuf::from("synchub-agent"),
            results: Mutex::new(HashMap::new()),
            jwt_secret,
            signing_key,
            _work_dir: work_dir,
        })
    }

    /// Makes `value` available to later scenarios of this run under `key`.
    pub fn publish(&self, key: impl Into<String>, value: f64) {
        self.results.lock().unwrap_or_else(|p| p.into_inner()).insert(key.into(), value);
    }

    /// A figure an earlier scenario of this run published.
    pub fn published(&self, key: &str) -> Option<f64> {
        self.results.lock().unwrap_or_else(|p| p.into_inner()).get(key).copied()
    }

    pub fn db_name(&self) -> &'static str {
        DB_NAME
    }

    /// A client of the bench database (as the superuser).
    pub async fn sql(&self) -> anyhow::Result<tokio_postgres::Client> {
        let (client, connection) = tokio_postgres::connect(&self.db_url, tokio_postgres::NoTls).await?;
        tokio::spawn(connection);
        Ok(client)
    }

    /// With `--pg-stat-statements`: forget the statistics gathered so far.
    pub async fn statements_reset(&self) -> anyhow::Result<()> {
        if self.statements {
            self.sql().await?.batch_execute("SELECT pg_stat_statements_reset()").await?;
        }
        Ok(())
    }

    /// With `--pg-stat-statements`: the statements run since the last reset, most called
    /// first, as note lines ("calls per write, mean time, query"). Statements of the
    /// bench's own connection (the ones reading the statistics) are left out.
    pub async fn statements_report(&self, writes: u64) -> anyhow::Result<Vec<String>> {
        if !self.statements {
            return Ok(Vec::new());
        }
        let rows = self
            .sql()
            .await?
            .query(
                "SELECT calls, mean_exec_time, regexp_replace(query, '\\s+', ' ', 'g')
                 FROM pg_stat_statements
                 WHERE query NOT LIKE '%pg_stat_statements%' AND calls > 0
                 ORDER BY calls DESC LIMIT 12",
                &[],
            )
            .await?;
        Ok(rows
            .iter()
            .map(|row| {
                let (calls, mean_ms, query): (i64, f64, String) = (row.get(0), row.get(1), row.get(2));
                let query: String = query.chars().take(110).collect();
                format!(
                    "pg_stat_statements: {calls} calls ({:.2} per write), mean {mean_ms:.3} ms: `{}`",
                    calls as f64 / writes.max(1) as f64,
                    query.replace('`', "'")
                )
            })
            .collect())
    }

    /// Starts a fresh hub process (`synchub serve`) and waits until it answers /healthz.
    pub async fn start_hub(&self, label: &str) -> anyhow::Result<Hub> {
        self.start_hub_with(label, &[]).await
    }

    /// [`Ctx::start_hub`] with more environment for the hub (e.g. allowed browser origins).
    pub async fn start_hub_with(&self, label: &str, extra_env: &[(&str, String)]) -> anyhow::Result<Hub> {
        let log = self.work.join(format!("hub-{label}.log"));
        let mut last_error = None;
        for _ in 0..5 {
            let port = TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
            let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
            let log_file = std::fs::OpenOptions::new().create(true).append(true).open(&log)?;
            let child = Command::new(&self.hub_bin)
                .arg("serve")
                .env("DATABASE_URL", &self.db_url)
                .env("SYNCHUB_LISTEN", addr.to_string())
                .env("SYNCHUB_JWT_SECRET", &self.jwt_secret)
                .env("SYNCHUB_SIGNING_KEY", &self.signing_key)
                .env("SYNCHUB_STORAGE_DIR", self.work.join("objects"))
                .env("SYNCHUB_WRITE_RATE", "1000000")
                .env("SYNCHUB_WRITE_BURST", "1000000")
                .env("SYNCHUB_MAX_SOCKETS_PER_USER", "100000")
                .env("SYNCHUB_MAX_PROJECTS_PER_USER", "1000")
                .env("SYNCHUB_MAX_BYTES_PER_USER", (4u64 << 30).to_string())
                .env("RUST_LOG", "warn")
                .envs(extra_env.iter().map(|(k, v)| (k, v)))
                .stdin(Stdio::null())
                .stdout(log_file.try_clone()?)
                .stderr(log_file)
                .kill_on_drop(true)
                .spawn()
                .with_context(|| format!("starting {}", self.hub_bin.display()))?;
            let mut hub = Hub { pid: child.id().context("hub exited at once")?, child, addr, log: log.clone() };
            match hub.wait_ready(&self.http).await {
                Ok(()) => return Ok(hub),
                Err(err) => {
                    last_error = Some(err);
                    hub.stop().await;
                }
            }
        }
        Err(last_error
            .unwrap_or_else(|| anyhow::anyhow!("hub did not start"))
            .context(format!("hub did not become ready; see {}", log.display())))
    }

    /// Starts a fresh hub and creates one project on it (what most scenarios begin with).
    pub async fn hub_with_project(&self, label: &str) -> anyhow::Result<(Hub, Uuid)> {
        let hub = self.start_hub(label).await?;
        match self.create_project(&hub, &format!("bench {label}")).await {
            Ok(project) => Ok((hub, project)),
            Err(err) => {
                hub.stop().await;
                Err(err)
            }
        }
    }

    /// Pairs of blocks an interleaved measurement runs: at least 5 for the record; 2 in
    /// quick mode (a smoke check of the code path, not of the numbers).
    pub fn pairs(&self) -> usize {
        if self.quick { 2 } else { 5 }
    }

    /// Probes the machine now (load, the disk's fsync latency where PostgreSQL's data is).
    pub async fn machine_state(&self) -> MachineState {
        let dir = self.work.clone();
        tokio::task::spawn_blocking(move || MachineState::probe(&dir)).await.unwrap_or_default()
    }

    /// Runs `block` for the subject and the baseline in alternating short blocks (A B A B …,
    /// `pairs` pairs), probing the machine before each pair, so that a machine changing speed
    /// during the run hits both sides alike and shows up as pairs that disagree. `block`
    /// gets the side and the pair's index and returns that block's figures.
    pub async fn interleave<M>(
        &self,
        pairs: usize,
        mut block: impl AsyncFnMut(Side, usize) -> anyhow::Result<M>,
    ) -> anyhow::Result<Interleaved<M>> {
        let mut done = Vec::with_capacity(pairs);
        for pair in 0..pairs {
            let state = self.machine_state().await;
            let subject = block(Side::Subject, pair).await.with_context(|| format!("pair {pair}, subject block"))?;
            let baseline = block(Side::Baseline, pair).await.with_context(|| format!("pair {pair}, baseline block"))?;
            done.push(Pair { subject, baseline, state });
        }
        Ok(Interleaved { pairs: done })
    }

    /// `POST /v1/projects` → the new project's id.
    pub async fn create_project(&self, hub: &Hub, name: &str) -> anyhow::Result<Uuid> {
        let response = self
            .http
            .post(hub.url("/v1/projects"))
            .bearer_auth(&self.token)
            .json(&CreateProjectRequest { id: None, name: name.to_owned(), source: None })
            .send()
            .await?;
        let status = response.status();
        if status.as_u16() != 201 {
            bail!("creating a project answered {status}: {}", response.text().await.unwrap_or_default());
        }
        Ok(response.json::<Project>().await?.id)
    }

    /// Writes `files` (path, content) through `files:bulk`, 1,000 per request.
    pub async fn bulk_upsert(&self, hub: &Hub, project: Uuid, files: &[(String, String)]) -> anyhow::Result<()> {
        for batch in files.chunks(1_000) {
            let upserts = batch
                .iter()
                .map(|(path, content)| BulkUpsert {
                    path: path.clone(),
                    content: content.clone(),
                    file_type: None,
                    expected_version: None,
                    blob: None,
                })
                .collect();
            let response = self
                .http
                .post(hub.url(&format!("/v1/projects/{project}/files:bulk")))
                .bearer_auth(&self.token)
                .json(&BulkRequest { upserts, ..BulkRequest::default() })
                .timeout(Duration::from_secs(300))
                .send()
                .await?;
            if !response.status().is_success() {
                let status = response.status();
                bail!("bulk write answered {status}: {}", response.text().await.unwrap_or_default());
            }
        }
        Ok(())
    }

    /// `PUT` one file; returns the event seq of the write.
    pub async fn put_file(&self, hub: &Hub, project: Uuid, path: &str, content: &str) -> anyhow::Result<i64> {
        let response = self
            .http
            .put(hub.url(&format!("/v1/projects/{project}/files/{path}")))
            .bearer_auth(&self.token)
            .json(&put_body(content))
            .send()
            .await?;
        let status = response.status();
        if !status.is_success() {
            bail!("PUT {path} answered {status}: {}", response.text().await.unwrap_or_default());
        }
        let written: PutFileResponse = response.json().await?;
        written.seq.with_context(|| format!("PUT {path}: no seq in {written:?}"))
    }

    /// Opens `n` WebSockets joined to `project`, `concurrency` handshakes at a time, spread
    /// over several loopback source addresses.
    pub async fn open_joined(&self, hub: &Hub, project: Uuid, n: usize, concurrency: usize) -> anyhow::Result<Vec<Ws>> {
        self.open_joined_at(hub.addr, project, n, concurrency).await
    }

    /// [`Ctx::open_joined`] against any server speaking the join handshake (the hub, or
    /// the Node baseline).
    pub async fn open_joined_at(
        &self,
        addr: SocketAddr,
        project: Uuid,
        n: usize,
        concurrency: usize,
    ) -> anyhow::Result<Vec<Ws>> {
        let token = &self.token;
        let results: Vec<anyhow::Result<Ws>> = futures_util::stream::iter(0..n)
            .map(|i| async move {
                let mut last = None;
                for attempt in 0..3 {
                    if attempt > 0 {
                        tokio::time::sleep(Duration::from_millis(200 * attempt)).await;
                    }
                    match connect_joined(addr, token, Some(source_addr(i)), project).await {
                        Ok(ws) => return Ok(ws),
                        Err(err) => last = Some(err),
                    }
                }
                Err(last.unwrap_or_else(|| anyhow::anyhow!("no attempt")).context(format!("socket {i}")))
            })
            .buffer_unordered(concurrency)
            .collect()
            .await;
        results.into_iter().collect()
    }
}

impl Drop for Ctx {
    fn drop(&mut self) {
        self.pg.stop();
    }
}

/// Which side of an interleaved measurement a block measures.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Side {
    Subject,
    Baseline,
}

/// One pair of blocks and the machine's state just before it.
pub struct Pair<M> {
    pub subject: M,
    pub baseline: M,
    pub state: MachineState,
}

/// What [`Ctx::interleave`] measured.
pub struct Interleaved<M> {
    pub pairs: Vec<Pair<M>>,
}

impl<M> Interleaved<M> {
    /// (baseline, subject) of `figure` per pair.
    pub fn figures(&self, figure: impl Fn(&M) -> f64) -> Vec<(f64, f64)> {
        self.pairs.iter().map(|p| (figure(&p.baseline), figure(&p.subject))).collect()
    }

    /// A table row of `figure`, judged on the median of its per-pair ratios.
    pub fn row(&self, metric: impl Into<String>, unit: Unit, figure: impl Fn(&M) -> f64) -> Row {
        Row::paired(metric, unit, &self.figures(figure))
    }

    /// A note listing `figure`'s per-pair ratios and the machine's state before each pair.
    pub fn note(&self, what: &str, figure: impl Fn(&M) -> f64) -> String {
        let pairs: Vec<String> = self
            .pairs
            .iter()
            .map(|p| {
                let (b, s) = (figure(&p.baseline), figure(&p.subject));
                let ratio = if b > 0.0 { format!("×{:.2}", s / b) } else { "—".into() };
                format!("{ratio} ({s:.3} / {b:.3}; {})", p.state)
            })
            .collect();
        format!("{what}, per pair (subject / baseline; machine before the pair): {}", pairs.join("; "))
    }

    /// Every pair's latencies of one side, merged.
    pub fn merged(&self, side: Side, latencies: impl Fn(&M) -> &Latencies) -> Latencies {
        let mut all = Latencies::default();
        for pair in &self.pairs {
            all.merge(latencies(if side == Side::Subject { &pair.subject } else { &pair.baseline }));
        }
        all
    }
}

/// The machine's state beside a measurement: the 1-minute load average and how long the disk
/// under PostgreSQL takes to make a small write durable (what every commit waits for).
#[derive(Clone, Copy, Debug, Default)]
pub struct MachineState {
    pub load1: f64,
    /// Median and maximum of a few 4 KiB write + fdatasync rounds, ms.
    pub fsync_p50_ms: f64,
    pub fsync_max_ms: f64,
}

impl MachineState {
    const ROUNDS: usize = 7;

    /// Blocking: a few fdatasyncs in `dir` (tens of ms on a slow disk).
    pub fn probe(dir: &Path) -> MachineState {
        use std::io::Write as _;
        let load1 = std::fs::read_to_string("/proc/loadavg")
            .ok()
            .and_then(|t| t.split_whitespace().next()?.parse().ok())
            .unwrap_or(0.0);
        let path = dir.join("fsync-probe");
        let mut times = Vec::with_capacity(Self::ROUNDS);
        if let Ok(mut file) = std::fs::OpenOptions::new().create(true).write(true).truncate(true).open(&path) {
            let block = [0x5au8; 4096];
            for _ in 0..Self::ROUNDS {
                let started = Instant::now();
                if file.write_all(&block).and_then(|()| file.sync_data()).is_err() {
                    break;
                }
                times.push(started.elapsed().as_secs_f64() * 1000.0);
            }
        }
        let _ = std::fs::remove_file(&path);
        let (_, max) = crate::stats::range(&times);
        MachineState { load1, fsync_p50_ms: crate::stats::median(&times), fsync_max_ms: max }
    }
}

impl std::fmt::Display for MachineState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "load {:.2}, fsync p50 {:.2} ms max {:.2} ms", self.load1, self.fsync_p50_ms, self.fsync_max_ms)
    }
}

/// A running hub process.
pub struct Hub {
    child: Child,
    pub pid: u32,
    pub addr: SocketAddr,
    pub log: PathBuf,
}

impl Hub {
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    async fn wait_ready(&mut self, http: &reqwest::Client) -> anyhow::Result<()> {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Some(status) = self.child.try_wait()? {
                bail!("hub exited with {status}");
            }
            if let Ok(response) = http.get(self.url("/healthz")).timeout(Duration::from_secs(1)).send().await
                && response.status().is_success()
            {
                return Ok(());
            }
            if Instant::now() > deadline {
                bail!("hub not ready after 60 s");
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// VmRSS of the hub process, KiB.
    pub fn rss_kib(&self) -> anyhow::Result<u64> {
        procfs::status_kib(self.pid, "VmRSS")
    }

    /// User and system CPU time of the hub process.
    pub fn cpu(&self) -> anyhow::Result<procfs::Cpu> {
        procfs::cpu_time(self.pid)
    }

    /// Lines the hub logged at warn level or above (RUST_LOG=warn).
    pub fn log_lines(&self) -> Vec<String> {
        std::fs::read_to_string(&self.log)
            .map(|text| text.lines().filter(|l| !l.trim().is_empty()).map(str::to_string).collect())
            .unwrap_or_default()
    }

    /// SIGTERM, then SIGKILL after 10 s.
    pub async fn stop(mut self) {
        if matches!(self.child.try_wait(), Ok(None)) {
            let _ = Command::new("kill").args(["-TERM", &self.pid.to_string()]).status().await;
            if tokio::time::timeout(Duration::from_secs(10), self.child.wait()).await.is_err() {
                let _ = self.child.kill().await;
            }
        }
    }
}

pub type Ws = WebSocketStream<TcpStream>;

/// Client sockets are spread over this many loopback source addresses (127.0.0.2 …), so
/// 10,000 connections to one hub port do not exhaust one address's ephemeral ports.
pub const SOURCE_ADDRESSES: usize = 8;

pub fn source_addr(i: usize) -> Ipv4Addr {
    Ipv4Addr::new(127, 0, 0, 2 + (i % SOURCE_ADDRESSES) as u8)
}

/// A WebSocket to the hub's `/v1/realtime` with the token in the Authorization header
/// and TCP_NODELAY, from `source` when given.
pub async fn connect(addr: SocketAddr, token: &str, source: Option<Ipv4Addr>) -> anyhow::Result<Ws> {
    let socket = TcpSocket::new_v4()?;
    if let Some(source) = source {
        socket.bind(SocketAddr::from((source, 0))).with_context(|| format!("binding {source}"))?;
    }
    let stream = socket.connect(addr).await?;
    stream.set_nodelay(true)?;
    let mut request = format!("ws://{addr}/v1/realtime").into_client_request()?;
    request.headers_mut().insert("authorization", HeaderValue::from_str(&format!("Bearer {token}"))?);
    // A small read buffer (the default is 128 KiB per socket): 10,000+ client sockets in
    // this process must not cost gigabytes. Frames larger than it are still read whole.
    let config = WebSocketConfig::default().read_buffer_size(8 * 1024);
    let (ws, _) = tokio_tungstenite::client_async_with_config(request, stream, Some(config)).await?;
    Ok(ws)
}

/// Sends a join for `project` (since = null) and waits for `joined`; returns its cursor.
pub async fn join(ws: &mut Ws, project: Uuid) -> anyhow::Result<i64> {
    let frame = ClientFrame::Join { reference: Some("1".into()), channel: channel_name(project), since: None };
    ws.send(Message::Text(frame.to_text().into())).await?;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let message = tokio::time::timeout_at(deadline, ws.next())
            .await
            .context("no joined reply within 30 s")?
            .context("socket closed before joined")??;
        if let Message::Text(text) = message {
            match ServerFrame::parse(text.as_str())? {
                ServerFrame::Joined { cursor, .. } => return Ok(cursor),
                ServerFrame::Error(refused) => bail!("join refused: {}", refused.error.code),
                _ => {}
            }
        }
    }
}

pub async fn connect_joined(
    addr: SocketAddr,
    token: &str,
    source: Option<Ipv4Addr>,
    project: Uuid,
) -> anyhow::Result<Ws> {
    let mut ws = connect(addr, token, source).await?;
    join(&mut ws, project).await?;
    Ok(ws)
}

/// Sleeps until `deadline` to within tens of microseconds, for load generators paced
/// against a baseline that keeps its schedule precisely (pgbench `-R`). tokio's timer fires
/// on whole-millisecond ticks, after the deadline: a PUT paced with `sleep_until` alone went
/// out 1.23 ms after its scheduled time at p50 (2.06 ms p99; measured in write_event_latency,
/// whose latencies run from the scheduled time), which is the generator's lateness, not the
/// hub's. The last 2 ms are waited on this worker thread (bench runtimes have several;
/// nothing else of the scenario waits on this one then): slept by the OS's high-resolution
/// sleep, but for the last 200 µs, which are spun (an idle vCPU here wakes 0.1–0.2 ms late).
pub async fn sleep_precisely_until(deadline: tokio::time::Instant) {
    const TICKS: Duration = Duration::from_millis(2);
    const SPIN: Duration = Duration::from_micros(200);
    if let Some(coarse) = deadline.checked_sub(TICKS) {
        tokio::time::sleep_until(coarse).await;
    }
    if let Some(left) = deadline.checked_sub(SPIN).map(|t| t.saturating_duration_since(tokio::time::Instant::now())) {
        std::thread::sleep(left);
    }
    while tokio::time::Instant::now() < deadline {
        std::hint::spin_loop();
    }
}

/// A monotonic clock in nanoseconds since the first call (never 0), plus the wall-clock
/// time of that first call, to place database timestamps on the same line.
pub struct Clock {
    start: Instant,
    wall_start_us: i64,
}

pub fn clock() -> &'static Clock {
    static CLOCK: OnceLock<Clock> = OnceLock::new();
    CLOCK.get_or_init(|| Clock {
        start: Instant::now(),
        wall_start_us: SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_micros() as i64).unwrap_or(0),
    })
}

impl Clock {
    pub fn now_ns(&self) -> u64 {
        self.start.elapsed().as_nanos() as u64 + 1
    }

    /// `instant` on this clock (ns; instants before the first call read as 1).
    pub fn ns_at(&self, instant: Instant) -> u64 {
        instant.saturating_duration_since(self.start).as_nanos() as u64 + 1
    }

    /// A wall-clock instant (µs since the epoch, e.g. PostgreSQL's clock_timestamp())
    /// on this clock's line, in ns (may be negative for times before the first call).
    pub fn wall_us_to_ns(&self, wall_us: i64) -> i64 {
        (wall_us - self.wall_start_us) * 1000
    }
}

/// Reads the event log's `created_at` (clock_timestamp() at the event insert, just before
/// its transaction commits) for `seqs` of `project`, in µs since the epoch.
pub async fn event_times(
    ctx: &Ctx,
    project: Uuid,
    seqs: &[i64],
) -> anyhow::Result<std::collections::HashMap<i64, i64>> {
    let client = ctx.sql().await?;
    let rows = client
        .query(
            "SELECT seq, (extract(epoch FROM created_at) * 1000000)::bigint FROM synchub.events
             WHERE project_id = $1 AND seq = ANY($2)",
            &[&project, &seqs],
        )
        .await?;
    Ok(rows.iter().map(|row| (row.get(0), row.get(1))).collect())
}

/// Where pgbench and friends live: the PostgreSQL binaries the cluster was started from.
pub fn pg_bin(ctx: &Ctx) -> &Path {
    ctx.pg.bin_dir()
}

/// The body of `PUT …/files/{path}` writing `content` (no precondition, no op_id).
pub fn put_body(content: &str) -> PutFileRequest {
    PutFileRequest { content: content.to_owned(), file_type: None, expected_version: None, op_id: None }
}
