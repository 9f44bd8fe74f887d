//! Delta payloads (CONTRACT section 12): writers send a Fossil delta against a base version
//! (`PATCH …/files/{path}`, socket `upsert` with `base_version` + `delta`); subscribers that
//! saw the base receive `file:update` as a delta when it is less than half the content.

use std::time::Duration;

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use synchub_protocol::delta;

use crate::helpers::*;

/// A source file of about `lines` × 40 bytes.
fn source(lines: usize) -> String {
    (0..lines).map(|i| format!("export const value{i:05} = {i} * 2; // ok\n")).collect()
}

/// `content` with one character changed near its middle.
fn one_char_edit(content: &str) -> String {
    let middle = content.len() / 2;
    format!("{}#{}", &content[..middle], &content[middle + 1..])
}

impl TestApp {
    async fn patch(&self, project: &str, path: &str, token: &str, body: Value) -> (StatusCode, Value) {
        self.call(Method::PATCH, &format!("/v1/projects/{project}/files/{path}"), Some(token), Some(body)).await
    }

    async fn file(&self, project: &str, path: &str, token: &str) -> Value {
        let (status, body) = self.get(&format!("/v1/projects/{project}/files/{path}"), token).await;
        assert_eq!(status, 200, "{body}");
        body
    }

    async fn last_seq(&self, project: &str, token: &str) -> i64 {
        let (status, body) = self.get(&format!("/v1/projects/{project}"), token).await;
        assert_eq!(status, 200, "{body}");
        body["last_seq"].as_i64().unwrap()
    }
}

/// Alice's project `p` holding `a.ts`, `lines` lines of source at version 1: where most
/// tests here start.
struct WithFile {
    app: TestApp,
    alice: String,
    p: String,
    base: String,
}

impl WithFile {
    async fn spawn(lines: usize) -> Self {
        let app = TestApp::spawn().await;
        let alice = app.user_token("alice");
        let p = app.create_project("alice", "p").await;
        let base = source(lines);
        app.write("alice", &p, "a.ts", &base).await;
        WithFile { app, alice, p, base }
    }
}

#[tokio::test]
async fn patch_applies_a_delta_against_the_current_version() {
    let app = TestApp::spawn().await;
    let alice = app.user_token("alice");
    let p = app.create_project("alice", "p").await;
    let base = source(200);
    let v1 = app.write("alice", &p, "src/a.ts", &base).await;
    let target = one_char_edit(&base);
    let body = json!({"base_version": 1, "delta": delta::encode(&base, &target)});
    let (status, answer) = app.patch(&p, "src/a.ts", &alice, body).await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["version"], 2);
    assert_eq!(answer["content_hash"], delta::content_hash(target.as_bytes()));
    assert_eq!(answer["seq"], v1["seq"].as_i64().unwrap() + 1);
    let file = app.file(&p, "src/a.ts", &alice).await;
    assert_eq!(
        (file["content"].as_str().unwrap(), &file["version"], &file["file_type"]),
        (&*target, &2.into(), &"typescript".into())
    );
}

#[tokio::test]
async fn patch_against_a_stale_base_is_a_409_and_writes_nothing() {
    let WithFile { app, alice, p, base } = WithFile::spawn(100).await;
    let newer = one_char_edit(&base);
    app.write("alice", &p, "a.ts", &newer).await;
    let seq = app.last_seq(&p, &alice).await;
    let body = json!({"base_version": 1, "delta": delta::encode(&base, &format!("{base}// mine\n"))});
    let answer = app.patch(&p, "a.ts", &alice, body).await;
    assert_error(&answer, 409, "version_conflict");
    assert_eq!((&answer.1["error"]["expected_version"], &answer.1["error"]["current_version"]), (&1.into(), &2.into()));
    assert_eq!(answer.1["error"]["current_hash"], delta::content_hash(newer.as_bytes()));
    assert_eq!(app.file(&p, "a.ts", &alice).await["content"], newer.as_str());
    assert_eq!(app.last_seq(&p, &alice).await, seq);
}

#[tokio::test]
async fn a_delta_that_does_not_apply_is_a_400_and_writes_nothing() {
    let WithFile { app, alice, p, base } = WithFile::spawn(100).await;
    let seq = app.last_seq(&p, &alice).await;
    // Its copies fit inside this base, but copy other bytes: the checksum catches it.
    let other_base = source(3).replace("export", "import");
    let made_for_another_base = delta::encode(&other_base, &one_char_edit(&other_base));
    let nul = delta::encode(&base, &format!("{base}\0"));
    for garbage in ["not base64!", "", "Z2FyYmFnZQ==", made_for_another_base.as_str(), nul.as_str()] {
        let answer = app.patch(&p, "a.ts", &alice, json!({"base_version": 1, "delta": garbage})).await;
        assert_error(&answer, 400, "invalid_request");
    }
    assert_eq!(app.file(&p, "a.ts", &alice).await["version"], 1);
    assert_eq!(app.last_seq(&p, &alice).await, seq);
    // Shape errors are 400 too.
    assert_error(&app.patch(&p, "a.ts", &alice, json!({"delta": "x"})).await, 400, "invalid_request");
    assert_error(
        &app.patch(&p, "a.ts", &alice, json!({"base_version": -1, "delta": "x"})).await,
        400,
        "invalid_request",
    );
}

#[tokio::test]
async fn a_retried_patch_with_its_op_id_answers_the_first_result() {
    let WithFile { app, alice, p, base } = WithFile::spawn(100).await;
    let op_id = uuid::Uuid::new_v4();
    let body = json!({"base_version": 1, "delta": delta::encode(&base, &one_char_edit(&base)), "op_id": op_id});
    let first = app.patch(&p, "a.ts", &alice, body.clone()).await;
    assert_eq!(first.0, 200, "{}", first.1);
    let seq = app.last_seq(&p, &alice).await;
    let retry = app.patch(&p, "a.ts", &alice, body).await;
    assert_eq!(retry, first);
    assert_eq!(app.last_seq(&p, &alice).await, seq, "a retry publishes nothing");
    // The same op_id for another write is refused.
    let other = json!({"base_version": 2, "delta": delta::encode(&one_char_edit(&base), &base), "op_id": op_id});
    assert_error(&app.patch(&p, "a.ts", &alice, other).await, 409, "op_id_reused");
}

/// A retry that arrives after someone else wrote the file (the answer to the first PATCH was
/// lost, another tab saved since) still answers the first result: the hub rebuilds the
/// patched content from base_version's history, so the retry's arguments match the op_id's.
#[tokio::test]
async fn a_patch_retried_after_another_write_answers_its_first_result() {
    let WithFile { app, alice, p, base } = WithFile::spawn(100).await;
    let op_id = uuid::Uuid::new_v4();
    let body = json!({"base_version": 1, "delta": delta::encode(&base, &one_char_edit(&base)), "op_id": op_id});
    let first = app.patch(&p, "a.ts", &alice, body.clone()).await;
    assert_eq!(first.0, 200, "{}", first.1);
    app.write("alice", &p, "a.ts", "someone else's text").await;
    let seq = app.last_seq(&p, &alice).await;
    let retry = app.patch(&p, "a.ts", &alice, body).await;
    assert_eq!(retry, first);
    assert_eq!(app.last_seq(&p, &alice).await, seq, "a retry publishes nothing");
    // A new PATCH against the old base is still a conflict.
    let stale =
        json!({"base_version": 1, "delta": delta::encode(&base, &one_char_edit(&base)), "op_id": uuid::Uuid::new_v4()});
    assert_eq!(app.patch(&p, "a.ts", &alice, stale).await.0, 409);
}

#[tokio::test]
async fn patch_takes_the_same_roles_as_put_and_hides_projects_it_cannot_read() {
    let WithFile { app, alice, p, base } = WithFile::spawn(50).await;
    let (bob, carol) = (app.user_token("bob"), app.user_token("carol"));
    let (status, _) = app.put(&format!("/v1/projects/{p}/members/bob"), &alice, json!({"role": "viewer"})).await;
    assert_eq!(status, 200);
    let body = json!({"base_version": 1, "delta": delta::encode(&base, &one_char_edit(&base))});
    assert_error(&app.patch(&p, "a.ts", &bob, body.clone()).await, 403, "forbidden");
    assert_error(&app.patch(&p, "a.ts", &carol, body.clone()).await, 404, "not_found");
    assert_error(&app.patch(&p, "missing.ts", &alice, body.clone()).await, 404, "not_found");
    assert_error(&app.patch(&p, "a.ts", &app.service_token(), body).await, 403, "forbidden");
    assert_eq!(app.file(&p, "a.ts", &alice).await["version"], 1);
}

#[tokio::test]
async fn a_socket_upsert_may_carry_a_delta() {
    let WithFile { app, alice, p, base } = WithFile::spawn(100).await;
    let target = one_char_edit(&base);
    let mut ws = app.ws(&alice).await;
    let frame = json!({"type": "upsert", "ref": "1", "channel": channel(&p), "path": "a.ts",
                       "base_version": 1, "delta": delta::encode(&base, &target)});
    ws.send(frame).await;
    let ack = ws.recv().await;
    assert_eq!((&ack["type"], &ack["ok"], &ack["version"]), (&"ack".into(), &true.into(), &2.into()), "{ack}");
    assert_eq!(app.file(&p, "a.ts", &alice).await["content"], target.as_str());
    // Stale base: 409 in the ack; garbage: 400; content and delta together: 400.
    let stale = json!({"type": "upsert", "ref": "2", "channel": channel(&p), "path": "a.ts",
                       "base_version": 1, "delta": delta::encode(&base, &target)});
    ws.send(stale).await;
    let ack = ws.recv().await;
    assert_eq!((&ack["ok"], &ack["error"]["code"]), (&false.into(), &"version_conflict".into()), "{ack}");
    let garbage = json!({"type": "upsert", "ref": "3", "channel": channel(&p), "path": "a.ts",
                         "base_version": 2, "delta": "Z2FyYmFnZQ=="});
    ws.send(garbage).await;
    let ack = ws.recv().await;
    assert_eq!((&ack["ok"], &ack["error"]["code"]), (&false.into(), &"invalid_request".into()), "{ack}");
    let both = json!({"type": "upsert", "ref": "4", "channel": channel(&p), "path": "a.ts",
                      "content": "x", "base_version": 2, "delta": "Z2FyYmFnZQ=="});
    ws.send(both).await;
    let ack = ws.recv().await;
    assert_eq!((&ack["ref"], &ack["error"]["code"]), (&"4".into(), &"invalid_request".into()), "{ack}");
    ws.assert_quiet(Duration::from_millis(200)).await;
    assert_eq!(app.file(&p, "a.ts", &alice).await["version"], 2);
}

/// The next event's payload, with its seq.
async fn next_update(ws: &mut Ws) -> (i64, Value) {
    let frame = ws.events(1).await.remove(0);
    assert_eq!(frame["event"], "file:update", "{frame}");
    (frame["seq"].as_i64().unwrap(), frame["payload"].clone())
}

#[tokio::test]
async fn subscribers_get_a_delta_only_when_they_saw_its_base_on_their_socket() {
    let app = TestApp::spawn().await;
    let alice = app.user_token("alice");
    let p = app.create_project("alice", "p").await;
    let mut early = app.ws(&alice).await;
    early.join(&p, None).await;
    let v1 = source(300);
    app.write("alice", &p, "a.ts", &v1).await;
    let (_, payload) = next_update(&mut early).await;
    assert_eq!(payload["content"], v1.as_str(), "no base yet: the content");

    let v2 = one_char_edit(&v1);
    app.write("alice", &p, "a.ts", &v2).await;
    let (_, payload) = next_update(&mut early).await;
    assert!(payload.get("content").is_none(), "{payload}");
    assert_eq!((&payload["version"], &payload["base_version"]), (&2.into(), &1.into()));
    assert_eq!(payload["base_hash"], delta::content_hash(v1.as_bytes()));
    assert!(payload["delta"].as_str().unwrap().len() < 200, "{payload}");
    let applied =
        delta::apply_verified(&v1, payload["delta"].as_str().unwrap(), payload["content_hash"].as_str().unwrap());
    assert_eq!(applied.as_deref(), Some(v2.as_str()));

    // A fresh joiner did not see version 2 on its socket: it gets the content of version 3,
    // while the early socket gets a delta; one replaying from 0 saw every version.
    let mut fresh = app.ws(&alice).await;
    let cursor = fresh.join(&p, None).await;
    let mut replaying = app.ws(&alice).await;
    replaying.join(&p, Some(0)).await;
    assert_eq!(replaying.events(2).await[1]["payload"]["content"], v2.as_str(), "a replay of the log carries contents");
    let v3 = format!("// header\n{v2}");
    app.write("alice", &p, "a.ts", &v3).await;
    let (seq, payload) = next_update(&mut fresh).await;
    assert_eq!((seq, payload["content"].as_str()), (cursor + 1, Some(v3.as_str())));
    let (_, payload) = next_update(&mut early).await;
    assert_eq!(payload["base_version"], 2, "{payload}");
    let (_, payload) = next_update(&mut replaying).await;
    assert_eq!(payload["base_version"], 2, "its base came in the replay: {payload}");

    // A rewrite whose delta is not smaller than half the content: the content, to everyone.
    let v4: String = (0..300).map(|i| format!("{i:08x} something else entirely {}\n", i * 7)).collect();
    app.write("alice", &p, "a.ts", &v4).await;
    for ws in [&mut early, &mut fresh, &mut replaying] {
        let (_, payload) = next_update(ws).await;
        assert_eq!(payload["content"], v4.as_str());
    }
    // The fresh joiner saw version 4: the next edit is a delta for it too.
    app.write("alice", &p, "a.ts", &one_char_edit(&v4)).await;
    for ws in [&mut early, &mut fresh, &mut replaying] {
        let (_, payload) = next_update(ws).await;
        assert_eq!(payload["base_version"], 4, "{payload}");
    }
}

#[tokio::test]
async fn a_one_character_edit_of_a_1_mib_file_moves_less_than_1_kib_each_way() {
    let app = TestApp::spawn().await;
    let alice = app.user_token("alice");
    let p = app.create_project("alice", "p").await;
    let mut ws = app.ws(&alice).await;
    ws.join(&p, None).await;
    let mut v1 = source(30_000);
    v1.truncate(1 << 20);
    app.write("alice", &p, "big.ts", &v1).await;
    ws.events(1).await;
    let v2 = one_char_edit(&v1);
    let upstream = json!({"base_version": 1, "delta": delta::encode(&v1, &v2)}).to_string();
    assert!(upstream.len() < 1024, "request body {} bytes", upstream.len());
    let (status, body) = app.patch(&p, "big.ts", &alice, serde_json::from_str(&upstream).unwrap()).await;
    assert_eq!(status, 200, "{body}");
    let frame = ws.events(1).await.remove(0);
    assert!(frame.to_string().len() < 1024, "event frame {} bytes", frame.to_string().len());
    let payload = &frame["payload"];
    let applied =
        delta::apply_verified(&v1, payload["delta"].as_str().unwrap(), payload["content_hash"].as_str().unwrap());
    assert_eq!(applied.as_deref(), Some(v2.as_str()));
}
