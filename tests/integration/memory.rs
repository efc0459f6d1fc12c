//! Memory does not grow with the size of the mailbox: the same migration on a source three times larger peaks at
//! (nearly) the same resident set size. Measured on the moverd process itself with wait4's rusage.

use std::path::Path;

use crate::common::*;

fn write_mbox(path: &Path, mib: usize) {
    use std::io::Write;
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    let mut f = std::io::BufWriter::new(std::fs::File::create(path).unwrap());
    let mut written = 0;
    let mut i = 0u64;
    while written < mib << 20 {
        let body = text_noise(i, 48_000 + (i as usize * 7919) % 32_000);
        let m = message(
            &[("Subject", &format!("message {i}")), ("Message-ID", &format!("<{i}@example.org>"))],
            &body,
            "\n",
        );
        writeln!(f, "From sender{i}@example.org Mon Apr 18 14:23:23 2022").unwrap();
        f.write_all(&m).unwrap();
        f.write_all(b"\n\n").unwrap();
        written += m.len() + 50;
        i += 1;
    }
    f.flush().unwrap();
}

/// Peak RSS in MiB of `moverd migrate SRC DEST --no-mmap`, and its exit status.
///
/// Read from the child's own `VmHWM` while it runs (the last value before it exits), not from `wait4`'s
/// `ru_maxrss`: a child spawned with `vfork` (as `Command` does) carries the high-water mark of the parent's memory
/// into its own through `exec`, and the parent here is the test process, which the other tests running beside this
/// one can take to hundreds of MiB.
fn peak_rss_mib(src: &Path, dest: &Path) -> (f64, i32) {
    let mut child = moverd_cmd()
        // Small packs, so that every buffer of the pipeline fills up on both sizes.
        .args([
            "migrate",
            src.to_str().unwrap(),
            dest.to_str().unwrap(),
            "--no-mmap",
            "--json",
            "--mailbox",
            "m",
            "--pack-size",
            "4M",
        ])
        .stdout(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let status_file = format!("/proc/{}/status", child.id());
    let mut peak_kib = 0u64;
    let status = loop {
        if let Ok(text) = std::fs::read_to_string(&status_file)
            && let Some(line) = text.lines().find(|l| l.starts_with("VmHWM:"))
        {
            let kib: u64 = line.split_whitespace().nth(1).and_then(|v| v.parse().ok()).unwrap_or(0);
            peak_kib = peak_kib.max(kib);
        }
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        std::thread::sleep(std::time::Duration::from_millis(2));
    };
    assert!(peak_kib > 0, "no VmHWM read from {status_file}");
    (peak_kib as f64 / 1024.0, status.code().unwrap_or(-1))
}

#[test]
fn memory_is_flat_in_mailbox_size() {
    let work = tempfile::tempdir().unwrap();
    let (small, large) = (work.path().join("s/small.mbox"), work.path().join("l/large.mbox"));
    // The smaller source is large enough for every queue of the pipeline to fill (a few batches of 8 MiB, packs
    // uploading): below that, a run ends before it reaches its steady state and peaks lower.
    write_mbox(&small, 100);
    write_mbox(&large, 300);
    let (rss_small, code_s) = peak_rss_mib(&small, &work.path().join("ds"));
    let (rss_large, code_l) = peak_rss_mib(&large, &work.path().join("dl"));
    assert_eq!((code_s, code_l), (0, 0));
    eprintln!("peak RSS: {rss_small:.0} MiB for 100 MiB, {rss_large:.0} MiB for 300 MiB");
    // The pipeline's buffers (batches, one open pack, two uploading) are a few tens of MiB at this pack size;
    // allocator noise between runs is about ±15 MiB. A pipeline that held the source, or the manifest, or grew a
    // queue would need well over 200 MiB more for the larger mailbox.
    assert!(rss_large < 200.0, "peak RSS {rss_large:.0} MiB for a 300 MiB mbox: the source is being held in memory");
    assert!(
        rss_large < rss_small + 48.0,
        "peak RSS grew from {rss_small:.0} MiB to {rss_large:.0} MiB for a 3x larger mailbox"
    );
    // And the large one restores exactly.
    let to = work.path().join("restored");
    restore(&work.path().join("dl"), "m", None, &to);
    assert!(std::fs::read(&large).unwrap() == std::fs::read(to.join("large.mbox")).unwrap());
}

/// Descriptors do not grow with the number of files in flight: a Maildir of thousands of small messages, and a
/// Maildir++ tree of hundreds of one-message folders, migrate (a first pass and a delta pass) under a limit of 64
/// open files (soft and hard, so moverd cannot raise it; servers commonly run with a soft limit of 1,024) and
/// restore byte for byte. Each small file used to stay open until the collector got to it, so a Maildir of 3,000
/// small messages failed with "Too many open files" at the usual 1,024.
#[test]
#[allow(unsafe_code)]
fn open_files_do_not_grow_with_the_files_in_flight() {
    use std::os::unix::process::CommandExt;
    let work = tempfile::tempdir().unwrap();
    let src = work.path().join("src");
    for i in 0..3000u64 {
        let m =
            message(&[("Subject", &format!("note {i}")), ("Message-ID", &format!("<{i}@example.org>"))], b"ok\n", "\n");
        write_file(&src.join(format!("cur/{}.M{i}P1.host:2,S", 1_600_000_000 + i)), &m, 1_600_000_000 + i);
    }
    for d in ["new", "tmp"] {
        std::fs::create_dir_all(src.join(d)).unwrap();
    }
    for f in 0..300u64 {
        let m = message(&[("Subject", &format!("filed {f}"))], b"in a folder of its own\n", "\n");
        write_file(&src.join(format!(".Folder{f:03}/cur/{}.M{f}P2.host:2,S", 1_600_000_000 + f)), &m, 1_600_000_000);
        for d in ["new", "tmp"] {
            std::fs::create_dir_all(src.join(format!(".Folder{f:03}/{d}"))).unwrap();
        }
    }
    let dest = work.path().join("dest");
    let migrate = || {
        let mut cmd = moverd_cmd();
        cmd.args(["migrate", src.to_str().unwrap(), dest.to_str().unwrap(), "--mailbox", "m", "--json"]);
        // SAFETY: setrlimit is async-signal-safe; it runs in the child between fork and exec.
        unsafe {
            cmd.pre_exec(|| {
                let limit = libc::rlimit { rlim_cur: 64, rlim_max: 64 };
                if libc::setrlimit(libc::RLIMIT_NOFILE, &limit) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let out = cmd.output().unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(EXIT_OK), "moverd migrate under 64 open files:\n{stderr}");
        serde_json::from_slice::<serde_json::Value>(&out.stdout).unwrap()
    };
    let first = migrate();
    assert_eq!((first["messages"].as_u64(), first["quarantined"].as_u64()), (Some(3300), Some(0)));
    // A delta pass (its walk runs on a thread of its own, ahead of the reader): a new message in every tenth
    // folder, the rest carried over.
    for f in (0..300u64).step_by(10) {
        let m = message(&[("Subject", &format!("second {f}"))], b"arrived later\n", "\n");
        write_file(&src.join(format!(".Folder{f:03}/new/{}.M{f}P3.host", 1_700_000_000 + f)), &m, 1_700_000_000);
    }
    let second = migrate();
    assert_eq!((second["pass"].as_u64(), second["messages"].as_u64()), (Some(2), Some(3330)));
    let to = work.path().join("restored");
    restore(&dest, "m", None, &to);
    assert_same_tree(&src, &to);
}
