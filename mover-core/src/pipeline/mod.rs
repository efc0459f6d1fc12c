//! The wiring: source → split + hash → dedupe → compress → pack → store, then the manifest commit.
//!
//! ```text
//!  reader thread            rayon pool                 collector thread                      tokio
//!  walk, read, split mbox ─► split, BLAKE3,          ─► dedupe, segments (zstd), pack,   ──► uploads (bounded by bytes)
//!  (batches, bounded)        zstd of large blobs        spool records
//!                            (order kept)                └─► manifest, committed after every upload is acknowledged
//! ```
//!
//! - The reader walks the source in walk order, reads each file (whole, mapped or streamed), cuts mbox files into
//!   messages and hands out batches of at most [`MigrateOptions::batch_bytes`]; at most
//!   [`MigrateOptions::queue_batches`] batches wait, so memory does not grow with the source.
//! - Each batch is a task on the worker pool (batches run side by side, results are collected in order): each message
//!   is split into header and body (and decoded attachments), every blob hashed, and large blobs the destination
//!   does not already have compressed.
//! - The collector checks each blob against the index (two messages in flight may share a new body), appends new
//!   small blobs to the open segment of their kind (header blocks, bodies, attachments, other), compresses a segment
//!   when it is full (with the destination's dictionary for its kind), packs segments, and spools the file's manifest
//!   records. When the file is done it checks that the file did not change
//!   while it was read; if it did, the spooled records are dropped and the file is read again.
//! - Sealed packs go to the store as tokio tasks, limited by [`MigrateOptions::upload_budget`] bytes in flight.
//! - The manifest is written only after every pack of the pass is acknowledged: a crash before that leaves at most
//!   unreferenced packs, whose blobs the next run finds in their indexes and does not upload again.
//!
//! Files unchanged since the previous pass (same size, permissions, modification time and status change time, and
//! not changed at about the time that pass started: `read::PrevCursor::take_file`) are carried over from the
//! previous manifest without being read.

use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use bytes::Bytes;
use tokio::runtime::Handle;
use tokio::sync::Semaphore;

use crate::compress::Codec;
use crate::error::{Error, ErrorKind, Result};
use crate::id::ContentId;
use crate::index::{BlobIndex, IndexCache};
use crate::layout::{self, FormatMarker};
use crate::manifest::{
    BlobRef, ByteStr, FileKind, MANIFEST_FORMAT, MANIFEST_VERSION, Manifest, ManifestHeader, ManifestWriter, PartKind,
    Record,
};
use crate::report::{MigrationSummary, PassStats, QuarantineItem};
use crate::source::{self, Entry, FsSource, OpenFile, ReadPolicy, Source};
use crate::split;
use crate::store::{DynStore, PutMode, PutOutcome};

mod collect;
mod process;
mod read;
mod upload;

use collect::{Collector, Packer};
use process::Processor;
use read::{PrevCursor, reader_thread};
use upload::Uploader;

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
    /// Small blobs of one kind are compressed together in segments of about this many raw bytes (reading one blob
    /// back decompresses at most its segment); blobs of at least half this size are segments of their own.
    pub segment_target: usize,
    /// Blobs whose stored size is at least this stand alone in their own object.
    pub standalone_min: usize,
    /// Parts larger than this are cut into blobs of this size.
    pub max_blob: usize,
    /// Bytes per batch handed from the reader to the workers.
    pub batch_bytes: usize,
    /// Batches that may wait between reader and workers.
    pub queue_batches: usize,
    /// Bytes of messages read but not yet packed (waiting for the workers, being processed, or waiting for the
    /// collector): the reader waits while this many are in flight. A batch is at least
    /// [`MigrateOptions::batch_bytes`] but may be one large message, and goes as soon as any of this is free, so
    /// what a pass holds is at most this plus one batch, however large the messages. A message of a quarter of this
    /// or more also waits while another such message is in flight: one large message is processed at a time.
    pub in_flight_bytes: usize,
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
    /// Store base64 and quoted-printable part bodies decoded when they re-encode exactly (attachments dedupe across
    /// messages however they were wrapped).
    pub mime: bool,
    /// Compress segments of header blocks and of bodies with the destination's zstd dictionaries (trained on the
    /// first migration that asks for them, and stored in the destination). Off by default: with 1 MiB segments
    /// they save about 1 % of the packs, less than the dictionaries themselves weigh on a small destination, and
    /// training costs about 0.1 s of both cores on the first migration (see `docs/PERFORMANCE.md`). Restore
    /// reads dictionary frames whether or not later migrations use them.
    pub dictionaries: bool,
    /// A directory for a local copy of the destination's pack indexes ([`crate::index::IndexCache`]): each pass
    /// then reads only the pack indexes this host has neither read nor written, instead of one per pack in the
    /// destination. `None` (the default): read them all from the destination.
    pub index_cache: Option<PathBuf>,
    /// Keep the destination's dedupe index from this pass for the next one given the same [`KeptIndex`]: a program
    /// that migrates mailbox after mailbox into one destination in one process (an embedding tool, a daemon, the
    /// bench) then reads only the pack indexes that are new since its previous pass, and does not build the whole
    /// table again for each pass. `None` (the default): each pass loads the index anew.
    pub keep_index: Option<KeptIndex>,
    /// Let this pass read a different source than the one the mailbox's previous pass recorded (the mail store was
    /// moved or mounted elsewhere). Without it such a pass fails before reading anything: two mailboxes given
    /// the same id (`alice` of two domains) would otherwise become passes of one mailbox, and its restore would
    /// give the later one's mail.
    pub source_moved: bool,
}

/// A destination's dedupe index kept from one pass to the next in one process ([`MigrateOptions::keep_index`]).
/// A pass leaves its index here only if it stored all its packs, and the next pass uses it only if the destination
/// still lists every pack it holds ([`BlobIndex::load_from`]). Dropping the last clone gives the memory back.
#[derive(Clone, Default)]
pub struct KeptIndex(Arc<Mutex<Option<(String, BlobIndex)>>>);

impl KeptIndex {
    /// Nothing kept yet.
    pub fn new() -> Self {
        Self::default()
    }

    /// The index kept for `dest` (a store's [`Store::describe`](crate::store::Store::describe)), taken out.
    fn take(&self, dest: &str) -> Option<BlobIndex> {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).take_if(|(d, _)| d == dest).map(|(_, i)| i)
    }

    fn put(&self, dest: String, index: BlobIndex) {
        *self.0.lock().unwrap_or_else(|e| e.into_inner()) = Some((dest, index));
    }
}

impl std::fmt::Debug for KeptIndex {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &*self.0.lock().unwrap_or_else(|e| e.into_inner()) {
            Some((dest, index)) => write!(f, "KeptIndex({dest}: {index:?})"),
            None => f.write_str("KeptIndex(empty)"),
        }
    }
}

impl std::fmt::Debug for MigrateOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MigrateOptions")
            .field("mailbox", &self.mailbox)
            .field("zstd_level", &self.zstd_level)
            .field("pack_target", &self.pack_target)
            .field("segment_target", &self.segment_target)
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
            segment_target: crate::pack::SEGMENT_TARGET,
            standalone_min: 8 << 20,
            max_blob: 16 << 20,
            batch_bytes: 1 << 20,
            queue_batches: 8,
            in_flight_bytes: 8 << 20,
            upload_budget: None,
            read: ReadPolicy::default(),
            change_retries: 3,
            threads: None,
            progress: None,
            after_read: None,
            mime: true,
            dictionaries: false,
            index_cache: None,
            keep_index: None,
            source_moved: false,
        }
    }

    fn validate(&self) -> Result<()> {
        layout::validate_mailbox(&self.mailbox)?;
        if !(1..=22).contains(&self.zstd_level) {
            return Err(Error::config(format!("zstd level {} is outside 1..=22", self.zstd_level)));
        }
        if self.pack_target < 1 << 16
            || self.max_blob < 1 << 16
            || self.batch_bytes == 0
            || self.queue_batches == 0
            || self.in_flight_bytes == 0
        {
            return Err(Error::config("pack target and blob size must be at least 64 KiB"));
        }
        if self.max_blob as u64 > crate::pack::MAX_SEGMENT {
            return Err(Error::config(format!("blob size must be at most {} MiB", crate::pack::MAX_SEGMENT >> 20)));
        }
        if !(4096..=16 << 20).contains(&self.segment_target) || self.segment_target > self.pack_target {
            return Err(Error::config("segment target must be between 4 KiB and 16 MiB, and at most the pack target"));
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

// Events between the stages.

struct BlobOut {
    id: ContentId,
    raw_len: u64,
    data: BlobData,
}

enum BlobData {
    /// A large blob the index already had when it was processed (not compressed again).
    Known,
    /// A small blob, raw: the collector appends it to the open segment of its kind.
    Raw(Bytes),
    /// A large blob, compressed by a worker: a segment of its own.
    Stored(Codec, Bytes),
}

/// A processed part of a message: blobs, or inline bytes, and the recipe of an attachment.
struct PartOut {
    kind: PartKind,
    blobs: Vec<BlobOut>,
    inline: Option<Bytes>,
    recipe: Option<crate::mime::Recipe>,
    /// Bytes this part stands for in the message.
    original_len: u64,
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
        parts: Vec<PartOut>,
        hash: ContentId,
        len: u64,
        flags: Option<String>,
        mime: Box<crate::mime::SplitStats>,
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
    Reused(read::Carry),
    FileStart {
        entry: Entry,
        record: Record,
    },
    PieceIn(PieceIn),
    PieceOut(PieceOut),
    /// The file was read to the end; `hash` is the whole-file BLAKE3 where it is recorded.
    FileEnd {
        entry: Entry,
        version: Version,
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

/// Whether a file read for this pass was still the version the walk saw once it had been read: the collector keeps
/// what was read only if so, and reads the file again otherwise.
enum Version {
    /// Read whole into memory, and compared with the walk's `lstat` right after reading; the descriptor is closed
    /// then. (Holding it until the collector gets to the file would hold one descriptor per small file in flight:
    /// thousands for a Maildir of small messages, beyond the usual limit of 1,024.)
    Checked { stat: source::Stat, unchanged: bool },
    /// Mapped or streamed: it stays open and is compared once everything derived from it has been processed (a
    /// mapped file's pages are copied out of the map only then). Such files are larger than
    /// [`ReadPolicy::whole_max`], so few are in flight at a time. (A streamed file is read whole before its end
    /// goes out and could be checked at once too; it is not, to keep one rule for large files.)
    Open(OpenFile),
}

impl Version {
    fn stat(&self) -> &source::Stat {
        match self {
            Version::Checked { stat, .. } => stat,
            Version::Open(open) => &open.stat,
        }
    }

    fn unchanged(&self) -> Result<bool> {
        match self {
            Version::Checked { unchanged, .. } => Ok(*unchanged),
            Version::Open(open) => source::read::unchanged(open),
        }
    }
}

impl Event {
    fn weight(&self) -> usize {
        match self {
            Event::PieceIn(PieceIn::Msg { msg, .. }) => msg.len() + 256,
            Event::PieceIn(PieceIn::Data { data, .. }) => data.len() + 256,
            Event::Reused(carry) => carry.lines.len(),
            _ => 256,
        }
    }
}

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
    // Count this pass's requests (the report's request economics).
    let counting = crate::store::CountingStore::new(store);
    let counters = counting.counters();
    let store: DynStore = Arc::new(counting);
    let started = Instant::now();
    let started_ms = now_ms();
    let src = FsSource::open(source)?;
    // Both are a request or two to the store; the marker decides whether the previous manifest counts.
    let (format, prev) = tokio::join!(ensure_format(&store), load_manifest(&store, &opts.mailbox, None));
    format?;
    let prev = match prev {
        Ok(m) => Some(m),
        Err(e) if e.kind() == ErrorKind::NotFound => None,
        Err(e) => return Err(e.context(format!("reading the previous pass of mailbox {:?}", opts.mailbox))),
    };
    // Recorded as an absolute path with links resolved, so that the next pass can tell whether it reads the same.
    let source_abs = std::fs::canonicalize(source).unwrap_or_else(|_| source.to_path_buf());
    let moved = prev.as_ref().is_some_and(|m| !same_source(&m.header.source, &source_abs));
    if let Some(h) = prev.as_ref().map(|m| &m.header)
        && moved
        && !opts.source_moved
    {
        return Err(Error::config(format!(
            "mailbox {:?} in {} was migrated from {} (pass {}), not from {}: is this another mailbox with the same \
             id? Give it an id of its own. If the mailbox's store moved, allow it explicitly (moverd: \
             --source-moved; the library: MigrateOptions::source_moved)",
            opts.mailbox,
            store.describe(),
            h.source,
            h.pass,
            source_abs.display()
        )));
    }
    // A delta pass is mostly the walk (listing directories, an lstat per file) and comparing each file with the
    // previous pass: the walk goes on a thread of its own. A first pass is mostly reading and compressing; there
    // the walk costs little and stays on the reader's thread.
    let src = if prev.is_some() { src.walk_ahead() } else { src };
    let index = Arc::new(LazyIndex {
        cell: std::sync::OnceLock::new(),
        keep: opts.keep_index.clone(),
        cache: opts.index_cache.as_deref().map(|dir| IndexCache::new(dir, &store)),
        store: store.clone(),
        handle: Handle::current(),
    });
    let dicts = if opts.dictionaries {
        crate::dictionary::for_migration(&store, source, opts.zstd_level).await?
    } else {
        Default::default()
    };
    let handle = Handle::current();
    let source_display = source_abs.display().to_string();
    let store2 = store.clone();
    let opts2 = opts.clone();
    let prev2 = prev.clone();
    let (stats, quarantine, manifest) =
        tokio::task::spawn_blocking(move || run_pass(Box::new(src), prev2, index, dicts, store2, &opts2, handle))
            .await
            .map_err(|e| Error::new(ErrorKind::Other, format!("migration task failed: {e}")))??;

    let prev_header = prev.as_ref().map(|m| &m.header);
    // Nothing changed at all: keep the previous pass as the current one. (A pass from a store that moved records
    // where it is now, so that the next pass does not need to be told again.)
    if let Some(h) = prev_header
        && !moved
        && h.records_blake3.is_some()
        && h.records_blake3 == Some(manifest.records_hash())
        && stats.new_blobs == 0
        && stats.racy_files == 0
    {
        let mut stats = stats;
        stats.stored_bytes_total = h.stats.stored_bytes_total;
        let done = Done { pass: h.pass, source: source_display, started, nothing_new: true, committed: false };
        return Ok(done.summary(&opts, &store, stats, quarantine, &counters));
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
    tracing::debug!(bytes = draft.len(), "manifest encoded");
    // The manifest's own size counts as stored.
    stats.new_stored_bytes += draft.len() as u64;
    stats.stored_bytes_total = base_total + stats.new_stored_bytes;
    header.stats = stats.clone();
    loop {
        header.pass = pass;
        let object = reframe(&draft, &header)?;
        let key = layout::manifest_key(&opts.mailbox, pass);
        match store.put(&key, object.clone(), PutMode::Create).await? {
            PutOutcome::Written => break,
            // This very manifest: an earlier attempt of this put was written but its answer lost, and the retry
            // found it (the bytes are all this pass's, down to its finishing time). It is committed.
            PutOutcome::AlreadyExists if store.get(&key).await.is_ok_and(|there| there == object) => break,
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
    let done = Done { pass, source: source_display, started, nothing_new: stats.new_blobs == 0, committed: true };
    Ok(done.summary(&opts, &store, stats, quarantine, &counters))
}

/// Whether a pass reading `current` (absolute, links resolved) reads the source the previous pass recorded. A
/// relative recorded path (passes written before sources were recorded absolute) cannot be told apart: it is
/// taken as the same.
fn same_source(recorded: &str, current: &Path) -> bool {
    let recorded = Path::new(recorded);
    !recorded.is_absolute() || recorded == current || std::fs::canonicalize(recorded).is_ok_and(|r| r == current)
}

/// How a pass ended, for its summary.
struct Done {
    pass: u32,
    source: String,
    started: Instant,
    nothing_new: bool,
    committed: bool,
}

impl Done {
    fn summary(
        self,
        opts: &MigrateOptions,
        store: &DynStore,
        stats: PassStats,
        quarantine: Vec<QuarantineItem>,
        counters: &crate::store::StoreCounters,
    ) -> MigrationSummary {
        MigrationSummary {
            mailbox: opts.mailbox.clone(),
            pass: self.pass,
            source: self.source,
            destination: store.describe(),
            files: stats.files,
            messages: stats.messages,
            source_bytes: stats.source_bytes,
            new_stored_bytes: stats.new_stored_bytes,
            quarantined: stats.quarantined,
            seconds: self.started.elapsed().as_secs_f64(),
            nothing_new: self.nothing_new,
            committed: self.committed,
            stats,
            quarantine,
            requests: counters.snapshot(),
        }
    }
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
    index: Arc<LazyIndex>,
    dicts: crate::dictionary::Dictionaries,
    store: DynStore,
    opts: &MigrateOptions,
    handle: Handle,
) -> Result<PassResult> {
    let pool = worker_pool(opts.threads)?;
    let prev_cursor = match &prev {
        Some(m) => Some(PrevCursor::new(m)?),
        None => None,
    };
    let racy = prev_cursor.as_ref().map(|c| c.racy.clone());
    let is_dir = source.is_dir();
    // Records the same as the previous pass's are compared with them rather than compressed (most of a delta pass).
    let manifest = match &prev {
        Some(m) => ManifestWriter::against(m)?,
        None => ManifestWriter::new()?,
    };
    let (tx, rx) = std::sync::mpsc::sync_channel::<Batch>(opts.queue_batches);
    let budget = Budget::new(opts.in_flight_bytes);
    // Each batch is processed by a task of its own on the worker pool, and the collector receives the batches'
    // results in order: the workers start on the next batch while the last large message of the previous one is
    // still being hashed (no barrier between batches), and while the collector packs and spools. Within a batch the
    // messages are processed one after the other: with several batches in flight that keeps every worker busy,
    // and splitting a 1 MiB batch across workers cost more in wake-ups and stealing than it gained.
    type Processed = std::sync::mpsc::Receiver<(Vec<Result<Event>>, Permit)>;
    let (tx_done, rx_done) = std::sync::mpsc::sync_channel::<Processed>(opts.queue_batches);
    let reader_error: Arc<Mutex<Option<Error>>> = Arc::default();
    let processor = Processor {
        index: &index,
        level: opts.zstd_level,
        max_blob: opts.max_blob,
        mime: opts.mime,
        solo_min: opts.segment_target / 2,
    };
    let mut result = std::thread::scope(|scope| -> Result<PassResult> {
        let reader_error2 = reader_error.clone();
        let index_r = &*index;
        let opts_r = opts.clone();
        std::thread::Builder::new()
            .name("mover-reader".into())
            .spawn_scoped(scope, move || {
                if let Err(e) = reader_thread(source, prev_cursor, &opts_r, index_r, tx, budget) {
                    *reader_error2.lock().unwrap() = Some(e);
                }
            })
            .map_err(|e| Error::io("starting the reader thread", e))?;

        let index_c = &index;
        let (pool_c, threads) = (pool.clone(), pool.current_num_threads());
        let collector = std::thread::Builder::new()
            .name("mover-collector".into())
            .spawn_scoped(scope, move || -> Result<PassResult> {
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
                    cache: index_c.cache.clone(),
                };
                // The collector re-reads changed files itself, so it needs its own view of the source.
                let reread = ReopenOnly;
                let mut collector = Collector {
                    packer: Packer {
                        index: index_c.clone(),
                        pool: pool_c,
                        pending: Default::default(),
                        max_pending: (2 * threads).min(8),
                        current: None,
                        sink: None,
                        open: Default::default(),
                        pack_target: opts.pack_target,
                        segment_target: opts.segment_target,
                        standalone_min: opts.standalone_min,
                        level: opts.zstd_level,
                        dicts,
                        uploader,
                        stored_by_kind: [0; 4],
                        failed: false,
                    },
                    manifest,
                    stats: PassStats::default(),
                    quarantine: Vec::new(),
                    spool: None,
                    processor: Processor {
                        index: index_c,
                        level: opts.zstd_level,
                        max_blob: opts.max_blob,
                        mime: opts.mime,
                        solo_min: opts.segment_target / 2,
                    },
                    opts,
                    source: &reread,
                    source_is_single: !is_dir,
                };
                for processed in rx_done.iter() {
                    let (out, _permit) =
                        processed.recv().map_err(|_| Error::new(ErrorKind::Other, "a message processing task died"))?;
                    for ev in out {
                        collector.handle(ev?)?;
                    }
                    // The permit goes with the batch: its bytes are free for the reader again.
                }
                tracing::debug!("collector: every message is packed; sealing the last pack");
                collector.packer.seal()?;
                let [h, b, a, o] = collector.packer.stored_by_kind;
                let k = &mut collector.stats.breakdown;
                (k.headers.stored_bytes, k.bodies.stored_bytes, k.attachments.stored_bytes, k.other.stored_bytes) =
                    (h, b, a, o);
                let stored = collector.packer.uploader.finish()?;
                tracing::debug!(stored, "collector: every pack is stored");
                collector.stats.new_stored_bytes = stored;
                collector.stats.packs = collector.packer.uploader.packs;
                Ok((collector.stats, collector.quarantine, collector.manifest))
            })
            .map_err(|e| Error::io("starting the collector thread", e))?;

        let processor = &processor;
        pool.in_place_scope(|tasks| {
            for Batch { events, permit } in rx.iter() {
                let (done, processed) = std::sync::mpsc::sync_channel(1);
                if events.iter().any(|ev| matches!(ev, Event::PieceIn(_))) {
                    tasks.spawn(move |_| {
                        let out: Vec<Result<Event>> = events.into_iter().map(|ev| processor.process(ev)).collect();
                        let _ = done.send((out, permit));
                    });
                } else {
                    // Nothing to hash or compress (files carried over, directories, links): straight on to the
                    // collector. A task would wake both workers, which spin a while before they sleep again.
                    let _ = done.send((events.into_iter().map(Ok).collect(), permit));
                }
                if tx_done.send(processed).is_err() {
                    break; // the collector stopped on an error; it is reported below
                }
            }
        });
        drop(rx); // unblocks the reader if we stopped early
        drop(tx_done); // the collector finishes what it has
        let result = collector.join().map_err(|_| Error::new(ErrorKind::Other, "the collector thread panicked"))?;
        let result = result?;
        if let Some(e) = reader_error.lock().unwrap().take() {
            return Err(e);
        }
        Ok(result)
    });
    if let (Ok((stats, ..)), Some(racy)) = (&mut result, racy) {
        stats.racy_files = racy.load(std::sync::atomic::Ordering::Relaxed);
    }
    if result.is_ok() {
        // Every pack of the pass is stored and its index object written: the index holds only blobs the
        // destination has, and the next pass of this process into it can start from it.
        LazyIndex::keep(index);
    }
    result
}

/// The destination's dedupe index, loaded by the reader just before it reads the first file that is not carried
/// over from the previous pass: a delta pass in which no file changed never lists or reads the destination's pack
/// indexes (which grow with the whole destination, not with the mailbox). Workers and the collector only see blobs
/// of files read after that.
pub(super) struct LazyIndex {
    cell: std::sync::OnceLock<BlobIndex>,
    keep: Option<KeptIndex>,
    cache: Option<IndexCache>,
    store: DynStore,
    handle: Handle,
}

impl LazyIndex {
    /// Load the index if it is not loaded yet (from a thread outside the runtime).
    fn load(&self) -> Result<&BlobIndex> {
        if let Some(index) = self.cell.get() {
            return Ok(index);
        }
        let loading = Instant::now();
        let dest = self.store.describe();
        let kept = self.keep.as_ref().and_then(|k| k.take(&dest));
        let (index, s) = self.handle.block_on(BlobIndex::load_from(&self.store, self.cache.as_ref(), kept))?;
        let ms = loading.elapsed().as_millis() as u64;
        tracing::info!(
            blobs = index.len(),
            packs = s.packs,
            kept = s.kept,
            cached = s.cached,
            read = s.fetched,
            ms,
            dest,
            "dedupe index loaded"
        );
        Ok(self.cell.get_or_init(|| index))
    }

    /// Leave the index this pass loaded (and added its packs to) in [`MigrateOptions::keep_index`], for the next
    /// pass into the same destination. Only for a pass whose packs are all stored.
    fn keep(this: Arc<Self>) {
        let Some(lazy) = Arc::into_inner(this) else { return };
        if let (Some(keep), Some(index)) = (lazy.keep, lazy.cell.into_inner()) {
            keep.put(lazy.store.describe(), index);
        }
    }

    /// The index, which the reader loaded before handing out the first piece of a file.
    fn get(&self) -> &BlobIndex {
        self.cell.get().expect("the reader loads the dedupe index before it reads the first file")
    }
}

/// Messages read and not yet packed, handed from the reader to the workers and on to the collector.
struct Batch {
    events: Vec<Event>,
    /// Its share of [`MigrateOptions::in_flight_bytes`], given back when the batch is dropped.
    permit: Permit,
}

/// [`MigrateOptions::in_flight_bytes`]: the reader takes a share for each batch and waits while the batches
/// downstream hold the whole budget. A batch is let go as soon as any of the budget is free, even one larger than
/// what is free (one large message), so the bytes in flight stay below the budget plus one batch, and a large
/// message never waits for the whole pipeline to drain.
///
/// A batch holding a large message (a quarter of the budget or more) also waits while another one is in flight: a
/// message is processed whole, and while it is, its bytes, its decoded attachments and their compressed forms are
/// all held (about three times its size), so two large messages at once were what set a pass's peak memory.
struct Budget {
    used: Mutex<Used>,
    freed: std::sync::Condvar,
    limit: usize,
}

#[derive(Default)]
struct Used {
    bytes: usize,
    large: bool,
}

impl Budget {
    fn new(limit: usize) -> Arc<Self> {
        Arc::new(Budget { used: Mutex::default(), freed: std::sync::Condvar::new(), limit })
    }

    /// Whether a message of `bytes` counts as large.
    fn is_large(&self, bytes: usize) -> bool {
        bytes >= self.limit.max(4) / 4
    }

    fn acquire(self: &Arc<Self>, bytes: usize, large: bool) -> Permit {
        let mut used = self.used.lock().unwrap_or_else(|e| e.into_inner());
        while used.bytes >= self.limit.max(1) || (large && used.large) {
            used = self.freed.wait(used).unwrap_or_else(|e| e.into_inner());
        }
        used.bytes += bytes;
        used.large |= large;
        Permit { budget: self.clone(), bytes, large }
    }
}

/// A share of the [`Budget`], returned on drop (also when a failed pass drops its batches).
struct Permit {
    budget: Arc<Budget>,
    bytes: usize,
    large: bool,
}

impl Drop for Permit {
    fn drop(&mut self) {
        let mut used = self.budget.used.lock().unwrap_or_else(|e| e.into_inner());
        used.bytes -= self.bytes;
        used.large &= !self.large;
        drop(used);
        self.budget.freed.notify_all();
    }
}

/// The process's worker pool of `threads` threads (default: one per core), started by the first migration that
/// asks for it and kept for the next ones: a daemon (or a bench) migrating mailbox after mailbox does not start
/// threads again, and each worker keeps its warm zstd contexts (about 1 MiB of tables each, which a new thread
/// would fault in and clear again).
fn worker_pool(threads: Option<usize>) -> Result<Arc<rayon::ThreadPool>> {
    static POOLS: Mutex<Vec<(usize, Arc<rayon::ThreadPool>)>> = Mutex::new(Vec::new());
    let n = threads.unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get())).max(1);
    let mut pools = POOLS.lock().unwrap_or_else(|e| e.into_inner());
    if let Some((_, p)) = pools.iter().find(|(k, _)| *k == n) {
        return Ok(p.clone());
    }
    let pool = rayon::ThreadPoolBuilder::new()
        .thread_name(|i| format!("mover-cpu-{i}"))
        .num_threads(n)
        .build()
        .map_err(|e| Error::new(ErrorKind::Other, format!("starting worker threads: {e}")))?;
    let pool = Arc::new(pool);
    pools.push((n, pool.clone()));
    Ok(pool)
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn in_flight_budget_blocks_until_bytes_come_back() {
        let budget = Budget::new(100);
        // A batch larger than the whole budget goes when nothing else is in flight.
        let big = budget.acquire(250, false);
        assert_eq!(budget.used.lock().unwrap().bytes, 250);
        let waiting = |bytes| {
            let (tx, rx) = std::sync::mpsc::channel();
            let b = budget.clone();
            let waiter = std::thread::spawn(move || {
                let p = b.acquire(bytes, false);
                tx.send(()).unwrap();
                p
            });
            (rx, waiter)
        };
        let (rx, waiter) = waiting(60);
        // The second batch waits while the first holds the budget...
        assert!(rx.recv_timeout(std::time::Duration::from_millis(100)).is_err());
        drop(big);
        // ...and goes once its bytes are given back.
        rx.recv_timeout(std::time::Duration::from_secs(10)).unwrap();
        let p = waiter.join().unwrap();
        assert_eq!(budget.used.lock().unwrap().bytes, 60);
        // While any of the budget is free, a batch goes, even one larger than what is free (one large message
        // does not wait for the pipeline to drain): the budget is exceeded by at most one batch.
        let q = budget.acquire(90, false);
        assert_eq!(budget.used.lock().unwrap().bytes, 150);
        // The budget used up, the next batch waits again.
        let (rx, waiter) = waiting(1);
        assert!(rx.recv_timeout(std::time::Duration::from_millis(100)).is_err());
        drop(q);
        rx.recv_timeout(std::time::Duration::from_secs(10)).unwrap();
        drop((p, waiter.join().unwrap()));
        assert_eq!(budget.used.lock().unwrap().bytes, 0);
    }

    #[test]
    fn one_large_message_in_flight_at_a_time() {
        let budget = Budget::new(100);
        assert!(budget.is_large(25) && !budget.is_large(24));
        let first = budget.acquire(30, true);
        let waiting = |bytes, large| {
            let (tx, rx) = std::sync::mpsc::channel();
            let b = budget.clone();
            let waiter = std::thread::spawn(move || {
                let p = b.acquire(bytes, large);
                tx.send(()).unwrap();
                p
            });
            (rx, waiter)
        };
        // Small batches go past a large one in flight while the budget has room...
        let small = budget.acquire(10, false);
        // ...a second large one waits for the first, although the budget has room for it...
        let (rx, waiter) = waiting(30, true);
        assert!(rx.recv_timeout(std::time::Duration::from_millis(100)).is_err());
        drop(small);
        assert!(rx.recv_timeout(std::time::Duration::from_millis(100)).is_err());
        // ...and goes when the first is given back.
        drop(first);
        rx.recv_timeout(std::time::Duration::from_secs(10)).unwrap();
        let second = waiter.join().unwrap();
        assert!(budget.used.lock().unwrap().large);
        drop(second);
        let used = budget.used.lock().unwrap();
        assert_eq!((used.bytes, used.large), (0, false));
    }

    /// A store that records how each pack object was written: streamed through `writer`, or whole with `put`.
    #[derive(Debug)]
    struct Spy {
        inner: crate::store::LocalStore,
        resumes: bool,
        streamed: Mutex<Vec<String>>,
        put: Mutex<Vec<String>>,
        /// Fail the write of this many writes of 64 KiB or more through `writer` (0: none).
        fail_big_write: u64,
        /// The first put of a manifest is written, and then answered with a transient error (a lost answer).
        lose_manifest_answer: std::sync::atomic::AtomicBool,
        big_writes: Arc<AtomicU64>,
    }

    impl Spy {
        fn new(dest: &Path) -> Self {
            Spy {
                inner: crate::store::LocalStore::create(dest).unwrap(),
                resumes: false,
                streamed: Mutex::default(),
                put: Mutex::default(),
                fail_big_write: 0,
                lose_manifest_answer: false.into(),
                big_writes: Arc::default(),
            }
        }
    }

    /// A writer whose `fail`-th write of 64 KiB or more (counted over all writers of one store) fails.
    struct Failing {
        inner: Box<dyn crate::store::ObjectWriter>,
        fail: u64,
        big_writes: Arc<AtomicU64>,
    }

    impl crate::store::ObjectWriter for Failing {
        fn write(&mut self, data: &[u8]) -> Result<()> {
            if data.len() >= 64 << 10
                && self.big_writes.fetch_add(1, std::sync::atomic::Ordering::SeqCst) + 1 == self.fail
            {
                return Err(Error::new(ErrorKind::Other, "injected: no space left on device"));
            }
            self.inner.write(data)
        }
        fn written(&self) -> u64 {
            self.inner.written()
        }
        fn commit(self: Box<Self>) -> Result<PutOutcome> {
            self.inner.commit()
        }
    }

    #[async_trait::async_trait]
    impl crate::store::Store for Spy {
        fn describe(&self) -> String {
            self.inner.describe()
        }
        async fn put(&self, key: &str, data: Bytes, mode: PutMode) -> Result<PutOutcome> {
            self.put.lock().unwrap().push(key.to_string());
            let outcome = self.inner.put(key, data, mode).await;
            if key.ends_with(".manifest") && self.lose_manifest_answer.swap(false, std::sync::atomic::Ordering::SeqCst)
            {
                return Err(Error::new(ErrorKind::Transient, "injected: connection reset before the answer"));
            }
            outcome
        }
        async fn get(&self, key: &str) -> Result<Bytes> {
            self.inner.get(key).await
        }
        async fn get_range(&self, key: &str, range: std::ops::Range<u64>) -> Result<Bytes> {
            self.inner.get_range(key, range).await
        }
        async fn head(&self, key: &str) -> Result<Option<crate::store::ObjectMeta>> {
            self.inner.head(key).await
        }
        async fn list(&self, prefix: &str) -> Result<Vec<crate::store::ObjectMeta>> {
            self.inner.list(prefix).await
        }
        async fn delete(&self, key: &str) -> Result<()> {
            self.inner.delete(key).await
        }
        fn writer(&self, key: &str, mode: PutMode) -> Result<Option<Box<dyn crate::store::ObjectWriter>>> {
            self.streamed.lock().unwrap().push(key.to_string());
            let Some(inner) = self.inner.writer(key, mode)? else { return Ok(None) };
            let (fail, big_writes) = (self.fail_big_write, self.big_writes.clone());
            Ok(Some(Box::new(Failing { inner, fail, big_writes })))
        }
        fn resumes_puts(&self) -> bool {
            self.resumes
        }
    }

    /// A blob of 8 MiB or more stored gets a pack of its own, named by its content. It is streamed to its object
    /// like every other pack (never copied whole into a buffer), except into a store whose puts do more for it (S3:
    /// a journaled put is resumed by the next pass after a crash): there it is put whole, as before streaming.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_large_blobs_own_pack_is_streamed_unless_the_store_resumes_puts() {
        let src = tempfile::tempdir().unwrap();
        let mut noise = Vec::with_capacity(10 << 20);
        let mut x = 0x9e37_79b9_7f4a_7c15u64;
        while noise.len() < 10 << 20 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            noise.extend_from_slice(&x.to_le_bytes());
        }
        std::fs::write(src.path().join("archive.bin"), &noise).unwrap();
        std::fs::write(src.path().join("note.txt"), b"a small file").unwrap();
        for resumes in [false, true] {
            let dest = tempfile::tempdir().unwrap();
            let spy = Arc::new(Spy { resumes, ..Spy::new(dest.path()) });
            let s = migrate(src.path(), spy.clone(), MigrateOptions::new("m")).await.unwrap();
            assert_eq!(s.stats.packs, 2, "the large blob's pack and the small file's");
            let packs =
                |keys: &Mutex<Vec<String>>| keys.lock().unwrap().iter().filter(|k| k.starts_with("packs/")).count();
            assert_eq!(
                (packs(&spy.streamed), packs(&spy.put)),
                if resumes { (1, 1) } else { (2, 0) },
                "resumes: {resumes}"
            );
            // Each pack object is whole: its own table, read back from its bytes, gives its index.
            let no_dict = |d: u32| Err(Error::corrupt(format!("no dictionary {d}")));
            let keys: Vec<String> =
                spy.put.lock().unwrap().iter().chain(spy.streamed.lock().unwrap().iter()).cloned().collect();
            let mut checked = 0;
            for key in &keys {
                let Some(hex) = key.strip_prefix("packs/").and_then(|k| k.rsplit('/').next()?.strip_suffix(".pack"))
                else {
                    continue;
                };
                let id: crate::id::PackId = hex.parse().unwrap();
                use crate::store::Store as _;
                let (pack, index) = (spy.get(key).await.unwrap(), spy.get(&layout::index_key(&id)).await.unwrap());
                let index = crate::pack::decode_index(id, &index).unwrap();
                assert_eq!(crate::pack::index_from_pack(id, &pack, &no_dict).unwrap(), index, "{key}");
                checked += 1;
            }
            assert_eq!(checked, 2);
            let to = tempfile::tempdir().unwrap();
            let to = to.path().join("m");
            let r = crate::restore::restore(spy.clone(), "m", &to, &Default::default()).await.unwrap();
            assert!(r.errors.is_empty(), "{:?}", r.errors);
            assert_eq!(std::fs::read(to.join("archive.bin")).unwrap(), noise);
        }
    }

    /// The store failing while the collector re-reads a file that changed while it was read fails the pass. (It
    /// was taken for a failed read of the file: the file was quarantined and the pass committed, with a pack whose
    /// table names a segment that was never written, and that segment's blobs in the dedupe index.)
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_store_failure_while_a_changed_file_is_read_again_fails_the_pass() {
        let src = tempfile::tempdir().unwrap();
        let file = src.path().join("archive.bin");
        let noise = |seed: u64| {
            let mut x = seed;
            (0..1 << 17)
                .flat_map(|_| {
                    x ^= x << 13;
                    x ^= x >> 7;
                    x ^= x << 17;
                    x.to_le_bytes()
                })
                .collect::<Vec<u8>>()
        };
        std::fs::write(&file, noise(1)).unwrap();
        let dest = tempfile::tempdir().unwrap();
        // The file's 1 MiB piece is written once as read, and again as read after it changed: that write fails.
        let spy = Arc::new(Spy { fail_big_write: 2, ..Spy::new(dest.path()) });
        let mut opts = MigrateOptions::new("m");
        let changed = Arc::new(std::sync::atomic::AtomicBool::new(false));
        opts.after_read = Some(Arc::new(move |p: &Path| {
            if !changed.swap(true, std::sync::atomic::Ordering::SeqCst) {
                std::fs::write(p, noise(2)).unwrap();
            }
        }));
        let result = migrate(src.path(), spy.clone(), opts).await;
        let err = result.expect_err("the pass fails");
        assert!(err.to_string().contains("injected"), "{err}");
        assert_eq!(spy.big_writes.load(std::sync::atomic::Ordering::SeqCst), 2);
    }

    /// A manifest put whose answer is lost is retried (RetryStore) and finds the object there: when the object is
    /// this very manifest, the pass is committed under its number, not committed again as the next pass.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_manifest_whose_answer_was_lost_is_committed_once() {
        let src = tempfile::tempdir().unwrap();
        std::fs::write(src.path().join("note.txt"), b"a small file").unwrap();
        let dest = tempfile::tempdir().unwrap();
        let spy = Arc::new(Spy { lose_manifest_answer: true.into(), ..Spy::new(dest.path()) });
        let fast = crate::store::RetryConfig { max_attempts: 3, base_backoff_ms: 1, max_backoff_ms: 1 };
        let store: DynStore = Arc::new(crate::store::RetryStore::new(spy.clone(), fast).unwrap());
        let s = migrate(src.path(), store.clone(), MigrateOptions::new("m")).await.unwrap();
        assert_eq!(s.pass, 1, "{s:?}");
        let manifests = store.list("mailboxes/").await.unwrap();
        assert_eq!(manifests.len(), 1, "{manifests:?}");
        // The next pass is pass 2, and finds nothing new.
        let again = migrate(src.path(), store.clone(), MigrateOptions::new("m")).await.unwrap();
        assert!(again.nothing_new, "{again:?}");
        let to = tempfile::tempdir().unwrap();
        let r = crate::restore::restore(store, "m", &to.path().join("m"), &Default::default()).await.unwrap();
        assert!(r.errors.is_empty(), "{:?}", r.errors);
        assert_eq!(std::fs::read(to.path().join("m/note.txt")).unwrap(), b"a small file");
    }
}
