//! Memory does not grow with the size of the mailbox: the same migration on a source three times larger peaks at
//! (nearly) the same resident set size. Measured on the moverd process itself with wait4's rusage.

use std::path::Path;
use std::process::Command;

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
#[allow(unsafe_code)]
fn peak_rss_mib(src: &Path, dest: &Path) -> (f64, i32) {
    let child = Command::new(moverd_bin())
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
    let mut status = 0;
    // SAFETY: zeroed rusage is a valid value; wait4 on our own child's pid.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    let pid = unsafe { libc::wait4(child.id() as i32, &mut status, 0, &mut usage) };
    assert_eq!(pid, child.id() as i32);
    std::mem::forget(child);
    (usage.ru_maxrss as f64 / 1024.0, libc::WEXITSTATUS(status))
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
    moverd_ok(
        ["restore", work.path().join("dl").to_str().unwrap(), "--mailbox", "m", "--to", to.to_str().unwrap()],
        EXIT_OK,
    );
    assert!(std::fs::read(&large).unwrap() == std::fs::read(to.join("large.mbox")).unwrap());
}
