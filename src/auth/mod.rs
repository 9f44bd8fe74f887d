//! Who is calling: user tokens from the identity provider (`users`), and the hub's own
//! service and container tokens (`tokens`). Handlers take a [`Principal`] extractor.

pub mod tokens;
pub mod users;

use axum::extract::FromRequestParts;
use axum::http::header::AUTHORIZATION;
use axum::http::request::Parts;
use base64::Engine;
use jsonwebtoken::{Algorithm, Validation};
use serde::Deserialize;
use uuid::Uuid;

use crate::app::AppState;
use crate::error::ApiError;

/// An authenticated caller.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Principal {
    /// A person, identified by the identity provider's `sub`.
    User { sub: String },
    /// An orchestrator holding a service token.
    Service,
    /// A preview container: read-only, one project, one session.
    Container { session_id: Uuid, project_id: Uuid },
}

impl Principal {
    /// The actor recorded as author and whose role the database checks.
    pub fn actor(&self) -> String {
        match self {
            Principal::User { sub } => sub.clone(),
            Principal::Service => "service".to_string(),
            Principal::Container { session_id, .. } => format!("session:{session_id}"),
        }
    }

    /// Rate limits and quotas are per user; service and container callers have their own
    /// buckets.
    pub fn rate_key(&self) -> String {
        match self {
            Principal::User { sub } => format!("u:{sub}"),
            other => other.actor(),
        }
    }

    /// Routes only a user may call (creating and listing projects, writing files, editor
    /// state) refuse hub tokens with 403. Routes about one project check that project
    /// first, so a container token asking about another project gets 404 and learns
    /// nothing about it.
    pub fn user(&self) -> Result<&str, ApiError> {
        match self {
            Principal::User { sub } => Ok(sub),
            _ => Err(ApiError::Forbidden("this route needs a user token".into())),
        }
    }
}

/// Verifies any bearer token: hub tokens (issuer `synchub`) with the hub's key, anything
/// else as a user token.
#[derive(Clone)]
pub struct Authenticator {
    pub users: users::UserVerifier,
    pub hub: tokens::HubKeys,
}

/// Longer tokens are refused before any decoding: identity-provider tokens are a few KiB,
/// and no caller should make the hub parse megabytes of base64.
pub const MAX_TOKEN_BYTES: usize = 16 * 1024;

/// The contract's bound on the clock skew tolerated on `exp` and `nbf`.
const MAX_LEEWAY_SECS: u64 = 60;

/// The checks every token gets: the one pinned algorithm, `exp` required, `nbf` honoured,
/// `leeway` seconds of skew (at most 60). Callers add issuer, audience and further
/// required claims.
fn validation(algorithm: Algorithm, leeway: u64, required: &[&str]) -> Validation {
    let mut validation = Validation::new(algorithm);
    validation.leeway = leeway.min(MAX_LEEWAY_SECS);
    validation.validate_exp = true;
    validation.validate_nbf = true;
    validation.set_required_spec_claims(required);
    validation
}

#[derive(Deserialize)]
struct PeekClaims {
    iss: Option<String>,
}

impl Authenticator {
    pub async fn verify(&self, token: &str) -> Result<Principal, ApiError> {
        self.verify_with_expiry(token).await.map(|(principal, _)| principal)
    }

    /// The principal and the token's `exp` (unix seconds): sockets close when it passes.
    pub async fn verify_with_expiry(&self, token: &str) -> Result<(Principal, i64), ApiError> {
        if token.len() > MAX_TOKEN_BYTES {
            return Err(ApiError::Unauthenticated("token too long".into()));
        }
        // Which verifier to use is decided by the (unverified) issuer; each verifier then
        // checks the signature with its own pinned algorithm and key.
        let payload = token
            .split('.')
            .nth(1)
            .and_then(|part| base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(part).ok())
            .and_then(|bytes| serde_json::from_slice::<PeekClaims>(&bytes).ok())
            .ok_or_else(|| ApiError::Unauthenticated("malformed token".into()))?;
        if payload.iss.as_deref() == Some(tokens::ISSUER) {
            self.hub.verify(token)
        } else {
            self.users.verify(token).await.map(|(sub, exp)| (Principal::User { sub }, exp))
        }
    }
}

/// The bearer token of a request, if any. Tokens are never read from the query string.
pub fn bearer(parts: &Parts) -> Option<&str> {
    bearer_header(&parts.headers)
}

/// The token of an `Authorization: Bearer` header; None without the header. A header that
/// is there but is not one bearer token (another scheme, not UTF-8) gives an empty token,
/// which verification refuses: a credential the hub cannot read is refused, never ignored
/// (a socket upgrade must not quietly fall back to an unauthenticated socket).
pub fn bearer_header(headers: &axum::http::HeaderMap) -> Option<&str> {
    let value = headers.get(AUTHORIZATION)?;
    let token = value
        .to_str()
        .ok()
        .and_then(|value| value.split_once(' '))
        .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
        .map(|(_, token)| token.trim())
        .unwrap_or_default();
    Some(token)
}

impl FromRequestParts<AppState> for Principal {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, Self::Rejection> {
        let token = bearer(parts).ok_or_else(|| ApiError::Unauthenticated("missing bearer token".into()))?;
        let (principal, _) = state.authenticate(token).await?;
        crate::access::record_actor(&parts.extensions, &principal);
        Ok(principal)
    }
}
