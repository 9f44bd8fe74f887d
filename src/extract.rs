//! Request extractors that answer with the contract's errors: JSON bodies (size-capped
//! before parsing, UTF-8 checked (415), then parsed (400)), query strings and path ids.
//! Every JSON route uses [`JsonBody`], so no route can forget a cap.

use axum::extract::{FromRequest, Request};
use axum::http::header::CONTENT_LENGTH;
use serde::de::DeserializeOwned;

use crate::app::AppState;
use crate::error::ApiError;

/// A JSON body of at most the configured bulk body size.
pub struct JsonBody<T>(pub T);

impl<T: DeserializeOwned> FromRequest<AppState> for JsonBody<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &AppState) -> Result<Self, Self::Rejection> {
        let limit = state.config.limits.max_bulk_bytes;
        let declared =
            req.headers().get(CONTENT_LENGTH).and_then(|v| v.to_str().ok()).and_then(|v| v.parse::<usize>().ok());
        if declared.is_some_and(|len| len > limit) {
            return Err(ApiError::payload_too_large(format!("request body is larger than {limit} bytes")));
        }
        let bytes = axum::body::to_bytes(req.into_body(), limit)
            .await
            .map_err(|_| ApiError::payload_too_large(format!("request body is larger than {limit} bytes")))?;
        parse_json(&bytes).map(JsonBody)
    }
}

/// A JSON body that may be left out entirely (an empty body reads as `T::default()`).
pub struct OptionalJsonBody<T>(pub T);

impl<T: DeserializeOwned + Default> FromRequest<AppState> for OptionalJsonBody<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &AppState) -> Result<Self, Self::Rejection> {
        let limit = state.config.limits.max_bulk_bytes;
        let bytes = axum::body::to_bytes(req.into_body(), limit)
            .await
            .map_err(|_| ApiError::payload_too_large(format!("request body is larger than {limit} bytes")))?;
        if bytes.iter().all(u8::is_ascii_whitespace) {
            return Ok(OptionalJsonBody(T::default()));
        }
        parse_json(&bytes).map(OptionalJsonBody)
    }
}

/// Parses a JSON document that must be UTF-8 (HTTP bodies and WebSocket frames alike).
pub fn parse_json<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, ApiError> {
    if std::str::from_utf8(bytes).is_err() {
        return Err(ApiError::UnsupportedContent("body is not UTF-8 text".into()));
    }
    serde_json::from_slice(bytes).map_err(|err| ApiError::InvalidRequest(format!("invalid JSON body: {err}")))
}

/// File content must be UTF-8 text without NUL (JSON strings are UTF-8 already) and within
/// the per-file cap. The database checks the same; this answers before the work is sent.
pub fn check_content(content: &str, max_file_bytes: usize) -> Result<(), ApiError> {
    if content.len() > max_file_bytes {
        return Err(ApiError::payload_too_large(format!("file is larger than {max_file_bytes} bytes")));
    }
    if content.as_bytes().contains(&0) {
        return Err(ApiError::UnsupportedContent("content must not contain NUL bytes".into()));
    }
    Ok(())
}

/// A query string; a malformed one is 400 `invalid_request`.
pub struct QueryArgs<T>(pub T);

impl<T: DeserializeOwned, S: Send + Sync> axum::extract::FromRequestParts<S> for QueryArgs<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut axum::http::request::Parts, _: &S) -> Result<Self, Self::Rejection> {
        axum::extract::Query::<T>::try_from_uri(&parts.uri)
            .map(|q| QueryArgs(q.0))
            .map_err(|err| ApiError::InvalidRequest(format!("invalid query string: {}", err.body_text())))
    }
}

/// A project id from the URL. A string that is not a UUID names no project: 404.
pub fn project_id(raw: &str) -> Result<uuid::Uuid, ApiError> {
    uuid::Uuid::parse_str(raw).map_err(|_| ApiError::NotFound("project not found".into()))
}

/// URL path parameters; undecodable ones (bad percent-encoding, not UTF-8) are 400
/// `invalid_path`.
pub struct PathArgs<T>(pub T);

impl<T: DeserializeOwned + Send, S: Send + Sync> axum::extract::FromRequestParts<S> for PathArgs<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut axum::http::request::Parts, state: &S) -> Result<Self, Self::Rejection> {
        axum::extract::Path::<T>::from_request_parts(parts, state).await.map(|p| PathArgs(p.0)).map_err(|err| {
            ApiError::InvalidPath { message: format!("invalid URL path: {}", err.body_text()), path: None }
        })
    }
}
