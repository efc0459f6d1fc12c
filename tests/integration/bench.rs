//! `moverd bench`: the operator's measurement of the pipeline on their own data.

use crate::common::*;

/// `--runs N` migrates SOURCE N times into fresh scratch stores and reports the median run with every run's MB/s;
/// into a DEST it is refused (every run after the first would be a delta pass), and one run into a DEST restores
/// byte for byte.
#[test]
fn bench_runs_report_the_median_and_every_run() {
    let work = tempfile::tempdir().unwrap();
    let src = work.path().join("corpus");
    let gen_args = ["gen-corpus", src.to_str().unwrap(), "--seed", "3", "--mailboxes", "1", "--messages", "40"];
    moverd_ok(gen_args.iter().copied().chain(["--max-message", "300K"]), EXIT_OK);
    let mailbox = src.join("maildir/user000");
    let out = moverd_ok(["bench", mailbox.to_str().unwrap(), "--runs", "3", "--json", "--no-rerun"], EXIT_OK);
    let j: serde_json::Value = serde_json::from_str(&out).unwrap();
    let runs: Vec<f64> = j["runs_mb_s"].as_array().unwrap().iter().map(|v| v.as_f64().unwrap()).collect();
    assert_eq!(runs.len(), 3, "{j:#}");
    let mut sorted = runs.clone();
    sorted.sort_by(f64::total_cmp);
    assert_eq!(j["pipeline"]["mb_s"].as_f64().unwrap(), sorted[1], "the median run: {j:#}");
    assert!(j["pipeline"]["messages"].as_u64().unwrap() >= 40, "{j:#}");
    assert!(j["ratio_to_bound"].as_f64().unwrap() > 0.0, "{j:#}");

    // The text report lists the runs; one run says how to get more.
    let text = moverd_ok(["bench", mailbox.to_str().unwrap(), "--runs", "2", "--no-rerun"], EXIT_OK);
    assert!(text.contains("  runs          "), "{text}");
    let text = moverd_ok(["bench", mailbox.to_str().unwrap(), "--no-rerun"], EXIT_OK);
    assert!(text.contains("--runs 3 gives the median"), "{text}");

    let dest = work.path().join("dest");
    let out = moverd(["bench", mailbox.to_str().unwrap(), dest.to_str().unwrap(), "--runs", "2"]);
    assert_eq!(out.status.code(), Some(EXIT_FAILURE));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("--runs 2 needs the scratch store"), "{err}");
    assert!(!dest.exists(), "nothing written into DEST");

    // One run into DEST is a real migration of the mailbox (as `bench.user000`): it restores byte for byte.
    moverd_ok(["bench", mailbox.to_str().unwrap(), dest.to_str().unwrap(), "--no-rerun"], EXIT_OK);
    let to = work.path().join("restored");
    restore(&dest, "bench.user000", None, &to);
    assert_same_tree(&mailbox, &to);
}
