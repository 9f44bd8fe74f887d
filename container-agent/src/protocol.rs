//! The WebSocket frames the agent exchanges with the hub (CONTRACT section 4), and the typed
//! [`Change`] an `event` frame carries. Parsing is tolerant: unknown frame types, unknown
//! event names and unknown fields are accepted and ignored, so a newer hub does not break an
//! older agent. Tokens and file contents are kept out of `Debug` output.

use std::fmt;

use serde::{Deserialize, Serialize};

/// The channel name of a project: `realtime:project:<uuid>`.
pub fn project_channel(project_id: &str) -> String {
    format!("realtime:project:{project_id}")
}

/// A bearer token; `Debug` never prints it.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Token(pub String);

impl fmt::Debug for Token {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Token(<redacted>)")
    }
}

/// A frame the agent sends.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ClientFrame {
    /// Replaces the socket's token (or authenticates a socket opened without a header).
    Auth { token: Token },
    /// Subscribes to `channel`, asking for every event with `seq > since`.
    Join {
        #[serde(rename = "ref")]
        reference: String,
        channel: String,
        since: Option<i64>,
    },
    Leave {
        #[serde(rename = "ref")]
        reference: String,
        channel: String,
    },
    Ping {
        #[serde(rename = "ref")]
        reference: String,
    },
    /// The highest `seq` now applied to the container's tree.
    Applied { channel: String, seq: i64 },
}

impl ClientFrame {
    /// The frame as the text of one WebSocket message.
    pub fn to_text(&self) -> String {
        // A derived `Serialize` of strings and integers cannot fail.
        serde_json::to_string(self).expect("client frames always serialize")
    }
}

/// A frame received from the hub. Frame types this agent does not know become `Unknown`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ServerFrame {
    Joined {
        #[serde(rename = "ref", default)]
        reference: Option<String>,
        channel: String,
        /// The project's `last_seq` when the join was served.
        cursor: i64,
    },
    Event(EventFrame),
    /// `since` is older than the hub's retention: rehydrate from the latest snapshot.
    ResyncRequired {
        channel: String,
        oldest_seq: i64,
    },
    Pong {
        #[serde(rename = "ref", default)]
        reference: Option<String>,
    },
    Ack(AckFrame),
    Error(ErrorFrame),
    #[serde(other)]
    Unknown,
}

impl ServerFrame {
    /// Parses the text of one WebSocket message.
    pub fn parse(text: &str) -> Result<Self, serde_json::Error> {
        serde_json::from_str(text)
    }
}

/// `{"type":"event","channel","seq","event","payload"}`; see [`EventFrame::change`].
#[derive(Clone, PartialEq, Deserialize)]
pub struct EventFrame {
    pub channel: String,
    pub seq: i64,
    pub event: String,
    #[serde(default)]
    pub payload: serde_json::Value,
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

impl EventFrame {
    /// The typed change this event announces.
    pub fn change(&self) -> Result<Change, serde_json::Error> {
        Change::parse(&self.event, &self.payload)
    }
}

/// `{"type":"ack","ref","ok",...}`: the answer to a write (the agent never writes, but the
/// frame is recognised so it is not mistaken for an unknown one).
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct AckFrame {
    #[serde(rename = "ref", default)]
    pub reference: Option<String>,
    #[serde(default)]
    pub ok: bool,
    #[serde(default)]
    pub seq: Option<i64>,
    #[serde(default)]
    pub error: Option<ErrorBody>,
}

/// `{"type":"error",...}`. The body is read from `error: {code, message}` (the HTTP shape)
/// or, failing that, from top-level `code`/`message`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct ErrorFrame {
    #[serde(rename = "ref", default)]
    pub reference: Option<String>,
    #[serde(default)]
    pub channel: Option<String>,
    #[serde(default)]
    pub error: Option<ErrorBody>,
    #[serde(default)]
    pub code: Option<String>,
    #[serde(default)]
    pub message: Option<String>,
}

impl ErrorFrame {
    /// The error code, wherever the hub put it.
    pub fn code(&self) -> Option<&str> {
        self.error.as_ref().map(|body| body.code.as_str()).or(self.code.as_deref())
    }
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct ErrorBody {
    pub code: String,
    #[serde(default)]
    pub message: String,
}

/// The event names of CONTRACT section 4.
pub mod event_names {
    pub const FILE_UPDATE: &str = "file:update";
    pub const FILE_DELETE: &str = "file:delete";
    pub const BULK_APPLY: &str = "bulk:apply";
    pub const PROJECT_DELETED: &str = "project:deleted";
}

/// What one event changes in the project.
#[derive(Debug, Clone, PartialEq)]
pub enum Change {
    Update(FileUpdate),
    Delete(FileDelete),
    Bulk(BulkApply),
    ProjectDeleted(ProjectDeleted),
    /// An event name this agent does not know; it still consumes its `seq`.
    Other {
        event: String,
    },
}

impl Change {
    /// Reads an event's payload by its event name.
    pub fn parse(event: &str, payload: &serde_json::Value) -> Result<Self, serde_json::Error> {
        use event_names::*;
        Ok(match event {
            FILE_UPDATE => Change::Update(FileUpdate::deserialize(payload)?),
            FILE_DELETE => Change::Delete(FileDelete::deserialize(payload)?),
            BULK_APPLY => Change::Bulk(BulkApply::deserialize(payload)?),
            PROJECT_DELETED => Change::ProjectDeleted(ProjectDeleted::deserialize(payload)?),
            other => Change::Other { event: other.to_owned() },
        })
    }
}

/// A file's new content: the payload of `file:update`, and each entry of a bulk's `files`.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileUpdate {
    pub file_path: String,
    #[serde(default)]
    pub file_type: Option<String>,
    pub content: String,
    /// sha256 hex of `content`.
    pub content_hash: String,
    pub version: i64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timestamp: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub actor: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub op_id: Option<String>,
}

impl fmt::Debug for FileUpdate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FileUpdate")
            .field("file_path", &self.file_path)
            .field("version", &self.version)
            .field("content_hash", &self.content_hash)
            .field("content_len", &self.content.len())
            .finish_non_exhaustive()
    }
}

/// The payload of `file:delete`, and each entry of a bulk's `deletes`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileDelete {
    pub file_path: String,
    pub version: i64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timestamp: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub actor: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub op_id: Option<String>,
}

/// The payload of `bulk:apply`: one atomic change of many files.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BulkApply {
    #[serde(default)]
    pub files: Vec<FileUpdate>,
    #[serde(default)]
    pub deletes: Vec<FileDelete>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timestamp: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub actor: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub op_id: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProjectDeleted {
    #[serde(default)]
    pub timestamp: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const CHANNEL: &str = "realtime:project:6f1c2e1a-7d3b-4c55-9a0e-0d6c2b1f9a11";

    #[test]
    fn client_frames_match_the_contract() {
        let join = ClientFrame::Join { reference: "1".into(), channel: CHANNEL.into(), since: Some(41) };
        let text: serde_json::Value = serde_json::from_str(&join.to_text()).unwrap();
        assert_eq!(text, json!({"type":"join","ref":"1","channel":CHANNEL,"since":41}));

        let join_fresh = ClientFrame::Join { reference: "2".into(), channel: CHANNEL.into(), since: None };
        let text: serde_json::Value = serde_json::from_str(&join_fresh.to_text()).unwrap();
        assert_eq!(text, json!({"type":"join","ref":"2","channel":CHANNEL,"since":null}));

        let applied = ClientFrame::Applied { channel: CHANNEL.into(), seq: 42 };
        let text: serde_json::Value = serde_json::from_str(&applied.to_text()).unwrap();
        assert_eq!(text, json!({"type":"applied","channel":CHANNEL,"seq":42}));

        let auth = ClientFrame::Auth { token: Token("secret-jwt".into()) };
        let text: serde_json::Value = serde_json::from_str(&auth.to_text()).unwrap();
        assert_eq!(text, json!({"type":"auth","token":"secret-jwt"}));

        let ping = ClientFrame::Ping { reference: "9".into() };
        assert_eq!(ping.to_text(), r#"{"type":"ping","ref":"9"}"#);

        let leave = ClientFrame::Leave { reference: "3".into(), channel: CHANNEL.into() };
        let text: serde_json::Value = serde_json::from_str(&leave.to_text()).unwrap();
        assert_eq!(text, json!({"type":"leave","ref":"3","channel":CHANNEL}));
    }

    #[test]
    fn debug_output_hides_tokens_and_contents() {
        let auth = ClientFrame::Auth { token: Token("secret-jwt".into()) };
        assert!(!format!("{auth:?}").contains("secret-jwt"));

        let update = FileUpdate {
            file_path: "a.ts".into(),
            file_type: None,
            content: "top secret source".into(),
            content_hash: "00".into(),
            version: 1,
            timestamp: None,
            actor: None,
            op_id: None,
        };
        let text = format!("{update:?}");
        assert!(text.contains("a.ts"));
        assert!(!text.contains("top secret"));
    }

    #[test]
    fn parses_joined_resync_pong() {
        let frame =
            ServerFrame::parse(&format!(r#"{{"type":"joined","ref":"1","channel":"{CHANNEL}","cursor":42}}"#)).unwrap();
        assert_eq!(frame, ServerFrame::Joined { reference: Some("1".into()), channel: CHANNEL.into(), cursor: 42 });

        let frame =
            ServerFrame::parse(&format!(r#"{{"type":"resync_required","channel":"{CHANNEL}","oldest_seq":17}}"#))
                .unwrap();
        assert_eq!(frame, ServerFrame::ResyncRequired { channel: CHANNEL.into(), oldest_seq: 17 });

        let frame = ServerFrame::parse(r#"{"type":"pong","ref":"9"}"#).unwrap();
        assert_eq!(frame, ServerFrame::Pong { reference: Some("9".into()) });
    }

    #[test]
    fn parses_the_contract_file_update_example() {
        let text = r#"{"type":"event","channel":"realtime:project:<uuid>","seq":42,"event":"file:update",
 "payload":{"file_path":"src/a.ts","file_type":"typescript","content":"...","content_hash":"<sha256 hex>",
            "version":3,"timestamp":"2026-11-22T10:00:00.000Z","actor":"user_123","op_id":"..."}}"#;
        let ServerFrame::Event(event) = ServerFrame::parse(text).unwrap() else {
            panic!("not an event");
        };
        assert_eq!(event.channel, "realtime:project:<uuid>");
        assert_eq!(event.seq, 42);
        let Change::Update(update) = event.change().unwrap() else {
            panic!("not an update");
        };
        assert_eq!(update.file_path, "src/a.ts");
        assert_eq!(update.file_type.as_deref(), Some("typescript"));
        assert_eq!(update.content, "...");
        assert_eq!(update.content_hash, "<sha256 hex>");
        assert_eq!(update.version, 3);
        assert_eq!(update.actor.as_deref(), Some("user_123"));
        assert_eq!(update.op_id.as_deref(), Some("..."));
    }

    #[test]
    fn parses_delete_bulk_and_project_deleted() {
        let delete = json!({"file_path":"src/old.ts","version":4,
            "timestamp":"2026-11-22T10:00:00.000Z","actor":"user_123","op_id":null});
        assert_eq!(
            Change::parse("file:delete", &delete).unwrap(),
            Change::Delete(FileDelete {
                file_path: "src/old.ts".into(),
                version: 4,
                timestamp: Some("2026-11-22T10:00:00.000Z".into()),
                actor: Some("user_123".into()),
                op_id: None,
            })
        );

        let bulk = json!({
            "files":[{"file_path":"b.ts","file_type":"typescript","content":"b","content_hash":"h","version":1}],
            "deletes":[{"file_path":"a.ts","version":2}],
            "timestamp":"2026-11-22T10:00:00.000Z","actor":"user_123","op_id":"op-1"});
        let Change::Bulk(bulk) = Change::parse("bulk:apply", &bulk).unwrap() else {
            panic!("not a bulk");
        };
        assert_eq!(bulk.files.len(), 1);
        assert_eq!(bulk.files[0].file_path, "b.ts");
        assert_eq!(bulk.deletes[0].file_path, "a.ts");
        assert_eq!(bulk.op_id.as_deref(), Some("op-1"));

        let deleted = json!({"timestamp":"2026-11-22T10:00:00.000Z"});
        assert!(matches!(Change::parse("project:deleted", &deleted).unwrap(), Change::ProjectDeleted(_)));
    }

    #[test]
    fn tolerates_unknown_types_events_and_fields() {
        assert_eq!(ServerFrame::parse(r#"{"type":"presence","who":["a"]}"#).unwrap(), ServerFrame::Unknown);
        let frame = ServerFrame::parse(&format!(
            r#"{{"type":"joined","ref":"1","channel":"{CHANNEL}","cursor":0,"server":"v9","extra":{{"x":1}}}}"#
        ))
        .unwrap();
        assert!(matches!(frame, ServerFrame::Joined { cursor: 0, .. }));

        let text = r#"{"type":"event","channel":"c","seq":7,"event":"file:update","shard":3,
            "payload":{"file_path":"a","content":"x","content_hash":"h","version":1,"new_field":true}}"#;
        let ServerFrame::Event(event) = ServerFrame::parse(text).unwrap() else {
            panic!("not an event");
        };
        let Change::Update(update) = event.change().unwrap() else {
            panic!("not an update");
        };
        assert_eq!(update.file_type, None);

        let other = Change::parse("file:rename", &json!({"from":"a","to":"b"})).unwrap();
        assert_eq!(other, Change::Other { event: "file:rename".into() });
    }

    #[test]
    fn malformed_payloads_are_errors() {
        assert!(Change::parse("file:update", &json!({"file_path":"a"})).is_err());
        assert!(Change::parse("file:delete", &json!({"version":1})).is_err());
        assert!(ServerFrame::parse(r#"{"type":"event","seq":"x"}"#).is_err());
        assert!(ServerFrame::parse("not json").is_err());
    }

    #[test]
    fn parses_ack_and_error_frames() {
        let ack = ServerFrame::parse(r#"{"type":"ack","ref":"7","ok":true,"seq":12,"version":3}"#).unwrap();
        assert!(matches!(ack, ServerFrame::Ack(AckFrame { ok: true, seq: Some(12), .. })));
        let ack = ServerFrame::parse(
            r#"{"type":"ack","ref":"8","ok":false,"error":{"code":"version_conflict","message":"m","path":"a"}}"#,
        )
        .unwrap();
        let ServerFrame::Ack(ack) = ack else { panic!("not an ack") };
        assert_eq!(ack.error.unwrap().code, "version_conflict");

        let nested =
            ServerFrame::parse(r#"{"type":"error","ref":"1","error":{"code":"forbidden","message":"no"}}"#).unwrap();
        let ServerFrame::Error(nested) = nested else { panic!("not an error") };
        assert_eq!(nested.code(), Some("forbidden"));
        let flat = ServerFrame::parse(r#"{"type":"error","code":"invalid_request"}"#).unwrap();
        let ServerFrame::Error(flat) = flat else { panic!("not an error") };
        assert_eq!(flat.code(), Some("invalid_request"));
    }
}
