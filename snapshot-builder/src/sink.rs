//! Where the bytes of a read go: the [`EntrySink`] trait and [`DirSink`], a directory.

use std::fmt;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::path::Path;

use crate::{ManifestFile, ReadError};

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
