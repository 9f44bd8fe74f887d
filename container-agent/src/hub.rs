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
            .http
            .get(url)
            .timeout(Duration::from_secs(600))
            .send()
            .await
            .map_err(|source| HubError::Http { what, source })?;
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
