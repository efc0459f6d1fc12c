//! mover's benchmark runner: per-stage micro-benchmarks and end-to-end migrations, every end-to-end figure next to
//! a bound measured in the same run on the same bytes.
//!
//! ```text
//! cargo run --release -p mover-benches --bin mover-bench -- [--json] [--corpus generated,usrp,enron]
//! cargo run --release -p mover-benches --bin mover-bench -- --smoke      # CI: a few seconds, checks it runs
//! cargo bench -p mover-benches                                           # the same runner, every corpus present
//! ```
//!
//! For each corpus (a generated one always; the shared real corpora when `../shared/corpora` is present):
//! 1. the source is read into memory and the **bound** is measured: BLAKE3 of every message + zstd (same
//!    level) of the messages in 1 MiB segments, on the pipeline's number of threads, no I/O (see [`mover_core::bench`]);
//! 2. each **stage** is timed on one thread over the same bytes ([`stages`]);
//! 3. the **pipeline** migrates the corpus into a fresh local-directory store **in a child process** (so its peak
//!    RSS is its own), then migrates it again with nothing changed (the re-run time); then the same into an
//!    in-memory store, which separates the pipeline's own cost from the store's, and into a local store that
//!    already has its dictionaries (the steady state of a destination);
//! 4. the bound is measured again, and the faster of the two is used: noise only slows a bound down, so the ratio
//!    is conservative;
//! 5. restic and `tar | zstd` run on the same files, when installed ([`reference`]).
//!
//! Nothing here asserts a time: `--smoke` checks only that everything runs and reports consistent counts.

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Instant;

use anyhow::Context as _;
use clap::{Parser, Subcommand};
use mover_core::bench::{
    Bound, MailboxSource, PipelineOptions, PipelineRun, load_source, measure_bound, run_pipeline, warm_page_cache,
};
use mover_core::corpus::{CorpusFormat, CorpusSpec, generate};
use serde::Serialize;

pub mod reference;
pub mod stages;

/// Command line of `mover-bench`.
#[derive(Debug, Parser)]
#[command(name = "mover-bench", about = "mover throughput benchmarks, each against a bound measured in the same run")]
pub struct Args {
    /// Internal: the child process of an end-to-end run.
    #[command(subcommand)]
    pub child: Option<Child>,
    /// A tiny generated corpus, a few seconds: checks that every measurement runs and reports (for CI).
    #[arg(long)]
    pub smoke: bool,
    /// Print one JSON document on stdout instead of tables.
    #[arg(long)]
    pub json: bool,
    /// Corpora to run: generated, generated-mbox, usrp, enron [default: all; the shared ones when present].
    #[arg(long, value_delimiter = ',')]
    pub corpus: Vec<String>,
    /// Where the shared corpora are [default: ../shared/corpora next to the workspace].
    #[arg(long)]
    pub corpora_dir: Option<PathBuf>,
    /// Generated corpus: mailboxes.
    #[arg(long, default_value_t = 8)]
    pub gen_mailboxes: usize,
    /// Generated corpus: messages per mailbox.
    #[arg(long, default_value_t = 400)]
    pub gen_messages: usize,
    /// Generated corpus: seed.
    #[arg(long, default_value_t = 42)]
    pub seed: u64,
    /// Worker threads for the pipeline and the bound [default: one per core].
    #[arg(long)]
    pub threads: Option<usize>,
    /// zstd level for the pipeline, the bound and the zstd stage.
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(i32).range(1..=22))]
    pub zstd_level: i32,
    /// Skip restic even if it is installed.
    #[arg(long)]
    pub no_restic: bool,
    /// Skip `tar | zstd`.
    #[arg(long)]
    pub no_tar: bool,
    /// Minimum seconds per stage micro-benchmark.
    #[arg(long, default_value_t = 1.0)]
    pub stage_seconds: f64,
    /// End-to-end runs per store; the median (by MB/s) is reported, all rates are kept in the JSON.
    #[arg(long, default_value_t = 3)]
    pub e2e_reps: usize,
    /// Repetitions of the bound, before and after the pipeline each.
    #[arg(long, default_value_t = 3)]
    pub bound_reps: usize,
    /// Directory for scratch stores and the generated corpus [default: the system temporary directory].
    #[arg(long)]
    pub scratch: Option<PathBuf>,
}

/// Internal subcommands.
#[derive(Debug, Subcommand)]
pub enum Child {
    /// Run the pipeline over the mailboxes listed in SOURCES (JSON) into a local store at DEST; print the run as
    /// JSON. Used by the runner so that each run's peak RSS is its own.
    #[command(hide = true)]
    E2eChild {
        /// JSON file with the list of mailbox sources.
        #[arg(long)]
        sources: PathBuf,
        /// Store directory.
        #[arg(long)]
        dest: PathBuf,
        /// zstd level.
        #[arg(long)]
        zstd_level: i32,
        /// Worker threads.
        #[arg(long)]
        threads: Option<usize>,
        /// Migrate into an in-memory store instead (DEST unused): the pipeline without store I/O.
        #[arg(long)]
        memory: bool,
        /// Migrate with zstd dictionaries, trained before the clock starts.
        #[arg(long)]
        dictionaries: bool,
        /// Keep the dedupe index cache here, as moverd does in ~/.cache/mover/index [default: no cache].
        #[arg(long)]
        index_cache: Option<PathBuf>,
    },
}

/// Facts about the machine, so figures can be read in context.
#[derive(Debug, Clone, Serialize)]
pub struct Machine {
    /// Logical CPUs available.
    pub cpus: usize,
    /// Kernel release.
    pub kernel: String,
    /// CPU model.
    pub cpu_model: String,
    /// `/proc/loadavg` at the start.
    pub loadavg_start: String,
    /// `/proc/loadavg` at the end.
    pub loadavg_end: String,
}

fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg").map(|s| s.trim().to_string()).unwrap_or_default()
}

fn load1() -> f64 {
    loadavg().split_whitespace().next().and_then(|s| s.parse().ok()).unwrap_or(0.0)
}

fn cpu_model() -> String {
    std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("model name"))
                .map(|l| l.split(':').nth(1).unwrap_or("").trim().to_string())
        })
        .unwrap_or_default()
}

/// Everything measured on one corpus.
#[derive(Debug, Clone, Serialize)]
pub struct CorpusReport {
    /// Short name.
    pub name: String,
    /// What it is.
    pub description: String,
    /// Mailboxes migrated.
    pub mailboxes: Vec<MailboxSource>,
    /// Files in the source.
    pub files: u64,
    /// Messages in the source (as the loader cuts them).
    pub messages: u64,
    /// Bytes in the source.
    pub source_bytes: u64,
    /// Seconds spent generating the corpus (generated corpora only).
    pub generate_seconds: Option<f64>,
    /// 1-minute load average before and after this corpus's measurements.
    pub load1: (f64, f64),
    /// The bound, before the pipeline.
    pub bound_before: Bound,
    /// The bound, after the pipeline.
    pub bound_after: Bound,
    /// The faster of the two: the one ratios use.
    pub bound_mb_s: f64,
    /// Per-stage micro-benchmarks (one thread).
    pub stages: Vec<stages::StageResult>,
    /// The pipeline, end to end, into a local-directory store.
    pub pipeline: PipelineRun,
    /// Pipeline MB/s ÷ bound MB/s.
    pub ratio_to_bound: f64,
    /// MB/s of every end-to-end repetition into the local store (the median one is `pipeline`).
    pub pipeline_mb_s_runs: Vec<f64>,
    /// Seconds of the no-change re-run of every repetition into the local store, in the order of
    /// `pipeline_mb_s_runs` (one re-run is a few milliseconds: a single one is mostly noise).
    pub rerun_seconds_runs: Vec<f64>,
    /// Median over those repetitions of (re-run seconds ÷ first-run seconds).
    pub rerun_fraction: Option<f64>,
    /// MB/s of every end-to-end repetition into the memory store.
    pub pipeline_memory_mb_s_runs: Vec<f64>,
    /// The pipeline into an in-memory store: no store I/O (its peak RSS includes everything stored).
    pub pipeline_memory: PipelineRun,
    /// That run's MB/s ÷ bound MB/s.
    pub ratio_to_bound_memory: f64,
    /// MB/s of every end-to-end repetition with `--dictionaries` (opt-in) into a local store that already has them.
    pub pipeline_dictionaries_mb_s_runs: Vec<f64>,
    /// The pipeline with zstd dictionaries (`--dictionaries`, off by default) into a local store that already has
    /// them (trained before the clock starts): what the opt-in costs or saves.
    pub pipeline_dictionaries: PipelineRun,
    /// That run's MB/s ÷ bound MB/s.
    pub ratio_to_bound_dictionaries: f64,
    /// restic, when measured.
    pub restic: Option<reference::Reference>,
    /// Pipeline MB/s ÷ restic MB/s.
    pub ratio_to_restic: Option<f64>,
    /// tar | zstd, when measured.
    pub tar_zstd: Option<reference::Reference>,
    /// Why a reference was skipped.
    pub skipped: Vec<String>,
}

/// The whole report.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    /// Smoke mode (tiny corpus; figures meaningless).
    pub smoke: bool,
    /// The machine.
    pub machine: Machine,
    /// zstd level.
    pub zstd_level: i32,
    /// Worker threads (pipeline and bound).
    pub threads: usize,
    /// One entry per corpus.
    pub corpora: Vec<CorpusReport>,
}

/// Parse arguments and run; the exit code says whether every measurement ran.
pub fn main(args: impl IntoIterator<Item = OsString>) -> ExitCode {
    let args = match Args::try_parse_from(args) {
        Ok(a) => a,
        Err(e) => {
            let _ = e.print();
            return ExitCode::from(2);
        }
    };
    match run(args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("mover-bench: error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_multi_thread().enable_all().build()?)
}

/// Run the parsed command line.
pub fn run(args: Args) -> anyhow::Result<()> {
    if let Some(Child::E2eChild { sources, dest, zstd_level, threads, memory, dictionaries, index_cache }) = &args.child
    {
        // As moverd does, so that the figures are moverd's.
        mover_core::limit_malloc_arenas();
        // MOVER_LOG=debug shows the pipeline's stage timings of each mailbox on stderr.
        if let Ok(filter) = tracing_subscriber::EnvFilter::try_from_env("MOVER_LOG") {
            tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr).init();
        }
        let sources: Vec<MailboxSource> = serde_json::from_slice(&std::fs::read(sources)?)?;
        let rt = runtime()?;
        let store: mover_core::store::DynStore = if *memory {
            std::sync::Arc::new(mover_core::store::MemoryStore::new())
        } else {
            std::sync::Arc::new(mover_core::store::LocalStore::create(dest)?)
        };
        let opts = PipelineOptions {
            zstd_level: *zstd_level,
            threads: *threads,
            rerun: true,
            dictionaries: *dictionaries,
            index_cache: index_cache.clone(),
        };
        let run = rt.block_on(run_pipeline(&sources, store, &opts))?;
        println!("{}", serde_json::to_string(&run)?);
        return Ok(());
    }
    let scratch = match &args.scratch {
        Some(p) => tempfile::Builder::new().prefix("mover-bench-").tempdir_in(p)?,
        None => tempfile::Builder::new().prefix("mover-bench-").tempdir()?,
    };
    let threads = mover_core::bench::pool(args.threads)?.current_num_threads();
    let rt = runtime()?;
    let mut machine = Machine {
        cpus: std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1),
        kernel: std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default().trim().to_string(),
        cpu_model: cpu_model(),
        loadavg_start: loadavg(),
        loadavg_end: String::new(),
    };
    let mut report = Report {
        smoke: args.smoke,
        machine: machine.clone(),
        zstd_level: args.zstd_level,
        threads,
        corpora: Vec::new(),
    };

    let corpora_dir =
        args.corpora_dir.clone().unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../../shared/corpora"));
    let wanted = |name: &str| args.corpus.is_empty() || args.corpus.iter().any(|c| c == name || c == "all");
    let mut plans: Vec<(String, String, Vec<MailboxSource>, Option<f64>)> = Vec::new();
    let generated: &[(&str, CorpusFormat)] = if args.smoke {
        &[("generated", CorpusFormat::Both)]
    } else {
        &[("generated", CorpusFormat::Maildir), ("generated-mbox", CorpusFormat::Mbox)]
    };
    for &(name, format) in generated {
        if !args.smoke && !wanted(name) {
            continue;
        }
        let mut spec = CorpusSpec::new(args.seed);
        spec.format = format;
        if args.smoke {
            spec.mailboxes = 2;
            spec.messages_per_mailbox = 20;
            spec.max_message = 256 << 10;
        } else {
            spec.mailboxes = args.gen_mailboxes;
            spec.messages_per_mailbox = args.gen_messages;
        }
        let t = Instant::now();
        let stats = generate(&spec, &scratch.path().join(name)).context("generating the corpus")?;
        let secs = t.elapsed().as_secs_f64();
        let desc = format!(
            "generated: seed {}, {} mailboxes x {} messages, {:?}, median {} B, p99 {} B, largest {} B",
            spec.seed,
            spec.mailboxes,
            spec.messages_per_mailbox,
            spec.format,
            stats.median_message,
            stats.p99_message,
            stats.largest_message
        );
        let sources =
            stats.mailboxes.iter().map(|m| MailboxSource { mailbox: m.name.clone(), path: m.path.clone() }).collect();
        plans.push((name.into(), desc, sources, Some(secs)));
    }
    if !args.smoke {
        for (name, dir, mailbox, desc) in [
            ("usrp", "usrp-users-maildir", "usrp-users", "usrp-users mailing list, one Maildir (shared corpus)"),
            ("enron", "enron-mbox", "enron", "Enron, one directory of 130 mboxo files (shared corpus)"),
        ] {
            if !wanted(name) {
                continue;
            }
            let path = corpora_dir.join(dir);
            if path.is_dir() {
                let path = path.canonicalize()?;
                plans.push((name.into(), desc.into(), vec![MailboxSource { mailbox: mailbox.into(), path }], None));
            } else {
                eprintln!("mover-bench: {} not present: corpus {name} skipped", path.display());
            }
        }
    }
    anyhow::ensure!(!plans.is_empty(), "no corpus selected");

    for (name, description, sources, generate_seconds) in plans {
        eprintln!("mover-bench: corpus {name} …");
        let r = measure_corpus(&args, &rt, scratch.path(), threads, name, description, sources, generate_seconds)?;
        if !args.json {
            print_corpus(&r, threads, args.zstd_level);
        }
        if args.smoke {
            anyhow::ensure!(
                r.pipeline.messages == r.messages,
                "pipeline saw {} messages, loader {}",
                r.pipeline.messages,
                r.messages
            );
            anyhow::ensure!(r.pipeline.rerun_nothing_new == Some(true), "the no-change re-run stored something");
            anyhow::ensure!(r.bound_mb_s > 0.0 && r.pipeline.mb_s > 0.0, "a rate is zero");
            // Every stage ran (the smoke corpus has enough messages to train dictionaries on), and each one that
            // makes bytes reports how many.
            let names: Vec<&str> = r.stages.iter().map(|s| s.stage.as_str()).collect();
            for want in [
                "split",
                "mime",
                "mbox-split",
                "mbox-1file",
                "blake3",
                "zstd",
                "zstd-seg",
                "dict-train",
                "zstd-dict",
                "zstd-dict-seg",
                "pack",
                "manifest",
                "store-put",
                "manifest-put",
            ] {
                anyhow::ensure!(names.contains(&want), "stage {want} did not run (stages: {names:?})");
            }
            for s in r.stages.iter().filter(|s| s.stage.starts_with("zstd") || s.stage == "manifest") {
                anyhow::ensure!(
                    s.out_bytes.is_some_and(|o| o > 0 && o <= s.bytes + s.items * 32),
                    "stage {} reports {:?} bytes out of {} in",
                    s.stage,
                    s.out_bytes,
                    s.bytes
                );
            }
            anyhow::ensure!(
                r.rerun_fraction.is_some_and(|f| f > 0.0) && r.rerun_seconds_runs.len() == r.pipeline_mb_s_runs.len(),
                "every repetition reports its re-run"
            );
        }
        report.corpora.push(r);
    }
    machine.loadavg_end = loadavg();
    report.machine = machine;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        println!(
            "machine: {} CPUs ({}), load average {} at start, {} at end",
            report.machine.cpus, report.machine.cpu_model, report.machine.loadavg_start, report.machine.loadavg_end
        );
    }
    Ok(())
}

#[allow(clippy::too_many_arguments)]
fn measure_corpus(
    args: &Args,
    rt: &tokio::runtime::Runtime,
    scratch: &Path,
    threads: usize,
    name: String,
    description: String,
    sources: Vec<MailboxSource>,
    generate_seconds: Option<f64>,
) -> anyhow::Result<CorpusReport> {
    let load_before = load1();
    let roots: Vec<PathBuf> = sources.iter().map(|s| s.path.clone()).collect();
    let src = load_source(&roots, None)?;
    let reps = if args.smoke { 1 } else { args.bound_reps };
    let bound_before = measure_bound(&src, args.zstd_level, Some(threads), reps)?;
    let stage_opts = stages::StageOptions {
        min_seconds: if args.smoke { 0.0 } else { args.stage_seconds },
        zstd_level: args.zstd_level,
    };
    let stage_results = stages::run(&src, stage_opts, rt)?;
    let (files, messages, source_bytes) = (src.file_count, src.messages, src.bytes);
    drop(src);

    let e2e_reps = if args.smoke { 1 } else { args.e2e_reps.max(1) };
    wait_until_settled(&roots)?;
    let mut local_runs = Vec::new();
    let mut memory_runs = Vec::new();
    let mut dict_runs = Vec::new();
    // Every timed run reads its source from the page cache, as the bound reads it from memory: the files are read
    // again just before each run, because the kernel may have dropped them since (it does within seconds here).
    let child = |memory: bool, dictionaries: bool| -> anyhow::Result<PipelineRun> {
        warm_page_cache(&roots)?;
        pipeline_in_child(&sources, scratch, args.zstd_level, Some(threads), memory, dictionaries)
    };
    for _ in 0..e2e_reps {
        // Interleaved, so that a burst of load from elsewhere hits every kind of run alike.
        local_runs.push(child(false, false)?);
        memory_runs.push(child(true, false)?);
        dict_runs.push(child(false, true)?);
    }
    let pipeline_mb_s_runs: Vec<f64> = local_runs.iter().map(|r| r.mb_s).collect();
    let rerun_seconds_runs: Vec<f64> = local_runs.iter().filter_map(|r| r.rerun_seconds).collect();
    let mut fractions: Vec<f64> =
        local_runs.iter().filter_map(|r| r.rerun_seconds.map(|s| s / r.seconds)).filter(|f| f.is_finite()).collect();
    fractions.sort_by(f64::total_cmp);
    let rerun_fraction = fractions.get(fractions.len() / 2).copied();
    let pipeline_memory_mb_s_runs: Vec<f64> = memory_runs.iter().map(|r| r.mb_s).collect();
    let pipeline_dictionaries_mb_s_runs: Vec<f64> = dict_runs.iter().map(|r| r.mb_s).collect();
    let pipeline = median_run(local_runs);
    let pipeline_memory = median_run(memory_runs);
    let pipeline_dictionaries = median_run(dict_runs);
    let src = load_source(&roots, None)?;
    let bound_after = measure_bound(&src, args.zstd_level, Some(threads), reps)?;
    drop(src);
    let bound_mb_s = bound_before.mb_s.max(bound_after.mb_s);

    let mut skipped = Vec::new();
    let mut restic = None;
    let mut tar = None;
    if args.smoke {
        skipped.push("restic and tar|zstd: not run in --smoke".into());
    } else {
        if args.no_restic {
            skipped.push("restic: --no-restic".into());
        } else if !reference::on_path("restic") {
            skipped.push("restic: not on PATH (apt-get install restic)".into());
        } else {
            let dir = tempfile::Builder::new().prefix("restic-").tempdir_in(scratch)?;
            warm_page_cache(&roots)?;
            restic = Some(reference::restic(&roots, source_bytes, threads, dir.path())?);
        }
        if args.no_tar {
            skipped.push("tar|zstd: --no-tar".into());
        } else if !reference::on_path("zstd") || !reference::on_path("tar") {
            skipped.push("tar|zstd: tar or zstd not on PATH".into());
        } else {
            let dir = tempfile::Builder::new().prefix("tar-").tempdir_in(scratch)?;
            warm_page_cache(&roots)?;
            tar = Some(reference::tar_zstd(&roots, source_bytes, threads, dir.path())?);
        }
    }
    let ratio_to_restic = restic.as_ref().map(|r| pipeline.mb_s / r.mb_s);
    Ok(CorpusReport {
        name,
        description,
        mailboxes: sources,
        files,
        messages,
        source_bytes,
        generate_seconds,
        load1: (load_before, load1()),
        ratio_to_bound: pipeline.mb_s / bound_mb_s,
        pipeline_mb_s_runs,
        rerun_seconds_runs,
        rerun_fraction,
        pipeline_memory_mb_s_runs,
        ratio_to_bound_memory: pipeline_memory.mb_s / bound_mb_s,
        pipeline_memory,
        ratio_to_bound_dictionaries: pipeline_dictionaries.mb_s / bound_mb_s,
        pipeline_dictionaries_mb_s_runs,
        pipeline_dictionaries,
        bound_before,
        bound_after,
        bound_mb_s,
        stages: stage_results,
        pipeline,
        restic,
        ratio_to_restic,
        tar_zstd: tar,
        skipped,
    })
}

/// The run with the median MB/s.
/// Wait until every file under `roots` last changed more than a second ago. A delta pass reads again the files that
/// changed within a second before the previous pass started (and is then committed): the re-run of a corpus
/// generated a moment ago would measure that, not the no-change pass it is meant to.
fn wait_until_settled(roots: &[PathBuf]) -> anyhow::Result<()> {
    use std::os::unix::fs::MetadataExt;
    let mut newest = 0i64;
    let mut stack: Vec<PathBuf> = roots.to_vec();
    while let Some(p) = stack.pop() {
        let m = std::fs::symlink_metadata(&p).with_context(|| format!("{}", p.display()))?;
        newest = newest.max(m.ctime() * 1_000_000_000 + m.ctime_nsec());
        if m.is_dir() {
            for e in std::fs::read_dir(&p).with_context(|| format!("{}", p.display()))? {
                stack.push(e?.path());
            }
        }
    }
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH)?.as_nanos() as i64;
    let wait = newest + 1_100_000_000 - now;
    if wait > 0 {
        std::thread::sleep(std::time::Duration::from_nanos(wait as u64));
    }
    Ok(())
}

fn median_run(mut runs: Vec<PipelineRun>) -> PipelineRun {
    runs.sort_by(|a, b| a.mb_s.total_cmp(&b.mb_s));
    let mid = runs.len() / 2;
    runs.swap_remove(mid)
}

/// Run the pipeline over `sources` into a fresh store, in a child process of this same executable.
fn pipeline_in_child(
    sources: &[MailboxSource],
    scratch: &Path,
    zstd_level: i32,
    threads: Option<usize>,
    memory: bool,
    dictionaries: bool,
) -> anyhow::Result<PipelineRun> {
    let dir = tempfile::Builder::new().prefix("e2e-").tempdir_in(scratch)?;
    let list = dir.path().join("sources.json");
    std::fs::write(&list, serde_json::to_vec(sources)?)?;
    let exe = std::env::current_exe()?;
    let mut cmd = std::process::Command::new(exe);
    cmd.arg("e2e-child")
        .arg("--sources")
        .arg(&list)
        .arg("--dest")
        .arg(dir.path().join("store"))
        .arg("--index-cache")
        .arg(dir.path().join("index-cache"))
        .arg("--zstd-level")
        .arg(zstd_level.to_string());
    if let Some(t) = threads {
        cmd.arg("--threads").arg(t.to_string());
    }
    if memory {
        cmd.arg("--memory");
    }
    if dictionaries {
        cmd.arg("--dictionaries");
    }
    let out = cmd.stderr(std::process::Stdio::inherit()).output().context("starting the end-to-end child")?;
    anyhow::ensure!(out.status.success(), "end-to-end child failed ({})", out.status);
    let run: PipelineRun = serde_json::from_slice(&out.stdout).context("reading the end-to-end child's report")?;
    Ok(run)
}

/// Bytes for people (decimal MB, as rates are).
fn mb(n: u64) -> String {
    format!("{:.1} MB", n as f64 / 1e6)
}

fn mib(n: u64) -> String {
    format!("{:.0} MiB", n as f64 / (1 << 20) as f64)
}

/// One row of the end-to-end table.
fn print_run(label: &str, run: &PipelineRun, ratio_to_bound: f64) {
    println!(
        "   {:<22} {:>8.1} {:>9.0} {:>9.2} {:>7.3} {:>6.2}x {:>9} {:>7.2}s",
        label,
        run.mb_s,
        run.messages_per_s,
        ratio_to_bound,
        run.stored_ratio,
        run.dedupe_ratio,
        run.peak_rss.map(mib).unwrap_or_else(|| "-".into()),
        run.rerun_seconds.unwrap_or(f64::NAN)
    );
}

fn print_corpus(r: &CorpusReport, threads: usize, level: i32) {
    println!();
    println!("== {} — {}", r.name, r.description);
    println!(
        "   {} messages, {} files, {} in {} mailbox(es); 1-min load {:.2} before, {:.2} after",
        r.messages,
        r.files,
        mb(r.source_bytes),
        r.mailboxes.len(),
        r.load1.0,
        r.load1.1
    );
    println!(
        "   {:<13} {:>9} {:>12} {:>7}  (one thread; out = bytes made ÷ bytes in)",
        "stage", "MB/s", "items/s", "out"
    );
    for s in &r.stages {
        let out = s.out_bytes.map(|o| format!("{:.3}", o as f64 / s.bytes.max(1) as f64)).unwrap_or_default();
        println!("   {:<13} {:>9.1} {:>12.0} {:>7}  {}", s.stage, s.mb_s, s.items_per_s, out, s.what);
    }
    let p = &r.pipeline;
    println!(
        "   bound: BLAKE3 per message + zstd-{level} per 1 MiB segment, {threads} threads, in memory: {:.1} MB/s before, {:.1} after (zstd output {:.3} of source)",
        r.bound_before.mb_s,
        r.bound_after.mb_s,
        r.bound_before.zstd_bytes as f64 / r.source_bytes.max(1) as f64
    );
    println!(
        "   {:<22} {:>8} {:>9} {:>9} {:>7} {:>7} {:>9} {:>8}",
        "end to end", "MB/s", "msgs/s", "÷bound", "stored", "dedupe", "peak RSS", "re-run"
    );
    print_run("mover → local store", p, r.ratio_to_bound);
    print_run("… --dictionaries", &r.pipeline_dictionaries, r.ratio_to_bound_dictionaries);
    print_run("mover → memory store", &r.pipeline_memory, r.ratio_to_bound_memory);
    for x in r.restic.iter().chain(r.tar_zstd.iter()) {
        println!(
            "   {:<22} {:>8.1} {:>9} {:>9} {:>7.3} {:>7} {:>9} {:>8}",
            x.tool,
            x.mb_s,
            "",
            "",
            x.stored_ratio,
            "",
            "",
            x.rerun_seconds.map(|s| format!("{s:.2}s")).unwrap_or_default()
        );
    }
    if let Some(q) = r.ratio_to_restic {
        println!("   mover MB/s ÷ restic MB/s: {q:.2}");
    }
    println!(
        "   first run {:.2} s; {} stored of {} ({} new raw, {} deduplicated); re-run stored nothing new: {}",
        p.seconds,
        mb(p.new_stored_bytes),
        mb(p.source_bytes),
        mb(p.new_raw_bytes),
        mb(p.deduplicated_bytes),
        p.rerun_nothing_new.map(|b| b.to_string()).unwrap_or_else(|| "-".into())
    );
    if let Some(f) = r.rerun_fraction {
        let runs: Vec<String> = r.rerun_seconds_runs.iter().map(|s| format!("{:.1}", s * 1e3)).collect();
        println!(
            "   no-change re-run: {:.1} % of the first run (median over {} repetition(s); re-runs {} ms)",
            f * 100.0,
            r.rerun_seconds_runs.len(),
            runs.join(", ")
        );
    }
    for s in &r.skipped {
        println!("   skipped: {s}");
    }
}
