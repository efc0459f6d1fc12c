//! Re-runs: nothing new is stored for an unchanged source; additions and changes are picked up; the latest pass
//! restores the source as it is now, and earlier passes stay restorable.

use crate::common::*;

#[test]
fn rerun_stores_nothing_then_picks_up_changes() {
    let work = tempfile::tempdir().unwrap();
    let src = work.path().join("carol");
    crate::roundtrip::maildir_fixture(&src);
    let mbox = src.join("Old Mail.mbox");
    write_file(&mbox, b"From a@b Mon Apr 18 14:23:23 2022\nSubject: 1\n\nx\n", 1_600_000_000);
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
        let s = migrate_json(&src, &dest, "quinn", EXIT_OK);
        assert_eq!(s["stats"]["unchanged_files"], 4, "{}: {s:#}", String::from_utf8_lossy(name));
        assert_eq!(s["nothing_new"], false, "{s:#}");
    }
    let to = work.path().join("restored");
    restore(&dest, "quinn", None, &to);
    assert_same_tree(&src, &to);
}
