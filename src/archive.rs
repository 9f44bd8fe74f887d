//! Project archives (CONTRACT section 13), in the snapshot format (section 5).
//!
//! - `GET /v1/projects/{id}/archive` (any member): the current files as a zip, built by
//!   snapshot-builder from one consistent read into an unnamed temporary file, then
//!   streamed from it: the hub's memory stays flat whatever the project's size. Binary
//!   files' bytes come from blob storage; the manifest marks them `binary: true`.
//! - `POST /v1/projects/{id}/archive?mode=replace|merge` (editor): the body (a zip of at
//!   most `SYNCHUB_MAX_ARCHIVE_BYTES`) is streamed to a temporary file; the snapshot
//!   reader then checks every entry as the agent checks a snapshot (paths, sizes,
//!   compression ratio, symlinks, duplicates; sizes and hashes against the manifest when
//!   there is one). A file is binary when the manifest says `binary: true` or, without a
//!   manifest, when its bytes are not UTF-8 text without NUL; a file the manifest calls
//!   text must be text. The hub's memory stays flat whatever the archive's size: as the
//!   reader (a blocking thread) checks entries, they go through a small bounded channel to
//!   the request's one transaction, staged a few hundred at a time
//!   (`synchub.stage_archive_entries`), and binary files' bytes go from their temporary
//!   file to blob storage (once per content). Once the whole archive checked out, one call
//!   (`synchub.import_project_archive`) applies the staged entries as one change, one
//!   `bulk:apply`, and removes them. A bad entry answers with its name in the error's
//!   `entry` and the transaction rolls back: no file is written, nothing stays staged (a
//!   blob already stored is collected after the grace period, as no file references it).

use std::io::{Seek, SeekFrom, Write};

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
use tokio::sync::mpsc::Sender;
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
    // Without storage there are no binary files to fetch.
    let blobs = crate::blobs::fetcher(state).ok();
    read.build_with_blobs(meta, writer, blobs).await.map_err(service::build_error)?;
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
    let mut client = state.db.pool().get().await?;
    let tx = crate::db::begin(&mut client, actor.db()).await?;
    let import_id = Uuid::new_v4();
    let (sender, mut staged) = tokio::sync::mpsc::channel(STAGE_QUEUE);
    let limits = state.config.limits.clone();
    let reader = tokio::task::spawn_blocking(move || read_entries(archive, &limits, sender));
    let staging = async {
        let stage = tx.prepare_cached("SELECT synchub.stage_archive_entries($1, $2, $3, $4, $5)").await?;
        let actor_name = actor.name();
        while let Some(item) = staged.recv().await {
            match item {
                Staged::Entries { first, json } => {
                    tx.execute(&stage, &[&project, &actor_name, &import_id, &first, &json]).await?;
                }
                Staged::Binary(binary) => {
                    crate::blobs::put_file(&state, &actor, binary.bytes.path(), &binary.sha256, binary.size)
                        .await
                        .map_err(|err| err.for_entry(&binary.path))?;
                }
            }
        }
        Ok::<_, ApiError>(())
    }
    .await;
    // After a failure here, the reader stops at its next entry (nobody receives).
    drop(staged);
    let read = reader.await.map_err(ApiError::internal)?;
    // A failure to stage comes first: the reader's error is then only that it was stopped.
    staging?;
    read?;
    let replace = query.mode == ArchiveMode::Replace;
    let row = tx
        .query_one(
            "SELECT synchub.import_project_archive($1, $2, $3, $4, $5)",
            &[&project, &import_id, &replace, &actor.name(), &query.op_id],
        )
        .await?;
    let result: Value = row.column(0)?;
    tx.commit().await?;
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

/// Reads and checks the whole archive (on a blocking thread), sending its entries to be
/// staged as they are checked; the first problem ends it.
fn read_entries(mut archive: std::fs::File, limits: &Limits, sender: Sender<Staged>) -> Result<(), ApiError> {
    let read_limits = ReadLimits {
        max_entries: limits.max_files_per_project as usize,
        max_total_bytes: limits.max_bytes_per_user,
        max_file_bytes: limits.max_file_bytes as u64,
        max_binary_file_bytes: limits.max_blob_bytes,
        ..ReadLimits::default()
    };
    let mut entries = Entries::new(limits.max_file_bytes, has_manifest(&mut archive), sender);
    let archive = std::io::BufReader::new(archive);
    snapshot_builder::read_archive_into(archive, &read_limits, &mut entries, ManifestRule::Optional).map_err(
        |err| match err {
            SinkError::Archive(err) => read_error(err),
            SinkError::Sink(err) => err,
        },
    )?;
    entries.send_batch()
}

/// Whether the archive has a manifest (then its `binary` flags decide what is binary).
fn has_manifest(archive: &mut std::fs::File) -> bool {
    let found = snapshot_builder::has_manifest(&mut *archive);
    let _ = archive.seek(SeekFrom::Start(0));
    found
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

/// Entries one staging call carries at most.
const STAGE_ENTRIES: usize = 500;
/// JSON bytes after which a staging call is sent (one entry may take it past: a text file
/// is at most `max_file_bytes`, escaped).
const STAGE_BYTES: usize = 1024 * 1024;
/// Staging calls (or binary files) the reader may be ahead of the database by: with the
/// entry being read, this bounds what the hub holds of an archive.
const STAGE_QUEUE: usize = 2;

/// What the reader hands to the request's transaction.
enum Staged {
    /// One staging call: the archive ordinal of its first entry, and its entries.
    Entries { first: i32, json: JsonbBytes },
    /// A binary file's bytes, to be stored as a blob before the change is applied.
    Binary(Binary),
}

/// A staging call's jsonb `[{path, content | blob, file_type?}]`, written as JSON text while
/// the reader inflates the archive, entry after entry (no JSON tree), and sent as is.
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

/// A binary file of the archive: its bytes in a temporary file until stored as a blob.
struct Binary {
    path: String,
    sha256: String,
    size: u64,
    bytes: tempfile::NamedTempFile,
}

/// The reader's sink: each entry's bytes (in memory up to the text cap, then in a temporary
/// file: only a binary file may be larger), checked once complete (the reader has then
/// checked its size and hash) and appended to the next staging call: text as `content`,
/// binary files as a `blob` reference, their bytes sent for storage.
struct Entries {
    sender: Sender<Staged>,
    /// The next staging call's JSON array, without its closing bracket.
    json: Vec<u8>,
    /// Entries in `json`.
    batched: usize,
    /// The archive ordinal of the first entry in `json` (1-based).
    first: usize,
    current: Vec<u8>,
    spilled: Option<tempfile::NamedTempFile>,
    /// Whether the entry's bytes so far are text.
    text: TextCheck,
    /// The archive has a manifest: its `binary` flags decide, else the bytes do.
    declared: bool,
    max_file_bytes: usize,
}

#[derive(serde::Serialize)]
struct Upsert<'a> {
    path: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    content: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    blob: Option<BlobRef<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    file_type: Option<&'a str>,
}

#[derive(serde::Serialize)]
struct BlobRef<'a> {
    sha256: &'a str,
    size: u64,
}

impl Entries {
    fn new(max_file_bytes: usize, declared: bool, sender: Sender<Staged>) -> Self {
        Entries {
            sender,
            json: b"[".to_vec(),
            batched: 0,
            first: 1,
            current: Vec::new(),
            spilled: None,
            text: TextCheck::default(),
            declared,
            max_file_bytes,
        }
    }

    /// Hands something to the transaction, waiting while it is `STAGE_QUEUE` behind.
    fn send(&self, staged: Staged) -> Result<(), ApiError> {
        // Closed: the transaction failed and answers its own error.
        self.sender.blocking_send(staged).map_err(|_| ApiError::internal("archive import stopped"))
    }

    /// Sends the entries gathered so far as one staging call (none: nothing to send).
    fn send_batch(&mut self) -> Result<(), ApiError> {
        if self.batched == 0 {
            return Ok(());
        }
        let mut json = std::mem::replace(&mut self.json, b"[".to_vec());
        json.push(b']');
        let first = i32::try_from(self.first).map_err(ApiError::internal)?;
        self.first += self.batched;
        self.batched = 0;
        self.send(Staged::Entries { first, json: JsonbBytes(json) })
    }

    fn push(&mut self, upsert: &Upsert<'_>) -> Result<(), ApiError> {
        if self.batched > 0 {
            self.json.push(b',');
        }
        serde_json::to_writer(&mut self.json, upsert).map_err(ApiError::internal)?;
        self.batched += 1;
        if self.batched >= STAGE_ENTRIES || self.json.len() >= STAGE_BYTES {
            self.send_batch()?;
        }
        Ok(())
    }
}

/// Whether a stream of chunks is text as a file may hold it (UTF-8 without NUL), fed chunk
/// by chunk (a character may span two chunks).
#[derive(Default)]
struct TextCheck {
    failed: bool,
    /// The start of a character the last chunk ended inside.
    carry: Vec<u8>,
}

impl TextCheck {
    fn feed(&mut self, chunk: &[u8]) {
        if self.failed {
            return;
        }
        if chunk.contains(&0) {
            self.failed = true;
            return;
        }
        let mut bytes = std::mem::take(&mut self.carry);
        bytes.extend_from_slice(chunk);
        if let Err(err) = std::str::from_utf8(&bytes) {
            match err.error_len() {
                Some(_) => self.failed = true,
                None => self.carry = bytes[err.valid_up_to()..].to_vec(),
            }
        }
    }

    fn is_text(&self) -> bool {
        !self.failed && self.carry.is_empty()
    }
}

impl EntrySink for Entries {
    type Error = ApiError;

    fn begin(&mut self, _: &ManifestFile) -> Result<bool, ApiError> {
        self.current.clear();
        self.spilled = None;
        self.text = TextCheck::default();
        Ok(true)
    }

    fn write(&mut self, chunk: &[u8]) -> Result<(), ApiError> {
        self.text.feed(chunk);
        if self.spilled.is_none() && self.current.len() + chunk.len() > self.max_file_bytes {
            let mut file = tempfile::NamedTempFile::new().map_err(ApiError::internal)?;
            file.write_all(&self.current).map_err(ApiError::internal)?;
            self.current.clear();
            self.spilled = Some(file);
        }
        match &mut self.spilled {
            Some(file) => file.write_all(chunk).map_err(ApiError::internal),
            None => {
                self.current.extend_from_slice(chunk);
                Ok(())
            }
        }
    }

    fn finish(&mut self, file: &ManifestFile) -> Result<(), ApiError> {
        let entry = |err: ApiError| err.for_entry(&file.path);
        // An empty type (archives without a manifest) is inferred from the path.
        let file_type = Some(file.file_type.as_str()).filter(|t| !t.is_empty());
        check_file_type(file_type).map_err(entry)?;
        let spilled = self.spilled.take();
        let binary = if self.declared { file.binary } else { !self.text.is_text() };
        if binary {
            let bytes = match spilled {
                Some(bytes) => bytes,
                None => {
                    let mut bytes = tempfile::NamedTempFile::new().map_err(ApiError::internal)?;
                    bytes.write_all(&self.current).map_err(ApiError::internal)?;
                    bytes
                }
            };
            let blob = BlobRef { sha256: &file.sha256, size: file.size };
            self.push(&Upsert { path: &file.path, content: None, blob: Some(blob), file_type })?;
            let binary = Binary { path: file.path.clone(), sha256: file.sha256.clone(), size: file.size, bytes };
            return self.send(Staged::Binary(binary));
        }
        if spilled.is_some() {
            return Err(entry(ApiError::payload_too_large(format!(
                "a text file is at most {} bytes",
                self.max_file_bytes
            ))));
        }
        let current = std::mem::take(&mut self.current);
        let content = std::str::from_utf8(&current).map_err(|_| {
            entry(ApiError::UnsupportedContent(format!("{:?} is not UTF-8 text (the manifest says it is)", file.path)))
        })?;
        check_content(content, self.max_file_bytes).map_err(entry)?;
        self.push(&Upsert { path: &file.path, content: Some(content), blob: None, file_type })?;
        self.current = current;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::TextCheck;

    fn check(chunks: &[&[u8]]) -> bool {
        let mut text = TextCheck::default();
        chunks.iter().for_each(|chunk| text.feed(chunk));
        text.is_text()
    }

    #[test]
    fn text_is_told_from_binary_across_chunk_boundaries() {
        let e_acute = "é".as_bytes();
        assert!(check(&[b"caf", &e_acute[..1], &e_acute[1..], b" ok"]));
        assert!(check(&[]));
        assert!(!check(&[b"caf", &e_acute[..1]]), "ends inside a character");
        assert!(!check(&[b"caf\xe9 au lait"]), "Latin-1");
        assert!(!check(&[b"text", b"with\0NUL"]));
    }
}
