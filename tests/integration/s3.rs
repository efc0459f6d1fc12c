//! The S3 store against real S3 servers over HTTP: s3s-fs in this process (always), and Ceph RGW when
//! `MOVER_TEST_RGW_ENDPOINT` is set (start one with `scripts/ceph-rgw.sh`).

#[path = "s3_server.rs"]
pub mod server;

use std::sync::Arc;

use bytes::Bytes;
use mover_core::ErrorKind;
use mover_core::store::conformance::run_all;
use mover_core::store::s3::ChecksumMode;
use mover_core::store::{
    CountingStore, DynStore, PutMode, PutOutcome, RetryConfig, RetryStore, S3Config, S3Location, S3Store, Store,
};
use server::{Fault, S3Server, every};

const MIB: usize = 1 << 20;

fn pattern(len: usize, seed: u32) -> Bytes {
    (0..len as u32).map(|i| (i.wrapping_add(seed).wrapping_mul(2654435761) >> 24) as u8).collect::<Vec<u8>>().into()
}

fn count(server: &S3Server, pred: impl Fn(&server::RequestInfo) -> bool) -> usize {
    server.requests().iter().filter(|r| pred(r)).count()
}

fn is_create_upload(r: &server::RequestInfo) -> bool {
    r.method == "POST" && r.query.split('&').any(|p| p == "uploads" || p == "uploads=")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn conformance_against_s3s_fs() -> anyhow::Result<()> {
    let server = S3Server::start().await?;
    run_all(&server.s3_store("conformance/under/a/prefix")).await;
    // The suite's 9 MiB object went up as a multipart upload (threshold 6 MiB) in two 5 MiB parts; its streamed
    // 12 MiB objects in three parts each (created, overwritten; the refused create sends none), and the dropped
    // one in the two parts filled before the drop.
    assert_eq!(count(&server, is_create_upload), 4);
    assert_eq!(count(&server, |r| r.is_upload_part()), 2 + 3 + 3 + 2);
    // At the bucket root too.
    run_all(&server.s3_store("")).await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keys_live_under_the_prefix() -> anyhow::Result<()> {
    let server = S3Server::start().await?;
    let a = server.s3_store("tenant-a/x");
    let b = server.s3_store("tenant-b");
    let (da, db) = (pattern(1000, 1), pattern(2000, 2));
    a.put("k/1", da.clone(), PutMode::Create).await?;
    b.put("k/1", db.clone(), PutMode::Create).await?;
    assert_eq!(a.get("k/1").await?, da);
    assert_eq!(b.get("k/1").await?, db);
    let listed = a.list("").await?;
    assert_eq!(listed.iter().map(|m| (m.key.as_str(), m.size)).collect::<Vec<_>>(), vec![("k/1", 1000)]);
    // The object is where the prefix says, byte for byte.
    let on_disk = std::fs::read(server.root().join(S3Server::BUCKET).join("tenant-a/x/k/1"))?;
    assert_eq!(on_disk, da);
    assert_eq!(a.describe(), format!("s3://{}/tenant-a/x at {}", S3Server::BUCKET, server.endpoint()));
    assert!(!format!("{a:?}{}", a.describe()).contains(S3Server::SECRET_KEY), "secret shown");

    // The SDK's default checksums (aws-chunked uploads with trailers) also work against s3s-fs.
    let c =
        server.s3_store_with("checksums", S3Config { checksum_mode: ChecksumMode::WhenSupported, ..server.config() });
    let data = pattern(300_000, 3);
    c.put("x", data.clone(), PutMode::Overwrite).await?;
    assert_eq!(c.get("x").await?, data);
    assert_eq!(c.get_range("x", 1000..250_000).await?, data.slice(1000..250_000));
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn multipart_uploads_round_trip_and_respect_create() -> anyhow::Result<()> {
    let server = S3Server::start().await?;
    let store = server.s3_store("mp");
    let data = pattern(23 * MIB + 17, 4);
    assert_eq!(store.put("big", data.clone(), PutMode::Create).await?, PutOutcome::Written);
    assert_eq!(count(&server, |r| r.is_upload_part()), 5, "23 MiB in 5 MiB parts");
    assert!(store.get("big").await? == data, "multipart object differs");
    let boundary = (5 * MIB) as u64;
    assert_eq!(store.get_range("big", boundary - 10..boundary + 10).await?, data.slice(5 * MIB - 10..5 * MIB + 10));
    assert_eq!(store.head("big").await?.map(|m| m.size), Some(data.len() as u64));

    // A second create is refused before any upload starts, and the object is unchanged.
    let uploads = count(&server, is_create_upload);
    let other = pattern(7 * MIB, 5);
    assert_eq!(store.put("big", other.clone(), PutMode::Create).await?, PutOutcome::AlreadyExists);
    assert_eq!(count(&server, is_create_upload), uploads);
    assert!(store.get("big").await? == data);

    // Overwrite replaces it; no upload is left behind.
    assert_eq!(store.put("big", other.clone(), PutMode::Overwrite).await?, PutOutcome::Written);
    assert!(store.get("big").await? == other);
    assert_eq!(leftover_uploads(&server), Vec::<String>::new());
    Ok(())
}

/// s3s-fs's files for multipart uploads in progress (`.upload-*` and `.upload_id-*` under its root).
fn leftover_uploads(server: &S3Server) -> Vec<String> {
    std::fs::read_dir(server.root())
        .unwrap()
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .filter(|n| n.starts_with(".upload"))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failed_multipart_upload_is_aborted() -> anyhow::Result<()> {
    let server = S3Server::start().await?;
    let part_retry = RetryConfig { max_attempts: 3, base_backoff_ms: 1, max_backoff_ms: 10 };
    let store = server.s3_store_with("abort", S3Config { part_retry: Some(part_retry), ..server.config() });
    server.set_faults(|r| {
        (r.is_upload_part() && r.query.split('&').any(|p| p == "partNumber=3")).then_some(Fault::InternalError)
    });
    let data = pattern(16 * MIB, 6);
    let err = store.put("big", data.clone(), PutMode::Create).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Transient, "{err}");
    assert!(err.to_string().contains("part 3"), "{err}");
    assert!(err.to_string().contains("after 3 attempts"), "the part was retried: {err}");
    assert_eq!(count(&server, |r| r.fault.is_some()), 3);
    assert_eq!(count(&server, |r| r.method == "DELETE" && r.query.contains("uploadId=")), 1, "abort sent");
    assert!(store.head("big").await?.is_none(), "nothing visible after a failed upload");
    assert_eq!(leftover_uploads(&server), Vec::<String>::new(), "the abort removed the parts");

    server.clear_faults();
    assert_eq!(store.put("big", data.clone(), PutMode::Create).await?, PutOutcome::Written);
    assert!(store.get("big").await? == data);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn multipart_requests_are_retried_one_by_one() -> anyhow::Result<()> {
    let server = S3Server::start().await?;
    let part_retry = RetryConfig { max_attempts: 3, base_backoff_ms: 1, max_backoff_ms: 10 };
    let store = server.s3_store_with("part-retry", S3Config { part_retry: Some(part_retry), ..server.config() });
    // The first attempt of part 2, of the create and of the complete fail; each is retried alone.
    let seen = std::sync::Mutex::new(std::collections::HashSet::new());
    server.set_faults(move |r| {
        let kind = if r.is_upload_part() {
            r.query.split('&').find(|p| p.starts_with("partNumber=")).unwrap_or("").to_string()
        } else if r.method == "POST" {
            if is_create_upload(r) { "create".into() } else { "complete".into() }
        } else {
            return None;
        };
        let first = seen.lock().unwrap().insert(kind.clone());
        (first && kind != "partNumber=1" && kind != "partNumber=3").then_some(Fault::Reset)
    });
    let data = pattern(12 * MIB, 11);
    assert_eq!(store.put("big", data.clone(), PutMode::Create).await?, PutOutcome::Written);
    assert_eq!(count(&server, |r| r.fault.is_some()), 3, "create, part 2 and complete failed once");
    assert_eq!(count(&server, |r| r.is_upload_part()), 4, "3 parts + 1 retried");
    assert_eq!(count(&server, |r| r.method == "DELETE"), 0, "no abort");
    server.clear_faults();
    assert!(store.get("big").await? == data);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lost_answers_are_resolved_on_retry() -> anyhow::Result<()> {
    let server = S3Server::start().await?;
    let part_retry = RetryConfig { max_attempts: 3, base_backoff_ms: 1, max_backoff_ms: 10 };
    let store = RetryStore::new(
        server.s3_store_with("lost", S3Config { part_retry: Some(part_retry), ..server.config() }),
        RetryConfig { max_attempts: 3, base_backoff_ms: 1, max_backoff_ms: 10 },
    )?;
    let lose_first = |pred: fn(&server::RequestInfo) -> bool| {
        let done = std::sync::atomic::AtomicBool::new(false);
        move |r: &server::RequestInfo| {
            (pred(r) && !done.swap(true, std::sync::atomic::Ordering::SeqCst)).then_some(Fault::LoseAnswer)
        }
    };
    fn is_complete(r: &server::RequestInfo) -> bool {
        r.method == "POST" && r.query.contains("uploadId=")
    }
    // A completed multipart upload whose answer was lost: the retried complete finds the upload gone and the object
    // in place with the right size, so the put is reported written.
    for (key, mode) in [("mp-over", PutMode::Overwrite), ("mp-create", PutMode::Create)] {
        server.set_faults(lose_first(is_complete));
        let data = pattern(7 * MIB + 3, 12);
        assert_eq!(store.put(key, data.clone(), mode).await?, PutOutcome::Written, "{key}");
        assert!(store.get(key).await? == data, "{key}");
        assert_eq!(count(&server, |r| r.fault == Some(Fault::LoseAnswer)), if key == "mp-over" { 1 } else { 2 });
    }
    // A create whose answer was lost: the retry finds the object there. For a content-addressed key that means the
    // same bytes, which is why `AlreadyExists` is a correct answer here.
    server.set_faults(lose_first(|r| r.method == "PUT"));
    let data = pattern(1000, 13);
    assert_eq!(store.put("small", data.clone(), PutMode::Create).await?, PutOutcome::AlreadyExists);
    assert_eq!(store.get("small").await?, data);
    assert_eq!(store.retries(), 1);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn errors_are_classified_over_the_wire() -> anyhow::Result<()> {
    let server = S3Server::start().await?;
    let store = server.s3_store("errors");
    let data = pattern(1000, 7);
    store.put("obj", data.clone(), PutMode::Overwrite).await?;

    assert_eq!(store.get("missing").await.unwrap_err().kind(), ErrorKind::NotFound);
    assert!(store.head("missing").await?.is_none());
    store.delete("missing").await?;
    assert_eq!(store.get_range("obj", 1000..1001).await.unwrap_err().kind(), ErrorKind::Corrupt);
    assert_eq!(store.get_range("obj", 999..999).await?, Bytes::new());
    assert_eq!(store.get_range("obj", 1000..1000).await.unwrap_err().kind(), ErrorKind::Corrupt);
    assert_eq!(store.get_range("missing", 0..1).await.unwrap_err().kind(), ErrorKind::NotFound);

    for (fault, code) in [(Fault::SlowDown, "SlowDown"), (Fault::InternalError, "InternalError"), (Fault::Reset, "")] {
        server.set_faults(move |_| Some(fault));
        for err in [
            store.put("obj", data.clone(), PutMode::Overwrite).await.unwrap_err(),
            store.get("obj").await.unwrap_err(),
            store.head("obj").await.unwrap_err(),
            store.list("").await.unwrap_err(),
            store.delete("obj").await.unwrap_err(),
        ] {
            assert_eq!(err.kind(), ErrorKind::Transient, "{fault:?}: {err}");
            // HEAD answers have no body, so no error code: the status says it.
            let shown = err.to_string();
            assert!(shown.contains(code) || shown.contains("HEAD s3://"), "{fault:?}: {err}");
        }
    }
    server.clear_faults();
    assert_eq!(store.get("obj").await?, data, "nothing changed under the faults");

    // Wrong credentials and a missing bucket are configuration errors, never "object not found".
    let wrong = server.s3_store_with("errors", S3Config { secret_access_key: Some("wrong".into()), ..server.config() });
    let err = wrong.get("obj").await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Config, "{err}");
    assert!(!err.to_string().contains(S3Server::SECRET_KEY));
    let location = S3Location { bucket: "no-such-bucket".into(), prefix: String::new() };
    let err = S3Store::new(location.clone(), server.config())?.get("obj").await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Config, "{err}");
    assert!(err.to_string().contains("does not exist"), "{err}");
    let err = S3Store::connect(location, server.config()).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Config, "{err}");
    // Nothing listens on port 1 of loopback: a connection failure is transient.
    let closed = server.s3_store_with(
        "errors",
        S3Config { endpoint_url: Some("http://127.0.0.1:1".into()), skip_bucket_check: true, ..server.config() },
    );
    assert_eq!(closed.get("obj").await.unwrap_err().kind(), ErrorKind::Transient);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retry_store_rides_out_injected_faults() -> anyhow::Result<()> {
    let server = S3Server::start().await?;
    server.set_faults(every(3, 5, 7));
    let part_retry = RetryConfig { max_attempts: 6, base_backoff_ms: 1, max_backoff_ms: 20 };
    let s3 = server.s3_store_with("faulty", S3Config { part_retry: Some(part_retry), ..server.config() });
    let counting = CountingStore::new(s3);
    let counters = counting.counters();
    let config = RetryConfig { max_attempts: 10, base_backoff_ms: 1, max_backoff_ms: 20 };
    let store = RetryStore::new(counting, config)?;
    // Every check of the suite compares bytes; it passes although about half the requests fail.
    run_all(&store).await;
    let data = pattern(13 * MIB, 8);
    assert_eq!(store.put("big", data.clone(), PutMode::Create).await?, PutOutcome::Written);
    assert!(store.get("big").await? == data);

    let faults: Vec<Fault> = server.requests().iter().filter_map(|r| r.fault).collect();
    for f in [Fault::SlowDown, Fault::InternalError, Fault::Reset] {
        assert!(faults.contains(&f), "{f:?} never injected");
    }
    let counts = counters.snapshot();
    assert!(store.retries() > 10, "only {} retries", store.retries());
    // Failed attempts are the retried ones plus the suite's expected failures (missing objects, bad ranges).
    assert!(counts.failed_requests >= store.retries(), "{counts:?}");
    assert!(counts.put_bytes >= data.len() as u64);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn listing_follows_continuation_tokens() -> anyhow::Result<()> {
    let server = S3Server::start().await?;
    let store: DynStore = server.store("many");
    let n = 1_234;
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..n {
        let store = store.clone();
        tasks.spawn(
            async move { store.put(&format!("o/{i:05}"), Bytes::from(vec![1u8; i % 7]), PutMode::Create).await },
        );
    }
    while let Some(r) = tasks.join_next().await {
        r??;
    }
    let listed = store.list("o/").await?;
    let want: Vec<(String, u64)> = (0..n).map(|i| (format!("o/{i:05}"), (i % 7) as u64)).collect();
    assert_eq!(listed.into_iter().map(|m| (m.key, m.size)).collect::<Vec<_>>(), want);
    assert!(count(&server, |r| r.method == "GET" && r.query.contains("list-type=2")) >= 2, "one page only");
    Ok(())
}

/// `open_destination("s3://…")` configured only by the standard AWS variables, as moverd uses it: this test runs
/// itself again as a child process with [`S3Server::aws_env`], and the child reads back what the parent wrote.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn open_destination_uses_the_aws_environment() -> anyhow::Result<()> {
    const CHILD: &str = "MOVER_TEST_S3_CHILD_URL";
    let data = pattern(8 * MIB, 14);
    if let Ok(url) = std::env::var(CHILD) {
        let store = mover_core::store::open_destination(&url)?;
        assert!(store.get("from-parent").await? == data, "child read different bytes");
        assert_eq!(store.put("from-child", data.slice(..1000), PutMode::Create).await?, PutOutcome::Written);
        return Ok(());
    }
    let server = S3Server::start().await?;
    server.store("env").put("from-parent", data.clone(), PutMode::Create).await?;
    let mut child = std::process::Command::new(std::env::current_exe()?);
    child.args(["s3::open_destination_uses_the_aws_environment", "--exact", "--nocapture"]);
    child.env(CHILD, server.url("env")).envs(server.aws_env());
    // The server runs on this runtime: wait for the child off its workers.
    let out = tokio::task::spawn_blocking(move || child.output()).await??;
    assert!(out.status.success(), "child failed:\n{}", String::from_utf8_lossy(&out.stdout));
    assert!(String::from_utf8_lossy(&out.stdout).contains("1 passed"), "the child ran the test");
    assert_eq!(server.store("env").get("from-child").await?, data.slice(..1000));
    // Path-style requests: the bucket is in the path, not in the host name.
    assert!(server.requests().iter().all(|r| r.path.starts_with(&format!("/{}", S3Server::BUCKET))));
    Ok(())
}

/// Ceph RGW, when one is running: `scripts/ceph-rgw.sh` prints the variables to set.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn conformance_against_ceph_rgw() -> anyhow::Result<()> {
    let Some((bucket, config)) = server::rgw_from_env() else {
        eprintln!("SKIPPED conformance_against_ceph_rgw: MOVER_TEST_RGW_ENDPOINT is not set (see scripts/ceph-rgw.sh)");
        return Ok(());
    };
    let config = S3Config { part_size: Some(5 << 20), multipart_threshold: Some(6 << 20), ..config };
    let location = S3Location { bucket, prefix: format!("run-{}", std::process::id()) };
    let setup = S3Store::new(location.clone(), S3Config { skip_bucket_check: true, ..config.clone() })?;
    setup.create_bucket_if_missing().await?;
    let store = Arc::new(S3Store::connect(location, config).await?);
    run_all(store.as_ref()).await;

    // RGW's conditional writes are atomic: of concurrent creates of one key exactly one wins, and its bytes stay.
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..8u32 {
        let store = store.clone();
        tasks.spawn(async move {
            let data = pattern(100_000, i);
            (store.put("race/blob", data.clone(), PutMode::Create).await, data)
        });
    }
    let mut winners = Vec::new();
    while let Some(r) = tasks.join_next().await {
        let (outcome, data) = r?;
        if outcome? == PutOutcome::Written {
            winners.push(data);
        }
    }
    assert_eq!(winners.len(), 1, "concurrent creates: {} winners", winners.len());
    assert_eq!(store.get("race/blob").await?, winners[0]);

    // Multipart create of an existing key (RGW sends an empty ETag on completion; it must not matter).
    let big = pattern(13 * MIB, 9);
    assert_eq!(store.put("mp/big", big.clone(), PutMode::Create).await?, PutOutcome::Written);
    assert_eq!(store.put("mp/big", pattern(13 * MIB, 10), PutMode::Create).await?, PutOutcome::AlreadyExists);
    assert!(store.get("mp/big").await? == big);

    // Concurrent multipart creates of one key: the object is one writer's bytes, whole, never a mix of parts.
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..3u32 {
        let store = store.clone();
        tasks.spawn(async move {
            let data = pattern(11 * MIB, 20 + i);
            (store.put("race/big", data.clone(), PutMode::Create).await, data)
        });
    }
    let (mut written, mut candidates) = (0, Vec::new());
    while let Some(r) = tasks.join_next().await {
        let (outcome, data) = r?;
        written += usize::from(outcome? == PutOutcome::Written);
        candidates.push(data);
    }
    let stored = store.get("race/big").await?;
    assert!(candidates.contains(&stored), "the object is no writer's bytes");
    eprintln!("RGW: {written} of 3 concurrent multipart creates reported Written");
    assert!(written >= 1);
    for o in store.list("").await? {
        store.delete(&o.key).await?;
    }
    Ok(())
}

// ---- Streamed objects (Store::writer) ----

fn is_put_object(r: &server::RequestInfo) -> bool {
    r.method == "PUT" && !r.query.contains("partNumber=")
}

/// Wait (up to 10 s) until the server saw `n` requests matching `pred`.
async fn wait_for(server: &S3Server, n: usize, pred: impl Fn(&server::RequestInfo) -> bool) -> bool {
    for _ in 0..1000 {
        if count(server, &pred) >= n {
            return true;
        }
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    false
}

/// Write `data` in uneven pieces.
fn write_pieces(w: &mut dyn mover_core::store::ObjectWriter, data: &[u8]) {
    let mut at = 0;
    for n in [3usize, 4 * MIB + 5, 77, 2 * MIB, 1, 6 * MIB + 1].iter().cycle() {
        if at == data.len() {
            break;
        }
        let end = (at + n).min(data.len());
        w.write(&data[at..end]).unwrap();
        at = end;
    }
    assert_eq!(w.written(), data.len() as u64);
}

/// Stream `data` into `key` from a blocking thread (as the pipeline does) and commit.
async fn stream_put(store: &DynStore, key: &'static str, data: &Bytes) -> anyhow::Result<PutOutcome> {
    let (st, d) = (store.clone(), data.clone());
    let outcome = tokio::task::spawn_blocking(move || {
        let mut w = st.writer(key, PutMode::Create).unwrap().expect("S3 streams");
        write_pieces(w.as_mut(), &d);
        w.commit()
    })
    .await??;
    Ok(outcome)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn streamed_writes_upload_parts_as_they_fill() -> anyhow::Result<()> {
    let server = S3Server::start().await?;
    let part_retry = RetryConfig { max_attempts: 3, base_backoff_ms: 1, max_backoff_ms: 10 };
    // Through RetryStore (it forwards the writer), as moverd opens S3 destinations; 5 MiB parts.
    let s3 = server.s3_store_with("stream", S3Config { part_retry: Some(part_retry), ..server.config() });
    let store: DynStore = Arc::new(RetryStore::new(s3, RetryConfig::default())?);
    let data = pattern(12 * MIB + 17, 31);

    // Written from a plain thread (no tokio context there, like the pipeline's collector): the writer runs its
    // requests on the runtime the store was created on. Parts go up while the object is still being written.
    let (st, d) = (store.clone(), data.clone());
    let writing = std::thread::spawn(move || {
        let mut w = st.writer("packs/p1", PutMode::Create).unwrap().expect("S3 streams");
        write_pieces(w.as_mut(), &d);
        w
    });
    let w = tokio::task::spawn_blocking(move || writing.join().unwrap()).await?;
    assert!(wait_for(&server, 2, |r| r.is_upload_part()).await, "the full parts went up before the commit");
    assert!(store.head("packs/p1").await?.is_none(), "visible before commit");
    let outcome = tokio::task::spawn_blocking(move || w.commit()).await??;
    assert_eq!(outcome, PutOutcome::Written);
    assert!(store.get("packs/p1").await? == data, "streamed object differs");
    assert_eq!(count(&server, is_create_upload), 1);
    assert_eq!(count(&server, |r| r.is_upload_part()), 3, "12 MiB in 5 MiB parts");
    assert_eq!(count(&server, is_put_object), 0, "no whole-object put");

    // A create of an existing key: refused before any upload (HEAD), the object unchanged.
    let outcome = stream_put(&store, "packs/p1", &pattern(11 * MIB, 32)).await?;
    assert_eq!(outcome, PutOutcome::AlreadyExists);
    assert_eq!(count(&server, is_create_upload), 1, "no upload for a refused create");
    assert!(store.get("packs/p1").await? == data);

    // An object smaller than a part is one PutObject.
    let small = pattern(100_000, 33);
    let outcome = stream_put(&store, "packs/small", &small).await?;
    assert_eq!(outcome, PutOutcome::Written);
    assert_eq!(count(&server, is_put_object), 1);
    assert_eq!(count(&server, is_create_upload), 1);
    assert_eq!(store.get("packs/small").await?, small);

    // A part failing 4 times is retried alone, with RetryStore's policy (8 attempts), not part_retry's 3; the
    // object is whole.
    let failures = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let f = failures.clone();
    server.set_faults(move |r| {
        let hit = r.is_upload_part() && r.query.split('&').any(|p| p == "partNumber=2");
        (hit && f.fetch_add(1, std::sync::atomic::Ordering::SeqCst) < 4).then_some(Fault::InternalError)
    });
    let outcome = stream_put(&store, "packs/p2", &data).await?;
    assert_eq!(outcome, PutOutcome::Written);
    assert_eq!(count(&server, |r| r.fault.is_some()), 4);
    assert_eq!(count(&server, |r| r.is_upload_part()), 3 + 3 + 4, "3 parts + 3 parts and 4 failed attempts");
    server.clear_faults();
    assert!(store.get("packs/p2").await? == data);

    // Dropped before commit: the upload is aborted and nothing is left, neither object nor parts.
    let (st, d) = (store.clone(), data.clone());
    tokio::task::spawn_blocking(move || {
        let mut w = st.writer("packs/dropped", PutMode::Create).unwrap().unwrap();
        write_pieces(w.as_mut(), &d);
        drop(w);
    })
    .await?;
    assert!(wait_for(&server, 1, is_abort).await, "the dropped writer's upload was aborted");
    assert!(store.head("packs/dropped").await?.is_none());
    for _ in 0..100 {
        if leftover_uploads(&server).is_empty() {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert_eq!(leftover_uploads(&server), Vec::<String>::new(), "the abort removed the parts");
    assert_eq!(count(&server, |r| r.method == "POST" && !is_create_upload(r)), 2, "two completions, not three");
    Ok(())
}

// ---- Resuming interrupted multipart uploads (S3Config::state_dir) ----

/// The journal entries under a state directory (one file per key with an upload in progress).
fn journal_entries(state: &std::path::Path) -> Vec<std::path::PathBuf> {
    match std::fs::read_dir(state.join("s3-uploads")) {
        Ok(dir) => dir.map(|e| e.unwrap().path()).collect(),
        Err(_) => Vec::new(),
    }
}

/// Lines in the one journal entry under `state` (the upload, then one per acknowledged part).
fn journal_lines(state: &std::path::Path) -> usize {
    journal_entries(state).iter().map(|p| std::fs::read(p).unwrap().iter().filter(|&&b| b == b'\n').count()).sum()
}

/// Wait until no put holds a journal entry under `state` (a cancelled put's last journal write may still be
/// finishing on a blocking thread).
async fn wait_journal_unlocked(state: &std::path::Path) {
    for path in journal_entries(state) {
        let file = std::fs::File::open(&path).unwrap();
        for _ in 0..500 {
            if file.try_lock().is_ok() {
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
    }
}

fn part_number(r: &server::RequestInfo) -> Option<u32> {
    r.is_upload_part().then(|| r.query.split('&').find_map(|p| p.strip_prefix("partNumber=")?.parse().ok()))?
}

fn is_abort(r: &server::RequestInfo) -> bool {
    r.method == "DELETE" && r.query.contains("uploadId=")
}

/// s3s-fs's stored parts of uploads in progress (`.upload_id-*.part-*` under its root).
fn parts_on_server(server: &S3Server) -> usize {
    leftover_uploads(server).iter().filter(|n| n.contains(".part-")).count()
}

/// A store with a journal under `state`, 5 MiB parts uploaded one at a time (so an interruption after k parts is
/// deterministic) and no retries inside the upload.
fn resuming_config(base: S3Config, state: &std::path::Path) -> S3Config {
    S3Config {
        state_dir: Some(state.to_path_buf()),
        max_in_flight: Some(1),
        part_size: Some(5 << 20),
        multipart_threshold: Some(6 << 20),
        part_retry: Some(RetryConfig { max_attempts: 1, base_backoff_ms: 1, max_backoff_ms: 1 }),
        ..base
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn interrupted_multipart_upload_is_resumed() -> anyhow::Result<()> {
    let server = S3Server::start().await?;
    let state = tempfile::tempdir()?;
    let config = resuming_config(server.config(), state.path());
    let data = pattern(40 * MIB, 30); // 8 parts of 5 MiB
    server.set_faults(|r| (part_number(r) == Some(4)).then_some(Fault::InternalError));
    let err = server.s3_store_with("resume", config.clone()).put("packs/big", data.clone(), PutMode::Create).await;
    let err = err.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Transient, "{err}");
    assert_eq!(count(&server, is_abort), 0, "a journaled upload is not aborted");
    assert_eq!(parts_on_server(&server), 3, "the server holds parts 1-3: {:?}", leftover_uploads(&server));
    assert_eq!(journal_entries(state.path()).len(), 1);
    assert_eq!(journal_lines(state.path()), 1 + 3, "the upload and its 3 parts are journaled");
    server.clear_faults();

    // A new store (a new process, as far as the store knows) with the same state directory.
    let before = server.requests().len();
    let store = server.s3_store_with("resume", config);
    assert_eq!(store.put("packs/big", data.clone(), PutMode::Create).await?, PutOutcome::Written);
    let second = &server.requests()[before..];
    let sent: Vec<u32> = second.iter().filter_map(part_number).collect();
    assert_eq!(sent, vec![4, 5, 6, 7, 8], "only the missing parts are uploaded");
    assert!(!second.iter().any(is_create_upload), "the upload is resumed, not created again");
    assert!(second.iter().any(|r| r.method == "GET" && r.query.contains("uploadId=")), "ListParts checked it");
    assert_eq!(store.resumed_parts(), 3);
    assert!(store.get("packs/big").await? == data, "the resumed object differs");
    assert_eq!(journal_entries(state.path()), Vec::<std::path::PathBuf>::new(), "the entry is removed");
    assert_eq!(leftover_uploads(&server), Vec::<String>::new());

    // Without a state directory a failed upload is still aborted at once (today's behaviour).
    let plain =
        server.s3_store_with("resume", S3Config { state_dir: None, ..resuming_config(server.config(), state.path()) });
    server.set_faults(|r| (part_number(r) == Some(2)).then_some(Fault::InternalError));
    plain.put("packs/other", data.clone(), PutMode::Create).await.unwrap_err();
    assert_eq!(count(&server, is_abort), 1);
    assert_eq!(leftover_uploads(&server), Vec::<String>::new());
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn journaled_create_of_an_existing_object_aborts_and_forgets() -> anyhow::Result<()> {
    let server = S3Server::start().await?;
    let state = tempfile::tempdir()?;
    let config = resuming_config(server.config(), state.path());
    let data = pattern(12 * MIB, 31);
    server.set_faults(|r| (part_number(r) == Some(2)).then_some(Fault::InternalError));
    server.s3_store_with("exists", config.clone()).put("k", data.clone(), PutMode::Create).await.unwrap_err();
    server.clear_faults();
    assert_eq!(journal_entries(state.path()).len(), 1);
    // Meanwhile another writer stored the object (for a content-addressed key: the same bytes).
    server.s3_store("exists").put("k", data.clone(), PutMode::Create).await?;
    let store = server.s3_store_with("exists", config);
    assert_eq!(store.put("k", data.clone(), PutMode::Create).await?, PutOutcome::AlreadyExists);
    assert_eq!(count(&server, is_abort), 1, "the journaled upload is aborted");
    assert_eq!(journal_entries(state.path()), Vec::<std::path::PathBuf>::new());
    assert_eq!(leftover_uploads(&server), Vec::<String>::new());
    assert!(store.get("k").await? == data);
    Ok(())
}

/// Interrupt a put of `data` under `key` as a killed process would: cancel it once the journal holds at least
/// `parts` acknowledged parts. Nothing is aborted (the upload is the journal's to resume).
async fn interrupt_put(store: S3Store, key: &str, data: Bytes, state: &std::path::Path, parts: usize) {
    let key = key.to_string();
    let task = tokio::spawn(async move { store.put(&key, data, PutMode::Create).await });
    for _ in 0..6000 {
        if journal_lines(state) > parts || task.is_finished() {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    }
    assert!(!task.is_finished(), "the put ended before it could be interrupted: {:?}", task.await);
    task.abort();
    assert!(task.await.unwrap_err().is_cancelled());
    wait_journal_unlocked(state).await;
    assert!(journal_lines(state) > parts, "{} journal lines", journal_lines(state));
}

/// The resume checks that any server can run: a cancelled put resumed by a new store; a journal entry for other
/// bytes under the key not reused; a journaled upload aborted on the server meanwhile started over. `new_store`
/// makes a store with a journal under `state`; `server` (s3s-fs only) also lets the request log be checked.
async fn resume_checks(new_store: impl Fn() -> S3Store, state: &std::path::Path, server: Option<&S3Server>) {
    let n_requests = || server.map_or(0, |s| s.requests().len());
    // The part numbers uploaded since request `from`. A set: the part that was in flight when a put was cancelled
    // may still reach the server (the HTTP connection task lives on) and show up once more.
    let parts_sent = |from: usize| {
        server.map(|s| s.requests()[from..].iter().filter_map(part_number).collect::<std::collections::BTreeSet<_>>())
    };
    let a = pattern(40 * MIB, 40);
    let b = pattern(40 * MIB, 41);

    // 1. A cancelled put, resumed by the next store: only the missing parts go up.
    interrupt_put(new_store(), "resume/a", a.clone(), state, 3).await;
    let from = n_requests();
    let store = new_store();
    assert_eq!(store.put("resume/a", a.clone(), PutMode::Create).await.unwrap(), PutOutcome::Written);
    let resumed = store.resumed_parts() as usize;
    assert!(resumed >= 3, "{resumed} parts resumed");
    if let Some(sent) = parts_sent(from) {
        assert_eq!(sent, (resumed as u32 + 1..=8).collect(), "only the missing parts are uploaded");
    }
    assert!(store.get("resume/a").await.unwrap() == a, "the resumed object differs");
    assert!(journal_entries(state).is_empty(), "the entry is removed");

    // 2. A journal entry for other bytes under the key is not reused: the stale upload is aborted, all parts go up.
    interrupt_put(new_store(), "resume/b", a.clone(), state, 2).await;
    let saved = journal_entries(state).into_iter().map(|p| (std::fs::read(&p).unwrap(), p)).collect::<Vec<_>>();
    let from = n_requests();
    let store = new_store();
    assert_eq!(store.put("resume/b", b.clone(), PutMode::Overwrite).await.unwrap(), PutOutcome::Written);
    assert_eq!(store.resumed_parts(), 0);
    if let (Some(sent), Some(server)) = (parts_sent(from), server) {
        assert_eq!(sent, (1..=8).collect());
        assert_eq!(server.requests()[from..].iter().filter(|r| is_abort(r)).count(), 1, "the stale upload is aborted");
    }
    assert!(store.get("resume/b").await.unwrap() == b, "other bytes were reused");
    assert!(journal_entries(state).is_empty());

    // 3. The entry of step 2 again: its upload was aborted on the server meanwhile, so the put starts over.
    for (content, path) in &saved {
        std::fs::write(path, content).unwrap();
    }
    let from = n_requests();
    let store = new_store();
    assert_eq!(store.put("resume/b", a.clone(), PutMode::Overwrite).await.unwrap(), PutOutcome::Written);
    assert_eq!(store.resumed_parts(), 0);
    if let Some(sent) = parts_sent(from) {
        assert_eq!(sent, (1..=8).collect());
    }
    assert!(store.get("resume/b").await.unwrap() == a);
    assert!(journal_entries(state).is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resume_checks_against_s3s_fs() -> anyhow::Result<()> {
    let server = S3Server::start().await?;
    let state = tempfile::tempdir()?;
    let config = resuming_config(server.config(), state.path());
    resume_checks(|| server.s3_store_with("rc", config.clone()), state.path(), Some(&server)).await;
    assert_eq!(leftover_uploads(&server), Vec::<String>::new(), "every upload completed or was aborted");
    Ok(())
}

/// The same checks against Ceph RGW, when one is running (`scripts/ceph-rgw.sh`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resume_checks_against_ceph_rgw() -> anyhow::Result<()> {
    let Some((bucket, config)) = server::rgw_from_env() else {
        eprintln!(
            "SKIPPED resume_checks_against_ceph_rgw: MOVER_TEST_RGW_ENDPOINT is not set (see scripts/ceph-rgw.sh)"
        );
        return Ok(());
    };
    let state = tempfile::tempdir()?;
    let config = resuming_config(config, state.path());
    let location = S3Location { bucket, prefix: format!("resume-{}", std::process::id()) };
    let setup = S3Store::new(location.clone(), S3Config { skip_bucket_check: true, ..config.clone() })?;
    setup.create_bucket_if_missing().await?;
    resume_checks(|| S3Store::new(location.clone(), config.clone()).unwrap(), state.path(), None).await;
    for o in setup.list("").await? {
        setup.delete(&o.key).await?;
    }
    Ok(())
}
