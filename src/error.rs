//! One error type for the whole API, mapped once to the contract's error JSON:
//! `{"error": {"code", "message", ...details}}`. Database answers are mapped by SQLSTATE
//! here and nowhere else. 5xx bodies never carry internals; those go to the log.

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::{Map, Value, json};

/// Every error the API can answer with.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("{0}")]
    InvalidRequest(String),
    #[error("{message}")]
    InvalidPath { message: String, path: Option<String> },
    #[error("{0}")]
    Unauthenticated(String),
    #[error("token expired")]
    TokenExpired,
    #[error("{0}")]
    Forbidden(String),
    #[error("{message}")]
    QuotaExceeded { message: String, details: Map<String, Value> },
    #[error("{0}")]
    NotFound(String),
    #[error("this route does not accept this method")]
    MethodNotAllowed,
    #[error("the request was not received in time")]
    RequestTimeout,
    #[error("{message}")]
    VersionConflict { message: String, details: Map<String, Value> },
    #[error("{message}")]
    RevisionConflict { message: String, details: Map<String, Value> },
    #[error("{0}")]
    AlreadyExists(String),
    #[error("{0}")]
    OpIdReused(String),
    #[error("history before seq {oldest_seq} was trimmed")]
    HistoryTrimmed { oldest_seq: i64 },
    /// A file version removed by history retention (CONTRACT 14): the same code, with the
    /// file's details (`path`, `version`, `oldest_version`).
    #[error("{message}")]
    VersionTrimmed { message: String, details: Map<String, Value> },
    #[error("{message}")]
    PayloadTooLarge { message: String, details: Map<String, Value> },
    #[error("the URI is too long")]
    UriTooLong,
    #[error("{0}")]
    UnsupportedContent(String),
    #[error("too many writes; retry after {retry_after_secs} s")]
    RateLimited { retry_after_secs: u64 },
    #[error("the request headers are too large")]
    HeadersTooLarge,
    #[error("service unavailable")]
    Unavailable(String),
    #[error("internal error")]
    Internal(String),
    /// An error about one entry of an uploaded archive: the inner error's status and code,
    /// with the entry's name in the details (`entry`).
    #[error("{inner}")]
    Entry { entry: String, inner: Box<ApiError> },
}

impl ApiError {
    pub fn not_found() -> Self {
        ApiError::NotFound("not found".into())
    }

    pub fn internal(err: impl std::fmt::Display) -> Self {
        ApiError::Internal(err.to_string())
    }

    pub fn payload_too_large(message: impl Into<String>) -> Self {
        ApiError::PayloadTooLarge { message: message.into(), details: Map::new() }
    }

    /// `self`, about the archive entry `entry`.
    pub fn for_entry(self, entry: impl Into<String>) -> Self {
        ApiError::Entry { entry: entry.into(), inner: Box::new(self) }
    }

    pub fn status(&self) -> StatusCode {
        match self {
            ApiError::Entry { inner, .. } => inner.status(),
            ApiError::InvalidRequest(_) | ApiError::InvalidPath { .. } => StatusCode::BAD_REQUEST,
            ApiError::Unauthenticated(_) | ApiError::TokenExpired => StatusCode::UNAUTHORIZED,
            ApiError::Forbidden(_) | ApiError::QuotaExceeded { .. } => StatusCode::FORBIDDEN,
            ApiError::NotFound(_) => StatusCode::NOT_FOUND,
            ApiError::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            ApiError::RequestTimeout => StatusCode::REQUEST_TIMEOUT,
            ApiError::VersionConflict { .. }
            | ApiError::RevisionConflict { .. }
            | ApiError::AlreadyExists(_)
            | ApiError::OpIdReused(_) => StatusCode::CONFLICT,
            ApiError::HistoryTrimmed { .. } | ApiError::VersionTrimmed { .. } => StatusCode::GONE,
            ApiError::PayloadTooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            ApiError::UriTooLong => StatusCode::URI_TOO_LONG,
            ApiError::UnsupportedContent(_) => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            ApiError::RateLimited { .. } => StatusCode::TOO_MANY_REQUESTS,
            ApiError::HeadersTooLarge => StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
            ApiError::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
            ApiError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    pub fn code(&self) -> &'static str {
        match self {
            ApiError::Entry { inner, .. } => inner.code(),
            ApiError::InvalidRequest(_) => "invalid_request",
            ApiError::InvalidPath { .. } => "invalid_path",
            ApiError::Unauthenticated(_) => "unauthenticated",
            ApiError::TokenExpired => "token_expired",
            ApiError::Forbidden(_) => "forbidden",
            ApiError::QuotaExceeded { .. } => "quota_exceeded",
            ApiError::NotFound(_) => "not_found",
            ApiError::MethodNotAllowed => "method_not_allowed",
            ApiError::RequestTimeout => "request_timeout",
            ApiError::VersionConflict { .. } => "version_conflict",
            ApiError::RevisionConflict { .. } => "revision_conflict",
            ApiError::AlreadyExists(_) => "already_exists",
            ApiError::OpIdReused(_) => "op_id_reused",
            ApiError::HistoryTrimmed { .. } | ApiError::VersionTrimmed { .. } => "history_trimmed",
            ApiError::PayloadTooLarge { .. } => "payload_too_large",
            ApiError::UriTooLong => "uri_too_long",
            ApiError::UnsupportedContent(_) => "unsupported_content",
            ApiError::RateLimited { .. } => "rate_limited",
            ApiError::HeadersTooLarge => "headers_too_large",
            ApiError::Unavailable(_) => "unavailable",
            ApiError::Internal(_) => "internal",
        }
    }

    /// The `error` object of the contract (also used in WebSocket `ack` frames).
    pub fn body(&self) -> Value {
        if let ApiError::Entry { entry, inner } = self {
            let mut body = inner.body();
            body["entry"] = json!(entry);
            return body;
        }
        let mut error = Map::new();
        error.insert("code".into(), json!(self.code()));
        error.insert("message".into(), json!(self.to_string()));
        match self {
            ApiError::InvalidPath { path: Some(path), .. } => {
                error.insert("path".into(), json!(path));
            }
            ApiError::QuotaExceeded { details, .. }
            | ApiError::VersionConflict { details, .. }
            | ApiError::RevisionConflict { details, .. }
            | ApiError::PayloadTooLarge { details, .. }
            | ApiError::VersionTrimmed { details, .. } => {
                for (key, value) in details {
                    error.entry(key.clone()).or_insert_with(|| value.clone());
                }
            }
            ApiError::HistoryTrimmed { oldest_seq } => {
                error.insert("oldest_seq".into(), json!(oldest_seq));
            }
            ApiError::RateLimited { retry_after_secs } => {
                error.insert("retry_after".into(), json!(retry_after_secs));
            }
            _ => {}
        }
        Value::Object(error)
    }

    /// Maps a database error by SQLSTATE. synchub's own codes (SHxxx) carry the details
    /// as JSON in DETAIL; anything else is an internal error (or 503 when the database
    /// cannot be reached).
    pub fn from_db(err: &tokio_postgres::Error) -> Self {
        let Some(db) = err.as_db_error() else {
            if err.is_closed() {
                return ApiError::Unavailable(err.to_string());
            }
            return ApiError::Unavailable(format!("database: {err}"));
        };
        let message = db.message().to_string();
        let details = || -> Map<String, Value> {
            db.detail()
                .and_then(|detail| serde_json::from_str::<Value>(detail).ok())
                .and_then(|value| match value {
                    Value::Object(map) => Some(map),
                    _ => None,
                })
                .unwrap_or_default()
        };
        match db.code().code() {
            "SH400" => ApiError::InvalidRequest(message),
            "SHP00" => ApiError::InvalidPath {
                message,
                path: details().get("path").and_then(Value::as_str).map(str::to_string),
            },
            "SH403" => ApiError::Forbidden(message),
            "SH404" => ApiError::NotFound(message),
            "SH409" => ApiError::VersionConflict { message, details: details() },
            "SHR09" => ApiError::RevisionConflict { message, details: details() },
            "SHA09" => ApiError::AlreadyExists(message),
            "SHO09" => ApiError::OpIdReused(message),
            "SH410" => ApiError::HistoryTrimmed {
                oldest_seq: details().get("oldest_seq").and_then(Value::as_i64).unwrap_or(0),
            },
            "SHT10" => ApiError::VersionTrimmed { message, details: details() },
            "SH413" => ApiError::PayloadTooLarge { message, details: details() },
            "SHQ03" => ApiError::QuotaExceeded { message, details: details() },
            "SH415" => ApiError::UnsupportedContent(message),
            // invalid byte sequence (NUL) / untranslatable character
            "22021" | "22P05" => ApiError::UnsupportedContent("content must be UTF-8 text without NUL".into()),
            // serialization failure / deadlock: safe for the client to retry
            "40001" | "40P01" => ApiError::Unavailable(message),
            "57P01" | "57P02" | "57P03" | "53300" => ApiError::Unavailable(message),
            _ => ApiError::Internal(format!("{}: {message}", db.code().code())),
        }
    }
}

impl From<tokio_postgres::Error> for ApiError {
    fn from(err: tokio_postgres::Error) -> Self {
        ApiError::from_db(&err)
    }
}

impl From<deadpool_postgres::PoolError> for ApiError {
    fn from(err: deadpool_postgres::PoolError) -> Self {
        match err {
            deadpool_postgres::PoolError::Backend(err) => ApiError::from_db(&err),
            other => ApiError::Unavailable(other.to_string()),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = self.status();
        if status.is_server_error() {
            match &self {
                ApiError::Internal(detail) | ApiError::Unavailable(detail) => {
                    tracing::error!(status = status.as_u16(), error = %detail, "request failed");
                }
                _ => {}
            }
        }
        let mut response = (status, axum::Json(json!({ "error": self.body() }))).into_response();
        if let ApiError::RateLimited { retry_after_secs } = self
            && let Ok(value) = HeaderValue::from_str(&retry_after_secs.to_string())
        {
            response.headers_mut().insert(header::RETRY_AFTER, value);
        }
        response
    }
}

impl From<snapshot_builder::paths::PathError> for ApiError {
    fn from(err: snapshot_builder::paths::PathError) -> Self {
        ApiError::InvalidPath { message: err.to_string(), path: None }
    }
}
