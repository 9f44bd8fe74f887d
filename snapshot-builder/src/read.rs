//! Reading untrusted archives: [`verify`], [`extract`] and [`read_into`], with every check
//! the crate documentation lists.

use std::collections::{HashMap, HashSet};
use std::fmt;
use std::fs;
use std::io::{self, Read, Seek};
use std::path::Path;

use sha2::{Digest, Sha256};
use zip::ZipArchive;

use crate::paths::validate_path;
use crate::{DirSink, EntrySink, FORMAT, MANIFEST_PATH, Manifest, ManifestFile, SinkError};

/// A manifest larger than this is refused before parsing.
const MAX_MANIFEST_BYTES: u64 = 64 * 1024 * 1024;

/// Caps for reading untrusted archives; sizes are measured on the bytes actually inflated.
#[derive(Debug, Clone)]
pub struct ReadLimits {
    pub max_entries: usize,
    pub max_total_bytes: u64,
    pub max_file_bytes: u64,
    /// Inflated bytes per compressed byte an entry may reach once it is past
    /// [`RATIO_FLOOR`] bytes: a zip bomb is refused while it inflates, not after.
    pub max_ratio: u64,
    /// The cap of entries the manifest marks `binary` (CONTRACT section 13).
    pub max_binary_file_bytes: u64,
}

/// Entries up to this many inflated bytes are not held to [`ReadLimits::max_ratio`] (tiny
/// files compress to a few bytes of header-dominated data, whatever their content).
pub const RATIO_FLOOR: u64 = 256 * 1024;

impl Default for ReadLimits {
    /// The contract's project limits: 10,000 files of at most 2 MiB (binary files 50 MiB),
    /// 256 MiB in all. The ratio cap is above what [`build`](crate::build)'s fixed deflate
    /// level reaches on the most repetitive text (about 240:1,
    /// `ratio_cap_admits_every_archive_the_builder_makes`), so every snapshot the hub writes
    /// reads back; `zip -9` of repetitive text reaches about 1000:1.
    fn default() -> Self {
        ReadLimits {
            max_entries: 10_000,
            max_total_bytes: 256 * 1024 * 1024,
            max_file_bytes: 2 * 1024 * 1024,
            max_ratio: 400,
            max_binary_file_bytes: 50 * 1024 * 1024,
        }
    }
}

/// Whether an archive must carry `.synchub/manifest.json`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ManifestRule {
    /// Snapshots: the manifest lists every file, and every entry is checked against it.
    Required,
    /// Uploaded archives: with a manifest, as `Required`; without one, every regular
    /// entry is a file at its name (directory entries are skipped), under the same checks
    /// except the hashes there are none to compare with.
    Optional,
}

#[derive(Debug)]
pub enum ReadError {
    Zip(String),
    Io(io::Error),
    TooManyEntries {
        limit: usize,
    },
    MissingManifest,
    BadManifest(String),
    UnsupportedFormat(u32),
    InvalidPath {
        path: String,
        reason: String,
    },
    NotAFile {
        path: String,
    },
    Duplicate {
        path: String,
    },
    Unlisted {
        path: String,
    },
    Missing {
        path: String,
    },
    SizeMismatch {
        path: String,
    },
    /// The entry inflated to another size than its zip headers declare.
    DeclaredSizeMismatch {
        path: String,
        declared: u64,
        inflated: u64,
    },
    HashMismatch {
        path: String,
    },
    FileTooLarge {
        path: String,
        limit: u64,
    },
    RatioTooHigh {
        path: String,
        limit: u64,
    },
    TotalTooLarge {
        limit: u64,
    },
    DestinationNotEmpty,
}

impl fmt::Display for ReadError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ReadError::Zip(err) => write!(f, "not a readable zip: {err}"),
            ReadError::Io(err) => write!(f, "i/o error: {err}"),
            ReadError::TooManyEntries { limit } => write!(f, "more than {limit} entries"),
            ReadError::MissingManifest => write!(f, "no {MANIFEST_PATH}"),
            ReadError::BadManifest(err) => write!(f, "invalid manifest: {err}"),
            ReadError::UnsupportedFormat(format) => write!(f, "unsupported snapshot format {format}"),
            ReadError::InvalidPath { path, reason } => write!(f, "refused entry {path:?}: {reason}"),
            ReadError::NotAFile { path } => write!(f, "refused entry {path:?}: not a regular file"),
            ReadError::Duplicate { path } => write!(f, "duplicate entry {path:?}"),
            ReadError::Unlisted { path } => write!(f, "entry {path:?} is not in the manifest"),
            ReadError::Missing { path } => write!(f, "manifest file {path:?} is missing from the archive"),
            ReadError::SizeMismatch { path } => write!(f, "size of {path:?} does not match the manifest"),
            ReadError::DeclaredSizeMismatch { path, declared, inflated } => {
                write!(f, "{path:?} inflates to {inflated} bytes, its zip headers declare {declared}")
            }
            ReadError::HashMismatch { path } => write!(f, "sha256 of {path:?} does not match the manifest"),
            ReadError::FileTooLarge { path, limit } => write!(f, "{path:?} inflates to more than {limit} bytes"),
            ReadError::RatioTooHigh { path, limit } => {
                write!(f, "{path:?} inflates to more than {limit} times its compressed size (a zip bomb?)")
            }
            ReadError::TotalTooLarge { limit } => write!(f, "the archive inflates to more than {limit} bytes"),
            ReadError::DestinationNotEmpty => write!(f, "the extraction directory is not empty"),
        }
    }
}

impl std::error::Error for ReadError {}

impl From<io::Error> for ReadError {
    fn from(err: io::Error) -> Self {
        ReadError::Io(err)
    }
}

impl ReadError {
    /// The archive entry this error is about, if it names one.
    pub fn entry(&self) -> Option<&str> {
        match self {
            ReadError::InvalidPath { path, .. }
            | ReadError::NotAFile { path }
            | ReadError::Duplicate { path }
            | ReadError::Unlisted { path }
            | ReadError::Missing { path }
            | ReadError::SizeMismatch { path }
            | ReadError::DeclaredSizeMismatch { path, .. }
            | ReadError::HashMismatch { path }
            | ReadError::FileTooLarge { path, .. }
            | ReadError::RatioTooHigh { path, .. } => Some(path),
            _ => None,
        }
    }
}

impl From<zip::result::ZipError> for ReadError {
    fn from(err: zip::result::ZipError) -> Self {
        match err {
            zip::result::ZipError::Io(err) => ReadError::Io(err),
            other => ReadError::Zip(other.to_string()),
        }
    }
}

/// Checks an archive completely (every entry inflated and hashed) without writing.
pub fn verify<R: Read + Seek>(archive: R, limits: &ReadLimits) -> Result<Manifest, ReadError> {
    struct Discard;
    impl EntrySink for Discard {
        type Error = std::convert::Infallible;
        fn begin(&mut self, _: &ManifestFile) -> Result<bool, Self::Error> {
            Ok(false)
        }
        fn write(&mut self, _: &[u8]) -> Result<(), Self::Error> {
            Ok(())
        }
        fn finish(&mut self, _: &ManifestFile) -> Result<(), Self::Error> {
            Ok(())
        }
    }
    read_into(archive, limits, &mut Discard).map_err(|err| match err {
        SinkError::Archive(err) => err,
        SinkError::Sink(never) => match never {},
    })
}

/// Verifies and extracts into `dest`, an existing empty directory the caller just made
/// (a staging directory). On any error, whatever was written is removed again.
pub fn extract<R: Read + Seek>(archive: R, dest: &Path, limits: &ReadLimits) -> Result<Manifest, ReadError> {
    if fs::read_dir(dest)?.next().is_some() {
        return Err(ReadError::DestinationNotEmpty);
    }
    let mut sink = DirSink::new(dest);
    let result = read_into(archive, limits, &mut sink).map_err(|err| match err {
        SinkError::Archive(err) => err,
        SinkError::Sink(err) => ReadError::Io(err),
    });
    drop(sink);
    if result.is_err()
        && let Ok(entries) = fs::read_dir(dest)
    {
        for entry in entries.flatten() {
            let path = entry.path();
            let _ = if entry.file_type().is_ok_and(|t| t.is_dir()) {
                fs::remove_dir_all(&path)
            } else {
                fs::remove_file(&path)
            };
        }
    }
    result
}

/// Reads an untrusted archive completely, checking everything [`verify`] promises, and
/// hands every listed file's bytes to `sink` as they are inflated: one pass, no copy of the
/// archive's contents anywhere else.
pub fn read_into<R, S>(archive: R, limits: &ReadLimits, sink: &mut S) -> Result<Manifest, SinkError<S::Error>>
where
    R: Read + Seek,
    S: EntrySink + ?Sized,
{
    read_archive_into(archive, limits, sink, ManifestRule::Required)?
        .ok_or_else(|| SinkError::Archive(ReadError::MissingManifest))
}

/// [`read_into`] under a [`ManifestRule`]: `Ok(None)` is an archive without a manifest
/// (only under [`ManifestRule::Optional`]). For such an archive the sink's `begin` sees
/// each entry's declared size and an empty sha256, and its `finish` the size and sha256
/// actually read (version 0, file type empty: infer it); every entry is marked `binary`
/// (it may be: held to the binary cap), and the caller tells text from the bytes.
pub fn read_archive_into<R, S>(
    archive: R,
    limits: &ReadLimits,
    sink: &mut S,
    rule: ManifestRule,
) -> Result<Option<Manifest>, SinkError<S::Error>>
where
    R: Read + Seek,
    S: EntrySink + ?Sized,
{
    let mut zip = ZipArchive::new(archive).map_err(archive_error)?;
    if zip.len() > limits.max_entries + 1 {
        return Err(ReadError::TooManyEntries { limit: limits.max_entries }.into());
    }
    // The reader keeps one entry per name, so a second entry of the same name would pass
    // unseen: refuse it here. Local headers must agree with the central directory (no
    // names hidden from other unzip tools) and entries must not overlap.
    if zip.has_duplicate_names() {
        return Err(ReadError::Duplicate { path: first_duplicate_name(zip, limits.max_entries + 1) }.into());
    }
    zip.validate_header_consistency().map_err(archive_error)?;
    let manifest = match read_manifest(&mut zip) {
        Ok(manifest) => Some(manifest),
        Err(ReadError::MissingManifest) if rule == ManifestRule::Optional => None,
        Err(err) => return Err(err.into()),
    };
    let listing = match &manifest {
        Some(_) => None,
        None => Some(list_entries(&mut zip)?),
    };
    let files: &[ManifestFile] = match (&manifest, &listing) {
        (Some(manifest), _) => &manifest.files,
        (None, Some(listing)) => listing,
        (None, None) => &[],
    };
    if files.len() > limits.max_entries {
        return Err(ReadError::TooManyEntries { limit: limits.max_entries }.into());
    }
    let hashes_known = manifest.is_some();
    let mut expected: HashMap<&str, &ManifestFile> = HashMap::with_capacity(files.len());
    for file in files {
        expected.insert(file.path.as_str(), file);
    }
    let mut seen: HashSet<String> = HashSet::with_capacity(files.len());
    let mut total = 0u64;
    let mut buffer = vec![0u8; 64 * 1024];
    for index in 0..zip.len() {
        let mut entry = zip.by_index(index).map_err(archive_error)?;
        let name = entry_name(entry.name_raw())?;
        if name == MANIFEST_PATH {
            if !seen.insert(name.clone()) {
                return Err(ReadError::Duplicate { path: name }.into());
            }
            continue;
        }
        if !hashes_known && entry.is_dir() {
            continue;
        }
        validate_path(&name)
            .map_err(|reason| ReadError::InvalidPath { path: name.clone(), reason: reason.to_string() })?;
        let is_special = entry.unix_mode().is_some_and(|mode| mode & 0o170000 != 0o100000 && mode & 0o170000 != 0);
        if entry.is_dir() || entry.is_symlink() || is_special {
            return Err(ReadError::NotAFile { path: name }.into());
        }
        let listed = *expected.get(name.as_str()).ok_or_else(|| ReadError::Unlisted { path: name.clone() })?;
        if !seen.insert(name.clone()) {
            return Err(ReadError::Duplicate { path: name }.into());
        }
        let compressed = entry.compressed_size();
        let wanted = sink.begin(listed).map_err(SinkError::Sink)?;
        let mut hasher = Sha256::new();
        let mut size = 0u64;
        let max_file_bytes = if listed.binary { limits.max_binary_file_bytes } else { limits.max_file_bytes };
        let mut limited = (&mut entry).take(max_file_bytes + 1);
        loop {
            let read = limited.read(&mut buffer).map_err(archive_io_error)?;
            if read == 0 {
                break;
            }
            size += read as u64;
            total += read as u64;
            if size > max_file_bytes {
                return Err(ReadError::FileTooLarge { path: name, limit: max_file_bytes }.into());
            }
            if size > RATIO_FLOOR && size > compressed.saturating_mul(limits.max_ratio) {
                return Err(ReadError::RatioTooHigh { path: name, limit: limits.max_ratio }.into());
            }
            if total > limits.max_total_bytes {
                return Err(ReadError::TotalTooLarge { limit: limits.max_total_bytes }.into());
            }
            hasher.update(&buffer[..read]);
            if wanted {
                sink.write(&buffer[..read]).map_err(SinkError::Sink)?;
            }
        }
        // The zip reader checks the CRC, which an entry with fewer bytes than its headers
        // declare can still pass (an empty one always does): headers that do not describe
        // the data are refused like any other lie in the archive.
        if size != entry.size() {
            return Err(ReadError::DeclaredSizeMismatch { path: name, declared: entry.size(), inflated: size }.into());
        }
        let sha256 = hex::encode(hasher.finalize());
        if hashes_known {
            if size != listed.size {
                return Err(ReadError::SizeMismatch { path: name }.into());
            }
            if sha256 != listed.sha256 {
                return Err(ReadError::HashMismatch { path: name }.into());
            }
        }
        if wanted {
            let read = ManifestFile { size, sha256, ..listed.clone() };
            sink.finish(if hashes_known { listed } else { &read }).map_err(SinkError::Sink)?;
        }
    }
    if let Some(missing) = files.iter().find(|f| !seen.contains(&f.path)) {
        return Err(ReadError::Missing { path: missing.path.clone() }.into());
    }
    Ok(manifest)
}

/// Whether the archive has a manifest entry (its central directory only; nothing is
/// inflated or checked). An unreadable archive has none; the read itself refuses it.
pub fn has_manifest<R: Read + Seek>(archive: R) -> bool {
    ZipArchive::new(archive).is_ok_and(|zip| zip.index_for_name(MANIFEST_PATH).is_some())
}

/// An entry's name: its raw bytes, which must be UTF-8 (no code page guessing).
fn entry_name(raw: &[u8]) -> Result<String, ReadError> {
    std::str::from_utf8(raw).map(str::to_owned).map_err(|_| ReadError::InvalidPath {
        path: String::from_utf8_lossy(raw).into_owned(),
        reason: "name is not UTF-8".into(),
    })
}

/// The first name the central directory holds twice, for the error (the zip reader keeps
/// one entry per name, so the directory's records are walked here; at most `limit` of them).
fn first_duplicate_name<R: Read + Seek>(zip: ZipArchive<R>, limit: usize) -> String {
    let start = zip.central_directory_start();
    let mut reader = zip.into_inner();
    let mut names = HashSet::new();
    let mut walk = || -> io::Result<Option<String>> {
        reader.seek(io::SeekFrom::Start(start))?;
        for _ in 0..limit {
            let mut record = [0u8; 46];
            reader.read_exact(&mut record)?;
            if record[..4] != *b"PK\x01\x02" {
                return Ok(None);
            }
            let field = |at: usize| u64::from(u16::from_le_bytes([record[at], record[at + 1]]));
            let (name_len, extra_len, comment_len) = (field(28), field(30), field(32));
            let mut name = Vec::new();
            (&mut reader).take(name_len).read_to_end(&mut name)?;
            let name = String::from_utf8_lossy(&name).into_owned();
            if !names.insert(name.clone()) {
                return Ok(Some(name));
            }
            reader.seek(io::SeekFrom::Current((extra_len + comment_len) as i64))?;
        }
        Ok(None)
    };
    walk().ok().flatten().unwrap_or_else(|| "(a name in the central directory)".into())
}

/// The listing of an archive without a manifest, from its central directory (nothing is
/// inflated): every entry but directories, by name, under the manifest's rules (valid
/// paths, no path both a file and a folder). Sizes are as declared; hashes unknown.
fn list_entries<R: Read + Seek>(zip: &mut ZipArchive<R>) -> Result<Vec<ManifestFile>, ReadError> {
    let mut files = Vec::with_capacity(zip.len());
    for index in 0..zip.len() {
        let entry = zip.by_index_raw(index).map_err(archive_error)?;
        let name = entry_name(entry.name_raw())?;
        if entry.is_dir() {
            let folder = name.trim_end_matches('/');
            validate_path(folder)
                .map_err(|reason| ReadError::InvalidPath { path: name.clone(), reason: reason.to_string() })?;
            continue;
        }
        files.push(ManifestFile {
            path: name,
            size: entry.size(),
            sha256: String::new(),
            version: 0,
            file_type: String::new(),
            // Unknown until read: held to the binary cap; the caller decides from the bytes.
            binary: true,
        });
    }
    files.sort_by(|a, b| a.path.as_bytes().cmp(b.path.as_bytes()));
    check_listing(&files)?;
    Ok(files)
}

/// A failure while reading the archive: corrupt data (bad deflate stream, CRC mismatch,
/// more bytes than the header declares, truncation) is a bad archive, not an i/o error.
fn archive_io_error(err: io::Error) -> ReadError {
    match err.kind() {
        io::ErrorKind::InvalidData | io::ErrorKind::UnexpectedEof | io::ErrorKind::InvalidInput => {
            ReadError::Zip(err.to_string())
        }
        _ => ReadError::Io(err),
    }
}

fn archive_error(err: zip::result::ZipError) -> ReadError {
    match err {
        zip::result::ZipError::Io(err) => archive_io_error(err),
        other => ReadError::Zip(other.to_string()),
    }
}

fn read_manifest<R: Read + Seek>(zip: &mut ZipArchive<R>) -> Result<Manifest, ReadError> {
    let entry = match zip.by_name(MANIFEST_PATH) {
        Ok(entry) => entry,
        Err(zip::result::ZipError::FileNotFound) => return Err(ReadError::MissingManifest),
        Err(err) => return Err(archive_error(err)),
    };
    let mut bytes = Vec::new();
    entry.take(MAX_MANIFEST_BYTES + 1).read_to_end(&mut bytes).map_err(archive_io_error)?;
    if bytes.len() as u64 > MAX_MANIFEST_BYTES {
        return Err(ReadError::BadManifest("too large".into()));
    }
    let manifest: Manifest = serde_json::from_slice(&bytes).map_err(|e| ReadError::BadManifest(e.to_string()))?;
    if manifest.format != FORMAT {
        return Err(ReadError::UnsupportedFormat(manifest.format));
    }
    for pair in manifest.files.windows(2) {
        if pair[0].path.as_bytes() >= pair[1].path.as_bytes() {
            return Err(ReadError::BadManifest(format!("files not sorted or duplicated at {:?}", pair[1].path)));
        }
    }
    check_listing(&manifest.files)?;
    Ok(manifest)
}

/// A listing sorted by path: every path valid and unique, and none both a file and a
/// folder ("a" and "a/b" cannot both be files on disk: refused here, so verify and
/// extract agree).
fn check_listing(files: &[ManifestFile]) -> Result<(), ReadError> {
    for file in files {
        validate_path(&file.path)
            .map_err(|reason| ReadError::InvalidPath { path: file.path.clone(), reason: reason.to_string() })?;
    }
    for pair in files.windows(2) {
        if pair[0].path == pair[1].path {
            return Err(ReadError::Duplicate { path: pair[1].path.clone() });
        }
    }
    let paths: HashSet<&str> = files.iter().map(|f| f.path.as_str()).collect();
    for file in files {
        for (at, _) in file.path.match_indices('/') {
            let parent = &file.path[..at];
            if paths.contains(parent) {
                return Err(ReadError::BadManifest(format!("{parent:?} is both a file and a directory")));
            }
        }
    }
    Ok(())
}
