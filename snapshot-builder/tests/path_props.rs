//! Property tests for the one path normaliser (`paths::validate_path`, CONTRACT section 7):
//! any string is answered without a panic, it accepts exactly the paths that satisfy every
//! rule (checked against an independent statement of the rules), and accepting is
//! idempotent and never rewrites the path.

use proptest::prelude::*;
use snapshot_builder::paths::{MAX_PATH_BYTES, MAX_SEGMENTS, validate_path};

/// Every rule of CONTRACT section 7, stated on its own (no shared code with the normaliser).
fn satisfies_every_rule(path: &str) -> bool {
    let segments: Vec<&str> = path.split('/').collect();
    (1..=1024).contains(&path.len())
        && !path.starts_with('/')
        && !path.contains('\\')
        && !path.chars().any(|c| c == '\0' || c.is_control())
        && segments.len() <= 64
        && segments.iter().all(|s| !s.is_empty() && *s != "." && *s != "..")
        && !(path == ".synchub" || path == ".git" || path.starts_with(".synchub/") || path.starts_with(".git/"))
}

/// Segments that break a rule, or sit just beside one.
fn odd_segment() -> impl Strategy<Value = String> {
    prop_oneof![
        Just(String::new()),
        Just(".".to_string()),
        Just("..".to_string()),
        Just("...".to_string()),
        Just(".git".to_string()),
        Just(".gitignore".to_string()),
        Just(".synchub".to_string()),
        Just(".synchubx".to_string()),
        Just("a\\b".to_string()),
        Just("nul\0".to_string()),
        Just("tab\t".to_string()),
        Just("del\u{7f}".to_string()),
        Just("c1\u{85}".to_string()),
        Just("%2e%2e".to_string()),
        "\\PC{1,8}",
        any::<String>(),
    ]
}

/// Ordinary segments, including spaces and non-ASCII text.
fn plain_segment() -> impl Strategy<Value = String> {
    prop_oneof!["[a-z0-9_-][a-z0-9._ -]{0,11}", "[ü€😀a-z]{1,6}"]
}

/// Paths: plain ones (1 to 70 segments, the limit is 64), plain ones with one odd segment
/// somewhere, long ones around both the 1024-byte and the 64-segment limit, and any text;
/// sometimes with a leading `/`.
fn path() -> impl Strategy<Value = String> {
    let plain = proptest::collection::vec(plain_segment(), 1..70);
    let with_odd = (
        proptest::collection::vec(plain_segment(), 0..8),
        odd_segment(),
        proptest::collection::vec(plain_segment(), 0..8),
    )
        .prop_map(|(mut before, odd, after)| {
            before.push(odd);
            before.extend(after);
            before
        });
    let long = proptest::collection::vec("x{15,17}", 55..70);
    let segments = prop_oneof![3 => plain, 3 => with_odd, 2 => long, 1 => any::<String>().prop_map(|s| vec![s])];
    (proptest::bool::weighted(0.1), segments).prop_map(|(absolute, segments)| {
        let joined = segments.join("/");
        if absolute { format!("/{joined}") } else { joined }
    })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 1024, ..ProptestConfig::default() })]

    #[test]
    fn arbitrary_strings_never_panic(text in any::<String>()) {
        let _ = validate_path(&text);
    }

    #[test]
    fn accepts_exactly_the_paths_that_satisfy_every_rule(path in path()) {
        prop_assert_eq!(validate_path(&path).is_ok(), satisfies_every_rule(&path), "{:?}", path);
    }

    #[test]
    fn arbitrary_strings_are_judged_by_the_rules(text in any::<String>()) {
        prop_assert_eq!(validate_path(&text).is_ok(), satisfies_every_rule(&text), "{:?}", text);
    }

    #[test]
    fn accepted_paths_are_unchanged_and_accepted_again(path in path()) {
        if let Ok(accepted) = validate_path(&path) {
            prop_assert_eq!(accepted, path.as_str());
            prop_assert_eq!(validate_path(accepted), Ok(accepted));
            prop_assert!(accepted.len() <= MAX_PATH_BYTES);
            prop_assert!(accepted.split('/').count() <= MAX_SEGMENTS);
        }
    }
}

#[test]
fn the_generator_reaches_both_answers_and_the_limits() {
    // A property that only ever saw refusals would prove little: the generator must produce
    // accepted paths, and paths just over each limit.
    use proptest::strategy::ValueTree;
    use proptest::test_runner::TestRunner;
    let mut runner = TestRunner::deterministic();
    let (mut accepted, mut too_long, mut too_deep) = (0, 0, 0);
    for _ in 0..2048 {
        let path = path().new_tree(&mut runner).unwrap().current();
        accepted += usize::from(validate_path(&path).is_ok());
        too_long += usize::from(path.len() > MAX_PATH_BYTES);
        too_deep += usize::from(path.split('/').count() > MAX_SEGMENTS);
    }
    assert!(
        accepted > 400 && too_long > 100 && too_deep > 100,
        "{accepted} accepted, {too_long} long, {too_deep} deep"
    );
}
