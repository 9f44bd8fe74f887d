//! Property tests for the reader: random bytes and randomly mutated valid archives never
//! make `verify` or `extract` panic, and never write outside the destination.

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
    ReadLimits { max_entries: 64, max_total_bytes: 1024 * 1024, max_file_bytes: 256 * 1024 }
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
