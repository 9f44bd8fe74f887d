//! Issue 17, archives: `GET /v1/projects/{id}/archive` (export) and
//! `POST /v1/projects/{id}/archive?mode=replace` (import into a fresh project) of 10,000
//! files / 100 MB (quick: 200 × 5 KB), against `zip -r -1` and `unzip` of the same tree,
//! alternated in the same run. Peak memory: the hub's VmHWM, reset just before each call
//! (`echo 5 > /proc/PID/clear_refs`), minus its VmRSS then.

use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use serde_json::Value;

use super::Pending;
use super::snapshot_build::{populate, which};
use crate::harness::{Ctx, Hub};
use crate::procfs;
use crate::report::{Goal, Report, Row, Value as V};

pub fn run(ctx: &Ctx) -> Pending<'_> {
    Box::pin(measure(ctx))
}

async fn measure(ctx: &Ctx) -> anyhow::Result<Report> {
    let (files, file_bytes) = if ctx.quick { (200, 5_000) } else { (10_000, 10_000) };
    let reps = if ctx.quick { 1 } else { 3 };
    let mut report = Report::new(
        "archive",
        "issue 17",
        "A project's files (source-like text, as snapshot_build) written through the hub. Export: \
         `GET /v1/projects/{id}/archive`, the zip streamed to a file by the client. Import: that zip \
         `POST`ed to `/v1/projects/{id}/archive?mode=replace` of a new, empty project. Wall time from request to \
         the end of the response. Hub and baseline alternate within each repetition.",
    );
    report.param("size", format!("{files} files × {file_bytes} bytes"));
    report.param("repetitions (median)", reps);
    which("zip").context("`zip` not found (apt-get install zip)")?;
    which("unzip").context("`unzip` not found (apt-get install unzip)")?;
    let hub = ctx.start_hub("archive").await?;
    let result = one_size(ctx, &hub, files, file_bytes, reps, &mut report).await;
    let log = hub.log_lines();
    hub.stop().await;
    result?;
    if !log.is_empty() {
        report.notes.push(format!("the hub logged {} warning/error lines, first: `{}`", log.len(), log[0]));
    }
    report.baseline = "export: `zip -r -1 -q -X ../out.zip .` in a directory holding the same files (in the page \
                       cache); import: `unzip -q` of the hub's archive into an empty directory; wall times."
        .into();
    Ok(report)
}

/// Peak RSS growth of the hub while `call` runs (KiB), and the call's answer.
async fn with_peak<T>(
    hub: &Hub,
    call: impl std::future::Future<Output = anyhow::Result<T>>,
) -> anyhow::Result<(T, u64)> {
    let before = hub.rss_kib()?;
    std::fs::write(format!("/proc/{}/clear_refs", hub.pid), "5").context("reset VmHWM (clear_refs)")?;
    let answer = call.await?;
    Ok((answer, procfs::status_kib(hub.pid, "VmHWM")?.saturating_sub(before)))
}

async fn timed(command: &mut tokio::process::Command) -> anyhow::Result<f64> {
    let started = Instant::now();
    let status = command.status().await?;
    if !status.success() {
        bail!("{command:?} failed: {status}");
    }
    Ok(started.elapsed().as_secs_f64())
}

async fn one_size(
    ctx: &Ctx,
    hub: &Hub,
    files: usize,
    file_bytes: usize,
    reps: usize,
    report: &mut Report,
) -> anyhow::Result<()> {
    let label = format!("{files} files / {:.0} MB", (files * file_bytes) as f64 / 1e6);
    let project = ctx.create_project(hub, &format!("bench archive {label}")).await?;
    let dir = ctx.work.join(format!("archive-{files}"));
    let tree = dir.join("tree");
    std::fs::create_dir_all(&tree)?;
    let populate_secs = populate(ctx, hub, project, &tree, files, file_bytes).await?;
    let exported = dir.join("exported.zip");
    let baseline_zip = dir.join("out.zip");
    let unzipped = dir.join("unzipped");

    let (mut export_hub, mut export_zip, mut import_hub, mut import_unzip) = (vec![], vec![], vec![], vec![]);
    let (mut export_peaks, mut import_peaks) = (vec![], vec![]);
    let mut archive_bytes = 0;
    for rep in 0..reps {
        // Export: the baseline, then the hub.
        let _ = std::fs::remove_file(&baseline_zip);
        export_zip.push(
            timed(
                tokio::process::Command::new("zip")
                    .args(["-r", "-1", "-q", "-X", "../out.zip", "."])
                    .current_dir(&tree),
            )
            .await?,
        );
        let started = Instant::now();
        let (bytes, peak) = with_peak(hub, async {
            let mut response = ctx
                .http
                .get(hub.url(&format!("/v1/projects/{project}/archive")))
                .bearer_auth(&ctx.token)
                .timeout(Duration::from_secs(600))
                .send()
                .await?;
            if !response.status().is_success() {
                bail!("export answered {}", response.status());
            }
            let mut out = tokio::fs::File::create(&exported).await?;
            let mut bytes = 0u64;
            while let Some(chunk) = response.chunk().await? {
                bytes += chunk.len() as u64;
                tokio::io::AsyncWriteExt::write_all(&mut out, &chunk).await?;
            }
            Ok(bytes)
        })
        .await?;
        export_hub.push(started.elapsed().as_secs_f64());
        export_peaks.push(peak);
        archive_bytes = bytes;

        // Import: the baseline, then the hub (into a fresh project each time).
        let _ = std::fs::remove_dir_all(&unzipped);
        std::fs::create_dir_all(&unzipped)?;
        import_unzip.push(
            timed(tokio::process::Command::new("unzip").arg("-q").arg(&exported).arg("-d").arg(&unzipped)).await?,
        );
        let target = ctx.create_project(hub, &format!("bench archive import {rep}")).await?;
        let body = std::fs::read(&exported)?;
        let started = Instant::now();
        let (answer, peak) = with_peak(hub, async {
            let response = ctx
                .http
                .post(hub.url(&format!("/v1/projects/{target}/archive?mode=replace")))
                .bearer_auth(&ctx.token)
                .header("content-type", "application/zip")
                .body(body)
                .timeout(Duration::from_secs(600))
                .send()
                .await?;
            let status = response.status();
            let answer: Value = response.json().await?;
            if !status.is_success() {
                bail!("import answered {status}: {answer}");
            }
            Ok(answer)
        })
        .await?;
        import_hub.push(started.elapsed().as_secs_f64());
        import_peaks.push(peak);
        let imported = answer["files"].as_array().map_or(0, Vec::len);
        if imported != files {
            bail!("import wrote {imported} files, not {files}");
        }
    }
    let median = |v: &[f64]| {
        let mut v = v.to_vec();
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    };
    let mib = |kib: &[u64]| (*kib.iter().max().unwrap_or(&0) as f64 / 1024.0 * 10.0).round() / 10.0;
    report.rows.push(
        Row::compared(
            format!("{label}: export wall, median"),
            V::ms(median(&export_zip) * 1000.0),
            V::ms(median(&export_hub) * 1000.0),
        )
        .goal(Goal::RatioAtMost(1.5)),
    );
    report.rows.push(
        Row::compared(
            format!("{label}: import wall, median"),
            V::ms(median(&import_unzip) * 1000.0),
            V::ms(median(&import_hub) * 1000.0),
        )
        .goal(Goal::RatioAtMost(5.0)),
    );
    report.rows.push(
        Row::alone(
            format!("{label}: hub peak RSS growth, export, MiB"),
            V::count(mib(&export_peaks)),
            "(VmHWM − VmRSS before)",
        )
        .goal(Goal::AtMost(64.0)),
    );
    report.rows.push(Row::alone(
        format!("{label}: hub peak RSS growth, import, MiB"),
        V::count(mib(&import_peaks)),
        "(VmHWM − VmRSS before)",
    ));
    let secs = |v: &[f64]| v.iter().map(|s| (s * 1000.0).round() / 1000.0).collect::<Vec<_>>();
    report.notes.push(format!(
        "{label}: export hub {:?} s, zip {:?} s; import hub {:?} s, unzip {:?} s; archive {archive_bytes} bytes; \
         peak RSS growth export {export_peaks:?} KiB, import {import_peaks:?} KiB; populating took {populate_secs:.1} s",
        secs(&export_hub),
        secs(&export_zip),
        secs(&import_hub),
        secs(&import_unzip),
    ));
    Ok(())
}
