//! The snapshot format end to end: round trip, determinism, what `build` refuses, and
//! hostile archives (written with the `zip` writer directly) that `verify` and `extract`
//! must refuse with the right error, writing nothing outside the destination.

mod common;

use std::io::Cursor;

use common::*;
use snapshot_builder::{BuildError, FileContent, ReadError, ReadLimits};

macro_rules! assert_variant {
    ($err:expr, $pattern:pat $(if $guard:expr)?) => {
        match &$err {
            $pattern $(if $guard)? => {}
            other => panic!("expected {}, got {other:?} ({other})", stringify!($pattern)),
        }
    };
}

/// Both readers refuse with the given variant.
macro_rules! refused {
    ($archive:expr, $pattern:pat $(if $guard:expr)?) => {
        refused!($archive, &ReadLimits::default(), $pattern $(if $guard)?)
    };
    ($archive:expr, $limits:expr, $pattern:pat $(if $guard:expr)?) => {{
        let archive = $archive;
        let (verified, extracted) = refuse_both(AsRef::<[u8]>::as_ref(&archive), $limits);
        assert_variant!(verified, $pattern $(if $guard)?);
        assert_variant!(extracted, $pattern $(if $guard)?);
    }};
}

fn sample_files() -> Vec<TestFile> {
    vec![
        file(".env", "A=1\n"),
        file("README.md", "# hi\n"),
        file("empty.txt", ""),
        TestFile {
            path: "src/app.ts".into(),
            content: b"export const x = 1;\n".to_vec(),
            version: 4,
            file_type: "typescript".into(),
        },
        file("src/deep/a/b/c.txt", &"z".repeat(100_000)),
        file("ünï/cødé.rs", "fn main() {}\n"),
    ]
}

// ---- round trip and determinism ----

#[test]
fn round_trip_gives_exactly_the_input_files_and_manifest() {
    let input = sample_files();
    let (built, bytes) = build_bytes(input.clone());
    assert_eq!(built.format, snapshot_builder::FORMAT);
    assert_eq!((built.cursor, built.project_id.as_str()), (7, meta(7).project_id.as_str()));
    assert_eq!(built.created_at, meta(7).created_at);
    let listed: Vec<_> = built.files.iter().map(|f| (f.path.clone(), f.size, f.version, f.file_type.clone())).collect();
    let expected: Vec<_> =
        input.iter().map(|f| (f.path.clone(), f.content.len() as u64, f.version, f.file_type.clone())).collect();
    assert_eq!(listed, expected);
    for (entry, file) in built.files.iter().zip(&input) {
        assert_eq!(entry.sha256, sha256_hex(&file.content));
    }

    let verified = snapshot_builder::verify(Cursor::new(&bytes), &ReadLimits::default()).unwrap();
    assert_eq!(verified, built);

    let sandbox = Sandbox::create();
    let extracted = snapshot_builder::extract(Cursor::new(&bytes), &sandbox.dest, &ReadLimits::default()).unwrap();
    assert_eq!(extracted, built);
    let on_disk = tree(&sandbox.dest);
    let wanted: std::collections::BTreeMap<_, _> = input.into_iter().map(|f| (f.path, f.content)).collect();
    assert_eq!(on_disk, wanted, "exactly the input files, nothing else (no manifest)");
    sandbox.assert_nothing_outside();
}

#[test]
fn an_empty_project_round_trips() {
    let (built, bytes) = build_bytes(Vec::new());
    assert!(built.files.is_empty());
    let sandbox = Sandbox::create();
    assert_eq!(snapshot_builder::extract(Cursor::new(&bytes), &sandbox.dest, &ReadLimits::default()).unwrap(), built);
    assert!(list(&sandbox.dest).is_empty());
}

#[test]
fn same_files_cursor_and_created_at_give_byte_identical_archives() {
    let (_, first) = build_bytes(sample_files());
    let (_, second) = build_bytes(sample_files());
    assert_eq!(first, second);

    // Any change in the inputs changes the bytes.
    let mut changed = sample_files();
    changed[1].content.push(b'!');
    assert_ne!(build_bytes(changed).1, first);
    let mut out = Cursor::new(Vec::new());
    let mut later = meta(7);
    later.cursor = 8;
    build_files(later, sample_files(), &mut out).unwrap();
    assert_ne!(out.into_inner(), first);
}

#[test]
fn entries_are_sorted_with_fixed_timestamps_and_permissions() {
    let (_, bytes) = build_bytes(sample_files());
    let mut zip = zip::ZipArchive::new(Cursor::new(&bytes)).unwrap();
    let mut names = Vec::new();
    for i in 0..zip.len() {
        let entry = zip.by_index(i).unwrap();
        let name = String::from_utf8(entry.name_raw().to_vec()).unwrap();
        assert_eq!(entry.last_modified(), Some(zip::DateTime::default()), "{name}");
        assert_eq!(entry.unix_mode(), Some(0o100_644), "{name}");
        names.push(name);
    }
    // ".env" < ".synchub/manifest.json" < "README.md": the manifest is among the files.
    let mut expected: Vec<String> = sample_files().into_iter().map(|f| f.path).collect();
    expected.insert(1, snapshot_builder::MANIFEST_PATH.into());
    assert_eq!(names, expected, "sorted by name, manifest included (central directory order)");
    assert_eq!(entry_names(&bytes), (expected.clone(), expected), "local headers in the same order");
}

#[test]
fn the_manifest_goes_in_at_its_byte_order_place() {
    let manifest = snapshot_builder::MANIFEST_PATH;
    // Paths next to the manifest's in byte order: '!' < '-' < '.', "env" < "synchub",
    // ".synchub-…" < ".synchub/" < ".synchub0" and ".synchub?" (not reserved: the first
    // segment is not ".synchub").
    let around = ["!a", "-x", ".env", ".synchub-not-reserved", ".synchub0", ".synchub?", "A", "a", "z", "ü"];
    let cases: [(&[&str], usize); 5] =
        [(&around, 4), (&["a", "b/c"], 0), (&["!a", "-x", ".env", ".synchub-x"], 4), (&[".synchub0"], 0), (&[], 0)];
    for (paths, at) in cases {
        let files: Vec<TestFile> = paths.iter().map(|p| file(p, p)).collect();
        let (built, bytes) = build_bytes(files);
        let mut expected: Vec<String> = paths.iter().map(|p| p.to_string()).collect();
        expected.insert(at, manifest.into());
        let (local, central) = entry_names(&bytes);
        assert_eq!(central, expected, "central directory order");
        assert_eq!(local, expected, "local header order");
        for pair in central.windows(2) {
            assert!(pair[0].as_bytes() < pair[1].as_bytes(), "{pair:?} not strictly byte-sorted");
        }
        // The readers find the manifest wherever it is.
        assert_eq!(snapshot_builder::verify(Cursor::new(&bytes), &ReadLimits::default()).unwrap(), built);
        let sandbox = Sandbox::create();
        snapshot_builder::extract(Cursor::new(&bytes), &sandbox.dest, &ReadLimits::default()).unwrap();
        let on_disk: Vec<String> = tree(&sandbox.dest).into_keys().collect();
        assert_eq!(on_disk, paths.iter().map(|p| p.to_string()).collect::<Vec<_>>());
    }
}

#[test]
fn build_requires_sorted_input_instead_of_sorting_it() {
    // `build` streams and does not sort: a listing out of byte order is refused.
    let mut files = sample_files();
    files.swap(1, 3);
    let err = build_files(meta(1), files, Cursor::new(Vec::new())).unwrap_err();
    assert_variant!(err, BuildError::Unsorted { path } if path == "empty.txt");

    // Byte order, not locale order: "B" < "a" < "ä".
    let ordered = vec![file("B", "1"), file("a", "2"), file("ä", "3")];
    assert!(build_files(meta(1), ordered, Cursor::new(Vec::new())).is_ok());
    let wrong = vec![file("a", "2"), file("B", "1")];
    let err = build_files(meta(1), wrong, Cursor::new(Vec::new()));
    assert_variant!(err.unwrap_err(), BuildError::Unsorted { .. });
}

#[test]
fn build_refuses_duplicates_invalid_paths_and_source_errors() {
    let build = |files: Vec<TestFile>| build_files(meta(1), files, Cursor::new(Vec::new()));
    assert_variant!(build(vec![file("a", "1"), file("a", "2")]).unwrap_err(), BuildError::Duplicate { path } if path == "a");
    for bad in [
        "../x",
        "a/../../x",
        "/etc/x",
        "a\\b",
        "",
        "a//b",
        "a/",
        "./a",
        ".synchub/manifest.json",
        ".git/config",
        "a\0b",
    ] {
        let err = build(vec![file(bad, "x")]).unwrap_err();
        assert_variant!(err, BuildError::InvalidPath { path, .. } if path == bad);
    }
    let listed = manifest_files(&[file("a", "1"), file("b", "2")]);
    let rows = vec![Ok(content("a", "1")), Err("connection reset".to_string())];
    let err = snapshot_builder::build(meta(1), listed, rows, Cursor::new(Vec::new())).unwrap_err();
    assert_variant!(err, BuildError::Source(text) if text.contains("connection reset"));
}

fn content(path: &str, content: &str) -> FileContent {
    FileContent { path: path.into(), content: content.as_bytes().to_vec() }
}

#[test]
fn build_refuses_contents_that_disagree_with_the_listing() {
    let listed = manifest_files(&[file("a", "one"), file("b", "two"), file("c", "three")]);
    let build = |rows: Vec<FileContent>| {
        snapshot_builder::build(meta(1), listed.clone(), rows.into_iter().map(Ok::<_, String>), Cursor::new(Vec::new()))
    };
    // The same bytes as listed build.
    assert!(build(vec![content("a", "one"), content("b", "two"), content("c", "three")]).is_ok());
    // Other bytes of the same size (sha256), or another size.
    let err = build(vec![content("a", "one"), content("b", "TWO"), content("c", "three")]).unwrap_err();
    assert_variant!(err, BuildError::ContentMismatch { path } if path == "b");
    let err = build(vec![content("a", "one!"), content("b", "two"), content("c", "three")]).unwrap_err();
    assert_variant!(err, BuildError::ContentMismatch { path } if path == "a");
    // A listed file skipped, or the contents ending early.
    let err = build(vec![content("a", "one"), content("c", "three")]).unwrap_err();
    assert_variant!(err, BuildError::MissingContent { path } if path == "b");
    let err = build(vec![content("a", "one"), content("b", "two")]).unwrap_err();
    assert_variant!(err, BuildError::MissingContent { path } if path == "c");
    // A content not listed (between two listed files, or after the last).
    let err = build(vec![content("a", "one"), content("a2", "x"), content("b", "two")]).unwrap_err();
    assert_variant!(err, BuildError::UnlistedContent { path } if path == "a2");
    let rows = vec![content("a", "one"), content("b", "two"), content("c", "three"), content("d", "x")];
    assert_variant!(build(rows).unwrap_err(), BuildError::UnlistedContent { path } if path == "d");
    // Out of order: "b" comes where "a" is listed, so "a" is missing.
    let err = build(vec![content("b", "two"), content("a", "one"), content("c", "three")]).unwrap_err();
    assert_variant!(err, BuildError::MissingContent { path } if path == "a");
}

// ---- hostile archives ----

#[test]
fn path_traversal_names_are_refused() {
    for name in ["../x", "a/../../x", "../outside/pwned", "a/./b", "./x", "a//b"] {
        let content: &[u8] = b"pwned";
        let archive = raw_with_manifest(&[Entry::File(name, content)], &manifest_for(&[]));
        refused!(archive, ReadError::InvalidPath { path, .. } if path == name);
    }
}

#[test]
fn absolute_and_backslash_names_are_refused() {
    let sandbox = Sandbox::create();
    let absolute = format!("{}/pwned", sandbox.outside.display());
    for name in [absolute.as_str(), "/etc/x", "..\\outside\\pwned", "a\\b", "C:\\x"] {
        let archive = raw_with_manifest(&[Entry::File(name, b"pwned")], &manifest_for(&[]));
        refused!(archive, ReadError::InvalidPath { path, .. } if path == name);
    }
    sandbox.assert_nothing_outside();
}

#[test]
fn reserved_control_and_directory_names_are_refused() {
    for name in [".git/config", ".synchub/other.json", "a\nb", "a\u{7}b"] {
        let archive = raw_with_manifest(&[Entry::File(name, b"x")], &manifest_for(&[]));
        refused!(archive, ReadError::InvalidPath { path, .. } if path == name);
    }
    let archive = raw_with_manifest(&[Entry::Directory("dir")], &manifest_for(&[]));
    refused!(archive, ReadError::InvalidPath { .. } | ReadError::NotAFile { .. });
}

#[test]
fn symlink_entries_are_refused() {
    // Through the writer's symlink API, listed in the manifest with the target's bytes.
    let target: &[u8] = b"../outside";
    let archive = raw_with_manifest(
        &[Entry::Symlink("link", "../outside"), Entry::File("other", b"x")],
        &manifest_for(&[("link", target), ("other", b"x")]),
    );
    refused!(archive, ReadError::NotAFile { path } if path == "link");
    // A link followed by a write through it.
    let archive = raw_with_manifest(
        &[Entry::Symlink("link", "../outside"), Entry::File("link/pwned", b"x")],
        &manifest_for(&[("link", target), ("link/pwned", b"x")]),
    );
    refused!(archive, ReadError::NotAFile { .. } | ReadError::BadManifest(_));

    // A plain entry whose external attributes carry S_IFLNK (0o120777 in the high half).
    let archive = raw_with_manifest(
        &[Entry::WithAttributes("evil", b"/etc/passwd", 0o120_777 << 16)],
        &manifest_for(&[("evil", b"/etc/passwd")]),
    );
    refused!(archive, ReadError::NotAFile { path } if path == "evil");

    // Other special files (a FIFO) too.
    let archive =
        raw_with_manifest(&[Entry::WithAttributes("fifo", b"", 0o010_644 << 16)], &manifest_for(&[("fifo", b"")]));
    refused!(archive, ReadError::NotAFile { path } if path == "fifo");
}

#[test]
fn duplicate_entry_names_are_refused() {
    // The writer refuses duplicates, so write two names and rename one in place.
    let mut archive = raw_with_manifest(
        &[Entry::File("dup-a.txt", b"good"), Entry::File("dup-b.txt", b"evil")],
        &manifest_for(&[("dup-a.txt", b"good")]),
    );
    assert_eq!(patch_bytes(&mut archive, b"dup-b.txt", b"dup-a.txt"), 2);
    refused!(archive, ReadError::Duplicate { .. });

    // A second manifest.
    let mut archive = raw_zip(&[
        Entry::File(".synchub/manifest.jsoX", manifest_for(&[("a", b"1")]).as_bytes()),
        Entry::File("a", b"1"),
        Entry::File(snapshot_builder::MANIFEST_PATH, manifest_for(&[]).as_bytes()),
    ]);
    assert_eq!(patch_bytes(&mut archive, b".synchub/manifest.jsoX", snapshot_builder::MANIFEST_PATH.as_bytes()), 2);
    refused!(archive, ReadError::Duplicate { .. });
}

#[test]
fn manifest_and_entries_must_match_exactly() {
    // An entry not in the manifest.
    let archive =
        raw_with_manifest(&[Entry::File("a", b"1"), Entry::File("extra", b"2")], &manifest_for(&[("a", b"1")]));
    refused!(archive, ReadError::Unlisted { path } if path == "extra");
    // A manifest file missing from the archive.
    let archive = raw_with_manifest(&[Entry::File("a", b"1")], &manifest_for(&[("a", b"1"), ("b", b"2")]));
    refused!(archive, ReadError::Missing { path } if path == "b");
    // Content that does not hash to the manifest's sha256 (same size).
    let archive = raw_with_manifest(&[Entry::File("a", b"evil")], &manifest_for(&[("a", b"good")]));
    refused!(archive, ReadError::HashMismatch { path } if path == "a");
    // A size that does not match, the hash being right.
    let manifest = manifest_for(&[("a", b"good")]).replace("\"size\":4", "\"size\":5");
    let archive = raw_with_manifest(&[Entry::File("a", b"good")], &manifest);
    refused!(archive, ReadError::SizeMismatch { path } if path == "a");
}

#[test]
fn missing_or_bad_manifests_are_refused() {
    refused!(raw_zip(&[Entry::File("a", b"1")]), ReadError::MissingManifest);
    refused!(raw_zip(&[]), ReadError::MissingManifest);
    refused!(raw_with_manifest(&[], "not json"), ReadError::BadManifest(_));
    let format2 = manifest_for(&[]).replace("\"format\":1", "\"format\":2");
    refused!(raw_with_manifest(&[], &format2), ReadError::UnsupportedFormat(2));
    let unsorted = manifest_for(&[("b", b"1"), ("a", b"1")]);
    refused!(
        raw_with_manifest(&[Entry::File("a", b"1"), Entry::File("b", b"1")], &unsorted),
        ReadError::BadManifest(_)
    );
    let traversal = manifest_for(&[("../x", b"1")]);
    refused!(raw_with_manifest(&[], &traversal), ReadError::InvalidPath { .. });
}

#[test]
fn a_file_that_is_also_a_directory_is_refused_by_verify_as_by_extract() {
    // "a" and "a/b" cannot both be files on disk: extract cannot write it, so verify must
    // not accept it either.
    let manifest = manifest_for(&[("a", b"1"), ("a-b", b"2"), ("a/b", b"3")]);
    let archive =
        raw_with_manifest(&[Entry::File("a", b"1"), Entry::File("a-b", b"2"), Entry::File("a/b", b"3")], &manifest);
    refused!(archive, ReadError::BadManifest(text) if text.contains("\"a\""));
}

#[test]
fn non_utf8_names_are_refused() {
    let mut archive = raw_with_manifest(&[Entry::File("nonutf8.txt", b"x")], &manifest_for(&[("nonutf8.txt", b"x")]));
    assert_eq!(patch_bytes(&mut archive, b"nonutf8.txt", b"non\xff\xfe\xfd8.txt"), 2);
    refused!(archive, ReadError::InvalidPath { reason, .. } if reason.contains("UTF-8"));
}

#[test]
fn garbage_truncated_and_empty_bytes_are_refused() {
    refused!(b"this is not a zip file at all", ReadError::Zip(_));
    refused!(b"", ReadError::Zip(_));
    let (_, valid) = build_bytes(sample_files());
    for cut in [valid.len() / 2, valid.len() - 10, 30] {
        refused!(&valid[..cut], ReadError::Zip(_));
    }
    // A flipped byte inside compressed data: a bad deflate stream or a CRC mismatch.
    let mut corrupt = valid.clone();
    let at = corrupt.windows(6).position(|w| w == b"c.txt\0" || w == b"c.txt\x01").unwrap_or(200) + 40;
    corrupt[at] ^= 0x55;
    let (verified, _) = refuse_both(&corrupt, &ReadLimits::default());
    assert_variant!(verified, ReadError::Zip(_) | ReadError::HashMismatch { .. } | ReadError::SizeMismatch { .. });
}

#[test]
fn a_header_that_understates_the_inflated_size_is_refused_early() {
    // 3 MiB of zeros deflate to a few KiB; the headers and the manifest claim 10 bytes.
    let big = vec![0u8; 3 * 1024 * 1024];
    let claimed: &[u8] = &big[..10];
    let mut archive = raw_with_manifest(&[Entry::File("bomb.txt", &big)], &manifest_for(&[("bomb.txt", claimed)]));
    assert!(archive.len() < 64 * 1024);
    patch_declared_size(&mut archive, "bomb.txt", 10);
    refused!(archive, ReadError::Zip(_) | ReadError::SizeMismatch { .. } | ReadError::HashMismatch { .. });
}

#[test]
fn a_header_that_overstates_the_inflated_size_is_refused() {
    // The manifest tells the truth and the content matches it; only the zip headers claim
    // more than the entry inflates to (found by reader_props: an empty entry claiming 1).
    for (content, claimed) in [(&b""[..], 1u32), (&b"0123456789"[..], 500)] {
        let mut archive = raw_with_manifest(&[Entry::File("a.txt", content)], &manifest_for(&[("a.txt", content)]));
        patch_declared_size(&mut archive, "a.txt", claimed);
        refused!(archive, ReadError::DeclaredSizeMismatch { path, declared, inflated }
            if path == "a.txt" && *declared == u64::from(claimed) && *inflated == content.len() as u64);
    }
}

#[test]
fn the_size_cap_counts_bytes_actually_inflated_not_header_claims() {
    // The headers claim 2 GiB (so the zip reader's own declared-size guard never trips)
    // and the manifest 10 bytes: only counting the bytes really inflated catches it.
    let big = vec![0u8; 3 * 1024 * 1024];
    let mut archive = raw_with_manifest(&[Entry::File("bomb.txt", &big)], &manifest_for(&[("bomb.txt", &big[..10])]));
    patch_declared_size(&mut archive, "bomb.txt", 0x7fff_ffff);
    // (No ratio cap here: it would catch this bomb first, archive_read.rs tests it.)
    let limits = ReadLimits { max_file_bytes: 1024 * 1024, max_ratio: u64::MAX, ..ReadLimits::default() };
    refused!(archive, &limits, ReadError::FileTooLarge { path, limit: 1_048_576 } if path == "bomb.txt");

    // With honest headers too, and the default 2 MiB cap.
    let archive = raw_with_manifest(&[Entry::File("bomb.txt", &big)], &manifest_for(&[("bomb.txt", &big)]));
    let limits = ReadLimits { max_ratio: u64::MAX, ..ReadLimits::default() };
    refused!(archive, &limits, ReadError::FileTooLarge { limit: 2_097_152, .. });
}

#[test]
fn the_total_cap_is_enforced() {
    let chunk = vec![b'x'; 600 * 1024];
    let files: Vec<(&str, &[u8])> = vec![("a", &chunk), ("b", &chunk), ("c", &chunk)];
    let archive = raw_with_manifest(
        &[Entry::File("a", &chunk), Entry::File("b", &chunk), Entry::File("c", &chunk)],
        &manifest_for(&files),
    );
    // (Level-6 deflate of one repeated byte passes the ratio cap: not what this tests.)
    let no_ratio = ReadLimits { max_ratio: u64::MAX, ..ReadLimits::default() };
    let limits = ReadLimits { max_total_bytes: 1024 * 1024, ..no_ratio.clone() };
    refused!(&archive, &limits, ReadError::TotalTooLarge { limit: 1_048_576 });
    // Within the cap it is fine.
    assert!(snapshot_builder::verify(Cursor::new(&archive), &no_ratio).is_ok());
}

#[test]
fn too_many_entries_are_refused() {
    let names: Vec<String> = (0..5).map(|i| format!("f{i}")).collect();
    let entries: Vec<Entry<'_>> = names.iter().map(|n| Entry::File(n, b"x")).collect();
    let listed: Vec<(&str, &[u8])> = names.iter().map(|n| (n.as_str(), b"x" as &[u8])).collect();
    let archive = raw_with_manifest(&entries, &manifest_for(&listed));
    let limits = ReadLimits { max_entries: 3, ..ReadLimits::default() };
    refused!(&archive, &limits, ReadError::TooManyEntries { limit: 3 });
    let exact = ReadLimits { max_entries: 5, ..ReadLimits::default() };
    assert!(snapshot_builder::verify(Cursor::new(&archive), &exact).is_ok());

    // A manifest listing more files than allowed, over an archive within the entry cap.
    let archive = raw_with_manifest(&entries[..2], &manifest_for(&listed));
    refused!(archive, &limits, ReadError::TooManyEntries { limit: 3 });
}

#[test]
fn encrypted_or_unsupported_entries_are_refused() {
    // An entry flagged as encrypted (general purpose bit 0) cannot be read without a password.
    let mut archive = raw_with_manifest(&[Entry::File("a", b"1")], &manifest_for(&[("a", b"1")]));
    let mut flagged = 0;
    for i in 0..archive.len() - 4 {
        let flags_at = match &archive[i..i + 4] {
            b"PK\x03\x04" => i + 6,
            b"PK\x01\x02" => i + 8,
            _ => continue,
        };
        let name_len = usize::from(archive[i + if flags_at == i + 6 { 26 } else { 28 }]);
        let name_at = if flags_at == i + 6 { i + 30 } else { i + 46 };
        if name_len == 1 && archive[name_at] == b'a' {
            archive[flags_at] |= 1;
            flagged += 1;
        }
    }
    assert_eq!(flagged, 2);
    refused!(archive, ReadError::Zip(_));
}

#[test]
fn extract_refuses_a_non_empty_destination_and_leaves_it_alone() {
    let (_, bytes) = build_bytes(sample_files());
    let sandbox = Sandbox::create();
    std::fs::write(sandbox.dest.join("keep.txt"), "mine").unwrap();
    let err = snapshot_builder::extract(Cursor::new(&bytes), &sandbox.dest, &ReadLimits::default()).unwrap_err();
    assert_variant!(err, ReadError::DestinationNotEmpty);
    assert_eq!(list(&sandbox.dest), vec!["keep.txt".to_string()]);
    assert_eq!(std::fs::read_to_string(sandbox.dest.join("keep.txt")).unwrap(), "mine");
    sandbox.assert_nothing_outside();
}

#[test]
fn a_refusal_after_files_were_written_removes_them() {
    // Good files first, then a hash mismatch: extract wrote some files before refusing.
    let good: &[u8] = b"fine";
    let archive = raw_with_manifest(
        &[Entry::File("a/one.txt", good), Entry::File("b/two.txt", good), Entry::File("c.txt", b"evil")],
        &manifest_for(&[("a/one.txt", good), ("b/two.txt", good), ("c.txt", b"good")]),
    );
    refused!(archive, ReadError::HashMismatch { path } if path == "c.txt");
}

/// Records what [`snapshot_builder::read_into`] hands over; skips `skip`, fails on `fail`.
#[derive(Default)]
struct Recorder {
    skip: &'static str,
    fail: &'static str,
    current: Vec<u8>,
    finished: Vec<(String, Vec<u8>)>,
}

impl snapshot_builder::EntrySink for Recorder {
    type Error = String;

    fn begin(&mut self, file: &snapshot_builder::ManifestFile) -> Result<bool, String> {
        if file.path == self.fail {
            return Err(format!("no room for {}", file.path));
        }
        self.current.clear();
        Ok(file.path != self.skip)
    }

    fn write(&mut self, chunk: &[u8]) -> Result<(), String> {
        self.current.extend_from_slice(chunk);
        Ok(())
    }

    fn finish(&mut self, file: &snapshot_builder::ManifestFile) -> Result<(), String> {
        self.finished.push((file.path.clone(), std::mem::take(&mut self.current)));
        Ok(())
    }
}

#[test]
fn read_into_hands_over_verified_entries_in_order() {
    let (_, archive) = build_bytes(sample_files());
    let mut sink = Recorder { skip: "README.md", ..Recorder::default() };
    let manifest = snapshot_builder::read_into(Cursor::new(&archive), &ReadLimits::default(), &mut sink).unwrap();
    let expected: Vec<(String, Vec<u8>)> =
        sample_files().into_iter().filter(|f| f.path != "README.md").map(|f| (f.path, f.content)).collect();
    assert_eq!(sink.finished, expected);
    assert_eq!(manifest.files.len(), sample_files().len());

    // A skipped entry is still checked: damage README.md and the read fails.
    let mut damaged = archive.clone();
    let header = damaged.windows(9).position(|w| w == b"README.md").unwrap() - 30;
    assert_eq!(&damaged[header..header + 4], b"PK\x03\x04", "README.md's local header");
    let extra = usize::from(u16::from_le_bytes([damaged[header + 28], damaged[header + 29]]));
    damaged[header + 30 + 9 + extra] ^= 0x55; // the first byte of its deflated data
    let mut sink = Recorder { skip: "README.md", ..Recorder::default() };
    let err = snapshot_builder::read_into(Cursor::new(&damaged), &ReadLimits::default(), &mut sink).unwrap_err();
    assert!(matches!(err, snapshot_builder::SinkError::Archive(_)), "{err:?}");

    // The sink's own error stops the read and comes back as it was.
    let mut sink = Recorder { fail: "empty.txt", ..Recorder::default() };
    let err = snapshot_builder::read_into(Cursor::new(&archive), &ReadLimits::default(), &mut sink).unwrap_err();
    assert!(matches!(&err, snapshot_builder::SinkError::Sink(message) if message == "no room for empty.txt"));
    assert_eq!(sink.finished.len(), 2, "{:?}", sink.finished);
}

#[test]
fn binary_entries_round_trip_under_their_own_size_cap() {
    // Bytes that are no UTF-8 text, larger than the text cap but within the binary one.
    let bytes: Vec<u8> = (0..3000u32).map(|i| (i.wrapping_mul(131) % 256) as u8 ^ 0xC3).collect();
    assert!(std::str::from_utf8(&bytes).is_err());
    let entry = |binary: bool| snapshot_builder::ManifestFile {
        path: "img/logo.png".into(),
        size: bytes.len() as u64,
        sha256: sha256_hex(&bytes),
        version: 1,
        file_type: "binary".into(),
        binary,
    };
    let limits = ReadLimits { max_file_bytes: 1000, max_binary_file_bytes: 4096, ..ReadLimits::default() };
    let build = |binary: bool| {
        let rows = vec![Ok::<_, String>(FileContent { path: "img/logo.png".into(), content: bytes.clone() })];
        let mut out = Cursor::new(Vec::new());
        let (manifest, _) = snapshot_builder::build(meta(1), vec![entry(binary)], rows, &mut out).unwrap();
        (manifest, out.into_inner())
    };

    let (manifest, archive) = build(true);
    let json = serde_json::to_value(&manifest).unwrap();
    assert_eq!(json["files"][0]["binary"], true);
    let read = snapshot_builder::verify(Cursor::new(&archive), &limits).unwrap();
    assert!(read.files[0].binary);
    let dir = tempfile::tempdir().unwrap();
    snapshot_builder::extract(Cursor::new(&archive), dir.path(), &limits).unwrap();
    assert_eq!(std::fs::read(dir.path().join("img/logo.png")).unwrap(), bytes);

    // The same bytes listed as text: the text cap applies; text entries carry no "binary".
    let (manifest, archive) = build(false);
    assert!(serde_json::to_value(&manifest).unwrap()["files"][0].get("binary").is_none());
    refused!(archive, &limits, ReadError::FileTooLarge { limit: 1000, .. });
    // Over the binary cap: refused as well.
    let (_, archive) = build(true);
    let tight = ReadLimits { max_binary_file_bytes: 2048, ..limits };
    refused!(archive, &tight, ReadError::FileTooLarge { limit: 2048, .. });
}
