//! The synchub snapshot format (CONTRACT section 5), both ways.
//!
//! A snapshot is a zip of a project's current files at their paths plus
//! `.synchub/manifest.json` (`format`, `project_id`, `snapshot_id`, `cursor`, `created_at`,
//! and per file `path`, `size`, `sha256`, `version`, `file_type`).
//!
//! - [`build`] is pure and synchronous: given the manifest's file entries up front, it
//!   streams the files' contents (sorted by path, one in memory at a time) into any
//!   `Write + Seek` (a temporary file), every entry (the manifest included) in byte order of
//!   its name, with fixed timestamps and permissions, so the same files and metadata give
//!   byte-identical archives.
//! - [`verify`], [`extract`] and [`read_into`] (bytes to any [`EntrySink`]) read untrusted archives (the agent runs inside preview
//!   containers): every name must be a valid project path listed in the manifest exactly
//!   once, no symlinks or other special entries, sizes and hashes must match, and the
//!   bytes actually inflated are capped, whatever the headers claim (zip bombs).

#[cfg(feature = "db")]
pub mod db;
pub mod paths;

use std::collections::{HashMap, HashSet};
use std::fmt;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Seek, Write};
use std::path::Path;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use zip::write::SimpleFileOptions;
use zip::{CompressionMethod, DateTime, ZipArchive, ZipWriter};

use crate::paths::validate_path;

/// The manifest format this crate writes and reads.
pub const FORMAT: u32 = 1;
/// Where the manifest lives inside the archive.
pub const MANIFEST_PATH: &str = ".synchub/manifest.json";
/// A manifest larger than this is refused before parsing.
const MAX_MANIFEST_BYTES: u64 = 64 * 1024 * 1024;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ManifestFile {
    pub path: String,
    pub size: u64,
    pub sha256: String,
    pub version: i64,
    pub file_type: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Manifest {
    pub format: u32,
    pub project_id: String,
    pub snapshot_id: String,
    pub cursor: i64,
    pub created_at: String,
    pub files: Vec<ManifestFile>,
}

/// What identifies a snapshot; part of the manifest.
#[derive(Debug, Clone)]
pub struct SnapshotMeta {
    pub project_id: String,
    pub snapshot_id: String,
    pub cursor: i64,
    pub created_at: String,
}

/// One file's bytes, streamed into [`build`] after the manifest listed it.
#[derive(Clone)]
pub struct FileContent {
    pub path: String,
    pub content: Vec<u8>,
}

impl ManifestFile {
    /// The manifest entry of `content` at `path`: its size and sha256.
    pub fn describe(path: String, content: &[u8], version: i64, file_type: String) -> ManifestFile {
        ManifestFile { path, size: content.len() as u64, sha256: sha256_hex(content), version, file_type }
    }
}

fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

/// Sizes of a built archive.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BuildStats {
    pub files: usize,
    pub content_bytes: u64,
}

#[derive(Debug)]
pub enum BuildError {
    InvalidPath {
        path: String,
        reason: paths::PathError,
    },
    Unsorted {
        path: String,
    },
    Duplicate {
        path: String,
    },
    /// A streamed content's size or sha256 differs from its manifest entry.
    ContentMismatch {
        path: String,
    },
    /// The contents ended, or went on to a later path, before this listed file.
    MissingContent {
        path: String,
    },
    /// A content whose path is not the next listed file.
    UnlistedContent {
        path: String,
    },
    /// The file source failed (e.g. the database connection).
    Source(String),
    Zip(zip::result::ZipError),
    Io(io::Error),
}

impl fmt::Display for BuildError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            BuildError::InvalidPath { path, reason } => write!(f, "invalid path {path:?}: {reason}"),
            BuildError::Unsorted { path } => write!(f, "files are not sorted by path at {path:?}"),
            BuildError::Duplicate { path } => write!(f, "duplicate path {path:?}"),
            BuildError::ContentMismatch { path } => {
                write!(f, "content of {path:?} does not match its size and sha256 in the manifest")
            }
            BuildError::MissingContent { path } => write!(f, "no content for {path:?}"),
            BuildError::UnlistedContent { path } => {
                write!(f, "content for {path:?}, which is not the next listed file")
            }
            BuildError::Source(err) => write!(f, "reading files: {err}"),
            BuildError::Zip(err) => write!(f, "writing the archive: {err}"),
            BuildError::Io(err) => write!(f, "writing the archive: {err}"),
        }
    }
}

impl std::error::Error for BuildError {}

impl From<zip::result::ZipError> for BuildError {
    fn from(err: zip::result::ZipError) -> Self {
        BuildError::Zip(err)
    }
}

impl From<io::Error> for BuildError {
    fn from(err: io::Error) -> Self {
        BuildError::Io(err)
    }
}

/// Deflate level of every entry. Fixed, so archives stay byte-identical. Level 1: in the
/// benchmark (docs/BENCHMARKS.md, #5) level 6 spent 61% of the build in deflate for an
/// archive only 8.5% smaller, and snapshots travel over a data-centre network.
const DEFLATE_LEVEL: i64 = 1;

/// Fixed entry options: the DOS epoch as timestamp, 0644, deflate at a fixed level.
fn entry_options() -> SimpleFileOptions {
    SimpleFileOptions::default()
        .compression_method(CompressionMethod::Deflated)
        .compression_level(Some(DEFLATE_LEVEL))
        .last_modified_time(DateTime::default())
        .unix_permissions(0o644)
}

/// Writes a deterministic zip of `files` (the manifest entries, strictly increasing byte
/// order of path) whose bytes `contents` streams in the same order, one per file, and
/// returns the manifest.
///
/// Every entry, the manifest included, is written in byte order of its name: the manifest
/// is known up front, so it goes in at its sorted place among the files. Each content is
/// checked against its entry (size and sha256) before it is written.
pub fn build<W, E>(
    meta: SnapshotMeta,
    files: Vec<ManifestFile>,
    contents: impl IntoIterator<Item = Result<FileContent, E>>,
    writer: W,
) -> Result<(Manifest, BuildStats), BuildError>
where
    W: Write + Seek,
    E: fmt::Display,
{
    check_listing(&files)?;
    let manifest = Manifest {
        format: FORMAT,
        project_id: meta.project_id,
        snapshot_id: meta.snapshot_id,
        cursor: meta.cursor,
        created_at: meta.created_at,
        files,
    };
    let manifest_json = serde_json::to_vec(&manifest).map_err(io::Error::other)?;
    let mut zip = ZipWriter::new(writer);
    let mut manifest_written = false;
    let mut listed = manifest.files.iter();
    let mut content_bytes = 0u64;
    for content in contents {
        let content = content.map_err(|err| BuildError::Source(err.to_string()))?;
        let Some(file) = listed.next() else {
            return Err(BuildError::UnlistedContent { path: content.path });
        };
        match content.path.as_bytes().cmp(file.path.as_bytes()) {
            std::cmp::Ordering::Equal => {}
            std::cmp::Ordering::Less => return Err(BuildError::UnlistedContent { path: content.path }),
            std::cmp::Ordering::Greater => return Err(BuildError::MissingContent { path: file.path.clone() }),
        }
        if content.content.len() as u64 != file.size || sha256_hex(&content.content) != file.sha256 {
            return Err(BuildError::ContentMismatch { path: content.path });
        }
        if !manifest_written && MANIFEST_PATH.as_bytes() < file.path.as_bytes() {
            write_entry(&mut zip, MANIFEST_PATH, &manifest_json)?;
            manifest_written = true;
        }
        write_entry(&mut zip, &file.path, &content.content)?;
        content_bytes += file.size;
    }
    if let Some(file) = listed.next() {
        return Err(BuildError::MissingContent { path: file.path.clone() });
    }
    if !manifest_written {
        write_entry(&mut zip, MANIFEST_PATH, &manifest_json)?;
    }
    zip.finish()?;
    let stats = BuildStats { files: manifest.files.len(), content_bytes };
    Ok((manifest, stats))
}

/// Every listed path is a valid project path (so none is the manifest's), strictly after
/// the one before it in byte order.
fn check_listing(files: &[ManifestFile]) -> Result<(), BuildError> {
    let mut previous: Option<&str> = None;
    for file in files {
        validate_path(&file.path).map_err(|reason| BuildError::InvalidPath { path: file.path.clone(), reason })?;
        if let Some(previous) = previous {
            match previous.as_bytes().cmp(file.path.as_bytes()) {
                std::cmp::Ordering::Less => {}
                std::cmp::Ordering::Equal => return Err(BuildError::Duplicate { path: file.path.clone() }),
                std::cmp::Ordering::Greater => return Err(BuildError::Unsorted { path: file.path.clone() }),
            }
        }
        previous = Some(&file.path);
    }
    Ok(())
}

fn write_entry<W: Write + Seek>(zip: &mut ZipWriter<W>, name: &str, bytes: &[u8]) -> Result<(), BuildError> {
    zip.start_file(name, entry_options())?;
    zip.write_all(bytes)?;
    Ok(())
}

/// Caps for reading untrusted archives; sizes are measured on the bytes actually inflated.
#[derive(Debug, Clone)]
pub struct ReadLimits {
    pub max_entries: usize,
    pub max_total_bytes: u64,
    pub max_file_bytes: u64,
}

impl Default for ReadLimits {
    /// The contract's project limits: 10,000 files of at most 2 MiB, 256 MiB in all.
    fn default() -> Self {
        ReadLimits { max_entries: 10_000, max_total_bytes: 256 * 1024 * 1024, max_file_bytes: 2 * 1024 * 1024 }
    }
}

#[derive(Debug)]
pub enum ReadError {
    Zip(String),
    Io(io::Error),
    TooManyEntries { limit: usize },
    MissingManifest,
    BadManifest(String),
    UnsupportedFormat(u32),
    InvalidPath { path: String, reason: String },
    NotAFile { path: String },
    Duplicate { path: String },
    Unlisted { path: String },
    Missing { path: String },
    SizeMismatch { path: String },
    HashMismatch { path: String },
    FileTooLarge { path: String, limit: u64 },
    TotalTooLarge { limit: u64 },
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
            ReadError::HashMismatch { path } => write!(f, "sha256 of {path:?} does not match the manifest"),
            ReadError::FileTooLarge { path, limit } => write!(f, "{path:?} inflates to more than {limit} bytes"),
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

impl From<zip::result::ZipError> for ReadError {
    fn from(err: zip::result::ZipError) -> Self {
        match err {
            zip::result::ZipError::Io(err) => ReadError::Io(err),
            other => ReadError::Zip(other.to_string()),
        }
    }
}

/// Where [`read_into`] puts the bytes of each listed file, in archive order (byte order of
/// the paths in archives [`build`] made; the reader does not require it, so a sink must not
/// rely on it for correctness). An entry's bytes are only known good once
/// [`EntrySink::finish`] is called: a sink must not make them visible before then, and must
/// drop whatever it holds when the read fails (it is dropped with the error).
pub trait EntrySink {
    type Error;
    /// A listed file's entry begins. `Ok(false)` skips its bytes; they are still inflated,
    /// counted and hashed, so a skipped entry cannot hide a bad archive.
    fn begin(&mut self, file: &ManifestFile) -> Result<bool, Self::Error>;
    /// The next chunk of the entry `begin` accepted.
    fn write(&mut self, chunk: &[u8]) -> Result<(), Self::Error>;
    /// The accepted entry ended, and its size and sha256 matched the manifest.
    fn finish(&mut self, file: &ManifestFile) -> Result<(), Self::Error>;
}

/// Why [`read_into`] stopped: the archive, or the sink.
#[derive(Debug)]
pub enum SinkError<E> {
    Archive(ReadError),
    Sink(E),
}

impl<E> From<ReadError> for SinkError<E> {
    fn from(err: ReadError) -> Self {
        SinkError::Archive(err)
    }
}

impl<E: fmt::Display> fmt::Display for SinkError<E> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SinkError::Archive(err) => err.fmt(f),
            SinkError::Sink(err) => err.fmt(f),
        }
    }
}

impl<E: fmt::Debug + fmt::Display> std::error::Error for SinkError<E> {}

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

/// Writes each entry to its path under `dest` (already validated: no `..`, no absolute
/// paths). No fsync: extraction goes to a staging directory that is useless after a crash
/// anyway (the reader hydrates again), and one fsync per file made hydration several times
/// slower than `unzip` (BENCHMARKS.md, #6). Callers that need the tree durable sync it.
pub struct DirSink<'d> {
    dest: &'d Path,
    open: Option<File>,
}

impl DirSink<'_> {
    pub fn new(dest: &Path) -> DirSink<'_> {
        DirSink { dest, open: None }
    }
}

impl EntrySink for DirSink<'_> {
    type Error = io::Error;

    fn begin(&mut self, file: &ManifestFile) -> io::Result<bool> {
        let target = self.dest.join(&file.path);
        if let Some(parent) = target.parent() {
            fs::create_dir_all(parent)?;
        }
        self.open = Some(OpenOptions::new().write(true).create_new(true).open(target)?);
        Ok(true)
    }

    fn write(&mut self, chunk: &[u8]) -> io::Result<()> {
        match &mut self.open {
            Some(file) => file.write_all(chunk),
            None => Err(io::Error::other("write outside an entry")),
        }
    }

    fn finish(&mut self, _: &ManifestFile) -> io::Result<()> {
        self.open = None;
        Ok(())
    }
}

/// Reads an untrusted archive completely, checking everything [`verify`] promises, and
/// hands every listed file's bytes to `sink` as they are inflated: one pass, no copy of the
/// archive's contents anywhere else.
pub fn read_into<R, S>(archive: R, limits: &ReadLimits, sink: &mut S) -> Result<Manifest, SinkError<S::Error>>
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
        return Err(ReadError::Duplicate { path: "(a name in the central directory)".into() }.into());
    }
    zip.validate_header_consistency().map_err(archive_error)?;
    let manifest = read_manifest(&mut zip)?;
    if manifest.files.len() > limits.max_entries {
        return Err(ReadError::TooManyEntries { limit: limits.max_entries }.into());
    }
    let mut expected: HashMap<&str, &ManifestFile> = HashMap::with_capacity(manifest.files.len());
    for file in &manifest.files {
        expected.insert(file.path.as_str(), file);
    }
    let mut seen: HashSet<String> = HashSet::with_capacity(manifest.files.len());
    let mut total = 0u64;
    let mut buffer = vec![0u8; 64 * 1024];
    for index in 0..zip.len() {
        let mut entry = zip.by_index(index).map_err(archive_error)?;
        // Names are compared as the raw bytes, which must be UTF-8: no code page guessing.
        let name = std::str::from_utf8(entry.name_raw())
            .map_err(|_| ReadError::InvalidPath {
                path: String::from_utf8_lossy(entry.name_raw()).into_owned(),
                reason: "name is not UTF-8".into(),
            })?
            .to_owned();
        if name == MANIFEST_PATH {
            if !seen.insert(name.clone()) {
                return Err(ReadError::Duplicate { path: name }.into());
            }
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
        let wanted = sink.begin(listed).map_err(SinkError::Sink)?;
        let mut hasher = Sha256::new();
        let mut size = 0u64;
        let mut limited = (&mut entry).take(limits.max_file_bytes + 1);
        loop {
            let read = limited.read(&mut buffer).map_err(archive_io_error)?;
            if read == 0 {
                break;
            }
            size += read as u64;
            total += read as u64;
            if size > limits.max_file_bytes {
                return Err(ReadError::FileTooLarge { path: name, limit: limits.max_file_bytes }.into());
            }
            if total > limits.max_total_bytes {
                return Err(ReadError::TotalTooLarge { limit: limits.max_total_bytes }.into());
            }
            hasher.update(&buffer[..read]);
            if wanted {
                sink.write(&buffer[..read]).map_err(SinkError::Sink)?;
            }
        }
        if size != listed.size {
            return Err(ReadError::SizeMismatch { path: name }.into());
        }
        if hex::encode(hasher.finalize()) != listed.sha256 {
            return Err(ReadError::HashMismatch { path: name }.into());
        }
        if wanted {
            sink.finish(listed).map_err(SinkError::Sink)?;
        }
    }
    if let Some(missing) = manifest.files.iter().find(|f| !seen.contains(&f.path)) {
        return Err(ReadError::Missing { path: missing.path.clone() }.into());
    }
    Ok(manifest)
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
    for file in &manifest.files {
        validate_path(&file.path)
            .map_err(|reason| ReadError::InvalidPath { path: file.path.clone(), reason: reason.to_string() })?;
    }
    // "a" and "a/b" cannot both be files on disk: refuse it here, so verify and extract agree.
    let paths: HashSet<&str> = manifest.files.iter().map(|f| f.path.as_str()).collect();
    for file in &manifest.files {
        for (at, _) in file.path.match_indices('/') {
            let parent = &file.path[..at];
            if paths.contains(parent) {
                return Err(ReadError::BadManifest(format!("{parent:?} is both a file and a directory")));
            }
        }
    }
    Ok(manifest)
}
