//! Re-runs: nothing new is stored for an unchanged source; additions and changes are picked up; the latest pass
//! restores the source as it is now, and earlier passes stay restorable.

use std::os::unix::fs::MetadataExt;

use crate::common::*;

#[test]
fn rerun_stores_nothing_then_picks_up_changes() {
    let work = tempfile::tempdir().unwrap();
    let src = work.path().join("carol");
    crate::roundtrip::maildir_fixture(&src);
    let mbox = src.join("Old Mail.mbox");
    write_file(&mbox, b"From a@b Mon Apr 18 14:23:23 2022\nSubject: 1\n\nx\n", 1_600_000_000);
    settle();
    let dest = work.path().join("dest");
    let first = migrate_json(&src, &dest, "carol", EXIT_OK);
    assert_eq!(first["pass"], 1);

    let again = migrate_json(&src, &dest, "carol", EXIT_OK);
    assert_eq!(again["nothing_new"], true, "{again:#}");
    assert_eq!(again["new_stored_bytes"], 0, "an unchanged source stores nothing: {again:#}");
    assert_eq!(again["stats"]["unchanged_files"], again["files"], "nothing is re-read: {again:#}");
    assert_eq!(again["stats"]["read_bytes"], 0);
    assert_eq!(again["pass"], 1, "no new pass for an identical mailbox");
    // Nothing to read, so the destination's dedupe index is not loaded: the format marker and the previous
    // manifest are the only objects read, however large the destination is.
    assert_eq!(again["requests"]["get_requests"], 2, "{:#}", again["requests"]);
    assert_eq!(again["requests"]["list_requests"], 1, "{:#}", again["requests"]);
    let human = moverd_ok(["migrate", src.to_str().unwrap(), dest.to_str().unwrap(), "--mailbox", "carol"], EXIT_OK);
    assert!(human.contains("nothing new to store"), "{human}");

    // A new message, a message renamed by a flag change, and an appended mbox message.
    write_file(
        &src.join("new/1800000000.new.host"),
        &message(&[("Subject", "new one")], b"fresh\n", "\n"),
        1_800_000_000,
    );
    std::fs::rename(src.join("cur/1639054935.U6009.host:2,S"), src.join("cur/1639054935.U6009.host:2,RS")).unwrap();
    let mut data = std::fs::read(&mbox).unwrap();
    data.extend_from_slice(b"\nFrom a@b Tue Apr 19 14:23:23 2022\nSubject: 2\n\ny\n");
    write_file(&mbox, &data, 1_600_000_100);
    let third = migrate_json(&src, &dest, "carol", EXIT_OK);
    assert_eq!(third["pass"], 2, "{third:#}");
    assert_eq!(third["messages"], first["messages"].as_u64().unwrap() + 2);
    assert!(third["stats"]["unchanged_files"].as_u64().unwrap() >= 12, "{third:#}");
    assert!(third["stats"]["new_blobs"].as_u64().unwrap() <= 4, "only the new header and bodies are new: {third:#}");

    let to = work.path().join("restored");
    moverd_ok(["verify", dest.to_str().unwrap()], EXIT_OK);
    restore(&dest, "carol", None, &to);
    assert_same_tree(&src, &to);
    // Pass 1 is still there and still complete.
    let to1 = work.path().join("restored-pass1");
    restore(&dest, "carol", Some(1), &to1);
    assert!(to1.join("cur/1639054935.U6009.host:2,S").exists());
    assert!(!to1.join("new/1800000000.new.host").exists());
}

/// A delta pass of a mailbox whose manifest is large compares its carried records with the previous pass's instead
/// of compressing them (`ManifestWriter::against`); when a file near the end of the walk changes, the records
/// compared so far are written out after all, in front of the changed ones. Both passes restore byte for byte.
#[test]
fn a_large_mailbox_changed_at_its_end_keeps_every_record() {
    let work = tempfile::tempdir().unwrap();
    let src = work.path().join("dave");
    // 20,000 small messages with distinct bodies: about 6 MiB of records, well past the size from which a delta pass
    // compares them a block at a time from the start.
    let mut big = Vec::new();
    for i in 0..20_000u32 {
        let body =
            format!("body {i}: {}\n", format!("{:x}", u64::from(i).wrapping_mul(0x9e37_79b9_7f4a_7c15)).repeat(16));
        big.extend_from_slice(format!("From a@b Mon Apr 18 14:23:23 2022\nSubject: {i}\n\n{body}\n").as_bytes());
    }
    write_file(&src.join("a-archive.mbox"), &big, 1_600_000_000);
    let small = src.join("z-inbox.mbox");
    let small_before = b"From a@b Mon Apr 18 14:23:23 2022\nSubject: last\n\nx\n";
    write_file(&small, small_before, 1_600_000_000);
    settle();
    let dest = work.path().join("dest");
    let first = migrate_json(&src, &dest, "dave", EXIT_OK);
    assert_eq!(first["messages"], 20_001);
    let manifest = dest.join("mailboxes/dave/pass-00000001.manifest");
    let size = std::fs::metadata(&manifest).unwrap().len();
    assert!(size > 600 << 10, "a manifest large enough to be compared eagerly: {size} bytes");

    let again = migrate_json(&src, &dest, "dave", EXIT_OK);
    assert_eq!(again["nothing_new"], true, "{again:#}");
    assert_eq!(again["pass"], 1);

    // The last file in walk order changes: every record before it was the same as before.
    let mut data = std::fs::read(&small).unwrap();
    data.extend_from_slice(b"\nFrom a@b Tue Apr 19 14:23:23 2022\nSubject: later\n\ny\n");
    write_file(&small, &data, 1_600_000_100);
    let second = migrate_json(&src, &dest, "dave", EXIT_OK);
    assert_eq!(second["pass"], 2, "{second:#}");
    assert_eq!(second["messages"], 20_002);
    assert_eq!(second["stats"]["unchanged_files"], 1, "{second:#}");

    moverd_ok(["verify", dest.to_str().unwrap()], EXIT_OK);
    let to = work.path().join("restored");
    restore(&dest, "dave", None, &to);
    assert_same_tree(&src, &to);
    let to1 = work.path().join("restored-pass1");
    restore(&dest, "dave", Some(1), &to1);
    assert_eq!(std::fs::read(to1.join("a-archive.mbox")).unwrap(), big);
    assert_eq!(std::fs::read(to1.join("z-inbox.mbox")).unwrap(), small_before);
}

/// Files whose names the manifest has to escape (quotes, backslashes, control characters) or cannot write as text
/// (not UTF-8) are carried over by a no-change pass like any other (the re-run reads plainly written file records
/// without serde and hands the others to it), and a change to one of them is still seen.
#[test]
fn files_with_names_that_need_escaping_are_carried_over_and_changes_to_them_seen() {
    let work = tempfile::tempdir().unwrap();
    let src = work.path().join("quinn");
    let names: [&[u8]; 5] = [
        b"cur/1.a\"quoted\":2,S",
        b"cur/2.back\\slash:2,S",
        b"cur/3.tab\there:2,S",
        b"cur/4.\xff\xfe:2,S",
        b"cur/5.plain:2,S",
    ];
    for (i, name) in names.iter().enumerate() {
        let m = message(&[("Subject", &format!("{i}")[..])], format!("body {i}\n").as_bytes(), "\n");
        write_file(&bytes_path(&src, name), &m, 1_600_000_000 + i as u64);
    }
    std::fs::create_dir_all(src.join("new")).unwrap();
    settle();
    let dest = work.path().join("dest");
    let first = migrate_json(&src, &dest, "quinn", EXIT_OK);
    assert_eq!(first["messages"], 5, "{first:#}");
    let again = migrate_json(&src, &dest, "quinn", EXIT_OK);
    assert_eq!(again["nothing_new"], true, "{again:#}");
    assert_eq!(again["stats"]["unchanged_files"], again["files"], "{again:#}");
    assert_eq!(again["stats"]["read_bytes"], 0, "{again:#}");
    // A name with a quote, one with a backslash and one not UTF-8, changed in turn: that file alone is read again.
    for name in [names[0], names[1], names[3]] {
        let path = bytes_path(&src, name);
        let mut m = std::fs::read(&path).unwrap();
        m.extend_from_slice(b"changed\n");
        write_file(&path, &m, 1_700_000_000);
        settle(); // so that the next round carries this file over again
        let s = migrate_json(&src, &dest, "quinn", EXIT_OK);
        assert_eq!(s["stats"]["unchanged_files"], 4, "{}: {s:#}", String::from_utf8_lossy(name));
        assert_eq!(s["nothing_new"], false, "{s:#}");
    }
    let to = work.path().join("restored");
    restore(&dest, "quinn", None, &to);
    assert_same_tree(&src, &to);
}

/// What a delta pass compares besides size and mtime. A `chmod` alone, and a rewrite of the same size whose mtime
/// was put back (an MUA rewriting a Status: line in place, `touch -r`, `cp -p` of another copy), leave both as they
/// were; the file's ctime moves, and the next pass reads the file again and records its new mode or bytes. Restore
/// of the latest pass gives the source as it is now.
#[test]
fn a_chmod_or_a_rewrite_that_kept_size_and_mtime_is_seen_by_the_next_pass() {
    let work = tempfile::tempdir().unwrap();
    let src = work.path().join("erin");
    let maildir_msg = src.join("cur/1600000000.M1.host:2,S");
    write_file(&maildir_msg, &message(&[("Subject", "perm")], b"body\n", "\n"), 1_600_000_000);
    chmod(&maildir_msg, 0o600);
    let mbox = src.join("Inbox.mbox");
    let before = b"From a@b Mon Apr 18 14:23:23 2022\nSubject: 1\nStatus: O\n\nx\n";
    write_file(&mbox, before, 1_600_000_000);
    std::fs::create_dir_all(src.join("new")).unwrap();
    std::fs::create_dir_all(src.join("tmp")).unwrap();
    settle();
    let dest = work.path().join("dest");
    let first = migrate_json(&src, &dest, "erin", EXIT_OK);
    assert_eq!(first["pass"], 1);

    // Permission bits only: same size, same mtime.
    chmod(&maildir_msg, 0o640);
    let second = migrate_json(&src, &dest, "erin", EXIT_OK);
    assert_eq!(second["pass"], 2, "a chmod is a change: {second:#}");
    assert_eq!(second["stats"]["unchanged_files"], 1, "the mbox is carried, the message read again: {second:#}");
    assert!(second["new_stored_bytes"].as_u64().unwrap() > 0, "a new manifest: {second:#}");

    // The mbox rewritten in place with a flag of the same length, its mtime put back.
    let after = b"From a@b Mon Apr 18 14:23:23 2022\nSubject: 1\nStatus: R\n\nx\n";
    assert_eq!(before.len(), after.len());
    write_file(&mbox, after, 1_600_000_000);
    let third = migrate_json(&src, &dest, "erin", EXIT_OK);
    assert_eq!(third["pass"], 3, "a rewrite that kept size and mtime is a change: {third:#}");

    let to = work.path().join("restored");
    restore(&dest, "erin", None, &to);
    assert_same_tree(&src, &to);
    assert_eq!(std::fs::read(to.join("Inbox.mbox")).unwrap(), after);
    let to2 = work.path().join("restored-pass2");
    restore(&dest, "erin", Some(2), &to2);
    assert_eq!(std::fs::read(to2.join("Inbox.mbox")).unwrap(), before);
    assert_eq!(std::fs::metadata(to2.join("cur/1600000000.M1.host:2,S")).unwrap().mode() & 0o7777, 0o640);
}

/// A file changed at about the time a pass started may have been changed again within the same tick of the clock
/// that stamps files, right after the pass read it, leaving its stamps as the pass saw them. The next pass reads
/// such a file again rather than trusting its stamps, and is committed even when it finds nothing different, so
/// that the passes after it, which start well after the change, carry the file over unread.
#[test]
fn a_file_changed_as_the_previous_pass_started_is_read_again() {
    let work = tempfile::tempdir().unwrap();
    let src = work.path().join("frank");
    crate::roundtrip::maildir_fixture(&src);
    settle();
    let dest = work.path().join("dest");
    let first = migrate_json(&src, &dest, "frank", EXIT_OK);
    let files = first["files"].as_u64().unwrap();
    // Delivered just before the second pass starts.
    let late = message(&[("Subject", "late")], b"late\n", "\n");
    write_file(&src.join("new/1800000000.late.host"), &late, 1_800_000_000);
    let second = migrate_json(&src, &dest, "frank", EXIT_OK);
    assert_eq!(second["pass"], 2, "{second:#}");
    assert_eq!(second["stats"]["unchanged_files"], files, "the settled files are carried: {second:#}");
    // Nothing changed since, but the new file was stamped within the margin before pass 2 started: read again,
    // and the pass committed although its records are the same.
    let third = migrate_json(&src, &dest, "frank", EXIT_OK);
    assert_eq!((third["pass"].as_u64(), third["nothing_new"].as_bool()), (Some(3), Some(true)), "{third:#}");
    assert_eq!(third["stats"]["racy_files"], 1, "{third:#}");
    assert_eq!(third["stats"]["unchanged_files"], files, "{third:#}");
    assert_eq!(third["stats"]["read_bytes"], late.len(), "{third:#}");
    // Once a pass has started well after the change, every file is carried and nothing is committed.
    settle();
    migrate_json(&src, &dest, "frank", EXIT_OK);
    let last = migrate_json(&src, &dest, "frank", EXIT_OK);
    assert_eq!(last["committed"], false, "{last:#}");
    assert_eq!(last["stats"]["racy_files"], 0, "{last:#}");
    assert_eq!(last["stats"]["unchanged_files"], files + 1, "every file is carried: {last:#}");
    assert_eq!(last["stats"]["read_bytes"], 0, "{last:#}");
    let to = work.path().join("restored");
    restore(&dest, "frank", None, &to);
    assert_same_tree(&src, &to);
}

/// An mbox with bytes before its first From_ line is stored with a note (quarantined, stored anyway). The note
/// follows the file's records in the manifest and is carried over with them: an unchanged re-run finds nothing
/// new, makes no new pass, and reports the note again.
#[test]
fn a_note_on_a_stored_file_is_carried_with_it() {
    let work = tempfile::tempdir().unwrap();
    let src = work.path().join("gina");
    write_file(
        &src.join("box.mbox"),
        b"stray line\n\nFrom a@b Mon Apr 18 14:23:23 2022\nSubject: 1\n\nx\n",
        1_600_000_000,
    );
    write_file(&src.join("zz.mbox"), b"From a@b Mon Apr 18 14:23:23 2022\nSubject: 2\n\ny\n", 1_600_000_000);
    settle();
    let dest = work.path().join("dest");
    let first = migrate_json(&src, &dest, "gina", EXIT_QUARANTINED);
    assert_eq!(first["quarantined"], 1, "{first:#}");
    let again = migrate_json(&src, &dest, "gina", EXIT_QUARANTINED);
    assert_eq!(again["pass"], 1, "no new pass for an unchanged mailbox: {again:#}");
    assert_eq!(again["nothing_new"], true, "{again:#}");
    assert_eq!(again["stats"]["unchanged_files"], 2, "{again:#}");
    assert_eq!(again["quarantined"], 1, "the note is reported again: {again:#}");
    assert_eq!(again["quarantine"], first["quarantine"], "{again:#}");
    let to = work.path().join("restored");
    restore(&dest, "gina", None, &to);
    assert_same_tree(&src, &to);
}
