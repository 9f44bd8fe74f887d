//! Operations endpoints (no auth): liveness, readiness, metrics, the OpenAPI document.

use std::time::Duration;

use axum::Json;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::IntoResponse;
use serde_json::json;

use crate::app::AppState;
use crate::db::Readiness;

pub async fn healthz() -> impl IntoResponse {
    Json(json!({"status": "ok"}))
}

/// How long readiness waits for snapshot storage before calling it down.
const STORAGE_CHECK_TIMEOUT: Duration = Duration::from_secs(2);

/// Ready (200) when the database answers and is migrated: that is what editors need.
/// Snapshot storage is reported, not required (CONTRACT section 3): an S3 outage only
/// fails the orchestrator's snapshot routes, and must not take every hub out of its load
/// balancer at once.
pub async fn readyz(State(state): State<AppState>) -> impl IntoResponse {
    let storage = async {
        match &state.storage {
            None => "not_configured",
            Some(storage) => match tokio::time::timeout(STORAGE_CHECK_TIMEOUT, storage.check()).await {
                Ok(Ok(())) => "ok",
                Ok(Err(error)) => {
                    tracing::warn!(error = %format!("{error:#}"), "readiness: snapshot storage unreachable");
                    "unreachable"
                }
                Err(_) => {
                    tracing::warn!("readiness: snapshot storage did not answer in time");
                    "unreachable"
                }
            },
        }
    };
    let (database, storage) = tokio::join!(state.db.readiness(), storage);
    let ready = database == Readiness::Migrated;
    let status = if ready { StatusCode::OK } else { StatusCode::SERVICE_UNAVAILABLE };
    let body = json!({
        "database": database != Readiness::Unreachable,
        "migrated": ready,
        "storage": storage,
    });
    (status, Json(body))
}

/// Prometheus text 0.0.4, or OpenMetrics when the scraper's `Accept` asks for it.
pub async fn metrics(State(state): State<AppState>, headers: HeaderMap) -> impl IntoResponse {
    let accept = headers.get(header::ACCEPT).and_then(|value| value.to_str().ok());
    let (content_type, body) = state.metrics.render_for(accept);
    ([(header::CONTENT_TYPE, content_type)], body)
}

pub async fn openapi(State(state): State<AppState>) -> impl IntoResponse {
    Json(state.openapi.as_ref().clone())
}
