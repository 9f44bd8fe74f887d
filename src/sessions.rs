//! The orchestrator API: one call gives a preview container everything it needs (a
//! snapshot URL, a scoped read-only token, the env), plus container tokens, refresh,
//! session status (has the preview caught up?) and revocation.

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use serde_json::Value;
use synchub_protocol::{
    CreateSessionRequest, MintTokenRequest, MintTokenResponse, RefreshTokenResponse, SafeU64, SessionEnv,
    SessionResponse, SessionStatus, Token,
};
use uuid::Uuid;

use crate::app::AppState;
use crate::auth::Principal;
use crate::auth::policy::Actor;
use crate::db::RowExt;
use crate::error::ApiError;
use crate::extract::{JsonBody, OptionalJsonBody};
use crate::realtime::protocol::channel_name;
use crate::snapshots::service as snapshots;

/// Container tokens live this long by default (CONTRACT section 2).
const DEFAULT_TOKEN_TTL: i64 = 15 * 60;
/// Sessions (and so token refreshes) end after this by default.
const DEFAULT_MAX_LIFETIME: i64 = 12 * 3600;

fn timestamp(unix: i64) -> String {
    snapshots::timestamp(chrono::DateTime::from_timestamp(unix, 0).unwrap_or_default())
}

/// A session's `expires_at` as unix seconds.
fn session_end(session: &Value) -> Result<i64, ApiError> {
    session["expires_at"]
        .as_str()
        .and_then(|text| chrono::DateTime::parse_from_rfc3339(text).ok())
        .map(|time| time.timestamp())
        .ok_or_else(|| ApiError::internal("a session without a readable expires_at"))
}

/// `POST /v1/projects/{id}/sessions`: session + snapshot + container token + env.
pub async fn create(
    State(state): State<AppState>,
    actor: Actor,
    OptionalJsonBody(body): OptionalJsonBody<CreateSessionRequest>,
) -> Result<(StatusCode, Json<SessionResponse>), ApiError> {
    let project = actor.project()?;
    let ttl = body.ttl_seconds.map_or(DEFAULT_TOKEN_TTL, SafeU64::as_i64);
    let max_lifetime = body.max_lifetime_seconds.map_or(DEFAULT_MAX_LIFETIME.max(ttl), SafeU64::as_i64);
    // Saturated into SQL integers, whose range check then answers 400.
    let (ttl32, max32) = (i32::try_from(ttl).unwrap_or(i32::MAX), i32::try_from(max_lifetime).unwrap_or(i32::MAX));
    // The snapshot first: when it cannot be made (no storage, storage down, no such
    // project) no session row is left behind. A snapshot made for a request that then
    // fails is only the project's current state, reused by the next request.
    let snapshot = snapshots::create_or_reuse(&state, project).await?;
    let session =
        state.db.json(actor.db(), "SELECT synchub.create_session($1, $2, $3)", &[&project, &ttl32, &max32]).await?;
    let session_id = session["session_id"]
        .as_str()
        .and_then(|s| Uuid::parse_str(s).ok())
        .ok_or_else(|| ApiError::internal("no session id"))?;
    let not_after = session_end(&session)?;
    let (token, exp) = state.auth.hub.container_token(session_id, project, ttl, not_after)?;
    let token = Token(token);
    let env = SessionEnv {
        SYNCHUB_URL: state.public_url.clone(),
        PROJECT_ID: project,
        SESSION_ID: session_id,
        SNAPSHOT_URL: snapshot.url.clone(),
        REALTIME_TOKEN: token.clone(),
    };
    let answer = SessionResponse { session_id, snapshot, token, token_expires_at: timestamp(exp), env };
    Ok((StatusCode::CREATED, Json(answer)))
}

/// `POST /v1/projects/{id}/tokens`: another container token for a live session.
pub async fn mint(
    State(state): State<AppState>,
    actor: Actor,
    JsonBody(body): JsonBody<MintTokenRequest>,
) -> Result<Json<MintTokenResponse>, ApiError> {
    let project = actor.project()?;
    let session = state.db.json(actor.db(), "SELECT synchub.get_session($1, 'service')", &[&body.session_id]).await?;
    if session["project_id"].as_str() != Some(project.to_string().as_str()) {
        return Err(ApiError::NotFound("session not found".into()));
    }
    // The session's own token lifetime unless the call asks for another.
    let ttl =
        body.ttl_seconds.map(SafeU64::as_i64).or(session["token_ttl_seconds"].as_i64()).unwrap_or(DEFAULT_TOKEN_TTL);
    if !(10..=86_400).contains(&ttl) {
        return Err(ApiError::InvalidRequest("ttl_seconds must be between 10 and 86400".into()));
    }
    // The same test the token will face on every use: not revoked, not past its max
    // lifetime, its project not deleted.
    let client = state.db.pool().get().await?;
    let active: bool =
        client.query_one("SELECT synchub.session_active($1, $2)", &[&project, &body.session_id]).await?.column(0)?;
    if !active {
        return Err(ApiError::Forbidden("the session was revoked or has ended".into()));
    }
    let not_after = session_end(&session)?;
    let (token, exp) = state.auth.hub.container_token(body.session_id, project, ttl, not_after)?;
    Ok(Json(MintTokenResponse { token: Token(token), expires_at: timestamp(exp), channel: channel_name(project) }))
}

/// `POST /v1/tokens/refresh` (bearer: a container token): a fresh token for the same
/// session, until the session's max lifetime; 401 once revoked.
pub async fn refresh(State(state): State<AppState>, actor: Actor) -> Result<Json<RefreshTokenResponse>, ApiError> {
    let &Principal::Container { session_id, project_id } = actor.principal() else {
        return Err(ApiError::internal("refresh was decided for a caller that is not a container"));
    };
    // Authentication already refused revoked and ended sessions.
    let session = state.db.json(actor.db(), "SELECT synchub.get_session($1, 'service')", &[&session_id]).await?;
    let not_after = session_end(&session)?;
    let ttl = session["token_ttl_seconds"].as_i64().unwrap_or(DEFAULT_TOKEN_TTL);
    let (token, exp) = state.auth.hub.container_token(session_id, project_id, ttl, not_after)?;
    Ok(Json(RefreshTokenResponse { token: Token(token), expires_at: timestamp(exp) }))
}

/// `GET /v1/sessions/{id}`: is the preview caught up? (service, or a project member)
pub async fn get(State(state): State<AppState>, actor: Actor) -> Result<Json<SessionStatus>, ApiError> {
    let session = actor.session()?;
    // The type leaves out the row's internal bookkeeping (`revoked_at`, `token_ttl_seconds`).
    Ok(Json(state.db.typed(actor.db(), "SELECT synchub.get_session($1, $2)", &[&session, &actor.name()]).await?))
}

/// `DELETE /v1/sessions/{id}`: revoke; its sockets close with 4010, its tokens answer 401.
pub async fn revoke(State(state): State<AppState>, actor: Actor) -> Result<Json<Value>, ApiError> {
    let session = actor.session()?;
    let body = state.db.json(actor.db(), "SELECT synchub.revoke_session($1)", &[&session]).await?;
    state.session_revoked(session);
    Ok(Json(body))
}
