//! #6 `agent_hydrate`: session created → the agent ready, against `curl` + `unzip`.

use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use serde_json::Value;
use tokio::process::Command;
use uuid::Uuid;

use super::{Agent, create_session};
use crate::harness::{self, Ctx, Hub};
use crate::report::{Goal, Report, Row, Unit, Value as V};
use crate::scenarios::snapshot_build::{content, file_path, zip_tree};

fn median(values: &mut [f64]) -> f64 {
    values.sort_by(f64::total_cmp);
    values[values.len() / 2]
}

fn rounded(values: &[f64]) -> Vec<f64> {
    values.iter().map(|v| (v * 10.0).round() / 10.0).collect()
}

/// Counts regular files under `dir`, not looking into `.synchub`.
fn count_files(dir: &Path) -> usize {
    let Ok(entries) = std::fs::read_dir(dir) else { return 0 };
    entries
        .flatten()
        .map(|entry| {
            let path = entry.path();
            match entry.file_type() {
                Ok(t) if t.is_dir() && entry.file_name() != ".synchub" => count_files(&path),
                Ok(t) if t.is_file() => 1,
                _ => 0,
            }
        })
        .sum()
}

struct Size {
    files: usize,
    file_bytes: usize,
}

pub(super) async fn hydrate(ctx: &Ctx) -> anyhow::Result<Report> {
    let sizes: Vec<Size> = if ctx.quick {
        vec![Size { files: 200, file_bytes: 5_000 }]
    } else {
        vec![Size { files: 1_000, file_bytes: 10_000 }, Size { files: 10_000, file_bytes: 10_000 }]
    };
    let mut report = Report::new(
        "agent_hydrate",
        "#6",
        "A project's files (source-like text, as in snapshot_build) and a snapshot already built for them. Timed: \
         `POST /v1/projects/{id}/sessions` (service token; the snapshot is reused) → start `synchub-agent \
         --project-dir DIR --health-addr ADDR` with the returned env → the first 200 from its `/readyz`, polled \
         every 2 ms (download streamed to disk, every file checked against the manifest's sha256, extracted, \
         socket joined). Each repetition hydrates an empty directory with a new agent process.",
    );
    report.param(
        "sizes",
        sizes.iter().map(|s| format!("{} files × {} bytes", s.files, s.file_bytes)).collect::<Vec<_>>().join(", "),
    );
    report.param(
        "repetitions (median; agent and baseline alternate which goes first)",
        if ctx.quick { "1" } else { "5 at 1,000 files, 3 at 10,000" },
    );
    for tool in ["curl", "unzip"] {
        if Command::new(tool).arg("-v").stdout(Stdio::null()).stderr(Stdio::null()).status().await.is_err() {
            bail!("`{tool}` not found");
        }
    }
    let hub = ctx.start_hub("agent_hydrate").await?;
    let result = async {
        for size in &sizes {
            one_hydrate(ctx, &hub, size, &mut report).await?;
        }
        Ok::<(), anyhow::Error>(())
    }
    .await;
    let log = hub.log_lines();
    hub.stop().await;
    result?;
    if !log.is_empty() {
        report.notes.push(format!("the hub logged {} warning/error lines, first: `{}`", log.len(), log[0]));
    }
    report.baseline = "`curl -sf -o snap.zip URL` then `unzip -q snap.zip -d DIR` (two processes, wall time of both) \
                       with a fresh URL of the same snapshot from `GET /v1/projects/{id}/snapshots/latest` (the \
                       hub serves it from local-disk storage, as it serves the agent); an empty DIR each time."
        .into();
    Ok(report)
}

async fn snapshot_call(
    ctx: &Ctx,
    hub: &Hub,
    method: reqwest::Method,
    project: Uuid,
    path: &str,
) -> anyhow::Result<Value> {
    let response = ctx
        .http
        .request(method, hub.url(&format!("/v1/projects/{project}/snapshots{path}")))
        .bearer_auth(&ctx.service_token)
        .timeout(Duration::from_secs(600))
        .send()
        .await?;
    let status = response.status();
    let body: Value = response.json().await?;
    if !status.is_success() {
        bail!("snapshots{path} answered {status}: {body}");
    }
    Ok(body)
}

/// The baseline once: fresh URL, curl, unzip; seconds.
async fn curl_unzip(ctx: &Ctx, hub: &Hub, project: Uuid, dir: &Path, files: usize) -> anyhow::Result<f64> {
    let latest = snapshot_call(ctx, hub, reqwest::Method::GET, project, "/latest").await?;
    let url = latest["url"].as_str().context("snapshot without url")?.to_string();
    let zip = ctx.work.join("hydrate-baseline.zip");
    let _ = std::fs::remove_file(&zip);
    if dir.exists() {
        std::fs::remove_dir_all(dir)?;
    }
    std::fs::create_dir_all(dir)?;
    let started = Instant::now();
    let curl = Command::new("curl").arg("-sf").arg("-o").arg(&zip).arg(&url).status().await?;
    let unzip = Command::new("unzip").arg("-q").arg(&zip).arg("-d").arg(dir).status().await?;
    let secs = started.elapsed().as_secs_f64();
    if !curl.success() || !unzip.success() {
        bail!("curl ({curl}) or unzip ({unzip}) failed");
    }
    let extracted = count_files(dir);
    if extracted != files {
        bail!("unzip extracted {extracted} files, {files} expected");
    }
    Ok(secs)
}

/// Sessions call → agent ready; (seconds in all, seconds of the sessions call).
async fn session_to_ready(
    ctx: &Ctx,
    hub: &Hub,
    project: Uuid,
    dir: &Path,
    files: usize,
    label: &str,
) -> anyhow::Result<(f64, f64, Value)> {
    if dir.exists() {
        std::fs::remove_dir_all(dir)?;
    }
    std::fs::create_dir_all(dir)?;
    let started = Instant::now();
    let session = create_session(ctx, hub, project).await?;
    let session_secs = started.elapsed().as_secs_f64();
    let mut agent = Agent::start(ctx, &session, dir, None, label)?;
    let ready = agent.wait_ready(ctx, Duration::from_secs(300)).await;
    let secs = started.elapsed().as_secs_f64();
    agent.stop().await;
    ready?;
    let on_disk = count_files(dir);
    if on_disk != files {
        bail!("the agent's tree holds {on_disk} files, {files} expected");
    }
    Ok((secs, session_secs, session))
}

async fn one_hydrate(ctx: &Ctx, hub: &Hub, size: &Size, report: &mut Report) -> anyhow::Result<()> {
    let label = format!("{} files / {:.0} MB", size.files, (size.files * size.file_bytes) as f64 / 1e6);
    let project = ctx.create_project(hub, &format!("bench hydrate {label}")).await?;
    let files: Vec<(String, String)> =
        (0..size.files).map(|i| (file_path(i), content(i as u64 + 1, size.file_bytes))).collect();
    ctx.bulk_upsert(hub, project, &files).await?;
    let built = snapshot_call(ctx, hub, reqwest::Method::POST, project, "").await?;

    let agent_dir = ctx.work.join(format!("hydrate-{}-agent", size.files));
    let unzip_dir = ctx.work.join(format!("hydrate-{}-unzip", size.files));
    // Interleaved: sessions call → agent ready (subject; the snapshot is reused) and curl +
    // unzip of the same snapshot (baseline). Per block: (seconds in all, seconds of the
    // sessions call; 0 for the baseline).
    let mut reuse_notes = Vec::new();
    let hydrations = ctx
        .interleave(ctx.pairs(), async |side, pair| match side {
            harness::Side::Subject => {
                let tag = format!("hydrate-{}-{pair}", size.files);
                let (secs, session, body) = session_to_ready(ctx, hub, project, &agent_dir, size.files, &tag).await?;
                if body["snapshot"]["reused"] == false {
                    reuse_notes.push(format!(
                        "{label}: the session built a new snapshot (expected reuse): {}",
                        body["snapshot"]
                    ));
                }
                Ok((secs, session))
            }
            harness::Side::Baseline => Ok((curl_unzip(ctx, hub, project, &unzip_dir, size.files).await?, 0.0)),
        })
        .await?;
    report.notes.extend(reuse_notes);
    let agent_secs: Vec<f64> = hydrations.pairs.iter().map(|p| p.subject.0).collect();
    let base_secs: Vec<f64> = hydrations.pairs.iter().map(|p| p.baseline.0).collect();
    let session_secs: Vec<f64> = hydrations.pairs.iter().map(|p| p.subject.1).collect();
    // Once more after a change: the sessions call also builds the snapshot (informative).
    ctx.put_file(hub, project, &file_path(0), &content(7_777_777, size.file_bytes)).await?;
    let (with_build, with_build_session, _) =
        session_to_ready(ctx, hub, project, &agent_dir, size.files, &format!("hydrate-{}-build", size.files)).await?;

    // End to end (issue 16), interleaved: a changed file, then the sessions call builds a
    // fresh snapshot and the agent hydrates it, against doing the same by hand: `zip -r -1`
    // of the tree on disk + `curl` + `unzip`.
    let tree = ctx.work.join(format!("hydrate-{}-tree", size.files));
    for (path, text) in &files {
        let file = tree.join(path);
        std::fs::create_dir_all(file.parent().context("file path without a parent")?)?;
        std::fs::write(file, text)?;
    }
    let zip_out = ctx.work.join(format!("hydrate-{}-by-hand.zip", size.files));
    let mut change = 8_000_000u64;
    let e2e = ctx
        .interleave(ctx.pairs(), async |side, pair| {
            change += 1;
            let text = content(change, size.file_bytes);
            match side {
                harness::Side::Subject => {
                    ctx.put_file(hub, project, &file_path(0), &text).await?;
                    let tag = format!("hydrate-{}-e2e-{pair}", size.files);
                    let (secs, _, body) = session_to_ready(ctx, hub, project, &agent_dir, size.files, &tag).await?;
                    if body["snapshot"]["reused"] != false {
                        bail!("the sessions call reused a snapshot after a change: {}", body["snapshot"]);
                    }
                    Ok(secs)
                }
                harness::Side::Baseline => {
                    std::fs::write(tree.join(file_path(0)), &text)?;
                    let zip_secs = zip_tree(&tree, &zip_out).await?;
                    Ok(zip_secs + curl_unzip(ctx, hub, project, &unzip_dir, size.files).await?)
                }
            }
        })
        .await?;
    report.rows.push(
        e2e.row(format!("{label}: change → sessions (fresh build) → agent /readyz"), Unit::Ms, |secs| {
            secs * 1000.0
        })
        .goal(Goal::RatioAtMost(1.0)),
    );
    report.notes.push(e2e.note(&format!("{label}: end to end, s (baseline: zip -r -1 + curl + unzip)"), |s| *s));
    let _ = std::fs::remove_dir_all(&tree);
    let _ = std::fs::remove_file(&zip_out);
    let _ = std::fs::remove_dir_all(&agent_dir);
    let _ = std::fs::remove_dir_all(&unzip_dir);

    let (agent_all, base_all, session_all) = (agent_secs, base_secs.clone(), session_secs);
    let base_median = median(&mut base_secs.clone());
    report.rows.push(
        hydrations
            .row(format!("{label}: sessions → agent /readyz"), Unit::Ms, |b| b.0 * 1000.0)
            .goal(Goal::RatioAtMost(1.2)),
    );
    report.notes.push(hydrations.note(&format!("{label}: sessions → /readyz, s (baseline: curl + unzip)"), |b| b.0));
    report.rows.push(Row::compared(
        format!("{label}: sessions (with a snapshot build) → /readyz, 1 run"),
        V::ms(base_median * 1000.0),
        V::ms(with_build * 1000.0),
    ));
    report.notes.push(format!(
        "{label}: agent runs {:?} ms (of which the sessions call {:?} ms); curl + unzip {:?} ms; snapshot {} bytes; \
         with a snapshot build: {:.0} ms, of which the sessions call {:.0} ms",
        rounded(&agent_all.iter().map(|s| s * 1000.0).collect::<Vec<_>>()),
        rounded(&session_all.iter().map(|s| s * 1000.0).collect::<Vec<_>>()),
        rounded(&base_all.iter().map(|s| s * 1000.0).collect::<Vec<_>>()),
        built["bytes"],
        with_build * 1000.0,
        with_build_session * 1000.0,
    ));
    Ok(())
}

// ---------------------------------------------------------------------------------------
// #7 edit → file on disk.
