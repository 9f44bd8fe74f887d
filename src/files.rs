//! Files: list, read, write, delete, bulk, move, and the GitHub base/changes pair.
//! Paths are checked by the shared normalizer before any work; the SQL functions check
//! them again (they are callable directly) and decide versions, seq and quotas.

use axum::Json;
use axum::body::Body;
use axum::extract::{FromRequest, Request, State};
use axum::http::{HeaderMap, Uri, header};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};
use snapshot_builder::paths::validate_path;
use synchub_protocol::{
    BulkRequest, BulkWriteResponse, ChangesResponse, DeleteFileQuery, DeleteFileResponse, FileEntry, FileListQuery,
    FileListResponse, FileReadQuery, FileResponse, MoveFileRequest, MoveFileResponse, PatchFileRequest, PutBinaryQuery,
    PutBlobFileRequest, PutFileRequest, PutFileResponse, SafeU64, SetBaseRequest, SetBaseResponse, delta,
};
use tokio_postgres::Row;
use tokio_postgres::types::ToSql;
use uuid::Uuid;

use crate::app::AppState;
use crate::auth::policy::Actor;
use crate::db::RowExt;
use crate::error::ApiError;
use crate::extract::{JsonBody, PathArgs, QueryArgs, check_content, check_file_type, json_body_bytes, parse_json};
use crate::history;
use crate::realtime::broker::{FRAME_COLUMNS, event_frame};
use crate::realtime::wakeups::{MAX_SHIPPED_FRAME, OwnEvent};

type ApiResult<T> = Result<Json<T>, ApiError>;

pub fn checked_path(path: &str) -> Result<&str, ApiError> {
    validate_path(path).map_err(|err| ApiError::InvalidPath { message: err.to_string(), path: Some(path.to_string()) })
}

/// `expected_version` as the SQL functions take it. Versions are SQL integers, so one
/// above i32::MAX (still a valid input) can never match: it is sent as i32::MAX, which
/// answers the same version conflict.
fn expected_version(value: Option<SafeU64>) -> Option<i32> {
    value.map(SafeU64::saturating_i32)
}

/// Requests no route matched. Under `…/files/` that means an empty file path or an empty
/// segment in it (the router's `{*path}` never matches those): 400 `invalid_path`, as any
/// other bad path. Everything else is an unknown route.
pub async fn unmatched(uri: Uri) -> ApiError {
    let file_path = uri
        .path()
        .strip_prefix("/v1/projects/")
        .and_then(|rest| rest.split_once('/'))
        .and_then(|(_, rest)| rest.strip_prefix("files/"));
    match file_path {
        Some(path) => ApiError::InvalidPath {
            message: "a file path must not be empty nor have an empty segment".into(),
            path: Some(path.to_string()),
        },
        None => ApiError::NotFound("no such route".into()),
    }
}

pub async fn list(
    State(state): State<AppState>,
    actor: Actor,
    QueryArgs(query): QueryArgs<FileListQuery>,
) -> ApiResult<FileListResponse> {
    let id = actor.project()?;
    let rows = state
        .db
        .query(
            actor.db(),
            "SELECT * FROM synchub.list_files($1, $2, $3)",
            &[&id, &actor.name(), &query.include_content],
        )
        .await?;
    let cursor: i64 = rows.first().map(|r| r.column("cursor")).transpose()?.unwrap_or(0);
    let mut files = Vec::with_capacity(rows.len());
    for row in &rows {
        let Some(path) = row.column::<Option<String>>("file_path")? else {
            continue;
        };
        files.push(FileEntry {
            path,
            file_type: row.column("file_type")?,
            content_hash: row.column("content_hash")?,
            version: row.column::<i32>("version")?.into(),
            size: row.column::<i32>("size")?.into(),
            updated_at: row.column("updated_at")?,
            content: if query.include_content { row.column("content")? } else { None },
            blob: match row.column::<Option<String>>("blob_sha256")? {
                Some(sha256) => Some(synchub_protocol::BlobRef {
                    sha256,
                    size: SafeU64::new(row.column::<i32>("size")?.max(0) as u64)
                        .ok_or_else(|| ApiError::internal("size out of range"))?,
                }),
                None => None,
            },
        });
    }
    Ok(Json(FileListResponse { cursor, files }))
}

/// Whether the request asks for the file's bytes rather than JSON.
fn wants_bytes(headers: &HeaderMap) -> bool {
    headers
        .get(header::ACCEPT)
        .and_then(|value| value.to_str().ok())
        .is_some_and(|accept| accept.split(',').any(|item| item.trim().starts_with(OCTET_STREAM)))
}

const OCTET_STREAM: &str = "application/octet-stream";

/// `GET …/files/{path}`: the current file as JSON (a binary file with a signed URL of its
/// bytes; with `Accept: application/octet-stream` the bytes themselves: a text file's
/// content, or a redirect to a binary file's blob); with `?version=N` that version; and
/// `GET …/files/{path}/versions`, the file's history (the router's `{*path}` takes both: a
/// path ending in the segment `versions` after another segment is the history listing).
pub async fn get(
    State(state): State<AppState>,
    actor: Actor,
    headers: HeaderMap,
    PathArgs((_, path)): PathArgs<(String, String)>,
    QueryArgs(query): QueryArgs<FileReadQuery>,
) -> Result<Response, ApiError> {
    let id = actor.project()?;
    if let Some(file) = path.strip_suffix("/versions") {
        return Ok(Json(history::versions(&state, &actor, checked_path(file)?, &query).await?).into_response());
    }
    if let Some(version) = query.version {
        return Ok(Json(history::read_version(&state, &actor, checked_path(&path)?, version).await?).into_response());
    }
    let path = checked_path(&path)?;
    let mut file: FileResponse =
        state.db.typed(actor.db(), "SELECT synchub.get_file($1, $2, $3)", &[&id, &actor.name(), &path]).await?;
    if wants_bytes(&headers) {
        return match (&file.blob, file.content.take()) {
            (Some(blob), _) => crate::blobs::redirect_to_blob(&state, &blob.sha256).await,
            (None, content) => {
                Ok(([(header::CONTENT_TYPE, OCTET_STREAM)], Body::from(content.unwrap_or_default())).into_response())
            }
        };
    }
    if let Some(blob) = &file.blob {
        let url = crate::blobs::download_url(&state, &blob.sha256).await?;
        file.url = Some(url.url);
        file.url_expires_at = Some(url.expires_at.to_rfc3339_opts(chrono::SecondsFormat::Millis, true));
    }
    Ok(Json(file).into_response())
}

/// Creates or replaces one file as `actor` (decided for writing); answers
/// `{path, version, content_hash, seq}`.
pub async fn upsert_file(
    state: &AppState,
    actor: &Actor,
    path: &str,
    body: PutFileRequest,
) -> Result<PutFileResponse, ApiError> {
    let id = actor.project()?;
    let path = checked_path(path)?;
    check_content(&body.content, state.config.limits.max_file_bytes)?;
    check_file_type(body.file_type.as_deref())?;
    let expected = expected_version(body.expected_version);
    state.limiter.check(&actor.rate_key(), 1.0)?;
    let row = write_row(
        state,
        actor,
        id,
        "synchub.upsert_project_file($1, $2, $3, $4, $5, $6, $7)",
        &[&id, &path, &body.content, &body.file_type, &expected, &actor.name(), &body.op_id],
    )
    .await?;
    put_answer(&row)
}

/// Creates or replaces one binary file whose blob the hub holds (see [`crate::blobs`]) as
/// `actor` (decided for writing); answers as a text write does.
pub async fn write_binary(
    state: &AppState,
    actor: &Actor,
    path: &str,
    body: PutBlobFileRequest,
) -> Result<PutFileResponse, ApiError> {
    let id = actor.project()?;
    let path = checked_path(path)?;
    check_file_type(body.file_type.as_deref())?;
    let expected = expected_version(body.expected_version);
    state.limiter.check(&actor.rate_key(), 1.0)?;
    crate::blobs::ensure_held(state, actor, &body.blob).await?;
    let blob = serde_json::to_value(&body.blob).map_err(ApiError::internal)?;
    let row = write_row(
        state,
        actor,
        id,
        "synchub.upsert_binary_file($1, $2, $3, $4, $5, $6, $7)",
        &[&id, &path, &blob, &body.file_type, &expected, &actor.name(), &body.op_id],
    )
    .await?;
    put_answer(&row)
}

/// Runs `call`, one of the SQL write functions that answer one row with a `seq` column,
/// whose first parameter (`$1`) is the project, and wakes the project's subscribers: how
/// every write here reaches the database. When the project has subscribers on this hub or
/// on another one ([`crate::realtime::interest`]), the same statement reads the write's
/// event back (`synchub.write_event`, in the write's transaction), so the feeds get it with
/// the answer or the announcement instead of reading the log after the commit
/// ([`crate::realtime::broker::Broker::offer`]).
async fn write_row(
    state: &AppState,
    actor: &Actor,
    project: Uuid,
    call: &str,
    params: &[&(dyn ToSql + Sync)],
) -> Result<Row, ApiError> {
    let wanted = state.wakeups.own_event_wanted(project);
    let with_event = wanted != OwnEvent::Skip;
    let rows = state.db.query(actor.db(), &write_statement(call, wanted), params).await?;
    let row = rows.into_iter().next().ok_or_else(|| ApiError::internal(format!("{call} returned no row")))?;
    // No event: an op_id replay whose event retention already dropped, or an event too large
    // to ship that only other hubs would have used.
    let own_event = if with_event && row.try_get::<_, Option<&str>>("event")?.is_some() {
        Some(event_frame(project, row.try_get("seq")?, &row)?)
    } else {
        None
    };
    state.committed_write(project, own_event);
    Ok(row)
}

/// The statement of `write_row`: `call`'s row, and with it the write's own event's
/// [`FRAME_COLUMNS`] as `wanted` (NULL when not wanted: a payload too large to ship for
/// [`OwnEvent::Shippable`], so that a large write is not read back only to be dropped).
pub fn write_statement(call: &str, wanted: OwnEvent) -> String {
    let only = match wanted {
        OwnEvent::Skip => return format!("SELECT * FROM {call}"),
        OwnEvent::Any => "true".to_owned(),
        OwnEvent::Shippable => format!("octet_length(e.payload) <= {MAX_SHIPPED_FRAME}"),
    };
    // The write functions' columns never share a name with FRAME_COLUMNS'.
    format!(
        "SELECT w.*, e.* FROM {call} w \
         LEFT JOIN LATERAL (SELECT {FRAME_COLUMNS} FROM synchub.write_event($1, w.seq)) e ON {only}"
    )
}

/// A text or binary upsert's row (`upsert_project_file`, `upsert_binary_file`) as
/// `{path, version, content_hash, seq}`: the one mapping of that row.
fn put_answer(row: &Row) -> Result<PutFileResponse, ApiError> {
    Ok(PutFileResponse {
        path: row.column("file_path")?,
        version: row.column::<i32>("version")?.into(),
        content_hash: row.column("content_hash")?,
        seq: row.column("seq")?,
    })
}

/// The body of `PUT …/files/{path}`: JSON text content, JSON `{blob}`, or the bytes of a
/// binary file (`Content-Type: application/octet-stream`, at most the file size limit).
pub enum PutBody {
    Text(PutFileRequest),
    Blob(PutBlobFileRequest),
    Bytes(axum::body::Bytes),
}

impl FromRequest<AppState> for PutBody {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &AppState) -> Result<Self, Self::Rejection> {
        let binary = req
            .headers()
            .get(header::CONTENT_TYPE)
            .and_then(|value| value.to_str().ok())
            .is_some_and(|value| value.trim_start().starts_with(OCTET_STREAM));
        if binary {
            let limit = state.config.limits.max_file_bytes;
            let too_large = || {
                ApiError::payload_too_large(format!(
                    "a binary body is at most {limit} bytes: upload larger files through POST /v1/projects/{{id}}/blobs"
                ))
            };
            let declared = req
                .headers()
                .get(header::CONTENT_LENGTH)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.parse::<usize>().ok());
            if declared.is_some_and(|len| len > limit) {
                return Err(too_large());
            }
            let bytes = axum::body::to_bytes(req.into_body(), limit).await.map_err(|_| too_large())?;
            return Ok(PutBody::Bytes(bytes));
        }
        let bytes = json_body_bytes(req, state).await?;
        // Text is the common case: parsed once. Only a body that is not text content is
        // looked at again for a blob, so its errors name the blob's fields.
        match parse_json(&bytes) {
            Ok(text) => Ok(PutBody::Text(text)),
            Err(err) => match parse_json::<serde_json::Value>(&bytes) {
                Ok(value) if value.get("blob").is_some() => parse_json(&bytes).map(PutBody::Blob),
                _ => Err(err),
            },
        }
    }
}

pub async fn put(
    State(state): State<AppState>,
    actor: Actor,
    PathArgs((_, path)): PathArgs<(String, String)>,
    QueryArgs(query): QueryArgs<PutBinaryQuery>,
    body: PutBody,
) -> ApiResult<PutFileResponse> {
    Ok(Json(match body {
        PutBody::Text(body) => upsert_file(&state, &actor, &path, body).await?,
        PutBody::Blob(body) => write_binary(&state, &actor, &path, body).await?,
        PutBody::Bytes(bytes) => {
            checked_path(&path)?;
            check_file_type(query.file_type.as_deref())?;
            let blob = crate::blobs::put_bytes(&state, &actor, &bytes).await?;
            let body = PutBlobFileRequest {
                blob,
                file_type: query.file_type,
                expected_version: query.expected_version,
                op_id: query.op_id,
            };
            write_binary(&state, &actor, &path, body).await?
        }
    }))
}

/// Replaces one file with the result of a Fossil delta against `base_version` (CONTRACT
/// section 12), as `actor` (decided for writing); answers like [`upsert_file`], which does
/// the write with `expected_version = base_version`. A delta that does not apply to the
/// current content, or whose result is not valid content, is 400 and nothing is written.
pub async fn patch_file(
    state: &AppState,
    actor: &Actor,
    path: &str,
    body: PatchFileRequest,
) -> Result<PutFileResponse, ApiError> {
    let id = actor.project()?;
    let path = checked_path(path)?;
    let current: FileResponse =
        state.db.typed(actor.db(), "SELECT synchub.get_file($1, $2, $3)", &[&id, &actor.name(), &path]).await?;
    // A binary file has no text to apply a delta to (its bytes are a blob, CONTRACT 13).
    let Some(current_content) = current.content else {
        return Err(ApiError::InvalidRequest(format!("{path} is a binary file: a delta applies to text only")));
    };
    let (content, file_type) = if current.version == i64::from(body.base_version) {
        (patched(&current_content, &body.delta)?, current.file_type)
    } else if let Some(retried) = patched_base_for_retry(state, actor, path, &body).await {
        // A stale base with an op_id: maybe a retry of a PATCH that was applied before other
        // writes (its answer lost). Rebuilt from base_version's history, the write carries
        // the same arguments as the first one, so the write path answers its first result;
        // if the op_id is new, expected_version = base_version makes it the usual 409.
        retried
    } else {
        // A stale base: the write below is refused with the write path's own 409 (its
        // details name the current version).
        (current_content, current.file_type)
    };
    let body = PutFileRequest {
        content,
        file_type: Some(file_type),
        expected_version: Some(body.base_version),
        op_id: body.op_id,
    };
    upsert_file(state, actor, path, body).await
}

/// `delta` applied to `base`; 400 when it does not apply or the result is not text.
fn patched(base: &str, delta_b64: &str) -> Result<String, ApiError> {
    let content =
        delta::decode_apply(base, delta_b64).map_err(|err| ApiError::InvalidRequest(format!("delta: {err}")))?;
    if content.as_bytes().contains(&0) {
        return Err(ApiError::InvalidRequest("delta: the result contains NUL bytes".into()));
    }
    Ok(content)
}

/// For a PATCH with an op_id whose base is no longer current: the content and type the
/// first attempt wrote (the delta applied to base_version as history keeps it), or `None`
/// when there is no op_id or that version cannot be read or patched.
async fn patched_base_for_retry(
    state: &AppState,
    actor: &Actor,
    path: &str,
    body: &PatchFileRequest,
) -> Option<(String, String)> {
    body.op_id?;
    let base = history::read_version(state, actor, path, body.base_version).await.ok()?;
    Some((patched(base.content.as_deref()?, &body.delta).ok()?, base.file_type))
}

pub async fn patch(
    State(state): State<AppState>,
    actor: Actor,
    PathArgs((_, path)): PathArgs<(String, String)>,
    JsonBody(body): JsonBody<PatchFileRequest>,
) -> ApiResult<PutFileResponse> {
    Ok(Json(patch_file(&state, &actor, &path, body).await?))
}

/// Deletes one file as `actor` (decided for writing); answers `{path, version, seq}`.
pub async fn delete_file(
    state: &AppState,
    actor: &Actor,
    path: &str,
    query: DeleteFileQuery,
) -> Result<DeleteFileResponse, ApiError> {
    let id = actor.project()?;
    let path = checked_path(path)?;
    let expected = expected_version(query.expected_version);
    state.limiter.check(&actor.rate_key(), 1.0)?;
    let row = write_row(
        state,
        actor,
        id,
        "synchub.delete_project_file($1, $2, $3, $4, $5)",
        &[&id, &path, &expected, &actor.name(), &query.op_id],
    )
    .await?;
    Ok(DeleteFileResponse {
        path: row.column("file_path")?,
        version: row.column::<i32>("version")?.into(),
        seq: row.column("seq")?,
    })
}

pub async fn delete(
    State(state): State<AppState>,
    actor: Actor,
    PathArgs((_, path)): PathArgs<(String, String)>,
    QueryArgs(query): QueryArgs<DeleteFileQuery>,
) -> ApiResult<DeleteFileResponse> {
    Ok(Json(delete_file(&state, &actor, &path, query).await?))
}

/// Checks a bulk request before it reaches the database: entry count, every path, every
/// content. The first bad entry answers, and nothing is written.
fn check_bulk(bulk: &BulkRequest, state: &AppState) -> Result<(), ApiError> {
    let limits = &state.config.limits;
    if bulk.upserts.len() + bulk.deletes.len() > limits.max_bulk_entries as usize {
        return Err(ApiError::payload_too_large(format!(
            "more than {} entries in one bulk write",
            limits.max_bulk_entries
        )));
    }
    for upsert in &bulk.upserts {
        checked_path(&upsert.path)?;
        if upsert.blob.is_none() {
            check_content(&upsert.content, limits.max_file_bytes)?;
        }
        check_file_type(upsert.file_type.as_deref())?;
    }
    for delete in &bulk.deletes {
        checked_path(&delete.path)?;
    }
    Ok(())
}

/// Upserts and deletes as one change, as `actor` (decided for writing); answers
/// `{seq, files, deleted}`.
pub async fn bulk_write(state: &AppState, actor: &Actor, body: BulkRequest) -> Result<BulkWriteResponse, ApiError> {
    let id = actor.project()?;
    check_bulk(&body, state)?;
    state.limiter.check(&actor.rate_key(), 1.0)?;
    // Binary entries: their blobs must be held (uploads are checked here, once each).
    for blob in body.upserts.iter().filter_map(|upsert| upsert.blob.as_ref()) {
        crate::blobs::ensure_held(state, actor, blob).await?;
    }
    let upserts = serde_json::to_value(&body.upserts).map_err(ApiError::internal)?;
    let deletes = serde_json::to_value(&body.deletes).map_err(ApiError::internal)?;
    let result: Value = write_row(
        state,
        actor,
        id,
        "synchub.bulk_upsert_project_files($1, $2, $3, $4, $5)",
        &[&id, &upserts, &deletes, &actor.name(), &body.op_id],
    )
    .await?
    .column("result")?;
    serde_path_to_error::deserialize(result).map_err(|err| ApiError::internal(format!("bulk answer: {err}")))
}

pub async fn bulk(
    State(state): State<AppState>,
    actor: Actor,
    JsonBody(body): JsonBody<BulkRequest>,
) -> ApiResult<BulkWriteResponse> {
    Ok(Json(bulk_write(&state, &actor, body).await?))
}

pub async fn move_file(
    State(state): State<AppState>,
    actor: Actor,
    JsonBody(body): JsonBody<MoveFileRequest>,
) -> ApiResult<MoveFileResponse> {
    let id = actor.project()?;
    checked_path(&body.from)?;
    checked_path(&body.to)?;
    let expected = expected_version(body.expected_version);
    state.limiter.check(&actor.rate_key(), 1.0)?;
    let row = write_row(
        &state,
        &actor,
        id,
        "synchub.move_project_file($1, $2, $3, $4, $5, $6)",
        &[&id, &body.from, &body.to, &expected, &actor.name(), &body.op_id],
    )
    .await?;
    let seq = row.column("seq")?;
    let version = row.column::<Option<i32>>("version")?.map(i64::from);
    Ok(Json(MoveFileResponse { from: body.from, to: body.to, seq, version }))
}

/// Records the repository tree at `commit` (owner or service token); with `apply`, the
/// project's files become exactly that tree in one change.
pub async fn set_base(
    State(state): State<AppState>,
    actor: Actor,
    JsonBody(body): JsonBody<SetBaseRequest>,
) -> ApiResult<SetBaseResponse> {
    let id = actor.project()?;
    let limits = &state.config.limits;
    if body.files.len() > limits.max_files_per_project as usize {
        return Err(ApiError::QuotaExceeded {
            message: "the tree has more files than a project may hold".into(),
            details: Default::default(),
        });
    }
    let mut files = Vec::with_capacity(body.files.len());
    for file in &body.files {
        checked_path(&file.path)?;
        check_content(&file.content, limits.max_file_bytes)?;
        files.push(json!({"path": file.path, "content": file.content}));
    }
    state.limiter.check(&actor.rate_key(), 1.0)?;
    let files = Value::Array(files);
    let result = state
        .db
        .typed(
            actor.db(),
            "SELECT synchub.set_project_base($1, $2, $3, $4, $5)",
            &[&id, &actor.name(), &body.commit, &files, &body.apply.unwrap_or(true)],
        )
        .await?;
    state.committed(id);
    Ok(Json(result))
}

pub async fn changes(State(state): State<AppState>, actor: Actor) -> ApiResult<ChangesResponse> {
    let id = actor.project()?;
    Ok(Json(state.db.typed(actor.db(), "SELECT synchub.project_changes($1, $2)", &[&id, &actor.name()]).await?))
}
