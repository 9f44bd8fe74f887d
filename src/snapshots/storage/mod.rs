//! Where snapshot archives live: an S3-compatible bucket, or the local disk (served by
//! the hub itself through HMAC-signed, expiring URLs).
//!
//! Uploads stream from the archive on disk; large ones go up as a multipart upload that
//! is aborted when any part fails. Local objects are written atomically (temp file, then
//! rename) and only keys of the shape `project-snapshots/<uuid>/<uuid>.zip` are ever
//! written or served, so nothing outside the storage root can be reached.
//!
//! `s3` holds the bucket client, `local` the disk store and the routes serving its URLs.
//!
//! Binary files' bytes live here too (CONTRACT section 13): verified blobs under
//! `blobs/<sha256>`, written only by the hub after it hashed them; clients upload large
//! ones through a signed PUT URL to `blob-uploads/<project>/<sha256>`. To check one, the
//! hub first moves it server-side (local rename, S3 CopyObject) to a key no signed URL
//! reaches (`blob-verifying/…`), hashes it there, and moves it on to `blobs/<sha256>`
//! when hash and size check out ([`Storage::verify_upload`]): the bytes pass through the
//! hub once, and a client re-uploading meanwhile cannot swap the bytes that were hashed.

mod local;
mod s3;

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use anyhow::Context;
use chrono::{DateTime, Utc};

use crate::config::Config;

pub use local::{LocalStore, is_sha256, serve_object, upload_object, valid_object_key};
pub use s3::{MULTIPART_THRESHOLD, PART_SIZE, S3Settings, S3Store};

/// A time-limited GET URL.
#[derive(Debug, Clone)]
pub struct PresignedUrl {
    pub url: String,
    pub expires_at: DateTime<Utc>,
}

pub enum Storage {
    S3(S3Store),
    Local(LocalStore),
}

impl Storage {
    /// S3 when a bucket is configured, local disk when a storage dir is, else None
    /// (snapshot routes then answer 503).
    pub async fn from_config(config: &Config, public_url: &str) -> anyhow::Result<Option<Storage>> {
        if let Some(bucket) = &config.s3_bucket {
            let set = |value: &Option<String>| value.clone().filter(|value| !value.is_empty());
            let settings = S3Settings {
                endpoint: config.s3_endpoint.clone().filter(|endpoint| !endpoint.is_empty()),
                public_endpoint: config.s3_public_endpoint.clone().filter(|endpoint| !endpoint.is_empty()),
                bucket: bucket.clone(),
                region: config.s3_region.clone(),
                path_style: config.s3_path_style,
                access_key_id: set(&config.s3_access_key_id)
                    .context("AWS_ACCESS_KEY_ID is required with an S3 bucket")?,
                secret_access_key: set(&config.s3_secret_access_key)
                    .context("AWS_SECRET_ACCESS_KEY is required with an S3 bucket")?,
                session_token: set(&config.s3_session_token),
            };
            return Ok(Some(Storage::S3(S3Store::new(settings)?)));
        }
        if let Some(dir) = &config.storage_dir {
            let signing_key = config
                .signing_key
                .as_deref()
                .filter(|key| !key.is_empty())
                .context("SYNCHUB_SIGNING_KEY is required for local snapshot storage (it signs the object URLs)")?;
            let store = LocalStore::new(dir, public_url, signing_key).await?;
            return Ok(Some(Storage::Local(store.with_max_upload(config.limits.max_blob_bytes))));
        }
        Ok(None)
    }

    /// Uploads the file at `file` under `key`; returns its size in bytes.
    pub async fn put(&self, key: &str, file: &Path) -> anyhow::Result<u64> {
        match self {
            Storage::S3(store) => store.put(key, file).await,
            Storage::Local(store) => store.put(key, file).await,
        }
    }

    pub async fn exists(&self, key: &str) -> anyhow::Result<bool> {
        match self {
            Storage::S3(store) => store.exists(key).await,
            Storage::Local(store) => store.exists(key).await,
        }
    }

    pub async fn presign_get(&self, key: &str, ttl: Duration) -> anyhow::Result<PresignedUrl> {
        self.presign_get_at(key, SystemTime::now(), ttl).await
    }

    /// A GET URL valid from `start` for `ttl` (a start in the past gives an expired URL).
    pub async fn presign_get_at(&self, key: &str, start: SystemTime, ttl: Duration) -> anyhow::Result<PresignedUrl> {
        match self {
            Storage::S3(store) => store.presign_get_at(key, start, ttl).await,
            Storage::Local(store) => store.presign_get_at(key, start, ttl),
        }
    }

    /// A PUT URL for `key` valid for `ttl` (blob uploads).
    pub async fn presign_put(&self, key: &str, ttl: Duration) -> anyhow::Result<PresignedUrl> {
        match self {
            Storage::S3(store) => store.presign_put(key, SystemTime::now(), ttl).await,
            Storage::Local(store) => store.presign_put(key, SystemTime::now(), ttl),
        }
    }

    /// Copies the object at `key` into `dest` while hashing it. Stops past `max` bytes, so
    /// memory and disk stay bounded whatever was uploaded.
    pub async fn download_hashing(&self, key: &str, dest: &mut tokio::fs::File, max: u64) -> anyhow::Result<Fetched> {
        match self {
            Storage::S3(store) => store.download_hashing(key, Some(dest), max).await,
            Storage::Local(store) => store.download_hashing(key, Some(dest), max).await,
        }
    }

    /// Checks the blob upload at `upload` against `sha256` and `size` and returns what it
    /// holds (at most `size` bytes are read). When it matches, the bytes are now at
    /// [`blob_key`]`(sha256)`; the upload is gone either way (a failure of storage itself
    /// may leave it for a retry). The bytes are hashed at a key only the hub writes, so
    /// what is hashed is what is kept; a store without server-side copy gets the upload
    /// downloaded to a temp file and that file uploaded instead.
    pub async fn verify_upload(&self, upload: &str, sha256: &str, size: u64) -> anyhow::Result<Fetched> {
        let blob = blob_key(sha256);
        let matches = |found: &Fetched| matches!(found, Fetched::Bytes { size: got, sha256: hash } if *got == size && hash == sha256);
        match self {
            Storage::Local(store) => store.verify_upload(upload, &blob, size, matches).await,
            Storage::S3(store) => {
                let found = match store.verify_upload(upload, &blob, size, matches).await? {
                    Some(found) => found,
                    None => self.verify_by_download(upload, &blob, size, matches).await?,
                };
                // Done with it whatever it held; a failure only leaves garbage for the sweep.
                if found != Fetched::Missing
                    && let Err(err) = self.delete(upload).await
                {
                    tracing::warn!(key = upload, error = %format!("{err:#}"), "deleting a blob upload failed");
                }
                Ok(found)
            }
        }
    }

    /// The path for stores without server-side copy: the upload is downloaded to a temp
    /// file while hashed, and that file (what was hashed) is uploaded to `blob`.
    async fn verify_by_download(
        &self,
        upload: &str,
        blob: &str,
        size: u64,
        matches: impl Fn(&Fetched) -> bool,
    ) -> anyhow::Result<Fetched> {
        let temp = tempfile::NamedTempFile::new()?;
        let mut dest = tokio::fs::File::create(temp.path()).await?;
        let found = self.download_hashing(upload, &mut dest, size).await?;
        drop(dest);
        if matches(&found) {
            self.put(blob, temp.path()).await?;
        }
        Ok(found)
    }

    /// Deletes the object at `key` (no error when it is not there).
    pub async fn delete(&self, key: &str) -> anyhow::Result<()> {
        match self {
            Storage::S3(store) => store.delete(key).await,
            Storage::Local(store) => store.delete(key).await,
        }
    }

    /// Deletes blob uploads (`blob-uploads/…`) older than `grace`: uploads no write ever
    /// referenced (and what a verification cut short by a crash left behind). Returns how
    /// many.
    pub async fn sweep_uploads(&self, grace: Duration) -> anyhow::Result<usize> {
        let cutoff = SystemTime::now() - grace;
        match self {
            Storage::S3(store) => {
                Ok(store.sweep(UPLOAD_PREFIX, cutoff).await? + store.sweep(VERIFYING_PREFIX, cutoff).await?)
            }
            Storage::Local(store) => store.sweep_uploads(cutoff).await,
        }
    }

    /// Readiness: the bucket or directory is reachable.
    pub async fn check(&self) -> anyhow::Result<()> {
        match self {
            Storage::S3(store) => store.check().await,
            Storage::Local(store) => store.check().await,
        }
    }
}

/// Where a verified blob lives.
pub fn blob_key(sha256: &str) -> String {
    format!("{BLOB_PREFIX}/{sha256}")
}

/// Where a client uploads a blob of `project` before the hub verifies it.
pub fn upload_key(project: uuid::Uuid, sha256: &str) -> String {
    format!("{UPLOAD_PREFIX}/{project}/{sha256}")
}

const BLOB_PREFIX: &str = "blobs";
const UPLOAD_PREFIX: &str = "blob-uploads";
/// Where an upload is moved to be hashed: no signed URL reaches it (local storage serves
/// and accepts only the keys `valid_object_key` allows, and the hub signs S3 URLs only
/// for snapshots, blobs and uploads).
const VERIFYING_PREFIX: &str = "blob-verifying";

/// A fresh key under [`VERIFYING_PREFIX`].
fn verifying_key() -> String {
    format!("{VERIFYING_PREFIX}/{}", uuid::Uuid::new_v4())
}

/// What [`Storage::download_hashing`] found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Fetched {
    Missing,
    /// More bytes than the caller's maximum (the copy stopped there).
    TooLarge,
    Bytes {
        size: u64,
        sha256: String,
    },
}

/// Adds `chunk` to `hasher` and `dest` (when there is one); None (nothing written) past
/// `max` bytes in all, else the new total.
async fn hash_chunk(
    hasher: &mut sha2::Sha256,
    dest: Option<&mut tokio::fs::File>,
    total: u64,
    chunk: &[u8],
    max: u64,
) -> anyhow::Result<Option<u64>> {
    use sha2::Digest;
    use tokio::io::AsyncWriteExt;
    let total = total + chunk.len() as u64;
    if total > max {
        return Ok(None);
    }
    hasher.update(chunk);
    if let Some(dest) = dest {
        dest.write_all(chunk).await?;
    }
    Ok(Some(total))
}

/// Shared by handlers that take only the storage.
pub type SharedStorage = Option<Arc<Storage>>;

fn content_type(key: &str) -> &'static str {
    if key.ends_with(".zip") { "application/zip" } else { "application/octet-stream" }
}
