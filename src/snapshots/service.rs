//! Building, reusing and handing out snapshots.
//!
//! Files and the cursor come from one REPEATABLE READ transaction, so hydrating from the
//! archive and then joining with `since = cursor` neither misses nor repeats a change.
//! Rows stream from PostgreSQL into the synchronous builder (on a blocking thread) through
//! a bounded channel, and the archive goes to a temporary file: memory stays bounded
//! whatever the project's size. An unchanged project reuses its last snapshot, and
//! concurrent requests for one project build once.

use std::io::Read;
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use snapshot_builder::db::{DbBuildError, ProjectRead};
use synchub_protocol::SnapshotResponse;
use uuid::Uuid;

use crate::app::AppState;
use crate::db::RowExt;
use crate::error::ApiError;

/// Presigned URLs live this long (CONTRACT section 5).
pub const URL_TTL: Duration = Duration::from_secs(600);

pub fn storage_key(project: Uuid, snapshot: Uuid) -> String {
    format!("project-snapshots/{project}/{snapshot}.zip")
}

pub(crate) fn storage(state: &AppState) -> Result<&crate::snapshots::storage::Storage, ApiError> {
    state.storage.as_deref().ok_or_else(|| ApiError::Unavailable("snapshot storage is not configured".into()))
}

/// The fields of a snapshot row the answer is made of.
#[derive(serde::Deserialize)]
struct SnapshotRow {
    snapshot_id: Uuid,
    storage_key: String,
    cursor: i64,
    sha256: String,
    bytes: i64,
    file_count: i64,
}

/// The contract's snapshot answer with a fresh presigned URL.
async fn answer(state: &AppState, row: &Value, reused: bool) -> Result<SnapshotResponse, ApiError> {
    let row: SnapshotRow =
        serde_path_to_error::deserialize(row).map_err(|err| ApiError::internal(format!("snapshot row: {err}")))?;
    let url = storage(state)?
        .presign_get(&row.storage_key, URL_TTL)
        .await
        .map_err(|e| ApiError::Unavailable(format!("storage: {e:#}")))?;
    Ok(SnapshotResponse {
        snapshot_id: row.snapshot_id,
        url: url.url,
        url_expires_at: timestamp(url.expires_at),
        cursor: row.cursor,
        sha256: row.sha256,
        bytes: row.bytes,
        file_count: row.file_count,
        reused,
    })
}

async fn latest_row(state: &AppState, project: Uuid) -> Result<Option<Value>, ApiError> {
    let client = state.db.pool().get().await?;
    client.query_one("SELECT synchub.latest_snapshot($1)", &[&project]).await?.column(0)
}

/// `POST /v1/projects/{id}/snapshots` and the snapshot of a new session: the latest
/// snapshot when nothing changed since it, else a new one.
pub async fn create_or_reuse(state: &AppState, project: Uuid) -> Result<SnapshotResponse, ApiError> {
    storage(state)?;
    let lock = state.snapshot_locks.for_project(project);
    let _building = lock.lock().await;
    let (row, reused) = build(state, project).await?;
    if reused {
        state.metrics.snapshot_reused.inc();
    }
    answer(state, &row, reused).await
}

/// `GET /v1/projects/{id}/snapshots/latest`: the newest snapshot with a fresh URL. When
/// there is none, the log no longer reaches back to its cursor (an agent could not resume
/// from it), or its object is gone from storage, a new one is built first.
pub async fn latest(state: &AppState, project: Uuid) -> Result<SnapshotResponse, ApiError> {
    let storage = storage(state)?;
    if let Some(row) = latest_row(state, project).await? {
        let client = state.db.pool().get().await?;
        let oldest: i64 = client.query_one("SELECT synchub.oldest_seq($1)", &[&project]).await?.column(0)?;
        if row["cursor"].as_i64().unwrap_or(-1) + 1 >= oldest
            && storage.exists(row["storage_key"].as_str().unwrap_or_default()).await.unwrap_or(false)
        {
            return answer(state, &row, true).await;
        }
    }
    create_or_reuse(state, project).await
}

/// Builds and stores a snapshot unless the latest one already has this cursor.
/// Returns the snapshot row and whether it was reused.
async fn build(state: &AppState, project: Uuid) -> Result<(Value, bool), ApiError> {
    let started = Instant::now();
    let storage = storage(state)?;
    let mut client = state.db.pool().get().await?;
    let read = ProjectRead::begin(&mut client, project)
        .await?
        .ok_or_else(|| ApiError::NotFound("project not found".into()))?;
    let cursor = read.cursor();
    if let Some(row) = read.latest()
        && row["cursor"].as_i64() == Some(cursor)
        && storage.exists(row["storage_key"].as_str().unwrap_or_default()).await.unwrap_or(false)
    {
        return Ok((row.clone(), true));
    }
    // A cursor snapshotted before whose object is gone from storage keeps its recorded
    // created_at, so the rebuild is the same snapshot, byte for byte.
    let meta = read.meta(timestamp(chrono::Utc::now()));
    let snapshot_id = snapshot_builder::db::snapshot_id(project, cursor);
    let archive = tempfile::NamedTempFile::new().map_err(ApiError::internal)?;
    let writer = archive.reopen().map_err(ApiError::internal)?;
    let (manifest, _stats) =
        read.build_with_blobs(meta, writer, Some(crate::blobs::fetcher(state)?)).await.map_err(build_error)?;

    let path = archive.path().to_path_buf();
    let sha256 = tokio::task::spawn_blocking(move || file_sha256(&path))
        .await
        .map_err(ApiError::internal)?
        .map_err(ApiError::internal)?;
    let key = storage_key(project, snapshot_id);
    let bytes =
        storage.put(&key, archive.path()).await.map_err(|e| ApiError::Unavailable(format!("storage: {e:#}")))?;
    let file_count = i32::try_from(manifest.files.len()).unwrap_or(i32::MAX);
    let bytes_i64 = i64::try_from(bytes).unwrap_or(i64::MAX);
    let client = state.db.pool().get().await?;
    client
        .execute(
            "SELECT synchub.record_snapshot($1, $2, $3, $4, $5, $6, $7, $8::text::timestamptz)",
            &[&project, &snapshot_id, &cursor, &key, &sha256, &bytes_i64, &file_count, &manifest.created_at],
        )
        .await?;
    state.metrics.snapshot_build_seconds.observe(started.elapsed().as_secs_f64());
    state.metrics.snapshot_bytes.inc_by(bytes);
    state.metrics.snapshot_files.inc_by(manifest.files.len() as u64);
    tracing::info!(project_id = %project, snapshot_id = %snapshot_id, cursor, bytes, files = file_count, "snapshot built");
    let row = json!({
        "snapshot_id": snapshot_id, "cursor": cursor, "storage_key": key, "sha256": sha256,
        "bytes": bytes, "file_count": file_count,
    });
    Ok((row, false))
}

/// A failed build from the database, as the API answers it (snapshots and archives).
pub fn build_error(err: DbBuildError) -> ApiError {
    match err {
        DbBuildError::Db(err) => ApiError::from(err),
        DbBuildError::Rows(err) => ApiError::Unavailable(format!("reading files: {err}")),
        DbBuildError::Build(err) => ApiError::internal(format!("building snapshot: {err}")),
        DbBuildError::Builder(err) => ApiError::internal(err),
    }
}

/// Times as the contract writes them: UTC, milliseconds, `Z`.
pub fn timestamp(time: chrono::DateTime<chrono::Utc>) -> String {
    time.format("%Y-%m-%dT%H:%M:%S%.3fZ").to_string()
}

fn file_sha256(path: &std::path::Path) -> std::io::Result<String> {
    let mut file = std::fs::File::open(path)?;
    let mut hasher = Sha256::new();
    let mut buffer = vec![0u8; 64 * 1024];
    loop {
        let read = file.read(&mut buffer)?;
        if read == 0 {
            break;
        }
        hasher.update(&buffer[..read]);
    }
    Ok(hex::encode(hasher.finalize()))
}
