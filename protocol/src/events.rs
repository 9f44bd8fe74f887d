//! The events of a project's log and their payloads: the `event` and `payload` of an
//! [`EventFrame`](crate::EventFrame), and of each entry of `GET …/events`.
//!
//! Receivers are tolerant: a payload field a hub leaves out reads as empty (`timestamp`,
//! `actor`, `file_type`) and unknown fields are ignored; an unknown event name parses to
//! `None` (see [`Event::parse`]).

use std::fmt;

use serde::{Deserialize, Serialize};

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
    /// A `file:update` carrying a delta instead of `content` (CONTRACT section 12). Only
    /// sockets receive it, so typed deserialization (`GET …/events`) never expects it;
    /// [`Event::parse`] tells the two apart by the `delta` field.
    #[serde(rename = "file:update", skip_deserializing)]
    FileDelta(FileDeltaPayload),
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
            FILE_UPDATE if payload.get("delta").is_some() => Event::FileDelta(FileDeltaPayload::deserialize(payload)?),
            FILE_UPDATE => Event::FileUpdate(FileUpdatePayload::deserialize(payload)?),
            FILE_DELETE => Event::FileDelete(FileDeletePayload::deserialize(payload)?),
            BULK_APPLY => Event::BulkApply(BulkApplyPayload::deserialize(payload)?),
            PROJECT_DELETED => Event::ProjectDeleted(ProjectDeletedPayload::deserialize(payload)?),
            _ => return Ok(None),
        }))
    }

    pub fn name(&self) -> &'static str {
        match self {
            Event::FileUpdate(_) | Event::FileDelta(_) => event_names::FILE_UPDATE,
            Event::FileDelete(_) => event_names::FILE_DELETE,
            Event::BulkApply(_) => event_names::BULK_APPLY,
            Event::ProjectDeleted(_) => event_names::PROJECT_DELETED,
        }
    }
}

/// A file's new current version: each entry of a bulk's `files`, and the body of `file:update`.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(test, derive(ts_rs::TS))]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct UpdatedFile {
    pub file_path: String,
    #[serde(default)]
    pub file_type: String,
    pub content: String,
    /// sha256 hex of `content`.
    pub content_hash: String,
    pub version: i64,
}

impl fmt::Debug for UpdatedFile {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("UpdatedFile")
            .field("file_path", &self.file_path)
            .field("file_type", &self.file_type)
            .field("content_len", &self.content.len())
            .field("content_hash", &self.content_hash)
            .field("version", &self.version)
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

/// `file:update` as a delta against `base_version` (CONTRACT section 12): sent only to a
/// socket that has seen `base_version` on this channel, and only when the delta is smaller
/// than half the content. The receiver applies `delta` to its copy of `base_version`
/// (whose sha256 is `base_hash`) and checks the result against `content_hash`; on any
/// mismatch it reads the file over HTTP.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(test, derive(ts_rs::TS))]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct FileDeltaPayload {
    pub file_path: String,
    #[serde(default)]
    pub file_type: String,
    pub version: i64,
    /// sha256 hex of the new content (after applying the delta).
    pub content_hash: String,
    pub base_version: i64,
    pub base_hash: String,
    /// A Fossil delta from `base_version`'s content to this version's, base64.
    pub delta: String,
    #[serde(default)]
    pub timestamp: String,
    #[serde(default)]
    pub actor: String,
    #[serde(default)]
    pub op_id: Option<String>,
}

/// Written by hand: the delta's literals are file content (lengths only).
impl fmt::Debug for FileDeltaPayload {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FileDeltaPayload")
            .field("file_path", &self.file_path)
            .field("version", &self.version)
            .field("content_hash", &self.content_hash)
            .field("base_version", &self.base_version)
            .field("base_hash", &self.base_hash)
            .field("delta_len", &self.delta.len())
            .field("actor", &self.actor)
            .finish()
    }
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
