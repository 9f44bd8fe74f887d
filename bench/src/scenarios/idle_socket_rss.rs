//! Memory per idle socket: the hub's VmRSS with no sockets, then with N idle sockets
//! joined to one project (clients keep reading, so pings are answered).

use std::time::{Duration, Instant};

use anyhow::bail;
use futures_util::StreamExt;

use super::Pending;
use crate::harness::{self, Ctx, Hub};
use crate::procfs;
use crate::report::{Report, Row, Value as V};

pub fn run(ctx: &Ctx) -> Pending<'_> {
    Box::pin(measure(ctx))
}

async fn measure(ctx: &Ctx) -> anyhow::Result<Report> {
    let sockets: usize = if ctx.quick { 1_000 } else { 10_000 };
    // One descriptor per socket here and in the hub (each has its own limit), plus slack.
    let needed = sockets as u64 + 512;
    if let Some(limit) = procfs::nofile_limit()
        && limit < needed
    {
        bail!(
            "RLIMIT_NOFILE is {limit}, {needed} needed: run through scripts/bench (it raises it) or `ulimit -n {needed}`"
        );
    }
    let mut report = Report::new(
        "idle_socket_rss",
        "Resident memory (VmRSS from /proc/PID/status) of a fresh hub process with no sockets, then with idle \
         WebSockets joined to one project; the difference divided by the socket count.",
    );
    report.param("sockets", sockets);
    report.param("client source addresses", format!("127.0.0.2–127.0.0.{}", 1 + harness::SOURCE_ADDRESSES));
    let hub = ctx.start_hub("idle_socket_rss").await?;
    let result = idle(ctx, &hub, sockets, &mut report).await;
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

async fn idle(ctx: &Ctx, hub: &Hub, sockets: usize, report: &mut Report) -> anyhow::Result<()> {
    let project = ctx.create_project(hub, "bench idle sockets").await?;
    // Warm the paths a join takes (DB pool, statements, the project's feed), then close.
    drop(ctx.open_joined(hub, project, 1, 1).await?);
    tokio::time::sleep(Duration::from_millis(500)).await;
    let rss_empty = settled_rss(hub).await?;
    let fds_empty = procfs::open_fds(hub.pid);

    let started = Instant::now();
    let half = sockets / 2;
    let mut readers = tokio::task::JoinSet::new();
    let mut keep = |batch: Vec<harness::Ws>| {
        for mut ws in batch {
            // Keep reading: answers the hub's pings, as a live client would.
            readers.spawn(async move { while let Some(Ok(_)) = ws.next().await {} });
        }
    };
    keep(ctx.open_joined(hub, project, half, 32).await?);
    let rss_half = settled_rss(hub).await?;
    keep(ctx.open_joined(hub, project, sockets - half, 32).await?);
    let open_secs = started.elapsed().as_secs_f64();
    tokio::time::sleep(Duration::from_secs(1)).await;
    let rss_full = settled_rss(hub).await?;
    let fds_full = procfs::open_fds(hub.pid);
    let threads = procfs::status_field(hub.pid, "Threads").unwrap_or_default();
    let rss_anon = procfs::status_kib(hub.pid, "RssAnon").ok();
    let hwm = procfs::status_kib(hub.pid, "VmHWM").ok();
    let own_rss = procfs::status_kib(std::process::id(), "VmRSS").ok();
    readers.abort_all();

    let per_socket = (rss_full as f64 - rss_empty as f64) / sockets as f64;
    let per_socket_first = (rss_half as f64 - rss_empty as f64) / half as f64;
    let per_socket_second = (rss_full as f64 - rss_half as f64) / (sockets - half) as f64;
    report.rows.push(Row::compared(
        format!("hub VmRSS, 0 → {sockets} idle joined sockets"),
        V::kib(rss_empty as f64),
        V::kib(rss_full as f64),
    ));
    report.rows.push(Row::alone("KiB per idle joined socket", V::count(per_socket), "(RSS delta / sockets)"));
    report.notes.push(format!(
        "per socket, first half: {per_socket_first:.1} KiB; second half: {per_socket_second:.1} KiB \
         (VmRSS at {half} sockets: {rss_half} KiB)"
    ));
    report.notes.push(format!(
        "at {sockets} sockets: RssAnon {} KiB, VmHWM {} KiB, {threads} threads, open fds {} (at 0 sockets: {})",
        rss_anon.map_or("?".into(), |v| v.to_string()),
        hwm.map_or("?".into(), |v| v.to_string()),
        fds_full.map_or("?".into(), |v| v.to_string()),
        fds_empty.map_or("?".into(), |v| v.to_string()),
    ));
    report.notes.push(format!(
        "{sockets} sockets opened and joined in {open_secs:.1} s ({:.0}/s, 32 handshakes at a time, including two \
         settle pauses of ~0.6 s); the bench client itself held {} KiB VmRSS with them open",
        sockets as f64 / open_secs,
        own_rss.map_or("?".into(), |v| v.to_string())
    ));
    Ok(())
}
