//! Snapshot archives and blobs on the local disk, served by the hub itself through
//! HMAC-signed, expiring URLs (`GET /v1/objects/{*key}`; blob uploads `PUT` to the same
//! route). Only snapshot, blob and blob-upload keys are written or served.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{Context, anyhow};
use axum::body::{Body, Bytes};
use axum::extract::rejection::{PathRejection, QueryRejection};
use axum::extract::{Path as UrlPath, Query, State};
use axum::http::header;
use axum::response::{IntoResponse, Response};
use chrono::{DateTime, Utc};
use hmac::{Hmac, Mac};
use sha2::Sha256;
use tokio::io::AsyncReadExt;
use uuid::Uuid;

use super::{BLOB_PREFIX, Fetched, PresignedUrl, Storage, UPLOAD_PREFIX, content_type};
use crate::error::ApiError;

/// Read size when serving a local object.
const SERVE_CHUNK: usize = 64 * 1024;
/// What the local URL signing key is derived for (never the hub's token key itself).
const LOCAL_KEY_CONTEXT: &[u8] = b"synchub local objects";
/// The only prefix local storage holds.
const SNAPSHOT_PREFIX: &str = "project-snapshots";
/// Where uploads are hashed ([`LocalStore::verify_upload`]); no key reaches it.
const VERIFYING_DIR: &str = ".verifying";

type HmacSha256 = Hmac<Sha256>;

/// Objects under a directory, handed out as `{public_url}/v1/objects/{key}?expires=…&sig=…`.
pub struct LocalStore {
    root: PathBuf,
    /// `{public_url}/v1/objects/`
    url_base: String,
    /// HMAC(signing key, LOCAL_KEY_CONTEXT): a URL signature is never a token signature.
    url_key: [u8; 32],
    /// The largest body a signed upload URL accepts.
    max_upload: u64,
}

impl LocalStore {
    /// Creates the directory when missing.
    pub async fn new(root: &Path, public_url: &str, signing_key: &str) -> anyhow::Result<LocalStore> {
        tokio::fs::create_dir_all(root).await.with_context(|| format!("creating {}", root.display()))?;
        let root = tokio::fs::canonicalize(root).await.with_context(|| format!("resolving {}", root.display()))?;
        let mut mac = HmacSha256::new_from_slice(signing_key.as_bytes()).expect("HMAC takes any key length");
        mac.update(LOCAL_KEY_CONTEXT);
        Ok(LocalStore {
            root,
            url_base: format!("{}/v1/objects/", public_url.trim_end_matches('/')),
            url_key: mac.finalize().into_bytes().into(),
            max_upload: 50 * 1024 * 1024,
        })
    }

    /// The largest body a signed upload URL accepts (the blob size limit).
    pub fn with_max_upload(mut self, max_upload: u64) -> LocalStore {
        self.max_upload = max_upload;
        self
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Where `key` lives, when it is a key local storage may hold.
    fn path_of(&self, key: &str) -> Option<PathBuf> {
        valid_object_key(key).then(|| self.root.join(key))
    }

    fn path_or_err(&self, key: &str) -> anyhow::Result<PathBuf> {
        self.path_of(key).ok_or_else(|| anyhow!("local storage only holds snapshots and blobs, not {key:?}"))
    }

    pub(super) async fn put(&self, key: &str, file: &Path) -> anyhow::Result<u64> {
        let target = self.path_or_err(key)?;
        let source = file.to_path_buf();
        tokio::task::spawn_blocking(move || -> anyhow::Result<u64> {
            let dir = target.parent().context("object path without a parent")?;
            std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
            let mut input = std::fs::File::open(&source).with_context(|| format!("opening {}", source.display()))?;
            let mut temp = tempfile::Builder::new().prefix(".partial-").tempfile_in(dir)?;
            let bytes = std::io::copy(&mut input, temp.as_file_mut())?;
            temp.as_file().sync_all()?;
            temp.persist(&target).with_context(|| format!("renaming into {}", target.display()))?;
            Ok(bytes)
        })
        .await?
    }

    pub(super) async fn exists(&self, key: &str) -> anyhow::Result<bool> {
        let Some(path) = self.path_of(key) else { return Ok(false) };
        Ok(tokio::fs::try_exists(&path).await?)
    }

    pub(super) fn presign_get_at(&self, key: &str, start: SystemTime, ttl: Duration) -> anyhow::Result<PresignedUrl> {
        self.presign("GET", key, start, ttl)
    }

    /// A signed PUT URL; only blob-upload keys may be uploaded to.
    pub(super) fn presign_put(&self, key: &str, start: SystemTime, ttl: Duration) -> anyhow::Result<PresignedUrl> {
        if !is_upload_key(key) {
            return Err(anyhow!("only blob uploads may be PUT, not {key:?}"));
        }
        self.presign("PUT", key, start, ttl)
    }

    fn presign(&self, method: &str, key: &str, start: SystemTime, ttl: Duration) -> anyhow::Result<PresignedUrl> {
        self.path_or_err(key)?;
        let expires = (start + ttl).duration_since(UNIX_EPOCH)?.as_secs();
        let sig = hex::encode(self.mac(method, key, expires).finalize().into_bytes());
        let expires_at = DateTime::<Utc>::from_timestamp(i64::try_from(expires)?, 0).context("expiry out of range")?;
        Ok(PresignedUrl { url: format!("{}{key}?expires={expires}&sig={sig}", self.url_base), expires_at })
    }

    /// The signed message binds the method, the key and the expiry.
    fn mac(&self, method: &str, key: &str, expires: u64) -> HmacSha256 {
        let mut mac = HmacSha256::new_from_slice(&self.url_key).expect("HMAC takes any key length");
        mac.update(format!("{method}\n{key}\n{expires}").as_bytes());
        mac
    }

    /// A GET signature matches (compared in constant time) and `now` is not past `expires`.
    pub fn verify(&self, key: &str, expires: &str, sig: &str, now: SystemTime) -> bool {
        self.verify_method("GET", key, expires, sig, now)
    }

    fn verify_method(&self, method: &str, key: &str, expires: &str, sig: &str, now: SystemTime) -> bool {
        let (Ok(expires), Ok(sig)) = (expires.parse::<u64>(), hex::decode(sig)) else { return false };
        let now = now.duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(u64::MAX);
        self.mac(method, key, expires).verify_slice(&sig).is_ok() && now <= expires
    }

    pub(super) async fn download_hashing(
        &self,
        key: &str,
        dest: Option<&mut tokio::fs::File>,
        max: u64,
    ) -> anyhow::Result<Fetched> {
        hash_file(&self.path_or_err(key)?, dest, max).await
    }

    /// [`Storage::verify_upload`] on disk: the upload is renamed (atomically, so a client
    /// re-uploading meanwhile only writes a new upload) to a file under `.verifying/`, which
    /// no URL reaches, hashed there, and renamed to `blob` when `matches` what it holds: one
    /// read of the bytes, no copy. Otherwise it is deleted.
    pub(super) async fn verify_upload(
        &self,
        upload: &str,
        blob: &str,
        max: u64,
        matches: impl Fn(&Fetched) -> bool,
    ) -> anyhow::Result<Fetched> {
        let source = self.path_or_err(upload)?;
        let target = self.path_or_err(blob)?;
        let staging = self.root.join(VERIFYING_DIR);
        tokio::fs::create_dir_all(&staging).await.with_context(|| format!("creating {}", staging.display()))?;
        let staged = staging.join(Uuid::new_v4().to_string());
        match tokio::fs::rename(&source, &staged).await {
            Ok(()) => {}
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => return Ok(Fetched::Missing),
            Err(err) => return Err(err).with_context(|| format!("moving {} to verify it", source.display())),
        }
        let result = async {
            // The sweep deletes staged files by age: this one is being worked on now.
            let file = std::fs::File::options().write(true).open(&staged)?;
            file.set_modified(SystemTime::now())?;
            let found = hash_file(&staged, None, max).await?;
            if matches(&found) {
                let dir = target.parent().context("object path without a parent")?;
                tokio::fs::create_dir_all(dir).await.with_context(|| format!("creating {}", dir.display()))?;
                tokio::fs::rename(&staged, &target)
                    .await
                    .with_context(|| format!("renaming into {}", target.display()))?;
            }
            anyhow::Ok(found)
        }
        .await;
        if let Err(err) = tokio::fs::remove_file(&staged).await
            && err.kind() != std::io::ErrorKind::NotFound
        {
            tracing::warn!(path = %staged.display(), error = %err, "deleting a verified upload failed");
        }
        result
    }

    pub(super) async fn delete(&self, key: &str) -> anyhow::Result<()> {
        let path = self.path_or_err(key)?;
        match tokio::fs::remove_file(&path).await {
            Err(err) if err.kind() != std::io::ErrorKind::NotFound => {
                Err(err).with_context(|| format!("deleting {}", path.display()))
            }
            _ => Ok(()),
        }
    }

    pub(super) async fn sweep_uploads(&self, cutoff: SystemTime) -> anyhow::Result<usize> {
        let uploads = self.root.join(UPLOAD_PREFIX);
        let staging = self.root.join(VERIFYING_DIR);
        tokio::task::spawn_blocking(move || -> anyhow::Result<usize> {
            let mut dirs = vec![staging];
            if let Ok(projects) = std::fs::read_dir(&uploads) {
                for project in projects {
                    dirs.push(project?.path());
                }
            }
            let mut deleted = 0;
            for dir in dirs {
                let Ok(files) = std::fs::read_dir(&dir) else { continue };
                for file in files {
                    let file = file?;
                    if file.metadata()?.modified()? < cutoff {
                        std::fs::remove_file(file.path())?;
                        deleted += 1;
                    }
                }
            }
            Ok(deleted)
        })
        .await?
    }

    /// Writes a signed upload's body to `key` atomically; more than `max_upload` bytes is
    /// refused and nothing is written.
    async fn receive(&self, key: &str, body: Body) -> Result<(), ApiError> {
        use futures_util::TryStreamExt;
        use tokio::io::AsyncWriteExt;
        let target = self.path_of(key).ok_or_else(ApiError::not_found)?;
        let dir = target.parent().ok_or_else(|| ApiError::internal("object path without a parent"))?.to_path_buf();
        tokio::fs::create_dir_all(&dir).await.map_err(ApiError::internal)?;
        let temp = tempfile::Builder::new().prefix(".partial-").tempfile_in(&dir).map_err(ApiError::internal)?;
        let (file, temp_path) = temp.into_parts();
        let mut file = tokio::fs::File::from_std(file);
        let mut stream = body.into_data_stream();
        let mut total = 0u64;
        while let Some(chunk) = stream.try_next().await.map_err(|e| ApiError::InvalidRequest(format!("body: {e}")))? {
            total += chunk.len() as u64;
            if total > self.max_upload {
                return Err(ApiError::payload_too_large(format!("a blob is at most {} bytes", self.max_upload)));
            }
            file.write_all(&chunk).await.map_err(ApiError::internal)?;
        }
        file.sync_all().await.map_err(ApiError::internal)?;
        temp_path.persist(&target).map_err(ApiError::internal)?;
        Ok(())
    }

    pub(super) async fn check(&self) -> anyhow::Result<()> {
        let root = self.root.clone();
        tokio::task::spawn_blocking(move || -> anyhow::Result<()> {
            tempfile::Builder::new()
                .prefix(".readyz-")
                .tempfile_in(&root)
                .with_context(|| format!("{} is not writable", root.display()))?;
            Ok(())
        })
        .await?
    }
}

/// Hashes the file at `path` (copying it into `dest` when given), at most `max` bytes.
async fn hash_file(path: &Path, mut dest: Option<&mut tokio::fs::File>, max: u64) -> anyhow::Result<Fetched> {
    use sha2::Digest;
    use tokio::io::AsyncWriteExt;
    let mut file = match tokio::fs::File::open(path).await {
        Ok(file) => file,
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => return Ok(Fetched::Missing),
        Err(err) => return Err(err).with_context(|| format!("opening {}", path.display())),
    };
    let mut hasher = Sha256::new();
    let mut total = 0;
    let mut buffer = vec![0u8; SERVE_CHUNK];
    loop {
        let read = file.read(&mut buffer).await?;
        if read == 0 {
            break;
        }
        let Some(next) = super::hash_chunk(&mut hasher, dest.as_deref_mut(), total, &buffer[..read], max).await? else {
            return Ok(Fetched::TooLarge);
        };
        total = next;
    }
    if let Some(dest) = dest {
        dest.flush().await?;
    }
    Ok(Fetched::Bytes { size: total, sha256: hex::encode(hasher.finalize()) })
}

/// `project-snapshots/<uuid>/<uuid>.zip`, `blobs/<sha256>` or
/// `blob-uploads/<uuid>/<sha256>`, with UUIDs in canonical lowercase hyphenated form and
/// sha256 as 64 lowercase hex digits: nothing else is written or served, so no key can
/// reach outside the root.
pub fn valid_object_key(key: &str) -> bool {
    let mut segments = key.split('/');
    match (segments.next(), segments.next(), segments.next(), segments.next()) {
        (Some(SNAPSHOT_PREFIX), Some(project), Some(file), None) => {
            canonical_uuid(project) && file.strip_suffix(".zip").is_some_and(canonical_uuid)
        }
        (Some(BLOB_PREFIX), Some(sha256), None, None) => is_sha256(sha256),
        _ => is_upload_key(key),
    }
}

fn canonical_uuid(s: &str) -> bool {
    Uuid::try_parse(s).is_ok_and(|id| id.hyphenated().to_string() == s)
}

/// 64 lowercase hex digits.
pub fn is_sha256(s: &str) -> bool {
    s.len() == 64 && s.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

/// `blob-uploads/<uuid>/<sha256>`: the only keys a signed URL may PUT to.
fn is_upload_key(key: &str) -> bool {
    let mut segments = key.split('/');
    matches!(
        (segments.next(), segments.next(), segments.next(), segments.next()),
        (Some(UPLOAD_PREFIX), Some(project), Some(sha256), None) if canonical_uuid(project) && is_sha256(sha256)
    )
}

/// `PUT /v1/objects/{*key}?expires=…&sig=…`: a blob upload to local storage through a URL
/// `POST …/blobs` signed. 403 when local storage is off or the signature is wrong or
/// expired (a GET signature never allows a PUT); 413 past the blob size limit.
pub async fn upload_object(
    State(storage): State<Option<Arc<Storage>>>,
    key: Result<UrlPath<String>, PathRejection>,
    query: Result<Query<HashMap<String, String>>, QueryRejection>,
    body: Body,
) -> Result<Response, ApiError> {
    let Some(Storage::Local(store)) = storage.as_deref() else {
        return Err(ApiError::Forbidden("objects are not served by this hub".into()));
    };
    let forbidden = || ApiError::Forbidden("the upload URL is invalid or has expired".into());
    let (Ok(UrlPath(key)), Ok(Query(query))) = (key, query) else { return Err(forbidden()) };
    let (Some(expires), Some(sig)) = (query.get("expires"), query.get("sig")) else { return Err(forbidden()) };
    if !is_upload_key(&key) || !store.verify_method("PUT", &key, expires, sig, SystemTime::now()) {
        return Err(forbidden());
    }
    store.receive(&key, body).await?;
    Ok(axum::http::StatusCode::OK.into_response())
}

/// `GET /v1/objects/{*key}?expires=…&sig=…`: local-disk objects behind signed URLs.
/// 403 when local storage is off or the signature is wrong or expired; 404 when the key
/// is not a snapshot key or the file is gone.
pub async fn serve_object(
    State(storage): State<Option<Arc<Storage>>>,
    key: Result<UrlPath<String>, PathRejection>,
    query: Result<Query<HashMap<String, String>>, QueryRejection>,
) -> Result<Response, ApiError> {
    let Some(Storage::Local(store)) = storage.as_deref() else {
        return Err(ApiError::Forbidden("objects are not served by this hub".into()));
    };
    let forbidden = || ApiError::Forbidden("the object URL is invalid or has expired".into());
    let (Ok(UrlPath(key)), Ok(Query(query))) = (key, query) else { return Err(forbidden()) };
    let (Some(expires), Some(sig)) = (query.get("expires"), query.get("sig")) else { return Err(forbidden()) };
    if !store.verify(&key, expires, sig, SystemTime::now()) {
        return Err(forbidden());
    }
    let path = store.path_of(&key).ok_or_else(ApiError::not_found)?;
    let file = match tokio::fs::File::open(&path).await {
        Ok(file) => file,
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => return Err(ApiError::not_found()),
        Err(err) => return Err(ApiError::internal(format!("opening {}: {err}", path.display()))),
    };
    let len = file.metadata().await.map_err(ApiError::internal)?.len();
    let chunks = futures_util::stream::try_unfold(file, |mut file| async move {
        let mut buffer = Vec::with_capacity(SERVE_CHUNK);
        let read = (&mut file).take(SERVE_CHUNK as u64).read_to_end(&mut buffer).await?;
        Ok::<_, std::io::Error>((read > 0).then(|| (Bytes::from(buffer), file)))
    });
    Ok((
        [(header::CONTENT_TYPE, content_type(&key).to_string()), (header::CONTENT_LENGTH, len.to_string())],
        Body::from_stream(chunks),
    )
        .into_response())
}

#[cfg(test)]
mod tests {
    use super::*;

    const PROJECT: &str = "0b5e7a4e-3f59-4c8e-9d52-8a1f7c2b6d10";
    const SNAPSHOT: &str = "6f0d2c1a-9b8e-4d7f-a3c2-1e5b4a6d8c90";

    fn key() -> String {
        format!("{SNAPSHOT_PREFIX}/{PROJECT}/{SNAPSHOT}.zip")
    }

    #[test]
    fn only_snapshot_keys_are_valid() {
        assert!(valid_object_key(&key()));
        for bad in [
            "",
            "../x",
            "/etc/passwd",
            "project-snapshots",
            "project-snapshots/../../etc/passwd",
            &format!("project-snapshots/{PROJECT}/../{SNAPSHOT}.zip"),
            &format!("project-snapshots/{PROJECT}/{SNAPSHOT}.zip/x"),
            &format!("project-snapshots/{PROJECT}/{SNAPSHOT}"),
            &format!("project-snapshots/{PROJECT}/{SNAPSHOT}.ZIP"),
            &format!("project-snapshots/{PROJECT}//{SNAPSHOT}.zip"),
            &format!("/project-snapshots/{PROJECT}/{SNAPSHOT}.zip"),
            &format!("other/{PROJECT}/{SNAPSHOT}.zip"),
            &format!("project-snapshots/{}/{SNAPSHOT}.zip", PROJECT.to_uppercase()),
            &format!("project-snapshots/{}/{SNAPSHOT}.zip", PROJECT.replace('-', "")),
            &format!("project-snapshots/urn:uuid:{PROJECT}/{SNAPSHOT}.zip"),
        ] {
            assert!(!valid_object_key(bad), "{bad:?} must be refused");
        }
    }

    async fn store(dir: &Path, signing_key: &str) -> LocalStore {
        LocalStore::new(dir, "http://hub.example/", signing_key).await.unwrap()
    }

    fn query(url: &str) -> (String, String) {
        let query = url.split_once('?').unwrap().1;
        let params: HashMap<&str, &str> = query.split('&').filter_map(|p| p.split_once('=')).collect();
        (params["expires"].to_string(), params["sig"].to_string())
    }

    #[tokio::test]
    async fn local_urls_bind_key_expiry_and_signing_key() {
        let dir = tempfile::tempdir().unwrap();
        let store = store(dir.path(), "k1").await;
        let now = SystemTime::now();
        let url = store.presign_get_at(&key(), now, Duration::from_secs(60)).unwrap();
        assert!(url.url.starts_with(&format!("http://hub.example/v1/objects/{}?expires=", key())), "{}", url.url);
        let (expires, sig) = query(&url.url);
        assert_eq!(url.expires_at.timestamp().to_string(), expires);
        assert!(store.verify(&key(), &expires, &sig, now));
        assert!(store.verify(&key(), &expires, &sig, now + Duration::from_secs(60)));
        assert!(!store.verify(&key(), &expires, &sig, now + Duration::from_secs(62)), "expired");
        let later = (expires.parse::<u64>().unwrap() + 3600).to_string();
        assert!(!store.verify(&key(), &later, &sig, now), "expiry moved");
        let other = format!("{SNAPSHOT_PREFIX}/{PROJECT}/{PROJECT}.zip");
        assert!(!store.verify(&other, &expires, &sig, now), "other key");
        let mut flipped = sig.clone().into_bytes();
        flipped[0] = if flipped[0] == b'0' { b'1' } else { b'0' };
        assert!(!store.verify(&key(), &expires, &String::from_utf8(flipped).unwrap(), now), "tampered sig");
        assert!(!store.verify(&key(), &expires, &sig[..32], now), "truncated sig");
        assert!(!store.verify(&key(), &expires, "zz", now), "not hex");
        assert!(!store.verify(&key(), "-1", &sig, now), "not a number");
        let other_hub = self::store(dir.path(), "k2").await;
        assert!(!other_hub.verify(&key(), &expires, &sig, now), "another signing key");
        assert!(store.presign_get_at("../x", now, Duration::from_secs(60)).is_err());
    }

    #[tokio::test]
    async fn local_put_is_atomic_and_refuses_other_keys() {
        let dir = tempfile::tempdir().unwrap();
        let store = store(&dir.path().join("objects"), "k").await;
        let source = dir.path().join("source.zip");
        std::fs::write(&source, b"zip bytes").unwrap();
        assert!(!store.exists(&key()).await.unwrap());
        assert_eq!(store.put(&key(), &source).await.unwrap(), 9);
        assert!(store.exists(&key()).await.unwrap());
        assert_eq!(std::fs::read(store.root().join(key())).unwrap(), b"zip bytes");
        let leftovers: Vec<_> = std::fs::read_dir(store.root().join(SNAPSHOT_PREFIX).join(PROJECT))
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(leftovers.len(), 1, "no temp files left: {leftovers:?}");
        assert!(store.put("../escape.zip", &source).await.is_err());
        assert!(!dir.path().join("escape.zip").exists());
        assert!(!store.exists("../source.zip").await.unwrap());
        store.check().await.unwrap();
    }
}
