//! The event log over HTTP: `GET /v1/projects/{id}/events?since=SEQ[&limit=N]`, the same
//! frames the realtime socket sends, with the same retention rule (410 when trimmed).

use axum::Json;
use axum::extract::State;
use synchub_protocol::{EventsPage, EventsQuery, SafeU64};

use crate::app::AppState;
use crate::auth::policy::Actor;
use crate::error::ApiError;
use crate::extract::QueryArgs;

/// Events per page when the caller gives no limit, and the most it may ask for.
const DEFAULT_LIMIT: i64 = 100;
const MAX_LIMIT: i64 = 1000;

pub async fn list(
    State(state): State<AppState>,
    actor: Actor,
    QueryArgs(query): QueryArgs<EventsQuery>,
) -> Result<Json<EventsPage>, ApiError> {
    let id = actor.project()?;
    let limit = query.limit.map_or(DEFAULT_LIMIT, SafeU64::as_i64).clamp(1, MAX_LIMIT) as i32;
    let page = state
        .db
        .typed(
            actor.db(),
            "SELECT synchub.events_for($1, $2, $3, $4)",
            &[&id, &actor.name(), &query.since.as_i64(), &limit],
        )
        .await?;
    Ok(Json(page))
}
