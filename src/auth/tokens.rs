//! The hub's own tokens, signed with `SYNCHUB_SIGNING_KEY` (HS256): service tokens for
//! orchestrators and scoped, read-only container tokens for preview containers.

use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, errors::ErrorKind};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::Principal;
use crate::error::ApiError;

/// `iss` of every hub token.
pub const ISSUER: &str = "synchub";

/// Hub tokens are minted by hubs sharing a clock source: little skew to allow.
const LEEWAY_SECS: u64 = 5;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TokenKind {
    Service,
    Container,
}

#[derive(Debug, Serialize, Deserialize)]
pub struct HubClaims {
    pub iss: String,
    pub typ: TokenKind,
    pub sub: String,
    pub iat: i64,
    pub exp: i64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sid: Option<Uuid>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pid: Option<Uuid>,
}

/// Signs and verifies hub tokens.
#[derive(Clone)]
pub struct HubKeys {
    encoding: Option<EncodingKey>,
    decoding: Option<DecodingKey>,
}

impl HubKeys {
    pub fn new(secret: Option<&str>) -> Self {
        HubKeys {
            encoding: secret.map(|s| EncodingKey::from_secret(s.as_bytes())),
            decoding: secret.map(|s| DecodingKey::from_secret(s.as_bytes())),
        }
    }

    pub fn sign(&self, claims: &HubClaims) -> Result<String, ApiError> {
        let key =
            self.encoding.as_ref().ok_or_else(|| ApiError::Internal("SYNCHUB_SIGNING_KEY is not configured".into()))?;
        jsonwebtoken::encode(&Header::new(Algorithm::HS256), claims, key).map_err(ApiError::internal)
    }

    pub fn service_token(&self, ttl_secs: i64) -> Result<String, ApiError> {
        let now = chrono::Utc::now().timestamp();
        self.sign(&HubClaims {
            iss: ISSUER.into(),
            typ: TokenKind::Service,
            sub: "service".into(),
            iat: now,
            exp: now + ttl_secs,
            sid: None,
            pid: None,
        })
    }

    /// A read-only token for one session of one project, expiring after `ttl_secs` but
    /// never after `not_after` (the session's max lifetime). Returns it with its `exp`.
    pub fn container_token(
        &self,
        session: Uuid,
        project: Uuid,
        ttl_secs: i64,
        not_after: i64,
    ) -> Result<(String, i64), ApiError> {
        let now = chrono::Utc::now().timestamp();
        let exp = (now + ttl_secs).min(not_after);
        let token = self.sign(&HubClaims {
            iss: ISSUER.into(),
            typ: TokenKind::Container,
            sub: format!("session:{session}"),
            iat: now,
            exp,
            sid: Some(session),
            pid: Some(project),
        })?;
        Ok((token, exp))
    }

    pub fn verify(&self, token: &str) -> Result<(Principal, i64), ApiError> {
        let key =
            self.decoding.as_ref().ok_or_else(|| ApiError::Unauthenticated("hub tokens are not enabled".into()))?;
        let mut validation = super::validation(Algorithm::HS256, LEEWAY_SECS, &["exp", "iss", "sub"]);
        validation.set_issuer(&[ISSUER]);
        validation.validate_aud = false;
        let data = jsonwebtoken::decode::<HubClaims>(token, key, &validation).map_err(map_jwt_error)?;
        let principal = match (data.claims.typ, data.claims.sid, data.claims.pid) {
            (TokenKind::Service, _, _) => Principal::Service,
            (TokenKind::Container, Some(session_id), Some(project_id)) => {
                Principal::Container { session_id, project_id }
            }
            _ => return Err(ApiError::Unauthenticated("malformed token".into())),
        };
        Ok((principal, data.claims.exp))
    }
}

/// Expired tokens are `token_expired`; every other failure is `unauthenticated` with a
/// short reason (never the token).
pub fn map_jwt_error(err: jsonwebtoken::errors::Error) -> ApiError {
    match err.kind() {
        ErrorKind::ExpiredSignature => ApiError::TokenExpired,
        ErrorKind::InvalidSignature => ApiError::Unauthenticated("invalid token signature".into()),
        ErrorKind::InvalidAlgorithm => ApiError::Unauthenticated("token algorithm not allowed".into()),
        ErrorKind::InvalidIssuer => ApiError::Unauthenticated("wrong token issuer".into()),
        ErrorKind::InvalidAudience => ApiError::Unauthenticated("wrong token audience".into()),
        ErrorKind::ImmatureSignature => ApiError::Unauthenticated("token not valid yet (nbf)".into()),
        ErrorKind::MissingRequiredClaim(claim) => ApiError::Unauthenticated(format!("token lacks the {claim} claim")),
        ErrorKind::InvalidClaimFormat(claim) => ApiError::Unauthenticated(format!("malformed {claim} claim")),
        _ => ApiError::Unauthenticated("invalid token".into()),
    }
}
