//! #7 `agent_edit_latency`: an edit → the file renamed into place in the agent's tree.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use anyhow::bail;
use futures_util::StreamExt;
use synchub_protocol::ServerFrame;
use tokio_tungstenite::tungstenite::Message;

use super::watch::DirWatch;
use super::{Agent, create_session, wait_until};
use crate::harness::{self, Ctx, Hub, clock};
use crate::procfs;
use crate::report::{Goal, Report, Row, Value as V};
use crate::stats::Latencies;

const EDIT_RATE: f64 = 100.0;

pub(super) async fn edit_latency(ctx: &Ctx) -> anyhow::Result<Report> {
    let samples: usize = if ctx.quick { 200 } else { 1_000 };
    let warmup: usize = if ctx.quick { 20 } else { 50 };
    let mut report = Report::new(
        "agent_edit_latency",
        "#7",
        "An agent hydrated with the project's files `e/N.txt`, and one subscriber WebSocket joined to the project; \
         HTTP PUTs of new content for `e/0.txt`, `e/1.txt`, … paced at 100/s (not waiting for answers). Per edit: \
         PUT sent → the file renamed into place in the agent's tree (inotify IN_MOVED_TO on `DIR/e`), and PUT sent → \
         its `file:update` frame on the subscriber (#2's measure, same writes, same moment).",
    );
    report.param("edits", samples);
    report.param("warm-up edits (not counted)", warmup);
    report.param("pace", format!("{EDIT_RATE} edits/s"));
    let hub = ctx.start_hub("agent_edit_latency").await?;
    let result = edit_phase(ctx, &hub, samples, warmup, &mut report).await;
    let log = hub.log_lines();
    hub.stop().await;
    result?;
    if !log.is_empty() {
        report.notes.push(format!("the hub logged {} warning/error lines, first: `{}`", log.len(), log[0]));
    }
    report.baseline = "write → event on a subscriber socket (the write_event_latency measure) for the same PUTs, \
                       recorded in the same phase; also write_event_latency's own p50 from earlier in this run."
        .into();
    Ok(report)
}

async fn edit_phase(ctx: &Ctx, hub: &Hub, samples: usize, warmup: usize, report: &mut Report) -> anyhow::Result<()> {
    let total = warmup + samples;
    let project = ctx.create_project(hub, "bench agent edits").await?;
    let seed: Vec<(String, String)> = (0..total).map(|i| (format!("e/{i}.txt"), format!("seed {i}\n"))).collect();
    ctx.bulk_upsert(hub, project, &seed).await?;
    let session = create_session(ctx, hub, project).await?;
    let dir = ctx.work.join("edit-agent");
    let mut agent = Agent::start(ctx, &session, &dir, None, "edit")?;
    let result = async {
        agent.wait_ready(ctx, Duration::from_secs(120)).await?;
        let watch = DirWatch::start(&dir.join("e"), total)?;

        let received: Arc<Vec<AtomicU64>> = Arc::new((0..total).map(|_| AtomicU64::new(0)).collect());
        let mut ws = harness::connect_joined(hub.addr, &ctx.token, None, project).await?;
        let reader = {
            let received = received.clone();
            tokio::spawn(async move {
                while let Some(Ok(message)) = ws.next().await {
                    let Message::Text(text) = message else { continue };
                    let now = clock().now_ns();
                    let Ok(ServerFrame::Event(frame)) = ServerFrame::parse(text.as_str()) else { continue };
                    let index = frame.payload["file_path"]
                        .as_str()
                        .and_then(|p| p.strip_prefix("e/")?.strip_suffix(".txt")?.parse::<usize>().ok());
                    if let Some(slot) = index.and_then(|i| received.get(i)) {
                        slot.store(now, Ordering::Relaxed);
                    }
                }
            })
        };
        let cpu_before = procfs::cpu_time(agent.pid)?;
        let sent: Arc<Vec<AtomicU64>> = Arc::new((0..total).map(|_| AtomicU64::new(0)).collect());
        let mut puts = tokio::task::JoinSet::new();
        let start = tokio::time::Instant::now();
        for i in 0..total {
            tokio::time::sleep_until(start + Duration::from_secs_f64(i as f64 / EDIT_RATE)).await;
            let request = ctx
                .http
                .put(hub.url(&format!("/v1/projects/{project}/files/e/{i}.txt")))
                .bearer_auth(&ctx.token)
                .json(&harness::put_body(&format!("edit {i}\n")))
                .build()?;
            let (client, sent) = (ctx.http.clone(), sent.clone());
            puts.spawn(async move {
                sent[i].store(clock().now_ns(), Ordering::Relaxed);
                let response = client.execute(request).await?;
                if !response.status().is_success() {
                    bail!("PUT {i} answered {}", response.status());
                }
                Ok(())
            });
        }
        while let Some(result) = puts.join_next().await {
            result??;
        }
        let all = 0..total;
        let waited = wait_until("every edit on disk and on the socket", Duration::from_secs(60), || {
            watch.all_arrived(all.clone()) && all.clone().all(|i| received[i].load(Ordering::Relaxed) != 0)
        })
        .await;
        reader.abort();
        waited?;
        let cpu = procfs::cpu_time(agent.pid)?.since(cpu_before);
        for i in [0, total / 2, total - 1] {
            let on_disk = std::fs::read_to_string(dir.join(format!("e/{i}.txt")))?;
            if on_disk != format!("edit {i}\n") {
                bail!("e/{i}.txt on disk is {on_disk:?}");
            }
        }

        let (mut disk, mut event) = (Latencies::default(), Latencies::default());
        for i in warmup..total {
            let s = sent[i].load(Ordering::Relaxed);
            disk.record_ns(watch.arrived(i).saturating_sub(s));
            event.record_ns(received[i].load(Ordering::Relaxed).saturating_sub(s));
        }
        report.rows.push(
            Row::compared(
                "edit → file on disk p50 (baseline: write → event p50, same writes)",
                V::ms(event.ms(0.5)),
                V::ms(disk.ms(0.5)),
            )
            .goal(Goal::PlusAtMost(2.0)),
        );
        report.rows.push(Row::compared(
            "edit → file on disk p99 (baseline: write → event p99, same writes)",
            V::ms(event.ms(0.99)),
            V::ms(disk.ms(0.99)),
        ));
        match ctx.published("write_event_latency/p50_ms") {
            Some(p50) => report.rows.push(
                Row::compared(
                    "edit → file on disk p50 (baseline: write_event_latency p50)",
                    V::ms(p50),
                    V::ms(disk.ms(0.5)),
                )
                .goal(Goal::PlusAtMost(2.0)),
            ),
            None => report.notes.push(
                "write_event_latency did not run before this: compared with the same-phase subscriber only".into(),
            ),
        }
        let status = agent.status(ctx).await?;
        report.notes.push(format!("edit → file on disk: {}", disk.summary()));
        report.notes.push(format!("write → event (subscriber socket, same writes): {}", event.summary()));
        report.notes.push(format!(
            "the agent used {:.2} s CPU (user {:.2} s, system {:.2} s) for {total} edits = {:.1} ms per 1,000 edits; \
             /status at the end: {status}",
            cpu.total().as_secs_f64(),
            cpu.user.as_secs_f64(),
            cpu.system.as_secs_f64(),
            cpu.total().as_secs_f64() * 1e6 / total as f64,
        ));
        Ok::<(), anyhow::Error>(())
    }
    .await;
    agent.stop().await;
    result
}
