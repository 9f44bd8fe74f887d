//! Snapshots: deterministic zips of a project's current files with a manifest and cursor
//! (format in the `snapshot-builder` crate), stored in S3-compatible storage or on local
//! disk and handed out as signed, expiring URLs.

pub mod handlers;
pub mod locks;
pub mod service;
pub mod storage;
