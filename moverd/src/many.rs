//! `moverd migrate-many`: a wave of mailboxes in one process, one pass each, one after the other.
//!
//! What one process gives that a shell loop over `moverd migrate` does not: the destination's dedupe index is kept
//! from one mailbox to the next ([`KeptIndex`]: each pass reads only the pack indexes that are new since the
//! previous one, instead of the local cache file and the whole table again), one store client (S3 connections
//! reused), and one report for the wave. Each mailbox is still its own pass with its own manifest, committed when
//! its packs are acknowledged: interrupting the wave loses nothing, and running the same command again makes delta
//! passes (the mailboxes already done store nothing).

use std::io::{BufRead, IsTerminal};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicI32, Ordering};
use std::time::Instant;

use clap::Args;
use mover_core::pipeline::{KeptIndex, Progress};
use mover_core::report::MigrationSummary;

use crate::cli::{EXIT_FAILURE, EXIT_OK, EXIT_QUARANTINED, MigrateJson, PassArgs, StoreArgs, default_mailbox};
use crate::display;

/// Arguments of `migrate-many`.
#[derive(Debug, Args)]
#[command(group(clap::ArgGroup::new("mailboxes").required(true).args(["list", "each"])))]
pub struct MigrateManyArgs {
    /// S3 options.
    #[command(flatten)]
    pub store: StoreArgs,
    /// Where to store: a local directory (created if missing), or s3://bucket/prefix.
    pub dest: String,
    /// The mailboxes, one per line (UTF-8): `MAILBOX<TAB>SOURCE`, or just `SOURCE` (the mailbox id is then its
    /// file name as written). Blank lines and lines starting with `#` are skipped; `-` reads the list from stdin.
    /// Relative paths are relative to the current directory. The list is checked whole before anything runs.
    #[arg(long, value_name = "FILE")]
    pub list: Option<PathBuf>,
    /// Every entry of DIR (sub-directory or mbox file, in name order, hidden ones skipped) is a mailbox, named
    /// after it: `--each /var/mail` migrates /var/mail/alice as mailbox "alice". One path component may hold a
    /// `*` (quote it from the shell): `--each '/home/*/Maildir'` migrates /home/alice/Maildir as "alice" (homes
    /// without a Maildir are skipped), `--each '/var/vmail/example.org/*'` every mailbox of that domain.
    #[arg(long, value_name = "DIR")]
    pub each: Option<PathBuf>,
    /// Stop at the first mailbox that fails (quarantined items are not a failure). By default the wave goes on
    /// and the failures are listed at the end.
    #[arg(long)]
    pub stop_on_error: bool,
    /// Stop the wave after this many mailboxes in a row have failed (0: never): that many failures in a row are
    /// usually the destination or this machine (unreachable endpoint, full disk), and every further mailbox would
    /// only fail the same way, after its retries.
    #[arg(long, default_value_t = 5, value_name = "N")]
    pub max_failures_in_a_row: usize,
    /// One JSON object per line on stdout: one per mailbox as it ends (the `migrate --json` summary with a
    /// `status`: "migrated", a new pass committed, or "unchanged", nothing changed since the previous pass; or
    /// `"status": "failed"` with the `error`), then `{"total": ...}`.
    #[arg(long)]
    pub json: bool,
    /// How each pass runs.
    #[command(flatten)]
    pub pass: PassArgs,
    /// No progress display.
    #[arg(long, short)]
    pub quiet: bool,
}

/// One mailbox of the wave.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Planned {
    /// The mailbox id in the destination.
    pub mailbox: String,
    /// The mail store to read.
    pub source: PathBuf,
}

/// The mailboxes of a list file: `MAILBOX<TAB>SOURCE` or `SOURCE` lines (see [`MigrateManyArgs::list`]). `what`
/// names the list in errors. Fields are taken as written (a leading byte-order mark and line ends aside): a field
/// that starts or ends with white space, a mailbox id with an invisible character, a line without a source, an
/// invalid mailbox id or a mailbox listed twice (two sources into one mailbox would overwrite each other's passes)
/// fail the whole list, naming the line, before anything is migrated. A source listed twice (under two ids) is a
/// warning.
pub fn parse_list(text: &str, what: &str) -> anyhow::Result<Vec<Planned>> {
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    let mut out: Vec<Planned> = Vec::new();
    let mut seen = std::collections::HashMap::new();
    let mut sources = std::collections::HashMap::new();
    for (i, line) in text.lines().enumerate() {
        let n = i + 1;
        let line = line.strip_suffix('\r').unwrap_or(line);
        if line.trim().is_empty() || line.trim_start().starts_with('#') {
            continue;
        }
        let as_written = |field: &str, name: &str| -> anyhow::Result<()> {
            if field != field.trim() {
                anyhow::bail!(
                    "{what} line {n}: the {name} {field:?} starts or ends with white space; write it without (a \
                     path that really does cannot be listed: migrate it with `moverd migrate`)"
                );
            }
            Ok(())
        };
        let (named, source) = match line.split_once('\t') {
            Some((m, s)) => (Some(m), s),
            None => (None, line),
        };
        if source.is_empty() {
            anyhow::bail!("{what} line {n}: no source after the mailbox id {:?}", named.unwrap_or(""));
        }
        if source.contains('\t') {
            anyhow::bail!("{what} line {n}: more than one tab (the form is MAILBOX<TAB>SOURCE)");
        }
        as_written(source, "source")?;
        let source = PathBuf::from(source);
        let mailbox = match named {
            Some(m) => {
                as_written(m, "mailbox id")?;
                m.to_string()
            }
            None => default_mailbox(&source).map_err(|e| anyhow::anyhow!("{what} line {n}: {e}"))?,
        };
        check_mailbox_id(&mailbox).map_err(|e| anyhow::anyhow!("{what} line {n}: {e}"))?;
        if let Some(first) = seen.insert(mailbox.clone(), n) {
            anyhow::bail!("{what} line {n}: mailbox {mailbox:?} is already on line {first}");
        }
        if let Some(first) = sources.insert(source.clone(), n) {
            eprintln!("moverd: warning: {what} line {n}: {} is also on line {first}", source.display());
        }
        out.push(Planned { mailbox, source });
    }
    Ok(out)
}

/// A mailbox id as the destination takes it ([`mover_core::layout::validate_mailbox`]), without characters that
/// do not show (a byte-order mark, zero-width spaces, white space other than the space): two ids that print the
/// same would be two mailboxes.
fn check_mailbox_id(mailbox: &str) -> anyhow::Result<()> {
    mover_core::layout::validate_mailbox(mailbox)?;
    let invisible = |c: char| {
        matches!(c, '\u{ad}' | '\u{200b}'..='\u{200f}' | '\u{2060}'..='\u{2064}' | '\u{feff}')
            || (c.is_whitespace() && c != ' ')
    };
    if let Some(c) = mailbox.chars().find(|&c| invisible(c)) {
        anyhow::bail!("mailbox id {mailbox:?} holds an invisible character (U+{:04X})", c as u32);
    }
    Ok(())
}

/// The mailboxes of `--each PATTERN`. Without a `*`: every directory or file (through links) in the directory that
/// does not start with `.`, named after it (a directory that is itself a Maildir is refused). With one path component holding a `*` (`/home/*/Maildir`, `/var/vmail/example.org/*`): every
/// entry of that component's directory whose name matches it (`*` stands for any run of characters; a name
/// starting with `.` only if the pattern's does), followed by the rest of the pattern, where that path is a
/// directory or a file;
/// the mailbox is named after the matched entry (`/home/alice/Maildir` → "alice"). In name order.
pub fn list_each(pattern: &Path) -> anyhow::Result<Vec<Planned>> {
    use std::os::unix::ffi::OsStrExt;
    let parts: Vec<_> = pattern.components().collect();
    let starred: Vec<usize> = (0..parts.len()).filter(|&i| parts[i].as_os_str().as_bytes().contains(&b'*')).collect();
    let (dir, component, rest) = match starred[..] {
        [] => (pattern.to_path_buf(), b"*".to_vec(), PathBuf::new()),
        [i] => (
            parts[..i].iter().collect::<PathBuf>(),
            parts[i].as_os_str().as_bytes().to_vec(),
            parts[i + 1..].iter().collect::<PathBuf>(),
        ),
        _ => anyhow::bail!("{}: only one path component may hold a `*`", pattern.display()),
    };
    let dir = if dir.as_os_str().is_empty() { PathBuf::from(".") } else { dir };
    let Some(star) = component.iter().position(|&b| b == b'*') else { unreachable!("the component holds a *") };
    let (prefix, suffix) = (&component[..star], &component[star + 1..]);
    if suffix.contains(&b'*') {
        anyhow::bail!("{}: only one `*` per pattern", pattern.display());
    }
    // `--each /home/alice/Maildir` (a Maildir itself, or an unquoted `/home/*/Maildir` the shell expanded to one
    // match) would make cur, new and tmp mailboxes of their own.
    if starred.is_empty() && ["cur", "new"].iter().all(|d| dir.join(d).is_dir()) {
        anyhow::bail!(
            "{} is a Maildir (it has cur and new), not a directory of mailboxes: migrate it with `moverd migrate`, \
             or, for every Maildir below a set of directories, quote the pattern: --each '/home/*/Maildir'",
            dir.display()
        );
    }
    let entries = std::fs::read_dir(&dir).map_err(|e| anyhow::anyhow!("listing {}: {e}", dir.display()))?;
    let mut out = Vec::new();
    for entry in entries {
        let entry = entry.map_err(|e| anyhow::anyhow!("listing {}: {e}", dir.display()))?;
        let name = entry.file_name();
        let bytes = name.as_bytes();
        let matches = bytes.len() >= prefix.len() + suffix.len()
            && bytes.starts_with(prefix)
            && bytes.ends_with(suffix)
            && (!bytes.starts_with(b".") || prefix.starts_with(b"."));
        if !matches {
            continue;
        }
        let source = if rest.as_os_str().is_empty() { entry.path() } else { entry.path().join(&rest) };
        // A mailbox is a directory or a file (an mbox), through links; anything else (a socket, a broken link, a
        // home without a Maildir) is not one.
        match std::fs::metadata(&source) {
            Ok(m) if m.is_dir() || m.is_file() => {}
            _ => continue,
        }
        let Some(name) = name.to_str() else {
            eprintln!(
                "moverd: warning: skipping {}: the name is not UTF-8, so it cannot be a mailbox id (list it with \
                 --list as MAILBOX<TAB>SOURCE)",
                entry.path().display()
            );
            continue;
        };
        check_mailbox_id(name).map_err(|e| anyhow::anyhow!("{}: {e}", entry.path().display()))?;
        out.push(Planned { mailbox: name.to_string(), source });
    }
    out.sort_by(|a, b| a.mailbox.cmp(&b.mailbox));
    Ok(out)
}

/// How one mailbox ended.
enum Outcome {
    Done(Box<MigrationSummary>),
    Failed(String),
}

/// What the wave did, for the last line.
#[derive(Debug, Default, serde::Serialize)]
struct Total {
    mailboxes: usize,
    /// Mailboxes with a new pass committed.
    migrated: usize,
    /// Mailboxes in which nothing changed since their previous pass (which stays the current one).
    unchanged: usize,
    /// Mailboxes migrated with quarantined items (counted in `migrated` or `unchanged` too).
    quarantined: usize,
    failed: usize,
    messages: u64,
    /// Bytes of the mailboxes' files (read or carried over unchanged).
    source_bytes: u64,
    /// Bytes read (files new or changed since the previous pass).
    read_bytes: u64,
    new_stored_bytes: u64,
    seconds: f64,
    /// Mailboxes not started: the wave was stopped by a signal, by a failure (--stop-on-error), or by failures in
    /// a row (--max-failures-in-a-row).
    not_started: usize,
    /// Why the wave stopped before its end: "signal", "error" or "failures".
    stopped: Option<&'static str>,
    /// Mailboxes that failed, in order.
    failures: Vec<String>,
}

/// The first SIGINT or SIGTERM sets `stop` to its number: the wave finishes the mailbox in progress (which is then
/// committed) and starts no other. A second one ends the process at once: the mailbox in progress is not committed
/// (nothing is lost: its next pass stores what this one did not, and finds the packs this one stored).
async fn stop_on_signal(
    mut int: tokio::signal::unix::Signal,
    mut term: tokio::signal::unix::Signal,
    stop: Arc<AtomicI32>,
) {
    loop {
        let n = tokio::select! {
            _ = int.recv() => 2,
            _ = term.recv() => 15,
        };
        if stop.swap(n, Ordering::Relaxed) != 0 {
            eprintln!(
                "moverd: stopping now; the mailbox in progress, if any, is not committed (its next pass goes on)"
            );
            std::process::exit(128 + n);
        }
        eprintln!(
            "moverd: stopping after the mailbox in progress (signal again to stop at once: that mailbox is then not \
             committed, and is migrated again next time)"
        );
    }
}

/// Run `migrate-many`; returns the exit code.
pub async fn migrate_many(a: MigrateManyArgs) -> anyhow::Result<u8> {
    let plan = match (&a.list, &a.each) {
        (Some(list), _) if list.as_os_str() == "-" => {
            let mut text = String::new();
            for line in std::io::stdin().lock().lines() {
                text.push_str(&line?);
                text.push('\n');
            }
            parse_list(&text, "the list on stdin")?
        }
        (Some(list), _) => {
            let text = std::fs::read_to_string(list).map_err(|e| anyhow::anyhow!("reading {}: {e}", list.display()))?;
            parse_list(&text, &list.display().to_string())?
        }
        (None, Some(pattern)) => list_each(pattern)?,
        (None, None) => unreachable!("clap requires --list or --each"),
    };
    if plan.is_empty() {
        anyhow::bail!("no mailboxes to migrate");
    }
    let store = a.store.open(&a.dest)?;
    let kept = KeptIndex::new();
    let started = Instant::now();
    let mut total = Total { mailboxes: plan.len(), ..Total::default() };
    let bar = (!a.json && !a.quiet && std::io::stderr().is_terminal()).then(|| {
        let bar = indicatif::ProgressBar::new(plan.len() as u64);
        bar.set_style(
            indicatif::ProgressStyle::with_template(
                "{spinner} [{elapsed_precise}] {bar:30} {pos}/{len} mailboxes {msg}",
            )
            .expect("valid template"),
        );
        bar
    });
    let width = plan.len().to_string().len();
    let stop = Arc::new(AtomicI32::new(0));
    // Registered before the first mailbox starts: from here on the signals no longer end the process by default.
    let signals = (
        tokio::signal::unix::signal(tokio::signal::unix::SignalKind::interrupt()),
        tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()),
    );
    let watcher = match signals {
        (Ok(int), Ok(term)) => Some(tokio::spawn(stop_on_signal(int, term, stop.clone()))),
        _ => None, // the default: a signal ends the process (and the mailbox in progress is not committed)
    };
    let (mut in_a_row, mut broken_pipe) = (0, false);
    for (i, p) in plan.iter().enumerate() {
        if stop.load(Ordering::Relaxed) != 0 {
            total.stopped = Some("signal");
            total.not_started = plan.len() - i;
            break;
        }
        let mut opts = a.pass.options(p.mailbox.clone());
        opts.keep_index = Some(kept.clone());
        // The bar shows the mailbox being migrated and how far it is (a large mailbox takes minutes).
        let ticker = bar.clone().map(|bar| {
            let progress = Arc::new(Progress::default());
            opts.progress = Some(progress.clone());
            let mailbox = p.mailbox.clone();
            tokio::spawn(async move {
                loop {
                    bar.set_message(format!(
                        "{mailbox}: {} messages, {} read",
                        progress.messages.load(Ordering::Relaxed),
                        display::bytes(progress.bytes.load(Ordering::Relaxed))
                    ));
                    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
                }
            })
        });
        let outcome = match mover_core::pipeline::migrate(&p.source, store.clone(), opts).await {
            Ok(s) => Outcome::Done(Box::new(s)),
            Err(e) => Outcome::Failed(format!("{e}")),
        };
        if let Some(t) = ticker {
            t.abort();
        }
        let line = report(a.json, &mut total, p, &outcome, format!("[{:>width$}/{}]", i + 1, plan.len()))?;
        let printed = match &bar {
            Some(bar) => {
                bar.inc(1);
                bar.suspend(|| crate::try_print_line(format_args!("{line}")))
            }
            None => crate::try_print_line(format_args!("{line}")),
        };
        match printed {
            Ok(()) => {}
            // `migrate-many … | head`: nobody reads the report any more; stop as a first signal would.
            Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => {
                eprintln!(
                    "moverd: stdout was closed; the wave stops after mailbox {} ({} not started)",
                    p.mailbox,
                    plan.len() - i - 1
                );
                broken_pipe = true;
                break;
            }
            Err(e) => return Err(anyhow::anyhow!("writing to stdout: {e}")),
        }
        if matches!(outcome, Outcome::Failed(_)) {
            in_a_row += 1;
        } else {
            in_a_row = 0;
        }
        let brake = a.max_failures_in_a_row > 0 && in_a_row >= a.max_failures_in_a_row;
        if (a.stop_on_error || brake) && in_a_row > 0 && i + 1 < plan.len() {
            total.stopped = Some(if a.stop_on_error { "error" } else { "failures" });
            total.not_started = plan.len() - i - 1;
            break;
        }
    }
    // The watcher stays until the process ends: a second signal while the totals are printed still stops it.
    drop(watcher);
    if let Some(bar) = bar {
        bar.finish_and_clear();
    }
    total.seconds = started.elapsed().as_secs_f64();
    if broken_pipe {
        for f in &total.failures {
            eprintln!("moverd: FAILED: {f}");
        }
        return Ok(crate::EXIT_BROKEN_PIPE as u8);
    }
    if a.json {
        out!("{}", serde_json::to_string(&serde_json::json!({ "total": &total }))?);
    } else {
        let done = total.migrated + total.unchanged;
        out!(
            "{done} of {} mailboxes done ({} migrated, {} unchanged since their previous pass), {} failed, {} with \
             quarantined items; {} messages, {} of mail, {} read ({}), {} new in {}, {:.1} s",
            total.mailboxes,
            total.migrated,
            total.unchanged,
            total.failed,
            total.quarantined,
            total.messages,
            display::bytes(total.source_bytes),
            display::bytes(total.read_bytes),
            display::rate(total.read_bytes, total.seconds),
            display::bytes(total.new_stored_bytes),
            store.describe(),
            total.seconds,
        );
        match total.stopped {
            Some("error") => out!("stopped at the first failure (--stop-on-error): {} not started", total.not_started),
            Some("failures") => out!(
                "stopped after {} failures in a row (--max-failures-in-a-row): {} not started; look at the errors \
                 below (an unreachable destination? a full disk?) before running it again",
                a.max_failures_in_a_row,
                total.not_started
            ),
            Some(_) => out!(
                "stopped by a signal after the mailbox in progress: {} not started (run the same command again to \
                 go on: the mailboxes done are found unchanged)",
                total.not_started
            ),
            None => {}
        }
        for f in &total.failures {
            out!("  FAILED: {f}");
        }
    }
    let signal = stop.load(Ordering::Relaxed);
    Ok(if total.failed > 0 {
        EXIT_FAILURE
    } else if total.stopped.is_some() && signal != 0 {
        // As a shell reports a command ended by that signal: the wave is not complete.
        (128 + signal) as u8
    } else if total.quarantined > 0 {
        EXIT_QUARANTINED
    } else {
        EXIT_OK
    })
}

/// Count `outcome` into `total` and render its line (JSON or human).
fn report(json: bool, total: &mut Total, p: &Planned, outcome: &Outcome, at: String) -> anyhow::Result<String> {
    match outcome {
        Outcome::Done(s) => {
            // `nothing_new` is also true of a new mailbox whose every blob the destination already had: that is a
            // new pass, "migrated".
            let unchanged = !s.committed;
            let status = if unchanged { "unchanged" } else { "migrated" };
            if unchanged {
                total.unchanged += 1;
            } else {
                total.migrated += 1;
            }
            total.quarantined += usize::from(s.quarantined > 0);
            total.messages += s.messages;
            total.source_bytes += s.source_bytes;
            total.read_bytes += s.stats.read_bytes;
            total.new_stored_bytes += s.new_stored_bytes;
            if json {
                let mut v = serde_json::to_value(MigrateJson::of(s))?;
                v["status"] = status.into();
                return Ok(serde_json::to_string(&v)?);
            }
            let quarantined =
                if s.quarantined > 0 { format!(", {} QUARANTINED (see --json)", s.quarantined) } else { String::new() };
            Ok(format!(
                "{at} {status:<9} {} (pass {}): {} messages, {} read, {} new, {:.2} s{quarantined}",
                s.mailbox,
                s.pass,
                s.messages,
                display::bytes(s.stats.read_bytes),
                display::bytes(s.new_stored_bytes),
                s.seconds
            ))
        }
        Outcome::Failed(error) => {
            total.failed += 1;
            let what = format!("{} ({}): {error}", p.mailbox, p.source.display());
            total.failures.push(what.clone());
            if json {
                let v = serde_json::json!({
                    "mailbox": p.mailbox,
                    "source": p.source.display().to_string(),
                    "status": "failed",
                    "error": error,
                });
                return Ok(serde_json::to_string(&v)?);
            }
            Ok(format!("{at} FAILED    {what}"))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_list_names_mailboxes_or_takes_them_from_the_source() {
        let text = "\u{feff}# wave 1\r\n\nalice\t/srv/mail/alice/Maildir\n/var/mail/bob\r\n  \ncarol smith\t/srv/with space/c\n\
                    links/dave\n";
        let plan = parse_list(text, "wave.tsv").unwrap();
        assert_eq!(
            plan,
            vec![
                Planned { mailbox: "alice".into(), source: "/srv/mail/alice/Maildir".into() },
                Planned { mailbox: "bob".into(), source: "/var/mail/bob".into() },
                Planned { mailbox: "carol smith".into(), source: "/srv/with space/c".into() },
                // A link is named after itself, as --each names it, not after what it points to.
                Planned { mailbox: "dave".into(), source: "links/dave".into() },
            ]
        );
    }

    #[test]
    fn a_list_that_is_not_exactly_as_meant_is_refused_naming_the_line() {
        let refused = |text: &str, says: &str| {
            let e = parse_list(text, "wave.tsv").unwrap_err().to_string();
            assert!(e.contains("wave.tsv line 2") && e.contains(says), "{text:?}: {e}");
        };
        refused("a\t/x\n/z/a\n", "already on line 1");
        refused("a\t/x\nb\t\n", "no source");
        refused("a\t/x\n\t/y\n", "invalid mailbox id");
        refused("a\t/x\na\u{7}b\t/y\n", "invalid mailbox id");
        refused("a\t/x\nb\t /y\n", "white space");
        refused("a\t/x\nb \t/y\n", "white space");
        refused("a\t/x\n/y\u{a0}\n", "white space");
        refused("a\t/x\nb\u{200b}\t/y\n", "invisible character (U+200B)");
        refused("a\t/x\nb\t/y\t/z\n", "more than one tab");
    }

    #[test]
    fn each_takes_the_entries_of_a_directory_in_name_order_without_hidden_ones() {
        let d = tempfile::tempdir().unwrap();
        for name in ["carol", "alice", ".snapshot"] {
            std::fs::create_dir(d.path().join(name)).unwrap();
        }
        std::fs::write(d.path().join("bob"), b"From x\n").unwrap();
        std::os::unix::fs::symlink("nowhere", d.path().join("broken")).unwrap();
        std::os::unix::fs::symlink("alice", d.path().join("linked")).unwrap();
        let plan = list_each(d.path()).unwrap();
        let names: Vec<_> = plan.iter().map(|p| p.mailbox.as_str()).collect();
        assert_eq!(names, ["alice", "bob", "carol", "linked"]);
        assert_eq!(plan[1].source, d.path().join("bob"));
        // A Maildir is not a directory of mailboxes (an unquoted '/home/*/Maildir' the shell expanded to one).
        std::fs::create_dir_all(d.path().join("alice/cur")).unwrap();
        std::fs::create_dir_all(d.path().join("alice/new")).unwrap();
        let e = list_each(&d.path().join("alice")).unwrap_err().to_string();
        assert!(e.contains("is a Maildir"), "{e}");
    }

    #[test]
    fn each_with_a_star_takes_the_matching_entries_that_hold_the_rest_of_the_pattern() {
        let d = tempfile::tempdir().unwrap();
        let home = d.path().join("home");
        for dir in ["alice/Maildir/cur", "bob/Documents", "carol/Maildir", ".skel/Maildir", "dave/Maildir"] {
            std::fs::create_dir_all(home.join(dir)).unwrap();
        }
        let plan = list_each(&home.join("*/Maildir")).unwrap();
        let got: Vec<_> = plan.iter().map(|p| (p.mailbox.as_str(), p.source.clone())).collect();
        assert_eq!(
            got,
            [
                ("alice", home.join("alice/Maildir")),
                ("carol", home.join("carol/Maildir")),
                ("dave", home.join("dave/Maildir"))
            ]
        );
        // A prefix or suffix narrows the match; a pattern starting with `.` takes hidden entries.
        let names = |p: &str| list_each(&home.join(p)).unwrap().into_iter().map(|p| p.mailbox).collect::<Vec<_>>();
        assert_eq!(names("*e"), ["alice", "dave"]);
        assert_eq!(names("c*"), ["carol"]);
        assert_eq!(names(".*/Maildir"), [".skel"]);
        assert!(list_each(&home.join("*/*")).unwrap_err().to_string().contains("only one path component"));
        assert!(list_each(&home.join("*l*")).unwrap_err().to_string().contains("only one `*`"));
    }
}
