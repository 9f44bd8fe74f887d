//! #8 `agent_resume`: the agent reaches the hub through a TCP proxy in this process, which
//! cuts every connection and refuses new ones while edits land, then heals.

use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use synchub_test_support::CutProxy;

use super::watch::DirWatch;
use super::{Agent, create_session, wait_until, wait_until_async};
use crate::harness::{Ctx, Hub, clock};
use crate::report::{Goal, Report, Row, Value as V};
use crate::stats::Latencies;

pub(super) async fn resume(ctx: &Ctx) -> anyhow::Result<Report> {
    let edits: usize = if ctx.quick { 100 } else { 1_000 };
    let away = Duration::from_secs(if ctx.quick { 2 } else { 10 });
    let reps: usize = if ctx.quick { 1 } else { 5 };
    let mut report = Report::new(
        "agent_resume",
        "#8",
        "An agent hydrated with `r/N.txt` reaches the hub through a TCP proxy inside the bench. The proxy drops every \
         connection and refuses new ones for the cut; meanwhile one PUT per file (`r/0.txt` … ) lands on the hub \
         directly, spread evenly over the cut. Then the proxy heals; the agent reconnects on its own (backoff \
         250 ms doubling to 5 s, cut short by a TCP probe every 100 ms that finds the hub again; `reconnected` \
         is the first connection let through, i.e. that probe, the WebSocket follows at once), joins with `since` = its last applied seq and applies the \
         missed events. Converged = the last edited file renamed into place in the agent's tree (inotify), checked \
         against the agent's `/status` and the files' contents.",
    );
    report.param("edits during the cut", edits);
    report.param("cut", format!("{} s", away.as_secs()));
    report.param("repetitions", reps);
    let hub = ctx.start_hub("agent_resume").await?;
    let result = resume_phase(ctx, &hub, edits, away, reps, &mut report).await;
    let log = hub.log_lines();
    hub.stop().await;
    result?;
    if !log.is_empty() {
        report.notes.push(format!("the hub logged {} warning/error lines, first: `{}`", log.len(), log[0]));
    }
    Ok(report)
}

async fn resume_phase(
    ctx: &Ctx,
    hub: &Hub,
    edits: usize,
    away: Duration,
    reps: usize,
    report: &mut Report,
) -> anyhow::Result<()> {
    let project = ctx.create_project(hub, "bench agent resume").await?;
    let seed: Vec<(String, String)> = (0..edits).map(|i| (format!("r/{i}.txt"), format!("seed {i}\n"))).collect();
    ctx.bulk_upsert(hub, project, &seed).await?;
    let proxy = CutProxy::to(hub.addr).await?;
    let session = create_session(ctx, hub, project).await?;
    let dir = ctx.work.join("resume-agent");
    let mut agent = Agent::start(ctx, &session, &dir, Some(&proxy.base()), "resume")?;
    let result = async {
        agent.wait_ready(ctx, Duration::from_secs(120)).await?;
        let watch = DirWatch::start(&dir.join("r"), edits)?;
        let (mut after_reconnect, mut after_restore, mut reconnect_wait) =
            (Latencies::default(), Latencies::default(), Latencies::default());
        let mut floor = Latencies::default();
        let floor_dir = ctx.work.join("resume-floor");
        let mut per_rep = Vec::new();
        for rep in 0..reps {
            watch.reset();
            proxy.cut();
            let cut_at = Instant::now();
            wait_until_async("the agent noticing the cut", Duration::from_secs(10), || async {
                !agent.ready(ctx).await
            })
            .await?;
            let noticed_ms = cut_at.elapsed().as_secs_f64() * 1000.0;
            let mut last_seq = 0;
            let spacing = away.mul_f64(0.9) / edits as u32;
            for i in 0..edits {
                tokio::time::sleep_until(tokio::time::Instant::from_std(cut_at + spacing * i as u32)).await;
                last_seq = last_seq
                    .max(ctx.put_file(hub, project, &format!("r/{i}.txt"), &format!("rep {rep} edit {i}\n")).await?);
            }
            if (0..edits).any(|i| watch.arrived(i) != 0) {
                bail!("edits reached the agent during the cut: the proxy did not cut");
            }
            // The edits are sent one after the other: on a loaded machine they may take
            // longer than the cut, which then lasts until the last one has landed.
            tokio::time::sleep_until(tokio::time::Instant::from_std(cut_at + away)).await;
            let cut_secs = cut_at.elapsed().as_secs_f64();
            let restored = Instant::now();
            let restore_at = clock().ns_at(restored);
            proxy.restore();
            wait_until("every edit in the agent's tree after the cut", Duration::from_secs(60), || {
                watch.all_arrived(0..edits)
            })
            .await?;
            let converged = (0..edits).map(|i| watch.arrived(i)).max().unwrap_or(0);
            let reconnect =
                clock().ns_at(proxy.first_accept_since(restored).context("no connection after the restore")?);
            after_reconnect.record_ns(converged.saturating_sub(reconnect));
            after_restore.record_ns(converged.saturating_sub(restore_at));
            reconnect_wait.record_ns(reconnect.saturating_sub(restore_at));
            // The agent's own account, and the files' contents.
            let deadline = Instant::now() + Duration::from_secs(10);
            loop {
                let status = agent.status(ctx).await?;
                if status["applied"].as_i64().unwrap_or(0) >= last_seq {
                    break;
                }
                if Instant::now() > deadline {
                    bail!("the agent's /status never reached seq {last_seq}: {status}");
                }
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            for i in [0, edits / 2, edits - 1] {
                let on_disk = std::fs::read_to_string(dir.join(format!("r/{i}.txt")))?;
                if on_disk != format!("rep {rep} edit {i}\n") {
                    bail!("r/{i}.txt on disk is {on_disk:?} after rep {rep}");
                }
            }
            per_rep.push(format!(
                "cut for {cut_secs:.1} s; noticed the cut after {noticed_ms:.0} ms; reconnected {:.0} ms after the \
                 restore; converged {:.1} ms after reconnecting",
                reconnect.saturating_sub(restore_at) as f64 / 1e6,
                converged.saturating_sub(reconnect) as f64 / 1e6
            ));
            agent.wait_ready(ctx, Duration::from_secs(30)).await?;
            // The disk's own floor for the same work, right after: as many files replaced
            // the way the agent does it (new temp file, write, rename over the old one).
            let (dir, n) = (floor_dir.clone(), edits);
            let took = tokio::task::spawn_blocking(move || replace_files(&dir, n, rep)).await??;
            floor.record_ns(took.as_nanos() as u64);
        }
        report.rows.push(
            Row::alone("reconnect → converged p50", V::ms(after_reconnect.ms(0.5)), "— (the issue sets none)")
                .goal(Goal::AtMost(200.0)),
        );
        report.rows.push(Row::compared(
            format!("reconnect → converged p50 vs {edits} file replacements (temp file + rename) on the same disk"),
            V::ms(floor.ms(0.5)),
            V::ms(after_reconnect.ms(0.5)),
        ));
        report.rows.push(
            Row::alone("reconnect → converged max", V::ms(after_reconnect.max_ms()), "— (the issue sets none)")
                .goal(Goal::AtMost(200.0)),
        );
        report.rows.push(Row::alone(
            "proxy healed → agent reconnected p50 (its backoff)",
            V::ms(reconnect_wait.ms(0.5)),
            "—",
        ));
        report.notes.push(format!("reconnect → converged: {}", after_reconnect.summary()));
        report.notes.push(format!(
            "the disk's floor, {edits} files replaced by the bench itself after each repetition (create a temp file, \
             write the edit, rename it over the file; no fsync, like the agent): {}",
            floor.summary()
        ));
        report.notes.push(format!("proxy healed → converged: {}", after_restore.summary()));
        for (rep, line) in per_rep.iter().enumerate() {
            report.notes.push(format!("repetition {}: {line}", rep + 1));
        }
        let log = agent.log_text();
        let rehydrations = log.matches("rehydrat").count();
        report.notes.push(format!(
            "\"reconnect\" is the first connection the proxy let through after healing (the agent's WebSocket \
             upgrade); {}",
            if rehydrations == 0 {
                "the agent's log mentions no rehydration: it resumed by replaying the missed events".to_string()
            } else {
                format!("the agent's log mentions rehydration {rehydrations} times")
            }
        ));
        Ok::<(), anyhow::Error>(())
    }
    .await;
    agent.stop().await;
    result
}

/// Replaces `n` files in `dir` the way the agent applies an edit (a new temp file next to
/// the target, the content written, renamed over it; no fsync) and returns how long the
/// replacements took (seeding the files on the first call is not timed).
fn replace_files(dir: &Path, n: usize, rep: usize) -> std::io::Result<Duration> {
    use std::io::Write;
    std::fs::create_dir_all(dir)?;
    for i in 0..n {
        let target = dir.join(format!("{i}.txt"));
        if !target.exists() {
            std::fs::write(&target, format!("seed {i}\n"))?;
        }
    }
    let started = Instant::now();
    for i in 0..n {
        let temp = dir.join(format!(".tmp-{i}"));
        let mut file = std::fs::OpenOptions::new().write(true).create_new(true).open(&temp)?;
        file.write_all(format!("rep {rep} edit {i}\n").as_bytes())?;
        drop(file);
        std::fs::rename(&temp, dir.join(format!("{i}.txt")))?;
    }
    Ok(started.elapsed())
}
