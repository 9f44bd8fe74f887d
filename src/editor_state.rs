//! Editor state per user and project (open tabs, active tab, layout), with revisions:
//! a stale `base_revision` gets 409 and the server copy (the server wins).

use axum::Json;
use axum::extract::State;
use synchub_protocol::{EditorStateResponse, PutEditorStateRequest, PutEditorStateResponse};

use crate::app::AppState;
use crate::auth::Principal;
use crate::error::ApiError;
use crate::extract::{JsonBody, PathArgs, check_json_no_nul, project_id};

pub async fn get(
    State(state): State<AppState>,
    principal: Principal,
    PathArgs(id): PathArgs<String>,
) -> Result<Json<EditorStateResponse>, ApiError> {
    let id = project_id(&id)?;
    let sub = principal.user().map_err(|_| ApiError::not_found())?;
    Ok(Json(state.db.typed(&principal, "SELECT synchub.get_editor_state($1, $2)", &[&id, &sub]).await?))
}

pub async fn put(
    State(state): State<AppState>,
    principal: Principal,
    PathArgs(id): PathArgs<String>,
    JsonBody(body): JsonBody<PutEditorStateRequest>,
) -> Result<Json<PutEditorStateResponse>, ApiError> {
    let id = project_id(&id)?;
    let sub = principal.user().map_err(|_| ApiError::not_found())?;
    let limit = state.config.limits.max_editor_state_bytes;
    if serde_json::to_vec(&body.state).map(|v| v.len()).unwrap_or(usize::MAX) > limit {
        return Err(ApiError::payload_too_large(format!("editor state is larger than {limit} bytes")));
    }
    check_json_no_nul("state", &body.state)?;
    state.limiter.check(&principal.rate_key(), 1.0)?;
    let saved = state
        .db
        .typed(
            &principal,
            "SELECT synchub.put_editor_state($1, $2, $3, $4)",
            &[&id, &sub, &body.state, &body.base_revision.as_i64()],
        )
        .await?;
    Ok(Json(saved))
}
