//! Memory per idle socket: the hub's VmRSS with no sockets, then with N idle sockets
//! joined to one project (clients keep reading, so pings are answered).

use std::time::{Duration, Instant};

use anyhow::Context;
use futures_util::StreamExt;

use super::Pending;
use crate::harness::{self, Ctx, Hub};
use crate::procfs;
use crate::report::{Goal, Report, Row, Value as V};

pub fn run(ctx: &Ctx) -> Pending<'_> {
    Box::pin(measure(ctx))
}

async fn measure(ctx: &Ctx) -> anyhow::Result<Report> {
    let mut counts: Vec<usize> = if ctx.quick { vec![1_000] } else { ctx.idle_sockets.clone() };
    counts.sort_unstable();
    counts.dedup();
    // One descriptor per socket here and in the hub (each has its own limit, the hub
    // inherits this one), plus slack. Steps beyond the limit cannot run on this machine:
    // they are reported, and the largest count that fits is measured instead.
    const SLACK: usize = 512;
    let mut skipped = Vec::new();
    if let Some(limit) = procfs::nofile_limit().map(|l| l as usize) {
        skipped = counts.iter().copied().filter(|&c| c + SLACK > limit).collect();
        counts.retain(|&c| c + SLACK <= limit);
        let fits = (limit.saturating_sub(2 * SLACK)) / 1_000 * 1_000;
        if !skipped.is_empty() && counts.last().is_none_or(|&largest| fits > largest) && fits > 0 {
            counts.push(fits);
        }
    }
    let sockets = *counts.last().context("no socket count fits under RLIMIT_NOFILE")?;
    let mut report = Report::new(
        "idle_socket_rss",
        "#4",
        "Resident memory (VmRSS from /proc/PID/status) of a fresh hub process with no sockets, then with idle \
         WebSockets joined to one project (opened in steps, the same hub); the difference divided by the socket \
         count.",
    );
    report.param("sockets", counts.iter().map(|c| c.to_string()).collect::<Vec<_>>().join(", ") + " (--idle-sockets)");
    report.param("client source addresses", format!("127.0.0.2–127.0.0.{}", 1 + harness::SOURCE_ADDRESSES));
    if !skipped.is_empty() {
        report.notes.push(format!(
            "not measured: {} sockets: RLIMIT_NOFILE here is {} (hard limit {}; scripts/bench raises the soft limit \
             as far as allowed, and raising the hard limit needs CAP_SYS_RESOURCE), so one process cannot hold that \
             many sockets; measured up to {sockets} instead",
            skipped.iter().map(|c| c.to_string()).collect::<Vec<_>>().join(", "),
            procfs::nofile_limit().map_or("?".into(), |l| l.to_string()),
            procfs::nofile_hard_limit().map_or("?".into(), |l| l.to_string()),
        ));
    }
    let hub = ctx.start_hub("idle_socket_rss").await?;
    let result = idle(ctx, &hub, &counts, &mut report).await;
    let log = hub.log_lines();
    hub.stop().await;
    result?;
    if !log.is_empty() {
        report.notes.push(format!("the hub logged {} warning/error lines, first: `{}`", log.len(), log[0]));
    }
    report.baseline = "the same hub process before any socket was opened (after creating the project and one \
                       socket's join/leave, so pools and caches are warm)."
        .into();
    Ok(report)
}

/// The median of three VmRSS readings 200 ms apart.
async fn settled_rss(hub: &Hub) -> anyhow::Result<u64> {
    let mut readings = Vec::new();
    for _ in 0..3 {
        tokio::time::sleep(Duration::from_millis(200)).await;
        readings.push(hub.rss_kib()?);
    }
    readings.sort_unstable();
    Ok(readings[1])
}

async fn idle(ctx: &Ctx, hub: &Hub, counts: &[usize], report: &mut Report) -> anyhow::Result<()> {
    let project = ctx.create_project(hub, "bench idle sockets").await?;
    // Warm the paths a join takes (DB pool, statements, the project's feed), then close.
    drop(ctx.open_joined(hub, project, 1, 1).await?);
    tokio::time::sleep(Duration::from_millis(500)).await;
    let rss_empty = settled_rss(hub).await?;
    let fds_empty = procfs::open_fds(hub.pid);

    let started = Instant::now();
    let mut readers = tokio::task::JoinSet::new();
    let mut open = 0;
    for &count in counts {
        let batch = ctx.open_joined(hub, project, count - open, 32).await?;
        for mut ws in batch {
            // Keep reading: answers the hub's pings, as a live client would.
            readers.spawn(async move { while let Some(Ok(_)) = ws.next().await {} });
        }
        open = count;
        tokio::time::sleep(Duration::from_secs(1)).await;
        let rss = settled_rss(hub).await?;
        let per_socket = (rss as f64 - rss_empty as f64) / count as f64;
        report.rows.push(Row::compared(
            format!("hub VmRSS, 0 → {count} idle joined sockets"),
            V::kib(rss_empty as f64),
            V::kib(rss as f64),
        ));
        report.rows.push(
            Row::alone(
                format!("KiB per idle joined socket at {count}"),
                V::kib((per_socket * 100.0).round() / 100.0),
                "(RSS delta / sockets)",
            )
            .goal(Goal::AtMost(8.0)), // issue 16 (issue #6 asked ≤ 16 KiB)
        );
        report.notes.push(format!(
            "at {count} sockets: VmRSS {rss} KiB, {per_socket:.2} KiB per socket; opened in {:.1} s so far",
            started.elapsed().as_secs_f64()
        ));
    }
    let fds_full = procfs::open_fds(hub.pid);
    let threads = procfs::status_field(hub.pid, "Threads").unwrap_or_default();
    let rss_anon = procfs::status_kib(hub.pid, "RssAnon").ok();
    let hwm = procfs::status_kib(hub.pid, "VmHWM").ok();
    let own_rss = procfs::status_kib(std::process::id(), "VmRSS").ok();
    readers.abort_all();
    report.notes.push(format!(
        "at {open} sockets: RssAnon {} KiB, VmHWM {} KiB, {threads} threads, open fds {} (at 0 sockets: {}); the \
         bench client itself held {} KiB VmRSS with them open (32 handshakes at a time)",
        rss_anon.map_or("?".into(), |v| v.to_string()),
        hwm.map_or("?".into(), |v| v.to_string()),
        fds_full.map_or("?".into(), |v| v.to_string()),
        fds_empty.map_or("?".into(), |v| v.to_string()),
        own_rss.map_or("?".into(), |v| v.to_string())
    ));
    Ok(())
}
