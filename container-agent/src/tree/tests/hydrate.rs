//! [`ProjectTree::hydrate_from`]: snapshot archives made equal on disk, or nothing renamed.

use snapshot_builder::{Manifest, ManifestFile, ReadLimits, SinkError};

use super::*;

/// A snapshot archive of `files` (any order), as the hub builds it.
fn archive(files: &[(&str, &[u8])]) -> Vec<u8> {
    let mut files: Vec<(&str, &[u8])> = files.to_vec();
    files.sort_by(|a, b| a.0.as_bytes().cmp(b.0.as_bytes()));
    let listing = files
        .iter()
        .enumerate()
        .map(|(i, (path, content))| ManifestFile {
            path: (*path).into(),
            size: content.len() as u64,
            sha256: sha256_hex(content),
            version: i as i64 + 1,
            file_type: "text".into(),
            binary: false,
        })
        .collect();
    let contents = files.iter().map(|(path, content)| {
        Ok::<_, String>(snapshot_builder::FileContent { path: (*path).into(), content: content.to_vec() })
    });
    let meta = snapshot_builder::SnapshotMeta {
        project_id: "00000000-0000-0000-0000-000000000001".into(),
        snapshot_id: "00000000-0000-0000-0000-000000000002".into(),
        cursor: 7,
        created_at: "2026-01-01T00:00:00Z".into(),
    };
    let mut out = io::Cursor::new(Vec::new());
    snapshot_builder::build(meta, listing, contents, &mut out).unwrap();
    out.into_inner()
}

impl Fixture {
    fn hydrate(&mut self, archive: &[u8]) -> Result<(Manifest, ApplyReport), SinkError<TreeError>> {
        let scratch = TempDir::new_in(&self.outside).unwrap();
        self.tree.hydrate_from(io::Cursor::new(archive), &ReadLimits::default(), scratch.path())
    }
}

/// Bytes deflate cannot shrink (an LCG's high bytes).
fn incompressible(len: usize) -> Vec<u8> {
    let mut state = 0x2545_f491_4f6c_dd1d_u64;
    (0..len)
        .map(|_| {
            state = state.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1_442_695_040_888_963_407);
            (state >> 56) as u8
        })
        .collect()
}

/// Where the compressed data of the entry `name` starts: after its local header (30 bytes,
/// the name, the extra field), the first place the name appears in the archive.
fn entry_data_offset(archive: &[u8], name: &str) -> usize {
    let at = archive.windows(name.len()).position(|w| w == name.as_bytes()).expect("the entry") - 30;
    assert_eq!(&archive[at..at + 4], b"PK\x03\x04", "a local header");
    let extra = u16::from_le_bytes([archive[at + 28], archive[at + 29]]) as usize;
    at + 30 + name.len() + extra
}

#[test]
fn hydrate_makes_the_tree_equal_and_spares_unowned_files() {
    let mut f = fixture();
    f.tree.write_file("same.ts", b"same").unwrap();
    f.tree.write_file("changed.ts", b"old").unwrap();
    f.tree.write_file("removed/r.ts", b"r").unwrap();
    fs::create_dir_all(f.project.join("node_modules/pkg")).unwrap();
    fs::write(f.project.join("node_modules/pkg/index.js"), "nm").unwrap();
    fs::write(f.project.join("removed/build.log"), "log").unwrap();
    let same_ino = fs::metadata(f.project.join("same.ts")).unwrap().ino();

    let snapshot = archive(&[("same.ts", b"same"), ("changed.ts", b"new"), ("added/deep/n.ts", b"n")]);
    let (manifest, report) = f.hydrate(&snapshot).unwrap();
    assert_eq!(manifest.cursor, 7);
    assert_eq!(report.written, ["added/deep/n.ts", "changed.ts"]);
    assert_eq!(report.unchanged, 1);
    assert_eq!(report.deleted, ["removed/r.ts"]);
    assert!(report.refused.is_empty());

    assert_eq!(read(&f.project.join("changed.ts")), "new");
    assert_eq!(read(&f.project.join("added/deep/n.ts")), "n");
    assert!(!f.project.join("removed/r.ts").exists());
    assert_eq!(read(&f.project.join("removed/build.log")), "log");
    assert_eq!(read(&f.project.join("node_modules/pkg/index.js")), "nm");
    assert_eq!(fs::metadata(f.project.join("same.ts")).unwrap().ino(), same_ino);
    assert_eq!(f.tree.owned().collect::<Vec<_>>(), ["added/deep/n.ts", "changed.ts", "same.ts"]);
    assert_no_temp_files(&f.project);
}

#[test]
fn hydrate_into_an_empty_tree_writes_every_file() {
    let mut f = fixture();
    let (manifest, report) = f.hydrate(&archive(&[("a.ts", b"a"), ("src/b.ts", b"b")])).unwrap();
    assert_eq!(manifest.files.len(), 2);
    assert_eq!(report.written, ["a.ts", "src/b.ts"]);
    assert_eq!(read(&f.project.join("src/b.ts")), "b");
    assert_no_temp_files(&f.project);
}

#[test]
fn a_corrupt_archive_renames_nothing() {
    let mut f = fixture();
    f.tree.write_file("a.ts", b"a1").unwrap();
    f.tree.write_file("gone.ts", b"g").unwrap();
    // Equal already, but not the agent's: it must not become owned (owned files may be
    // deleted later).
    fs::write(f.project.join("a0.ts"), "mine").unwrap();
    let noise = incompressible(4096);
    let mut snapshot =
        archive(&[("a.ts", b"a2"), ("a/new/deep.ts", b"d"), ("a0.ts", b"mine"), ("b.bin", &noise), ("c.ts", b"c")]);
    // Damage b.bin's data in the middle: its inflated bytes no longer match.
    let at = entry_data_offset(&snapshot, "b.bin") + 2000;
    snapshot[at] ^= 0xff;
    let err = f.hydrate(&snapshot).unwrap_err();
    assert!(matches!(err, SinkError::Archive(_)), "{err:?}");

    // a.ts and a/new/deep.ts were written to temp files before b.bin failed; neither was
    // renamed, and the directories made for the second are gone again.
    assert_eq!(read(&f.project.join("a.ts")), "a1");
    assert!(!f.project.join("a").exists());
    assert!(!f.tree.is_owned("a0.ts"));
    assert!(!f.project.join("b.bin").exists());
    assert!(!f.project.join("c.ts").exists());
    assert_eq!(read(&f.project.join("gone.ts")), "g");
    assert_no_temp_files(&f.project);

    let (_, report) = f.hydrate(&archive(&[("a.ts", b"a2"), ("b.bin", &noise)])).unwrap();
    assert_eq!(report.written, ["a.ts", "b.bin"]);
    assert_eq!(fs::read(f.project.join("b.bin")).unwrap(), noise);
}

#[test]
fn hydrate_refuses_symlinked_paths_but_applies_the_rest() {
    let mut f = fixture();
    symlink(&f.outside, f.project.join("evil")).unwrap();
    let (_, report) = f.hydrate(&archive(&[("ok.ts", b"ok"), ("evil/x.ts", b"x")])).unwrap();
    assert_eq!(report.written, ["ok.ts"]);
    assert_eq!(report.refused.len(), 1, "{:?}", report.refused);
    assert!(matches!(report.refused[0], TreeError::Symlink { .. }));
    assert!(!f.outside.join("x.ts").exists());
}

#[test]
fn hydrate_replaces_a_file_by_a_directory_and_back() {
    let mut f = fixture();
    f.hydrate(&archive(&[("a", b"file"), ("keep.ts", b"k")])).unwrap();
    let (_, report) = f.hydrate(&archive(&[("a/b.ts", b"nested"), ("keep.ts", b"k")])).unwrap();
    assert_eq!(report.deleted, ["a"]);
    assert_eq!(report.written, ["a/b.ts"]);
    assert_eq!(read(&f.project.join("a/b.ts")), "nested");

    let (_, report) = f.hydrate(&archive(&[("a", b"file again"), ("keep.ts", b"k")])).unwrap();
    assert_eq!(report.deleted, ["a/b.ts"]);
    assert_eq!(report.written, ["a"]);
    assert_eq!(read(&f.project.join("a")), "file again");
    assert_eq!(f.tree.owned().collect::<Vec<_>>(), ["a", "keep.ts"]);
    assert_no_temp_files(&f.project);
}
