//! Issue #11 (hardening), the HTTP and SQL half: reused `op_id`s, bounded `file_type`,
//! integer inputs within 0..=2^53−1, sessions ending with their deleted project, and the
//! error shapes of empty paths and NUL characters.

use reqwest::Method;
use serde_json::{Value, json};
use uuid::Uuid;

use crate::helpers::{TestApp, app_with_storage, assert_error};

const MAX_SAFE: i64 = (1 << 53) - 1;

/// One write kind of the HTTP API, on files no other kind touches.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Kind {
    Upsert,
    Delete,
    Bulk,
    Move,
}

const KINDS: [Kind; 4] = [Kind::Upsert, Kind::Delete, Kind::Bulk, Kind::Move];

/// Sends one write of `kind` with `op`; `variant` changes its arguments (not its kind).
async fn write(app: &TestApp, project: &str, kind: Kind, op: Uuid, variant: bool) -> (reqwest::StatusCode, Value) {
    let token = app.user_token("alice");
    let base = format!("/v1/projects/{project}");
    match kind {
        Kind::Upsert => {
            let content = if variant { "other" } else { "new" };
            app.put(&format!("{base}/files/u.txt"), &token, json!({"content": content, "op_id": op})).await
        }
        Kind::Delete => {
            let path = if variant { "m.txt" } else { "d.txt" };
            app.delete(&format!("{base}/files/{path}?op_id={op}"), &token).await
        }
        Kind::Bulk => {
            let path = if variant { "b2.txt" } else { "b1.txt" };
            app.post(
                &format!("{base}/files:bulk"),
                &token,
                json!({"upserts": [{"path": path, "content": "b"}], "op_id": op}),
            )
            .await
        }
        Kind::Move => {
            let to = if variant { "m3.txt" } else { "m2.txt" };
            app.post(&format!("{base}/files:move"), &token, json!({"from": "m.txt", "to": to, "op_id": op})).await
        }
    }
}

/// A project holding `d.txt` and `m.txt` (what the delete and the move act on).
async fn seeded_project(app: &TestApp) -> String {
    let project = app.create_project("alice", "ops").await;
    app.write("alice", &project, "d.txt", "d").await;
    app.write("alice", &project, "m.txt", "m").await;
    project
}

/// Everything an op could have changed: the current files and the whole event log.
async fn state_of(app: &TestApp, project: &str) -> (Value, Value) {
    let token = app.user_token("alice");
    let (status, files) = app.get(&format!("/v1/projects/{project}/files?include_content=true"), &token).await;
    assert_eq!(status, 200, "{files}");
    let (status, events) = app.get(&format!("/v1/projects/{project}/events?since=0"), &token).await;
    assert_eq!(status, 200, "{events}");
    (files, events)
}

#[tokio::test]
async fn op_id_reused_for_another_write_is_409_and_changes_nothing() {
    let app = TestApp::spawn_with(|c| {
        c.limits.write_rate = 100_000.0;
        c.limits.write_burst = 100_000.0;
    })
    .await;
    for first in KINDS {
        for second in KINDS {
            let project = seeded_project(&app).await;
            let op = Uuid::new_v4();
            let answer = write(&app, &project, first, op, false).await;
            assert_eq!(answer.0, 200, "{first:?}: {}", answer.1);
            let before = state_of(&app, &project).await;
            // Another kind, or the same kind with other arguments.
            let reused = write(&app, &project, second, op, first == second).await;
            assert_error(&reused, 409, "op_id_reused");
            assert!(reused.1["error"]["message"].as_str().unwrap().contains("op_id"), "{}", reused.1);
            assert_eq!(state_of(&app, &project).await, before, "{first:?} then {second:?} changed something");
        }
        // The same write again is an idempotent retry: the first answer, nothing new published.
        let project = seeded_project(&app).await;
        let op = Uuid::new_v4();
        let answer = write(&app, &project, first, op, false).await;
        let before = state_of(&app, &project).await;
        let retry = write(&app, &project, first, op, false).await;
        assert_eq!(retry, answer, "{first:?} retry");
        assert_eq!(state_of(&app, &project).await, before, "{first:?} retry changed something");
    }

    // The same op_id in another project is another write too.
    let (one, two) = (seeded_project(&app).await, seeded_project(&app).await);
    let op = Uuid::new_v4();
    assert_eq!(write(&app, &one, Kind::Upsert, op, false).await.0, 200);
    let before = state_of(&app, &two).await;
    assert_error(&write(&app, &two, Kind::Upsert, op, false).await, 409, "op_id_reused");
    assert_eq!(state_of(&app, &two).await, before);

    // Other arguments of one kind: content, file_type and expected_version each count.
    let project = seeded_project(&app).await;
    let token = app.user_token("alice");
    let path = format!("/v1/projects/{project}/files/x.ts");
    let op = Uuid::new_v4();
    let first = app.put(&path, &token, json!({"content": "x", "op_id": op})).await;
    assert_eq!(first.0, 200, "{}", first.1);
    for body in [
        json!({"content": "x", "op_id": op, "file_type": "text"}),
        json!({"content": "x", "op_id": op, "expected_version": 0}),
        json!({"content": "y", "op_id": op}),
    ] {
        assert_error(&app.put(&path, &token, body).await, 409, "op_id_reused");
    }
    assert_eq!(app.put(&path, &token, json!({"content": "x", "op_id": op})).await, first);
    let delete_path = format!("/v1/projects/{project}/files/d.txt");
    let op = Uuid::new_v4();
    let first = app.delete(&format!("{delete_path}?op_id={op}"), &token).await;
    assert_eq!(first.0, 200, "{}", first.1);
    let other = app.delete(&format!("{delete_path}?op_id={op}&expected_version=1"), &token).await;
    assert_error(&other, 409, "op_id_reused");
}

#[tokio::test]
async fn op_id_reuse_is_refused_in_sql_too() {
    let app = TestApp::spawn().await;
    let db = app.sql().await;
    let p = Uuid::new_v4();
    db.query_one("SELECT synchub.create_project($1, 'p', 'alice', '{}')", &[&p]).await.unwrap();
    db.query_one("SELECT * FROM synchub.upsert_project_file($1, 'm.txt', 'm', NULL, NULL, 'alice', NULL)", &[&p])
        .await
        .unwrap();
    let op = Uuid::new_v4();
    let first = db
        .query_one("SELECT seq FROM synchub.upsert_project_file($1, 'a.txt', 'a', NULL, NULL, 'alice', $2)", &[&p, &op])
        .await
        .unwrap();
    let code = |err: tokio_postgres::Error| err.as_db_error().map(|e| e.code().code().to_string()).unwrap_or_default();
    let reused = [
        db.query_one("SELECT * FROM synchub.delete_project_file($1, 'a.txt', NULL, 'alice', $2)", &[&p, &op]).await,
        db.query_one(
            "SELECT * FROM synchub.bulk_upsert_project_files($1, '[{\"path\":\"a.txt\",\"content\":\"a\"}]', '[]', 'alice', $2)",
            &[&p, &op],
        )
        .await,
        db.query_one("SELECT * FROM synchub.move_project_file($1, 'm.txt', 'n.txt', NULL, 'alice', $2)", &[&p, &op])
            .await,
        db.query_one("SELECT * FROM synchub.upsert_project_file($1, 'a.txt', 'b', NULL, NULL, 'alice', $2)", &[&p, &op])
            .await,
    ];
    for answer in reused {
        assert_eq!(code(answer.unwrap_err()), "SHO09");
    }
    let again = db
        .query_one("SELECT seq FROM synchub.upsert_project_file($1, 'a.txt', 'a', NULL, NULL, 'alice', $2)", &[&p, &op])
        .await
        .unwrap();
    assert_eq!(again.try_get::<_, i64>(0).unwrap(), first.try_get::<_, i64>(0).unwrap());
    let events: i64 =
        db.query_one("SELECT count(*) FROM synchub.read_events($1, 0, 100)", &[&p]).await.unwrap().try_get(0).unwrap();
    assert_eq!(events, 2);
}

#[tokio::test]
async fn file_type_is_bounded_over_http_and_in_sql() {
    let app = TestApp::spawn().await;
    let token = app.user_token("alice");
    let project = app.create_project("alice", "types").await;
    let put = |path: &str, file_type: Value| {
        let url = format!("/v1/projects/{project}/files/{path}");
        let token = token.clone();
        let app = &app;
        async move { app.put(&url, &token, json!({"content": "x", "file_type": file_type})).await }
    };
    let longest = "a".repeat(64);
    assert_eq!(put("ok.ts", json!(longest)).await.0, 200);
    assert_eq!(put("ok2.ts", json!("c++.v1_x-y")).await.0, 200);
    for bad in [json!("a".repeat(65)), json!("x".repeat(10 << 20)), json!("has space"), json!("é"), json!("a/b")] {
        assert_error(&put("bad.ts", bad).await, 400, "invalid_request");
    }
    let bulk = json!({"upserts": [{"path": "b.ts", "content": "x", "file_type": "a".repeat(65)}]});
    assert_error(&app.post(&format!("/v1/projects/{project}/files:bulk"), &token, bulk).await, 400, "invalid_request");
    let (_, files) = app.get(&format!("/v1/projects/{project}/files"), &token).await;
    assert_eq!(files["files"].as_array().unwrap().len(), 2, "{files}");

    // Direct SQL callers meet the same rule.
    let db = app.sql().await;
    let p = Uuid::parse_str(&project).unwrap();
    let long = "a".repeat(65);
    let err = db
        .query_one("SELECT * FROM synchub.upsert_project_file($1, 'c.ts', 'x', $2, NULL, 'alice', NULL)", &[&p, &long])
        .await
        .unwrap_err();
    assert_eq!(err.as_db_error().unwrap().code().code(), "SH400");
    for files in [
        json!([{"path": "c.ts", "content": "x", "file_type": long}]),
        json!([{"path": "c.ts", "content": "x", "file_type": "white space"}]),
        json!([{"path": "c.ts", "content": "x", "file_type": 7}]),
    ] {
        let err = db
            .query_one("SELECT * FROM synchub.bulk_upsert_project_files($1, $2, '[]', 'alice', NULL)", &[&p, &files])
            .await
            .unwrap_err();
        assert_eq!(err.as_db_error().unwrap().code().code(), "SH400", "{files}");
    }
}

#[tokio::test]
async fn integer_inputs_outside_0_to_2_pow_53_are_400() {
    let app = TestApp::spawn().await;
    let token = app.user_token("alice");
    let service = app.service_token();
    let project = app.create_project("alice", "ints").await;
    app.write("alice", &project, "a.txt", "a").await;
    let base = format!("/v1/projects/{project}");

    // since and limit
    for query in [
        "since=9223372036854775807",
        "since=9007199254740992",
        "since=-1",
        "since=1.5",
        "since=abc",
        "since=",
        "since=0&limit=-1",
        "since=0&limit=9007199254740992",
        "since=0&limit=2.5",
    ] {
        let answer = app.get(&format!("{base}/events?{query}"), &token).await;
        assert_error(&answer, 400, "invalid_request");
    }
    let (status, page) = app.get(&format!("{base}/events?since={MAX_SAFE}&limit={MAX_SAFE}"), &token).await;
    assert_eq!(status, 200, "{page}");
    assert_eq!(page["events"], json!([]));

    // expected_version in bodies and in the query string
    for bad in [json!(-1), json!(1.5), json!(MAX_SAFE + 1), json!("1"), json!(u64::MAX)] {
        let put =
            app.put(&format!("{base}/files/a.txt"), &token, json!({"content": "b", "expected_version": bad})).await;
        assert_error(&put, 400, "invalid_request");
        assert!(put.1["error"]["message"].as_str().unwrap().contains("expected_version"), "{}", put.1);
        let bulk = json!({"upserts": [{"path": "a.txt", "content": "b", "expected_version": bad}]});
        assert_error(&app.post(&format!("{base}/files:bulk"), &token, bulk).await, 400, "invalid_request");
        let bulk = json!({"deletes": [{"path": "a.txt", "expected_version": bad}]});
        assert_error(&app.post(&format!("{base}/files:bulk"), &token, bulk).await, 400, "invalid_request");
        let mv = json!({"from": "a.txt", "to": "b.txt", "expected_version": bad});
        assert_error(&app.post(&format!("{base}/files:move"), &token, mv).await, 400, "invalid_request");
    }
    for bad in ["-1", "1.5", "9007199254740992", "x"] {
        let answer = app.delete(&format!("{base}/files/a.txt?expected_version={bad}"), &token).await;
        assert_error(&answer, 400, "invalid_request");
    }
    // A large but valid expected_version is a conflict, never a 500.
    let big = json!({"content": "b", "expected_version": 1u64 << 40});
    assert_error(&app.put(&format!("{base}/files/a.txt"), &token, big).await, 409, "version_conflict");
    let bulk = json!({"upserts": [{"path": "a.txt", "content": "b", "expected_version": MAX_SAFE}]});
    assert_error(&app.post(&format!("{base}/files:bulk"), &token, bulk).await, 409, "version_conflict");
    assert_error(
        &app.delete(&format!("{base}/files/a.txt?expected_version={MAX_SAFE}"), &token).await,
        409,
        "version_conflict",
    );

    // base_revision (rename, editor state)
    for bad in [json!(-1), json!(0.5), json!(MAX_SAFE + 1), json!(null)] {
        let rename =
            app.call(Method::PATCH, &base, Some(&token), Some(json!({"name": "n", "base_revision": bad}))).await;
        assert_error(&rename, 400, "invalid_request");
        let state = app.put(&format!("{base}/editor-state"), &token, json!({"state": {}, "base_revision": bad})).await;
        assert_error(&state, 400, "invalid_request");
    }

    // ttl_seconds, max_lifetime_seconds (checked before any snapshot is made)
    for body in [
        json!({"ttl_seconds": -5}),
        json!({"ttl_seconds": 60.5}),
        json!({"max_lifetime_seconds": MAX_SAFE + 1}),
        json!({"max_lifetime_seconds": "600"}),
    ] {
        assert_error(&app.post(&format!("{base}/sessions"), &service, body).await, 400, "invalid_request");
    }
    let mint = json!({"session_id": Uuid::new_v4(), "ttl_seconds": -1});
    assert_error(&app.post(&format!("{base}/tokens"), &service, mint).await, 400, "invalid_request");

    // Direct SQL callers: a seq past the range is refused, never an overflow.
    let db = app.sql().await;
    let p = Uuid::parse_str(&project).unwrap();
    let err = db.query_one("SELECT synchub.events_for($1, 'alice', $2, 10)", &[&p, &i64::MAX]).await.unwrap_err();
    assert_eq!(err.as_db_error().unwrap().code().code(), "SH400");
}

#[tokio::test]
async fn base_with_a_duplicate_path_is_400() {
    let app = TestApp::spawn().await;
    let token = app.user_token("alice");
    let (status, created) = app
        .post("/v1/projects", &token, json!({"name": "gh", "source": {"kind": "github", "repo": "acme/site"}}))
        .await;
    assert_eq!(status, 201, "{created}");
    let base = format!("/v1/projects/{}/base", created["id"].as_str().unwrap());
    let files = json!([{"path": "a.txt", "content": "1"}, {"path": "a.txt", "content": "2"}]);
    for apply in [false, true] {
        let answer = app.put(&base, &token, json!({"commit": "abc1234", "files": files, "apply": apply})).await;
        assert_error(&answer, 400, "invalid_request");
    }
    // Identical duplicates too (they would pass the change, then collide in the base table).
    let same = json!([{"path": "a.txt", "content": "1"}, {"path": "a.txt", "content": "1"}]);
    let answer = app.put(&base, &token, json!({"commit": "abc1234", "files": same})).await;
    assert_error(&answer, 400, "invalid_request");
}

#[tokio::test]
async fn a_deleted_projects_sessions_stay_ended_after_restore() {
    let (app, _storage) = app_with_storage().await;
    let alice = app.user_token("alice");
    let service = app.service_token();
    let project = app.create_project("alice", "revive").await;
    app.write("alice", &project, "a.txt", "a").await;
    let (status, session) = app.post(&format!("/v1/projects/{project}/sessions"), &service, json!({})).await;
    assert_eq!(status, 201, "{session}");
    let container = session["token"].as_str().unwrap().to_string();
    let session_id = session["session_id"].as_str().unwrap().to_string();
    assert_eq!(app.get(&format!("/v1/projects/{project}/files"), &container).await.0, 200);

    assert_eq!(app.delete(&format!("/v1/projects/{project}"), &alice).await.0, 200);
    let (status, restored) = app.post(&format!("/v1/projects/{project}/restore"), &alice, json!({})).await;
    assert_eq!(status, 200, "{restored}");

    assert_error(&app.get(&format!("/v1/projects/{project}/files"), &container).await, 401, "unauthenticated");
    assert_eq!(app.post("/v1/tokens/refresh", &container, json!({})).await.0, 401);
    let mint = app.post(&format!("/v1/projects/{project}/tokens"), &service, json!({"session_id": session_id})).await;
    assert_error(&mint, 403, "forbidden");
}

#[tokio::test]
async fn empty_paths_and_nul_characters_answer_400() {
    let app = TestApp::spawn().await;
    let token = app.user_token("alice");
    let project = app.create_project("alice", "shapes").await;
    let base = format!("/v1/projects/{project}");

    for path in ["files/", "files//x", "files/a//b", "files/a/"] {
        for method in [Method::GET, Method::PUT, Method::DELETE] {
            let body = (method == Method::PUT).then(|| json!({"content": "x"}));
            let answer = app.call(method.clone(), &format!("{base}/{path}"), Some(&token), body).await;
            assert_error(&answer, 400, "invalid_path");
        }
    }

    let nul = "a\u{0}b";
    assert_error(&app.post("/v1/projects", &token, json!({"name": nul})).await, 400, "invalid_request");
    let rename = app.call(Method::PATCH, &base, Some(&token), Some(json!({"name": nul, "base_revision": 1}))).await;
    assert_error(&rename, 400, "invalid_request");
    let member = app.put(&format!("{base}/members/a%00b"), &token, json!({"role": "viewer"})).await;
    assert_error(&member, 400, "invalid_request");
    let state = json!({"state": {"tabs": [nul]}, "base_revision": 0});
    assert_error(&app.put(&format!("{base}/editor-state"), &token, state).await, 400, "invalid_request");
    let state = json!({"state": {nul: 1}, "base_revision": 0});
    assert_error(&app.put(&format!("{base}/editor-state"), &token, state).await, 400, "invalid_request");
    // File content with NUL stays 415.
    let content = app.put(&format!("{base}/files/n.txt"), &token, json!({"content": nul})).await;
    assert_error(&content, 415, "unsupported_content");
    // Nothing was created or renamed.
    let (_, list) = app.get("/v1/projects", &token).await;
    assert_eq!(list.as_array().unwrap().len(), 1, "{list}");
    assert_eq!(list[0]["name"], "shapes");
}

#[tokio::test]
async fn one_op_id_cannot_be_spent_in_two_projects_at_once() {
    let app = TestApp::spawn().await;
    let (mut first, second) = (app.sql().await, app.sql().await);
    let (one, two) = (Uuid::new_v4(), Uuid::new_v4());
    for p in [one, two] {
        first.query_one("SELECT synchub.create_project($1, 'p', 'alice', '{}')", &[&p]).await.unwrap();
    }
    let op = Uuid::new_v4();
    let upsert = "SELECT * FROM synchub.upsert_project_file($1, 'a.txt', 'a', NULL, NULL, 'alice', $2)";
    // The first write holds its transaction open; the second (other project, other row
    // lock) must wait for it, then see the op_id taken.
    let tx = first.transaction().await.unwrap();
    tx.query_one(upsert, &[&one, &op]).await.unwrap();
    let racing = tokio::spawn(async move { second.query_one(upsert, &[&two, &op]).await.map(|_| ()) });
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    assert!(!racing.is_finished(), "the second write did not wait for the first");
    tx.commit().await.unwrap();
    let err = tokio::time::timeout(std::time::Duration::from_secs(10), racing).await.unwrap().unwrap().unwrap_err();
    assert_eq!(err.as_db_error().unwrap().code().code(), "SHO09");
}
