//! The database baseline: pgbench calling the same SQL function the hub calls, one client,
//! paced, with per-transaction logging (`-l`) so that percentiles come from every sample.

use std::path::PathBuf;

use anyhow::{Context, bail};
use uuid::Uuid;

use crate::harness::{Ctx, USER, pg_bin};
use crate::stats::Latencies;

pub struct Run {
    /// Per-transaction latency from pgbench's log: with `-R`, from the transaction's scheduled
    /// start, so a transaction that waited behind a slow one counts its wait (its schedule
    /// lag), as the hub side's latencies do (coordinated omission corrected on both sides).
    pub latencies: Latencies,
    /// The same minus the schedule lag (the commit alone).
    pub service: Latencies,
    /// The schedule lag: how late pgbench started each transaction after its scheduled time.
    pub lag: Latencies,
    /// pgbench's own `-r` per-statement average for the SELECT, ms.
    pub statement_avg_ms: Option<f64>,
    pub command: String,
}

/// Clients of the paced baseline ([`upsert`]).
const CLIENTS: u64 = 4;

/// `transactions` commits of `synchub.upsert_project_file` at `rate`/s in total, from
/// [`CLIENTS`] connections (rounded up to a multiple of it).
pub async fn upsert(ctx: &Ctx, project: Uuid, transactions: u64, rate: f64, tag: &str) -> anyhow::Result<Run> {
    let dir = fresh_dir(ctx, tag)?;
    let script = dir.join("upsert.sql");
    std::fs::write(
        &script,
        format!(
            "\\set n random(1, 1000000000)\n\
             SELECT * FROM synchub.upsert_project_file(:project, 'bench/' || :n || '.txt', 'x', NULL, NULL, '{USER}', NULL);\n"
        ),
    )?;
    let pgbench = pg_bin(ctx).join("pgbench");
    let args: Vec<String> = vec![
        "-h".into(),
        "127.0.0.1".into(),
        "-p".into(),
        ctx.pg.port.to_string(),
        "-U".into(),
        "postgres".into(),
        "-n".into(),
        // Several clients: a transaction that starts while another is still committing does
        // not wait for it on the client side, like the hub's PUTs (sent without waiting for
        // the previous answer); the rate is the total. -t is per client.
        "-c".into(),
        CLIENTS.to_string(),
        "-j".into(),
        "1".into(),
        "-M".into(),
        "prepared".into(),
        "-t".into(),
        transactions.div_ceil(CLIENTS).to_string(),
        "-R".into(),
        format!("{rate}"),
        "-r".into(),
        "-l".into(),
        format!("--log-prefix={}", dir.join("log").display()),
        "-D".into(),
        format!("project={project}"),
        "-f".into(),
        script.display().to_string(),
        ctx.db_name().into(),
    ];
    let output = tokio::process::Command::new(&pgbench)
        .env("PGPASSWORD", ctx.pg.password())
        .args(&args)
        .current_dir(&dir)
        .output()
        .await
        .with_context(|| format!("running {}", pgbench.display()))?;
    let stdout = String::from_utf8_lossy(&output.stdout);
    if !output.status.success() {
        bail!("pgbench failed ({}): {}\n{}", output.status, stdout, String::from_utf8_lossy(&output.stderr));
    }
    let mut latencies = Latencies::default();
    let mut service = Latencies::default();
    let mut lag = Latencies::default();
    let mut failed = 0u64;
    for log in log_files(&dir)? {
        for line in std::fs::read_to_string(&log)?.lines() {
            // client_id transaction_no time script_no time_epoch time_us [schedule_lag]
            let fields: Vec<&str> = line.split_whitespace().collect();
            let Some(time) = fields.get(2) else { continue };
            let Ok(time_us) = time.parse::<u64>() else {
                failed += 1; // "failed" or "skipped"
                continue;
            };
            let lag_us: u64 = fields.get(6).and_then(|l| l.parse().ok()).unwrap_or(0);
            latencies.record_us(time_us);
            service.record_us(time_us.saturating_sub(lag_us));
            lag.record_us(lag_us);
        }
    }
    if failed > 0 || latencies.count() < transactions {
        bail!(
            "pgbench logged {} good and {failed} failed transactions of {transactions}:\n{stdout}",
            latencies.count()
        );
    }
    let statement_avg_ms = stdout
        .lines()
        .find(|l| l.contains("upsert_project_file") && !l.contains("transaction type"))
        .and_then(|l| l.split_whitespace().next())
        .and_then(|n| n.parse().ok());
    let command = format!("{} {}", pgbench.display(), args.join(" "));
    Ok(Run { latencies, service, lag, statement_avg_ms, command })
}

/// `pgbench-<tag>` in the work dir, emptied: the logs read afterwards are this run's only.
fn fresh_dir(ctx: &Ctx, tag: &str) -> anyhow::Result<PathBuf> {
    let dir = ctx.work.join(format!("pgbench-{tag}"));
    if dir.exists() {
        std::fs::remove_dir_all(&dir)?;
    }
    std::fs::create_dir_all(&dir)?;
    Ok(dir)
}

fn log_files(dir: &PathBuf) -> anyhow::Result<Vec<PathBuf>> {
    let mut files = Vec::new();
    for entry in std::fs::read_dir(dir)? {
        let path = entry?.path();
        if path.file_name().and_then(|n| n.to_str()).is_some_and(|n| n.starts_with("log.")) {
            files.push(path);
        }
    }
    Ok(files)
}

/// What a closed-loop pgbench run (no `-R`) achieved.
pub struct Throughput {
    pub transactions: u64,
    pub seconds: f64,
    pub latencies: Latencies,
    pub command: String,
}

impl Throughput {
    pub fn per_sec(&self) -> f64 {
        self.transactions as f64 / self.seconds
    }
}

/// `clients` pgbench clients (one thread each) calling `synchub.upsert_project_file` as
/// fast as they can for `seconds`, each on its own 100 paths (`tp/<client>/<k>.txt`, k
/// random), with per-transaction logging for the latency distribution.
pub async fn upsert_throughput(
    ctx: &Ctx,
    project: Uuid,
    clients: usize,
    seconds: u64,
    tag: &str,
) -> anyhow::Result<Throughput> {
    let script = format!(
        "\\set k random(1, 100)\n\
         SELECT * FROM synchub.upsert_project_file(:project, 'tp/' || :client_id || '/' || :k || '.txt', 'x', NULL, NULL, '{USER}', NULL);\n"
    );
    throughput(ctx, &script, ("project", project.to_string()), clients, seconds, tag).await
}

/// [`upsert_throughput`] with the clients spread over `projects` (client c writes to
/// project c mod n), as writers of many projects are, and new content every time (so
/// every call changes the file and logs an event, like the hub's writes it is compared with).
pub async fn upsert_throughput_spread(
    ctx: &Ctx,
    projects: &[Uuid],
    clients: usize,
    seconds: u64,
    tag: &str,
) -> anyhow::Result<Throughput> {
    let n = projects.len().max(1);
    let script = format!(
        "\\set k random(1, 100)\n\
         \\set v random(1, 1000000000)\n\
         SELECT * FROM synchub.upsert_project_file((:projects::uuid[])[1 + (:client_id)::int % {n}], 'tp/' || :client_id || '/' || :k || '.txt', 'c' || :v, NULL, NULL, '{USER}', NULL);\n"
    );
    let list: Vec<String> = projects.iter().map(Uuid::to_string).collect();
    throughput(ctx, &script, ("projects", format!("{{{}}}", list.join(","))), clients, seconds, tag).await
}

/// Runs `script` (closed loop, `clients` clients, `seconds`) with one `-D name=value`.
async fn throughput(
    ctx: &Ctx,
    script_text: &str,
    (name, value): (&str, String),
    clients: usize,
    seconds: u64,
    tag: &str,
) -> anyhow::Result<Throughput> {
    let dir = fresh_dir(ctx, tag)?;
    let script = dir.join("upsert.sql");
    std::fs::write(&script, script_text)?;
    let pgbench = pg_bin(ctx).join("pgbench");
    let args: Vec<String> = vec![
        "-h".into(),
        "127.0.0.1".into(),
        "-p".into(),
        ctx.pg.port.to_string(),
        "-U".into(),
        "postgres".into(),
        "-n".into(),
        "-c".into(),
        clients.to_string(),
        "-j".into(),
        clients.to_string(),
        "-M".into(),
        "prepared".into(),
        "-T".into(),
        seconds.to_string(),
        "-l".into(),
        format!("--log-prefix={}", dir.join("log").display()),
        "-D".into(),
        format!("{name}={value}"),
        "-f".into(),
        script.display().to_string(),
        ctx.db_name().into(),
    ];
    let output = tokio::process::Command::new(&pgbench)
        .env("PGPASSWORD", ctx.pg.password())
        .args(&args)
        .current_dir(&dir)
        .output()
        .await
        .with_context(|| format!("running {}", pgbench.display()))?;
    let stdout = String::from_utf8_lossy(&output.stdout);
    if !output.status.success() {
        bail!("pgbench failed ({}): {}\n{}", output.status, stdout, String::from_utf8_lossy(&output.stderr));
    }
    let mut latencies = Latencies::default();
    let (mut first_start_us, mut last_end_us) = (u64::MAX, 0u64);
    for log in log_files(&dir)? {
        for line in std::fs::read_to_string(&log)?.lines() {
            // client_id transaction_no time script_no time_epoch time_us
            let fields: Vec<&str> = line.split_whitespace().collect();
            let (Some(Ok(time_us)), Some(Ok(epoch)), Some(Ok(epoch_us))) = (
                fields.get(2).map(|v| v.parse::<u64>()),
                fields.get(4).map(|v| v.parse::<u64>()),
                fields.get(5).map(|v| v.parse::<u64>()),
            ) else {
                bail!("pgbench logged a failed transaction: {line}");
            };
            latencies.record_us(time_us);
            let end_us = epoch * 1_000_000 + epoch_us;
            last_end_us = last_end_us.max(end_us);
            first_start_us = first_start_us.min(end_us.saturating_sub(time_us));
        }
    }
    if latencies.count() == 0 {
        bail!("pgbench logged no transaction:\n{stdout}");
    }
    let seconds = (last_end_us.saturating_sub(first_start_us)) as f64 / 1e6;
    let command = format!("{} {}", pgbench.display(), args.join(" "));
    Ok(Throughput { transactions: latencies.count(), seconds, latencies, command })
}
