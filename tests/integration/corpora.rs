//! The shared real-mail corpora (when present): migrate → verify → restore → byte-compare each one.

use crate::common::*;

#[test]
fn shared_corpora_round_trip() {
    let Some(root) = shared_corpora() else {
        eprintln!("SKIPPED shared_corpora_round_trip: ../shared/corpora is not present (a fresh checkout has none)");
        return;
    };
    let work = tempfile::tempdir().unwrap();
    let mut seen = 0;
    for name in ["usrp-users-maildir", "enron-mbox", "tricky"] {
        let src = root.join(name);
        if !src.is_dir() {
            eprintln!("corpus {name} not present; skipped");
            continue;
        }
        let w = work.path().join(name);
        let s = round_trip(&src, &w, name, EXIT_OK);
        eprintln!(
            "corpus {name}: {} messages, {} files, {} source bytes, {} stored bytes, {:.2} s",
            s["messages"],
            s["files"],
            s["source_bytes"],
            s["new_stored_bytes"],
            s["seconds"].as_f64().unwrap()
        );
        assert!(s["messages"].as_u64().unwrap() > 0);
        seen += 1;
    }
    assert!(seen > 0, "the corpora folder exists but holds none of the expected corpora");
}
