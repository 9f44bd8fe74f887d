//! Binary files' bytes (CONTRACT section 13): content-addressed blobs in the snapshot
//! storage, referenced by file versions.
//!
//! A blob is held (a `synchub.blobs` row) only once the hub has hashed the bytes storage
//! holds under `blobs/<sha256>`; only the hub writes there. Small binaries arrive as a
//! request body ([`put_bytes`]); large ones are uploaded by the client to a signed URL
//! (`blob-uploads/<project>/<sha256>`) and checked when a write first references them
//! ([`ensure_held`]): moved server-side where only the hub writes, hashed there, and moved
//! on to `blobs/<sha256>` when they match; other bytes than announced are refused and
//! deleted.
//!
//! Garbage collection ([`collect_garbage`], run by every hub in the background) deletes
//! blobs no version references once older than the grace period; see
//! migrations/functions/blobs.sql for why it is safe against a write referencing a blob
//! while it is being collected.

use std::time::Duration;

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Redirect, Response};
use serde_json::Value;
use sha2::{Digest, Sha256};
use synchub_protocol::{BlobRef, BlobUploadRequest, BlobUploadResponse, SafeU64};
use tokio_util::sync::CancellationToken;

use crate::app::AppState;
use crate::auth::policy::Actor;
use crate::db::{Db, RowExt};
use crate::error::ApiError;
use crate::extract::{JsonBody, PathArgs};
use crate::snapshots::service::storage;
use crate::snapshots::storage::{Fetched, Storage, blob_key, is_sha256, upload_key};

/// How long blob URLs (download and upload) stay valid.
pub const URL_TTL: Duration = Duration::from_secs(15 * 60);
/// Blobs one garbage-collection transaction deletes at most.
const GC_BATCH: i32 = 100;

/// Lowercase hex SHA-256.
pub fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

fn unavailable(err: anyhow::Error) -> ApiError {
    ApiError::Unavailable(format!("storage: {err:#}"))
}

/// Checks the shape and size of a reference before any work: 400 / 413.
fn check_ref(state: &AppState, sha256: &str, size: u64) -> Result<(), ApiError> {
    if !is_sha256(sha256) {
        return Err(ApiError::InvalidRequest("sha256 must be 64 lowercase hex digits".into()));
    }
    let max = state.config.limits.max_blob_bytes;
    if size > max {
        return Err(ApiError::payload_too_large(format!("a binary file is at most {max} bytes")));
    }
    Ok(())
}

/// Whether the hub holds this blob; checks first that `actor` may write the project
/// (404 / 403 otherwise).
async fn held(state: &AppState, actor: &Actor, sha256: &str, size: u64) -> Result<bool, ApiError> {
    let project = actor.project()?;
    let size = i64::try_from(size).map_err(ApiError::internal)?;
    let status = state
        .db
        .json(actor.db(), "SELECT synchub.blob_status($1, $2, $3, $4)", &[&project, &actor.name(), &sha256, &size])
        .await?;
    Ok(status.get("exists").and_then(Value::as_bool).unwrap_or(false))
}

async fn register(state: &AppState, actor: &Actor, sha256: &str, size: u64) -> Result<(), ApiError> {
    let size = i64::try_from(size).map_err(ApiError::internal)?;
    state.db.query(actor.db(), "SELECT synchub.register_blob($1, $2)", &[&sha256, &size]).await?;
    Ok(())
}

fn blob_ref(sha256: String, size: u64) -> Result<BlobRef, ApiError> {
    Ok(BlobRef { sha256, size: SafeU64::new(size).ok_or_else(|| ApiError::internal("blob size out of range"))? })
}

/// Stores `bytes` as a blob (once per content) for a write by `actor`, who must be allowed
/// to write the project; returns the reference to write.
pub async fn put_bytes(state: &AppState, actor: &Actor, bytes: &[u8]) -> Result<BlobRef, ApiError> {
    let sha256 = sha256_hex(bytes);
    let size = bytes.len() as u64;
    if !held(state, actor, &sha256, size).await? {
        let storage = storage(state)?;
        let temp = tempfile::NamedTempFile::new().map_err(ApiError::internal)?;
        tokio::fs::write(temp.path(), bytes).await.map_err(ApiError::internal)?;
        storage.put(&blob_key(&sha256), temp.path()).await.map_err(unavailable)?;
        register(state, actor, &sha256, size).await?;
    }
    blob_ref(sha256, size)
}

/// Stores the file at `path` as a blob (once per content) for a write by `actor`, who must
/// be allowed to write the project; `sha256` and `size` are those of its bytes, computed by
/// the caller while it wrote them (archive imports). Returns the reference to write.
pub async fn put_file(
    state: &AppState,
    actor: &Actor,
    path: &std::path::Path,
    sha256: &str,
    size: u64,
) -> Result<BlobRef, ApiError> {
    check_ref(state, sha256, size)?;
    if !held(state, actor, sha256, size).await? {
        storage(state)?.put(&blob_key(sha256), path).await.map_err(unavailable)?;
        register(state, actor, sha256, size).await?;
    }
    blob_ref(sha256.to_string(), size)
}

/// Makes sure the hub holds `blob` before a write by `actor` references it: held already,
/// or uploaded to its signed URL with exactly these bytes (hashed where only the hub
/// writes, then moved to `blobs/<sha256>` server-side: `Storage::verify_upload`).
/// Anything else is a 400 naming the problem, and an upload of other bytes is deleted.
pub async fn ensure_held(state: &AppState, actor: &Actor, blob: &BlobRef) -> Result<(), ApiError> {
    let size = blob.size.get();
    check_ref(state, &blob.sha256, size)?;
    if held(state, actor, &blob.sha256, size).await? {
        return Ok(());
    }
    let upload = upload_key(actor.project()?, &blob.sha256);
    let found = match storage(state)?.verify_upload(&upload, &blob.sha256, size).await.map_err(unavailable)? {
        // A concurrent write referencing the same upload may have taken it over and
        // verified it meanwhile.
        Fetched::Missing if held(state, actor, &blob.sha256, size).await? => return Ok(()),
        Fetched::Missing => {
            return Err(ApiError::InvalidRequest(format!(
                "the hub holds no blob {} of {size} bytes: announce it (POST /v1/projects/{{id}}/blobs) and upload it first",
                blob.sha256
            )));
        }
        Fetched::TooLarge => format!("more than {size} bytes"),
        Fetched::Bytes { size: got, sha256 } if got == size && sha256 == blob.sha256 => {
            return register(state, actor, &blob.sha256, size).await;
        }
        Fetched::Bytes { size: got, sha256 } => format!("{got} bytes with sha256 {sha256}"),
    };
    Err(ApiError::InvalidRequest(format!(
        "the bytes uploaded for blob {} are not what was announced ({size} bytes): found {found}; the upload was deleted",
        blob.sha256
    )))
}

/// `POST /v1/projects/{id}/blobs` `{sha256, size}` → `{exists: true}`, or a signed URL to
/// `PUT` the bytes to (editor or better).
pub async fn announce(
    State(state): State<AppState>,
    actor: Actor,
    JsonBody(body): JsonBody<BlobUploadRequest>,
) -> Result<Json<BlobUploadResponse>, ApiError> {
    let size = body.size.get();
    check_ref(&state, &body.sha256, size)?;
    if held(&state, &actor, &body.sha256, size).await? {
        return Ok(Json(BlobUploadResponse { exists: true, upload_url: None, expires_at: None }));
    }
    let url = storage(&state)?
        .presign_put(&upload_key(actor.project()?, &body.sha256), URL_TTL)
        .await
        .map_err(unavailable)?;
    Ok(Json(BlobUploadResponse {
        exists: false,
        upload_url: Some(url.url),
        expires_at: Some(url.expires_at.to_rfc3339_opts(chrono::SecondsFormat::Millis, true)),
    }))
}

/// A signed, expiring URL of a held blob's bytes.
pub async fn download_url(state: &AppState, sha256: &str) -> Result<crate::snapshots::storage::PresignedUrl, ApiError> {
    storage(state)?.presign_get(&blob_key(sha256), URL_TTL).await.map_err(unavailable)
}

/// `GET /v1/projects/{id}/blobs/{sha256}` → a redirect to the bytes (readers of the
/// project, its container tokens included; only blobs some version of the project
/// references).
pub async fn get(
    State(state): State<AppState>,
    actor: Actor,
    PathArgs((_, sha256)): PathArgs<(String, String)>,
) -> Result<Response, ApiError> {
    if !is_sha256(&sha256) {
        return Err(ApiError::NotFound("blob not found".into()));
    }
    let project = actor.project()?;
    state.db.query(actor.db(), "SELECT synchub.project_blob($1, $2, $3)", &[&project, &actor.name(), &sha256]).await?;
    redirect_to_blob(&state, &sha256).await
}

/// A `307` to the blob's signed URL (the bytes, or a redirect, as the contract allows).
pub async fn redirect_to_blob(state: &AppState, sha256: &str) -> Result<Response, ApiError> {
    let url = download_url(state, sha256).await?;
    Ok((StatusCode::TEMPORARY_REDIRECT, Redirect::temporary(&url.url)).into_response())
}

/// Reads a held blob's bytes for the snapshot builder (at most the blob size limit).
pub fn fetcher(state: &AppState) -> Result<snapshot_builder::db::BlobFetch, ApiError> {
    let storage = state.storage.clone().ok_or_else(|| ApiError::Unavailable("storage is not configured".into()))?;
    let max = state.config.limits.max_blob_bytes;
    Ok(std::sync::Arc::new(move |sha256: String| {
        let storage = storage.clone();
        Box::pin(async move {
            let temp = tempfile::NamedTempFile::new().map_err(|e| e.to_string())?;
            let mut dest = tokio::fs::File::create(temp.path()).await.map_err(|e| e.to_string())?;
            match storage.download_hashing(&blob_key(&sha256), &mut dest, max).await.map_err(|e| format!("{e:#}"))? {
                Fetched::Bytes { .. } => tokio::fs::read(temp.path()).await.map_err(|e| e.to_string()),
                Fetched::Missing => Err(format!("blob {sha256} is missing from storage")),
                Fetched::TooLarge => Err(format!("blob {sha256} is larger than {max} bytes")),
            }
        })
    }))
}

/// One garbage-collection pass: in one transaction, claims (locks) up to a batch of blobs
/// no version references that are older than `grace`, deletes their objects, then their
/// rows, and commits. Returns how many were deleted. Safe with several hubs (rows another
/// collector or a referencing write holds are skipped).
pub async fn collect_garbage(db: &Db, storage: &Storage, grace: Duration) -> anyhow::Result<usize> {
    let mut client = db.pool().get().await?;
    let tx = client.transaction().await?;
    let grace = format!("{} seconds", grace.as_secs());
    let rows = tx.query("SELECT synchub.blob_gc_claim($1::text::interval, $2)", &[&grace, &GC_BATCH]).await?;
    let shas = rows.iter().map(|row| row.column::<String>(0)).collect::<Result<Vec<_>, _>>()?;
    if shas.is_empty() {
        return Ok(0);
    }
    for sha256 in &shas {
        storage.delete(&blob_key(sha256)).await?;
    }
    tx.query_one("SELECT synchub.blob_gc_forget($1)", &[&shas]).await?;
    tx.commit().await?;
    Ok(shas.len())
}

/// The background collector every hub runs (when storage is configured).
pub async fn collect_periodically(
    db: Db,
    storage: std::sync::Arc<Storage>,
    grace: Duration,
    every: Duration,
    stop: CancellationToken,
) {
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = stop.cancelled() => return,
        }
        match storage.sweep_uploads(grace).await {
            Ok(0) => {}
            Ok(count) => tracing::info!(count, "deleted blob uploads no write referenced"),
            Err(err) => tracing::warn!(error = %format!("{err:#}"), "sweeping blob uploads failed"),
        }
        // Batches until nothing is left (bounded: each pass deletes what it claims).
        for _ in 0..1000 {
            match collect_garbage(&db, &storage, grace).await {
                Ok(0) => break,
                Ok(count) => tracing::info!(count, "deleted unreferenced blobs"),
                Err(err) => {
                    tracing::warn!(error = %format!("{err:#}"), "blob garbage collection failed");
                    break;
                }
            }
        }
    }
}
