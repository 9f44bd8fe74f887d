//! The synchub snapshot format (CONTRACT section 5), both ways.
//!
//! A snapshot is a zip of a project's current files at their paths plus
//! `.synchub/manifest.json` (`format`, `project_id`, `snapshot_id`, `cursor`, `created_at`,
//! and per file `path`, `size`, `sha256`, `version`, `file_type`).
//!
//! - [`build`] is pure and synchronous: given the manifest's file entries up front, it
//!   streams the files' contents (sorted by path, one in memory at a time) into any
//!   `Write + Seek` (a temporary file), every entry (the manifest included) in byte order of
//!   its name, with fixed timestamps and permissions, so the same files and metadata give
//!   byte-identical archives.
//! - [`verify`], [`extract`] and [`read_into`] (bytes to any [`EntrySink`]) read untrusted archives (the agent runs inside preview
//!   containers): every name must be a valid project path listed in the manifest exactly
//!   once, no symlinks or other special entries, sizes and hashes must match, and the
//!   bytes actually inflated are capped, whatever the headers claim (zip bombs).
//!
//! Modules: `write` ([`build`]), `read` ([`verify`], [`extract`], [`read_into`]), `sink`
//! (the [`EntrySink`] a read feeds, and [`DirSink`]), [`paths`] (the one path rule) and,
//! with the `db` feature, `db` (the consistent database read a snapshot is built from).

#[cfg(feature = "db")]
pub mod db;
pub mod paths;
mod read;
mod sink;
mod write;

pub use read::{
    ManifestRule, RATIO_FLOOR, ReadError, ReadLimits, extract, has_manifest, read_archive_into, read_into, verify,
};
pub use sink::{DirSink, EntrySink, SinkError};
pub use write::{BuildError, BuildStats, build};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// The manifest format this crate writes and reads.
pub const FORMAT: u32 = 1;
/// Where the manifest lives inside the archive.
pub const MANIFEST_PATH: &str = ".synchub/manifest.json";

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ManifestFile {
    pub path: String,
    pub size: u64,
    pub sha256: String,
    pub version: i64,
    pub file_type: String,
    /// A binary file (CONTRACT section 13): its bytes need not be UTF-8 text; size and
    /// sha256 are checked the same way.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub binary: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Manifest {
    pub format: u32,
    pub project_id: String,
    pub snapshot_id: String,
    pub cursor: i64,
    pub created_at: String,
    pub files: Vec<ManifestFile>,
}

/// What identifies a snapshot; part of the manifest.
#[derive(Debug, Clone)]
pub struct SnapshotMeta {
    pub project_id: String,
    pub snapshot_id: String,
    pub cursor: i64,
    pub created_at: String,
}

/// One file's bytes, streamed into [`build`] after the manifest listed it.
#[derive(Clone)]
pub struct FileContent {
    pub path: String,
    pub content: Vec<u8>,
}

impl ManifestFile {
    /// The manifest entry of `content` at `path`: its size and sha256.
    pub fn describe(path: String, content: &[u8], version: i64, file_type: String) -> ManifestFile {
        ManifestFile {
            path,
            size: content.len() as u64,
            sha256: sha256_hex(content),
            version,
            file_type,
            binary: false,
        }
    }
}

fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}
