//! Listing a directory and taking its entries' `lstat`s, relative to the directory's descriptor and without an
//! allocation per entry: a pass in which nothing changed is mostly this, once per file of the store.
//!
//! On Linux with glibc the names come from `readdir` into one buffer per directory and the `lstat`s from `statx`,
//! as the standard library's `DirEntry::metadata` takes them (so a [`Stat`] is the one `Stat::of` gives for the same
//! file). Where `statx` is refused (seccomp profiles that answer `EPERM`, kernels before 4.11) the `lstat`s come
//! from `fstatat`, as the standard library also falls back to; elsewhere, from `fstatat` and `std::fs::read_dir`.

use std::ffi::CStr;
use std::fs::File;
use std::io;
use std::path::Path;

use super::read::Stat;

/// A directory entry as listed: where its name is in the directory's names buffer (without the NUL that ends it
/// there), and whether it is a directory.
#[derive(Clone, Copy)]
pub(super) struct Child {
    start: u32,
    len: u32,
    pub(super) is_dir: bool,
}

impl Child {
    pub(super) fn name(self, names: &[u8]) -> &[u8] {
        &names[self.start as usize..(self.start + self.len) as usize]
    }

    /// The name with its NUL, for system calls.
    #[allow(unsafe_code)]
    pub(super) fn c_name(self, names: &[u8]) -> &CStr {
        let with_nul = &names[self.start as usize..=(self.start + self.len) as usize];
        assert_eq!(with_nul.last(), Some(&0), "names are stored NUL-terminated");
        // SAFETY: the name came from the directory listing as a C string, so it has no NUL inside; its NUL was
        // checked above.
        unsafe { CStr::from_bytes_with_nul_unchecked(with_nul) }
    }
}

/// An entry's `lstat`: its [`Stat`] and file type (`S_IFMT` bits).
#[derive(Clone, Copy, Debug)]
pub(super) struct Lstat {
    pub(super) stat: Stat,
    format: u32,
}

// `S_IF*` are `u16` on some systems.
#[allow(clippy::unnecessary_cast)]
impl Lstat {
    pub(super) fn is_dir(&self) -> bool {
        self.format == libc::S_IFDIR as u32
    }
    pub(super) fn is_file(&self) -> bool {
        self.format == libc::S_IFREG as u32
    }
    pub(super) fn is_symlink(&self) -> bool {
        self.format == libc::S_IFLNK as u32
    }
}

/// `statx` was refused once (`EPERM`, `ENOSYS`): take every `lstat` with `fstatat` from then on.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
static STATX_REFUSED: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// `lstat` of `name` in the open directory `dir`.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
#[allow(unsafe_code)]
pub(super) fn lstat_at(dir: &File, name: &CStr) -> io::Result<Lstat> {
    use std::os::fd::AsRawFd;
    use std::sync::atomic::Ordering;
    if STATX_REFUSED.load(Ordering::Relaxed) {
        return fstatat(dir, name);
    }
    // SAFETY: statx writes a `struct statx` into `buf`, which is all zeroes (a valid value) before the call.
    let mut buf: libc::statx = unsafe { std::mem::zeroed() };
    // SAFETY: `name` is NUL-terminated, `dir` is an open descriptor, `buf` is writable and lives across the call.
    let r = unsafe {
        libc::statx(
            dir.as_raw_fd(),
            name.as_ptr(),
            libc::AT_SYMLINK_NOFOLLOW | libc::AT_STATX_SYNC_AS_STAT,
            libc::STATX_BASIC_STATS,
            &mut buf,
        )
    };
    if r != 0 {
        let e = io::Error::last_os_error();
        if matches!(e.raw_os_error(), Some(libc::EPERM | libc::ENOSYS)) {
            STATX_REFUSED.store(true, Ordering::Relaxed);
            return fstatat(dir, name);
        }
        return Err(e);
    }
    let ns = |t: libc::statx_timestamp| t.tv_sec * 1_000_000_000 + i64::from(t.tv_nsec);
    let mode = u32::from(buf.stx_mode);
    Ok(Lstat {
        stat: Stat {
            size: buf.stx_size,
            mtime_ns: ns(buf.stx_mtime),
            ctime_ns: ns(buf.stx_ctime),
            mode: mode & 0o7777,
            ino: buf.stx_ino,
            dev: libc::makedev(buf.stx_dev_major, buf.stx_dev_minor),
        },
        format: mode & libc::S_IFMT,
    })
}

/// `lstat` of `name` in the open directory `dir`.
#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
pub(super) fn lstat_at(dir: &File, name: &CStr) -> io::Result<Lstat> {
    fstatat(dir, name)
}

/// `lstat` of `name` in the open directory `dir` with `fstatat`.
#[allow(unsafe_code, clippy::unnecessary_cast, clippy::useless_conversion)]
fn fstatat(dir: &File, name: &CStr) -> io::Result<Lstat> {
    use std::os::fd::AsRawFd;
    // SAFETY: fstatat writes a `struct stat` into `st`, which is all zeroes (a valid value) before the call.
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    // SAFETY: `name` is NUL-terminated, `dir` is an open descriptor, `st` is writable and lives across the call.
    if unsafe { libc::fstatat(dir.as_raw_fd(), name.as_ptr(), &mut st, libc::AT_SYMLINK_NOFOLLOW) } != 0 {
        return Err(io::Error::last_os_error());
    }
    let ns = |s: i64, n: i64| s * 1_000_000_000 + n;
    let mode = st.st_mode as u32;
    Ok(Lstat {
        stat: Stat {
            size: st.st_size as u64,
            mtime_ns: ns(st.st_mtime as i64, st.st_mtime_nsec as i64),
            ctime_ns: ns(st.st_ctime as i64, st.st_ctime_nsec as i64),
            mode: mode & 0o7777,
            ino: st.st_ino as u64,
            dev: st.st_dev as u64,
        },
        format: mode & libc::S_IFMT as u32,
    })
}

/// Whether an entry listed with type `d_type` is a directory; a file system that does not say (`DT_UNKNOWN`) is
/// asked with an `lstat`, as the standard library's `DirEntry::file_type` does.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
fn listed_is_dir(d_type: u8, lstat: impl FnOnce() -> io::Result<Lstat>) -> bool {
    match d_type {
        libc::DT_DIR => true,
        libc::DT_UNKNOWN => lstat().map(|l| l.is_dir()).unwrap_or(false),
        _ => false,
    }
}

/// A directory stream, closed (with its descriptor) when dropped.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
struct DirStream(*mut libc::DIR);

#[cfg(all(target_os = "linux", target_env = "gnu"))]
impl Drop for DirStream {
    #[allow(unsafe_code)]
    fn drop(&mut self) {
        // SAFETY: the stream is valid and not used after this; closedir closes its descriptor.
        unsafe { libc::closedir(self.0) };
    }
}

/// Where the next name goes in `names`, or an error for a directory whose names take more than 4 GiB.
fn place(names: &[u8], name: &[u8]) -> io::Result<(u32, u32)> {
    match (u32::try_from(names.len()), u32::try_from(name.len())) {
        (Ok(start), Ok(len)) if start.checked_add(len).is_some_and(|end| end < u32::MAX) => Ok((start, len)),
        _ => Err(io::Error::other("a directory whose entries' names take more than 4 GiB")),
    }
}

/// The entries of the open directory `dir` (at `path`) but `.` and `..`: their names, each ended by a NUL, in one
/// buffer, and where each is in it. Read with `readdir` on a duplicate of `dir`'s descriptor.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
#[allow(unsafe_code)]
pub(super) fn list_dir(dir: &File, _path: &Path) -> io::Result<(Vec<u8>, Vec<Child>)> {
    use std::os::fd::AsRawFd;
    // SAFETY: F_DUPFD_CLOEXEC on an open descriptor makes a new one, which fdopendir then owns (closedir closes it).
    let fd = unsafe { libc::fcntl(dir.as_raw_fd(), libc::F_DUPFD_CLOEXEC, 0) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: `fd` is an open directory descriptor nothing else uses. Its file offset is shared with `dir`, which
    // has never been read (`dir` is only used for *at calls, which do not move it).
    let stream = unsafe { libc::fdopendir(fd) };
    if stream.is_null() {
        let e = io::Error::last_os_error();
        // SAFETY: fdopendir failed, so `fd` is still ours to close.
        unsafe { libc::close(fd) };
        return Err(e);
    }
    let stream = DirStream(stream);
    let mut names = Vec::new();
    let mut children = Vec::new();
    loop {
        // SAFETY: errno is thread-local; readdir leaves it alone at the end of the directory and sets it on error.
        unsafe { *libc::__errno_location() = 0 };
        // SAFETY: the stream is valid; the entry it returns stays valid until the next readdir or closedir.
        let ent = unsafe { libc::readdir64(stream.0) };
        if ent.is_null() {
            let e = io::Error::last_os_error();
            return if e.raw_os_error() == Some(0) { Ok((names, children)) } else { Err(e) };
        }
        // SAFETY: `d_name` of a returned entry is a NUL-terminated name.
        let (name, d_type) = unsafe { (CStr::from_ptr((*ent).d_name.as_ptr()).to_bytes(), (*ent).d_type) };
        if name == b"." || name == b".." {
            continue;
        }
        let (start, len) = place(&names, name)?;
        names.extend_from_slice(name);
        names.push(0);
        let child = Child { start, len, is_dir: false };
        let is_dir = listed_is_dir(d_type, || lstat_at(dir, child.c_name(&names)));
        children.push(Child { is_dir, ..child });
    }
}

/// The entries of the directory at `path` but `.` and `..`: their names, each ended by a NUL, in one buffer, and
/// where each is in it.
#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
pub(super) fn list_dir(_dir: &File, path: &Path) -> io::Result<(Vec<u8>, Vec<Child>)> {
    use std::os::unix::ffi::OsStrExt;
    let mut names = Vec::new();
    let mut children = Vec::new();
    for e in std::fs::read_dir(path)? {
        let e = e?;
        let name = e.file_name();
        let name = name.as_bytes();
        let (start, len) = place(&names, name)?;
        names.extend_from_slice(name);
        names.push(0);
        let is_dir = e.file_type().map(|t| t.is_dir()).unwrap_or(false);
        children.push(Child { start, len, is_dir });
    }
    Ok((names, children))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Both ways of taking an `lstat` give what the standard library's `symlink_metadata` does, for a file, a
    /// directory and a symbolic link (the `fstatat` way is what runs where `statx` is refused).
    #[test]
    fn lstats_are_the_standard_librarys() {
        let d = tempfile::tempdir().unwrap();
        std::fs::write(d.path().join("f"), b"12345").unwrap();
        std::fs::create_dir(d.path().join("d")).unwrap();
        std::os::unix::fs::symlink("f", d.path().join("l")).unwrap();
        let dir = File::open(d.path()).unwrap();
        for (name, kind) in [("f", 0), ("d", 1), ("l", 2)] {
            let std_meta = std::fs::symlink_metadata(d.path().join(name)).unwrap();
            let c = std::ffi::CString::new(name).unwrap();
            for l in [lstat_at(&dir, &c).unwrap(), fstatat(&dir, &c).unwrap()] {
                assert_eq!(l.stat, Stat::of(&std_meta), "{name}");
                assert_eq!([l.is_file(), l.is_dir(), l.is_symlink()], [kind == 0, kind == 1, kind == 2], "{name}");
            }
        }
        let missing = std::ffi::CString::new("missing").unwrap();
        assert_eq!(lstat_at(&dir, &missing).unwrap_err().kind(), io::ErrorKind::NotFound);
        assert_eq!(fstatat(&dir, &missing).unwrap_err().kind(), io::ErrorKind::NotFound);
    }

    /// A listing holds every name but `.` and `..`, each NUL-terminated, with directories told apart.
    #[test]
    fn listings_hold_every_name() {
        let d = tempfile::tempdir().unwrap();
        let mut want = vec![];
        for i in 0..300 {
            let name = format!("{i:03}-\u{e9}:2,S");
            if i % 7 == 0 {
                std::fs::create_dir(d.path().join(&name)).unwrap();
            } else {
                std::fs::write(d.path().join(&name), b"x").unwrap();
            }
            want.push((name.into_bytes(), i % 7 == 0));
        }
        let dir = File::open(d.path()).unwrap();
        let (names, children) = list_dir(&dir, d.path()).unwrap();
        let mut got: Vec<(Vec<u8>, bool)> = children.iter().map(|c| (c.name(&names).to_vec(), c.is_dir)).collect();
        got.sort();
        assert_eq!(got, want);
        for c in &children {
            assert_eq!(c.c_name(&names).to_bytes(), c.name(&names));
        }
    }

    /// `DT_UNKNOWN` (file systems that do not give the type when listing) asks the `lstat`; a known type does not.
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    #[test]
    fn an_unknown_type_is_asked() {
        let d = tempfile::tempdir().unwrap();
        std::fs::create_dir(d.path().join("d")).unwrap();
        std::fs::write(d.path().join("f"), b"x").unwrap();
        let dir = File::open(d.path()).unwrap();
        let ask = |name: &str| {
            let c = std::ffi::CString::new(name).unwrap();
            lstat_at(&dir, &c)
        };
        assert!(listed_is_dir(libc::DT_UNKNOWN, || ask("d")));
        assert!(!listed_is_dir(libc::DT_UNKNOWN, || ask("f")));
        assert!(!listed_is_dir(libc::DT_UNKNOWN, || ask("missing")));
        assert!(listed_is_dir(libc::DT_DIR, || panic!("not asked")));
        assert!(!listed_is_dir(libc::DT_REG, || panic!("not asked")));
    }
}
