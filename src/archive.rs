//! Project archives (CONTRACT section 13), in the snapshot format (section 5).
//!
//! - `GET /v1/projects/{id}/archive` (any member): the current files as a zip, built by
//!   snapshot-builder from one consistent read into an unnamed temporary file, then
//!   streamed from it: the hub's memory stays flat whatever the project's size.
//! - `POST /v1/projects/{id}/archive?mode=replace|merge` (editor): the body (a zip of at
//!   most `SYNCHUB_MAX_ARCHIVE_BYTES`) is streamed to a temporary file; the snapshot
//!   reader then checks every entry as the agent checks a snapshot (paths, sizes,
//!   compression ratio, symlinks, duplicates; sizes and hashes against the manifest when
//!   there is one) and every file must be text. Only then is one SQL call made
//!   (`synchub.import_project_archive`: one change, one `bulk:apply`). A bad entry answers
//!   with its name in the error's `entry`, and nothing is written.

use std::io::{Seek, SeekFrom};

use axum::Json;
use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, header};
use axum::response::{IntoResponse, Response};
use bytes::{BufMut, BytesMut};
use futures_util::StreamExt;
use serde_json::{Map, Value, json};
use snapshot_builder::db::ProjectRead;
use snapshot_builder::{EntrySink, MANIFEST_PATH, ManifestFile, ManifestRule, ReadError, ReadLimits, SinkError};
use synchub_protocol::{ArchiveImportQuery, ArchiveMode, BulkWriteResponse};
use tokio::io::AsyncWriteExt;
use tokio_postgres::types::{IsNull, ToSql, Type, to_sql_checked};
use uuid::Uuid;

use crate::app::AppState;
use crate::auth::policy::Actor;
use crate::config::Limits;
use crate::db::RowExt;
use crate::error::ApiError;
use crate::extract::{QueryArgs, check_content, check_file_type};
use crate::snapshots::service;

/// `GET /v1/projects/{id}/archive`.
pub async fn export(State(state): State<AppState>, actor: Actor) -> Result<Response, ApiError> {
    let project = actor.project()?;
    // Viewer or better; anyone else is told the project is not there (decided by SQL).
    state.db.json(actor.db(), "SELECT synchub.join_channel($1, $2)", &[&project, &actor.name()]).await?;
    let archive = build_archive(&state, project).await?;
    let length = archive.metadata().map_err(ApiError::internal)?.len();
    let disposition =
        HeaderValue::from_str(&format!("attachment; filename=\"{project}.zip\"")).map_err(ApiError::internal)?;
    let body = Body::from_stream(tokio_util::io::ReaderStream::new(tokio::fs::File::from_std(archive)));
    let headers = [
        (header::CONTENT_TYPE, HeaderValue::from_static("application/zip")),
        (header::CONTENT_LENGTH, HeaderValue::from(length)),
        (header::CONTENT_DISPOSITION, disposition),
    ];
    Ok((headers, body).into_response())
}

/// The project's current files as a snapshot-format zip (the same builder and consistent
/// read as snapshots), in an unnamed temporary file positioned at its start; the file is
/// gone once closed.
async fn build_archive(state: &AppState, project: Uuid) -> Result<std::fs::File, ApiError> {
    let mut client = state.db.pool().get().await?;
    let read = ProjectRead::begin(&mut client, project).await?.ok_or_else(ApiError::not_found)?;
    let meta = read.meta(service::timestamp(chrono::Utc::now()));
    let mut archive = tempfile::tempfile().map_err(ApiError::internal)?;
    let writer = archive.try_clone().map_err(ApiError::internal)?;
    read.build(meta, writer).await.map_err(service::build_error)?;
    archive.seek(SeekFrom::Start(0)).map_err(ApiError::internal)?;
    Ok(archive)
}

/// `POST /v1/projects/{id}/archive?mode=replace|merge[&op_id=U]`.
pub async fn import(
    State(state): State<AppState>,
    actor: Actor,
    QueryArgs(query): QueryArgs<ArchiveImportQuery>,
    headers: HeaderMap,
    body: Body,
) -> Result<Json<BulkWriteResponse>, ApiError> {
    let project = actor.project()?;
    require_editor(&state, &actor, project).await?;
    state.limiter.check(&actor.rate_key(), 1.0)?;
    let declared = headers.get(header::CONTENT_LENGTH).and_then(|v| v.to_str().ok()).and_then(|v| v.parse().ok());
    let archive = receive(body, declared, state.config.limits.max_archive_bytes).await?;
    let limits = state.config.limits.clone();
    let files =
        tokio::task::spawn_blocking(move || read_upserts(archive, &limits)).await.map_err(ApiError::internal)??;
    let replace = query.mode == ArchiveMode::Replace;
    let rows = state
        .db
        .query(
            actor.db(),
            "SELECT synchub.import_project_archive($1, $2, $3, $4, $5)",
            &[&project, &files, &replace, &actor.name(), &query.op_id],
        )
        .await?;
    drop(files);
    let result: Value = rows.first().ok_or_else(|| ApiError::internal("import returned no row"))?.column(0)?;
    state.committed(project);
    let answer =
        serde_path_to_error::deserialize(result).map_err(|err| ApiError::internal(format!("import: {err}")))?;
    Ok(Json(answer))
}

/// Before receiving up to 100 MiB: the caller must be able to write (viewers 403, others
/// 404). SQL checks again when it writes.
async fn require_editor(state: &AppState, actor: &Actor, project: Uuid) -> Result<(), ApiError> {
    let found = state.db.json(actor.db(), "SELECT synchub.get_project($1, $2)", &[&project, &actor.name()]).await?;
    if !found["deleted_at"].is_null() {
        return Err(ApiError::NotFound("project not found".into()));
    }
    match found["role"].as_str() {
        Some("owner" | "editor") => Ok(()),
        _ => Err(ApiError::Forbidden("this needs the editor role".into())),
    }
}

/// Streams the body into an unnamed temporary file, at most `limit` bytes (413 beyond,
/// before any of it is read when the declared length already says so).
async fn receive(body: Body, declared: Option<u64>, limit: u64) -> Result<std::fs::File, ApiError> {
    let too_large = || ApiError::payload_too_large(format!("the archive is larger than {limit} bytes"));
    if declared.is_some_and(|length| length > limit) {
        return Err(too_large());
    }
    let file = tempfile::tempfile().map_err(ApiError::internal)?;
    let mut out = tokio::fs::File::from_std(file.try_clone().map_err(ApiError::internal)?);
    let mut chunks = body.into_data_stream();
    let mut received = 0u64;
    while let Some(chunk) = chunks.next().await {
        let chunk = chunk.map_err(|err| ApiError::InvalidRequest(format!("reading the request body: {err}")))?;
        received += chunk.len() as u64;
        if received > limit {
            return Err(too_large());
        }
        out.write_all(&chunk).await.map_err(ApiError::internal)?;
    }
    out.flush().await.map_err(ApiError::internal)?;
    Ok(file)
}

/// Reads and checks the whole archive (on a blocking thread): its files as the import's
/// jsonb, or the first problem.
fn read_upserts(archive: std::fs::File, limits: &Limits) -> Result<JsonbBytes, ApiError> {
    let read_limits = ReadLimits {
        max_entries: limits.max_files_per_project as usize,
        max_total_bytes: limits.max_bytes_per_user,
        max_file_bytes: limits.max_file_bytes as u64,
        ..ReadLimits::default()
    };
    let mut upserts = Upserts::new(limits.max_file_bytes);
    let archive = std::io::BufReader::new(archive);
    snapshot_builder::read_archive_into(archive, &read_limits, &mut upserts, ManifestRule::Optional).map_err(
        |err| match err {
            SinkError::Archive(err) => read_error(err),
            SinkError::Sink(err) => err,
        },
    )?;
    Ok(upserts.finish())
}

/// A refused archive, as the API answers it, naming the entry at fault.
fn read_error(err: ReadError) -> ApiError {
    let message = err.to_string();
    let limit_details = |limit: u64| Map::from_iter([("limit".to_string(), json!(limit))]);
    let answer = match &err {
        ReadError::Io(_) | ReadError::DestinationNotEmpty => return ApiError::internal(message),
        ReadError::InvalidPath { path, .. } => ApiError::InvalidPath { message, path: Some(path.clone()) },
        ReadError::TooManyEntries { limit } => ApiError::QuotaExceeded {
            message: format!("the archive has more files than a project may hold ({limit})"),
            details: limit_details(*limit as u64),
        },
        ReadError::FileTooLarge { limit, .. } | ReadError::TotalTooLarge { limit } => {
            ApiError::PayloadTooLarge { message, details: limit_details(*limit) }
        }
        ReadError::BadManifest(_) | ReadError::UnsupportedFormat(_) => {
            return ApiError::InvalidRequest(message).for_entry(MANIFEST_PATH);
        }
        _ => ApiError::InvalidRequest(message),
    };
    match err.entry() {
        Some(entry) => answer.for_entry(entry),
        None => answer,
    }
}

/// The import's jsonb `[{path, content, file_type?}]`, written as JSON text while the reader
/// inflates the archive, entry after entry (no JSON tree of the whole archive), and sent
/// as is.
#[derive(Debug)]
struct JsonbBytes(Vec<u8>);

impl ToSql for JsonbBytes {
    fn to_sql(&self, ty: &Type, out: &mut BytesMut) -> Result<IsNull, Box<dyn std::error::Error + Sync + Send>> {
        if *ty == Type::JSONB {
            // jsonb's binary format: a version byte, then the JSON text.
            out.put_u8(1);
        }
        out.extend_from_slice(&self.0);
        Ok(IsNull::No)
    }

    fn accepts(ty: &Type) -> bool {
        *ty == Type::JSONB || *ty == Type::JSON
    }

    to_sql_checked!();
}

/// The reader's sink: each entry's bytes, checked as text once complete (the reader has
/// then checked its size and hash), appended to the upserts.
struct Upserts {
    json: Vec<u8>,
    entries: usize,
    current: Vec<u8>,
    max_file_bytes: usize,
}

#[derive(serde::Serialize)]
struct Upsert<'a> {
    path: &'a str,
    content: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    file_type: Option<&'a str>,
}

impl Upserts {
    fn new(max_file_bytes: usize) -> Self {
        Upserts { json: b"[".to_vec(), entries: 0, current: Vec::new(), max_file_bytes }
    }

    fn finish(mut self) -> JsonbBytes {
        self.json.push(b']');
        JsonbBytes(self.json)
    }
}

impl EntrySink for Upserts {
    type Error = ApiError;

    fn begin(&mut self, _: &ManifestFile) -> Result<bool, ApiError> {
        self.current.clear();
        Ok(true)
    }

    fn write(&mut self, chunk: &[u8]) -> Result<(), ApiError> {
        self.current.extend_from_slice(chunk);
        Ok(())
    }

    fn finish(&mut self, file: &ManifestFile) -> Result<(), ApiError> {
        let entry = |err: ApiError| err.for_entry(&file.path);
        let content = std::str::from_utf8(&self.current)
            .map_err(|_| entry(ApiError::UnsupportedContent(format!("{:?} is not UTF-8 text", file.path))))?;
        check_content(content, self.max_file_bytes).map_err(entry)?;
        // An empty type (archives without a manifest) is inferred from the path.
        let file_type = Some(file.file_type.as_str()).filter(|t| !t.is_empty());
        check_file_type(file_type).map_err(entry)?;
        if self.entries > 0 {
            self.json.push(b',');
        }
        let upsert = Upsert { path: &file.path, content, file_type };
        serde_json::to_writer(&mut self.json, &upsert).map_err(ApiError::internal)?;
        self.entries += 1;
        Ok(())
    }
}
