//! The destination's zstd dictionaries, one for header blocks and one for small bodies: trained once, on a sample of
//! the first mailbox migrated into the destination with dictionaries on (`MigrateOptions::dictionaries`, off by
//! default), stored as `dicts/<purpose>-<id>.zdict`, and used by every later migration into it that asks for them.
//!
//! Since blobs are compressed together in segments they save only about 1 % of the packs (the figures below are
//! from when small blobs were compressed one by one), hence opt-in.
//!
//! Header blocks and small bodies are most of the blobs and most of the bytes of small-message corpora, and they
//! compress badly one by one (a 2 KiB block has too little history for zstd to find its repetitions). A dictionary
//! gives every block the history of thousands of others, while each blob stays a single zstd frame that decodes on its
//! own: random access to one message stays one range read (plus the dictionary, read once per process). Measured on
//! the Enron sample: unique bodies compress to 0.51 of their size one by one, 0.40 with a body dictionary.

use std::collections::HashMap;
use std::path::Path;
use std::sync::Mutex;

use crate::compress::Dictionary;
use crate::error::{Error, ErrorKind, Result};
use crate::source::{EntryKind, FsSource, Source, mbox};
use crate::store::{DynStore, PutMode};

/// Prefix of dictionary objects.
pub const DICT_PREFIX: &str = "dicts/";
/// Largest dictionary trained. Segments of 512 KiB carry most of their own history: 64 KiB trained on 2,000
/// samples stores the Enron sample as small as 112 KiB trained on 4,000 did (0.210 of source), in half the training
/// time (about 0.1 s, paid once per destination).
pub const MAX_DICT_SIZE: usize = 64 * 1024;
/// Fewest header blocks worth training on.
pub const MIN_SAMPLES: usize = 64;
/// Most header blocks sampled.
pub const MAX_SAMPLES: usize = 2000;
/// Most bytes read from the source for sampling.
pub const SAMPLE_READ_BUDGET: usize = 8 << 20;

/// Bodies up to this size are sampled to train the body dictionary (the dictionaries compress the segments of
/// header blocks and of bodies, [`crate::pack`]).
pub const SMALL_BODY_MAX: usize = 64 * 1024;

/// What a dictionary is trained on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Purpose {
    /// Header blocks.
    Headers,
    /// Bodies (sampled up to [`SMALL_BODY_MAX`]).
    Bodies,
}

impl Purpose {
    fn name(self) -> &'static str {
        match self {
            Purpose::Headers => "headers",
            Purpose::Bodies => "bodies",
        }
    }
}

/// The dictionaries a migration uses.
#[derive(Debug, Clone, Copy, Default)]
pub struct Dictionaries {
    /// For segments of header blocks.
    pub headers: Option<&'static Dictionary>,
    /// For segments of bodies.
    pub bodies: Option<&'static Dictionary>,
}

/// Key of a dictionary object.
pub fn dict_key(purpose: Purpose, id: u32) -> String {
    format!("{DICT_PREFIX}{}-{id:08x}.zdict", purpose.name())
}

/// The purpose and id named by a dictionary key.
fn parse_dict_key(key: &str) -> Option<(Purpose, u32)> {
    let rest = key.strip_prefix(DICT_PREFIX)?.strip_suffix(".zdict")?;
    let (purpose, id) = rest.rsplit_once('-')?;
    let purpose = match purpose {
        "headers" => Purpose::Headers,
        "bodies" => Purpose::Bodies,
        _ => return None,
    };
    Some((purpose, u32::from_str_radix(id, 16).ok()?))
}

/// Dictionaries already loaded by this process, by id (each is leaked once, see [`Dictionary::leak`]).
static LOADED: Mutex<Option<HashMap<u32, &'static Dictionary>>> = Mutex::new(None);

/// The dictionary `id` of `store`, loaded once per process.
pub async fn load(store: &DynStore, id: u32) -> Result<&'static Dictionary> {
    if let Some(d) = LOADED.lock().unwrap().get_or_insert_with(HashMap::new).get(&id) {
        return Ok(d);
    }
    let key = store
        .list(DICT_PREFIX)
        .await?
        .into_iter()
        .find(|m| parse_dict_key(&m.key).is_some_and(|(_, i)| i == id))
        .map(|m| m.key)
        .ok_or_else(|| Error::corrupt(format!("dictionary {id:08x} is missing from {}", store.describe())))?;
    let bytes = store.get(&key).await.map_err(|e| e.context(format!("reading dictionary {key}")))?;
    let dict = Dictionary::from_bytes(bytes, 3)?;
    if dict.id() != id {
        return Err(Error::corrupt(format!("{key} holds dictionary {:08x}", dict.id())));
    }
    Ok(remember(dict))
}

fn remember(dict: Dictionary) -> &'static Dictionary {
    let id = dict.id();
    let mut loaded = LOADED.lock().unwrap();
    loaded.get_or_insert_with(HashMap::new).entry(id).or_insert_with(|| dict.leak())
}

/// The dictionaries to use for a migration into `store`: the destination's (the first of each purpose), or ones
/// trained now on blocks sampled from `source` and stored. A purpose stays without a dictionary when the source has
/// too few messages to learn from (a later migration into the destination tries again).
pub async fn for_migration(store: &DynStore, source: &Path, level: i32) -> Result<Dictionaries> {
    let mut out = Dictionaries::default();
    let existing: Vec<(Purpose, u32)> =
        store.list(DICT_PREFIX).await?.iter().filter_map(|m| parse_dict_key(&m.key)).collect();
    for purpose in [Purpose::Headers, Purpose::Bodies] {
        if let Some(&(_, id)) = existing.iter().find(|(p, _)| *p == purpose) {
            let d = Some(load(store, id).await?);
            match purpose {
                Purpose::Headers => out.headers = d,
                Purpose::Bodies => out.bodies = d,
            }
        }
    }
    if out.headers.is_some() && out.bodies.is_some() {
        return Ok(out);
    }
    let source = source.to_path_buf();
    let need = (out.headers.is_none(), out.bodies.is_none());
    let trained = tokio::task::spawn_blocking(move || -> Result<Vec<(Purpose, Dictionary, usize, u128)>> {
        let (headers, bodies) = sample(&source)?;
        let train =
            |purpose: Purpose, wanted: bool, samples: Samples| -> Result<Option<(Purpose, Dictionary, usize, u128)>> {
                if !wanted || samples.len() < MIN_SAMPLES {
                    tracing::info!(samples = samples.len(), purpose = purpose.name(), "no dictionary trained");
                    return Ok(None);
                }
                let refs: Vec<&[u8]> = samples.iter().map(|s| s.as_slice()).collect();
                let started = std::time::Instant::now();
                Ok(Dictionary::train(&refs, MAX_DICT_SIZE, level)?
                    .map(|d| (purpose, d, samples.len(), started.elapsed().as_millis())))
            };
        // The two trainings are independent: one per core.
        let (h, b) =
            rayon::join(|| train(Purpose::Headers, need.0, headers), || train(Purpose::Bodies, need.1, bodies));
        Ok([h?, b?].into_iter().flatten().collect())
    })
    .await
    .map_err(|e| Error::new(ErrorKind::Other, format!("dictionary training task failed: {e}")))??;
    for (purpose, dict, samples, ms) in trained {
        tracing::info!(
            purpose = purpose.name(),
            id = format!("{:08x}", dict.id()),
            samples,
            bytes = dict.bytes().len(),
            ms = ms as u64,
            "trained a dictionary"
        );
        // Create-if-absent: a concurrent migration may have stored the same dictionary (same samples, same id).
        store.put(&dict_key(purpose, dict.id()), dict.bytes().clone(), PutMode::Create).await?;
        let d = Some(remember(dict));
        match purpose {
            Purpose::Headers => out.headers = d,
            Purpose::Bodies => out.bodies = d,
        }
    }
    Ok(out)
}

/// Training samples, each a block of bytes.
pub type Samples = Vec<Vec<u8>>;

/// Header blocks and small bodies of the first messages of a source, within [`SAMPLE_READ_BUDGET`] bytes read.
pub fn sample(path: &Path) -> Result<(Samples, Samples)> {
    let mut src = FsSource::open(path)?;
    let mut out = Vec::new();
    let mut bodies = Vec::new();
    let mut keep = |msg: &[u8], out: &mut Vec<Vec<u8>>| {
        if let Some(end) = crate::split::header_end(msg) {
            out.push(msg[..end].to_vec());
            if msg.len() - end <= SMALL_BODY_MAX && msg.len() > end {
                bodies.push(msg[end..].to_vec());
            }
        }
    };
    let mut read = 0usize;
    while let Some(entry) = src.next_entry() {
        if out.len() >= MAX_SAMPLES || read >= SAMPLE_READ_BUDGET {
            break;
        }
        let Ok(entry) = entry else { continue };
        let EntryKind::File { maildir } = entry.kind else { continue };
        let want = (SAMPLE_READ_BUDGET - read).min(if maildir.is_some() { 64 << 10 } else { 4 << 20 });
        let Ok(prefix) = read_prefix(&entry.abs(), want) else { continue };
        read += prefix.len();
        if maildir.is_some() {
            if prefix.len() as u64 >= entry.stat.size {
                keep(&prefix, &mut out);
            } else if let Some(end) = crate::split::header_end(&prefix) {
                out.push(prefix[..end].to_vec());
            }
        } else if mbox::sniff(&prefix[..prefix.len().min(mbox::SNIFF_LEN)]) {
            let eof = prefix.len() as u64 >= entry.stat.size;
            let mut splitter = mbox::Splitter::new();
            let mut at = 0;
            while let Some(seg) = splitter.next(&prefix[at..], eof) {
                if let mbox::Seg::Message { from_len, msg_len, .. } = seg {
                    keep(&prefix[at + from_len..at + from_len + msg_len], &mut out);
                }
                at += seg.len();
                if out.len() >= MAX_SAMPLES {
                    break;
                }
            }
        }
    }
    Ok((out, bodies))
}

fn read_prefix(path: &Path, max: usize) -> std::io::Result<Vec<u8>> {
    use std::io::Read;
    let mut buf = Vec::new();
    std::fs::File::open(path)?.take(max as u64).read_to_end(&mut buf)?;
    Ok(buf)
}
