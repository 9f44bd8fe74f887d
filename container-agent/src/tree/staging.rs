//! Staging: content goes to a temp file next to its target, then is renamed into place
//! (atomic, and a rename replaces a final-component symlink instead of writing through it).

use std::io::{self, Read, Write};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use cap_fs_ext::{FollowSymlinks, OpenOptionsFollowExt};
use cap_std::fs::{Dir, File, OpenOptions};
use sha2::{Digest, Sha256};
use snapshot_builder::ManifestFile;

use super::confine::{open_dir_path, open_regular, resolve_parent, same_content};
use super::{BLOB_DIR, ProjectTree, TreeError, io_error, is_sha256_hex};
use crate::protocol::BlobRef;

/// Temp files are `.synchub-tmp-<pid>-<n>`, next to their target.
pub(super) const TEMP_PREFIX: &str = ".synchub-tmp-";
const COPY_BUFFER: usize = 64 * 1024;

static TEMP_COUNTER: AtomicU64 = AtomicU64::new(0);

impl ProjectTree {
    /// Stages `content` as a temp file next to `path`, or `None` when the file already
    /// holds content with sha256 `sha`.
    pub(super) fn stage_bytes(&self, path: &str, content: &[u8], sha: &str) -> Result<Option<Staged>, TreeError> {
        let (dir, name) = self.target_dir(path)?;
        if same_content(&dir, name, content.len() as u64, sha) {
            return Ok(None);
        }
        let (mut file, staged) = Staged::create(&self.root, &dir, path)?;
        file.write_all(content).map_err(|e| io_error(path, e))?;
        self.finish_temp(file, staged)
    }

    /// Like [`Self::stage_bytes`], with the content copied from a scratch tree and checked
    /// against the manifest's sha256 on the way.
    pub(super) fn stage_from(&self, staging: &Dir, entry: &ManifestFile) -> Result<Option<Staged>, TreeError> {
        let path = entry.path.as_str();
        let staging_error = |reason: String| TreeError::Staging { path: path.to_owned(), reason };
        let (source_dir, source_name) = resolve_parent(staging, path, false)
            .map_err(|e| staging_error(e.to_string()))?
            .ok_or_else(|| staging_error("missing".into()))?;
        let mut source = open_regular(&source_dir, source_name).map_err(|e| staging_error(e.to_string()))?;
        let len = source.metadata().map_err(|e| staging_error(e.to_string()))?.len();

        let (dir, name) = self.target_dir(path)?;
        if same_content(&dir, name, len, &entry.sha256) {
            return Ok(None);
        }
        let (mut file, staged) = Staged::create(&self.root, &dir, path)?;
        match copy_checked(&mut source, &mut file, &entry.sha256, len) {
            Ok(()) => {}
            Err(CopyError::Source(e)) => return Err(staging_error(e.to_string())),
            Err(CopyError::Target(e)) => return Err(io_error(path, e)),
            Err(CopyError::Mismatch(reason)) => return Err(staging_error(format!("{reason}; not the manifest's"))),
        }
        self.finish_temp(file, staged)
    }

    /// Stages a binary file from the verified blob cache (`.synchub/blobs/<sha256>`, filled
    /// by [`crate::blobs`]), or `None` when the file already holds those bytes. The bytes are
    /// hashed again on the way: a cache file that does not match is removed and nothing is
    /// staged (the caller fetches again).
    pub(super) fn stage_blob(&self, path: &str, blob: &BlobRef) -> Result<Option<Staged>, TreeError> {
        let missing = || TreeError::BlobMissing { path: path.to_owned(), sha256: blob.sha256.clone() };
        if !is_sha256_hex(&blob.sha256) {
            return Err(TreeError::InvalidBlob { path: path.to_owned(), sha256: blob.sha256.clone() });
        }
        let (dir, name) = self.target_dir(path)?;
        if same_content(&dir, name, blob.size.get(), &blob.sha256) {
            return Ok(None);
        }
        let cache = open_dir_path(&self.root, BLOB_DIR, path, false)?.ok_or_else(missing)?;
        let mut source = open_regular(&cache, &blob.sha256).map_err(|_| missing())?;
        let (mut file, staged) = Staged::create(&self.root, &dir, path)?;
        match copy_checked(&mut source, &mut file, &blob.sha256, blob.size.get()) {
            Ok(()) => self.finish_temp(file, staged),
            Err(CopyError::Target(e)) => Err(io_error(path, e)),
            Err(CopyError::Source(_) | CopyError::Mismatch(_)) => {
                let _ = cache.remove_file(&blob.sha256);
                Err(missing())
            }
        }
    }

    pub(super) fn finish_temp(&self, file: File, staged: Staged) -> Result<Option<Staged>, TreeError> {
        if self.options.fsync {
            file.sync_all().map_err(|e| io_error(&staged.path, e))?;
        }
        Ok(Some(staged))
    }

    /// The directory that will hold `path` (created as needed), refusing a directory in
    /// the way of the file itself.
    pub(super) fn target_dir<'p>(&self, path: &'p str) -> Result<(Dir, &'p str), TreeError> {
        #[cfg(test)]
        if self.fail_staging.as_deref() == Some(path) {
            return Err(io_error(path, io::ErrorKind::StorageFull.into()));
        }
        let (dir, name) = resolve_parent(&self.root, path, true)?.expect("resolve_parent creates missing directories");
        match dir.symlink_metadata(name) {
            Ok(meta) if meta.is_dir() => Err(TreeError::Conflict { path: path.to_owned() }),
            _ => Ok((dir, name)),
        }
    }

    /// Renames a staged temp file over its target and marks the path owned.
    pub(super) fn commit(&mut self, mut staged: Staged) -> Result<(), TreeError> {
        staged.rename_into_place()?;
        self.own(&staged.path);
        Ok(())
    }
}

enum CopyError {
    Source(io::Error),
    Target(io::Error),
    /// The bytes read are not `len` bytes with the expected sha256.
    Mismatch(String),
}

/// Copies `source` into `target`, checking on the way that it is exactly `len` bytes with
/// sha256 `sha` (reading at most one byte more than `len`).
fn copy_checked(source: &mut File, target: &mut File, sha: &str, len: u64) -> Result<(), CopyError> {
    let mut hasher = Sha256::new();
    let mut buffer = vec![0u8; COPY_BUFFER];
    let mut copied = 0u64;
    let mut limited = Read::by_ref(source).take(len.saturating_add(1));
    loop {
        let n = match limited.read(&mut buffer) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(CopyError::Source(e)),
        };
        copied += n as u64;
        if copied > len {
            return Err(CopyError::Mismatch(format!("more than {len} bytes")));
        }
        hasher.update(&buffer[..n]);
        target.write_all(&buffer[..n]).map_err(CopyError::Target)?;
    }
    let actual = hex::encode(hasher.finalize());
    if copied != len || !actual.eq_ignore_ascii_case(sha) {
        return Err(CopyError::Mismatch(format!("{copied} bytes with sha256 {actual}")));
    }
    Ok(())
}

/// `.synchub-tmp-<digits>-<digits>`: the names this agent gives its temp files.
pub(super) fn is_temp_name(name: &str) -> bool {
    name.strip_prefix(TEMP_PREFIX).and_then(|rest| rest.split_once('-')).is_some_and(|(pid, n)| {
        !pid.is_empty()
            && !n.is_empty()
            && pid.bytes().all(|b| b.is_ascii_digit())
            && n.bytes().all(|b| b.is_ascii_digit())
    })
}

/// A temp file waiting to be renamed over its target; removed on drop unless committed.
/// It keeps no directory handle open (a bulk may stage thousands of files): its directory
/// is resolved again, without following symlinks, for the rename.
pub(super) struct Staged {
    root: Arc<Dir>,
    temp: String,
    pub(super) path: String,
    committed: bool,
}

impl Staged {
    /// Creates a fresh temp file in `dir`, the parent directory of `path`.
    pub(super) fn create(root: &Arc<Dir>, dir: &Dir, path: &str) -> Result<(File, Staged), TreeError> {
        let mut options = OpenOptions::new();
        options.write(true).create_new(true).follow(FollowSymlinks::No);
        for _ in 0..16 {
            let temp = format!("{TEMP_PREFIX}{}-{}", std::process::id(), TEMP_COUNTER.fetch_add(1, Ordering::Relaxed));
            match dir.open_with(&temp, &options) {
                Ok(file) => {
                    let staged = Staged { root: Arc::clone(root), temp, path: path.to_owned(), committed: false };
                    return Ok((file, staged));
                }
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => continue,
                Err(e) => return Err(io_error(path, e)),
            }
        }
        Err(io_error(path, io::Error::new(io::ErrorKind::AlreadyExists, "no free temp file name")))
    }

    /// Renames the temp file over the target. A rename replaces a symlink at the target
    /// itself; it never writes through it.
    pub(super) fn rename_into_place(&mut self) -> Result<(), TreeError> {
        let (dir, name) = resolve_parent(&self.root, &self.path, false)?.ok_or_else(|| {
            io_error(&self.path, io::Error::new(io::ErrorKind::NotFound, "parent directory vanished"))
        })?;
        match dir.rename(&self.temp, &dir, name) {
            Ok(()) => {
                self.committed = true;
                Ok(())
            }
            Err(e) => match dir.symlink_metadata(name) {
                Ok(meta) if meta.is_dir() => Err(TreeError::Conflict { path: self.path.clone() }),
                _ => Err(io_error(&self.path, e)),
            },
        }
    }
}

impl Drop for Staged {
    fn drop(&mut self) {
        if self.committed {
            return;
        }
        if let Ok(Some((dir, _))) = resolve_parent(&self.root, &self.path, false) {
            let _ = dir.remove_file(&self.temp);
        }
    }
}
