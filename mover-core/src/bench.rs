//! Measuring throughput honestly: the pipeline against a bound measured in the same run, on the same bytes.
//!
//! A throughput figure on its own says little: the same code runs at 40 MB/s on a loaded laptop and 400 MB/s on an
//! idle server. So every end-to-end figure is reported next to a **bound** measured in the same run on the same
//! bytes: the source read into memory first, then BLAKE3 of every message and zstd (same level) of the messages
//! in 1 MiB segments, as the pipeline compresses them, on the same number of threads, with no file or store I/O. `ratio_to_bound` = pipeline MB/s ÷ bound
//! MB/s says how much of the machine's hashing-and-compressing speed the pipeline turns into migrated bytes; it is
//! comparable across machines where the absolute figures are not. (The pipeline can exceed 1: it does not
//! compress blobs the destination already has.)
//!
//! Shared by `benches/` (the `mover-bench` runner) and `moverd bench`; the corpus generator is
//! [`crate::corpus`].

use std::io;
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use rayon::prelude::*;
use serde::{Deserialize, Serialize};

use crate::error::{Error, ErrorKind, Result};
use crate::id::ContentId;
use crate::pipeline::{MigrateOptions, migrate};
use crate::source::maildir;
use crate::source::mbox;
use crate::store::{DynStore, LocalStore};

// ---------------------------------------------------------------------------------------------------------------
// Memory.

fn status_field(field: &str) -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with(field))?;
    let kib: u64 = line[field.len()..].trim().trim_end_matches("kB").trim().parse().ok()?;
    Some(kib * 1024)
}

/// Peak resident set size of this process so far (`VmHWM`), in bytes; `None` where `/proc` is unavailable.
pub fn peak_rss() -> Option<u64> {
    status_field("VmHWM:")
}

/// Current resident set size (`VmRSS`), in bytes.
pub fn current_rss() -> Option<u64> {
    status_field("VmRSS:")
}

/// Reset the peak-RSS high-water mark to the current RSS (Linux: write `5` to `/proc/self/clear_refs`), so that
/// [`peak_rss`] afterwards measures one phase. Returns whether it worked; where it did not, a peak read later
/// includes everything the process did before.
pub fn reset_peak_rss() -> bool {
    std::fs::write("/proc/self/clear_refs", b"5").is_ok()
}

// ---------------------------------------------------------------------------------------------------------------
// The source in memory, cut into messages.

/// Source files read into memory and cut into messages the way the pipeline cuts them: a Maildir file is one
/// message, an mbox is split with [`mbox::Splitter`] (the From_ line and separator are not part of the message),
/// any other file is one piece.
#[derive(Debug, Default)]
pub struct LoadedSource {
    files: Vec<Vec<u8>>,
    is_mbox: Vec<bool>,
    pieces: Vec<(usize, Range<usize>)>,
    /// Bytes of the files loaded.
    pub bytes: u64,
    /// Pieces that are messages (the rest are opaque files or mbox preambles).
    pub messages: u64,
    /// Files loaded.
    pub file_count: u64,
    /// Whether a byte limit stopped the load before the end of the source.
    pub truncated: bool,
}

impl LoadedSource {
    /// Every piece (message or opaque data) as a byte slice.
    pub fn pieces(&self) -> impl Iterator<Item = &[u8]> + '_ {
        self.pieces.iter().map(|(f, r)| &self.files[*f][r.clone()])
    }

    /// Parallel iterator over the pieces.
    pub fn par_pieces(&self) -> impl ParallelIterator<Item = &[u8]> + '_ {
        self.pieces.par_iter().map(|(f, r)| &self.files[*f][r.clone()])
    }

    /// The loaded files (e.g. to time mbox splitting).
    pub fn files(&self) -> &[Vec<u8>] {
        &self.files
    }

    /// The loaded files that are mbox files.
    pub fn mbox_files(&self) -> impl Iterator<Item = &[u8]> + '_ {
        self.files.iter().zip(&self.is_mbox).filter(|(_, m)| **m).map(|(f, _)| f.as_slice())
    }

    /// Number of pieces.
    pub fn piece_count(&self) -> usize {
        self.pieces.len()
    }
}

/// Regular files under `root` (or `root` itself), in a stable order.
fn files_under(root: &Path, out: &mut Vec<PathBuf>) -> io::Result<()> {
    let meta = std::fs::symlink_metadata(root)?;
    if meta.is_file() {
        out.push(root.to_path_buf());
        return Ok(());
    }
    if !meta.is_dir() {
        return Ok(());
    }
    let mut entries: Vec<PathBuf> = std::fs::read_dir(root)?.map(|e| e.map(|e| e.path())).collect::<io::Result<_>>()?;
    entries.sort();
    for e in entries {
        files_under(&e, out)?;
    }
    Ok(())
}

/// Read every file under `roots` once and discard the bytes, so that a run timed next finds them in the page cache
/// (the bound works on bytes in memory; a pipeline run that read from disk would be compared unfairly). On this
/// project's CI machine the kernel drops clean page cache within seconds: 100 % of a corpus resident, 76 % 15 s
/// later, 45 % after 30 s. Returns the bytes read.
pub fn warm_page_cache(roots: &[PathBuf]) -> Result<u64> {
    use std::io::Read as _;
    let mut paths = Vec::new();
    for r in roots {
        files_under(r, &mut paths).map_err(|e| Error::io(format!("walking {}", r.display()), e))?;
    }
    let mut buf = vec![0u8; 1 << 20];
    let mut total = 0u64;
    for p in paths {
        let mut f = std::fs::File::open(&p).map_err(|e| Error::io(format!("opening {}", p.display()), e))?;
        loop {
            let n = f.read(&mut buf).map_err(|e| Error::io(format!("reading {}", p.display()), e))?;
            if n == 0 {
                break;
            }
            total += n as u64;
        }
    }
    Ok(total)
}

/// Read the regular files of `roots` into memory, up to `limit` bytes (whole files; `None`: everything).
pub fn load_source(roots: &[PathBuf], limit: Option<u64>) -> Result<LoadedSource> {
    let mut paths = Vec::new();
    for r in roots {
        files_under(r, &mut paths).map_err(|e| Error::io(format!("walking {}", r.display()), e))?;
    }
    let mut src = LoadedSource::default();
    for p in paths {
        if limit.is_some_and(|l| src.bytes >= l) {
            src.truncated = true;
            break;
        }
        let data = std::fs::read(&p).map_err(|e| Error::io(format!("reading {}", p.display()), e))?;
        let in_maildir = p
            .parent()
            .and_then(|d| d.file_name())
            .is_some_and(|n| maildir::SUBDIRS.iter().any(|s| s.as_bytes() == n.as_encoded_bytes()));
        let f = src.files.len();
        let is_mbox = !in_maildir && mbox::sniff(&data[..data.len().min(mbox::SNIFF_LEN)]);
        if in_maildir {
            src.pieces.push((f, 0..data.len()));
            src.messages += 1;
        } else if is_mbox {
            let mut splitter = mbox::Splitter::new();
            let mut at = 0;
            while let Some(seg) = splitter.next(&data[at..], true) {
                match seg {
                    mbox::Seg::Preamble { len } => src.pieces.push((f, at..at + len)),
                    mbox::Seg::Message { from_len, msg_len, .. } => {
                        src.pieces.push((f, at + from_len..at + from_len + msg_len));
                        src.messages += 1;
                    }
                }
                at += seg.len();
            }
        } else if !data.is_empty() {
            src.pieces.push((f, 0..data.len()));
        }
        src.bytes += data.len() as u64;
        src.file_count += 1;
        src.files.push(data);
        src.is_mbox.push(is_mbox);
    }
    Ok(src)
}

// ---------------------------------------------------------------------------------------------------------------
// The bound.

/// The hashing-and-compressing bound of one run.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Bound {
    /// Bytes the bound went over (all loaded files; From_ lines and separators are counted but not processed).
    pub bytes: u64,
    /// Pieces (messages and opaque data) processed.
    pub pieces: u64,
    /// zstd level.
    pub zstd_level: i32,
    /// Worker threads.
    pub threads: usize,
    /// Wall-clock seconds of the best repetition.
    pub seconds: f64,
    /// Decimal MB/s of the best repetition.
    pub mb_s: f64,
    /// Bytes after zstd (one frame per segment of pieces, raw where zstd does not pay).
    pub zstd_bytes: u64,
}

/// A rayon pool with `threads` workers (`None`: one per core, as the pipeline does).
pub fn pool(threads: Option<usize>) -> Result<rayon::ThreadPool> {
    let mut b = rayon::ThreadPoolBuilder::new().thread_name(|i| format!("mover-bench-{i}"));
    if let Some(n) = threads {
        b = b.num_threads(n);
    }
    b.build().map_err(|e| Error::new(ErrorKind::Other, format!("starting worker threads: {e}")))
}

/// Measure the bound over `src`: BLAKE3 of every piece, and zstd at `level` of the pieces in segments of
/// [`crate::pack::SEGMENT_TARGET`] bytes (as the pipeline compresses small messages), on `threads` workers, `reps`
/// times; the fastest repetition counts (the bound is a ceiling: noise only ever slows it down).
pub fn measure_bound(src: &LoadedSource, level: i32, threads: Option<usize>, reps: usize) -> Result<Bound> {
    let pool = pool(threads)?;
    // Consecutive pieces, about one segment each (a piece larger than that is a group of its own).
    let mut groups: Vec<Range<usize>> = Vec::new();
    let (mut start, mut size) = (0, 0);
    for (i, p) in src.pieces().enumerate() {
        if size > 0 && size + p.len() > crate::pack::SEGMENT_TARGET {
            groups.push(start..i);
            (start, size) = (i, 0);
        }
        size += p.len();
    }
    groups.push(start..src.piece_count());
    let mut best = f64::INFINITY;
    let mut zstd_bytes = 0;
    for _ in 0..reps.max(1) {
        let t = Instant::now();
        let r: Result<u64> = pool.install(|| {
            groups
                .par_iter()
                .map(|g| {
                    let mut segment = Vec::with_capacity(crate::pack::SEGMENT_TARGET);
                    for (f, r) in &src.pieces[g.clone()] {
                        let p = &src.files[*f][r.clone()];
                        std::hint::black_box(ContentId::of(p));
                        segment.extend_from_slice(p);
                    }
                    Ok(match crate::compress::compress(&segment, level)? {
                        Some(c) => c.len() as u64,
                        None => segment.len() as u64,
                    })
                })
                .sum()
        });
        zstd_bytes = r?;
        best = best.min(t.elapsed().as_secs_f64());
    }
    Ok(Bound {
        bytes: src.bytes,
        pieces: src.piece_count() as u64,
        zstd_level: level,
        threads: pool.current_num_threads(),
        seconds: best,
        mb_s: mb_s(src.bytes, best),
        zstd_bytes,
    })
}

/// Decimal megabytes per second.
pub fn mb_s(bytes: u64, seconds: f64) -> f64 {
    if seconds > 0.0 { bytes as f64 / seconds / 1e6 } else { 0.0 }
}

// ---------------------------------------------------------------------------------------------------------------
// The pipeline, end to end.

/// One mailbox to migrate: its id and its source path.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MailboxSource {
    /// Mailbox id.
    pub mailbox: String,
    /// Maildir, Maildir++ root, mbox file or directory of mbox files.
    pub path: PathBuf,
}

/// Tuning of an end-to-end run.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PipelineOptions {
    /// zstd level.
    pub zstd_level: i32,
    /// Worker threads (`None`: one per core).
    pub threads: Option<usize>,
    /// Run the migration a second time with nothing changed, and time it.
    pub rerun: bool,
    /// Migrate with zstd dictionaries (`MigrateOptions::dictionaries`, off by default). The destination's
    /// dictionaries are trained and stored before the clock starts, as every migration after the first into a
    /// destination finds them.
    pub dictionaries: bool,
    /// The dedupe index cache directory (`MigrateOptions::index_cache`; moverd's default is one).
    pub index_cache: Option<std::path::PathBuf>,
}

impl Default for PipelineOptions {
    fn default() -> Self {
        PipelineOptions { zstd_level: 3, threads: None, rerun: true, dictionaries: false, index_cache: None }
    }
}

/// What one end-to-end run measured.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct PipelineRun {
    /// Mailboxes migrated.
    pub mailboxes: u64,
    /// Messages.
    pub messages: u64,
    /// Regular files.
    pub files: u64,
    /// Bytes of all source files.
    pub source_bytes: u64,
    /// Raw bytes of the blobs the run stored (after dedupe, before compression).
    pub new_raw_bytes: u64,
    /// Raw bytes that were deduplicated against blobs already stored.
    pub deduplicated_bytes: u64,
    /// Bytes written to the store (packs, indexes, manifests).
    pub new_stored_bytes: u64,
    /// Items quarantined.
    pub quarantined: u64,
    /// Wall-clock seconds of the first run (all mailboxes, one after the other).
    pub seconds: f64,
    /// Source MB/s (decimal).
    pub mb_s: f64,
    /// Messages per second.
    pub messages_per_s: f64,
    /// `new_stored_bytes / source_bytes`.
    pub stored_ratio: f64,
    /// Raw blob bytes referenced ÷ raw blob bytes stored (1.0: nothing deduplicated).
    pub dedupe_ratio: f64,
    /// Share of the raw blob bytes that deduplicated.
    pub deduplicated_fraction: f64,
    /// Peak RSS during the run, in bytes (see [`PipelineRun::rss_note`]).
    pub peak_rss: Option<u64>,
    /// How the peak RSS was taken.
    pub rss_note: String,
    /// Seconds of the no-change second run, when asked for.
    pub rerun_seconds: Option<f64>,
    /// Whether the second run found nothing new (every mailbox).
    pub rerun_nothing_new: Option<bool>,
    /// Bytes the second run stored.
    pub rerun_stored_bytes: Option<u64>,
}

/// Migrate every mailbox of `sources` into `store` one after the other, timing the whole; then, if asked, once
/// more with nothing changed. Peak RSS is this process's high-water mark, reset at the start where the kernel
/// allows it.
pub async fn run_pipeline(sources: &[MailboxSource], store: DynStore, opts: &PipelineOptions) -> Result<PipelineRun> {
    let reset = reset_peak_rss();
    let mut run = PipelineRun {
        rss_note: if reset {
            "VmHWM of this process, reset at the start of the run".into()
        } else {
            "VmHWM of this process since it started (reset not available)".into()
        },
        ..PipelineRun::default()
    };
    // One process migrating mailbox after mailbox, as an embedding tool or a daemon would: the dedupe index is
    // kept from one pass to the next.
    let kept = crate::pipeline::KeptIndex::new();
    let options = |mailbox: &str| {
        let mut o = MigrateOptions::new(mailbox);
        o.zstd_level = opts.zstd_level;
        o.threads = opts.threads;
        o.dictionaries = opts.dictionaries;
        o.index_cache = opts.index_cache.clone();
        o.keep_index = Some(kept.clone());
        o
    };
    if opts.dictionaries
        && let Some(first) = sources.first()
    {
        crate::pipeline::ensure_format(&store).await?;
        crate::dictionary::for_migration(&store, &first.path, opts.zstd_level).await?;
    }
    let t = Instant::now();
    for s in sources {
        let r = migrate(&s.path, store.clone(), options(&s.mailbox))
            .await
            .map_err(|e| e.context(format!("migrating {} as {}", s.path.display(), s.mailbox)))?;
        run.mailboxes += 1;
        run.messages += r.messages;
        run.files += r.files;
        run.source_bytes += r.source_bytes;
        run.new_raw_bytes += r.stats.new_raw_bytes;
        run.deduplicated_bytes += r.stats.deduplicated_bytes;
        run.new_stored_bytes += r.new_stored_bytes;
        run.quarantined += r.quarantined;
    }
    run.seconds = t.elapsed().as_secs_f64();
    run.peak_rss = peak_rss();
    run.mb_s = mb_s(run.source_bytes, run.seconds);
    run.messages_per_s = if run.seconds > 0.0 { run.messages as f64 / run.seconds } else { 0.0 };
    run.stored_ratio = ratio(run.new_stored_bytes, run.source_bytes);
    let referenced = run.new_raw_bytes + run.deduplicated_bytes;
    run.dedupe_ratio = ratio(referenced, run.new_raw_bytes);
    run.deduplicated_fraction = ratio(run.deduplicated_bytes, referenced);
    if opts.rerun {
        let t = Instant::now();
        let mut nothing_new = true;
        let mut stored = 0;
        for s in sources {
            let r = migrate(&s.path, store.clone(), options(&s.mailbox)).await?;
            nothing_new &= r.nothing_new;
            stored += r.new_stored_bytes;
        }
        run.rerun_seconds = Some(t.elapsed().as_secs_f64());
        run.rerun_nothing_new = Some(nothing_new);
        run.rerun_stored_bytes = Some(stored);
    }
    Ok(run)
}

fn ratio(a: u64, b: u64) -> f64 {
    if b == 0 { 0.0 } else { a as f64 / b as f64 }
}

/// A local-directory store in a fresh temporary directory, removed on drop.
#[derive(Debug)]
pub struct ScratchStore {
    dir: tempfile::TempDir,
    store: DynStore,
}

impl ScratchStore {
    /// A scratch store under `parent` (`None`: the system temporary directory).
    pub fn new(parent: Option<&Path>) -> Result<Self> {
        let dir = match parent {
            Some(p) => tempfile::Builder::new().prefix("mover-bench-").tempdir_in(p),
            None => tempfile::Builder::new().prefix("mover-bench-").tempdir(),
        }
        .map_err(|e| Error::io("creating a scratch directory", e))?;
        let store: DynStore = Arc::new(LocalStore::create(dir.path().join("store"))?);
        Ok(ScratchStore { dir, store })
    }

    /// The store.
    pub fn store(&self) -> DynStore {
        self.store.clone()
    }

    /// The temporary directory (the store is its `store/` subdirectory).
    pub fn path(&self) -> &Path {
        self.dir.path()
    }
}

// ---------------------------------------------------------------------------------------------------------------
// Wave planning.

/// What an operator knows about the estate, plus what a bench measured.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct WaveInput {
    /// Mailboxes in the estate (unknown: the plan gives per-window figures only).
    pub mailboxes: Option<u64>,
    /// Average mailbox size in bytes.
    pub avg_mailbox_bytes: u64,
    /// Hosts migrating in parallel (one daemon each).
    pub hosts: u64,
    /// Length of one migration window, in seconds.
    pub window_secs: f64,
    /// Measured source throughput of one host, MB/s.
    pub source_mb_s: f64,
    /// Measured stored bytes per source byte.
    pub stored_ratio: f64,
    /// Upload bandwidth per host in MB/s, if it is the limit.
    pub uplink_mb_s: Option<f64>,
}

/// How the estate fits into windows.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct WavePlan {
    /// Source MB/s one host sustains: the measured rate, or less where the uplink carries fewer stored bytes.
    pub effective_mb_s: f64,
    /// `pipeline` or `uplink`.
    pub limited_by: String,
    /// Source bytes one host moves in one window.
    pub bytes_per_window_per_host: u64,
    /// Whole mailboxes one host moves in one window.
    pub mailboxes_per_window_per_host: u64,
    /// Whole mailboxes all hosts move in one window.
    pub mailboxes_per_window: u64,
    /// Windows needed for the estate (when its size is known; `None` also when not one mailbox fits a window).
    pub windows: Option<u64>,
    /// Source bytes of the estate.
    pub estate_bytes: Option<u64>,
}

/// Plan waves: per window, each host moves `effective rate × window` bytes, in whole mailboxes.
pub fn plan_waves(w: &WaveInput) -> WavePlan {
    let mut rate = w.source_mb_s.max(0.0);
    let mut limited_by = "pipeline";
    if let Some(up) = w.uplink_mb_s
        && w.stored_ratio > 0.0
        && up / w.stored_ratio < rate
    {
        // The uplink carries stored bytes: it limits the source rate to uplink ÷ stored ratio.
        rate = up / w.stored_ratio;
        limited_by = "uplink";
    }
    let per_host = (rate * 1e6 * w.window_secs.max(0.0)) as u64;
    let per_host_mailboxes = per_host / w.avg_mailbox_bytes.max(1);
    let per_window = per_host_mailboxes * w.hosts.max(1);
    let windows = match (w.mailboxes, per_window) {
        (Some(_), 0) | (None, _) => None,
        (Some(n), p) => Some(n.div_ceil(p)),
    };
    WavePlan {
        effective_mb_s: rate,
        limited_by: limited_by.into(),
        bytes_per_window_per_host: per_host,
        mailboxes_per_window_per_host: per_host_mailboxes,
        mailboxes_per_window: per_window,
        windows,
        estate_bytes: w.mailboxes.map(|n| n.saturating_mul(w.avg_mailbox_bytes)),
    }
}

/// Parse a duration such as `10h`, `90m`, `8h30m`, `45s` or `3600` (seconds).
pub fn parse_duration(s: &str) -> std::result::Result<f64, String> {
    let t = s.trim();
    if let Ok(secs) = t.parse::<f64>() {
        return Ok(secs);
    }
    let mut total = 0.0;
    let mut num = String::new();
    for c in t.chars() {
        if c.is_ascii_digit() || c == '.' {
            num.push(c);
            continue;
        }
        let unit = match c {
            'd' => 86_400.0,
            'h' => 3_600.0,
            'm' => 60.0,
            's' => 1.0,
            _ => return Err(format!("{s:?} is not a duration (examples: 10h, 90m, 8h30m)")),
        };
        let n: f64 = num.parse().map_err(|_| format!("{s:?} is not a duration (examples: 10h, 90m, 8h30m)"))?;
        total += n * unit;
        num.clear();
    }
    if !num.is_empty() {
        return Err(format!("{s:?}: a number without a unit at the end (examples: 10h, 90m, 8h30m)"));
    }
    Ok(total)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::corpus::{CorpusFormat, CorpusSpec, generate};

    #[test]
    fn waves() {
        let mut w = WaveInput {
            mailboxes: Some(2_100_000),
            avg_mailbox_bytes: 1_100_000_000,
            hosts: 100,
            window_secs: 10.0 * 3600.0,
            source_mb_s: 100.0,
            stored_ratio: 0.5,
            uplink_mb_s: None,
        };
        let p = plan_waves(&w);
        assert_eq!(p.bytes_per_window_per_host, 3_600_000_000_000);
        assert_eq!(p.mailboxes_per_window_per_host, 3272);
        assert_eq!(p.mailboxes_per_window, 327_200);
        assert_eq!(p.windows, Some(7));
        assert_eq!(p.limited_by, "pipeline");
        w.uplink_mb_s = Some(25.0);
        let p = plan_waves(&w);
        assert_eq!(p.limited_by, "uplink");
        assert!((p.effective_mb_s - 50.0).abs() < 1e-9);
        w.avg_mailbox_bytes = u64::MAX;
        assert_eq!(plan_waves(&w).windows, None);
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("10h").unwrap(), 36_000.0);
        assert_eq!(parse_duration("8h30m").unwrap(), 30_600.0);
        assert_eq!(parse_duration("90").unwrap(), 90.0);
        assert!(parse_duration("10x").is_err());
        assert!(parse_duration("1h30").is_err());
    }

    #[test]
    fn load_and_bound_and_pipeline() {
        let dir = tempfile::tempdir().unwrap();
        let mut spec = CorpusSpec::new(11);
        spec.mailboxes = 2;
        spec.messages_per_mailbox = 25;
        spec.format = CorpusFormat::Both;
        spec.max_message = 128 << 10;
        let stats = generate(&spec, dir.path()).unwrap();
        let roots: Vec<PathBuf> = stats.mailboxes.iter().map(|m| m.path.clone()).collect();
        let src = load_source(&roots, None).unwrap();
        assert_eq!(src.bytes, stats.bytes);
        assert_eq!(src.messages, stats.messages);
        let bound = measure_bound(&src, 3, Some(2), 1).unwrap();
        assert_eq!(bound.bytes, stats.bytes);
        assert!(bound.zstd_bytes < stats.bytes);
        // INBOX and Sent of both mailboxes, and Archive where it is not empty.
        assert!((4..=6).contains(&src.mbox_files().count()));
        let partial = load_source(&roots, Some(1)).unwrap();
        assert!(partial.truncated && partial.file_count == 1);

        // Files changed within a second before a pass started are read again by the next pass, which is then
        // committed: let the corpus age past that, so that the re-run is the no-change pass it is meant to measure.
        std::thread::sleep(std::time::Duration::from_millis(1100));
        let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
        let scratch = ScratchStore::new(None).unwrap();
        let sources: Vec<MailboxSource> =
            stats.mailboxes.iter().map(|m| MailboxSource { mailbox: m.name.clone(), path: m.path.clone() }).collect();
        let run = rt.block_on(run_pipeline(&sources, scratch.store(), &PipelineOptions::default())).unwrap();
        assert_eq!(run.messages, stats.messages);
        assert_eq!(run.source_bytes, stats.bytes);
        assert!(run.dedupe_ratio > 1.0, "{run:?}");
        assert_eq!(run.rerun_nothing_new, Some(true));
        assert_eq!(run.rerun_stored_bytes, Some(0));
        // What was stored comes back byte for byte.
        for m in &stats.mailboxes {
            let out = tempfile::tempdir().unwrap();
            let to = out.path().join("r");
            let r = rt.block_on(crate::restore::restore(scratch.store(), &m.name, &to, &Default::default())).unwrap();
            assert!(r.errors.is_empty());
            let mut a = Vec::new();
            let mut b = Vec::new();
            files_under(&to, &mut a).unwrap();
            files_under(&m.path, &mut b).unwrap();
            assert_eq!(a.len(), b.len());
            for (x, y) in a.iter().zip(&b) {
                assert_eq!(std::fs::read(x).unwrap(), std::fs::read(y).unwrap(), "{}", y.display());
            }
        }
        let path = scratch.path().to_path_buf();
        drop(scratch);
        assert!(!path.exists());
    }
}
