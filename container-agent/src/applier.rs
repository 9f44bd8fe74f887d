//! The agent's sequencing state machine, free of sockets and clocks: it admits events in
//! `seq` order (duplicates ignored, a gap reported so the caller rehydrates), hands each
//! change to a [`ChangeTarget`] (the [`ProjectTree`] in production), and says when an
//! `applied` frame is due: at most every [`APPLIED_INTERVAL`], and soon after the last
//! event of a burst (the caller sleeps until [`Applier::applied_deadline`]). A replayed
//! backlog can be applied as one batch ([`Applier::handle_batch`]) that writes each path
//! once, in its last state ([`coalesce`]).

use std::collections::HashMap;
use std::time::{Duration, Instant};

use crate::protocol::{BulkApplyPayload, Change, DeletedFile, EventFrame, UpdatedFile};
use crate::tree::{ApplyReport, ProjectTree, TreeError};

/// Minimum time between two `applied` frames (CONTRACT section 6).
pub const APPLIED_INTERVAL: Duration = Duration::from_millis(100);

/// Whatever changes can be applied to: the project tree, or a model in tests.
pub trait ChangeTarget {
    fn apply_change(&mut self, change: &Change) -> Result<ApplyReport, TreeError>;
}

impl ChangeTarget for ProjectTree {
    fn apply_change(&mut self, change: &Change) -> Result<ApplyReport, TreeError> {
        self.apply(change)
    }
}

/// Where an incoming `seq` stands relative to the applied one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admission {
    /// The next event: apply it.
    Next,
    /// Already applied: ignore it.
    Duplicate,
    /// Events are missing: rehydrate (or rejoin with `since = applied_seq`).
    Gap { expected: i64, got: i64 },
}

/// What [`Applier::handle`] did with one event.
#[derive(Debug)]
pub enum Outcome {
    /// Applied; refused paths (if any) are in the report, for the caller to log.
    Applied(ApplyReport),
    Duplicate,
    Gap {
        expected: i64,
        got: i64,
    },
    /// The project was deleted; its `seq` counts as applied. The caller decides what
    /// to do (typically stop applying and exit).
    ProjectDeleted,
}

#[derive(Debug, thiserror::Error)]
pub enum ApplyError {
    /// A known event whose payload does not parse; `applied_seq` did not move.
    #[error("event {seq} ({event}) has a malformed payload: {source}")]
    Malformed {
        seq: i64,
        event: String,
        #[source]
        source: serde_json::Error,
    },
    /// The tree could not be changed (not a mere refusal); `applied_seq` did not move.
    #[error(transparent)]
    Tree(#[from] TreeError),
}

/// See the module documentation.
#[derive(Debug, Clone)]
pub struct Applier {
    applied_seq: i64,
    /// The seq last sent in an `applied` frame; `None` until one is sent.
    reported_seq: Option<i64>,
    last_frame_at: Option<Instant>,
}

impl Applier {
    /// Starts at `applied_seq` (a snapshot's cursor, or the seq restored from the state
    /// file). The first `applied` frame is due at once.
    pub fn new(applied_seq: i64) -> Self {
        Self { applied_seq, reported_seq: None, last_frame_at: None }
    }

    pub fn applied_seq(&self) -> i64 {
        self.applied_seq
    }

    /// The `since` of the next join.
    pub fn since(&self) -> i64 {
        self.applied_seq
    }

    pub fn admit(&self, seq: i64) -> Admission {
        let expected = self.applied_seq + 1;
        if seq < expected {
            Admission::Duplicate
        } else if seq == expected {
            Admission::Next
        } else {
            Admission::Gap { expected, got: seq }
        }
    }

    /// Applies `change` if `seq` is the next one. On an error `applied_seq` stays put, so
    /// the event may be applied again (applying is idempotent).
    pub fn handle<T: ChangeTarget + ?Sized>(
        &mut self,
        target: &mut T,
        seq: i64,
        change: &Change,
    ) -> Result<Outcome, TreeError> {
        match self.admit(seq) {
            Admission::Duplicate => return Ok(Outcome::Duplicate),
            Admission::Gap { expected, got } => return Ok(Outcome::Gap { expected, got }),
            Admission::Next => {}
        }
        let outcome = match change {
            Change::ProjectDeleted(_) => Outcome::ProjectDeleted,
            _ => Outcome::Applied(target.apply_change(change)?),
        };
        self.applied_seq = seq;
        Ok(outcome)
    }

    /// Applies the consecutive changes of seqs `first_seq..` as one: each path is written
    /// (or deleted) once, in its last state, and `applied_seq` moves to the last seq. The
    /// tree ends as if each had been applied in turn. Admission is that of `first_seq`.
    pub fn handle_batch<T: ChangeTarget + ?Sized>(
        &mut self,
        target: &mut T,
        first_seq: i64,
        changes: &[Change],
    ) -> Result<Outcome, TreeError> {
        match self.admit(first_seq) {
            Admission::Duplicate => return Ok(Outcome::Duplicate),
            Admission::Gap { expected, got } => return Ok(Outcome::Gap { expected, got }),
            Admission::Next => {}
        }
        let report = target.apply_change(&coalesce(changes))?;
        self.applied_seq = first_seq + changes.len() as i64 - 1;
        Ok(Outcome::Applied(report))
    }

    /// [`Self::handle`] for an `event` frame; the payload of a duplicate is not even parsed.
    pub fn handle_event<T: ChangeTarget + ?Sized>(
        &mut self,
        target: &mut T,
        frame: &EventFrame,
    ) -> Result<Outcome, ApplyError> {
        match self.admit(frame.seq) {
            Admission::Duplicate => return Ok(Outcome::Duplicate),
            Admission::Gap { expected, got } => return Ok(Outcome::Gap { expected, got }),
            Admission::Next => {}
        }
        let change = Change::of(frame).map_err(|source| ApplyError::Malformed {
            seq: frame.seq,
            event: frame.event.clone(),
            source,
        })?;
        Ok(self.handle(target, frame.seq, &change)?)
    }

    /// After a rehydration to a snapshot whose cursor is `seq`: continue from there (even
    /// backwards) and report it at once.
    pub fn rebase(&mut self, seq: i64) {
        self.applied_seq = seq;
        self.reported_seq = None;
    }

    /// After a reconnect the hub knows nothing of this session's progress: report again.
    pub fn resend_applied(&mut self) {
        self.reported_seq = None;
    }

    fn unreported(&self) -> bool {
        self.reported_seq != Some(self.applied_seq)
    }

    /// The seq to send in an `applied` frame now, if one is due: there is unreported
    /// progress and the last frame went out at least [`APPLIED_INTERVAL`] ago. Calling it
    /// after every event throttles a burst to one frame per interval; when it answers
    /// `None` with progress pending, sleep until [`Self::applied_deadline`] and call again,
    /// which sends the last event of a burst. A returned seq counts as sent.
    pub fn applied_frame_due(&mut self, now: Instant) -> Option<i64> {
        if !self.unreported() {
            return None;
        }
        if let Some(at) = self.last_frame_at
            && now.saturating_duration_since(at) < APPLIED_INTERVAL
        {
            return None;
        }
        self.reported_seq = Some(self.applied_seq);
        self.last_frame_at = Some(now);
        Some(self.applied_seq)
    }

    /// When the pending `applied` frame becomes due (`now` if it already is); `None` when
    /// everything is reported.
    pub fn applied_deadline(&self, now: Instant) -> Option<Instant> {
        if !self.unreported() {
            return None;
        }
        Some(match self.last_frame_at {
            Some(at) => (at + APPLIED_INTERVAL).max(now),
            None => now,
        })
    }
}

/// One bulk with the same effect on a tree as `changes` applied in order: each path's last
/// state only (a bulk writes its files before its deletes, so a path both written and
/// deleted by one bulk ends deleted, as here). Events that change no file add nothing.
pub fn coalesce(changes: &[Change]) -> Change {
    enum Last<'a> {
        Written(&'a UpdatedFile),
        Deleted(&'a DeletedFile),
    }
    // In order of each path's last change; a path changed again drops its earlier slot.
    let mut slots: Vec<Option<(&str, Last)>> = Vec::new();
    let mut slot_of: HashMap<&str, usize> = HashMap::new();
    for change in changes {
        let (files, deletes): (&[UpdatedFile], &[DeletedFile]) = match change {
            Change::Update(file) => (std::slice::from_ref(file), &[]),
            Change::Delete(delete) => (&[], std::slice::from_ref(delete)),
            Change::Bulk(bulk) => (&bulk.files, &bulk.deletes),
            Change::ProjectDeleted(_) | Change::Other { .. } => (&[], &[]),
        };
        let touched = files
            .iter()
            .map(|f| (f.file_path.as_str(), Last::Written(f)))
            .chain(deletes.iter().map(|d| (d.file_path.as_str(), Last::Deleted(d))));
        for (path, last) in touched {
            if let Some(old) = slot_of.insert(path, slots.len()) {
                slots[old] = None;
            }
            slots.push(Some((path, last)));
        }
    }
    let mut bulk = BulkApplyPayload {
        files: Vec::new(),
        deletes: Vec::new(),
        timestamp: String::new(),
        actor: String::new(),
        op_id: None,
    };
    for (_, last) in slots.into_iter().flatten() {
        match last {
            Last::Written(file) => bulk.files.push(file.clone()),
            Last::Deleted(delete) => bulk.deletes.push(delete.clone()),
        }
    }
    Change::Bulk(bulk)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::{DeletedFile, ProjectDeletedPayload, UpdatedFile};
    use serde_json::json;

    /// Records what it was asked to apply; fails when told to.
    #[derive(Default)]
    struct Recorder {
        applied: Vec<Change>,
        fail_next: bool,
    }

    impl ChangeTarget for Recorder {
        fn apply_change(&mut self, change: &Change) -> Result<ApplyReport, TreeError> {
            if std::mem::take(&mut self.fail_next) {
                return Err(TreeError::Io { path: "x".into(), source: std::io::Error::other("disk full") });
            }
            self.applied.push(change.clone());
            Ok(ApplyReport::default())
        }
    }

    fn delete(path: &str) -> Change {
        Change::Delete(DeletedFile { file_path: path.into(), version: 1 })
    }

    #[test]
    fn admits_in_order_ignores_duplicates_reports_gaps() {
        let mut applier = Applier::new(10);
        let mut target = Recorder::default();
        assert_eq!(applier.admit(10), Admission::Duplicate);
        assert_eq!(applier.admit(11), Admission::Next);
        assert_eq!(applier.admit(13), Admission::Gap { expected: 11, got: 13 });

        assert!(matches!(applier.handle(&mut target, 11, &delete("a")).unwrap(), Outcome::Applied(_)));
        assert!(matches!(applier.handle(&mut target, 11, &delete("a")).unwrap(), Outcome::Duplicate));
        assert!(matches!(applier.handle(&mut target, 3, &delete("a")).unwrap(), Outcome::Duplicate));
        assert!(matches!(
            applier.handle(&mut target, 14, &delete("b")).unwrap(),
            Outcome::Gap { expected: 12, got: 14 }
        ));
        assert_eq!(applier.applied_seq(), 11);
        assert_eq!(target.applied, vec![delete("a")]);
    }

    #[test]
    fn a_failed_apply_does_not_advance() {
        let mut applier = Applier::new(0);
        let mut target = Recorder { fail_next: true, ..Default::default() };
        assert!(applier.handle(&mut target, 1, &delete("a")).is_err());
        assert_eq!(applier.applied_seq(), 0);
        assert!(matches!(applier.handle(&mut target, 1, &delete("a")).unwrap(), Outcome::Applied(_)));
        assert_eq!(applier.applied_seq(), 1);
    }

    #[test]
    fn project_deleted_and_unknown_events_consume_their_seq() {
        let mut applier = Applier::new(0);
        let mut target = Recorder::default();
        let other = Change::Other { event: "presence:x".into() };
        assert!(matches!(applier.handle(&mut target, 1, &other).unwrap(), Outcome::Applied(_)));
        let deleted = Change::ProjectDeleted(ProjectDeletedPayload { timestamp: String::new() });
        assert!(matches!(applier.handle(&mut target, 2, &deleted).unwrap(), Outcome::ProjectDeleted));
        assert_eq!(applier.applied_seq(), 2);
        assert_eq!(target.applied, vec![other]);
    }

    #[test]
    fn handle_event_parses_only_what_it_applies() {
        let mut applier = Applier::new(5);
        let mut target = Recorder::default();
        let frame = |seq: i64, payload: serde_json::Value| EventFrame {
            channel: "c".into(),
            seq,
            event: "file:update".into(),
            payload,
        };
        // A duplicate with a broken payload is ignored, not an error.
        assert!(matches!(applier.handle_event(&mut target, &frame(5, json!({}))).unwrap(), Outcome::Duplicate));
        let err = applier.handle_event(&mut target, &frame(6, json!({"file_path": "a"}))).unwrap_err();
        assert!(matches!(err, ApplyError::Malformed { seq: 6, .. }));
        assert_eq!(applier.applied_seq(), 5);

        let good = json!({"file_path":"a","content":"x","content_hash":"h","version":1});
        applier.handle_event(&mut target, &frame(6, good)).unwrap();
        assert_eq!(applier.applied_seq(), 6);
        assert!(matches!(&target.applied[0], Change::Update(UpdatedFile { file_path, .. }) if file_path == "a"));
    }

    #[test]
    fn first_applied_frame_is_due_at_once() {
        let mut applier = Applier::new(7);
        let t0 = Instant::now();
        assert_eq!(applier.applied_deadline(t0), Some(t0));
        assert_eq!(applier.applied_frame_due(t0), Some(7));
        assert_eq!(applier.applied_frame_due(t0 + Duration::from_secs(5)), None);
        assert_eq!(applier.applied_deadline(t0), None);
    }

    #[test]
    fn a_burst_is_throttled_and_its_last_event_reported() {
        let mut applier = Applier::new(0);
        let mut target = Recorder::default();
        let t0 = Instant::now();
        assert_eq!(applier.applied_frame_due(t0), Some(0));

        // 10 events, 15 ms apart, starting 200 ms later: frames at most every 100 ms.
        let start = t0 + Duration::from_millis(200);
        let mut sent = Vec::new();
        for seq in 1..=10 {
            let now = start + Duration::from_millis(15 * (seq as u64 - 1));
            applier.handle(&mut target, seq, &delete("a")).unwrap();
            if let Some(s) = applier.applied_frame_due(now) {
                sent.push((s, now));
            }
        }
        assert_eq!(sent.len(), 2, "{sent:?}");
        assert_eq!(sent[0].0, 1);
        assert_eq!(sent[1].0, 8);
        assert!(sent[1].1 - sent[0].1 >= APPLIED_INTERVAL);

        // The burst ended at seq 10, not yet reported: the deadline tells when.
        let burst_end = start + Duration::from_millis(15 * 9);
        let deadline = applier.applied_deadline(burst_end).expect("pending progress");
        assert_eq!(deadline, sent[1].1 + APPLIED_INTERVAL);
        assert_eq!(applier.applied_frame_due(deadline - Duration::from_millis(1)), None);
        assert_eq!(applier.applied_frame_due(deadline), Some(10));
        assert_eq!(applier.applied_deadline(deadline), None);
    }

    #[test]
    fn an_isolated_event_is_reported_immediately() {
        let mut applier = Applier::new(0);
        let mut target = Recorder::default();
        let t0 = Instant::now();
        assert_eq!(applier.applied_frame_due(t0), Some(0));
        let later = t0 + Duration::from_secs(3);
        applier.handle(&mut target, 1, &delete("a")).unwrap();
        assert_eq!(applier.applied_frame_due(later), Some(1));
    }

    #[test]
    fn rebase_and_reconnect_report_again() {
        let mut applier = Applier::new(3);
        let t0 = Instant::now();
        assert_eq!(applier.applied_frame_due(t0), Some(3));
        applier.resend_applied();
        assert_eq!(applier.applied_frame_due(t0 + APPLIED_INTERVAL), Some(3));
        applier.rebase(50);
        assert_eq!(applier.since(), 50);
        assert_eq!(applier.admit(51), Admission::Next);
        assert_eq!(applier.applied_frame_due(t0 + APPLIED_INTERVAL * 2), Some(50));
    }

    /// Random event streams applied to a real tree must leave exactly the model's files,
    /// whatever duplicates and gaps the stream contains.
    mod model {
        use std::collections::BTreeMap;
        use std::fs;
        use std::path::Path;

        use proptest::prelude::*;

        use super::*;
        use crate::protocol::BulkApplyPayload;
        use crate::tree::{ProjectTree, TreeOptions, sha256_hex};

        const PATHS: [&str; 6] = ["a.ts", "b.md", "src/c.ts", "src/d/e.ts", "f/g/h.txt", "i"];
        const CONTENTS: [&str; 4] = ["", "one", "two\n", "three three"];

        #[derive(Debug, Clone)]
        enum Op {
            Update(usize, usize),
            Delete(usize),
            Bulk(Vec<(usize, usize)>, Vec<usize>),
        }

        #[derive(Debug, Clone)]
        enum Step {
            /// The next event.
            Event(Op),
            /// Replays the n-th earlier event (a duplicate).
            Replay(usize),
            /// An event whose seq skips ahead (it must be refused as a gap).
            Skip(Op),
        }

        fn op() -> impl Strategy<Value = Op> {
            let path = 0..PATHS.len();
            let content = 0..CONTENTS.len();
            prop_oneof![
                4 => (path.clone(), content.clone()).prop_map(|(p, c)| Op::Update(p, c)),
                2 => path.clone().prop_map(Op::Delete),
                1 => (
                    prop::collection::vec((path.clone(), content), 0..4),
                    prop::collection::vec(path, 0..3)
                )
                    .prop_map(|(files, deletes)| Op::Bulk(files, deletes)),
            ]
        }

        fn step() -> impl Strategy<Value = Step> {
            prop_oneof![
                8 => op().prop_map(Step::Event),
                1 => (0usize..64).prop_map(Step::Replay),
                1 => op().prop_map(Step::Skip),
            ]
        }

        fn file(p: usize, c: usize) -> UpdatedFile {
            UpdatedFile {
                file_path: PATHS[p].into(),
                file_type: String::new(),
                content: CONTENTS[c].into(),
                content_hash: sha256_hex(CONTENTS[c].as_bytes()),
                version: 1,
                blob: None,
            }
        }

        fn gone(p: usize) -> DeletedFile {
            DeletedFile { file_path: PATHS[p].into(), version: 1 }
        }

        fn change(op: &Op) -> Change {
            match op {
                Op::Update(p, c) => Change::Update(file(*p, *c)),
                Op::Delete(p) => Change::Delete(gone(*p)),
                Op::Bulk(files, deletes) => Change::Bulk(BulkApplyPayload {
                    files: files.iter().map(|&(p, c)| file(p, c)).collect(),
                    deletes: deletes.iter().map(|&p| gone(p)).collect(),
                    timestamp: String::new(),
                    actor: String::new(),
                    op_id: None,
                }),
            }
        }

        fn apply_model(model: &mut BTreeMap<String, String>, op: &Op) {
            match op {
                Op::Update(p, c) => {
                    model.insert(PATHS[*p].into(), CONTENTS[*c].into());
                }
                Op::Delete(p) => {
                    model.remove(PATHS[*p]);
                }
                Op::Bulk(files, deletes) => {
                    for &(p, c) in files {
                        model.insert(PATHS[p].into(), CONTENTS[c].into());
                    }
                    for &p in deletes {
                        model.remove(PATHS[p]);
                    }
                }
            }
        }

        /// Regular files below `dir`, skipping the agent's `.synchub/`.
        fn files_on_disk(dir: &Path) -> BTreeMap<String, String> {
            fn go(base: &Path, dir: &Path, out: &mut BTreeMap<String, String>) {
                for entry in fs::read_dir(dir).unwrap() {
                    let entry = entry.unwrap();
                    let path = entry.path();
                    let rel = path.strip_prefix(base).unwrap().to_string_lossy().into_owned();
                    if rel == ".synchub" {
                        continue;
                    }
                    if entry.file_type().unwrap().is_dir() {
                        go(base, &path, out);
                    } else {
                        out.insert(rel, fs::read_to_string(&path).unwrap());
                    }
                }
            }
            let mut out = BTreeMap::new();
            go(dir, dir, &mut out);
            out
        }

        fn open_tree(dir: &Path) -> ProjectTree {
            ProjectTree::open(dir, TreeOptions::default()).unwrap()
        }

        #[test]
        fn a_hundred_edits_of_one_file_in_a_backlog_are_written_once() {
            let tmp = tempfile::TempDir::new().unwrap();
            let mut tree = open_tree(tmp.path());
            let edits: Vec<Change> = (0..100)
                .map(|i| {
                    let content = format!("edit {i}");
                    Change::Update(UpdatedFile {
                        file_path: "src/app.ts".into(),
                        file_type: String::new(),
                        content_hash: sha256_hex(content.as_bytes()),
                        content,
                        version: i + 1,
                        blob: None,
                    })
                })
                .collect();
            let mut applier = Applier::new(10);
            let Outcome::Applied(report) = applier.handle_batch(&mut tree, 11, &edits).unwrap() else {
                panic!("not applied");
            };
            assert_eq!(report.written, vec!["src/app.ts".to_owned()]);
            assert_eq!(report.unchanged, 0);
            assert_eq!(applier.applied_seq(), 110);
            assert_eq!(fs::read_to_string(tmp.path().join("src/app.ts")).unwrap(), "edit 99");
            // The same run again is a duplicate; one that skips ahead is a gap.
            assert!(matches!(applier.handle_batch(&mut tree, 11, &edits).unwrap(), Outcome::Duplicate));
            assert!(matches!(applier.handle_batch(&mut tree, 112, &edits).unwrap(), Outcome::Gap { .. }));
        }

        proptest! {
            #![proptest_config(ProptestConfig { cases: 128, ..ProptestConfig::default() })]

            /// A run of events applied as one coalesced batch leaves the tree (files and
            /// ownership) exactly as applying them one by one does, from any starting tree.
            #[test]
            fn a_coalesced_batch_equals_applying_in_turn(
                before in prop::collection::vec(op(), 0..12),
                run in prop::collection::vec(op(), 1..30),
            ) {
                let tmp = tempfile::TempDir::new().unwrap();
                let (one_by_one, batched) = (tmp.path().join("one"), tmp.path().join("batch"));
                let (mut sequential, mut coalesced) = (open_tree(&one_by_one), open_tree(&batched));
                let (mut by_one, mut by_batch) = (Applier::new(0), Applier::new(0));
                for (i, op) in before.iter().enumerate() {
                    by_one.handle(&mut sequential, i as i64 + 1, &change(op)).unwrap();
                    by_batch.handle(&mut coalesced, i as i64 + 1, &change(op)).unwrap();
                }
                let first = before.len() as i64 + 1;
                for (i, op) in run.iter().enumerate() {
                    by_one.handle(&mut sequential, first + i as i64, &change(op)).unwrap();
                }
                let changes: Vec<Change> = run.iter().map(change).collect();
                let outcome = by_batch.handle_batch(&mut coalesced, first, &changes).unwrap();
                let Outcome::Applied(report) = outcome else { panic!("{outcome:?}") };
                prop_assert!(report.refused.is_empty(), "{:?}", report.refused);
                prop_assert_eq!(by_batch.applied_seq(), by_one.applied_seq());
                prop_assert_eq!(files_on_disk(&batched), files_on_disk(&one_by_one));
                prop_assert_eq!(coalesced.owned().collect::<Vec<_>>(), sequential.owned().collect::<Vec<_>>());
            }

            #[test]
            fn applier_and_tree_match_a_model(steps in prop::collection::vec(step(), 0..40)) {
                let tmp = tempfile::TempDir::new().unwrap();
                let project = tmp.path().join("project");
                let mut tree = ProjectTree::open(&project, TreeOptions::default()).unwrap();
                // A file the agent does not own, with a name the hub also uses.
                fs::create_dir_all(project.join("node_modules")).unwrap();
                fs::write(project.join("node_modules/x.js"), "nm").unwrap();

                let mut applier = Applier::new(0);
                let mut model = BTreeMap::new();
                let mut sent: Vec<Op> = Vec::new();
                for step in &steps {
                    match step {
                        Step::Event(op) => {
                            let seq = sent.len() as i64 + 1;
                            let outcome = applier.handle(&mut tree, seq, &change(op)).unwrap();
                            let Outcome::Applied(report) = outcome else {
                                panic!("seq {seq}: {outcome:?}");
                            };
                            prop_assert!(report.refused.is_empty(), "{:?}", report.refused);
                            apply_model(&mut model, op);
                            sent.push(op.clone());
                        }
                        Step::Replay(n) if !sent.is_empty() => {
                            let index = n % sent.len();
                            let outcome = applier
                                .handle(&mut tree, index as i64 + 1, &change(&sent[index]))
                                .unwrap();
                            prop_assert!(matches!(outcome, Outcome::Duplicate));
                        }
                        Step::Replay(_) => {}
                        Step::Skip(op) => {
                            let seq = sent.len() as i64 + 2;
                            let outcome = applier.handle(&mut tree, seq, &change(op)).unwrap();
                            prop_assert!(matches!(outcome, Outcome::Gap { .. }), "{:?}", outcome);
                        }
                    }
                    prop_assert_eq!(applier.applied_seq(), sent.len() as i64);
                }

                let mut expected = model.clone();
                expected.insert("node_modules/x.js".into(), "nm".into());
                prop_assert_eq!(files_on_disk(&project), expected);
                let owned: Vec<&str> = tree.owned().collect();
                let modelled: Vec<&str> = model.keys().map(String::as_str).collect();
                prop_assert_eq!(owned, modelled);

                // The persisted state reopens to the same ownership and seq.
                tree.save_state(applier.applied_seq()).unwrap();
                let reopened = ProjectTree::open(&project, TreeOptions::default()).unwrap();
                prop_assert_eq!(reopened.restored_seq(), Some(sent.len() as i64));
                prop_assert_eq!(reopened.owned().count(), model.len());
            }
        }
    }
}
