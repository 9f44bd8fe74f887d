//! Shared helpers: valid snapshots through `build`, raw (hostile) archives through the
//! `zip` writer directly, byte patches for what the writer refuses to produce, and a
//! sandbox (a destination next to an "outside" directory) to prove nothing escapes.

#![allow(dead_code)] // each test binary uses its own subset

use std::io::{Cursor, Write};
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};
use snapshot_builder::{
    BuildError, BuildStats, FileContent, Manifest, ManifestFile, ReadError, ReadLimits, SnapshotMeta,
};
use zip::write::SimpleFileOptions;
use zip::{CompressionMethod, ZipWriter};

pub fn meta(cursor: i64) -> SnapshotMeta {
    SnapshotMeta {
        project_id: "6f1c1f7e-0000-4000-8000-000000000001".into(),
        snapshot_id: "6f1c1f7e-0000-4000-8000-0000000000aa".into(),
        cursor,
        created_at: "2026-01-02T03:04:05.678Z".into(),
    }
}

/// A file with its content and metadata, as the tests describe a project.
#[derive(Clone)]
pub struct TestFile {
    pub path: String,
    pub content: Vec<u8>,
    pub version: i64,
    pub file_type: String,
}

pub fn file(path: &str, content: &str) -> TestFile {
    TestFile { path: path.into(), content: content.as_bytes().to_vec(), version: 1, file_type: "text".into() }
}

/// The manifest entries of `files`, as the database's metadata pass gives them.
pub fn manifest_files(files: &[TestFile]) -> Vec<ManifestFile> {
    files.iter().map(|f| ManifestFile::describe(f.path.clone(), &f.content, f.version, f.file_type.clone())).collect()
}

/// The contents of `files`, as the database's content pass streams them.
pub fn contents(files: Vec<TestFile>) -> impl Iterator<Item = Result<FileContent, std::convert::Infallible>> {
    files.into_iter().map(|f| Ok(FileContent { path: f.path, content: f.content }))
}

/// Builds `files` (metadata, then contents in the same order) into `writer`.
pub fn build_files<W: std::io::Write + std::io::Seek>(
    meta: SnapshotMeta,
    files: Vec<TestFile>,
    writer: W,
) -> Result<(Manifest, BuildStats), BuildError> {
    snapshot_builder::build(meta, manifest_files(&files), contents(files), writer)
}

/// Builds a snapshot in memory.
pub fn build_bytes(files: Vec<TestFile>) -> (Manifest, Vec<u8>) {
    let mut out = Cursor::new(Vec::new());
    let (manifest, _) = build_files(meta(7), files, &mut out).expect("build");
    (manifest, out.into_inner())
}

/// The entry names of a zip in local-header order (walking the file from the start) and
/// in central-directory order.
pub fn entry_names(archive: &[u8]) -> (Vec<String>, Vec<String>) {
    let mut local = Vec::new();
    let mut at = 0;
    while archive.get(at..at + 4) == Some(b"PK\x03\x04") {
        let flags = u16_at(archive, at + 6);
        let compressed = u32::from_le_bytes(archive[at + 18..at + 22].try_into().unwrap()) as usize;
        let name_len = u16_at(archive, at + 26);
        let extra_len = u16_at(archive, at + 28);
        let name_at = at + 30;
        local.push(String::from_utf8(archive[name_at..name_at + name_len].to_vec()).unwrap());
        at = name_at + name_len + extra_len + compressed;
        assert_eq!(flags & 0x8, 0, "sizes in the local header, no data descriptor");
    }
    assert_eq!(archive.get(at..at + 4), Some(&b"PK\x01\x02"[..]), "the central directory follows the last entry");
    let mut zip = zip::ZipArchive::new(Cursor::new(archive)).unwrap();
    let central =
        (0..zip.len()).map(|i| String::from_utf8(zip.by_index(i).unwrap().name_raw().to_vec()).unwrap()).collect();
    (local, central)
}

pub fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

/// A manifest (as JSON) listing `files` with their true sizes and hashes.
pub fn manifest_for(files: &[(&str, &[u8])]) -> String {
    let files: Vec<_> = files
        .iter()
        .map(|(path, content)| {
            serde_json::json!({"path": path, "size": content.len(), "sha256": sha256_hex(content),
                               "version": 1, "file_type": "text"})
        })
        .collect();
    serde_json::json!({"format": 1, "project_id": "p", "snapshot_id": "s", "cursor": 3,
                       "created_at": "2026-01-02T03:04:05.678Z", "files": files})
    .to_string()
}

pub fn options() -> SimpleFileOptions {
    SimpleFileOptions::default().compression_method(CompressionMethod::Deflated)
}

/// One entry of a raw archive.
pub enum Entry<'a> {
    File(&'a str, &'a [u8]),
    /// A file entry with explicit external attributes (e.g. a unix mode in the high half).
    WithAttributes(&'a str, &'a [u8], u32),
    Symlink(&'a str, &'a str),
    Directory(&'a str),
}

/// Writes a zip with the `zip` writer directly, bypassing `build`'s checks.
pub fn raw_zip(entries: &[Entry<'_>]) -> Vec<u8> {
    let mut zip = ZipWriter::new(Cursor::new(Vec::new()));
    for entry in entries {
        match entry {
            Entry::File(name, content) => {
                zip.start_file(*name, options()).unwrap();
                zip.write_all(content).unwrap();
            }
            Entry::WithAttributes(name, content, attributes) => {
                zip.start_file(*name, options().external_attributes(*attributes)).unwrap();
                zip.write_all(content).unwrap();
            }
            Entry::Symlink(name, target) => zip.add_symlink(*name, *target, options()).unwrap(),
            Entry::Directory(name) => zip.add_directory(*name, options()).unwrap(),
        }
    }
    zip.finish().unwrap().into_inner()
}

/// A raw archive with the given content entries plus a manifest entry.
pub fn raw_with_manifest(entries: &[Entry<'_>], manifest: &str) -> Vec<u8> {
    let mut all: Vec<Entry<'_>> = Vec::new();
    for entry in entries {
        all.push(match entry {
            Entry::File(n, c) => Entry::File(n, c),
            Entry::WithAttributes(n, c, a) => Entry::WithAttributes(n, c, *a),
            Entry::Symlink(n, t) => Entry::Symlink(n, t),
            Entry::Directory(n) => Entry::Directory(n),
        });
    }
    all.push(Entry::File(snapshot_builder::MANIFEST_PATH, manifest.as_bytes()));
    raw_zip(&all)
}

/// Replaces every occurrence of `from` by `to` (same length): renames entries in both the
/// local headers and the central directory, to produce names the writer refuses.
pub fn patch_bytes(archive: &mut [u8], from: &[u8], to: &[u8]) -> usize {
    assert_eq!(from.len(), to.len());
    let mut count = 0;
    let mut i = 0;
    while i + from.len() <= archive.len() {
        if &archive[i..i + from.len()] == from {
            archive[i..i + from.len()].copy_from_slice(to);
            count += 1;
            i += from.len();
        } else {
            i += 1;
        }
    }
    count
}

fn u16_at(bytes: &[u8], at: usize) -> usize {
    usize::from(u16::from_le_bytes([bytes[at], bytes[at + 1]]))
}

/// Rewrites the declared uncompressed size of entry `name` in its local header and in the
/// central directory (the data and CRC stay as they are).
pub fn patch_declared_size(archive: &mut [u8], name: &str, size: u32) {
    let mut patched = 0;
    let mut i = 0;
    while i + 46 <= archive.len() {
        let signature = &archive[i..i + 4];
        let (name_at, size_at) = if signature == b"PK\x03\x04" {
            (i + 30, i + 22)
        } else if signature == b"PK\x01\x02" {
            (i + 46, i + 24)
        } else {
            i += 1;
            continue;
        };
        let name_len = u16_at(archive, if signature == b"PK\x03\x04" { i + 26 } else { i + 28 });
        if archive.get(name_at..name_at + name_len) == Some(name.as_bytes()) {
            archive[size_at..size_at + 4].copy_from_slice(&size.to_le_bytes());
            patched += 1;
        }
        i += 4;
    }
    assert_eq!(patched, 2, "local header and central directory of {name}");
}

/// A destination directory next to an "outside" directory, both inside one temp dir.
pub struct Sandbox {
    pub root: tempfile::TempDir,
    pub dest: PathBuf,
    pub outside: PathBuf,
}

impl Sandbox {
    pub fn create() -> Sandbox {
        let root = tempfile::tempdir().unwrap();
        let dest = root.path().join("dest");
        let outside = root.path().join("outside");
        std::fs::create_dir(&dest).unwrap();
        std::fs::create_dir(&outside).unwrap();
        Sandbox { root, dest, outside }
    }

    /// Nothing was written outside `dest`: the outside directory is empty and the root
    /// holds only the two directories.
    #[track_caller]
    pub fn assert_nothing_outside(&self) {
        assert_eq!(list(&self.outside), Vec::<String>::new(), "outside directory");
        assert_eq!(list(self.root.path()), vec!["dest".to_string(), "outside".to_string()], "sandbox root");
    }

    /// `extract` promises that on error whatever it wrote is removed: dest is empty.
    #[track_caller]
    pub fn assert_dest_empty(&self) {
        assert!(self.dest.is_dir(), "dest still exists");
        assert_eq!(list(&self.dest), Vec::<String>::new(), "dest after a refused extract");
    }
}

pub fn list(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> =
        std::fs::read_dir(dir).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect();
    names.sort();
    names
}

/// Every file under `dir`, relative, `/`-separated → content.
pub fn tree(dir: &Path) -> std::collections::BTreeMap<String, Vec<u8>> {
    fn walk(base: &Path, dir: &Path, out: &mut std::collections::BTreeMap<String, Vec<u8>>) {
        for entry in std::fs::read_dir(dir).unwrap() {
            let entry = entry.unwrap();
            let kind = entry.file_type().unwrap();
            assert!(!kind.is_symlink(), "symlink in the extracted tree: {:?}", entry.path());
            if kind.is_dir() {
                walk(base, &entry.path(), out);
            } else {
                let rel = entry.path().strip_prefix(base).unwrap().to_string_lossy().replace('\\', "/");
                out.insert(rel, std::fs::read(entry.path()).unwrap());
            }
        }
    }
    let mut out = std::collections::BTreeMap::new();
    walk(dir, dir, &mut out);
    out
}

/// Runs `verify` and `extract` (into a sandbox) on `archive`; both must refuse it. Checks
/// the sandbox and returns both errors.
pub fn refuse_both(archive: &[u8], limits: &ReadLimits) -> (ReadError, ReadError) {
    let verified = snapshot_builder::verify(Cursor::new(archive), limits).expect_err("verify must refuse");
    let sandbox = Sandbox::create();
    let extracted =
        snapshot_builder::extract(Cursor::new(archive), &sandbox.dest, limits).expect_err("extract must refuse");
    sandbox.assert_dest_empty();
    sandbox.assert_nothing_outside();
    (verified, extracted)
}
