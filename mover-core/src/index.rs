//! The dedupe index: which blobs a destination already holds, and where.
//!
//! Loaded at the start of a run from the destination's pack indexes (one small object per pack, no HEAD per blob),
//! then grown as the run packs new blobs. A large blob is looked up before it is compressed (no CPU spent on known
//! content); every blob is checked again by the collector before it is packed (two messages in flight may share a
//! new body).
//!
//! Within one run every blob the index names is durable by the time the run's manifest is committed, because the
//! manifest is written only after every pack of the run is acknowledged by the store.
//!
//! [`IndexCache`] keeps a local copy of the pack indexes a host has read or written, so that each pass reads from
//! the destination only the pack indexes other hosts wrote since (it still lists them all, and builds the whole
//! table in memory).

use std::collections::{HashMap, HashSet};
use std::fs::File;
use std::hash::{BuildHasherDefault, Hasher};
use std::io::{BufReader, BufWriter, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::RwLock;

use crate::error::{Error, Result};
use crate::id::{ContentId, PackId};
use crate::layout;
use crate::pack::{BlobLoc, IndexEntry, decode_index};
use crate::store::DynStore;

/// Content ids are already uniformly random: their first 8 bytes are a perfect hash.
#[derive(Default)]
pub struct IdHasher(u64);

impl Hasher for IdHasher {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        // ContentId hashes as its 32-byte array (length prefix first, then the bytes).
        for chunk in bytes.chunks(8) {
            let mut b = [0u8; 8];
            b[..chunk.len()].copy_from_slice(chunk);
            self.0 = self.0.rotate_left(5) ^ u64::from_le_bytes(b);
        }
    }
}

type IdMap<V> = HashMap<ContentId, V, BuildHasherDefault<IdHasher>>;

/// Blob id → location, shared by the workers of a run.
#[derive(Default)]
pub struct BlobIndex {
    map: RwLock<Table>,
}

/// The index's table. A location is kept as four u32 with its pack named by number (48 bytes a blob with the id,
/// against 72 with a [`BlobLoc`]): the index is the one part of a pass's memory that grows with the destination.
#[derive(Default)]
struct Table {
    slots: IdMap<Slot>,
    /// Pack ids by number.
    packs: Vec<PackId>,
    numbers: HashMap<PackId, u32, BuildHasherDefault<IdHasher>>,
    /// Locations that do not fit in a slot (none can: segments are at most 64 MiB; kept so that nothing depends
    /// on it).
    wide: IdMap<BlobLoc>,
}

#[derive(Clone, Copy)]
struct Slot {
    pack: u32,
    seg: u32,
    offset: u32,
    /// `u32::MAX`: the location is in `wide`.
    raw_len: u32,
}

impl Table {
    fn with_capacity(blobs: usize) -> Self {
        Table { slots: IdMap::with_capacity_and_hasher(blobs, Default::default()), ..Table::default() }
    }

    fn len(&self) -> usize {
        self.slots.len()
    }

    fn contains(&self, id: &ContentId) -> bool {
        self.slots.contains_key(id)
    }

    fn get(&self, id: &ContentId) -> Option<BlobLoc> {
        self.slots.get(id).map(|s| self.loc(id, s))
    }

    fn loc(&self, id: &ContentId, s: &Slot) -> BlobLoc {
        if s.raw_len == u32::MAX {
            return self.wide[id];
        }
        BlobLoc { pack: self.packs[s.pack as usize], seg: s.seg, offset: s.offset as u64, raw_len: s.raw_len as u64 }
    }

    /// Record `id` at `loc` unless it is already known; returns the location that holds.
    fn insert(&mut self, id: ContentId, loc: BlobLoc) -> BlobLoc {
        let pack = self.number(loc.pack);
        self.insert_numbered(id, loc, pack)
    }

    /// The number of `pack` in this table (given one if new).
    fn number(&mut self, pack: PackId) -> u32 {
        if let Some(&n) = self.numbers.get(&pack) {
            return n;
        }
        let n = u32::try_from(self.packs.len()).expect("fewer than 4 billion packs");
        self.packs.push(pack);
        self.numbers.insert(pack, n);
        n
    }

    /// [`Table::insert`], `pack` being the number of `loc.pack` (bulk loads look it up once per pack).
    fn insert_numbered(&mut self, id: ContentId, loc: BlobLoc, pack: u32) -> BlobLoc {
        debug_assert_eq!(self.packs[pack as usize], loc.pack);
        let vacant = match self.slots.entry(id) {
            std::collections::hash_map::Entry::Occupied(held) => {
                let held = *held.get();
                return self.loc(&id, &held);
            }
            std::collections::hash_map::Entry::Vacant(v) => v,
        };
        match (u32::try_from(loc.offset), u32::try_from(loc.raw_len)) {
            (Ok(offset), Ok(raw_len)) if raw_len != u32::MAX => {
                vacant.insert(Slot { pack, seg: loc.seg, offset, raw_len });
            }
            _ => {
                vacant.insert(Slot { pack, seg: loc.seg, offset: 0, raw_len: u32::MAX });
                self.wide.insert(id, loc);
            }
        }
        loc
    }

    #[cfg(test)]
    fn iter(&self) -> impl Iterator<Item = (ContentId, BlobLoc)> + '_ {
        self.slots.keys().map(|id| (*id, self.get(id).expect("listed")))
    }
}

impl std::fmt::Debug for BlobIndex {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "BlobIndex({} blobs)", self.len())
    }
}

impl BlobIndex {
    /// An empty index.
    pub fn new() -> Self {
        Self::default()
    }

    /// Load every pack index in `store`. Returns the index and the number of packs read.
    pub async fn load(store: &DynStore) -> Result<(Self, usize)> {
        let (index, stats) = Self::load_cached(store, None).await?;
        Ok((index, stats.packs))
    }

    /// Load every pack index in `store`, through `cache` when given: pack indexes this host has read before come
    /// from the local file, and only the others are read from the store (and added to the file). Without a cache,
    /// or when the file is unreadable, every pack index is read from the store.
    ///
    /// The destination is listed either way, and only cached packs the listing names are used: a cache can never
    /// make a blob look present that the destination does not have (a recreated destination, another destination
    /// under the same name). A cache that cannot be read or written costs requests, never the migration.
    pub async fn load_cached(store: &DynStore, cache: Option<&IndexCache>) -> Result<(Self, LoadStats)> {
        Self::load_from(store, cache, None).await
    }

    /// [`BlobIndex::load_cached`], starting from `kept`, the index of an earlier pass of this process into the same
    /// destination, when it can serve: every pack it holds is still listed (so none of its blobs can be missing from
    /// the destination), and the listed packs it does not hold are few (they are read from the destination, as
    /// cheap as going through the cache for a few). Otherwise `kept` is dropped and the index loaded as usual.
    pub async fn load_from(
        store: &DynStore,
        cache: Option<&IndexCache>,
        kept: Option<BlobIndex>,
    ) -> Result<(Self, LoadStats)> {
        let listed: HashMap<PackId, String> = store
            .list(layout::INDEX_PREFIX)
            .await?
            .into_iter()
            .filter_map(|m| layout::pack_id_from_index_key(&m.key).map(|id| (id, m.key)))
            .collect();
        let mut stats = LoadStats { packs: listed.len(), ..LoadStats::default() };
        if let Some(kept) = kept {
            let missing: Option<Vec<(&PackId, &String)>> = {
                let table = kept.map.read().unwrap();
                let missing: Vec<_> = listed.iter().filter(|(id, _)| !table.numbers.contains_key(*id)).collect();
                let all_listed = table.packs.iter().all(|p| listed.contains_key(p));
                (all_listed && missing.len() <= KEPT_MISSING_MAX.max(listed.len() / 4)).then_some(missing)
            };
            if let Some(missing) = missing {
                stats.kept = listed.len() - missing.len();
                let mut fetched = NewRecords::default();
                fetch_into(&kept, store, missing.into_iter(), cache.map(|_| &mut fetched), &mut stats).await?;
                if let Some(cache) = cache
                    && !fetched.bytes.is_empty()
                {
                    cache.write_logged(fetched, None).await;
                }
                return Ok((kept, stats));
            }
        }
        // The packs listed, for reading the cache and for rewriting it.
        let ids: std::sync::Arc<HashSet<PackId>> = std::sync::Arc::new(listed.keys().copied().collect());
        let index = BlobIndex::new();
        let mut from_cache = HashSet::new();
        let mut read_back = None;
        if let Some(cache) = cache {
            let (cache2, ids2) = (cache.clone(), ids.clone());
            let read = tokio::task::spawn_blocking(move || cache2.read(&ids2)).await;
            match read.map_err(|e| crate::Error::new(crate::ErrorKind::Other, e.to_string())).and_then(|r| r) {
                Ok(read) => {
                    *index.map.write().unwrap() = read.map;
                    from_cache = read.packs;
                    stats.cached = from_cache.len();
                    read_back = Some((read.clean, read.dead));
                }
                Err(e) => tracing::warn!(cache = %cache.path.display(), "dedupe index cache not read: {e}"),
            }
        }
        let pending = listed.iter().filter(|(id, _)| !from_cache.contains(*id));
        let mut fetched = NewRecords::default();
        fetch_into(&index, store, pending, cache.map(|_| &mut fetched), &mut stats).await?;
        if let Some(cache) = cache {
            // Append what was read from the store. Rewrite the file instead when it has a damaged record, or when
            // a quarter of its records are of packs the destination no longer lists (or repeated: two processes
            // that read the same new pack both append it), so that it does not grow with dead records.
            let rewrite = match read_back {
                Some((clean, dead)) => !clean || dead > 0 && dead * 4 >= dead + stats.cached,
                None => true,
            };
            if rewrite || !fetched.bytes.is_empty() {
                cache.write_logged(fetched, rewrite.then_some(ids)).await;
            }
        }
        Ok((index, stats))
    }

    /// Where `id` is, if the destination has it.
    pub fn get(&self, id: &ContentId) -> Option<BlobLoc> {
        self.map.read().unwrap().get(id)
    }

    /// Whether the destination has `id`.
    pub fn contains(&self, id: &ContentId) -> bool {
        self.map.read().unwrap().contains(id)
    }

    /// Record `id` at `loc` unless it is already known; returns the location that holds.
    pub fn insert_if_absent(&self, id: ContentId, loc: BlobLoc) -> BlobLoc {
        self.map.write().unwrap().insert(id, loc)
    }

    /// Number of blobs known.
    pub fn len(&self) -> usize {
        self.map.read().unwrap().len()
    }

    /// Whether no blob is known.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Listed packs an index kept from an earlier pass may lack and still serve (they are read from the destination); a
/// quarter of the listed packs if that is more.
const KEPT_MISSING_MAX: usize = 64;

/// Read the pack indexes of `packs` from `store` into `index`, 16 at a time; with `fetched`, also encode them there
/// for the cache file.
async fn fetch_into<'a>(
    index: &BlobIndex,
    store: &DynStore,
    mut packs: impl Iterator<Item = (&'a PackId, &'a String)>,
    mut fetched: Option<&mut NewRecords>,
    stats: &mut LoadStats,
) -> Result<()> {
    let mut tasks = tokio::task::JoinSet::new();
    loop {
        while tasks.len() < 16 {
            let Some((&id, key)) = packs.next() else { break };
            let (store, key) = (store.clone(), key.clone());
            tasks.spawn(async move {
                let data = store.get(&key).await?;
                decode_index(id, &data)
            });
        }
        let Some(done) = tasks.join_next().await else { break };
        let pack = done.map_err(|e| crate::Error::new(crate::ErrorKind::Other, e.to_string()))??;
        {
            let mut map = index.map.write().unwrap();
            let number = map.number(pack.pack);
            for e in &pack.entries {
                map.insert_numbered(e.id, e.loc, number);
            }
        }
        stats.fetched += 1;
        if let Some(f) = fetched.as_deref_mut() {
            f.add(pack.pack, &pack.entries);
        }
    }
    Ok(())
}

/// What loading the index took.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LoadStats {
    /// Packs the destination lists.
    pub packs: usize,
    /// Pack indexes taken from the local cache.
    pub cached: usize,
    /// Pack indexes read from the destination.
    pub fetched: usize,
    /// Pack indexes already in the index this process kept from its previous pass into the destination.
    pub kept: usize,
}

/// A local copy of a destination's pack indexes, so that each pass reads from the destination only the pack indexes
/// other hosts wrote since this host last looked (one GET per such pack instead of one per pack in the destination;
/// the packs a pass stores are added as their index objects are acknowledged).
///
/// One file per destination, named after the destination's description (a local destination's is its absolute
/// path), in a directory of the caller's choosing (moverd: `~/.cache/mover/index`). The file is a sequence of
/// records, one per pack: `MVX1`, the pack id (16 bytes), the number of blobs (u32 LE), per blob its id (32 bytes),
/// segment (u32 LE), offset and raw length (u64 LE), then the BLAKE3 of the record so far. Reading stops at the
/// first record that does not check (a torn append, a damaged disk); the file is then rewritten with the good
/// records of the packs the destination lists. Writers hold an exclusive `flock`, readers a shared one; a lock not
/// had within [`LOCK_WAIT`] means going on without the cache. A rewrite goes to `<file>.tmp`, renamed over the
/// file. Nothing is fsynced: losing the file costs requests, not data.
#[derive(Debug, Clone)]
pub struct IndexCache {
    path: PathBuf,
}

/// What reading the cache file found.
struct CacheRead {
    /// The entries of the packs the destination lists.
    map: Table,
    /// Those packs.
    packs: HashSet<PackId>,
    /// Good records of packs not listed, or of packs already read: what a rewrite would drop.
    dead: usize,
    /// Every byte of the file was a good record.
    clean: bool,
}

const CACHE_MAGIC: &[u8; 4] = b"MVX1";
const CACHE_HEAD_LEN: usize = 24;
const CACHE_ENTRY_LEN: usize = 32 + 4 + 8 + 8;
/// How long a pass waits for another process's lock on the cache file before going on without it.
pub const LOCK_WAIT: std::time::Duration = std::time::Duration::from_secs(2);

/// Records of packs fetched from the destination, encoded for the cache file as they arrive.
#[derive(Default)]
struct NewRecords {
    bytes: Vec<u8>,
    packs: HashSet<PackId>,
}

impl NewRecords {
    fn add(&mut self, pack: PackId, entries: &[IndexEntry]) {
        self.bytes.reserve(CACHE_HEAD_LEN + entries.len() * CACHE_ENTRY_LEN + 32);
        let start = self.bytes.len();
        self.bytes.extend_from_slice(CACHE_MAGIC);
        self.bytes.extend_from_slice(pack.as_bytes());
        self.bytes.extend_from_slice(&(entries.len() as u32).to_le_bytes());
        for e in entries {
            debug_assert_eq!(e.loc.pack, pack);
            self.bytes.extend_from_slice(e.id.as_bytes());
            self.bytes.extend_from_slice(&e.loc.seg.to_le_bytes());
            self.bytes.extend_from_slice(&e.loc.offset.to_le_bytes());
            self.bytes.extend_from_slice(&e.loc.raw_len.to_le_bytes());
        }
        let sum = blake3::hash(&self.bytes[start..]);
        self.bytes.extend_from_slice(sum.as_bytes());
        self.packs.insert(pack);
    }
}

impl IndexCache {
    /// The cache file for `store` in `dir` (created when first written).
    pub fn new(dir: &Path, store: &DynStore) -> Self {
        let name = blake3::hash(store.describe().as_bytes()).to_hex();
        IndexCache { path: dir.join(format!("{}.idx-cache", &name[..32])) }
    }

    /// The file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Add a pack this host has stored (its index object acknowledged by the destination). Failures are logged:
    /// they only cost the pack's index being read from the destination by a later pass.
    pub fn add(&self, pack: &crate::pack::PackIndex) {
        let mut new = NewRecords::default();
        new.add(pack.pack, &pack.entries);
        if let Err(e) = self.write(&new, None) {
            tracing::warn!(cache = %self.path.display(), "dedupe index cache not written: {e}");
        }
    }

    fn io(&self, what: &str, e: std::io::Error) -> Error {
        Error::io(format!("{what} {}", self.path.display()), e)
    }

    fn read(&self, listed: &HashSet<PackId>) -> Result<CacheRead> {
        let mut out = CacheRead { map: Table::default(), packs: HashSet::new(), dead: 0, clean: true };
        let Some(file) = self.open_locked(false)? else { return Ok(out) };
        // Sized once: a table grown by doubling rehashes everything several times, and holds two tables at once.
        let len = file.metadata().map(|m| m.len()).unwrap_or(0) as usize;
        out.map = Table::with_capacity(len / (CACHE_ENTRY_LEN + 8));
        out.clean = self.records(&file, |pack, record| {
            if !listed.contains(&pack) || !out.packs.insert(pack) {
                out.dead += 1;
                return Ok(());
            }
            let number = out.map.number(pack);
            for e in record[CACHE_HEAD_LEN..record.len() - 32].chunks_exact(CACHE_ENTRY_LEN) {
                let id = ContentId::from_bytes(e[..32].try_into().unwrap());
                let loc = BlobLoc {
                    pack,
                    seg: u32::from_le_bytes(e[32..36].try_into().unwrap()),
                    offset: u64::from_le_bytes(e[36..44].try_into().unwrap()),
                    raw_len: u64::from_le_bytes(e[44..52].try_into().unwrap()),
                };
                out.map.insert_numbered(id, loc, number);
            }
            Ok(())
        })?;
        Ok(out)
    }

    /// The file, opened and locked (`exclusive`: for writing, created if missing; else for reading, `None` if
    /// missing). The lock is on the file at the path when it is taken: a file another process renamed away
    /// meanwhile is let go and the new one opened.
    fn open_locked(&self, exclusive: bool) -> Result<Option<File>> {
        use std::os::unix::fs::MetadataExt;
        let deadline = std::time::Instant::now() + LOCK_WAIT;
        loop {
            let file = if exclusive {
                let dir = self.path.parent().unwrap_or(Path::new("."));
                std::fs::create_dir_all(dir).map_err(|e| self.io("creating the directory of", e))?;
                std::fs::OpenOptions::new().create(true).append(true).read(true).open(&self.path)
            } else {
                File::open(&self.path)
            };
            let file = match file {
                Ok(f) => f,
                Err(e) if !exclusive && e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
                Err(e) => return Err(self.io("opening", e)),
            };
            let locked = if exclusive { file.try_lock() } else { file.try_lock_shared() };
            match locked {
                Ok(()) => {}
                Err(std::fs::TryLockError::WouldBlock) if std::time::Instant::now() < deadline => {
                    std::thread::sleep(std::time::Duration::from_millis(10));
                    continue;
                }
                Err(std::fs::TryLockError::WouldBlock) => {
                    let why = format!("held by another process for over {} s", LOCK_WAIT.as_secs());
                    return Err(self.io("locking", std::io::Error::new(std::io::ErrorKind::WouldBlock, why)));
                }
                Err(std::fs::TryLockError::Error(e)) => return Err(self.io("locking", e)),
            }
            match (file.metadata(), std::fs::metadata(&self.path)) {
                (Ok(held), Ok(now)) if held.dev() == now.dev() && held.ino() == now.ino() => return Ok(Some(file)),
                _ if std::time::Instant::now() < deadline => continue,
                _ => return Err(self.io("locking", std::io::Error::other("the file keeps being replaced"))),
            }
        }
    }

    /// Call `each` with every good record of `file` from its start, in order; returns whether the whole file was
    /// good records. A record is read only when the file holds as many bytes as its count says, so a damaged count
    /// cannot make this allocate more than the file's size.
    fn records(&self, file: &File, mut each: impl FnMut(PackId, &[u8]) -> Result<()>) -> Result<bool> {
        let mut left = file.metadata().map_err(|e| self.io("reading", e))?.len();
        let mut r = BufReader::with_capacity(1 << 16, file);
        let mut record = vec![0u8; CACHE_HEAD_LEN];
        while left > 0 {
            if left < CACHE_HEAD_LEN as u64 || r.read_exact(&mut record[..CACHE_HEAD_LEN]).is_err() {
                return Ok(false);
            }
            let n = u32::from_le_bytes(record[20..24].try_into().unwrap()) as u64;
            let len = CACHE_HEAD_LEN as u64 + n * CACHE_ENTRY_LEN as u64 + 32;
            if &record[..4] != CACHE_MAGIC || len > left {
                return Ok(false);
            }
            record.resize(len as usize, 0);
            if r.read_exact(&mut record[CACHE_HEAD_LEN..]).is_err() {
                return Ok(false);
            }
            let (data, sum) = record.split_at(record.len() - 32);
            if blake3::hash(data).as_bytes() != sum {
                return Ok(false);
            }
            each(PackId::from_bytes(record[4..20].try_into().unwrap()), &record)?;
            left -= len;
            record.truncate(CACHE_HEAD_LEN);
        }
        Ok(true)
    }

    /// Add `new` to the file; with `keep`, rewrite it with only the good records of those packs (read under the
    /// lock, so records another process appended before stay), followed by the new ones.
    /// [`IndexCache::write`] off the runtime's threads; a failure is a warning (it costs requests, not data).
    async fn write_logged(&self, new: NewRecords, keep: Option<std::sync::Arc<HashSet<PackId>>>) {
        let cache = self.clone();
        let write = tokio::task::spawn_blocking(move || cache.write(&new, keep.as_deref())).await;
        if let Err(e) = write.map_err(|e| crate::Error::new(crate::ErrorKind::Other, e.to_string())).and_then(|r| r) {
            tracing::warn!(cache = %self.path.display(), "dedupe index cache not written: {e}");
        }
    }

    fn write(&self, new: &NewRecords, keep: Option<&HashSet<PackId>>) -> Result<()> {
        let file = self.open_locked(true)?.expect("opened for writing");
        let Some(keep) = keep else {
            return (&file).write_all(&new.bytes).map_err(|e| self.io("writing", e));
        };
        // The lock is held until the rename: no other writer replaces the file (or writes the `.tmp`) meanwhile.
        let tmp_path = self.path.with_extension("idx-cache.tmp");
        let tmp = File::create(&tmp_path).map_err(|e| self.io("creating a temporary file next to", e))?;
        let mut w = BufWriter::with_capacity(1 << 16, &tmp);
        let mut seen = HashSet::new();
        self.records(&file, |pack, record| {
            if keep.contains(&pack) && !new.packs.contains(&pack) && seen.insert(pack) {
                w.write_all(record).map_err(|e| self.io("rewriting", e))?;
            }
            Ok(())
        })?;
        w.write_all(&new.bytes).map_err(|e| self.io("rewriting", e))?;
        w.flush().map_err(|e| self.io("rewriting", e))?;
        drop(w);
        std::fs::rename(&tmp_path, &self.path).map_err(|e| self.io("replacing", e))
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::compress::Codec;
    use crate::pack::PackWriter;
    use crate::store::{CountingStore, MemoryStore, PutMode, Store};

    /// A pack of `n` one-segment blobs, its index stored in `store`.
    async fn add_pack(store: &DynStore, seed: u64, n: u64) -> PackId {
        let id = PackId::fresh();
        let mut w = PackWriter::new(id, 1 << 16);
        for i in 0..n {
            let raw = format!("blob {seed} {i}").into_bytes();
            w.add_solo(ContentId::of(&raw), &raw, raw.len() as u64, Codec::None);
        }
        let sealed = w.seal();
        store.put(&layout::index_key(&id), sealed.index, PutMode::Create).await.unwrap();
        id
    }

    fn contents(index: &BlobIndex) -> Vec<(ContentId, BlobLoc)> {
        let mut v: Vec<_> = index.map.read().unwrap().iter().collect();
        v.sort_by_key(|(k, _)| *k);
        v
    }

    #[test]
    fn the_table_gives_back_every_location_as_inserted_and_keeps_the_first() {
        let packs: Vec<PackId> = (0..5).map(|_| PackId::fresh()).collect();
        let mut t = Table::default();
        let mut truth = HashMap::new();
        for i in 0u64..2_000 {
            let id = ContentId::of(&i.to_le_bytes());
            // Values at the edges of what a slot holds, and past them (kept wide).
            let (offset, raw_len) = match i % 5 {
                0 => (0, 0),
                1 => (u32::MAX as u64 - 1, u32::MAX as u64 - 1),
                2 => (i * 977, u32::MAX as u64),
                3 => (u32::MAX as u64 + i, 7),
                _ => (i, 1 << 40),
            };
            let loc = BlobLoc { pack: packs[(i % 5) as usize], seg: i as u32 * 3, offset, raw_len };
            assert_eq!(t.insert(id, loc), loc);
            truth.insert(id, loc);
            // A second location for a known blob is not taken.
            let other = BlobLoc { pack: packs[0], seg: 1, offset: 2, raw_len: 3 };
            assert_eq!(t.insert(id, other), loc);
        }
        assert_eq!(t.len(), truth.len());
        assert_eq!(t.packs.len(), 5);
        for (id, loc) in &truth {
            assert_eq!(t.get(id), Some(*loc));
            assert!(t.contains(id));
        }
        assert_eq!(t.get(&ContentId::of(b"absent")), None);
    }

    #[tokio::test]
    async fn the_cache_reads_only_new_packs_and_gives_the_same_index() {
        let dir = tempfile::tempdir().unwrap();
        let counting = Arc::new(CountingStore::new(MemoryStore::new()));
        let store: DynStore = counting.clone();
        let cache = IndexCache::new(dir.path(), &store);
        let mut packs = Vec::new();
        for p in 0..5 {
            packs.push(add_pack(&store, p, 3 + p).await);
        }
        let gets = |c: &CountingStore<MemoryStore>| c.snapshot().get_requests;

        // First load: every pack from the store, and the cache file written.
        let before = gets(&counting);
        let (a, s) = BlobIndex::load_cached(&store, Some(&cache)).await.unwrap();
        assert_eq!(s, LoadStats { packs: 5, cached: 0, fetched: 5, kept: 0 });
        assert_eq!(gets(&counting) - before, 5);
        let (plain, n) = BlobIndex::load(&store).await.unwrap();
        assert_eq!(n, 5);
        assert_eq!(contents(&a), contents(&plain));
        assert_eq!(a.len(), (3..8).sum::<u64>() as usize);

        // Second load: no GET at all.
        let before = gets(&counting);
        let (b, s) = BlobIndex::load_cached(&store, Some(&cache)).await.unwrap();
        assert_eq!(s, LoadStats { packs: 5, cached: 5, fetched: 0, kept: 0 });
        assert_eq!(gets(&counting), before);
        assert_eq!(contents(&b), contents(&plain));

        // A new pack: one GET.
        packs.push(add_pack(&store, 9, 4).await);
        let before = gets(&counting);
        let (c, s) = BlobIndex::load_cached(&store, Some(&cache)).await.unwrap();
        assert_eq!(s, LoadStats { packs: 6, cached: 5, fetched: 1, kept: 0 });
        assert_eq!(gets(&counting) - before, 1);
        assert_eq!(contents(&c), contents(&BlobIndex::load(&store).await.unwrap().0));
    }

    #[tokio::test]
    async fn cached_packs_the_destination_does_not_list_are_not_used() {
        // The destination was emptied and filled again under the same name: what the cache knows of the old packs
        // must not make their blobs look present.
        let dir = tempfile::tempdir().unwrap();
        let store: DynStore = Arc::new(MemoryStore::new());
        let cache = IndexCache::new(dir.path(), &store);
        let old = add_pack(&store, 1, 5).await;
        let kept = add_pack(&store, 2, 5).await;
        BlobIndex::load_cached(&store, Some(&cache)).await.unwrap();
        store.delete(&layout::index_key(&old)).await.unwrap();
        let (index, s) = BlobIndex::load_cached(&store, Some(&cache)).await.unwrap();
        assert_eq!(s, LoadStats { packs: 1, cached: 1, fetched: 0, kept: 0 });
        assert!(contents(&index).iter().all(|(_, loc)| loc.pack == kept));
        assert!(!index.contains(&ContentId::of(b"blob 1 0")));
        assert!(index.contains(&ContentId::of(b"blob 2 0")));
        // The file was rewritten without the old pack: the next load finds exactly what it uses.
        let listed = HashSet::from([kept]);
        let read = cache.read(&listed).unwrap();
        assert_eq!((read.dead, read.clean, read.packs.len()), (0, true, 1));
    }

    #[tokio::test]
    async fn a_damaged_cache_costs_requests_never_a_wrong_index() {
        let dir = tempfile::tempdir().unwrap();
        let store: DynStore = Arc::new(MemoryStore::new());
        let cache = IndexCache::new(dir.path(), &store);
        for p in 0..4 {
            add_pack(&store, p, 6).await;
        }
        BlobIndex::load_cached(&store, Some(&cache)).await.unwrap();
        let truth = contents(&BlobIndex::load(&store).await.unwrap().0);
        let good = std::fs::read(cache.path()).unwrap();
        let record = good.len() / 4;
        assert_eq!(record, 24 + 6 * CACHE_ENTRY_LEN + 32);
        // Every 7th byte of the second record flipped in turn (its count too), a count far beyond the file's end, a
        // torn tail, garbage appended, an empty file.
        let mut damaged: Vec<(Vec<u8>, usize)> = Vec::new();
        for at in (record..2 * record).step_by(7) {
            let mut d = good.clone();
            d[at] ^= 0x20;
            damaged.push((d, 1));
        }
        let mut huge = good.clone();
        huge[record + 20..record + 24].copy_from_slice(&u32::MAX.to_le_bytes());
        damaged.push((huge, 1));
        damaged.push((good[..good.len() - 5].to_vec(), 3));
        damaged.push(([&good[..], b"MVX1 and then some"].concat(), 4));
        damaged.push((Vec::new(), 0));
        for (bytes, cached) in damaged {
            std::fs::write(cache.path(), &bytes).unwrap();
            let (index, s) = BlobIndex::load_cached(&store, Some(&cache)).await.unwrap();
            assert_eq!((s.cached, s.fetched), (cached, 4 - cached));
            assert_eq!(contents(&index), truth);
            // Repaired: the next load reads nothing from the store.
            let (index, s) = BlobIndex::load_cached(&store, Some(&cache)).await.unwrap();
            assert_eq!((s.cached, s.fetched), (4, 0));
            assert_eq!(contents(&index), truth);
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_cache_locked_by_another_process_is_skipped_not_waited_for() {
        let dir = tempfile::tempdir().unwrap();
        let store: DynStore = Arc::new(MemoryStore::new());
        let cache = IndexCache::new(dir.path(), &store);
        add_pack(&store, 1, 2).await;
        BlobIndex::load_cached(&store, Some(&cache)).await.unwrap();
        // Another open file description holding the lock, as another process would.
        let holder = File::open(cache.path()).unwrap();
        holder.lock().unwrap();
        let started = std::time::Instant::now();
        let (index, s) = BlobIndex::load_cached(&store, Some(&cache)).await.unwrap();
        assert_eq!((index.len(), s.cached, s.fetched), (2, 0, 1));
        assert!(started.elapsed() < LOCK_WAIT * 3, "waited {:?}", started.elapsed());
        drop(holder);
        let (_, s) = BlobIndex::load_cached(&store, Some(&cache)).await.unwrap();
        assert_eq!((s.cached, s.fetched), (1, 0));
    }

    #[tokio::test]
    async fn an_unusable_cache_directory_is_only_a_warning() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("not-a-dir");
        std::fs::write(&file, b"x").unwrap();
        let store: DynStore = Arc::new(MemoryStore::new());
        add_pack(&store, 1, 2).await;
        let cache = IndexCache::new(&file, &store);
        let (index, s) = BlobIndex::load_cached(&store, Some(&cache)).await.unwrap();
        assert_eq!((index.len(), s.fetched), (2, 1));
    }
}
