//! The one test entry point: `TestApp::spawn()` gives each test its own database (cloned
//! from a migrated template in a PostgreSQL cluster private to this test process) and its
//! own hub on a free port, with typed request helpers.

use std::path::PathBuf;
use std::sync::OnceLock;

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use synchub::auth::tokens::HubKeys;
use synchub::auth::users::UserVerifier;
use synchub::embedded_pg::{Durability, EmbeddedPostgres};
use synchub::{App, AppState, Config};
use tokio_util::sync::CancellationToken;

pub const JWT_SECRET: &str = "test-jwt-secret-0123456789abcdef";
pub const SIGNING_KEY: &str = "test-signing-key-0123456789abcdef";
const TEMPLATE: &str = "synchub_template";

pub struct Cluster {
    pub pg: EmbeddedPostgres,
}

static CLUSTER: OnceLock<Cluster> = OnceLock::new();

/// The process-wide cluster, started (and the template migrated) on first use.
pub fn cluster() -> &'static Cluster {
    CLUSTER.get_or_init(|| {
        synchub::app::init_process();
        remove_stale_clusters();
        let root = std::env::temp_dir().join(format!("synchub-test-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&root);
        let pg = EmbeddedPostgres::start(&root, Durability::Throwaway).expect("start test PostgreSQL");
        let admin = pg.url("postgres");
        let template = pg.url(TEMPLATE);
        // The template is migrated on a runtime of its own: the first caller may be inside
        // another test's runtime, which must not own connections other tests use.
        std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
            rt.block_on(async {
                let (client, conn) = tokio_postgres::connect(&admin, tokio_postgres::NoTls).await.unwrap();
                tokio::spawn(conn);
                client.batch_execute(&format!("CREATE DATABASE {TEMPLATE}")).await.unwrap();
                synchub::db::migrate(&template, &Default::default()).await.expect("migrate template");
            });
        })
        .join()
        .expect("template migration");
        Cluster { pg }
    })
}

/// Test clusters of processes that no longer exist (their server died with them).
fn remove_stale_clusters() {
    let Ok(entries) = std::fs::read_dir(std::env::temp_dir()) else { return };
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(rest) = name.to_str().and_then(|n| n.strip_prefix("synchub-test-")) else { continue };
        // "<pid>" or "<pid>-<suffix>" (a test's own extra cluster): the owner is the leading pid.
        let pid = rest.split('-').next().unwrap_or_default();
        if pid.is_empty() || !pid.bytes().all(|b| b.is_ascii_digit()) {
            continue;
        }
        if !PathBuf::from(format!("/proc/{pid}")).exists() {
            let _ = std::fs::remove_dir_all(entry.path());
        }
    }
}

/// A fresh database cloned from the migrated template.
pub async fn fresh_database() -> String {
    let cluster = cluster();
    let name = format!("t_{}", uuid::Uuid::new_v4().simple());
    let (client, conn) = tokio_postgres::connect(&cluster.pg.url("postgres"), tokio_postgres::NoTls).await.unwrap();
    let conn = tokio::spawn(conn);
    client.batch_execute(&format!("CREATE DATABASE {name} TEMPLATE {TEMPLATE}")).await.unwrap();
    drop(client);
    let _ = conn.await;
    cluster.pg.url(&name)
}

#[allow(dead_code)] // not every test module uses every handle
pub struct TestApp {
    pub base: String,
    pub addr: std::net::SocketAddr,
    pub database_url: String,
    pub state: AppState,
    pub http: reqwest::Client,
    shutdown: CancellationToken,
    serving: Option<tokio::task::JoinHandle<anyhow::Result<()>>>,
}

impl Drop for TestApp {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

pub fn test_config(database_url: String) -> Config {
    let mut config = Config::for_database(database_url);
    config.jwt_secret = Some(JWT_SECRET.into());
    config.signing_key = Some(SIGNING_KEY.into());
    config.db_pool_size = 8;
    config
}

/// A hub with snapshot storage on the local disk, and the directory that holds it (the
/// storage lives as long as the directory).
pub async fn app_with_storage() -> (TestApp, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().to_path_buf();
    let app = TestApp::spawn_with(move |c| c.storage_dir = Some(path)).await;
    (app, dir)
}

impl TestApp {
    pub async fn spawn() -> TestApp {
        Self::spawn_with(|_| {}).await
    }

    pub async fn spawn_with(adjust: impl FnOnce(&mut Config)) -> TestApp {
        let database_url = fresh_database().await;
        let mut config = test_config(database_url.clone());
        adjust(&mut config);
        Self::spawn_on(config).await
    }

    /// A hub on an existing database (several hubs may share one).
    pub async fn spawn_on(mut config: Config) -> TestApp {
        let database_url = config.database_url.clone().unwrap();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        config.public_url.get_or_insert(format!("http://{addr}"));
        let (state, router) = App::build(config).await.expect("build app");
        let shutdown = CancellationToken::new();
        let stop = shutdown.clone();
        let served = state.clone();
        let serving =
            tokio::spawn(synchub::server::serve(served, listener, router, async move { stop.cancelled().await }));
        TestApp {
            base: format!("http://{addr}"),
            addr,
            database_url,
            state,
            http: reqwest::Client::new(),
            shutdown,
            serving: Some(serving),
        }
    }

    /// Shuts the hub down as SIGTERM does (sockets closed with 1012, requests drained,
    /// background tasks stopped) and waits until `serve` has returned.
    pub async fn shut_down(mut self) {
        let _ = self.start_shutdown().await;
    }

    /// Signals the shutdown of [`TestApp::shut_down`] and returns at once with `serve`'s
    /// task, so a test can watch the drain before it awaits what `serve` answered.
    pub fn start_shutdown(&mut self) -> tokio::task::JoinHandle<anyhow::Result<()>> {
        self.shutdown.cancel();
        self.serving.take().expect("the hub is shut down once")
    }

    pub fn user_token(&self, sub: &str) -> String {
        user_token(sub)
    }

    pub fn service_token(&self) -> String {
        service_token()
    }

    /// Sends a request; returns the status and the JSON body (Null when empty).
    pub async fn call(
        &self,
        method: Method,
        path: &str,
        token: Option<&str>,
        body: Option<Value>,
    ) -> (StatusCode, Value) {
        let mut request = self.http.request(method, format!("{}{}", self.base, path));
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        if let Some(body) = body {
            request = request.json(&body);
        }
        let response = request.send().await.expect("request");
        let status = response.status();
        let bytes = response.bytes().await.unwrap();
        let value = if bytes.is_empty() { Value::Null } else { serde_json::from_slice(&bytes).unwrap_or(Value::Null) };
        (status, value)
    }

    pub async fn get(&self, path: &str, token: &str) -> (StatusCode, Value) {
        self.call(Method::GET, path, Some(token), None).await
    }

    pub async fn post(&self, path: &str, token: &str, body: Value) -> (StatusCode, Value) {
        self.call(Method::POST, path, Some(token), Some(body)).await
    }

    pub async fn put(&self, path: &str, token: &str, body: Value) -> (StatusCode, Value) {
        self.call(Method::PUT, path, Some(token), Some(body)).await
    }

    pub async fn delete(&self, path: &str, token: &str) -> (StatusCode, Value) {
        self.call(Method::DELETE, path, Some(token), None).await
    }

    /// Creates a project owned by `sub`; returns its id.
    pub async fn create_project(&self, sub: &str, name: &str) -> String {
        let (status, body) = self.post("/v1/projects", &self.user_token(sub), json!({"name": name})).await;
        assert_eq!(status, StatusCode::CREATED, "{body}");
        body["id"].as_str().unwrap().to_string()
    }

    /// Writes a file as `sub`; panics unless it succeeds.
    pub async fn write(&self, sub: &str, project: &str, path: &str, content: &str) -> Value {
        let (status, body) = self
            .put(&format!("/v1/projects/{project}/files/{path}"), &self.user_token(sub), json!({"content": content}))
            .await;
        assert_eq!(status, StatusCode::OK, "{body}");
        body
    }

    /// The value of an unlabelled metric (`/metrics`, Prometheus text).
    pub async fn metric(&self, name: &str) -> f64 {
        let text = self.http.get(format!("{}/metrics", self.base)).send().await.unwrap().text().await.unwrap();
        let line = text.lines().find(|l| l.split_whitespace().next() == Some(name));
        line.and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("{name}: {text}"))
    }

    /// A direct database connection acting as the hub's runtime role.
    pub async fn sql(&self) -> tokio_postgres::Client {
        let (client, conn) = tokio_postgres::connect(&self.database_url, tokio_postgres::NoTls).await.unwrap();
        tokio::spawn(conn);
        client.batch_execute("SET ROLE synchub_runtime").await.unwrap();
        client
    }
}

pub fn service_token() -> String {
    HubKeys::new(Some(SIGNING_KEY)).service_token(3600).unwrap()
}

pub fn user_token(sub: &str) -> String {
    UserVerifier::new(Some(JWT_SECRET), None, &[], None, None).unwrap().mint(sub, 3600).unwrap()
}

/// Asserts an error answer: status and contract code.
#[track_caller]
pub fn assert_error(answer: &(StatusCode, Value), status: u16, code: &str) {
    assert_eq!(answer.0.as_u16(), status, "{}", answer.1);
    assert_eq!(answer.1["error"]["code"], code, "{}", answer.1);
    assert!(answer.1["error"]["message"].is_string(), "{}", answer.1);
}

pub type WsStream = tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// A realtime client over a real socket.
pub struct Ws {
    pub stream: WsStream,
}

pub fn channel(project: &str) -> String {
    format!("realtime:project:{project}")
}

impl TestApp {
    /// Opens `/v1/realtime` with the token in the Authorization header.
    pub async fn ws(&self, token: &str) -> Ws {
        Ws::connect(self.addr, Some(token), None, "").await.expect("websocket upgrade")
    }
}

impl Ws {
    pub async fn connect(
        addr: std::net::SocketAddr,
        token: Option<&str>,
        origin: Option<&str>,
        query: &str,
    ) -> Result<Ws, tokio_tungstenite::tungstenite::Error> {
        use tokio_tungstenite::tungstenite::client::IntoClientRequest;
        let mut request = format!("ws://{addr}/v1/realtime{query}").into_client_request().unwrap();
        if let Some(token) = token {
            request.headers_mut().insert("authorization", format!("Bearer {token}").parse().unwrap());
        }
        if let Some(origin) = origin {
            request.headers_mut().insert("origin", origin.parse().unwrap());
        }
        let (stream, _) = tokio_tungstenite::connect_async_with_config(request, None, true).await?;
        Ok(Ws { stream })
    }

    pub async fn send(&mut self, frame: Value) {
        use futures_util::SinkExt;
        self.stream.send(tokio_tungstenite::tungstenite::Message::Text(frame.to_string().into())).await.unwrap();
    }

    /// The next text frame as JSON; Err(close code) when the hub closed the socket.
    pub async fn next(&mut self, within: std::time::Duration) -> Result<Value, Option<u16>> {
        use futures_util::StreamExt;
        use tokio_tungstenite::tungstenite::Message;
        loop {
            let message = tokio::time::timeout(within, self.stream.next()).await.map_err(|_| None)?;
            match message {
                Some(Ok(Message::Text(text))) => return Ok(serde_json::from_str(&text).unwrap()),
                Some(Ok(Message::Close(frame))) => return Err(frame.map(|f| u16::from(f.code))),
                Some(Ok(_)) => continue,
                Some(Err(_)) | None => return Err(None),
            }
        }
    }

    /// The next frame, which must arrive within 10 s.
    pub async fn recv(&mut self) -> Value {
        self.next(std::time::Duration::from_secs(10)).await.unwrap_or_else(|code| panic!("socket closed: {code:?}"))
    }

    /// Joins a project's channel and returns the `joined` cursor.
    pub async fn join(&mut self, project: &str, since: Option<i64>) -> i64 {
        self.send(json!({"type": "join", "ref": "j", "channel": channel(project), "since": since})).await;
        let joined = self.recv().await;
        assert_eq!(joined["type"], "joined", "{joined}");
        joined["cursor"].as_i64().unwrap()
    }

    /// Receives `n` events and returns them (panics on anything else).
    pub async fn events(&mut self, n: usize) -> Vec<Value> {
        let mut events = Vec::with_capacity(n);
        while events.len() < n {
            let frame = self.recv().await;
            assert_eq!(frame["type"], "event", "{frame}");
            events.push(frame);
        }
        events
    }

    /// Nothing arrives for `quiet`.
    pub async fn assert_quiet(&mut self, quiet: std::time::Duration) {
        if let Ok(frame) = self.next(quiet).await {
            panic!("unexpected frame: {frame}");
        }
    }

    /// Reads until the hub closes the socket; returns the close code.
    pub async fn close_code(&mut self, within: std::time::Duration) -> Option<u16> {
        let deadline = tokio::time::Instant::now() + within;
        loop {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            match self.next(left).await {
                Ok(_) => continue,
                Err(code) => return code,
            }
        }
    }
}

/// The seqs of a list of event frames.
pub fn seqs(events: &[Value]) -> Vec<i64> {
    events.iter().map(|e| e["seq"].as_i64().unwrap()).collect()
}
