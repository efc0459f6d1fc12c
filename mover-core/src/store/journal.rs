//! A crash-safe local journal of S3 multipart uploads in progress, so that the next put of the same bytes under
//! the same key resumes an interrupted upload instead of sending every part again.
//!
//! One file per object key under `STATE_DIR/s3-uploads/`, named by the BLAKE3 of bucket and key. The file is an
//! append-only log of JSON lines, each written with one `write` and flushed with `fsync` before the upload goes on:
//!
//! ```text
//! {"v":1,"bucket":"b","key":"packs/ab/…","upload_id":"…","part_size":8388608,"len":41943040,"blake3":"…"}
//! {"part":1,"size":8388608,"etag":"\"…\"","blake3":"…"}      ◄── one line per part, as soon as S3 acknowledged it
//! {"part":3,"size":8388608,"etag":"\"…\"","blake3":"…"}
//! ```
//!
//! A crash can only tear the last line; a torn last line is ignored (and cut off before the next append). Any other
//! line that does not parse makes the whole entry unusable, and the upload starts over: the journal is a hint that
//! saves bandwidth, never a source of truth (the S3 store checks every recorded part against ListParts and against
//! the bytes it is about to upload).
//!
//! An entry is locked (`flock`) while a put uses it, so two puts of one key — in this process or another one using
//! the same state directory — never write one entry; the second put simply goes without a journal.

use std::collections::BTreeMap;
use std::fs::{self, File, OpenOptions, TryLockError};
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use serde::{Deserialize, Serialize};

use crate::error::{Error, ErrorKind, Result};

/// The subdirectory of the state directory that holds the entries.
const DIR: &str = "s3-uploads";
/// Format version of the header line.
const VERSION: u32 = 1;

/// The journal: a directory of entries, created on first use.
#[derive(Debug, Clone)]
pub(crate) struct Journal {
    dir: PathBuf,
}

/// The first line of an entry: which upload, of which bytes, cut in which parts.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct UploadRecord {
    /// Format version ([`VERSION`]).
    pub v: u32,
    /// The bucket.
    pub bucket: String,
    /// The full object key (prefix included).
    pub key: String,
    /// The id CreateMultipartUpload returned.
    pub upload_id: String,
    /// Bytes per part (the last part may be shorter).
    pub part_size: u64,
    /// Length of the whole object.
    pub len: u64,
    /// BLAKE3 of the whole object, hex.
    pub blake3: String,
}

impl UploadRecord {
    /// A header for a new upload.
    pub fn new(bucket: &str, key: &str, upload_id: &str, part_size: u64, len: u64, blake3: &blake3::Hash) -> Self {
        UploadRecord {
            v: VERSION,
            bucket: bucket.to_string(),
            key: key.to_string(),
            upload_id: upload_id.to_string(),
            part_size,
            len,
            blake3: blake3.to_hex().to_string(),
        }
    }
}

/// One part that S3 acknowledged.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct PartRecord {
    /// 1-based part number.
    pub part: i32,
    /// Bytes in the part.
    pub size: u64,
    /// The ETag UploadPart returned (needed again by CompleteMultipartUpload).
    pub etag: String,
    /// BLAKE3 of the part's bytes, hex.
    pub blake3: String,
}

/// What an entry holds: the upload and its acknowledged parts by number.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Recorded {
    pub upload: UploadRecord,
    pub parts: BTreeMap<i32, PartRecord>,
}

impl Journal {
    /// The journal under `state_dir` (nothing is created until an entry is opened).
    pub fn new(state_dir: &Path) -> Self {
        Journal { dir: state_dir.join(DIR) }
    }

    /// The file of the entry for `key` in `bucket`.
    fn path(&self, bucket: &str, key: &str) -> PathBuf {
        let mut h = blake3::Hasher::new();
        h.update(bucket.as_bytes());
        h.update(b"\0");
        h.update(key.as_bytes());
        self.dir.join(format!("{}.jsonl", h.finalize().to_hex()))
    }

    /// Open the entry for `key` in `bucket` (created empty if there is none) and lock it; `None` when another put
    /// holds it. Blocking file work: call from [`tokio::task::spawn_blocking`], or use [`Self::open_entry`].
    pub fn open_blocking(&self, bucket: &str, key: &str) -> Result<Option<EntryFile>> {
        let path = self.path(bucket, key);
        let io_err = |what: &str, e| Error::io(format!("{what} {}", path.display()), e);
        fs::create_dir_all(&self.dir).map_err(|e| Error::io(format!("creating {}", self.dir.display()), e))?;
        // The entry may be removed by its holder between our open and our lock: then lock the new file instead.
        for _ in 0..3 {
            let file = OpenOptions::new()
                .read(true)
                .append(true)
                .create(true)
                .open(&path)
                .map_err(|e| io_err("opening upload journal", e))?;
            match file.try_lock() {
                Ok(()) => {}
                Err(TryLockError::WouldBlock) => return Ok(None),
                Err(TryLockError::Error(e)) => return Err(io_err("locking upload journal", e)),
            }
            if same_file(&file, &path) {
                return Ok(Some(EntryFile { path, dir: self.dir.clone(), file, valid_len: None }));
            }
        }
        Ok(None)
    }

    /// [`Self::open_blocking`] off the async workers.
    pub async fn open_entry(&self, bucket: &str, key: &str) -> Result<Option<JournalEntry>> {
        let (journal, bucket, key) = (self.clone(), bucket.to_string(), key.to_string());
        let entry = tokio::task::spawn_blocking(move || journal.open_blocking(&bucket, &key))
            .await
            .map_err(|e| Error::new(ErrorKind::Other, format!("upload journal task failed: {e}")))??;
        Ok(entry.map(|e| JournalEntry { inner: Arc::new(Mutex::new(e)) }))
    }
}

/// Whether the open `file` is still the one at `path` (not removed or replaced since it was opened).
#[cfg(unix)]
fn same_file(file: &File, path: &Path) -> bool {
    use std::os::unix::fs::MetadataExt;
    match (file.metadata(), fs::metadata(path)) {
        (Ok(a), Ok(b)) => a.dev() == b.dev() && a.ino() == b.ino(),
        _ => false,
    }
}

#[cfg(not(unix))]
fn same_file(_file: &File, path: &Path) -> bool {
    path.exists()
}

/// One locked entry; the lock is released when it is dropped.
#[derive(Debug)]
pub(crate) struct EntryFile {
    path: PathBuf,
    dir: PathBuf,
    file: File,
    /// Length of the complete lines read by [`Self::load`]; a torn tail after it is cut off before appending.
    valid_len: Option<u64>,
}

impl EntryFile {
    /// What the entry records; `None` when it is empty or unusable (a bad header, a bad line before the last).
    pub fn load(&mut self) -> io::Result<Option<Recorded>> {
        let mut text = Vec::new();
        self.file.seek(SeekFrom::Start(0))?;
        self.file.read_to_end(&mut text)?;
        // Everything after the last newline is a line torn by a crash.
        let complete = text.iter().rposition(|&b| b == b'\n').map_or(0, |i| i + 1);
        self.valid_len = Some(complete as u64);
        let mut lines = text[..complete].split(|&b| b == b'\n').filter(|l| !l.is_empty());
        let Some(Ok(upload)) = lines.next().map(serde_json::from_slice::<UploadRecord>) else { return Ok(None) };
        if upload.v != VERSION {
            return Ok(None);
        }
        let mut parts = BTreeMap::new();
        for line in lines {
            let Ok(part) = serde_json::from_slice::<PartRecord>(line) else { return Ok(None) };
            parts.insert(part.part, part);
        }
        Ok(Some(Recorded { upload, parts }))
    }

    /// Start the entry over for a new upload: empty it and write the header, durably.
    pub fn begin(&mut self, upload: &UploadRecord) -> io::Result<()> {
        self.file.set_len(0)?;
        self.valid_len = Some(0);
        self.append(upload)?;
        // A new entry's name must survive a crash too.
        File::open(&self.dir)?.sync_all()
    }

    /// Record an acknowledged part, durably.
    pub fn record_part(&mut self, part: &PartRecord) -> io::Result<()> {
        self.append(part)
    }

    fn append(&mut self, record: &impl Serialize) -> io::Result<()> {
        if let Some(valid) = self.valid_len.take()
            && self.file.metadata()?.len() != valid
        {
            self.file.set_len(valid)?;
        }
        let mut line = serde_json::to_vec(record).map_err(io::Error::other)?;
        line.push(b'\n');
        // One write of the whole line (the file is in append mode), then fsync: a crash tears at most this line.
        self.file.write_all(&line)?;
        self.file.sync_data()
    }

    /// Remove the entry (the upload completed, or it is abandoned).
    pub fn remove(&mut self) -> io::Result<()> {
        match fs::remove_file(&self.path) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e),
            _ => Ok(()),
        }
    }
}

/// A locked entry shared by the tasks of one upload; its file work runs off the async workers.
#[derive(Debug, Clone)]
pub(crate) struct JournalEntry {
    inner: Arc<Mutex<EntryFile>>,
}

impl JournalEntry {
    async fn run<T: Send + 'static>(
        &self,
        what: &'static str,
        f: impl FnOnce(&mut EntryFile) -> io::Result<T> + Send + 'static,
    ) -> Result<T> {
        let inner = self.inner.clone();
        tokio::task::spawn_blocking(move || {
            let mut entry = inner.lock().unwrap_or_else(|p| p.into_inner());
            f(&mut entry).map_err(|e| Error::io(format!("{what} upload journal {}", entry.path.display()), e))
        })
        .await
        .map_err(|e| Error::new(ErrorKind::Other, format!("upload journal task failed: {e}")))?
    }

    /// See [`EntryFile::load`].
    pub async fn load(&self) -> Result<Option<Recorded>> {
        self.run("reading", EntryFile::load).await
    }

    /// See [`EntryFile::begin`].
    pub async fn begin(&self, upload: UploadRecord) -> Result<()> {
        self.run("writing", move |e| e.begin(&upload)).await
    }

    /// See [`EntryFile::record_part`].
    pub async fn record_part(&self, part: PartRecord) -> Result<()> {
        self.run("writing", move |e| e.record_part(&part)).await
    }

    /// See [`EntryFile::remove`].
    pub async fn remove(&self) -> Result<()> {
        self.run("removing", EntryFile::remove).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header(id: &str) -> UploadRecord {
        UploadRecord::new("bucket", "packs/a", id, 5 << 20, 12 << 20, &blake3::hash(b"object"))
    }

    fn part(n: i32) -> PartRecord {
        PartRecord {
            part: n,
            size: 5 << 20,
            etag: format!("\"etag-{n}\""),
            blake3: blake3::hash(&[n as u8]).to_string(),
        }
    }

    #[test]
    fn records_survive_reopening_and_torn_lines_are_cut() {
        let dir = tempfile::tempdir().unwrap();
        let journal = Journal::new(dir.path());
        let mut e = journal.open_blocking("bucket", "packs/a").unwrap().unwrap();
        assert_eq!(e.load().unwrap(), None, "a new entry is empty");
        e.begin(&header("u1")).unwrap();
        e.record_part(&part(1)).unwrap();
        e.record_part(&part(2)).unwrap();
        let path = e.path.clone();
        drop(e);

        // A crash in the middle of the third line.
        let mut f = OpenOptions::new().append(true).open(&path).unwrap();
        f.write_all(br#"{"part":3,"size":52428"#).unwrap();
        drop(f);
        let mut e = journal.open_blocking("bucket", "packs/a").unwrap().unwrap();
        let rec = e.load().unwrap().unwrap();
        assert_eq!(rec.upload, header("u1"));
        assert_eq!(rec.parts.values().cloned().collect::<Vec<_>>(), vec![part(1), part(2)]);
        // The next append starts on a clean line.
        e.record_part(&part(3)).unwrap();
        let rec = e.load().unwrap().unwrap();
        assert_eq!(rec.parts.keys().copied().collect::<Vec<_>>(), vec![1, 2, 3]);

        // Beginning again forgets the old upload.
        e.begin(&header("u2")).unwrap();
        let rec = e.load().unwrap().unwrap();
        assert_eq!((rec.upload.upload_id.as_str(), rec.parts.len()), ("u2", 0));
        e.remove().unwrap();
        assert!(!path.exists());
    }

    #[test]
    fn damaged_entries_are_not_used() {
        let dir = tempfile::tempdir().unwrap();
        let journal = Journal::new(dir.path());
        let mut e = journal.open_blocking("bucket", "packs/a").unwrap().unwrap();
        e.begin(&header("u1")).unwrap();
        e.record_part(&part(1)).unwrap();
        let path = e.path.clone();
        let good = fs::read(&path).unwrap();
        for bad in [
            // A damaged line that is not the last.
            [&good[..], b"{garbage}\n", br#"{"part":2,"size":1,"etag":"x","blake3":"y"}"#, b"\n"].concat(),
            // A torn header.
            good[..20].to_vec(),
            // Another format version.
            String::from_utf8(good.clone()).unwrap().replacen("\"v\":1", "\"v\":9", 1).into_bytes(),
        ] {
            fs::write(&path, &bad).unwrap();
            assert_eq!(e.load().unwrap(), None, "{}", String::from_utf8_lossy(&bad));
        }
    }

    #[test]
    fn one_put_at_a_time_per_key() {
        let dir = tempfile::tempdir().unwrap();
        let journal = Journal::new(dir.path());
        let mut first = journal.open_blocking("bucket", "packs/a").unwrap().unwrap();
        assert!(journal.open_blocking("bucket", "packs/a").unwrap().is_none(), "locked by the first");
        assert!(journal.open_blocking("bucket", "packs/b").unwrap().is_some(), "other keys are free");
        assert!(journal.open_blocking("other", "packs/a").unwrap().is_some(), "other buckets too");
        // The holder removes its entry: a later put gets a fresh one, not the removed file.
        first.begin(&header("u1")).unwrap();
        first.remove().unwrap();
        drop(first);
        let mut again = journal.open_blocking("bucket", "packs/a").unwrap().unwrap();
        assert_eq!(again.load().unwrap(), None);
    }
}
