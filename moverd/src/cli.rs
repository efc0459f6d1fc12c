//! The command line: the contract operators and other tools script against.

use std::io::IsTerminal;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};
use mover_core::pipeline::{MigrateOptions, Progress};
use mover_core::report::MigrationSummary;
use mover_core::restore::{ReplayReport, RestoreOptions};
use mover_core::store::DynStore;

use crate::display;

/// Exit code: everything worked.
pub const EXIT_OK: u8 = 0;
/// Exit code: the command failed (error, or verification found a mismatch or a missing object).
pub const EXIT_FAILURE: u8 = 1;
/// Exit code: wrong arguments (clap's own code).
pub const EXIT_USAGE: u8 = 2;
/// Exit code: the migration completed, but some items were quarantined (listed in the summary).
pub const EXIT_QUARANTINED: u8 = 3;

const AFTER_HELP: &str = "\
Exit codes:
  0  success
  1  failure: an error stopped the command, or verify/restore found a mismatch or a missing object
  2  usage error (bad arguments)
  3  completed, but some items were quarantined (see the summary; their paths, offsets and reasons are listed)
  141  stdout was closed by its reader (`moverd ls DEST | head`); the work itself was done

Logging goes to stderr; set MOVER_LOG (e.g. MOVER_LOG=debug) or use -v for more.";

/// Move legacy mail stores (Maildir, mbox) into object storage, deduplicated and compressed, and restore them byte
/// for byte.
#[derive(Debug, Parser)]
#[command(
    name = "moverd",
    version,
    about,
    long_about = "moverd moves the mail stores of this server into a destination (a local directory, or an S3 \
                  bucket: s3://bucket/prefix) and gets them back byte for byte.\n\n\
                  Quick start:\n  \
                  moverd migrate /var/mail/alice /srv/mover-dest --mailbox alice\n  \
                  moverd verify /srv/mover-dest --mailbox alice\n  \
                  moverd restore /srv/mover-dest --mailbox alice --to /tmp/alice-restored\n  \
                  moverd ls /srv/mover-dest\n  \
                  AWS_PROFILE=migration moverd migrate /var/mail/bob s3://mail-archive/site1 \
                  --s3-endpoint http://rgw.local:7480",
    after_help = AFTER_HELP
)]
pub struct Cli {
    /// More log output on stderr (-v info, -vv debug).
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    pub verbose: u8,
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Migrate one mailbox: read SOURCE, store what DEST does not have yet, write the mailbox manifest.
    ///
    /// SOURCE is a Maildir, a Maildir++ root (with .Folder.Sub folders), a tree of Maildirs, an mbox file, or a
    /// directory of mbox folder files. Every file in the tree is kept, including dovecot-uidlist, subscriptions and
    /// other non-message files. Running it again stores only what changed (a delta pass); unchanged files are not
    /// even read.
    #[command(after_help = "Examples:\n  \
        moverd migrate /home/alice/Maildir /srv/dest --mailbox alice@example.org\n  \
        moverd migrate /var/mail/bob /srv/dest --json     # mailbox id defaults to the file name: bob")]
    Migrate(MigrateArgs),
    /// Migrate many mailboxes, one pass each, one after the other in one process: from a list (--list FILE of
    /// `MAILBOX<TAB>SOURCE` lines) or every entry of a directory (--each DIR).
    ///
    /// Same passes as `migrate` (run it again for delta passes), but the destination's dedupe index is kept from one
    /// mailbox to the next instead of being loaded again for each, and the wave gets one report: a line per
    /// mailbox as it ends, then the totals and the failures. A failed mailbox does not stop the others (unless
    /// --stop-on-error; five failures in a row do). Ctrl-C or SIGTERM (the end of a migration window) stops it after the mailbox in progress;
    /// a second one stops it at once. Either way nothing is lost: every mailbox that ended is committed, and
    /// running the same command again finds them unchanged and goes on with the others.
    #[command(
        name = "migrate-many",
        after_help = "Examples:\n  \
        moverd migrate-many /srv/mover-dest --each /var/mail          # /var/mail/alice: mailbox alice\n  \
        moverd migrate-many /srv/mover-dest --each '/home/*/Maildir'  # /home/alice/Maildir: alice\n  \
        moverd migrate-many s3://archive/site1 --list wave-07.tsv --json > wave-07.jsonl\n  \
        printf 'alice\\t/home/alice/Maildir\\n' | moverd migrate-many /srv/mover-dest --list -\n\n\
        Exit code 1 if any mailbox failed, else 130 or 143 if SIGINT or SIGTERM stopped the wave before its end, \
        else 3 if any mailbox had quarantined items, else 0."
    )]
    MigrateMany(crate::many::MigrateManyArgs),
    /// Check a destination: read every blob a mailbox needs, check every hash, rebuild every message and file in
    /// memory and compare with what was recorded at migration. Writes nothing.
    #[command(after_help = "Examples:\n  moverd verify /srv/dest                 # every mailbox\n  \
        moverd verify /srv/dest --mailbox alice --json")]
    Verify(VerifyArgs),
    /// Rebuild a mailbox from DEST alone into a directory (no local state needed). Never overwrites files.
    #[command(after_help = "Example:\n  moverd restore /srv/dest --mailbox alice --to /tmp/alice\n  \
        diff -r /home/alice/Maildir /tmp/alice    # identical")]
    Restore(RestoreArgs),
    /// List the mailboxes in a destination with their message counts, source bytes and stored bytes.
    Ls(LsArgs),
    /// Measure the pipeline on SOURCE (into a scratch store, or DEST) against the bound measured in the same run,
    /// and plan migration waves from the result.
    #[command(after_help = "Examples:\n  moverd bench /home/alice/Maildir\n  \
        moverd bench /var/mail --mailboxes 22000 --avg-size 1.1G --hosts 40 --window 10h")]
    Bench(crate::bench::BenchArgs),
    /// Write a synthetic, deterministic mail corpus (Maildir++ and/or mbox) to try migrations and benches on.
    GenCorpus(crate::bench::GenCorpusArgs),
}

/// How to reach an `s3://` destination. Credentials come from the standard AWS chain (`AWS_ACCESS_KEY_ID`,
/// `AWS_SECRET_ACCESS_KEY`, profiles, instance roles), never from the command line, where other users could read
/// them; `AWS_ENDPOINT_URL` and `AWS_REGION` work too.
#[derive(Debug, Clone, Args)]
pub struct StoreArgs {
    /// S3-compatible endpoint (Ceph RGW, MinIO, Garage…), e.g. http://127.0.0.1:7480 [default: AWS, or
    /// AWS_ENDPOINT_URL]. Implies path-style addressing and checksums only where required.
    #[arg(long, env = "MOVER_S3_ENDPOINT", help_heading = "S3 destinations")]
    pub s3_endpoint: Option<String>,
    /// S3 region [default: the AWS chain, else us-east-1 with an endpoint].
    #[arg(long, help_heading = "S3 destinations")]
    pub s3_region: Option<String>,
    /// Path-style (true) or virtual-host (false) addressing [default: path style with an endpoint].
    #[arg(long, help_heading = "S3 destinations")]
    pub s3_path_style: Option<bool>,
    /// S3 requests in flight at once, multipart parts included.
    #[arg(long, default_value_t = 16, help_heading = "S3 destinations")]
    pub s3_max_in_flight: usize,
    /// Multipart part size (raised as needed to stay within S3's 10,000 parts).
    #[arg(long, default_value = "8M", value_parser = display::parse_size, help_heading = "S3 destinations")]
    pub s3_part_size: u64,
    /// Local directory for state that outlives a run: a journal of the S3 multipart uploads in progress, so that
    /// an upload interrupted by a failure, a shutdown or a crash is resumed by the next run instead of starting
    /// over [default: $XDG_STATE_HOME/mover, else ~/.local/state/mover; none when neither can be found, and then
    /// interrupted uploads start over].
    #[arg(long, value_name = "DIR", env = "MOVER_STATE_DIR", help_heading = "S3 destinations")]
    pub state_dir: Option<PathBuf>,
}

/// `$XDG_STATE_HOME/mover`, else `$HOME/.local/state/mover` (the XDG base directory spec: relative paths are
/// ignored).
fn default_state_dir() -> Option<PathBuf> {
    xdg_dir("XDG_STATE_HOME", ".local/state").map(|d| d.join("mover"))
}

/// `$XDG_CACHE_HOME/mover/index`, else `$HOME/.cache/mover/index`.
fn default_index_cache() -> Option<PathBuf> {
    xdg_dir("XDG_CACHE_HOME", ".cache").map(|d| d.join("mover/index"))
}

/// `$VAR` when it is an absolute path, else `$HOME/fallback`.
fn xdg_dir(var: &str, fallback: &str) -> Option<PathBuf> {
    let absolute = |name: &str| std::env::var_os(name).map(PathBuf::from).filter(|p| p.is_absolute());
    absolute(var).or_else(|| absolute("HOME").map(|h| h.join(fallback)))
}

impl StoreArgs {
    pub(crate) fn open(&self, dest: &str) -> anyhow::Result<DynStore> {
        let config = mover_core::store::S3Config {
            endpoint_url: self.s3_endpoint.clone(),
            region: self.s3_region.clone(),
            force_path_style: self.s3_path_style,
            max_in_flight: Some(self.s3_max_in_flight),
            part_size: Some(self.s3_part_size),
            state_dir: self.state_dir.clone().or_else(default_state_dir),
            ..Default::default()
        };
        Ok(mover_core::store::open_destination_with(dest, config)?)
    }
}

/// Arguments of `migrate`.
#[derive(Debug, Args)]
pub struct MigrateArgs {
    /// S3 options.
    #[command(flatten)]
    pub store: StoreArgs,
    /// The mail store to read: Maildir, Maildir++ root, tree of Maildirs, mbox file, or directory of mbox files.
    pub source: PathBuf,
    /// Where to store: a local directory (created if missing), or s3://bucket/prefix.
    pub dest: String,
    /// Mailbox id in DEST [default: SOURCE's file name].
    #[arg(long)]
    pub mailbox: Option<String>,
    /// Print one JSON summary object on stdout instead of the human summary.
    #[arg(long)]
    pub json: bool,
    /// How each pass runs.
    #[command(flatten)]
    pub pass: PassArgs,
    /// No progress display.
    #[arg(long, short)]
    pub quiet: bool,
}

/// How a migration pass runs: the options `migrate` and `migrate-many` share.
#[derive(Debug, Clone, Args)]
pub struct PassArgs {
    /// zstd compression level (1-22; 3 is fast and gets most of the gain).
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(i32).range(1..=22))]
    pub zstd_level: i32,
    /// Target size of pack objects (small blobs are packed together).
    #[arg(long, default_value = "32M", value_parser = display::parse_size)]
    pub pack_size: u64,
    /// Small messages are compressed together in segments of about this size: larger segments compress better,
    /// smaller ones make reading back one message cheaper (at most one segment is decompressed per blob).
    #[arg(long, default_value = "1M", value_parser = display::parse_size)]
    pub segment_size: u64,
    /// Worker threads for hashing and compression [default: all cores].
    #[arg(long)]
    pub threads: Option<usize>,
    /// Never memory-map source files (stream them instead). Use when other processes may truncate mbox files
    /// during the migration.
    #[arg(long)]
    pub no_mmap: bool,
    /// Store base64/quoted-printable attachments as they are instead of decoded (decoded attachments dedupe
    /// across messages however they were wrapped; they are re-encoded byte for byte on restore).
    #[arg(long)]
    pub no_mime: bool,
    /// Compress segments of header blocks and of bodies with zstd dictionaries, trained on the first migration into
    /// the destination that asks for them and stored there. Off by default: with 1 MiB segments they save about
    /// 1 % of the packs and cost about 0.1 s of training per destination.
    #[arg(long)]
    pub dictionaries: bool,
    /// Accepted for scripts written before dictionaries became opt-in; does nothing.
    #[arg(long, hide = true)]
    pub no_dictionary: bool,
    /// Local directory for copies of destinations' pack indexes (the dedupe index): each migration then reads from
    /// the destination only the pack indexes this host has neither read nor written before, instead of one GET per
    /// pack in the destination. About 52 bytes per distinct blob on disk; safe to delete at any time [default:
    /// $XDG_CACHE_HOME/mover/index, else ~/.cache/mover/index].
    #[arg(long, value_name = "DIR", env = "MOVER_INDEX_CACHE")]
    pub index_cache: Option<PathBuf>,
    /// Read every pack index from the destination (no local copy; wins over --index-cache and MOVER_INDEX_CACHE).
    #[arg(long)]
    pub no_index_cache: bool,
    /// Allow a pass to read another SOURCE than the mailbox's previous pass did (the mail store was moved or
    /// mounted elsewhere). Without it such a pass fails before reading anything: two mailboxes given the same id
    /// would otherwise become passes of one mailbox.
    #[arg(long)]
    pub source_moved: bool,
}

impl PassArgs {
    /// The options of one pass of `mailbox`.
    pub fn options(&self, mailbox: String) -> MigrateOptions {
        let mut opts = MigrateOptions::new(mailbox);
        opts.zstd_level = self.zstd_level;
        opts.pack_target = self.pack_size as usize;
        // A pack holds at least one segment: a small --pack-size brings the segment size down with it.
        opts.segment_target = self.segment_size.min(self.pack_size) as usize;
        opts.threads = self.threads;
        opts.read.mmap = !self.no_mmap;
        opts.mime = !self.no_mime;
        opts.dictionaries = self.dictionaries;
        opts.index_cache =
            if self.no_index_cache { None } else { self.index_cache.clone().or_else(default_index_cache) };
        opts.source_moved = self.source_moved;
        opts
    }
}

/// The mailbox id a SOURCE gets when none is given: its file name as written (a symbolic link's own name, as
/// `migrate-many --each` names it), or, for a path without one (`.`, `..`), the resolved path's.
pub fn default_mailbox(source: &std::path::Path) -> anyhow::Result<String> {
    let resolved;
    let name = match source.file_name() {
        Some(name) => name,
        None => {
            resolved = source.canonicalize().unwrap_or_else(|_| source.to_path_buf());
            resolved
                .file_name()
                .ok_or_else(|| anyhow::anyhow!("cannot derive a mailbox id from {}: use --mailbox", source.display()))?
        }
    };
    Ok(name.to_string_lossy().into_owned())
}

/// Arguments of `verify`.
#[derive(Debug, Args)]
pub struct VerifyArgs {
    /// S3 options.
    #[command(flatten)]
    pub store: StoreArgs,
    /// The destination to check.
    pub dest: String,
    /// Only this mailbox [default: every mailbox].
    #[arg(long)]
    pub mailbox: Option<String>,
    /// Check this pass instead of the latest (needs --mailbox).
    #[arg(long, requires = "mailbox")]
    pub pass: Option<u32>,
    /// Print a JSON report on stdout.
    #[arg(long)]
    pub json: bool,
}

/// Arguments of `restore`.
#[derive(Debug, Args)]
pub struct RestoreArgs {
    /// S3 options.
    #[command(flatten)]
    pub store: StoreArgs,
    /// The destination to restore from.
    pub dest: String,
    /// The mailbox to restore.
    #[arg(long)]
    pub mailbox: String,
    /// Directory to rebuild the mailbox in (created if missing; existing files are never overwritten).
    #[arg(long)]
    pub to: PathBuf,
    /// Restore this pass instead of the latest.
    #[arg(long)]
    pub pass: Option<u32>,
    /// Print a JSON report on stdout.
    #[arg(long)]
    pub json: bool,
}

/// Arguments of `ls`.
#[derive(Debug, Args)]
pub struct LsArgs {
    /// S3 options.
    #[command(flatten)]
    pub store: StoreArgs,
    /// The destination to list.
    pub dest: String,
    /// Print JSON on stdout.
    #[arg(long)]
    pub json: bool,
}

/// Set up logging to stderr: warnings by default, more with -v or `MOVER_LOG`.
pub fn init_logging(verbose: u8) {
    let default = match verbose {
        0 => "warn",
        1 => "info",
        _ => "debug",
    };
    let filter = tracing_subscriber::EnvFilter::try_from_env("MOVER_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    let _ =
        tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr).with_target(false).try_init();
}

/// Run a parsed command line; returns the exit code.
pub async fn run(cli: Cli) -> u8 {
    let result = match cli.command {
        Command::Migrate(a) => migrate(a).await,
        Command::MigrateMany(a) => crate::many::migrate_many(a).await,
        Command::Verify(a) => verify(a).await,
        Command::Restore(a) => restore(a).await,
        Command::Ls(a) => ls(a).await,
        Command::Bench(a) => crate::bench::bench(a).await,
        Command::GenCorpus(a) => crate::bench::gen_corpus(a),
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("moverd: error: {e:#}");
            EXIT_FAILURE
        }
    }
}

fn print_json(value: &impl serde::Serialize) -> anyhow::Result<()> {
    out!("{}", serde_json::to_string_pretty(value)?);
    Ok(())
}

/// The `--json` summary of `migrate`: the fields scripts rely on first, then everything else.
#[derive(Debug, serde::Serialize)]
pub(crate) struct MigrateJson<'a> {
    mailbox: &'a str,
    pass: u32,
    files: u64,
    messages: u64,
    source_bytes: u64,
    new_stored_bytes: u64,
    quarantined: u64,
    seconds: f64,
    nothing_new: bool,
    committed: bool,
    source: &'a str,
    destination: &'a str,
    stats: &'a mover_core::report::PassStats,
    requests: &'a mover_core::store::RequestCounts,
    quarantine: &'a [mover_core::report::QuarantineItem],
}

impl<'a> MigrateJson<'a> {
    pub(crate) fn of(s: &'a MigrationSummary) -> Self {
        MigrateJson {
            mailbox: &s.mailbox,
            pass: s.pass,
            files: s.files,
            messages: s.messages,
            source_bytes: s.source_bytes,
            new_stored_bytes: s.new_stored_bytes,
            quarantined: s.quarantined,
            seconds: s.seconds,
            nothing_new: s.nothing_new,
            committed: s.committed,
            source: &s.source,
            destination: &s.destination,
            stats: &s.stats,
            requests: &s.requests,
            quarantine: &s.quarantine,
        }
    }
}

async fn migrate(a: MigrateArgs) -> anyhow::Result<u8> {
    let mailbox = match a.mailbox {
        Some(m) => m,
        None => default_mailbox(&a.source)?,
    };
    let store = a.store.open(&a.dest)?;
    let mut opts = a.pass.options(mailbox);
    let progress = Arc::new(Progress::default());
    opts.progress = Some(progress.clone());
    let show = !a.json && !a.quiet && std::io::stderr().is_terminal();
    let bar = show.then(|| {
        // The total is for the display only: it is summed by a walk of its own on a blocking thread, so the
        // migration does not wait for it (the bar shows a length once it is known).
        let bar = indicatif::ProgressBar::new(0);
        // A detached thread: the process does not wait for it at exit (a no-change pass can end long before a
        // walk of a large tree does).
        let (b, source) = (bar.clone(), a.source.clone());
        std::thread::spawn(move || {
            let total = dir_size_estimate(&source);
            if !b.is_finished() {
                b.set_length(total);
            }
        });
        bar.set_style(
            indicatif::ProgressStyle::with_template(
                "{spinner} [{elapsed_precise}] {bar:30} {bytes}/{total_bytes} {bytes_per_sec} eta {eta} {msg}",
            )
            .expect("valid template"),
        );
        bar
    });
    let ticker = bar.clone().map(|bar| {
        let p = progress.clone();
        tokio::spawn(async move {
            loop {
                bar.set_position(p.bytes.load(Ordering::Relaxed));
                bar.set_message(format!(
                    "{} msgs, {} stored",
                    p.messages.load(Ordering::Relaxed),
                    display::bytes(p.stored.load(Ordering::Relaxed))
                ));
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        })
    });
    let result = mover_core::pipeline::migrate(&a.source, store, opts).await;
    if let Some(t) = ticker {
        t.abort();
    }
    if let Some(bar) = bar {
        bar.finish_and_clear();
    }
    let s = result?;
    if a.json {
        print_json(&MigrateJson::of(&s))?;
    } else {
        print_migrate_summary(&s);
    }
    Ok(if s.quarantined > 0 { EXIT_QUARANTINED } else { EXIT_OK })
}

fn print_migrate_summary(s: &MigrationSummary) {
    let st = &s.stats;
    out!("mailbox {} → {} (pass {})", s.mailbox, s.destination, s.pass);
    out!(
        "  {} messages in {} files, {} read in {:.1} s ({})",
        s.messages,
        s.files,
        display::bytes(st.read_bytes),
        s.seconds,
        display::rate(st.read_bytes, s.seconds)
    );
    if st.unchanged_files > 0 {
        out!("  {} files unchanged since the previous pass (not read)", st.unchanged_files);
    }
    if st.racy_files > 0 {
        out!(
            "  {} files read again: they changed as the previous pass started, when their time stamps cannot show a \
             second change (this pass is kept, so the next one can trust them)",
            st.racy_files
        );
    }
    out!(
        "  source {}; new in destination {} ({} new blobs, {} of content already there)",
        display::bytes(s.source_bytes),
        display::bytes(s.new_stored_bytes),
        st.new_blobs,
        display::bytes(st.deduplicated_bytes)
    );
    let b = &st.breakdown;
    let line = |name: &str, k: &mover_core::report::KindStats| {
        out!(
            "    {name:<12} {:>10} read, {:>10} new, {:>10} stored, {:>10} already there",
            display::bytes(k.source_bytes),
            display::bytes(k.unique_bytes),
            display::bytes(k.stored_bytes),
            display::bytes(k.deduplicated_bytes)
        );
    };
    line("headers", &b.headers);
    line("bodies", &b.bodies);
    line("attachments", &b.attachments);
    line("other files", &b.other);
    if st.mime.encoded_parts > 0 || st.mime.raw.total() > 0 {
        let reasons: Vec<String> =
            st.mime.raw.iter().filter(|(_, n)| *n > 0).map(|(why, n)| format!("{why} {n}")).collect();
        out!(
            "  attachments: {} stored decoded ({} already there); parts kept raw: {}",
            st.mime.encoded_parts,
            st.attachments_deduplicated,
            if reasons.is_empty() { "none".to_string() } else { reasons.join(", ") }
        );
    }
    let r = &s.requests;
    out!(
        "  requests: {} PUT ({} already there), {} GET, {} HEAD, {} LIST; {} packs",
        r.put_requests,
        r.put_already_existed,
        r.get_requests,
        r.head_requests,
        r.list_requests,
        st.packs
    );
    if s.nothing_new {
        out!("  nothing new to store: the destination already had every byte of this mailbox");
    }
    if s.quarantined > 0 {
        out!("  {} item(s) quarantined:", s.quarantined);
        for q in &s.quarantine {
            let offset = q.offset.map(|o| format!(" at offset {o}")).unwrap_or_default();
            let stored = if q.stored { " [bytes kept, restored as they were]" } else { " [NOT stored]" };
            out!("    {}{offset}: {}{stored}", q.path, q.reason);
        }
    }
}

/// Total size of regular files under `path`, for the progress bar (best effort; 0 if unknown).
fn dir_size_estimate(path: &std::path::Path) -> u64 {
    let Ok(meta) = std::fs::symlink_metadata(path) else { return 0 };
    if meta.is_file() {
        return meta.len();
    }
    let mut total = 0;
    let mut stack = vec![path.to_path_buf()];
    while let Some(dir) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&dir) else { continue };
        for e in entries.flatten() {
            match e.file_type() {
                Ok(t) if t.is_dir() => stack.push(e.path()),
                Ok(t) if t.is_file() => total += e.metadata().map(|m| m.len()).unwrap_or(0),
                _ => {}
            }
        }
    }
    total
}

fn print_replay(verb: &str, r: &ReplayReport) {
    let status = match (r.errors.is_empty(), r.repaired.is_empty()) {
        (true, true) => "OK",
        (true, false) => "DAMAGED",
        (false, _) => "FAILED",
    };
    out!(
        "{status}: {verb} mailbox {} pass {}: {} files, {} messages, {} directories, {} links, {}, {} blobs checked",
        r.mailbox,
        r.pass,
        r.files,
        r.messages,
        r.dirs,
        r.symlinks,
        display::bytes(r.bytes),
        r.blobs
    );
    if r.quarantined > 0 {
        out!("  {} item(s) were quarantined at migration (see `moverd migrate` output)", r.quarantined);
    }
    for e in &r.errors {
        out!("  error: {e}");
    }
    for e in &r.repaired {
        out!("  damaged destination (worked around, the mailbox is intact): {e}");
    }
}

async fn verify(a: VerifyArgs) -> anyhow::Result<u8> {
    let store = a.store.open(&a.dest)?;
    let mailboxes = match &a.mailbox {
        Some(m) => vec![m.clone()],
        None => mover_core::restore::list_mailboxes(&store).await?.into_iter().map(|m| m.mailbox).collect(),
    };
    if mailboxes.is_empty() {
        anyhow::bail!("{} holds no mailboxes", store.describe());
    }
    let mut reports = Vec::new();
    for m in &mailboxes {
        let r = mover_core::restore::verify(store.clone(), m, a.pass).await?;
        if !a.json {
            print_replay("verified", &r);
        }
        reports.push(r);
    }
    // A damaged pack index is worked around for reading, but the destination is not intact: verify says so.
    let failed = reports.iter().any(|r| !r.errors.is_empty() || !r.repaired.is_empty());
    if a.json {
        print_json(&serde_json::json!({ "ok": !failed, "mailboxes": reports }))?;
    }
    Ok(if failed { EXIT_FAILURE } else { EXIT_OK })
}

async fn restore(a: RestoreArgs) -> anyhow::Result<u8> {
    let store = a.store.open(&a.dest)?;
    let r = mover_core::restore::restore(store, &a.mailbox, &a.to, &RestoreOptions { pass: a.pass }).await?;
    if a.json {
        print_json(&r)?;
    } else {
        print_replay("restored", &r);
        out!("  into {}", a.to.display());
    }
    Ok(if r.errors.is_empty() { EXIT_OK } else { EXIT_FAILURE })
}

async fn ls(a: LsArgs) -> anyhow::Result<u8> {
    let store = a.store.open(&a.dest)?;
    let list = mover_core::restore::list_mailboxes(&store).await?;
    if a.json {
        print_json(&list)?;
        return Ok(EXIT_OK);
    }
    out!("{:<32} {:>6} {:>10} {:>12} {:>12} {:>6}", "MAILBOX", "PASSES", "MESSAGES", "SOURCE", "STORED", "QUAR");
    for m in &list {
        out!(
            "{:<32} {:>6} {:>10} {:>12} {:>12} {:>6}",
            m.mailbox,
            m.passes,
            m.messages,
            display::bytes(m.source_bytes),
            display::bytes(m.stored_bytes),
            m.quarantined
        );
    }
    if list.is_empty() {
        out!("(no mailboxes in {})", store.describe());
    }
    Ok(EXIT_OK)
}
