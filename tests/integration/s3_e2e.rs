//! End to end against a real S3 server (s3s-fs, in this process): migrate → verify → restore → byte-compare, through
//! the moverd binary configured the AWS way, and through the library with faults injected on the wire.

use std::ffi::OsStr;
use std::path::Path;
use std::sync::Arc;

use mover_core::pipeline::{MigrateOptions, migrate};
use mover_core::store::{DynStore, RetryConfig, RetryStore};

use crate::common::*;
use crate::s3::server::{S3Server, every};

fn moverd_s3(server: &S3Server, args: &[&OsStr], code: i32) -> (String, String) {
    let out = moverd_cmd().args(args).envs(server.aws_env()).env("MOVER_LOG", "debug").output().unwrap();
    let (stdout, stderr) =
        (String::from_utf8_lossy(&out.stdout).into_owned(), String::from_utf8_lossy(&out.stderr).into_owned());
    assert_eq!(out.status.code(), Some(code), "moverd {args:?}\nstdout:\n{stdout}\nstderr (tail):\n{}", tail(&stderr));
    (stdout, stderr)
}

fn tail(s: &str) -> &str {
    &s[s.len().saturating_sub(4000)..]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn moverd_migrates_verifies_and_restores_through_s3() {
    let server = S3Server::start().await.unwrap();
    let work = tempfile::tempdir().unwrap();
    let src = work.path().join("alice");
    crate::roundtrip::maildir_fixture(&src);
    let mbox = work.path().join("bob.mbox");
    write_file(
        &mbox,
        b"From a@b Mon Apr 18 14:23:23 2022\nSubject: 1\n\nx\n\nFrom a@b Mon Apr 18 14:23:24 2022\nSubject: 2\n\ny\n",
        1_600_000_000,
    );
    let url = server.url("e2e/dest");
    let to = work.path().join("restored");
    let to_bob = work.path().join("restored-bob");
    let secret = S3Server::SECRET_KEY;
    let (srv, src2, url2, to2, mbox2, to_bob2) =
        (&server, src.clone(), url.clone(), to.clone(), mbox.clone(), to_bob.clone());
    let outputs = tokio::task::block_in_place(move || {
        let mut outputs = Vec::new();
        let os = |s: &str| OsStr::new(s).to_os_string();
        let (out, err) = moverd_s3(
            srv,
            &[&os("migrate"), src2.as_os_str(), &os(&url2), &os("--mailbox"), &os("alice"), &os("--json"), &os("-vv")],
            EXIT_OK,
        );
        let summary: serde_json::Value = serde_json::from_str(&out).unwrap();
        outputs.push(out);
        outputs.push(err);
        let (out, err) = moverd_s3(srv, &[&os("migrate"), mbox2.as_os_str(), &os(&url2), &os("--json")], EXIT_OK);
        outputs.push(out);
        outputs.push(err);
        let (out, err) = moverd_s3(srv, &[&os("verify"), &os(&url2), &os("-v")], EXIT_OK);
        assert!(out.contains("OK: verified mailbox alice") && out.contains("OK: verified mailbox bob.mbox"), "{out}");
        outputs.push(out);
        outputs.push(err);
        let (out, err) = moverd_s3(
            srv,
            &[&os("restore"), &os(&url2), &os("--mailbox"), &os("alice"), &os("--to"), to2.as_os_str()],
            EXIT_OK,
        );
        outputs.push(out);
        outputs.push(err);
        moverd_s3(
            srv,
            &[&os("restore"), &os(&url2), &os("--mailbox"), &os("bob.mbox"), &os("--to"), to_bob2.as_os_str()],
            EXIT_OK,
        );
        let (out, err) = moverd_s3(srv, &[&os("ls"), &os(&url2)], EXIT_OK);
        assert!(out.contains("alice") && out.contains("bob.mbox"), "{out}");
        outputs.push(out);
        outputs.push(err);
        // The endpoint given as an option instead of AWS_ENDPOINT_URL.
        let env: Vec<_> = srv.aws_env().into_iter().filter(|(k, _)| *k != "AWS_ENDPOINT_URL").collect();
        let out = moverd_cmd()
            .args([os("ls"), os(&url2), os("--s3-endpoint"), os(srv.endpoint()), os("--json")])
            .env_remove("AWS_ENDPOINT_URL")
            .envs(env)
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(EXIT_OK), "{}", String::from_utf8_lossy(&out.stderr));
        let listed: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        assert_eq!(listed.as_array().unwrap().len(), 2);
        (summary, outputs)
    });
    let (summary, outputs) = outputs;
    assert_same_tree(&src, &to);
    assert_same_tree_entry(&mbox, &to_bob.join("bob.mbox"));
    // Request economics: one pack (and its index) for this small mailbox, the format marker, the manifest. No HEAD
    // per blob: existence comes from the pack indexes.
    let r = &summary["requests"];
    assert!(r["put_requests"].as_u64().unwrap() <= 4, "{r}");
    assert_eq!(r["head_requests"], 0, "{r}");
    // The secret never reaches output or logs (debug level included).
    for o in &outputs {
        assert!(!o.contains(secret), "secret key printed:\n{}", tail(o));
    }
    assert!(outputs.iter().any(|o| o.contains("s3://mover-test/e2e/dest")), "the destination is named");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn moverd_migrates_a_wave_through_s3_with_the_index_kept_from_mailbox_to_mailbox() {
    let server = S3Server::start().await.unwrap();
    let work = tempfile::tempdir().unwrap();
    let src = work.path().join("corpus");
    let gen_args = ["gen-corpus", src.to_str().unwrap(), "--seed", "8", "--mailboxes", "3", "--messages", "40"];
    let url = server.url("wave/dest");
    let (srv, src2, url2, work2) = (&server, src.clone(), url.clone(), work.path().to_path_buf());
    tokio::task::block_in_place(move || {
        moverd_ok(gen_args, EXIT_OK);
        let os = |s: &str| OsStr::new(s).to_os_string();
        let boxes = src2.join("maildir");
        let args = [os("migrate-many"), os(&url2), os("--each"), boxes.clone().into_os_string(), os("--json")];
        let args: Vec<&OsStr> = args.iter().map(|a| a.as_os_str()).chain([OsStr::new("--no-index-cache")]).collect();
        let (out, _) = moverd_s3(srv, &args, EXIT_OK);
        let lines: Vec<serde_json::Value> = out.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
        assert_eq!(lines.len(), 4, "{out}");
        // Each pass reads what the first read (the format marker): the pack indexes of the earlier passes come from
        // the index the wave keeps, not from the bucket.
        let gets: Vec<_> = lines[..3].iter().map(|l| l["requests"]["get_requests"].as_u64().unwrap()).collect();
        assert!(gets.iter().all(|&g| g == gets[0]), "GETs per pass: {gets:?}");
        assert!(lines[2]["stats"]["deduplicated_bytes"].as_u64().unwrap() > 0, "{:#}", lines[2]);
        moverd_s3(srv, &[&os("verify"), &os(&url2)], EXIT_OK);
        for m in ["user000", "user001", "user002"] {
            let to = work2.join("restored").join(m);
            moverd_s3(
                srv,
                &[&os("restore"), &os(&url2), &os("--mailbox"), &os(m), &os("--to"), to.as_os_str()],
                EXIT_OK,
            );
            assert_same_tree(&boxes.join(m), &to);
        }
    });
}

/// The store stack moverd uses for S3: retries around the S3 store.
fn retrying(server: &S3Server, prefix: &str) -> DynStore {
    let cfg = RetryConfig { base_backoff_ms: 5, ..RetryConfig::default() };
    Arc::new(RetryStore::new(server.s3_store(prefix), cfg).unwrap())
}

async fn corpus_or_fixture(work: &Path) -> std::path::PathBuf {
    if let Some(root) = shared_corpora() {
        let usrp = root.join("usrp-users-maildir");
        if usrp.is_dir() {
            return usrp;
        }
    }
    eprintln!("shared corpora absent: using a generated fixture for the fault test");
    let src = work.join("fixture");
    crate::roundtrip::maildir_fixture(&src);
    for i in 0..200u64 {
        let m =
            message(&[("Subject", &format!("m{i}"))], &text_noise(i % 37, 5_000 + (i as usize * 911) % 40_000), "\n");
        write_file(&src.join(format!("cur/{i}.gen:2,S")), &m, 1_600_000_000 + i);
    }
    src
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn migration_survives_faults_on_the_wire() {
    let server = S3Server::start().await.unwrap();
    let work = tempfile::tempdir().unwrap();
    let src = corpus_or_fixture(work.path()).await;
    // 503 SlowDown, 500 and killed connections on a share of all requests, during migrate, verify and restore.
    server.set_faults(every(4, 7, 9));
    let mut opts = MigrateOptions::new("faulty");
    opts.pack_target = 4 << 20; // several packs, so faults hit pack uploads too
    let s = migrate(&src, retrying(&server, "faults"), opts).await.unwrap();
    assert_eq!(s.quarantined, 0);
    let faults = server.requests().iter().filter(|r| r.fault.is_some()).count();
    assert!(faults >= 3, "faults were injected ({faults})");
    let v = mover_core::restore::verify(retrying(&server, "faults"), "faulty", None).await.unwrap();
    assert!(v.errors.is_empty(), "{:?}", v.errors);
    let to = work.path().join("restored");
    let r =
        mover_core::restore::restore(retrying(&server, "faults"), "faulty", &to, &Default::default()).await.unwrap();
    assert!(r.errors.is_empty(), "{:?}", r.errors);
    server.clear_faults();
    assert_same_tree(&src, &to);
    eprintln!(
        "faults test: {} messages, {} bytes, {} packs, {} faults injected over {} requests",
        s.messages,
        s.source_bytes,
        s.stats.packs,
        faults,
        server.requests().len()
    );
    // A second pass over the same server stores nothing and reads nothing from the source.
    let again = migrate(&src, retrying(&server, "faults"), MigrateOptions::new("faulty")).await.unwrap();
    assert!(again.nothing_new && again.new_stored_bytes == 0, "{again:?}");
}

/// Throughput of migrate to s3s-fs against migrate to a local directory, same corpus, same run. A measurement, not a
/// test: run it with `cargo test --release -p mover-tests s3_vs_local -- --ignored --nocapture`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "measurement; run explicitly in release mode"]
async fn s3_vs_local_throughput() {
    let server = S3Server::start().await.unwrap();
    let work = tempfile::tempdir().unwrap();
    let src = corpus_or_fixture(work.path()).await;
    let mut local_secs = Vec::new();
    let mut s3_secs = Vec::new();
    let mut bytes = 0;
    for round in 0..3 {
        let local =
            mover_core::store::open_destination(work.path().join(format!("local{round}")).to_str().unwrap()).unwrap();
        let s = migrate(&src, local, MigrateOptions::new("m")).await.unwrap();
        local_secs.push(s.seconds);
        bytes = s.source_bytes;
        let s = migrate(&src, retrying(&server, &format!("round{round}")), MigrateOptions::new("m")).await.unwrap();
        s3_secs.push(s.seconds);
    }
    let best = |v: &[f64]| v.iter().cloned().fold(f64::INFINITY, f64::min);
    let (l, s) = (best(&local_secs), best(&s3_secs));
    eprintln!(
        "s3_vs_local: {} bytes; local best {l:.3} s ({:.1} MB/s), s3s-fs best {s:.3} s ({:.1} MB/s); s3/local throughput = {:.2}",
        bytes,
        bytes as f64 / l / 1e6,
        bytes as f64 / s / 1e6,
        l / s
    );
}

/// The same end to end against Ceph RGW (when `MOVER_TEST_RGW_ENDPOINT` is set, as `.ci/run` does after starting
/// one with `scripts/ceph-rgw.sh`): migrate → verify → restore → byte-compare, large blobs through RGW's multipart
/// path (and its empty CompleteMultipartUpload ETag).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn migrate_verify_restore_against_ceph_rgw() {
    use mover_core::store::{S3Config, S3Location, S3Store};
    let Some((bucket, config)) = crate::s3::server::rgw_from_env() else {
        eprintln!("SKIPPED migrate_verify_restore_against_ceph_rgw: MOVER_TEST_RGW_ENDPOINT is not set");
        return;
    };
    let location = S3Location { bucket, prefix: format!("e2e-{}", std::process::id()) };
    S3Store::new(location.clone(), S3Config { skip_bucket_check: true, ..config.clone() })
        .unwrap()
        .create_bucket_if_missing()
        .await
        .unwrap();
    let store: DynStore =
        Arc::new(RetryStore::new(S3Store::connect(location, config).await.unwrap(), RetryConfig::default()).unwrap());
    let work = tempfile::tempdir().unwrap();
    let src = work.path().join("rgw");
    crate::roundtrip::maildir_fixture(&src);
    // A file large enough for a standalone blob (> 8 MiB stored): it goes up as a multipart upload.
    write_file(&src.join("archive.bin"), &noise(5, 10 << 20), 1_500_000_000);
    // As `moverd migrate-many` runs a wave: one index kept from pass to pass.
    let kept = mover_core::pipeline::KeptIndex::new();
    let wave = |mailbox: &str| {
        let mut opts = MigrateOptions::new(mailbox);
        opts.keep_index = Some(kept.clone());
        opts
    };
    let s = migrate(&src, store.clone(), wave("rgw")).await.unwrap();
    assert_eq!(s.messages, 11);
    // The same mail as another mailbox, next in the wave: everything deduplicated against the kept index, and no
    // pack index read from RGW (as many GETs as the first pass: the format marker).
    let twin = migrate(&src, store.clone(), wave("rgw-twin")).await.unwrap();
    assert_eq!((twin.stats.new_blobs, twin.requests.get_requests), (0, s.requests.get_requests), "{twin:?}");
    // The control: a pass without the kept index reads the pack indexes (one per pack) from RGW.
    let control = migrate(&src, store.clone(), MigrateOptions::new("rgw-control")).await.unwrap();
    assert_eq!(control.requests.get_requests, s.requests.get_requests + s.stats.packs, "{control:?}");
    let to_twin = work.path().join("restored-twin");
    let r = mover_core::restore::restore(store.clone(), "rgw-twin", &to_twin, &Default::default()).await.unwrap();
    assert!(r.errors.is_empty(), "{:?}", r.errors);
    assert_same_tree(&src, &to_twin);
    let v = mover_core::restore::verify(store.clone(), "rgw", None).await.unwrap();
    assert!(v.errors.is_empty(), "{:?}", v.errors);
    let to = work.path().join("restored");
    let r = mover_core::restore::restore(store.clone(), "rgw", &to, &Default::default()).await.unwrap();
    assert!(r.errors.is_empty(), "{:?}", r.errors);
    assert_same_tree(&src, &to);
    let again = migrate(&src, store.clone(), MigrateOptions::new("rgw")).await.unwrap();
    assert!(again.nothing_new, "{again:?}");
    for o in store.list("").await.unwrap() {
        store.delete(&o.key).await.unwrap();
    }
}

/// Several moverd processes migrate into one S3 destination at once, sharing the index cache and the multipart
/// journal: two of them carry the same large blob (the same content-named pack object, uploaded by both), and
/// every mailbox verifies and restores byte for byte.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_migrations_into_one_s3_destination() {
    let server = S3Server::start().await.unwrap();
    let work = tempfile::tempdir().unwrap();
    let url = server.url("concurrent/dest");
    let sources: Vec<_> = (0..4u64)
        .map(|i| {
            let src = work.path().join(format!("m{i}"));
            for j in 0..20 {
                let body = noise(if j % 2 == 0 { j } else { i * 1000 + j }, 3000);
                let m = message(&[("Subject", &format!("{i}/{j}")[..])], &body, "\n");
                write_file(&src.join(format!("cur/{j}.host:2,S")), &m, 1_600_000_000);
            }
            std::fs::create_dir_all(src.join("new")).unwrap();
            // A blob stored alone, as a multipart upload: the same one in m0 and m1.
            write_file(&src.join("archive.bin"), &noise(if i < 2 { 77 } else { 77 + i }, 9 << 20), 1_500_000_000);
            src
        })
        .collect();
    let (state, cache) = (work.path().join("state"), work.path().join("cache"));
    let (srv, url2, sources2) = (&server, url.clone(), sources.clone());
    tokio::task::block_in_place(move || {
        all_at_once_quietly(sources2.iter().enumerate().map(|(i, src)| {
            let mut cmd = moverd_cmd();
            cmd.args([OsStr::new("migrate"), src.as_os_str(), OsStr::new(&url2)])
                .args(["--mailbox", &format!("m{i}"), "--json"])
                .args([OsStr::new("--state-dir"), state.as_os_str(), OsStr::new("--index-cache"), cache.as_os_str()])
                .envs(srv.aws_env());
            cmd
        }));
        for (i, src) in sources2.iter().enumerate() {
            let (mailbox, to) = (format!("m{i}"), work.path().join(format!("restored-{i}")));
            let os = |s: &str| OsStr::new(s).to_os_string();
            moverd_s3(srv, &[&os("verify"), &os(&url2), &os("--mailbox"), &os(&mailbox)], EXIT_OK);
            moverd_s3(
                srv,
                &[&os("restore"), &os(&url2), &os("--mailbox"), &os(&mailbox), &os("--to"), to.as_os_str()],
                EXIT_OK,
            );
            assert_same_tree(src, &to);
        }
    });
}
