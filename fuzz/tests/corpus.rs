//! Replays every committed input of every fuzz target through its check: the corpus that
//! `cargo fuzz` grew (`corpus/<target>/`) and the reproducers of past crashes
//! (`regressions/<target>/`). A check panics on a failure, which fails this test with the
//! file's name.

use std::path::Path;

fn replay(target: &str, check: fn(&[u8])) {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut replayed = 0;
    for folder in ["corpus", "regressions"] {
        let Ok(entries) = std::fs::read_dir(root.join(folder).join(target)) else {
            continue;
        };
        for entry in entries {
            let path = entry.expect("a readable folder entry").path();
            let input = std::fs::read(&path).expect("a readable input");
            eprintln!("replaying {}", path.display());
            check(&input);
            replayed += 1;
        }
    }
    assert!(replayed > 0, "no committed input for fuzz target {target}");
}

#[test]
fn the_signature_header_corpus_passes() {
    replay("signature_header", callfold_fuzz::signature_header);
}

#[test]
fn the_envelope_corpus_passes() {
    replay("envelope", callfold_fuzz::envelope);
}

#[test]
fn the_fold_corpus_passes() {
    replay("fold", callfold_fuzz::fold);
}
