//! The destination's zstd dictionary for header blocks: trained once, on a sample of the first mailbox migrated into
//! the destination, stored as `dicts/<id>.zdict`, and used by every later migration into it.
//!
//! Header blocks are most of the blobs and a large share of the bytes of small-message corpora, and they compress
//! badly one by one (a 2 KiB block has too little history for zstd to find its repetitions). A dictionary gives every
//! block the history of thousands of others, while each blob stays a single zstd frame that decodes on its own: random
//! access to one message stays one range read (plus the dictionary, read once per process).

use std::collections::HashMap;
use std::path::Path;
use std::sync::Mutex;

use crate::compress::Dictionary;
use crate::error::{Error, ErrorKind, Result};
use crate::source::{EntryKind, FsSource, Source, mbox};
use crate::store::{DynStore, PutMode};

/// Prefix of dictionary objects.
pub const DICT_PREFIX: &str = "dicts/";
/// Largest dictionary trained (zstd's default maximum).
pub const MAX_DICT_SIZE: usize = 112 * 1024;
/// Fewest header blocks worth training on.
pub const MIN_SAMPLES: usize = 64;
/// Most header blocks sampled.
pub const MAX_SAMPLES: usize = 4000;
/// Most bytes read from the source for sampling.
pub const SAMPLE_READ_BUDGET: usize = 16 << 20;

/// Key of a dictionary object.
pub fn dict_key(id: u32) -> String {
    format!("{DICT_PREFIX}{id:08x}.zdict")
}

/// Dictionaries already loaded by this process, by id (each is leaked once, see [`Dictionary::leak`]).
static LOADED: Mutex<Option<HashMap<u32, &'static Dictionary>>> = Mutex::new(None);

/// The dictionary `id` of `store`, loaded once per process.
pub async fn load(store: &DynStore, id: u32) -> Result<&'static Dictionary> {
    if let Some(d) = LOADED.lock().unwrap().get_or_insert_with(HashMap::new).get(&id) {
        return Ok(d);
    }
    let bytes = store.get(&dict_key(id)).await.map_err(|e| e.context(format!("reading dictionary {id:08x}")))?;
    let dict = Dictionary::from_bytes(bytes, 3)?;
    if dict.id() != id {
        return Err(Error::corrupt(format!("{} holds dictionary {:08x}", dict_key(id), dict.id())));
    }
    let mut loaded = LOADED.lock().unwrap();
    let map = loaded.get_or_insert_with(HashMap::new);
    Ok(*map.entry(id).or_insert_with(|| dict.leak()))
}

/// The header dictionary to use for a migration into `store`: the destination's (the first, if several), or one
/// trained now on header blocks sampled from `source` and stored. `None` when the source has too few messages to
/// learn from (the next migration into the destination tries again).
pub async fn for_migration(store: &DynStore, source: &Path, level: i32) -> Result<Option<&'static Dictionary>> {
    let existing = store.list(DICT_PREFIX).await?;
    if let Some(first) = existing.iter().find_map(|m| {
        m.key.strip_prefix(DICT_PREFIX)?.strip_suffix(".zdict").and_then(|h| u32::from_str_radix(h, 16).ok())
    }) {
        return load(store, first).await.map(Some);
    }
    let source = source.to_path_buf();
    let trained = tokio::task::spawn_blocking(move || -> Result<Option<(Dictionary, usize, u128)>> {
        let samples = sample_headers(&source)?;
        if samples.len() < MIN_SAMPLES {
            tracing::info!(samples = samples.len(), "too few messages to train a header dictionary");
            return Ok(None);
        }
        let refs: Vec<&[u8]> = samples.iter().map(|s| s.as_slice()).collect();
        let started = std::time::Instant::now();
        Ok(Dictionary::train(&refs, MAX_DICT_SIZE, level)?.map(|d| (d, samples.len(), started.elapsed().as_millis())))
    })
    .await
    .map_err(|e| Error::new(ErrorKind::Other, format!("dictionary training task failed: {e}")))??;
    let Some((dict, samples, ms)) = trained else { return Ok(None) };
    tracing::info!(
        id = format!("{:08x}", dict.id()),
        samples,
        bytes = dict.bytes().len(),
        ms = ms as u64,
        "trained a header dictionary"
    );
    // Create-if-absent: a concurrent migration may have stored the same dictionary (same samples, same id).
    store.put(&dict_key(dict.id()), dict.bytes().clone(), PutMode::Create).await?;
    let id = dict.id();
    let mut loaded = LOADED.lock().unwrap();
    Ok(Some(*loaded.get_or_insert_with(HashMap::new).entry(id).or_insert_with(|| dict.leak())))
}

/// Header blocks of the first messages of a source, within [`SAMPLE_READ_BUDGET`] bytes read.
pub fn sample_headers(path: &Path) -> Result<Vec<Vec<u8>>> {
    let mut src = FsSource::open(path)?;
    let mut out = Vec::new();
    let mut read = 0usize;
    while let Some(entry) = src.next_entry() {
        if out.len() >= MAX_SAMPLES || read >= SAMPLE_READ_BUDGET {
            break;
        }
        let Ok(entry) = entry else { continue };
        let EntryKind::File { maildir } = entry.kind else { continue };
        let want = (SAMPLE_READ_BUDGET - read).min(if maildir.is_some() { 64 << 10 } else { 4 << 20 });
        let Ok(prefix) = read_prefix(&entry.abs, want) else { continue };
        read += prefix.len();
        if maildir.is_some() {
            if let Some(end) = crate::split::header_end(&prefix) {
                out.push(prefix[..end].to_vec());
            }
        } else if mbox::sniff(&prefix[..prefix.len().min(mbox::SNIFF_LEN)]) {
            let eof = prefix.len() as u64 >= entry.stat.size;
            let mut splitter = mbox::Splitter::new();
            let mut at = 0;
            while let Some(seg) = splitter.next(&prefix[at..], eof) {
                if let mbox::Seg::Message { from_len, msg_len, .. } = seg {
                    let msg = &prefix[at + from_len..at + from_len + msg_len];
                    if let Some(end) = crate::split::header_end(msg) {
                        out.push(msg[..end].to_vec());
                    }
                }
                at += seg.len();
                if out.len() >= MAX_SAMPLES {
                    break;
                }
            }
        }
    }
    Ok(out)
}

fn read_prefix(path: &Path, max: usize) -> std::io::Result<Vec<u8>> {
    use std::io::Read;
    let mut buf = Vec::new();
    std::fs::File::open(path)?.take(max as u64).read_to_end(&mut buf)?;
    Ok(buf)
}
