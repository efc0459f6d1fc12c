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

use super::{ObjectMeta, PutMode, PutOutcome, Store, validate_key};
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
    counter: AtomicU64,
}

impl LocalStore {
    /// Open (creating if needed) a store rooted at `root`.
    pub fn create(root: impl AsRef<Path>) -> Result<Self> {
        let root = root.as_ref().to_path_buf();
        fs::create_dir_all(root.join(TMP_DIR))
            .map_err(|e| Error::io(format!("creating store directory {}", root.display()), e))?;
        // Leftovers of interrupted writes: never part of the store.
        if let Ok(entries) = fs::read_dir(root.join(TMP_DIR)) {
            for e in entries.flatten() {
                let _ = fs::remove_file(e.path());
            }
        }
        Ok(LocalStore { inner: Arc::new(Inner { root, counter: AtomicU64::new(0) }) })
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
        let parent = dest.parent().expect("validated key has a parent");
        fs::create_dir_all(parent).map_err(|e| Error::io(format!("creating {}", parent.display()), e))?;
        let n = self.counter.fetch_add(1, Ordering::Relaxed);
        let tmp = self.root.join(TMP_DIR).join(format!("{}-{n}", std::process::id()));
        let write = || -> io::Result<()> {
            let mut f = File::create(&tmp)?;
            f.write_all(data)?;
            f.sync_all()
        };
        write().map_err(|e| Error::io(format!("writing object {key} to {}", tmp.display()), e))?;
        let placed = match mode {
            PutMode::Overwrite => fs::rename(&tmp, &dest).map(|_| PutOutcome::Written),
            PutMode::Create => {
                let r = match fs::hard_link(&tmp, &dest) {
                    Ok(()) => Ok(PutOutcome::Written),
                    Err(e) if e.kind() == io::ErrorKind::AlreadyExists => Ok(PutOutcome::AlreadyExists),
                    Err(e) => Err(e),
                };
                let _ = fs::remove_file(&tmp);
                r
            }
        };
        let outcome = placed.map_err(|e| {
            let _ = fs::remove_file(&tmp);
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

#[async_trait]
impl Store for LocalStore {
    fn describe(&self) -> String {
        format!("local:{}", self.inner.root.display())
    }

    async fn put(&self, key: &str, data: Bytes, mode: PutMode) -> Result<PutOutcome> {
        let key = key.to_string();
        self.blocking(move |s| s.put_blocking(&key, &data, mode)).await
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

    #[tokio::test]
    async fn conformance() {
        let dir = tempfile::tempdir().unwrap();
        let store = LocalStore::create(dir.path()).unwrap();
        super::super::conformance::run_all(&store).await;
        // Nothing is left in the temporary area after successful writes.
        assert_eq!(fs::read_dir(dir.path().join(TMP_DIR)).unwrap().count(), 0);
    }
}
