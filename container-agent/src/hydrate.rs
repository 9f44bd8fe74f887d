//! Hydration: download a snapshot to a temp file (streamed, never held in memory), then
//! make PROJECT_DIR equal to it through the confined tree in one pass of the snapshot-builder
//! reader: each entry is verified as it is inflated straight into a temp file next to its
//! target, and only a fully verified archive is renamed into place (write what changed,
//! delete the owned files that are gone, leave everything else alone). Each file is written
//! once: an earlier version extracted into a staging tree and copied from there, which made
//! hydration ×3 `unzip` (BENCHMARKS.md, #6). The download and the scratch directory (for the
//! rare entries blocked by a file/directory conflict) live in `PROJECT_DIR/.synchub/`, on
//! the same file system, and are removed afterwards whatever happens; PROJECT_DIR itself only
//! ever sees atomic renames, so a failed hydration leaves no half-extracted tree.

use std::path::{Path, PathBuf};
use std::time::Instant;

use snapshot_builder::{ReadError, ReadLimits, SinkError};

use crate::hub::{HubClient, HubError};
use crate::tree::{ProjectTree, STATE_DIR, TreeError};

#[derive(Debug, thiserror::Error)]
pub enum HydrateError {
    #[error(transparent)]
    Hub(#[from] HubError),
    #[error("the snapshot is invalid: {0}")]
    Archive(#[from] ReadError),
    #[error(transparent)]
    Tree(#[from] TreeError),
    #[error("preparing the staging area: {0}")]
    Io(#[from] std::io::Error),
}

/// What a hydration did.
#[derive(Debug)]
pub struct Hydrated {
    pub cursor: i64,
    pub files: usize,
    pub written: usize,
    pub deleted: usize,
}

/// Hydrates from `url` when given (the session's `SNAPSHOT_URL`), falling back to a fresh
/// `snapshots/latest` URL when that fails (it may have expired); without `url`, from
/// `snapshots/latest`.
pub async fn hydrate(hub: &HubClient, url: Option<&str>, tree: &mut ProjectTree) -> Result<Hydrated, HydrateError> {
    let started = Instant::now();
    let work = work_dir(tree.root_path())?;
    let mut download = tempfile::Builder::new().prefix("download-").tempfile_in(&work)?;
    let mut fetched = false;
    if let Some(url) = url {
        match hub.download(url, download.as_file_mut()).await {
            Ok(_) => fetched = true,
            Err(error) => tracing::warn!(%error, "the session's snapshot URL failed; asking for the latest snapshot"),
        }
    }
    if !fetched {
        let latest = hub.latest_snapshot().await?;
        hub.download(&latest.url, download.as_file_mut()).await?;
    }
    let bytes = download.as_file().metadata()?.len();
    let scratch = tempfile::Builder::new().prefix("staging-").tempdir_in(&work)?;
    let hydrated = tokio::task::block_in_place(|| -> Result<Hydrated, HydrateError> {
        let (manifest, report) =
            tree.hydrate_from(download.as_file_mut(), &ReadLimits::default(), scratch.path()).map_err(|e| match e {
                SinkError::Archive(e) => HydrateError::Archive(e),
                SinkError::Sink(e) => HydrateError::Tree(e),
            })?;
        for refused in &report.refused {
            tracing::warn!(path = refused.path(), error = %refused, "snapshot file skipped");
        }
        tree.save_state(manifest.cursor)?;
        Ok(Hydrated {
            cursor: manifest.cursor,
            files: manifest.files.len(),
            written: report.written.len(),
            deleted: report.deleted.len(),
        })
    })?;
    tracing::info!(
        cursor = hydrated.cursor,
        files = hydrated.files,
        written = hydrated.written,
        deleted = hydrated.deleted,
        bytes,
        ms = started.elapsed().as_millis() as u64,
        "hydrated"
    );
    Ok(hydrated)
}

/// `PROJECT_DIR/.synchub`, which must be a real directory (a symlink there could send
/// the staging tree elsewhere). Leftovers of a crashed agent are removed.
fn work_dir(root: &Path) -> Result<PathBuf, HydrateError> {
    let work = root.join(STATE_DIR);
    match std::fs::symlink_metadata(&work) {
        Ok(meta) if meta.is_dir() => {}
        Ok(_) => {
            // Not ours to keep: a file or a symlink squatting on the reserved name.
            std::fs::remove_file(&work)?;
            std::fs::create_dir(&work)?;
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => std::fs::create_dir(&work)?,
        Err(e) => return Err(e.into()),
    }
    Ok(work)
}

/// Removes staging directories, downloads and fetched blobs a killed agent left behind.
pub fn sweep_leftovers(root: &Path) {
    crate::blobs::clear_cache(&root.join(crate::tree::BLOB_DIR));
    let Ok(entries) = std::fs::read_dir(root.join(STATE_DIR)) else { return };
    for entry in entries.flatten() {
        let name = entry.file_name();
        let name = name.to_string_lossy();
        let Ok(kind) = entry.file_type() else { continue };
        if name.starts_with("staging-") && kind.is_dir() {
            // remove_dir_all removes symlinks inside, never what they point to.
            let _ = std::fs::remove_dir_all(entry.path());
        } else if name.starts_with("download-") && !kind.is_dir() {
            let _ = std::fs::remove_file(entry.path());
        }
    }
}
