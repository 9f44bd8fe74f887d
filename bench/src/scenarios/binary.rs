//! `binary_upload_hydrate` (issue 17): a project of images (random bytes, so nothing
//! compresses) uploaded through the hub's blob flow and hydrated by the container agent,
//! each against the same bytes moved directly to and from the signed storage URLs with
//! `curl` (what `aws s3 cp` does), measured in the same run and alternated.
//!
//! - Upload, hub: per file `POST …/blobs {sha256, size}` → `PUT` the bytes to the signed
//!   `upload_url` → `PUT …/files/{path} {blob}`, 8 files at a time (the sha256 is computed
//!   before the clock starts, as a client has it from reading the file).
//! - Upload, direct: the same number and size of (other) random files `PUT` with one
//!   `curl --parallel --parallel-max 8` to signed upload URLs obtained beforehand.
//! - Hydrate, agent: `POST …/sessions` (the snapshot, holding the binary files' bytes, is
//!   built before the clock starts and reused) → `synchub-agent` answers 200 on `/readyz`.
//! - Hydrate, direct: every file's signed `url` (from `GET …/files/{path}`, beforehand)
//!   fetched with one `curl --parallel --parallel-max 8` into an empty directory.

use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use futures_util::StreamExt;
use serde_json::{Value, json};
use tokio::process::Command;
use uuid::Uuid;

use super::Pending;
use super::agent::{Agent, create_session};
use crate::harness::{Ctx, Hub};
use crate::report::{Report, Row, Value as V};

pub fn run(ctx: &Ctx) -> Pending<'_> {
    Box::pin(binary_upload_hydrate(ctx))
}

/// Transfers in flight at once, for the hub flow and for curl alike.
const PARALLEL: usize = 8;

struct Size {
    files: usize,
    file_bytes: usize,
}

/// Random bytes (xorshift): images as far as compression is concerned.
fn random_bytes(len: usize, seed: u64) -> Vec<u8> {
    let mut state = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let mut out = Vec::with_capacity(len + 8);
    while out.len() < len {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        out.extend_from_slice(&state.to_le_bytes());
    }
    out.truncate(len);
    out
}

fn sha256_hex(bytes: &[u8]) -> String {
    use sha2::Digest;
    hex::encode(sha2::Sha256::digest(bytes))
}

fn image_path(i: usize) -> String {
    format!("public/img/{:02}/image-{i:04}.png", i % 20)
}

fn median(values: &[f64]) -> f64 {
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    sorted[sorted.len() / 2]
}

/// MiB/s of `bytes` moved in `secs`.
fn rate(bytes: usize, secs: f64) -> f64 {
    bytes as f64 / (1024.0 * 1024.0) / secs
}

async fn binary_upload_hydrate(ctx: &Ctx) -> anyhow::Result<Report> {
    let size = if ctx.quick {
        Size { files: 40, file_bytes: 20 * 1024 }
    } else {
        Size { files: 1_000, file_bytes: 200 * 1024 }
    };
    let reps = if ctx.quick { 1 } else { 3 };
    let total = size.files * size.file_bytes;
    let mut report = Report::new(
        "binary_upload_hydrate",
        "issue 17",
        "A project of binary files (random bytes, like images: nothing compresses). Upload: every file through the \
         hub's blob flow (`POST /v1/projects/{id}/blobs`, `PUT` to the signed `upload_url`, `PUT …/files/{path} \
         {blob}`), 8 files in flight. Hydrate: `POST …/sessions` (snapshot already built, holding the bytes) → \
         `synchub-agent` ready on `/readyz` (every file checked against its sha256 and renamed into place).",
    );
    report.param(
        "files",
        format!("{} × {} KiB = {:.1} MiB", size.files, size.file_bytes / 1024, total as f64 / (1024.0 * 1024.0)),
    );
    report.param("repetitions (median; hub and direct alternate which goes first)", reps);
    report.param("storage", "the hub's local-disk storage (signed `/v1/objects/…` URLs served by the hub)");
    if Command::new("curl").arg("--version").stdout(Stdio::null()).status().await.is_err() {
        bail!("`curl` not found");
    }
    let hub = ctx.start_hub("binary_upload_hydrate").await?;
    let result = measure(ctx, &hub, &size, reps, &mut report).await;
    let log = hub.log_lines();
    hub.stop().await;
    result?;
    if !log.is_empty() {
        report.notes.push(format!("the hub logged {} warning/error lines, first: `{}`", log.len(), log[0]));
    }
    report.baseline = "`curl --parallel --parallel-max 8` with one `-T FILE URL` (upload) or `-o FILE URL` (download) \
                       per file against signed storage URLs obtained from the hub beforehand (untimed): the bytes \
                       moved directly, as `aws s3 cp` of a directory would, without the hub's announce/reference \
                       calls, snapshot or checks."
        .into();
    Ok(report)
}

async fn measure(ctx: &Ctx, hub: &Hub, size: &Size, reps: usize, report: &mut Report) -> anyhow::Result<()> {
    let total = size.files * size.file_bytes;
    let project = ctx.create_project(hub, "bench binary").await?;
    let dir = ctx.work.join("binary");
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir)?;
    let (mut hub_up, mut direct_up) = (Vec::new(), Vec::new());
    for rep in 0..reps {
        // Fresh bytes every time, so the storage never already holds them.
        let hub_seed = 1_000 * rep as u64 + 1;
        let direct_seed = 1_000 * rep as u64 + 500;
        if rep % 2 == 0 {
            direct_up.push(direct_upload(ctx, hub, project, size, direct_seed, &dir).await?);
            hub_up.push(hub_upload(ctx, hub, project, size, hub_seed).await?);
        } else {
            hub_up.push(hub_upload(ctx, hub, project, size, hub_seed).await?);
            direct_up.push(direct_upload(ctx, hub, project, size, direct_seed, &dir).await?);
        }
    }
    // The project now holds the last rep's files; the snapshot is built once, untimed.
    let built = ctx
        .http
        .post(hub.url(&format!("/v1/projects/{project}/snapshots")))
        .bearer_auth(&ctx.service_token)
        .timeout(Duration::from_secs(900))
        .send()
        .await?;
    let built_status = built.status();
    let built: Value = built.json().await?;
    if !built_status.is_success() {
        bail!("building the snapshot answered {built_status}: {built}");
    }
    let urls = file_urls(ctx, hub, project, size.files).await?;
    let (mut agent_down, mut direct_down) = (Vec::new(), Vec::new());
    for rep in 0..reps {
        if rep % 2 == 0 {
            direct_down.push(direct_download(&urls, &dir.join("direct"), size).await?);
            agent_down.push(agent_hydrate(ctx, hub, project, &dir.join("agent"), size, rep).await?);
        } else {
            agent_down.push(agent_hydrate(ctx, hub, project, &dir.join("agent"), size, rep).await?);
            direct_down.push(direct_download(&urls, &dir.join("direct"), size).await?);
        }
    }
    let _ = std::fs::remove_dir_all(&dir);

    let label = format!("{} files / {:.1} MiB", size.files, total as f64 / (1024.0 * 1024.0));
    report.rows.push(Row::compared(
        format!("{label}: upload (hub blob flow vs direct curl PUT), median"),
        V::ms(median(&direct_up) * 1000.0),
        V::ms(median(&hub_up) * 1000.0),
    ));
    report.rows.push(Row::compared(
        format!("{label}: hydrate (sessions → agent /readyz vs direct curl GET), median"),
        V::ms(median(&direct_down) * 1000.0),
        V::ms(median(&agent_down) * 1000.0),
    ));
    let ms = |v: &[f64]| v.iter().map(|s| (s * 1000.0).round()).collect::<Vec<_>>();
    report.notes.push(format!(
        "{label}: upload hub {:?} ms ({:.1} MiB/s median), direct {:?} ms ({:.1} MiB/s); hydrate agent {:?} ms \
         ({:.1} MiB/s), direct {:?} ms ({:.1} MiB/s); snapshot {} bytes",
        ms(&hub_up),
        rate(total, median(&hub_up)),
        ms(&direct_up),
        rate(total, median(&direct_up)),
        ms(&agent_down),
        rate(total, median(&agent_down)),
        ms(&direct_down),
        rate(total, median(&direct_down)),
        built["bytes"],
    ));
    Ok(())
}

/// `POST …/blobs`: the signed upload URL, or None when the hub holds the bytes already.
async fn announce(ctx: &Ctx, hub: &Hub, project: Uuid, sha256: &str, size: usize) -> anyhow::Result<Option<String>> {
    let response = ctx
        .http
        .post(hub.url(&format!("/v1/projects/{project}/blobs")))
        .bearer_auth(&ctx.token)
        .json(&json!({"sha256": sha256, "size": size}))
        .send()
        .await?;
    let status = response.status();
    let body: Value = response.json().await?;
    if !status.is_success() {
        bail!("POST blobs answered {status}: {body}");
    }
    if body["exists"] == true {
        return Ok(None);
    }
    Ok(Some(body["upload_url"].as_str().with_context(|| format!("no upload_url in {body}"))?.to_owned()))
}

/// The hub flow for every file, [`PARALLEL`] at a time; seconds.
async fn hub_upload(ctx: &Ctx, hub: &Hub, project: Uuid, size: &Size, seed: u64) -> anyhow::Result<f64> {
    let files: Vec<(String, Vec<u8>, String)> = (0..size.files)
        .map(|i| {
            let bytes = random_bytes(size.file_bytes, seed * 100_000 + i as u64);
            let sha = sha256_hex(&bytes);
            (image_path(i), bytes, sha)
        })
        .collect();
    let started = Instant::now();
    let results: Vec<anyhow::Result<()>> =
        futures_util::stream::iter(files.into_iter().map(|(path, bytes, sha)| async move {
            let len = bytes.len();
            if let Some(url) = announce(ctx, hub, project, &sha, len).await? {
                let put = ctx.http.put(&url).body(bytes).send().await?;
                if !put.status().is_success() {
                    bail!("upload of {path} answered {}", put.status());
                }
            }
            let response = ctx
                .http
                .put(hub.url(&format!("/v1/projects/{project}/files/{path}")))
                .bearer_auth(&ctx.token)
                .json(&json!({"blob": {"sha256": sha, "size": len}}))
                .send()
                .await?;
            if !response.status().is_success() {
                let status = response.status();
                bail!("PUT {path} {{blob}} answered {status}: {}", response.text().await.unwrap_or_default());
            }
            Ok(())
        }))
        .buffer_unordered(PARALLEL)
        .collect()
        .await;
    let secs = started.elapsed().as_secs_f64();
    results.into_iter().collect::<anyhow::Result<Vec<()>>>()?;
    Ok(secs)
}

/// The same amount of fresh bytes `PUT` straight to signed upload URLs by one curl; seconds.
async fn direct_upload(ctx: &Ctx, hub: &Hub, project: Uuid, size: &Size, seed: u64, dir: &Path) -> anyhow::Result<f64> {
    let up = dir.join("upload");
    let _ = std::fs::remove_dir_all(&up);
    std::fs::create_dir_all(&up)?;
    let mut config = String::new();
    for i in 0..size.files {
        let bytes = random_bytes(size.file_bytes, seed * 100_000 + i as u64);
        let url = announce(ctx, hub, project, &sha256_hex(&bytes), bytes.len())
            .await?
            .context("the storage already held fresh random bytes")?;
        let file = up.join(format!("{i}.bin"));
        std::fs::write(&file, &bytes)?;
        config.push_str(&format!("upload-file = \"{}\"\nurl = \"{url}\"\noutput = \"/dev/null\"\n", file.display()));
    }
    let secs = curl(&config, &dir.join("upload.curl")).await?;
    std::fs::remove_dir_all(&up)?;
    Ok(secs)
}

/// Every file's signed `url` (`GET …/files/{path}`), gathered before any timing.
async fn file_urls(ctx: &Ctx, hub: &Hub, project: Uuid, files: usize) -> anyhow::Result<Vec<String>> {
    let mut urls = Vec::with_capacity(files);
    for i in 0..files {
        let path = image_path(i);
        let response = ctx
            .http
            .get(hub.url(&format!("/v1/projects/{project}/files/{path}")))
            .bearer_auth(&ctx.token)
            .send()
            .await?;
        let body: Value = response.json().await?;
        urls.push(body["url"].as_str().with_context(|| format!("no url for {path}: {body}"))?.to_owned());
    }
    Ok(urls)
}

/// One curl for every URL into an empty directory; seconds.
async fn direct_download(urls: &[String], dir: &Path, size: &Size) -> anyhow::Result<f64> {
    let _ = std::fs::remove_dir_all(dir);
    std::fs::create_dir_all(dir)?;
    let mut config = String::new();
    for (i, url) in urls.iter().enumerate() {
        config.push_str(&format!("url = \"{url}\"\noutput = \"{}\"\n", dir.join(format!("{i}.png")).display()));
    }
    let secs = curl(&config, &dir.with_extension("curl")).await?;
    let got: u64 = std::fs::read_dir(dir)?.flatten().filter_map(|e| e.metadata().ok()).map(|m| m.len()).sum();
    if got != (size.files * size.file_bytes) as u64 {
        bail!("curl fetched {got} bytes, {} expected", size.files * size.file_bytes);
    }
    Ok(secs)
}

/// Runs curl on a config file of transfers, [`PARALLEL`] at a time; seconds.
async fn curl(config: &str, config_path: &Path) -> anyhow::Result<f64> {
    std::fs::write(config_path, config)?;
    let started = Instant::now();
    let status = Command::new("curl")
        .args(["--no-progress-meter", "--show-error", "--fail", "--parallel", "--parallel-max", &PARALLEL.to_string()])
        .arg("--config")
        .arg(config_path)
        .stdout(Stdio::null())
        .status()
        .await?;
    let secs = started.elapsed().as_secs_f64();
    if !status.success() {
        bail!("curl failed: {status}");
    }
    Ok(secs)
}

/// Sessions call → the agent ready, into an empty directory; seconds.
async fn agent_hydrate(
    ctx: &Ctx,
    hub: &Hub,
    project: Uuid,
    dir: &Path,
    size: &Size,
    rep: usize,
) -> anyhow::Result<f64> {
    let _ = std::fs::remove_dir_all(dir);
    std::fs::create_dir_all(dir)?;
    let started = Instant::now();
    let session = create_session(ctx, hub, project).await?;
    let mut agent = Agent::start(ctx, &session, dir, None, &format!("binary-{rep}"))?;
    let ready = agent.wait_ready(ctx, Duration::from_secs(600)).await;
    let secs = started.elapsed().as_secs_f64();
    agent.stop().await;
    ready?;
    let first = std::fs::read(dir.join(image_path(0))).context("the agent's tree lacks the first image")?;
    if first.len() != size.file_bytes {
        bail!("the agent wrote {} bytes for {}, {} expected", first.len(), image_path(0), size.file_bytes);
    }
    Ok(secs)
}
