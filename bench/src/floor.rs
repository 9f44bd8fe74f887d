//! The fan-out floor: a broadcast server that does as little as a server can per delivery,
//! to show what one `send(2)` per socket costs on this machine whoever makes it. It speaks
//! the Node baseline's protocol ([`crate::node_ws`]): a `join` frame is answered with
//! `joined`, and `POST /broadcast {"content"}` builds one event frame of the hub's shape,
//! frames it once and writes those same bytes to every joined socket with one non-blocking
//! `send(2)` each, in one loop, on one thread. After its join a socket is never read again
//! and has no task, timer, queue or buffer of its own (bytes a full socket did not take wait
//! in a queue created for that socket then). No database, no auth, no ordering state.
//!
//! Runs as a child process of the bench (`synchub-bench --floor-server <project>`), so its
//! CPU time is its own, like the hub's and Node's.

use std::io::ErrorKind;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{SystemTime, UNIX_EPOCH};

use anyhow::{Context, bail};
use serde::Serialize;
use sha2::{Digest, Sha256};
use synchub::realtime::lane::text_frame;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_tungstenite::tungstenite::handshake::derive_accept_key;
use uuid::Uuid;

use crate::node_ws::BroadcastServer;

/// The largest request head or client frame read (joins are ~100 bytes).
const MAX_READ: usize = 64 * 1024;
/// Bytes a socket may owe before it is dropped as a slow consumer.
const MAX_OWED: usize = 4 * 1024 * 1024;

/// A joined socket.
struct Peer {
    stream: TcpStream,
    /// Bytes the socket did not take yet, written by its flusher before anything newer.
    owed: Mutex<Vec<u8>>,
}

impl Peer {
    fn owed(&self) -> MutexGuard<'_, Vec<u8>> {
        self.owed.lock().unwrap_or_else(|p| p.into_inner())
    }
}

struct State {
    channel: String,
    peers: Mutex<Vec<Arc<Peer>>>,
    seq: AtomicI64,
}

/// The server process: listens on 127.0.0.1, prints `listening <port>`, serves until killed.
pub async fn serve(project: Uuid) -> anyhow::Result<()> {
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    println!("listening {}", listener.local_addr()?.port());
    accept(listener, project).await
}

async fn accept(listener: TcpListener, project: Uuid) -> anyhow::Result<()> {
    let state = Arc::new(State {
        channel: format!("realtime:project:{project}"),
        peers: Mutex::new(Vec::new()),
        seq: AtomicI64::new(0),
    });
    loop {
        let (stream, _) = listener.accept().await?;
        let state = state.clone();
        tokio::spawn(async move {
            if let Err(err) = connection(stream, &state).await {
                eprintln!("floor server: {err:#}");
            }
        });
    }
}

/// One HTTP connection: a WebSocket upgrade, or keep-alive `POST /broadcast`s.
async fn connection(mut stream: TcpStream, state: &State) -> anyhow::Result<()> {
    stream.set_nodelay(true)?;
    let mut buf = Vec::new();
    loop {
        let head_end = loop {
            if let Some(at) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                break at + 4;
            }
            if buf.len() > MAX_READ || stream.read_buf(&mut buf).await? == 0 {
                return Ok(());
            }
        };
        let head = std::str::from_utf8(&buf[..head_end]).context("request head")?.to_ascii_lowercase();
        let header = |name: &str| {
            head.lines().find_map(|line| line.strip_prefix(name)?.strip_prefix(':').map(str::trim).map(str::to_owned))
        };
        if header("upgrade").as_deref() == Some("websocket") {
            // The key is case-sensitive: read it from the original bytes.
            let original = std::str::from_utf8(&buf[..head_end])?;
            let key = original
                .lines()
                .find_map(|line| {
                    let (name, value) = line.split_once(':')?;
                    name.eq_ignore_ascii_case("sec-websocket-key").then(|| value.trim())
                })
                .context("no sec-websocket-key")?;
            let response = format!(
                "HTTP/1.1 101 Switching Protocols\r\nupgrade: websocket\r\nconnection: upgrade\r\n\
                 sec-websocket-accept: {}\r\n\r\n",
                derive_accept_key(key.as_bytes())
            );
            stream.write_all(response.as_bytes()).await?;
            buf.drain(..head_end);
            return join(stream, buf, state).await;
        }
        if !head.starts_with("post /broadcast ") {
            stream.write_all(b"HTTP/1.1 404 Not Found\r\ncontent-length: 0\r\n\r\n").await?;
            buf.drain(..head_end);
            continue;
        }
        let length: usize = header("content-length").context("no content-length")?.parse()?;
        while buf.len() < head_end + length {
            if stream.read_buf(&mut buf).await? == 0 {
                return Ok(());
            }
        }
        let body: serde_json::Value = serde_json::from_slice(&buf[head_end..head_end + length])?;
        buf.drain(..head_end + length);
        let content = body["content"].as_str().context("no content")?;
        let answer = broadcast(state, content)?;
        let response = format!(
            "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n{answer}",
            answer.len()
        );
        stream.write_all(response.as_bytes()).await?;
    }
}

/// Reads client frames until a `join`, answers `joined` and adds the socket to the peers.
async fn join(mut stream: TcpStream, mut buf: Vec<u8>, state: &State) -> anyhow::Result<()> {
    loop {
        while let Some((opcode, payload, used)) = client_frame(&buf)? {
            buf.drain(..used);
            if opcode == 0x8 {
                return Ok(()); // close
            }
            if opcode != 0x1 {
                continue;
            }
            let frame: serde_json::Value = serde_json::from_slice(&payload)?;
            if frame["type"] != "join" {
                continue;
            }
            let cursor = state.seq.load(Ordering::Relaxed);
            let joined = serde_json::json!({
                "type": "joined", "ref": frame["ref"], "channel": frame["channel"], "cursor": cursor,
            });
            stream.write_all(&text_frame(joined.to_string().as_bytes())).await?;
            let peer = Arc::new(Peer { stream, owed: Mutex::new(Vec::new()) });
            state.peers.lock().unwrap_or_else(|p| p.into_inner()).push(peer);
            return Ok(());
        }
        if buf.len() > MAX_READ || stream.read_buf(&mut buf).await? == 0 {
            return Ok(());
        }
    }
}

/// One masked client frame at the start of `buf`: (opcode, unmasked payload, bytes used).
fn client_frame(buf: &[u8]) -> anyhow::Result<Option<(u8, Vec<u8>, usize)>> {
    if buf.len() < 2 {
        return Ok(None);
    }
    if buf[1] & 0x80 == 0 {
        bail!("an unmasked client frame");
    }
    let (len, mut at) = match buf[1] & 0x7f {
        126 if buf.len() >= 4 => (u16::from_be_bytes([buf[2], buf[3]]) as usize, 4),
        127 => bail!("a client frame over 64 KiB"),
        126 => return Ok(None),
        n => (n as usize, 2),
    };
    if buf.len() < at + 4 + len {
        return Ok(None);
    }
    let mask = [buf[at], buf[at + 1], buf[at + 2], buf[at + 3]];
    at += 4;
    let payload = buf[at..at + len].iter().enumerate().map(|(i, b)| b ^ mask[i % 4]).collect();
    Ok(Some((buf[0] & 0x0f, payload, at + len)))
}

#[derive(Serialize)]
struct Event<'a> {
    #[serde(rename = "type")]
    kind: &'static str,
    channel: &'a str,
    seq: i64,
    event: &'static str,
    payload: Payload<'a>,
}

#[derive(Serialize)]
struct Payload<'a> {
    file_path: &'static str,
    file_type: &'static str,
    content: &'a str,
    content_hash: String,
    version: i64,
    timestamp: String,
    actor: &'static str,
    op_id: Option<String>,
}

/// Builds and frames one event (as Node's server does), writes it to every peer; answers
/// `{"seq", "created_us"}`.
fn broadcast(state: &State, content: &str) -> anyhow::Result<String> {
    let created_us = SystemTime::now().duration_since(UNIX_EPOCH)?.as_micros() as i64;
    let seq = state.seq.fetch_add(1, Ordering::Relaxed) + 1;
    let event = Event {
        kind: "event",
        channel: &state.channel,
        seq,
        event: "file:update",
        payload: Payload {
            file_path: "fanout.txt",
            file_type: "text",
            content,
            content_hash: hex::encode(Sha256::digest(content.as_bytes())),
            version: seq,
            timestamp: chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
            actor: "bench-user",
            op_id: None,
        },
    };
    let frame = text_frame(&serde_json::to_vec(&event)?);
    let mut peers = state.peers.lock().unwrap_or_else(|p| p.into_inner());
    peers.retain(|peer| deliver(peer, &frame));
    Ok(format!(r#"{{"seq":{seq},"created_us":{created_us}}}"#))
}

/// One `send(2)`; what the socket does not take waits for its flusher. False: drop the peer.
fn deliver(peer: &Arc<Peer>, frame: &[u8]) -> bool {
    let mut owed = peer.owed();
    if !owed.is_empty() {
        owed.extend_from_slice(frame);
        return owed.len() <= MAX_OWED;
    }
    let taken = match peer.stream.try_write(frame) {
        Ok(n) if n == frame.len() => return true,
        Ok(n) => n,
        Err(err) if err.kind() == ErrorKind::WouldBlock => 0,
        Err(_) => return false,
    };
    owed.extend_from_slice(&frame[taken..]);
    tokio::spawn(flush(peer.clone()));
    true
}

/// Writes what `peer` owes as the socket takes it.
async fn flush(peer: Arc<Peer>) {
    loop {
        if peer.stream.writable().await.is_err() {
            return;
        }
        let mut owed = peer.owed();
        match peer.stream.try_write(&owed) {
            Ok(n) => {
                owed.drain(..n);
                if owed.is_empty() {
                    return;
                }
            }
            Err(err) if err.kind() == ErrorKind::WouldBlock => {}
            Err(_) => return,
        }
    }
}

/// Starts the floor server as a child process of this bench binary.
pub async fn start(project: Uuid) -> anyhow::Result<BroadcastServer> {
    let mut command = tokio::process::Command::new(std::env::current_exe()?);
    command.arg("--floor-server").arg(project.to_string());
    BroadcastServer::launch(command, "the floor server (synchub-bench --floor-server)".into()).await
}

#[cfg(test)]
mod tests {
    use futures_util::{SinkExt, StreamExt};
    use synchub_protocol::ClientFrame;
    use tokio_tungstenite::tungstenite::Message;

    use super::*;

    #[tokio::test]
    async fn joined_sockets_get_each_broadcast_as_one_event_frame() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let project = Uuid::new_v4();
        tokio::spawn(accept(listener, project));
        let mut sockets = Vec::new();
        for _ in 0..2 {
            let (mut ws, _) = tokio_tungstenite::connect_async(format!("ws://{addr}/v1/realtime")).await.unwrap();
            let join = ClientFrame::Join {
                reference: Some("1".into()),
                channel: format!("realtime:project:{project}"),
                since: None,
            };
            ws.send(Message::Text(join.to_text().into())).await.unwrap();
            let Some(Ok(Message::Text(joined))) = ws.next().await else { panic!("no joined frame") };
            let joined: serde_json::Value = serde_json::from_str(joined.as_str()).unwrap();
            assert_eq!((joined["type"].as_str(), joined["cursor"].as_i64()), (Some("joined"), Some(0)));
            sockets.push(ws);
        }
        // 200 bytes: a frame with a 16-bit length.
        let content = "y".repeat(200);
        synchub::app::init_process(); // reqwest's crypto provider (see harness::Ctx)
        let answer: serde_json::Value = reqwest::Client::new()
            .post(format!("http://{addr}/broadcast"))
            .json(&serde_json::json!({ "content": content }))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        assert_eq!(answer["seq"], 1);
        for ws in &mut sockets {
            let Some(Ok(Message::Text(text))) = ws.next().await else { panic!("no event frame") };
            assert_eq!(crate::scenarios::fanout::event_seq(text.as_str()), Some(1));
            let event: serde_json::Value = serde_json::from_str(text.as_str()).unwrap();
            assert_eq!(event["payload"]["content"], content);
        }
    }
}
