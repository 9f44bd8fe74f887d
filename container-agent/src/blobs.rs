//! Binary files' bytes (CONTRACT section 13). Events name a binary file's content by
//! `blob: {sha256, size}` instead of carrying it; before such a change is applied, the
//! session fetches every blob it needs into the blob cache (`PROJECT_DIR/.synchub/blobs`,
//! one `<sha256>` file each) with [`BlobFetcher::ensure`]: `GET /v1/projects/{id}/blobs/{sha256}`
//! with the container token (a redirect to signed storage is followed without it),
//! streamed into a temp file, capped at the announced size, and renamed to its name only
//! when the size and sha256 match. Transient failures are retried with backoff; bytes that
//! fail the check are never kept. The tree then stages each binary file from the cache
//! (hashing it again) and renames it into place like a text file; the cache is emptied
//! after each applied change, so it holds at most one change's (or one batch's) blobs.

use std::collections::{HashMap, HashSet};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Duration;

use reqwest::StatusCode;
use sha2::{Digest, Sha256};
use synchub_protocol::Backoff;

use crate::hub::{HubClient, HubError};
use crate::protocol::{BlobRef, Change};
use crate::tree::{BLOB_DIR, STATE_DIR, is_sha256_hex};

/// The largest binary file (CONTRACT section 13).
pub const MAX_BLOB_BYTES: u64 = 50 * 1024 * 1024;
/// Tries per blob before the change is given up for this connection.
const ATTEMPTS: u32 = 4;

#[derive(Debug, thiserror::Error)]
pub enum BlobError {
    /// Not a sha256, or larger than a binary file may be: never requested.
    #[error("blob {sha256:?} of {size} bytes is refused")]
    Refused { sha256: String, size: u64 },
    #[error("blob {sha256}: {source}")]
    Hub {
        sha256: String,
        #[source]
        source: HubError,
    },
    /// The bytes served are not the announced ones (they were discarded).
    #[error("blob {sha256}: the bytes served do not match ({got})")]
    Mismatch { sha256: String, got: String },
    #[error("blob cache: {0}")]
    Io(#[from] std::io::Error),
}

impl BlobError {
    /// Worth trying again later (the network, the hub or the storage may recover), as
    /// opposed to a blob the hub does not have or refuses to give.
    pub fn is_transient(&self) -> bool {
        match self {
            BlobError::Refused { .. } => false,
            BlobError::Mismatch { .. } | BlobError::Io(_) => true,
            BlobError::Hub { source, .. } => match source {
                HubError::Unauthorized | HubError::BadUrl { .. } | HubError::TooLarge => false,
                HubError::Status { status, .. } => {
                    status.is_server_error()
                        || *status == StatusCode::TOO_MANY_REQUESTS
                        || *status == StatusCode::REQUEST_TIMEOUT
                }
                HubError::Http { .. } | HubError::Io(_) => true,
            },
        }
    }

    /// The hub refused the container token.
    pub fn is_unauthorized(&self) -> bool {
        matches!(self, BlobError::Hub { source: HubError::Unauthorized, .. })
    }
}

/// The blobs a run of changes needs: the binary content each path ends with (a path later
/// deleted or overwritten needs nothing), once per sha256.
pub fn needed(changes: &[Change]) -> Vec<(&str, &BlobRef)> {
    let mut last: HashMap<&str, Option<&BlobRef>> = HashMap::new();
    for change in changes {
        match change {
            Change::Update(file) => {
                last.insert(&file.file_path, file.blob.as_ref());
            }
            Change::Delete(file) => {
                last.insert(&file.file_path, None);
            }
            // The tree writes a bulk's files, then runs its deletes.
            Change::Bulk(bulk) => {
                for file in &bulk.files {
                    last.insert(&file.file_path, file.blob.as_ref());
                }
                for file in &bulk.deletes {
                    last.insert(&file.file_path, None);
                }
            }
            Change::ProjectDeleted(_) | Change::Other { .. } => {}
        }
    }
    let mut seen = HashSet::new();
    let mut wanted: Vec<(&str, &BlobRef)> = last
        .into_iter()
        .filter_map(|(path, blob)| Some((path, blob?)))
        .filter(|(_, blob)| seen.insert(blob.sha256.as_str()))
        .collect();
    wanted.sort_by(|a, b| a.0.cmp(b.0));
    wanted
}

/// Fetches blobs into the cache; see the module documentation.
pub struct BlobFetcher {
    hub: HubClient,
    dir: PathBuf,
    first_retry: Duration,
}

impl BlobFetcher {
    pub fn new(hub: HubClient, project_dir: &Path) -> Self {
        Self { hub, dir: project_dir.join(BLOB_DIR), first_retry: Duration::from_millis(200) }
    }

    /// Makes `blob` present and verified in the cache, trying up to [`ATTEMPTS`] times with
    /// backoff while the failure is transient.
    pub async fn ensure(&self, blob: &BlobRef) -> Result<(), BlobError> {
        if !is_sha256_hex(&blob.sha256) || blob.size.get() > MAX_BLOB_BYTES {
            return Err(BlobError::Refused { sha256: blob.sha256.clone(), size: blob.size.get() });
        }
        if std::fs::symlink_metadata(self.dir.join(&blob.sha256)).is_ok_and(|meta| meta.is_file()) {
            return Ok(());
        }
        let mut backoff = Backoff::new(self.first_retry, self.first_retry * 8);
        let mut attempt = 1;
        loop {
            match self.fetch_once(blob).await {
                Ok(()) => return Ok(()),
                Err(error) if error.is_transient() && attempt < ATTEMPTS => {
                    let delay = backoff.next_delay();
                    tracing::warn!(%error, attempt, retry_in_ms = delay.as_millis() as u64, "blob fetch failed");
                    tokio::time::sleep(delay).await;
                    attempt += 1;
                }
                Err(error) => return Err(error),
            }
        }
    }

    /// One GET, streamed into a temp file of the cache (never more than `size` bytes),
    /// renamed to `<sha256>` only when its size and sha256 match.
    async fn fetch_once(&self, blob: &BlobRef) -> Result<(), BlobError> {
        let hub_error = |source| BlobError::Hub { sha256: blob.sha256.clone(), source };
        let mut response = self.hub.blob(&blob.sha256).await.map_err(hub_error)?;
        let size = blob.size.get();
        if response.content_length().is_some_and(|len| len != size) {
            let got = format!("{} bytes announced", response.content_length().unwrap_or_default());
            return Err(BlobError::Mismatch { sha256: blob.sha256.clone(), got });
        }
        let dir = self.cache_dir()?;
        let mut temp = tempfile::Builder::new().prefix("fetch-").tempfile_in(&dir)?;
        let mut hasher = Sha256::new();
        let mut received = 0u64;
        while let Some(chunk) =
            response.chunk().await.map_err(|source| hub_error(HubError::Http { what: "blob body", source }))?
        {
            received += chunk.len() as u64;
            if received > size {
                let got = format!("more than {size} bytes");
                return Err(BlobError::Mismatch { sha256: blob.sha256.clone(), got });
            }
            hasher.update(&chunk);
            temp.write_all(&chunk)?;
        }
        let actual = hex::encode(hasher.finalize());
        if received != size || actual != blob.sha256 {
            // Dropping `temp` removes the bytes: nothing unverified stays on disk.
            let got = format!("{received} bytes with sha256 {actual}");
            return Err(BlobError::Mismatch { sha256: blob.sha256.clone(), got });
        }
        temp.persist(dir.join(&blob.sha256)).map_err(|e| BlobError::Io(e.error))?;
        Ok(())
    }

    /// `PROJECT_DIR/.synchub/blobs`, made a real directory (a symlink planted there could
    /// send fetched bytes elsewhere).
    fn cache_dir(&self) -> Result<PathBuf, BlobError> {
        if let Some(state) = self.dir.parent()
            && state.ends_with(STATE_DIR)
        {
            real_dir(state)?;
        }
        real_dir(&self.dir)?;
        Ok(self.dir.clone())
    }

    /// Empties the cache (after a change was applied, or before a new start).
    pub fn clear(&self) {
        clear_cache(&self.dir);
    }
}

/// Removes every file of a blob cache directory (a killed agent's leftovers too). Only a
/// real directory under a real `.synchub` is emptied: never what a planted symlink points to.
pub fn clear_cache(dir: &Path) {
    let real = |path: &Path| std::fs::symlink_metadata(path).is_ok_and(|meta| meta.is_dir());
    if !real(dir) || !dir.parent().is_some_and(real) {
        return;
    }
    let Ok(entries) = std::fs::read_dir(dir) else { return };
    for entry in entries.flatten() {
        if entry.file_type().is_ok_and(|kind| !kind.is_dir()) {
            let _ = std::fs::remove_file(entry.path());
        }
    }
}

/// Makes `path` a real directory: a file or symlink squatting on it is removed.
fn real_dir(path: &Path) -> std::io::Result<()> {
    match std::fs::symlink_metadata(path) {
        Ok(meta) if meta.is_dir() => Ok(()),
        Ok(_) => {
            std::fs::remove_file(path)?;
            std::fs::create_dir(path)
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => std::fs::create_dir(path),
        Err(e) => Err(e),
    }
}

#[cfg(test)]
mod tests;
