//! `moverd bench` (measure the pipeline on this server's own mail and plan migration waves) and `moverd gen-corpus`
//! (write a synthetic corpus to try things on).
//!
//! The measurements are [`mover_core::bench`]'s, the same code the `benches/` runner uses: the real pipeline into a
//! store, then the bound (BLAKE3 per message and zstd per 1 MiB segment over the same bytes in memory, same
//! threads), so the operator sees both what this machine does and how close the pipeline gets to what its CPUs allow.

use std::path::PathBuf;

use clap::Args;
use mover_core::bench::{
    Bound, MailboxSource, PipelineOptions, PipelineRun, ScratchStore, WaveInput, WavePlan, load_source, measure_bound,
    parse_duration, plan_waves, run_pipeline,
};
use mover_core::corpus::{CorpusFormat, CorpusSpec, CorpusStats};
use mover_core::store::open_destination;
use serde::Serialize;

use crate::cli::EXIT_OK;
use crate::display;

/// Arguments of `bench`.
#[derive(Debug, Args)]
pub struct BenchArgs {
    /// The mail store to measure (anything `migrate` accepts). It is only read.
    pub source: PathBuf,
    /// Migrate into this destination instead of a scratch local store (which is removed afterwards). The mailbox is
    /// written as `bench.<name>`; the blobs it stores are reused by later migrations into DEST.
    pub dest: Option<String>,
    /// Print one JSON object on stdout.
    #[arg(long)]
    pub json: bool,
    /// zstd level (as for `migrate`).
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(i32).range(1..=22))]
    pub zstd_level: i32,
    /// Worker threads for hashing and compression [default: all cores].
    #[arg(long)]
    pub threads: Option<usize>,
    /// Measure the bound on at most this much of SOURCE (it is read into memory).
    #[arg(long, default_value = "1G", value_parser = display::parse_size)]
    pub bound_limit: u64,
    /// Skip the second, no-change run.
    #[arg(long)]
    pub no_rerun: bool,
    /// Migrate SOURCE this many times, each into a fresh scratch store, and report the median run with the spread
    /// of all of them: one run on a busy server can be a quarter off. The first run reads SOURCE as the page cache
    /// has it; the next ones find it cached as far as memory allows. Not with DEST (later runs would be delta
    /// passes).
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..=99))]
    pub runs: u32,
    /// Measure `migrate --dictionaries` (zstd dictionaries, off by default). A scratch store gets its dictionaries
    /// before the clock starts, as a destination has them after its first migration with `--dictionaries`.
    #[arg(long)]
    pub dictionaries: bool,
    /// Wave plan: mailboxes in the estate.
    #[arg(long)]
    pub mailboxes: Option<u64>,
    /// Wave plan: average mailbox size [default: SOURCE's size].
    #[arg(long, value_parser = display::parse_size)]
    pub avg_size: Option<u64>,
    /// Wave plan: hosts migrating in parallel, one daemon each.
    #[arg(long, default_value_t = 1)]
    pub hosts: u64,
    /// Wave plan: length of one migration window (10h, 8h30m, 48h…).
    #[arg(long, default_value = "10h", value_parser = parse_duration)]
    pub window: f64,
    /// Wave plan: upload bandwidth per host in MB/s, when it may be the limit.
    #[arg(long)]
    pub uplink_mb_s: Option<f64>,
}

/// Arguments of `gen-corpus`.
#[derive(Debug, Args)]
pub struct GenCorpusArgs {
    /// Directory to write into (created; `maildir/<mailbox>/` and/or `mbox/<mailbox>/` below it).
    pub dir: PathBuf,
    /// Seed: the same arguments write the same bytes.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// Mailboxes.
    #[arg(long, default_value_t = 4)]
    pub mailboxes: usize,
    /// Messages per mailbox.
    #[arg(long, default_value_t = 250)]
    pub messages: usize,
    /// Store format: maildir, mbox or both.
    #[arg(long, default_value = "maildir")]
    pub format: CorpusFormat,
    /// CRLF line endings.
    #[arg(long)]
    pub crlf: bool,
    /// Median message size.
    #[arg(long, default_value = "4K", value_parser = display::parse_size)]
    pub median: u64,
    /// Largest message size.
    #[arg(long, default_value = "16M", value_parser = display::parse_size)]
    pub max_message: u64,
    /// Print the statistics as JSON.
    #[arg(long)]
    pub json: bool,
}

/// The `--json` output of `bench`.
#[derive(Debug, Serialize)]
struct BenchJson {
    source: String,
    destination: String,
    mailbox: String,
    /// The median run (by MB/s; the slower of the two middle ones) of `--runs`.
    pipeline: PipelineRun,
    /// MB/s of every run, in the order they ran.
    runs_mb_s: Vec<f64>,
    bound: Bound,
    bound_truncated: bool,
    ratio_to_bound: f64,
    wave_input: WaveInput,
    wave_plan: WavePlan,
}

/// `moverd bench`.
pub async fn bench(a: BenchArgs) -> anyhow::Result<u8> {
    let name = a
        .source
        .canonicalize()
        .unwrap_or_else(|_| a.source.clone())
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "source".into());
    let mailbox = format!("bench.{name}");
    if a.runs > 1 && a.dest.is_some() {
        anyhow::bail!(
            "--runs {} needs the scratch store: into DEST every run after the first would find the mailbox there and \
             be a delta pass; leave DEST out, or give --runs 1",
            a.runs
        );
    }
    let sources = [MailboxSource { mailbox: mailbox.clone(), path: a.source.clone() }];
    // With --dictionaries, a wave is planned on the steady state: the dictionaries are trained once per destination
    // (by its first migration), so they are trained before the clock starts.
    let opts = PipelineOptions {
        zstd_level: a.zstd_level,
        threads: a.threads,
        rerun: !a.no_rerun,
        dictionaries: a.dictionaries,
        // A scratch store is new; a DEST's pack indexes are all read, as by a host's first migration into it.
        index_cache: None,
    };
    // The pipeline first (its peak RSS must not include the bound's copy of the source), then the bound.
    let mut runs = Vec::new();
    let mut destination = String::new();
    for i in 0..a.runs {
        let scratch = if a.dest.is_none() { Some(ScratchStore::new(None)?) } else { None };
        let store = match (&scratch, &a.dest) {
            (Some(s), _) => {
                destination = format!("scratch local store {} (removed afterwards)", s.path().display());
                s.store()
            }
            (None, Some(d)) => {
                let s = open_destination(d)?;
                destination = s.describe();
                s
            }
            (None, None) => unreachable!("scratch exists when there is no DEST"),
        };
        if !a.json {
            let of = if a.runs > 1 { format!(" (run {} of {})", i + 1, a.runs) } else { String::new() };
            eprintln!("moverd bench: migrating {} into {destination}{of} …", a.source.display());
        }
        runs.push(run_pipeline(&sources, store, &opts).await?);
    }
    let runs_mb_s: Vec<f64> = runs.iter().map(|r| r.mb_s).collect();
    // The median run, the slower of the two middle ones of an even number; the highest peak RSS of all.
    let peak_rss = runs.iter().filter_map(|r| r.peak_rss).max();
    runs.sort_by(|x, y| x.mb_s.total_cmp(&y.mb_s));
    let mut run = runs.swap_remove((runs.len() - 1) / 2);
    run.peak_rss = peak_rss;
    let scratch_used = a.dest.is_none();
    if !a.json {
        eprintln!("moverd bench: measuring the bound …");
    }
    let (source, limit, level, threads) = (a.source.clone(), a.bound_limit, a.zstd_level, a.threads);
    let bound = tokio::task::spawn_blocking(move || -> anyhow::Result<(Bound, bool)> {
        let src = load_source(&[source], Some(limit))?;
        Ok((measure_bound(&src, level, threads, 3)?, src.truncated))
    })
    .await??;
    let (bound, truncated) = bound;
    let ratio_to_bound = if bound.mb_s > 0.0 { run.mb_s / bound.mb_s } else { 0.0 };
    let wave_input = WaveInput {
        mailboxes: a.mailboxes,
        avg_mailbox_bytes: a.avg_size.unwrap_or(run.source_bytes).max(1),
        hosts: a.hosts.max(1),
        window_secs: a.window,
        source_mb_s: run.mb_s,
        stored_ratio: run.stored_ratio,
        uplink_mb_s: a.uplink_mb_s,
    };
    let wave_plan = plan_waves(&wave_input);
    if a.json {
        let out = BenchJson {
            source: a.source.display().to_string(),
            destination,
            mailbox,
            pipeline: run,
            runs_mb_s,
            bound,
            bound_truncated: truncated,
            ratio_to_bound,
            wave_input,
            wave_plan,
        };
        out!("{}", serde_json::to_string_pretty(&out)?);
        return Ok(EXIT_OK);
    }
    let r = &run;
    out!("moverd bench: {} → {destination}", a.source.display());
    out!("  source        {} messages in {} files, {}", r.messages, r.files, display::bytes(r.source_bytes));
    if scratch_used && a.dictionaries {
        out!(
            "  (the scratch store got its dictionaries before the clock started, as a destination has them after its first migration)"
        );
    }
    out!(
        "  pipeline      {:.1} MB/s, {:.0} messages/s ({:.2} s); stored {:.3} of the source; dedupe {:.2}x ({:.1}% of \
         blob bytes); peak RSS {}",
        r.mb_s,
        r.messages_per_s,
        r.seconds,
        r.stored_ratio,
        r.dedupe_ratio,
        r.deduplicated_fraction * 100.0,
        r.peak_rss.map(display::bytes).unwrap_or_else(|| "unknown".into())
    );
    if let Some((first, rest)) = runs_mb_s.split_first()
        && !rest.is_empty()
    {
        let rest: Vec<String> = rest.iter().map(|v| format!("{v:.1}")).collect();
        out!(
            "  runs          {first:.1} (SOURCE as the page cache had it), then {} MB/s; the median above, and the \
             highest peak RSS",
            rest.join(", ")
        );
    }
    out!(
        "  bound         {:.1} MB/s: BLAKE3 per message + zstd-{} per 1 MiB segment on {} threads over {} in \
         memory{}",
        bound.mb_s,
        bound.zstd_level,
        bound.threads,
        display::bytes(bound.bytes),
        if truncated { " (the first part of SOURCE: --bound-limit)" } else { "" }
    );
    out!("  ratio         {ratio_to_bound:.2} of the bound (1.0: the pipeline turns all CPU into migrated bytes)");
    if let Some(s) = r.rerun_seconds {
        out!(
            "  re-run        {s:.2} s with nothing changed ({})",
            if r.rerun_nothing_new == Some(true) { "nothing new stored" } else { "something was stored again!" }
        );
    }
    if r.quarantined > 0 {
        out!("  quarantined   {} item(s): run `moverd migrate` on SOURCE to see which and why", r.quarantined);
    }
    if r.new_raw_bytes == 0 && r.source_bytes > 0 {
        out!(
            "  note          DEST already held this mailbox or all of its content: the first run was a delta pass, \
             not a full migration; bench into an empty DEST (or none) for migration figures"
        );
    }
    let w = &wave_plan;
    out!(
        "wave plan: {} window(s), {} host(s), average mailbox {}{}",
        humantime_secs(a.window),
        wave_input.hosts,
        display::bytes(wave_input.avg_mailbox_bytes),
        if a.avg_size.is_none() { " (SOURCE's size; set --avg-size)" } else { "" }
    );
    out!(
        "  one host moves {:.1} MB/s ({}) = {} per window = {} mailboxes per window",
        w.effective_mb_s,
        if w.limited_by == "uplink" { "limited by the uplink" } else { "as measured" },
        display::bytes(w.bytes_per_window_per_host),
        w.mailboxes_per_window_per_host
    );
    out!("  all hosts: {} mailboxes per window", w.mailboxes_per_window);
    match (a.mailboxes, w.windows) {
        (Some(n), Some(k)) => {
            out!("  the estate: {n} mailboxes ({}) need {k} window(s)", display::bytes(w.estate_bytes.unwrap_or(0)))
        }
        (Some(n), None) => out!("  the estate: {n} mailboxes do not fit: not one mailbox fits in a window"),
        (None, _) => out!("  (give --mailboxes N for the number of windows the estate needs)"),
    }
    out!("  measured with warm or cold caches as found, on this machine's current load; plan with a margin.");
    if a.runs == 1 && a.dest.is_none() {
        out!("  one run: --runs 3 gives the median of three and their spread.");
    }
    Ok(EXIT_OK)
}

fn humantime_secs(s: f64) -> String {
    let s = s.round() as u64;
    match (s / 3600, s % 3600 / 60) {
        (h, 0) if h > 0 => format!("{h}h"),
        (0, m) => format!("{m}m"),
        (h, m) => format!("{h}h{m}m"),
    }
}

/// `moverd gen-corpus`.
pub fn gen_corpus(a: GenCorpusArgs) -> anyhow::Result<u8> {
    let mut spec = CorpusSpec::new(a.seed);
    spec.mailboxes = a.mailboxes;
    spec.messages_per_mailbox = a.messages;
    spec.format = a.format;
    spec.crlf = a.crlf;
    spec.median_message = a.median as usize;
    spec.max_message = a.max_message as usize;
    let t = std::time::Instant::now();
    let stats: CorpusStats = mover_core::corpus::generate(&spec, &a.dir)?;
    if a.json {
        out!("{}", serde_json::to_string_pretty(&serde_json::json!({ "spec": spec, "stats": stats }))?);
        return Ok(EXIT_OK);
    }
    out!(
        "wrote {} messages in {} files, {} ({} mailboxes) under {} in {:.1} s",
        stats.messages,
        stats.files,
        display::bytes(stats.bytes),
        stats.mailboxes.len(),
        a.dir.display(),
        t.elapsed().as_secs_f64()
    );
    out!(
        "  message sizes: median {}, 99th percentile {}, largest {}",
        display::bytes(stats.median_message),
        display::bytes(stats.p99_message),
        display::bytes(stats.largest_message)
    );
    for m in &stats.mailboxes {
        out!("  moverd migrate {} DEST --mailbox {}", m.path.display(), m.name);
    }
    // All at once, when one format was written (both formats have the same mailbox names: `--each` over each
    // directory into one DEST would make the mbox copies later passes of the Maildir mailboxes).
    let mut roots: Vec<&std::path::Path> = stats.mailboxes.iter().filter_map(|m| m.path.parent()).collect();
    roots.sort();
    roots.dedup();
    if let [root] = roots[..] {
        out!("  moverd migrate-many DEST --each {}      # all of them, in one process", root.display());
    }
    Ok(EXIT_OK)
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;
    use crate::cli::{Cli, Command};

    #[test]
    fn arguments() {
        let cli = Cli::try_parse_from([
            "moverd",
            "bench",
            "/srv/mail",
            "--mailboxes",
            "22000",
            "--avg-size",
            "1.5G",
            "--hosts",
            "40",
            "--window",
            "8h30m",
        ])
        .unwrap();
        let Command::Bench(a) = cli.command else { panic!("not bench") };
        assert_eq!((a.mailboxes, a.avg_size, a.hosts, a.window), (Some(22000), Some(3 << 29), 40, 30_600.0));
        assert!(Cli::try_parse_from(["moverd", "bench", "/srv/mail", "--window", "soon"]).is_err());
        let cli = Cli::try_parse_from(["moverd", "gen-corpus", "/tmp/c", "--format", "mbox", "--seed", "9"]).unwrap();
        let Command::GenCorpus(g) = cli.command else { panic!("not gen-corpus") };
        assert_eq!((g.format, g.seed, g.mailboxes), (CorpusFormat::Mbox, 9, 4));
        assert!(Cli::try_parse_from(["moverd", "gen-corpus", "/tmp/c", "--format", "pst"]).is_err());
        assert_eq!(humantime_secs(36_000.0), "10h");
        assert_eq!(humantime_secs(30_600.0), "8h30m");
        assert_eq!(humantime_secs(900.0), "15m");
    }

    #[test]
    fn generate_then_bench() {
        let dir = std::env::temp_dir().join(format!("moverd-bench-test-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let cli = Cli::try_parse_from([
            "moverd",
            "gen-corpus",
            dir.to_str().unwrap(),
            "--mailboxes",
            "1",
            "--messages",
            "30",
            "--max-message",
            "200K",
            "--json",
        ])
        .unwrap();
        let Command::GenCorpus(g) = cli.command else { panic!("not gen-corpus") };
        assert_eq!(gen_corpus(g).unwrap(), EXIT_OK);
        let mailbox = dir.join("maildir/user000");
        assert!(mailbox.join("cur").is_dir());
        let dest = dir.join("dest");
        let cli = Cli::try_parse_from([
            "moverd",
            "bench",
            mailbox.to_str().unwrap(),
            dest.to_str().unwrap(),
            "--json",
            "--mailboxes",
            "10",
        ])
        .unwrap();
        let Command::Bench(a) = cli.command else { panic!("not bench") };
        let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
        assert_eq!(rt.block_on(bench(a)).unwrap(), EXIT_OK);
        // DEST was given: the bench mailbox is there, and verifies.
        let store = open_destination(dest.to_str().unwrap()).unwrap();
        let report = rt.block_on(mover_core::restore::verify(store, "bench.user000", None)).unwrap();
        assert!(report.errors.is_empty(), "{:?}", report.errors);
        assert!(report.messages >= 30);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
