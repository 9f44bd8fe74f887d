//! Frames of `GET /v1/realtime` (CONTRACT section 4), defined once in the
//! `synchub-protocol` crate: client frames are parsed into [`ClientFrame`]; the hub's
//! answers are built here by serializing that crate's types.

use serde::Deserialize as _;
use serde_json::Value;
use uuid::Uuid;

use synchub_protocol::BulkRequest;
pub use synchub_protocol::{
    AckErr, AckFrame, AckOk, BulkDelete, BulkUpsert, ClientFrame, ErrorBody, ErrorFrame, False, Ref, SafeU64,
    ServerFrame, True, WriteResult, channel_name, close, parse_channel,
};

use crate::error::ApiError;

/// A frame the hub could not take, with what is needed to answer it: writes are answered
/// with a failed `ack`, everything else with an `error` frame.
pub struct Refused {
    pub reference: Option<Ref>,
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

/// The integer fields of client frames (each a [`SafeU64`]).
const INTEGER_FIELDS: [&str; 4] = ["since", "seq", "expected_version", "base_version"];

/// Parses a client frame. When that fails, the frame is read again loosely to answer it
/// under its own `ref` (and as an `ack` when it was a write), naming a bad integer field.
pub fn parse_frame(text: &str) -> Result<ClientFrame, Refused> {
    serde_json::from_str(text).map_err(|err| {
        let loose: Value = serde_json::from_str(text).unwrap_or(Value::Null);
        let kind = loose.get("type").and_then(Value::as_str);
        let bad_integer = INTEGER_FIELDS.into_iter().find(|field| {
            loose.get(field).is_some_and(|value| !value.is_null() && SafeU64::deserialize(value).is_err())
        });
        let message = match (kind, bad_integer) {
            (_, Some(field)) => format!("{field} must be an integer from 0 to {}", SafeU64::MAX),
            (Some(kind), None) => format!("invalid {kind} frame: {err}"),
            (None, None) => format!("invalid frame: {err}"),
        };
        Refused {
            reference: loose.get("ref").and_then(|r| Ref::deserialize(r).ok()),
            channel: loose.get("channel").and_then(Value::as_str).map(str::to_string),
            is_write: matches!(kind, Some("upsert" | "delete" | "bulk")),
            error: ApiError::InvalidRequest(message),
        }
    })
}

/// The answer to every accepted `auth` frame: the browser knows it is in, and until when
/// (`expires_at` in seconds since the epoch).
pub fn authed(expires_at: i64) -> String {
    let expires_at = chrono::DateTime::from_timestamp(expires_at, 0)
        .map(|at| at.to_rfc3339_opts(chrono::SecondsFormat::Secs, true))
        .unwrap_or_default();
    ServerFrame::Authed { expires_at }.to_text()
}

pub fn joined(reference: &Option<Ref>, project: Uuid, cursor: i64) -> String {
    ServerFrame::Joined { reference: reference.clone(), channel: channel_name(project), cursor }.to_text()
}

pub fn left(reference: &Option<Ref>, channel: &str) -> String {
    ServerFrame::Left { reference: reference.clone(), channel: channel.to_owned() }.to_text()
}

pub fn resync_required(project: Uuid, oldest_seq: i64) -> String {
    ServerFrame::ResyncRequired { channel: channel_name(project), oldest_seq }.to_text()
}

pub fn pong(reference: &Option<Ref>) -> String {
    ServerFrame::Pong { reference: reference.clone() }.to_text()
}

/// A write's `ack`: `result` is the write's HTTP answer.
pub fn ack_ok(reference: &Option<Ref>, result: WriteResult) -> String {
    ServerFrame::Ack(AckFrame::Ok(AckOk { reference: reference.clone(), ok: True, result })).to_text()
}

pub fn ack_error(reference: &Option<Ref>, error: &ApiError) -> String {
    ServerFrame::Ack(AckFrame::Err(AckErr { reference: reference.clone(), ok: False, error: error_body(error) }))
        .to_text()
}

/// A refused request that is not a write (join, bad frame): `{"type":"error",...}`.
pub fn error(reference: &Option<Ref>, channel: Option<&str>, error: &ApiError) -> String {
    ServerFrame::Error(ErrorFrame {
        reference: reference.clone(),
        channel: channel.map(str::to_owned),
        error: error_body(error),
    })
    .to_text()
}

/// A refused join over the per-socket join rate.
pub fn joins_rate_limited(reference: &Option<Ref>, channel: &str, per_second: u32) -> String {
    rate_limited(reference, channel, format!("at most {per_second} joins per second per socket"))
}

/// A frame refused by a per-socket rate (`rate_limited`, retry after 1 s), saying which.
pub fn rate_limited(reference: &Option<Ref>, channel: &str, message: String) -> String {
    let mut body = error_body(&ApiError::RateLimited { retry_after_secs: 1 });
    body.message = message;
    ServerFrame::Error(ErrorFrame { reference: reference.clone(), channel: Some(channel.to_owned()), error: body })
        .to_text()
}

fn error_body(error: &ApiError) -> ErrorBody {
    let Value::Object(mut fields) = error.body() else { unreachable!("ApiError::body is always an object") };
    let mut text = |key: &str| match fields.remove(key) {
        Some(Value::String(text)) => text,
        _ => String::new(),
    };
    ErrorBody { code: text("code"), message: text("message"), details: fields }
}

/// An event frame, assembled around the payload JSON text as stored: serializing an
/// [`synchub_protocol::EventFrame`] would parse the payload again. The test below checks
/// that both spell the same frame.
pub fn event_frame(project: Uuid, seq: i64, event: &str, payload_json: &str) -> String {
    format!(
        r#"{{"type":"event","channel":"{prefix}{project}","seq":{seq},"event":{},"payload":{payload_json}}}"#,
        Value::String(event.to_string()),
        prefix = synchub_protocol::CHANNEL_PREFIX,
    )
}

/// A socket `bulk` frame as the body of `POST …/files:bulk`.
pub fn bulk_body(upserts: Vec<BulkUpsert>, deletes: Vec<BulkDelete>, op_id: Option<Uuid>) -> BulkRequest {
    BulkRequest { upserts, deletes, op_id }
}

#[cfg(test)]
mod tests {
    use super::*;
    use synchub_protocol::{Event, EventFrame};

    #[test]
    fn assembled_event_frames_are_the_protocol_crate_s_event_frames() {
        let project = Uuid::new_v4();
        let payload = r#"{"file_path":"a \"b\".ts","file_type":"typescript","content":"x\n\u00e9","content_hash":"h","version":3,"timestamp":"t","actor":"u","op_id":null}"#;
        let text = event_frame(project, 42, "file:update", payload);
        let ServerFrame::Event(frame) = ServerFrame::parse(&text).unwrap() else { panic!("not an event: {text}") };
        let expected = EventFrame {
            channel: channel_name(project),
            seq: 42,
            event: "file:update".into(),
            payload: serde_json::from_str(payload).unwrap(),
        };
        assert_eq!(frame, expected);
        let Some(Event::FileUpdate(update)) = frame.event().unwrap() else { panic!("not an update") };
        assert_eq!(update.file.file_path, "a \"b\".ts");
        // The envelope is byte for byte what serializing the crate's type gives (the
        // payload is PostgreSQL's text, whose key order differs from serde_json's).
        let sorted = r#"{"actor":"u","file_path":"a \"b\".ts"}"#;
        let frame = EventFrame { payload: serde_json::from_str(sorted).unwrap(), ..expected };
        assert_eq!(event_frame(project, 42, "file:update", sorted), ServerFrame::Event(frame).to_text());
    }

    #[test]
    fn answers_are_the_protocol_crate_s_frames() {
        let reference = Some(Ref::from("7"));
        let put =
            synchub_protocol::PutFileResponse { path: "a".into(), version: 1, content_hash: "h".into(), seq: Some(5) };
        let ok = ack_ok(&reference, WriteResult::Put(put));
        assert_eq!(ok, r#"{"type":"ack","ref":"7","ok":true,"path":"a","version":1,"content_hash":"h","seq":5}"#);
        let err = ApiError::VersionConflict {
            message: "m".into(),
            details: serde_json::Map::from_iter([("current_version".to_owned(), Value::from(2))]),
        };
        assert_eq!(
            ack_error(&reference, &err),
            r#"{"type":"ack","ref":"7","ok":false,"error":{"code":"version_conflict","message":"m","current_version":2}}"#
        );
        assert_eq!(pong(&None), r#"{"type":"pong","ref":null}"#);
        assert_eq!(authed(0), r#"{"type":"authed","expires_at":"1970-01-01T00:00:00Z"}"#);
    }

    #[test]
    fn frame_integers_are_0_to_2_pow_53_minus_1() {
        let join = |since: &str| parse_frame(&format!(r#"{{"type":"join","channel":"c","since":{since}}}"#));
        assert!(matches!(join("9007199254740991"), Ok(ClientFrame::Join { since: Some(SafeU64::MAX), .. })));
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
        assert_eq!(refused.reference, Some(Ref::from(7)));
        assert!(refused.answer().contains(r#""ok":false"#));
        assert!(parse_frame(r#"{"type":"applied","channel":"c","seq":null}"#).is_err());
    }

    #[test]
    fn authed_carries_the_expiry_in_rfc_3339() {
        let frame = ServerFrame::parse(&authed(1_800_000_000)).unwrap();
        assert_eq!(frame, ServerFrame::Authed { expires_at: "2027-01-15T08:00:00Z".into() });
    }
}
