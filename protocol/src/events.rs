//! The events of a project's log and their payloads: the `event` and `payload` of an
//! [`EventFrame`](crate::EventFrame), and of each entry of `GET …/events`.
//!
//! Receivers are tolerant: a payload field a hub leaves out reads as empty (`timestamp`,
//! `actor`, `file_type`) and unknown fields are ignored; an unknown event name parses to
//! `None` (see [`Event::parse`]).

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::SafeU64;

/// The event names.
pub mod event_names {
    pub const FILE_UPDATE: &str = "file:update";
    pub const FILE_DELETE: &str = "file:delete";
    pub const BULK_APPLY: &str = "bulk:apply";
    pub const PROJECT_DELETED: &str = "project:deleted";
}

/// An event with its payload, as `{"event": <name>, "payload": {...}}`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(test, derive(ts_rs::TS))]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(tag = "event", content = "payload")]
pub enum Event {
    #[serde(rename = "file:update")]
    FileUpdate(FileUpdatePayload),
    #[serde(rename = "file:delete")]
    FileDelete(FileDeletePayload),
    #[serde(rename = "bulk:apply")]
    BulkApply(BulkApplyPayload),
    #[serde(rename = "project:deleted")]
    ProjectDeleted(ProjectDeletedPayload),
}

impl Event {
    /// The payload of the event called `name`; `Ok(None)` for a name this version does not
    /// know (it still consumes its seq), an error when a known payload is malformed.
    pub fn parse(name: &str, payload: &serde_json::Value) -> Result<Option<Self>, serde_json::Error> {
        use event_names::*;
        Ok(Some(match name {
            FILE_UPDATE => Event::FileUpdate(FileUpdatePayload::deserialize(payload)?),
            FILE_DELETE => Event::FileDelete(FileDeletePayload::deserialize(payload)?),
            BULK_APPLY => Event::BulkApply(BulkApplyPayload::deserialize(payload)?),
            PROJECT_DELETED => Event::ProjectDeleted(ProjectDeletedPayload::deserialize(payload)?),
            _ => return Ok(None),
        }))
    }

    pub fn name(&self) -> &'static str {
        match self {
            Event::FileUpdate(_) => event_names::FILE_UPDATE,
            Event::FileDelete(_) => event_names::FILE_DELETE,
            Event::BulkApply(_) => event_names::BULK_APPLY,
            Event::ProjectDeleted(_) => event_names::PROJECT_DELETED,
        }
    }
}

/// The bytes of a binary file (CONTRACT section 13): content-addressed, held by the hub's
/// storage, fetched with `GET /v1/projects/{id}/blobs/{sha256}`.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(test, derive(ts_rs::TS))]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct BlobRef {
    /// Lowercase hex SHA-256 of the bytes.
    #[cfg_attr(feature = "schema", schemars(regex(pattern = "^[0-9a-f]{64}$")))]
    pub sha256: String,
    /// Length in bytes.
    pub size: SafeU64,
}

/// A file's new current version: each entry of a bulk's `files`, and the body of `file:update`.
/// A text file carries `content`; a binary file carries `blob` instead (and no `content`:
/// it reads as empty here, so check `blob` first).
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(test, derive(ts_rs::TS))]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(try_from = "UpdatedFileWire")]
pub struct UpdatedFile {
    pub file_path: String,
    #[serde(default)]
    pub file_type: String,
    // TypeScript keeps `content: string` until the client handles binary files (absent
    // there when `blob` is set).
    #[serde(default)]
    pub content: String,
    /// sha256 hex of the file's bytes (`content` as UTF-8, or the blob).
    pub content_hash: String,
    pub version: i64,
    /// Binary files only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(test, ts(optional))]
    pub blob: Option<BlobRef>,
}

/// [`UpdatedFile`] as received: `content` or `blob` must be there (an update carrying
/// neither, e.g. a delta of CONTRACT section 12, is not one this version can apply).
#[derive(Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[cfg_attr(feature = "schema", schemars(rename = "UpdatedFile"))]
struct UpdatedFileWire {
    file_path: String,
    #[serde(default)]
    file_type: String,
    /// Text files.
    content: Option<String>,
    /// sha256 hex of the file's bytes (`content` as UTF-8, or the blob).
    content_hash: String,
    version: i64,
    /// Binary files, instead of `content`.
    #[serde(default)]
    blob: Option<BlobRef>,
}

impl TryFrom<UpdatedFileWire> for UpdatedFile {
    type Error = &'static str;

    fn try_from(wire: UpdatedFileWire) -> Result<Self, Self::Error> {
        let content = match (wire.content, &wire.blob) {
            (Some(content), None) => content,
            (None, Some(_)) => String::new(),
            (Some(_), Some(_)) => return Err("an updated file has content or a blob, not both"),
            (None, None) => return Err("an updated file needs content or a blob"),
        };
        Ok(UpdatedFile {
            file_path: wire.file_path,
            file_type: wire.file_type,
            content,
            content_hash: wire.content_hash,
            version: wire.version,
            blob: wire.blob,
        })
    }
}

impl fmt::Debug for UpdatedFile {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("UpdatedFile")
            .field("file_path", &self.file_path)
            .field("file_type", &self.file_type)
            .field("content_len", &self.content.len())
            .field("content_hash", &self.content_hash)
            .field("version", &self.version)
            .field("blob", &self.blob)
            .finish()
    }
}

/// A file's tombstone version: each entry of a bulk's `deletes`, and the body of `file:delete`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(test, derive(ts_rs::TS))]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct DeletedFile {
    pub file_path: String,
    pub version: i64,
}

/// `file:update`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(test, derive(ts_rs::TS))]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct FileUpdatePayload {
    #[serde(flatten)]
    pub file: UpdatedFile,
    /// RFC 3339, the commit time.
    #[serde(default)]
    pub timestamp: String,
    /// The user (or `service`) that wrote it.
    #[serde(default)]
    pub actor: String,
    #[serde(default)]
    pub op_id: Option<String>,
}

/// `file:delete`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(test, derive(ts_rs::TS))]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct FileDeletePayload {
    #[serde(flatten)]
    pub file: DeletedFile,
    #[serde(default)]
    pub timestamp: String,
    #[serde(default)]
    pub actor: String,
    #[serde(default)]
    pub op_id: Option<String>,
}

/// `bulk:apply`: one atomic change of many files (also moves and base imports).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(test, derive(ts_rs::TS))]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct BulkApplyPayload {
    #[serde(default)]
    pub files: Vec<UpdatedFile>,
    #[serde(default)]
    pub deletes: Vec<DeletedFile>,
    #[serde(default)]
    pub timestamp: String,
    #[serde(default)]
    pub actor: String,
    #[serde(default)]
    pub op_id: Option<String>,
}

/// `project:deleted`: the project was tombstoned; nothing more follows on its channel.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(test, derive(ts_rs::TS))]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct ProjectDeletedPayload {
    #[serde(default)]
    pub timestamp: String,
}
