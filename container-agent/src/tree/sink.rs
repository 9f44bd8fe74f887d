//! The hydrate sink: pass one of [`ProjectTree::hydrate_from`] verifies each snapshot entry
//! while inflating it into a temp file next to its target; pass two renames them into place
//! and deletes owned files the snapshot lacks.

use std::collections::{BTreeSet, HashSet};
use std::io::{self, Read, Seek, Write};
use std::path::Path;

use cap_std::ambient_authority;
use cap_std::fs::{Dir, File};
use snapshot_builder::{DirSink, EntrySink, Manifest, ManifestFile, ReadLimits, SinkError};

use super::confine::{resolve_parent, same_content};
use super::staging::Staged;
use super::{ApplyReport, ProjectTree, TreeError, io_error};

impl ProjectTree {
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
