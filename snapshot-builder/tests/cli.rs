//! The `snapshot-builder` binary: verify and extract on good and bad archives (exit status,
//! summary, message). `build` needs PostgreSQL and is tested from the hub's test suite
//! (tests/api/snapshot_cli.rs).

mod common;

use std::path::Path;
use std::process::{Command, Output};

use common::*;

fn run(args: &[&std::ffi::OsStr]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_snapshot-builder")).args(args).output().expect("run snapshot-builder")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

fn write_archive(dir: &Path, name: &str, bytes: &[u8]) -> std::path::PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, bytes).unwrap();
    path
}

#[test]
fn verify_prints_the_summary_of_a_good_archive() {
    let dir = tempfile::tempdir().unwrap();
    let (manifest, bytes) = build_bytes(vec![file("a.txt", "hello"), file("src/b.ts", "export {}")]);
    let path = write_archive(dir.path(), "good.zip", &bytes);
    let out = run(&["verify".as_ref(), path.as_os_str()]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let stdout = text(&out.stdout);
    assert!(stdout.contains("2 files"), "{stdout}");
    assert!(stdout.contains("14 bytes"), "{stdout}");
    assert!(stdout.contains(&format!("cursor {}", manifest.cursor)), "{stdout}");
    assert!(stdout.contains(&manifest.snapshot_id), "{stdout}");
}

#[test]
fn verify_fails_clearly_on_a_bad_archive() {
    let dir = tempfile::tempdir().unwrap();
    let traversal = raw_with_manifest(&[Entry::File("../evil", b"x")], &manifest_for(&[]));
    let cases: [(&str, Vec<u8>, &str); 3] = [
        ("traversal.zip", traversal, "refused entry \"../evil\""),
        ("garbage.zip", b"garbage".to_vec(), "not a readable zip"),
        ("bad-hash.zip", raw_with_manifest(&[Entry::File("a", b"evil")], &manifest_for(&[("a", b"good")])), "sha256"),
    ];
    for (name, bytes, message) in cases {
        let path = write_archive(dir.path(), name, &bytes);
        let out = run(&["verify".as_ref(), path.as_os_str()]);
        assert_eq!(out.status.code(), Some(1), "{name}");
        let stderr = text(&out.stderr);
        assert!(stderr.contains("is not a valid snapshot") && stderr.contains(message), "{name}: {stderr}");
        assert!(out.stdout.is_empty(), "{name}");
    }
    let out = run(&["verify".as_ref(), dir.path().join("absent.zip").as_os_str()]);
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out.stderr).contains("opening"), "{}", text(&out.stderr));
}

#[test]
fn verify_honours_limit_flags() {
    let dir = tempfile::tempdir().unwrap();
    let (_, bytes) = build_bytes(vec![file("a", "1"), file("b", "2"), file("c", "3")]);
    let path = write_archive(dir.path(), "three.zip", &bytes);
    let out = run(&["verify".as_ref(), "--max-entries".as_ref(), "2".as_ref(), path.as_os_str()]);
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out.stderr).contains("more than 2 entries"), "{}", text(&out.stderr));
}

#[test]
fn extract_writes_the_tree_or_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let (_, bytes) = build_bytes(vec![file("a.txt", "hello"), file("src/b.ts", "export {}")]);
    let path = write_archive(dir.path(), "good.zip", &bytes);
    let target = dir.path().join("out/tree");
    let out = run(&["extract".as_ref(), path.as_os_str(), target.as_os_str()]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let files = tree(&target);
    assert_eq!(files.keys().collect::<Vec<_>>(), ["a.txt", "src/b.ts"]);
    assert_eq!(files["src/b.ts"], b"export {}");

    // Not empty any more: refused, untouched.
    let out = run(&["extract".as_ref(), path.as_os_str(), target.as_os_str()]);
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out.stderr).contains("not empty"), "{}", text(&out.stderr));
    assert_eq!(tree(&target).len(), 2);

    // A bad archive leaves the new directory empty.
    let bad = raw_with_manifest(
        &[Entry::File("a.txt", b"fine"), Entry::File("b.txt", b"evil")],
        &manifest_for(&[("a.txt", b"fine"), ("b.txt", b"good")]),
    );
    let bad_path = write_archive(dir.path(), "bad.zip", &bad);
    let empty = dir.path().join("second");
    let out = run(&["extract".as_ref(), bad_path.as_os_str(), empty.as_os_str()]);
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out.stderr).contains("sha256 of \"b.txt\""), "{}", text(&out.stderr));
    assert!(list(&empty).is_empty());
}

#[test]
fn usage_errors_exit_2() {
    assert_eq!(run(&[]).status.code(), Some(2));
    assert_eq!(run(&["build".as_ref(), "--project".as_ref(), "not-a-uuid".as_ref()]).status.code(), Some(2));
}
