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

mod edit_latency;
mod hydrate;
mod resume;
mod watch;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use serde_json::Value;
use synchub_protocol::CreateSessionRequest;
use tokio::process::{Child, Command};
use uuid::Uuid;

use super::Pending;
use crate::harness::{Ctx, Hub};

pub fn run_hydrate(ctx: &Ctx) -> Pending<'_> {
    Box::pin(hydrate::hydrate(ctx))
}

pub fn run_edit_latency(ctx: &Ctx) -> Pending<'_> {
    Box::pin(edit_latency::edit_latency(ctx))
}

pub fn run_resume(ctx: &Ctx) -> Pending<'_> {
    Box::pin(resume::resume(ctx))
}

// ---------------------------------------------------------------------------------------
// The agent process.

pub(super) struct Agent {
    child: Child,
    pid: u32,
    health: SocketAddr,
    log: PathBuf,
}

/// `POST /v1/projects/{id}/sessions` with the service token: what a container gets.
pub(super) async fn create_session(ctx: &Ctx, hub: &Hub, project: Uuid) -> anyhow::Result<Value> {
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
    pub(super) fn start(
        ctx: &Ctx,
        session: &Value,
        dir: &Path,
        hub_url: Option<&str>,
        label: &str,
    ) -> anyhow::Result<Agent> {
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

    pub(super) async fn ready(&self, ctx: &Ctx) -> bool {
        self.get(ctx, "/readyz").await.is_some_and(|(code, _)| code == 200)
    }

    /// Polls `/readyz` every 2 ms until 200.
    pub(super) async fn wait_ready(&mut self, ctx: &Ctx, limit: Duration) -> anyhow::Result<()> {
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

    pub(super) async fn status(&self, ctx: &Ctx) -> anyhow::Result<Value> {
        let (_, body) = self.get(ctx, "/status").await.context("/status did not answer")?;
        Ok(serde_json::from_str(&body)?)
    }

    pub(super) fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    fn log_tail(&self) -> String {
        let text = self.log_text();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(5)..].join(" | ")
    }

    /// SIGTERM, then SIGKILL after 5 s.
    pub(super) async fn stop(mut self) {
        if matches!(self.child.try_wait(), Ok(None)) {
            let _ = Command::new("kill").args(["-TERM", &self.pid.to_string()]).status().await;
            if tokio::time::timeout(Duration::from_secs(5), self.child.wait()).await.is_err() {
                let _ = self.child.kill().await;
            }
        }
    }
}

pub(super) async fn wait_until(what: &str, limit: Duration, mut done: impl FnMut() -> bool) -> anyhow::Result<()> {
    let deadline = Instant::now() + limit;
    while !done() {
        if Instant::now() > deadline {
            bail!("{what}: not within {} s", limit.as_secs());
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    Ok(())
}

pub(super) async fn wait_until_async<F, Fut>(what: &str, limit: Duration, mut done: F) -> anyhow::Result<()>
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
