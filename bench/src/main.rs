//! `synchub-bench`: benchmarks of the synchub hub, each against a baseline measured in the
//! same run. Starts everything itself on loopback: a private PostgreSQL (from the machine's
//! binaries) and, per scenario, the real release hub binary as a child process, so its RSS
//! and CPU time can be read from /proc. Prints a table and writes docs/BENCHMARKS.md.
//!
//! Run it through `scripts/bench` (builds both binaries in release mode, raises the
//! open-file limit). No timing assertions anywhere: a scenario fails only when something
//! does not work (an event never arrives, a request is refused).

mod floor;
mod harness;
mod node_ws;
mod perf_window;
mod pgbench;
mod procfs;
mod report;
mod scenarios;
mod stats;
mod worker;

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Instant;

use anyhow::{Context, bail};
use clap::Parser;
use synchub::embedded_pg::Durability;

use crate::report::{Outcome, RunInfo};
use crate::scenarios::{ALL, ON_REQUEST, Scenario};

#[derive(Parser)]
#[command(name = "synchub-bench", about = "Benchmarks of the synchub hub against same-run baselines")]
struct Cli {
    /// Small sample sizes (a CI smoke check, under 2 minutes); the numbers are not for the record.
    #[arg(long)]
    quick: bool,
    /// Run only these scenarios (repeat the flag or separate names with commas).
    #[arg(long, value_delimiter = ',')]
    only: Vec<String>,
    /// List the scenarios and exit.
    #[arg(long)]
    list: bool,
    /// Where to write the Markdown report. Default: docs/BENCHMARKS.md for a full run of
    /// every scenario; for --quick or --only, BENCHMARKS.partial.md next to this
    /// executable (so a smoke run never overwrites the recorded numbers).
    #[arg(long)]
    output: Option<PathBuf>,
    /// Write no Markdown report (stdout only).
    #[arg(long, conflicts_with = "output")]
    no_output: bool,
    /// The hub binary. Default: `synchub` next to this executable (the same target dir).
    #[arg(long, env = "SYNCHUB_BENCH_HUB_BIN")]
    hub_bin: Option<PathBuf>,
    /// The container agent binary. Default: `synchub-agent` next to this executable.
    #[arg(long, env = "SYNCHUB_BENCH_AGENT_BIN")]
    agent_bin: Option<PathBuf>,
    /// Run PostgreSQL with fsync off (cheaper commits). Default: PostgreSQL's own settings.
    #[arg(long)]
    throwaway_pg: bool,
    /// Diagnostic: load pg_stat_statements into PostgreSQL and list, per scenario, the
    /// statements the hub ran per write (adds a little overhead to every statement).
    #[arg(long)]
    pg_stat_statements: bool,
    /// Socket counts for idle_socket_rss (ascending steps on one hub; quick mode: 1000).
    /// Clients are spread over 127.0.0.2–127.0.0.9, so 50,000 fit in the ephemeral ports.
    #[arg(long, value_delimiter = ',', default_value = "10000,50000")]
    idle_sockets: Vec<usize>,
    /// A note for the report (repeatable), e.g. what else was running on the machine.
    #[arg(long)]
    note: Vec<String>,
    /// Internal (sockets_100k): run as a client process holding sockets joined on this hub.
    #[arg(long, hide = true)]
    client_worker: Option<std::net::SocketAddr>,
    #[arg(long, hide = true, requires = "client_worker")]
    worker_project: Option<uuid::Uuid>,
    #[arg(long, hide = true, default_value_t = 0)]
    worker_sockets: usize,
    #[arg(long, hide = true, default_value_t = 1)]
    worker_net: u8,
    /// Internal (fanout_floor): run as the floor broadcast server for this project.
    #[arg(long, hide = true)]
    floor_server: Option<uuid::Uuid>,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    if cli.list {
        for scenario in ALL {
            println!("{:<22} {}", scenario.name, scenario.summary);
        }
        for scenario in ON_REQUEST {
            println!("{:<22} (only with --only) {}", scenario.name, scenario.summary);
        }
        return ExitCode::SUCCESS;
    }
    if let (Some(hub), Some(project)) = (cli.client_worker, cli.worker_project) {
        let args = worker::Args {
            hub,
            project,
            sockets: cli.worker_sockets,
            net: cli.worker_net,
            token: std::env::var("SYNCHUB_BENCH_WORKER_TOKEN").unwrap_or_default(),
        };
        // Only the handshakes and joins run on tokio (one thread: the workers are several
        // processes already); the frames are read by the worker's own receive loop.
        let result = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(anyhow::Error::from)
            .and_then(|runtime| runtime.block_on(worker::run(args)));
        return match result {
            Ok(()) => ExitCode::SUCCESS,
            Err(err) => {
                println!("error {err:#}");
                ExitCode::FAILURE
            }
        };
    }
    if let Some(project) = cli.floor_server {
        // One thread, like Node's event loop.
        let result = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(anyhow::Error::from)
            .and_then(|runtime| runtime.block_on(floor::serve(project)));
        if let Err(err) = result {
            eprintln!("floor server: {err:#}");
        }
        return ExitCode::FAILURE;
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(runtime) => runtime,
        Err(err) => {
            eprintln!("synchub-bench: {err}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(cli)) {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::FAILURE,
        Err(err) => {
            eprintln!("synchub-bench: {err:#}");
            ExitCode::FAILURE
        }
    }
}

/// Ok(false) when a scenario failed (the others still ran and were reported).
async fn run(cli: Cli) -> anyhow::Result<bool> {
    let selected = select(&cli.only)?;
    let exe_dir = std::env::current_exe()?.parent().context("executable without a directory")?.to_path_buf();
    let hub_bin = cli.hub_bin.clone().unwrap_or_else(|| exe_dir.join("synchub"));
    let output = if cli.no_output {
        None
    } else if let Some(path) = &cli.output {
        Some(path.clone())
    } else if cli.quick || !cli.only.is_empty() {
        Some(exe_dir.join("BENCHMARKS.partial.md"))
    } else {
        Some(PathBuf::from("docs/BENCHMARKS.md"))
    };
    let durability = if cli.throwaway_pg { Durability::Throwaway } else { Durability::Full };
    let started = Instant::now();
    let load_start = procfs::load_average();
    let date = chrono::Utc::now().format("%Y-%m-%d %H:%M UTC").to_string();
    eprintln!("synchub-bench: starting PostgreSQL and migrating …");
    let mut ctx = harness::Ctx::start(cli.quick, hub_bin.clone(), durability, cli.pg_stat_statements).await?;
    ctx.idle_sockets = cli.idle_sockets.clone();
    ctx.agent_bin = cli.agent_bin.clone().unwrap_or_else(|| exe_dir.join("synchub-agent"));
    let state_start = ctx.machine_state().await;

    let mut outcomes = Vec::new();
    for scenario in &selected {
        eprintln!("synchub-bench: {} …", scenario.name);
        let scenario_started = Instant::now();
        let outcome = match (scenario.run)(&ctx).await {
            Ok(mut report) => {
                report.seconds = scenario_started.elapsed().as_secs_f64();
                Outcome::Done(report)
            }
            Err(err) => Outcome::Failed { name: scenario.name, error: format!("{err:#}") },
        };
        eprintln!("synchub-bench: {} done in {:.1} s", scenario.name, scenario_started.elapsed().as_secs_f64());
        outcomes.push(outcome);
    }
    let postgres = format!(
        "{} from {}, {}",
        pg_version(&ctx).await.unwrap_or_else(|_| "PostgreSQL".into()),
        ctx.pg.bin_dir().display(),
        match ctx.durability {
            Durability::Full => "default settings (fsync on, synchronous_commit on)",
            Durability::Throwaway => "fsync off, synchronous_commit off (--throwaway-pg)",
        }
    ) + if ctx.statements { "; pg_stat_statements loaded (--pg-stat-statements)" } else { "" };
    let state_end = ctx.machine_state().await;
    drop(ctx);

    print!("{}", report::table(&outcomes));
    let failed = outcomes.iter().any(|o| matches!(o, Outcome::Failed { .. }));
    if let Some(path) = output {
        let mut notes = vec![
            format!("total run time {:.0} s", started.elapsed().as_secs_f64()),
            "everything runs on this one machine: the bench client, the hub and PostgreSQL share its cores, so the \
             client's own work is part of every latency and of the machine's load"
                .to_string(),
            "each scenario starts its own hub process (fresh memory and CPU counters) on one PostgreSQL cluster \
             for the whole run; the hub runs with write rate limits and the per-user socket cap lifted"
                .to_string(),
        ];
        notes.extend(cli.note.iter().cloned());
        let info = RunInfo {
            date,
            machine: procfs::machine(),
            load_start,
            load_end: procfs::load_average(),
            state_start: state_start.to_string(),
            state_end: state_end.to_string(),
            commit: git_commit(),
            command: command_line(),
            mode: if cli.quick { "quick (smoke check: small samples, not for the record)" } else { "full" },
            postgres,
            hub: format!("`{} serve` (release build), RUST_LOG=warn", hub_bin.display()),
            notes,
        };
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir)?;
        }
        let analysis = std::fs::read_to_string(&path).ok().and_then(|old| report::kept_analysis(&old));
        std::fs::write(&path, report::markdown(&info, &outcomes, analysis.as_deref()))
            .with_context(|| format!("writing {}", path.display()))?;
        eprintln!("synchub-bench: wrote {}", path.display());
    }
    if failed {
        for outcome in &outcomes {
            if let Outcome::Failed { name, error } = outcome {
                eprintln!("synchub-bench: {name} FAILED: {error}");
            }
        }
    }
    Ok(!failed)
}

/// How this run was started: `SYNCHUB_BENCH_COMMAND` (scripts/bench sets it to its own
/// name) or this executable's path, then the arguments, quoted for a POSIX shell.
fn command_line() -> String {
    let mut args = std::env::args();
    let program = args.next().unwrap_or_default();
    let mut words = vec![std::env::var("SYNCHUB_BENCH_COMMAND").unwrap_or(program)];
    for arg in args {
        let plain = !arg.is_empty() && arg.chars().all(|c| c.is_ascii_alphanumeric() || "-_=.,/:@%+".contains(c));
        words.push(if plain { arg } else { format!("'{}'", arg.replace('\'', r"'\''")) });
    }
    words.join(" ")
}

fn select(only: &[String]) -> anyhow::Result<Vec<&'static Scenario>> {
    if only.is_empty() {
        return Ok(ALL.iter().collect());
    }
    let mut selected = Vec::new();
    for name in only.iter().map(|n| n.trim()).filter(|n| !n.is_empty()) {
        let Some(scenario) = ALL.iter().chain(ON_REQUEST).find(|s| s.name == name) else {
            let names: Vec<&str> = ALL.iter().chain(ON_REQUEST).map(|s| s.name).collect();
            bail!("unknown scenario {name:?}; known: {}", names.join(", "));
        };
        selected.push(scenario);
    }
    Ok(selected)
}

async fn pg_version(ctx: &harness::Ctx) -> anyhow::Result<String> {
    let client = ctx.sql().await?;
    let version: String = client.query_one("SHOW server_version", &[]).await?.get(0);
    Ok(format!("PostgreSQL {version}"))
}

/// HEAD, and whether the working tree had changes (others edit it concurrently).
fn git_commit() -> String {
    let git = |args: &[&str]| {
        std::process::Command::new("git")
            .args(args)
            .output()
            .ok()
            .filter(|o| o.status.success())
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
    };
    let Some(head) = git(&["rev-parse", "HEAD"]) else { return "unknown (not a git checkout)".into() };
    let subject = git(&["log", "-1", "--format=%s"]).unwrap_or_default();
    let dirty = git(&["status", "--porcelain", "--untracked-files=no"]).map_or(0, |s| s.lines().count());
    if dirty == 0 {
        format!("{head} ({subject})")
    } else {
        format!("{head} ({subject}) plus uncommitted changes to {dirty} tracked files")
    }
}
