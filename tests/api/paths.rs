//! Bad paths through every write route: 400 `invalid_path`, and nothing written.

use serde_json::json;

use crate::helpers::{TestApp, assert_error};

#[tokio::test]
async fn bad_path_table_is_refused_and_writes_nothing() {
    let app = TestApp::spawn().await;
    let alice = app.user_token("alice");
    let p = app.create_project("alice", "paths").await;
    let deep = vec!["d"; 65].join("/");
    let long = "x".repeat(1025);
    // As they travel in a JSON body (bulk, move), where no URL normalization applies.
    let bad: Vec<&str> = vec![
        "../etc/passwd",
        "a/../../b",
        "/abs/path",
        "",
        "a//b",
        "a/./b",
        "./a",
        "a/",
        "a\\b",
        "C:\\win",
        "ctl\u{1}char",
        "new\nline",
        "del\u{7f}",
        ".synchub/manifest.json",
        ".git/config",
        ".git",
        &deep,
        &long,
    ];
    for path in &bad {
        let answer = app
            .post(&format!("/v1/projects/{p}/files:bulk"), &alice, json!({"upserts": [{"path": path, "content": "x"}]}))
            .await;
        assert_error(&answer, 400, "invalid_path");
        let answer =
            app.post(&format!("/v1/projects/{p}/files:bulk"), &alice, json!({"deletes": [{"path": path}]})).await;
        assert_error(&answer, 400, "invalid_path");
        let answer =
            app.post(&format!("/v1/projects/{p}/files:move"), &alice, json!({"from": "ok.txt", "to": path})).await;
        assert_error(&answer, 400, "invalid_path");
    }
    // In the URL: percent-encoded so the client does not normalize them away (an encoded
    // dot segment like %2E%2E is resolved by URL parsers before sending, so it never arrives).
    for encoded in ["..%2Fetc%2Fpasswd", "a/..%2F..%2Fb", "a%5Cb", "ctl%01", ".synchub/x", ".git/HEAD", "a%2F%2Fb"] {
        let answer = app.put(&format!("/v1/projects/{p}/files/{encoded}"), &alice, json!({"content": "x"})).await;
        assert_error(&answer, 400, "invalid_path");
    }
    let (_, list) = app.get(&format!("/v1/projects/{p}/files"), &alice).await;
    assert_eq!(list, json!({"cursor": 0, "files": []}));
}
