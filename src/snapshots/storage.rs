//! Where snapshot archives live: an S3-compatible bucket, or the local disk (served by
//! the hub itself through HMAC-signed, expiring URLs).

use std::path::Path;
use std::time::Duration;

use axum::response::{IntoResponse, Response};
use chrono::{DateTime, Utc};

use crate::config::Config;
use crate::error::ApiError;

/// A time-limited GET URL.
#[derive(Debug, Clone)]
pub struct PresignedUrl {
    pub url: String,
    pub expires_at: DateTime<Utc>,
}

pub enum Storage {}

impl Storage {
    /// S3 when a bucket is configured, local disk when a storage dir is, else None
    /// (snapshot routes then answer 503).
    pub async fn from_config(_config: &Config, _public_url: &str) -> anyhow::Result<Option<Storage>> {
        Ok(None)
    }

    /// Uploads the file at `file` under `key`; returns its size in bytes.
    pub async fn put(&self, _key: &str, _file: &Path) -> anyhow::Result<u64> {
        match *self {}
    }

    pub async fn exists(&self, _key: &str) -> anyhow::Result<bool> {
        match *self {}
    }

    pub async fn presign_get(&self, _key: &str, _ttl: Duration) -> anyhow::Result<PresignedUrl> {
        match *self {}
    }

    /// Readiness: the bucket or directory is reachable.
    pub async fn check(&self) -> anyhow::Result<()> {
        match *self {}
    }
}

/// `GET /v1/objects/{*key}?expires=…&sig=…`: local-disk objects behind signed URLs.
pub async fn serve_object() -> Response {
    ApiError::NotFound("no local object storage".into()).into_response()
}
