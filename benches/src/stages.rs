//! Micro-benchmarks of each pipeline stage, one thread, on the bytes of the corpus being measured.
//!
//! Each stage runs over the whole corpus (in memory) at least once and until [`StageOptions::min_seconds`] have
//! passed; the figure is bytes ÷ seconds over all repetitions. One thread, so the figures add up: the time a
//! single worker spends per byte is roughly the sum of 1 / (stage MB/s) over the stages it runs.

use std::time::Instant;

use mover_core::bench::{LoadedSource, mb_s};
use mover_core::compress::{self, Codec, Dictionary};
use mover_core::corpus::asctime;
use mover_core::dictionary;
use mover_core::id::{ContentId, PackId};
use mover_core::manifest::{
    BlobRef, ByteStr, MANIFEST_FORMAT, MANIFEST_VERSION, ManifestHeader, ManifestWriter, Part, PartKind, Record,
};
use mover_core::mime;
use mover_core::pack::PackWriter;
use mover_core::report::PassStats;
use mover_core::source::mbox;
use mover_core::split;
use mover_core::store::{PutMode, Store};
use serde::Serialize;

/// How long to run each stage.
#[derive(Debug, Clone, Copy)]
pub struct StageOptions {
    /// Keep repeating a stage until this many seconds have passed (at least one repetition).
    pub min_seconds: f64,
    /// zstd level.
    pub zstd_level: i32,
}

/// One stage's figure.
#[derive(Debug, Clone, Serialize)]
pub struct StageResult {
    /// Stage name.
    pub stage: String,
    /// What was measured, for the reader.
    pub what: String,
    /// Bytes processed per repetition.
    pub bytes: u64,
    /// Items (messages, blobs, records) per repetition.
    pub items: u64,
    /// Repetitions.
    pub reps: u32,
    /// Seconds over all repetitions.
    pub seconds: f64,
    /// MB/s (decimal) over all repetitions.
    pub mb_s: f64,
    /// Items per second.
    pub items_per_s: f64,
    /// Bytes out per repetition, where the stage makes something whose size matters (compressed bytes, the finished
    /// manifest): `out_bytes ÷ bytes` is its ratio.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub out_bytes: Option<u64>,
}

fn timed(
    stage: &str,
    what: &str,
    bytes: u64,
    items: u64,
    min_seconds: f64,
    mut f: impl FnMut() -> anyhow::Result<()>,
) -> anyhow::Result<StageResult> {
    let t = Instant::now();
    let mut reps = 0u32;
    loop {
        f()?;
        reps += 1;
        if t.elapsed().as_secs_f64() >= min_seconds {
            break;
        }
    }
    let seconds = t.elapsed().as_secs_f64();
    Ok(StageResult {
        stage: stage.into(),
        what: what.into(),
        bytes,
        items,
        reps,
        seconds,
        mb_s: mb_s(bytes * u64::from(reps), seconds),
        items_per_s: (items * u64::from(reps)) as f64 / seconds,
        out_bytes: None,
    })
}

/// [`timed`] for a stage whose every repetition makes `out_bytes` bytes (the last repetition's count is kept).
fn timed_out(
    stage: &str,
    what: &str,
    bytes: u64,
    items: u64,
    min_seconds: f64,
    mut f: impl FnMut() -> anyhow::Result<u64>,
) -> anyhow::Result<StageResult> {
    let mut out = 0;
    let mut r = timed(stage, what, bytes, items, min_seconds, || {
        out = f()?;
        Ok(())
    })?;
    r.out_bytes = Some(out);
    Ok(r)
}

/// Stored size of `compressed` (`None`: stored as is).
fn stored_len(raw: &[u8], compressed: Option<Vec<u8>>) -> u64 {
    compressed.map_or(raw.len(), |c| c.len()) as u64
}

/// The corpus as one mboxo file in memory (From_ line, escaped message, blank line), so that mbox splitting is
/// measured on every corpus, Maildir ones included.
fn as_mbox(src: &LoadedSource) -> Vec<u8> {
    let mut out = Vec::with_capacity(src.bytes as usize + src.piece_count() * 64);
    for (i, p) in src.pieces().enumerate() {
        out.extend_from_slice(format!("From bench@example.org {}\n", asctime(1_600_000_000 + i as i64)).as_bytes());
        for line in p.split_inclusive(|&b| b == b'\n') {
            if line.starts_with(b"From ") {
                out.push(b'>');
            }
            out.extend_from_slice(line);
        }
        if !p.ends_with(b"\n") {
            out.push(b'\n');
        }
        out.push(b'\n');
    }
    out
}

/// Run every stage over `src`.
pub fn run(src: &LoadedSource, opts: StageOptions, rt: &tokio::runtime::Runtime) -> anyhow::Result<Vec<StageResult>> {
    let n = src.piece_count() as u64;
    let bytes: u64 = src.pieces().map(|p| p.len() as u64).sum();
    let min = opts.min_seconds;
    let mut out = Vec::new();

    out.push(timed("split", "split::header_len over every message", bytes, n, min, || {
        let mut sum = 0usize;
        for p in src.pieces() {
            sum += split::header_len(p);
        }
        std::hint::black_box(sum);
        Ok(())
    })?);

    // What a worker does to each message before hashing: the MIME walk, and base64 and quoted-printable bodies
    // decoded and checked to re-encode exactly.
    out.push(timed(
        "mime",
        "mime::split_with_stats over every message (MIME walk, base64/QP decode and exactness checks)",
        bytes,
        n,
        min,
        || {
            let mut encoded = 0u64;
            for p in src.pieces() {
                encoded += mime::split_with_stats(p).1.encoded_parts;
            }
            std::hint::black_box(encoded);
            Ok(())
        },
    )?);

    let split_all = |data: &[u8]| -> anyhow::Result<u64> {
        let mut s = mbox::Splitter::new();
        let mut at = 0;
        let mut count = 0u64;
        while let Some(seg) = s.next(&data[at..], true) {
            at += seg.len();
            count += 1;
        }
        anyhow::ensure!(at == data.len(), "splitter stopped at {at} of {}", data.len());
        Ok(count)
    };
    let mbox_files: Vec<&[u8]> = src.mbox_files().collect();
    if !mbox_files.is_empty() {
        let bytes = mbox_files.iter().map(|f| f.len() as u64).sum();
        let largest = mbox_files.iter().map(|f| f.len()).max().unwrap_or(0);
        let what = format!(
            "mbox::Splitter over each of the {} mbox files as the pipeline reads them (largest {:.1} MB)",
            mbox_files.len(),
            largest as f64 / 1e6
        );
        out.push(timed("mbox-split", &what, bytes, src.messages, min, || {
            for f in &mbox_files {
                std::hint::black_box(split_all(f)?);
            }
            Ok(())
        })?);
    }
    let mbox_data = as_mbox(src);
    out.push(timed(
        "mbox-1file",
        "mbox::Splitter over the whole corpus written as one mboxo file (how splitting scales with file size)",
        mbox_data.len() as u64,
        n,
        min,
        || {
            std::hint::black_box(split_all(&mbox_data)?);
            Ok(())
        },
    )?);
    drop(mbox_data);

    // The blobs as the pipeline makes them: header and body of each message.
    // (kind: 0 = header block, 1 = body; the blob)
    let kinded: Vec<(usize, &[u8])> = src
        .pieces()
        .flat_map(|p| {
            let h = split::header_len(p);
            [(0, &p[..h]), (1, &p[h..])]
        })
        .filter(|(_, b)| !b.is_empty())
        .collect();
    let blobs: Vec<&[u8]> = kinded.iter().map(|&(_, b)| b).collect();
    let blob_count = blobs.len() as u64;

    out.push(timed("blake3", "ContentId::of of every header and body blob", bytes, blob_count, min, || {
        for b in &blobs {
            std::hint::black_box(ContentId::of(b));
        }
        Ok(())
    })?);

    let level = opts.zstd_level;
    let what = format!("compress::compress (zstd {level}) of every header and body blob");
    out.push(timed_out("zstd", &what, bytes, blob_count, min, || {
        let mut out = 0;
        for b in &blobs {
            out += stored_len(b, compress::compress(b, level)?);
        }
        Ok(out)
    })?);

    // The same blobs as the pipeline compresses them: header blocks together, bodies together, in segments.
    // Segments of each kind: (0 = header blocks, 1 = bodies, the segment).
    let segments: Vec<(usize, Vec<u8>)> = {
        let mut out = Vec::new();
        for kind in [0, 1] {
            let mut seg = Vec::new();
            for p in src.pieces() {
                let h = split::header_len(p);
                let b = if kind == 0 { &p[..h] } else { &p[h..] };
                if !seg.is_empty() && seg.len() + b.len() > mover_core::pack::SEGMENT_TARGET {
                    out.push((kind, std::mem::take(&mut seg)));
                }
                seg.extend_from_slice(b);
            }
            out.push((kind, seg));
        }
        out
    };
    let what = format!("compress::compress (zstd {level}) of the same blobs in 1 MiB segments of their kind");
    out.push(timed_out("zstd-seg", &what, bytes, blob_count, min, || {
        let mut out = 0;
        for (_, s) in &segments {
            out += stored_len(s, compress::compress(s, level)?);
        }
        Ok(out)
    })?);

    // The same with zstd dictionaries (`--dictionaries`): one for header blocks, one for bodies, trained as a
    // destination's first migration trains them (the header blocks and the bodies of up to 64 KiB of the first
    // messages, within the sampling budget).
    let (header_samples, body_samples) = dictionary_samples(src);
    let sample_bytes: u64 = header_samples.iter().chain(&body_samples).map(|s| s.len() as u64).sum();
    let mut dicts = None;
    if header_samples.len() >= dictionary::MIN_SAMPLES && body_samples.len() >= dictionary::MIN_SAMPLES {
        let what = format!(
            "Dictionary::train of the header and the body dictionary ({} + {} samples, at most {} KiB each; MB/s of samples)",
            header_samples.len(),
            body_samples.len(),
            dictionary::MAX_DICT_SIZE >> 10
        );
        let samples = (header_samples.len() + body_samples.len()) as u64;
        out.push(timed("dict-train", &what, sample_bytes, samples, min, || {
            let h = Dictionary::train(&header_samples, dictionary::MAX_DICT_SIZE, level)?;
            let b = Dictionary::train(&body_samples, dictionary::MAX_DICT_SIZE, level)?;
            dicts = h.zip(b);
            Ok(())
        })?);
    }
    match dicts {
        Some((h, b)) => {
            // Kept for the rest of the process, as the pipeline keeps a destination's dictionaries.
            let dict = [h.leak(), b.leak()];
            let what = format!("compress_with_dict (zstd {level}) of every header and body blob, by kind");
            out.push(timed_out("zstd-dict", &what, bytes, blob_count, min, || {
                let mut out = 0;
                for &(kind, b) in &kinded {
                    out += stored_len(b, compress::compress_with_dict(b, dict[kind])?);
                }
                Ok(out)
            })?);
            let what = format!("compress_with_dict (zstd {level}) of the 1 MiB segments, with their kind's dictionary");
            out.push(timed_out("zstd-dict-seg", &what, bytes, blob_count, min, || {
                let mut out = 0;
                for (kind, s) in &segments {
                    out += stored_len(s, compress::compress_with_dict(s, dict[*kind])?);
                }
                Ok(out)
            })?);
        }
        None => eprintln!(
            "mover-bench: no dictionary stages ({} header and {} body samples: too few, or zstd found nothing to learn)",
            header_samples.len(),
            body_samples.len()
        ),
    }
    drop(segments);

    // Stored forms, for packing and storing (not timed).
    let stored: Vec<(ContentId, Vec<u8>, u64, Codec)> = blobs
        .iter()
        .map(|b| {
            let id = ContentId::of(b);
            match compress::compress(b, level) {
                Ok(Some(c)) => Ok((id, c, b.len() as u64, Codec::Zstd)),
                Ok(None) => Ok((id, b.to_vec(), b.len() as u64, Codec::None)),
                Err(e) => Err(e),
            }
        })
        .collect::<Result<_, _>>()?;
    let stored_bytes: u64 = stored.iter().map(|s| s.1.len() as u64).sum();
    let target = 32 << 20;
    let mut packs = Vec::new();
    out.push(timed(
        "pack",
        "PackWriter::add_solo of every stored blob, sealed at 32 MiB (MB/s of stored bytes)",
        stored_bytes,
        blob_count,
        min,
        || {
            packs.clear();
            let mut w = PackWriter::new(PackId::fresh(), target);
            for (id, data, raw, codec) in &stored {
                w.add_solo(*id, data, *raw, *codec);
                if w.len() >= target {
                    packs.push(std::mem::replace(&mut w, PackWriter::new(PackId::fresh(), target)).seal());
                }
            }
            if !w.is_empty() {
                packs.push(w.seal());
            }
            Ok(())
        },
    )?);

    let fake = |i: usize, raw: u64| BlobRef {
        pack: PackId::fresh(),
        seg: (i / 40) as u32,
        offset: (i % 40) as u64 * 3000,
        raw_len: raw,
    };
    let records: Vec<Record> = src
        .pieces()
        .enumerate()
        .map(|(i, p)| {
            let h = split::header_len(p);
            Record::Msg {
                offset: 0,
                from: ByteStr(Vec::new()),
                parts: vec![
                    Part { k: PartKind::Header, blobs: vec![fake(2 * i, h as u64)], data: None, recipe: None },
                    Part {
                        k: PartKind::Body,
                        blobs: vec![fake(2 * i + 1, (p.len() - h) as u64)],
                        data: None,
                        recipe: None,
                    },
                ],
                trail: ByteStr(Vec::new()),
                blake3: ContentId::of(p),
                len: p.len() as u64,
                flags: None,
            }
        })
        .collect();
    let header = || ManifestHeader {
        format: MANIFEST_FORMAT.into(),
        version: MANIFEST_VERSION,
        mailbox: "bench".into(),
        pass: 1,
        source: "/var/mail/bench".into(),
        source_is_dir: true,
        started_ms: 0,
        finished_ms: 0,
        tool: "mover-bench".into(),
        records: 0,
        body_blake3: ContentId::of(b""),
        records_blake3: None,
        stats: PassStats::default(),
    };
    let mut manifest = Default::default();
    out.push(timed_out(
        "manifest",
        "ManifestWriter::write of one two-part Msg record per message, then finish (records compressed, header; \
         MB/s of the source bytes described)",
        bytes,
        n,
        min,
        || {
            let mut w = ManifestWriter::new()?;
            for r in &records {
                w.write(r)?;
            }
            manifest = w.finish(header())?;
            Ok(manifest.len() as u64)
        },
    )?);
    drop(records);

    // Writing the sealed packs to a local-directory store (write, fsync, link): the store's share of the work.
    let pack_bytes: u64 = packs.iter().map(|p| (p.data.len() + p.index.len()) as u64).sum();
    let scratch = tempfile::Builder::new().prefix("mover-bench-store-").tempdir()?;
    let mut round = 0u32;
    out.push(timed(
        "store-put",
        "LocalStore::put of the sealed packs and their indexes (write, fsync, link)",
        pack_bytes,
        packs.len() as u64 * 2,
        min,
        || {
            round += 1;
            let store = mover_core::store::LocalStore::create(scratch.path().join(round.to_string()))?;
            rt.block_on(async {
                for p in &packs {
                    store.put(&format!("packs/{}.pack", p.id), p.data.clone(), PutMode::Create).await?;
                    store.put(&format!("index/{}.idx", p.id), p.index.clone(), PutMode::Create).await?;
                }
                anyhow::Ok(())
            })?;
            std::fs::remove_dir_all(scratch.path().join(round.to_string()))?;
            Ok(())
        },
    )?);

    // The commit of the pass: its manifest created in the store (write, fsync, link; refused if the key exists).
    let store = mover_core::store::LocalStore::create(scratch.path().join("manifests"))?;
    let mut pass = 0u32;
    out.push(timed(
        "manifest-put",
        "LocalStore::put (create) of the finished manifest: the pass's commit (MB/s of manifest bytes)",
        manifest.len() as u64,
        1,
        min,
        || {
            pass += 1;
            let key = mover_core::layout::manifest_key("bench", pass);
            let put = rt.block_on(store.put(&key, manifest.clone(), PutMode::Create))?;
            anyhow::ensure!(put == mover_core::store::PutOutcome::Written, "manifest {key}: {put:?}");
            Ok(())
        },
    )?);
    Ok(out)
}

/// Training samples as a destination's first migration with `--dictionaries` takes them from its source
/// ([`dictionary::sample`]): the header blocks of the first messages, and their bodies of up to
/// [`dictionary::SMALL_BODY_MAX`] bytes, until [`dictionary::MAX_SAMPLES`] header blocks or
/// [`dictionary::SAMPLE_READ_BUDGET`] bytes of messages.
fn dictionary_samples(src: &LoadedSource) -> (Vec<&[u8]>, Vec<&[u8]>) {
    let (mut headers, mut bodies) = (Vec::new(), Vec::new());
    let mut read = 0;
    for p in src.pieces() {
        if headers.len() >= dictionary::MAX_SAMPLES || read >= dictionary::SAMPLE_READ_BUDGET {
            break;
        }
        read += p.len();
        if let Some(end) = split::header_end(p) {
            headers.push(&p[..end]);
            if p.len() > end && p.len() - end <= dictionary::SMALL_BODY_MAX {
                bodies.push(&p[end..]);
            }
        }
    }
    (headers, bodies)
}
