//! The error body of the contract: `{"code", "message", ...details}`, inside
//! `{"error": ...}` over HTTP and inside `ack`/`error` frames on the socket.

use serde::{Deserialize, Serialize};

/// `{"code", "message", ...details}`; details depend on the code (e.g. `version_conflict`
/// carries `path`, `expected_version`, `current_version`, `current_hash`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[cfg_attr(test, derive(ts_rs::TS))]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct ErrorBody {
    /// `invalid_request`, `not_found`, `version_conflict`, … (CONTRACT section 3).
    pub code: String,
    #[serde(default)]
    pub message: String,
    #[serde(flatten)]
    pub details: serde_json::Map<String, serde_json::Value>,
}

/// Every non-2xx HTTP answer: `{"error": {...}}`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[cfg_attr(test, derive(ts_rs::TS))]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct ErrorResponse {
    pub error: ErrorBody,
}
