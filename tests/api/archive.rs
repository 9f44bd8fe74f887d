//! Project archives (CONTRACT section 13): export as a snapshot-format zip, import with
//! `mode=replace|merge` as one change; every bad entry refused by name with nothing
//! written; roles; op_id; the byte-identical round trip.

use std::io::{Cursor, Read, Write};

use reqwest::StatusCode;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use zip::ZipWriter;
use zip::write::SimpleFileOptions;

use crate::helpers::*;

/// The answer to an archive upload: status and JSON body.
async fn upload(app: &TestApp, project: &str, token: &str, query: &str, zip: Vec<u8>) -> (StatusCode, Value) {
    let response = app
        .http
        .post(format!("{}/v1/projects/{project}/archive?{query}", app.base))
        .bearer_auth(token)
        .header("content-type", "application/zip")
        .body(zip)
        .send()
        .await
        .expect("upload");
    let status = response.status();
    let body = response.json::<Value>().await.unwrap_or(Value::Null);
    (status, body)
}

/// The project's archive bytes (asserting a 200 zip).
async fn download(app: &TestApp, project: &str, token: &str) -> Vec<u8> {
    let response = app
        .http
        .get(format!("{}/v1/projects/{project}/archive", app.base))
        .bearer_auth(token)
        .send()
        .await
        .expect("download");
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(response.headers()["content-type"], "application/zip");
    response.bytes().await.unwrap().to_vec()
}

/// Every entry of a zip: name → bytes, in archive order.
fn entries(archive: &[u8]) -> Vec<(String, Vec<u8>)> {
    let mut zip = zip::ZipArchive::new(Cursor::new(archive)).unwrap();
    (0..zip.len())
        .map(|i| {
            let mut entry = zip.by_index(i).unwrap();
            let mut bytes = Vec::new();
            entry.read_to_end(&mut bytes).unwrap();
            (String::from_utf8(entry.name_raw().to_vec()).unwrap(), bytes)
        })
        .collect()
}

fn manifest_of(archive: &[u8]) -> Value {
    let (_, bytes) = entries(archive).into_iter().find(|(name, _)| name == ".synchub/manifest.json").unwrap();
    serde_json::from_slice(&bytes).unwrap()
}

/// A zip of (name, bytes) entries with default options.
fn zip_of(files: &[(&str, &[u8])]) -> Vec<u8> {
    let mut zip = ZipWriter::new(Cursor::new(Vec::new()));
    for (name, bytes) in files {
        zip.start_file(*name, SimpleFileOptions::default()).unwrap();
        zip.write_all(bytes).unwrap();
    }
    zip.finish().unwrap().into_inner()
}

fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

/// A manifest listing files with the given (path, bytes) as their content.
fn manifest(files: &[(&str, &[u8])]) -> Vec<u8> {
    let files: Vec<Value> = files
        .iter()
        .map(|(path, bytes)| {
            json!({"path": path, "size": bytes.len(), "sha256": sha256_hex(bytes), "version": 1, "file_type": "text"})
        })
        .collect();
    json!({"format": 1, "project_id": "p", "snapshot_id": "s", "cursor": 1,
           "created_at": "2026-01-01T00:00:00.000Z", "files": files})
    .to_string()
    .into_bytes()
}

/// The project's state as a test compares it: last_seq and every current file's content.
async fn state_of(app: &TestApp, project: &str, token: &str) -> (i64, Value) {
    let (_, detail) = app.get(&format!("/v1/projects/{project}"), token).await;
    let (_, files) = app.get(&format!("/v1/projects/{project}/files?include_content=true"), token).await;
    let files: Vec<Value> = files["files"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| json!({"path": f["path"], "content": f["content"], "file_type": f["file_type"]}))
        .collect();
    (detail["last_seq"].as_i64().unwrap(), Value::Array(files))
}

#[tokio::test]
async fn export_then_import_elsewhere_then_export_gives_the_same_files_byte_for_byte() {
    let app = TestApp::spawn().await;
    let alice = app.user_token("alice");
    let source = app.create_project("alice", "source").await;
    app.write("alice", &source, "src/main.ts", "export const x = 1;\n").await;
    app.write("alice", &source, "README.md", "# héllo ✓\n").await;
    app.write("alice", &source, "src/main.ts", "export const x = 2;\n").await; // version 2
    app.write("alice", &source, "empty.txt", "").await;
    let first = download(&app, &source, &alice).await;
    snapshot_builder::verify(Cursor::new(&first), &Default::default()).expect("the export is a valid snapshot");

    let copy = app.create_project("alice", "copy").await;
    let (status, answer) = upload(&app, &copy, &alice, "mode=replace", first.clone()).await;
    assert_eq!(status, StatusCode::OK, "{answer}");
    assert_eq!(answer["seq"], 1, "{answer}");
    assert_eq!(answer["files"].as_array().unwrap().len(), 3, "{answer}");
    // One change, one bulk:apply carrying every file.
    let (_, page) = app.get(&format!("/v1/projects/{copy}/events?since=0"), &alice).await;
    let events = page["events"].as_array().unwrap();
    assert_eq!(events.len(), 1, "{page}");
    assert_eq!(events[0]["event"], "bulk:apply");
    assert_eq!(events[0]["payload"]["files"].as_array().unwrap().len(), 3);

    let second = download(&app, &copy, &alice).await;
    let files = |archive: &[u8]| -> Vec<(String, Vec<u8>)> {
        entries(archive).into_iter().filter(|(name, _)| name != ".synchub/manifest.json").collect()
    };
    assert_eq!(files(&first), files(&second), "every file byte-identical");
    let described = |archive: &[u8]| -> Vec<Value> {
        manifest_of(archive)["files"]
            .as_array()
            .unwrap()
            .iter()
            .map(|f| json!([f["path"], f["size"], f["sha256"], f["file_type"]]))
            .collect()
    };
    assert_eq!(described(&first), described(&second), "same manifest paths, sizes, hashes and types");
    assert_eq!(state_of(&app, &source, &alice).await.1, state_of(&app, &copy, &alice).await.1);

    // The same project exported again at the same cursor: the same files, same order.
    assert_eq!(files(&download(&app, &source, &alice).await), files(&first));
}

#[tokio::test]
async fn merge_keeps_other_files_and_replace_deletes_them_each_in_one_change() {
    let app = TestApp::spawn().await;
    let alice = app.user_token("alice");
    let project = app.create_project("alice", "p").await;
    app.write("alice", &project, "keep.txt", "kept").await;
    app.write("alice", &project, "same.txt", "old").await;

    let archive = zip_of(&[("same.txt", b"new"), ("dir/added.ts", b"let a = 1;")]);
    let (status, answer) = upload(&app, &project, &alice, "mode=merge", archive.clone()).await;
    assert_eq!(status, StatusCode::OK, "{answer}");
    assert_eq!(answer["seq"], 3);
    let (seq, files) = state_of(&app, &project, &alice).await;
    assert_eq!(seq, 3);
    assert_eq!(
        files,
        json!([
            {"path": "dir/added.ts", "content": "let a = 1;", "file_type": "typescript"},
            {"path": "keep.txt", "content": "kept", "file_type": "text"},
            {"path": "same.txt", "content": "new", "file_type": "text"},
        ])
    );

    let (status, answer) = upload(&app, &project, &alice, "mode=replace", archive).await;
    assert_eq!(status, StatusCode::OK, "{answer}");
    assert_eq!(answer["seq"], 4);
    assert_eq!(answer["deleted"], json!([{"path": "keep.txt", "version": 2}]));
    let (seq, files) = state_of(&app, &project, &alice).await;
    assert_eq!(seq, 4);
    let paths: Vec<&str> = files.as_array().unwrap().iter().map(|f| f["path"].as_str().unwrap()).collect();
    assert_eq!(paths, ["dir/added.ts", "same.txt"]);
    let (_, page) = app.get(&format!("/v1/projects/{project}/events?since=3"), &alice).await;
    assert_eq!(page["events"].as_array().unwrap().len(), 1);
    assert_eq!(page["events"][0]["event"], "bulk:apply");

    // A zip from a desktop tool: directory entries are skipped.
    let mut zip = ZipWriter::new(Cursor::new(Vec::new()));
    zip.add_directory("docs/", SimpleFileOptions::default()).unwrap();
    zip.start_file("docs/a.md", SimpleFileOptions::default()).unwrap();
    zip.write_all(b"# a").unwrap();
    let (status, answer) = upload(&app, &project, &alice, "mode=merge", zip.finish().unwrap().into_inner()).await;
    assert_eq!(status, StatusCode::OK, "{answer}");
    assert_eq!(answer["files"], json!([{"path": "docs/a.md", "version": 1, "content_hash": sha256_hex(b"# a")}]));
}

/// Renames `from` to `to` (same length) in local headers and the central directory.
fn patch(archive: &mut [u8], from: &[u8], to: &[u8]) {
    let mut i = 0;
    while i + from.len() <= archive.len() {
        if &archive[i..i + from.len()] == from {
            archive[i..i + from.len()].copy_from_slice(to);
        }
        i += 1;
    }
}

/// A refused archive: what it is, its bytes, the status, code and `entry` it answers.
type BadCase = (&'static str, Vec<u8>, u16, &'static str, Option<&'static str>);

#[tokio::test]
async fn every_bad_archive_is_refused_naming_the_entry_and_nothing_is_written() {
    let app = TestApp::spawn().await;
    let alice = app.user_token("alice");
    let project = app.create_project("alice", "p").await;
    app.write("alice", &project, "a.txt", "original").await;
    let before = state_of(&app, &project, &alice).await;

    let symlink = {
        let mut zip = ZipWriter::new(Cursor::new(Vec::new()));
        zip.add_symlink("link", "/etc/passwd", SimpleFileOptions::default()).unwrap();
        zip.finish().unwrap().into_inner()
    };
    let bomb = {
        let mut zip = ZipWriter::new(Cursor::new(Vec::new()));
        zip.start_file("bomb.txt", SimpleFileOptions::default().compression_level(Some(9))).unwrap();
        zip.write_all(&vec![b'a'; 2 * 1024 * 1024 - 1]).unwrap();
        zip.finish().unwrap().into_inner()
    };
    let duplicate = {
        let mut archive = zip_of(&[("a.txt", b"1"), ("b.txt", b"2")]);
        patch(&mut archive, b"b.txt", b"a.txt");
        archive
    };
    let good: &[u8] = b"good";
    let lying_hash =
        zip_of(&[("a.txt", b"changed"), (".synchub/manifest.json", &manifest(&[("a.txt", b"something else")]))]);
    let listed_missing =
        zip_of(&[("a.txt", good), (".synchub/manifest.json", &manifest(&[("a.txt", good), ("gone.txt", good)]))]);
    let extra_file =
        zip_of(&[("a.txt", good), ("extra.txt", good), (".synchub/manifest.json", &manifest(&[("a.txt", good)]))]);
    let nul: &[u8] = b"text\0with NUL";
    let nul_as_text = zip_of(&[("nul.txt", nul), (".synchub/manifest.json", &manifest(&[("nul.txt", nul)]))]);
    let latin1: &[u8] = b"caf\xe9";
    let not_utf8 = zip_of(&[
        ("ok.txt", b"fine"),
        ("latin1.txt", latin1),
        (".synchub/manifest.json", &manifest(&[("latin1.txt", latin1), ("ok.txt", b"fine")])),
    ]);
    let file_and_folder = zip_of(&[("x", b"1"), ("x/y", b"2")]);

    let cases: Vec<BadCase> = vec![
        ("traversal", zip_of(&[("../x", b"x")]), 400, "invalid_path", Some("../x")),
        ("absolute", zip_of(&[("/etc/x", b"x")]), 400, "invalid_path", Some("/etc/x")),
        ("reserved", zip_of(&[(".git/config", b"x")]), 400, "invalid_path", Some(".git/config")),
        ("symlink", symlink, 400, "invalid_request", Some("link")),
        ("zip bomb", bomb, 400, "invalid_request", Some("bomb.txt")),
        ("duplicate names", duplicate, 400, "invalid_request", Some("a.txt")),
        ("manifest hash mismatch", lying_hash, 400, "invalid_request", Some("a.txt")),
        ("listed file missing", listed_missing, 400, "invalid_request", Some("gone.txt")),
        ("file not in the manifest", extra_file, 400, "invalid_request", Some("extra.txt")),
        ("NUL in a file the manifest calls text", nul_as_text, 415, "unsupported_content", Some("nul.txt")),
        ("not UTF-8 in a file the manifest calls text", not_utf8, 415, "unsupported_content", Some("latin1.txt")),
        ("file and folder", file_and_folder, 400, "invalid_request", None),
        ("not a zip", b"PK not really".to_vec(), 400, "invalid_request", None),
        ("empty body", Vec::new(), 400, "invalid_request", None),
    ];
    for (case, archive, status, code, entry) in cases {
        for mode in ["replace", "merge"] {
            let answer = upload(&app, &project, &alice, &format!("mode={mode}"), archive.clone()).await;
            assert_eq!(answer.0.as_u16(), status, "{case}: {}", answer.1);
            assert_eq!(answer.1["error"]["code"], code, "{case}: {}", answer.1);
            if let Some(entry) = entry {
                assert_eq!(answer.1["error"]["entry"], entry, "{case}: {}", answer.1);
            }
            assert_eq!(state_of(&app, &project, &alice).await, before, "{case}: nothing written");
        }
    }
    // A mode is required.
    let answer = upload(&app, &project, &alice, "", zip_of(&[("a.txt", b"x")])).await;
    assert_error(&answer, 400, "invalid_request");
    let answer = upload(&app, &project, &alice, "mode=append", zip_of(&[("a.txt", b"x")])).await;
    assert_error(&answer, 400, "invalid_request");
    assert_eq!(state_of(&app, &project, &alice).await, before);
}

/// Uploads `body` with chunked transfer encoding (no Content-Length): the status line's code.
async fn chunked_upload_status(app: &TestApp, project: &str, token: &str, body: &[u8]) -> u16 {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut socket = tokio::net::TcpStream::connect(app.addr).await.unwrap();
    let head = format!(
        "POST /v1/projects/{project}/archive?mode=merge HTTP/1.1\r\nHost: {}\r\nAuthorization: Bearer {token}\r\n\
         Transfer-Encoding: chunked\r\n\r\n",
        app.addr
    );
    socket.write_all(head.as_bytes()).await.unwrap();
    for chunk in body.chunks(8 * 1024) {
        // The hub may answer and stop reading before the end: later writes may fail.
        if socket.write_all(format!("{:x}\r\n", chunk.len()).as_bytes()).await.is_err()
            || socket.write_all(chunk).await.is_err()
            || socket.write_all(b"\r\n").await.is_err()
        {
            break;
        }
    }
    let _ = socket.write_all(b"0\r\n\r\n").await;
    let mut answer = vec![0u8; 12];
    socket.read_exact(&mut answer).await.unwrap();
    String::from_utf8_lossy(&answer[9..12]).parse().unwrap()
}

#[tokio::test]
async fn size_and_count_limits_answer_413_and_403_with_nothing_written() {
    let app = TestApp::spawn_with(|c| {
        c.limits.max_archive_bytes = 64 * 1024;
        c.limits.max_files_per_project = 3;
        c.limits.max_file_bytes = 1024;
    })
    .await;
    let alice = app.user_token("alice");
    let project = app.create_project("alice", "p").await;
    app.write("alice", &project, "a.txt", "original").await;
    let before = state_of(&app, &project, &alice).await;

    // Larger than the body cap (stored, so it stays large): 413, whether declared or streamed.
    let mut big = ZipWriter::new(Cursor::new(Vec::new()));
    let stored = SimpleFileOptions::default().compression_method(zip::CompressionMethod::Stored);
    for i in 0..100 {
        big.start_file(format!("f{i}.txt"), stored).unwrap();
        big.write_all(&[b'x'; 1000]).unwrap();
    }
    let big = big.finish().unwrap().into_inner();
    let answer = upload(&app, &project, &alice, "mode=merge", big.clone()).await;
    assert_error(&answer, 413, "payload_too_large");
    assert_eq!(chunked_upload_status(&app, &project, &alice, &big).await, 413, "streamed without a length");

    // A file above the per-file cap: 413 naming it.
    let answer = upload(&app, &project, &alice, "mode=merge", zip_of(&[("big.txt", &[b'y'; 2000])])).await;
    assert_error(&answer, 413, "payload_too_large");
    assert_eq!(answer.1["error"]["entry"], "big.txt");

    // More files than the project may hold: 403 quota_exceeded (from the reader, or from
    // SQL when the archive adds to what the project already holds).
    let four = zip_of(&[("1", b"1"), ("2", b"2"), ("3", b"3"), ("4", b"4")]);
    assert_error(&upload(&app, &project, &alice, "mode=replace", four).await, 403, "quota_exceeded");
    let three = zip_of(&[("1", b"1"), ("2", b"2"), ("3", b"3")]);
    assert_error(&upload(&app, &project, &alice, "mode=merge", three).await, 403, "quota_exceeded");
    assert_eq!(state_of(&app, &project, &alice).await, before);
}

#[tokio::test]
async fn viewers_download_but_do_not_upload_and_strangers_see_no_project() {
    let app = TestApp::spawn().await;
    let alice = app.user_token("alice");
    let project = app.create_project("alice", "p").await;
    app.write("alice", &project, "a.txt", "a").await;
    for (user, role) in [("vera", "viewer"), ("ed", "editor")] {
        let (status, body) =
            app.put(&format!("/v1/projects/{project}/members/{user}"), &alice, json!({"role": role})).await;
        assert_eq!(status, StatusCode::OK, "{body}");
    }
    let archive = download(&app, &project, &app.user_token("vera")).await;
    assert_eq!(entries(&archive).len(), 2);
    let answer = upload(&app, &project, &app.user_token("vera"), "mode=merge", archive.clone()).await;
    assert_error(&answer, 403, "forbidden");
    let answer = upload(&app, &project, &app.user_token("ed"), "mode=merge", zip_of(&[("b.txt", b"b")])).await;
    assert_eq!(answer.0, StatusCode::OK, "{}", answer.1);

    let mallory = app.user_token("mallory");
    let path = format!("/v1/projects/{project}/archive");
    assert_error(&app.get(&path, &mallory).await, 404, "not_found");
    assert_error(&upload(&app, &project, &mallory, "mode=merge", archive.clone()).await, 404, "not_found");
    // Hub tokens are not members: the orchestrator has snapshots, containers `snapshots/latest`.
    assert_error(&app.get(&path, &app.service_token()).await, 404, "not_found");
    let missing = uuid::Uuid::new_v4();
    assert_error(&app.get(&format!("/v1/projects/{missing}/archive"), &alice).await, 404, "not_found");
}

#[tokio::test]
async fn a_retried_import_with_its_op_id_applies_once() {
    let app = TestApp::spawn().await;
    let alice = app.user_token("alice");
    let project = app.create_project("alice", "p").await;
    let op = uuid::Uuid::new_v4();
    let archive = zip_of(&[("a.txt", b"a"), ("b.txt", b"b")]);
    let first = upload(&app, &project, &alice, &format!("mode=replace&op_id={op}"), archive.clone()).await;
    assert_eq!(first.0, StatusCode::OK, "{}", first.1);
    let again = upload(&app, &project, &alice, &format!("mode=replace&op_id={op}"), archive).await;
    assert_eq!(again, first, "the first answer, nothing new");
    let (_, page) = app.get(&format!("/v1/projects/{project}/events?since=0"), &alice).await;
    assert_eq!(page["events"].as_array().unwrap().len(), 1);
    let other = upload(&app, &project, &alice, &format!("mode=replace&op_id={op}"), zip_of(&[("c.txt", b"c")])).await;
    assert_error(&other, 409, "op_id_reused");
}

#[tokio::test]
async fn openapi_documents_both_archive_routes() {
    let app = TestApp::spawn().await;
    let (_, spec) = app.call(reqwest::Method::GET, "/openapi.json", None, None).await;
    let route = &spec["paths"]["/v1/projects/{id}/archive"];
    assert!(route["get"]["responses"]["2XX"]["content"]["application/zip"].is_object(), "{route}");
    let post = &route["post"];
    assert!(post["requestBody"]["content"]["application/zip"].is_object(), "{post}");
    // Any content type is read as a zip; octet-stream is listed for generic clients (and fuzzers).
    assert!(post["requestBody"]["content"]["application/octet-stream"].is_object(), "{post}");
    let parameters: Vec<&str> =
        post["parameters"].as_array().unwrap().iter().filter_map(|p| p["name"].as_str()).collect();
    assert_eq!(parameters, ["id", "mode", "op_id"], "{post}");
    assert_eq!(post["security"], json!([{"userToken": []}]));
}

/// Bytes that are no UTF-8 text: NULs, invalid sequences, every byte value.
fn binary_bytes(len: usize, seed: u8) -> Vec<u8> {
    (0..len).map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed) ^ 0xC3).collect()
}

/// A file's bytes as `Accept: application/octet-stream` answers them (redirects followed).
async fn file_bytes(app: &TestApp, project: &str, path: &str, token: &str) -> Vec<u8> {
    let response = app
        .http
        .get(format!("{}/v1/projects/{project}/files/{path}", app.base))
        .bearer_auth(token)
        .header("accept", "application/octet-stream")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK, "{path}");
    response.bytes().await.unwrap().to_vec()
}

async fn binaries_round_trip(app: &TestApp) {
    let alice = app.user_token("alice");
    let source = app.create_project("alice", "with binaries").await;
    app.write("alice", &source, "index.html", "<img src=logo.png>").await;
    let logo = binary_bytes(20_000, 3);
    let response = app
        .http
        .put(format!("{}/v1/projects/{source}/files/logo.png", app.base))
        .bearer_auth(&alice)
        .header("content-type", "application/octet-stream")
        .body(logo.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    // A zip without a manifest: bytes that are not text are binary files, also ones larger
    // than a text file may be.
    let font = binary_bytes(3 * 1024 * 1024, 9);
    let (status, answer) =
        upload(app, &source, &alice, "mode=merge", zip_of(&[("fonts/big.woff2", &font), ("notes.md", b"# n")])).await;
    assert_eq!(status, StatusCode::OK, "{answer}");
    let (_, detail) = app.get(&format!("/v1/projects/{source}/files/fonts/big.woff2"), &alice).await;
    assert_eq!(detail["binary"], true, "{detail}");
    assert_eq!(detail["blob"]["sha256"], sha256_hex(&font));

    let first = download(app, &source, &alice).await;
    let described = |archive: &[u8]| -> Vec<Value> {
        manifest_of(archive)["files"]
            .as_array()
            .unwrap()
            .iter()
            .map(|f| json!([f["path"], f["size"], f["sha256"], f["file_type"], f["binary"]]))
            .collect()
    };
    let marked: Vec<Value> = described(&first).into_iter().filter(|f| f[4] == true).map(|f| f[0].clone()).collect();
    assert_eq!(marked, [json!("fonts/big.woff2"), json!("logo.png")]);

    let copy = app.create_project("alice", "copy").await;
    let (status, answer) = upload(app, &copy, &alice, "mode=replace", first.clone()).await;
    assert_eq!(status, StatusCode::OK, "{answer}");
    assert_eq!(file_bytes(app, &copy, "logo.png", &alice).await, logo);
    assert_eq!(file_bytes(app, &copy, "fonts/big.woff2", &alice).await, font);
    let (_, page) = app.get(&format!("/v1/projects/{copy}/events?since=0"), &alice).await;
    let events = page["events"].as_array().unwrap();
    assert_eq!(events.len(), 1);
    let logo_event = events[0]["payload"]["files"].as_array().unwrap().iter().find(|f| f["file_path"] == "logo.png");
    assert_eq!(logo_event.unwrap()["blob"]["sha256"], sha256_hex(&logo), "{page}");

    let second = download(app, &copy, &alice).await;
    let files = |archive: &[u8]| -> Vec<(String, Vec<u8>)> {
        entries(archive).into_iter().filter(|(name, _)| name != ".synchub/manifest.json").collect()
    };
    assert!(files(&first) == files(&second), "every file byte-identical");
    assert_eq!(described(&first), described(&second));

    // A manifest that calls a binary file text is refused, nothing written.
    let before = state_of(app, &copy, &alice).await;
    let lying = zip_of(&[("logo.png", &logo), (".synchub/manifest.json", &manifest(&[("logo.png", &logo)]))]);
    let answer = upload(app, &copy, &alice, "mode=replace", lying).await;
    assert_error(&answer, 415, "unsupported_content");
    assert_eq!(answer.1["error"]["entry"], "logo.png");
    assert_eq!(state_of(app, &copy, &alice).await, before);
}

#[tokio::test]
async fn binaries_round_trip_through_archives_on_local_storage() {
    let (app, _dir) = app_with_storage().await;
    binaries_round_trip(&app).await;
}

#[tokio::test]
async fn binaries_round_trip_through_archives_on_s3() {
    let server = crate::storage::S3Server::start().await;
    let app = server.hub(|_| {}).await;
    binaries_round_trip(&app).await;
}

/// `count` small text files `d/NNNNN.txt` whose content depends on `salt`, in a zip.
fn many_files(count: usize, salt: &str) -> Vec<(String, Vec<u8>)> {
    (0..count).map(|i| (format!("d/{:05}.txt", i), format!("{salt} {i}\n").into_bytes())).collect()
}

fn zip_owned(files: &[(String, Vec<u8>)]) -> Vec<u8> {
    let borrowed: Vec<(&str, &[u8])> = files.iter().map(|(n, b)| (n.as_str(), b.as_slice())).collect();
    zip_of(&borrowed)
}

/// Rows staged for archive imports that outlived their transaction (there must be none).
async fn staged_rows(app: &TestApp) -> i64 {
    // As the migrating role: the runtime role may not read the table.
    let (client, connection) = tokio_postgres::connect(&app.database_url, tokio_postgres::NoTls).await.unwrap();
    tokio::spawn(connection);
    client.query_one("SELECT count(*) FROM synchub.archive_staging", &[]).await.unwrap().get(0)
}

#[tokio::test]
async fn a_bad_entry_after_a_thousand_good_ones_leaves_nothing_written_and_nothing_staged() {
    let app = TestApp::spawn().await;
    let alice = app.user_token("alice");
    let project = app.create_project("alice", "p").await;
    app.write("alice", &project, "a.txt", "original").await;
    let before = state_of(&app, &project, &alice).await;

    // The good entries are staged (several calls) before the reader reaches the bad one.
    let mut files = many_files(1_200, "good");
    files.push(("../evil".to_string(), b"x".to_vec()));
    let archive = zip_owned(&files);
    for mode in ["replace", "merge"] {
        let answer = upload(&app, &project, &alice, &format!("mode={mode}"), archive.clone()).await;
        assert_error(&answer, 400, "invalid_path");
        assert_eq!(answer.1["error"]["entry"], "../evil", "{}", answer.1);
        assert_eq!(state_of(&app, &project, &alice).await, before, "{mode}: nothing written");
        assert_eq!(staged_rows(&app).await, 0, "{mode}: nothing left staged");
    }
    // And a good archive after them goes through.
    let (status, answer) = upload(&app, &project, &alice, "mode=merge", zip_owned(&files[..1_200])).await;
    assert_eq!(status, StatusCode::OK, "{answer}");
    assert_eq!(answer["files"].as_array().unwrap().len(), 1_200);
    assert_eq!(staged_rows(&app).await, 0);
}

#[tokio::test]
async fn a_quota_overrun_found_when_applying_the_staged_entries_leaves_nothing_written_or_staged() {
    let app = TestApp::spawn_with(|c| c.limits.max_files_per_project = 1_000).await;
    let alice = app.user_token("alice");
    let project = app.create_project("alice", "p").await;
    app.write("alice", &project, "a.txt", "original").await;
    let before = state_of(&app, &project, &alice).await;

    // 1,000 files pass the reader (the project may hold that many) and are all staged; with
    // the one the project holds, merging them is over the limit: only SQL can tell.
    let answer = upload(&app, &project, &alice, "mode=merge", zip_owned(&many_files(1_000, "f"))).await;
    assert_error(&answer, 403, "quota_exceeded");
    assert_eq!(state_of(&app, &project, &alice).await, before, "nothing written");
    assert_eq!(staged_rows(&app).await, 0, "nothing left staged");
    let (_, page) = app.get(&format!("/v1/projects/{project}/events?since=0"), &alice).await;
    assert_eq!(page["events"].as_array().unwrap().len(), 1, "only the first write's event: {page}");
}

#[tokio::test]
async fn ten_thousand_files_import_as_one_bulk_apply_carrying_every_file() {
    let app = TestApp::spawn().await;
    let alice = app.user_token("alice");
    let project = app.create_project("alice", "p").await;
    let files = many_files(10_000, "one");
    let (status, answer) = upload(&app, &project, &alice, "mode=replace", zip_owned(&files)).await;
    assert_eq!(status, StatusCode::OK, "{answer}");
    assert_eq!(answer["seq"], 1);
    let written = answer["files"].as_array().unwrap();
    assert_eq!(written.len(), 10_000);
    // In archive order, each with its hash.
    assert_eq!(written[0]["path"], "d/00000.txt");
    assert_eq!(written[9_999]["path"], "d/09999.txt");
    assert_eq!(written[9_999]["content_hash"], sha256_hex(b"one 9999\n"));

    let (_, page) = app.get(&format!("/v1/projects/{project}/events?since=0"), &alice).await;
    let events = page["events"].as_array().unwrap();
    assert_eq!(events.len(), 1, "one change");
    assert_eq!(events[0]["event"], "bulk:apply");
    let carried = events[0]["payload"]["files"].as_array().unwrap();
    assert_eq!(carried.len(), 10_000);
    assert!(carried.iter().all(|f| f["content"].as_str().is_some_and(|c| c.starts_with("one "))));

    // Replacing with other paths: 10,000 new files and 10,000 deletes, still one change.
    let other: Vec<(String, Vec<u8>)> =
        files.iter().map(|(name, bytes)| (name.replace("d/", "e/"), bytes.clone())).collect();
    let (status, answer) = upload(&app, &project, &alice, "mode=replace", zip_owned(&other)).await;
    assert_eq!(status, StatusCode::OK, "{answer}");
    assert_eq!(answer["seq"], 2);
    assert_eq!(answer["files"].as_array().unwrap().len(), 10_000);
    assert_eq!(answer["deleted"].as_array().unwrap().len(), 10_000);
    let (_, page) = app.get(&format!("/v1/projects/{project}/events?since=1"), &alice).await;
    assert_eq!(page["events"].as_array().unwrap().len(), 1);
    assert_eq!(page["events"][0]["payload"]["deletes"].as_array().unwrap().len(), 10_000);
    assert_eq!(staged_rows(&app).await, 0);
}

#[tokio::test]
async fn an_import_staged_in_many_calls_retried_with_its_op_id_answers_its_first_result() {
    let app = TestApp::spawn().await;
    let alice = app.user_token("alice");
    let project = app.create_project("alice", "p").await;
    let op = uuid::Uuid::new_v4();
    let mut files = many_files(1_500, "v");
    let first = upload(&app, &project, &alice, &format!("mode=merge&op_id={op}"), zip_owned(&files)).await;
    assert_eq!(first.0, StatusCode::OK, "{}", first.1);
    let again = upload(&app, &project, &alice, &format!("mode=merge&op_id={op}"), zip_owned(&files)).await;
    assert_eq!(again, first, "the first answer, nothing new");
    let (_, page) = app.get(&format!("/v1/projects/{project}/events?since=0"), &alice).await;
    assert_eq!(page["events"].as_array().unwrap().len(), 1);
    // One file different, in the last staging call: the op_id was used for other arguments.
    files[1_499].1 = b"changed".to_vec();
    let other = upload(&app, &project, &alice, &format!("mode=merge&op_id={op}"), zip_owned(&files)).await;
    assert_error(&other, 409, "op_id_reused");
    // The same files as replace: another operation.
    files[1_499].1 = b"v 1499\n".to_vec();
    let other = upload(&app, &project, &alice, &format!("mode=replace&op_id={op}"), zip_owned(&files)).await;
    assert_error(&other, 409, "op_id_reused");
    assert_eq!(staged_rows(&app).await, 0);
}
