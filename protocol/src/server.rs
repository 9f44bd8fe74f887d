//! Frames the hub sends. Receivers are tolerant: an unknown `type` parses to
//! [`ServerFrame::Unknown`], an event's payload is parsed only when asked
//! ([`EventFrame::event`]), unknown fields are ignored.

use std::fmt;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::{ErrorBody, Event, PresenceDiff, PresenceState, Ref};

/// Hub → client.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[cfg_attr(test, derive(ts_rs::TS))]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ServerFrame {
    /// The answer to every accepted `auth` frame.
    Authed {
        /// RFC 3339: when the token expires (the socket is closed with 4009 then).
        expires_at: String,
    },
    Joined {
        #[serde(rename = "ref", default)]
        reference: Option<Ref>,
        channel: String,
        /// The project's `last_seq` when the join was served.
        cursor: i64,
    },
    Left {
        #[serde(rename = "ref", default)]
        reference: Option<Ref>,
        channel: String,
    },
    /// `since` is older than the hub's retention: reload (rehydrate), then join again.
    ResyncRequired {
        channel: String,
        oldest_seq: i64,
    },
    Pong {
        #[serde(rename = "ref", default)]
        reference: Option<Ref>,
    },
    /// The answer to a write.
    Ack(AckFrame),
    /// A refused request that is not a write (a join, an unreadable frame).
    Error(ErrorFrame),
    Event(EventFrame),
    /// Everyone present on a channel, once after its join (CONTRACT section 12).
    PresenceState(PresenceState),
    /// Who joined, left or changed their `meta` since.
    PresenceDiff(PresenceDiff),
    /// A frame type this version does not know (receivers ignore it).
    #[serde(other)]
    #[cfg_attr(test, ts(skip))]
    Unknown,
}

impl ServerFrame {
    /// Parses the text of one WebSocket message.
    pub fn parse(text: &str) -> Result<Self, serde_json::Error> {
        serde_json::from_str(text)
    }

    /// The frame as the text of one WebSocket message.
    pub fn to_text(&self) -> String {
        crate::to_text(self)
    }
}

/// `{"type":"ack","ref","ok":true,...result}` or `{"type":"ack","ref","ok":false,"error"}`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[cfg_attr(test, derive(ts_rs::TS))]
#[serde(untagged)]
pub enum AckFrame {
    Ok(AckOk),
    Err(AckErr),
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[cfg_attr(test, derive(ts_rs::TS))]
pub struct AckOk {
    #[serde(rename = "ref", default)]
    pub reference: Option<Ref>,
    pub ok: True,
    /// What the same write answers over HTTP.
    #[serde(flatten)]
    pub result: WriteResult,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[cfg_attr(test, derive(ts_rs::TS))]
pub struct AckErr {
    #[serde(rename = "ref", default)]
    pub reference: Option<Ref>,
    pub ok: False,
    pub error: ErrorBody,
}

/// The answer of a write (`upsert` → [`PutFileResponse`], `delete` → [`DeleteFileResponse`],
/// `bulk` → [`BulkWriteResponse`]), over HTTP and inside an `ack`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(test, derive(ts_rs::TS))]
#[serde(untagged)]
pub enum WriteResult {
    Bulk(BulkWriteResponse),
    Put(PutFileResponse),
    Delete(DeleteFileResponse),
}

/// `PUT …/files/{path}` and `upsert`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(test, derive(ts_rs::TS))]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct PutFileResponse {
    pub path: String,
    pub version: i64,
    pub content_hash: String,
    /// The change's seq (for a write that changed nothing: the seq its state dates from).
    pub seq: Option<i64>,
}

/// `DELETE …/files/{path}` and `delete`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(test, derive(ts_rs::TS))]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct DeleteFileResponse {
    pub path: String,
    pub version: i64,
    pub seq: Option<i64>,
}

/// `POST …/files:bulk` and `bulk`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(test, derive(ts_rs::TS))]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct BulkWriteResponse {
    pub seq: Option<i64>,
    pub files: Vec<WrittenFile>,
    pub deleted: Vec<DeletedPath>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(test, derive(ts_rs::TS))]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct WrittenFile {
    pub path: String,
    pub version: i64,
    pub content_hash: String,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(test, derive(ts_rs::TS))]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct DeletedPath {
    pub path: String,
    pub version: i64,
}

/// `{"type":"error","ref","channel","error":{code, message, ...}}`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[cfg_attr(test, derive(ts_rs::TS))]
pub struct ErrorFrame {
    #[serde(rename = "ref", default)]
    pub reference: Option<Ref>,
    /// The channel a refused join named.
    #[serde(default)]
    pub channel: Option<String>,
    pub error: ErrorBody,
}

/// `{"type":"event","channel","seq","event","payload"}`. The payload stays JSON until
/// [`EventFrame::event`] parses it, so a receiver skipping a duplicate does not parse it
/// and an event name it does not know still consumes its seq. (Its TypeScript type is the
/// typed union [`Event`] with `channel` and `seq`.)
#[derive(Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(test, derive(ts_rs::TS), ts(as = "crate::typescript::EventFrameShape"))]
pub struct EventFrame {
    pub channel: String,
    pub seq: i64,
    pub event: String,
    #[serde(default)]
    pub payload: serde_json::Value,
}

impl EventFrame {
    /// The typed event; `Ok(None)` for an event name this version does not know.
    pub fn event(&self) -> Result<Option<Event>, serde_json::Error> {
        Event::parse(&self.event, &self.payload)
    }
}

impl fmt::Debug for EventFrame {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EventFrame")
            .field("channel", &self.channel)
            .field("seq", &self.seq)
            .field("event", &self.event)
            .finish_non_exhaustive()
    }
}

/// `true`, and only `true` (the `ok` of a successful `ack`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[cfg_attr(test, derive(ts_rs::TS), ts(type = "true"))]
pub struct True;

/// `false`, and only `false` (the `ok` of a refused `ack`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[cfg_attr(test, derive(ts_rs::TS), ts(type = "false"))]
pub struct False;

macro_rules! bool_literal {
    ($name:ident, $value:literal) => {
        impl Serialize for $name {
            fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
                serializer.serialize_bool($value)
            }
        }

        impl<'de> Deserialize<'de> for $name {
            fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
                if bool::deserialize(deserializer)? == $value {
                    Ok($name)
                } else {
                    Err(serde::de::Error::custom(concat!("expected ", stringify!($value))))
                }
            }
        }
    };
}

bool_literal!(True, true);
bool_literal!(False, false);
