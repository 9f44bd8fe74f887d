//! The HTTP bodies of CONTRACT section 3: every request the hub parses and every JSON answer
//! it builds, defined once. The hub deserializes requests into these and builds its answers
//! from them; `/openapi.json` documents them (feature `schema`), and the TypeScript client's
//! types are generated from them (`clients/typescript/src/generated/protocol.ts`).
//!
//! Integers the client sends are [`SafeU64`] (0..=2^53−1); integers the hub answers are
//! `i64`. Timestamps are RFC 3339 text. The write answers shared with the socket's `ack`
//! ([`PutFileResponse`](crate::PutFileResponse), [`DeleteFileResponse`](crate::DeleteFileResponse),
//! [`BulkWriteResponse`](crate::BulkWriteResponse)) live in `server.rs`.

use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::{BlobRef, BulkDelete, BulkUpsert, EventFrame, SafeU64};

// ---- Projects ---------------------------------------------------------------------------

/// A member's role in a project.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(test, derive(ts_rs::TS))]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "snake_case")]
pub enum Role {
    Owner,
    Editor,
    Viewer,
}

/// Where a project's files come from: `{"kind":"cloud"}` or a GitHub repository.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(test, derive(ts_rs::TS))]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum ProjectSource {
    Cloud,
    Github {
        /// `owner/name`.
        #[serde(default)]
        repo: Option<String>,
        /// The branch (default `main`).
        #[serde(rename = "ref", default)]
        reference: Option<String>,
        /// The commit the project's base was taken at.
        #[serde(default)]
        base_commit: Option<String>,
    },
}

/// `GET /v1/projects?include_deleted=true`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct ProjectListQuery {
    /// Also list tombstoned projects.
    #[serde(default)]
    pub include_deleted: bool,
}

/// Each entry of `GET /v1/projects`, newest `updated_at` first.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(test, derive(ts_rs::TS))]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct ProjectSummary {
    pub id: Uuid,
    pub name: String,
    pub role: Role,
    pub revision: i64,
    pub updated_at: String,
    pub deleted_at: Option<String>,
}

/// `GET /v1/projects/{id}`, and the answer of create, rename, delete and restore.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(test, derive(ts_rs::TS))]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct Project {
    pub id: Uuid,
    pub name: String,
    pub role: Role,
    /// The owner's user id.
    pub owner: String,
    pub source: ProjectSource,
    pub revision: i64,
    pub file_count: i64,
    pub bytes: i64,
    pub last_seq: i64,
    pub created_at: String,
    pub updated_at: String,
    pub deleted_at: Option<String>,
}

/// `POST /v1/projects`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(test, derive(ts_rs::TS))]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct CreateProjectRequest {
    /// Chosen by the client for a project created offline; the hub picks one otherwise.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(test, ts(optional = nullable))]
    pub id: Option<Uuid>,
    /// 1 to 200 characters, not only blanks.
    #[cfg_attr(feature = "schema", schemars(length(min = 1, max = 200), regex(pattern = r"\S")))]
    pub name: String,
    /// Default `{"kind":"cloud"}`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(test, ts(optional = nullable))]
    pub source: Option<ProjectSource>,
}

/// `PATCH /v1/projects/{id}`: a stale `base_revision` is 409 `revision_conflict`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(test, derive(ts_rs::TS))]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct RenameProjectRequest {
    #[cfg_attr(feature = "schema", schemars(length(min = 1, max = 200), regex(pattern = r"\S")))]
    pub name: String,
    pub base_revision: SafeU64,
}

/// Each entry of `GET /v1/projects/{id}/members`, and the answer of `PUT …/members/{user_id}`
/// (which has no `created_at`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(test, derive(ts_rs::TS))]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct Member {
    pub user_id: String,
    pub role: Role,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(test, ts(optional))]
    pub created_at: Option<String>,
}

/// `PUT /v1/projects/{id}/members/{user_id}`: `owner`, `editor` or `viewer`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(test, derive(ts_rs::TS))]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct SetMemberRequest {
    // Text, not `Role`: the database names the allowed roles in its own 400.
    #[cfg_attr(feature = "schema", schemars(with = "Role"))]
    pub role: String,
}

// ---- Files ------------------------------------------------------------------------------

/// `GET /v1/projects/{id}/files?include_content=true`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct FileListQuery {
    /// Include every file's `content`.
    #[serde(default)]
    pub include_content: bool,
}

/// `GET /v1/projects/{id}/files`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(test, derive(ts_rs::TS))]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct FileListResponse {
    /// The project's `last_seq` at the moment of the same consistent read.
    pub cursor: i64,
    pub files: Vec<FileEntry>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(test, derive(ts_rs::TS))]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct FileEntry {
    pub path: String,
    pub file_type: String,
    pub content_hash: String,
    pub version: i64,
    pub size: i64,
    pub updated_at: String,
    /// Only with `include_content=true` (never for binary files).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(test, ts(optional))]
    pub content: Option<String>,
    /// Binary files only (CONTRACT section 13).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(test, ts(optional))]
    pub blob: Option<BlobRef>,
}

/// `GET /v1/projects/{id}/files/{path}`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(test, derive(ts_rs::TS))]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct FileResponse {
    pub path: String,
    pub file_type: String,
    /// Text files only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(test, ts(optional))]
    pub content: Option<String>,
    pub content_hash: String,
    pub version: i64,
    pub size: i64,
    pub updated_at: String,
    /// True for a binary file: it has `blob` and `url` instead of `content`.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    #[cfg_attr(test, ts(as = "Option<bool>", optional))]
    pub binary: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(test, ts(optional))]
    pub blob: Option<BlobRef>,
    /// A signed, expiring URL of the bytes (binary files).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(test, ts(optional))]
    pub url: Option<String>,
    /// When `url` expires (RFC 3339).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(test, ts(optional))]
    pub url_expires_at: Option<String>,
}

/// `PUT /v1/projects/{id}/files/{path}` of a binary file whose blob the hub holds (see
/// `POST /v1/projects/{id}/blobs`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(test, derive(ts_rs::TS))]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(deny_unknown_fields)]
pub struct PutBlobFileRequest {
    pub blob: BlobRef,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(test, ts(optional = nullable))]
    pub file_type: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(test, ts(optional = nullable))]
    pub expected_version: Option<SafeU64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(test, ts(optional = nullable))]
    pub op_id: Option<Uuid>,
}

/// The query of `PUT /v1/projects/{id}/files/{path}` with `Content-Type:
/// application/octet-stream` (the bytes are the body).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct PutBinaryQuery {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub file_type: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expected_version: Option<SafeU64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub op_id: Option<Uuid>,
}

/// The body of `PUT /v1/projects/{id}/files/{path}` as JSON: text content, or a blob.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(test, derive(ts_rs::TS))]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(untagged)]
pub enum PutFileBody {
    Text(PutFileRequest),
    Blob(PutBlobFileRequest),
}

/// `POST /v1/projects/{id}/blobs`: announce a binary file's bytes before uploading them.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(test, derive(ts_rs::TS))]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct BlobUploadRequest {
    /// Lowercase hex SHA-256 of the bytes.
    pub sha256: String,
    pub size: SafeU64,
}

/// `{exists: true}` when the hub holds the blob already; else where to `PUT` the bytes
/// (a signed, expiring URL) before referencing them in `PUT …/files/{path}` `{blob}`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(test, derive(ts_rs::TS))]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct BlobUploadResponse {
    pub exists: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(test, ts(optional))]
    pub upload_url: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(test, ts(optional))]
    pub expires_at: Option<String>,
}

/// `PUT /v1/projects/{id}/files/{path}`. `expected_version`: absent = unconditional, `0` =
/// must not exist, `N` = must be at version N (else 409 `version_conflict`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(test, derive(ts_rs::TS))]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct PutFileRequest {
    pub content: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(test, ts(optional = nullable))]
    pub file_type: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(test, ts(optional = nullable))]
    pub expected_version: Option<SafeU64>,
    /// Makes the write idempotent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(test, ts(optional = nullable))]
    pub op_id: Option<Uuid>,
}

/// `PATCH /v1/projects/{id}/files/{path}` (CONTRACT section 12): the new content as a
/// Fossil delta (base64) against `base_version`, which must be the current version (else
/// 409 `version_conflict`); a delta that does not apply, or whose result is not valid
/// content, is 400 and nothing is written. Answered like `PUT`.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(test, derive(ts_rs::TS))]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct PatchFileRequest {
    pub base_version: SafeU64,
    /// A Fossil delta from `base_version`'s content to the new content, base64.
    pub delta: String,
    /// Makes the write idempotent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(test, ts(optional = nullable))]
    pub op_id: Option<Uuid>,
}

impl std::fmt::Debug for PatchFileRequest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PatchFileRequest")
            .field("base_version", &self.base_version)
            .field("delta_len", &self.delta.len())
            .field("op_id", &self.op_id)
            .finish()
    }
}

/// `DELETE /v1/projects/{id}/files/{path}?expected_version=N&op_id=U`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct DeleteFileQuery {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expected_version: Option<SafeU64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub op_id: Option<Uuid>,
}

/// `POST /v1/projects/{id}/files:bulk`: all or nothing.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(test, derive(ts_rs::TS))]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct BulkRequest {
    #[serde(default)]
    #[cfg_attr(test, ts(as = "Option<_>", optional))]
    pub upserts: Vec<BulkUpsert>,
    #[serde(default)]
    #[cfg_attr(test, ts(as = "Option<_>", optional))]
    pub deletes: Vec<BulkDelete>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(test, ts(optional = nullable))]
    pub op_id: Option<Uuid>,
}

/// `POST /v1/projects/{id}/files:move`: one atomic change (one `bulk:apply`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(test, derive(ts_rs::TS))]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct MoveFileRequest {
    #[cfg_attr(feature = "schema", schemars(length(min = 1, max = 1024)))]
    pub from: String,
    #[cfg_attr(feature = "schema", schemars(length(min = 1, max = 1024)))]
    pub to: String,
    /// The version `from` must be at.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(test, ts(optional = nullable))]
    pub expected_version: Option<SafeU64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(test, ts(optional = nullable))]
    pub op_id: Option<Uuid>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(test, derive(ts_rs::TS))]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct MoveFileResponse {
    pub from: String,
    pub to: String,
    pub seq: Option<i64>,
    /// The version of the file at `to`.
    pub version: Option<i64>,
}

/// `GET /v1/projects/{id}/events?since=SEQ&limit=N`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct EventsQuery {
    /// Events after this seq.
    pub since: SafeU64,
    /// At most this many (default 100, at most 1000).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub limit: Option<SafeU64>,
}

/// `GET /v1/projects/{id}/events`: the socket's event frames, oldest first.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[cfg_attr(test, derive(ts_rs::TS))]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct EventsPage {
    #[cfg_attr(test, ts(as = "Vec<crate::typescript::LoggedEventShape>"))]
    pub events: Vec<LoggedEvent>,
    /// The `since` of the next page.
    pub next: i64,
    /// The oldest seq still in the log.
    pub oldest_seq: Option<i64>,
}

/// An event frame as the socket sends it, `type` included.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename = "event")]
pub struct LoggedEvent {
    #[serde(flatten)]
    pub frame: EventFrame,
}

#[cfg(feature = "schema")]
impl schemars::JsonSchema for LoggedEvent {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "EventFrame".into()
    }

    fn json_schema(generator: &mut schemars::SchemaGenerator) -> schemars::Schema {
        /// The shape of a logged event: the typed union of event names and payloads.
        #[derive(schemars::JsonSchema)]
        #[allow(dead_code)]
        struct Shape {
            #[schemars(extend("const" = "event"))]
            r#type: String,
            channel: String,
            seq: i64,
            #[serde(flatten)]
            event: crate::Event,
        }
        Shape::json_schema(generator)
    }
}

/// `PUT /v1/projects/{id}/base` (GitHub-linked projects).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(test, derive(ts_rs::TS))]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct SetBaseRequest {
    pub commit: String,
    pub files: Vec<BaseFile>,
    /// Default true: the project's files become exactly this tree.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(test, ts(optional = nullable))]
    pub apply: Option<bool>,
}

#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(test, derive(ts_rs::TS))]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct BaseFile {
    #[cfg_attr(feature = "schema", schemars(length(min = 1, max = 1024)))]
    pub path: String,
    pub content: String,
}

impl std::fmt::Debug for BaseFile {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BaseFile").field("path", &self.path).field("content_len", &self.content.len()).finish()
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(test, derive(ts_rs::TS))]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct SetBaseResponse {
    pub base_commit: String,
    pub file_count: i64,
    pub applied: bool,
    pub seq: Option<i64>,
}

/// `GET /v1/projects/{id}/changes`: the uncommitted work relative to the base.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(test, derive(ts_rs::TS))]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct ChangesResponse {
    pub base_commit: Option<String>,
    pub changes: Vec<Change>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(test, derive(ts_rs::TS))]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct Change {
    pub path: String,
    pub status: ChangeStatus,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(test, derive(ts_rs::TS))]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "snake_case")]
pub enum ChangeStatus {
    Added,
    Modified,
    Deleted,
}

// ---- Editor state -----------------------------------------------------------------------

/// `GET /v1/projects/{id}/editor-state` (`state` null and `revision` 0 when none), and the
/// `server` copy of a 409 `revision_conflict`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[cfg_attr(test, derive(ts_rs::TS))]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct EditorStateResponse {
    pub state: serde_json::Value,
    pub revision: i64,
    pub updated_at: Option<String>,
}

/// `PUT /v1/projects/{id}/editor-state`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[cfg_attr(test, derive(ts_rs::TS))]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct PutEditorStateRequest {
    pub state: serde_json::Value,
    pub base_revision: SafeU64,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(test, derive(ts_rs::TS))]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct PutEditorStateResponse {
    pub revision: i64,
    pub updated_at: String,
}

// ---- Orchestrator -----------------------------------------------------------------------

/// `POST /v1/projects/{id}/sessions` (the body may be left out).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(test, derive(ts_rs::TS))]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct CreateSessionRequest {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(test, ts(optional = nullable))]
    pub ttl_seconds: Option<SafeU64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(test, ts(optional = nullable))]
    pub max_lifetime_seconds: Option<SafeU64>,
}

/// `POST /v1/projects/{id}/sessions`: everything a preview container needs.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(test, derive(ts_rs::TS))]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct SessionResponse {
    pub session_id: Uuid,
    pub snapshot: SnapshotResponse,
    pub token: crate::Token,
    pub token_expires_at: String,
    pub env: SessionEnv,
}

/// The environment of a preview container.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(test, derive(ts_rs::TS))]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[allow(non_snake_case)]
pub struct SessionEnv {
    pub SYNCHUB_URL: String,
    pub PROJECT_ID: Uuid,
    pub SESSION_ID: Uuid,
    pub SNAPSHOT_URL: String,
    pub REALTIME_TOKEN: crate::Token,
}

/// `POST /v1/projects/{id}/snapshots` (201) and `GET …/snapshots/latest`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(test, derive(ts_rs::TS))]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct SnapshotResponse {
    pub snapshot_id: Uuid,
    /// A signed, expiring URL of the zip.
    pub url: String,
    pub url_expires_at: String,
    pub cursor: i64,
    pub sha256: String,
    pub bytes: i64,
    pub file_count: i64,
    /// True when nothing changed since the last snapshot (no new zip was built).
    pub reused: bool,
}

/// `POST /v1/projects/{id}/tokens`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(test, derive(ts_rs::TS))]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct MintTokenRequest {
    pub session_id: Uuid,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(test, ts(optional = nullable))]
    pub ttl_seconds: Option<SafeU64>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(test, derive(ts_rs::TS))]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct MintTokenResponse {
    pub token: crate::Token,
    pub expires_at: String,
    pub channel: String,
}

/// `POST /v1/tokens/refresh`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(test, derive(ts_rs::TS))]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct RefreshTokenResponse {
    pub token: crate::Token,
    pub expires_at: String,
}

/// `GET /v1/sessions/{session_id}`: has the preview container caught up?
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(test, derive(ts_rs::TS))]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct SessionStatus {
    pub session_id: Uuid,
    pub project_id: Uuid,
    pub connected: bool,
    pub applied_seq: Option<i64>,
    pub project_last_seq: i64,
    pub last_seen_at: Option<String>,
    pub expires_at: String,
}

/// `GET /v1/projects/{id}/files/{path}` query: `version` reads that version of the file
/// (CONTRACT section 14); `before` and `limit` page `…/files/{path}/versions`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct FileReadQuery {
    /// Read this version instead of the current one (410 `history_trimmed` when retention
    /// removed it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<SafeU64>,
    /// Versions listing: only versions below this one (the previous page's `next`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub before: Option<SafeU64>,
    /// Versions listing: at most this many (default 100, at most 1000).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub limit: Option<SafeU64>,
}

/// One version of a file in `GET …/files/{path}/versions`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(test, derive(ts_rs::TS))]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct FileVersion {
    pub version: i64,
    /// Null for a deletion.
    pub content_hash: Option<String>,
    pub size: i64,
    pub binary: bool,
    /// This version is the file's deletion.
    pub deleted: bool,
    /// Who wrote it.
    pub actor: String,
    pub created_at: String,
}

/// `GET /v1/projects/{id}/files/{path}/versions[?before=VERSION&limit=N]`: newest first.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(test, derive(ts_rs::TS))]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct FileVersionsResponse {
    pub versions: Vec<FileVersion>,
    /// The `before` of the next page; null when this page is the last.
    pub next: Option<i64>,
}

/// `POST /v1/projects/{id}/files:restore`: a new current version with the content of
/// `version` (one `file:update`). `expected_version` and `op_id` as for a write.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(test, derive(ts_rs::TS))]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct RestoreFileRequest {
    #[cfg_attr(feature = "schema", schemars(length(min = 1, max = 1024)))]
    pub path: String,
    pub version: SafeU64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(test, ts(optional = nullable))]
    pub expected_version: Option<SafeU64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(test, ts(optional = nullable))]
    pub op_id: Option<Uuid>,
}

// ---- Archives ---------------------------------------------------------------------------

/// How an uploaded archive meets the project's files.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "snake_case")]
pub enum ArchiveMode {
    /// The project's files become exactly the archive's: files it lacks are deleted.
    Replace,
    /// The archive's files are created or replaced; the others are kept.
    Merge,
}

/// `POST /v1/projects/{id}/archive?mode=replace|merge&op_id=U` (the body is the zip).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct ArchiveImportQuery {
    pub mode: ArchiveMode,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub op_id: Option<Uuid>,
}
