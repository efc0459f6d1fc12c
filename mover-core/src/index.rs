//! The dedupe index: which blobs a destination already holds, and where.
//!
//! Loaded at the start of a run from the destination's pack indexes (one small object per pack, no HEAD per blob),
//! then grown as the run packs new blobs. A large blob is looked up before it is compressed (no CPU spent on known
//! content); every blob is checked again by the collector before it is packed (two messages in flight may share a
//! new body).
//!
//! Within one run every blob the index names is durable by the time the run's manifest is committed, because the
//! manifest is written only after every pack of the run is acknowledged by the store.

use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};
use std::sync::RwLock;

use crate::error::Result;
use crate::id::ContentId;
use crate::layout;
use crate::pack::{BlobLoc, decode_index};
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
        let keys: Vec<String> = store.list(layout::INDEX_PREFIX).await?.into_iter().map(|m| m.key).collect();
        let index = BlobIndex::new();
        let mut tasks = tokio::task::JoinSet::new();
        let mut pending = keys.iter().filter_map(|k| layout::pack_id_from_index_key(k).map(|id| (k.clone(), id)));
        let mut packs = 0usize;
        loop {
            while tasks.len() < 16 {
                let Some((key, id)) = pending.next() else { break };
                let store = store.clone();
                tasks.spawn(async move {
                    let data = store.get(&key).await?;
                    decode_index(id, &data)
                });
            }
            let Some(done) = tasks.join_next().await else { break };
            let pack = done.map_err(|e| crate::Error::new(crate::ErrorKind::Other, e.to_string()))??;
            let mut map = index.map.write().unwrap();
            for e in pack.entries {
                map.entry(e.id).or_insert(e.loc);
            }
            packs += 1;
        }
        Ok((index, packs))
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
