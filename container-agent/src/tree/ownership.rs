//! Ownership: the agent only deletes files it wrote (from snapshots and events); that set
//! is persisted with the last applied `seq` in `.synchub/agent-state.json`.

use std::collections::BTreeSet;
use std::io::{self, Read, Write};

use serde::{Deserialize, Serialize};

use super::confine::{open_dir_path, open_regular, resolve_parent};
use super::staging::{Staged, is_temp_name};
use super::{ProjectTree, TreeError, checked, io_error};

/// The reserved directory holding the agent's state (never a project path).
pub const STATE_DIR: &str = ".synchub";
/// The state file, relative to PROJECT_DIR.
pub const STATE_PATH: &str = ".synchub/agent-state.json";
const STATE_FORMAT: u32 = 1;

/// The persisted state: `.synchub/agent-state.json`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AgentState {
    pub format: u32,
    pub applied_seq: i64,
    pub owned: Vec<String>,
}

impl ProjectTree {
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

    pub(super) fn own(&mut self, path: &str) {
        if !self.owned.contains(path) {
            self.owned.insert(path.to_owned());
            self.generation += 1;
        }
    }

    pub(super) fn disown(&mut self, path: &str) {
        if self.owned.remove(path) {
            self.generation += 1;
        }
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
    pub(super) fn sweep_temp_files(&self) {
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
