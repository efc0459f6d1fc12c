//! Helpers shared by the integration tests: running the moverd binary, building mail-store fixtures, and comparing
//! trees byte for byte (content, relative paths, modification times, permissions, empty directories, links).

use std::collections::BTreeMap;
use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, SystemTime};

/// Exit codes documented in `moverd --help`.
pub const EXIT_OK: i32 = 0;
pub const EXIT_FAILURE: i32 = 1;
pub const EXIT_QUARANTINED: i32 = 3;

/// The moverd binary under test.
pub fn moverd_bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_moverd-test"))
}

/// The tests' `XDG_CACHE_HOME` (moverd keeps its dedupe index cache there): under cargo's scratch directory for
/// integration tests, not the user's.
pub fn cache_home() -> PathBuf {
    Path::new(env!("CARGO_TARGET_TMPDIR")).join("xdg-cache")
}

/// A command running the moverd binary under test, with the tests' cache directory.
pub fn moverd_cmd() -> Command {
    let mut cmd = Command::new(moverd_bin());
    cmd.env("XDG_CACHE_HOME", cache_home());
    cmd
}

/// Run moverd with `args`; returns the output (stdout, stderr, status).
pub fn moverd<I, S>(args: I) -> Output
where
    I: IntoIterator<Item = S>,
    S: AsRef<OsStr>,
{
    moverd_cmd().args(args).env("MOVER_LOG", "warn").output().expect("moverd runs")
}

/// Start every command at once (stdout discarded) and require each to succeed with nothing on stderr: no error,
/// no warning.
#[track_caller]
pub fn all_at_once_quietly(commands: impl IntoIterator<Item = Command>) {
    let children: Vec<_> = commands
        .into_iter()
        .map(|mut cmd| {
            cmd.stdout(std::process::Stdio::null()).stderr(std::process::Stdio::piped()).spawn().expect("moverd runs")
        })
        .collect();
    for child in children {
        let out = child.wait_with_output().unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            out.status.success() && stderr.is_empty(),
            "{}: {}",
            out.status,
            &stderr[stderr.len().saturating_sub(4000)..]
        );
    }
}

/// Run moverd and require `code`; returns stdout as text.
#[track_caller]
pub fn moverd_ok<I, S>(args: I, code: i32) -> String
where
    I: IntoIterator<Item = S>,
    S: AsRef<OsStr>,
{
    let args: Vec<_> = args.into_iter().map(|a| a.as_ref().to_os_string()).collect();
    let out = moverd(&args);
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(code), "moverd {args:?}\nstdout:\n{stdout}\nstderr:\n{stderr}");
    stdout
}

/// `moverd migrate SOURCE DEST --mailbox M --json`, requiring exit `code`; returns the JSON summary.
#[track_caller]
pub fn migrate_json(source: &Path, dest: &Path, mailbox: &str, code: i32) -> serde_json::Value {
    let out = moverd_ok(
        [
            OsStr::new("migrate"),
            source.as_os_str(),
            dest.as_os_str(),
            "--mailbox".as_ref(),
            mailbox.as_ref(),
            "--json".as_ref(),
        ],
        code,
    );
    serde_json::from_str(&out).unwrap_or_else(|e| panic!("migrate --json printed no JSON ({e}):\n{out}"))
}

/// migrate → verify → restore → compare, through the binary. Returns the migrate summary.
#[track_caller]
pub fn round_trip(source: &Path, work: &Path, mailbox: &str, migrate_code: i32) -> serde_json::Value {
    let dest = work.join("dest");
    let summary = migrate_json(source, &dest, mailbox, migrate_code);
    moverd_ok([OsStr::new("verify"), dest.as_os_str(), "--mailbox".as_ref(), mailbox.as_ref()], EXIT_OK);
    let restored = work.join("restored");
    restore(&dest, mailbox, None, &restored);
    if source.is_dir() {
        assert_same_tree(source, &restored);
    } else {
        assert_same_tree_entry(source, &restored.join(source.file_name().unwrap()));
    }
    summary
}

/// `moverd restore DEST --mailbox MAILBOX [--pass PASS] --to TO`, which must succeed.
#[track_caller]
pub fn restore(dest: &Path, mailbox: &str, pass: Option<u32>, to: &Path) {
    let pass = pass.map(|p| p.to_string());
    let mut args: Vec<&OsStr> = vec!["restore".as_ref(), dest.as_os_str(), "--mailbox".as_ref(), mailbox.as_ref()];
    if let Some(p) = &pass {
        args.extend([OsStr::new("--pass"), p.as_ref()]);
    }
    args.extend([OsStr::new("--to"), to.as_os_str()]);
    moverd_ok(args, EXIT_OK);
}

/// What a tree entry is, for comparison.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Node {
    /// A directory with its permission bits.
    Dir { mode: u32 },
    /// A regular file: bytes, mtime (ns), permission bits.
    File { data: Vec<u8>, mtime_ns: i64, mode: u32 },
    /// A symbolic link and its target.
    Link { target: Vec<u8> },
}

/// Every entry below `root`, by relative path (bytes).
pub fn snapshot(root: &Path) -> BTreeMap<Vec<u8>, Node> {
    let mut out = BTreeMap::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for e in std::fs::read_dir(&dir).unwrap() {
            let e = e.unwrap();
            let path = e.path();
            let rel = path.strip_prefix(root).unwrap().as_os_str().as_bytes().to_vec();
            let meta = std::fs::symlink_metadata(&path).unwrap();
            let node = if meta.file_type().is_symlink() {
                Node::Link { target: std::fs::read_link(&path).unwrap().as_os_str().as_bytes().to_vec() }
            } else if meta.is_dir() {
                stack.push(path.clone());
                Node::Dir { mode: meta.mode() & 0o7777 }
            } else if meta.is_file() {
                Node::File {
                    data: std::fs::read(&path).unwrap(),
                    mtime_ns: meta.mtime() * 1_000_000_000 + meta.mtime_nsec(),
                    mode: meta.mode() & 0o7777,
                }
            } else {
                continue; // sockets, FIFOs: not restorable, checked by the tests that make them
            };
            out.insert(rel, node);
        }
    }
    out
}

/// The two trees hold the same entries: same relative paths, bytes, modification times, modes, links; and the two
/// roots have the same permissions.
#[track_caller]
pub fn assert_same_tree(a: &Path, b: &Path) {
    let mode = |p: &Path| std::fs::metadata(p).unwrap().mode() & 0o7777;
    assert_eq!(mode(a), mode(b), "permissions of the root {} and {}", a.display(), b.display());
    let (sa, sb) = (snapshot(a), snapshot(b));
    let names =
        |s: &BTreeMap<Vec<u8>, Node>| s.keys().map(|k| String::from_utf8_lossy(k).into_owned()).collect::<Vec<_>>();
    assert_eq!(names(&sa), names(&sb), "same entries in {} and {}", a.display(), b.display());
    for (k, na) in &sa {
        let nb = &sb[k];
        if na != nb {
            let name = String::from_utf8_lossy(k);
            match (na, nb) {
                (Node::File { data: da, mtime_ns: ma, mode: xa }, Node::File { data: db, mtime_ns: mb, mode: xb }) => {
                    let first_diff = da.iter().zip(db.iter()).position(|(x, y)| x != y);
                    panic!(
                        "{name}: sizes {} vs {}, first differing byte {first_diff:?}, mtimes {ma} vs {mb}, modes {xa:o} vs {xb:o}",
                        da.len(),
                        db.len()
                    );
                }
                _ => panic!("{name}: {na:?} vs {nb:?}"),
            }
        }
    }
    assert!(!sa.is_empty() || a.read_dir().unwrap().next().is_none());
}

/// A single file is the same (bytes, mtime, mode).
#[track_caller]
pub fn assert_same_tree_entry(a: &Path, b: &Path) {
    let (ma, mb) = (std::fs::metadata(a).unwrap(), std::fs::metadata(b).unwrap());
    assert!(std::fs::read(a).unwrap() == std::fs::read(b).unwrap(), "{} and {} differ", a.display(), b.display());
    assert_eq!((ma.mtime(), ma.mtime_nsec()), (mb.mtime(), mb.mtime_nsec()), "mtime of {}", b.display());
    assert_eq!(ma.mode() & 0o7777, mb.mode() & 0o7777, "mode of {}", b.display());
}

/// Wait until files written so far are no longer "racily clean": a delta pass reads again every file changed
/// (by its ctime) within a second before the previous pass started, whatever its stamps say, so a test that
/// expects a file to be carried over unread must let its changes age first.
pub fn settle() {
    std::thread::sleep(std::time::Duration::from_millis(1100));
}

/// Write a file with a given modification time (seconds since the epoch) so mtimes are checked non-trivially.
pub fn write_file(path: &Path, data: &[u8], mtime_secs: u64) {
    if let Some(p) = path.parent() {
        std::fs::create_dir_all(p).unwrap();
    }
    std::fs::write(path, data).unwrap();
    let f = std::fs::File::options().write(true).open(path).unwrap();
    f.set_modified(SystemTime::UNIX_EPOCH + Duration::new(mtime_secs, 123_456_789)).unwrap();
}

/// Set a file's permission bits.
pub fn chmod(path: &Path, mode: u32) {
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
}

/// A path from raw bytes (non-UTF-8 names).
pub fn bytes_path(base: &Path, rel: &[u8]) -> PathBuf {
    base.join(OsStr::from_bytes(rel))
}

/// Deterministic pseudo-random bytes (xorshift): incompressible content for dedupe tests.
pub fn noise(seed: u64, len: usize) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 24) as u8
        })
        .collect()
}

/// Base64-ish printable text of `len` bytes from `seed` (mail bodies that look like attachments).
pub fn text_noise(seed: u64, len: usize) -> Vec<u8> {
    const ALPHA: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out: Vec<u8> = noise(seed, len).into_iter().map(|b| ALPHA[(b & 63) as usize]).collect();
    for i in (76..out.len()).step_by(77) {
        out[i] = b'\n';
    }
    out
}

/// One RFC 5322 message with the given header fields and body, with `eol` line endings.
pub fn message(headers: &[(&str, &str)], body: &[u8], eol: &str) -> Vec<u8> {
    let mut m = Vec::new();
    for (k, v) in headers {
        m.extend_from_slice(format!("{k}: {v}{eol}").as_bytes());
    }
    m.extend_from_slice(eol.as_bytes());
    m.extend_from_slice(body);
    m
}

/// The corpora shared with the project, when present (`../shared/corpora` from the workspace root).
pub fn shared_corpora() -> Option<PathBuf> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).parent()?.parent()?.join("shared/corpora");
    root.is_dir().then_some(root)
}
