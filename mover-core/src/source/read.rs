//! Reading source files without ever storing half of a file that changed underneath.
//!
//! A file is opened and `fstat`ed; its content is read (small files into memory, large quiet files through a
//! memory map, the rest streamed in chunks); after everything derived from it has been processed the file is
//! `fstat`ed again, and if its size, modification time or change time moved, the attempt is thrown away and the
//! file read again (or quarantined after several tries). The change time catches in-place rewrites that restore the
//! modification time.
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
    let file = File::open(path).map_err(|e| Error::io(format!("opening {}", path.display()), e))?;
    let meta = file.metadata().map_err(|e| Error::io(format!("stat {}", path.display()), e))?;
    if !meta.is_file() {
        return Err(Error::bad_input(format!("{} is not a regular file", path.display())));
    }
    Ok(OpenFile { stat: Stat::of(&meta), file })
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
    let quiet = now_ns.saturating_sub(f.stat.mtime_ns) >= (policy.quiet_secs as i64) * 1_000_000_000;
    if policy.mmap
        && quiet
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
