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
//! [`IndexCache`] keeps a local copy of the pack indexes a host has read, so that each pass reads from the
//! destination only the pack indexes written since (it still lists them all, and builds the whole table in memory).

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
    map: RwLock<IdMap<BlobLoc>>,
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
        let listed: HashMap<PackId, String> = store
            .list(layout::INDEX_PREFIX)
            .await?
            .into_iter()
            .filter_map(|m| layout::pack_id_from_index_key(&m.key).map(|id| (id, m.key)))
            .collect();
        let mut stats = LoadStats { packs: listed.len(), ..LoadStats::default() };
        let index = BlobIndex::new();
        let mut from_cache = HashSet::new();
        let mut read_back = None;
        if let Some(cache) = cache {
            let (cache2, listed2) = (cache.clone(), listed.keys().copied().collect::<HashSet<_>>());
            let read = tokio::task::spawn_blocking(move || cache2.read(&listed2)).await;
            match read.map_err(|e| crate::Error::new(crate::ErrorKind::Other, e.to_string())).and_then(|r| r) {
                Ok(read) => {
                    *index.map.write().unwrap() = read.map;
                    from_cache = read.packs;
                    stats.cached = from_cache.len();
                    read_back = Some((read.clean, read.records));
                }
                Err(e) => tracing::warn!(cache = %cache.path.display(), "dedupe index cache not read: {e}"),
            }
        }
        let mut tasks = tokio::task::JoinSet::new();
        let mut pending = listed.iter().filter(|(id, _)| !from_cache.contains(*id));
        let mut fetched = Vec::new();
        loop {
            while tasks.len() < 16 {
                let Some((&id, key)) = pending.next() else { break };
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
                for e in &pack.entries {
                    map.entry(e.id).or_insert(e.loc);
                }
            }
            stats.fetched += 1;
            if cache.is_some() {
                fetched.push((pack.pack, pack.entries));
            }
        }
        if let Some(cache) = cache {
            // Append what was read from the store; rewrite the file instead when it holds packs the destination
            // no longer lists, or a damaged record, so it never grows with dead entries.
            let rewrite = match read_back {
                Some((clean, records)) => !clean || records != stats.cached,
                None => true,
            };
            if rewrite || !fetched.is_empty() {
                let cache2 = cache.clone();
                let keep: HashSet<PackId> = listed.into_keys().collect();
                let write = tokio::task::spawn_blocking(move || cache2.write(&fetched, rewrite.then_some(&keep))).await;
                if let Err(e) =
                    write.map_err(|e| crate::Error::new(crate::ErrorKind::Other, e.to_string())).and_then(|r| r)
                {
                    tracing::warn!(cache = %cache.path.display(), "dedupe index cache not written: {e}");
                }
            }
        }
        Ok((index, stats))
    }

    /// Where `id` is, if the destination has it.
    pub fn get(&self, id: &ContentId) -> Option<BlobLoc> {
        self.map.read().unwrap().get(id).copied()
    }

    /// Whether the destination has `id`.
    pub fn contains(&self, id: &ContentId) -> bool {
        self.map.read().unwrap().contains_key(id)
    }

    /// Record `id` at `loc` unless it is already known; returns the location that holds.
    pub fn insert_if_absent(&self, id: ContentId, loc: BlobLoc) -> BlobLoc {
        *self.map.write().unwrap().entry(id).or_insert(loc)
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

/// What loading the index took.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LoadStats {
    /// Packs the destination lists.
    pub packs: usize,
    /// Pack indexes taken from the local cache.
    pub cached: usize,
    /// Pack indexes read from the destination.
    pub fetched: usize,
}

/// A local copy of a destination's pack indexes, so that each pass reads from the destination only the pack indexes
/// written since this host last looked (one GET per new pack instead of one per pack in the destination).
///
/// One file per destination, named after the destination's description, in a directory of the caller's choosing
/// (`moverd` uses `~/.cache/moverd/index`). The file is a sequence of records, one per pack: `MVX1`, the pack id (16
/// bytes), the number of blobs (u32 LE), per blob its id (32 bytes), segment (u32 LE), offset and raw length (u64
/// LE), then the BLAKE3 of the record so far. Reading stops at the first record that does not check (a torn append
/// or a damaged disk); the file is then rewritten. Writers take an exclusive lock on the file; a rewrite goes to a
/// temporary file renamed over it. The file is never fsynced: losing it costs requests, not data.
#[derive(Debug, Clone)]
pub struct IndexCache {
    path: PathBuf,
}

/// What reading the cache file found.
struct CacheRead {
    /// The entries of the packs the destination lists.
    map: IdMap<BlobLoc>,
    /// Those packs.
    packs: HashSet<PackId>,
    /// Records read (also of packs not listed, and repeated ones).
    records: usize,
    /// Every byte of the file was a good record.
    clean: bool,
}

const CACHE_MAGIC: &[u8; 4] = b"MVX1";
const CACHE_ENTRY_LEN: usize = 32 + 4 + 8 + 8;
/// More blobs than any pack can hold (a 4 GiB pack of 64-byte blobs): a larger count is a damaged record.
const CACHE_MAX_ENTRIES: usize = 1 << 26;

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

    fn read(&self, listed: &HashSet<PackId>) -> Result<CacheRead> {
        let mut out = CacheRead { map: IdMap::default(), packs: HashSet::new(), records: 0, clean: true };
        let file = match File::open(&self.path) {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(out),
            Err(e) => return Err(Error::io(format!("opening {}", self.path.display()), e)),
        };
        file.lock_shared().map_err(|e| Error::io(format!("locking {}", self.path.display()), e))?;
        // Sized once (a table grown by doubling rehashes everything several times and holds two tables at once).
        let len = file.metadata().map(|m| m.len()).unwrap_or(0) as usize;
        out.map.reserve((len / CACHE_ENTRY_LEN).min(CACHE_MAX_ENTRIES));
        out.clean = self.records(&file, |pack, record| {
            out.records += 1;
            if !listed.contains(&pack) || !out.packs.insert(pack) {
                return Ok(());
            }
            for e in record[24..record.len() - 32].chunks_exact(CACHE_ENTRY_LEN) {
                let id = ContentId::from_bytes(e[..32].try_into().unwrap());
                let loc = BlobLoc {
                    pack,
                    seg: u32::from_le_bytes(e[32..36].try_into().unwrap()),
                    offset: u64::from_le_bytes(e[36..44].try_into().unwrap()),
                    raw_len: u64::from_le_bytes(e[44..52].try_into().unwrap()),
                };
                out.map.entry(id).or_insert(loc);
            }
            Ok(())
        })?;
        Ok(out)
    }

    /// Call `each` with every good record of `file` from its start, in order; returns whether the whole file was
    /// good records.
    fn records(&self, file: &File, mut each: impl FnMut(PackId, &[u8]) -> Result<()>) -> Result<bool> {
        let mut r = BufReader::with_capacity(1 << 16, file);
        let mut record = vec![0u8; 24];
        loop {
            match r.read_exact(&mut record[..1]) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(true),
                Err(e) => return Err(Error::io(format!("reading {}", self.path.display()), e)),
            }
            if r.read_exact(&mut record[1..24]).is_err() || &record[..4] != CACHE_MAGIC {
                return Ok(false);
            }
            let n = u32::from_le_bytes(record[20..24].try_into().unwrap()) as usize;
            if n > CACHE_MAX_ENTRIES {
                return Ok(false);
            }
            record.resize(24 + n * CACHE_ENTRY_LEN + 32, 0);
            if r.read_exact(&mut record[24..]).is_err() {
                return Ok(false);
            }
            let (data, sum) = record.split_at(record.len() - 32);
            if blake3::hash(data).as_bytes() != sum {
                return Ok(false);
            }
            each(PackId::from_bytes(record[4..20].try_into().unwrap()), &record)?;
            record.truncate(24);
        }
    }

    /// Add `fetched` to the file; with `keep`, rewrite it with only the good records of those packs (read under
    /// the lock, so records another process appended meanwhile stay) followed by the new ones.
    fn write(&self, fetched: &[(PackId, Vec<IndexEntry>)], keep: Option<&HashSet<PackId>>) -> Result<()> {
        let io = |what: &str, e: std::io::Error| Error::io(format!("{what} {}", self.path.display()), e);
        let dir = self.path.parent().unwrap_or(Path::new("."));
        std::fs::create_dir_all(dir).map_err(|e| io("creating the directory of", e))?;
        let file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .read(true)
            .open(&self.path)
            .map_err(|e| io("opening", e))?;
        file.lock().map_err(|e| io("locking", e))?;
        let Some(keep) = keep else {
            let mut w = BufWriter::with_capacity(1 << 16, &file);
            for (pack, entries) in fetched {
                write_record(&mut w, *pack, entries).map_err(|e| io("writing", e))?;
            }
            return w.flush().map_err(|e| io("writing", e));
        };
        let new: HashSet<PackId> = fetched.iter().map(|(p, _)| *p).collect();
        let tmp = tempfile::NamedTempFile::new_in(dir).map_err(|e| io("creating a temporary file next to", e))?;
        let mut w = BufWriter::with_capacity(1 << 16, tmp.as_file());
        let mut seen = HashSet::new();
        self.records(&file, |pack, record| {
            if keep.contains(&pack) && !new.contains(&pack) && seen.insert(pack) {
                w.write_all(record).map_err(|e| io("rewriting", e))?;
            }
            Ok(())
        })?;
        for (pack, entries) in fetched {
            write_record(&mut w, *pack, entries).map_err(|e| io("rewriting", e))?;
        }
        w.flush().map_err(|e| io("rewriting", e))?;
        drop(w);
        tmp.persist(&self.path).map_err(|e| io("replacing", e.error))?;
        Ok(())
    }
}

fn write_record(w: &mut impl Write, pack: PackId, entries: &[IndexEntry]) -> std::io::Result<()> {
    let mut rec = Vec::with_capacity(24 + entries.len() * CACHE_ENTRY_LEN + 32);
    rec.extend_from_slice(CACHE_MAGIC);
    rec.extend_from_slice(pack.as_bytes());
    rec.extend_from_slice(&(entries.len() as u32).to_le_bytes());
    for e in entries {
        debug_assert_eq!(e.loc.pack, pack);
        rec.extend_from_slice(e.id.as_bytes());
        rec.extend_from_slice(&e.loc.seg.to_le_bytes());
        rec.extend_from_slice(&e.loc.offset.to_le_bytes());
        rec.extend_from_slice(&e.loc.raw_len.to_le_bytes());
    }
    let sum = blake3::hash(&rec);
    rec.extend_from_slice(sum.as_bytes());
    w.write_all(&rec)
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
        let mut v: Vec<_> = index.map.read().unwrap().iter().map(|(k, v)| (*k, *v)).collect();
        v.sort_by_key(|(k, _)| *k);
        v
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
        assert_eq!(s, LoadStats { packs: 5, cached: 0, fetched: 5 });
        assert_eq!(gets(&counting) - before, 5);
        let (plain, n) = BlobIndex::load(&store).await.unwrap();
        assert_eq!(n, 5);
        assert_eq!(contents(&a), contents(&plain));
        assert_eq!(a.len(), (3..8).sum::<u64>() as usize);

        // Second load: no GET at all.
        let before = gets(&counting);
        let (b, s) = BlobIndex::load_cached(&store, Some(&cache)).await.unwrap();
        assert_eq!(s, LoadStats { packs: 5, cached: 5, fetched: 0 });
        assert_eq!(gets(&counting), before);
        assert_eq!(contents(&b), contents(&plain));

        // A new pack: one GET.
        packs.push(add_pack(&store, 9, 4).await);
        let before = gets(&counting);
        let (c, s) = BlobIndex::load_cached(&store, Some(&cache)).await.unwrap();
        assert_eq!(s, LoadStats { packs: 6, cached: 5, fetched: 1 });
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
        assert_eq!(s, LoadStats { packs: 1, cached: 1, fetched: 0 });
        assert!(contents(&index).iter().all(|(_, loc)| loc.pack == kept));
        assert!(!index.contains(&ContentId::of(b"blob 1 0")));
        assert!(index.contains(&ContentId::of(b"blob 2 0")));
        // The file was rewritten without the old pack: the next load finds exactly what it uses.
        let listed = HashSet::from([kept]);
        let read = cache.read(&listed).unwrap();
        assert_eq!((read.records, read.clean), (1, true));
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
        // Every byte of the second record flipped in turn, a torn tail, garbage appended, an empty file.
        let mut damaged: Vec<(Vec<u8>, usize)> = Vec::new();
        for at in (record..2 * record).step_by(7) {
            let mut d = good.clone();
            d[at] ^= 0x20;
            damaged.push((d, 1));
        }
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
