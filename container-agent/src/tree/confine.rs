//! Confinement: every path is walked from the PROJECT_DIR handle one segment at a time,
//! never following a symlink, so nothing the dev server plants can redirect an access.

use std::io;

use cap_fs_ext::{DirExt, FollowSymlinks, OpenOptionsFollowExt, OpenOptionsSyncExt};
use cap_std::fs::{Dir, File, OpenOptions};
use sha2::{Digest, Sha256};

use super::{TreeError, io_error};

/// following a symlink. `Ok(None)`: a parent is missing and `create` is false.
pub(super) fn resolve_parent<'p>(root: &Dir, path: &'p str, create: bool) -> Result<Option<(Dir, &'p str)>, TreeError> {
    match path.rsplit_once('/') {
        Some((parents, name)) => Ok(open_dir_path(root, parents, path, create)?.map(|dir| (dir, name))),
        None => Ok(Some((root.try_clone().map_err(|e| io_error(path, e))?, path))),
    }
}

/// Opens the directory `dir_path` ("" is `root`) one segment at a time, never following a
/// symlink; errors name `path`. `Ok(None)`: a directory is missing and `create` is false.
pub(super) fn open_dir_path(root: &Dir, dir_path: &str, path: &str, create: bool) -> Result<Option<Dir>, TreeError> {
    let mut dir = root.try_clone().map_err(|e| io_error(path, e))?;
    for segment in dir_path.split('/').filter(|s| !s.is_empty()) {
        dir = match dir.open_dir_nofollow(segment) {
            Ok(sub) => sub,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                if !create {
                    return Ok(None);
                }
                match dir.create_dir(segment) {
                    Ok(()) => {}
                    Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
                    Err(e) => return Err(classify(&dir, segment, path, e)),
                }
                dir.open_dir_nofollow(segment).map_err(|e| classify(&dir, segment, path, e))?
            }
            Err(e) => return Err(classify(&dir, segment, path, e)),
        };
    }
    Ok(Some(dir))
}

/// Names the reason a directory segment could not be opened.
fn classify(dir: &Dir, segment: &str, path: &str, error: io::Error) -> TreeError {
    match dir.symlink_metadata(segment) {
        Ok(meta) if meta.file_type().is_symlink() => TreeError::Symlink { path: path.to_owned() },
        Ok(meta) if !meta.is_dir() => TreeError::Conflict { path: path.to_owned() },
        _ => io_error(path, error),
    }
}

/// Opens a regular file for reading without following a symlink and without blocking on
/// a FIFO someone put in its place.
pub(super) fn open_regular(dir: &Dir, name: &str) -> io::Result<File> {
    let mut options = OpenOptions::new();
    options.read(true).follow(FollowSymlinks::No).nonblock(true);
    let file = dir.open_with(name, &options)?;
    if !file.metadata()?.is_file() {
        return Err(io::Error::new(io::ErrorKind::InvalidInput, "not a regular file"));
    }
    Ok(file)
}

/// Whether `dir/name` is a regular file of `len` bytes with sha256 `sha`.
pub(super) fn same_content(dir: &Dir, name: &str, len: u64, sha: &str) -> bool {
    match dir.symlink_metadata(name) {
        Ok(meta) if meta.is_file() && meta.len() == len => {}
        _ => return false,
    }
    let Ok(mut file) = open_regular(dir, name) else {
        return false;
    };
    let mut hasher = Sha256::new();
    if io::copy(&mut file, &mut hasher).is_err() {
        return false;
    }
    hex::encode(hasher.finalize()).eq_ignore_ascii_case(sha)
}
