//! Frames of `GET /v1/realtime` (CONTRACT section 4). Client frames are parsed into
//! [`ClientFrame`]; hub frames are built here so their spelling lives in one place.

use serde::{Deserialize, Deserializer};
use serde_json::{Value, json};
use uuid::Uuid;

use crate::error::ApiError;
use crate::files::{BulkDelete, BulkUpsert};

pub const CHANNEL_PREFIX: &str = "realtime:project:";

/// The largest integer every client's JSON carries exactly (2^53 − 1): seqs and versions
/// in frames are integers from 0 to this.
pub const MAX_SAFE_INTEGER: i64 = (1 << 53) - 1;

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
        #[serde(default, deserialize_with = "since")]
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
        #[serde(deserialize_with = "seq")]
        seq: i64,
    },
    Upsert {
        #[serde(rename = "ref")]
        reference: Option<Value>,
        channel: String,
        path: String,
        content: String,
        file_type: Option<String>,
        #[serde(default, deserialize_with = "expected_version")]
        expected_version: Option<i64>,
        op_id: Option<Uuid>,
    },
    Delete {
        #[serde(rename = "ref")]
        reference: Option<Value>,
        channel: String,
        path: String,
        #[serde(default, deserialize_with = "expected_version")]
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

fn since<'de, D: Deserializer<'de>>(d: D) -> Result<Option<i64>, D::Error> {
    optional_safe_integer(d, "since")
}

fn expected_version<'de, D: Deserializer<'de>>(d: D) -> Result<Option<i64>, D::Error> {
    optional_safe_integer(d, "expected_version")
}

fn seq<'de, D: Deserializer<'de>>(d: D) -> Result<i64, D::Error> {
    optional_safe_integer(d, "seq")?.ok_or_else(|| serde::de::Error::custom("seq must not be null"))
}

/// An integer from 0 to [`MAX_SAFE_INTEGER`] or null; anything else (negative, fractional,
/// too large, a string) is refused with a message naming the field.
fn optional_safe_integer<'de, D: Deserializer<'de>>(d: D, field: &str) -> Result<Option<i64>, D::Error> {
    match Option::<Value>::deserialize(d)? {
        None | Some(Value::Null) => Ok(None),
        Some(value) => value.as_i64().filter(|n| (0..=MAX_SAFE_INTEGER).contains(n)).map(Some).ok_or_else(|| {
            serde::de::Error::custom(format!("{field} must be an integer from 0 to {MAX_SAFE_INTEGER}"))
        }),
    }
}

/// A frame the hub could not take, with what is needed to answer it: writes are answered
/// with a failed `ack`, everything else with an `error` frame.
pub struct Refused {
    pub reference: Option<Value>,
    pub channel: Option<String>,
    pub is_write: bool,
    pub error: ApiError,
}

impl Refused {
    pub fn answer(&self) -> String {
        if self.is_write {
            ack_error(&self.reference, &self.error)
        } else {
            error(&self.reference, self.channel.as_deref(), &self.error)
        }
    }
}

/// Parses a client frame. When that fails, the frame is read again loosely to answer it
/// under its own `ref` (and as an `ack` when it was a write).
pub fn parse_frame(text: &str) -> Result<ClientFrame, Refused> {
    serde_json::from_str(text).map_err(|err| {
        let loose: Value = serde_json::from_str(text).unwrap_or(Value::Null);
        let kind = loose.get("type").and_then(Value::as_str);
        Refused {
            reference: loose.get("ref").cloned(),
            channel: loose.get("channel").and_then(Value::as_str).map(str::to_string),
            is_write: matches!(kind, Some("upsert" | "delete" | "bulk")),
            error: ApiError::InvalidRequest(match kind {
                Some(kind) => format!("invalid {kind} frame: {err}"),
                None => format!("invalid frame: {err}"),
            }),
        }
    })
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
    error_with_body(reference, channel, error.body())
}

/// A refused join over the per-socket join rate.
pub fn joins_rate_limited(reference: &Option<Value>, channel: &str, per_second: u32) -> String {
    let mut body = ApiError::RateLimited { retry_after_secs: 1 }.body();
    body["message"] = json!(format!("at most {per_second} joins per second per socket"));
    error_with_body(reference, Some(channel), body)
}

fn error_with_body(reference: &Option<Value>, channel: Option<&str>, body: Value) -> String {
    json!({"type": "error", "ref": reference, "channel": channel, "error": body}).to_string()
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

    #[test]
    fn frame_integers_are_0_to_2_pow_53_minus_1() {
        let join = |since: &str| parse_frame(&format!(r#"{{"type":"join","channel":"c","since":{since}}}"#));
        assert!(matches!(join("9007199254740991"), Ok(ClientFrame::Join { since: Some(MAX_SAFE_INTEGER), .. })));
        assert!(matches!(join("null"), Ok(ClientFrame::Join { since: None, .. })));
        for bad in ["9007199254740992", "9223372036854775807", "1e30", "-1", "1.5", "\"5\"", "[]"] {
            let refused = join(bad).err().unwrap_or_else(|| panic!("since={bad} was taken"));
            assert!(!refused.is_write);
            assert!(refused.error.to_string().contains("since must be an integer"), "{}", refused.error);
        }
        let missing = parse_frame(r#"{"type":"upsert","ref":7,"channel":"c","path":"a","content":"x"}"#);
        assert!(matches!(missing, Ok(ClientFrame::Upsert { expected_version: None, .. })));
        let refused =
            parse_frame(r#"{"type":"delete","ref":7,"channel":"c","path":"a","expected_version":-3}"#).err().unwrap();
        assert!(refused.is_write);
        assert_eq!(refused.reference, Some(json!(7)));
        assert!(refused.answer().contains(r#""ok":false"#));
        assert!(parse_frame(r#"{"type":"applied","channel":"c","seq":null}"#).is_err());
    }
}
