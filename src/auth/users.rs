//! User tokens from the identity provider: HS256 with a shared secret, or asymmetric
//! (RS256/ES256/EdDSA) keys from a JWKS URL. Accepted algorithms come from configuration,
//! never from the token header; `exp` is required, `nbf` honoured; a configured issuer or
//! audience makes its claim required (`aud` may be a string or an array holding it).

use std::sync::Arc;
use std::time::{Duration, Instant};

use jsonwebtoken::jwk::{AlgorithmParameters, JwkSet};
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};
use tokio::sync::{Mutex, RwLock};

use super::tokens::map_jwt_error;
use crate::error::ApiError;

/// Clock skew tolerated on `exp` and `nbf` of identity-provider tokens.
const LEEWAY_SECS: u64 = 30;

/// A key set is refetched at most this often when a token names an unknown `kid`.
const JWKS_MIN_REFRESH: Duration = Duration::from_secs(10);
/// A key set older than this is refetched.
const JWKS_MAX_AGE: Duration = Duration::from_secs(600);

#[derive(Debug, Serialize, Deserialize)]
pub struct UserClaims {
    pub sub: String,
    pub exp: i64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub iat: Option<i64>,
    /// A single string (RFC 7519): an array here does not deserialize, so it is refused.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub iss: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub aud: Option<Audience>,
}

/// `aud` is one string or an array of them (RFC 7519 section 4.1.3); identity providers
/// issue both. Whether it names our audience is checked by the JWT validation.
#[derive(Debug, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Audience {
    One(String),
    Many(Vec<String>),
}

#[derive(Clone)]
pub struct UserVerifier {
    secret: Option<(EncodingKey, DecodingKey)>,
    jwks: Option<Arc<JwksCache>>,
    algorithms: Vec<Algorithm>,
    issuer: Option<String>,
    audience: Option<String>,
}

struct JwksCache {
    url: String,
    http: reqwest::Client,
    keys: RwLock<Option<(JwkSet, Instant)>>,
    refresh: Mutex<()>,
}

impl UserVerifier {
    pub fn new(
        secret: Option<&str>,
        jwks_url: Option<&str>,
        algorithms: &[String],
        issuer: Option<String>,
        audience: Option<String>,
    ) -> anyhow::Result<Self> {
        let mut pinned = Vec::new();
        for name in algorithms {
            let alg = match name.trim() {
                "RS256" => Algorithm::RS256,
                "ES256" => Algorithm::ES256,
                "EdDSA" => Algorithm::EdDSA,
                "" => continue,
                other => {
                    anyhow::bail!("unsupported JWKS algorithm {other:?} (use RS256, ES256, EdDSA)")
                }
            };
            pinned.push(alg);
        }
        let jwks = match jwks_url {
            Some(url) => Some(Arc::new(JwksCache {
                url: url.to_string(),
                http: reqwest::Client::builder().timeout(Duration::from_secs(10)).build()?,
                keys: RwLock::new(None),
                refresh: Mutex::new(()),
            })),
            None => None,
        };
        Ok(UserVerifier {
            secret: secret.map(|s| (EncodingKey::from_secret(s.as_bytes()), DecodingKey::from_secret(s.as_bytes()))),
            jwks,
            algorithms: pinned,
            issuer,
            audience,
        })
    }

    fn validation(&self, algorithm: Algorithm) -> Validation {
        // A configured issuer or audience must be present, not only right when present.
        let mut required = vec!["exp", "sub"];
        required.extend(self.issuer.as_ref().map(|_| "iss"));
        required.extend(self.audience.as_ref().map(|_| "aud"));
        let mut validation = super::validation(algorithm, LEEWAY_SECS, &required);
        match &self.issuer {
            Some(issuer) => validation.set_issuer(&[issuer]),
            None => validation.iss = None,
        }
        match &self.audience {
            Some(audience) => validation.set_audience(&[audience]),
            None => validation.validate_aud = false,
        }
        validation
    }

    /// Returns the user id (`sub`) and expiry (`exp`) of a valid token.
    pub async fn verify(&self, token: &str) -> Result<(String, i64), ApiError> {
        let header =
            jsonwebtoken::decode_header(token).map_err(|_| ApiError::Unauthenticated("malformed token".into()))?;
        let claims = if header.alg == Algorithm::HS256 {
            let (_, key) =
                self.secret.as_ref().ok_or_else(|| ApiError::Unauthenticated("token algorithm not allowed".into()))?;
            jsonwebtoken::decode::<UserClaims>(token, key, &self.validation(Algorithm::HS256)).map_err(map_jwt_error)?
        } else {
            let jwks =
                self.jwks.as_ref().ok_or_else(|| ApiError::Unauthenticated("token algorithm not allowed".into()))?;
            let kid = header.kid.as_deref().ok_or_else(|| ApiError::Unauthenticated("token has no kid".into()))?;
            let (key, algorithm) = jwks.key(kid, &self.algorithms).await?;
            // The key decides the algorithm; the header must agree with it.
            if header.alg != algorithm {
                return Err(ApiError::Unauthenticated("token algorithm not allowed".into()));
            }
            jsonwebtoken::decode::<UserClaims>(token, &key, &self.validation(algorithm)).map_err(map_jwt_error)?
        }
        .claims;
        if claims.sub.is_empty() || claims.sub.len() > 256 {
            return Err(ApiError::Unauthenticated("invalid sub".into()));
        }
        Ok((claims.sub, claims.exp))
    }

    /// Mints a user token with the HS256 secret (`synchub token user`, tests, dev).
    pub fn mint(&self, sub: &str, ttl_secs: i64) -> anyhow::Result<String> {
        let (key, _) = self.secret.as_ref().ok_or_else(|| anyhow::anyhow!("no SYNCHUB_JWT_SECRET configured"))?;
        let now = chrono::Utc::now().timestamp();
        let claims = UserClaims {
            sub: sub.to_string(),
            exp: now + ttl_secs,
            iat: Some(now),
            iss: self.issuer.clone(),
            aud: self.audience.clone().map(Audience::One),
        };
        Ok(jsonwebtoken::encode(&Header::new(Algorithm::HS256), &claims, key)?)
    }
}

impl JwksCache {
    async fn key(&self, kid: &str, pinned: &[Algorithm]) -> Result<(DecodingKey, Algorithm), ApiError> {
        if let Some(found) = self.lookup(kid, pinned, false).await {
            return found;
        }
        // Unknown kid (or stale set): refetch, at most once per JWKS_MIN_REFRESH.
        let _guard = self.refresh.lock().await;
        let fresh_enough = matches!(&*self.keys.read().await, Some((_, at)) if at.elapsed() < JWKS_MIN_REFRESH);
        if !fresh_enough {
            match self.fetch().await {
                Ok(set) => *self.keys.write().await = Some((set, Instant::now())),
                Err(err) => tracing::warn!(error = %err, "fetching the JWKS failed"),
            }
        }
        self.lookup(kid, pinned, true)
            .await
            .unwrap_or_else(|| Err(ApiError::Unauthenticated("unknown signing key".into())))
    }

    async fn lookup(
        &self,
        kid: &str,
        pinned: &[Algorithm],
        allow_stale: bool,
    ) -> Option<Result<(DecodingKey, Algorithm), ApiError>> {
        let keys = self.keys.read().await;
        let (set, fetched) = keys.as_ref()?;
        if !allow_stale && fetched.elapsed() > JWKS_MAX_AGE {
            return None;
        }
        let jwk = set.find(kid)?;
        let algorithm = match &jwk.algorithm {
            AlgorithmParameters::RSA(_) => Algorithm::RS256,
            AlgorithmParameters::EllipticCurve(_) => Algorithm::ES256,
            AlgorithmParameters::OctetKeyPair(_) => Algorithm::EdDSA,
            _ => {
                return Some(Err(ApiError::Unauthenticated("unsupported JWKS key type".into())));
            }
        };
        if !pinned.contains(&algorithm) {
            return Some(Err(ApiError::Unauthenticated("token algorithm not allowed".into())));
        }
        Some(
            DecodingKey::from_jwk(jwk)
                .map(|key| (key, algorithm))
                .map_err(|_| ApiError::Unauthenticated("unusable signing key".into())),
        )
    }

    async fn fetch(&self) -> anyhow::Result<JwkSet> {
        let response = self.http.get(&self.url).send().await?.error_for_status()?;
        Ok(response.json::<JwkSet>().await?)
    }
}
