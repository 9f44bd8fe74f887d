//! Binary files (CONTRACT section 13): straight and blob writes, reads, bad inputs,
//! events, quotas, blob garbage collection (and its race with a referencing write), on
//! local storage and on a real S3 server (s3s-fs).

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use uuid::Uuid;

use crate::helpers::{TestApp, assert_error};
use crate::storage::S3Server;
use synchub::snapshots::storage::{Fetched, Storage, blob_key, upload_key};

/// Keeps a hub's storage alive as long as the hub.
enum Backing {
    Local(#[allow(dead_code)] tempfile::TempDir),
    S3(#[allow(dead_code)] S3Server),
}

#[derive(Clone, Copy, Debug)]
enum Kind {
    Local,
    S3,
}

async fn hub(kind: Kind, adjust: impl FnOnce(&mut synchub::config::Config)) -> (TestApp, Backing) {
    match kind {
        Kind::Local => {
            let dir = tempfile::tempdir().unwrap();
            let path = dir.path().to_path_buf();
            let app = TestApp::spawn_with(move |c| {
                c.storage_dir = Some(path);
                adjust(c);
            })
            .await;
            (app, Backing::Local(dir))
        }
        Kind::S3 => {
            let server = S3Server::start().await;
            let app = server.hub(adjust).await;
            (app, Backing::S3(server))
        }
    }
}

fn sha256(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

/// Bytes that are no UTF-8 text: NULs, invalid sequences, every byte value.
fn binary_bytes(len: usize, seed: u8) -> Vec<u8> {
    (0..len).map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed) ^ 0xC3).collect()
}

impl TestApp {
    /// `PUT …/files/{path}` with the bytes as an octet-stream body.
    async fn put_bytes(&self, sub: &str, project: &str, path_and_query: &str, bytes: &[u8]) -> (StatusCode, Value) {
        let response = self
            .http
            .put(format!("{}/v1/projects/{project}/files/{path_and_query}", self.base))
            .bearer_auth(self.user_token(sub))
            .header("content-type", "application/octet-stream")
            .body(bytes.to_vec())
            .send()
            .await
            .unwrap();
        let status = response.status();
        (status, response.json().await.unwrap_or(Value::Null))
    }

    /// GET with a bearer token, following redirects; the status and the body's bytes.
    async fn get_bytes(&self, path: &str, token: &str, accept: Option<&str>) -> (StatusCode, Vec<u8>) {
        let mut request = self.http.get(format!("{}{path}", self.base)).bearer_auth(token);
        if let Some(accept) = accept {
            request = request.header("accept", accept);
        }
        let response = request.send().await.unwrap();
        (response.status(), response.bytes().await.unwrap().to_vec())
    }

    /// Announces a blob and uploads `upload` to the URL the hub signed; returns the answer.
    async fn announce_and_upload(&self, sub: &str, project: &str, sha: &str, size: usize, upload: &[u8]) -> Value {
        let (status, answer) = self
            .post(&format!("/v1/projects/{project}/blobs"), &self.user_token(sub), json!({"sha256": sha, "size": size}))
            .await;
        assert_eq!(status, StatusCode::OK, "{answer}");
        if answer["exists"] == true {
            return answer;
        }
        let url = answer["upload_url"].as_str().expect("an upload URL").to_string();
        let uploaded = reqwest::Client::new().put(&url).body(upload.to_vec()).send().await.unwrap();
        assert!(uploaded.status().is_success(), "upload: {}", uploaded.status());
        answer
    }

    async fn file_count_and_seq(&self, project: &str) -> (usize, i64) {
        let (_, list) = self.get(&format!("/v1/projects/{project}/files"), &self.user_token("alice")).await;
        (list["files"].as_array().unwrap().len(), list["cursor"].as_i64().unwrap())
    }
}

async fn fetch(url: &str) -> Vec<u8> {
    let response = reqwest::get(url).await.unwrap();
    assert_eq!(response.status(), StatusCode::OK, "{url}");
    response.bytes().await.unwrap().to_vec()
}

#[tokio::test]
async fn binary_straight_put_and_get_round_trip_byte_identical() {
    let (app, _backing) = hub(Kind::Local, |_| {}).await;
    let p = app.create_project("alice", "bin").await;
    let alice = app.user_token("alice");
    let bytes = binary_bytes(70_000, 1);
    assert!(std::str::from_utf8(&bytes).is_err() && bytes.contains(&0));
    let op = Uuid::new_v4();

    let first = app.put_bytes("alice", &p, &format!("img/logo.png?expected_version=0&op_id={op}"), &bytes).await;
    assert_eq!(first.0, StatusCode::OK, "{}", first.1);
    assert_eq!(first.1["path"], "img/logo.png");
    assert_eq!(first.1["version"], 1);
    assert_eq!(first.1["content_hash"], sha256(&bytes));
    assert_eq!(first.1["seq"], 1);
    // A retry with the op_id answers the first result; expected_version is checked.
    assert_eq!(app.put_bytes("alice", &p, &format!("img/logo.png?expected_version=0&op_id={op}"), &bytes).await, first);
    assert_error(&app.put_bytes("alice", &p, "img/logo.png?expected_version=0", &bytes).await, 409, "version_conflict");

    let (status, file) = app.get(&format!("/v1/projects/{p}/files/img/logo.png"), &alice).await;
    assert_eq!(status, StatusCode::OK, "{file}");
    assert_eq!(file["binary"], true);
    assert_eq!(file["blob"], json!({"sha256": sha256(&bytes), "size": bytes.len()}));
    assert_eq!(file["version"], 1);
    assert_eq!(file["size"], bytes.len());
    assert_eq!(file["file_type"], "binary");
    assert!(file.get("content").is_none(), "{file}");
    assert_eq!(fetch(file["url"].as_str().unwrap()).await, bytes);

    let (status, got) =
        app.get_bytes(&format!("/v1/projects/{p}/files/img/logo.png"), &alice, Some("application/octet-stream")).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(got, bytes);
    let (status, got) = app.get_bytes(&format!("/v1/projects/{p}/blobs/{}", sha256(&bytes)), &alice, None).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(got, bytes);

    let (_, list) = app.get(&format!("/v1/projects/{p}/files?include_content=true"), &alice).await;
    assert_eq!(list["files"][0]["blob"]["sha256"], sha256(&bytes), "{list}");
    assert!(list["files"][0].get("content").is_none(), "{list}");

    // A new version, then back: versions count as for text.
    let other = binary_bytes(10, 2);
    let (status, second) = app.put_bytes("alice", &p, "img/logo.png?expected_version=1", &other).await;
    assert_eq!(status, StatusCode::OK, "{second}");
    assert_eq!(second["version"], 2);

    // Text stays text: NUL in declared text is still refused.
    assert_error(
        &app.put(&format!("/v1/projects/{p}/files/a.txt"), &alice, json!({"content": "a\u{0}b"})).await,
        415,
        "unsupported_content",
    );
    // Viewers and strangers: as for text.
    assert_error(&app.put_bytes("mallory", &p, "x.bin", &bytes).await, 404, "not_found");
    assert_error(
        &app.get(&format!("/v1/projects/{p}/blobs/{}", sha256(&bytes)), &app.user_token("mallory")).await,
        404,
        "not_found",
    );
}

async fn blob_upload_flow(kind: Kind) {
    let (app, _backing) = hub(kind, |_| {}).await;
    let p = app.create_project("alice", "large").await;
    let alice = app.user_token("alice");
    // Larger than the straight-body limit (2 MiB).
    let bytes = binary_bytes(3 * 1024 * 1024 + 5, 3);
    let sha = sha256(&bytes);
    let straight = app.put_bytes("alice", &p, "big.wasm", &bytes).await;
    assert_error(&straight, 413, "payload_too_large");

    let answer = app.announce_and_upload("alice", &p, &sha, bytes.len(), &bytes).await;
    assert_eq!(answer["exists"], false, "{answer}");
    assert!(answer["expires_at"].is_string(), "{answer}");
    let (status, written) = app
        .put(
            &format!("/v1/projects/{p}/files/big.wasm"),
            &alice,
            json!({"blob": {"sha256": sha, "size": bytes.len()}, "expected_version": 0}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{written}");
    assert_eq!(written["version"], 1);
    assert_eq!(written["content_hash"], sha);
    let (status, got) =
        app.get_bytes(&format!("/v1/projects/{p}/files/big.wasm"), &alice, Some("application/octet-stream")).await;
    assert_eq!(status, StatusCode::OK);
    assert!(got == bytes, "the bytes read back differ ({} bytes)", got.len());

    // Held now: announcing again needs no upload, and another path can reference it.
    let (_, again) =
        app.post(&format!("/v1/projects/{p}/blobs"), &alice, json!({"sha256": sha, "size": bytes.len()})).await;
    assert_eq!(again, json!({"exists": true}));
    let (status, copy) = app
        .put(
            &format!("/v1/projects/{p}/files/copy.wasm"),
            &alice,
            json!({"blob": {"sha256": sha, "size": bytes.len()}}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{copy}");
}

#[tokio::test]
async fn binary_blob_flow_with_signed_upload_local() {
    blob_upload_flow(Kind::Local).await;
}

#[tokio::test]
async fn binary_blob_flow_with_presigned_upload_s3() {
    blob_upload_flow(Kind::S3).await;
}

async fn bad_blob_references(kind: Kind) {
    let (app, _backing) = hub(kind, |c| c.limits.max_blob_bytes = 1024 * 1024).await;
    let p = app.create_project("alice", "bad").await;
    let alice = app.user_token("alice");
    let put_blob = |sha: String, size: usize| {
        let app = &app;
        let alice = alice.clone();
        let p = p.clone();
        async move {
            app.put(&format!("/v1/projects/{p}/files/x.bin"), &alice, json!({"blob": {"sha256": sha, "size": size}}))
                .await
        }
    };
    let bytes = binary_bytes(5000, 4);
    let sha = sha256(&bytes);

    // Never uploaded.
    let missing = put_blob(sha.clone(), bytes.len()).await;
    assert_error(&missing, 400, "invalid_request");
    assert!(missing.1["error"]["message"].as_str().unwrap().contains("upload it first"), "{}", missing.1);

    // Uploaded, but referenced with another size.
    app.announce_and_upload("alice", &p, &sha, bytes.len(), &bytes).await;
    let size_differs = put_blob(sha.clone(), bytes.len() + 1).await;
    assert_error(&size_differs, 400, "invalid_request");
    assert!(
        size_differs.1["error"]["message"].as_str().unwrap().contains("not what was announced"),
        "{}",
        size_differs.1
    );

    // Other bytes than announced through the signed URL: refused, and the upload is gone
    // (referencing it again finds nothing).
    let evil = binary_bytes(5000, 5);
    app.announce_and_upload("alice", &p, &sha, bytes.len(), &evil).await;
    let hash_differs = put_blob(sha.clone(), bytes.len()).await;
    assert_error(&hash_differs, 400, "invalid_request");
    let message = hash_differs.1["error"]["message"].as_str().unwrap();
    assert!(message.contains(&sha256(&evil)) && message.contains("deleted"), "{message}");
    assert!(
        put_blob(sha.clone(), bytes.len()).await.1["error"]["message"].as_str().unwrap().contains("upload it first")
    );

    // More bytes than announced: refused, named, deleted.
    let mut longer = bytes.clone();
    longer.extend_from_slice(b"tail");
    app.announce_and_upload("alice", &p, &sha, bytes.len(), &longer).await;
    let too_long = put_blob(sha.clone(), bytes.len()).await;
    assert_error(&too_long, 400, "invalid_request");
    let message = too_long.1["error"]["message"].as_str().unwrap();
    assert!(message.contains("more than 5000 bytes") && message.contains("deleted"), "{message}");
    let upload = upload_key(p.parse().unwrap(), &sha);
    assert!(!storage(&app).exists(&upload).await.unwrap(), "the bad upload is gone");
    assert!(!object_exists(&app, &sha).await, "no blob was kept");

    // Limits and shapes.
    assert_error(
        &app.post(&format!("/v1/projects/{p}/blobs"), &alice, json!({"sha256": sha, "size": 1024 * 1024 + 1})).await,
        413,
        "payload_too_large",
    );
    assert_error(&put_blob(sha.clone(), 1024 * 1024 + 1).await, 413, "payload_too_large");
    assert_error(
        &app.post(&format!("/v1/projects/{p}/blobs"), &alice, json!({"sha256": "ABC", "size": 1})).await,
        400,
        "invalid_request",
    );
    assert_error(&put_blob(sha.to_uppercase(), 1).await, 400, "invalid_request");
    assert_error(
        &app.put(&format!("/v1/projects/{p}/files/x.bin"), &alice, json!({"blob": {"sha256": sha}})).await,
        400,
        "invalid_request",
    );
    // Viewers may not upload.
    let (status, _) = app
        .call(Method::PUT, &format!("/v1/projects/{p}/members/victor"), Some(&alice), Some(json!({"role": "viewer"})))
        .await;
    assert!(status.is_success());
    assert_error(
        &app.post(&format!("/v1/projects/{p}/blobs"), &app.user_token("victor"), json!({"sha256": sha, "size": 1}))
            .await,
        403,
        "forbidden",
    );

    // Nothing was written.
    assert_eq!(app.file_count_and_seq(&p).await, (0, 0));
}

#[tokio::test]
async fn binary_bad_blob_references_are_refused_local() {
    bad_blob_references(Kind::Local).await;
}

#[tokio::test]
async fn binary_bad_blob_references_are_refused_s3() {
    bad_blob_references(Kind::S3).await;
}

/// Puts `bytes` at `key` as a client's upload would leave them.
async fn upload_directly(storage: &Storage, key: &str, bytes: &[u8]) {
    let file = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(file.path(), bytes).unwrap();
    storage.put(key, file.path()).await.unwrap();
}

/// What a verification left under the hub's private staging keys.
async fn staged_leftovers(storage: &Storage) -> usize {
    match storage {
        Storage::Local(store) => std::fs::read_dir(store.root().join(".verifying")).map_or(0, |dir| dir.count()),
        Storage::S3(store) => {
            let listed =
                store.client().list_objects_v2().bucket(store.bucket()).prefix("blob-verifying/").send().await.unwrap();
            listed.contents().len()
        }
    }
}

/// `Storage::verify_upload`: other bytes, more bytes than announced and no upload at all
/// are reported as found, nothing is kept and the upload is gone; the announced bytes end
/// up under `blobs/<sha256>`, byte-identical, and nothing is left in between.
async fn verify_upload_keeps_only_the_announced_bytes(storage: &Storage) {
    let project = Uuid::new_v4();
    let bytes = binary_bytes(70_000, 21);
    let sha = sha256(&bytes);
    let size = bytes.len() as u64;
    let key = upload_key(project, &sha);
    let blob = blob_key(&sha);
    assert_eq!(storage.verify_upload(&key, &sha, size).await.unwrap(), Fetched::Missing);

    let other = binary_bytes(70_000, 22);
    let mut longer = bytes.clone();
    longer.push(0);
    let shorter = bytes[..100].to_vec();
    for (uploaded, expected) in [
        (&other, Fetched::Bytes { size, sha256: sha256(&other) }),
        (&longer, Fetched::TooLarge),
        (&shorter, Fetched::Bytes { size: 100, sha256: sha256(&shorter) }),
    ] {
        upload_directly(storage, &key, uploaded).await;
        assert_eq!(storage.verify_upload(&key, &sha, size).await.unwrap(), expected);
        assert!(!storage.exists(&key).await.unwrap(), "the refused upload is deleted");
        assert!(!storage.exists(&blob).await.unwrap(), "nothing is kept");
    }

    upload_directly(storage, &key, &bytes).await;
    assert_eq!(storage.verify_upload(&key, &sha, size).await.unwrap(), Fetched::Bytes { size, sha256: sha.clone() });
    assert!(!storage.exists(&key).await.unwrap(), "the upload was taken over");
    let kept = tempfile::NamedTempFile::new().unwrap();
    let mut dest = tokio::fs::File::create(kept.path()).await.unwrap();
    assert_eq!(storage.download_hashing(&blob, &mut dest, size).await.unwrap(), Fetched::Bytes { size, sha256: sha });
    assert_eq!(staged_leftovers(storage).await, 0);
}

#[tokio::test]
async fn binary_uploads_are_verified_and_renamed_into_place_local() {
    let dir = tempfile::tempdir().unwrap();
    let store = synchub::snapshots::storage::LocalStore::new(dir.path(), "http://127.0.0.1", "key").await.unwrap();
    let storage = Storage::Local(store);
    verify_upload_keeps_only_the_announced_bytes(&storage).await;

    // No second pass over the bytes: the blob is the uploaded file itself, renamed.
    use std::os::unix::fs::MetadataExt;
    let bytes = binary_bytes(10_000, 23);
    let sha = sha256(&bytes);
    let key = upload_key(Uuid::new_v4(), &sha);
    upload_directly(&storage, &key, &bytes).await;
    let uploaded = std::fs::metadata(dir.path().join(&key)).unwrap().ino();
    storage.verify_upload(&key, &sha, bytes.len() as u64).await.unwrap();
    assert_eq!(std::fs::metadata(dir.path().join(blob_key(&sha))).unwrap().ino(), uploaded);

    // What a crash in the middle of a verification leaves is swept like an old upload.
    std::fs::write(dir.path().join(".verifying").join(Uuid::new_v4().to_string()), b"x").unwrap();
    assert_eq!(storage.sweep_uploads(std::time::Duration::ZERO).await.unwrap(), 1);
}

#[tokio::test]
async fn binary_uploads_are_verified_and_copied_server_side_s3() {
    let server = S3Server::start().await;
    let storage = Storage::S3(server.store().await);
    verify_upload_keeps_only_the_announced_bytes(&storage).await;
    let Storage::S3(store) = &storage else { unreachable!() };
    assert!(store.copies_server_side(), "s3s-fs has CopyObject: no fallback to downloading");
}

#[tokio::test]
async fn binary_uploads_are_verified_by_download_when_the_store_cannot_copy_s3() {
    let server = S3Server::start().await;
    verify_upload_keeps_only_the_announced_bytes(&Storage::S3(server.store().await.without_server_side_copy())).await;
}

#[tokio::test]
async fn binary_events_carry_blob_refs_not_content() {
    let (app, _backing) = hub(Kind::Local, |_| {}).await;
    let p = app.create_project("alice", "events").await;
    let alice = app.user_token("alice");
    let mut ws = app.ws(&alice).await;
    ws.join(&p, Some(0)).await;
    let bytes = binary_bytes(1234, 6);
    let sha = sha256(&bytes);
    let (status, _) = app.put_bytes("alice", &p, "a.png", &bytes).await;
    assert_eq!(status, StatusCode::OK);
    let (status, _) =
        app.post(&format!("/v1/projects/{p}/files:move"), &alice, json!({"from": "a.png", "to": "b/a.png"})).await;
    assert_eq!(status, StatusCode::OK);
    let events = ws.events(2).await;
    let update = &events[0]["payload"];
    assert_eq!(events[0]["event"], "file:update");
    assert_eq!(update["blob"], json!({"sha256": sha, "size": 1234}), "{update}");
    assert_eq!(update["content_hash"], sha);
    assert!(update.get("content").is_none(), "{update}");
    assert_eq!(events[1]["event"], "bulk:apply");
    let moved = &events[1]["payload"]["files"][0];
    assert_eq!(moved["file_path"], "b/a.png");
    assert_eq!(moved["blob"], json!({"sha256": sha, "size": 1234}), "{moved}");
    assert!(moved.get("content").is_none(), "{moved}");
    // The log over HTTP says the same.
    let (_, page) = app.get(&format!("/v1/projects/{p}/events?since=0"), &alice).await;
    assert_eq!(page["events"][0]["payload"]["blob"]["sha256"], sha, "{page}");
    // The moved file reads back byte-identical.
    let (_, got) =
        app.get_bytes(&format!("/v1/projects/{p}/files/b/a.png"), &alice, Some("application/octet-stream")).await;
    assert_eq!(got, bytes);
}

#[tokio::test]
async fn binary_bytes_count_toward_the_storage_quota() {
    let (app, _backing) = hub(Kind::Local, |c| c.limits.max_bytes_per_user = 10_000).await;
    let p = app.create_project("alice", "quota").await;
    let (status, _) = app.put_bytes("alice", &p, "a.bin", &binary_bytes(6000, 7)).await;
    assert_eq!(status, StatusCode::OK);
    let over = app.put_bytes("alice", &p, "b.bin", &binary_bytes(6000, 8)).await;
    assert_error(&over, 403, "quota_exceeded");
    assert_eq!(app.file_count_and_seq(&p).await, (1, 1));
    let (_, project) = app.get(&format!("/v1/projects/{p}"), &app.user_token("alice")).await;
    assert_eq!(project["bytes"], 6000, "{project}");
}

fn storage(app: &TestApp) -> &Storage {
    app.state.storage.as_deref().expect("storage configured")
}

async fn object_exists(app: &TestApp, sha: &str) -> bool {
    storage(app).exists(&synchub::snapshots::storage::blob_key(sha)).await.unwrap()
}

async fn blob_row_exists(app: &TestApp, sha: &str) -> bool {
    let (client, conn) = tokio_postgres::connect(&app.database_url, tokio_postgres::NoTls).await.unwrap();
    tokio::spawn(conn);
    client.query_one("SELECT count(*) FROM synchub.blobs WHERE sha256 = $1", &[&sha]).await.unwrap().get::<_, i64>(0)
        == 1
}

/// A blob the hub holds that no version references: a straight write registers it, then
/// fails its version check.
async fn unreferenced_blob(app: &TestApp, project: &str, bytes: &[u8]) -> String {
    assert_error(&app.put_bytes("alice", project, "lost.bin?expected_version=7", bytes).await, 409, "version_conflict");
    let sha = sha256(bytes);
    assert!(blob_row_exists(app, &sha).await && object_exists(app, &sha).await);
    sha
}

async fn collect(app: &TestApp, grace: std::time::Duration) -> usize {
    synchub::blobs::collect_garbage(&app.state.db, storage(app), grace).await.unwrap()
}

async fn gc_deletes_unreferenced_after_grace_only(kind: Kind) {
    let (app, _backing) = hub(kind, |c| c.blob_gc_interval_secs = 0).await;
    let p = app.create_project("alice", "gc").await;
    let kept = binary_bytes(3000, 10);
    let (status, _) = app.put_bytes("alice", &p, "kept.bin", &kept).await;
    assert_eq!(status, StatusCode::OK);
    // Deleting the file keeps its older version, which still references the blob.
    let (status, _) = app.delete(&format!("/v1/projects/{p}/files/kept.bin"), &app.user_token("alice")).await;
    assert_eq!(status, StatusCode::OK);
    let lost = unreferenced_blob(&app, &p, &binary_bytes(2000, 11)).await;

    assert_eq!(collect(&app, std::time::Duration::from_secs(3600)).await, 0, "within the grace period");
    assert!(blob_row_exists(&app, &lost).await && object_exists(&app, &lost).await);

    assert_eq!(collect(&app, std::time::Duration::ZERO).await, 1);
    assert!(!blob_row_exists(&app, &lost).await && !object_exists(&app, &lost).await);
    assert!(blob_row_exists(&app, &sha256(&kept)).await && object_exists(&app, &sha256(&kept)).await);
    assert_eq!(collect(&app, std::time::Duration::ZERO).await, 0);

    // An upload no write ever referenced goes too, after the same grace period.
    let orphan = binary_bytes(700, 17);
    app.announce_and_upload("alice", &p, &sha256(&orphan), orphan.len(), &orphan).await;
    let key = synchub::snapshots::storage::upload_key(p.parse().unwrap(), &sha256(&orphan));
    assert!(storage(&app).exists(&key).await.unwrap());
    assert_eq!(storage(&app).sweep_uploads(std::time::Duration::from_secs(3600)).await.unwrap(), 0);
    assert!(storage(&app).exists(&key).await.unwrap());
    assert_eq!(storage(&app).sweep_uploads(std::time::Duration::ZERO).await.unwrap(), 1);
    assert!(!storage(&app).exists(&key).await.unwrap());
}

#[tokio::test]
async fn blob_gc_deletes_unreferenced_blobs_after_the_grace_period_local() {
    gc_deletes_unreferenced_after_grace_only(Kind::Local).await;
}

#[tokio::test]
async fn blob_gc_deletes_unreferenced_blobs_after_the_grace_period_s3() {
    gc_deletes_unreferenced_after_grace_only(Kind::S3).await;
}

#[tokio::test]
async fn blob_gc_runs_in_the_background_of_every_hub() {
    let (app, _backing) = hub(Kind::Local, |c| {
        c.blob_gc_interval_secs = 1;
        c.blob_gc_grace_secs = 0;
    })
    .await;
    let p = app.create_project("alice", "bg").await;
    let lost = sha256(&binary_bytes(100, 12));
    assert_error(
        &app.put_bytes("alice", &p, "lost.bin?expected_version=7", &binary_bytes(100, 12)).await,
        409,
        "version_conflict",
    );
    let mut gone = false;
    for _ in 0..100 {
        if !blob_row_exists(&app, &lost).await {
            gone = true;
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert!(gone, "the background collector deleted the unreferenced blob");
    assert!(!object_exists(&app, &lost).await);
}

/// Waits (bounded) until some backend of the test's database waits for a lock.
async fn until_a_backend_waits_for_a_lock(database_url: &str) {
    let (client, conn) = tokio_postgres::connect(database_url, tokio_postgres::NoTls).await.unwrap();
    tokio::spawn(conn);
    for _ in 0..400 {
        let waiting: i64 = client
            .query_one(
                "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() AND wait_event_type = 'Lock'",
                &[],
            )
            .await
            .unwrap()
            .get(0);
        if waiting > 0 {
            return;
        }
        tokio::time::sleep(std::time::Duration::from_millis(25)).await;
    }
    panic!("no backend ever waited for the lock");
}

#[tokio::test]
async fn blob_gc_and_a_write_referencing_the_blob_never_leave_a_dangling_reference() {
    let (app, _backing) = hub(Kind::Local, |c| c.blob_gc_interval_secs = 0).await;
    let p = app.create_project("alice", "race").await;
    let bytes = binary_bytes(4000, 13);

    // 1. The collector claims the blob first; a write referencing it meanwhile waits for
    //    the collector's commit and is then refused: no version points at deleted bytes.
    let sha = unreferenced_blob(&app, &p, &bytes).await;
    let gc = app.sql().await;
    gc.batch_execute("BEGIN").await.unwrap();
    let claimed: Vec<String> = gc
        .query("SELECT synchub.blob_gc_claim('0 seconds', 100)", &[])
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(claimed, vec![sha.clone()]);
    let write = {
        let (http, url, token) =
            (app.http.clone(), format!("{}/v1/projects/{p}/files/late.bin", app.base), app.user_token("alice"));
        let body = json!({"blob": {"sha256": sha, "size": bytes.len()}});
        tokio::spawn(async move {
            let response = http.put(url).bearer_auth(token).json(&body).send().await.unwrap();
            (response.status(), response.json::<Value>().await.unwrap())
        })
    };
    until_a_backend_waits_for_a_lock(&app.database_url).await;
    storage(&app).delete(&synchub::snapshots::storage::blob_key(&sha)).await.unwrap();
    gc.query_one("SELECT synchub.blob_gc_forget($1)", &[&vec![sha.clone()]]).await.unwrap();
    gc.batch_execute("COMMIT").await.unwrap();
    let refused = write.await.unwrap();
    assert_error(&refused, 400, "invalid_request");
    assert!(refused.1["error"]["message"].as_str().unwrap().contains("holds no blob"), "{}", refused.1);
    assert_eq!(app.file_count_and_seq(&p).await, (0, 0));

    // 2. A write holds the blob first (its transaction still open): the collector skips it,
    //    and after the commit the blob is referenced and stays.
    let sha = unreferenced_blob(&app, &p, &bytes).await;
    let writer = app.sql().await;
    writer.batch_execute("BEGIN").await.unwrap();
    let project: Uuid = p.parse().unwrap();
    let blob = json!({"sha256": sha, "size": bytes.len()});
    writer
        .query(
            "SELECT * FROM synchub.upsert_binary_file($1, 'held.bin', $2, NULL, NULL, 'alice', NULL)",
            &[&project, &blob],
        )
        .await
        .unwrap();
    assert_eq!(collect(&app, std::time::Duration::ZERO).await, 0, "the referencing write holds the row");
    assert!(object_exists(&app, &sha).await);
    writer.batch_execute("COMMIT").await.unwrap();
    assert_eq!(collect(&app, std::time::Duration::ZERO).await, 0, "referenced now");
    let (status, got) = app
        .get_bytes(
            &format!("/v1/projects/{p}/files/held.bin"),
            &app.user_token("alice"),
            Some("application/octet-stream"),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(got, bytes);
}

async fn snapshot_holds_binary_bytes(kind: Kind) {
    let (app, _backing) = hub(kind, |_| {}).await;
    let p = app.create_project("alice", "snap").await;
    app.write("alice", &p, "index.html", "<img src=logo.png>").await;
    let small = binary_bytes(20_000, 14);
    let (status, _) = app.put_bytes("alice", &p, "logo.png", &small).await;
    assert_eq!(status, StatusCode::OK);
    // Larger than a text file may be: the reader's binary cap applies.
    let large = binary_bytes(3 * 1024 * 1024, 15);
    app.announce_and_upload("alice", &p, &sha256(&large), large.len(), &large).await;
    let (status, _) = app
        .put(
            &format!("/v1/projects/{p}/files/fonts/big.woff2"),
            &app.user_token("alice"),
            json!({"blob": {"sha256": sha256(&large), "size": large.len()}}),
        )
        .await;
    assert_eq!(status, StatusCode::OK);

    let service = app.service_token();
    let (status, session) = app.post(&format!("/v1/projects/{p}/sessions"), &service, json!({})).await;
    assert_eq!(status, StatusCode::CREATED, "{session}");
    let zip = reqwest::get(session["snapshot"]["url"].as_str().unwrap()).await.unwrap().bytes().await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let manifest = snapshot_builder::extract(
        std::io::Cursor::new(zip.to_vec()),
        dir.path(),
        &snapshot_builder::ReadLimits::default(),
    )
    .unwrap();
    let entry = |path: &str| manifest.files.iter().find(|f| f.path == path).unwrap().clone();
    assert!(entry("logo.png").binary && entry("fonts/big.woff2").binary && !entry("index.html").binary);
    assert_eq!(entry("logo.png").sha256, sha256(&small));
    assert_eq!(std::fs::read(dir.path().join("logo.png")).unwrap(), small);
    assert!(std::fs::read(dir.path().join("fonts/big.woff2")).unwrap() == large);
    assert_eq!(std::fs::read_to_string(dir.path().join("index.html")).unwrap(), "<img src=logo.png>");
    // The manifest marks them in its JSON (written by the same serde as read back here).
    let raw = serde_json::to_value(&manifest).unwrap();
    let logo = raw["files"].as_array().unwrap().iter().find(|f| f["path"] == "logo.png").unwrap().clone();
    assert_eq!(logo["binary"], true, "{logo}");
    assert!(
        raw["files"].as_array().unwrap().iter().find(|f| f["path"] == "index.html").unwrap().get("binary").is_none()
    );

    // The session's container token may read blobs of its project (read-only).
    let token = session["token"].as_str().unwrap();
    let (status, got) = app.get_bytes(&format!("/v1/projects/{p}/blobs/{}", sha256(&small)), token, None).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(got, small);
    let (status, got) =
        app.get_bytes(&format!("/v1/projects/{p}/files/logo.png"), token, Some("application/octet-stream")).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(got, small);
    let (status, _) = app
        .http
        .post(format!("{}/v1/projects/{p}/blobs", app.base))
        .bearer_auth(token)
        .json(&json!({"sha256": sha256(&small), "size": small.len()}))
        .send()
        .await
        .map(|r| (r.status(), ()))
        .unwrap();
    assert_eq!(status, StatusCode::FORBIDDEN);
}

#[tokio::test]
async fn binary_snapshot_holds_the_bytes_with_manifest_binary_true_local() {
    snapshot_holds_binary_bytes(Kind::Local).await;
}

#[tokio::test]
async fn binary_snapshot_holds_the_bytes_with_manifest_binary_true_s3() {
    snapshot_holds_binary_bytes(Kind::S3).await;
}

#[tokio::test]
async fn binary_bulk_writes_carry_blob_references() {
    let (app, _backing) = hub(Kind::Local, |_| {}).await;
    let p = app.create_project("alice", "bulk").await;
    let alice = app.user_token("alice");
    let bytes = binary_bytes(9000, 16);
    let sha = sha256(&bytes);
    app.announce_and_upload("alice", &p, &sha, bytes.len(), &bytes).await;
    let (status, answer) = app
        .post(
            &format!("/v1/projects/{p}/files:bulk"),
            &alice,
            json!({"upserts": [
                {"path": "a.txt", "content": "text"},
                {"path": "img/a.png", "blob": {"sha256": sha, "size": bytes.len()}},
                {"path": "img/b.png", "blob": {"sha256": sha, "size": bytes.len()}, "expected_version": 0}
            ]}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{answer}");
    assert_eq!(answer["files"][1]["content_hash"], sha, "{answer}");
    let (_, page) = app.get(&format!("/v1/projects/{p}/events?since=0"), &alice).await;
    let files = &page["events"][0]["payload"]["files"];
    assert_eq!(files[0]["content"], "text", "{page}");
    assert_eq!(files[1]["blob"]["sha256"], sha, "{page}");
    assert!(files[1].get("content").is_none(), "{page}");
    let (_, got) =
        app.get_bytes(&format!("/v1/projects/{p}/files/img/b.png"), &alice, Some("application/octet-stream")).await;
    assert_eq!(got, bytes);

    // Content and blob together, or a blob not held: refused, nothing written.
    for upsert in [
        json!({"path": "c.png", "content": "x", "blob": {"sha256": sha, "size": bytes.len()}}),
        json!({"path": "c.png", "blob": {"sha256": sha256(b"never"), "size": 5}}),
    ] {
        assert_error(
            &app.post(&format!("/v1/projects/{p}/files:bulk"), &alice, json!({"upserts": [upsert]})).await,
            400,
            "invalid_request",
        );
    }
    assert_eq!(app.file_count_and_seq(&p).await, (3, 1));
}
