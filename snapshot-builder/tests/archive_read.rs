//! Uploaded archives (`ManifestRule::Optional`) and the compression-ratio cap: archives
//! without a manifest read entry by entry under the same checks; a zip bomb is refused
//! while it inflates; every archive `build` writes passes the cap.

mod common;

use std::io::{Cursor, Write};

use common::*;
use snapshot_builder::{EntrySink, ManifestFile, ManifestRule, RATIO_FLOOR, ReadError, ReadLimits, SinkError};
use zip::ZipWriter;
use zip::write::SimpleFileOptions;

/// Collects what a read hands over: the `finish` description and the bytes of each file.
#[derive(Default)]
struct Collect {
    current: Vec<u8>,
    files: Vec<(ManifestFile, Vec<u8>)>,
}

impl EntrySink for Collect {
    type Error = std::convert::Infallible;
    fn begin(&mut self, _: &ManifestFile) -> Result<bool, Self::Error> {
        self.current.clear();
        Ok(true)
    }
    fn write(&mut self, chunk: &[u8]) -> Result<(), Self::Error> {
        self.current.extend_from_slice(chunk);
        Ok(())
    }
    fn finish(&mut self, file: &ManifestFile) -> Result<(), Self::Error> {
        self.files.push((file.clone(), std::mem::take(&mut self.current)));
        Ok(())
    }
}

fn read(archive: &[u8], rule: ManifestRule) -> Result<(bool, Collect), ReadError> {
    let mut sink = Collect::default();
    let manifest = snapshot_builder::read_archive_into(Cursor::new(archive), &ReadLimits::default(), &mut sink, rule)
        .map_err(|err| match err {
        SinkError::Archive(err) => err,
        SinkError::Sink(never) => match never {},
    })?;
    Ok((manifest.is_some(), sink))
}

#[test]
fn an_archive_without_manifest_reads_every_file_with_its_real_size_and_hash() {
    let archive = raw_zip(&[Entry::Directory("src/"), Entry::File("src/b.ts", b"b"), Entry::File("a.md", b"# a")]);
    let (has_manifest, sink) = read(&archive, ManifestRule::Optional).unwrap();
    assert!(!has_manifest);
    let got: Vec<(String, u64, String, Vec<u8>)> =
        sink.files.into_iter().map(|(f, bytes)| (f.path, f.size, f.sha256, bytes)).collect();
    assert_eq!(
        got,
        vec![
            ("src/b.ts".into(), 1, sha256_hex(b"b"), b"b".to_vec()),
            ("a.md".into(), 3, sha256_hex(b"# a"), b"# a".to_vec()),
        ]
    );
    // Snapshots still need their manifest.
    assert!(matches!(read(&archive, ManifestRule::Required), Err(ReadError::MissingManifest)));
}

#[test]
fn an_archive_without_manifest_is_checked_like_a_snapshot() {
    let cases: Vec<(Vec<u8>, &str)> = vec![
        (raw_zip(&[Entry::File("../x", b"x")]), "../x"),
        (raw_zip(&[Entry::File("/abs", b"x")]), "/abs"),
        (raw_zip(&[Entry::Symlink("link", "/etc/passwd")]), "link"),
        (raw_zip(&[Entry::File(".git/config", b"x")]), ".git/config"),
    ];
    for (archive, name) in cases {
        let err = read(&archive, ManifestRule::Optional).err().unwrap_or_else(|| panic!("{name} accepted"));
        assert_eq!(err.entry(), Some(name), "{err}");
    }
    let mut twice = raw_zip(&[Entry::File("a.txt", b"1"), Entry::File("b.txt", b"2")]);
    patch_bytes(&mut twice, b"b.txt", b"a.txt");
    let err = read(&twice, ManifestRule::Optional).err().unwrap();
    assert!(matches!(&err, ReadError::Duplicate { path } if path == "a.txt"), "{err:?}");
    let both = raw_zip(&[Entry::File("a", b"1"), Entry::File("a/b", b"2")]);
    assert!(read(&both, ManifestRule::Optional).is_err());
}

/// `zip -9` of very repetitive text (deflate's best ratio, about 1000:1).
fn bomb(name: &str, size: usize) -> Vec<u8> {
    let mut zip = ZipWriter::new(Cursor::new(Vec::new()));
    let options = SimpleFileOptions::default().compression_level(Some(9));
    zip.start_file(name, options).unwrap();
    zip.write_all(&vec![b'a'; size]).unwrap();
    zip.finish().unwrap().into_inner()
}

#[test]
fn a_zip_bomb_is_refused_by_its_ratio_naming_the_entry() {
    let archive = bomb("bomb.txt", 2 * 1024 * 1024 - 1);
    let err = read(&archive, ManifestRule::Optional).err().expect("bomb accepted");
    assert!(matches!(&err, ReadError::RatioTooHigh { path, .. } if path == "bomb.txt"), "{err:?}");
    // The same text below the floor is an ordinary small file.
    let small = bomb("small.txt", RATIO_FLOOR as usize);
    assert!(read(&small, ManifestRule::Optional).is_ok());
}

#[test]
fn ratio_cap_admits_every_archive_the_builder_makes() {
    // The most repetitive text a file may hold, at the largest size a file may have.
    let mut file = file("same.txt", "");
    file.content = vec![b'a'; 2 * 1024 * 1024];
    let (_, archive) = build_bytes(vec![file]);
    let (has_manifest, sink) = read(&archive, ManifestRule::Required).unwrap();
    assert!(has_manifest);
    assert_eq!(sink.files[0].1.len(), 2 * 1024 * 1024);
}
