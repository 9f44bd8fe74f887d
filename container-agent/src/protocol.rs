//! The WebSocket frames the agent exchanges with the hub come from the `synchub-protocol`
//! crate (shared with the hub); this module adds the agent's own view of an event, the
//! [`Change`] its tree applies. Parsing stays tolerant: unknown frame types, unknown event
//! names and unknown fields are accepted and ignored, so a newer hub does not break an
//! older agent.

pub use synchub_protocol::{
    BulkApplyPayload, ClientFrame, DeletedFile, ErrorFrame, Event, EventFrame, ProjectDeletedPayload, Ref, SafeU64,
    ServerFrame, Token, UpdatedFile, channel_name,
};

/// What one event changes in the project.
#[derive(Debug, Clone, PartialEq)]
pub enum Change {
    Update(UpdatedFile),
    Delete(DeletedFile),
    Bulk(BulkApplyPayload),
    ProjectDeleted(ProjectDeletedPayload),
    /// An event name this agent does not know; it still consumes its `seq`.
    Other {
        event: String,
    },
}

impl Change {
    /// Reads an event's payload by its event name.
    pub fn parse(event: &str, payload: &serde_json::Value) -> Result<Self, serde_json::Error> {
        Ok(match Event::parse(event, payload)? {
            Some(Event::FileUpdate(update)) => Change::Update(update.file),
            // The session turns deltas into full updates before they get here (it has the
            // tree and the hub); one that slips through cannot be applied blind.
            Some(Event::FileDelta(_)) => {
                return Err(serde::de::Error::custom("a delta update must be resolved against the tree first"));
            }
            Some(Event::FileDelete(delete)) => Change::Delete(delete.file),
            Some(Event::BulkApply(bulk)) => Change::Bulk(bulk),
            Some(Event::ProjectDeleted(deleted)) => Change::ProjectDeleted(deleted),
            None => Change::Other { event: event.to_owned() },
        })
    }

    /// The change an `event` frame announces.
    pub fn of(frame: &EventFrame) -> Result<Self, serde_json::Error> {
        Change::parse(&frame.event, &frame.payload)
    }
}

/// A seq as the protocol sends it. Seqs come from the hub (or a snapshot's cursor), so
/// they are within range; anything else is clamped rather than sent malformed.
pub fn wire_seq(seq: i64) -> SafeU64 {
    SafeU64::try_from(seq.max(0)).unwrap_or(SafeU64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const CHANNEL: &str = "realtime:project:6f1c2e1a-7d3b-4c55-9a0e-0d6c2b1f9a11";

    #[test]
    fn the_frames_the_agent_sends_match_the_contract() {
        let join = ClientFrame::Join { reference: Some("1".into()), channel: CHANNEL.into(), since: None };
        let text: serde_json::Value = serde_json::from_str(&join.to_text()).unwrap();
        assert_eq!(text, json!({"type":"join","ref":"1","channel":CHANNEL,"since":null}));
        let applied = ClientFrame::Applied { channel: CHANNEL.into(), seq: wire_seq(42) };
        assert_eq!(applied.to_text(), format!(r#"{{"type":"applied","channel":"{CHANNEL}","seq":42}}"#));
        assert_eq!(wire_seq(-1), SafeU64::ZERO);
    }

    #[test]
    fn events_become_changes() {
        let update = json!({"file_path":"src/a.ts","file_type":"typescript","content":"...","content_hash":"h",
            "version":3,"timestamp":"2026-11-22T10:00:00.000Z","actor":"user_123","op_id":"..."});
        let Change::Update(file) = Change::parse("file:update", &update).unwrap() else { panic!("not an update") };
        assert_eq!((file.file_path.as_str(), file.version), ("src/a.ts", 3));
        let delete = json!({"file_path":"src/old.ts","version":4,"timestamp":"t","actor":"u","op_id":null});
        assert_eq!(
            Change::parse("file:delete", &delete).unwrap(),
            Change::Delete(DeletedFile { file_path: "src/old.ts".into(), version: 4 })
        );
        let deleted = json!({"timestamp":"t"});
        assert!(matches!(Change::parse("project:deleted", &deleted).unwrap(), Change::ProjectDeleted(_)));
        let other = Change::parse("file:rename", &json!({"from":"a","to":"b"})).unwrap();
        assert_eq!(other, Change::Other { event: "file:rename".into() });
        assert!(Change::parse("file:update", &json!({"file_path":"a"})).is_err());
    }
}
