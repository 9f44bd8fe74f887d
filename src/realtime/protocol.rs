//! Frames of `GET /v1/realtime` (CONTRACT section 4). Client frames are parsed into
//! [`ClientFrame`]; hub frames are built here so their spelling lives in one place.

use serde::Deserialize;
use serde_json::{Value, json};
use uuid::Uuid;

use crate::error::ApiError;
use crate::files::{BulkDelete, BulkUpsert};

pub const CHANNEL_PREFIX: &str = "realtime:project:";

/// Close codes of the contract.
pub mod close {
    pub const UNAUTHENTICATED: u16 = 4001;
    pub const FORBIDDEN: u16 = 4003;
    pub const SLOW_CONSUMER: u16 = 4008;
    pub const TOKEN_EXPIRED: u16 = 4009;
    pub const SESSION_REVOKED: u16 = 4010;
    /// Standard: normal closure.
    pub const NORMAL: u16 = 1000;
    /// Standard: going away (hub shutdown, idle peer).
    pub const GOING_AWAY: u16 = 1001;
    /// Standard: policy violation (too many sockets, oversized frame).
    pub const POLICY: u16 = 1008;
}

/// No Debug on purpose: frames carry tokens and file contents, which are never logged.
#[derive(Deserialize)]
#[serde(tag = "type", rename_all = "lowercase")]
pub enum ClientFrame {
    Auth {
        token: String,
    },
    Join {
        #[serde(rename = "ref")]
        reference: Option<Value>,
        channel: String,
        since: Option<i64>,
    },
    Leave {
        #[serde(rename = "ref")]
        reference: Option<Value>,
        channel: String,
    },
    Ping {
        #[serde(rename = "ref")]
        reference: Option<Value>,
    },
    Applied {
        channel: String,
        seq: i64,
    },
    Upsert {
        #[serde(rename = "ref")]
        reference: Option<Value>,
        channel: String,
        path: String,
        content: String,
        file_type: Option<String>,
        expected_version: Option<i64>,
        op_id: Option<Uuid>,
    },
    Delete {
        #[serde(rename = "ref")]
        reference: Option<Value>,
        channel: String,
        path: String,
        expected_version: Option<i64>,
        op_id: Option<Uuid>,
    },
    Bulk {
        #[serde(rename = "ref")]
        reference: Option<Value>,
        channel: String,
        #[serde(default)]
        upserts: Vec<BulkUpsert>,
        #[serde(default)]
        deletes: Vec<BulkDelete>,
        op_id: Option<Uuid>,
    },
}

/// The project of a channel name, if it is one.
pub fn parse_channel(channel: &str) -> Option<Uuid> {
    channel.strip_prefix(CHANNEL_PREFIX).and_then(|id| Uuid::parse_str(id).ok())
}

pub fn channel_name(project: Uuid) -> String {
    format!("{CHANNEL_PREFIX}{project}")
}

pub fn joined(reference: &Option<Value>, project: Uuid, cursor: i64) -> String {
    json!({"type": "joined", "ref": reference, "channel": channel_name(project), "cursor": cursor}).to_string()
}

pub fn left(reference: &Option<Value>, channel: &str) -> String {
    json!({"type": "left", "ref": reference, "channel": channel}).to_string()
}

pub fn resync_required(project: Uuid, oldest_seq: i64) -> String {
    json!({"type": "resync_required", "channel": channel_name(project), "oldest_seq": oldest_seq}).to_string()
}

/// The answer to every accepted `auth` frame: the browser knows it is in, and until when.
pub fn authed(expires_at: i64) -> String {
    let expires_at = chrono::DateTime::from_timestamp(expires_at, 0)
        .map(|at| at.to_rfc3339_opts(chrono::SecondsFormat::Secs, true))
        .unwrap_or_default();
    json!({"type": "authed", "expires_at": expires_at}).to_string()
}

pub fn pong(reference: &Option<Value>) -> String {
    json!({"type": "pong", "ref": reference}).to_string()
}

pub fn ack_ok(reference: &Option<Value>, result: &Value) -> String {
    let mut ack = json!({"type": "ack", "ref": reference, "ok": true});
    if let Value::Object(fields) = result {
        for (key, value) in fields {
            ack[key] = value.clone();
        }
    }
    ack.to_string()
}

pub fn ack_error(reference: &Option<Value>, error: &ApiError) -> String {
    json!({"type": "ack", "ref": reference, "ok": false, "error": error.body()}).to_string()
}

/// A refused request that is not a write (join, bad frame): `{"type":"error",...}`.
pub fn error(reference: &Option<Value>, channel: Option<&str>, error: &ApiError) -> String {
    json!({"type": "error", "ref": reference, "channel": channel, "error": error.body()}).to_string()
}

/// An event frame, assembled around the payload JSON text as stored (no re-parsing).
pub fn event_frame(project: Uuid, seq: i64, event: &str, payload_json: &str) -> String {
    format!(
        r#"{{"type":"event","channel":"{CHANNEL_PREFIX}{project}","seq":{seq},"event":{},"payload":{payload_json}}}"#,
        Value::String(event.to_string())
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn event_frames_are_valid_json_in_the_contract_shape() {
        let project = Uuid::new_v4();
        let text = event_frame(project, 42, "file:update", r#"{"file_path":"a \"b\".ts","version":3}"#);
        let value: Value = serde_json::from_str(&text).unwrap();
        assert_eq!(value["type"], "event");
        assert_eq!(value["channel"], format!("realtime:project:{project}"));
        assert_eq!(value["seq"], 42);
        assert_eq!(value["event"], "file:update");
        assert_eq!(value["payload"]["file_path"], "a \"b\".ts");
    }

    #[test]
    fn client_frames_parse() {
        let join: ClientFrame =
            serde_json::from_str(r#"{"type":"join","ref":"1","channel":"realtime:project:x","since":null}"#).unwrap();
        assert!(matches!(join, ClientFrame::Join { since: None, .. }));
        let upsert: ClientFrame = serde_json::from_str(
            r#"{"type":"upsert","ref":"7","channel":"c","path":"a.ts","content":"x","expected_version":0}"#,
        )
        .unwrap();
        assert!(matches!(upsert, ClientFrame::Upsert { expected_version: Some(0), .. }));
        assert!(serde_json::from_str::<ClientFrame>(r#"{"type":"nope"}"#).is_err());
        assert_eq!(parse_channel("realtime:project:not-a-uuid"), None);
    }

    #[test]
    fn authed_carries_the_expiry_in_rfc_3339() {
        let value: Value = serde_json::from_str(&authed(1_800_000_000)).unwrap();
        assert_eq!(value, json!({"type": "authed", "expires_at": "2027-01-15T08:00:00Z"}));
    }
}
