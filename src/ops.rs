//! Operations endpoints (no auth): liveness, readiness, metrics, the OpenAPI document.

use std::time::Duration;

use axum::Json;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::IntoResponse;
use serde_json::json;

use crate::app::AppState;

pub async fn healthz() -> impl IntoResponse {
    Json(json!({"status": "ok"}))
}

/// How long readiness waits for snapshot storage before calling it down.
const STORAGE_CHECK_TIMEOUT: Duration = Duration::from_secs(2);

/// Ready when the database answers and, when configured, snapshot storage is reachable
/// (the bucket answers, or the directory is writable). A hub without storage is still
/// ready: it serves editors, only the orchestrator's snapshot routes answer 503.
pub async fn readyz(State(state): State<AppState>) -> impl IntoResponse {
    let storage = async {
        match &state.storage {
            None => Ok("not_configured"),
            Some(storage) => match tokio::time::timeout(STORAGE_CHECK_TIMEOUT, storage.check()).await {
                Ok(Ok(())) => Ok("ok"),
                Ok(Err(error)) => Err(format!("{error:#}")),
                Err(_) => Err("timed out".to_owned()),
            },
        }
    };
    let (database, storage) = tokio::join!(state.db.ping(), storage);
    let ready = database && storage.is_ok();
    let status = if ready { StatusCode::OK } else { StatusCode::SERVICE_UNAVAILABLE };
    let storage = match storage {
        Ok(state) => json!(state),
        Err(error) => {
            tracing::warn!(%error, "readiness: snapshot storage unreachable");
            json!("unreachable")
        }
    };
    (status, Json(json!({"database": database, "storage": storage})))
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
