//! File history (CONTRACT section 14): the versions of a file, reading one, restoring one,
//! and the background task that keeps history's cost bounded.
//!
//! Storage (migrations/V3__file_history.sql): a write stores its version in full, as
//! before, so the write path does not change. Every hub runs [`run`]: per file, under a
//! per-file advisory lock (one hub at a time; the others skip it), it
//! - trims versions retention no longer keeps (every version for `keep_all`, then the
//!   newest of each hour, then of each day; never the current version, nor one a GitHub
//!   base or a snapshot refers to): the row stays, without bytes, so reads answer 410;
//! - stores superseded versions as reverse Fossil deltas against the next newer kept
//!   version, with a full checkpoint so that no version is more than
//!   `checkpoint_every - 1` deltas away from a full text ([`plan`]);
//! - gives the bytes it freed back to the owner's quota.

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use axum::Json;
use axum::extract::State;
use chrono::{DateTime, Utc};
use serde_json::Value;
use synchub_protocol::{FileReadQuery, FileResponse, FileVersionsResponse, PutFileResponse, RestoreFileRequest};
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use crate::app::AppState;
use crate::auth::policy::Actor;
use crate::config::HistoryConfig;
use crate::db::{Db, RowExt};
use crate::error::ApiError;
use crate::extract::JsonBody;
use crate::metrics::HistoryMetrics;

type ApiResult<T> = Result<Json<T>, ApiError>;

fn json_number(value: Option<synchub_protocol::SafeU64>) -> Value {
    value.map_or(Value::Null, |v| Value::from(v.get()))
}

/// `GET …/files/{path}/versions`: newest first, paged with `before`.
pub async fn versions(
    state: &AppState,
    actor: &Actor,
    path: &str,
    query: &FileReadQuery,
) -> Result<FileVersionsResponse, ApiError> {
    let id = actor.project()?;
    let (before, limit) = (json_number(query.before), json_number(query.limit));
    state
        .db
        .typed(
            actor.db(),
            "SELECT synchub.list_file_versions($1, $2, $3, $4, $5)",
            &[&id, &actor.name(), &path, &before, &limit],
        )
        .await
}

/// `GET …/files/{path}?version=N`: that version, rebuilt from its delta chain.
pub async fn read_version(
    state: &AppState,
    actor: &Actor,
    path: &str,
    version: synchub_protocol::SafeU64,
) -> Result<FileResponse, ApiError> {
    let id = actor.project()?;
    let version = Value::from(version.get());
    let rows = state
        .db
        .query(
            actor.db(),
            "SELECT meta, content, delta FROM synchub.file_version_chain($1, $2, $3, $4)",
            &[&id, &actor.name(), &path, &version],
        )
        .await?;
    let first = rows.first().ok_or_else(|| ApiError::internal("file_version_chain returned no row"))?;
    let meta: Value = first.column("meta")?;
    let text = |key: &str| meta.get(key).and_then(Value::as_str).map(str::to_string).unwrap_or_default();
    let number = |key: &str| meta.get(key).and_then(Value::as_i64).unwrap_or_default();
    if let Some(blob) = meta.get("blob") {
        // A binary version: its blob and a signed URL, as a read of a current binary file.
        let blob: synchub_protocol::BlobRef = serde_json::from_value(blob.clone()).map_err(ApiError::internal)?;
        let url = crate::blobs::download_url(state, &blob.sha256).await?;
        return Ok(FileResponse {
            path: text("path"),
            file_type: text("file_type"),
            content: None,
            content_hash: text("content_hash"),
            version: number("version"),
            size: number("size"),
            updated_at: text("updated_at"),
            binary: true,
            blob: Some(blob),
            url: Some(url.url),
            url_expires_at: Some(url.expires_at.to_rfc3339_opts(chrono::SecondsFormat::Millis, true)),
        });
    }
    let mut deltas = Vec::new();
    let mut base = None;
    for row in &rows {
        if let Some(content) = row.column::<Option<String>>("content")? {
            base = Some(content.into_bytes());
            break;
        }
        let delta: Option<Vec<u8>> = row.column("delta")?;
        deltas.push(delta.ok_or_else(|| ApiError::internal("a version's delta chain is broken"))?);
    }
    let base = base.ok_or_else(|| ApiError::internal("a version's delta chain has no full text"))?;
    let content = rebuild(base, deltas.iter().rev()).map_err(ApiError::internal)?;
    Ok(FileResponse {
        path: text("path"),
        file_type: text("file_type"),
        content: Some(String::from_utf8(content).map_err(ApiError::internal)?),
        content_hash: text("content_hash"),
        version: number("version"),
        size: number("size"),
        updated_at: text("updated_at"),
        binary: false,
        blob: None,
        url: None,
        url_expires_at: None,
    })
}

/// Applies `deltas` (each against the result of the one before) to `base`.
fn rebuild<'a>(base: Vec<u8>, mut deltas: impl Iterator<Item = &'a Vec<u8>>) -> Result<Vec<u8>, String> {
    deltas.try_fold(base, |text, delta| {
        // The checked apply: the crate's own panics on malformed input.
        synchub_protocol::delta::apply(&text, delta)
            .map_err(|err| format!("a stored history delta does not apply: {err}"))
    })
}

/// `POST /v1/projects/{id}/files:restore`.
pub async fn restore(
    State(state): State<AppState>,
    actor: Actor,
    JsonBody(body): JsonBody<RestoreFileRequest>,
) -> ApiResult<PutFileResponse> {
    let id = actor.project()?;
    crate::files::checked_path(&body.path)?;
    state.limiter.check(&actor.rate_key(), 1.0)?;
    let version = Value::from(body.version.get());
    let expected = json_number(body.expected_version);
    let answer: PutFileResponse = state
        .db
        .typed(
            actor.db(),
            "SELECT synchub.restore_file_version($1, $2, $3, $4, $5, $6)",
            &[&id, &body.path, &version, &expected, &actor.name(), &body.op_id],
        )
        .await?;
    state.committed(id);
    Ok(Json(answer))
}

// ---------------------------------------------------------------------------------------
// The background task.

/// One version row as the task sees it (`synchub.history_file_rows`).
#[derive(Clone, Debug, Default)]
pub struct VersionRow {
    pub id: i64,
    pub version: i32,
    pub created_at: DateTime<Utc>,
    pub is_current: bool,
    pub is_deleted: bool,
    pub trimmed: bool,
    pub content: Option<String>,
    pub delta: Option<Vec<u8>>,
    pub delta_base_id: Option<i64>,
    pub compacted: bool,
    pub retention_tier: i16,
    pub protected: bool,
}

impl VersionRow {
    fn has_text(&self) -> bool {
        !self.is_deleted && !self.trimmed && (self.content.is_some() || self.delta.is_some())
    }

    fn is_binary(&self) -> bool {
        !self.is_deleted && !self.trimmed && self.content.is_none() && self.delta.is_none()
    }
}

/// How a kept text version is to be stored.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Layout {
    /// A delta against `base` (the next newer kept version).
    Delta { base: i64 },
    /// In full; `rebuild`: its text must be written (it is a delta now).
    Full { rebuild: bool },
}

/// What one pass does to a file.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Plan {
    pub trim: HashSet<i64>,
    /// (id, retention step survived)
    pub tiers: Vec<(i64, i16)>,
    pub layout: HashMap<i64, Layout>,
}

impl Plan {
    fn is_empty(&self) -> bool {
        self.trim.is_empty() && self.tiers.is_empty() && self.layout.is_empty()
    }
}

/// Decides retention and storage for one file's rows (newest first). Pure: only metadata.
pub fn plan(rows: &[VersionRow], now: DateTime<Utc>, config: &HistoryConfig) -> Plan {
    let mut plan = Plan::default();
    if config.keep_all_secs > 0 {
        retention(rows, now, config, &mut plan);
    }
    layout(rows, config, &mut plan);
    plan
}

fn retention(rows: &[VersionRow], now: DateTime<Utc>, config: &HistoryConfig, plan: &mut Plan) {
    const HOUR: i64 = 3_600;
    const DAY: i64 = 86_400;
    // The survivor of each hour and each day: its newest version, whatever became of it.
    let mut newest: HashMap<(i64, i64), i32> = HashMap::new();
    for row in rows {
        for span in [HOUR, DAY] {
            let slot = newest.entry((span, row.created_at.timestamp().div_euclid(span))).or_insert(row.version);
            *slot = (*slot).max(row.version);
        }
    }
    let keep_all = i64::try_from(config.keep_all_secs).unwrap_or(i64::MAX);
    let hourly = i64::try_from(config.hourly_secs).unwrap_or(i64::MAX).max(keep_all);
    for row in rows.iter().filter(|r| !r.is_current && !r.trimmed) {
        let age = (now - row.created_at).num_seconds();
        if age < keep_all {
            continue;
        }
        let (span, tier) = if age < hourly { (HOUR, 1) } else { (DAY, 2) };
        let survivor = newest.get(&(span, row.created_at.timestamp().div_euclid(span))) == Some(&row.version);
        // Binary versions keep their blob reference: they are not trimmed here.
        if survivor || row.protected || row.is_binary() {
            if row.retention_tier < tier {
                plan.tiers.push((row.id, tier));
            }
        } else {
            plan.trim.insert(row.id);
        }
    }
}

fn layout(rows: &[VersionRow], config: &HistoryConfig, plan: &mut Plan) {
    let run_max = config.checkpoint_every.max(1) as usize;
    let kept: Vec<&VersionRow> = rows.iter().filter(|r| r.has_text() && !plan.trim.contains(&r.id)).collect();
    // A row is settled when it is compacted and, if a delta, still based on its newer
    // neighbour (a trim of its base unsettles it).
    let settled: Vec<bool> = kept
        .iter()
        .enumerate()
        .map(|(i, row)| {
            row.compacted
                && match row.delta_base_id {
                    Some(base) => row.delta.is_some() && i > 0 && kept[i - 1].id == base,
                    None => row.delta.is_none(),
                }
        })
        .collect();
    // Position in its run (1 = the full row heading it) of the row above.
    let mut above_pos = 0usize;
    for (i, row) in kept.iter().enumerate() {
        let pos;
        if i == 0 || row.is_current {
            // The newest text version has nothing newer to be a delta of.
            if !row.is_current && (row.delta.is_some() || (!row.compacted && config.compaction)) {
                plan.layout.insert(row.id, Layout::Full { rebuild: row.delta.is_some() });
            }
            pos = 1;
        } else if settled[i] {
            pos = if row.delta.is_some() { above_pos + 1 } else { 1 };
        } else if row.delta.is_none() && !row.compacted && !config.compaction {
            pos = 1;
        } else {
            // Deltas below that are rebuilt through this row lengthen its chain.
            let below = kept[i + 1..]
                .iter()
                .zip(&settled[i + 1..])
                .take_while(|(r, settled)| **settled && r.delta.is_some())
                .count();
            if config.compaction && above_pos + 1 + below <= run_max {
                plan.layout.insert(row.id, Layout::Delta { base: kept[i - 1].id });
                pos = above_pos + 1;
            } else {
                plan.layout.insert(row.id, Layout::Full { rebuild: row.delta.is_some() });
                pos = 1;
            }
        }
        above_pos = pos;
    }
}

/// Counters of one pass, for the metrics.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Outcome {
    pub removed_versions: u64,
    pub compacted_versions: u64,
    /// Stored bytes given back (compaction and retention).
    pub freed_bytes: i64,
}

/// Runs one file's history work in one transaction. Answers None when another hub holds
/// the file's lock.
pub async fn maintain_file(
    db: &Db,
    project: Uuid,
    path: &str,
    config: &HistoryConfig,
) -> anyhow::Result<Option<Outcome>> {
    let mut client = db.pool().get().await?;
    let tx = client.transaction().await?;
    let locked: bool =
        tx.query_one("SELECT synchub.history_lock_file($1, $2)", &[&project, &path]).await?.try_get(0)?;
    if !locked {
        return Ok(None);
    }
    let mut rows = Vec::new();
    for row in tx.query("SELECT * FROM synchub.history_file_rows($1, $2)", &[&project, &path]).await? {
        rows.push(VersionRow {
            id: row.try_get("id")?,
            version: row.try_get("version")?,
            created_at: row.try_get("created_at")?,
            is_current: row.try_get("is_current")?,
            is_deleted: row.try_get("is_deleted")?,
            trimmed: row.try_get("trimmed")?,
            content: row.try_get("content")?,
            delta: row.try_get("delta")?,
            delta_base_id: row.try_get("delta_base_id")?,
            compacted: row.try_get("compacted")?,
            retention_tier: row.try_get("retention_tier")?,
            protected: row.try_get("protected")?,
        });
    }
    let plan = plan(&rows, Utc::now(), config);
    let mut outcome = Outcome::default();
    if plan.is_empty() {
        tx.commit().await?;
        return Ok(Some(outcome));
    }
    // Walk the text versions newest first, rebuilding each from the one above it (its
    // delta base), as far down as the plan changes anything.
    let text_rows: Vec<&VersionRow> = rows.iter().filter(|r| r.has_text()).collect();
    let last_change = text_rows
        .iter()
        .rposition(|r| plan.trim.contains(&r.id) || plan.layout.contains_key(&r.id))
        .map_or(0, |i| i + 1);
    let mut above: Option<(i64, std::sync::Arc<Vec<u8>>)> = None;
    let mut kept_above: Option<(i64, std::sync::Arc<Vec<u8>>)> = None;
    let mut freed = 0i64;
    for row in &text_rows[..last_change] {
        let text = match (&row.content, &row.delta, &above) {
            (Some(content), _, _) => std::sync::Arc::new(content.clone().into_bytes()),
            (None, Some(delta), Some((base_id, base))) if row.delta_base_id == Some(*base_id) => std::sync::Arc::new(
                synchub_protocol::delta::apply(base.as_slice(), delta)
                    .map_err(|e| anyhow::anyhow!("version {} of {path}: its delta does not apply: {e}", row.version))?,
            ),
            _ => anyhow::bail!("version {} of {path}: its delta base is not the version above it", row.version),
        };
        if plan.trim.contains(&row.id) {
            freed += trim(&tx, project, row.id).await?;
            outcome.removed_versions += 1;
        } else {
            match plan.layout.get(&row.id) {
                Some(Layout::Delta { base }) => {
                    let (kept_id, kept_text) =
                        kept_above.as_ref().ok_or_else(|| anyhow::anyhow!("a delta without a version above it"))?;
                    anyhow::ensure!(kept_id == base, "planned delta base is not the kept version above");
                    // fossil_delta::delta(target, source): rebuilds `text` from the kept version above.
                    let delta = fossil_delta::delta(text.as_slice(), kept_text.as_slice());
                    freed -= tx
                        .query_one(
                            "SELECT synchub.history_store_delta($1, $2, $3, $4)",
                            &[&project, &row.id, base, &delta],
                        )
                        .await?
                        .try_get::<_, i64>(0)?;
                    outcome.compacted_versions += 1;
                }
                Some(Layout::Full { rebuild }) => {
                    let content = if *rebuild { Some(String::from_utf8(text.to_vec())?) } else { None };
                    freed -= tx
                        .query_one("SELECT synchub.history_store_full($1, $2, $3)", &[&project, &row.id, &content])
                        .await?
                        .try_get::<_, i64>(0)?;
                }
                None => {}
            }
            kept_above = Some((row.id, text.clone()));
        }
        above = Some((row.id, text));
    }
    // Tombstones and binary versions are not in the walk: only retention touches them.
    for row in rows.iter().filter(|r| !r.has_text() && plan.trim.contains(&r.id)) {
        freed += trim(&tx, project, row.id).await?;
        outcome.removed_versions += 1;
    }
    for tier in [1i16, 2] {
        let ids: Vec<i64> = plan.tiers.iter().filter(|(_, t)| *t == tier).map(|(id, _)| *id).collect();
        if !ids.is_empty() {
            tx.execute("SELECT synchub.history_mark_tier($1, $2, $3)", &[&project, &ids, &tier]).await?;
        }
    }
    if freed != 0 {
        tx.execute("SELECT synchub.history_account($1, $2)", &[&project, &-freed]).await?;
    }
    tx.commit().await?;
    outcome.freed_bytes = freed;
    Ok(Some(outcome))
}

/// Trims one version; answers the bytes it freed (0 when it was trimmed already).
async fn trim(tx: &tokio_postgres::Transaction<'_>, project: Uuid, id: i64) -> anyhow::Result<i64> {
    let change: i64 = tx.query_one("SELECT synchub.history_trim($1, $2)", &[&project, &id]).await?.try_get(0)?;
    Ok(-change)
}

/// Files with history work, at most `limit`.
pub async fn due(db: &Db, config: &HistoryConfig, limit: i32) -> anyhow::Result<Vec<(Uuid, String)>> {
    let keep_all = (config.keep_all_secs > 0).then(|| format!("{} seconds", config.keep_all_secs));
    let hourly = format!("{} seconds", config.hourly_secs.max(config.keep_all_secs));
    let client = db.pool().get().await?;
    let rows = client
        .query(
            "SELECT project_id, file_path FROM synchub.history_due($1::text::interval, $2::text::interval, $3, $4)",
            &[&keep_all, &hourly, &config.compaction, &limit],
        )
        .await?;
    rows.iter().map(|row| Ok((row.try_get(0)?, row.try_get(1)?))).collect()
}

/// One pass over the files with work; answers what it did, and whether work was left.
pub async fn pass(db: &Db, config: &HistoryConfig, metrics: &HistoryMetrics) -> anyhow::Result<(Outcome, bool)> {
    const BATCH: i32 = 100;
    let files = due(db, config, BATCH).await?;
    let mut total = Outcome::default();
    for (project, path) in &files {
        match maintain_file(db, *project, path, config).await {
            Ok(Some(outcome)) => {
                metrics.versions_removed.inc_by(outcome.removed_versions);
                metrics.versions_compacted.inc_by(outcome.compacted_versions);
                metrics.bytes_freed.inc_by(u64::try_from(outcome.freed_bytes).unwrap_or(0));
                total.removed_versions += outcome.removed_versions;
                total.compacted_versions += outcome.compacted_versions;
                total.freed_bytes += outcome.freed_bytes;
            }
            Ok(None) => {}
            Err(err) => tracing::warn!(project_id = %project, error = %err, "file history maintenance failed"),
        }
    }
    Ok((total, files.len() as i32 == BATCH))
}

/// The background task: a pass every `interval_ms`, at once again while work is left.
pub async fn run(db: Db, config: HistoryConfig, metrics: HistoryMetrics, stop: CancellationToken) {
    let interval = Duration::from_millis(config.interval_ms.max(10));
    loop {
        let more = match pass(&db, &config, &metrics).await {
            Ok((_, more)) => more,
            Err(err) => {
                tracing::warn!(error = %err, "file history pass failed");
                false
            }
        };
        if !more {
            tokio::select! {
                _ = tokio::time::sleep(interval) => {}
                _ = stop.cancelled() => return,
            }
        } else if stop.is_cancelled() {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(keep_all_secs: u64, checkpoint_every: u32) -> HistoryConfig {
        HistoryConfig { keep_all_secs, checkpoint_every, ..HistoryConfig::default() }
    }

    /// Versions 1..=n of one file, newest first, the newest current; all full, not compacted.
    fn file(n: i32, created: impl Fn(i32) -> DateTime<Utc>) -> Vec<VersionRow> {
        (1..=n)
            .rev()
            .map(|v| VersionRow {
                id: i64::from(v),
                version: v,
                created_at: created(v),
                is_current: v == n,
                content: Some(format!("text {v}")),
                ..VersionRow::default()
            })
            .collect()
    }

    /// Applies a plan's layout to the rows the way the task stores it.
    fn apply(rows: &mut [VersionRow], plan: &Plan) {
        for row in rows.iter_mut() {
            if plan.trim.contains(&row.id) {
                row.trimmed = true;
                row.content = None;
                row.delta = None;
                row.delta_base_id = None;
            }
            match plan.layout.get(&row.id) {
                Some(Layout::Delta { base }) => {
                    row.content = None;
                    row.delta = Some(vec![1]);
                    row.delta_base_id = Some(*base);
                    row.compacted = true;
                }
                Some(Layout::Full { .. }) => {
                    row.content = Some(String::new());
                    row.delta = None;
                    row.delta_base_id = None;
                    row.compacted = true;
                }
                None => {}
            }
        }
    }

    /// The number of deltas applied to read the row at `index`.
    fn hops(rows: &[VersionRow], index: usize) -> usize {
        let by_id: HashMap<i64, &VersionRow> = rows.iter().map(|r| (r.id, r)).collect();
        let mut row = &rows[index];
        let mut hops = 0;
        while let Some(base) = row.delta_base_id {
            row = by_id[&base];
            hops += 1;
        }
        hops
    }

    #[test]
    fn saves_one_at_a_time_become_runs_of_deltas_with_a_checkpoint_every_k() {
        let now = Utc::now();
        let k = 5;
        let mut rows: Vec<VersionRow> = Vec::new();
        for n in 1..=23 {
            // A new current version, the previous one superseded.
            for row in rows.iter_mut() {
                row.is_current = false;
            }
            rows.insert(
                0,
                VersionRow {
                    id: i64::from(n),
                    version: n,
                    created_at: now,
                    is_current: true,
                    content: Some(String::new()),
                    ..VersionRow::default()
                },
            );
            let decided = plan(&rows, now, &config(86_400, k));
            assert!(decided.trim.is_empty());
            apply(&mut rows, &decided);
            assert!(plan(&rows, now, &config(86_400, k)).is_empty(), "a second pass has nothing to do");
        }
        let fulls = rows.iter().filter(|r| r.content.is_some()).count();
        assert_eq!(fulls, 23usize.div_ceil(k as usize), "one full text per run of {k}");
        for index in 0..rows.len() {
            assert!(
                hops(&rows, index) < k as usize,
                "version {} is {} deltas away",
                rows[index].version,
                hops(&rows, index)
            );
        }
    }

    #[test]
    fn retention_keeps_everything_for_a_day_then_the_newest_per_hour_then_per_day() {
        let now = DateTime::from_timestamp(100 * 86_400, 0).unwrap();
        // Two versions per hour, going back 40 days: version v is (v-1) half-hours after the first.
        let n = 40 * 48;
        let start = now - chrono::Duration::minutes(30 * i64::from(n));
        let rows = file(n, |v| start + chrono::Duration::minutes(30 * i64::from(v - 1)) + chrono::Duration::seconds(1));
        let plan = plan(&rows, now, &config(86_400, 50));
        let kept: Vec<&VersionRow> = rows.iter().filter(|r| !plan.trim.contains(&r.id)).collect();
        for row in &kept {
            let age = now - row.created_at;
            if age >= chrono::Duration::days(30) {
                let day = row.created_at.timestamp().div_euclid(86_400);
                assert_eq!(kept.iter().filter(|r| r.created_at.timestamp().div_euclid(86_400) == day).count(), 1);
            } else if age >= chrono::Duration::days(1) {
                let hour = row.created_at.timestamp().div_euclid(3_600);
                assert_eq!(kept.iter().filter(|r| r.created_at.timestamp().div_euclid(3_600) == hour).count(), 1);
            }
        }
        let young = rows.iter().filter(|r| now - r.created_at < chrono::Duration::days(1)).count();
        assert!(
            rows.iter().filter(|r| now - r.created_at < chrono::Duration::days(1)).all(|r| !plan.trim.contains(&r.id))
        );
        assert_eq!(kept.len(), young + 29 * 24 + 10, "a day of everything, 29 days hourly, 10 days daily");
        assert!(!plan.trim.contains(&rows[0].id), "never the current version");
    }

    #[test]
    fn protected_versions_and_zero_retention_keep_everything() {
        let now = DateTime::from_timestamp(100 * 86_400, 0).unwrap();
        let old = now - chrono::Duration::days(2);
        let mut rows = file(10, |v| old + chrono::Duration::seconds(i64::from(v)));
        rows[5].protected = true;
        let plan_on = plan(&rows, now, &config(86_400, 50));
        assert!(!plan_on.trim.contains(&rows[5].id));
        assert_eq!(plan_on.trim.len(), 8, "all but the current and the protected one");
        assert!(plan(&rows, now, &config(0, 50)).trim.is_empty());
    }

    #[test]
    fn a_delta_whose_base_is_trimmed_is_rebased_on_the_next_kept_version() {
        let now = DateTime::from_timestamp(100 * 86_400, 0).unwrap();
        let young = now - chrono::Duration::hours(1);
        let mut rows = file(4, |_| young);
        // 3 -> 4 (current), 2 -> 3, 1 -> 2: all deltas; then version 3 is trimmed.
        for (index, base) in [(1usize, 4i64), (2, 3), (3, 2)] {
            rows[index].content = None;
            rows[index].delta = Some(vec![1]);
            rows[index].delta_base_id = Some(base);
            rows[index].compacted = true;
        }
        rows[1].trimmed = true;
        rows[1].delta = None;
        rows[1].delta_base_id = None;
        let plan = plan(&rows, now, &config(86_400, 50));
        assert_eq!(plan.layout.get(&2), Some(&Layout::Delta { base: 4 }));
        assert_eq!(plan.layout.get(&1), None, "still based on version 2");
    }

    #[test]
    fn rebuild_applies_deltas_in_order() {
        let v1 = b"hello world".to_vec();
        let v2 = b"hello brave world".to_vec();
        let v3 = b"hello brave new world".to_vec();
        // Reverse deltas: v2 from v3, v1 from v2.
        let d2 = fossil_delta::delta(&v2, &v3);
        let d1 = fossil_delta::delta(&v1, &v2);
        assert_eq!(rebuild(v3.clone(), [d2.clone(), d1.clone()].iter()).unwrap(), v1);
        assert_eq!(rebuild(v3, [d2].iter()).unwrap(), v2);
    }
}
