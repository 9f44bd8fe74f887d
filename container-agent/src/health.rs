//! The agent's own state as `--health-addr` serves it: `GET /healthz` (process up),
//! `GET /readyz` (hydrated and connected), `GET /status`
//! `{cursor, connected, applied, last_lag_ms}`. A few lines of HTTP/1.1 over tokio are
//! enough for three GET routes; no HTTP server crate is pulled in.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::Serialize;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// A request head larger than this is refused.
const MAX_REQUEST_HEAD: usize = 8 * 1024;
const READ_TIMEOUT: Duration = Duration::from_secs(5);
/// Health probes served at once; more wait in the accept queue.
const MAX_CONNECTIONS: usize = 16;

/// What `/status` reports; updated by the session loop.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Status {
    /// The project's last seq the agent knows of (from `joined` and events).
    pub cursor: i64,
    pub connected: bool,
    /// The seq applied to the tree.
    pub applied: i64,
    /// Commit → applied delay of the last event, in ms (null before the first one).
    pub last_lag_ms: Option<u64>,
    #[serde(skip)]
    pub hydrated: bool,
}

/// The shared status: cheap to clone, one short lock per update.
#[derive(Debug, Clone, Default)]
pub struct SharedStatus(Arc<Mutex<Status>>);

impl SharedStatus {
    pub fn update(&self, change: impl FnOnce(&mut Status)) {
        change(&mut self.0.lock().unwrap_or_else(|p| p.into_inner()));
    }

    pub fn get(&self) -> Status {
        self.0.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }
}

/// Binds `addr` (so a bad address fails at start-up) and serves in the background.
pub async fn serve(addr: SocketAddr, status: SharedStatus) -> std::io::Result<SocketAddr> {
    let listener = TcpListener::bind(addr).await?;
    let bound = listener.local_addr()?;
    let slots = Arc::new(tokio::sync::Semaphore::new(MAX_CONNECTIONS));
    tokio::spawn(async move {
        loop {
            let Ok(permit) = slots.clone().acquire_owned().await else { return };
            let Ok((stream, _)) = listener.accept().await else {
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            };
            let status = status.clone();
            tokio::spawn(async move {
                let _ = tokio::time::timeout(READ_TIMEOUT, answer(stream, &status)).await;
                drop(permit);
            });
        }
    });
    Ok(bound)
}

async fn answer(mut stream: TcpStream, status: &SharedStatus) -> std::io::Result<()> {
    let mut head = Vec::with_capacity(512);
    let mut buffer = [0u8; 1024];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") && !head.windows(2).any(|w| w == b"\n\n") {
        let n = stream.read(&mut buffer).await?;
        if n == 0 {
            break;
        }
        head.extend_from_slice(&buffer[..n]);
        if head.len() > MAX_REQUEST_HEAD {
            return respond(&mut stream, 431, "text/plain", "request head too large\n").await;
        }
    }
    let line = head.split(|&b| b == b'\n').next().unwrap_or_default();
    let line = String::from_utf8_lossy(line);
    let mut parts = line.split_whitespace();
    let (method, target) = (parts.next().unwrap_or_default(), parts.next().unwrap_or_default());
    let path = target.split('?').next().unwrap_or_default();
    if method != "GET" && method != "HEAD" {
        return respond(&mut stream, 405, "text/plain", "method not allowed\n").await;
    }
    let now = status.get();
    match path {
        "/healthz" => respond(&mut stream, 200, "text/plain", "ok\n").await,
        "/readyz" if now.hydrated && now.connected => respond(&mut stream, 200, "text/plain", "ready\n").await,
        "/readyz" => {
            let why = if now.hydrated { "not connected\n" } else { "not hydrated\n" };
            respond(&mut stream, 503, "text/plain", why).await
        }
        "/status" => {
            let body = serde_json::to_string(&now).unwrap_or_default();
            respond(&mut stream, 200, "application/json", &body).await
        }
        _ => respond(&mut stream, 404, "text/plain", "not found\n").await,
    }
}

async fn respond(stream: &mut TcpStream, code: u16, content_type: &str, body: &str) -> std::io::Result<()> {
    let reason = match code {
        200 => "OK",
        404 => "Not Found",
        405 => "Method Not Allowed",
        431 => "Request Header Fields Too Large",
        _ => "Service Unavailable",
    };
    let response = format!(
        "HTTP/1.1 {code} {reason}\r\ncontent-type: {content_type}\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
        body.len()
    );
    stream.write_all(response.as_bytes()).await?;
    stream.shutdown().await
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn get(addr: SocketAddr, path: &str) -> (u16, String) {
        let mut stream = TcpStream::connect(addr).await.unwrap();
        stream.write_all(format!("GET {path} HTTP/1.1\r\nhost: x\r\n\r\n").as_bytes()).await.unwrap();
        let mut text = String::new();
        stream.read_to_string(&mut text).await.unwrap();
        let code = text[9..12].parse().unwrap();
        let body = text.split("\r\n\r\n").nth(1).unwrap_or_default().to_string();
        (code, body)
    }

    #[tokio::test]
    async fn serves_health_readiness_and_status() {
        let status = SharedStatus::default();
        let addr = serve("127.0.0.1:0".parse().unwrap(), status.clone()).await.unwrap();
        assert_eq!(get(addr, "/healthz").await.0, 200);
        assert_eq!(get(addr, "/readyz").await, (503, "not hydrated\n".into()));
        status.update(|s| s.hydrated = true);
        assert_eq!(get(addr, "/readyz").await, (503, "not connected\n".into()));
        status.update(|s| {
            s.connected = true;
            s.cursor = 9;
            s.applied = 7;
            s.last_lag_ms = Some(3);
        });
        assert_eq!(get(addr, "/readyz").await.0, 200);
        let (code, body) = get(addr, "/status").await;
        assert_eq!(code, 200);
        let body: serde_json::Value = serde_json::from_str(&body).unwrap();
        assert_eq!(body, serde_json::json!({"cursor": 9, "connected": true, "applied": 7, "last_lag_ms": 3}));
        assert_eq!(get(addr, "/nope").await.0, 404);
    }
}
