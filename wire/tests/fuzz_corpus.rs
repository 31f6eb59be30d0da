//! The fuzzing properties (`fuzz/checks.rs`) on every input kept under `fuzz/corpus/`, on the stable
//! toolchain in every test run: the seeds, and each crash input saved there once it was found (its
//! fix then keeps it passing).

#[path = "../../fuzz/checks.rs"]
mod checks;

use checks::Verdict;
use std::path::{Path, PathBuf};

/// Every file of `fuzz/corpus/<target>/`, with its contents.
fn corpus(target: &str) -> Vec<(PathBuf, Vec<u8>)> {
    // Where cargo runs the test from (a cached test binary may come from a checkout elsewhere).
    let dir = std::env::var_os("CARGO_MANIFEST_DIR")
        .map_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")), PathBuf::from)
        .join("../fuzz/corpus")
        .join(target);
    let mut inputs: Vec<_> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|entry| {
            let path = entry.expect("corpus entry").path();
            let bytes = std::fs::read(&path).expect("corpus file");
            (path, bytes)
        })
        .collect();
    inputs.sort();
    assert!(!inputs.is_empty(), "{} holds no seeds", dir.display());
    inputs
}

/// The verdict of every input of `target`; the seeds must reach both outcomes, or the fuzzer starts
/// from only one side of the code.
fn replay(target: &str, check: fn(&[u8]) -> Verdict) -> Vec<(String, Verdict)> {
    let verdicts: Vec<_> = corpus(target)
        .into_iter()
        .map(|(path, bytes)| (file_name(&path), check(&bytes)))
        .collect();
    for outcome in [Verdict::Accepted, Verdict::Refused] {
        assert!(
            verdicts.iter().any(|(_, v)| *v == outcome),
            "no {target} seed is {outcome:?}: {verdicts:?}"
        );
    }
    verdicts
}

fn file_name(path: &Path) -> String {
    path.file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default()
}

fn verdict_of(verdicts: &[(String, Verdict)], seed: &str) -> Verdict {
    verdicts
        .iter()
        .find(|(name, _)| name == seed)
        .map(|(_, v)| *v)
        .unwrap_or_else(|| panic!("seed {seed} is missing"))
}

#[test]
fn every_kept_frame_input_parses_or_is_refused() {
    let verdicts = replay("frame", checks::frame);
    assert_eq!(verdict_of(&verdicts, "send"), Verdict::Accepted);
    assert_eq!(verdict_of(&verdicts, "not_object"), Verdict::Refused);
}

#[test]
fn every_kept_hello_input_identifies_or_is_refused_and_no_forgery_passes() {
    let verdicts = replay("hello", checks::hello);
    assert_eq!(verdict_of(&verdicts, "signed"), Verdict::Accepted);
    assert_eq!(verdict_of(&verdicts, "signed_rooms"), Verdict::Accepted);
    assert_eq!(verdict_of(&verdicts, "open_hello"), Verdict::Accepted);
    assert_eq!(verdict_of(&verdicts, "forged"), Verdict::Refused);
    assert_eq!(verdict_of(&verdicts, "expired"), Verdict::Refused);
    assert_eq!(verdict_of(&verdicts, "alg_none"), Verdict::Refused);
}

#[test]
fn every_kept_ws_input_reads_to_messages_or_one_error() {
    let verdicts = replay("ws", checks::ws);
    assert_eq!(
        verdict_of(&verdicts, "fragmented_with_ping"),
        Verdict::Accepted
    );
    assert_eq!(verdict_of(&verdicts, "unmasked"), Verdict::Refused);
    assert_eq!(verdict_of(&verdicts, "too_big"), Verdict::Refused);
}
