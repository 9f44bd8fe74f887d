//! Request extractors that answer with the contract's errors: JSON bodies (size-capped
//! before parsing, UTF-8 checked (415), then parsed (400)), query strings and path ids.
//! Every JSON route uses [`JsonBody`], so no route can forget a cap. Also the checks of
//! single inputs every route shares: `file_type`, text without NUL. Integer inputs are the
//! protocol crate's `SafeU64` (0..=2^53−1), in bodies and query strings alike; both paths
//! here parse through `serde_path_to_error`, so a 400 names the field.

use axum::extract::{FromRequest, Request};
use axum::http::header::CONTENT_LENGTH;
use serde::de::DeserializeOwned;
use serde_json::Value;

use crate::app::AppState;
use crate::error::ApiError;

/// A JSON body of at most the configured bulk body size.
pub struct JsonBody<T>(pub T);

impl<T: DeserializeOwned> FromRequest<AppState> for JsonBody<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &AppState) -> Result<Self, Self::Rejection> {
        parse_json(&json_body_bytes(req, state).await?).map(JsonBody)
    }
}

/// The bytes of a JSON body, at most the configured bulk body size (413 beyond).
pub async fn json_body_bytes(req: Request, state: &AppState) -> Result<axum::body::Bytes, ApiError> {
    let limit = state.config.limits.max_bulk_bytes;
    let declared =
        req.headers().get(CONTENT_LENGTH).and_then(|v| v.to_str().ok()).and_then(|v| v.parse::<usize>().ok());
    if declared.is_some_and(|len| len > limit) {
        return Err(ApiError::payload_too_large(format!("request body is larger than {limit} bytes")));
    }
    axum::body::to_bytes(req.into_body(), limit)
        .await
        .map_err(|_| ApiError::payload_too_large(format!("request body is larger than {limit} bytes")))
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
    // The error names the field it is about (`expected_version: ...`).
    let invalid = |err: &dyn std::fmt::Display| ApiError::InvalidRequest(format!("invalid JSON body: {err}"));
    let mut json = serde_json::Deserializer::from_slice(bytes);
    let value = serde_path_to_error::deserialize(&mut json).map_err(|err| invalid(&err))?;
    json.end().map_err(|err| invalid(&err))?;
    Ok(value)
}

/// `file_type`: at most 64 bytes of `[A-Za-z0-9._+-]` (CONTRACT section 7); absent or empty
/// means "infer from the path". The SQL functions check the same for direct callers.
pub fn check_file_type(file_type: Option<&str>) -> Result<(), ApiError> {
    let Some(file_type) = file_type else { return Ok(()) };
    let allowed = |b: &u8| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'+' | b'-');
    if file_type.len() > 64 || !file_type.bytes().all(|b| allowed(&b)) {
        return Err(ApiError::InvalidRequest(
            "file_type must be at most 64 bytes of A-Z, a-z, 0-9, \".\", \"_\", \"+\" and \"-\"".into(),
        ));
    }
    Ok(())
}

/// Names, ids and editor state are text without NUL: PostgreSQL cannot store one, and the
/// answer is 400 (415 is for file content).
pub fn check_no_nul(field: &str, text: &str) -> Result<(), ApiError> {
    if text.contains('\0') {
        return Err(ApiError::InvalidRequest(format!("{field} must not contain NUL characters")));
    }
    Ok(())
}

/// [`check_no_nul`] over every string and key of a JSON value.
pub fn check_json_no_nul(field: &str, value: &Value) -> Result<(), ApiError> {
    match value {
        Value::String(text) => check_no_nul(field, text),
        Value::Array(items) => items.iter().try_for_each(|item| check_json_no_nul(field, item)),
        Value::Object(map) => map.iter().try_for_each(|(key, item)| {
            check_no_nul(field, key)?;
            check_json_no_nul(field, item)
        }),
        _ => Ok(()),
    }
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

#[cfg(test)]
mod tests {
    use super::*;
    use serde::Deserialize;
    use synchub_protocol::SafeU64;

    #[derive(Deserialize, Debug)]
    struct Input {
        n: Option<SafeU64>,
    }

    fn json(text: &str) -> Result<Option<i64>, String> {
        parse_json::<Input>(text.as_bytes()).map(|i| i.n.map(SafeU64::as_i64)).map_err(|e| e.to_string())
    }

    fn query(text: &str) -> Result<Option<i64>, String> {
        let uri: axum::http::Uri = format!("/?{text}").parse().unwrap();
        axum::extract::Query::<Input>::try_from_uri(&uri).map(|q| q.0.n.map(SafeU64::as_i64)).map_err(|e| e.body_text())
    }

    #[test]
    fn safe_integers_are_0_to_2_pow_53_minus_1_from_json_and_query_text() {
        let max = SafeU64::MAX.as_i64();
        for (text, value) in [("0", 0), ("7", 7), ("1.0", 1), ("9007199254740991", max)] {
            assert_eq!(json(&format!(r#"{{"n": {text}}}"#)), Ok(Some(value)), "{text}");
            assert_eq!(query(&format!("n={text}")), Ok(Some(value)), "{text}");
        }
        assert_eq!(json("{}"), Ok(None));
        assert_eq!(json(r#"{"n": null}"#), Ok(None));
        assert_eq!(query(""), Ok(None));
    }

    #[test]
    fn safe_integers_refuse_everything_else_naming_the_field() {
        for text in
            ["-1", "1.5", "9007199254740992", "9223372036854775807", "18446744073709551616", "1e300", r#""1""#, "true"]
        {
            let err = json(&format!(r#"{{"n": {text}}}"#)).unwrap_err();
            assert!(err.starts_with("invalid JSON body: n: "), "{text}: {err}");
        }
        for text in ["-1", "1.5", "9007199254740992", "9223372036854775807", "abc", "", "NaN", "inf"] {
            let err = query(&format!("n={text}")).unwrap_err();
            assert!(err.contains("n: "), "{text}: {err}");
        }
    }

    #[test]
    fn file_type_is_at_most_64_bytes_of_a_small_alphabet() {
        for ok in [None, Some(""), Some("typescript"), Some("c++"), Some("x.y_z-1"), Some(&*"a".repeat(64))] {
            assert!(check_file_type(ok).is_ok(), "{ok:?}");
        }
        for bad in ["a b", "a/b", "é", "a\u{0}", &*"a".repeat(65)] {
            assert!(check_file_type(Some(bad)).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn nul_is_found_in_keys_and_nested_strings() {
        assert!(check_json_no_nul("state", &serde_json::json!({"tabs": ["a", {"b": 1}]})).is_ok());
        assert!(check_json_no_nul("state", &serde_json::json!({"tabs": ["a", {"b": "\u{0}"}]})).is_err());
        assert!(check_json_no_nul("state", &serde_json::json!({"\u{0}": 1})).is_err());
    }
}
