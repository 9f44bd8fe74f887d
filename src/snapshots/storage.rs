//! Where snapshot archives live: an S3-compatible bucket, or the local disk (served by
//! the hub itself through HMAC-signed, expiring URLs).
//!
//! Uploads stream from the archive on disk; large ones go up as a multipart upload that
//! is aborted when any part fails. Local objects are written atomically (temp file, then
//! rename) and only keys of the shape `project-snapshots/<uuid>/<uuid>.zip` are ever
//! written or served, so nothing outside the storage root can be reached.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{Context, anyhow, bail};
use aws_sdk_s3::config::{
    BehaviorVersion, Credentials, Region, RequestChecksumCalculation, ResponseChecksumValidation,
};
use aws_sdk_s3::error::{DisplayErrorContext, SdkError};
use aws_sdk_s3::presigning::PresigningConfig;
use aws_sdk_s3::primitives::{ByteStream, Length};
use aws_sdk_s3::types::{CompletedMultipartUpload, CompletedPart};
use axum::body::{Body, Bytes};
use axum::extract::rejection::{PathRejection, QueryRejection};
use axum::extract::{Path as UrlPath, Query, State};
use axum::http::header;
use axum::response::{IntoResponse, Response};
use chrono::{DateTime, Utc};
use futures_util::{StreamExt, TryStreamExt};
use hmac::{Hmac, Mac};
use sha2::Sha256;
use tokio::io::AsyncReadExt;
use uuid::Uuid;

use crate::app::AppState;
use crate::config::Config;
use crate::error::ApiError;

/// Files larger than this go up as a multipart upload.
pub const MULTIPART_THRESHOLD: u64 = 16 * 1024 * 1024;
/// Size of each multipart part (the last one may be smaller).
pub const PART_SIZE: u64 = 16 * 1024 * 1024;
/// S3's minimum for every part but the last.
const MIN_PART_SIZE: u64 = 5 * 1024 * 1024;
/// S3's maximum number of parts in one upload.
const MAX_PARTS: u64 = 10_000;
/// Parts in flight at once (each streams from the file: memory stays small).
const PART_CONCURRENCY: usize = 4;
/// Read size when serving a local object.
const SERVE_CHUNK: usize = 64 * 1024;
/// What the local URL signing key is derived for (never the hub's token key itself).
const LOCAL_KEY_CONTEXT: &[u8] = b"synchub local objects";
/// The only prefix local storage holds.
const SNAPSHOT_PREFIX: &str = "project-snapshots";

type HmacSha256 = Hmac<Sha256>;

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

/// Everything an S3 client needs; `from_config` fills it from the configuration and the
/// `AWS_*` environment variables.
#[derive(Clone)]
pub struct S3Settings {
    /// None for AWS itself.
    pub endpoint: Option<String>,
    /// Where presigned URLs point, when clients reach the store elsewhere than the hub
    /// does; None: `endpoint`.
    pub public_endpoint: Option<String>,
    pub bucket: String,
    pub region: String,
    pub path_style: bool,
    pub access_key_id: String,
    pub secret_access_key: String,
    pub session_token: Option<String>,
}

pub struct S3Store {
    client: aws_sdk_s3::Client,
    /// Signs GET URLs for the public endpoint (the same client when there is none). The
    /// signature covers the Host, so the URL must be made for the host clients will use.
    presigner: aws_sdk_s3::Client,
    bucket: String,
    multipart_threshold: u64,
    part_size: u64,
}

impl S3Store {
    pub fn new(settings: S3Settings) -> anyhow::Result<S3Store> {
        use aws_smithy_http_client::tls::{self, rustls_provider::CryptoMode};
        // One HTTP stack (hyper 1 + rustls/ring); it speaks plain http too.
        let http =
            aws_smithy_http_client::Builder::new().tls_provider(tls::Provider::Rustls(CryptoMode::Ring)).build_https();
        let credentials = Credentials::new(
            settings.access_key_id,
            settings.secret_access_key,
            settings.session_token,
            None,
            "synchub-env",
        );
        let mut builder = aws_sdk_s3::Config::builder()
            .behavior_version(BehaviorVersion::latest())
            .region(Region::new(settings.region))
            .credentials_provider(credentials)
            .force_path_style(settings.path_style)
            .http_client(http)
            // Checksums only where S3 requires them: S3-compatible stores (MinIO, Garage,
            // R2) do not all accept the SDK's default trailing checksums.
            .request_checksum_calculation(RequestChecksumCalculation::WhenRequired)
            .response_checksum_validation(ResponseChecksumValidation::WhenRequired);
        if let Some(endpoint) = settings.endpoint {
            builder = builder.endpoint_url(endpoint);
        }
        if settings.bucket.is_empty() {
            bail!("the S3 bucket name is empty");
        }
        let config = builder.build();
        let presigner = match settings.public_endpoint {
            Some(public) => aws_sdk_s3::Client::from_conf(config.to_builder().endpoint_url(public).build()),
            None => aws_sdk_s3::Client::from_conf(config.clone()),
        };
        Ok(S3Store {
            client: aws_sdk_s3::Client::from_conf(config),
            presigner,
            bucket: settings.bucket,
            multipart_threshold: MULTIPART_THRESHOLD,
            part_size: PART_SIZE,
        })
    }

    /// Files larger than `threshold` go up in parts of `part_size` (at least 5 MiB, S3's
    /// minimum for every part but the last).
    pub fn with_multipart(mut self, threshold: u64, part_size: u64) -> S3Store {
        self.multipart_threshold = threshold;
        self.part_size = part_size;
        self
    }

    pub fn client(&self) -> &aws_sdk_s3::Client {
        &self.client
    }

    pub fn bucket(&self) -> &str {
        &self.bucket
    }

    async fn put(&self, key: &str, file: &Path) -> anyhow::Result<u64> {
        let len = tokio::fs::metadata(file).await.with_context(|| format!("reading {}", file.display()))?.len();
        if len <= self.multipart_threshold {
            let body = ByteStream::read_from().path(file).length(Length::Exact(len)).build().await?;
            self.client
                .put_object()
                .bucket(&self.bucket)
                .key(key)
                .content_type(content_type(key))
                .content_length(i64::try_from(len)?)
                .body(body)
                .send()
                .await
                .map_err(sdk_error)
                .with_context(|| format!("uploading {key}"))?;
            return Ok(len);
        }
        let created = self
            .client
            .create_multipart_upload()
            .bucket(&self.bucket)
            .key(key)
            .content_type(content_type(key))
            .send()
            .await
            .map_err(sdk_error)
            .with_context(|| format!("starting the multipart upload of {key}"))?;
        let upload_id = created.upload_id().context("the multipart upload has no id")?;
        match self.upload_parts(key, file, len, upload_id).await {
            Ok(()) => Ok(len),
            Err(err) => {
                if let Err(abort) =
                    self.client.abort_multipart_upload().bucket(&self.bucket).key(key).upload_id(upload_id).send().await
                {
                    tracing::warn!(key, error = %DisplayErrorContext(&abort), "aborting a failed multipart upload failed");
                }
                Err(err)
            }
        }
    }

    /// Uploads every part, then completes the upload.
    async fn upload_parts(&self, key: &str, file: &Path, len: u64, upload_id: &str) -> anyhow::Result<()> {
        let part_size = self.part_size.max(MIN_PART_SIZE).max(len.div_ceil(MAX_PARTS));
        let count = len.div_ceil(part_size);
        let parts: Vec<CompletedPart> = futures_util::stream::iter(0..count)
            .map(|index| {
                let offset = index * part_size;
                self.upload_part(key, file, upload_id, index + 1, offset, part_size.min(len - offset))
            })
            .buffered(PART_CONCURRENCY)
            .try_collect()
            .await?;
        self.client
            .complete_multipart_upload()
            .bucket(&self.bucket)
            .key(key)
            .upload_id(upload_id)
            .multipart_upload(CompletedMultipartUpload::builder().set_parts(Some(parts)).build())
            .send()
            .await
            .map_err(sdk_error)
            .with_context(|| format!("completing the multipart upload of {key}"))?;
        Ok(())
    }

    async fn upload_part(
        &self,
        key: &str,
        file: &Path,
        upload_id: &str,
        number: u64,
        offset: u64,
        len: u64,
    ) -> anyhow::Result<CompletedPart> {
        let number = i32::try_from(number)?;
        let body = ByteStream::read_from()
            .path(file)
            .offset(offset)
            .length(Length::Exact(len))
            .build()
            .await
            .with_context(|| format!("reading part {number} of {key}"))?;
        let uploaded = self
            .client
            .upload_part()
            .bucket(&self.bucket)
            .key(key)
            .upload_id(upload_id)
            .part_number(number)
            .content_length(i64::try_from(len)?)
            .body(body)
            .send()
            .await
            .map_err(sdk_error)
            .with_context(|| format!("uploading part {number} of {key}"))?;
        Ok(CompletedPart::builder().set_e_tag(uploaded.e_tag().map(str::to_string)).part_number(number).build())
    }

    async fn exists(&self, key: &str) -> anyhow::Result<bool> {
        match self.client.head_object().bucket(&self.bucket).key(key).send().await {
            Ok(_) => Ok(true),
            Err(err) => {
                let not_found = err.as_service_error().is_some_and(|e| e.is_not_found())
                    || err.raw_response().is_some_and(|r| r.status().as_u16() == 404);
                if not_found { Ok(false) } else { Err(sdk_error(err)).with_context(|| format!("looking up {key}")) }
            }
        }
    }

    async fn presign_get_at(&self, key: &str, start: SystemTime, ttl: Duration) -> anyhow::Result<PresignedUrl> {
        let config = PresigningConfig::builder().start_time(start).expires_in(ttl).build()?;
        let request = self
            .presigner
            .get_object()
            .bucket(&self.bucket)
            .key(key)
            .presigned(config)
            .await
            .map_err(sdk_error)
            .with_context(|| format!("presigning {key}"))?;
        Ok(PresignedUrl { url: request.uri().to_string(), expires_at: DateTime::<Utc>::from(start + ttl) })
    }

    async fn check(&self) -> anyhow::Result<()> {
        self.client
            .head_bucket()
            .bucket(&self.bucket)
            .send()
            .await
            .map_err(sdk_error)
            .with_context(|| format!("bucket {}", self.bucket))?;
        Ok(())
    }
}

/// The SDK's own Display is terse ("service error"); this keeps the causes.
fn sdk_error<E, R>(err: SdkError<E, R>) -> anyhow::Error
where
    E: std::error::Error + Send + Sync + 'static,
    R: std::fmt::Debug + Send + Sync + 'static,
{
    anyhow!("{}", DisplayErrorContext(&err))
}

fn content_type(key: &str) -> &'static str {
    if key.ends_with(".zip") { "application/zip" } else { "application/octet-stream" }
}

/// Objects under a directory, handed out as `{public_url}/v1/objects/{key}?expires=…&sig=…`.
pub struct LocalStore {
    root: PathBuf,
    /// `{public_url}/v1/objects/`
    url_base: String,
    /// HMAC(signing key, LOCAL_KEY_CONTEXT): a URL signature is never a token signature.
    url_key: [u8; 32],
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
        })
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Where `key` lives, when it is a key local storage may hold.
    fn path_of(&self, key: &str) -> Option<PathBuf> {
        valid_object_key(key).then(|| self.root.join(key))
    }

    fn path_or_err(&self, key: &str) -> anyhow::Result<PathBuf> {
        self.path_of(key)
            .ok_or_else(|| anyhow!("local storage only holds {SNAPSHOT_PREFIX}/<uuid>/<uuid>.zip, not {key:?}"))
    }

    async fn put(&self, key: &str, file: &Path) -> anyhow::Result<u64> {
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

    async fn exists(&self, key: &str) -> anyhow::Result<bool> {
        let Some(path) = self.path_of(key) else { return Ok(false) };
        Ok(tokio::fs::try_exists(&path).await?)
    }

    fn presign_get_at(&self, key: &str, start: SystemTime, ttl: Duration) -> anyhow::Result<PresignedUrl> {
        self.path_or_err(key)?;
        let expires = (start + ttl).duration_since(UNIX_EPOCH)?.as_secs();
        let sig = hex::encode(self.mac(key, expires).finalize().into_bytes());
        let expires_at = DateTime::<Utc>::from_timestamp(i64::try_from(expires)?, 0).context("expiry out of range")?;
        Ok(PresignedUrl { url: format!("{}{key}?expires={expires}&sig={sig}", self.url_base), expires_at })
    }

    /// The signed message binds the method, the key and the expiry.
    fn mac(&self, key: &str, expires: u64) -> HmacSha256 {
        let mut mac = HmacSha256::new_from_slice(&self.url_key).expect("HMAC takes any key length");
        mac.update(format!("GET\n{key}\n{expires}").as_bytes());
        mac
    }

    /// Signature matches (compared in constant time) and `now` is not past `expires`.
    pub fn verify(&self, key: &str, expires: &str, sig: &str, now: SystemTime) -> bool {
        let (Ok(expires), Ok(sig)) = (expires.parse::<u64>(), hex::decode(sig)) else { return false };
        let now = now.duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(u64::MAX);
        self.mac(key, expires).verify_slice(&sig).is_ok() && now <= expires
    }

    async fn check(&self) -> anyhow::Result<()> {
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

/// `project-snapshots/<uuid>/<uuid>.zip` with both UUIDs in canonical lowercase hyphenated
/// form: nothing else is written or served, so no key can reach outside the root.
pub fn valid_object_key(key: &str) -> bool {
    let canonical = |s: &str| Uuid::try_parse(s).is_ok_and(|id| id.hyphenated().to_string() == s);
    let mut segments = key.split('/');
    matches!(
        (segments.next(), segments.next(), segments.next(), segments.next()),
        (Some(SNAPSHOT_PREFIX), Some(project), Some(file), None)
            if canonical(project) && file.strip_suffix(".zip").is_some_and(canonical)
    )
}

/// `GET /v1/objects/{*key}?expires=…&sig=…`: local-disk objects behind signed URLs.
/// 403 when local storage is off or the signature is wrong or expired; 404 when the key
/// is not a snapshot key or the file is gone.
pub async fn serve_object(
    State(state): State<AppState>,
    key: Result<UrlPath<String>, PathRejection>,
    query: Result<Query<HashMap<String, String>>, QueryRejection>,
) -> Result<Response, ApiError> {
    let Some(Storage::Local(store)) = state.storage.as_deref() else {
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
