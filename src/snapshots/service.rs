//! Building, reusing and handing out snapshots.
//!
//! Files and the cursor come from one REPEATABLE READ transaction, so hydrating from the
//! archive and then joining with `since = cursor` neither misses nor repeats a change.
//! Rows stream from PostgreSQL into the synchronous builder (on a blocking thread) through
//! a bounded channel, and the archive goes to a temporary file: memory stays bounded
//! whatever the project's size. An unchanged project reuses its last snapshot, and
//! concurrent requests for one project build once.

use std::collections::HashMap;
use std::io::Read;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures_util::{StreamExt, pin_mut};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use snapshot_builder::{SnapshotFile, SnapshotMeta};
use uuid::Uuid;

use crate::app::AppState;
use crate::error::ApiError;

/// Presigned URLs live this long (CONTRACT section 5).
pub const URL_TTL: Duration = Duration::from_secs(600);
/// Rows in flight between the database reader and the builder thread.
const ROWS_IN_FLIGHT: usize = 32;

/// One build at a time per project.
#[derive(Default)]
pub struct BuildLocks {
    locks: Mutex<HashMap<Uuid, Arc<tokio::sync::Mutex<()>>>>,
}

impl BuildLocks {
    fn for_project(&self, project: Uuid) -> Arc<tokio::sync::Mutex<()>> {
        let mut locks = self.locks.lock().unwrap_or_else(|p| p.into_inner());
        locks.retain(|_, lock| Arc::strong_count(lock) > 1);
        locks.entry(project).or_default().clone()
    }
}

pub fn storage_key(project: Uuid, snapshot: Uuid) -> String {
    format!("project-snapshots/{project}/{snapshot}.zip")
}

fn storage(state: &AppState) -> Result<&crate::snapshots::storage::Storage, ApiError> {
    state.storage.as_deref().ok_or_else(|| ApiError::Unavailable("snapshot storage is not configured".into()))
}

/// The contract's snapshot answer with a fresh presigned URL.
async fn answer(state: &AppState, row: &Value, reused: bool) -> Result<Value, ApiError> {
    let key = row["storage_key"].as_str().ok_or_else(|| ApiError::internal("snapshot without key"))?;
    let url = storage(state)?
        .presign_get(key, URL_TTL)
        .await
        .map_err(|e| ApiError::Unavailable(format!("storage: {e:#}")))?;
    Ok(json!({
        "snapshot_id": row["snapshot_id"],
        "url": url.url,
        "url_expires_at": url.expires_at.format("%Y-%m-%dT%H:%M:%S%.3fZ").to_string(),
        "cursor": row["cursor"],
        "sha256": row["sha256"],
        "bytes": row["bytes"],
        "file_count": row["file_count"],
        "reused": reused,
    }))
}

async fn latest_row(state: &AppState, project: Uuid) -> Result<Option<Value>, ApiError> {
    let client = state.db.pool().get().await?;
    let row: Option<Value> = client.query_one("SELECT synchub.latest_snapshot($1)", &[&project]).await?.get(0);
    Ok(row)
}

/// `POST /v1/projects/{id}/snapshots` and the snapshot of a new session: the latest
/// snapshot when nothing changed since it, else a new one.
pub async fn create_or_reuse(state: &AppState, project: Uuid) -> Result<Value, ApiError> {
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
/// there is none, or the log no longer reaches back to its cursor (an agent could not
/// resume from it), a new one is built first.
pub async fn latest(state: &AppState, project: Uuid) -> Result<Value, ApiError> {
    storage(state)?;
    if let Some(row) = latest_row(state, project).await? {
        let client = state.db.pool().get().await?;
        let oldest: i64 = client.query_one("SELECT synchub.oldest_seq($1)", &[&project]).await?.get(0);
        if row["cursor"].as_i64().unwrap_or(-1) + 1 >= oldest {
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
    let tx = client
        .build_transaction()
        .isolation_level(tokio_postgres::IsolationLevel::RepeatableRead)
        .read_only(true)
        .start()
        .await?;
    let head = tx.query_opt("SELECT last_seq FROM synchub.project_heads(ARRAY[$1]::uuid[])", &[&project]).await?;
    let cursor: i64 = head.ok_or_else(|| ApiError::NotFound("project not found".into()))?.get(0);
    let latest: Option<Value> = tx.query_one("SELECT synchub.latest_snapshot($1)", &[&project]).await?.get(0);
    let mut created_at = chrono::Utc::now().format("%Y-%m-%dT%H:%M:%S%.3fZ").to_string();
    if let Some(row) = latest
        && row["cursor"].as_i64() == Some(cursor)
    {
        if storage.exists(row["storage_key"].as_str().unwrap_or_default()).await.unwrap_or(false) {
            return Ok((row, true));
        }
        // The object is gone from storage: rebuild the same snapshot, byte for byte.
        if let Some(at) = row["created_at"].as_str() {
            created_at = at.to_owned();
        }
    }

    let snapshot_id = snapshot_id(project, cursor);
    let meta =
        SnapshotMeta { project_id: project.to_string(), snapshot_id: snapshot_id.to_string(), cursor, created_at };
    let archive = tempfile::NamedTempFile::new().map_err(ApiError::internal)?;
    let writer = archive.reopen().map_err(ApiError::internal)?;
    let (tx_rows, mut rx_rows) = tokio::sync::mpsc::channel::<Result<SnapshotFile, String>>(ROWS_IN_FLIGHT);
    let builder = tokio::task::spawn_blocking(move || {
        let rows = std::iter::from_fn(move || rx_rows.blocking_recv());
        snapshot_builder::build(meta, rows, writer)
    });
    let statement =
        tx.prepare("SELECT file_path, file_type, content, version FROM synchub.list_current_files($1)").await?;
    let rows = tx.query_raw(&statement, [&project]).await?;
    pin_mut!(rows);
    let mut read_error = None;
    while let Some(row) = rows.next().await {
        let item = row.map_err(|e| e.to_string()).map(|row| SnapshotFile {
            path: row.get(0),
            file_type: row.get(1),
            content: row.get::<_, String>(2).into_bytes(),
            version: i64::from(row.get::<_, i32>(3)),
        });
        let failed = item.is_err();
        if let Err(err) = &item {
            read_error = Some(err.clone());
        }
        if tx_rows.send(item).await.is_err() || failed {
            break;
        }
    }
    drop(tx_rows);
    let built = builder.await.map_err(ApiError::internal)?;
    tx.commit().await?;
    if let Some(err) = read_error {
        return Err(ApiError::Unavailable(format!("reading files: {err}")));
    }
    let (manifest, _stats) = built.map_err(|e| ApiError::internal(format!("building snapshot: {e}")))?;

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
            &[&snapshot_id, &project, &cursor, &key, &sha256, &bytes_i64, &file_count, &manifest.created_at],
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

/// A snapshot's id follows from its project and cursor (one cursor is one state of the
/// files), so the same files and cursor give the same manifest and byte-identical archives.
pub fn snapshot_id(project: Uuid, cursor: i64) -> Uuid {
    let digest = Sha256::digest(format!("synchub-snapshot:{project}:{cursor}"));
    let mut bytes = [0u8; 16];
    bytes.copy_from_slice(&digest[..16]);
    uuid::Builder::from_custom_bytes(bytes).into_uuid()
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
