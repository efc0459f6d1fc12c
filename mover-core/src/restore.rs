//! Reading a mailbox back: restore it into a directory, or verify it without writing anything.
//!
//! Both replay the mailbox's manifest record by record through the same engine ([`Replayer`]): every blob is read
//! (with range reads, through small caches of pack indexes, pack chunks and decompressed segments, since a pass's
//! blobs sit in its packs in source order), and checked against the content id its pack's index records; every message is checked against the BLAKE3 recorded at
//! migration; every file against its size and, where recorded, its whole-file BLAKE3. Restore writes what it replays
//! under the target directory; verify only counts. Restore needs nothing but the destination: no local state.
//!
//! Restore never writes outside its target: manifest paths must be relative, without `.` or `..` components, and
//! never below a symbolic link the restore itself created; files are created with `create_new`, so an existing file
//! is never overwritten.

use std::collections::HashSet;
use std::ffi::OsStr;
use std::fs::{self, File};
use std::io::{BufWriter, Write};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use serde::{Deserialize, Serialize};
use tokio::runtime::Handle;

use crate::compress;
use crate::error::{Error, ErrorKind, Result};
use crate::id::{ContentId, PackId};
use crate::layout;
use crate::manifest::{BlobRef, Manifest, Record};
use crate::pack::{PackIndex, decode_index, decode_segment, index_from_pack};
use crate::pipeline::{check_format, load_manifest};
use crate::store::DynStore;

/// Size of the pack chunks fetched and cached while replaying.
const CHUNK: u64 = 4 << 20;
/// Pack chunks kept.
const CACHE_CHUNKS: usize = 8;
/// Pack indexes kept (a mailbox's blobs sit in few packs, mostly in source order).
const CACHE_INDEXES: usize = 64;
/// Decompressed segments kept: at most this many, and at most this many bytes together.
const CACHE_SEGMENTS: usize = 16;
const CACHE_SEGMENT_BYTES: usize = 64 << 20;

/// Reads blobs by reference, verifying each against the content id its pack's index records.
pub struct BlobReader {
    store: DynStore,
    handle: Handle,
    cache: Vec<(PackId, u64, Bytes, u64)>,
    indexes: Vec<(Arc<PackIndex>, u64)>,
    /// Packs whose index could not be read or rebuilt: the error, so that every later blob of the pack fails at once.
    unreadable: Vec<(PackId, String)>,
    /// Pack index objects that were missing or damaged and were rebuilt from their packs.
    pub repaired: Vec<String>,
    segments: Vec<(PackId, u32, Arc<Vec<u8>>, u64)>,
    tick: u64,
    /// Blobs read and verified.
    pub blobs: u64,
    /// Bytes fetched from the store.
    pub fetched: u64,
}

impl std::fmt::Debug for BlobReader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "BlobReader({}, {} blobs)", self.store.describe(), self.blobs)
    }
}

/// Drop the least recently used entry of `cache` when it holds `max`.
fn evict<T>(cache: &mut Vec<T>, max: usize, tick: impl Fn(&T) -> u64) {
    if cache.len() >= max
        && let Some(oldest) = cache.iter().enumerate().min_by_key(|(_, e)| tick(e)).map(|(i, _)| i)
    {
        cache.swap_remove(oldest);
    }
}

impl BlobReader {
    /// A reader over `store`; blocking calls run on `handle`'s runtime (call from a blocking thread).
    pub fn new(store: DynStore, handle: Handle) -> Self {
        BlobReader {
            store,
            handle,
            cache: Vec::new(),
            indexes: Vec::new(),
            unreadable: Vec::new(),
            repaired: Vec::new(),
            segments: Vec::new(),
            tick: 0,
            blobs: 0,
            fetched: 0,
        }
    }

    fn chunk(&mut self, pack: PackId, k: u64) -> Result<Bytes> {
        self.tick += 1;
        if let Some(e) = self.cache.iter_mut().find(|e| e.0 == pack && e.1 == k) {
            e.3 = self.tick;
            return Ok(e.2.clone());
        }
        let key = layout::pack_key(&pack);
        let range = k.saturating_mul(CHUNK)..k.saturating_add(1).saturating_mul(CHUNK);
        let data = self.handle.block_on(self.store.get_range(&key, range))?;
        self.fetched += data.len() as u64;
        evict(&mut self.cache, CACHE_CHUNKS, |e| e.3);
        self.cache.push((pack, k, data.clone(), self.tick));
        Ok(data)
    }

    /// Bytes `start..start + len` of a pack object, through the chunk cache when they lie in one chunk.
    fn stored(&mut self, pack: PackId, start: u64, len: u64) -> Result<Bytes> {
        let key = layout::pack_key(&pack);
        let end = start.checked_add(len).ok_or_else(|| Error::corrupt(format!("{key}: segment out of range")))?;
        let stored = if len > 0 && start / CHUNK == (end - 1) / CHUNK {
            let k = start / CHUNK;
            let chunk = self.chunk(pack, k)?;
            let (a, b) = ((start - k * CHUNK) as usize, (end - k * CHUNK) as usize);
            if b > chunk.len() {
                return Err(Error::corrupt(format!("{key}: bytes {start}..{end} beyond the end of the pack")));
            }
            chunk.slice(a..b)
        } else if len == 0 {
            Bytes::new()
        } else {
            let data = self.handle.block_on(self.store.get_range(&key, start..end))?;
            self.fetched += data.len() as u64;
            data
        };
        if stored.len() as u64 != len {
            return Err(Error::corrupt(format!("{key}: bytes {start}..{end}: got {} bytes", stored.len())));
        }
        Ok(stored)
    }

    fn dict_loader(&self) -> impl Fn(u32) -> Result<&'static compress::Dictionary> + use<> {
        let (store, handle) = (self.store.clone(), self.handle.clone());
        move |id| handle.block_on(crate::dictionary::load(&store, id))
    }

    /// The index of `pack`: its index object, or rebuilt from the pack itself when that object is missing.
    fn pack_index(&mut self, pack: PackId) -> Result<Arc<PackIndex>> {
        self.tick += 1;
        if let Some(e) = self.indexes.iter_mut().find(|e| e.0.pack == pack) {
            e.1 = self.tick;
            return Ok(e.0.clone());
        }
        if let Some((_, why)) = self.unreadable.iter().find(|u| u.0 == pack) {
            return Err(Error::corrupt(why.clone()));
        }
        let key = layout::index_key(&pack);
        let from_object = match self.handle.block_on(self.store.get(&key)) {
            Ok(data) => {
                self.fetched += data.len() as u64;
                decode_index(pack, &data)
            }
            Err(e) => Err(e),
        };
        let index = match from_object {
            Ok(index) => index,
            // A missing or damaged index object: the pack's own table locates every blob, and hashing gives the ids
            // (what they are checked against then is each message's and file's BLAKE3 in the manifest).
            Err(e) if matches!(e.kind(), ErrorKind::NotFound | ErrorKind::Corrupt) => {
                let pack_key = layout::pack_key(&pack);
                tracing::warn!(%key, error = %e, "pack index unusable; rebuilding it from {pack_key}");
                let rebuilt = self
                    .handle
                    .block_on(self.store.get(&pack_key))
                    .inspect(|data| self.fetched += data.len() as u64)
                    .and_then(|data| index_from_pack(pack, &data, &self.dict_loader()));
                match rebuilt {
                    Ok(index) => {
                        self.repaired.push(format!("{key}: {e}; rebuilt from {pack_key}"));
                        index
                    }
                    Err(e2) if matches!(e2.kind(), ErrorKind::NotFound | ErrorKind::Corrupt) => {
                        let why = format!("pack {pack} is unreadable: index: {e}; pack: {e2}");
                        self.unreadable.push((pack, why.clone()));
                        return Err(Error::new(e2.kind(), why));
                    }
                    Err(e2) => return Err(e2),
                }
            }
            Err(e) => return Err(e),
        };
        let index = Arc::new(index);
        evict(&mut self.indexes, CACHE_INDEXES, |e| e.1);
        self.indexes.push((index.clone(), self.tick));
        Ok(index)
    }

    /// Segment `seg` of `pack`, decompressed.
    fn segment(&mut self, index: &PackIndex, seg: u32) -> Result<Arc<Vec<u8>>> {
        self.tick += 1;
        let pack = index.pack;
        if let Some(e) = self.segments.iter_mut().find(|e| e.0 == pack && e.1 == seg) {
            e.3 = self.tick;
            return Ok(e.2.clone());
        }
        let s = *index.segment(seg).ok_or_else(|| {
            Error::corrupt(format!("pack {pack} has no segment {seg} (its index has {})", index.segments.len()))
        })?;
        let stored = self.stored(pack, s.offset, s.len)?;
        let raw = decode_segment(&stored, &s, &self.dict_loader())
            .map_err(|e| e.context(format!("segment {seg} of pack {pack} at offset {}", s.offset)))?;
        let raw = Arc::new(raw);
        if raw.len() <= CACHE_SEGMENT_BYTES / 4 {
            evict(&mut self.segments, CACHE_SEGMENTS, |e| e.3);
            while self.segments.iter().map(|e| e.2.len()).sum::<usize>() + raw.len() > CACHE_SEGMENT_BYTES {
                evict(&mut self.segments, 1, |e| e.3);
            }
            self.segments.push((pack, seg, raw.clone(), self.tick));
        }
        Ok(raw)
    }

    /// The raw bytes of a blob, checked against the id its pack's index records.
    pub fn read(&mut self, r: &BlobRef) -> Result<Vec<u8>> {
        let index = self.pack_index(r.pack)?;
        let where_ = || format!("pack {} segment {} offset {}", r.pack, r.seg, r.offset);
        let entry = index.entry_at(r.seg, r.offset).filter(|e| e.loc.raw_len == r.raw_len).ok_or_else(|| {
            Error::corrupt(format!("no blob of {} bytes at {} in the pack's index", r.raw_len, where_()))
        })?;
        let id = entry.id;
        let seg = self.segment(&index, r.seg)?;
        let raw = seg
            .get(r.offset as usize..(r.offset + r.raw_len) as usize)
            .ok_or_else(|| Error::corrupt(format!("blob {id} at {}: beyond the end of its segment", where_())))?;
        if ContentId::of(raw) != id {
            return Err(Error::corrupt(format!("blob {id} at {}: content does not match its id", where_())));
        }
        self.blobs += 1;
        Ok(raw.to_vec())
    }
}

/// Where replayed bytes go.
pub trait Sink {
    /// A directory.
    fn dir(&mut self, rel: &[u8], mode: u32, mtime: i64) -> Result<()>;
    /// A symbolic link.
    fn symlink(&mut self, rel: &[u8], target: &[u8]) -> Result<()>;
    /// Start of a regular file.
    fn file_start(&mut self, rel: &[u8]) -> Result<()>;
    /// Bytes of the current file.
    fn write(&mut self, data: &[u8]) -> Result<()>;
    /// End of the current file, after all checks passed.
    fn file_end(&mut self, mode: u32, mtime: i64) -> Result<()>;
    /// The current file failed a check: clean up.
    fn file_abort(&mut self);
}

/// Counts of a replay.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct ReplayReport {
    /// Mailbox.
    pub mailbox: String,
    /// Pass replayed.
    pub pass: u32,
    /// Regular files replayed correctly.
    pub files: u64,
    /// Messages checked.
    pub messages: u64,
    /// Directories.
    pub dirs: u64,
    /// Symbolic links.
    pub symlinks: u64,
    /// Bytes of files replayed.
    pub bytes: u64,
    /// Blobs read and checked.
    pub blobs: u64,
    /// Items that were quarantined at migration (not in the store, or carried opaque).
    pub quarantined: u64,
    /// Every mismatch or unreadable object, with what it concerns.
    pub errors: Vec<String>,
    /// Damage that was worked around: a pack index object that was missing or damaged and was rebuilt from its
    /// pack. The mailbox is intact; the destination needs repair (verify fails on these, restore does not).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub repaired: Vec<String>,
}

struct CurrentFile {
    rel: Vec<u8>,
    size: u64,
    mode: u32,
    mtime: i64,
    written: u64,
    hasher: blake3::Hasher,
    failed: bool,
}

/// Replays a manifest through a [`Sink`], checking everything.
pub struct Replayer<'a, S: Sink> {
    reader: &'a mut BlobReader,
    sink: S,
    report: ReplayReport,
    current: Option<CurrentFile>,
}

impl<'a, S: Sink> Replayer<'a, S> {
    /// A replayer reading through `reader` into `sink`.
    pub fn new(reader: &'a mut BlobReader, sink: S) -> Self {
        Replayer { reader, sink, report: ReplayReport::default(), current: None }
    }

    fn fail(&mut self, what: String) {
        tracing::error!("{what}");
        self.report.errors.push(what);
        if let Some(c) = self.current.as_mut()
            && !c.failed
        {
            c.failed = true;
            self.sink.file_abort();
        }
    }

    fn emit(&mut self, data: &[u8]) -> Result<()> {
        let c = self.current.as_mut().ok_or_else(|| Error::corrupt("manifest has file content outside a file"))?;
        if c.failed {
            return Ok(());
        }
        c.hasher.update(data);
        c.written += data.len() as u64;
        self.sink.write(data)
    }

    fn blobs(&mut self, refs: &[BlobRef], msg_hasher: Option<&mut blake3::Hasher>) -> Result<bool> {
        let mut h = msg_hasher;
        for r in refs {
            match self.reader.read(r) {
                Ok(raw) => {
                    if let Some(h) = h.as_deref_mut() {
                        h.update(&raw);
                    }
                    self.emit(&raw)?;
                }
                Err(e) if matches!(e.kind(), ErrorKind::Corrupt | ErrorKind::NotFound) => {
                    let path =
                        self.current.as_ref().map(|c| String::from_utf8_lossy(&c.rel).into_owned()).unwrap_or_default();
                    self.fail(format!("{path}: {e}"));
                    return Ok(false);
                }
                Err(e) => return Err(e),
            }
        }
        Ok(true)
    }

    /// Emit one part of a message; `false` when it could not be rebuilt (the failure is recorded).
    fn part(&mut self, p: &crate::manifest::Part, h: &mut blake3::Hasher) -> Result<bool> {
        if let Some(data) = &p.data {
            h.update(&data.0);
            self.emit(&data.0)?;
            return Ok(true);
        }
        let Some(recipe) = &p.recipe else { return self.blobs(&p.blobs, Some(h)) };
        // An attachment: its blobs are the decoded content; re-encode it with its recipe.
        let path = || self.current.as_ref().map(|c| String::from_utf8_lossy(&c.rel).into_owned()).unwrap_or_default();
        if let Err(e) = recipe.validate() {
            let what = format!("{}: attachment recipe not understood by this build: {e}", path());
            self.fail(what);
            return Ok(false);
        }
        let mut decoded = Vec::new();
        for r in &p.blobs {
            match self.reader.read(r) {
                Ok(raw) => decoded.extend_from_slice(&raw),
                Err(e) if matches!(e.kind(), ErrorKind::Corrupt | ErrorKind::NotFound) => {
                    let what = format!("{}: {e}", path());
                    self.fail(what);
                    return Ok(false);
                }
                Err(e) => return Err(e),
            }
        }
        let encoded = crate::mime::encode(&decoded, recipe);
        h.update(&encoded);
        self.emit(&encoded)?;
        Ok(true)
    }

    /// Replay every record of `manifest`.
    pub fn run(mut self, manifest: &Manifest) -> Result<(ReplayReport, S)> {
        self.report.mailbox = manifest.header.mailbox.clone();
        self.report.pass = manifest.header.pass;
        for rec in manifest.records()? {
            let (rec, _) = rec?;
            self.record(rec)?;
        }
        if self.current.is_some() {
            self.fail("manifest ends inside a file".to_string());
        }
        self.report.blobs = self.reader.blobs;
        self.report.repaired = self.reader.repaired.clone();
        Ok((self.report, self.sink))
    }

    fn record(&mut self, rec: Record) -> Result<()> {
        match rec {
            Record::Dir { path, mode, mtime } => {
                self.report.dirs += 1;
                self.sink.dir(&path.0, mode, mtime)
            }
            Record::Symlink { path, target } => {
                self.report.symlinks += 1;
                self.sink.symlink(&path.0, &target.0)
            }
            Record::File { path, size, mode, mtime, .. } => {
                if self.current.is_some() {
                    return Err(Error::corrupt("manifest starts a file inside a file"));
                }
                let mut c = CurrentFile {
                    rel: path.0.clone(),
                    size,
                    mode,
                    mtime,
                    written: 0,
                    hasher: blake3::Hasher::new(),
                    failed: false,
                };
                if let Err(e) = self.sink.file_start(&path.0) {
                    if e.kind() == ErrorKind::Config || e.kind() == ErrorKind::AlreadyExists {
                        c.failed = true;
                        self.current = Some(c);
                        self.report.errors.push(e.to_string());
                        return Ok(());
                    }
                    return Err(e);
                }
                self.current = Some(c);
                Ok(())
            }
            Record::Msg { from, parts, trail, blake3: want, len, offset, .. } => {
                self.emit(&from.0)?;
                let mut h = blake3::Hasher::new();
                let mut ok = true;
                for p in &parts {
                    if !self.part(p, &mut h)? {
                        ok = false;
                        break;
                    }
                }
                if ok {
                    let got = ContentId::from_hash(h.finalize());
                    if got != want {
                        let path = self
                            .current
                            .as_ref()
                            .map(|c| String::from_utf8_lossy(&c.rel).into_owned())
                            .unwrap_or_default();
                        self.fail(format!(
                            "{path}: message at offset {offset} ({len} bytes) does not match its recorded BLAKE3"
                        ));
                    }
                }
                self.report.messages += 1;
                self.emit(&trail.0)
            }
            Record::Data { blobs, .. } => self.blobs(&blobs, None).map(|_| ()),
            Record::End { blake3: want } => {
                let c =
                    self.current.take().ok_or_else(|| Error::corrupt("manifest ends a file that was not started"))?;
                let path = String::from_utf8_lossy(&c.rel).into_owned();
                if c.failed {
                    return Ok(());
                }
                let problem = if c.written != c.size {
                    Some(format!("{path}: rebuilt {} bytes, recorded size is {}", c.written, c.size))
                } else if want.is_some_and(|w| ContentId::from_hash(c.hasher.finalize()) != w) {
                    Some(format!("{path}: rebuilt file does not match its recorded BLAKE3"))
                } else {
                    None
                };
                if let Some(problem) = problem {
                    tracing::error!("{problem}");
                    self.report.errors.push(problem);
                    self.sink.file_abort();
                    return Ok(());
                }
                self.sink.file_end(c.mode, c.mtime)?;
                self.report.files += 1;
                self.report.bytes += c.written;
                Ok(())
            }
            Record::Quarantine { .. } => {
                self.report.quarantined += 1;
                Ok(())
            }
        }
    }
}

/// A sink that writes nothing (verify).
#[derive(Debug, Default)]
pub struct NullSink;

impl Sink for NullSink {
    fn dir(&mut self, _: &[u8], _: u32, _: i64) -> Result<()> {
        Ok(())
    }
    fn symlink(&mut self, _: &[u8], _: &[u8]) -> Result<()> {
        Ok(())
    }
    fn file_start(&mut self, _: &[u8]) -> Result<()> {
        Ok(())
    }
    fn write(&mut self, _: &[u8]) -> Result<()> {
        Ok(())
    }
    fn file_end(&mut self, _: u32, _: i64) -> Result<()> {
        Ok(())
    }
    fn file_abort(&mut self) {}
}

/// A sink that rebuilds the tree under a directory.
#[derive(Debug)]
pub struct DirSink {
    root: PathBuf,
    links: HashSet<Vec<u8>>,
    dirs: Vec<(PathBuf, u32, i64)>,
    file: Option<(PathBuf, BufWriter<File>)>,
}

fn time_of(ns: i64) -> SystemTime {
    if ns >= 0 {
        UNIX_EPOCH + Duration::from_nanos(ns as u64)
    } else {
        UNIX_EPOCH - Duration::from_nanos(ns.unsigned_abs())
    }
}

impl DirSink {
    /// Rebuild under `root` (created if missing).
    pub fn new(root: impl Into<PathBuf>) -> Result<Self> {
        let root = root.into();
        fs::create_dir_all(&root).map_err(|e| Error::io(format!("creating restore target {}", root.display()), e))?;
        Ok(DirSink { root, links: HashSet::new(), dirs: Vec::new(), file: None })
    }

    /// The target path of a manifest path, refusing anything that would leave the target.
    fn target(&self, rel: &[u8]) -> Result<PathBuf> {
        let bad =
            |why: &str| Error::config(format!("refusing manifest path {:?}: {why}", String::from_utf8_lossy(rel)));
        if rel.is_empty() || rel.starts_with(b"/") {
            return Err(bad("not a relative path"));
        }
        let mut prefix = Vec::new();
        for comp in rel.split(|&b| b == b'/') {
            if comp.is_empty() || comp == b"." || comp == b".." || comp.contains(&0) {
                return Err(bad("empty, '.' or '..' component"));
            }
            if !prefix.is_empty() && self.links.contains(&prefix) {
                return Err(bad("it lies below a symbolic link"));
            }
            if !prefix.is_empty() {
                prefix.push(b'/');
            }
            prefix.extend_from_slice(comp);
        }
        Ok(self.root.join(OsStr::from_bytes(rel)))
    }

    /// Apply directory permissions and times, deepest first (writing files changes a directory's mtime).
    pub fn finish(mut self) -> Result<()> {
        self.dirs.sort_by(|a, b| b.0.cmp(&a.0));
        for (path, mode, mtime) in self.dirs.drain(..) {
            use std::os::unix::fs::PermissionsExt;
            fs::set_permissions(&path, fs::Permissions::from_mode(mode))
                .map_err(|e| Error::io(format!("setting permissions of {}", path.display()), e))?;
            let f = File::open(&path).map_err(|e| Error::io(format!("opening {}", path.display()), e))?;
            f.set_times(fs::FileTimes::new().set_modified(time_of(mtime)))
                .map_err(|e| Error::io(format!("setting times of {}", path.display()), e))?;
        }
        Ok(())
    }
}

impl Sink for DirSink {
    fn dir(&mut self, rel: &[u8], mode: u32, mtime: i64) -> Result<()> {
        // The empty path is the source's root: the target directory itself.
        let path = if rel.is_empty() { self.root.clone() } else { self.target(rel)? };
        fs::create_dir_all(&path).map_err(|e| Error::io(format!("creating {}", path.display()), e))?;
        self.dirs.push((path, mode, mtime));
        Ok(())
    }

    fn symlink(&mut self, rel: &[u8], target: &[u8]) -> Result<()> {
        let path = self.target(rel)?;
        std::os::unix::fs::symlink(OsStr::from_bytes(target), &path)
            .map_err(|e| Error::io(format!("creating link {}", path.display()), e))?;
        self.links.insert(rel.to_vec());
        Ok(())
    }

    fn file_start(&mut self, rel: &[u8]) -> Result<()> {
        let path = self.target(rel)?;
        if let Some(parent) = path.parent() {
            fs::create_dir_all(parent).map_err(|e| Error::io(format!("creating {}", parent.display()), e))?;
        }
        let f = fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&path)
            .map_err(|e| Error::io(format!("creating {} (restore never overwrites)", path.display()), e))?;
        self.file = Some((path, BufWriter::with_capacity(1 << 20, f)));
        Ok(())
    }

    fn write(&mut self, data: &[u8]) -> Result<()> {
        let (path, f) = self.file.as_mut().ok_or_else(|| Error::new(ErrorKind::Other, "write outside a file"))?;
        f.write_all(data).map_err(|e| Error::io(format!("writing {}", path.display()), e))
    }

    fn file_end(&mut self, mode: u32, mtime: i64) -> Result<()> {
        use std::os::unix::fs::PermissionsExt;
        let (path, f) = self.file.take().ok_or_else(|| Error::new(ErrorKind::Other, "end outside a file"))?;
        let f = f.into_inner().map_err(|e| Error::io(format!("writing {}", path.display()), e.into_error()))?;
        f.set_permissions(fs::Permissions::from_mode(mode))
            .map_err(|e| Error::io(format!("setting permissions of {}", path.display()), e))?;
        f.set_times(fs::FileTimes::new().set_modified(time_of(mtime)))
            .map_err(|e| Error::io(format!("setting times of {}", path.display()), e))?;
        Ok(())
    }

    fn file_abort(&mut self) {
        if let Some((path, _)) = self.file.take() {
            let bad = path.with_file_name(format!(
                "{}.mover-failed",
                path.file_name().map(|n| n.to_string_lossy()).unwrap_or_default()
            ));
            // Keep what could be rebuilt, under a name that says it is not the original; never under the original's
            // name (the error is in the report either way).
            if let Err(renaming) = fs::rename(&path, &bad)
                && let Err(removing) = fs::remove_file(&path)
            {
                tracing::warn!(
                    path = %path.display(),
                    %renaming,
                    %removing,
                    "a restored file that failed its checks could be neither renamed nor removed"
                );
            }
        }
    }
}

/// Options of a restore.
#[derive(Debug, Clone, Default)]
pub struct RestoreOptions {
    /// Pass to restore (default: the latest).
    pub pass: Option<u32>,
}

async fn replay<S: Sink + Send + 'static>(
    store: DynStore,
    mailbox: &str,
    pass: Option<u32>,
    sink: S,
) -> Result<(ReplayReport, S)> {
    check_format(&store).await?;
    let manifest = load_manifest(&store, mailbox, pass).await?;
    let handle = Handle::current();
    tokio::task::spawn_blocking(move || {
        let mut reader = BlobReader::new(store, handle);
        Replayer::new(&mut reader, sink).run(&manifest)
    })
    .await
    .map_err(|e| Error::new(ErrorKind::Other, format!("replay task failed: {e}")))?
}

/// Rebuild `mailbox` from `store` under `to`. For a directory source, `to` becomes that directory; for a
/// single-file source, the file is written into `to` under its name. Mismatches are listed in the report (and the
/// affected files renamed `*.mover-failed`); the caller decides the exit status.
pub async fn restore(store: DynStore, mailbox: &str, to: &Path, opts: &RestoreOptions) -> Result<ReplayReport> {
    let sink = DirSink::new(to)?;
    let (report, sink) = replay(store, mailbox, opts.pass, sink).await?;
    sink.finish()?;
    Ok(report)
}

/// Check `mailbox` in `store` without writing anything: every blob, message and file.
pub async fn verify(store: DynStore, mailbox: &str, pass: Option<u32>) -> Result<ReplayReport> {
    Ok(replay(store, mailbox, pass, NullSink).await?.0)
}

/// A mailbox in a destination, as `ls` shows it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct MailboxInfo {
    /// Mailbox id.
    pub mailbox: String,
    /// Number of passes.
    pub passes: u32,
    /// Latest pass.
    pub latest_pass: u32,
    /// Files in the latest pass.
    pub files: u64,
    /// Messages in the latest pass.
    pub messages: u64,
    /// Source bytes in the latest pass.
    pub source_bytes: u64,
    /// Stored bytes attributed to the mailbox over all passes.
    pub stored_bytes: u64,
    /// Quarantined items in the latest pass.
    pub quarantined: u64,
    /// When the latest pass committed (ms since the epoch).
    pub finished_ms: u64,
    /// The source of the latest pass.
    pub source: String,
}

/// Every mailbox in `store`, with the counters of its latest pass (one small range read per mailbox).
pub async fn list_mailboxes(store: &DynStore) -> Result<Vec<MailboxInfo>> {
    check_format(store).await?;
    let mut latest: std::collections::BTreeMap<String, (u32, u32, String)> = Default::default();
    for m in store.list(layout::MAILBOX_PREFIX).await? {
        if let Some((mailbox, pass)) = layout::parse_manifest_key(&m.key) {
            let e = latest.entry(mailbox).or_insert((0, 0, String::new()));
            e.1 += 1;
            if pass >= e.0 {
                e.0 = pass;
                e.2 = m.key.clone();
            }
        }
    }
    let mut out = Vec::with_capacity(latest.len());
    for (mailbox, (pass, count, key)) in latest {
        let head = store.get_range(&key, 0..crate::manifest::HEADER_READ_LEN).await?;
        let (h, _) = crate::manifest::parse_header(&head, &key)?;
        out.push(MailboxInfo {
            mailbox,
            passes: count,
            latest_pass: pass,
            files: h.stats.files,
            messages: h.stats.messages,
            source_bytes: h.stats.source_bytes,
            stored_bytes: h.stats.stored_bytes_total,
            quarantined: h.stats.quarantined,
            finished_ms: h.finished_ms,
            source: h.source,
        });
    }
    Ok(out)
}
