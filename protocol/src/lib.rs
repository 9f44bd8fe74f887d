//! synchub's wire protocol (CONTRACT section 4): every WebSocket frame, the event payloads,
//! the error body, close codes, channel names and the HTTP bodies (`http.rs`), defined once
//! and used by the hub, the
//! container agent and the bench. The TypeScript client's types are generated from these
//! definitions (`clients/typescript/src/generated/protocol.ts`, see `typescript.rs`).
//!
//! Parsing policy: the hub parses [`ClientFrame`] strictly (an unknown `type` is an error);
//! receivers of [`ServerFrame`] are tolerant (unknown frame types become
//! [`ServerFrame::Unknown`], unknown event names stay unparsed in [`EventFrame`], unknown
//! fields are ignored), so a newer hub never breaks an older agent. Tokens and file
//! contents never appear in `Debug` output. [`backoff`] holds the retry delays every
//! reconnecting party uses (the agent, the hub's LISTEN connection and event pumps).

pub mod backoff;
mod client;
#[cfg(feature = "delta")]
pub mod delta;
mod error;
mod events;
mod http;
mod presence;
mod safe_int;
mod server;
#[cfg(test)]
mod tests;
#[cfg(test)]
mod typescript;

use std::fmt;

use serde::{Deserialize, Serialize};
use uuid::Uuid;

pub use backoff::Backoff;
pub use client::{BulkDelete, BulkUpsert, ClientFrame};
pub use error::{ErrorBody, ErrorResponse};
pub use events::{
    BlobRef, BulkApplyPayload, DeletedFile, Event, FileDeletePayload, FileDeltaPayload, FileUpdatePayload,
    ProjectDeletedPayload, UpdatedFile, event_names,
};
pub use http::*;
pub use presence::{MemberKind, PresenceDiff, PresenceMember, PresenceState};
pub use safe_int::{OutOfRange, SafeU64};
pub use server::{
    AckErr, AckFrame, AckOk, BulkWriteResponse, DeleteFileResponse, DeletedPath, ErrorFrame, EventFrame, False,
    PutFileResponse, ServerFrame, True, WriteResult, WrittenFile,
};

/// Channel names: `realtime:project:<uuid>`.
pub const CHANNEL_PREFIX: &str = "realtime:project:";

/// The channel of a project.
pub fn channel_name(project: impl fmt::Display) -> String {
    format!("{CHANNEL_PREFIX}{project}")
}

/// The project of a channel name, if it is one.
pub fn parse_channel(channel: &str) -> Option<Uuid> {
    channel.strip_prefix(CHANNEL_PREFIX).and_then(|id| Uuid::parse_str(id).ok())
}

/// WebSocket close codes.
pub mod close {
    pub const UNAUTHENTICATED: u16 = 4001;
    pub const FORBIDDEN: u16 = 4003;
    /// The client reconnects with `since`.
    pub const SLOW_CONSUMER: u16 = 4008;
    pub const TOKEN_EXPIRED: u16 = 4009;
    pub const SESSION_REVOKED: u16 = 4010;
    /// The contract's own codes (TypeScript `CloseCode`).
    pub const CONTRACT: [u16; 5] = [UNAUTHENTICATED, FORBIDDEN, SLOW_CONSUMER, TOKEN_EXPIRED, SESSION_REVOKED];
    /// Standard: normal closure.
    pub const NORMAL: u16 = 1000;
    /// Standard: going away (idle peer).
    pub const GOING_AWAY: u16 = 1001;
    /// Standard: policy violation (too many sockets, oversized frame).
    pub const POLICY: u16 = 1008;
    /// Standard: service restart (the hub is shutting down): reconnect at once, to
    /// another hub, with `since`.
    pub const RESTART: u16 = 1012;
}

/// A bearer token; `Debug` never prints it.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(test, derive(ts_rs::TS))]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(transparent)]
pub struct Token(pub String);

impl fmt::Debug for Token {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Token(<redacted>)")
    }
}

impl std::ops::Deref for Token {
    type Target = str;

    fn deref(&self) -> &str {
        &self.0
    }
}

/// A request's `ref`, chosen by the client and echoed verbatim in the answer.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(test, derive(ts_rs::TS))]
#[serde(untagged)]
pub enum Ref {
    Text(String),
    Number(serde_json::Number),
}

impl From<&str> for Ref {
    fn from(text: &str) -> Self {
        Ref::Text(text.to_owned())
    }
}

impl From<String> for Ref {
    fn from(text: String) -> Self {
        Ref::Text(text)
    }
}

impl From<u64> for Ref {
    fn from(number: u64) -> Self {
        Ref::Number(number.into())
    }
}

impl PartialEq<&str> for Ref {
    fn eq(&self, other: &&str) -> bool {
        matches!(self, Ref::Text(text) if text == other)
    }
}

/// Serializes a frame as the text of one WebSocket message.
pub(crate) fn to_text<T: Serialize>(frame: &T) -> String {
    // Frames hold strings, numbers, JSON values and string-keyed maps: serializing them
    // to a String cannot fail.
    serde_json::to_string(frame).expect("frames always serialize")
}
