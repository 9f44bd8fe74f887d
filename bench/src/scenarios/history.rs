//! Issue 18 (CONTRACT section 14): what file history costs. Two databases on the run's
//! PostgreSQL, each with its own hub: one with history compaction off (the baseline: every
//! version stored in full, as before), one with it on (the background task stores
//! superseded versions as Fossil deltas; checkpoint every 50 versions).
//! - database bytes added by 1,000 one-character autosaves of a 100 KB file, and by 1,000
//!   rewrites with unrelated content (relation size of `project_files` with its TOAST and
//!   indexes, after `VACUUM FULL`, and as left by the writes; plus the quota-counted bytes);
//! - read latency of a version 1, 100 and 999 saves back (baseline: reading the current file);
//! - write latency with compaction on vs off, alternated in blocks.

use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use uuid::Uuid;

use super::Pending;
use crate::harness::{Ctx, Hub};
use crate::report::{Goal, Report, Row, Value as V};
use crate::stats::Latencies;

pub fn run(ctx: &Ctx) -> Pending<'_> {
    Box::pin(measure(ctx))
}

/// Deterministic source-like text of about `size` bytes; `seed` varies it.
fn source_text(size: usize, seed: u64) -> String {
    let mut out = String::with_capacity(size + 80);
    let mut state = seed.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1_442_695_040_888_963_407);
    let mut line = 0u64;
    while out.len() < size {
        state = state.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1_442_695_040_888_963_407);
        out.push_str(&format!(
            "export function f{line}_{:x}(a: number): number {{ return a * {} + {}; }}\n",
            state >> 40,
            (state >> 20) % 997,
            (state >> 8) % 10_007
        ));
        line += 1;
    }
    out
}

struct Side {
    label: &'static str,
    compaction: bool,
    db: String,
    hub: Hub,
    project: Uuid,
}

async fn client(ctx: &Ctx, db: &str) -> anyhow::Result<tokio_postgres::Client> {
    let (client, connection) = tokio_postgres::connect(&ctx.pg.url(db), tokio_postgres::NoTls).await?;
    tokio::spawn(connection);
    Ok(client)
}

/// `project_files` with its TOAST table and indexes, in bytes.
async fn table_bytes(ctx: &Ctx, db: &str) -> anyhow::Result<i64> {
    let client = client(ctx, db).await?;
    Ok(client.query_one("SELECT pg_total_relation_size('synchub.project_files')", &[]).await?.try_get(0)?)
}

async fn compacted_bytes(ctx: &Ctx, db: &str) -> anyhow::Result<i64> {
    client(ctx, db).await?.batch_execute("VACUUM FULL synchub.project_files").await?;
    table_bytes(ctx, db).await
}

async fn counted_bytes(ctx: &Ctx, db: &str) -> anyhow::Result<i64> {
    let client = client(ctx, db).await?;
    Ok(client
        .query_one("SELECT coalesce(sum(stored_bytes), 0)::bigint FROM synchub.user_usage", &[])
        .await?
        .try_get(0)?)
}

/// Waits (bounded) until the history task has nothing left to compact (with compaction on).
async fn settled(ctx: &Ctx, side: &Side) -> anyhow::Result<()> {
    if !side.compaction {
        return Ok(());
    }
    let client = client(ctx, &side.db).await?;
    let deadline = Instant::now() + Duration::from_secs(600);
    loop {
        let pending: i64 = client
            .query_one(
                "SELECT count(*) FROM synchub.project_files
                 WHERE NOT is_current_version AND NOT compacted AND content IS NOT NULL",
                &[],
            )
            .await?
            .try_get(0)?;
        if pending == 0 {
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!("history compaction did not finish in 10 minutes ({pending} versions left)");
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// PUTs `content` and answers the latency.
async fn put(ctx: &Ctx, side: &Side, path: &str, content: &str) -> anyhow::Result<Duration> {
    let start = Instant::now();
    ctx.put_file(&side.hub, side.project, path, content).await?;
    Ok(start.elapsed())
}

/// One-character autosaves: each save inserts one character at a moving position.
fn autosave(text: &mut String, i: usize) {
    let mut at = (i * 7_919) % text.len();
    while !text.is_char_boundary(at) {
        at -= 1;
    }
    text.insert(at, char::from(b'a' + (i % 26) as u8));
}

async fn get_ms(ctx: &Ctx, hub: &Hub, url: &str) -> anyhow::Result<f64> {
    let start = Instant::now();
    let response = ctx.http.get(hub.url(url)).bearer_auth(&ctx.token).send().await?;
    if !response.status().is_success() {
        bail!("GET {url} answered {}", response.status());
    }
    response.bytes().await?;
    Ok(start.elapsed().as_secs_f64() * 1000.0)
}

async fn measure(ctx: &Ctx) -> anyhow::Result<Report> {
    let saves: usize = if ctx.quick { 120 } else { 1_000 };
    let size: usize = if ctx.quick { 20_000 } else { 100_000 };
    let rewrites: usize = if ctx.quick { 50 } else { 1_000 };
    let reads: usize = if ctx.quick { 20 } else { 200 };
    let mut report = Report::new(
        "history",
        "issue 18",
        "File history storage (CONTRACT 14). Two databases of the run's PostgreSQL, one hub each: compaction off \
         (the baseline: every version in full, as before V3) and on (the history task turns superseded versions \
         into Fossil deltas against the next newer version, a full checkpoint every 50; it runs every 200 ms). \
         Bytes: `pg_total_relation_size('synchub.project_files')` (table + TOAST + indexes) added by the saves, \
         after `VACUUM FULL` (what the data occupies) and as the writes left it (dead tuples of compacted rows \
         included, until vacuum reuses their space).",
    );
    report.param("autosaves", saves);
    report.param("file size", format!("{} KB", size / 1000));
    report.param("unrelated rewrites", rewrites);
    let mut sides = Vec::new();
    for (label, compaction) in [("off", "false"), ("on", "true")] {
        let db = format!("history_{label}");
        client(ctx, "postgres").await?.batch_execute(&format!("CREATE DATABASE {db}")).await?;
        let hub = ctx
            .start_hub_with(
                &format!("history-{label}"),
                &[
                    ("DATABASE_URL", ctx.pg.url(&db)),
                    ("SYNCHUB_HISTORY_COMPACTION", compaction.to_string()),
                    ("SYNCHUB_HISTORY_INTERVAL_MS", "200".to_string()),
                ],
            )
            .await?;
        let project = ctx.create_project(&hub, &format!("history {label}")).await?;
        sides.push(Side { label, compaction: compaction == "true", db, hub, project });
    }

    // 1. Autosaves of one file, then unrelated rewrites of another.
    let mut autosave_added = Vec::new();
    let mut rewrite_added = Vec::new();
    let mut as_written = Vec::new();
    let mut counted = Vec::new();
    let mut texts = Vec::new();
    for side in &sides {
        let start = compacted_bytes(ctx, &side.db).await?;
        let mut text = source_text(size, 1);
        texts.clear();
        for i in 0..saves {
            autosave(&mut text, i);
            put(ctx, side, "src/autosave.ts", &text).await?;
            let version = i + 1;
            if [1usize, 100, 999].iter().any(|back| saves.checked_sub(*back) == Some(version)) {
                texts.push((version, text.clone()));
            }
        }
        settled(ctx, side).await?;
        as_written.push(table_bytes(ctx, &side.db).await? - start);
        let after_saves = compacted_bytes(ctx, &side.db).await?;
        autosave_added.push(after_saves - start);
        counted.push(counted_bytes(ctx, &side.db).await?);
        for i in 0..rewrites {
            put(ctx, side, "src/rewrite.ts", &source_text(size, 1_000 + i as u64)).await?;
        }
        settled(ctx, side).await?;
        rewrite_added.push(compacted_bytes(ctx, &side.db).await? - after_saves);
    }
    let kib = |b: i64| V::kib(b as f64 / 1024.0);
    report.rows.push(
        Row::compared(
            format!("bytes added by {saves} one-character autosaves (after VACUUM FULL)"),
            kib(autosave_added[0]),
            kib(autosave_added[1]),
        )
        .goal(Goal::AtMost(if ctx.quick { 2048.0 * size as f64 / 100_000.0 } else { 2048.0 })),
    );
    report.rows.push(Row::compared(
        format!("bytes added by {saves} autosaves, as the writes left the table (no vacuum)"),
        kib(as_written[0]),
        kib(as_written[1]),
    ));
    report.rows.push(Row::compared(
        format!("quota-counted stored bytes after {saves} autosaves"),
        kib(counted[0]),
        kib(counted[1]),
    ));
    report.rows.push(Row::compared(
        format!("bytes added by {rewrites} rewrites with unrelated content (after VACUUM FULL)"),
        kib(rewrite_added[0]),
        kib(rewrite_added[1]),
    ));

    // 2. Read latency of old versions (compaction on) vs reading the current file.
    let on = &sides[1];
    let path = format!("/v1/projects/{}/files/src/autosave.ts", on.project);
    let mut current = Latencies::default();
    for _ in 0..reads {
        current.record_us((get_ms(ctx, &on.hub, &path).await? * 1000.0) as u64);
    }
    for back in [1usize, 100, 999] {
        let Some(version) = saves.checked_sub(back) else { continue };
        if version == 0 {
            continue;
        }
        let url = format!("{path}?version={version}");
        // Check the content once, then time.
        let response: serde_json::Value =
            ctx.http.get(on.hub.url(&url)).bearer_auth(&ctx.token).send().await?.json().await?;
        if let Some((_, expected)) = texts.iter().find(|(v, _)| *v == version)
            && response["content"].as_str() != Some(expected.as_str())
        {
            bail!("version {version} did not read back identical");
        }
        let mut latencies = Latencies::default();
        for _ in 0..reads {
            latencies.record_us((get_ms(ctx, &on.hub, &url).await? * 1000.0) as u64);
        }
        report.rows.push(
            Row::compared(
                format!("read p99 of the version {back} save(s) back (baseline: current file)"),
                V::ms(current.ms(0.99)),
                V::ms(latencies.ms(0.99)),
            )
            .goal(Goal::AtMost(10.0)),
        );
    }

    // 3. Write latency, compaction on vs off, alternated in blocks of 50 autosaves.
    let blocks = if ctx.quick { 2 } else { 10 };
    let mut write = [Latencies::default(), Latencies::default()];
    let mut texts = [source_text(size, 9), source_text(size, 9)];
    for block in 0..blocks {
        for (s, side) in sides.iter().enumerate() {
            for i in 0..50 {
                autosave(&mut texts[s], block * 50 + i);
                let took = put(ctx, side, "src/latency.ts", &texts[s]).await?;
                write[s].record_us(took.as_micros() as u64);
            }
        }
    }
    for q in [0.5, 0.99] {
        report.rows.push(
            Row::compared(
                format!(
                    "write latency p{}, {} KB autosave (baseline: compaction off)",
                    (q * 100.0) as u32,
                    size / 1000
                ),
                V::ms(write[0].ms(q)),
                V::ms(write[1].ms(q)),
            )
            .goal(Goal::RatioAtMost(1.1)),
        );
    }
    let mut notes = Vec::new();
    for side in sides {
        let log = side.hub.log_lines();
        if !log.is_empty() {
            notes.push(format!("the {} hub logged {} warning/error lines, first: `{}`", side.label, log.len(), log[0]));
        }
        side.hub.stop().await;
        client(ctx, "postgres")
            .await?
            .batch_execute(&format!("DROP DATABASE IF EXISTS {} WITH (FORCE)", side.db))
            .await
            .context("dropping the history bench database")?;
    }
    report.notes.extend(notes);
    Ok(report)
}
