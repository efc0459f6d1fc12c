//! Every kind of source comes back byte for byte: migrate → verify → restore through the binary, then the restored
//! tree is compared with the source (paths, bytes, modification times, modes, empty directories, links).

use std::path::{Path, PathBuf};

use crate::common::*;

fn lf(headers: &[(&str, &str)], body: &str) -> Vec<u8> {
    message(headers, body.as_bytes(), "\n")
}

/// A Maildir++ root with every oddity the issue names.
pub fn maildir_fixture(root: &Path) {
    let plain = lf(&[("From", "a@example.org"), ("Subject", "hello")], "Hello there.\n");
    let crlf = message(&[("From", "b@example.org"), ("Subject", "crlf")], b"Line one\r\nLine two\r\n", "\r\n");
    let mixed = b"From: c@example.org\r\nSubject: mixed\n\r\nbody with\r\nmixed\nendings\r".to_vec();
    let no_blank = b"From: d@example.org\nSubject: no body and no blank line".to_vec();
    let binary = b"From: e@example.org\nSubject: caf\xe9 \xff\n\nNUL\x00byte and 8-bit \xe4\xf6\xfc\n".to_vec();
    let files: Vec<(&[u8], Vec<u8>, u32)> = vec![
        (b"cur/1639054935.U6009.host:2,S", plain.clone(), 0o600),
        (b"cur/1639054936.M1P2.host,S=1234,W=1260:2,RS", crlf.clone(), 0o640),
        (b"cur/1220863087.12663_15.mindcrime!2,PS", mixed, 0o600),
        (b"new/1234567890.M20046P2137.mailserver,S=4542,W=4642;2,Sb", no_blank, 0o600),
        (b"new/1276528487.M364837P9451.kurkku", binary, 0o600),
        (b"new/1300000000.x\xff\xfe:2,", plain.clone(), 0o600),
        (b"tmp/1700000000.inflight.host", lf(&[("Subject", "being delivered")], "x\n"), 0o600),
        (b"dovecot-uidlist", b"3 V1639054935 N3 G0123\n1 1639054935.U6009.host\n".to_vec(), 0o600),
        (b"dovecot-keywords", b"0 $Forwarded\n1 Junk\n".to_vec(), 0o600),
        (b"subscriptions", b"Sent\nMy Folder\n".to_vec(), 0o644),
        (b"courierimapuiddb", b"1 100 7\n".to_vec(), 0o600),
        (b".Sent/cur/1639054999.U1.host:2,S", plain.clone(), 0o600),
        (b".My Folder.Nested Folder/cur/1276533073.M242911P3632.kurkku;2,FP", crlf, 0o600),
        ("._Ünïcödé/cur/1.2.host:2,".as_bytes(), plain.clone(), 0o600),
        (b".dots.in.name/new/17.x.y", plain, 0o600),
    ];
    for (i, (rel, data, mode)) in files.iter().enumerate() {
        let p = bytes_path(root, rel);
        write_file(&p, data, 1_600_000_000 + i as u64 * 3_600);
        chmod(&p, *mode);
    }
    for dir in [
        "tmp",
        ".Sent/new",
        ".Sent/tmp",
        ".My Folder.Nested Folder/new",
        ".My Folder.Nested Folder/tmp",
        "._Ünïcödé/new",
        ".dots.in.name/cur",
    ] {
        std::fs::create_dir_all(root.join(dir)).unwrap();
    }
    std::fs::create_dir_all(root.join("empty-dir")).unwrap();
    chmod(&root.join("empty-dir"), 0o700);
    std::os::unix::fs::symlink("cur", root.join("link-to-cur")).unwrap();
    chmod(root, 0o700);
}

#[test]
fn maildir_plus_plus_round_trip() {
    let work = tempfile::tempdir().unwrap();
    let src = work.path().join("alice");
    maildir_fixture(&src);
    let s = round_trip(&src, work.path(), "alice", EXIT_OK);
    assert_eq!(s["messages"], 11, "{s:#}");
    assert_eq!(s["files"], 15);
    assert_eq!(s["quarantined"], 0);

    // Flags are parsed into the manifest while names stay verbatim.
    let rt = tokio::runtime::Runtime::new().unwrap();
    let store = mover_core::store::open_destination(work.path().join("dest").to_str().unwrap()).unwrap();
    let manifest = rt.block_on(mover_core::pipeline::load_manifest(&store, "alice", None)).unwrap();
    let mut flags = std::collections::BTreeMap::new();
    for rec in manifest.records().unwrap() {
        if let (mover_core::manifest::Record::File { path, maildir: Some(info), .. }, _) = rec.unwrap() {
            flags.insert(path.display(), (info.flags, info.sep, info.size));
        }
    }
    assert_eq!(flags["cur/1220863087.12663_15.mindcrime!2,PS"], ("PS".to_string(), Some('!'), None));
    assert_eq!(flags["cur/1639054936.M1P2.host,S=1234,W=1260:2,RS"], ("RS".to_string(), Some(':'), Some(1234)));
    assert_eq!(
        flags["new/1234567890.M20046P2137.mailserver,S=4542,W=4642;2,Sb"],
        ("Sb".to_string(), Some(';'), Some(4542))
    );
    assert_eq!(flags["new/1276528487.M364837P9451.kurkku"].0, "");
    assert_eq!(flags.len(), 11, "every message file, and only those, carries Maildir info");
}

#[test]
fn tree_of_maildirs_round_trip() {
    let work = tempfile::tempdir().unwrap();
    let src = work.path().join("fs-layout");
    let m = lf(&[("Subject", "x")], "body\n");
    write_file(&src.join("INBOX/cur/1.a:2,S"), &m, 1_500_000_000);
    write_file(&src.join("INBOX/new/2.b"), &m, 1_500_000_001);
    write_file(&src.join("Archive/2019/cur/3.c:2,RS"), &m, 1_500_000_002);
    write_file(&src.join("Archive/2019/Sub Folder/cur/4.d:2,"), &m, 1_500_000_003);
    std::fs::create_dir_all(src.join("Archive/2019/tmp")).unwrap();
    write_file(&src.join("Archive/notes.txt"), b"not mail", 1_500_000_004);
    let s = round_trip(&src, work.path(), "tree", EXIT_OK);
    assert_eq!(s["messages"], 4);
    assert_eq!(s["files"], 5);
}

const MBOXO: &[u8] = b"From alice@example.org Mon Apr 18 14:23:23 2022\n\
Subject: first\n\
Status: RO\n\
\n\
Hello.\n\
>From the escaped line (mboxo)\n\
\n\
From MAILER-DAEMON Mon Apr 18 14:23:24 2022\n\
Subject: second\n\
\n\
>>From doubly quoted (mboxrd)\n\
From Russia with love, an unescaped body line\n\
\n\
From bob@example.org Tue Apr 19 09:00:00 2022\n\
Subject: third, no trailing newline\n\
\n\
last";

#[test]
fn mbox_file_round_trip() {
    let work = tempfile::tempdir().unwrap();
    let src = work.path().join("inbox.mbox");
    write_file(&src, MBOXO, 1_650_000_000);
    let s = round_trip(&src, work.path(), "mbox", EXIT_OK);
    assert_eq!(s["messages"], 3, "{s:#}");
    assert_eq!(s["files"], 1);
}

#[test]
fn mbox_variants_round_trip() {
    let work = tempfile::tempdir().unwrap();
    let dir = work.path().join("mail");
    // Content-Length delimited, with an unescaped From_ line with a date inside the body.
    let body = "para\n\nFrom someone Sat Jan  1 00:00:00 2000 inside the body\nend\n";
    let cl = format!(
        "From - Sat Jan  1 00:00:00 2000\nContent-Length: {}\nSubject: cl\n\n{body}\nFrom - Sun Jan  2 00:00:00 2000\nContent-Length: 2\n\nok\n",
        body.len()
    );
    write_file(&dir.join("content-length"), cl.as_bytes(), 1_000_000_000);
    // CRLF throughout.
    let crlf = b"From a@b Mon Apr 18 14:23:23 2022\r\nSubject: crlf\r\n\r\nbody\r\n\r\nFrom a@b Mon Apr 18 14:23:24 2022\r\nSubject: 2\r\n\r\nx\r\n";
    write_file(&dir.join("crlf"), crlf, 1_000_000_001);
    // Mixed line endings and a byte-order mark before the first From_ line.
    let bom = b"\xEF\xBB\xBFFrom - \nSubject: bom\r\n\nbody\r\n\nFrom - \r\nSubject: 2\n\r\nx";
    write_file(&dir.join("bom-mixed"), bom, 1_000_000_002);
    write_file(&dir.join("lists/rust-users"), MBOXO, 1_000_000_003);
    write_file(&dir.join("empty-folder"), b"", 1_000_000_004);
    write_file(&dir.join(".subscriptions"), b"lists/rust-users\n", 1_000_000_005);
    let s = round_trip(&dir, work.path(), "mboxdir", EXIT_OK);
    assert_eq!(s["messages"], 2 + 2 + 2 + 3, "{s:#}");
    assert_eq!(s["quarantined"], 0, "a BOM is not garbage: {s:#}");
}

#[test]
fn large_mbox_streamed_and_mapped_round_trip() {
    // Files above the in-memory threshold go through the memory map (quiet files) or the buffered stream (files
    // modified moments ago): both must split identically and restore byte for byte.
    let work = tempfile::tempdir().unwrap();
    let mut mbox = Vec::new();
    for i in 0..400u64 {
        mbox.extend_from_slice(format!("From user{i}@example.org Mon Apr 18 14:23:23 2022\n").as_bytes());
        mbox.extend_from_slice(&message(
            &[("Subject", &format!("msg {i}"))],
            &text_noise(i % 50, 20_000 + (i as usize * 7919) % 60_000),
            "\n",
        ));
        mbox.extend_from_slice(b"\n\n");
    }
    assert!(mbox.len() > 9 << 20, "above the 8 MiB whole-read threshold");
    let quiet = work.path().join("quiet/big.mbox");
    write_file(&quiet, &mbox, 1_600_000_000); // old mtime: mapped
    let fresh = work.path().join("fresh/big.mbox");
    std::fs::create_dir_all(fresh.parent().unwrap()).unwrap();
    std::fs::write(&fresh, &mbox).unwrap(); // just written: streamed
    for (name, src) in [("quiet", &quiet), ("fresh", &fresh)] {
        let w = work.path().join(format!("w-{name}"));
        let s = round_trip(src, &w, name, EXIT_OK);
        assert_eq!(s["messages"], 400, "{name}: {s:#}");
    }
    // Same bodies in both: the second mailbox in one destination stores almost nothing new.
    let dest = work.path().join("shared-dest");
    let a = migrate_json(&quiet, &dest, "a", EXIT_OK);
    let b = migrate_json(&fresh, &dest, "b", EXIT_OK);
    assert!(a["new_stored_bytes"].as_u64().unwrap() > 1 << 20);
    assert!(b["new_stored_bytes"].as_u64().unwrap() < 64 << 10, "{b:#}");
}

#[test]
fn opaque_large_file_round_trip() {
    // A non-mail file larger than a blob is cut into several blobs and comes back whole.
    let work = tempfile::tempdir().unwrap();
    let src = work.path().join("store");
    write_file(&src.join("index.cache"), &noise(7, (17 << 20) + 12345), 1_400_000_000);
    write_file(&src.join("cur/1.x:2,S"), &lf(&[("Subject", "s")], "b\n"), 1_400_000_001);
    std::fs::create_dir_all(src.join("new")).unwrap();
    let s = round_trip(&src, work.path(), "big", EXIT_OK);
    assert_eq!(s["messages"], 1);
}

#[test]
fn tiny_segments_and_packs_round_trip() {
    // Segments of 4 KiB and packs of 64 KiB: every pack is sealed while segments of several kinds are open or still
    // being compressed, large blobs stand alone, and blobs deduplicate against segments of earlier packs. A
    // generated corpus (Maildir++ and mbox, attachments re-sent re-wrapped, shared deliveries) restores exactly.
    let work = tempfile::tempdir().unwrap();
    let src = work.path().join("corpus");
    let gen_args = ["gen-corpus", src.to_str().unwrap(), "--seed", "7", "--mailboxes", "2", "--messages", "60"];
    moverd_ok(gen_args.iter().copied().chain(["--format", "both", "--max-message", "600K"]), EXIT_OK);
    let dest = work.path().join("dest");
    let out = moverd_ok(
        [
            "migrate",
            src.to_str().unwrap(),
            dest.to_str().unwrap(),
            "--mailbox",
            "tiny",
            "--json",
            "--segment-size",
            "4K",
            "--pack-size",
            "64K",
        ],
        EXIT_OK,
    );
    let s: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert!(s["stats"]["packs"].as_u64().unwrap() > 10, "many packs: {s:#}");
    assert!(s["stats"]["deduplicated_blobs"].as_u64().unwrap() > 0, "{s:#}");
    moverd_ok(["verify", dest.to_str().unwrap(), "--mailbox", "tiny"], EXIT_OK);
    let to = work.path().join("restored");
    moverd_ok(["restore", dest.to_str().unwrap(), "--mailbox", "tiny", "--to", to.to_str().unwrap()], EXIT_OK);
    assert_same_tree(&src, &to);
}

#[test]
fn dictionaries_are_opt_in_and_mix_with_plain_frames() {
    // Without --dictionaries nothing is trained; with it, the first such migration trains and stores them and its
    // segments need them to decode; a later plain migration into the same destination mixes frames of both kinds.
    let work = tempfile::tempdir().unwrap();
    let src = work.path().join("corpus");
    let gen_args = ["gen-corpus", src.to_str().unwrap(), "--seed", "11", "--mailboxes", "3", "--messages", "150"];
    moverd_ok(gen_args, EXIT_OK);
    let mut boxes: Vec<PathBuf> = std::fs::read_dir(src.join("maildir")).unwrap().map(|e| e.unwrap().path()).collect();
    boxes.sort();
    assert_eq!(boxes.len(), 3);
    let dest = work.path().join("dest");
    let d = dest.to_str().unwrap();
    let migrate = |dir: &Path, mailbox: &str, extra: &[&str]| {
        let mut args = vec!["migrate", dir.to_str().unwrap(), d, "--mailbox", mailbox, "--quiet"];
        args.extend_from_slice(extra);
        moverd_ok(args, EXIT_OK);
    };
    migrate(&boxes[0], "plain0", &[]);
    assert!(!dest.join("dicts").exists() || std::fs::read_dir(dest.join("dicts")).unwrap().next().is_none());
    migrate(&boxes[1], "dict", &["--dictionaries"]);
    let dicts: Vec<PathBuf> = std::fs::read_dir(dest.join("dicts")).unwrap().map(|e| e.unwrap().path()).collect();
    assert_eq!(dicts.len(), 2, "a header and a body dictionary: {dicts:?}");
    // A plain migration after the dictionaries exist: plain frames, and blobs shared with the others deduplicate.
    migrate(&boxes[2], "plain2", &[]);
    for (mailbox, dir) in [("plain0", &boxes[0]), ("dict", &boxes[1]), ("plain2", &boxes[2])] {
        moverd_ok(["verify", d, "--mailbox", mailbox], EXIT_OK);
        let to = work.path().join(format!("restored-{mailbox}"));
        moverd_ok(["restore", d, "--mailbox", mailbox, "--to", to.to_str().unwrap()], EXIT_OK);
        assert_same_tree(dir, &to);
    }
    // The dictionary mailbox's segments really were compressed with them: without the dictionaries it cannot be
    // read, while the plain mailboxes still can.
    let aside = work.path().join("dicts-aside");
    std::fs::rename(dest.join("dicts"), &aside).unwrap();
    let out = moverd(["verify", d, "--mailbox", "dict"]);
    assert_ne!(out.status.code(), Some(EXIT_OK), "verify without the dictionaries: {out:?}");
    moverd_ok(["verify", d, "--mailbox", "plain0"], EXIT_OK);
}
