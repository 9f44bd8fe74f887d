//! Fossil deltas (CONTRACT section 12): the one place the hub, the agent and the bench
//! create, apply and verify them. On the wire a delta is the base64 (standard alphabet,
//! padded) of the Fossil delta bytes, so a copy boundary inside a multi-byte character
//! never makes the frame invalid UTF-8.
//!
//! Deltas are created with the `fossil-delta` crate (checked against the npm package on
//! the shared corpus `protocol/testdata/fossil/`, in both test suites). They are applied
//! by [`apply`] below, not by the crate: its `apply` indexes out of bounds (panics) on
//! malformed input such as an empty delta or a literal longer than the delta, and deltas
//! come from clients.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use sha2::{Digest, Sha256};

/// Why a delta did not produce the content it promised.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DeltaError {
    /// Not base64.
    Base64,
    /// Not a well-formed Fossil delta for this base (bad syntax, a copy outside the base,
    /// a size or checksum that does not match).
    Malformed(&'static str),
    /// The result is not UTF-8 text.
    NotText,
}

impl std::fmt::Display for DeltaError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            DeltaError::Base64 => f.write_str("delta is not base64"),
            DeltaError::Malformed(why) => write!(f, "delta does not apply to the base: {why}"),
            DeltaError::NotText => f.write_str("delta result is not UTF-8 text"),
        }
    }
}

impl std::error::Error for DeltaError {}

/// sha256 hex of `content`, the `content_hash` of events and file answers.
pub fn content_hash(content: &[u8]) -> String {
    hex::encode(Sha256::digest(content))
}

/// The raw Fossil delta that turns `base` into `target`.
pub fn create(base: &[u8], target: &[u8]) -> Vec<u8> {
    // The crate's argument order is (target, source).
    fossil_delta::delta(target, base)
}

/// The delta from `base` to `target` as it travels: base64.
pub fn encode(base: &str, target: &str) -> String {
    STANDARD.encode(create(base.as_bytes(), target.as_bytes()))
}

/// Applies a base64 delta to `base`; the result must be UTF-8 text.
pub fn decode_apply(base: &str, delta_b64: &str) -> Result<String, DeltaError> {
    let delta = STANDARD.decode(delta_b64).map_err(|_| DeltaError::Base64)?;
    String::from_utf8(apply(base.as_bytes(), &delta)?).map_err(|_| DeltaError::NotText)
}

/// Applies a base64 delta to `base` and checks the result against `content_hash`: what a
/// receiver does before it writes anything. `None` when it does not apply or the hash
/// differs (the receiver then reads the file in full).
pub fn apply_verified(base: &str, delta_b64: &str, expected_hash: &str) -> Option<String> {
    decode_apply(base, delta_b64).ok().filter(|content| content_hash(content.as_bytes()) == expected_hash)
}

/// Whether a delta of `delta_len` bytes (as sent) is worth sending instead of the content:
/// only when it is smaller than half the content.
pub fn worth_sending(delta_len: usize, content_len: usize) -> bool {
    delta_len.saturating_mul(2) < content_len
}

/// Applies a raw Fossil delta (the format of `delta.c` in Fossil): a target size line,
/// then `N@O,` copies from the base and `N:` literals, then `C;` with the checksum. Every
/// count and offset is checked, so no input panics or allocates beyond the promised size
/// (itself bounded by the base plus the delta's own length).
pub fn apply(base: &[u8], delta: &[u8]) -> Result<Vec<u8>, DeltaError> {
    let mut reader = Reader { bytes: delta, pos: 0 };
    let limit = reader.int()?;
    if reader.next() != Some(b'\n') {
        return Err(DeltaError::Malformed("size not terminated by a newline"));
    }
    // Literals come from the delta and copies from the base: nothing longer is possible.
    if limit > base.len().saturating_add(delta.len()) {
        return Err(DeltaError::Malformed("target size larger than base and delta"));
    }
    let mut out = Vec::with_capacity(limit);
    while reader.pos < delta.len() {
        let count = reader.int()?;
        match reader.next() {
            Some(b'@') => {
                let offset = reader.int()?;
                if reader.next() != Some(b',') {
                    return Err(DeltaError::Malformed("copy not terminated by a comma"));
                }
                let end = offset.checked_add(count).filter(|end| *end <= base.len());
                let end = end.ok_or(DeltaError::Malformed("copy past the end of the base"))?;
                if out.len() + count > limit {
                    return Err(DeltaError::Malformed("copy exceeds the target size"));
                }
                out.extend_from_slice(&base[offset..end]);
            }
            Some(b':') => {
                let end = reader.pos.checked_add(count).filter(|end| *end <= delta.len());
                let end = end.ok_or(DeltaError::Malformed("literal past the end of the delta"))?;
                if out.len() + count > limit {
                    return Err(DeltaError::Malformed("literal exceeds the target size"));
                }
                out.extend_from_slice(&delta[reader.pos..end]);
                reader.pos = end;
            }
            Some(b';') => {
                if out.len() != limit {
                    return Err(DeltaError::Malformed("target size does not match"));
                }
                if count != checksum(&out) as usize {
                    return Err(DeltaError::Malformed("bad checksum"));
                }
                return Ok(out);
            }
            _ => return Err(DeltaError::Malformed("unknown command")),
        }
    }
    Err(DeltaError::Malformed("unterminated delta"))
}

struct Reader<'a> {
    bytes: &'a [u8],
    pos: usize,
}

impl Reader<'_> {
    fn next(&mut self) -> Option<u8> {
        let byte = *self.bytes.get(self.pos)?;
        self.pos += 1;
        Some(byte)
    }

    /// A base-64 number (Fossil's digits `0-9A-Z_a-z~`), at least one digit.
    fn int(&mut self) -> Result<usize, DeltaError> {
        let start = self.pos;
        let mut value: usize = 0;
        while let Some(digit) = self.bytes.get(self.pos).and_then(|b| digit_value(*b)) {
            value = value
                .checked_mul(64)
                .and_then(|v| v.checked_add(digit))
                .filter(|v| *v <= u32::MAX as usize)
                .ok_or(DeltaError::Malformed("number too large"))?;
            self.pos += 1;
        }
        if self.pos == start {
            return Err(DeltaError::Malformed("number expected"));
        }
        Ok(value)
    }
}

fn digit_value(byte: u8) -> Option<usize> {
    Some(match byte {
        b'0'..=b'9' => byte - b'0',
        b'A'..=b'Z' => byte - b'A' + 10,
        b'_' => 36,
        b'a'..=b'z' => byte - b'a' + 37,
        b'~' => 63,
        _ => return None,
    } as usize)
}

/// Fossil's checksum: the sum of the content as big-endian u32 words, the last one padded
/// with zeros.
fn checksum(bytes: &[u8]) -> u32 {
    bytes.chunks(4).fold(0u32, |sum, chunk| {
        let mut word = [0u8; 4];
        word[..chunk.len()].copy_from_slice(chunk);
        sum.wrapping_add(u32::from_be_bytes(word))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_verifies() {
        let base = "fn main() {\n    println!(\"hello, world\");\n}\n".repeat(40);
        let target = base.replacen("world", "wörld", 7);
        let delta = encode(&base, &target);
        assert!(worth_sending(delta.len(), target.len()), "{} vs {}", delta.len(), target.len());
        assert_eq!(decode_apply(&base, &delta).unwrap(), target);
        let hash = content_hash(target.as_bytes());
        assert_eq!(apply_verified(&base, &delta, &hash), Some(target));
        assert_eq!(apply_verified(&base, &delta, &content_hash(b"other")), None);
        assert_eq!(apply_verified("another base entirely, long enough", &delta, &hash), None);
    }

    #[test]
    fn malformed_deltas_are_errors_not_panics() {
        for bad in [
            &b""[..],
            b"\n",
            b"5",
            b"5\n",
            b"5\n5:ab",
            b"5\n3@0,",
            b"5\n3@zzzzzz,",
            b"3\n3:abc",
            b"3\n3:abc0;",
            b"2\n3:abc0;",
            b"zzzzzzzzzzzzzzzzzzzzzzzz\n",
            b"1\n1!a",
            b"3\n2@0;",
        ] {
            assert!(apply(b"0123456789", bad).is_err(), "{:?} applied", String::from_utf8_lossy(bad));
        }
        assert_eq!(decode_apply("base", "not base64!"), Err(DeltaError::Base64));
        // A well-formed delta whose result is not UTF-8.
        let delta = STANDARD.encode(create(b"", &[0xc3, 0x28]));
        assert_eq!(decode_apply("", &delta), Err(DeltaError::NotText));
    }

    #[test]
    fn the_crate_s_own_apply_panics_on_malformed_input() {
        // Why `apply` above exists (see the module comment). Checked, not assumed.
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(|_| {}));
        let empty = std::panic::catch_unwind(|| fossil_delta::apply(b"abc", b""));
        let long_literal = std::panic::catch_unwind(|| fossil_delta::apply(b"abc", b"9\n9:ab"));
        std::panic::set_hook(previous);
        assert!(empty.is_err() && long_literal.is_err());
    }
}

/// The shared corpus `protocol/testdata/fossil/<case>/`: `base`, `target`, `rust.delta`
/// (made by this crate) and `js.delta` (made by the npm package, written by the client's
/// `test/unit/fossil-corpus.test.mjs`). Each side applies the other's deltas; the client's
/// suite does the same in the other direction. `UPDATE_GENERATED=1` rewrites `rust.delta`.
#[cfg(test)]
mod corpus {
    use std::path::{Path, PathBuf};

    use super::*;

    fn corpus_dir() -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("testdata/fossil")
    }

    /// The `large-one-char` case, generated (see its README): 1 MiB, one byte changed.
    pub(crate) fn large_case() -> (Vec<u8>, Vec<u8>) {
        const SIZE: usize = 1 << 20;
        let mut base = Vec::with_capacity(SIZE + 64);
        let mut i = 0;
        while base.len() < SIZE {
            base.extend_from_slice(format!("{i:07} the quick brown fox jumps over the lazy dog\n").as_bytes());
            i += 1;
        }
        base.truncate(SIZE);
        let mut target = base.clone();
        target[SIZE / 2] = b'X';
        (base, target)
    }

    fn case(dir: &Path) -> (Vec<u8>, Vec<u8>) {
        if dir.ends_with("large-one-char") {
            return large_case();
        }
        (std::fs::read(dir.join("base")).unwrap(), std::fs::read(dir.join("target")).unwrap())
    }

    #[test]
    fn the_rust_and_npm_implementations_apply_each_other_s_deltas() {
        let mut cases: Vec<PathBuf> =
            std::fs::read_dir(corpus_dir()).unwrap().map(|entry| entry.unwrap().path()).collect();
        cases.sort();
        assert!(cases.len() >= 10, "corpus missing: {cases:?}");
        for dir in cases {
            let name = dir.file_name().unwrap().to_string_lossy().into_owned();
            let (base, target) = case(&dir);
            let ours = create(&base, &target);
            if std::env::var_os("UPDATE_GENERATED").is_some() {
                std::fs::write(dir.join("rust.delta"), &ours).unwrap();
            }
            assert_eq!(std::fs::read(dir.join("rust.delta")).unwrap(), ours, "{name}: rust.delta is stale");
            assert_eq!(apply(&base, &ours).unwrap(), target, "{name}: own delta");
            assert_eq!(fossil_delta::apply(&base, &ours).unwrap(), target, "{name}: the crate's apply");
            if std::env::var_os("UPDATE_GENERATED").is_some() && !dir.join("js.delta").exists() {
                continue;
            }
            let js = std::fs::read(dir.join("js.delta")).unwrap_or_else(|_| panic!("{name}: js.delta missing"));
            assert_eq!(apply(&base, &js).unwrap(), target, "{name}: the npm package's delta");
        }
    }

    #[test]
    fn a_one_character_edit_of_1_mib_is_a_delta_under_1_kib() {
        let (base, target) = large_case();
        let delta = STANDARD.encode(create(&base, &target));
        assert!(delta.len() < 1024, "{} bytes", delta.len());
    }
}
