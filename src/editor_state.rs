//! Editor state per user and project (open tabs, active tab, layout), with revisions:
//! a stale `base_revision` gets 409 and the server copy (the server wins).

use axum::Json;
use axum::extract::State;
use synchub_protocol::{EditorStateResponse, PutEditorStateRequest, PutEditorStateResponse};

use crate::app::AppState;
use crate::auth::policy::Actor;
use crate::error::ApiError;
use crate::extract::{JsonBody, check_json_no_nul};

pub async fn get(State(state): State<AppState>, actor: Actor) -> Result<Json<EditorStateResponse>, ApiError> {
    let id = actor.project()?;
    Ok(Json(state.db.typed(actor.db(), "SELECT synchub.get_editor_state($1, $2)", &[&id, &actor.name()]).await?))
}

pub async fn put(
    State(state): State<AppState>,
    actor: Actor,
    JsonBody(body): JsonBody<PutEditorStateRequest>,
) -> Result<Json<PutEditorStateResponse>, ApiError> {
    let id = actor.project()?;
    let limit = state.config.limits.max_editor_state_bytes;
    if serde_json::to_vec(&body.state).map(|v| v.len()).unwrap_or(usize::MAX) > limit {
        return Err(ApiError::payload_too_large(format!("editor state is larger than {limit} bytes")));
    }
    check_json_no_nul("state", &body.state)?;
    let sql = "SELECT synchub.put_editor_state($1, $2, $3, $4)";
    Ok(Json(state.write_as(&actor, sql, &[&id, &actor.name(), &body.state, &body.base_revision.as_i64()]).await?))
}
