//! Every frame against the literal JSON of CONTRACT section 4, both ways.

use serde_json::{Value, json};

use crate::*;

const CHANNEL: &str = "realtime:project:6f1c2e1a-7d3b-4c55-9a0e-0d6c2b1f9a11";

fn client(text: &str) -> ClientFrame {
    serde_json::from_str(text).unwrap_or_else(|e| panic!("{text}: {e}"))
}

fn server(text: &str) -> ServerFrame {
    ServerFrame::parse(text).unwrap_or_else(|e| panic!("{text}: {e}"))
}

fn value(text: &str) -> Value {
    serde_json::from_str(text).unwrap()
}

fn safe(n: u64) -> SafeU64 {
    SafeU64::new(n).unwrap()
}

/// Parses `text`, checks the frame, and checks that serializing gives the same JSON back.
fn client_round_trip(text: &str, expected: ClientFrame) {
    let frame = client(text);
    assert_eq!(frame, expected, "{text}");
    assert_eq!(value(&frame.to_text()), value(text), "{text}");
}

fn server_round_trip(text: &str, expected: ServerFrame) {
    let frame = server(text);
    assert_eq!(frame, expected, "{text}");
    assert_eq!(value(&frame.to_text()), value(text), "{text}");
}

#[test]
fn client_frames_match_the_contract_examples() {
    client_round_trip(r#"{"type":"auth","token":"eyJ.x.y"}"#, ClientFrame::Auth { token: Token("eyJ.x.y".into()) });
    client_round_trip(
        &format!(r#"{{"type":"join","ref":"1","channel":"{CHANNEL}","since":41}}"#),
        ClientFrame::Join { reference: Some("1".into()), channel: CHANNEL.into(), since: Some(safe(41)) },
    );
    client_round_trip(
        &format!(r#"{{"type":"join","ref":"1","channel":"{CHANNEL}","since":null}}"#),
        ClientFrame::Join { reference: Some("1".into()), channel: CHANNEL.into(), since: None },
    );
    client_round_trip(
        &format!(r#"{{"type":"leave","ref":"2","channel":"{CHANNEL}"}}"#),
        ClientFrame::Leave { reference: Some("2".into()), channel: CHANNEL.into() },
    );
    client_round_trip(r#"{"type":"ping","ref":"9"}"#, ClientFrame::Ping { reference: Some("9".into()) });
    client_round_trip(
        &format!(r#"{{"type":"applied","channel":"{CHANNEL}","seq":42}}"#),
        ClientFrame::Applied { channel: CHANNEL.into(), seq: safe(42) },
    );
    let op_id = uuid::Uuid::parse_str("0b5d3c3e-47a4-4d43-8a38-7b61c0b9d2a1").unwrap();
    client_round_trip(
        &format!(
            r#"{{"type":"upsert","ref":"7","channel":"{CHANNEL}","path":"src/a.ts","content":"x","file_type":"typescript","expected_version":3,"op_id":"{op_id}"}}"#
        ),
        ClientFrame::Upsert {
            reference: Some("7".into()),
            channel: CHANNEL.into(),
            path: "src/a.ts".into(),
            content: Some("x".into()),
            base_version: None,
            delta: None,
            file_type: Some("typescript".into()),
            expected_version: Some(safe(3)),
            op_id: Some(op_id),
        },
    );
    client_round_trip(
        &format!(r#"{{"type":"upsert","ref":"7","channel":"{CHANNEL}","path":"a.ts","content":""}}"#),
        ClientFrame::Upsert {
            reference: Some("7".into()),
            channel: CHANNEL.into(),
            path: "a.ts".into(),
            content: Some(String::new()),
            base_version: None,
            delta: None,
            file_type: None,
            expected_version: None,
            op_id: None,
        },
    );
    client_round_trip(
        &format!(
            r#"{{"type":"upsert","ref":"9","channel":"{CHANNEL}","path":"a.ts","base_version":4,"delta":"MQo="}}"#
        ),
        ClientFrame::Upsert {
            reference: Some("9".into()),
            channel: CHANNEL.into(),
            path: "a.ts".into(),
            content: None,
            base_version: Some(safe(4)),
            delta: Some("MQo=".into()),
            file_type: None,
            expected_version: None,
            op_id: None,
        },
    );
    client_round_trip(
        &format!(r#"{{"type":"delete","ref":"8","channel":"{CHANNEL}","path":"a.ts","expected_version":0}}"#),
        ClientFrame::Delete {
            reference: Some("8".into()),
            channel: CHANNEL.into(),
            path: "a.ts".into(),
            expected_version: Some(SafeU64::ZERO),
            op_id: None,
        },
    );
    client_round_trip(
        &format!(
            r#"{{"type":"bulk","ref":"9","channel":"{CHANNEL}","upserts":[{{"path":"b.ts","content":"b","expected_version":0}}],"deletes":[{{"path":"a.ts"}}]}}"#
        ),
        ClientFrame::Bulk {
            reference: Some("9".into()),
            channel: CHANNEL.into(),
            upserts: vec![BulkUpsert {
                path: "b.ts".into(),
                content: "b".into(),
                file_type: None,
                expected_version: Some(SafeU64::ZERO),
                blob: None,
            }],
            deletes: vec![BulkDelete { path: "a.ts".into(), expected_version: None }],
            op_id: None,
        },
    );
}

#[test]
fn the_hub_reads_client_frames_strictly_but_accepts_numeric_refs_and_absent_options() {
    // Numbers are valid refs (echoed as sent); ref, since and bulk lists may be left out.
    let join = client(r#"{"type":"join","ref":12,"channel":"c"}"#);
    assert_eq!(join, ClientFrame::Join { reference: Some(Ref::from(12)), channel: "c".into(), since: None });
    assert_eq!(
        client(r#"{"type":"bulk","channel":"c"}"#),
        ClientFrame::Bulk { reference: None, channel: "c".into(), upserts: vec![], deletes: vec![], op_id: None }
    );
    for bad in [
        r#"{"type":"nope"}"#,
        r#"{"channel":"c"}"#,
        r#"{"type":"join"}"#,
        r#"{"type":"applied","channel":"c","seq":-1}"#,
        r#"{"type":"applied","channel":"c","seq":"4"}"#,
        r#"{"type":"upsert","channel":"c","path":"a","content":"x","expected_version":1.5}"#,
        r#"{"type":"upsert","channel":"c","path":"a","content":"x","op_id":"not-a-uuid"}"#,
        r#"{"type":"bulk","channel":"c","upserts":[{"path":"a","content":"x","expected_version":9007199254740992}]}"#,
        r#"{"type":"join","ref":{"x":1},"channel":"c"}"#,
        r#"{"type":"auth"}"#,
    ] {
        assert!(serde_json::from_str::<ClientFrame>(bad).is_err(), "accepted {bad}");
    }
}

#[test]
fn server_frames_match_the_contract_examples() {
    server_round_trip(
        r#"{"type":"authed","expires_at":"2026-11-22T10:15:00Z"}"#,
        ServerFrame::Authed { expires_at: "2026-11-22T10:15:00Z".into() },
    );
    server_round_trip(
        &format!(r#"{{"type":"joined","ref":"1","channel":"{CHANNEL}","cursor":42}}"#),
        ServerFrame::Joined { reference: Some("1".into()), channel: CHANNEL.into(), cursor: 42 },
    );
    server_round_trip(
        &format!(r#"{{"type":"left","ref":null,"channel":"{CHANNEL}"}}"#),
        ServerFrame::Left { reference: None, channel: CHANNEL.into() },
    );
    server_round_trip(
        &format!(r#"{{"type":"resync_required","channel":"{CHANNEL}","oldest_seq":17}}"#),
        ServerFrame::ResyncRequired { channel: CHANNEL.into(), oldest_seq: 17 },
    );
    server_round_trip(r#"{"type":"pong","ref":"9"}"#, ServerFrame::Pong { reference: Some("9".into()) });
    server_round_trip(
        r#"{"type":"ack","ref":"7","ok":true,"path":"a.ts","version":3,"content_hash":"h","seq":12}"#,
        ServerFrame::Ack(AckFrame::Ok(AckOk {
            reference: Some("7".into()),
            ok: True,
            result: WriteResult::Put(PutFileResponse {
                path: "a.ts".into(),
                version: 3,
                content_hash: "h".into(),
                seq: Some(12),
            }),
        })),
    );
    server_round_trip(
        r#"{"type":"ack","ref":"8","ok":true,"path":"a.ts","version":4,"seq":13}"#,
        ServerFrame::Ack(AckFrame::Ok(AckOk {
            reference: Some("8".into()),
            ok: True,
            result: WriteResult::Delete(DeleteFileResponse { path: "a.ts".into(), version: 4, seq: Some(13) }),
        })),
    );
    server_round_trip(
        r#"{"type":"ack","ref":"9","ok":true,"seq":14,"files":[{"path":"b.ts","version":1,"content_hash":"h"}],"deleted":[{"path":"a.ts","version":5}]}"#,
        ServerFrame::Ack(AckFrame::Ok(AckOk {
            reference: Some("9".into()),
            ok: True,
            result: WriteResult::Bulk(BulkWriteResponse {
                seq: Some(14),
                files: vec![WrittenFile { path: "b.ts".into(), version: 1, content_hash: "h".into() }],
                deleted: vec![DeletedPath { path: "a.ts".into(), version: 5 }],
            }),
        })),
    );
    let conflict = r#"{"type":"ack","ref":"7","ok":false,"error":{"code":"version_conflict","message":"m","path":"a.ts","expected_version":2,"current_version":3,"current_hash":"h"}}"#;
    let details = json!({"path":"a.ts","expected_version":2,"current_version":3,"current_hash":"h"});
    server_round_trip(
        conflict,
        ServerFrame::Ack(AckFrame::Err(AckErr {
            reference: Some("7".into()),
            ok: False,
            error: ErrorBody {
                code: "version_conflict".into(),
                message: "m".into(),
                details: details.as_object().unwrap().clone(),
            },
        })),
    );
    server_round_trip(
        &format!(
            r#"{{"type":"error","ref":"1","channel":"{CHANNEL}","error":{{"code":"not_found","message":"project not found"}}}}"#
        ),
        ServerFrame::Error(ErrorFrame {
            reference: Some("1".into()),
            channel: Some(CHANNEL.into()),
            error: ErrorBody {
                code: "not_found".into(),
                message: "project not found".into(),
                details: Default::default(),
            },
        }),
    );
}

/// The contract's literal `file:update` example, then the other three events.
#[test]
fn event_frames_match_the_contract_examples() {
    let text = r#"{"type":"event","channel":"realtime:project:<uuid>","seq":42,"event":"file:update",
 "payload":{"file_path":"src/a.ts","file_type":"typescript","content":"...","content_hash":"<sha256 hex>",
            "version":3,"timestamp":"2026-11-22T10:00:00.000Z","actor":"user_123","op_id":"..."}}"#;
    let ServerFrame::Event(frame) = server(text) else { panic!("not an event") };
    assert_eq!((frame.channel.as_str(), frame.seq), ("realtime:project:<uuid>", 42));
    let update = FileUpdatePayload {
        file: UpdatedFile {
            file_path: "src/a.ts".into(),
            file_type: "typescript".into(),
            content: "...".into(),
            content_hash: "<sha256 hex>".into(),
            version: 3,
            blob: None,
        },
        timestamp: "2026-11-22T10:00:00.000Z".into(),
        actor: "user_123".into(),
        op_id: Some("...".into()),
    };
    assert_eq!(frame.event().unwrap(), Some(Event::FileUpdate(update.clone())));
    assert_eq!(value(&ServerFrame::Event(frame).to_text()), value(text));
    // The typed event serializes to the same `event` + `payload`.
    let typed = serde_json::to_value(Event::FileUpdate(update)).unwrap();
    assert_eq!(typed, json!({"event": "file:update", "payload": value(text)["payload"]}));

    let delete = json!({"file_path":"src/old.ts","version":4,"timestamp":"t","actor":"user_123","op_id":null});
    assert_eq!(
        Event::parse("file:delete", &delete).unwrap(),
        Some(Event::FileDelete(FileDeletePayload {
            file: DeletedFile { file_path: "src/old.ts".into(), version: 4 },
            timestamp: "t".into(),
            actor: "user_123".into(),
            op_id: None,
        }))
    );
    assert_eq!(serde_json::to_value(Event::parse("file:delete", &delete).unwrap()).unwrap()["payload"], delete);

    let bulk = json!({
        "files":[{"file_path":"b.ts","file_type":"typescript","content":"b","content_hash":"h","version":1}],
        "deletes":[{"file_path":"a.ts","version":2}],
        "timestamp":"t","actor":"user_123","op_id":"op-1"});
    let Some(Event::BulkApply(parsed)) = Event::parse("bulk:apply", &bulk).unwrap() else { panic!("not a bulk") };
    assert_eq!(parsed.files[0].file_path, "b.ts");
    assert_eq!(parsed.deletes[0], DeletedFile { file_path: "a.ts".into(), version: 2 });
    assert_eq!(serde_json::to_value(&parsed).unwrap(), bulk);

    let deleted = json!({"timestamp":"t"});
    assert_eq!(
        Event::parse("project:deleted", &deleted).unwrap(),
        Some(Event::ProjectDeleted(ProjectDeletedPayload { timestamp: "t".into() }))
    );
    for name in [event_names::FILE_UPDATE, event_names::FILE_DELETE] {
        assert!(Event::parse(name, &json!({})).is_err(), "{name}: a malformed payload is an error");
    }
}

#[test]
fn receivers_tolerate_unknown_frames_events_and_fields() {
    assert_eq!(server(r#"{"type":"typing_indicator","channel":"c","members":[]}"#), ServerFrame::Unknown);
    let joined = server(r#"{"type":"joined","ref":"1","channel":"c","cursor":0,"server":"v9","extra":{"x":1}}"#);
    assert_eq!(joined, ServerFrame::Joined { reference: Some("1".into()), channel: "c".into(), cursor: 0 });

    let text = r#"{"type":"event","channel":"c","seq":7,"event":"file:update","shard":3,
        "payload":{"file_path":"a","content":"x","content_hash":"h","version":1,"new_field":true}}"#;
    let ServerFrame::Event(frame) = server(text) else { panic!("not an event") };
    let Some(Event::FileUpdate(update)) = frame.event().unwrap() else { panic!("not an update") };
    assert_eq!((update.file.file_type.as_str(), update.actor.as_str(), update.op_id), ("", "", None));

    // An event name this version does not know still parses (and consumes its seq).
    let ServerFrame::Event(frame) =
        server(r#"{"type":"event","channel":"c","seq":8,"event":"file:rename","payload":{"from":"a"}}"#)
    else {
        panic!("not an event")
    };
    assert_eq!((frame.seq, frame.event().unwrap()), (8, None));

    // A delta-carrying file:update (CONTRACT section 12) parses as such, and serializes back
    // as the same `file:update`.
    let delta = json!({"file_path":"a","file_type":"text","version":2,"content_hash":"h","base_version":1,
                       "base_hash":"g","delta":"x","timestamp":"t","actor":"u","op_id":null});
    let Some(Event::FileDelta(parsed)) = Event::parse("file:update", &delta).unwrap() else { panic!("not a delta") };
    assert_eq!((parsed.base_version, parsed.delta.as_str()), (1, "x"));
    let typed = serde_json::to_value(Event::FileDelta(parsed)).unwrap();
    assert_eq!(typed, json!({"event": "file:update", "payload": delta}));
    let incomplete = json!({"file_path":"a","version":2,"content_hash":"h","base_version":1,"delta":"x"});
    assert!(Event::parse("file:update", &incomplete).is_err(), "base_hash is required");
    assert!(ServerFrame::parse(r#"{"type":"event","seq":"x"}"#).is_err());
    assert!(ServerFrame::parse("not json").is_err());
}

#[test]
fn debug_output_hides_tokens_and_contents() {
    let secret = "top secret source";
    let frames: Vec<Box<dyn std::fmt::Debug>> = vec![
        Box::new(ClientFrame::Auth { token: Token(secret.into()) }),
        Box::new(ClientFrame::Upsert {
            reference: None,
            channel: CHANNEL.into(),
            path: "a.ts".into(),
            content: Some(secret.into()),
            base_version: None,
            delta: Some(secret.into()),
            file_type: None,
            expected_version: None,
            op_id: None,
        }),
        Box::new(ClientFrame::Bulk {
            reference: None,
            channel: CHANNEL.into(),
            upserts: vec![BulkUpsert {
                path: "a.ts".into(),
                content: secret.into(),
                file_type: None,
                expected_version: None,
                blob: None,
            }],
            deletes: vec![],
            op_id: None,
        }),
        Box::new(
            Event::parse(
                "bulk:apply",
                &json!({"files":[{"file_path":"a.ts","file_type":"t","content":secret,"content_hash":"h","version":1}]}),
            )
            .unwrap(),
        ),
        Box::new(
            Event::parse(
                "file:update",
                &json!({"file_path":"a","version":2,"content_hash":"h","base_version":1,"base_hash":"g","delta":secret}),
            )
            .unwrap(),
        ),
        Box::new(PatchFileRequest { base_version: SafeU64::MAX, delta: secret.into(), op_id: None }),
        Box::new(EventFrame { channel: "c".into(), seq: 1, event: "file:update".into(), payload: json!({"content": secret}) }),
    ];
    for frame in frames {
        let text = format!("{frame:?}");
        assert!(!text.contains("secret"), "{text}");
    }
}

#[test]
fn channel_names() {
    let project = uuid::Uuid::parse_str("6f1c2e1a-7d3b-4c55-9a0e-0d6c2b1f9a11").unwrap();
    assert_eq!(channel_name(project), CHANNEL);
    assert_eq!(parse_channel(CHANNEL), Some(project));
    assert_eq!(parse_channel("realtime:project:not-a-uuid"), None);
    assert_eq!(parse_channel(&format!("other:{project}")), None);
}
