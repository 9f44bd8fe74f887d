//! Snapshot build + store through the hub (`POST /v1/projects/{id}/snapshots`, local-disk
//! storage) for 1,000 files / 10 MB and 10,000 files / 100 MB, against `zip -r -1` of the
//! same files from disk, in the same run. Peak memory of the build: the hub's VmHWM, reset
//! just before each build (`echo 5 > /proc/PID/clear_refs`), minus its VmRSS then.

use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use serde_json::Value;
use synchub_protocol::{BulkRequest, BulkUpsert};

use super::Pending;
use crate::harness::{Ctx, Hub, Side, put_body};
use crate::procfs;
use crate::report::{Goal, Report, Row, Unit, Value as V};

pub fn run(ctx: &Ctx) -> Pending<'_> {
    Box::pin(measure(ctx))
}

struct Size {
    files: usize,
    file_bytes: usize,
}

async fn measure(ctx: &Ctx) -> anyhow::Result<Report> {
    let sizes: Vec<Size> = if ctx.quick {
        vec![Size { files: 200, file_bytes: 5_000 }]
    } else {
        vec![Size { files: 1_000, file_bytes: 10_000 }, Size { files: 10_000, file_bytes: 10_000 }]
    };
    let mut report = Report::new(
        "snapshot_build",
        "#5",
        "A project's files (source-like text: words from a small vocabulary, ~3× compressible) written through \
         the hub; then `POST /v1/projects/{id}/snapshots` (service token) builds the zip + manifest from the \
         database and stores it in the hub's local-disk storage (`SYNCHUB_STORAGE_DIR`). Wall time from request to \
         response. One file is rewritten (same size) before every build so each one is new, not reused.",
    );
    report.param(
        "sizes",
        sizes.iter().map(|s| format!("{} files × {} bytes", s.files, s.file_bytes)).collect::<Vec<_>>().join(", "),
    );
    report.param("pairs (hub build | zip), interleaved", ctx.pairs());
    let zip = which("zip").context("`zip` not found (apt-get install zip)")?;
    let hub = ctx.start_hub("snapshot_build").await?;
    let result = async {
        for size in &sizes {
            one_size(ctx, &hub, size, &mut report).await?;
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
    report.baseline = format!(
        "`{} -r -1 -q -X ../out.zip .` in a directory holding the same files (written just before, so they are in \
         the page cache), wall time; the output removed before each run; alternated with the hub's builds (ABAB…).",
        zip.display()
    );
    Ok(report)
}

pub fn which(program: &str) -> Option<std::path::PathBuf> {
    std::env::var_os("PATH")?.to_str()?.split(':').map(|d| Path::new(d).join(program)).find(|p| p.is_file())
}

/// Deterministic source-like text of `len` bytes.
pub fn content(seed: u64, len: usize) -> String {
    const WORDS: &[&str] = &[
        "const", "let", "function", "return", "import", "export", "from", "if", "else", "for", "while", "await",
        "async", "props", "state", "value", "index", "items", "result", "error", "true", "false", "null", "=>", "{",
        "}", "(", ")", ";", "=", "+", "user", "file", "path", "data", "config", "handler", "render", "type",
    ];
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let mut out = String::with_capacity(len + 16);
    let mut column = 0;
    while out.len() < len {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        let word = WORDS[(x % WORDS.len() as u64) as usize];
        out.push_str(word);
        column += word.len() + 1;
        if column > 60 || x.is_multiple_of(11) {
            out.push('\n');
            column = 0;
        } else {
            out.push(' ');
        }
        // Some identifiers with numbers, as real code has.
        if x.is_multiple_of(7) {
            out.push_str(&format!("v{} ", x % 1000));
        }
    }
    out.truncate(len);
    out
}

/// The baseline's build: `zip -r -1 -q -X` of `tree` into `out` (next to it); seconds.
pub async fn zip_tree(tree: &std::path::Path, out: &std::path::Path) -> anyhow::Result<f64> {
    let _ = std::fs::remove_file(out);
    let started = Instant::now();
    let status = tokio::process::Command::new("zip")
        .args(["-r", "-1", "-q", "-X"])
        .arg(out)
        .arg(".")
        .current_dir(tree)
        .status()
        .await?;
    let secs = started.elapsed().as_secs_f64();
    if !status.success() {
        bail!("zip failed: {status}");
    }
    Ok(secs)
}

pub fn file_path(i: usize) -> String {
    format!("src/dir{:02}/file{i:05}.ts", i % 50)
}

/// Writes `files` files of `file_bytes` bytes ([`content`] at [`file_path`]) through the hub
/// in bulk requests of 1,000 files, and the same files under `tree`; answers the seconds it
/// took.
pub async fn populate(
    ctx: &Ctx,
    hub: &Hub,
    project: uuid::Uuid,
    tree: &Path,
    files: usize,
    file_bytes: usize,
) -> anyhow::Result<f64> {
    let started = Instant::now();
    for batch in (0..files).collect::<Vec<_>>().chunks(1_000) {
        let mut upserts = Vec::with_capacity(batch.len());
        for &i in batch {
            let text = content(i as u64 + 1, file_bytes);
            let path = file_path(i);
            let on_disk = tree.join(&path);
            std::fs::create_dir_all(on_disk.parent().context("no parent")?)?;
            std::fs::write(&on_disk, &text)?;
            upserts.push(BulkUpsert { path, content: text, file_type: None, expected_version: None, blob: None });
        }
        let response = ctx
            .http
            .post(hub.url(&format!("/v1/projects/{project}/files:bulk")))
            .bearer_auth(&ctx.token)
            .json(&BulkRequest { upserts, ..BulkRequest::default() })
            .timeout(Duration::from_secs(300))
            .send()
            .await?;
        if !response.status().is_success() {
            let status = response.status();
            bail!("bulk write answered {status}: {}", response.text().await.unwrap_or_default());
        }
    }
    Ok(started.elapsed().as_secs_f64())
}

/// One block: the hub's build (subject) or `zip` (baseline).
#[derive(Default)]
struct Build {
    secs: f64,
    /// Subject: VmHWM − VmRSS before the build, KiB.
    peak_kib: u64,
    /// Subject: the snapshot's description.
    body: Value,
    /// Baseline: the zip's size.
    zip_bytes: u64,
}

async fn one_size(ctx: &Ctx, hub: &Hub, size: &Size, report: &mut Report) -> anyhow::Result<()> {
    let label = format!("{} files / {:.0} MB", size.files, (size.files * size.file_bytes) as f64 / 1e6);
    let project = ctx.create_project(hub, &format!("bench snapshot {label}")).await?;
    let dir = ctx.work.join(format!("snapshot-src-{}", size.files));
    let tree = dir.join("tree");
    std::fs::create_dir_all(&tree)?;
    let populate_secs = populate(ctx, hub, project, &tree, size.files, size.file_bytes).await?;

    // Interleaved: the hub's build (subject, after a new cursor) and `zip` of the same tree
    // (baseline), A B A B …
    let mut reset_failed = false;
    let blocks = ctx
        .interleave(ctx.pairs(), async |side, pair| match side {
            Side::Subject => {
                // A new cursor: rewrite file 0 (same size, new content) here and on disk.
                let text = content(1_000_000 + pair as u64, size.file_bytes);
                std::fs::write(tree.join(file_path(0)), &text)?;
                let response = ctx
                    .http
                    .put(hub.url(&format!("/v1/projects/{project}/files/{}", file_path(0))))
                    .bearer_auth(&ctx.token)
                    .json(&put_body(&text))
                    .send()
                    .await?;
                if !response.status().is_success() {
                    bail!("PUT answered {}", response.status());
                }
                let rss_before = hub.rss_kib()?;
                reset_failed |= std::fs::write(format!("/proc/{}/clear_refs", hub.pid), "5").is_err();
                let started = Instant::now();
                let response = ctx
                    .http
                    .post(hub.url(&format!("/v1/projects/{project}/snapshots")))
                    .bearer_auth(&ctx.service_token)
                    .timeout(Duration::from_secs(600))
                    .send()
                    .await?;
                let status = response.status();
                let body: Value = response.json().await?;
                let secs = started.elapsed().as_secs_f64();
                if status.as_u16() != 201 && !status.is_success() {
                    bail!("snapshot answered {status}: {body}");
                }
                if body["reused"] == true {
                    bail!("snapshot was reused, not built: {body}");
                }
                let peak_kib = procfs::status_kib(hub.pid, "VmHWM")?.saturating_sub(rss_before);
                Ok(Build { secs, peak_kib, body, zip_bytes: 0 })
            }
            Side::Baseline => {
                let out = dir.join("out.zip");
                let secs = zip_tree(&tree, &out).await?;
                let zip_bytes = std::fs::metadata(&out)?.len();
                Ok(Build { secs, zip_bytes, ..Build::default() })
            }
        })
        .await?;
    if reset_failed {
        report.notes.push("could not reset VmHWM (clear_refs): peak is since hub start".into());
    }
    let peaks: Vec<u64> = blocks.pairs.iter().map(|p| p.subject.peak_kib).collect();
    let peak = peaks.iter().copied().max().unwrap_or(0);
    let (last, zip_bytes) =
        blocks.pairs.last().map(|p| (p.subject.body.clone(), p.baseline.zip_bytes)).unwrap_or((Value::Null, 0));
    report.rows.push(
        blocks.row(format!("{label}: build + store wall"), Unit::Ms, |b| b.secs * 1000.0).goal(Goal::RatioAtMost(1.2)),
    );
    report.rows.push(
        Row::alone(
            format!("{label}: hub peak RSS growth during the build, MiB"),
            V::count((peak as f64 / 1024.0 * 10.0).round() / 10.0),
            "(VmHWM − VmRSS before)",
        )
        .goal(Goal::AtMost(64.0)),
    );
    report.notes.push(blocks.note(&format!("{label}: build + store, s (baseline: zip)"), |b| b.secs));
    report.notes.push(format!(
        "{label}: snapshot {} bytes ({} files in the manifest), zip {zip_bytes} bytes; peak RSS growth per build {:?} \
         KiB; populating through {} bulk requests took {populate_secs:.1} s",
        last["bytes"],
        last["file_count"],
        peaks,
        size.files.div_ceil(1_000),
    ));
    Ok(())
}
