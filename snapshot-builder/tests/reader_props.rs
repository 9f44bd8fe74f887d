//! Property tests for the reader: random bytes, randomly mutated valid archives, hostile
//! entry names and zip bombs of any ratio never make `verify` or `extract` panic, never
//! write outside the destination, and never inflate past the caps.

mod common;

use std::io::Cursor;
use std::sync::OnceLock;

use common::*;
use proptest::prelude::*;
use snapshot_builder::ReadLimits;

/// A small valid snapshot to mutate (nested paths, so extraction creates directories).
fn valid() -> &'static [u8] {
    static VALID: OnceLock<Vec<u8>> = OnceLock::new();
    VALID.get_or_init(|| {
        build_bytes(vec![
            file("a.txt", "alpha\n"),
            file("dir/b.txt", &"beta ".repeat(50)),
            file("dir/sub/c.md", "# c\n"),
            file("z", ""),
        ])
        .1
    })
}

fn limits() -> ReadLimits {
    ReadLimits {
        max_entries: 64,
        max_total_bytes: 1024 * 1024,
        max_file_bytes: 256 * 1024,
        max_binary_file_bytes: 256 * 1024,
        ..ReadLimits::default()
    }
}

/// Runs both readers; whatever they answer, extraction stays inside `dest`, and a refused
/// extraction leaves `dest` empty.
fn check(archive: &[u8]) {
    let verified = snapshot_builder::verify(Cursor::new(archive), &limits());
    let sandbox = Sandbox::create();
    let extracted = snapshot_builder::extract(Cursor::new(archive), &sandbox.dest, &limits());
    sandbox.assert_nothing_outside();
    match &extracted {
        Ok(manifest) => {
            let on_disk: Vec<String> = tree(&sandbox.dest).into_keys().collect();
            let listed: Vec<String> = manifest.files.iter().map(|f| f.path.clone()).collect();
            assert_eq!(on_disk, listed, "an accepted archive extracts exactly its manifest");
            assert!(verified.is_ok(), "extract accepted what verify refused: {verified:?}");
        }
        Err(_) => sandbox.assert_dest_empty(),
    }
}

/// One edit to an archive.
#[derive(Debug, Clone)]
enum Mutation {
    Flip { at: usize, mask: u8 },
    Set { at: usize, byte: u8 },
    Truncate { at: usize },
    Insert { at: usize, bytes: Vec<u8> },
    Remove { at: usize, len: usize },
}

fn mutation() -> impl Strategy<Value = Mutation> {
    prop_oneof![
        (any::<usize>(), 1u8..).prop_map(|(at, mask)| Mutation::Flip { at, mask }),
        (any::<usize>(), any::<u8>()).prop_map(|(at, byte)| Mutation::Set { at, byte }),
        any::<usize>().prop_map(|at| Mutation::Truncate { at }),
        (any::<usize>(), proptest::collection::vec(any::<u8>(), 1..16))
            .prop_map(|(at, bytes)| Mutation::Insert { at, bytes }),
        (any::<usize>(), 1usize..32).prop_map(|(at, len)| Mutation::Remove { at, len }),
    ]
}

fn apply(archive: &mut Vec<u8>, mutation: &Mutation) {
    if archive.is_empty() {
        return;
    }
    let len = archive.len();
    match mutation {
        Mutation::Flip { at, mask } => archive[at % len] ^= mask,
        Mutation::Set { at, byte } => archive[at % len] = *byte,
        Mutation::Truncate { at } => archive.truncate(at % len),
        Mutation::Insert { at, bytes } => {
            let at = at % (len + 1);
            archive.splice(at..at, bytes.iter().copied());
        }
        Mutation::Remove { at, len: n } => {
            let at = at % len;
            archive.drain(at..(at + n).min(len));
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn random_bytes_never_panic_or_escape(bytes in proptest::collection::vec(any::<u8>(), 0..2048)) {
        check(&bytes);
    }

    #[test]
    fn random_bytes_after_a_zip_signature_never_panic_or_escape(
        tail in proptest::collection::vec(any::<u8>(), 0..1024),
    ) {
        // The end-of-central-directory signature makes the reader go further than plain noise.
        let mut bytes = b"PK\x03\x04".to_vec();
        bytes.extend_from_slice(&tail);
        bytes.extend_from_slice(b"PK\x05\x06");
        bytes.extend_from_slice(&tail[..tail.len().min(18)]);
        check(&bytes);
    }

    #[test]
    fn mutated_valid_archives_never_panic_or_escape(mutations in proptest::collection::vec(mutation(), 1..6)) {
        let mut archive = valid().to_vec();
        for m in &mutations {
            apply(&mut archive, m);
        }
        check(&archive);
    }
}

#[test]
fn the_unmutated_archive_is_accepted() {
    check(valid());
    assert!(snapshot_builder::verify(Cursor::new(valid()), &limits()).is_ok());
}

/// Path components that hostile archives use, mixed with ordinary ones.
fn name_part() -> impl Strategy<Value = String> {
    prop_oneof![
        Just("..".to_string()),
        Just(".".to_string()),
        Just(String::new()),
        Just(".git".to_string()),
        Just(".synchub".to_string()),
        Just("C:".to_string()),
        Just("a\\..\\b".to_string()),
        Just("nul\0".to_string()),
        Just("\u{1b}[31m".to_string()),
        "[a-z]{1,8}",
        "\\PC{1,6}",
    ]
}

/// An entry name: parts joined by `/`, sometimes with a leading `/`.
fn entry_name() -> impl Strategy<Value = String> {
    (any::<bool>(), proptest::collection::vec(name_part(), 1..5)).prop_map(|(absolute, parts)| {
        let joined = parts.join("/");
        if absolute { format!("/{joined}") } else { joined }
    })
}

/// What a reader hands a sink, counted, to prove caps hold on the bytes it really inflated.
#[derive(Default)]
struct CountingSink {
    current: u64,
    largest: u64,
    total: u64,
}

impl snapshot_builder::EntrySink for CountingSink {
    type Error = std::convert::Infallible;
    fn begin(&mut self, _: &snapshot_builder::ManifestFile) -> Result<bool, Self::Error> {
        self.current = 0;
        Ok(true)
    }
    fn write(&mut self, chunk: &[u8]) -> Result<(), Self::Error> {
        self.current += chunk.len() as u64;
        self.total += chunk.len() as u64;
        self.largest = self.largest.max(self.current);
        Ok(())
    }
    fn finish(&mut self, _: &snapshot_builder::ManifestFile) -> Result<(), Self::Error> {
        Ok(())
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn hostile_entry_names_are_refused_or_valid_and_never_escape(name in entry_name(), content in "[a-z]{0,32}") {
        let manifest = manifest_for(&[(name.as_str(), content.as_bytes())]);
        let archive = raw_with_manifest(&[Entry::File(&name, content.as_bytes())], &manifest);
        check(&archive);
        if snapshot_builder::verify(Cursor::new(&archive), &limits()).is_ok() {
            prop_assert!(snapshot_builder::paths::validate_path(&name).is_ok(), "accepted {name:?}");
        }
    }

    #[test]
    fn renamed_entries_in_a_valid_archive_are_refused(name in proptest::collection::vec(any::<u8>(), 9)) {
        // Same length as "dir/b.txt", so only the name changes, in both the local header
        // and the central directory: the manifest no longer lists it.
        let mut archive = valid().to_vec();
        assert_eq!(patch_bytes(&mut archive, b"dir/b.txt", &name), 2);
        check(&archive);
        if name != b"dir/b.txt" {
            prop_assert!(snapshot_builder::verify(Cursor::new(&archive), &limits()).is_err());
        }
    }
}

proptest! {
    // Each case inflates up to a few MiB: fewer cases.
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

    #[test]
    fn zip_bombs_of_any_ratio_stop_at_the_caps(
        sizes in proptest::collection::vec(0usize..600 * 1024, 1..6),
        byte in any::<u8>(),
        understate in proptest::option::of(0u32..1024),
    ) {
        // Runs of one byte deflate about 1000:1. The manifest tells the truth; the headers
        // may understate the first entry's size.
        let names: Vec<String> = (0..sizes.len()).map(|i| format!("bomb{i}")).collect();
        let contents: Vec<Vec<u8>> = sizes.iter().map(|&size| vec![byte; size]).collect();
        let entries: Vec<Entry<'_>> = names.iter().zip(&contents).map(|(n, c)| Entry::File(n, c)).collect();
        let listed: Vec<(&str, &[u8])> = names.iter().zip(&contents).map(|(n, c)| (n.as_str(), &c[..])).collect();
        let mut archive = raw_with_manifest(&entries, &manifest_for(&listed));
        if let Some(claimed) = understate {
            patch_declared_size(&mut archive, "bomb0", claimed);
        }
        let limits = limits();
        let mut sink = CountingSink::default();
        let result = snapshot_builder::read_into(Cursor::new(&archive), &limits, &mut sink);
        prop_assert!(sink.largest <= limits.max_file_bytes, "one entry inflated to {}", sink.largest);
        prop_assert!(sink.total <= limits.max_total_bytes, "inflated {} in all", sink.total);
        let within_caps = sizes.iter().all(|&s| s as u64 <= limits.max_file_bytes)
            && sizes.iter().sum::<usize>() as u64 <= limits.max_total_bytes;
        let honest = understate.is_none_or(|claimed| claimed as usize == sizes[0]);
        prop_assert_eq!(result.is_ok(), within_caps && honest);
        check(&archive);
    }
}
