//! The hub's HTTP side as the agent uses it: the latest snapshot, token refresh, and a
//! streamed download of a signed snapshot URL. The current container token is shared
//! (the socket task and the refresher both read it); it never appears in logs.

use std::io::{Seek, Write};
use std::sync::{Arc, RwLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine;
use reqwest::{StatusCode, Url};
use serde::Deserialize;

use crate::protocol::Token;
use synchub_protocol::FileResponse;

/// A snapshot download larger than this is refused (the reader caps inflated bytes at
/// 256 MiB; a deflated archive is smaller than that).
pub const MAX_DOWNLOAD_BYTES: u64 = 320 * 1024 * 1024;
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);
/// One blob read (at most 50 MiB), headers and body.
const BLOB_TIMEOUT: Duration = Duration::from_secs(120);
const MAX_REDIRECTS: usize = 5;

#[derive(Debug, thiserror::Error)]
pub enum HubError {
    /// The token was refused (401): revoked, or past the session's max lifetime.
    #[error("the hub refused the container token")]
    Unauthorized,
    #[error("the hub answered {status} for {what}")]
    Status { what: &'static str, status: StatusCode },
    #[error("{what}: {source}")]
    Http {
        what: &'static str,
        #[source]
        source: reqwest::Error,
    },
    #[error("snapshot download is larger than {MAX_DOWNLOAD_BYTES} bytes")]
    TooLarge,
    #[error("{what}: not a usable URL")]
    BadUrl { what: &'static str },
    #[error("writing the download: {0}")]
    Io(#[from] std::io::Error),
}

/// `GET /v1/projects/{id}/snapshots/latest` (the fields the agent needs).
#[derive(Debug, Clone, Deserialize)]
pub struct SnapshotInfo {
    pub url: String,
    pub cursor: i64,
}

#[derive(Deserialize)]
struct Refreshed {
    token: Token,
}

/// The hub's base URL, the project, and the current token.
#[derive(Clone)]
pub struct HubClient {
    http: reqwest::Client,
    base: Url,
    project_id: String,
    token: Arc<RwLock<Token>>,
}

impl HubClient {
    pub fn new(base: Url, project_id: String, token: Token) -> Result<Self, HubError> {
        // One TLS stack (rustls with ring) for HTTP and the socket; idempotent.
        let _ = rustls::crypto::ring::default_provider().install_default();
        let http = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(10))
            // Redirects are followed by hand (`storage_get`), so the bearer token only ever
            // goes to the hub, never to the storage a blob read redirects to.
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .map_err(|source| HubError::Http { what: "building the HTTP client", source })?;
        Ok(Self { http, base, project_id, token: Arc::new(RwLock::new(token)) })
    }

    pub fn project_id(&self) -> &str {
        &self.project_id
    }

    pub fn token(&self) -> Token {
        self.token.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// `ws(s)://host/v1/realtime` from the hub's `http(s)` URL.
    pub fn realtime_url(&self) -> String {
        let mut url = self.endpoint("v1/realtime");
        let scheme = if url.scheme() == "https" { "wss" } else { "ws" };
        // Only http and https base URLs are accepted at start-up, so this cannot fail.
        let _ = url.set_scheme(scheme);
        url.to_string()
    }

    /// The hub's `host:port`, for the cheap TCP probe made while backing off.
    pub fn probe_target(&self) -> Option<(String, u16)> {
        Some((self.base.host_str()?.to_owned(), self.base.port_or_known_default()?))
    }

    fn endpoint(&self, path: &str) -> Url {
        let mut url = self.base.clone();
        let joined = format!("{}/{path}", url.path().trim_end_matches('/'));
        url.set_path(&joined);
        url
    }

    /// The latest snapshot with a fresh signed URL (built by the hub if the log no longer
    /// reaches back to the previous one).
    pub async fn latest_snapshot(&self) -> Result<SnapshotInfo, HubError> {
        let what = "snapshots/latest";
        let url = self.endpoint(&format!("v1/projects/{}/snapshots/latest", self.project_id));
        let response = self
            .http
            .get(url)
            .bearer_auth(&self.token().0)
            .timeout(Duration::from_secs(120))
            .send()
            .await
            .map_err(|source| HubError::Http { what, source })?;
        let response = checked(what, response)?;
        response.json().await.map_err(|source| HubError::Http { what, source })
    }

    /// `GET /v1/projects/{id}/files/{path}`: a file's current content, read when a delta
    /// event cannot be applied to the tree (CONTRACT section 12).
    pub async fn read_file(&self, path: &str) -> Result<FileResponse, HubError> {
        let what = "files/{path}";
        let mut url = self.endpoint(&format!("v1/projects/{}/files", self.project_id));
        url.path_segments_mut()
            .map_err(|()| HubError::Status { what, status: StatusCode::BAD_REQUEST })?
            .extend(path.split('/'));
        let response = self
            .http
            .get(url)
            .bearer_auth(&self.token().0)
            .timeout(REQUEST_TIMEOUT)
            .send()
            .await
            .map_err(|source| HubError::Http { what, source })?;
        checked(what, response)?.json().await.map_err(|source| HubError::Http { what, source })
    }

    /// `POST /v1/tokens/refresh`; the new token replaces the shared one, and is returned
    /// for the socket's `auth` frame.
    pub async fn refresh(&self) -> Result<Token, HubError> {
        let what = "tokens/refresh";
        let response = self
            .http
            .post(self.endpoint("v1/tokens/refresh"))
            .bearer_auth(&self.token().0)
            .timeout(REQUEST_TIMEOUT)
            .send()
            .await
            .map_err(|source| HubError::Http { what, source })?;
        let refreshed: Refreshed =
            checked(what, response)?.json().await.map_err(|source| HubError::Http { what, source })?;
        *self.token.write().unwrap_or_else(|p| p.into_inner()) = refreshed.token.clone();
        Ok(refreshed.token)
    }

    /// Streams a signed snapshot URL into `file` (no bearer token: the URL carries its
    /// own signature, and storage must never see the container token).
    pub async fn download(&self, url: &str, file: &mut std::fs::File) -> Result<u64, HubError> {
        let what = "snapshot download";
        let mut response = self
            .storage_get(what, url.parse().map_err(|_| HubError::BadUrl { what })?, Duration::from_secs(600))
            .await?;
        if !response.status().is_success() {
            return Err(HubError::Status { what, status: response.status() });
        }
        if response.content_length().is_some_and(|len| len > MAX_DOWNLOAD_BYTES) {
            return Err(HubError::TooLarge);
        }
        file.set_len(0)?;
        file.rewind()?;
        let mut written = 0u64;
        while let Some(chunk) = response.chunk().await.map_err(|source| HubError::Http { what, source })? {
            written += chunk.len() as u64;
            if written > MAX_DOWNLOAD_BYTES {
                return Err(HubError::TooLarge);
            }
            file.write_all(&chunk)?;
        }
        file.flush()?;
        file.rewind()?;
        Ok(written)
    }
}

impl HubClient {
    /// `GET /v1/projects/{id}/blobs/{sha256}` (CONTRACT section 13): the answer whose body is
    /// the bytes, from the hub itself or from the storage it redirects to. `sha256` must be
    /// well-formed (it is a URL segment).
    pub async fn blob(&self, sha256: &str) -> Result<reqwest::Response, HubError> {
        let what = "blob";
        let url = self.endpoint(&format!("v1/projects/{}/blobs/{sha256}", self.project_id));
        let response = self
            .http
            .get(url.clone())
            .bearer_auth(&self.token().0)
            .timeout(BLOB_TIMEOUT)
            .send()
            .await
            .map_err(|source| HubError::Http { what, source })?;
        match redirect_target(&url, &response) {
            Some(next) => checked(what, self.storage_get(what, next, BLOB_TIMEOUT).await?),
            None => checked(what, response),
        }
    }

    /// A GET without the bearer token (signed URLs carry their own signature), following
    /// at most [`MAX_REDIRECTS`] redirects.
    async fn storage_get(
        &self,
        what: &'static str,
        mut url: Url,
        timeout: Duration,
    ) -> Result<reqwest::Response, HubError> {
        for _ in 0..=MAX_REDIRECTS {
            let response = self
                .http
                .get(url.clone())
                .timeout(timeout)
                .send()
                .await
                .map_err(|source| HubError::Http { what, source })?;
            match redirect_target(&url, &response) {
                Some(next) => url = next,
                None => return Ok(response),
            }
        }
        Err(HubError::Status { what, status: StatusCode::LOOP_DETECTED })
    }
}

/// Where a redirect answer points (relative locations resolved against `url`).
fn redirect_target(url: &Url, response: &reqwest::Response) -> Option<Url> {
    if !response.status().is_redirection() {
        return None;
    }
    let location = response.headers().get(reqwest::header::LOCATION)?.to_str().ok()?;
    url.join(location).ok()
}

fn checked(what: &'static str, response: reqwest::Response) -> Result<reqwest::Response, HubError> {
    match response.status() {
        status if status.is_success() => Ok(response),
        StatusCode::UNAUTHORIZED => Err(HubError::Unauthorized),
        status => Err(HubError::Status { what, status }),
    }
}

/// The `exp` claim of a JWT, read without verifying it (the agent only schedules its
/// refresh with it; the hub does the verifying).
pub fn token_expiry(token: &Token) -> Option<u64> {
    let payload = token.0.split('.').nth(1)?;
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(payload.trim_end_matches('=')).ok()?;
    let claims: serde_json::Value = serde_json::from_slice(&bytes).ok()?;
    claims["exp"].as_u64()
}

/// When to refresh a token expiring at `exp`: after two thirds of its remaining life,
/// and at least 5 s before it expires.
pub fn refresh_delay(exp: Option<u64>) -> Duration {
    let Some(exp) = exp else {
        return Duration::from_secs(300);
    };
    let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default().as_secs();
    let left = exp.saturating_sub(now);
    Duration::from_secs((left * 2 / 3).min(left.saturating_sub(5)).max(1))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_exp_and_schedules_refresh() {
        let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs();
        let claims = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(format!(r#"{{"exp":{}}}"#, now + 900));
        let token = Token(format!("h.{claims}.s"));
        assert_eq!(token_expiry(&token), Some(now + 900));
        let delay = refresh_delay(token_expiry(&token));
        assert!((590..=600).contains(&delay.as_secs()), "{delay:?}");
        assert_eq!(refresh_delay(Some(now + 3)), Duration::from_secs(1));
        assert_eq!(token_expiry(&Token("garbage".into())), None);
    }

    #[test]
    fn realtime_url_follows_the_scheme() {
        let client =
            HubClient::new("https://hub.example/base/".parse().unwrap(), "p".into(), Token("t".into())).unwrap();
        assert_eq!(client.realtime_url(), "wss://hub.example/base/v1/realtime");
        let client = HubClient::new("http://127.0.0.1:8080".parse().unwrap(), "p".into(), Token("t".into())).unwrap();
        assert_eq!(client.realtime_url(), "ws://127.0.0.1:8080/v1/realtime");
    }
}
