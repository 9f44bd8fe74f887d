//! synchub-agent: hydrates a preview container from a signed snapshot, then applies live
//! deltas (CONTRACT section 6). Exit status: the dev server's when one was given;
//! otherwise 0 after SIGTERM/SIGINT, 3 when the session is revoked or over, 1 on a
//! start-up error.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use clap::{Parser, ValueEnum};
use container_agent::command::{DevServer, exit_code};
use container_agent::health::{self, SharedStatus};
use container_agent::hub::HubClient;
use container_agent::protocol::Token;
use container_agent::reconnect::{RECONNECT_FIRST, RECONNECT_MAX, Reconnect};
use container_agent::session::{Exit, Session};
use container_agent::tree::{ProjectTree, TreeOptions};
use rustix::process::Signal;
use tokio::signal::unix::{SignalKind, signal};
use tokio::sync::{oneshot, watch};
use tracing::Instrument;

/// Exit status when the session was revoked (4010) or can no longer be refreshed.
const EXIT_REVOKED: u8 = 3;
/// How long the dev server gets to stop after SIGTERM when the agent has to end.
const STOP_GRACE: Duration = Duration::from_secs(5);

#[derive(Debug, Clone, Copy, ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

#[derive(Debug, Parser)]
#[command(name = "synchub-agent", version, about = "Hydrates a preview container, then applies live deltas")]
struct Cli {
    /// The project tree the agent keeps in sync.
    #[arg(long, env = "PROJECT_DIR", default_value = "/app/project")]
    project_dir: PathBuf,
    /// Serve /healthz, /readyz and /status on this address.
    #[arg(long, env = "SYNCHUB_AGENT_HEALTH_ADDR")]
    health_addr: Option<SocketAddr>,
    #[arg(long, env = "SYNCHUB_LOG_FORMAT", value_enum, default_value = "text")]
    log_format: LogFormat,
    /// The hub's URL (`http(s)://…`).
    #[arg(long, env = "SYNCHUB_URL")]
    synchub_url: reqwest::Url,
    #[arg(long, env = "PROJECT_ID")]
    project_id: String,
    #[arg(long, env = "SESSION_ID", default_value = "")]
    session_id: String,
    /// The session's signed snapshot URL (else the latest snapshot is fetched).
    #[arg(long, env = "SNAPSHOT_URL", hide_env_values = true)]
    snapshot_url: Option<String>,
    /// Test-only: the longest reconnect backoff step, in ms (also its first step, so that
    /// a test sees a long step at once). Probes still end the wait when the hub heals.
    #[arg(long, env = "SYNCHUB_RECONNECT_MAX_MS", hide = true)]
    reconnect_max_ms: Option<u64>,
    /// The dev server to run once the tree is hydrated.
    #[arg(last = true)]
    command: Vec<String>,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_logging(cli.log_format);
    let runtime = match tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build() {
        Ok(runtime) => runtime,
        Err(error) => {
            tracing::error!(%error, "starting the runtime failed");
            return ExitCode::FAILURE;
        }
    };
    let span = tracing::info_span!("agent", project_id = %cli.project_id, session_id = %cli.session_id);
    match runtime.block_on(run(cli).instrument(span)) {
        Ok(code) => code,
        Err(error) => {
            tracing::error!(error = format!("{error:#}"), "synchub-agent failed");
            ExitCode::FAILURE
        }
    }
}

fn init_logging(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into());
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr);
    match format {
        LogFormat::Json => builder.json().init(),
        LogFormat::Text => builder.init(),
    }
}

async fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    if !matches!(cli.synchub_url.scheme(), "http" | "https") {
        anyhow::bail!("SYNCHUB_URL must be an http or https URL");
    }
    // Read from the environment only: a token on the command line would show in `ps`.
    let token = std::env::var("REALTIME_TOKEN").context("REALTIME_TOKEN is not set")?;
    let hub = HubClient::new(cli.synchub_url.clone(), cli.project_id.clone(), Token(token))?;
    let project_dir = cli.project_dir.clone();
    let tree = tokio::task::spawn_blocking(move || {
        container_agent::hydrate::sweep_leftovers(&project_dir);
        ProjectTree::open(&project_dir, TreeOptions::default())
    })
    .await?
    .with_context(|| format!("opening {}", cli.project_dir.display()))?;

    let status = SharedStatus::default();
    if let Some(addr) = cli.health_addr {
        let bound = health::serve(addr, status.clone()).await.with_context(|| format!("binding {addr}"))?;
        tracing::info!(%bound, "health endpoints up");
    }
    let (stop, stopped) = watch::channel(false);
    let (hydrated_tx, hydrated_rx) = oneshot::channel();
    let reconnect = match cli.reconnect_max_ms.map(Duration::from_millis) {
        Some(max) => Reconnect::new(max, max),
        None => Reconnect::new(RECONNECT_FIRST, RECONNECT_MAX),
    };
    let session = Session::new(hub, tree, cli.snapshot_url.clone(), status, reconnect);
    let mut session = tokio::spawn(session.run(Some(hydrated_tx), stopped).in_current_span());
    let mut terminate = signal(SignalKind::terminate())?;
    let mut interrupt = signal(SignalKind::interrupt())?;

    if cli.command.is_empty() {
        let exit = tokio::select! {
            exit = &mut session => exit?,
            _ = terminate.recv() => stop_session(&stop, session).await?,
            _ = interrupt.recv() => stop_session(&stop, session).await?,
        };
        return Ok(match exit {
            Exit::Revoked => ExitCode::from(EXIT_REVOKED),
            Exit::Shutdown => ExitCode::SUCCESS,
        });
    }

    // Hydrate first; a signal or a revocation before that ends the agent.
    tokio::select! {
        ready = hydrated_rx => if ready.is_err() {
            return Ok(outcome(session.await?));
        },
        exit = &mut session => return Ok(outcome(exit?)),
        _ = terminate.recv() => return Ok(outcome(stop_session(&stop, session).await?)),
        _ = interrupt.recv() => return Ok(outcome(stop_session(&stop, session).await?)),
    }
    let mut server = DevServer::start(&cli.command, &cli.project_dir).context("starting the command")?;
    loop {
        tokio::select! {
            status = server.wait() => {
                let status = status?;
                tracing::info!(code = exit_code(status), "dev server exited");
                stop_session(&stop, session).await?;
                return Ok(ExitCode::from(exit_code(status) as u8));
            }
            _ = terminate.recv() => server.signal(Signal::TERM),
            _ = interrupt.recv() => server.signal(Signal::INT),
            exit = &mut session => {
                // Revoked: the preview must not keep serving a stale tree.
                server.stop(STOP_GRACE).await;
                return Ok(outcome(exit?));
            }
        }
    }
}

fn outcome(exit: Exit) -> ExitCode {
    match exit {
        Exit::Revoked => ExitCode::from(EXIT_REVOKED),
        Exit::Shutdown => ExitCode::SUCCESS,
    }
}

async fn stop_session(stop: &watch::Sender<bool>, session: tokio::task::JoinHandle<Exit>) -> anyhow::Result<Exit> {
    let _ = stop.send(true);
    Ok(session.await?)
}
