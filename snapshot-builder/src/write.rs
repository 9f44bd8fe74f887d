//! Writing: [`build`], a deterministic zip of a project's files and its manifest.

use std::fmt;
use std::io::{self, Seek, Write};

use zip::write::SimpleFileOptions;
use zip::{CompressionMethod, DateTime, ZipWriter};

use crate::paths::{self, validate_path};
use crate::{FORMAT, FileContent, MANIFEST_PATH, Manifest, ManifestFile, SnapshotMeta, sha256_hex};

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
