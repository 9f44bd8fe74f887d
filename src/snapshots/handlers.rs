//! Snapshot routes: create (service token) and latest (service or the project's own
//! container token).

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use synchub_protocol::SnapshotResponse;

use super::service;
use crate::app::AppState;
use crate::auth::Principal;
use crate::error::ApiError;
use crate::extract::{PathArgs, project_id};

/// Service tokens may act on any project; a container token only on its own (404 for
/// others); users are not orchestrators.
fn snapshot_reader(principal: &Principal, project: uuid::Uuid) -> Result<(), ApiError> {
    match principal {
        Principal::Service => Ok(()),
        Principal::Container { project_id, .. } if *project_id == project => Ok(()),
        Principal::Container { .. } => Err(ApiError::NotFound("project not found".into())),
        Principal::User { .. } => Err(ApiError::Forbidden("this route needs a service token".into())),
    }
}

/// Checks the project exists (and is not tombstoned) before any storage work.
async fn existing(state: &AppState, project: uuid::Uuid) -> Result<(), ApiError> {
    state.db.json(&Principal::Service, "SELECT synchub.join_channel($1, 'service')", &[&project]).await.map(|_| ())
}

pub async fn create(
    State(state): State<AppState>,
    principal: Principal,
    PathArgs(id): PathArgs<String>,
) -> Result<(StatusCode, Json<SnapshotResponse>), ApiError> {
    let project = project_id(&id)?;
    if !matches!(principal, Principal::Service) {
        return Err(match principal {
            Principal::Container { project_id, .. } if project_id != project => {
                ApiError::NotFound("project not found".into())
            }
            _ => ApiError::Forbidden("this route needs a service token".into()),
        });
    }
    existing(&state, project).await?;
    Ok((StatusCode::CREATED, Json(service::create_or_reuse(&state, project).await?)))
}

pub async fn latest(
    State(state): State<AppState>,
    principal: Principal,
    PathArgs(id): PathArgs<String>,
) -> Result<Json<SnapshotResponse>, ApiError> {
    let project = project_id(&id)?;
    snapshot_reader(&principal, project)?;
    existing(&state, project).await?;
    Ok(Json(service::latest(&state, project).await?))
}
