//! synchub: a realtime file-sync hub for browser code editors and their preview containers.
//!
//! The map of the house is `docs/ARCHITECTURE.md`. In short: HTTP handlers (`projects`,
//! `files`, `editor_state`) are thin and call one SQL function each (`db`); the database
//! decides versions, seq, roles and quotas; `error` maps its answers once to the
//! contract's error JSON.

pub mod access;
pub mod api_doc;
pub mod app;
pub mod archive;
pub mod auth;
pub mod blobs;
pub mod config;
pub mod db;
pub mod demo;
pub mod dev;
pub mod editor_state;
pub mod embedded_pg;
pub mod error;
pub mod events;
pub mod extract;
pub mod files;
pub mod history;
pub mod limits;
pub mod metrics;
pub mod ops;
pub mod origins;
pub mod projects;
pub mod realtime;
pub mod router;
pub mod server;
pub mod sessions;
pub mod snapshots;
pub mod startup;
pub mod tasks;

pub use app::{App, AppState};
pub use config::Config;
pub use error::ApiError;
