use std::fs;
use std::os::unix::fs::{MetadataExt, symlink};
use std::path::Path;

use tempfile::TempDir;

use super::staging::{TEMP_PREFIX, is_temp_name};
use super::*;
use crate::protocol::{BulkApplyPayload, Change, DeletedFile, UpdatedFile};

mod hydrate;

struct Fixture {
    _tmp: TempDir,
    project: PathBuf,
    outside: PathBuf,
    tree: ProjectTree,
}

fn fixture() -> Fixture {
    let tmp = TempDir::new().unwrap();
    let project = tmp.path().join("project");
    let outside = tmp.path().join("outside");
    fs::create_dir_all(&outside).unwrap();
    let tree = ProjectTree::open(&project, TreeOptions::default()).unwrap();
    Fixture { _tmp: tmp, project, outside, tree }
}

fn update(path: &str, content: &str) -> UpdatedFile {
    UpdatedFile {
        file_path: path.into(),
        file_type: String::new(),
        content: content.into(),
        content_hash: sha256_hex(content.as_bytes()),
        version: 1,
        blob: None,
    }
}

fn delete(path: &str) -> DeletedFile {
    DeletedFile { file_path: path.into(), version: 2 }
}

fn bulk(files: Vec<UpdatedFile>, deletes: Vec<DeletedFile>) -> Change {
    Change::Bulk(BulkApplyPayload { files, deletes, timestamp: String::new(), actor: String::new(), op_id: None })
}

fn read(path: &Path) -> String {
    fs::read_to_string(path).unwrap()
}

/// Every entry below `dir` (not following symlinks), as relative paths.
fn walk(dir: &Path) -> Vec<String> {
    fn go(base: &Path, dir: &Path, out: &mut Vec<String>) {
        for entry in fs::read_dir(dir).unwrap() {
            let entry = entry.unwrap();
            let path = entry.path();
            out.push(path.strip_prefix(base).unwrap().to_string_lossy().into_owned());
            if entry.file_type().unwrap().is_dir() {
                go(base, &path, out);
            }
        }
    }
    let mut out = Vec::new();
    go(dir, dir, &mut out);
    out.sort();
    out
}

fn assert_no_temp_files(dir: &Path) {
    let temps: Vec<_> = walk(dir).into_iter().filter(|p| p.contains(TEMP_PREFIX)).collect();
    assert!(temps.is_empty(), "temp files left: {temps:?}");
}

#[test]
fn writes_create_parents_and_overwrite() {
    let mut f = fixture();
    assert_eq!(f.tree.write_file("src/deep/a.ts", b"one").unwrap(), WriteOutcome::Written);
    assert_eq!(read(&f.project.join("src/deep/a.ts")), "one");
    assert_eq!(f.tree.write_file("src/deep/a.ts", b"two").unwrap(), WriteOutcome::Written);
    assert_eq!(read(&f.project.join("src/deep/a.ts")), "two");
    f.tree.write_file("src/deep/empty.txt", b"").unwrap();
    assert_eq!(read(&f.project.join("src/deep/empty.txt")), "");
    assert!(f.tree.is_owned("src/deep/a.ts"));
    assert_eq!(f.tree.owned().collect::<Vec<_>>(), ["src/deep/a.ts", "src/deep/empty.txt"]);
    assert_no_temp_files(&f.project);
}

#[test]
fn many_writes_leave_no_temp_files() {
    let mut f = fixture();
    for i in 0..50 {
        let path = format!("d{}/f{}.txt", i % 5, i % 7);
        f.tree.write_file(&path, format!("{i}").as_bytes()).unwrap();
    }
    assert_no_temp_files(&f.project);
}

#[test]
fn delete_removes_only_owned_files() {
    let mut f = fixture();
    f.tree.write_file("a.txt", b"a").unwrap();
    fs::write(f.project.join("mine.txt"), "dev server").unwrap();

    assert_eq!(f.tree.delete_file("mine.txt").unwrap(), DeleteOutcome::NotOwned);
    assert_eq!(read(&f.project.join("mine.txt")), "dev server");

    assert_eq!(f.tree.delete_file("a.txt").unwrap(), DeleteOutcome::Deleted);
    assert!(!f.project.join("a.txt").exists());
    assert!(!f.tree.is_owned("a.txt"));

    // Owned but removed behind the agent's back: absent, and no longer owned.
    f.tree.write_file("b.txt", b"b").unwrap();
    fs::remove_file(f.project.join("b.txt")).unwrap();
    assert_eq!(f.tree.delete_file("b.txt").unwrap(), DeleteOutcome::Absent);
    assert!(!f.tree.is_owned("b.txt"));
    f.tree.write_file("gone/c.txt", b"c").unwrap();
    fs::remove_dir_all(f.project.join("gone")).unwrap();
    assert_eq!(f.tree.delete_file("gone/c.txt").unwrap(), DeleteOutcome::Absent);
}

#[test]
fn delete_prunes_only_directories_it_emptied() {
    let mut f = fixture();
    f.tree.write_file("src/deep/a.ts", b"a").unwrap();
    f.tree.delete_file("src/deep/a.ts").unwrap();
    assert!(!f.project.join("src").exists());

    f.tree.write_file("lib/x.ts", b"x").unwrap();
    fs::write(f.project.join("lib/generated.js"), "g").unwrap();
    f.tree.delete_file("lib/x.ts").unwrap();
    assert_eq!(read(&f.project.join("lib/generated.js")), "g");

    f.tree.write_file("k/a", b"a").unwrap();
    f.tree.write_file("k/sub/b", b"b").unwrap();
    f.tree.delete_file("k/sub/b").unwrap();
    assert!(!f.project.join("k/sub").exists());
    assert!(f.project.join("k/a").exists());

    let mut keep =
        ProjectTree::open(&f.project, TreeOptions { prune_empty_dirs: false, ..TreeOptions::default() }).unwrap();
    keep.write_file("m/n/o", b"o").unwrap();
    keep.delete_file("m/n/o").unwrap();
    assert!(f.project.join("m/n").is_dir());
}

#[test]
fn refuses_invalid_paths_and_keeps_going() {
    let mut f = fixture();
    let table = snapshot_builder::paths::INVALID_PATH_EXAMPLES;
    for (path, want) in table {
        match f.tree.write_file(path, b"x") {
            Err(TreeError::InvalidPath { reason, .. }) => assert_eq!(reason, want, "{path:?}"),
            other => panic!("{path:?}: {other:?}"),
        }
        match f.tree.delete_file(path) {
            Err(TreeError::InvalidPath { reason, .. }) => assert_eq!(reason, want, "{path:?}"),
            other => panic!("{path:?}: {other:?}"),
        }
        let report = f.tree.apply(&Change::Update(update(path, "x"))).unwrap();
        assert!(report.refused[0].is_refusal());
        assert!(report.written.is_empty());
    }
    assert!(walk(&f.project).is_empty(), "{:?}", walk(&f.project));
    assert!(walk(&f.outside).is_empty());
    assert!(!f.project.parent().unwrap().join("escape.txt").exists());
    f.tree.write_file("ok.txt", b"ok").unwrap();
    assert_eq!(read(&f.project.join("ok.txt")), "ok");
}

#[test]
fn symlinked_directory_pointing_outside_is_refused() {
    let mut f = fixture();
    fs::write(f.outside.join("y.txt"), "precious").unwrap();
    symlink(&f.outside, f.project.join("evil")).unwrap();

    let err = f.tree.write_file("evil/x.txt", b"pwned").unwrap_err();
    assert!(matches!(err, TreeError::Symlink { .. }), "{err:?}");
    assert!(err.is_refusal());
    let err = f.tree.write_file("evil/new/deeper.txt", b"pwned").unwrap_err();
    assert!(matches!(err, TreeError::Symlink { .. }), "{err:?}");

    // Not owned: never even looked at.
    assert_eq!(f.tree.delete_file("evil/y.txt").unwrap(), DeleteOutcome::NotOwned);
    let report = f.tree.apply(&bulk(vec![update("evil/z.txt", "pwned")], vec![])).unwrap();
    assert!(matches!(report.refused[..], [TreeError::Symlink { .. }]));

    assert_eq!(walk(&f.outside), ["y.txt"]);
    assert_eq!(read(&f.outside.join("y.txt")), "precious");
    assert!(!f.tree.is_owned("evil/x.txt"));

    f.tree.write_file("fine.txt", b"still works").unwrap();
    assert_eq!(read(&f.project.join("fine.txt")), "still works");
}

#[test]
fn owned_directory_swapped_for_a_symlink_blocks_writes_and_deletes() {
    let mut f = fixture();
    f.tree.write_file("evil/y.txt", b"hub copy").unwrap();
    fs::write(f.outside.join("y.txt"), "precious").unwrap();
    fs::remove_dir_all(f.project.join("evil")).unwrap();
    symlink(&f.outside, f.project.join("evil")).unwrap();

    let err = f.tree.delete_file("evil/y.txt").unwrap_err();
    assert!(matches!(err, TreeError::Symlink { .. }), "{err:?}");
    let err = f.tree.write_file("evil/y.txt", b"pwned").unwrap_err();
    assert!(matches!(err, TreeError::Symlink { .. }), "{err:?}");
    let report = f.tree.apply(&Change::Delete(delete("evil/y.txt"))).unwrap();
    assert_eq!(report.refused.len(), 1);

    assert_eq!(read(&f.outside.join("y.txt")), "precious");
    assert_eq!(walk(&f.outside), ["y.txt"]);
    // Still owned: once the symlink is gone, the delete can happen.
    assert!(f.tree.is_owned("evil/y.txt"));
}

#[test]
fn symlinks_inside_the_project_are_not_followed_either() {
    let mut f = fixture();
    f.tree.write_file("src/a.ts", b"a").unwrap();
    symlink("src", f.project.join("lib")).unwrap();
    let err = f.tree.write_file("lib/a.ts", b"redirected").unwrap_err();
    assert!(matches!(err, TreeError::Symlink { .. }), "{err:?}");
    assert_eq!(read(&f.project.join("src/a.ts")), "a");
    // An absolute symlink to PROJECT_DIR itself.
    symlink(&f.project, f.project.join("self")).unwrap();
    assert!(matches!(f.tree.write_file("self/b.ts", b"b"), Err(TreeError::Symlink { .. })));
}

#[test]
fn a_final_symlink_is_replaced_never_written_through() {
    let mut f = fixture();
    let target = f.outside.join("target.txt");
    fs::write(&target, "precious").unwrap();
    symlink(&target, f.project.join("link.txt")).unwrap();
    symlink(f.outside.join("missing.txt"), f.project.join("dangling.txt")).unwrap();

    f.tree.write_file("link.txt", b"hub content").unwrap();
    f.tree.write_file("dangling.txt", b"hub content").unwrap();

    assert_eq!(read(&target), "precious");
    assert!(!f.outside.join("missing.txt").exists());
    for name in ["link.txt", "dangling.txt"] {
        let meta = fs::symlink_metadata(f.project.join(name)).unwrap();
        assert!(meta.is_file(), "{name} is still a symlink");
        assert_eq!(read(&f.project.join(name)), "hub content");
    }
}

#[test]
fn an_owned_file_replaced_by_a_symlink_deletes_only_the_link() {
    let mut f = fixture();
    let target = f.outside.join("target.txt");
    fs::write(&target, "precious").unwrap();
    f.tree.write_file("a.txt", b"a").unwrap();
    fs::remove_file(f.project.join("a.txt")).unwrap();
    symlink(&target, f.project.join("a.txt")).unwrap();

    assert_eq!(f.tree.delete_file("a.txt").unwrap(), DeleteOutcome::Deleted);
    assert!(fs::symlink_metadata(f.project.join("a.txt")).is_err());
    assert_eq!(read(&target), "precious");
}

#[test]
fn a_fifo_in_place_of_a_file_does_not_block() {
    let mut f = fixture();
    let status = std::process::Command::new("mkfifo").arg(f.project.join("pipe")).status();
    if !status.is_ok_and(|s| s.success()) {
        eprintln!("mkfifo unavailable; skipping");
        return;
    }
    f.tree.write_file("pipe", b"text").unwrap();
    assert_eq!(read(&f.project.join("pipe")), "text");
}

#[test]
fn a_directory_in_place_of_a_file_is_a_conflict() {
    let mut f = fixture();
    fs::create_dir_all(f.project.join("dist/assets")).unwrap();
    let err = f.tree.write_file("dist", b"x").unwrap_err();
    assert!(matches!(err, TreeError::Conflict { .. }), "{err:?}");
    fs::write(f.project.join("notadir"), "n").unwrap();
    let err = f.tree.write_file("notadir/x", b"x").unwrap_err();
    assert!(matches!(err, TreeError::Conflict { .. }), "{err:?}");
    assert!(f.project.join("dist/assets").is_dir());
    assert_eq!(read(&f.project.join("notadir")), "n");
}

#[test]
fn reapplying_the_same_content_touches_nothing() {
    let mut f = fixture();
    let change = Change::Update(update("src/a.ts", "export const a = 1;\n"));
    let report = f.tree.apply(&change).unwrap();
    assert_eq!(report.written, ["src/a.ts"]);
    let before = fs::metadata(f.project.join("src/a.ts")).unwrap();

    std::thread::sleep(std::time::Duration::from_millis(20));
    let report = f.tree.apply(&change).unwrap();
    assert!(report.written.is_empty());
    assert_eq!(report.unchanged, 1);
    assert_eq!(f.tree.write_file("src/a.ts", b"export const a = 1;\n").unwrap(), WriteOutcome::Unchanged);
    let after = fs::metadata(f.project.join("src/a.ts")).unwrap();
    assert_eq!(before.ino(), after.ino());
    assert_eq!(before.mtime(), after.mtime());
    assert_eq!(before.mtime_nsec(), after.mtime_nsec());

    // Same length, other content: rewritten.
    let report = f.tree.apply(&Change::Update(update("src/a.ts", "export const a = 2;\n"))).unwrap();
    assert_eq!(report.written, ["src/a.ts"]);

    // A file the dev server wrote with the hub's content becomes owned, untouched.
    fs::write(f.project.join("same.txt"), "same").unwrap();
    let ino = fs::metadata(f.project.join("same.txt")).unwrap().ino();
    f.tree.apply(&Change::Update(update("same.txt", "same"))).unwrap();
    assert!(f.tree.is_owned("same.txt"));
    assert_eq!(fs::metadata(f.project.join("same.txt")).unwrap().ino(), ino);
}

#[test]
fn an_update_whose_hash_does_not_match_is_refused() {
    let mut f = fixture();
    let mut bad = update("a.txt", "content");
    bad.content_hash = sha256_hex(b"other");
    let report = f.tree.apply(&Change::Update(bad)).unwrap();
    assert!(matches!(report.refused[..], [TreeError::HashMismatch { .. }]));
    assert!(!f.project.join("a.txt").exists());

    // Upper-case hex is the same hash.
    let mut upper = update("b.txt", "b");
    upper.content_hash = upper.content_hash.to_uppercase();
    let report = f.tree.apply(&Change::Update(upper)).unwrap();
    assert_eq!(report.written, ["b.txt"]);
}

#[test]
fn bulk_writes_then_deletes() {
    let mut f = fixture();
    f.tree.write_file("old/a.ts", b"a").unwrap();
    f.tree.write_file("keep.ts", b"k").unwrap();
    fs::create_dir_all(f.project.join("node_modules/x")).unwrap();
    fs::write(f.project.join("node_modules/x/index.js"), "nm").unwrap();

    // A move old/a.ts -> new/a.ts, an edit, and a delete of a non-owned file.
    let report = f
        .tree
        .apply(&bulk(
            vec![update("new/a.ts", "a"), update("keep.ts", "k2")],
            vec![delete("old/a.ts"), delete("node_modules/x/index.js")],
        ))
        .unwrap();
    assert_eq!(report.written, ["new/a.ts", "keep.ts"]);
    assert_eq!(report.deleted, ["old/a.ts"]);
    assert_eq!(report.skipped_deletes, 1);
    assert!(report.refused.is_empty());
    assert_eq!(read(&f.project.join("new/a.ts")), "a");
    assert_eq!(read(&f.project.join("keep.ts")), "k2");
    assert!(!f.project.join("old").exists());
    assert_eq!(read(&f.project.join("node_modules/x/index.js")), "nm");
    assert_no_temp_files(&f.project);
}

#[test]
fn bulk_skips_refused_entries_and_applies_the_rest() {
    let mut f = fixture();
    symlink(&f.outside, f.project.join("evil")).unwrap();
    let mut bad_hash = update("c.ts", "c");
    bad_hash.content_hash = "00".into();
    let report = f
        .tree
        .apply(&bulk(
            vec![update("a.ts", "a"), update("../x", "x"), update("evil/x", "x"), bad_hash, update("b.ts", "b")],
            vec![delete("/abs")],
        ))
        .unwrap();
    assert_eq!(report.written, ["a.ts", "b.ts"]);
    assert_eq!(report.refused.len(), 4, "{:?}", report.refused);
    assert!(walk(&f.outside).is_empty());
}

#[test]
fn bulk_can_swap_a_file_for_a_directory_and_back() {
    let mut f = fixture();
    f.tree.write_file("a", b"file").unwrap();
    let report = f.tree.apply(&bulk(vec![update("a/b", "nested")], vec![delete("a")])).unwrap();
    assert!(report.refused.is_empty(), "{:?}", report.refused);
    assert_eq!(read(&f.project.join("a/b")), "nested");

    let report = f.tree.apply(&bulk(vec![update("a", "file again")], vec![delete("a/b")])).unwrap();
    assert!(report.refused.is_empty(), "{:?}", report.refused);
    assert_eq!(read(&f.project.join("a")), "file again");
    assert_eq!(f.tree.owned().collect::<Vec<_>>(), ["a"]);
    assert_no_temp_files(&f.project);
}

#[test]
fn bulk_lists_a_path_twice_last_wins() {
    let mut f = fixture();
    f.tree.write_file("a", b"x").unwrap();
    f.tree.apply(&bulk(vec![update("a", "y"), update("a", "x")], vec![])).unwrap();
    assert_eq!(read(&f.project.join("a")), "x");
}

#[test]
fn a_failed_bulk_preparation_renames_nothing() {
    let mut f = fixture();
    f.tree.write_file("a.ts", b"a1").unwrap();
    f.tree.write_file("gone.ts", b"g").unwrap();
    f.tree.fail_staging = Some("c.ts".into());
    let err = f
        .tree
        .apply(&bulk(vec![update("a.ts", "a2"), update("b/b.ts", "b"), update("c.ts", "c")], vec![delete("gone.ts")]))
        .unwrap_err();
    assert!(!err.is_refusal(), "{err:?}");
    assert_eq!(read(&f.project.join("a.ts")), "a1");
    assert!(!f.project.join("b/b.ts").exists());
    assert!(!f.project.join("c.ts").exists());
    assert_eq!(read(&f.project.join("gone.ts")), "g");
    assert_no_temp_files(&f.project);
    assert!(!f.tree.is_owned("b/b.ts"));
}

#[test]
fn state_round_trips_and_is_not_rewritten_when_unchanged() {
    let mut f = fixture();
    assert_eq!(f.tree.restored_seq(), None);
    f.tree.write_file("a.ts", b"a").unwrap();
    f.tree.write_file("d/b.ts", b"b").unwrap();
    assert!(f.tree.save_state(7).unwrap());
    assert!(!f.tree.save_state(7).unwrap());
    assert!(f.tree.save_state(8).unwrap());
    f.tree.delete_file("a.ts").unwrap();
    assert!(f.tree.save_state(8).unwrap());
    assert_no_temp_files(&f.project);

    let state: AgentState = serde_json::from_str(&read(&f.project.join(STATE_PATH))).unwrap();
    assert_eq!(state, AgentState { format: 1, applied_seq: 8, owned: vec!["d/b.ts".into()] });
    let reopened = ProjectTree::open(&f.project, TreeOptions::default()).unwrap();
    assert_eq!(reopened.restored_seq(), Some(8));
    assert_eq!(reopened.owned().collect::<Vec<_>>(), ["d/b.ts"]);
}

#[test]
fn an_unreadable_state_is_ignored() {
    let f = fixture();
    fs::create_dir_all(f.project.join(STATE_DIR)).unwrap();
    fs::write(f.project.join(STATE_PATH), "{not json").unwrap();
    let tree = ProjectTree::open(&f.project, TreeOptions::default()).unwrap();
    assert_eq!(tree.restored_seq(), None);
    assert_eq!(tree.owned().count(), 0);

    // Invalid paths in a state file are dropped, never trusted.
    let state = r#"{"format":1,"applied_seq":3,"owned":["ok.txt","../etc/passwd","/abs"]}"#;
    fs::write(f.project.join(STATE_PATH), state).unwrap();
    let tree = ProjectTree::open(&f.project, TreeOptions::default()).unwrap();
    assert_eq!(tree.owned().collect::<Vec<_>>(), ["ok.txt"]);
}

#[test]
fn a_symlinked_state_dir_is_refused() {
    let mut f = fixture();
    symlink(&f.outside, f.project.join(STATE_DIR)).unwrap();
    let err = f.tree.save_state(1).unwrap_err();
    assert!(matches!(err, TreeError::Symlink { .. }), "{err:?}");
    assert!(walk(&f.outside).is_empty());
}

#[test]
fn stale_temp_files_are_swept_on_open() {
    let mut f = fixture();
    f.tree.write_file("src/a.ts", b"a").unwrap();
    f.tree.save_state(1).unwrap();
    fs::write(f.project.join("src/.synchub-tmp-99-1"), "stale").unwrap();
    fs::write(f.project.join(".synchub-tmp-99-2"), "stale").unwrap();
    fs::write(f.project.join("src/.synchub-tmp-notours"), "keep").unwrap();
    ProjectTree::open(&f.project, TreeOptions::default()).unwrap();
    assert!(!f.project.join("src/.synchub-tmp-99-1").exists());
    assert!(!f.project.join(".synchub-tmp-99-2").exists());
    assert!(f.project.join("src/.synchub-tmp-notours").exists());
}

#[test]
fn temp_names_are_recognised_exactly() {
    assert!(is_temp_name(".synchub-tmp-12-0"));
    assert!(!is_temp_name(".synchub-tmp-12-"));
    assert!(!is_temp_name(".synchub-tmp-x-1"));
    assert!(!is_temp_name(".synchub-tmp-1"));
    assert!(!is_temp_name("synchub-tmp-1-2"));
}

#[test]
fn io_errors_are_refusals_unless_tree_wide() {
    let per_path = TreeError::Io { path: "a".into(), source: io::Error::from(io::ErrorKind::InvalidFilename) };
    assert!(per_path.is_refusal());
    let full = TreeError::Io { path: "a".into(), source: io::Error::from(io::ErrorKind::StorageFull) };
    assert!(!full.is_refusal());
    let long_name = "x".repeat(300);
    let mut f = fixture();
    let err = f.tree.write_file(&long_name, b"x").unwrap_err();
    assert!(err.is_refusal(), "{err:?}");
}

#[test]
fn adopted_paths_become_deletable() {
    let mut f = fixture();
    fs::create_dir_all(f.project.join("src")).unwrap();
    fs::write(f.project.join("src/a.ts"), "from the snapshot").unwrap();
    let refused = f.tree.adopt(["src/a.ts", "../x", ".synchub/manifest.json"]);
    assert_eq!(refused.len(), 2);
    assert_eq!(f.tree.owned().collect::<Vec<_>>(), ["src/a.ts"]);
    assert_eq!(f.tree.delete_file("src/a.ts").unwrap(), DeleteOutcome::Deleted);
}
