//! Presence (CONTRACT section 12): who has a project open, ephemeral and never in the log.
//! A socket becomes a member of a channel it joined with its first `presence` frame there
//! (and stays one until it leaves, rejoins, closes or dies); later `presence` frames replace
//! its `meta`. `client_id`, `user` and `kind` are decided by the hub from the socket's
//! token, never taken from the client.

use serde::{Deserialize, Serialize};

/// One socket present on a channel.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(test, derive(ts_rs::TS))]
pub struct PresenceMember {
    /// Assigned by the hub, one per socket (the same on every channel the socket joins).
    pub client_id: String,
    /// The token's user id (`sub`); for a container token, its session id.
    pub user: String,
    pub kind: MemberKind,
    /// What the client last sent in a `presence` frame.
    #[cfg_attr(test, ts(type = "JsonValue"))]
    pub meta: serde_json::Value,
}

/// Who is present: an editor (a user token) or a preview container (a container token).
/// Service-token sockets receive presence but are not members.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(test, derive(ts_rs::TS))]
#[serde(rename_all = "snake_case")]
pub enum MemberKind {
    User,
    Container,
}

/// `{"type":"presence_state","channel","members","client_id"}`: everyone present, sent once
/// per join, when the socket sends its first `presence` (after `joined`); `client_id` is
/// the receiving socket's own.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(test, derive(ts_rs::TS))]
pub struct PresenceState {
    pub channel: String,
    pub members: Vec<PresenceMember>,
    /// The receiving socket's own `client_id` (so a client can tell itself apart).
    #[serde(default)]
    pub client_id: Option<String>,
}

/// `{"type":"presence_diff","channel","joins","leaves"}`: what changed since the last
/// `presence_state` or diff. Apply `leaves` (by `client_id`), then `joins`; a `client_id` in
/// `joins` that is already known replaces that member (a `meta` update).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(test, derive(ts_rs::TS))]
pub struct PresenceDiff {
    pub channel: String,
    pub joins: Vec<PresenceMember>,
    pub leaves: Vec<PresenceMember>,
}
