//! Snapshot routes: create (service token) and latest (service or the project's own
//! container token), as the router's policy decided.

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use synchub_protocol::SnapshotResponse;

use super::service;
use crate::app::AppState;
use crate::auth::policy::Actor;
use crate::error::ApiError;

/// Checks the project exists (and is not tombstoned) before any storage work.
async fn existing(state: &AppState, actor: &Actor) -> Result<uuid::Uuid, ApiError> {
    let project = actor.project()?;
    state.db.json(actor.db(), "SELECT synchub.join_channel($1, 'service')", &[&project]).await?;
    Ok(project)
}

pub async fn create(
    State(state): State<AppState>,
    actor: Actor,
) -> Result<(StatusCode, Json<SnapshotResponse>), ApiError> {
    let project = existing(&state, &actor).await?;
    Ok((StatusCode::CREATED, Json(service::create_or_reuse(&state, project).await?)))
}

pub async fn latest(State(state): State<AppState>, actor: Actor) -> Result<Json<SnapshotResponse>, ApiError> {
    let project = existing(&state, &actor).await?;
    Ok(Json(service::latest(&state, project).await?))
}
