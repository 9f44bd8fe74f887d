//! Frames a client (editor tab, agent, bench) sends to the hub. The hub parses them
//! strictly: an unknown `type` or a missing field is an error; integers are [`SafeU64`].

use std::fmt;

use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::{BlobRef, Ref, SafeU64, Token};

/// Client → hub.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(test, derive(ts_rs::TS))]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ClientFrame {
    /// Authenticates a socket opened without a header (first frame, within 5 s), or
    /// replaces the token of an open one (same user or session only).
    Auth { token: Token },
    /// Subscribes to `channel`; every event with `seq > since` follows the `joined` answer.
    Join {
        #[serde(rename = "ref", default, skip_serializing_if = "Option::is_none")]
        #[cfg_attr(test, ts(optional = nullable))]
        reference: Option<Ref>,
        channel: String,
        /// `null` (or absent): live events only.
        #[serde(default)]
        #[cfg_attr(test, ts(optional = nullable))]
        since: Option<SafeU64>,
    },
    Leave {
        #[serde(rename = "ref", default, skip_serializing_if = "Option::is_none")]
        #[cfg_attr(test, ts(optional = nullable))]
        reference: Option<Ref>,
        channel: String,
    },
    Ping {
        #[serde(rename = "ref", default, skip_serializing_if = "Option::is_none")]
        #[cfg_attr(test, ts(optional = nullable))]
        reference: Option<Ref>,
    },
    /// After `join`: this socket's presence `meta` on `channel` (at most 1 KiB serialized,
    /// one per 100 ms; CONTRACT section 12). The first one makes the socket a member.
    Presence {
        #[serde(rename = "ref", default, skip_serializing_if = "Option::is_none")]
        #[cfg_attr(test, ts(optional = nullable))]
        reference: Option<Ref>,
        channel: String,
        #[cfg_attr(test, ts(type = "JsonValue"))]
        meta: serde_json::Value,
    },
    /// Agents: the highest seq now applied to the container's tree.
    Applied { channel: String, seq: SafeU64 },
    /// Creates or replaces one file; answered by an `ack`. Either `content`, or
    /// `base_version` + `delta` (a Fossil delta against that version, base64; refused with
    /// 409 when `base_version` is not current, as `PATCH …/files/{path}`).
    Upsert {
        #[serde(rename = "ref", default, skip_serializing_if = "Option::is_none")]
        #[cfg_attr(test, ts(optional = nullable))]
        reference: Option<Ref>,
        channel: String,
        path: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        #[cfg_attr(test, ts(optional = nullable))]
        content: Option<String>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        #[cfg_attr(test, ts(optional = nullable))]
        base_version: Option<SafeU64>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        #[cfg_attr(test, ts(optional = nullable))]
        delta: Option<String>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        #[cfg_attr(test, ts(optional = nullable))]
        file_type: Option<String>,
        /// Absent: unconditional; 0: must not exist yet; N: the current version must be N.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        #[cfg_attr(test, ts(optional = nullable))]
        expected_version: Option<SafeU64>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        #[cfg_attr(test, ts(optional = nullable))]
        op_id: Option<Uuid>,
    },
    /// Deletes one file; answered by an `ack`.
    Delete {
        #[serde(rename = "ref", default, skip_serializing_if = "Option::is_none")]
        #[cfg_attr(test, ts(optional = nullable))]
        reference: Option<Ref>,
        channel: String,
        path: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        #[cfg_attr(test, ts(optional = nullable))]
        expected_version: Option<SafeU64>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        #[cfg_attr(test, ts(optional = nullable))]
        op_id: Option<Uuid>,
    },
    /// Upserts and deletes, all or nothing, as one change; answered by an `ack`.
    Bulk {
        #[serde(rename = "ref", default, skip_serializing_if = "Option::is_none")]
        #[cfg_attr(test, ts(optional = nullable))]
        reference: Option<Ref>,
        channel: String,
        #[serde(default)]
        #[cfg_attr(test, ts(as = "Option<_>", optional))]
        upserts: Vec<BulkUpsert>,
        #[serde(default)]
        #[cfg_attr(test, ts(as = "Option<_>", optional))]
        deletes: Vec<BulkDelete>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        #[cfg_attr(test, ts(optional = nullable))]
        op_id: Option<Uuid>,
    },
}

impl ClientFrame {
    /// The frame as the text of one WebSocket message.
    pub fn to_text(&self) -> String {
        crate::to_text(self)
    }
}

/// One upsert of a `bulk` write (the same entry as in `POST …/files:bulk`): text
/// `content`, or a binary file's `blob` the hub holds (CONTRACT section 13; `content` is
/// then empty here and left out on the wire).
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(test, derive(ts_rs::TS))]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(try_from = "BulkUpsertWire", into = "BulkUpsertWire")]
pub struct BulkUpsert {
    /// A file path (CONTRACT section 7).
    #[cfg_attr(feature = "schema", schemars(length(min = 1, max = 1024)))]
    pub path: String,
    pub content: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(test, ts(optional = nullable))]
    pub file_type: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(test, ts(optional = nullable))]
    pub expected_version: Option<SafeU64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(test, ts(optional))]
    pub blob: Option<BlobRef>,
}

/// [`BulkUpsert`] on the wire: exactly one of `content` and `blob`.
#[derive(Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[cfg_attr(feature = "schema", schemars(rename = "BulkUpsert"))]
struct BulkUpsertWire {
    /// A file path (CONTRACT section 7).
    #[cfg_attr(feature = "schema", schemars(length(min = 1, max = 1024)))]
    path: String,
    /// Text files.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    content: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    file_type: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    expected_version: Option<SafeU64>,
    /// Binary files, instead of `content`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    blob: Option<BlobRef>,
}

impl TryFrom<BulkUpsertWire> for BulkUpsert {
    type Error = &'static str;

    fn try_from(wire: BulkUpsertWire) -> Result<Self, Self::Error> {
        let content = match (wire.content, &wire.blob) {
            (Some(content), None) => content,
            (None, Some(_)) => String::new(),
            (Some(_), Some(_)) => return Err("an upsert has content or a blob, not both"),
            (None, None) => return Err("missing field `content` (or `blob`)"),
        };
        Ok(BulkUpsert {
            path: wire.path,
            content,
            file_type: wire.file_type,
            expected_version: wire.expected_version,
            blob: wire.blob,
        })
    }
}

impl From<BulkUpsert> for BulkUpsertWire {
    fn from(upsert: BulkUpsert) -> Self {
        BulkUpsertWire {
            path: upsert.path,
            content: upsert.blob.is_none().then_some(upsert.content),
            file_type: upsert.file_type,
            expected_version: upsert.expected_version,
            blob: upsert.blob,
        }
    }
}

/// One delete of a `bulk` write.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(test, derive(ts_rs::TS))]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct BulkDelete {
    /// A file path (CONTRACT section 7).
    #[cfg_attr(feature = "schema", schemars(length(min = 1, max = 1024)))]
    pub path: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(test, ts(optional = nullable))]
    pub expected_version: Option<SafeU64>,
}

impl fmt::Debug for BulkUpsert {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BulkUpsert")
            .field("path", &self.path)
            .field("content_len", &self.content.len())
            .field("file_type", &self.file_type)
            .field("expected_version", &self.expected_version)
            .field("blob", &self.blob)
            .finish()
    }
}

/// Written by hand: tokens and file contents stay out of logs (lengths only).
impl fmt::Debug for ClientFrame {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ClientFrame::Auth { token } => f.debug_struct("Auth").field("token", token).finish(),
            ClientFrame::Join { reference, channel, since } => {
                f.debug_struct("Join").field("ref", reference).field("channel", channel).field("since", since).finish()
            }
            ClientFrame::Leave { reference, channel } => {
                f.debug_struct("Leave").field("ref", reference).field("channel", channel).finish()
            }
            ClientFrame::Ping { reference } => f.debug_struct("Ping").field("ref", reference).finish(),
            ClientFrame::Presence { reference, channel, meta } => f
                .debug_struct("Presence")
                .field("ref", reference)
                .field("channel", channel)
                .field("meta_len", &meta.to_string().len())
                .finish(),
            ClientFrame::Applied { channel, seq } => {
                f.debug_struct("Applied").field("channel", channel).field("seq", seq).finish()
            }
            ClientFrame::Upsert {
                reference,
                channel,
                path,
                content,
                base_version,
                delta,
                file_type,
                expected_version,
                op_id,
            } => f
                .debug_struct("Upsert")
                .field("ref", reference)
                .field("channel", channel)
                .field("path", path)
                .field("content_len", &content.as_ref().map(String::len))
                .field("base_version", base_version)
                .field("delta_len", &delta.as_ref().map(String::len))
                .field("file_type", file_type)
                .field("expected_version", expected_version)
                .field("op_id", op_id)
                .finish(),
            ClientFrame::Delete { reference, channel, path, expected_version, op_id } => f
                .debug_struct("Delete")
                .field("ref", reference)
                .field("channel", channel)
                .field("path", path)
                .field("expected_version", expected_version)
                .field("op_id", op_id)
                .finish(),
            ClientFrame::Bulk { reference, channel, upserts, deletes, op_id } => f
                .debug_struct("Bulk")
                .field("ref", reference)
                .field("channel", channel)
                .field("upserts", upserts)
                .field("deletes", deletes)
                .field("op_id", op_id)
                .finish(),
        }
    }
}
