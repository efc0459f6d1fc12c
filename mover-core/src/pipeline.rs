//! The wiring: source → split + hash → dedupe → compress → pack → store, then the manifest commit.
//!
//! ```text
//!  reader thread            rayon pool                 collector (this thread)            tokio
//!  walk, read, split mbox ─► split, BLAKE3, zstd ─────► dedupe, pack, spool records ──► uploads (bounded by bytes)
//!  (batches, bounded)        (order kept)                 └─► manifest, committed after every upload is acknowledged
//! ```
//!
//! - The reader walks the source in walk order, reads each file (whole, mapped or streamed), cuts mbox files into
//!   messages and hands out batches of at most [`MigrateOptions::batch_bytes`]; at most
//!   [`MigrateOptions::queue_batches`] batches wait, so memory does not grow with the source.
//! - Each batch is processed on rayon in parallel, order preserved: the message is split into header and body,
//!   every blob hashed, and only blobs the destination does not already have are compressed.
//! - The collector re-checks each blob against the index (two messages in flight may share a new body), packs new
//!   blobs, and spools the file's manifest records. When the file is done it checks that the file did not change
//!   while it was read; if it did, the spooled records are dropped and the file is read again.
//! - Sealed packs go to the store as tokio tasks, limited by [`MigrateOptions::upload_budget`] bytes in flight.
//! - The manifest is written only after every pack of the pass is acknowledged: a crash before that leaves at most
//!   unreferenced packs, whose blobs the next run finds in their indexes and does not upload again.
//!
//! Files unchanged since the previous pass (same size and modification time) are carried over from the previous
//! manifest without being read.

use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use bytes::Bytes;
use rayon::prelude::*;
use tokio::runtime::Handle;
use tokio::sync::Semaphore;

use crate::compress::{self, Codec};
use crate::error::{Error, ErrorKind, Result};
use crate::id::{ContentId, PackId};
use crate::index::BlobIndex;
use crate::layout::{self, FormatMarker};
use crate::manifest::{
    BlobRef, ByteStr, FileKind, MANIFEST_FORMAT, MANIFEST_VERSION, Manifest, ManifestHeader, ManifestWriter, Part,
    PartKind, Record, RecordReader,
};
use crate::pack::{BlobLoc, PackWriter, SealedPack};
use crate::report::{MigrationSummary, PassStats, QuarantineItem};
use crate::source::{self, Content, Entry, EntryKind, FsSource, OpenFile, ReadPolicy, Source, maildir, mbox};
use crate::split;
use crate::store::{DynStore, PutMode, PutOutcome};

/// A callback run after a file's content has been read and before it is checked for changes (tests use it to
/// change files underneath a migration).
pub type ReadHook = Arc<dyn Fn(&Path) + Send + Sync>;

/// Tuning and identity of one migration pass. `MigrateOptions::new(mailbox)` gives the defaults.
#[derive(Clone)]
pub struct MigrateOptions {
    /// The mailbox id the manifest is stored under.
    pub mailbox: String,
    /// zstd level for blobs (3 is zstd's default: fast, and most of the gain).
    pub zstd_level: i32,
    /// A pack is sealed and uploaded when it reaches this many bytes.
    pub pack_target: usize,
    /// Blobs whose stored size is at least this stand alone in their own object.
    pub standalone_min: usize,
    /// Parts larger than this are cut into blobs of this size.
    pub max_blob: usize,
    /// Bytes per batch handed from the reader to the workers.
    pub batch_bytes: usize,
    /// Batches that may wait between reader and workers.
    pub queue_batches: usize,
    /// Bytes of sealed packs that may be uploading at once (default: two packs).
    pub upload_budget: Option<usize>,
    /// How files are read.
    pub read: ReadPolicy,
    /// How many times a file that changed while being read is read again before it is quarantined.
    pub change_retries: u32,
    /// Worker threads for hashing and compression (default: all cores).
    pub threads: Option<usize>,
    /// Live counters for a progress display.
    pub progress: Option<Arc<Progress>>,
    /// Test hook, see [`ReadHook`].
    pub after_read: Option<ReadHook>,
}

impl std::fmt::Debug for MigrateOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MigrateOptions")
            .field("mailbox", &self.mailbox)
            .field("zstd_level", &self.zstd_level)
            .field("pack_target", &self.pack_target)
            .field("standalone_min", &self.standalone_min)
            .field("max_blob", &self.max_blob)
            .field("upload_budget", &self.upload_budget)
            .finish_non_exhaustive()
    }
}

impl MigrateOptions {
    /// Defaults for migrating `mailbox`.
    pub fn new(mailbox: impl Into<String>) -> Self {
        MigrateOptions {
            mailbox: mailbox.into(),
            zstd_level: 3,
            pack_target: 32 << 20,
            standalone_min: 8 << 20,
            max_blob: 16 << 20,
            batch_bytes: 8 << 20,
            queue_batches: 2,
            upload_budget: None,
            read: ReadPolicy::default(),
            change_retries: 3,
            threads: None,
            progress: None,
            after_read: None,
        }
    }

    fn validate(&self) -> Result<()> {
        layout::validate_mailbox(&self.mailbox)?;
        if !(1..=22).contains(&self.zstd_level) {
            return Err(Error::config(format!("zstd level {} is outside 1..=22", self.zstd_level)));
        }
        if self.pack_target < 1 << 16 || self.max_blob < 1 << 16 || self.batch_bytes == 0 || self.queue_batches == 0 {
            return Err(Error::config("pack target and blob size must be at least 64 KiB"));
        }
        Ok(())
    }
}

/// Live counters of a running migration, for progress displays and status endpoints.
#[derive(Debug, Default)]
pub struct Progress {
    /// Regular files done.
    pub files: AtomicU64,
    /// Messages done.
    pub messages: AtomicU64,
    /// Source bytes done (read or carried over).
    pub bytes: AtomicU64,
    /// Bytes uploaded to the store.
    pub stored: AtomicU64,
}

// ---------------------------------------------------------------------------------------------------------------
// Events between the stages.

struct BlobOut {
    id: ContentId,
    raw_len: u64,
    /// The stored form, unless the index already had the blob when it was processed.
    stored: Option<(Codec, Bytes)>,
}

enum PieceIn {
    Msg { offset: u64, from: Bytes, msg: Bytes, trail: Bytes, mapped: bool, mbox: bool },
    Data { offset: u64, data: Bytes, mapped: bool },
}

enum PieceOut {
    Msg {
        offset: u64,
        from: Bytes,
        trail: Bytes,
        parts: Vec<(PartKind, Vec<BlobOut>)>,
        hash: ContentId,
        len: u64,
        flags: Option<String>,
    },
    Data {
        offset: u64,
        len: u64,
        blobs: Vec<BlobOut>,
    },
}

enum Event {
    /// A record that needs no processing (directory, link, quarantine).
    Record(Record),
    /// Records carried over from the previous pass for an unchanged file.
    Reused {
        lines: Vec<u8>,
        count: u64,
        messages: u64,
        size: u64,
    },
    FileStart {
        entry: Entry,
        record: Record,
    },
    PieceIn(PieceIn),
    PieceOut(PieceOut),
    /// The file was read to the end; `hash` is the whole-file BLAKE3 where it is recorded.
    FileEnd {
        entry: Entry,
        open: OpenFile,
        hash: Option<ContentId>,
    },
    /// Something about the current file to report once it is committed (bytes carried opaque).
    Note {
        offset: u64,
        reason: String,
    },
    /// Reading the file failed part-way: drop what was spooled, quarantine it.
    FileFailed {
        entry: Entry,
        offset: Option<u64>,
        error: Error,
    },
}

impl Event {
    fn weight(&self) -> usize {
        match self {
            Event::PieceIn(PieceIn::Msg { msg, .. }) => msg.len() + 256,
            Event::PieceIn(PieceIn::Data { data, .. }) => data.len() + 256,
            Event::Reused { lines, .. } => lines.len(),
            _ => 256,
        }
    }
}

// ---------------------------------------------------------------------------------------------------------------
// Stage 2: split, hash, compress (runs on rayon).

struct Processor<'a> {
    index: &'a BlobIndex,
    level: i32,
    max_blob: usize,
}

impl Processor<'_> {
    fn blobs(&self, data: &[u8]) -> Result<Vec<BlobOut>> {
        let mut out = Vec::with_capacity(1);
        for r in split::chunks(data.len(), self.max_blob) {
            let raw = &data[r];
            let id = ContentId::of(raw);
            let stored = if self.index.contains(&id) {
                None
            } else {
                Some(match compress::compress(raw, self.level)? {
                    Some(c) => (Codec::Zstd, Bytes::from(c)),
                    None => (Codec::None, Bytes::copy_from_slice(raw)),
                })
            };
            out.push(BlobOut { id, raw_len: raw.len() as u64, stored });
        }
        Ok(out)
    }

    fn process(&self, ev: Event) -> Result<Event> {
        let Event::PieceIn(p) = ev else { return Ok(ev) };
        Ok(Event::PieceOut(match p {
            PieceIn::Msg { offset, from, msg, trail, mapped, mbox } => {
                // A mapped file can change under us: hash and compress a private copy, so that the id always
                // matches the stored bytes (a torn copy is caught by the version check at the end of the file).
                let msg = if mapped { Bytes::copy_from_slice(&msg) } else { msg };
                let hlen = split::header_len(&msg);
                let flags = if mbox { mbox::status_flags(&msg[..hlen]) } else { None };
                let mut parts = vec![(PartKind::Header, self.blobs(&msg[..hlen])?)];
                if hlen < msg.len() {
                    parts.push((PartKind::Body, self.blobs(&msg[hlen..])?));
                }
                let hash = if parts.iter().map(|p| p.1.len()).sum::<usize>() == 1 {
                    parts[0].1[0].id
                } else {
                    ContentId::of(&msg)
                };
                PieceOut::Msg { offset, from, trail, parts, hash, len: msg.len() as u64, flags }
            }
            PieceIn::Data { offset, data, mapped } => {
                let data = if mapped { Bytes::copy_from_slice(&data) } else { data };
                PieceOut::Data { offset, len: data.len() as u64, blobs: self.blobs(&data)? }
            }
        }))
    }
}

// ---------------------------------------------------------------------------------------------------------------
// Stage 1: walk and read.

/// The previous pass's manifest, read in step with the walk.
struct PrevCursor {
    records: std::iter::Peekable<RecordReader>,
}

struct PrevFile {
    lines: Vec<u8>,
    count: u64,
    messages: u64,
    size: u64,
}

impl PrevCursor {
    /// The previous pass's records of the file at `rel`, if it was recorded with `size` and `mtime` (then its
    /// content, and so its kind, are taken to be unchanged, as rsync and every backup tool do).
    fn take_file(&mut self, rel: &[u8], size: u64, mtime: i64) -> Result<Option<PrevFile>> {
        loop {
            let order = match self.records.peek() {
                None => return Ok(None),
                Some(Err(_)) => return Err(self.records.next().expect("peeked").expect_err("is error")),
                Some(Ok((Record::File { path, .. }, _))) => source::walk_cmp(&path.0, rel),
                Some(Ok(_)) => {
                    self.records.next();
                    continue;
                }
            };
            match order {
                std::cmp::Ordering::Greater => return Ok(None),
                std::cmp::Ordering::Less => self.skip_block(None)?,
                std::cmp::Ordering::Equal => {
                    let Some(Ok((Record::File { size: s, mtime: m, .. }, _))) = self.records.peek() else {
                        unreachable!("peeked a file record")
                    };
                    if (*s, *m) != (size, mtime) {
                        self.skip_block(None)?;
                        return Ok(None);
                    }
                    let mut prev = PrevFile { lines: Vec::new(), count: 0, messages: 0, size };
                    self.skip_block(Some(&mut prev))?;
                    return Ok(Some(prev));
                }
            }
        }
    }

    /// Consume one file's records (File … End), collecting them into `into`.
    fn skip_block(&mut self, mut into: Option<&mut PrevFile>) -> Result<()> {
        for rec in self.records.by_ref() {
            let (rec, line) = rec?;
            if let Some(p) = into.as_deref_mut() {
                p.lines.extend_from_slice(&line);
                p.count += 1;
                if matches!(rec, Record::Msg { .. }) {
                    p.messages += 1;
                }
            }
            if matches!(rec, Record::End { .. }) {
                return Ok(());
            }
        }
        Err(Error::corrupt("previous manifest ends inside a file"))
    }
}

/// Reads files and emits their events (used by the reader thread, and by the collector to re-read a file).
struct Reader<'a> {
    policy: &'a ReadPolicy,
    max_blob: usize,
    after_read: Option<&'a ReadHook>,
}

impl Reader<'_> {
    /// Classify and read one regular file, emitting FileStart, pieces, and FileEnd (or FileFailed).
    fn read_file(&self, entry: &Entry, source: &dyn Source, emit: &mut dyn FnMut(Event) -> Result<()>) -> Result<()> {
        let mut open = match source.open(entry) {
            Ok(o) => o,
            Err(error) => return emit(Event::FileFailed { entry: entry.clone(), offset: None, error }),
        };
        let content = match source::read::read_content(&mut open, &entry.abs, self.policy) {
            Ok(c) => c,
            Err(error) => return emit(Event::FileFailed { entry: entry.clone(), offset: None, error }),
        };
        let stat = open.stat;
        let maildir_sub = match entry.kind {
            EntryKind::File { maildir } => maildir,
            _ => None,
        };
        let head_is_mbox = |head: &[u8]| maildir_sub.is_none() && mbox::sniff(head);
        let (kind, content) = match content {
            Content::Whole { data, mapped } => {
                let kind = if maildir_sub.is_some() {
                    FileKind::Maildir
                } else if head_is_mbox(&data[..data.len().min(mbox::SNIFF_LEN)]) {
                    FileKind::Mbox
                } else {
                    FileKind::Opaque
                };
                (kind, Ok((data, mapped)))
            }
            Content::Stream => {
                let mut head = vec![0u8; mbox::SNIFF_LEN];
                let n = read_at(&open.file, &mut head, 0)
                    .map_err(|e| Error::io(format!("reading {}", entry.abs.display()), e));
                let n = match n {
                    Ok(n) => n,
                    Err(error) => return emit(Event::FileFailed { entry: entry.clone(), offset: Some(0), error }),
                };
                let kind = if maildir_sub.is_some() {
                    FileKind::Maildir
                } else if head_is_mbox(&head[..n]) {
                    FileKind::Mbox
                } else {
                    FileKind::Opaque
                };
                (kind, Err(()))
            }
        };
        let rel_name = entry.rel.rsplit(|&b| b == b'/').next().unwrap_or(&entry.rel);
        let record = Record::File {
            path: ByteStr(entry.rel.clone()),
            kind,
            size: stat.size,
            mode: stat.mode,
            mtime: stat.mtime_ns,
            maildir: maildir_sub.map(|sub| maildir::parse_name(rel_name, sub)),
        };
        emit(Event::FileStart { entry: entry.clone(), record })?;

        let mut hasher = (kind != FileKind::Maildir).then(blake3::Hasher::new);
        let result = match content {
            Ok((data, mapped)) => {
                if let Some(h) = hasher.as_mut() {
                    if mapped {
                        h.update_rayon(&data);
                    } else {
                        h.update(&data);
                    }
                }
                self.emit_pieces(kind, &data, 0, true, mapped, &mut mbox::Splitter::new(), emit).map(|_| ())
            }
            Err(()) => self.stream_pieces(kind, entry, &open, hasher.as_mut(), emit),
        };
        if let Err(error) = result {
            if error.kind() == ErrorKind::Cancelled {
                return Err(error);
            }
            return emit(Event::FileFailed { entry: entry.clone(), offset: None, error });
        }
        if let Some(hook) = self.after_read {
            hook(&entry.abs);
        }
        let hash = hasher.map(|h| ContentId::from_hash(h.finalize()));
        emit(Event::FileEnd { entry: entry.clone(), open, hash })
    }

    /// Emit the pieces found at the start of `buf` (at file offset `base`); returns how many bytes were consumed.
    #[allow(clippy::too_many_arguments)]
    fn emit_pieces(
        &self,
        kind: FileKind,
        buf: &Bytes,
        base: u64,
        eof: bool,
        mapped: bool,
        splitter: &mut mbox::Splitter,
        emit: &mut dyn FnMut(Event) -> Result<()>,
    ) -> Result<usize> {
        match kind {
            FileKind::Maildir => {
                emit(Event::PieceIn(PieceIn::Msg {
                    offset: base,
                    from: Bytes::new(),
                    msg: buf.clone(),
                    trail: Bytes::new(),
                    mapped,
                    mbox: false,
                }))?;
                Ok(buf.len())
            }
            FileKind::Opaque => {
                // One piece per blob, so a large mapped file is never copied whole.
                for r in split::chunks(buf.len(), self.max_blob) {
                    let offset = base + r.start as u64;
                    emit(Event::PieceIn(PieceIn::Data { offset, data: buf.slice(r), mapped }))?;
                }
                Ok(buf.len())
            }
            FileKind::Mbox => {
                let mut at = 0usize;
                while let Some(seg) = splitter.next(&buf[at..], eof) {
                    let off = base + at as u64;
                    match seg {
                        mbox::Seg::Preamble { len } => {
                            let data = buf.slice(at..at + len);
                            if !(off == 0 && &data[..] == b"\xEF\xBB\xBF") {
                                emit(Event::Note {
                                    offset: off,
                                    reason: format!(
                                        "{len} bytes at offset {off} before the first From_ line are not a message; carried as opaque data"
                                    ),
                                })?;
                            }
                            emit(Event::PieceIn(PieceIn::Data { offset: off, data, mapped }))?
                        }
                        mbox::Seg::Message { from_len, msg_len, trail_len } => {
                            let m = at + from_len;
                            emit(Event::PieceIn(PieceIn::Msg {
                                offset: off,
                                from: Bytes::copy_from_slice(&buf[at..m]),
                                msg: buf.slice(m..m + msg_len),
                                trail: Bytes::copy_from_slice(&buf[m + msg_len..m + msg_len + trail_len]),
                                mapped,
                                mbox: true,
                            }))?
                        }
                    }
                    at += seg.len();
                }
                Ok(at)
            }
        }
    }

    /// Read a large file in chunks; mbox files are cut into messages across chunk boundaries.
    fn stream_pieces(
        &self,
        kind: FileKind,
        entry: &Entry,
        open: &OpenFile,
        mut hasher: Option<&mut blake3::Hasher>,
        emit: &mut dyn FnMut(Event) -> Result<()>,
    ) -> Result<()> {
        let chunk = self.policy.chunk.max(1 << 16);
        let mut pending = bytes::BytesMut::new();
        let mut base = 0u64; // file offset of pending[0]
        let mut pos = 0u64; // file offset of the next read
        let mut splitter = mbox::Splitter::new();
        let size = open.stat.size;
        loop {
            let want = match kind {
                // Opaque and Maildir data is cut at fixed blob boundaries.
                FileKind::Opaque => self.max_blob,
                FileKind::Maildir => usize::MAX,
                // Read at least as much again as is pending, so a large message costs O(n) re-scans.
                FileKind::Mbox => chunk.max(pending.len()),
            };
            let to_read = (want.min(size.saturating_sub(pos) as usize)).min(isize::MAX as usize);
            let old = pending.len();
            pending.resize(old + to_read, 0);
            let n = read_at(&open.file, &mut pending[old..], pos)
                .map_err(|e| Error::io(format!("reading {} at offset {pos}", entry.abs.display()), e))?;
            pending.truncate(old + n);
            if let Some(h) = hasher.as_deref_mut() {
                h.update(&pending[old..]);
            }
            pos += n as u64;
            let eof = n == 0 || pos >= size;
            let buf = pending.split().freeze();
            let used = self.emit_pieces(kind, &buf, base, eof, false, &mut splitter, emit)?;
            base += used as u64;
            pending.extend_from_slice(&buf[used..]);
            if eof {
                if !pending.is_empty() {
                    return Err(Error::bad_input(format!(
                        "{}: {} bytes left unsplit at offset {base}",
                        entry.abs.display(),
                        pending.len()
                    )));
                }
                return Ok(());
            }
        }
    }
}

fn read_at(file: &std::fs::File, buf: &mut [u8], offset: u64) -> std::io::Result<usize> {
    use std::os::unix::fs::FileExt;
    let mut done = 0;
    while done < buf.len() {
        match file.read_at(&mut buf[done..], offset + done as u64) {
            Ok(0) => break,
            Ok(n) => done += n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(done)
}

/// The reader thread: walk the source, carry unchanged files over, read the rest, send batches.
fn reader_thread(
    mut source: Box<dyn Source>,
    mut prev: Option<PrevCursor>,
    opts: &MigrateOptions,
    tx: std::sync::mpsc::SyncSender<Vec<Event>>,
) -> Result<()> {
    let reader = Reader { policy: &opts.read, max_blob: opts.max_blob, after_read: opts.after_read.as_ref() };
    let mut batch: Vec<Event> = Vec::new();
    let mut weight = 0usize;
    let cancelled = || Error::new(ErrorKind::Cancelled, "the collector stopped");
    let mut emit = |ev: Event| -> Result<()> {
        weight += ev.weight();
        batch.push(ev);
        if weight >= opts.batch_bytes {
            tx.send(std::mem::take(&mut batch)).map_err(|_| cancelled())?;
            weight = 0;
        }
        Ok(())
    };
    while let Some(next) = source.next_entry() {
        let entry = match next {
            Ok(e) => e,
            Err(w) => {
                emit(Event::Record(Record::Quarantine {
                    path: ByteStr(w.rel),
                    offset: None,
                    reason: w.error.to_string(),
                    stored: false,
                }))?;
                continue;
            }
        };
        match &entry.kind {
            EntryKind::Dir => {
                emit(Event::Record(Record::Dir {
                    path: ByteStr(entry.rel.clone()),
                    mode: entry.stat.mode,
                    mtime: entry.stat.mtime_ns,
                }))?;
            }
            EntryKind::Symlink { target } => {
                emit(Event::Record(Record::Symlink {
                    path: ByteStr(entry.rel.clone()),
                    target: ByteStr(target.clone()),
                }))?;
            }
            EntryKind::Special => {
                emit(Event::Record(Record::Quarantine {
                    path: ByteStr(entry.rel.clone()),
                    offset: None,
                    reason: format!(
                        "{}: not a regular file, directory or symbolic link (socket, FIFO or device); skipped",
                        entry.abs.display()
                    ),
                    stored: false,
                }))?;
            }
            EntryKind::File { maildir } => {
                let _ = maildir;
                if let Some(prev) = prev.as_mut()
                    && let Some(p) = prev.take_file(&entry.rel, entry.stat.size, entry.stat.mtime_ns)?
                {
                    emit(Event::Reused { lines: p.lines, count: p.count, messages: p.messages, size: p.size })?;
                    continue;
                }
                reader.read_file(&entry, source.as_ref(), &mut emit)?;
            }
        }
    }
    if !batch.is_empty() {
        tx.send(batch).map_err(|_| cancelled())?;
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------------------------
// Stage 4: uploads.

struct Uploader {
    handle: Handle,
    store: DynStore,
    budget: Arc<Semaphore>,
    budget_kib: u32,
    tasks: tokio::task::JoinSet<Result<u64>>,
    stored: u64,
    packs: u64,
    progress: Option<Arc<Progress>>,
}

impl Uploader {
    fn reap(&mut self) -> Result<()> {
        while let Some(done) = self.tasks.try_join_next() {
            self.stored += done.map_err(|e| Error::new(ErrorKind::Other, format!("upload task failed: {e}")))??;
        }
        Ok(())
    }

    fn upload(&mut self, sealed: SealedPack) -> Result<()> {
        self.reap()?;
        let kib = ((sealed.data.len() >> 10) as u32).clamp(1, self.budget_kib);
        let permit = self
            .handle
            .block_on(self.budget.clone().acquire_many_owned(kib))
            .map_err(|_| Error::new(ErrorKind::Cancelled, "upload budget closed"))?;
        let store = self.store.clone();
        let progress = self.progress.clone();
        self.packs += 1;
        self.tasks.spawn_on(
            async move {
                let _permit = permit;
                let pack_key = layout::pack_key(&sealed.id);
                let mut written = 0;
                // Content-addressed or freshly named: never overwrite. AlreadyExists means the bytes are there.
                if store
                    .put(&pack_key, sealed.data.clone(), PutMode::Create)
                    .await
                    .map_err(|e| e.context(format!("uploading pack {pack_key}")))?
                    == PutOutcome::Written
                {
                    written += sealed.data.len() as u64;
                }
                let index_key = layout::index_key(&sealed.id);
                if store
                    .put(&index_key, sealed.index.clone(), PutMode::Create)
                    .await
                    .map_err(|e| e.context(format!("uploading index {index_key}")))?
                    == PutOutcome::Written
                {
                    written += sealed.index.len() as u64;
                }
                if let Some(p) = progress {
                    p.stored.fetch_add(written, Ordering::Relaxed);
                }
                Ok(written)
            },
            &self.handle,
        );
        Ok(())
    }

    fn finish(&mut self) -> Result<u64> {
        while let Some(done) = self.handle.block_on(self.tasks.join_next()) {
            self.stored += done.map_err(|e| Error::new(ErrorKind::Other, format!("upload task failed: {e}")))??;
        }
        Ok(self.stored)
    }
}

// ---------------------------------------------------------------------------------------------------------------
// Stage 3: dedupe, pack, spool records.

struct Packer {
    index: Arc<BlobIndex>,
    current: Option<PackWriter>,
    pack_target: usize,
    standalone_min: usize,
    uploader: Uploader,
}

impl Packer {
    fn add(&mut self, blob: BlobOut, stats: &mut PassStats) -> Result<BlobRef> {
        if let Some(loc) = self.index.get(&blob.id) {
            stats.deduplicated_blobs += 1;
            stats.deduplicated_bytes += blob.raw_len;
            return Ok(BlobRef::new(blob.id, loc));
        }
        let Some((codec, stored)) = blob.stored else {
            return Err(Error::new(ErrorKind::Other, format!("blob {} vanished from the index", blob.id)));
        };
        stats.new_blobs += 1;
        stats.new_raw_bytes += blob.raw_len;
        let loc: BlobLoc = if stored.len() >= self.standalone_min {
            let mut w = PackWriter::new(PackId::for_large_blob(&blob.id), stored.len());
            let loc = w.add(blob.id, &stored, blob.raw_len, codec);
            self.uploader.upload(w.seal())?;
            loc
        } else {
            // Seal before the pack would outgrow its buffer: a reallocation would double the memory it holds.
            if self.current.as_ref().is_some_and(|w| !w.is_empty() && w.len() + stored.len() > self.pack_target) {
                self.seal()?;
            }
            let w = self.current.get_or_insert_with(|| PackWriter::new(PackId::fresh(), self.pack_target));
            w.add(blob.id, &stored, blob.raw_len, codec)
        };
        self.index.insert_if_absent(blob.id, loc);
        Ok(BlobRef::new(blob.id, loc))
    }

    fn seal(&mut self) -> Result<()> {
        if let Some(w) = self.current.take()
            && !w.is_empty()
        {
            self.uploader.upload(w.seal())?;
        }
        Ok(())
    }
}

/// Records of the file being migrated, held until the file is known not to have changed.
struct FileSpool {
    lines: Vec<u8>,
    count: u64,
    messages: u64,
    header_bytes: u64,
    body_bytes: u64,
    other_bytes: u64,
    kind: FileKind,
    notes: Vec<(u64, String)>,
}

fn encode(record: &Record) -> Result<Vec<u8>> {
    let mut line = serde_json::to_vec(record).map_err(|e| Error::new(ErrorKind::Other, e.to_string()))?;
    line.push(b'\n');
    Ok(line)
}

struct Collector<'a> {
    packer: Packer,
    manifest: ManifestWriter,
    stats: PassStats,
    quarantine: Vec<QuarantineItem>,
    spool: Option<FileSpool>,
    processor: Processor<'a>,
    opts: &'a MigrateOptions,
    source: &'a dyn Source,
    source_is_single: bool,
}

impl Collector<'_> {
    fn quarantine(&mut self, path: &[u8], offset: Option<u64>, reason: String, stored: bool) -> Result<()> {
        let record = Record::Quarantine { path: ByteStr(path.to_vec()), offset, reason: reason.clone(), stored };
        self.manifest.write(&record)?;
        self.stats.quarantined += 1;
        tracing::warn!(path = %String::from_utf8_lossy(path), ?offset, "quarantined: {reason}");
        self.quarantine.push(QuarantineItem {
            path: String::from_utf8_lossy(path).into_owned(),
            offset,
            reason,
            stored,
        });
        Ok(())
    }

    fn handle(&mut self, ev: Event) -> Result<()> {
        match ev {
            Event::Record(Record::Quarantine { path, offset, reason, stored }) => {
                self.quarantine(&path.0, offset, reason, stored)
            }
            Event::Record(r) => self.manifest.write(&r),
            Event::Reused { lines, count, messages, size } => {
                self.manifest.write_lines(&lines, count)?;
                self.stats.files += 1;
                self.stats.unchanged_files += 1;
                self.stats.messages += messages;
                self.stats.source_bytes += size;
                if let Some(p) = &self.opts.progress {
                    p.files.fetch_add(1, Ordering::Relaxed);
                    p.messages.fetch_add(messages, Ordering::Relaxed);
                    p.bytes.fetch_add(size, Ordering::Relaxed);
                }
                Ok(())
            }
            Event::FileStart { entry, record } => {
                let kind = match &record {
                    Record::File { kind, .. } => *kind,
                    _ => FileKind::Opaque,
                };
                drop(entry);
                self.spool = Some(FileSpool {
                    lines: encode(&record)?,
                    count: 1,
                    messages: 0,
                    header_bytes: 0,
                    body_bytes: 0,
                    other_bytes: 0,
                    kind,
                    notes: Vec::new(),
                });
                Ok(())
            }
            Event::PieceIn(p) => {
                let out = self.processor.process(Event::PieceIn(p))?;
                self.handle(out)
            }
            Event::PieceOut(p) => self.piece(p),
            Event::Note { offset, reason } => {
                let spool = self.spool.as_mut().ok_or_else(|| Error::new(ErrorKind::Other, "note outside a file"))?;
                spool.notes.push((offset, reason));
                Ok(())
            }
            Event::FileEnd { entry, open, hash } => self.file_end(entry, open, hash),
            Event::FileFailed { entry, offset, error } => {
                self.spool = None;
                self.quarantine(&entry.rel, offset, format!("{}: {error}", entry.abs.display()), false)
            }
        }
    }

    fn piece(&mut self, p: PieceOut) -> Result<()> {
        if self.spool.is_none() {
            return Err(Error::new(ErrorKind::Other, "piece outside a file"));
        }
        let record = match p {
            PieceOut::Msg { offset, from, trail, parts, hash, len, flags } => {
                let mut out_parts = Vec::with_capacity(parts.len());
                for (k, blobs) in parts {
                    let mut refs = Vec::with_capacity(blobs.len());
                    let mut bytes = 0;
                    for b in blobs {
                        bytes += b.raw_len;
                        refs.push(self.packer.add(b, &mut self.stats)?);
                    }
                    let spool = self.spool.as_mut().expect("checked above");
                    match k {
                        PartKind::Header => spool.header_bytes += bytes,
                        PartKind::Body => spool.body_bytes += bytes,
                    }
                    out_parts.push(Part { k, blobs: refs });
                }
                self.spool.as_mut().expect("checked above").messages += 1;
                Record::Msg {
                    offset,
                    from: ByteStr(from.to_vec()),
                    parts: out_parts,
                    trail: ByteStr(trail.to_vec()),
                    blake3: hash,
                    len,
                    flags,
                }
            }
            PieceOut::Data { offset, len, blobs } => {
                let mut refs = Vec::with_capacity(blobs.len());
                for b in blobs {
                    refs.push(self.packer.add(b, &mut self.stats)?);
                }
                self.spool.as_mut().expect("checked above").other_bytes += len;
                Record::Data { offset, len, blobs: refs }
            }
        };
        let spool = self.spool.as_mut().expect("checked above");
        spool.lines.extend_from_slice(&encode(&record)?);
        spool.count += 1;
        Ok(())
    }

    fn file_end(&mut self, entry: Entry, open: OpenFile, hash: Option<ContentId>) -> Result<()> {
        let mut attempt = 0;
        let mut open = open;
        let mut hash = hash;
        loop {
            let stable = source::read::unchanged(&open)?;
            if stable {
                break;
            }
            attempt += 1;
            self.spool = None;
            if attempt > self.opts.change_retries {
                return self.quarantine(
                    &entry.rel,
                    None,
                    format!(
                        "{}: changed while being read ({attempt} attempts); not stored, the next pass will retry",
                        entry.abs.display()
                    ),
                    false,
                );
            }
            tracing::info!(path = %entry.abs.display(), attempt, "file changed while being read; reading it again");
            // Re-read in this thread, processing each piece as it comes.
            let reader = Reader {
                policy: &self.opts.read,
                max_blob: self.opts.max_blob,
                after_read: self.opts.after_read.as_ref(),
            };
            let mut end = None;
            let mut failed = None;
            let source = self.source;
            reader.read_file(&entry, source, &mut |ev| match ev {
                Event::FileEnd { open, hash, .. } => {
                    end = Some((open, hash));
                    Ok(())
                }
                Event::FileFailed { offset, error, .. } => {
                    failed = Some((offset, error));
                    Ok(())
                }
                other => self.handle(other),
            })?;
            if let Some((offset, error)) = failed {
                self.spool = None;
                return self.quarantine(&entry.rel, offset, format!("{}: {error}", entry.abs.display()), false);
            }
            let (o, h) = end.expect("read_file ends with FileEnd or FileFailed");
            open = o;
            hash = h;
        }
        let mut spool = self.spool.take().ok_or_else(|| Error::new(ErrorKind::Other, "file end outside a file"))?;
        spool.lines.extend_from_slice(&encode(&Record::End { blake3: hash })?);
        spool.count += 1;
        self.manifest.write_lines(&spool.lines, spool.count)?;
        // A single-file source that is not an mbox is carried, but the operator asked for an mbox: say so.
        if self.source_is_single && spool.kind == FileKind::Opaque && open.stat.size > 0 {
            let reason = format!(
                "{}: does not start with an mbox From_ line (offset 0); carried as opaque data",
                entry.abs.display()
            );
            self.quarantine(&entry.rel, Some(0), reason, true)?;
        }
        for (offset, reason) in std::mem::take(&mut spool.notes) {
            self.quarantine(&entry.rel, Some(offset), format!("{}: {reason}", entry.abs.display()), true)?;
        }
        self.stats.files += 1;
        self.stats.messages += spool.messages;
        self.stats.source_bytes += open.stat.size;
        self.stats.read_bytes += open.stat.size;
        self.stats.header_bytes += spool.header_bytes;
        self.stats.body_bytes += spool.body_bytes;
        self.stats.other_bytes += spool.other_bytes;
        if let Some(p) = &self.opts.progress {
            p.files.fetch_add(1, Ordering::Relaxed);
            p.messages.fetch_add(spool.messages, Ordering::Relaxed);
            p.bytes.fetch_add(open.stat.size, Ordering::Relaxed);
        }
        drop(entry);
        Ok(())
    }
}

// ---------------------------------------------------------------------------------------------------------------
// The pass.

fn now_ms() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_millis() as u64).unwrap_or(0)
}

/// Make sure `store` is a mover destination (writing the format marker into an empty one).
pub async fn ensure_format(store: &DynStore) -> Result<()> {
    match store.get(layout::FORMAT_KEY).await {
        Ok(data) => {
            let marker: FormatMarker = serde_json::from_slice(&data).map_err(|e| {
                Error::corrupt(format!(
                    "{}: {} is not a mover format marker: {e}",
                    store.describe(),
                    layout::FORMAT_KEY
                ))
            })?;
            marker.check()
        }
        Err(e) if e.kind() == ErrorKind::NotFound => {
            let marker = serde_json::to_vec_pretty(&FormatMarker::current()).expect("marker serialises");
            store.put(layout::FORMAT_KEY, Bytes::from(marker), PutMode::Create).await?;
            Ok(())
        }
        Err(e) => Err(e),
    }
}

/// Check that `store` holds a mover destination (for reading: nothing is written).
pub async fn check_format(store: &DynStore) -> Result<()> {
    let data = store.get(layout::FORMAT_KEY).await.map_err(|e| {
        if e.kind() == ErrorKind::NotFound {
            Error::config(format!("{} is not a mover destination (no {})", store.describe(), layout::FORMAT_KEY))
        } else {
            e
        }
    })?;
    let marker: FormatMarker = serde_json::from_slice(&data).map_err(|e| {
        Error::corrupt(format!("{}: {} is not a mover format marker: {e}", store.describe(), layout::FORMAT_KEY))
    })?;
    marker.check()
}

/// The passes of `mailbox` in `store`, oldest first.
pub async fn passes(store: &DynStore, mailbox: &str) -> Result<Vec<u32>> {
    let mut out: Vec<u32> = store
        .list(&layout::mailbox_prefix(mailbox))
        .await?
        .iter()
        .filter_map(|m| layout::parse_manifest_key(&m.key))
        .filter(|(m, _)| m == mailbox)
        .map(|(_, p)| p)
        .collect();
    out.sort_unstable();
    Ok(out)
}

/// Read the manifest of `mailbox`, pass `pass` (or the latest pass).
pub async fn load_manifest(store: &DynStore, mailbox: &str, pass: Option<u32>) -> Result<Manifest> {
    let pass = match pass {
        Some(p) => p,
        None => *passes(store, mailbox).await?.last().ok_or_else(|| {
            Error::new(ErrorKind::NotFound, format!("mailbox {mailbox:?} has no manifest in {}", store.describe()))
        })?,
    };
    let key = layout::manifest_key(mailbox, pass);
    Manifest::parse(store.get(&key).await?, &key)
}

/// Migrate the mail store at `source` into `store` as mailbox `opts.mailbox`: one pass.
pub async fn migrate(source: &Path, store: DynStore, opts: MigrateOptions) -> Result<MigrationSummary> {
    opts.validate()?;
    let started = Instant::now();
    let started_ms = now_ms();
    let src = FsSource::open(source)?;
    ensure_format(&store).await?;
    let prev = match load_manifest(&store, &opts.mailbox, None).await {
        Ok(m) => Some(m),
        Err(e) if e.kind() == ErrorKind::NotFound => None,
        Err(e) => return Err(e.context(format!("reading the previous pass of mailbox {:?}", opts.mailbox))),
    };
    let (index, packs) = BlobIndex::load(&store).await?;
    tracing::info!(blobs = index.len(), packs, dest = %store.describe(), "dedupe index loaded");
    let index = Arc::new(index);
    let handle = Handle::current();
    let source_display = source.display().to_string();
    let store2 = store.clone();
    let opts2 = opts.clone();
    let prev2 = prev.clone();
    let (stats, quarantine, manifest) =
        tokio::task::spawn_blocking(move || run_pass(Box::new(src), prev2, index, store2, &opts2, handle))
            .await
            .map_err(|e| Error::new(ErrorKind::Other, format!("migration task failed: {e}")))??;

    let prev_header = prev.as_ref().map(|m| &m.header);
    // Nothing changed at all: keep the previous pass as the current one.
    if let Some(h) = prev_header
        && h.records_blake3.is_some()
        && h.records_blake3 == Some(manifest.records_hash())
        && stats.new_blobs == 0
    {
        let mut stats = stats;
        stats.stored_bytes_total = h.stats.stored_bytes_total;
        return Ok(MigrationSummary {
            mailbox: opts.mailbox.clone(),
            pass: h.pass,
            source: source_display,
            destination: store.describe(),
            files: stats.files,
            messages: stats.messages,
            source_bytes: stats.source_bytes,
            new_stored_bytes: stats.new_stored_bytes,
            quarantined: stats.quarantined,
            seconds: started.elapsed().as_secs_f64(),
            nothing_new: true,
            stats,
            quarantine,
        });
    }

    let mut stats = stats;
    let mut pass = prev_header.map(|h| h.pass + 1).unwrap_or(1);
    let base_total = prev_header.map(|h| h.stats.stored_bytes_total).unwrap_or(0);
    let mut header = ManifestHeader {
        format: MANIFEST_FORMAT.to_string(),
        version: MANIFEST_VERSION,
        mailbox: opts.mailbox.clone(),
        pass,
        source: source_display.clone(),
        source_is_dir: source.is_dir(),
        started_ms,
        finished_ms: now_ms(),
        tool: format!("mover-core {}", env!("CARGO_PKG_VERSION")),
        records: 0,
        body_blake3: ContentId::of(b""),
        records_blake3: None,
        stats: stats.clone(),
    };
    header.stats.stored_bytes_total = base_total + stats.new_stored_bytes;
    let draft = manifest.finish(header.clone())?;
    // The manifest's own size counts as stored.
    stats.new_stored_bytes += draft.len() as u64;
    stats.stored_bytes_total = base_total + stats.new_stored_bytes;
    header.stats = stats.clone();
    loop {
        header.pass = pass;
        let object = reframe(&draft, &header)?;
        let key = layout::manifest_key(&opts.mailbox, pass);
        match store.put(&key, object, PutMode::Create).await? {
            PutOutcome::Written => break,
            // Another writer committed this pass number first: take the next one.
            PutOutcome::AlreadyExists if pass < header_pass_limit(prev_header) => pass += 1,
            PutOutcome::AlreadyExists => {
                return Err(Error::new(
                    ErrorKind::AlreadyExists,
                    format!("could not find a free pass number for mailbox {:?}", opts.mailbox),
                ));
            }
        }
    }
    tracing::info!(mailbox = %opts.mailbox, pass, "manifest committed");
    Ok(MigrationSummary {
        mailbox: opts.mailbox.clone(),
        pass,
        source: source_display,
        destination: store.describe(),
        files: stats.files,
        messages: stats.messages,
        source_bytes: stats.source_bytes,
        new_stored_bytes: stats.new_stored_bytes,
        quarantined: stats.quarantined,
        seconds: started.elapsed().as_secs_f64(),
        nothing_new: stats.new_blobs == 0,
        stats,
        quarantine,
    })
}

fn header_pass_limit(prev: Option<&ManifestHeader>) -> u32 {
    prev.map(|h| h.pass).unwrap_or(0) + 16
}

/// Replace the header of a framed manifest object, keeping its body.
fn reframe(object: &Bytes, header: &ManifestHeader) -> Result<Bytes> {
    let (old, start) = crate::manifest::parse_header(object, "new manifest")?;
    let mut header = header.clone();
    header.records = old.records;
    header.body_blake3 = old.body_blake3;
    header.records_blake3 = old.records_blake3;
    let head = serde_json::to_vec(&header).map_err(|e| Error::new(ErrorKind::Other, e.to_string()))?;
    let mut out = Vec::with_capacity(object.len() + 64);
    out.extend_from_slice(crate::manifest::MANIFEST_MAGIC);
    out.extend_from_slice(&(head.len() as u32).to_le_bytes());
    out.extend_from_slice(&head);
    out.extend_from_slice(&object[start..]);
    Ok(Bytes::from(out))
}

type PassResult = (PassStats, Vec<QuarantineItem>, ManifestWriter);

fn run_pass(
    source: Box<dyn Source>,
    prev: Option<Manifest>,
    index: Arc<BlobIndex>,
    store: DynStore,
    opts: &MigrateOptions,
    handle: Handle,
) -> Result<PassResult> {
    let pool = {
        let mut b = rayon::ThreadPoolBuilder::new().thread_name(|i| format!("mover-cpu-{i}"));
        if let Some(n) = opts.threads {
            b = b.num_threads(n);
        }
        b.build().map_err(|e| Error::new(ErrorKind::Other, format!("starting worker threads: {e}")))?
    };
    let prev_cursor = match &prev {
        Some(m) => Some(PrevCursor { records: m.records()?.peekable() }),
        None => None,
    };
    let is_dir = source.is_dir();
    // The collector re-reads changed files itself, so it needs its own view of the source.
    let reread: Box<dyn Source> = Box::new(ReopenOnly);
    let (tx, rx) = std::sync::mpsc::sync_channel::<Vec<Event>>(opts.queue_batches);
    let reader_error: Arc<Mutex<Option<Error>>> = Arc::default();
    std::thread::scope(|scope| -> Result<PassResult> {
        let reader_error2 = reader_error.clone();
        let opts_r = opts.clone();
        std::thread::Builder::new()
            .name("mover-reader".into())
            .spawn_scoped(scope, move || {
                if let Err(e) = reader_thread(source, prev_cursor, &opts_r, tx) {
                    *reader_error2.lock().unwrap() = Some(e);
                }
            })
            .map_err(|e| Error::io("starting the reader thread", e))?;

        let budget = opts.upload_budget.unwrap_or(2 * opts.pack_target.max(opts.standalone_min));
        let budget_kib = (budget >> 10).max(1) as u32;
        let uploader = Uploader {
            handle: handle.clone(),
            store: store.clone(),
            budget: Arc::new(Semaphore::new(budget_kib as usize)),
            budget_kib,
            tasks: tokio::task::JoinSet::new(),
            stored: 0,
            packs: 0,
            progress: opts.progress.clone(),
        };
        let mut collector = Collector {
            packer: Packer {
                index: index.clone(),
                current: None,
                pack_target: opts.pack_target,
                standalone_min: opts.standalone_min,
                uploader,
            },
            manifest: ManifestWriter::new()?,
            stats: PassStats::default(),
            quarantine: Vec::new(),
            spool: None,
            processor: Processor { index: &index, level: opts.zstd_level, max_blob: opts.max_blob },
            opts,
            source: reread.as_ref(),
            source_is_single: !is_dir,
        };
        let mut run = || -> Result<()> {
            for batch in rx.iter() {
                let processor = &collector.processor;
                let out: Vec<Result<Event>> =
                    pool.install(|| batch.into_par_iter().map(|ev| processor.process(ev)).collect());
                for ev in out {
                    collector.handle(ev?)?;
                }
            }
            Ok(())
        };
        let result = run();
        drop(rx); // unblocks the reader if we stopped early
        result?;
        if let Some(e) = reader_error.lock().unwrap().take() {
            return Err(e);
        }
        collector.packer.seal()?;
        let stored = collector.packer.uploader.finish()?;
        collector.stats.new_stored_bytes = stored;
        collector.stats.packs = collector.packer.uploader.packs;
        Ok((collector.stats, collector.quarantine, collector.manifest))
    })
}

/// The collector's view of the source: it only re-opens files the reader already found.
struct ReopenOnly;

impl Source for ReopenOnly {
    fn next_entry(&mut self) -> Option<std::result::Result<Entry, source::WalkError>> {
        None
    }
    fn is_dir(&self) -> bool {
        true
    }
}
