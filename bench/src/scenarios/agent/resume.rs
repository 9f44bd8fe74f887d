//! #8 `agent_resume`: the agent reaches the hub through a TCP proxy in this process, which
//! cuts every connection and refuses new ones while edits land, then heals.

use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use synchub_test_support::CutProxy;

use super::watch::DirWatch;
use super::{Agent, create_session, wait_until, wait_until_async};
use crate::harness::{Ctx, Hub, Side, clock};
use crate::report::{Goal, Report, Row, Unit, Value as V};
use crate::stats::Latencies;

/// One path is edited this many times during every cut: the replay must write it once.
const HOT_EDITS: usize = 100;

/// What one block measured: the subject's cut and heal, or the baseline's file replacements.
#[derive(Default)]
struct Block {
    /// Subject: joined again → every edit on disk; baseline: the same files replaced by the
    /// bench itself, ms.
    converge_ms: f64,
    /// Subject only: healed → the first connection through the proxy (the agent's TCP probe), ms.
    heal_to_probe_ms: f64,
    /// Subject only: healed → the agent joined again (`/readyz` 200), ms.
    heal_to_joined_ms: f64,
    /// Subject only: how many times the agent renamed the hot path into place.
    hot_writes: u64,
    /// Subject only: a line for the notes.
    line: String,
}

pub(super) async fn resume(ctx: &Ctx) -> anyhow::Result<Report> {
    let edits: usize = if ctx.quick { 100 } else { 1_000 };
    let away = Duration::from_secs(if ctx.quick { 1 } else { 10 });
    let mut report = Report::new(
        "agent_resume",
        "#8",
        "An agent hydrated with `r/N.txt` reaches the hub through a TCP proxy inside the bench. The proxy drops every \
         connection and refuses new ones for the cut; meanwhile one PUT per file (`r/0.txt` … ) lands on the hub \
         directly, spread evenly over the cut, and one more file (the hot path, `r/N.txt` after the others) is \
         edited 100 times among them. Then the proxy heals; the agent reconnects on its own (backoff 250 ms \
         doubling to 5 s, cut short by a TCP probe every 100 ms that finds the hub again), joins with `since` = \
         its last applied seq and applies the missed events (coalesced per path). Reconnected = the agent's \
         `/readyz` answers 200 again (it joined; polled every 2 ms); converged = the last edited file renamed into \
         place in the agent's tree (inotify), checked against the agent's `/status` and the files' contents; the \
         hot path's writes are its renames into place (inotify `IN_MOVED_TO`). Interleaved: each cut (subject) \
         is paired with the disk's floor for the same files (baseline: the bench replaces them itself, temp file \
         + rename, no fsync, like the agent).",
    );
    report.param("edits during the cut", format!("{edits} files once each + one file {HOT_EDITS} times"));
    report.param("cut", format!("{} s", away.as_secs()));
    report.param("pairs (cut + heal | the disk's floor)", ctx.pairs());
    let hub = ctx.start_hub("agent_resume").await?;
    let result = resume_phase(ctx, &hub, edits, away, &mut report).await;
    let log = hub.log_lines();
    hub.stop().await;
    result?;
    if !log.is_empty() {
        report.notes.push(format!("the hub logged {} warning/error lines, first: `{}`", log.len(), log[0]));
    }
    Ok(report)
}

/// The order of the PUTs of one cut: every file once (`Some(i)`), with the hot path's
/// edits (`None`) spread evenly among them.
fn edit_order(edits: usize) -> Vec<Option<usize>> {
    let mut order = Vec::with_capacity(edits + HOT_EDITS);
    for i in 0..edits {
        order.push(Some(i));
        if i * HOT_EDITS / edits != (i + 1) * HOT_EDITS / edits {
            order.push(None);
        }
    }
    order
}

async fn resume_phase(ctx: &Ctx, hub: &Hub, edits: usize, away: Duration, report: &mut Report) -> anyhow::Result<()> {
    if edits < HOT_EDITS {
        bail!("{edits} edits per cut: at least {HOT_EDITS} needed to spread the hot path's edits");
    }
    // The inotify thread and the heals share one clock: start it before the first heal
    // (instants before its start would all read as its start).
    let _ = clock();
    let project = ctx.create_project(hub, "bench agent resume").await?;
    // Files 0..edits once each; file `edits` is the hot path.
    let seed: Vec<(String, String)> = (0..=edits).map(|i| (format!("r/{i}.txt"), format!("seed {i}\n"))).collect();
    ctx.bulk_upsert(hub, project, &seed).await?;
    let proxy = CutProxy::to(hub.addr).await?;
    let session = create_session(ctx, hub, project).await?;
    let dir = ctx.work.join("resume-agent");
    let mut agent = Agent::start(ctx, &session, &dir, Some(&proxy.base()), "resume")?;
    let result = async {
        agent.wait_ready(ctx, Duration::from_secs(120)).await?;
        let watch = DirWatch::start(&dir.join("r"), edits + 1)?;
        let floor_dir = ctx.work.join("resume-floor");
        let order = edit_order(edits);
        let cut = Cut { hub, project, proxy: &proxy, watch: &watch, dir: &dir, order: &order, away };
        let interleaved = ctx
            .interleave(ctx.pairs(), async |side, pair| match side {
                Side::Subject => cut_and_heal(ctx, &cut, &mut agent, pair).await,
                Side::Baseline => {
                    let (dir, n) = (floor_dir.clone(), edits + 1);
                    let took = tokio::task::spawn_blocking(move || replace_files(&dir, n, pair)).await??;
                    Ok(Block { converge_ms: took.as_secs_f64() * 1000.0, ..Block::default() })
                }
            })
            .await?;
        let subjects: Vec<&Block> = interleaved.pairs.iter().map(|p| &p.subject).collect();
        let heals = subjects.len();
        let (mut joined, mut probed, mut converged) =
            (Latencies::default(), Latencies::default(), Latencies::default());
        for block in &subjects {
            joined.record_us((block.heal_to_joined_ms * 1000.0) as u64);
            probed.record_us((block.heal_to_probe_ms * 1000.0) as u64);
            converged.record_us((block.converge_ms * 1000.0) as u64);
        }
        for (what, q) in [("p50", Some(0.5)), ("p99", Some(0.99)), ("max", None)] {
            let value = q.map_or(joined.max_ms(), |q| joined.ms(q));
            report.rows.push(
                Row::alone(
                    format!("proxy healed → agent reconnected (joined, /readyz 200) {what}, {heals} heals"),
                    V::ms(value),
                    "— (issue 16: ≤ 250 ms)",
                )
                .goal(Goal::AtMost(250.0)),
            );
        }
        report.rows.push(Row::alone(
            "proxy healed → first connection through the proxy (the agent's TCP probe) p50",
            V::ms(probed.ms(0.5)),
            "—",
        ));
        report.rows.push(interleaved.row(
            format!("reconnect → converged vs {} file replacements (temp file + rename) on the same disk", edits + 1),
            Unit::Ms,
            |b| b.converge_ms,
        ));
        report.rows.push(
            Row::alone("reconnect → converged max", V::ms(converged.max_ms()), "— (the issue sets none)")
                .goal(Goal::AtMost(200.0)),
        );
        let hot_writes = subjects.iter().map(|b| b.hot_writes).max().unwrap_or(0);
        report.rows.push(
            Row::compared(
                format!("writes of one file edited {HOT_EDITS} times while cut off (most in one of {heals} replays)"),
                V::count(HOT_EDITS as f64),
                V::count(hot_writes as f64),
            )
            .goal(Goal::AtMost(1.0)),
        );
        report
            .notes
            .push(interleaved.note("reconnect → converged, ms (baseline: the disk's floor)", |b| b.converge_ms));
        report.notes.push(format!("proxy healed → agent reconnected (joined): {}", joined.summary()));
        report.notes.push(format!("proxy healed → the agent's first connection (its probe): {}", probed.summary()));
        for (pair, block) in subjects.iter().enumerate() {
            report.notes.push(format!("cut {}: {}", pair + 1, block.line));
        }
        let log = agent.log_text();
        let rehydrations = log.matches("rehydrat").count();
        report.notes.push(if rehydrations == 0 {
            "the agent's log mentions no rehydration: it resumed by replaying the missed events".to_string()
        } else {
            format!("the agent's log mentions rehydration {rehydrations} times")
        });
        Ok::<(), anyhow::Error>(())
    }
    .await;
    agent.stop().await;
    result
}

/// What every cut works with.
#[derive(Clone, Copy)]
struct Cut<'a> {
    hub: &'a Hub,
    project: uuid::Uuid,
    proxy: &'a CutProxy,
    watch: &'a DirWatch,
    /// The agent's tree.
    dir: &'a Path,
    order: &'a [Option<usize>],
    away: Duration,
}

/// One subject block: cut the proxy, land the edits on the hub while the agent is cut off,
/// heal, and time the agent's way back.
async fn cut_and_heal(ctx: &Ctx, cut: &Cut<'_>, agent: &mut Agent, pair: usize) -> anyhow::Result<Block> {
    let Cut { hub, project, proxy, watch, dir, order, away } = *cut;
    let hot = order.iter().flatten().count();
    watch.reset();
    proxy.cut();
    let cut_at = Instant::now();
    wait_until_async("the agent noticing the cut", Duration::from_secs(10), || async { !agent.ready(ctx).await })
        .await?;
    let noticed_ms = cut_at.elapsed().as_secs_f64() * 1000.0;
    let mut last_seq = 0;
    let spacing = away.mul_f64(0.9) / order.len() as u32;
    let mut hot_edit = 0;
    for (k, file) in order.iter().enumerate() {
        tokio::time::sleep_until(tokio::time::Instant::from_std(cut_at + spacing * k as u32)).await;
        let (path, text) = match file {
            Some(i) => (format!("r/{i}.txt"), format!("rep {pair} edit {i}\n")),
            None => {
                hot_edit += 1;
                (format!("r/{hot}.txt"), format!("rep {pair} hot edit {hot_edit}\n"))
            }
        };
        last_seq = last_seq.max(ctx.put_file(hub, project, &path, &text).await?);
    }
    if (0..=hot).any(|i| watch.arrived(i) != 0) {
        bail!("edits reached the agent during the cut: the proxy did not cut");
    }
    // The edits are sent one after the other: on a loaded machine they may take longer
    // than the cut, which then lasts until the last one has landed.
    tokio::time::sleep_until(tokio::time::Instant::from_std(cut_at + away)).await;
    let cut_secs = cut_at.elapsed().as_secs_f64();
    let restored = Instant::now();
    proxy.restore();
    // Reconnected = joined again: polled beside the wait for the files.
    let agent_ref = &*agent;
    let (joined_at, files) = tokio::join!(
        async {
            let deadline = restored + Duration::from_secs(60);
            while !agent_ref.ready(ctx).await {
                if Instant::now() > deadline {
                    return None;
                }
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
            Some(Instant::now())
        },
        wait_until("every edit in the agent's tree after the cut", Duration::from_secs(60), || {
            watch.all_arrived(0..hot + 1)
        })
    );
    files?;
    let joined_at = joined_at.context("the agent did not join again within 60 s of the heal")?;
    let converged = (0..=hot).map(|i| watch.arrived(i)).max().unwrap_or(0);
    let probe_at = proxy.first_accept_since(restored).context("no connection after the restore")?;
    let since_heal = |at: Instant| at.saturating_duration_since(restored).as_secs_f64() * 1000.0;
    let block = Block {
        converge_ms: converged.saturating_sub(clock().ns_at(joined_at)) as f64 / 1e6,
        heal_to_probe_ms: since_heal(probe_at),
        heal_to_joined_ms: since_heal(joined_at),
        hot_writes: watch.renames(hot),
        line: String::new(),
    };
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
    let last = order.len() - hot - 1;
    for (i, expected) in [(0, format!("rep {pair} edit 0\n")), (last, format!("rep {pair} edit {last}\n"))]
        .into_iter()
        .chain([(hot, format!("rep {pair} hot edit {HOT_EDITS}\n"))])
    {
        let on_disk = std::fs::read_to_string(dir.join(format!("r/{i}.txt")))?;
        if on_disk != expected {
            bail!("r/{i}.txt on disk is {on_disk:?} after cut {pair}, expected {expected:?}");
        }
    }
    agent.wait_ready(ctx, Duration::from_secs(30)).await?;
    Ok(Block {
        line: format!(
            "cut for {cut_secs:.1} s; noticed after {noticed_ms:.0} ms; healed → probe {:.0} ms → joined {:.0} ms; \
             converged {:.1} ms after joining; the hot path written {} times",
            block.heal_to_probe_ms, block.heal_to_joined_ms, block.converge_ms, block.hot_writes
        ),
        ..block
    })
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_file_once_and_the_hot_path_spread_among_them() {
        for edits in [HOT_EDITS, 1_000, 1_234] {
            let order = edit_order(edits);
            assert_eq!(order.iter().filter(|o| o.is_none()).count(), HOT_EDITS, "{edits} edits");
            let files: Vec<usize> = order.iter().flatten().copied().collect();
            assert_eq!(files, (0..edits).collect::<Vec<_>>());
            // Spread: no two hot edits further apart than the stride allows.
            let hot_at: Vec<usize> = order.iter().enumerate().filter(|(_, o)| o.is_none()).map(|(k, _)| k).collect();
            let widest = hot_at.windows(2).map(|w| w[1] - w[0]).max().unwrap_or(0);
            assert!(widest <= edits.div_ceil(HOT_EDITS) + 1, "{edits} edits: gap {widest}");
        }
    }
}
