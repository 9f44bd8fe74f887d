//! Snapshot archives in an S3-compatible bucket: streamed uploads (multipart above a
//! threshold, aborted when any part fails) and presigned GET URLs.

use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, SystemTime};

use anyhow::{Context, anyhow, bail};
use aws_sdk_s3::config::http::HttpResponse;
use aws_sdk_s3::config::{
    BehaviorVersion, Credentials, Region, RequestChecksumCalculation, ResponseChecksumValidation,
};
use aws_sdk_s3::error::{DisplayErrorContext, ProvideErrorMetadata, SdkError};
use aws_sdk_s3::operation::copy_object::CopyObjectError;
use aws_sdk_s3::presigning::PresigningConfig;
use aws_sdk_s3::primitives::{ByteStream, Length};
use aws_sdk_s3::types::{CompletedMultipartUpload, CompletedPart, MetadataDirective};
use chrono::{DateTime, Utc};
use futures_util::{StreamExt, TryStreamExt};

use super::{Fetched, PresignedUrl, content_type};

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
    /// Whether CopyObject works (cleared at the first 501: uploads are then verified by
    /// downloading them).
    server_side_copy: AtomicBool,
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
            server_side_copy: AtomicBool::new(true),
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

    pub(super) async fn put(&self, key: &str, file: &Path) -> anyhow::Result<u64> {
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

    pub(super) async fn exists(&self, key: &str) -> anyhow::Result<bool> {
        match self.client.head_object().bucket(&self.bucket).key(key).send().await {
            Ok(_) => Ok(true),
            Err(err) => {
                let not_found = err.as_service_error().is_some_and(|e| e.is_not_found())
                    || err.raw_response().is_some_and(|r| r.status().as_u16() == 404);
                if not_found { Ok(false) } else { Err(sdk_error(err)).with_context(|| format!("looking up {key}")) }
            }
        }
    }

    pub(super) async fn presign_get_at(
        &self,
        key: &str,
        start: SystemTime,
        ttl: Duration,
    ) -> anyhow::Result<PresignedUrl> {
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

    pub(super) async fn presign_put(
        &self,
        key: &str,
        start: SystemTime,
        ttl: Duration,
    ) -> anyhow::Result<PresignedUrl> {
        let config = PresigningConfig::builder().start_time(start).expires_in(ttl).build()?;
        let request = self
            .presigner
            .put_object()
            .bucket(&self.bucket)
            .key(key)
            .presigned(config)
            .await
            .map_err(sdk_error)
            .with_context(|| format!("presigning the upload of {key}"))?;
        Ok(PresignedUrl { url: request.uri().to_string(), expires_at: DateTime::<Utc>::from(start + ttl) })
    }

    pub(super) async fn download_hashing(
        &self,
        key: &str,
        mut dest: Option<&mut tokio::fs::File>,
        max: u64,
    ) -> anyhow::Result<Fetched> {
        use sha2::Digest;
        let object = match self.client.get_object().bucket(&self.bucket).key(key).send().await {
            Ok(object) => object,
            Err(err) if is_not_found(&err) => return Ok(Fetched::Missing),
            Err(err) => return Err(sdk_error(err)).with_context(|| format!("reading {key}")),
        };
        if object.content_length().is_some_and(|len| len < 0 || len as u64 > max) {
            return Ok(Fetched::TooLarge);
        }
        let mut body = object.body;
        let mut hasher = sha2::Sha256::new();
        let mut total = 0;
        while let Some(chunk) = body.try_next().await.with_context(|| format!("reading {key}"))? {
            let Some(next) = super::hash_chunk(&mut hasher, dest.as_deref_mut(), total, &chunk, max).await? else {
                return Ok(Fetched::TooLarge);
            };
            total = next;
        }
        if let Some(dest) = dest {
            use tokio::io::AsyncWriteExt;
            dest.flush().await?;
        }
        Ok(Fetched::Bytes { size: total, sha256: hex::encode(hasher.finalize()) })
    }

    /// [`super::Storage::verify_upload`] with server-side copies: the upload is copied to a
    /// fresh key under `blob-verifying/` (no signed URL reaches it, so a client uploading
    /// again meanwhile cannot change what is hashed), hashed there as it streams through
    /// (no temp file), and copied on to `blob` when `matches` what it holds; the staged copy
    /// is deleted either way. The upload itself is left to the caller. None when the store
    /// has no CopyObject (remembered: the caller falls back to downloading).
    pub(super) async fn verify_upload(
        &self,
        upload: &str,
        blob: &str,
        max: u64,
        matches: impl Fn(&Fetched) -> bool,
    ) -> anyhow::Result<Option<Fetched>> {
        if !self.server_side_copy.load(Ordering::Relaxed) {
            return Ok(None);
        }
        let staged = super::verifying_key();
        match self.copy(upload, &staged).await {
            Ok(()) => {}
            Err(err) if is_not_found(&err) => return Ok(Some(Fetched::Missing)),
            Err(err) if is_not_implemented(&err) => {
                tracing::warn!(error = %DisplayErrorContext(&err), "the S3 store has no CopyObject: blob uploads are verified by downloading them");
                self.server_side_copy.store(false, Ordering::Relaxed);
                return Ok(None);
            }
            Err(err) => return Err(sdk_error(err)).with_context(|| format!("copying {upload} to verify it")),
        }
        let result = async {
            let found = self.download_hashing(&staged, None, max).await?;
            if matches(&found) {
                self.copy(&staged, blob).await.map_err(sdk_error).with_context(|| format!("copying into {blob}"))?;
            }
            anyhow::Ok(found)
        }
        .await;
        if let Err(err) = self.delete(&staged).await {
            tracing::warn!(key = staged, error = %format!("{err:#}"), "deleting a verified upload failed");
        }
        result.map(Some)
    }

    /// Server-side copy of `from` to `to` in the bucket (the object's type is set to that
    /// of `to`, as if the hub had uploaded it).
    async fn copy(&self, from: &str, to: &str) -> Result<(), SdkError<CopyObjectError, HttpResponse>> {
        self.client
            .copy_object()
            .bucket(&self.bucket)
            .key(to)
            .copy_source(format!("{}/{from}", self.bucket))
            .metadata_directive(MetadataDirective::Replace)
            .content_type(content_type(to))
            .send()
            .await
            .map(|_| ())
    }

    /// Whether uploads are verified with server-side copies (false once the store answered
    /// that it has no CopyObject).
    pub fn copies_server_side(&self) -> bool {
        self.server_side_copy.load(Ordering::Relaxed)
    }

    /// Makes [`Self::verify_upload`] answer None, as for a store without CopyObject (tests
    /// of the fallback).
    pub fn without_server_side_copy(self) -> S3Store {
        self.server_side_copy.store(false, Ordering::Relaxed);
        self
    }

    /// Deletes the objects under `prefix` last modified before `cutoff`.
    pub(super) async fn sweep(&self, prefix: &str, cutoff: SystemTime) -> anyhow::Result<usize> {
        let mut deleted = 0;
        let mut pages =
            self.client.list_objects_v2().bucket(&self.bucket).prefix(format!("{prefix}/")).into_paginator().send();
        while let Some(page) = pages.next().await {
            let page = page.map_err(sdk_error).with_context(|| format!("listing {prefix}/"))?;
            for object in page.contents() {
                let old =
                    object.last_modified().and_then(|at| SystemTime::try_from(*at).ok()).is_some_and(|at| at < cutoff);
                if let (true, Some(key)) = (old, object.key()) {
                    self.delete(key).await?;
                    deleted += 1;
                }
            }
        }
        Ok(deleted)
    }

    pub(super) async fn delete(&self, key: &str) -> anyhow::Result<()> {
        self.client
            .delete_object()
            .bucket(&self.bucket)
            .key(key)
            .send()
            .await
            .map_err(sdk_error)
            .with_context(|| format!("deleting {key}"))?;
        Ok(())
    }

    pub(super) async fn check(&self) -> anyhow::Result<()> {
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

/// A 404 (NoSuchKey, or no body to tell).
fn is_not_found<E: ProvideErrorMetadata>(err: &SdkError<E, HttpResponse>) -> bool {
    err.as_service_error().is_some_and(|e| e.code() == Some("NoSuchKey"))
        || err.raw_response().is_some_and(|r| r.status().as_u16() == 404)
}

/// The store does not implement the operation (501, or S3's NotImplemented code).
fn is_not_implemented<E: ProvideErrorMetadata>(err: &SdkError<E, HttpResponse>) -> bool {
    err.as_service_error().is_some_and(|e| e.code() == Some("NotImplemented"))
        || err.raw_response().is_some_and(|r| r.status().as_u16() == 501)
}

/// The SDK's own Display is terse ("service error"); this keeps the causes.
fn sdk_error<E, R>(err: SdkError<E, R>) -> anyhow::Error
where
    E: std::error::Error + Send + Sync + 'static,
    R: std::fmt::Debug + Send + Sync + 'static,
{
    anyhow!("{}", DisplayErrorContext(&err))
}
