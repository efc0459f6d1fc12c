//! Reference tools on the same bytes in the same run: restic (a deduplicating, compressing backup tool doing a
//! similar job) and `tar | zstd -3` (the compression everyone knows). Each is skipped, with the reason reported,
//! when its program is not on PATH.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Instant;

use mover_core::bench::mb_s;
use serde::Serialize;

/// One reference measurement.
#[derive(Debug, Clone, Serialize)]
pub struct Reference {
    /// `restic` or `tar|zstd`.
    pub tool: String,
    /// The exact command (without secrets).
    pub command: String,
    /// Seconds of the first run.
    pub seconds: f64,
    /// Source MB/s.
    pub mb_s: f64,
    /// Bytes the tool wrote (repository or archive).
    pub stored_bytes: u64,
    /// `stored_bytes / source_bytes`.
    pub stored_ratio: f64,
    /// Seconds of a second run with nothing changed (restic only).
    pub rerun_seconds: Option<f64>,
    /// Tool version.
    pub version: String,
}

/// Whether `program` is on PATH.
pub fn on_path(program: &str) -> bool {
    std::env::var_os("PATH").map(|p| std::env::split_paths(&p).any(|d| d.join(program).is_file())).unwrap_or(false)
}

fn version(program: &str, arg: &str) -> String {
    Command::new(program)
        .arg(arg)
        .output()
        .ok()
        .map(|o| String::from_utf8_lossy(&o.stdout).lines().next().unwrap_or("").trim().to_string())
        .unwrap_or_default()
}

/// Total bytes of regular files under `dir`.
pub fn tree_bytes(dir: &Path) -> u64 {
    let Ok(meta) = std::fs::symlink_metadata(dir) else { return 0 };
    if meta.is_file() {
        return meta.len();
    }
    if !meta.is_dir() {
        return 0;
    }
    std::fs::read_dir(dir).map(|rd| rd.flatten().map(|e| tree_bytes(&e.path())).sum()).unwrap_or(0)
}

fn run(cmd: &mut Command, what: &str) -> anyhow::Result<f64> {
    let t = Instant::now();
    let out = cmd.stdout(Stdio::null()).stderr(Stdio::piped()).output()?;
    let secs = t.elapsed().as_secs_f64();
    anyhow::ensure!(out.status.success(), "{what} failed: {}", String::from_utf8_lossy(&out.stderr).trim());
    Ok(secs)
}

/// `restic backup` of `roots` into a fresh repository (format 2, compression `auto` = zstd) under `scratch`, with
/// GOMAXPROCS set to `threads`; then a second backup with nothing changed.
pub fn restic(roots: &[PathBuf], source_bytes: u64, threads: usize, scratch: &Path) -> anyhow::Result<Reference> {
    let repo = scratch.join("restic-repo");
    let restic = |args: &[&str]| {
        let mut c = Command::new("restic");
        c.arg("--repo")
            .arg(&repo)
            .arg("--no-cache")
            .arg("--quiet")
            .args(args)
            .env("RESTIC_PASSWORD", "mover-bench")
            .env("GOMAXPROCS", threads.to_string());
        c
    };
    run(restic(&["init", "--repository-version", "2"]).stdin(Stdio::null()), "restic init")?;
    let backup = || {
        let mut c = restic(&["backup", "--host", "mover-bench"]);
        c.args(roots);
        c
    };
    let seconds = run(&mut backup(), "restic backup")?;
    let stored_bytes = tree_bytes(&repo);
    let rerun = run(&mut backup(), "restic backup (second run)")?;
    Ok(Reference {
        tool: "restic".into(),
        command: format!("GOMAXPROCS={threads} restic --no-cache backup <roots> (repository version 2)"),
        seconds,
        mb_s: mb_s(source_bytes, seconds),
        stored_bytes,
        stored_ratio: stored_bytes as f64 / source_bytes.max(1) as f64,
        rerun_seconds: Some(rerun),
        version: version("restic", "version"),
    })
}

/// `tar -cf - <roots> | zstd -3 -T<threads>` into a file under `scratch`.
pub fn tar_zstd(roots: &[PathBuf], source_bytes: u64, threads: usize, scratch: &Path) -> anyhow::Result<Reference> {
    let out = scratch.join("corpus.tar.zst");
    let mut tar_args = String::new();
    for r in roots {
        let parent = r.parent().unwrap_or(Path::new("/"));
        let name = r.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_else(|| ".".into());
        tar_args.push_str(&format!(" -C '{}' '{}'", parent.display(), name));
    }
    let script = format!("set -o pipefail; tar -cf -{tar_args} | zstd -3 -T{threads} -q -f -o '{}'", out.display());
    let seconds = run(Command::new("bash").arg("-c").arg(&script), "tar | zstd")?;
    let stored_bytes = tree_bytes(&out);
    Ok(Reference {
        tool: "tar|zstd".into(),
        command: format!("tar -cf - <roots> | zstd -3 -T{threads}"),
        seconds,
        mb_s: mb_s(source_bytes, seconds),
        stored_bytes,
        stored_ratio: stored_bytes as f64 / source_bytes.max(1) as f64,
        rerun_seconds: None,
        version: version("zstd", "--version"),
    })
}
