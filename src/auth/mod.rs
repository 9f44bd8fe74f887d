//! Who is calling: user tokens from the identity provider (`users`), and the hub's own
//! service and container tokens (`tokens`); what each caller may do is decided by
//! [`policy`], and handlers receive the decision as a [`policy::Actor`].

pub mod policy;
pub mod tokens;
pub mod users;

use axum::extract::FromRequestParts;
use axum::http::HeaderMap;
use axum::http::header::AUTHORIZATION;
use axum::http::request::Parts;
use base64::Engine;
use deadpool_postgres::Pool;
use jsonwebtoken::{Algorithm, Validation};
use serde::Deserialize;
use uuid::Uuid;

use crate::error::ApiError;
use policy::Actor;

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
}

/// Verifies any bearer token: hub tokens (issuer `synchub`) with the hub's key, anything
/// else as a user token; container tokens also against their session in the database.
#[derive(Clone)]
pub struct Authenticator {
    pub users: users::UserVerifier,
    pub hub: tokens::HubKeys,
    /// Where container tokens' sessions are looked up (revoked, ended).
    pub sessions: Pool,
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
    /// Verifies a bearer token; container tokens must also belong to a live session
    /// (not revoked, within its max lifetime). Returns the principal and the token's exp.
    pub async fn authenticate(&self, token: &str) -> Result<(Principal, i64), ApiError> {
        let (principal, exp) = self.verify_with_expiry(token).await?;
        if let Principal::Container { session_id, project_id } = &principal {
            let client = self.sessions.get().await?;
            // Prepared once per connection: every container request and socket asks.
            let statement = client.prepare_cached("SELECT synchub.session_active($1, $2)").await?;
            let active: bool = client
                .query_one(&statement, &[project_id, session_id])
                .await?
                .try_get(0)
                .map_err(ApiError::internal)?;
            if !active {
                return Err(ApiError::Unauthenticated("the session was revoked or has ended".into()));
            }
        }
        Ok((principal, exp))
    }

    /// The caller of an HTTP request, from its `Authorization: Bearer` header.
    pub async fn caller(&self, headers: &HeaderMap) -> Result<Principal, ApiError> {
        let token = bearer_header(headers).ok_or_else(|| ApiError::Unauthenticated("missing bearer token".into()))?;
        self.authenticate(token).await.map(|(principal, _)| principal)
    }

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

/// The decision the route's guard made (see `api_doc`): a handler that takes it runs only
/// after the policy admitted its caller.
impl<S: Send + Sync> FromRequestParts<S> for Actor {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        parts.extensions.remove::<Actor>().ok_or_else(|| ApiError::internal("this route declares no access need"))
    }
}
