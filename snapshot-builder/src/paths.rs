//! The one project-path normalizer (CONTRACT section 7), shared by the hub, the snapshot
//! reader and the agent so that all three agree on what a valid path is.

use std::fmt;

/// Maximum path length in bytes.
pub const MAX_PATH_BYTES: usize = 1024;
/// Maximum number of `/`-separated segments.
pub const MAX_SEGMENTS: usize = 64;
/// Prefixes owned by synchub and git; never a project file.
pub const RESERVED_PREFIXES: [&str; 2] = [".synchub", ".git"];

/// Why a path was refused. The text is safe to show to users.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PathError {
    Empty,
    TooLong,
    TooDeep,
    Absolute,
    Backslash,
    ControlCharacter,
    EmptySegment,
    DotSegment,
    Reserved,
}

impl fmt::Display for PathError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let text = match self {
            PathError::Empty => "path is empty",
            PathError::TooLong => "path is longer than 1024 bytes",
            PathError::TooDeep => "path has more than 64 segments",
            PathError::Absolute => "path must be relative (no leading '/')",
            PathError::Backslash => "path must use '/' separators, not '\\'",
            PathError::ControlCharacter => "path contains NUL or control characters",
            PathError::EmptySegment => "path contains an empty segment ('//' or trailing '/')",
            PathError::DotSegment => "path contains a '.' or '..' segment",
            PathError::Reserved => "paths under .synchub/ and .git/ are reserved",
        };
        f.write_str(text)
    }
}

impl std::error::Error for PathError {}

/// Checks that `path` is a normalized, relative project path. Valid paths are returned
/// unchanged: synchub never rewrites a path, so a client's path is the stored path.
pub fn validate_path(path: &str) -> Result<&str, PathError> {
    if path.is_empty() {
        return Err(PathError::Empty);
    }
    if path.len() > MAX_PATH_BYTES {
        return Err(PathError::TooLong);
    }
    if path.starts_with('/') {
        return Err(PathError::Absolute);
    }
    if path.contains('\\') {
        return Err(PathError::Backslash);
    }
    if path.chars().any(char::is_control) {
        return Err(PathError::ControlCharacter);
    }
    let mut segments = 0usize;
    for segment in path.split('/') {
        segments += 1;
        match segment {
            "" => return Err(PathError::EmptySegment),
            "." | ".." => return Err(PathError::DotSegment),
            _ => {}
        }
    }
    if segments > MAX_SEGMENTS {
        return Err(PathError::TooDeep);
    }
    let first = path.split('/').next().unwrap_or_default();
    if RESERVED_PREFIXES.contains(&first) {
        return Err(PathError::Reserved);
    }
    Ok(path)
}

/// One example of each way a path is refused, for the tests of every place that takes a
/// project path (the builder, the reader, the agent's tree): each must refuse these alike.
pub const INVALID_PATH_EXAMPLES: [(&str, PathError); 9] = [
    ("", PathError::Empty),
    ("/etc/passwd", PathError::Absolute),
    ("../x", PathError::DotSegment),
    ("a/../../x", PathError::DotSegment),
    ("a//b", PathError::EmptySegment),
    ("a\\b", PathError::Backslash),
    ("a\0b", PathError::ControlCharacter),
    (".synchub/agent-state.json", PathError::Reserved),
    (".git/config", PathError::Reserved),
];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_normal_paths() {
        for ok in ["a", "src/a.ts", "src/my file.ts", "ünï/cødé.rs", ".env", "a/.gitignore", "..a", "a..b/c"] {
            assert_eq!(validate_path(ok), Ok(ok), "{ok}");
        }
        let deep = vec!["d"; 64].join("/");
        assert!(validate_path(&deep).is_ok());
        assert!(validate_path(&"x".repeat(1024)).is_ok());
    }

    #[test]
    fn refuses_bad_paths() {
        let deep = vec!["d"; 65].join("/");
        let long = "x".repeat(1025);
        let mut cases = INVALID_PATH_EXAMPLES.to_vec();
        cases.extend([
            ("./a", PathError::DotSegment),
            ("a/./b", PathError::DotSegment),
            ("a/", PathError::EmptySegment),
            ("C:\\x", PathError::Backslash),
            ("a\nb", PathError::ControlCharacter),
            (&deep, PathError::TooDeep),
            (&long, PathError::TooLong),
        ]);
        for (path, want) in cases {
            assert_eq!(validate_path(path), Err(want), "{path:?}");
        }
        assert_eq!(validate_path(".synchub"), Err(PathError::Reserved));
        assert_eq!(validate_path(".git"), Err(PathError::Reserved));
    }
}
