//! The fan-out baseline: a minimal Node.js broadcast server on the `ws` package
//! (installed with `npm i ws` into the run's work dir at run time). It speaks just enough
//! of the hub's protocol for the same client code: a `join` frame is answered with
//! `joined` and adds the socket to the broadcast set; `POST /broadcast {"content"}` builds
//! one event frame of the hub's shape (same envelope, sha256 of the content, timestamp…),
//! sends it to every joined socket and answers `{"seq", "created_us"}`. No database, no
//! auth, no per-socket ordering state: the cost of fan-out alone.

use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use anyhow::{Context, bail};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

use crate::harness::Ctx;
use crate::procfs;

const SERVER_JS: &str = r#"
const http = require('http');
const crypto = require('crypto');
const { WebSocketServer } = require('ws');
const { performance } = require('perf_hooks'); // a global only from Node 16
const project = process.argv[2];
const channel = 'realtime:project:' + project;
const clients = new Set();
let seq = 0;
const nowUs = () => Math.round((performance.timeOrigin + performance.now()) * 1000);
const server = http.createServer((req, res) => {
  if (req.method !== 'POST' || req.url !== '/broadcast') { res.statusCode = 404; res.end(); return; }
  const chunks = [];
  req.on('data', (c) => chunks.push(c));
  req.on('end', () => {
    const { content } = JSON.parse(Buffer.concat(chunks).toString());
    const created = nowUs();
    seq += 1;
    const frame = JSON.stringify({
      type: 'event', channel, seq, event: 'file:update',
      payload: {
        file_path: 'fanout.txt', file_type: 'text', content,
        content_hash: crypto.createHash('sha256').update(content).digest('hex'),
        version: seq, timestamp: new Date().toISOString(), actor: 'bench-user', op_id: null,
      },
    });
    const data = Buffer.from(frame);
    for (const ws of clients) ws.send(data, { binary: false });
    res.setHeader('content-type', 'application/json');
    res.end(JSON.stringify({ seq, created_us: created }));
  });
});
const wss = new WebSocketServer({ server, perMessageDeflate: false });
wss.on('connection', (ws) => {
  ws.on('message', (data) => {
    let frame;
    try { frame = JSON.parse(data.toString()); } catch { return; }
    if (frame.type === 'join') {
      clients.add(ws);
      ws.send(JSON.stringify({ type: 'joined', ref: frame.ref, channel: frame.channel, cursor: seq }));
    }
  });
  ws.on('close', () => clients.delete(ws));
  ws.on('error', () => clients.delete(ws));
});
server.listen(0, '127.0.0.1', () => console.log('listening ' + server.address().port));
"#;

/// A running broadcast server (this Node one, or the floor in [`crate::floor`]): both speak
/// the same protocol to the same client code.
pub struct BroadcastServer {
    child: Child,
    pub pid: u32,
    pub addr: std::net::SocketAddr,
    pub version: String,
}

impl BroadcastServer {
    /// Starts `command` and waits for its `listening <port>` line on 127.0.0.1.
    pub async fn launch(mut command: Command, version: String) -> anyhow::Result<BroadcastServer> {
        let mut child = command
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .kill_on_drop(true)
            .spawn()
            .with_context(|| format!("starting {version}"))?;
        let pid = child.id().context("the server exited at once")?;
        let stdout = child.stdout.take().context("no stdout")?;
        let mut lines = BufReader::new(stdout).lines();
        let line = tokio::time::timeout(Duration::from_secs(20), lines.next_line())
            .await
            .context("the server did not start within 20 s")??
            .context("the server exited")?;
        let port: u16 = line.strip_prefix("listening ").context("unexpected server output")?.trim().parse()?;
        // Keep draining its stdout so it never blocks.
        tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
        Ok(BroadcastServer { child, pid, addr: std::net::SocketAddr::from(([127, 0, 0, 1], port)), version })
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    pub fn cpu(&self) -> anyhow::Result<procfs::Cpu> {
        procfs::cpu_time(self.pid)
    }

    pub async fn stop(mut self) {
        let _ = self.child.kill().await;
    }
}

/// Installs `ws` (once per run) and starts the server for `project`'s channel name.
pub async fn start(ctx: &Ctx, project: uuid::Uuid) -> anyhow::Result<BroadcastServer> {
    let dir = ctx.work.join("node-ws");
    install(&dir).await?;
    std::fs::write(dir.join("server.js"), SERVER_JS)?;
    let version = Command::new("node").arg("--version").output().await.context("running node --version")?;
    let mut command = Command::new("node");
    command.arg("server.js").arg(project.to_string()).current_dir(&dir);
    BroadcastServer::launch(command, format!("Node.js {}", String::from_utf8_lossy(&version.stdout).trim())).await
}

async fn install(dir: &Path) -> anyhow::Result<()> {
    if dir.join("node_modules/ws/package.json").exists() {
        return Ok(());
    }
    std::fs::create_dir_all(dir)?;
    std::fs::write(dir.join("package.json"), r#"{"name":"synchub-bench-node-ws","private":true}"#)?;
    let output = Command::new("npm")
        .args(["i", "--no-audit", "--no-fund", "--loglevel=error", "ws@8"])
        .current_dir(dir)
        .output()
        .await
        .context("running npm (is Node.js installed?)")?;
    if !output.status.success() {
        bail!("npm i ws failed: {}", String::from_utf8_lossy(&output.stderr));
    }
    Ok(())
}

/// The installed ws version.
pub fn ws_version(ctx: &Ctx) -> String {
    std::fs::read_to_string(ctx.work.join("node-ws/node_modules/ws/package.json"))
        .ok()
        .and_then(|text| serde_json::from_str::<serde_json::Value>(&text).ok())
        .and_then(|v| v["version"].as_str().map(str::to_string))
        .unwrap_or_else(|| "?".into())
}
