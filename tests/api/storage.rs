//! Snapshot storage against real servers: an S3-compatible server (s3s-fs, in this
//! process, its own directory and port per test) and local disk served by a real hub.

use std::path::Path;
use std::time::{Duration, SystemTime};

use hmac::{Hmac, Mac};
use rand::RngCore;
use reqwest::StatusCode;
use sha2::{Digest, Sha256};
use synchub::snapshots::storage::{S3Settings, S3Store, Storage, valid_object_key};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use uuid::Uuid;

use crate::helpers::{SIGNING_KEY, TestApp, assert_error};

const ACCESS_KEY: &str = "synchub-test-access";
const SECRET_KEY: &str = "synchub-test-secret-0123456789";
const MIB: usize = 1024 * 1024;

/// An s3s-fs server on a free port, serving its own temporary directory.
pub(crate) struct S3Server {
    endpoint: String,
    root: tempfile::TempDir,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for S3Server {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl S3Server {
    pub(crate) async fn start() -> S3Server {
        use hyper_util::rt::{TokioExecutor, TokioIo};
        synchub::app::init_process(); // reqwest's rustls provider, when no hub started it
        let root = tempfile::tempdir().unwrap();
        let fs = s3s_fs::FileSystem::new(root.path()).unwrap();
        let mut builder = s3s::service::S3ServiceBuilder::new(fs);
        builder.set_auth(s3s::auth::SimpleAuth::from_single(ACCESS_KEY, SECRET_KEY));
        let service = builder.build();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let endpoint = format!("http://{}", listener.local_addr().unwrap());
        let task = tokio::spawn(async move {
            while let Ok((socket, _)) = listener.accept().await {
                let service = service.clone();
                tokio::spawn(async move {
                    let http = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
                    let _ = http.serve_connection(TokioIo::new(socket), service).await;
                });
            }
        });
        S3Server { endpoint, root, task }
    }

    /// A store on a fresh bucket of this server.
    pub(crate) async fn store(&self) -> S3Store {
        let store = self.store_for(&format!("t-{}", Uuid::new_v4().simple()));
        store.client().create_bucket().bucket(store.bucket()).send().await.expect("create bucket");
        store
    }

    /// A hub whose storage is a fresh bucket of this server.
    pub(crate) async fn hub(&self, adjust: impl FnOnce(&mut synchub::config::Config)) -> TestApp {
        let bucket = self.store().await.bucket().to_string();
        let endpoint = self.endpoint.clone();
        TestApp::spawn_with(move |c| {
            c.s3_bucket = Some(bucket);
            c.s3_endpoint = Some(endpoint);
            c.s3_path_style = true;
            c.s3_access_key_id = Some(ACCESS_KEY.into());
            c.s3_secret_access_key = Some(SECRET_KEY.into());
            adjust(c);
        })
        .await
    }

    /// A store on `bucket`, which may not exist.
    fn store_for(&self, bucket: &str) -> S3Store {
        self.store_with(bucket, None)
    }

    /// A store on `bucket` whose presigned URLs point at `public_endpoint`.
    fn store_with(&self, bucket: &str, public_endpoint: Option<String>) -> S3Store {
        S3Store::new(S3Settings {
            endpoint: Some(self.endpoint.clone()),
            public_endpoint,
            bucket: bucket.into(),
            region: "us-east-1".into(),
            path_style: true,
            access_key_id: ACCESS_KEY.into(),
            secret_access_key: SECRET_KEY.into(),
            session_token: None,
        })
        .unwrap()
    }

    /// Multipart state s3s-fs keeps until an upload is completed or aborted: its parts
    /// (`.upload_id-<id>.part-<n>`) and the object's pending metadata
    /// (`.bucket-<b>.object-<k>.upload-<id>.metadata.json`).
    fn pending_uploads(&self) -> Vec<String> {
        std::fs::read_dir(self.root.path())
            .unwrap()
            .filter_map(|entry| entry.unwrap().file_name().into_string().ok())
            .filter(|name| {
                name.starts_with(".upload_id-") || (name.contains(".upload-") && name.ends_with(".metadata.json"))
            })
            .collect()
    }
}

fn snapshot_key() -> String {
    format!("project-snapshots/{}/{}.zip", Uuid::new_v4(), Uuid::new_v4())
}

/// A file of `len` random bytes in `dir`.
fn random_file(dir: &Path, len: usize) -> (std::path::PathBuf, Vec<u8>) {
    let mut bytes = vec![0u8; len];
    rand::rng().fill_bytes(&mut bytes);
    let path = dir.join(format!("{}.zip", Uuid::new_v4()));
    std::fs::write(&path, &bytes).unwrap();
    (path, bytes)
}

async fn fetch(url: &str) -> (StatusCode, reqwest::header::HeaderMap, Vec<u8>) {
    let response = reqwest::get(url).await.expect("GET");
    let status = response.status();
    let headers = response.headers().clone();
    (status, headers, response.bytes().await.unwrap().to_vec())
}

/// Replaces the last character of the value of `param` in `url` with another hex digit.
fn tamper(url: &str, param: &str) -> String {
    let start = url.find(&format!("{param}=")).unwrap_or_else(|| panic!("{param} in {url}")) + param.len() + 1;
    let end = url[start..].find('&').map_or(url.len(), |i| start + i);
    let last = &url[end - 1..end];
    let replacement = if last == "0" { "1" } else { "0" };
    format!("{}{replacement}{}", &url[..end - 1], &url[end..])
}

fn sha256(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

#[tokio::test]
async fn s3_put_then_presigned_get_returns_exactly_the_bytes() {
    let server = S3Server::start().await;
    let store = Storage::S3(server.store().await);
    store.check().await.expect("bucket reachable");
    let dir = tempfile::tempdir().unwrap();
    let (file, bytes) = random_file(dir.path(), 300 * 1024 + 7);
    let key = snapshot_key();

    assert!(!store.exists(&key).await.unwrap());
    assert_eq!(store.put(&key, &file).await.unwrap(), bytes.len() as u64);
    assert!(store.exists(&key).await.unwrap());
    assert!(!store.exists(&snapshot_key()).await.unwrap());

    let before = chrono::Utc::now();
    let url = store.presign_get(&key, Duration::from_secs(600)).await.unwrap();
    assert!(url.url.starts_with(&server.endpoint), "{}", url.url);
    let lifetime = url.expires_at - before;
    assert!((599..=601).contains(&lifetime.num_seconds()), "{lifetime}");
    let (status, headers, body) = fetch(&url.url).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(headers["content-type"], "application/zip");
    assert_eq!(body.len(), bytes.len());
    assert!(body == bytes, "the downloaded bytes differ");
}

/// A TCP forwarder in front of a server (what a load balancer or a published port is to an
/// agent outside the store's network); counts the connections it accepted.
struct Forwarder {
    port: u16,
    connections: std::sync::Arc<std::sync::atomic::AtomicUsize>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Forwarder {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Forwarder {
    async fn start(target: &str) -> Forwarder {
        let target = target.trim_start_matches("http://").to_string();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let connections = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let counter = connections.clone();
        let task = tokio::spawn(async move {
            while let Ok((mut client, _)) = listener.accept().await {
                counter.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                let target = target.clone();
                tokio::spawn(async move {
                    let Ok(mut server) = tokio::net::TcpStream::connect(target).await else { return };
                    let _ = tokio::io::copy_bidirectional(&mut client, &mut server).await;
                });
            }
        });
        Forwarder { port, connections, task }
    }

    fn connections(&self) -> usize {
        self.connections.load(std::sync::atomic::Ordering::SeqCst)
    }
}

#[tokio::test]
async fn s3_presigned_urls_point_at_the_public_endpoint() {
    let server = S3Server::start().await;
    let forwarder = Forwarder::start(&server.endpoint).await;
    // Another host name than the internal endpoint's, as `minio:9000` vs `localhost:9000`.
    let public = format!("http://localhost:{}", forwarder.port);
    let store = server.store_with(&format!("t-{}", Uuid::new_v4().simple()), Some(public.clone()));
    store.client().create_bucket().bucket(store.bucket()).send().await.expect("create bucket");
    let store = Storage::S3(store);
    let dir = tempfile::tempdir().unwrap();
    let (file, bytes) = random_file(dir.path(), 64 * 1024 + 1);
    let key = snapshot_key();
    store.put(&key, &file).await.unwrap();
    assert!(store.exists(&key).await.unwrap());
    store.check().await.unwrap();
    assert_eq!(forwarder.connections(), 0, "the hub's own calls use the internal endpoint");

    let url = store.presign_get(&key, Duration::from_secs(60)).await.unwrap();
    assert!(url.url.starts_with(&format!("{public}/")), "{}", url.url);
    let (status, headers, body) = fetch(&url.url).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(headers["content-type"], "application/zip");
    assert!(body == bytes, "the downloaded bytes differ");
    assert!(forwarder.connections() >= 1, "the GET went through the public endpoint");

    // The signature covers the host: the same URL sent to the internal endpoint is refused,
    // which is why the URL must be signed for the public one rather than rewritten.
    let internal = url.url.replace(&public, &server.endpoint);
    assert_eq!(fetch(&internal).await.0, StatusCode::FORBIDDEN, "URL rewritten to another host");
    let expired = store
        .presign_get_at(&key, SystemTime::now() - Duration::from_secs(3600), Duration::from_secs(60))
        .await
        .unwrap();
    assert!(expired.url.starts_with(&format!("{public}/")), "{}", expired.url);
    assert_eq!(fetch(&expired.url).await.0, StatusCode::FORBIDDEN, "expired URL through the public endpoint");
}

#[tokio::test]
async fn s3_expired_and_tampered_urls_are_refused() {
    let server = S3Server::start().await;
    let store = Storage::S3(server.store().await);
    let dir = tempfile::tempdir().unwrap();
    let (file, bytes) = random_file(dir.path(), 1000);
    let key = snapshot_key();
    store.put(&key, &file).await.unwrap();

    let good = store.presign_get(&key, Duration::from_secs(60)).await.unwrap();
    assert_eq!(fetch(&good.url).await.2, bytes);

    let hour_ago = SystemTime::now() - Duration::from_secs(3600);
    let expired = store.presign_get_at(&key, hour_ago, Duration::from_secs(60)).await.unwrap();
    assert!(expired.expires_at < chrono::Utc::now());
    assert_eq!(fetch(&expired.url).await.0, StatusCode::FORBIDDEN, "expired URL");

    assert_eq!(fetch(&tamper(&good.url, "X-Amz-Signature")).await.0, StatusCode::FORBIDDEN, "tampered signature");
    let longer = good.url.replace("X-Amz-Expires=60", "X-Amz-Expires=604800");
    assert_ne!(longer, good.url);
    assert_eq!(fetch(&longer).await.0, StatusCode::FORBIDDEN, "extended expiry");
    let other_key = snapshot_key();
    store.put(&other_key, &file).await.unwrap();
    let swapped = good.url.replace(&key, &other_key);
    assert_eq!(fetch(&swapped).await.0, StatusCode::FORBIDDEN, "another key under the same signature");
}

#[tokio::test]
async fn s3_large_files_go_up_in_parts() {
    let server = S3Server::start().await;
    let store = server.store().await.with_multipart(MIB as u64, 5 * MIB as u64);
    let client = store.client().clone();
    let bucket = store.bucket().to_string();
    let store = Storage::S3(store);
    let dir = tempfile::tempdir().unwrap();
    // 3 parts: 5 MiB, 5 MiB, 1 MiB + 123 bytes.
    let (file, bytes) = random_file(dir.path(), 11 * MIB + 123);
    let key = snapshot_key();

    assert_eq!(store.put(&key, &file).await.unwrap(), bytes.len() as u64);
    assert!(server.pending_uploads().is_empty(), "{:?}", server.pending_uploads());
    let head = client.head_object().bucket(&bucket).key(&key).send().await.unwrap();
    assert_eq!(head.content_length(), Some(bytes.len() as i64));
    assert_eq!(head.content_type(), Some("application/zip"));
    // A multipart ETag is "<md5 of the part md5s>-<number of parts>".
    assert!(head.e_tag().unwrap_or_default().trim_matches('"').ends_with("-3"), "{:?}", head.e_tag());

    let url = store.presign_get(&key, Duration::from_secs(60)).await.unwrap();
    let (status, _, body) = fetch(&url.url).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body.len(), bytes.len());
    assert_eq!(sha256(&body), sha256(&bytes));

    // Below the threshold: one PutObject (a plain MD5 ETag, no part count).
    let (small, _) = random_file(dir.path(), MIB);
    let small_key = snapshot_key();
    store.put(&small_key, &small).await.unwrap();
    let head = client.head_object().bucket(&bucket).key(&small_key).send().await.unwrap();
    assert!(!head.e_tag().unwrap_or_default().contains('-'), "{:?}", head.e_tag());
}

#[tokio::test]
async fn s3_failed_multipart_upload_is_aborted() {
    let server = S3Server::start().await;
    let store = Storage::S3(server.store().await.with_multipart(0, 5 * MIB as u64));
    // A directory has a size but cannot be read: the upload starts, then its part fails.
    let dir = tempfile::tempdir().unwrap();
    assert!(std::fs::metadata(dir.path()).unwrap().len() > 0);
    let key = snapshot_key();

    let err = store.put(&key, dir.path()).await.expect_err("a directory cannot be uploaded");
    assert!(format!("{err:#}").contains("part 1"), "{err:#}");
    assert!(server.pending_uploads().is_empty(), "left behind: {:?}", server.pending_uploads());
    assert!(!store.exists(&key).await.unwrap());
}

#[tokio::test]
async fn s3_check_and_exists_fail_without_the_bucket() {
    let server = S3Server::start().await;
    let missing = Storage::S3(server.store_for("no-such-bucket"));
    assert!(missing.check().await.is_err());
    assert!(Storage::S3(server.store().await).check().await.is_ok());

    let unreachable = Storage::S3(
        S3Store::new(S3Settings {
            endpoint: Some("http://127.0.0.1:9".into()),
            public_endpoint: None,
            bucket: "b".into(),
            region: "us-east-1".into(),
            path_style: true,
            access_key_id: ACCESS_KEY.into(),
            secret_access_key: SECRET_KEY.into(),
            session_token: None,
        })
        .unwrap(),
    );
    assert!(unreachable.check().await.is_err());
    // An unreachable store is an error, not "the snapshot is missing".
    assert!(unreachable.exists(&snapshot_key()).await.is_err());

    let wrong_secret = Storage::S3(
        S3Store::new(S3Settings {
            endpoint: Some(server.endpoint.clone()),
            public_endpoint: None,
            bucket: "b".into(),
            region: "us-east-1".into(),
            path_style: true,
            access_key_id: ACCESS_KEY.into(),
            secret_access_key: "wrong".into(),
            session_token: None,
        })
        .unwrap(),
    );
    assert!(wrong_secret.check().await.is_err());
}

/// A hub storing snapshots under a fresh directory.
async fn local_hub() -> (TestApp, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let objects = dir.path().join("objects");
    let app = TestApp::spawn_with(|c| c.storage_dir = Some(objects)).await;
    (app, dir)
}

fn storage(app: &TestApp) -> &Storage {
    app.state.storage.as_deref().expect("storage configured")
}

#[tokio::test]
async fn local_signed_url_serves_the_file_through_the_hub() {
    let (app, dir) = local_hub().await;
    let storage = storage(&app);
    assert!(matches!(storage, Storage::Local(_)));
    storage.check().await.unwrap();
    let (file, bytes) = random_file(dir.path(), 200 * 1024 + 3);
    let key = snapshot_key();

    assert!(!storage.exists(&key).await.unwrap());
    assert_eq!(storage.put(&key, &file).await.unwrap(), bytes.len() as u64);
    assert!(storage.exists(&key).await.unwrap());
    assert_eq!(std::fs::read(dir.path().join("objects").join(&key)).unwrap(), bytes);

    let url = storage.presign_get(&key, Duration::from_secs(600)).await.unwrap();
    assert!(url.url.starts_with(&format!("{}/v1/objects/{key}?expires=", app.base)), "{}", url.url);
    let (status, headers, body) = fetch(&url.url).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(headers["content-type"], "application/zip");
    assert_eq!(headers["content-length"], bytes.len().to_string().as_str());
    assert!(body == bytes, "the downloaded bytes differ");

    // A replaced object is served whole (the rename is atomic).
    let (file2, bytes2) = random_file(dir.path(), 10);
    storage.put(&key, &file2).await.unwrap();
    assert_eq!(fetch(&url.url).await.2, bytes2);
}

#[tokio::test]
async fn local_tampered_expired_or_unsigned_urls_are_forbidden() {
    let (app, dir) = local_hub().await;
    let storage = storage(&app);
    let (file, _) = random_file(dir.path(), 100);
    let key = snapshot_key();
    storage.put(&key, &file).await.unwrap();
    let good = storage.presign_get(&key, Duration::from_secs(60)).await.unwrap().url;
    assert_eq!(fetch(&good).await.0, StatusCode::OK);

    let expired = storage
        .presign_get_at(&key, SystemTime::now() - Duration::from_secs(120), Duration::from_secs(60))
        .await
        .unwrap();
    let other_key = snapshot_key();
    storage.put(&other_key, &file).await.unwrap();
    let expires_param = good.split("expires=").nth(1).unwrap().split('&').next().unwrap();
    let later = (expires_param.parse::<u64>().unwrap() + 3600).to_string();
    let cases = [
        ("expired", expired.url),
        ("tampered signature", tamper(&good, "sig")),
        ("extended expiry", good.replace(&format!("expires={expires_param}"), &format!("expires={later}"))),
        ("another key", good.replace(&key, &other_key)),
        ("no signature", good.split("&sig=").next().unwrap().to_string()),
        ("no query", good.split('?').next().unwrap().to_string()),
    ];
    for (what, url) in cases {
        let response = app.http.get(&url).send().await.unwrap();
        let status = response.status();
        let body: serde_json::Value = response.json().await.unwrap_or_default();
        assert_eq!(status, StatusCode::FORBIDDEN, "{what}: {body}");
        assert_error(&(status, body), 403, "forbidden");
    }

    // A short-lived URL stops working once its second has passed.
    let short = storage.presign_get(&key, Duration::from_secs(1)).await.unwrap();
    assert_eq!(fetch(&short.url).await.0, StatusCode::OK);
    tokio::time::sleep(Duration::from_millis(2100)).await;
    assert_eq!(fetch(&short.url).await.0, StatusCode::FORBIDDEN, "1 s URL after 2 s");

    // Signed, but the file is gone.
    let gone = snapshot_key();
    let url = storage.presign_get(&gone, Duration::from_secs(60)).await.unwrap();
    assert_error(&app.call(reqwest::Method::GET, &url.url[app.base.len()..], None, None).await, 404, "not_found");
}

/// The signature local storage puts on `key` (the documented scheme, recomputed here so
/// that keys the store refuses to sign can still be tried).
fn sign(key: &str, expires: u64) -> String {
    let mut derive = Hmac::<Sha256>::new_from_slice(SIGNING_KEY.as_bytes()).unwrap();
    derive.update(b"synchub local objects");
    let url_key = derive.finalize().into_bytes();
    let mut mac = Hmac::<Sha256>::new_from_slice(&url_key).unwrap();
    mac.update(format!("GET\n{key}\n{expires}").as_bytes());
    hex::encode(mac.finalize().into_bytes())
}

/// A raw HTTP/1.1 GET (no client-side path normalization); returns status and body.
async fn raw_get(addr: std::net::SocketAddr, target: &str) -> (u16, Vec<u8>) {
    let mut socket = tokio::net::TcpStream::connect(addr).await.unwrap();
    let request = format!("GET {target} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
    socket.write_all(request.as_bytes()).await.unwrap();
    let mut answer = Vec::new();
    socket.read_to_end(&mut answer).await.unwrap();
    let status = std::str::from_utf8(&answer[9..12]).unwrap().parse().unwrap();
    let body_at = answer.windows(4).position(|w| w == b"\r\n\r\n").unwrap() + 4;
    (status, answer[body_at..].to_vec())
}

#[tokio::test]
async fn local_keys_outside_the_snapshot_shape_are_never_served() {
    let (app, dir) = local_hub().await;
    let storage = storage(&app);
    // The signing scheme recomputed here matches the store's.
    let key = snapshot_key();
    let (file, bytes) = random_file(dir.path(), 64);
    storage.put(&key, &file).await.unwrap();
    let expires = SystemTime::now().duration_since(SystemTime::UNIX_EPOCH).unwrap().as_secs() + 600;
    let (status, body) =
        raw_get(app.addr, &format!("/v1/objects/{key}?expires={expires}&sig={}", sign(&key, expires))).await;
    assert_eq!((status, body), (200, bytes));

    // Secrets next to and above the storage root, each behind a correctly signed URL.
    const SECRET: &[u8] = b"top secret, never served";
    std::fs::write(dir.path().join("secret.zip"), SECRET).unwrap();
    std::fs::write(dir.path().join("objects").join("secret.zip"), SECRET).unwrap();
    let project = Uuid::new_v4();
    let secret_abs = dir.path().join("secret.zip");
    let keys = [
        "../secret.zip".to_string(),
        "secret.zip".to_string(),
        format!("project-snapshots/{project}/../../secret.zip"),
        format!("project-snapshots/{project}/../../../secret.zip"),
        format!("project-snapshots/../../secret.zip/{}.zip", Uuid::new_v4()),
        secret_abs.display().to_string(),
        format!("/{}", secret_abs.display()),
        format!("other/{project}/{}.zip", Uuid::new_v4()),
        format!("project-snapshots/{project}/secret.zip"),
    ];
    for key in keys {
        assert!(!valid_object_key(&key), "{key}");
        let encoded: String =
            percent_encoding::utf8_percent_encode(&key, percent_encoding::NON_ALPHANUMERIC).to_string();
        for target_key in [key.clone(), key.replace('.', "%2e"), encoded] {
            let target = format!("/v1/objects/{target_key}?expires={expires}&sig={}", sign(&key, expires));
            let (status, body) = raw_get(app.addr, &target).await;
            assert!([400, 403, 404].contains(&status), "{target}: {status}");
            assert!(!body.windows(SECRET.len()).any(|w| w == SECRET), "{target} served the secret");
        }
    }
    assert!(storage.put("../escape.zip", &file).await.is_err());
    assert!(storage.presign_get("../secret.zip", Duration::from_secs(60)).await.is_err());
    assert!(!dir.path().join("escape.zip").exists());
}

#[tokio::test]
async fn objects_are_forbidden_without_local_storage() {
    let app = TestApp::spawn().await;
    assert!(app.state.storage.is_none());
    let key = snapshot_key();
    let expires = SystemTime::now().duration_since(SystemTime::UNIX_EPOCH).unwrap().as_secs() + 600;
    let path = format!("/v1/objects/{key}?expires={expires}&sig={}", sign(&key, expires));
    assert_error(&app.call(reqwest::Method::GET, &path, None, None).await, 403, "forbidden");
}

#[tokio::test]
async fn readiness_follows_snapshot_storage() {
    let (app, dir) = local_hub().await;
    let (status, ready) = app.call(reqwest::Method::GET, "/readyz", None, None).await;
    assert_eq!(status, StatusCode::OK, "{ready}");
    assert_eq!(ready, serde_json::json!({"database": true, "migrated": true, "storage": "ok"}));

    // The storage directory vanishes (a volume unmounted): still ready (editors are
    // served; only snapshot routes fail), storage reported, and nothing leaks.
    std::fs::remove_dir_all(dir.path().join("objects")).unwrap();
    let (status, ready) = app.call(reqwest::Method::GET, "/readyz", None, None).await;
    assert_eq!(status, StatusCode::OK, "{ready}");
    assert_eq!(ready, serde_json::json!({"database": true, "migrated": true, "storage": "unreachable"}));

    let plain = TestApp::spawn().await;
    let (status, ready) = plain.call(reqwest::Method::GET, "/readyz", None, None).await;
    assert_eq!(status, StatusCode::OK, "{ready}");
    assert_eq!(ready["storage"], "not_configured");
}
