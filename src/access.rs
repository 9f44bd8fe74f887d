//! One access line per HTTP request (CONTRACT section 8): `request_id`, method, route
//! template, status, duration, actor, and the `project_id`/`session_id` the route names.
//! The same middleware feeds the HTTP metrics, so both count exactly the same requests.
//!
//! Never logged: the raw path and query (file names, signed-URL signatures, tokens in
//! query strings), headers, bodies. Only the route template and ids the router parsed.

use std::sync::{Arc, OnceLock};
use std::time::Instant;

use axum::extract::{FromRequestParts, MatchedPath, RawPathParams, Request, State};
use axum::http::{Extensions, HeaderMap, HeaderName, HeaderValue};
use axum::middleware::Next;
use axum::response::Response;
use tracing::Instrument;
use uuid::Uuid;

use crate::app::AppState;
use crate::auth::Principal;
use crate::metrics::method_label;

/// Request correlation id: taken from the request when it is sane, else generated; echoed.
pub const X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// Longest client-supplied request id kept (longer ones are replaced, not truncated).
const MAX_REQUEST_ID_LEN: usize = 128;

/// Who the request turned out to be, filled by the route's access guard (see
/// [`record_actor`]): the middleware cannot see what runs inside the route otherwise.
#[derive(Clone, Default)]
struct ActorSlot(Arc<OnceLock<Principal>>);

/// Called by the route's access guard (`api_doc`) once a token is verified.
pub fn record_actor(extensions: &Extensions, principal: &Principal) {
    if let Some(slot) = extensions.get::<ActorSlot>() {
        let _ = slot.0.set(principal.clone());
    }
}

/// The client's `X-Request-Id` when it is short and made of safe characters (it goes into
/// every log line of the request); otherwise a new UUID.
fn request_id(headers: &HeaderMap) -> HeaderValue {
    let safe = |id: &&str| {
        !id.is_empty()
            && id.len() <= MAX_REQUEST_ID_LEN
            && id.bytes().all(|b| b.is_ascii_alphanumeric() || b"-_.:/+=@".contains(&b))
    };
    headers
        .get(&X_REQUEST_ID)
        .and_then(|value| value.to_str().ok())
        .filter(safe)
        .and_then(|id| HeaderValue::from_str(id).ok())
        .unwrap_or_else(|| HeaderValue::from_str(&Uuid::new_v4().to_string()).expect("a UUID is a header value"))
}

/// The project and session ids the route names: `{id}` of `/v1/projects/{id}…` and
/// `/v1/sessions/{id}`.
fn route_ids(route: Option<&str>, params: Option<&RawPathParams>) -> (Option<String>, Option<String>) {
    let id = params.and_then(|params| params.iter().find(|(name, _)| *name == "id").map(|(_, value)| value));
    // Only well-formed ids: the raw value is whatever the client put in the URL.
    let id = id.and_then(|id| Uuid::parse_str(id).ok()).map(|id| id.to_string());
    match route {
        Some(route) if route.starts_with("/v1/projects/{id}") => (id, None),
        Some(route) if route.starts_with("/v1/sessions/{id}") => (None, id),
        _ => (None, None),
    }
}

/// Middleware, outermost: request id, the access line, the HTTP metrics.
pub async fn log_access(State(state): State<AppState>, request: Request, next: Next) -> Response {
    let started = Instant::now();
    let request_id = request_id(request.headers());
    let method = method_label(request.method());
    let route = request.extensions().get::<MatchedPath>().map(|path| path.as_str().to_owned());
    let (mut parts, body) = request.into_parts();
    let params = RawPathParams::from_request_parts(&mut parts, &()).await.ok();
    let (mut project_id, mut session_id) = route_ids(route.as_deref(), params.as_ref());
    let actor = ActorSlot::default();
    parts.extensions.insert(actor.clone());
    let request = Request::from_parts(parts, body);

    let id = request_id.to_str().unwrap_or_default().to_owned();
    // Lines logged while handling the request carry its id.
    let span = tracing::info_span!("request", request_id = %id);
    let mut response = next.run(request).instrument(span).await;
    let elapsed = started.elapsed();
    let route = route.as_deref().unwrap_or("unmatched");
    let status = response.status().as_u16();
    state.metrics.observe_request(method, route, status, elapsed);

    let principal = actor.0.get();
    if let Some(Principal::Container { session_id: session, project_id: project }) = principal {
        session_id.get_or_insert_with(|| session.to_string());
        project_id.get_or_insert_with(|| project.to_string());
    }
    let actor = principal.map_or_else(|| "anonymous".to_owned(), describe);
    tracing::info!(
        target: "synchub::access",
        request_id = %id,
        method,
        route,
        status,
        // Whole microseconds: no float noise in the line.
        duration_ms = elapsed.as_micros() as f64 / 1000.0,
        actor = %actor,
        project_id = project_id.as_deref(),
        session_id = session_id.as_deref(),
        "request"
    );
    response.headers_mut().insert(X_REQUEST_ID, request_id);
    response
}

/// The actor of an access line: `user:<sub>`, `service` or `container:<session id>`.
fn describe(principal: &Principal) -> String {
    match principal {
        Principal::User { sub } => format!("user:{sub}"),
        Principal::Service => "service".to_owned(),
        Principal::Container { session_id, .. } => format!("container:{session_id}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn with_id(id: &str) -> HeaderMap {
        let mut headers = HeaderMap::new();
        headers.insert(X_REQUEST_ID, HeaderValue::from_str(id).unwrap());
        headers
    }

    #[test]
    fn request_ids_from_clients_are_kept_only_when_short_and_plain() {
        assert_eq!(request_id(&with_id("abc-123_x.y:z")), "abc-123_x.y:z");
        for refused in ["", "has space", "quote\"", &"x".repeat(MAX_REQUEST_ID_LEN + 1)] {
            let id = request_id(&with_id(refused));
            assert_ne!(id, refused);
            assert!(Uuid::parse_str(id.to_str().unwrap()).is_ok(), "{id:?}");
        }
        assert!(Uuid::parse_str(request_id(&HeaderMap::new()).to_str().unwrap()).is_ok());
    }
}
