//! Reading source files without ever storing half of a file that changed underneath.
//!
//! A file is opened and `fstat`ed; its content is read (small files into memory, large quiet files through a
//! memory map, the rest streamed in chunks); then the file is `fstat`ed again ([`unchanged`]), and if its size,
//! modification time or change time moved, the attempt is thrown away and the file read again (or quarantined after
//! several tries). The change time catches in-place rewrites that restore the modification time. A file read into
//! memory is checked right after the read (the bytes in memory are that version, whatever happens to the file
//! later) and closed; a mapped or streamed one is checked after everything derived from it has been processed.
//!
//! Memory maps are used only for files that nothing is writing to: a file truncated while mapped would kill the
//! process with SIGBUS. A file counts as quiet when it has not been modified for [`ReadPolicy::quiet_secs`]; mail
//! servers append to mbox files and rewrite them on expunge, so a busy mbox is streamed instead.

use std::fs::File;
use std::io::Read;
use std::os::unix::fs::MetadataExt;
use std::path::Path;

use bytes::Bytes;

use crate::error::{Error, Result};

/// What identifies one version of a file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stat {
    /// Size in bytes.
    pub size: u64,
    /// Modification time, ns since the epoch.
    pub mtime_ns: i64,
    /// Status change time, ns since the epoch.
    pub ctime_ns: i64,
    /// Permission bits.
    pub mode: u32,
    /// Inode number.
    pub ino: u64,
    /// Device.
    pub dev: u64,
}

impl Stat {
    /// From file metadata.
    pub fn of(m: &std::fs::Metadata) -> Self {
        Stat {
            size: m.len(),
            mtime_ns: m.mtime() * 1_000_000_000 + m.mtime_nsec(),
            ctime_ns: m.ctime() * 1_000_000_000 + m.ctime_nsec(),
            mode: m.mode() & 0o7777,
            ino: m.ino(),
            dev: m.dev(),
        }
    }

    /// Whether `other` is the same version of the same file.
    pub fn same_version(&self, other: &Stat) -> bool {
        self.size == other.size
            && self.mtime_ns == other.mtime_ns
            && self.ctime_ns == other.ctime_ns
            && self.ino == other.ino
            && self.dev == other.dev
    }
}

/// How source files are read.
#[derive(Debug, Clone)]
pub struct ReadPolicy {
    /// Files up to this size are read into memory in one go.
    pub whole_max: u64,
    /// Map files larger than `whole_max` into memory when they are quiet. `false` streams them.
    pub mmap: bool,
    /// A file is quiet when its modification time is at least this many seconds in the past.
    pub quiet_secs: u64,
    /// Chunk size for streamed reads.
    pub chunk: usize,
}

impl Default for ReadPolicy {
    fn default() -> Self {
        ReadPolicy { whole_max: 8 << 20, mmap: true, quiet_secs: 30, chunk: 4 << 20 }
    }
}

/// An open source file and the version that was opened.
#[derive(Debug)]
pub struct OpenFile {
    /// The open file.
    pub file: File,
    /// Its version at open.
    pub stat: Stat,
}

/// The content of a file, as far as it has been read.
#[derive(Debug)]
pub enum Content {
    /// All of it, in memory. `mapped` data is a live view of the file and must be copied before it is hashed.
    Whole {
        /// The bytes.
        data: Bytes,
        /// Whether `data` is a memory map.
        mapped: bool,
    },
    /// Too large to hold: read it in chunks from the file.
    Stream,
}

/// Open `path` and record its version.
pub fn open(path: &Path) -> Result<OpenFile> {
    use std::os::unix::fs::OpenOptionsExt;
    // Non-blocking: opening a FIFO put where a file was would wait for a writer (reads of regular files ignore it).
    let file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK)
        .open(path)
        .map_err(|e| Error::io(format!("opening {}", path.display()), e))?;
    let meta = file.metadata().map_err(|e| Error::io(format!("stat {}", path.display()), e))?;
    if !meta.is_file() {
        return Err(Error::bad_input(format!("{} is not a regular file", path.display())));
    }
    Ok(OpenFile { stat: Stat::of(&meta), file })
}

/// Open a directory to open files relative to it ([`open_in`]).
pub(crate) fn open_dir(path: &Path) -> std::io::Result<File> {
    use std::os::unix::fs::OpenOptionsExt;
    std::fs::OpenOptions::new().read(true).custom_flags(libc::O_DIRECTORY).open(path)
}

/// Open `name` in the open directory `dir`, taking `walked` (the walk's `lstat` of it) as the version opened: the
/// check after reading ([`unchanged`]) compares the file with it, so a file changed or replaced by another file
/// between the walk and this open counts as changed and is read again (through [`open`], which checks the type).
/// Something else put in its place is not read as a file: a symbolic link is not followed (the open fails), and the
/// open is non-blocking, so a FIFO cannot hang the reader (reads of regular files ignore the flag); either way the
/// file is quarantined for this pass with the error, and the next pass sees what is there. (A FIFO that has a writer
/// would be read, up to the walked size, before the check after reading notices.) A file under a lease another
/// process holds (Samba oplocks) fails to open instead of waiting, and is likewise retried by the next pass.
#[allow(unsafe_code)]
pub(crate) fn open_in(dir: &File, name: &std::ffi::OsStr, path: &Path, walked: Stat) -> Result<OpenFile> {
    use std::os::fd::{AsRawFd, FromRawFd};
    use std::os::unix::ffi::OsStrExt;
    let err = |e| Error::io(format!("opening {}", path.display()), e);
    let name = std::ffi::CString::new(name.as_bytes()).map_err(|_| err(std::io::ErrorKind::InvalidInput.into()))?;
    let flags = libc::O_RDONLY | libc::O_CLOEXEC | libc::O_NOFOLLOW | libc::O_NONBLOCK;
    // SAFETY: `dir` is an open directory and `name` a NUL-terminated string; `openat` returns a new descriptor
    // (owned by the `File` from here on) or -1.
    let fd = unsafe { libc::openat(dir.as_raw_fd(), name.as_ptr(), flags) };
    if fd < 0 {
        return Err(err(std::io::Error::last_os_error()));
    }
    let file = unsafe { File::from_raw_fd(fd) };
    Ok(OpenFile { file, stat: walked })
}

/// Read the content of an open file according to `policy`.
pub fn read_content(f: &mut OpenFile, path: &Path, policy: &ReadPolicy) -> Result<Content> {
    let size = f.stat.size;
    if size <= policy.whole_max {
        // At most `size` bytes, in one read where the kernel allows (a file that changes meanwhile is caught by the
        // version check after processing).
        let mut buf = crate::buffers::take(size as usize);
        buf.resize(size as usize, 0);
        let mut filled = 0;
        while filled < buf.len() {
            match (&f.file).read(&mut buf[filled..]) {
                Ok(0) => break,
                Ok(n) => filled += n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => return Err(Error::io(format!("reading {}", path.display()), e)),
            }
        }
        buf.truncate(filled);
        return Ok(Content::Whole { data: crate::buffers::bytes(buf), mapped: false });
    }
    let now_ns = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as i64)
        .unwrap_or(i64::MAX);
    // Quiet by the file's state now, not as the walk saw it (the version opened may be the walk's, some time ago):
    // a file written to since is streamed, never mapped (a truncation while mapped would be a SIGBUS).
    let quiet = || match f.file.metadata() {
        Ok(now) => {
            let now = Stat::of(&now);
            now.same_version(&f.stat)
                && now_ns.saturating_sub(now.mtime_ns) >= (policy.quiet_secs as i64) * 1_000_000_000
        }
        Err(_) => false,
    };
    if policy.mmap
        && quiet()
        && let Some(data) = map(&f.file)
    {
        return Ok(Content::Whole { data, mapped: true });
    }
    Ok(Content::Stream)
}

/// Map a file read-only. `None` when the map fails (the caller streams instead).
#[allow(unsafe_code)]
fn map(file: &File) -> Option<Bytes> {
    // SAFETY: memmap2 requires that the file is not modified while mapped. We map only files that have been quiet
    // for a while (see the module docs), copy every piece out of the map before hashing or compressing it, and
    // check the file's version after processing: a concurrent change is detected and the attempt discarded. The
    // remaining risk is a truncation while mapped (SIGBUS); operators can turn maps off (`ReadPolicy::mmap`).
    let map = unsafe { memmap2::Mmap::map(file) }.ok()?;
    #[cfg(unix)]
    let _ = map.advise(memmap2::Advice::Sequential);
    Some(Bytes::from_owner(map))
}

/// Whether the open file is still the version that was opened (and, if `path` is given, still at that path).
pub fn unchanged(f: &OpenFile) -> Result<bool> {
    let now = f.file.metadata().map_err(|e| Error::io("stat of an open source file", e))?;
    Ok(Stat::of(&now).same_version(&f.stat))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn walked(path: &Path) -> Stat {
        Stat::of(&std::fs::symlink_metadata(path).unwrap())
    }

    /// Only a file that is quiet now is mapped, whatever the walk saw when it was opened relative to the walk.
    #[test]
    fn a_file_written_after_the_walk_is_streamed_not_mapped() {
        let tmp = tempfile::tempdir().unwrap();
        let a = tmp.path().join("a.mbox");
        std::fs::write(&a, vec![b'x'; 4096]).unwrap();
        let old = std::time::SystemTime::now() - std::time::Duration::from_secs(3600);
        File::options().write(true).open(&a).unwrap().set_modified(old).unwrap();
        let dir = open_dir(tmp.path()).unwrap();
        let policy = ReadPolicy { whole_max: 1024, ..ReadPolicy::default() };
        let mapped =
            |f: &mut OpenFile| matches!(read_content(f, &a, &policy).unwrap(), Content::Whole { mapped: true, .. });

        // Quiet for an hour, as walked: mapped.
        let seen = walked(&a);
        assert!(mapped(&mut open_in(&dir, "a.mbox".as_ref(), &a, seen).unwrap()));

        // Appended to after the walk: streamed, although the walk saw it quiet.
        std::fs::OpenOptions::new().append(true).open(&a).unwrap().write_all(b"From more\n").unwrap();
        let mut f = open_in(&dir, "a.mbox".as_ref(), &a, seen).unwrap();
        assert!(!mapped(&mut f));
        assert!(!unchanged(&f).unwrap());
    }

    #[test]
    fn a_file_replaced_after_the_walk_counts_as_changed() {
        let tmp = tempfile::tempdir().unwrap();
        let (dir_path, a) = (tmp.path(), tmp.path().join("a"));
        std::fs::write(&a, b"the walked version").unwrap();
        let dir = open_dir(dir_path).unwrap();
        let seen = walked(&a);

        // Unchanged: opened relative to the directory, the walk's version holds after reading.
        let f = open_in(&dir, "a".as_ref(), &a, seen).unwrap();
        assert!(unchanged(&f).unwrap());

        // Replaced by another file (a new inode renamed over it) between the walk and the open.
        std::fs::write(dir_path.join("b"), b"another file").unwrap();
        std::fs::rename(dir_path.join("b"), &a).unwrap();
        let f = open_in(&dir, "a".as_ref(), &a, seen).unwrap();
        assert!(!unchanged(&f).unwrap(), "a replaced file must be read again");

        // Replaced by a symbolic link: not followed.
        std::fs::remove_file(&a).unwrap();
        std::os::unix::fs::symlink("/etc/hostname", &a).unwrap();
        let e = open_in(&dir, "a".as_ref(), &a, seen).unwrap_err();
        assert!(e.to_string().contains("opening"), "{e}");

        // Replaced by a FIFO: the open does not hang, and the version differs.
        std::fs::remove_file(&a).unwrap();
        let c = std::ffi::CString::new(a.as_os_str().as_encoded_bytes()).unwrap();
        #[allow(unsafe_code)]
        let made = unsafe { libc::mkfifo(c.as_ptr(), 0o600) };
        assert_eq!(made, 0);
        let f = open_in(&dir, "a".as_ref(), &a, seen).unwrap();
        assert!(!unchanged(&f).unwrap());
        // And the fresh open that the re-read uses refuses it.
        assert!(open(&a).is_err());
    }
}
