//! Bad input is quarantined with a reason naming file (and offset), the rest carries on, the exit code says so;
//! a damaged destination is caught by verify and restore; restore stays inside its target.

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};

use bytes::Bytes;
use mover_core::manifest::{ByteStr, FileKind, ManifestHeader, ManifestWriter, Record};
use mover_core::pipeline::{MigrateOptions, migrate};
use mover_core::store::{DynStore, PutMode, open_destination};

use crate::common::*;

#[test]
fn fifo_is_quarantined_and_the_rest_migrates() {
    let work = tempfile::tempdir().unwrap();
    let src = work.path().join("dave");
    crate::roundtrip::maildir_fixture(&src);
    let fifo = src.join("cur/a-fifo");
    let c = std::ffi::CString::new(fifo.to_str().unwrap()).unwrap();
    assert_eq!(unsafe_mkfifo(&c), 0);
    let s = round_trip(&src, work.path(), "dave", EXIT_QUARANTINED);
    assert_eq!(s["quarantined"], 1, "{s:#}");
    let q = &s["quarantine"][0];
    assert_eq!(q["path"], "cur/a-fifo");
    assert_eq!(q["stored"], false);
    assert!(q["reason"].as_str().unwrap().contains("not a regular file"), "{q}");
    assert_eq!(s["messages"], 11, "the other messages are all there");
    // The human summary names the item too.
    let out = moverd(["migrate", src.to_str().unwrap(), work.path().join("d2").to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(EXIT_QUARANTINED));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("cur/a-fifo") && text.contains("quarantined"), "{text}");
}

#[allow(unsafe_code)]
fn unsafe_mkfifo(path: &std::ffi::CStr) -> i32 {
    // SAFETY: a valid NUL-terminated path; mkfifo only creates a directory entry.
    unsafe { libc::mkfifo(path.as_ptr(), 0o600) }
}

#[test]
fn file_without_from_line_is_carried_and_reported() {
    let work = tempfile::tempdir().unwrap();
    let src = work.path().join("not-an-mbox");
    write_file(
        &src,
        b"Subject: a bare message, not an mbox\n\nbody\nFrom a@b Mon Apr 18 14:23:23 2022\n",
        1_500_000_000,
    );
    let s = round_trip(&src, work.path(), "x", EXIT_QUARANTINED);
    let q = &s["quarantine"][0];
    assert_eq!((q["offset"].as_u64(), q["stored"].as_bool()), (Some(0), Some(true)), "{s:#}");
    assert!(q["reason"].as_str().unwrap().contains("From_"), "{q}");
    assert!(q["reason"].as_str().unwrap().contains("not-an-mbox"), "names the file: {q}");
}

#[test]
fn garbage_before_first_from_line_is_kept_and_reported() {
    let work = tempfile::tempdir().unwrap();
    let dir = work.path().join("mail");
    let garbage = b"\x00\x01garbage from a broken tool\n\n";
    let mut data = garbage.to_vec();
    data.extend_from_slice(b"From a@b Mon Apr 18 14:23:23 2022\nSubject: ok\n\nbody\n");
    write_file(&dir.join("INBOX"), &data, 1_500_000_000);
    write_file(&dir.join("Sent"), b"From a@b Mon Apr 18 14:23:23 2022\nSubject: fine\n\nx\n", 1_500_000_001);
    let s = round_trip(&dir, work.path(), "m", EXIT_QUARANTINED);
    assert_eq!(s["messages"], 2, "{s:#}");
    assert_eq!(s["quarantined"], 1);
    let q = &s["quarantine"][0];
    assert_eq!(q["path"], "INBOX");
    assert_eq!(q["offset"], 0);
    let reason = q["reason"].as_str().unwrap();
    assert!(reason.contains(&format!("{} bytes", garbage.len())), "{q}");
}

fn local(path: &std::path::Path) -> DynStore {
    open_destination(path.to_str().unwrap()).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn file_changing_while_read_is_retried_then_quarantined() {
    let work = tempfile::tempdir().unwrap();
    let src = work.path().join("eve");
    crate::roundtrip::maildir_fixture(&src);
    let target = src.join("cur/1639054935.U6009.host:2,S");

    // Changed once while read: read again, and the final content is what is stored.
    let calls = Arc::new(AtomicU32::new(0));
    let mut opts = MigrateOptions::new("eve");
    let (t, c) = (target.clone(), calls.clone());
    opts.after_read = Some(Arc::new(move |p: &std::path::Path| {
        if p == t && c.fetch_add(1, Ordering::SeqCst) == 0 {
            let mut d = std::fs::read(p).unwrap();
            d.extend_from_slice(b"appended while being read\n");
            std::fs::write(p, d).unwrap();
        }
    }));
    let dest = work.path().join("dest");
    let s = migrate(&src, local(&dest), opts).await.unwrap();
    assert_eq!(s.quarantined, 0, "{s:?}");
    assert!(calls.load(Ordering::SeqCst) >= 2, "the file was read again");
    let to = work.path().join("restored");
    let r = mover_core::restore::restore(local(&dest), "eve", &to, &Default::default()).await.unwrap();
    assert!(r.errors.is_empty(), "{:?}", r.errors);
    assert_same_tree(&src, &to);

    // Changing on every read: quarantined, not half-stored, the rest migrates.
    let mut opts = MigrateOptions::new("eve2");
    let t = target.clone();
    opts.after_read = Some(Arc::new(move |p: &std::path::Path| {
        if p == t {
            let mut d = std::fs::read(p).unwrap();
            d.push(b'x');
            std::fs::write(p, d).unwrap();
        }
    }));
    let s = migrate(&src, local(&dest), opts).await.unwrap();
    assert_eq!(s.quarantined, 1, "{s:?}");
    let q = &s.quarantine[0];
    assert!(!q.stored && q.reason.contains("changed while being read"), "{q:?}");
    assert!(q.reason.contains("1639054935.U6009.host"), "names the file: {q:?}");
    assert_eq!(s.messages, 10);
    let to = work.path().join("restored2");
    let r = mover_core::restore::restore(local(&dest), "eve2", &to, &Default::default()).await.unwrap();
    assert!(r.errors.is_empty());
    assert!(
        !to.join("cur/1639054935.U6009.host:2,S").exists(),
        "a file that never held still is not restored half-read"
    );
    assert!(to.join("cur/1639054936.M1P2.host,S=1234,W=1260:2,RS").exists());
}

#[test]
fn damaged_destination_is_detected() {
    let work = tempfile::tempdir().unwrap();
    let src = work.path().join("frank");
    crate::roundtrip::maildir_fixture(&src);
    let dest = work.path().join("dest");
    migrate_json(&src, &dest, "frank", EXIT_OK);
    let packs: Vec<_> = walk_files(&dest.join("packs"));
    assert!(!packs.is_empty());
    // Flip the first byte of the first blob (right after the 8-byte pack magic).
    let pack = &packs[0];
    let mut data = std::fs::read(pack).unwrap();
    data[8] ^= 0x55;
    std::fs::write(pack, &data).unwrap();
    let out = moverd(["verify", dest.to_str().unwrap(), "--mailbox", "frank"]);
    assert_eq!(out.status.code(), Some(EXIT_FAILURE));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("FAILED") && text.contains("blob"), "{text}");
    let to = work.path().join("restored");
    let out = moverd(["restore", dest.to_str().unwrap(), "--mailbox", "frank", "--to", to.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(EXIT_FAILURE), "restore reports the damage");
    // A missing pack is a failure too.
    std::fs::remove_file(pack).unwrap();
    let out = moverd(["verify", dest.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(EXIT_FAILURE));
    assert!(String::from_utf8_lossy(&out.stdout).contains("not found"));
}

#[test]
fn pack_readable_without_its_index_object() {
    let work = tempfile::tempdir().unwrap();
    let src = work.path().join("grace");
    crate::roundtrip::maildir_fixture(&src);
    let dest = work.path().join("dest");
    migrate_json(&src, &dest, "grace", EXIT_OK);
    let indexes = walk_files(&dest.join("index"));
    assert!(!indexes.is_empty());
    let restore_exact = |n: u32| {
        let to = work.path().join(format!("restored{n}"));
        moverd_ok(["restore", dest.to_str().unwrap(), "--mailbox", "grace", "--to", to.to_str().unwrap()], EXIT_OK);
        assert_same_tree(&src, &to);
    };
    // A damaged index object: the pack's own table locates every blob and hashing gives the ids, so restore is
    // exact; verify reports the damage (the destination needs repair) and fails.
    let mut data = std::fs::read(&indexes[0]).unwrap();
    let n = data.len();
    data[n - 5] ^= 0x55;
    std::fs::write(&indexes[0], &data).unwrap();
    let out = moverd(["verify", dest.to_str().unwrap(), "--mailbox", "grace"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(EXIT_FAILURE), "{text}");
    assert!(text.contains("DAMAGED") && text.contains("index of pack") && text.contains("rebuilt from"), "{text}");
    restore_exact(1);
    // Without any index object, the same.
    for i in &indexes {
        std::fs::remove_file(i).unwrap();
    }
    let out = moverd(["verify", dest.to_str().unwrap(), "--mailbox", "grace"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(EXIT_FAILURE), "{text}");
    assert!(text.contains("not found") && text.contains("rebuilt from"), "{text}");
    restore_exact(2);
}

fn walk_files(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() { out.extend(walk_files(&p)) } else { out.push(p) }
    }
    out.sort();
    out
}

#[test]
fn restore_never_overwrites() {
    let work = tempfile::tempdir().unwrap();
    let src = work.path().join("gina");
    crate::roundtrip::maildir_fixture(&src);
    let dest = work.path().join("dest");
    migrate_json(&src, &dest, "gina", EXIT_OK);
    let to = work.path().join("restored");
    moverd_ok(["restore", dest.to_str().unwrap(), "--mailbox", "gina", "--to", to.to_str().unwrap()], EXIT_OK);
    let victim = to.join("dovecot-uidlist");
    std::fs::write(&victim, b"local edits").unwrap();
    let out = moverd(["restore", dest.to_str().unwrap(), "--mailbox", "gina", "--to", to.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(EXIT_FAILURE));
    assert_eq!(std::fs::read(&victim).unwrap(), b"local edits");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restore_stays_inside_its_target() {
    // A hand-made (hostile) manifest whose paths try to leave the target.
    let work = tempfile::tempdir().unwrap();
    let dest = work.path().join("dest");
    let store = local(&dest);
    mover_core::pipeline::ensure_format(&store).await.unwrap();
    for (n, evil) in [&b"../escaped"[..], b"/tmp/absolute", b"a/../../escaped", b"link/through"].iter().enumerate() {
        let mut w = ManifestWriter::new().unwrap();
        w.write(&Record::Symlink {
            path: ByteStr(b"link".to_vec()),
            target: ByteStr(work.path().as_os_str().as_encoded_bytes().to_vec()),
        })
        .unwrap();
        w.write(&Record::File {
            path: ByteStr(evil.to_vec()),
            kind: FileKind::Opaque,
            size: 0,
            mode: 0o644,
            mtime: 0,
            ctime: None,
            maildir: None,
        })
        .unwrap();
        w.write(&Record::End { blake3: None }).unwrap();
        let header = ManifestHeader {
            format: mover_core::manifest::MANIFEST_FORMAT.into(),
            version: mover_core::manifest::MANIFEST_VERSION,
            mailbox: format!("evil{n}"),
            pass: 1,
            source: "x".into(),
            source_is_dir: true,
            started_ms: 0,
            finished_ms: 0,
            tool: "test".into(),
            records: 0,
            body_blake3: mover_core::id::ContentId::of(b""),
            records_blake3: None,
            stats: Default::default(),
        };
        let obj: Bytes = w.finish(header).unwrap();
        store.put(&mover_core::layout::manifest_key(&format!("evil{n}"), 1), obj, PutMode::Create).await.unwrap();
        let to = work.path().join(format!("target{n}"));
        let r =
            mover_core::restore::restore(store.clone(), &format!("evil{n}"), &to, &Default::default()).await.unwrap();
        assert_eq!(r.errors.len(), 1, "{evil:?}: {:?}", r.errors);
        assert!(r.errors[0].contains("refusing"), "{:?}", r.errors);
    }
    assert!(!work.path().join("escaped").exists());
    assert!(!work.path().join("through").exists());
}

/// A reader of moverd's stdout that has gone (`moverd ls DEST | head -1` on a long list) ends moverd quietly with
/// the status of a process killed by SIGPIPE, not with a panic and a backtrace on the operator's terminal.
#[test]
#[allow(unsafe_code)]
fn a_closed_stdout_ends_moverd_quietly() {
    use std::os::fd::FromRawFd;
    let work = tempfile::tempdir().unwrap();
    let src = work.path().join("src");
    write_file(&src.join("cur/1.host:2,S"), b"Subject: hi\n\nhello\n", 1_600_000_000);
    let dest = work.path().join("dest");
    migrate_json(&src, &dest, "m", EXIT_OK);
    // A pipe whose read end is already closed: every write to it fails with EPIPE.
    let closed_pipe = || {
        let mut fds = [0; 2];
        // SAFETY: pipe fills two new descriptors; the read end is closed at once and the write end is owned by
        // the returned Stdio.
        unsafe {
            assert_eq!(libc::pipe(fds.as_mut_ptr()), 0);
            libc::close(fds[0]);
            std::process::Stdio::from_raw_fd(fds[1])
        }
    };
    let (src, dest) = (src.to_str().unwrap(), dest.to_str().unwrap());
    for args in [vec!["ls", dest], vec!["migrate", src, dest, "--mailbox", "m", "--json"]] {
        let out = moverd_cmd().args(&args).env("MOVER_LOG", "warn").stdout(closed_pipe()).output().unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(141), "moverd {args:?}\n{stderr}");
        assert!(!stderr.contains("panicked"), "moverd {args:?} panicked:\n{stderr}");
    }
}
