//! The local-directory store, the embedded default: one file per object under a root directory.
//!
//! Writes are crash-safe: the bytes go to a temporary file under `.tmp/`, are flushed to disk, and are then renamed
//! (overwrite) or hard-linked (create-if-absent, atomic: the link fails if the name exists) into place, after which
//! the parent directory is flushed too. A crash leaves either the old state or the new one, never a torn object;
//! stray temporary files are harmless and removed on the next open.

use std::fs::{self, File};
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use async_trait::async_trait;
use bytes::Bytes;

use super::{ObjectMeta, ObjectWriter, PutMode, PutOutcome, Store, validate_key};
use crate::error::{Error, ErrorKind, Result};

const TMP_DIR: &str = ".tmp";

/// Objects as files below a root directory.
#[derive(Debug, Clone)]
pub struct LocalStore {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    root: PathBuf,
    /// `local:` and the root as an absolute path (how the store is named in reports, logs and the index cache).
    described: String,
    counter: AtomicU64,
    /// Random part of this store handle's temporary file names.
    token: String,
}

impl LocalStore {
    /// Open (creating if needed) a store rooted at `root`.
    pub fn create(root: impl AsRef<Path>) -> Result<Self> {
        let root = root.as_ref().to_path_buf();
        fs::create_dir_all(root.join(TMP_DIR))
            .map_err(|e| Error::io(format!("creating store directory {}", root.display()), e))?;
        // Leftovers of interrupted writes: never part of the store. A write in progress (another migration into the
        // same directory streaming its pack, in this or another process, container or host) holds a lock on its
        // file for as long as it writes, and is left alone.
        if let Ok(entries) = fs::read_dir(root.join(TMP_DIR)) {
            for e in entries.flatten() {
                let Ok(f) = File::open(e.path()) else { continue };
                if f.try_lock().is_ok() {
                    let _ = fs::remove_file(e.path());
                }
            }
        }
        // A name no other process picks: the process id alone repeats across PID namespaces (containers).
        let token = crate::id::PackId::fresh().to_string()[..12].to_string();
        let described = format!("local:{}", fs::canonicalize(&root).unwrap_or_else(|_| root.clone()).display());
        Ok(LocalStore { inner: Arc::new(Inner { root, described, counter: AtomicU64::new(0), token }) })
    }

    /// The root directory.
    pub fn root(&self) -> &Path {
        &self.inner.root
    }

    /// Run blocking file work off the async workers.
    async fn blocking<T: Send + 'static>(&self, f: impl FnOnce(&Inner) -> Result<T> + Send + 'static) -> Result<T> {
        let inner = self.inner.clone();
        tokio::task::spawn_blocking(move || f(&inner))
            .await
            .map_err(|e| Error::new(ErrorKind::Other, format!("local store task failed: {e}")))?
    }
}

impl Inner {
    fn path(&self, key: &str) -> Result<PathBuf> {
        validate_key(key)?;
        Ok(self.root.join(key))
    }

    fn put_blocking(&self, key: &str, data: &[u8], mode: PutMode) -> Result<PutOutcome> {
        let dest = self.path(key)?;
        if mode == PutMode::Create && dest.exists() {
            return Ok(PutOutcome::AlreadyExists);
        }
        let (tmp, mut f) = self.tmp_file()?;
        if let Err(e) = f.write_all(data).and_then(|()| f.sync_all()) {
            let _ = fs::remove_file(&tmp);
            return Err(Error::io(format!("writing object {key} to {}", tmp.display()), e));
        }
        // The lock is held (the file open) until the object is in place.
        let placed = self.place(key, &tmp, &dest, mode);
        drop(f);
        placed
    }

    /// A new temporary file, created (never an existing one opened) and locked while it is written, so that a
    /// store opened meanwhile by another process does not take it for a leftover. Creating and locking are two
    /// steps: a store opened by another process between them can lock the new file first and remove it, so once
    /// locked the file must still be the one at its path (else another name is tried). Once it holds the lock,
    /// nothing removes it.
    fn tmp_file(&self) -> Result<(PathBuf, File)> {
        use std::os::unix::fs::MetadataExt;
        loop {
            let n = self.counter.fetch_add(1, Ordering::Relaxed);
            let tmp = self.root.join(TMP_DIR).join(format!("{}-{}-{n}", std::process::id(), self.token));
            match fs::OpenOptions::new().write(true).create_new(true).open(&tmp) {
                Ok(f) => {
                    f.lock().map_err(|e| Error::io(format!("locking {}", tmp.display()), e))?;
                    let held = f.metadata().map_err(|e| Error::io(format!("stat {}", tmp.display()), e))?;
                    match fs::symlink_metadata(&tmp) {
                        Ok(now) if now.dev() == held.dev() && now.ino() == held.ino() => return Ok((tmp, f)),
                        _ => continue,
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => continue,
                Err(e) => return Err(Error::io(format!("creating {}", tmp.display()), e)),
            }
        }
    }

    /// Move the flushed temporary file `tmp` to `dest` (the object `key`), durably.
    fn place(&self, key: &str, tmp: &Path, dest: &Path, mode: PutMode) -> Result<PutOutcome> {
        let parent = dest.parent().expect("validated key has a parent");
        if let Err(e) = create_dirs_durably(parent) {
            let _ = fs::remove_file(tmp);
            return Err(Error::io(format!("creating {}", parent.display()), e));
        }
        let placed = match mode {
            PutMode::Overwrite => fs::rename(tmp, dest).map(|_| PutOutcome::Written),
            PutMode::Create => {
                let r = match fs::hard_link(tmp, dest) {
                    Ok(()) => Ok(PutOutcome::Written),
                    Err(e) if e.kind() == io::ErrorKind::AlreadyExists => Ok(PutOutcome::AlreadyExists),
                    Err(e) => Err(e),
                };
                let _ = fs::remove_file(tmp);
                r
            }
        };
        let outcome = placed.map_err(|e| {
            let _ = fs::remove_file(tmp);
            Error::io(format!("placing object {key} at {}", dest.display()), e)
        })?;
        if outcome == PutOutcome::Written {
            // The rename/link is durable only once the directory entry is on disk.
            File::open(parent)
                .and_then(|d| d.sync_all())
                .map_err(|e| Error::io(format!("syncing directory {}", parent.display()), e))?;
        }
        Ok(outcome)
    }

    fn get_range_blocking(&self, key: &str, range: Range<u64>) -> Result<Bytes> {
        let path = self.path(key)?;
        let mut f = File::open(&path).map_err(|e| not_found_or_io(key, &path, e))?;
        let len = f.metadata().map_err(|e| Error::io(format!("stat {}", path.display()), e))?.len();
        if range.start >= len || range.start > range.end {
            return Err(Error::new(
                ErrorKind::Corrupt,
                format!("range {}..{} is outside object {key} of {len} bytes", range.start, range.end),
            ));
        }
        let end = range.end.min(len);
        let mut buf = vec![0u8; (end - range.start) as usize];
        f.seek(SeekFrom::Start(range.start))
            .and_then(|_| f.read_exact(&mut buf))
            .map_err(|e| Error::io(format!("reading {}..{} of {}", range.start, end, path.display()), e))?;
        Ok(Bytes::from(buf))
    }

    fn list_blocking(&self, prefix: &str) -> Result<Vec<ObjectMeta>> {
        // Walk only the directory the prefix names, then filter by the full prefix.
        let dir_part = match prefix.rfind('/') {
            Some(i) => &prefix[..i],
            None => "",
        };
        let start = if dir_part.is_empty() { self.root.clone() } else { self.root.join(dir_part) };
        let mut out = Vec::new();
        let mut stack = vec![start];
        while let Some(dir) = stack.pop() {
            let entries = match fs::read_dir(&dir) {
                Ok(e) => e,
                Err(e) if e.kind() == io::ErrorKind::NotFound || e.kind() == io::ErrorKind::NotADirectory => continue,
                Err(e) => return Err(Error::io(format!("listing {}", dir.display()), e)),
            };
            for entry in entries {
                let entry = entry.map_err(|e| Error::io(format!("listing {}", dir.display()), e))?;
                let path = entry.path();
                let rel = path.strip_prefix(&self.root).expect("below root");
                let Some(key) = rel.to_str().map(|s| s.replace(std::path::MAIN_SEPARATOR, "/")) else { continue };
                if key == TMP_DIR {
                    continue;
                }
                let ft = entry.file_type().map_err(|e| Error::io(format!("stat {}", path.display()), e))?;
                if ft.is_dir() {
                    if prefix.starts_with(&format!("{key}/")) || key.starts_with(prefix) {
                        stack.push(path);
                    }
                } else if ft.is_file() && key.starts_with(prefix) {
                    let size = entry.metadata().map_err(|e| Error::io(format!("stat {}", path.display()), e))?.len();
                    out.push(ObjectMeta { key, size });
                }
            }
        }
        out.sort_by(|a, b| a.key.cmp(&b.key));
        Ok(out)
    }
}

fn not_found_or_io(key: &str, path: &Path, e: io::Error) -> Error {
    if e.kind() == io::ErrorKind::NotFound {
        Error::new(ErrorKind::NotFound, format!("object {key} not found ({})", path.display()))
    } else {
        Error::io(format!("opening object {key} at {}", path.display()), e)
    }
}

/// Create `dir` and its missing parents, each made durable in its parent directory (fsynced): an object placed in
/// a directory made for it (a destination's first pack under `packs/ab/`, a mailbox's first manifest) must not
/// vanish with that directory on a power loss, after its pass was reported committed.
fn create_dirs_durably(dir: &Path) -> io::Result<()> {
    let mut missing = Vec::new();
    let mut d = dir;
    while !d.is_dir() {
        missing.push(d);
        match d.parent() {
            Some(p) => d = p,
            None => break,
        }
    }
    for m in missing.into_iter().rev() {
        match fs::create_dir(m) {
            // Made by another writer meanwhile: synced here too, since this object may be placed before that
            // writer's sync.
            Err(e) if e.kind() != io::ErrorKind::AlreadyExists => return Err(e),
            _ => {}
        }
        if let Some(p) = m.parent() {
            File::open(p)?.sync_all()?;
        }
    }
    Ok(())
}

/// A piece-by-piece write into a temporary file, placed like a [`Store::put`] on commit. Each piece is handed to
/// the kernel's writeback at once (Linux: `sync_file_range`), so the commit's flush finds most of the object
/// already on disk instead of writing tens of MiB after the last segment.
struct LocalWriter {
    inner: Arc<Inner>,
    key: String,
    dest: PathBuf,
    tmp: PathBuf,
    file: Option<File>,
    written: u64,
    mode: PutMode,
}

impl ObjectWriter for LocalWriter {
    fn write(&mut self, data: &[u8]) -> Result<()> {
        let f = self.file.as_mut().expect("a writer is used until it is committed");
        f.write_all(data)
            .map_err(|e| Error::io(format!("writing object {} to {}", self.key, self.tmp.display()), e))?;
        #[cfg(target_os = "linux")]
        {
            use std::os::fd::AsRawFd;
            // SAFETY: a plain syscall on a file descriptor this writer owns; its result is only advice.
            #[allow(unsafe_code)]
            let _ = unsafe {
                libc::sync_file_range(
                    f.as_raw_fd(),
                    self.written as libc::off64_t,
                    data.len() as libc::off64_t,
                    libc::SYNC_FILE_RANGE_WRITE,
                )
            };
        }
        self.written += data.len() as u64;
        Ok(())
    }

    fn written(&self) -> u64 {
        self.written
    }

    fn commit(mut self: Box<Self>) -> Result<PutOutcome> {
        let f = self.file.as_ref().expect("committed once");
        f.sync_all().map_err(|e| Error::io(format!("flushing object {} in {}", self.key, self.tmp.display()), e))?;
        if self.mode == PutMode::Create && self.dest.exists() {
            return Ok(PutOutcome::AlreadyExists); // the temporary file goes with the writer
        }
        // `place` moves the temporary file away or removes it, on success and on error; the lock is held until then.
        let placed = self.inner.place(&self.key, &self.tmp, &self.dest, self.mode);
        self.file = None;
        placed
    }
}

/// The writer of a create whose object is already there: it takes the bytes, writes nothing, and commits as
/// [`PutOutcome::AlreadyExists`] (a placed object is always whole: it is placed only once complete and flushed).
struct Present {
    written: u64,
}

impl ObjectWriter for Present {
    fn write(&mut self, data: &[u8]) -> Result<()> {
        self.written += data.len() as u64;
        Ok(())
    }

    fn written(&self) -> u64 {
        self.written
    }

    fn commit(self: Box<Self>) -> Result<PutOutcome> {
        Ok(PutOutcome::AlreadyExists)
    }
}

impl Drop for LocalWriter {
    fn drop(&mut self) {
        // Not placed (dropped before the commit, or the commit failed before placing): the object never existed.
        if self.file.take().is_some() {
            let _ = fs::remove_file(&self.tmp);
        }
    }
}

#[async_trait]
impl Store for LocalStore {
    fn describe(&self) -> String {
        self.inner.described.clone()
    }

    async fn put(&self, key: &str, data: Bytes, mode: PutMode) -> Result<PutOutcome> {
        let key = key.to_string();
        self.blocking(move |s| s.put_blocking(&key, &data, mode)).await
    }

    fn writer(&self, key: &str, mode: PutMode) -> Result<Option<Box<dyn ObjectWriter>>> {
        let dest = self.inner.path(key)?;
        if mode == PutMode::Create && dest.exists() {
            // As `put` does: an object named by its content that is already there is not written again.
            return Ok(Some(Box::new(Present { written: 0 })));
        }
        let (tmp, file) = self.inner.tmp_file()?;
        let inner = self.inner.clone();
        Ok(Some(Box::new(LocalWriter { inner, key: key.to_string(), dest, tmp, file: Some(file), written: 0, mode })))
    }

    async fn get(&self, key: &str) -> Result<Bytes> {
        let key = key.to_string();
        self.blocking(move |s| {
            let path = s.path(&key)?;
            fs::read(&path).map(Bytes::from).map_err(|e| not_found_or_io(&key, &path, e))
        })
        .await
    }

    async fn get_range(&self, key: &str, range: Range<u64>) -> Result<Bytes> {
        let key = key.to_string();
        self.blocking(move |s| s.get_range_blocking(&key, range)).await
    }

    async fn head(&self, key: &str) -> Result<Option<ObjectMeta>> {
        let path = self.inner.path(key)?;
        match fs::metadata(&path) {
            Ok(m) if m.is_file() => Ok(Some(ObjectMeta { key: key.to_string(), size: m.len() })),
            Ok(_) => Ok(None),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(Error::io(format!("stat {}", path.display()), e)),
        }
    }

    async fn list(&self, prefix: &str) -> Result<Vec<ObjectMeta>> {
        let prefix = prefix.to_string();
        self.blocking(move |s| s.list_blocking(&prefix)).await
    }

    async fn delete(&self, key: &str) -> Result<()> {
        let path = self.inner.path(key)?;
        match fs::remove_file(&path) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(Error::io(format!("deleting {}", path.display()), e)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn directories_are_made_level_by_level() {
        let dir = tempfile::tempdir().unwrap();
        let deep = dir.path().join("a/b/c");
        create_dirs_durably(&deep).unwrap();
        assert!(deep.is_dir());
        // Again, and next to it: nothing to do, and one level.
        create_dirs_durably(&deep).unwrap();
        create_dirs_durably(&dir.path().join("a/b/d")).unwrap();
        assert!(dir.path().join("a/b/d").is_dir());
        // A file in the way is an error, not a directory made beside it.
        std::fs::write(dir.path().join("f"), b"").unwrap();
        assert!(create_dirs_durably(&dir.path().join("f/g")).is_err());
    }

    #[tokio::test]
    async fn conformance() {
        let dir = tempfile::tempdir().unwrap();
        let store = LocalStore::create(dir.path()).unwrap();
        super::super::conformance::run_all(&store).await;
        // Nothing is left in the temporary area after successful writes.
        assert_eq!(fs::read_dir(dir.path().join(TMP_DIR)).unwrap().count(), 0);
    }

    #[tokio::test]
    async fn piecewise_writes_commit_like_puts_and_vanish_when_dropped() {
        let dir = tempfile::tempdir().unwrap();
        let store = LocalStore::create(dir.path()).unwrap();
        let tmp_files = || fs::read_dir(dir.path().join(TMP_DIR)).unwrap().count();
        let mut w = store.writer("packs/ab/x.pack", PutMode::Create).unwrap().expect("the local store streams");
        w.write(b"hello ").unwrap();
        w.write(b"world").unwrap();
        assert_eq!(w.written(), 11);
        // Invisible until committed.
        assert_eq!(store.head("packs/ab/x.pack").await.unwrap(), None);
        assert_eq!(w.commit().unwrap(), PutOutcome::Written);
        assert_eq!(&store.get("packs/ab/x.pack").await.unwrap()[..], b"hello world");
        // Create never replaces.
        let mut w = store.writer("packs/ab/x.pack", PutMode::Create).unwrap().unwrap();
        w.write(b"other").unwrap();
        assert_eq!(w.commit().unwrap(), PutOutcome::AlreadyExists);
        assert_eq!(&store.get("packs/ab/x.pack").await.unwrap()[..], b"hello world");
        // Overwrite does.
        let mut w = store.writer("packs/ab/x.pack", PutMode::Overwrite).unwrap().unwrap();
        w.write(b"new").unwrap();
        assert_eq!(w.commit().unwrap(), PutOutcome::Written);
        assert_eq!(&store.get("packs/ab/x.pack").await.unwrap()[..], b"new");
        // Dropped before the commit: no object, no temporary file.
        let mut w = store.writer("packs/cd/y.pack", PutMode::Create).unwrap().unwrap();
        w.write(b"abandoned").unwrap();
        assert_eq!(tmp_files(), 1);
        drop(w);
        assert_eq!(store.head("packs/cd/y.pack").await.unwrap(), None);
        assert_eq!(tmp_files(), 0);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn writes_survive_the_store_being_opened_again_meanwhile() {
        // Another migration opening the directory removes the temporary files it can lock; one just created and
        // not locked yet must not be lost by the writer that created it.
        let dir = tempfile::tempdir().unwrap();
        let store = LocalStore::create(dir.path()).unwrap();
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let (root, stop2) = (dir.path().to_path_buf(), stop.clone());
        let opener = std::thread::spawn(move || {
            let mut opened = 0;
            while !stop2.load(Ordering::Relaxed) {
                LocalStore::create(&root).unwrap();
                opened += 1;
            }
            opened
        });
        for i in 0..300 {
            let key = format!("mailboxes/m/pass-{i:08}.manifest");
            store.put(&key, Bytes::from(format!("object {i}")), PutMode::Create).await.unwrap();
            assert_eq!(store.get(&key).await.unwrap(), format!("object {i}").as_bytes());
        }
        stop.store(true, Ordering::Relaxed);
        assert!(opener.join().unwrap() > 0);
    }

    #[test]
    fn reopening_keeps_writes_in_progress_and_removes_leftovers() {
        let dir = tempfile::tempdir().unwrap();
        let store = LocalStore::create(dir.path()).unwrap();
        let mut w = store.writer("packs/ab/x.pack", PutMode::Create).unwrap().unwrap();
        w.write(b"still being written").unwrap();
        // Leftovers of writes that ended (nobody holds their lock), whatever their names.
        fs::write(dir.path().join(TMP_DIR).join("1-abc-0"), b"torn").unwrap();
        fs::write(dir.path().join(TMP_DIR).join("junk"), b"torn").unwrap();
        // Another migration opens the same directory while this one streams its pack (the lock is per open file,
        // so a second handle in this process stands for another process, container or host).
        let other = LocalStore::create(dir.path()).unwrap();
        let left: Vec<String> = fs::read_dir(dir.path().join(TMP_DIR))
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        assert_eq!(left.len(), 1, "{left:?}");
        assert!(left[0].starts_with(&format!("{}-", std::process::id())));
        // Both stream at once (same process id, each counting from 0): their temporary files never collide.
        let mut w2 = other.writer("packs/cd/y.pack", PutMode::Create).unwrap().unwrap();
        w2.write(b"the other pack").unwrap();
        w.write(b", and more").unwrap();
        assert_eq!(w2.commit().unwrap(), PutOutcome::Written);
        assert_eq!(w.commit().unwrap(), PutOutcome::Written);
        assert_eq!(fs::read(dir.path().join("packs/ab/x.pack")).unwrap(), b"still being written, and more");
        assert_eq!(fs::read(dir.path().join("packs/cd/y.pack")).unwrap(), b"the other pack");
        assert_eq!(fs::read_dir(dir.path().join(TMP_DIR)).unwrap().count(), 0);
    }
}
