//! The HTTP API end to end through a real socket: a tour of every route, every error code
//! of the contract with its status, and 404 for every route on another user's project.

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use crate::helpers::{TestApp, assert_error};

#[tokio::test]
async fn project_lifecycle_members_and_editor_state() {
    let app = TestApp::spawn().await;
    let alice = app.user_token("alice");
    let bob = app.user_token("bob");

    // Client-supplied id (offline-created), GitHub source.
    let id = uuid::Uuid::new_v4().to_string();
    let (status, created) = app
        .post(
            "/v1/projects",
            &alice,
            json!({"id": id, "name": "site", "source": {"kind": "github", "repo": "acme/site", "ref": "main", "base_commit": "abc1234"}}),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{created}");
    assert_eq!(created["id"], id.as_str());
    assert_eq!(created["role"], "owner");
    assert_eq!(created["source"]["repo"], "acme/site");
    let older = app.create_project("alice", "older").await;
    app.write("alice", &older, "x.txt", "bump").await;

    // Newest updated_at first.
    let (_, list) = app.get("/v1/projects", &alice).await;
    let names: Vec<&str> = list.as_array().unwrap().iter().map(|p| p["name"].as_str().unwrap()).collect();
    assert_eq!(names, vec!["older", "site"]);

    // Rename with revisions.
    let (status, renamed) = app
        .call(
            Method::PATCH,
            &format!("/v1/projects/{id}"),
            Some(&alice),
            Some(json!({"name": "site2", "base_revision": 1})),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{renamed}");
    assert_eq!(renamed["revision"], 2);
    let stale = app
        .call(
            Method::PATCH,
            &format!("/v1/projects/{id}"),
            Some(&alice),
            Some(json!({"name": "site3", "base_revision": 1})),
        )
        .await;
    assert_error(&stale, 409, "revision_conflict");
    assert_eq!(stale.1["error"]["server"]["name"], "site2");

    // Members: bob becomes a viewer, can read, cannot write.
    let (status, _) = app.put(&format!("/v1/projects/{id}/members/bob"), &alice, json!({"role": "viewer"})).await;
    assert_eq!(status, StatusCode::OK);
    let (_, members) = app.get(&format!("/v1/projects/{id}/members"), &bob).await;
    assert_eq!(members.as_array().unwrap().len(), 2);
    app.write("alice", &id, "README.md", "# hi").await;
    let (status, _) = app.get(&format!("/v1/projects/{id}/files/README.md"), &bob).await;
    assert_eq!(status, StatusCode::OK);
    let refused = app.put(&format!("/v1/projects/{id}/files/README.md"), &bob, json!({"content": "mine"})).await;
    assert_error(&refused, 403, "forbidden");
    // Removing bob hides the project from him again.
    let (status, _) = app.delete(&format!("/v1/projects/{id}/members/bob"), &alice).await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    assert_error(&app.get(&format!("/v1/projects/{id}"), &bob).await, 404, "not_found");

    // Editor state: per user, revisioned, server wins.
    let (_, empty) = app.get(&format!("/v1/projects/{id}/editor-state"), &alice).await;
    assert_eq!(empty, json!({"state": null, "revision": 0, "updated_at": null}));
    let tabs = json!({"tabs": ["README.md"], "active": "README.md"});
    let (status, saved) =
        app.put(&format!("/v1/projects/{id}/editor-state"), &alice, json!({"state": tabs, "base_revision": 0})).await;
    assert_eq!(status, StatusCode::OK, "{saved}");
    assert_eq!(saved["revision"], 1);
    let stale = app
        .put(&format!("/v1/projects/{id}/editor-state"), &alice, json!({"state": {"tabs": []}, "base_revision": 0}))
        .await;
    assert_error(&stale, 409, "revision_conflict");
    assert_eq!(stale.1["error"]["server"]["state"], tabs);

    // Tombstone and restore.
    let (status, deleted) = app.delete(&format!("/v1/projects/{id}"), &alice).await;
    assert_eq!(status, StatusCode::OK);
    assert!(deleted["deleted_at"].is_string());
    let (_, list) = app.get("/v1/projects", &alice).await;
    assert_eq!(list.as_array().unwrap().len(), 1);
    let (_, list) = app.get("/v1/projects?include_deleted=true", &alice).await;
    assert_eq!(list.as_array().unwrap().len(), 2);
    assert_error(&app.get(&format!("/v1/projects/{id}/files"), &alice).await, 404, "not_found");
    let (_, events) = app.get(&format!("/v1/projects/{id}/events?since=0"), &alice).await;
    assert_eq!(events["events"].as_array().unwrap().last().unwrap()["event"], "project:deleted");
    let (status, restored) = app.post(&format!("/v1/projects/{id}/restore"), &alice, json!({})).await;
    assert_eq!(status, StatusCode::OK);
    assert!(restored["deleted_at"].is_null());
}

#[tokio::test]
async fn files_routes_end_to_end() {
    let app = TestApp::spawn().await;
    let alice = app.user_token("alice");
    let p = app.create_project("alice", "files").await;
    let base = format!("/v1/projects/{p}/files");

    // Percent-encoded segments; file_type inferred.
    let (status, put) = app.put(&format!("{base}/src/my%20file.ts"), &alice, json!({"content": "let a = 1;"})).await;
    assert_eq!(status, StatusCode::OK, "{put}");
    assert_eq!(put["path"], "src/my file.ts");
    assert_eq!(put["version"], 1);
    assert_eq!(put["seq"], 1);
    let (_, file) = app.get(&format!("{base}/src/my%20file.ts"), &alice).await;
    assert_eq!(file["file_type"], "typescript");
    assert_eq!(file["content"], "let a = 1;");
    assert_eq!(file["size"], 10);

    // Bulk, then list with the cursor of the same read.
    let (status, bulk) = app
        .post(
            &format!("{base}:bulk"),
            &alice,
            json!({"upserts": [{"path": "a.json", "content": "{}"}, {"path": "b.md", "content": "b"}], "deletes": []}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{bulk}");
    assert_eq!(bulk["seq"], 2);
    let (_, list) = app.get(&format!("{base}?include_content=true"), &alice).await;
    assert_eq!(list["cursor"], 2);
    let paths: Vec<&str> = list["files"].as_array().unwrap().iter().map(|f| f["path"].as_str().unwrap()).collect();
    assert_eq!(paths, vec!["a.json", "b.md", "src/my file.ts"]);
    assert_eq!(list["files"][0]["content"], "{}");
    let (_, list) = app.get(&base, &alice).await;
    assert!(list["files"][0].get("content").is_none());

    // Move, delete with expected_version, idempotent retry.
    let (status, moved) = app.post(&format!("{base}:move"), &alice, json!({"from": "b.md", "to": "docs/b.md"})).await;
    assert_eq!(status, StatusCode::OK, "{moved}");
    assert_eq!(moved["seq"], 3);
    let stale = app.delete(&format!("{base}/a.json?expected_version=5"), &alice).await;
    assert_error(&stale, 409, "version_conflict");
    let (status, deleted) = app.delete(&format!("{base}/a.json?expected_version=1"), &alice).await;
    assert_eq!(status, StatusCode::OK, "{deleted}");
    assert_eq!(deleted["version"], 2);
    assert_error(&app.delete(&format!("{base}/a.json"), &alice).await, 404, "not_found");
    let op = uuid::Uuid::new_v4();
    let first = app.put(&format!("{base}/c.txt"), &alice, json!({"content": "c", "op_id": op})).await;
    let retry = app.put(&format!("{base}/c.txt"), &alice, json!({"content": "c", "op_id": op})).await;
    assert_eq!(first, retry);

    // Events over HTTP: every change once, in order.
    let (_, page) = app.get(&format!("/v1/projects/{p}/events?since=0&limit=2"), &alice).await;
    assert_eq!(page["events"].as_array().unwrap().len(), 2);
    assert_eq!(page["next"], 2);
    let (_, page) = app.get(&format!("/v1/projects/{p}/events?since=2"), &alice).await;
    let kinds: Vec<&str> = page["events"].as_array().unwrap().iter().map(|e| e["event"].as_str().unwrap()).collect();
    assert_eq!(kinds, vec!["bulk:apply", "file:delete", "file:update"]);
    let frame = &page["events"][2];
    assert_eq!(frame["type"], "event");
    assert_eq!(frame["channel"], format!("realtime:project:{p}"));
    assert_eq!(frame["payload"]["op_id"], op.to_string());
    assert_eq!(frame["payload"]["actor"], "alice");
}

#[tokio::test]
async fn github_base_and_changes() {
    let app = TestApp::spawn().await;
    let alice = app.user_token("alice");
    let (_, project) =
        app.post("/v1/projects", &alice, json!({"name": "gh", "source": {"kind": "github", "repo": "acme/app"}})).await;
    let p = project["id"].as_str().unwrap();
    let tree =
        json!({"commit": "0123abcd", "files": [{"path": "a.ts", "content": "a"}, {"path": "b.ts", "content": "b"}]});
    let (status, base) = app.put(&format!("/v1/projects/{p}/base"), &alice, tree).await;
    assert_eq!(status, StatusCode::OK, "{base}");
    assert_eq!(base["applied"], true);
    let (_, changes) = app.get(&format!("/v1/projects/{p}/changes"), &alice).await;
    assert_eq!(changes, json!({"base_commit": "0123abcd", "changes": []}));
    app.write("alice", p, "a.ts", "changed").await;
    app.write("alice", p, "c.ts", "new").await;
    app.delete(&format!("/v1/projects/{p}/files/b.ts"), &alice).await;
    let (_, changes) = app.get(&format!("/v1/projects/{p}/changes"), &alice).await;
    assert_eq!(
        changes["changes"],
        json!([{"path": "a.ts", "status": "modified"}, {"path": "b.ts", "status": "deleted"}, {"path": "c.ts", "status": "added"}])
    );
    // The service token may set the base too; a cloud project refuses.
    let (status, _) = app
        .put(
            &format!("/v1/projects/{p}/base"),
            &app.service_token(),
            json!({"commit": "fedcba98", "files": [], "apply": false}),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    let cloud = app.create_project("alice", "cloud").await;
    let refused =
        app.put(&format!("/v1/projects/{cloud}/base"), &alice, json!({"commit": "0123abcd", "files": []})).await;
    assert_error(&refused, 400, "invalid_request");
}

#[tokio::test]
async fn every_error_code_is_reachable() {
    let app = TestApp::spawn_with(|c| {
        c.limits.max_file_bytes = 1024;
        c.limits.max_projects_per_user = 3;
        c.limits.write_rate = 1.0;
        c.limits.write_burst = 30.0;
    })
    .await;
    let alice = app.user_token("alice");
    let p = app.create_project("alice", "errors").await;
    let file = format!("/v1/projects/{p}/files/a.txt");

    assert_error(&app.post("/v1/projects", &alice, json!({"nam": "x"})).await, 400, "invalid_request");
    assert_error(
        &app.put(&format!("/v1/projects/{p}/files/.git/config"), &alice, json!({"content": "x"})).await,
        400,
        "invalid_path",
    );
    assert_error(&app.call(Method::GET, "/v1/projects", None, None).await, 401, "unauthenticated");
    let expired = synchub::auth::users::UserVerifier::new(Some(crate::helpers::JWT_SECRET), None, &[], None, None)
        .unwrap()
        .mint("alice", -3600)
        .unwrap();
    assert_error(&app.get("/v1/projects", &expired).await, 401, "token_expired");
    app.put(&format!("/v1/projects/{p}/members/vera"), &alice, json!({"role": "viewer"})).await;
    assert_error(&app.put(&file, &app.user_token("vera"), json!({"content": "x"})).await, 403, "forbidden");
    app.create_project("alice", "two").await;
    app.create_project("alice", "three").await;
    assert_error(&app.post("/v1/projects", &alice, json!({"name": "four"})).await, 403, "quota_exceeded");
    assert_error(&app.get(&format!("/v1/projects/{p}"), &app.user_token("bob")).await, 404, "not_found");
    app.put(&file, &alice, json!({"content": "1"})).await;
    assert_error(
        &app.put(&file, &alice, json!({"content": "2", "expected_version": 0})).await,
        409,
        "version_conflict",
    );
    let stale = app
        .call(Method::PATCH, &format!("/v1/projects/{p}"), Some(&alice), Some(json!({"name": "n", "base_revision": 9})))
        .await;
    assert_error(&stale, 409, "revision_conflict");
    assert_error(
        &app.post("/v1/projects", &app.user_token("carol"), json!({"id": p, "name": "dup"})).await,
        409,
        "already_exists",
    );
    let owner = app.sql().await;
    owner.batch_execute("RESET ROLE").await.unwrap();
    app.put(&file, &alice, json!({"content": "3"})).await;
    owner.execute("DELETE FROM synchub.events WHERE project_id = $1::text::uuid AND seq <= 1", &[&p]).await.unwrap();
    let trimmed = app.get(&format!("/v1/projects/{p}/events?since=0"), &alice).await;
    assert_error(&trimmed, 410, "history_trimmed");
    assert_eq!(trimmed.1["error"]["oldest_seq"], 2);
    assert_error(&app.put(&file, &alice, json!({"content": "x".repeat(1025)})).await, 413, "payload_too_large");
    assert_error(&app.put(&file, &alice, json!({"content": "nul\u{0}byte"})).await, 415, "unsupported_content");
    let not_utf8 = app
        .http
        .put(format!("{}{file}", app.base))
        .bearer_auth(&alice)
        .header("content-type", "application/json")
        .body(vec![b'{', b'"', 0xff, 0xfe, b'"', b'}'])
        .send()
        .await
        .unwrap();
    assert_eq!(not_utf8.status(), StatusCode::UNSUPPORTED_MEDIA_TYPE);
    // Nothing of the refused writes landed.
    let (_, current) = app.get(&file, &alice).await;
    assert_eq!(current["content"], "3");

    // Rate limit: the burst is used up, then 429 with Retry-After.
    let mut limited = None;
    for i in 0..40 {
        let response = app
            .http
            .put(format!("{}{file}", app.base))
            .bearer_auth(&alice)
            .json(&json!({"content": format!("burst {i}")}))
            .send()
            .await
            .unwrap();
        if response.status() == StatusCode::TOO_MANY_REQUESTS {
            limited = Some(response);
            break;
        }
    }
    let limited = limited.expect("the write burst is limited");
    let retry_after: u64 = limited.headers()["retry-after"].to_str().unwrap().parse().unwrap();
    assert!(retry_after >= 1);
    let body: Value = limited.json().await.unwrap();
    assert_eq!(body["error"]["code"], "rate_limited");
}

#[tokio::test]
async fn another_users_project_is_404_on_every_route() {
    let app = TestApp::spawn().await;
    let p = app.create_project("alice", "private").await;
    app.write("alice", &p, "a.txt", "secret").await;
    let bob = app.user_token("bob");
    let body = || Some(json!({}));
    let routes: Vec<(Method, String, Option<Value>)> = vec![
        (Method::GET, format!("/v1/projects/{p}"), None),
        (Method::PATCH, format!("/v1/projects/{p}"), Some(json!({"name": "x", "base_revision": 1}))),
        (Method::DELETE, format!("/v1/projects/{p}"), None),
        (Method::POST, format!("/v1/projects/{p}/restore"), body()),
        (Method::GET, format!("/v1/projects/{p}/members"), None),
        (Method::PUT, format!("/v1/projects/{p}/members/bob"), Some(json!({"role": "owner"}))),
        (Method::DELETE, format!("/v1/projects/{p}/members/alice"), None),
        (Method::GET, format!("/v1/projects/{p}/files"), None),
        (Method::GET, format!("/v1/projects/{p}/files/a.txt"), None),
        (Method::PUT, format!("/v1/projects/{p}/files/a.txt"), Some(json!({"content": "x"}))),
        (Method::DELETE, format!("/v1/projects/{p}/files/a.txt"), None),
        (
            Method::POST,
            format!("/v1/projects/{p}/files:bulk"),
            Some(json!({"upserts": [{"path": "b", "content": "x"}]})),
        ),
        (Method::POST, format!("/v1/projects/{p}/files:move"), Some(json!({"from": "a.txt", "to": "b.txt"}))),
        (Method::PUT, format!("/v1/projects/{p}/base"), Some(json!({"commit": "0123abcd", "files": []}))),
        (Method::GET, format!("/v1/projects/{p}/changes"), None),
        (Method::GET, format!("/v1/projects/{p}/events?since=0"), None),
        (Method::GET, format!("/v1/projects/{p}/editor-state"), None),
        (Method::PUT, format!("/v1/projects/{p}/editor-state"), Some(json!({"state": {}, "base_revision": 0}))),
    ];
    for (method, path, body) in routes {
        let answer = app.call(method.clone(), &path, Some(&bob), body).await;
        assert_eq!(answer.0, StatusCode::NOT_FOUND, "{method} {path}: {}", answer.1);
        assert_eq!(answer.1["error"]["code"], "not_found", "{method} {path}");
    }
    // A random id that does not exist answers the same.
    let missing = uuid::Uuid::new_v4();
    let (status, body) = app.get(&format!("/v1/projects/{missing}"), &bob).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(body["error"]["code"], "not_found");
    // And alice's data is untouched.
    let (_, file) = app.get(&format!("/v1/projects/{p}/files/a.txt"), &app.user_token("alice")).await;
    assert_eq!((file["content"].as_str(), file["version"].as_i64()), (Some("secret"), Some(1)));
}

#[tokio::test]
async fn operations_endpoints() {
    let app = TestApp::spawn().await;
    let (status, _) = app.call(Method::GET, "/healthz", None, None).await;
    assert_eq!(status, StatusCode::OK);
    let (status, ready) = app.call(Method::GET, "/readyz", None, None).await;
    assert_eq!(status, StatusCode::OK, "{ready}");
    let (status, spec) = app.call(Method::GET, "/openapi.json", None, None).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(spec["openapi"], "3.1.0");
    for path in
        ["/v1/projects", "/v1/projects/{id}/files/{path}", "/v1/projects/{id}/files:bulk", "/v1/projects/{id}/events"]
    {
        assert!(spec["paths"].get(path).is_some(), "{path} missing from the spec");
    }
    app.get("/v1/projects", &app.user_token("alice")).await;
    let metrics = app.http.get(format!("{}/metrics", app.base)).send().await.unwrap().text().await.unwrap();
    assert!(
        metrics.contains("synchub_http_requests_total{method=\"GET\",route=\"/v1/projects\",status=\"200\"}"),
        "{metrics}"
    );
    assert!(metrics.contains("synchub_open_sockets"));
    let unknown = app.call(Method::GET, "/v2/nothing", None, None).await;
    assert_error(&unknown, 404, "not_found");
}
