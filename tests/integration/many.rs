//! `moverd migrate-many`: a wave of mailboxes in one process. Every mailbox is restored and compared byte for byte;
//! a failed mailbox does not stop the others; the dedupe index is kept from one mailbox to the next; a second run
//! finds the wave unchanged.

use std::ffi::OsStr;
use std::path::Path;

use crate::common::*;

/// The JSON lines of `migrate-many --json`: the mailbox lines, and the total.
fn json_lines(stdout: &str) -> (Vec<serde_json::Value>, serde_json::Value) {
    let mut lines: Vec<serde_json::Value> =
        stdout.lines().map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}"))).collect();
    let total = lines.pop().expect("a total line");
    (lines, total["total"].clone())
}

/// `moverd args` started with stdin, stdout and stderr piped, warnings only on stderr.
fn spawn_piped(args: &[&OsStr]) -> std::process::Child {
    use std::process::Stdio;
    let mut cmd = moverd_cmd();
    cmd.args(args).env("MOVER_LOG", "warn").stdin(Stdio::piped()).stdout(Stdio::piped()).stderr(Stdio::piped());
    cmd.spawn().unwrap()
}

fn migrate_many(dest: &Path, how: &[&OsStr], code: i32) -> (Vec<serde_json::Value>, serde_json::Value) {
    let mut args = vec![OsStr::new("migrate-many"), dest.as_os_str(), "--json".as_ref(), "--no-index-cache".as_ref()];
    args.extend_from_slice(how);
    json_lines(&moverd_ok(args, code))
}

#[test]
fn a_wave_is_migrated_in_one_process_past_a_failure_and_restores_byte_for_byte() {
    let work = tempfile::tempdir().unwrap();
    let src = work.path().join("corpus");
    // Three generated mailboxes (shared deliveries between them) and a Maildir++ with every oddity.
    moverd_ok(["gen-corpus", src.to_str().unwrap(), "--seed", "5", "--mailboxes", "3", "--messages", "80"], EXIT_OK);
    let odd = work.path().join("odd");
    crate::roundtrip::maildir_fixture(&odd);
    settle(); // so that the second wave carries every file over unread
    let boxes = src.join("maildir");
    let missing = work.path().join("no-such-mailbox");
    let list = work.path().join("wave.tsv");
    let text = format!(
        "# wave 1\nalice\t{}\n{}\nghost\t{}\n\n{}\ncarol\t{}\n",
        boxes.join("user000").display(),
        boxes.join("user001").display(), // mailbox id from the name: user001
        missing.display(),
        odd.display(), // "odd"
        boxes.join("user002").display(),
    );
    std::fs::write(&list, text).unwrap();
    let dest = work.path().join("dest");

    let (lines, total) = migrate_many(&dest, &["--list".as_ref(), list.as_os_str()], EXIT_FAILURE);
    let names: Vec<&str> = lines.iter().map(|l| l["mailbox"].as_str().unwrap()).collect();
    assert_eq!(names, ["alice", "user001", "ghost", "odd", "carol"]);
    let status: Vec<&str> = lines.iter().map(|l| l["status"].as_str().unwrap()).collect();
    assert_eq!(status, ["migrated", "migrated", "failed", "migrated", "migrated"], "{lines:#?}");
    let error = lines[2]["error"].as_str().unwrap();
    assert!(error.contains("no-such-mailbox"), "the failure names its source: {error}");
    assert_eq!(total["mailboxes"], 5);
    assert_eq!((total["migrated"].as_u64(), total["failed"].as_u64()), (Some(4), Some(1)), "{total:#}");
    let sum = |k: &str| lines.iter().filter_map(|l| l[k].as_u64()).sum::<u64>();
    assert_eq!(total["messages"].as_u64(), Some(sum("messages")));
    assert_eq!(total["new_stored_bytes"].as_u64(), Some(sum("new_stored_bytes")));
    // Later mailboxes deduplicate against earlier ones (shared deliveries).
    assert!(lines[4]["stats"]["deduplicated_bytes"].as_u64().unwrap() > 0, "{:#}", lines[4]);

    // The index was kept from pass to pass: without a local cache every pass would read one pack index per pack
    // already in the destination; here each reads only what the first one read (the format marker).
    let gets: Vec<u64> = lines
        .iter()
        .filter(|l| l["status"] == "migrated")
        .map(|l| l["requests"]["get_requests"].as_u64().unwrap())
        .collect();
    assert!(gets.iter().all(|&g| g == gets[0]), "GETs per pass: {gets:?}");
    // A separate process reads them all (the control: the destination does have several packs by now).
    let extra = migrate_json(&boxes.join("user000"), &dest, "alice-again", EXIT_OK);
    let separate = extra["requests"]["get_requests"].as_u64().unwrap();
    assert!(separate >= gets[0] + 4, "a separate pass read {separate} objects, a pass in the wave {}", gets[0]);

    // Every mailbox comes back byte for byte.
    moverd_ok([OsStr::new("verify"), dest.as_os_str()], EXIT_OK);
    for (mailbox, source) in [
        ("alice", boxes.join("user000")),
        ("user001", boxes.join("user001")),
        ("odd", odd.clone()),
        ("carol", boxes.join("user002")),
    ] {
        let to = work.path().join("restored").join(mailbox);
        restore(&dest, mailbox, None, &to);
        assert_same_tree(&source, &to);
    }

    // Again: every mailbox unchanged (nothing stored, no new pass), the ghost still failing.
    let (lines, total) = migrate_many(&dest, &["--list".as_ref(), list.as_os_str()], EXIT_FAILURE);
    let status: Vec<&str> = lines.iter().map(|l| l["status"].as_str().unwrap()).collect();
    assert_eq!(status, ["unchanged", "unchanged", "failed", "unchanged", "unchanged"]);
    assert_eq!(total["new_stored_bytes"], 0);
    assert!(lines.iter().filter(|l| l["status"] == "unchanged").all(|l| l["pass"] == 1));
}

#[test]
fn each_entry_of_a_directory_is_a_mailbox_and_stop_on_error_stops() {
    let work = tempfile::tempdir().unwrap();
    let src = work.path().join("corpus");
    let gen_args = ["gen-corpus", src.to_str().unwrap(), "--seed", "6", "--mailboxes", "2", "--messages", "40"];
    moverd_ok(gen_args.iter().copied().chain(["--format", "mbox"]), EXIT_OK);
    let spool = src.join("mbox");
    let dest = work.path().join("dest");
    let (lines, total) = migrate_many(&dest, &["--each".as_ref(), spool.as_os_str()], EXIT_OK);
    let names: Vec<&str> = lines.iter().map(|l| l["mailbox"].as_str().unwrap()).collect();
    assert_eq!(names, ["user000", "user001"]);
    assert_eq!(total["migrated"], 2);
    for m in names {
        let to = work.path().join("restored").join(m);
        restore(&dest, m, None, &to);
        assert_same_tree(&spool.join(m), &to);
    }

    // A failure stops the wave with --stop-on-error: the mailbox after it is not started.
    let list = work.path().join("wave.tsv");
    let text = format!(
        "a\t{}\nb\t{}\nc\t{}\n",
        spool.join("user000").display(),
        work.path().join("gone").display(),
        spool.join("user001").display()
    );
    std::fs::write(&list, text).unwrap();
    let how = ["--list".as_ref(), list.as_os_str(), "--stop-on-error".as_ref()];
    let (lines, total) = migrate_many(&dest, &how, EXIT_FAILURE);
    let status: Vec<&str> = lines.iter().map(|l| l["status"].as_str().unwrap()).collect();
    assert_eq!(status, ["migrated", "failed"]);
    assert_eq!((total["mailboxes"].as_u64(), total["failed"].as_u64()), (Some(3), Some(1)));
    let ls = moverd_ok([OsStr::new("ls"), dest.as_os_str(), "--json".as_ref()], EXIT_OK);
    let listed: serde_json::Value = serde_json::from_str(&ls).unwrap();
    let listed: Vec<&str> = listed.as_array().unwrap().iter().map(|m| m["mailbox"].as_str().unwrap()).collect();
    assert_eq!(listed, ["a", "user000", "user001"], "c was not started");

    // Failures in a row stop the wave (the destination or the machine is likely at fault).
    let gone = |n: &str| work.path().join(n).display().to_string();
    let text =
        format!("d\t{}\ne\t{}\nf\t{}\ng\t{}\n", gone("x"), gone("y"), gone("z"), spool.join("user000").display());
    std::fs::write(&list, text).unwrap();
    let how = ["--list".as_ref(), list.as_os_str(), "--max-failures-in-a-row".as_ref(), "2".as_ref()];
    let (lines, total) = migrate_many(&dest, &how, EXIT_FAILURE);
    assert_eq!(lines.iter().map(|l| l["mailbox"].as_str().unwrap()).collect::<Vec<_>>(), ["d", "e"]);
    assert_eq!((total["stopped"].as_str(), total["not_started"].as_u64()), (Some("failures"), Some(2)));
    // 0: never; every failure is reported and the good mailbox at the end is migrated.
    let how = ["--list".as_ref(), list.as_os_str(), "--max-failures-in-a-row".as_ref(), "0".as_ref()];
    let (lines, total) = migrate_many(&dest, &how, EXIT_FAILURE);
    let status: Vec<&str> = lines.iter().map(|l| l["status"].as_str().unwrap()).collect();
    assert_eq!(status, ["failed", "failed", "failed", "migrated"]);
    assert_eq!(total["stopped"], serde_json::Value::Null);

    // A list with a mailbox twice is refused before anything is migrated.
    std::fs::write(&list, format!("a\t{}\na\t{}\n", spool.join("user000").display(), spool.join("user001").display()))
        .unwrap();
    let out = moverd([OsStr::new("migrate-many"), dest.as_os_str(), "--list".as_ref(), list.as_os_str()]);
    assert_eq!(out.status.code(), Some(EXIT_FAILURE));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("line 2") && stderr.contains("already on line 1"), "{stderr}");
}

#[test]
fn a_signal_stops_the_wave_after_the_mailbox_in_progress_and_the_same_command_goes_on() {
    use std::io::BufRead;
    let work = tempfile::tempdir().unwrap();
    let src = work.path().join("corpus");
    // Mailboxes large enough that the other five take a while after the first has been reported.
    moverd_ok(["gen-corpus", src.to_str().unwrap(), "--seed", "9", "--mailboxes", "6", "--messages", "500"], EXIT_OK);
    settle();
    let boxes = src.join("maildir");
    let dest = work.path().join("dest");
    let args = [OsStr::new("migrate-many"), dest.as_os_str(), "--each".as_ref(), boxes.as_os_str(), "--json".as_ref()];
    let mut child = spawn_piped(&args);
    let mut stdout = std::io::BufReader::new(child.stdout.take().unwrap());
    let mut first = String::new();
    stdout.read_line(&mut first).unwrap();
    // SIGTERM as soon as the first mailbox has ended: the second is in progress (or about to start).
    // SAFETY: kill(2) on our own child, which has not been waited for yet.
    #[allow(unsafe_code)]
    let killed = unsafe { libc::kill(child.id() as libc::pid_t, libc::SIGTERM) };
    assert_eq!(killed, 0);
    let mut rest = String::new();
    std::io::Read::read_to_string(&mut stdout, &mut rest).unwrap();
    let status = child.wait().unwrap();
    let mut stderr = String::new();
    std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut stderr).unwrap();
    assert_eq!(status.code(), Some(128 + 15), "{stderr}");
    assert!(stderr.contains("stopping after the mailbox in progress"), "{stderr}");
    let (lines, total) = json_lines(&(first + &rest));
    assert_eq!(total["stopped"], "signal");
    let done = lines.len();
    assert!((1..6).contains(&done), "{done} mailboxes ended before the stop");
    assert_eq!(total["not_started"].as_u64(), Some(6 - done as u64));
    assert!(lines.iter().all(|l| l["status"] == "migrated"), "{lines:#?}");
    // What ended is committed: it restores byte for byte.
    for l in &lines {
        let m = l["mailbox"].as_str().unwrap();
        let to = work.path().join("restored").join(m);
        restore(&dest, m, None, &to);
        assert_same_tree(&boxes.join(m), &to);
    }
    // The same command again: the mailboxes done are unchanged, the others migrated.
    let (again, total) = migrate_many(&dest, &["--each".as_ref(), boxes.as_os_str()], EXIT_OK);
    let status: Vec<&str> = again.iter().map(|l| l["status"].as_str().unwrap()).collect();
    let expected: Vec<&str> = (0..6).map(|i| if i < done { "unchanged" } else { "migrated" }).collect();
    assert_eq!(status, expected);
    assert_eq!(total["stopped"], serde_json::Value::Null);
    moverd_ok([OsStr::new("verify"), dest.as_os_str()], EXIT_OK);
}

#[test]
fn a_mailbox_id_that_another_source_already_took_is_refused_not_merged() {
    let work = tempfile::tempdir().unwrap();
    // Two domains with a user of the same name: --each names both "alice".
    let (org, net) = (work.path().join("vmail/example.org"), work.path().join("vmail/example.net"));
    for (domain, seed) in [(&org, 1u64), (&net, 2)] {
        for user in ["alice", "bob"] {
            let m = message(&[("Subject", &format!("{user}@{seed}"))], &text_noise(seed, 3000), "\n");
            write_file(&domain.join(user).join("cur/1.host:2,S"), &m, 1_600_000_000);
        }
    }
    settle();
    let dest = work.path().join("dest");
    let each = |domain: &Path| [OsStr::new("--each").to_os_string(), domain.join("*").into_os_string()];
    let (lines, _) = migrate_many(&dest, &each(&org).iter().map(|a| a.as_os_str()).collect::<Vec<_>>(), EXIT_OK);
    assert_eq!(lines.len(), 2);
    // The second domain into the same destination: every mailbox fails before reading, naming both sources.
    let (lines, total) =
        migrate_many(&dest, &each(&net).iter().map(|a| a.as_os_str()).collect::<Vec<_>>(), EXIT_FAILURE);
    assert_eq!(total["failed"], 2, "{lines:#?}");
    let error = lines[0]["error"].as_str().unwrap();
    assert!(
        error.contains("example.org") && error.contains("example.net") && error.contains("--source-moved"),
        "{error}"
    );
    // Nothing of example.net went into example.org's mailboxes: they restore as example.org's.
    for user in ["alice", "bob"] {
        let to = work.path().join("restored").join(user);
        restore(&dest, user, None, &to);
        assert_same_tree(&org.join(user), &to);
    }
    // The same through `migrate`; and allowed when the store really moved.
    let out = moverd([OsStr::new("migrate"), net.join("alice").as_os_str(), dest.as_os_str()]);
    assert_eq!(out.status.code(), Some(EXIT_FAILURE));
    let moved = work.path().join("moved-alice");
    std::fs::rename(org.join("alice"), &moved).unwrap();
    let args = [OsStr::new("migrate"), moved.as_os_str(), dest.as_os_str(), "--mailbox".as_ref(), "alice".as_ref()];
    assert_eq!(moverd(args).status.code(), Some(EXIT_FAILURE));
    let out = moverd_ok([&args[..], &["--source-moved".as_ref(), "--json".as_ref()]].concat(), EXIT_OK);
    let s: serde_json::Value = serde_json::from_str(&out).unwrap();
    // A new pass records where the mailbox is now (nothing stored but the manifest), and the next needs no flag.
    assert_eq!(
        (s["committed"].as_bool(), s["pass"].as_u64(), s["nothing_new"].as_bool()),
        (Some(true), Some(2), Some(true))
    );
    assert!(s["source"].as_str().unwrap().ends_with("moved-alice"), "{s:#}");
    let out = moverd_ok([&args[..], &["--json".as_ref()]].concat(), EXIT_OK);
    let s: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!((s["committed"].as_bool(), s["pass"].as_u64()), (Some(false), Some(2)));
    let to = work.path().join("restored-moved");
    restore(&dest, "alice", None, &to);
    assert_same_tree(&moved, &to);
}

#[test]
fn a_list_on_stdin_and_a_reader_that_goes_away() {
    use std::io::{BufRead, Write};
    let work = tempfile::tempdir().unwrap();
    let src = work.path().join("corpus");
    moverd_ok(["gen-corpus", src.to_str().unwrap(), "--seed", "4", "--mailboxes", "4", "--messages", "300"], EXIT_OK);
    settle();
    let boxes = src.join("maildir");
    let dest = work.path().join("dest");
    let list: String = (0..4).map(|i| format!("m{i}\t{}\n", boxes.join(format!("user00{i}")).display())).collect();
    let args = [OsStr::new("migrate-many"), dest.as_os_str(), "--list".as_ref(), "-".as_ref(), "--json".as_ref()];
    let mut child = spawn_piped(&args);
    child.stdin.take().unwrap().write_all(list.as_bytes()).unwrap();
    // Read the first mailbox's line, then close the pipe: the wave stops after the mailbox it cannot report.
    let mut first = String::new();
    std::io::BufReader::new(child.stdout.take().unwrap()).read_line(&mut first).unwrap();
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(141), "{stderr}");
    assert!(stderr.contains("stdout was closed"), "{stderr}");
    let first: serde_json::Value = serde_json::from_str(&first).unwrap();
    assert_eq!((first["mailbox"].as_str(), first["status"].as_str()), (Some("m0"), Some("migrated")));
    // What ended is committed and whole; the rest goes on with the same command.
    let ls: serde_json::Value =
        serde_json::from_str(&moverd_ok([OsStr::new("ls"), dest.as_os_str(), "--json".as_ref()], EXIT_OK)).unwrap();
    let done = ls.as_array().unwrap().len();
    assert!((1..4).contains(&done), "{done} mailboxes committed");
    let list_file = work.path().join("wave.tsv");
    std::fs::write(&list_file, &list).unwrap();
    let (lines, _) = migrate_many(&dest, &["--list".as_ref(), list_file.as_os_str()], EXIT_OK);
    let status: Vec<&str> = lines.iter().map(|l| l["status"].as_str().unwrap()).collect();
    let expected: Vec<&str> = (0..4).map(|i| if i < done { "unchanged" } else { "migrated" }).collect();
    assert_eq!(status, expected);
    for i in 0..4 {
        let to = work.path().join("restored").join(i.to_string());
        restore(&dest, &format!("m{i}"), None, &to);
        assert_same_tree(&boxes.join(format!("user00{i}")), &to);
    }
}
