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

#[tokio::test]
async fn a_path_is_a_file_or_a_folder_never_both() {
    let app = TestApp::spawn_with(|c| {
        c.limits.write_rate = 100_000.0;
        c.limits.write_burst = 100_000.0;
    })
    .await;
    let alice = app.user_token("alice");
    let p = app.create_project("alice", "tree").await;
    let put = |path: &str| {
        let (app, alice, p) = (&app, &alice, &p);
        let path = path.to_owned();
        async move { app.put(&format!("/v1/projects/{p}/files/{path}"), alice, json!({"content": "x"})).await }
    };
    assert_eq!(put("a").await.0, 200);
    assert_eq!(put("x/y/z.ts").await.0, 200);
    // Names that share a prefix but not a folder are fine.
    for fine in ["ab/c", "a.d/e", "a-b", "x/y0", "x/y.ts", "x/yz/w"] {
        assert_eq!(put(fine).await.0, 200, "{fine}");
    }
    let (_, before) = app.get(&format!("/v1/projects/{p}/files"), &alice).await;
    // Below a file, or over files: refused, nothing written.
    for clash in ["a/b", "a/b/c", "x", "x/y", "x/y/z.ts/w"] {
        assert_error(&put(clash).await, 409, "already_exists");
    }
    let bulk = json!({"upserts": [{"path": "m", "content": "1"}, {"path": "m/n", "content": "2"}], "deletes": []});
    assert_error(&app.post(&format!("/v1/projects/{p}/files:bulk"), &alice, bulk).await, 409, "already_exists");
    let move_under = json!({"from": "a-b", "to": "a/inside"});
    assert_error(&app.post(&format!("/v1/projects/{p}/files:move"), &alice, move_under).await, 409, "already_exists");
    let (_, after) = app.get(&format!("/v1/projects/{p}/files"), &alice).await;
    assert_eq!(before, after, "a refused change wrote something");

    // Deleting the file in the same change frees the path for a folder (and a move too).
    let swap = json!({"upserts": [{"path": "a/b", "content": "1"}], "deletes": [{"path": "a"}]});
    let (status, body) = app.post(&format!("/v1/projects/{p}/files:bulk"), &alice, swap).await;
    assert_eq!(status, 200, "{body}");
    let (status, body) =
        app.post(&format!("/v1/projects/{p}/files:move"), &alice, json!({"from": "x/y/z.ts", "to": "x/y"})).await;
    assert_eq!(status, 200, "{body}");
    // The snapshot reader accepts the resulting tree.
    let (_, list) = app.get(&format!("/v1/projects/{p}/files"), &alice).await;
    let paths: Vec<&str> = list["files"].as_array().unwrap().iter().map(|f| f["path"].as_str().unwrap()).collect();
    assert_eq!(paths, ["a-b", "a.d/e", "a/b", "ab/c", "x/y", "x/y.ts", "x/y0", "x/yz/w"]);
}
