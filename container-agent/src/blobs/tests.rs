//! The blob fetch against a small local HTTP server that serves whatever a test wants:
//! right bytes, wrong bytes, too many, failures, redirects. The hub cannot be made to serve
//! wrong bytes, so the "never written" paths are proved here.

use std::sync::{Arc, Mutex};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

use super::*;
use crate::protocol::{BulkApplyPayload, DeletedFile, SafeU64, Token, UpdatedFile};
use crate::tree::{ProjectTree, TreeError, TreeOptions, sha256_hex};

/// One request as the server saw it.
#[derive(Debug, Clone)]
struct Seen {
    path: String,
    authorization: Option<String>,
}

/// What the server answers: status, extra headers, body.
type Answer = (u16, Vec<(String, String)>, Vec<u8>);
type Handler = Arc<dyn Fn(usize, &Seen) -> Answer + Send + Sync>;

struct Server {
    base: String,
    seen: Arc<Mutex<Vec<Seen>>>,
}

impl Server {
    /// Serves until the test ends; `handler` gets the request's index and the request.
    async fn start(handler: impl Fn(usize, &Seen) -> Answer + Send + Sync + 'static) -> Server {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        let seen = Arc::new(Mutex::new(Vec::new()));
        let handler: Handler = Arc::new(handler);
        let log = Arc::clone(&seen);
        tokio::spawn(async move {
            loop {
                let Ok((mut socket, _)) = listener.accept().await else { return };
                let handler = Arc::clone(&handler);
                let log = Arc::clone(&log);
                tokio::spawn(async move {
                    let mut head = Vec::new();
                    let mut byte = [0u8; 1];
                    while !head.ends_with(b"\r\n\r\n") && head.len() < 16 * 1024 {
                        if socket.read(&mut byte).await.unwrap_or(0) == 0 {
                            return;
                        }
                        head.push(byte[0]);
                    }
                    let head = String::from_utf8_lossy(&head).into_owned();
                    let path = head.split_whitespace().nth(1).unwrap_or_default().to_owned();
                    let authorization = head.lines().find_map(|line| {
                        let (name, value) = line.split_once(':')?;
                        name.eq_ignore_ascii_case("authorization").then(|| value.trim().to_owned())
                    });
                    let request = Seen { path, authorization };
                    let index = {
                        let mut log = log.lock().unwrap();
                        log.push(request.clone());
                        log.len() - 1
                    };
                    let (status, headers, body) = handler(index, &request);
                    let mut response = format!("HTTP/1.1 {status} X\r\nconnection: close\r\n");
                    if !headers.iter().any(|(name, _)| name == "content-length") {
                        response.push_str(&format!("content-length: {}\r\n", body.len()));
                    }
                    for (name, value) in headers.into_iter().filter(|(_, value)| value != "none") {
                        response.push_str(&format!("{name}: {value}\r\n"));
                    }
                    response.push_str("\r\n");
                    let _ = socket.write_all(response.as_bytes()).await;
                    let _ = socket.write_all(&body).await;
                    let _ = socket.shutdown().await;
                });
            }
        });
        Server { base, seen }
    }

    fn seen(&self) -> Vec<Seen> {
        self.seen.lock().unwrap().clone()
    }
}

/// Bytes no text file could hold (NULs, invalid UTF-8).
fn image(len: usize, seed: u8) -> Vec<u8> {
    (0..len).map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed) ^ (i >> 8) as u8).collect()
}

fn blob_of(bytes: &[u8]) -> BlobRef {
    BlobRef { sha256: sha256_hex(bytes), size: SafeU64::try_from(bytes.len() as u64).unwrap() }
}

fn update(path: &str, blob: &BlobRef) -> Change {
    Change::Update(UpdatedFile {
        file_path: path.into(),
        file_type: "binary".into(),
        content: String::new(),
        content_hash: blob.sha256.clone(),
        version: 1,
        blob: Some(blob.clone()),
    })
}

struct Fixture {
    _tmp: tempfile::TempDir,
    tree: ProjectTree,
    fetcher: BlobFetcher,
}

fn fixture(server: &Server) -> Fixture {
    let tmp = tempfile::TempDir::new().unwrap();
    let project = tmp.path().join("project");
    let tree = ProjectTree::open(&project, TreeOptions::default()).unwrap();
    let hub = HubClient::new(server.base.parse().unwrap(), "p".into(), Token("t".into())).unwrap();
    let mut fetcher = BlobFetcher::new(hub, &project);
    fetcher.first_retry = Duration::from_millis(5);
    Fixture { _tmp: tmp, tree, fetcher }
}

fn cached_files(fixture: &Fixture) -> Vec<String> {
    let Ok(entries) = std::fs::read_dir(fixture.tree.root_path().join(BLOB_DIR)) else { return Vec::new() };
    entries.flatten().map(|e| e.file_name().to_string_lossy().into_owned()).collect()
}

#[tokio::test]
async fn a_fetched_blob_is_written_byte_identical_with_the_token() {
    let bytes = image(300_000, 7);
    let served = bytes.clone();
    let server = Server::start(move |_, _| (200, vec![], served.clone())).await;
    let mut f = fixture(&server);
    let blob = blob_of(&bytes);

    f.fetcher.ensure(&blob).await.unwrap();
    assert_eq!(cached_files(&f), vec![blob.sha256.clone()]);
    let report = f.tree.apply(&update("public/logo.png", &blob)).unwrap();
    assert_eq!(report.written, vec!["public/logo.png".to_owned()]);
    assert_eq!(std::fs::read(f.tree.root_path().join("public/logo.png")).unwrap(), bytes);
    f.fetcher.clear();
    assert!(cached_files(&f).is_empty());

    let seen = server.seen();
    assert_eq!(seen.len(), 1);
    assert_eq!(seen[0].path, format!("/v1/projects/p/blobs/{}", blob.sha256));
    assert_eq!(seen[0].authorization.as_deref(), Some("Bearer t"));
    // Once there, the same bytes need no fetch and are not rewritten.
    assert!(f.tree.has_content("public/logo.png", blob.size.get(), &blob.sha256));
    assert_eq!(f.tree.apply(&update("public/logo.png", &blob)).unwrap().unchanged, 1);
}

#[tokio::test]
async fn wrong_bytes_are_retried_then_refused_and_never_written() {
    let bytes = image(4096, 1);
    let mut wrong = bytes.clone();
    wrong[100] ^= 0xff;
    let server = Server::start(move |_, _| (200, vec![], wrong.clone())).await;
    let mut f = fixture(&server);
    f.tree.write_file("img/a.bin", b"the old bytes").unwrap();
    let blob = blob_of(&bytes);

    let error = f.fetcher.ensure(&blob).await.unwrap_err();
    assert!(matches!(error, BlobError::Mismatch { .. }), "{error}");
    assert_eq!(server.seen().len(), ATTEMPTS as usize, "a mismatch is retried");
    assert!(cached_files(&f).is_empty(), "nothing unverified stays: {:?}", cached_files(&f));
    // Applying without the verified bytes is refused and leaves the old file alone.
    let error = f.tree.apply(&update("img/a.bin", &blob)).unwrap_err();
    assert!(matches!(error, TreeError::BlobMissing { .. }) && !error.is_refusal(), "{error}");
    assert_eq!(std::fs::read(f.tree.root_path().join("img/a.bin")).unwrap(), b"the old bytes");
}

#[tokio::test]
async fn more_bytes_than_announced_are_refused() {
    let bytes = image(1000, 2);
    let mut longer = bytes.clone();
    longer.extend_from_slice(&[0; 64]);
    // Once with a length header, once without one (read until the connection closes).
    let server = Server::start(move |i, _| {
        let headers = if i % 2 == 1 { vec![("content-length".to_owned(), "none".to_owned())] } else { vec![] };
        (200, headers, longer.clone())
    })
    .await;
    let f = fixture(&server);
    let error = f.fetcher.ensure(&blob_of(&bytes)).await.unwrap_err();
    assert!(matches!(error, BlobError::Mismatch { .. }), "{error}");
    assert!(server.seen().len() >= 2, "both kinds were tried");
    assert!(cached_files(&f).is_empty());
}

#[tokio::test]
async fn a_cache_file_tampered_with_after_the_fetch_is_not_written() {
    let bytes = image(5000, 3);
    let served = bytes.clone();
    let server = Server::start(move |_, _| (200, vec![], served.clone())).await;
    let mut f = fixture(&server);
    let blob = blob_of(&bytes);
    f.fetcher.ensure(&blob).await.unwrap();
    std::fs::write(f.tree.root_path().join(BLOB_DIR).join(&blob.sha256), image(5000, 4)).unwrap();

    let error = f.tree.apply(&update("a.bin", &blob)).unwrap_err();
    assert!(matches!(error, TreeError::BlobMissing { .. }), "{error}");
    assert!(!f.tree.root_path().join("a.bin").exists());
    assert!(cached_files(&f).is_empty(), "the bad cache file is dropped, so the next try fetches again");
}

#[tokio::test]
async fn transient_failures_are_retried_with_backoff() {
    let bytes = image(2048, 5);
    let served = bytes.clone();
    let server = Server::start(move |i, _| match i {
        0 => (503, vec![], b"{}".to_vec()),
        1 => (429, vec![("retry-after".into(), "0".into())], b"{}".to_vec()),
        _ => (200, vec![], served.clone()),
    })
    .await;
    let f = fixture(&server);
    f.fetcher.ensure(&blob_of(&bytes)).await.unwrap();
    assert_eq!(server.seen().len(), 3);
}

#[tokio::test]
async fn a_redirect_to_storage_is_followed_without_the_token() {
    let bytes = image(70_000, 6);
    let served = bytes.clone();
    let server = Server::start(move |_, seen| {
        if seen.path.starts_with("/v1/") {
            let to = seen.path.replace("/v1/projects/p/blobs/", "/storage/") + "?X-Amz-Signature=abc";
            (302, vec![("location".into(), to)], Vec::new())
        } else {
            (200, vec![], served.clone())
        }
    })
    .await;
    let mut f = fixture(&server);
    let blob = blob_of(&bytes);
    f.fetcher.ensure(&blob).await.unwrap();
    f.tree.apply(&update("font.woff2", &blob)).unwrap();
    assert_eq!(std::fs::read(f.tree.root_path().join("font.woff2")).unwrap(), bytes);
    let seen = server.seen();
    assert_eq!(seen.len(), 2);
    assert_eq!(seen[1].path, format!("/storage/{}?X-Amz-Signature=abc", blob.sha256));
    assert_eq!(seen[1].authorization, None, "storage never sees the container token");
}

#[tokio::test]
async fn a_missing_blob_is_not_retried() {
    let server =
        Server::start(|_, _| (404, vec![], br#"{"error":{"code":"not_found","message":"no"}}"#.to_vec())).await;
    let f = fixture(&server);
    let error = f.fetcher.ensure(&blob_of(b"gone")).await.unwrap_err();
    assert!(!error.is_transient(), "{error}");
    assert_eq!(server.seen().len(), 1);

    let unauthorized = Server::start(|_, _| (401, vec![], b"{}".to_vec())).await;
    let error = fixture(&unauthorized).fetcher.ensure(&blob_of(b"x")).await.unwrap_err();
    assert!(error.is_unauthorized() && !error.is_transient(), "{error}");
}

#[tokio::test]
async fn a_malformed_or_oversized_address_is_never_requested() {
    let server = Server::start(|_, _| (200, vec![], Vec::new())).await;
    let mut f = fixture(&server);
    let traversal = BlobRef { sha256: "../../../etc/passwd".into(), size: SafeU64::from(1u32) };
    let upper = BlobRef { sha256: "A".repeat(64), size: SafeU64::from(1u32) };
    let huge = BlobRef { sha256: "a".repeat(64), size: SafeU64::try_from(MAX_BLOB_BYTES + 1).unwrap() };
    for blob in [&traversal, &upper, &huge] {
        assert!(matches!(f.fetcher.ensure(blob).await, Err(BlobError::Refused { .. })));
    }
    assert!(server.seen().is_empty());
    // The tree refuses such an address as it refuses a bad path: that path only.
    let report = f.tree.apply(&update("x.bin", &traversal)).unwrap();
    assert!(matches!(report.refused.as_slice(), [TreeError::InvalidBlob { .. }]));
}

#[test]
fn needed_is_each_paths_last_binary_content_once() {
    let a = blob_of(b"a");
    let b = blob_of(b"b");
    let text = Change::Update(UpdatedFile {
        file_path: "t.txt".into(),
        file_type: String::new(),
        content: "x".into(),
        content_hash: sha256_hex(b"x"),
        version: 1,
        blob: None,
    });
    let changes = vec![
        update("one.png", &a),
        update("two.png", &a),
        update("gone.png", &b),
        Change::Delete(DeletedFile { file_path: "gone.png".into(), version: 2 }),
        text,
        Change::Bulk(BulkApplyPayload {
            files: vec![match update("three.png", &b) {
                Change::Update(file) => file,
                _ => unreachable!(),
            }],
            deletes: vec![],
            timestamp: String::new(),
            actor: String::new(),
            op_id: None,
        }),
    ];
    let wanted: Vec<_> = needed(&changes).into_iter().map(|(_, blob)| blob.sha256.clone()).collect();
    let mut expected = vec![a.sha256.clone(), b.sha256.clone()];
    expected.sort();
    let mut got = wanted.clone();
    got.sort();
    assert_eq!(got, expected);
}
