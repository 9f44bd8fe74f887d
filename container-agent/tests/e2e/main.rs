//! The agent end to end: the real hub (in-process, on its own runtime so it can be killed
//! without a goodbye), real PostgreSQL (the hub tests' per-process cluster, one database
//! per test), and the real `synchub-agent` binary. Every agent reaches the hub through a
//! small TCP proxy the test can cut. Tests are parallel-safe: own database, ports, dirs.
//!
//! This file is the harness (a killable hub, the world around it, the agent process); the
//! tests live in `sync` (hydration, live edits, confinement), `resilience` (hub restarts,
//! network cuts, gaps in the log) and `lifecycle` (revocation, the dev command, token
//! refresh) and `binary` (binary files hydrated and followed byte for byte).

mod binary;
mod lifecycle;
mod resilience;
mod sync;

#[allow(dead_code, unused_imports)]
#[path = "../../../tests/api/helpers.rs"]
mod helpers;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use helpers::{SIGNING_KEY, TestApp, fresh_database, test_config, user_token};
use serde_json::{Value, json};
use synchub::Config;
use synchub::auth::tokens::HubKeys;
use synchub_test_support::CutProxy;
use tokio::process::{Child, Command};

const USER: &str = "alice";
const CONVERGE_WITHIN: Duration = Duration::from_secs(30);

// ---------------------------------------------------------------------------------------
// A hub on its own runtime: `kill` drops every task and socket at once, like SIGKILL.

struct Hub {
    runtime: Option<tokio::runtime::Runtime>,
    app: Option<TestApp>,
    direct: String,
}

impl Hub {
    async fn start(config: Config) -> Hub {
        let (runtime, app) = tokio::task::spawn_blocking(move || {
            let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
            let app = runtime.block_on(TestApp::spawn_on(config));
            (runtime, app)
        })
        .await
        .unwrap();
        let direct = app.base.clone();
        Hub { runtime: Some(runtime), app: Some(app), direct }
    }

    fn addr(&self) -> SocketAddr {
        self.app.as_ref().unwrap().addr
    }

    /// Shuts the hub down as SIGTERM does: sockets are closed with 1012, requests drained.
    async fn stop(&mut self) {
        if let Some(app) = self.app.take() {
            app.shut_down().await;
        }
        if let Some(runtime) = self.runtime.take() {
            runtime.shutdown_background();
        }
    }

    fn kill(&mut self) {
        // No graceful shutdown: the app is leaked and its runtime torn down.
        std::mem::forget(self.app.take());
        if let Some(runtime) = self.runtime.take() {
            runtime.shutdown_background();
        }
    }
}

impl Drop for Hub {
    fn drop(&mut self) {
        self.kill();
    }
}

/// One test's world: database, storage, a hub behind a proxy, an HTTP client.
struct World {
    proxy: CutProxy,
    hub: Hub,
    database_url: String,
    http: reqwest::Client,
    dir: tempfile::TempDir,
}

fn hub_config(database_url: &str, storage: &Path, proxy: &CutProxy) -> Config {
    let mut config = test_config(database_url.to_owned());
    config.storage_dir = Some(storage.to_owned());
    config.public_url = Some(proxy.named_base());
    config.limits.write_rate = 100_000.0;
    config.limits.write_burst = 100_000.0;
    config
}

impl World {
    async fn start() -> World {
        let dir = tempfile::tempdir().unwrap();
        let database_url = fresh_database().await;
        let proxy = CutProxy::start().await.unwrap();
        let hub = Hub::start(hub_config(&database_url, &dir.path().join("objects"), &proxy)).await;
        proxy.point_to(hub.addr());
        World { proxy, hub, database_url, http: reqwest::Client::new(), dir }
    }

    /// Kills the hub and starts a new one on the same database, behind the same proxy.
    async fn restart_hub(&mut self, down_for: Duration) {
        self.hub.kill();
        tokio::time::sleep(down_for).await;
        let config = hub_config(&self.database_url, &self.dir.path().join("objects"), &self.proxy);
        self.hub = Hub::start(config).await;
        self.proxy.point_to(self.hub.addr());
    }

    fn project_dir(&self) -> PathBuf {
        self.dir.path().join("project")
    }

    /// Calls the hub (through the proxy); retries while the hub is unreachable or restarting.
    async fn call(&self, method: reqwest::Method, path: &str, token: &str, body: Option<Value>) -> (u16, Value) {
        let deadline = Instant::now() + CONVERGE_WITHIN;
        loop {
            let mut request =
                self.http.request(method.clone(), format!("{}{path}", self.proxy.base())).bearer_auth(token);
            if let Some(body) = &body {
                request = request.json(body);
            }
            match request.timeout(Duration::from_secs(10)).send().await {
                Ok(response) if response.status().as_u16() < 500 => {
                    let status = response.status().as_u16();
                    let bytes = response.bytes().await.unwrap_or_default();
                    return (status, serde_json::from_slice(&bytes).unwrap_or(Value::Null));
                }
                _ if Instant::now() < deadline => tokio::time::sleep(Duration::from_millis(50)).await,
                other => panic!("{method} {path}: hub unreachable: {other:?}"),
            }
        }
    }

    /// A write that must succeed; `op_id` makes a retry after a lost answer harmless.
    async fn must(&self, method: reqwest::Method, path: &str, body: Value) -> Value {
        let (status, answer) = self.call(method.clone(), path, &user_token(USER), Some(body)).await;
        assert_eq!(status, 200, "{method} {path}: {answer}");
        answer
    }

    async fn create_project(&self) -> String {
        let (status, body) =
            self.call(reqwest::Method::POST, "/v1/projects", &user_token(USER), Some(json!({"name": "agent"}))).await;
        assert_eq!(status, 201, "{body}");
        body["id"].as_str().unwrap().to_owned()
    }

    async fn put(&self, project: &str, path: &str, content: &str) {
        let body = json!({"content": content, "op_id": uuid::Uuid::new_v4()});
        self.must(reqwest::Method::PUT, &format!("/v1/projects/{project}/files/{path}"), body).await;
    }

    async fn bulk(&self, project: &str, upserts: Vec<(String, String)>, deletes: Vec<String>) {
        let upserts: Vec<Value> =
            upserts.into_iter().map(|(path, content)| json!({"path": path, "content": content})).collect();
        let deletes: Vec<Value> = deletes.into_iter().map(|path| json!({"path": path})).collect();
        let body = json!({"upserts": upserts, "deletes": deletes, "op_id": uuid::Uuid::new_v4()});
        self.must(reqwest::Method::POST, &format!("/v1/projects/{project}/files:bulk"), body).await;
    }

    async fn delete(&self, project: &str, path: &str) {
        let op = uuid::Uuid::new_v4();
        let (status, body) = self
            .call(
                reqwest::Method::DELETE,
                &format!("/v1/projects/{project}/files/{path}?op_id={op}"),
                &user_token(USER),
                None,
            )
            .await;
        assert!(status == 200 || status == 404, "delete {path}: {status} {body}");
    }

    async fn move_file(&self, project: &str, from: &str, to: &str) {
        let body = json!({"from": from, "to": to, "op_id": uuid::Uuid::new_v4()});
        self.must(reqwest::Method::POST, &format!("/v1/projects/{project}/files:move"), body).await;
    }

    /// The project's current files: path → content.
    async fn files(&self, project: &str) -> BTreeMap<String, String> {
        let (status, list) = self
            .call(
                reqwest::Method::GET,
                &format!("/v1/projects/{project}/files?include_content=true"),
                &user_token(USER),
                None,
            )
            .await;
        assert_eq!(status, 200, "{list}");
        list["files"]
            .as_array()
            .unwrap()
            .iter()
            .map(|f| (f["path"].as_str().unwrap().to_owned(), f["content"].as_str().unwrap().to_owned()))
            .collect()
    }

    fn service_token(&self) -> String {
        HubKeys::new(Some(SIGNING_KEY)).service_token(3600).unwrap()
    }

    /// `POST /sessions`: the env a preview container gets.
    async fn session(&self, project: &str) -> Value {
        let (status, body) = self
            .call(
                reqwest::Method::POST,
                &format!("/v1/projects/{project}/sessions"),
                &self.service_token(),
                Some(json!({})),
            )
            .await;
        assert_eq!(status, 201, "{body}");
        body
    }

    async fn start_agent(&self, session: &Value, command: &[&str]) -> Agent {
        Agent::start(
            &self.project_dir(),
            &self.dir.path().join(format!("agent-{}.log", uuid::Uuid::new_v4())),
            session,
            command,
        )
        .await
    }
}

// ---------------------------------------------------------------------------------------
// The agent binary.

/// The `synchub-agent` under test: `SYNCHUB_AGENT_BIN` when set (e.g. the static build CI
/// makes for preview images), else the one cargo built with this test.
fn agent_bin() -> PathBuf {
    std::env::var_os("SYNCHUB_AGENT_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_BIN_EXE_synchub-agent")))
}

struct Agent {
    child: Child,
    health: SocketAddr,
    log: PathBuf,
    session_id: String,
}

impl Agent {
    async fn start(project_dir: &Path, log: &Path, session: &Value, command: &[&str]) -> Agent {
        let health = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap();
        let mut cmd = Command::new(agent_bin());
        cmd.arg("--project-dir").arg(project_dir).arg("--health-addr").arg(health.to_string());
        if !command.is_empty() {
            cmd.arg("--").args(command);
        }
        for (name, value) in session["env"].as_object().unwrap() {
            cmd.env(name, value.as_str().unwrap());
        }
        cmd.env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(log).unwrap())
            .kill_on_drop(true);
        let child = cmd.spawn().expect("start synchub-agent");
        Agent { child, health, log: log.to_owned(), session_id: session["session_id"].as_str().unwrap().to_owned() }
    }

    async fn get(&self, path: &str) -> Option<(u16, String)> {
        let response = reqwest::get(format!("http://{}{path}", self.health)).await.ok()?;
        Some((response.status().as_u16(), response.text().await.ok()?))
    }

    async fn status(&self) -> Value {
        let (_, body) = self.get("/status").await.expect("/status answers");
        serde_json::from_str(&body).unwrap()
    }

    async fn wait_ready(&self) {
        let deadline = Instant::now() + CONVERGE_WITHIN;
        while Instant::now() < deadline {
            if self.get("/readyz").await.is_some_and(|(code, _)| code == 200) {
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("agent never became ready\n{}", self.log_tail());
    }

    fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(40)..].join("\n")
    }

    /// The agent's log, checked to hold no token and none of `contents`.
    fn log_without_secrets(&self, session: &Value, contents: &[&str]) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        assert!(!text.contains(session["token"].as_str().unwrap()), "the token was logged");
        for content in contents {
            assert!(!text.contains(content), "file content {content:?} was logged");
        }
        text
    }

    async fn exit_within(&mut self, limit: Duration) -> std::process::ExitStatus {
        match tokio::time::timeout(limit, self.child.wait()).await {
            Ok(status) => status.unwrap(),
            Err(_) => panic!("agent still running after {limit:?}\n{}", self.log_tail()),
        }
    }
}

/// The files under `root` (regular files as their content, symlinks marked), skipping
/// the agent's `.synchub/` and the top-level names in `ignore`.
fn read_tree(root: &Path, ignore: &[&str]) -> BTreeMap<String, String> {
    fn walk(dir: &Path, prefix: &str, out: &mut BTreeMap<String, String>) {
        for entry in std::fs::read_dir(dir).unwrap().flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            let path = if prefix.is_empty() { name.clone() } else { format!("{prefix}/{name}") };
            let kind = entry.file_type().unwrap();
            if kind.is_symlink() {
                out.insert(path, "<symlink>".into());
            } else if kind.is_dir() {
                walk(&entry.path(), &path, out);
            } else {
                out.insert(path, std::fs::read_to_string(entry.path()).unwrap_or_else(|_| "<unreadable>".into()));
            }
        }
    }
    let mut out = BTreeMap::new();
    walk(root, "", &mut out);
    out.retain(|path, _| {
        let top = path.split('/').next().unwrap();
        top != ".synchub" && !ignore.contains(&top)
    });
    out
}

fn describe_difference(want: &BTreeMap<String, String>, have: &BTreeMap<String, String>) -> String {
    let missing: Vec<&String> = want.keys().filter(|k| !have.contains_key(*k)).take(5).collect();
    let extra: Vec<&String> = have.keys().filter(|k| !want.contains_key(*k)).take(5).collect();
    let differ: Vec<&String> = want.keys().filter(|k| have.get(*k).is_some_and(|v| v != &want[*k])).take(5).collect();
    format!("{} wanted, {} on disk; missing {missing:?}, extra {extra:?}, different {differ:?}", want.len(), have.len())
}

/// Polls until the agent's tree equals the project's files (minus `ignore`).
async fn converge(world: &World, project: &str, agent: &Agent, ignore: &[&str]) -> BTreeMap<String, String> {
    let mut want = world.files(project).await;
    want.retain(|path, _| !ignore.contains(&path.split('/').next().unwrap()));
    let deadline = Instant::now() + CONVERGE_WITHIN;
    loop {
        let root = world.project_dir();
        let have = tokio::task::spawn_blocking(move || read_tree(&root, &[])).await.unwrap();
        let mut have = have;
        have.retain(|path, _| !ignore.contains(&path.split('/').next().unwrap()));
        if have == want {
            return want;
        }
        if Instant::now() > deadline {
            panic!("the tree did not converge: {}\n{}", describe_difference(&want, &have), agent.log_tail());
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Polls until the hub says the session has applied everything.
async fn caught_up(world: &World, agent: &Agent) {
    let deadline = Instant::now() + CONVERGE_WITHIN;
    loop {
        let (_, session) = world
            .call(reqwest::Method::GET, &format!("/v1/sessions/{}", agent.session_id), &world.service_token(), None)
            .await;
        if session["applied_seq"].is_i64() && session["applied_seq"] == session["project_last_seq"] {
            return;
        }
        if Instant::now() > deadline {
            panic!("the session never caught up: {session}\n{}", agent.log_tail());
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// A project with `n` files in a few directories.
async fn seeded_project(world: &World, n: usize) -> String {
    let project = world.create_project().await;
    let files: Vec<(String, String)> =
        (0..n).map(|i| (format!("src/d{}/f{i}.ts", i % 10), format!("export const v{i} = {i};\n"))).collect();
    for chunk in files.chunks(500) {
        world.bulk(&project, chunk.to_vec(), vec![]).await;
    }
    project
}

fn file(i: usize) -> String {
    format!("src/d{}/f{i}.ts", i % 10)
}

/// 100 edits of every kind over the seeded files.
async fn mixed_edits(world: &World, project: &str, round: usize) {
    for i in 0..100 {
        let k = round * 100 + i;
        match i % 4 {
            0 => world.put(project, &file(i), &format!("// edit {k}\n")).await,
            1 => world.delete(project, &file(100 + i)).await,
            2 => {
                world
                    .bulk(
                        project,
                        vec![(format!("bulk/b{k}.md"), format!("# {k}\n")), (file(i), format!("// bulk {k}\n"))],
                        vec![file(300 + i)],
                    )
                    .await
            }
            _ => {
                let (status, _) = world
                    .call(
                        reqwest::Method::POST,
                        &format!("/v1/projects/{project}/files:move"),
                        &user_token(USER),
                        Some(json!({"from": file(200 + i), "to": format!("moved/m{k}.ts")})),
                    )
                    .await;
                // After a restart the file may already have moved (a replayed op).
                assert!(status == 200 || status == 404, "move: {status}");
            }
        }
    }
}

impl World {
    async fn hub_put_direct(&self, project: &str, path: &str, content: &str) {
        let response = self
            .http
            .put(format!("{}/v1/projects/{project}/files/{path}", self.hub.direct))
            .bearer_auth(user_token(USER))
            .json(&json!({"content": content}))
            .send()
            .await
            .unwrap();
        assert!(response.status().is_success());
    }

    async fn hub_delete_direct(&self, project: &str, path: &str) {
        let response = self
            .http
            .delete(format!("{}/v1/projects/{project}/files/{path}", self.hub.direct))
            .bearer_auth(user_token(USER))
            .send()
            .await
            .unwrap();
        assert!(response.status().is_success());
    }
}
