//! Where snapshot archives live: an S3-compatible bucket, or the local disk (served by
//! the hub itself through HMAC-signed, expiring URLs).
//!
//! Uploads stream from the archive on disk; large ones go up as a multipart upload that
//! is aborted when any part fails. Local objects are written atomically (temp file, then
//! rename) and only keys of the shape `project-snapshots/<uuid>/<uuid>.zip` are ever
//! written or served, so nothing outside the storage root can be reached.
//!
//! `s3` holds the bucket client, `local` the disk store and the route serving its URLs.

mod local;
mod s3;

use std::path::Path;
use std::time::{Duration, SystemTime};

use anyhow::Context;
use chrono::{DateTime, Utc};

use crate::config::Config;

pub use local::{LocalStore, serve_object, valid_object_key};
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
            let env = |name: &str| std::env::var(name).ok().filter(|value| !value.is_empty());
            let settings = S3Settings {
                endpoint: config.s3_endpoint.clone().filter(|endpoint| !endpoint.is_empty()),
                public_endpoint: config.s3_public_endpoint.clone().filter(|endpoint| !endpoint.is_empty()),
                bucket: bucket.clone(),
                region: config.s3_region.clone(),
                path_style: config.s3_path_style,
                access_key_id: env("AWS_ACCESS_KEY_ID").context("AWS_ACCESS_KEY_ID is required with an S3 bucket")?,
                secret_access_key: env("AWS_SECRET_ACCESS_KEY")
                    .context("AWS_SECRET_ACCESS_KEY is required with an S3 bucket")?,
                session_token: env("AWS_SESSION_TOKEN"),
            };
            return Ok(Some(Storage::S3(S3Store::new(settings)?)));
        }
        if let Some(dir) = &config.storage_dir {
            let signing_key = config
                .signing_key
                .as_deref()
                .filter(|key| !key.is_empty())
                .context("SYNCHUB_SIGNING_KEY is required for local snapshot storage (it signs the object URLs)")?;
            return Ok(Some(Storage::Local(LocalStore::new(dir, public_url, signing_key).await?)));
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

    /// Readiness: the bucket or directory is reachable.
    pub async fn check(&self) -> anyhow::Result<()> {
        match self {
            Storage::S3(store) => store.check().await,
            Storage::Local(store) => store.check().await,
        }
    }
}

fn content_type(key: &str) -> &'static str {
    if key.ends_with(".zip") { "application/zip" } else { "application/octet-stream" }
}
