//! The project tree on disk. Every access goes through one directory handle opened on
//! PROJECT_DIR (cap-std), and every path is walked one segment at a time without following
//! symlinks: a symlink planted by the dev server can neither redirect a write or a delete
//! out of PROJECT_DIR nor to another place inside it. Writes are atomic (temp file in the
//! same directory, then rename, which replaces a final-component symlink instead of
//! writing through it). The agent only deletes files it owns: the paths it wrote from
//! snapshots and events, persisted with the last applied `seq` in
//! `.synchub/agent-state.json`.
//!
//! Here: the errors, the outcome types and [`ProjectTree`] with its writes, deletes and
//! change application. Split along its seams: `confine` (symlink-free path walking),
//! `staging` (temp files renamed into place), `ownership` (the owned set and the state
//! file) and `sink` (hydration from a snapshot archive).
//!
//! Everything here is blocking; from async code call it inside `spawn_blocking`.

mod confine;
mod ownership;
mod sink;
mod staging;

use std::collections::{BTreeSet, HashMap};
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use cap_fs_ext::DirExt;
use cap_std::ambient_authority;
use cap_std::fs::Dir;
use sha2::{Digest, Sha256};
use snapshot_builder::paths::{PathError, validate_path};

use crate::protocol::{Change, DeletedFile, UpdatedFile};
use confine::resolve_parent;
use staging::Staged;

pub use ownership::{AgentState, STATE_DIR, STATE_PATH};

/// sha256 of `bytes`, lowercase hex (the hub's `content_hash`).
pub fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

/// Why an operation on one path did not happen. Most errors are refusals
/// ([`TreeError::is_refusal`]): that one path is skipped, the caller logs it and keeps
/// going. The others (a full or read-only disk, a broken staging tree…) stop the change.
#[derive(Debug, thiserror::Error)]
pub enum TreeError {
    #[error("refused path {path:?}: {reason}")]
    InvalidPath { path: String, reason: PathError },
    #[error("refused {path:?}: it resolves through a symlink")]
    Symlink { path: String },
    #[error("refused {path:?}: a directory or a non-directory is in the way")]
    Conflict { path: String },
    #[error("refused {path:?}: content does not match its sha256 {expected}")]
    HashMismatch { path: String, expected: String },
    #[error("staged snapshot file {path:?} is unusable: {reason}")]
    Staging { path: String, reason: String },
    #[error("i/o error on {path:?}: {source}")]
    Io {
        path: String,
        #[source]
        source: io::Error,
    },
}

impl TreeError {
    /// A refusal concerns one path only. Anything else (see [`is_tree_wide`]) means the
    /// tree may now lag behind: the caller retries or rehydrates. Per-path I/O errors
    /// (a name too long for the file system, a directory the dev server made read-only)
    /// are refusals, so that one bad path cannot wedge the agent in a rehydration loop.
    pub fn is_refusal(&self) -> bool {
        match self {
            TreeError::Staging { .. } => false,
            TreeError::Io { source, .. } => !is_tree_wide(source),
            _ => true,
        }
    }

    /// The project path the error is about (empty for PROJECT_DIR itself).
    pub fn path(&self) -> &str {
        match self {
            TreeError::InvalidPath { path, .. }
            | TreeError::Symlink { path }
            | TreeError::Conflict { path }
            | TreeError::HashMismatch { path, .. }
            | TreeError::Staging { path, .. }
            | TreeError::Io { path, .. } => path,
        }
    }
}

/// I/O errors that are about the file system or the process, not about one path.
pub fn is_tree_wide(error: &io::Error) -> bool {
    use io::ErrorKind::*;
    // EIO, ENFILE and EMFILE have these numbers on Linux and the BSDs alike.
    const EIO: i32 = 5;
    const ENFILE: i32 = 23;
    const EMFILE: i32 = 24;
    matches!(error.kind(), StorageFull | QuotaExceeded | ReadOnlyFilesystem | OutOfMemory)
        || matches!(error.raw_os_error(), Some(EIO | ENFILE | EMFILE))
}

fn io_error(path: &str, source: io::Error) -> TreeError {
    TreeError::Io { path: path.to_owned(), source }
}

fn checked(path: &str) -> Result<&str, TreeError> {
    validate_path(path).map_err(|reason| TreeError::InvalidPath { path: path.to_owned(), reason })
}

/// Tuning of a [`ProjectTree`].
#[derive(Debug, Clone)]
pub struct TreeOptions {
    /// fsync each file before renaming it into place (survives power loss; slower).
    pub fsync: bool,
    /// After a delete, remove parent directories that are left empty and hold no owned file.
    pub prune_empty_dirs: bool,
}

impl Default for TreeOptions {
    fn default() -> Self {
        Self { fsync: false, prune_empty_dirs: true }
    }
}

/// Result of [`ProjectTree::write_file`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WriteOutcome {
    Written,
    /// The file already had this content; it was not touched.
    Unchanged,
}

/// Result of [`ProjectTree::delete_file`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeleteOutcome {
    Deleted,
    /// Owned, but already gone.
    Absent,
    /// Not a file the agent wrote: left alone.
    NotOwned,
}

/// What one [`ProjectTree::apply`] or [`ProjectTree::hydrate_from`] did.
#[derive(Debug, Default)]
pub struct ApplyReport {
    pub written: Vec<String>,
    pub unchanged: usize,
    pub deleted: Vec<String>,
    /// Deletes of files the agent does not own (skipped) or that were already gone.
    pub skipped_deletes: usize,
    /// Paths skipped with the reason; log them and keep going.
    pub refused: Vec<TreeError>,
}

/// PROJECT_DIR, seen through one directory handle; see the module documentation.
pub struct ProjectTree {
    root: Arc<Dir>,
    root_path: PathBuf,
    options: TreeOptions,
    owned: BTreeSet<String>,
    restored_seq: Option<i64>,
    /// Bumped whenever `owned` changes, so an unchanged state is not rewritten.
    generation: u64,
    saved: Option<(i64, u64)>,
    /// Test hook: staging this path fails as if the disk were full.
    #[cfg(test)]
    fail_staging: Option<String>,
}

impl std::fmt::Debug for ProjectTree {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ProjectTree")
            .field("root", &self.root_path)
            .field("owned", &self.owned.len())
            .field("restored_seq", &self.restored_seq)
            .finish_non_exhaustive()
    }
}

impl ProjectTree {
    /// Opens (creating it if needed) PROJECT_DIR and restores the owned set from the state
    /// file. An unreadable state file is logged and ignored: the caller then rehydrates.
    pub fn open(project_dir: &Path, options: TreeOptions) -> Result<Self, TreeError> {
        std::fs::create_dir_all(project_dir).map_err(|e| io_error("", e))?;
        let root = Dir::open_ambient_dir(project_dir, ambient_authority()).map_err(|e| io_error("", e))?;
        let mut tree = Self {
            root: Arc::new(root),
            root_path: project_dir.to_owned(),
            options,
            owned: BTreeSet::new(),
            restored_seq: None,
            generation: 0,
            saved: None,
            #[cfg(test)]
            fail_staging: None,
        };
        match tree.load_state() {
            Ok(Some(state)) => {
                tree.owned = state.owned.into_iter().filter(|path| validate_path(path).is_ok()).collect();
                tree.restored_seq = Some(state.applied_seq);
                tree.saved = Some((state.applied_seq, tree.generation));
            }
            Ok(None) => {}
            Err(error) => {
                tracing::warn!(%error, "ignoring unreadable agent state; the tree will be rehydrated");
            }
        }
        tree.sweep_temp_files();
        Ok(tree)
    }

    pub fn root_path(&self) -> &Path {
        &self.root_path
    }

    /// The `applied_seq` found in the state file when the tree was opened.
    pub fn restored_seq(&self) -> Option<i64> {
        self.restored_seq
    }

    /// Writes `content` at `path` atomically and marks it owned; a file that already has
    /// this content is left untouched (same inode, same mtime).
    pub fn write_file(&mut self, path: &str, content: &[u8]) -> Result<WriteOutcome, TreeError> {
        let path = checked(path)?;
        let sha = sha256_hex(content);
        match self.stage_bytes(path, content, &sha)? {
            None => {
                self.own(path);
                Ok(WriteOutcome::Unchanged)
            }
            Some(staged) => {
                self.commit(staged)?;
                Ok(WriteOutcome::Written)
            }
        }
    }

    /// The content of an owned file (the base a delta event applies to), read without
    /// following a symlink; `None` when it is not there, not owned or not readable.
    pub fn read_owned(&self, path: &str, max_bytes: u64) -> Option<Vec<u8>> {
        use std::io::Read as _;
        let path = checked(path).ok()?;
        if !self.owned.contains(path) {
            return None;
        }
        let (dir, name) = confine::resolve_parent(&self.root, path, false).ok()??;
        let file = confine::open_regular(&dir, name).ok()?;
        let mut content = Vec::new();
        file.take(max_bytes + 1).read_to_end(&mut content).ok()?;
        (content.len() as u64 <= max_bytes).then_some(content)
    }

    /// Deletes an owned file (or a symlink that took its place: the link, never its
    /// target). Files the agent does not own are left alone.
    pub fn delete_file(&mut self, path: &str) -> Result<DeleteOutcome, TreeError> {
        let path = checked(path)?;
        if !self.owned.contains(path) {
            return Ok(DeleteOutcome::NotOwned);
        }
        let Some((dir, name)) = resolve_parent(&self.root, path, false)? else {
            self.disown(path);
            return Ok(DeleteOutcome::Absent);
        };
        match dir.symlink_metadata(name) {
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                self.disown(path);
                return Ok(DeleteOutcome::Absent);
            }
            Err(e) => return Err(io_error(path, e)),
            Ok(meta) if meta.is_dir() => {
                return Err(TreeError::Conflict { path: path.to_owned() });
            }
            Ok(_) => {}
        }
        match dir.remove_file_or_symlink(name) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(io_error(path, e)),
        }
        self.disown(path);
        if self.options.prune_empty_dirs {
            self.prune_parents(path);
        }
        Ok(DeleteOutcome::Deleted)
    }

    /// Removes the now-empty parents of `path` that hold no owned file, deepest first.
    fn prune_parents(&self, path: &str) {
        let mut current = path;
        while let Some((parent, _)) = current.rsplit_once('/') {
            let prefix = format!("{parent}/");
            let still_used = self.owned.range(prefix.clone()..).next().is_some_and(|p| p.starts_with(&prefix));
            if still_used {
                return;
            }
            let Ok(Some((dir, name))) = resolve_parent(&self.root, parent, false) else {
                return;
            };
            // rmdir only succeeds on an empty real directory, never on a symlink.
            if dir.remove_dir(name).is_err() {
                return;
            }
            current = parent;
        }
    }

    /// Applies one change. Refused paths are reported and skipped; an I/O error stops
    /// the change and is returned. A bulk is applied as a unit as far as a file system
    /// allows: every new file is written to a temp file first (an I/O error there renames
    /// nothing), then all are renamed into place, then the deletes run. Entries blocked by
    /// a file/directory conflict are retried after the deletes, so a bulk that replaces a
    /// file `a` by `a/b` (or the reverse) works.
    pub fn apply(&mut self, change: &Change) -> Result<ApplyReport, TreeError> {
        let mut report = ApplyReport::default();
        match change {
            Change::Update(update) => self.apply_files(std::slice::from_ref(update), &[], &mut report)?,
            Change::Delete(delete) => self.apply_files(&[], std::slice::from_ref(delete), &mut report)?,
            Change::Bulk(bulk) => self.apply_files(&bulk.files, &bulk.deletes, &mut report)?,
            Change::ProjectDeleted(_) | Change::Other { .. } => {}
        }
        Ok(report)
    }

    fn apply_files(
        &mut self,
        files: &[UpdatedFile],
        deletes: &[DeletedFile],
        report: &mut ApplyReport,
    ) -> Result<(), TreeError> {
        // A path listed twice takes its last content.
        let last: HashMap<&str, usize> = files.iter().enumerate().map(|(i, f)| (f.file_path.as_str(), i)).collect();
        let files = files.iter().enumerate().filter(|(i, f)| last[f.file_path.as_str()] == *i).map(|(_, f)| f);
        let mut staged = Vec::new();
        let mut deferred = Vec::new();
        for file in files {
            match self.stage_update(file) {
                Ok(None) => {
                    self.own(&file.file_path);
                    report.unchanged += 1;
                }
                Ok(Some(s)) => staged.push(s),
                Err(TreeError::Conflict { .. }) => deferred.push(file),
                Err(e) if e.is_refusal() => report.refused.push(e),
                Err(e) => return Err(e),
            }
        }
        self.commit_all(staged, report)?;
        for delete in deletes {
            self.record_delete(&delete.file_path, report)?;
        }
        for file in deferred {
            let staged = self.stage_update(file);
            self.commit_deferred(&file.file_path, staged, report)?;
        }
        Ok(())
    }

    /// Commits an entry that waited for the deletes (a file/directory conflict), staged
    /// only now: renamed into place, or owned as it is when it already matched.
    fn commit_deferred(
        &mut self,
        path: &str,
        staged: Result<Option<Staged>, TreeError>,
        report: &mut ApplyReport,
    ) -> Result<(), TreeError> {
        match staged.and_then(|s| match s {
            None => Ok(false),
            Some(s) => self.commit(s).map(|()| true),
        }) {
            Ok(true) => report.written.push(path.to_owned()),
            Ok(false) => {
                self.own(path);
                report.unchanged += 1;
            }
            Err(e) if e.is_refusal() => report.refused.push(e),
            Err(e) => return Err(e),
        }
        Ok(())
    }

    fn commit_all(&mut self, staged: Vec<Staged>, report: &mut ApplyReport) -> Result<(), TreeError> {
        // On an I/O error the remaining temp files are dropped, which removes them.
        for s in staged {
            let path = s.path.clone();
            match self.commit(s) {
                Ok(()) => report.written.push(path),
                Err(e) if e.is_refusal() => report.refused.push(e),
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }

    fn record_delete(&mut self, path: &str, report: &mut ApplyReport) -> Result<(), TreeError> {
        match self.delete_file(path) {
            Ok(DeleteOutcome::Deleted) => report.deleted.push(path.to_owned()),
            Ok(DeleteOutcome::Absent | DeleteOutcome::NotOwned) => report.skipped_deletes += 1,
            Err(e) if e.is_refusal() => report.refused.push(e),
            Err(e) => return Err(e),
        }
        Ok(())
    }

    fn stage_update(&self, file: &UpdatedFile) -> Result<Option<Staged>, TreeError> {
        let path = checked(&file.file_path)?;
        let sha = sha256_hex(file.content.as_bytes());
        if !sha.eq_ignore_ascii_case(&file.content_hash) {
            return Err(TreeError::HashMismatch { path: path.to_owned(), expected: file.content_hash.clone() });
        }
        self.stage_bytes(path, file.content.as_bytes(), &sha)
    }
}

#[cfg(test)]
mod tests;
