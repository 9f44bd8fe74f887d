//! The project tree on disk. Every access goes through one directory handle opened on
//! PROJECT_DIR (cap-std), and every path is walked one segment at a time without following
//! symlinks: a symlink planted by the dev server can neither redirect a write or a delete
//! out of PROJECT_DIR nor to another place inside it. Writes are atomic (temp file in the
//! same directory, then rename, which replaces a final-component symlink instead of
//! writing through it). The agent only deletes files it owns: the paths it wrote from
//! snapshots and events, persisted with the last applied `seq` in
//! `.synchub/agent-state.json`.
//!
//! Everything here is blocking; from async code call it inside `spawn_blocking`.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::io::{self, Read, Seek, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use cap_fs_ext::{DirExt, FollowSymlinks, OpenOptionsFollowExt, OpenOptionsSyncExt};
use cap_std::ambient_authority;
use cap_std::fs::{Dir, File, OpenOptions};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use snapshot_builder::paths::{PathError, validate_path};
use snapshot_builder::{DirSink, EntrySink, Manifest, ManifestFile, ReadLimits, SinkError};

use crate::protocol::{Change, DeletedFile, UpdatedFile};

/// The reserved directory holding the agent's state (never a project path).
pub const STATE_DIR: &str = ".synchub";
/// The state file, relative to PROJECT_DIR.
pub const STATE_PATH: &str = ".synchub/agent-state.json";
const STATE_FORMAT: u32 = 1;
/// Temp files are `.synchub-tmp-<pid>-<n>`, next to their target.
const TEMP_PREFIX: &str = ".synchub-tmp-";
const COPY_BUFFER: usize = 64 * 1024;

static TEMP_COUNTER: AtomicU64 = AtomicU64::new(0);

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

/// The persisted state: `.synchub/agent-state.json`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AgentState {
    pub format: u32,
    pub applied_seq: i64,
    pub owned: Vec<String>,
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

    pub fn is_owned(&self, path: &str) -> bool {
        self.owned.contains(path)
    }

    /// The files the agent wrote, sorted.
    pub fn owned(&self) -> impl Iterator<Item = &str> {
        self.owned.iter().map(String::as_str)
    }

    /// Marks files as owned without touching them: for a snapshot extracted straight into
    /// PROJECT_DIR, adopt its manifest's paths. Invalid paths are refused and skipped.
    pub fn adopt<'a>(&mut self, paths: impl IntoIterator<Item = &'a str>) -> Vec<TreeError> {
        let mut refused = Vec::new();
        for path in paths {
            match checked(path) {
                Ok(path) => self.own(path),
                Err(e) => refused.push(e),
            }
        }
        refused
    }

    fn own(&mut self, path: &str) {
        if !self.owned.contains(path) {
            self.owned.insert(path.to_owned());
            self.generation += 1;
        }
    }

    fn disown(&mut self, path: &str) {
        if self.owned.remove(path) {
            self.generation += 1;
        }
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

    /// Makes the tree equal to the snapshot `archive`, in one pass over it: each entry is
    /// verified while it is inflated straight into a temp file next to its target (files
    /// already equal are not touched); only when the whole archive checked out are the temp
    /// files renamed into place, then owned files the snapshot lacks are deleted. Files the
    /// agent does not own and that are not in the snapshot are left alone. A bad archive
    /// renames nothing. Entries blocked by a file/directory conflict (a file `a` owned
    /// before, `a/b` now) are parked in `scratch`, an empty directory on the same file
    /// system, and moved in after the deletes.
    pub fn hydrate_from<R: Read + Seek>(
        &mut self,
        archive: R,
        limits: &ReadLimits,
        scratch: &Path,
    ) -> Result<(Manifest, ApplyReport), SinkError<TreeError>> {
        let mut sink = HydrateSink {
            tree: self,
            scratch: DirSink::new(scratch),
            report: ApplyReport::default(),
            staged: Vec::new(),
            deferred: Vec::new(),
            unchanged: Vec::new(),
            known_dirs: HashSet::new(),
            created_dirs: Vec::new(),
            current: Current::Skip,
        };
        let manifest = match snapshot_builder::read_into(archive, limits, &mut sink) {
            Ok(manifest) => manifest,
            Err(error) => {
                // Dropping the sink removes its temp files; then the directories it made.
                let created = std::mem::take(&mut sink.created_dirs);
                drop(sink);
                self.remove_empty_dirs(&created);
                return Err(error);
            }
        };
        let HydrateSink { staged, deferred, unchanged, report, .. } = sink;
        for path in &unchanged {
            self.own(path);
        }
        let report = self.finish_hydrate(&manifest, staged, &deferred, report, scratch).map_err(SinkError::Sink)?;
        Ok((manifest, report))
    }

    /// Removes these directories, deepest first, where they are (still) empty.
    fn remove_empty_dirs(&self, dirs: &[String]) {
        for dir_path in dirs.iter().rev() {
            if let Ok(Some((dir, name))) = resolve_parent(&self.root, dir_path, false) {
                // rmdir only succeeds on an empty real directory, never on a symlink.
                let _ = dir.remove_dir(name);
            }
        }
    }

    /// Pass two of [`Self::hydrate_from`], once the archive checked out.
    fn finish_hydrate(
        &mut self,
        manifest: &Manifest,
        staged: Vec<Staged>,
        deferred: &[ManifestFile],
        mut report: ApplyReport,
        scratch: &Path,
    ) -> Result<ApplyReport, TreeError> {
        self.commit_all(staged, &mut report)?;
        let wanted: BTreeSet<&str> = manifest.files.iter().map(|file| file.path.as_str()).collect();
        let stale: Vec<String> = self.owned.iter().filter(|path| !wanted.contains(path.as_str())).cloned().collect();
        for path in stale {
            self.record_delete(&path, &mut report)?;
        }
        if deferred.is_empty() {
            return Ok(report);
        }
        let scratch_root = Dir::open_ambient_dir(scratch, ambient_authority())
            .map_err(|e| TreeError::Staging { path: String::new(), reason: e.to_string() })?;
        for entry in deferred {
            let staged = self.stage_from(&scratch_root, entry);
            self.commit_deferred(&entry.path, staged, &mut report)?;
        }
        Ok(report)
    }

    /// Stages `content` as a temp file next to `path`, or `None` when the file already
    /// holds content with sha256 `sha`.
    fn stage_bytes(&self, path: &str, content: &[u8], sha: &str) -> Result<Option<Staged>, TreeError> {
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
    fn stage_from(&self, staging: &Dir, entry: &ManifestFile) -> Result<Option<Staged>, TreeError> {
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
        let mut hasher = Sha256::new();
        let mut buffer = vec![0u8; COPY_BUFFER];
        loop {
            let n = match source.read(&mut buffer) {
                Ok(0) => break,
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(staging_error(e.to_string())),
            };
            hasher.update(&buffer[..n]);
            file.write_all(&buffer[..n]).map_err(|e| io_error(path, e))?;
        }
        let actual = hex::encode(hasher.finalize());
        if !actual.eq_ignore_ascii_case(&entry.sha256) {
            return Err(staging_error(format!("sha256 {actual} does not match the manifest")));
        }
        self.finish_temp(file, staged)
    }

    fn finish_temp(&self, file: File, staged: Staged) -> Result<Option<Staged>, TreeError> {
        if self.options.fsync {
            file.sync_all().map_err(|e| io_error(&staged.path, e))?;
        }
        Ok(Some(staged))
    }

    /// The directory that will hold `path` (created as needed), refusing a directory in
    /// the way of the file itself.
    fn target_dir<'p>(&self, path: &'p str) -> Result<(Dir, &'p str), TreeError> {
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
    fn commit(&mut self, mut staged: Staged) -> Result<(), TreeError> {
        staged.rename_into_place()?;
        self.own(&staged.path);
        Ok(())
    }

    /// Reads the state file; `Ok(None)` when there is none.
    pub fn load_state(&self) -> Result<Option<AgentState>, TreeError> {
        let Some((dir, name)) = resolve_parent(&self.root, STATE_PATH, false)? else {
            return Ok(None);
        };
        let mut file = match open_regular(&dir, name) {
            Ok(file) => file,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(io_error(STATE_PATH, e)),
        };
        let mut text = Vec::new();
        file.read_to_end(&mut text).map_err(|e| io_error(STATE_PATH, e))?;
        let state: AgentState = serde_json::from_slice(&text)
            .map_err(|e| io_error(STATE_PATH, io::Error::new(io::ErrorKind::InvalidData, e)))?;
        if state.format != STATE_FORMAT {
            return Err(io_error(STATE_PATH, io::Error::new(io::ErrorKind::InvalidData, "unknown state format")));
        }
        Ok(Some(state))
    }

    /// Persists the owned set with `applied_seq`, atomically. Returns false (and writes
    /// nothing) when neither changed since the last save. Saving less often than every
    /// event is safe: replaying events from an older `seq` converges to the same tree.
    pub fn save_state(&mut self, applied_seq: i64) -> Result<bool, TreeError> {
        if self.saved == Some((applied_seq, self.generation)) {
            return Ok(false);
        }
        let state = AgentState { format: STATE_FORMAT, applied_seq, owned: self.owned.iter().cloned().collect() };
        let json = serde_json::to_vec(&state).expect("agent state always serializes");
        let (dir, _) =
            resolve_parent(&self.root, STATE_PATH, true)?.expect("resolve_parent creates missing directories");
        let (mut file, mut staged) = Staged::create(&self.root, &dir, STATE_PATH)?;
        file.write_all(&json).map_err(|e| io_error(STATE_PATH, e))?;
        if self.options.fsync {
            file.sync_all().map_err(|e| io_error(STATE_PATH, e))?;
        }
        drop(file);
        staged.rename_into_place()?;
        self.saved = Some((applied_seq, self.generation));
        Ok(true)
    }

    /// Removes temp files a crashed agent left next to owned files and in `.synchub/`.
    fn sweep_temp_files(&self) {
        let mut dirs: BTreeSet<&str> = BTreeSet::new();
        dirs.insert("");
        dirs.insert(STATE_DIR);
        for path in &self.owned {
            let mut current = path.as_str();
            while let Some((parent, _)) = current.rsplit_once('/') {
                dirs.insert(parent);
                current = parent;
            }
        }
        for dir_path in dirs {
            let Ok(Some(dir)) = open_dir_path(&self.root, dir_path, dir_path, false) else { continue };
            let Ok(entries) = dir.entries() else { continue };
            for entry in entries.flatten() {
                let name = entry.file_name();
                let Some(name) = name.to_str() else { continue };
                let owned_path = if dir_path.is_empty() { name.to_owned() } else { format!("{dir_path}/{name}") };
                if is_temp_name(name)
                    && !self.owned.contains(&owned_path)
                    && entry.file_type().is_ok_and(|t| t.is_file())
                {
                    let _ = dir.remove_file(name);
                }
            }
        }
    }
}

/// `.synchub-tmp-<digits>-<digits>`: the names this agent gives its temp files.
fn is_temp_name(name: &str) -> bool {
    name.strip_prefix(TEMP_PREFIX).and_then(|rest| rest.split_once('-')).is_some_and(|(pid, n)| {
        !pid.is_empty()
            && !n.is_empty()
            && pid.bytes().all(|b| b.is_ascii_digit())
            && n.bytes().all(|b| b.is_ascii_digit())
    })
}

/// Pass one of [`ProjectTree::hydrate_from`], fed by the snapshot reader.
struct HydrateSink<'t> {
    tree: &'t mut ProjectTree,
    scratch: DirSink<'t>,
    report: ApplyReport,
    /// Verified temp files, renamed into place once the whole archive checked out (dropped,
    /// and so removed, when it did not).
    staged: Vec<Staged>,
    /// Entries parked in the scratch directory behind a file/directory conflict.
    deferred: Vec<ManifestFile>,
    /// Files already holding their content: owned only once the archive checked out (an
    /// owned file may be deleted by a later hydration).
    unchanged: Vec<String>,
    /// Directories seen to exist (or made) so far, so each is looked at once.
    known_dirs: HashSet<String>,
    /// Directories this pass made, parents first: a rejected archive leaves none behind.
    created_dirs: Vec<String>,
    current: Current,
}

/// Where the bytes of the entry being read go.
enum Current {
    Skip,
    Temp(File, Staged),
    /// Parked in the scratch directory (the entry's path, for errors).
    Scratch(String),
}

impl HydrateSink<'_> {
    /// Opens the temp file for `file`, `None` when the target already holds its content.
    fn start(&mut self, file: &ManifestFile) -> Result<Option<Current>, TreeError> {
        self.note_missing_dirs(&file.path);
        let (dir, name) = self.tree.target_dir(&file.path)?;
        if same_content(&dir, name, file.size, &file.sha256) {
            return Ok(None);
        }
        let (temp, staged) = Staged::create(&self.tree.root, &dir, &file.path)?;
        Ok(Some(Current::Temp(temp, staged)))
    }

    /// Records which of `path`'s parent directories do not exist yet (`target_dir` is about
    /// to make them). Entries come in path order, so this looks at each directory once.
    fn note_missing_dirs(&mut self, path: &str) {
        let mut missing = false;
        for (at, _) in path.match_indices('/') {
            let dir_path = &path[..at];
            if self.known_dirs.contains(dir_path) {
                continue;
            }
            missing = missing
                || !matches!(resolve_parent(&self.tree.root, dir_path, false),
                    Ok(Some((dir, name))) if dir.symlink_metadata(name).is_ok());
            if missing {
                self.created_dirs.push(dir_path.to_owned());
            }
            self.known_dirs.insert(dir_path.to_owned());
        }
    }

    /// Skips the rest of the current entry and reports `error` when it is a refusal.
    fn refuse(&mut self, error: TreeError) -> Result<(), TreeError> {
        self.current = Current::Skip;
        if error.is_refusal() {
            self.report.refused.push(error);
            Ok(())
        } else {
            Err(error)
        }
    }
}

impl EntrySink for HydrateSink<'_> {
    type Error = TreeError;

    fn begin(&mut self, file: &ManifestFile) -> Result<bool, TreeError> {
        let scratch_error = |e: io::Error| TreeError::Staging { path: file.path.clone(), reason: e.to_string() };
        match self.start(file) {
            Ok(Some(current)) => self.current = current,
            Ok(None) => {
                self.unchanged.push(file.path.clone());
                self.report.unchanged += 1;
                self.current = Current::Skip;
            }
            Err(TreeError::Conflict { .. }) => {
                self.scratch.begin(file).map_err(scratch_error)?;
                self.deferred.push(file.clone());
                self.current = Current::Scratch(file.path.clone());
            }
            Err(error) => self.refuse(error)?,
        }
        Ok(!matches!(self.current, Current::Skip))
    }

    fn write(&mut self, chunk: &[u8]) -> Result<(), TreeError> {
        match &mut self.current {
            Current::Skip => Ok(()),
            Current::Temp(temp, staged) => match temp.write_all(chunk) {
                Ok(()) => Ok(()),
                Err(e) => {
                    let error = io_error(&staged.path, e);
                    self.refuse(error)
                }
            },
            Current::Scratch(path) => {
                self.scratch.write(chunk).map_err(|e| TreeError::Staging { path: path.clone(), reason: e.to_string() })
            }
        }
    }

    fn finish(&mut self, file: &ManifestFile) -> Result<(), TreeError> {
        match std::mem::replace(&mut self.current, Current::Skip) {
            Current::Skip => Ok(()),
            Current::Temp(temp, staged) => match self.tree.finish_temp(temp, staged) {
                Ok(staged) => {
                    self.staged.extend(staged);
                    Ok(())
                }
                Err(error) => self.refuse(error),
            },
            Current::Scratch(_) => self
                .scratch
                .finish(file)
                .map_err(|e| TreeError::Staging { path: file.path.clone(), reason: e.to_string() }),
        }
    }
}

/// A temp file waiting to be renamed over its target; removed on drop unless committed.
/// It keeps no directory handle open (a bulk may stage thousands of files): its directory
/// is resolved again, without following symlinks, for the rename.
struct Staged {
    root: Arc<Dir>,
    temp: String,
    path: String,
    committed: bool,
}

impl Staged {
    /// Creates a fresh temp file in `dir`, the parent directory of `path`.
    fn create(root: &Arc<Dir>, dir: &Dir, path: &str) -> Result<(File, Staged), TreeError> {
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
    fn rename_into_place(&mut self) -> Result<(), TreeError> {
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

/// Opens the directory holding `path`'s last segment, one segment at a time, never
/// following a symlink. `Ok(None)`: a parent is missing and `create` is false.
fn resolve_parent<'p>(root: &Dir, path: &'p str, create: bool) -> Result<Option<(Dir, &'p str)>, TreeError> {
    match path.rsplit_once('/') {
        Some((parents, name)) => Ok(open_dir_path(root, parents, path, create)?.map(|dir| (dir, name))),
        None => Ok(Some((root.try_clone().map_err(|e| io_error(path, e))?, path))),
    }
}

/// Opens the directory `dir_path` ("" is `root`) one segment at a time, never following a
/// symlink; errors name `path`. `Ok(None)`: a directory is missing and `create` is false.
fn open_dir_path(root: &Dir, dir_path: &str, path: &str, create: bool) -> Result<Option<Dir>, TreeError> {
    let mut dir = root.try_clone().map_err(|e| io_error(path, e))?;
    for segment in dir_path.split('/').filter(|s| !s.is_empty()) {
        dir = match dir.open_dir_nofollow(segment) {
            Ok(sub) => sub,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                if !create {
                    return Ok(None);
                }
                match dir.create_dir(segment) {
                    Ok(()) => {}
                    Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
                    Err(e) => return Err(classify(&dir, segment, path, e)),
                }
                dir.open_dir_nofollow(segment).map_err(|e| classify(&dir, segment, path, e))?
            }
            Err(e) => return Err(classify(&dir, segment, path, e)),
        };
    }
    Ok(Some(dir))
}

/// Names the reason a directory segment could not be opened.
fn classify(dir: &Dir, segment: &str, path: &str, error: io::Error) -> TreeError {
    match dir.symlink_metadata(segment) {
        Ok(meta) if meta.file_type().is_symlink() => TreeError::Symlink { path: path.to_owned() },
        Ok(meta) if !meta.is_dir() => TreeError::Conflict { path: path.to_owned() },
        _ => io_error(path, error),
    }
}

/// Opens a regular file for reading without following a symlink and without blocking on
/// a FIFO someone put in its place.
fn open_regular(dir: &Dir, name: &str) -> io::Result<File> {
    let mut options = OpenOptions::new();
    options.read(true).follow(FollowSymlinks::No).nonblock(true);
    let file = dir.open_with(name, &options)?;
    if !file.metadata()?.is_file() {
        return Err(io::Error::new(io::ErrorKind::InvalidInput, "not a regular file"));
    }
    Ok(file)
}

/// Whether `dir/name` is a regular file of `len` bytes with sha256 `sha`.
fn same_content(dir: &Dir, name: &str, len: u64, sha: &str) -> bool {
    match dir.symlink_metadata(name) {
        Ok(meta) if meta.is_file() && meta.len() == len => {}
        _ => return false,
    }
    let Ok(mut file) = open_regular(dir, name) else {
        return false;
    };
    let mut hasher = Sha256::new();
    if io::copy(&mut file, &mut hasher).is_err() {
        return false;
    }
    hex::encode(hasher.finalize()).eq_ignore_ascii_case(sha)
}

#[cfg(test)]
mod tests;
