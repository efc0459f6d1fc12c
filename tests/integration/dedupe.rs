//! The same body under different headers is stored once per destination.

use std::path::{Path, PathBuf};

use crate::common::*;

/// Two mailboxes receive the same 40 messages (incompressible bodies, so compression cannot hide the effect), each
/// copy with its own headers; the second mailbox also files some of them twice.
#[test]
fn shared_bodies_are_stored_once() {
    let work = tempfile::tempdir().unwrap();
    let bodies: Vec<Vec<u8>> = (0..40).map(|i| noise(1000 + i, 30_000)).collect();
    let body_bytes: u64 = bodies.iter().map(|b| b.len() as u64).sum();
    for (mbx, folders) in [("alice", vec!["cur"]), ("bob", vec!["cur", ".Archive/cur"])] {
        for folder in &folders {
            for (i, body) in bodies.iter().enumerate() {
                let headers = [
                    ("Delivered-To", &format!("{mbx}@example.org")[..]),
                    ("X-Folder", folder),
                    ("Message-ID", &format!("<{i}.{mbx}.{folder}@example.org>")[..]),
                    ("Subject", &format!("report {i}")[..]),
                ];
                let m = message(&headers, body, "\n");
                write_file(&work.path().join(mbx).join(folder).join(format!("{i}.host:2,S")), &m, 1_600_000_000);
            }
        }
        std::fs::create_dir_all(work.path().join(mbx).join("new")).unwrap();
    }
    let dest = work.path().join("dest");
    let a = migrate_json(&work.path().join("alice"), &dest, "alice", EXIT_OK);
    let b = migrate_json(&work.path().join("bob"), &dest, "bob", EXIT_OK);
    let (a_new, b_new) = (a["new_stored_bytes"].as_u64().unwrap(), b["new_stored_bytes"].as_u64().unwrap());
    // Alice pays for the bodies; Bob, with twice as many messages, pays only for his header blocks.
    assert!(a_new >= body_bytes, "alice stored {a_new}, bodies are {body_bytes}");
    assert!(b_new < body_bytes / 20, "bob stored {b_new} bytes although every body was already there");
    assert_eq!(b["messages"], 80);
    assert!(b["stats"]["deduplicated_bytes"].as_u64().unwrap() >= 2 * body_bytes, "{b:#}");
    // And both still restore exactly.
    for mbx in ["alice", "bob"] {
        moverd_ok(["verify", dest.to_str().unwrap(), "--mailbox", mbx], EXIT_OK);
        let to = work.path().join(format!("restored-{mbx}"));
        moverd_ok(["restore", dest.to_str().unwrap(), "--mailbox", mbx, "--to", to.to_str().unwrap()], EXIT_OK);
        assert_same_tree(&work.path().join(mbx), &to);
    }
    let ls: serde_json::Value =
        serde_json::from_str(&moverd_ok(["ls", dest.to_str().unwrap(), "--json"], EXIT_OK)).unwrap();
    assert_eq!(ls.as_array().unwrap().len(), 2);
    assert_eq!(ls[1]["mailbox"], "bob");
    assert_eq!(ls[1]["messages"], 80);
}

/// A message's header block gets its content address from the hasher that also hashes the whole message when the
/// message is short (up to two BLAKE3 chunks), and from its own hash otherwise. Both must give the same address:
/// the same header block on a short and on a long message is one blob (one location in the manifest), and every
/// address is the BLAKE3 of the bytes (verify and restore check each blob against its pack index entry).
#[test]
fn header_blocks_have_one_address_whatever_the_message_size() {
    let work = tempfile::tempdir().unwrap();
    let src = work.path().join("carol");
    // A header block of exactly `h` bytes (ending in the blank line).
    let header = |h: usize| {
        let mut b = b"X: ".to_vec();
        b.resize(h - 2, b'a');
        b.extend_from_slice(b"\n\n");
        b
    };
    let mut expect = Vec::new(); // (file name, header block length)
    for h in [5, 63, 64, 65, 1023, 1024, 1025, 1500, 2047, 2048, 2049, 3000] {
        // Header block only, then messages around one and two BLAKE3 chunks.
        for total in std::iter::once(h).chain([1024, 2047, 2048, 2049, 3072, 5000].into_iter().filter(|&t| t > h)) {
            let mut m = header(h);
            m.extend(text_noise((h * 7919 + total) as u64, total - h));
            let name = format!("{h}-{total}.host:2,S");
            write_file(&src.join("cur").join(&name), &m, 1_600_000_000);
            expect.push((format!("cur/{name}"), h));
        }
    }
    // A header block of just the blank line, and an empty file.
    write_file(&src.join("cur/blank.host:2,S"), b"\nbody\n", 1_600_000_000);
    write_file(&src.join("cur/empty.host:2,S"), b"", 1_600_000_000);
    std::fs::create_dir_all(src.join("new")).unwrap();
    round_trip(&src, work.path(), "carol", EXIT_OK);

    let rt = tokio::runtime::Runtime::new().unwrap();
    let store = mover_core::store::open_destination(work.path().join("dest").to_str().unwrap()).unwrap();
    let manifest = rt.block_on(mover_core::pipeline::load_manifest(&store, "carol", None)).unwrap();
    let mut path = String::new();
    let mut seen = std::collections::BTreeMap::new(); // header length -> where its blob is
    let mut checked = 0;
    for rec in manifest.records().unwrap() {
        match rec.unwrap().0 {
            mover_core::manifest::Record::File { path: p, .. } => path = p.display(),
            mover_core::manifest::Record::Msg { parts, blake3, len, .. } => {
                let data = std::fs::read(src.join(&path)).unwrap();
                assert_eq!(len, data.len() as u64, "{path}");
                assert_eq!(blake3, mover_core::id::ContentId::of(&data), "{path}: message hash");
                let Some(&(_, h)) = expect.iter().find(|(n, _)| *n == path) else { continue };
                assert_eq!(parts[0].blobs.len(), 1, "{path}");
                let at = parts[0].blobs[0];
                assert_eq!(at.raw_len, h as u64, "{path}");
                assert_eq!(*seen.entry(h).or_insert(at), at, "{path}: the same header block stored twice");
                checked += 1;
            }
            _ => {}
        }
    }
    assert_eq!(checked, expect.len());
}

/// With the local index cache (the default), a migration reads from the destination only the pack indexes this
/// host has not seen; without it, every one. Deduplication and restores are the same either way.
#[test]
fn the_index_cache_saves_a_get_per_known_pack() {
    let work = tempfile::tempdir().unwrap();
    let dest = work.path().join("dest");
    let cache = work.path().join("cache");
    let mailbox = |i: u64| {
        let src = work.path().join(format!("m{i}"));
        for j in 0..5 {
            let m = message(&[("Subject", &format!("{i}/{j}")[..])], &noise(i * 100 + j, 3000), "\n");
            write_file(&src.join(format!("cur/{j}.host:2,S")), &m, 1_600_000_000);
        }
        std::fs::create_dir_all(src.join("new")).unwrap();
        src
    };
    let migrate = |src: &Path, name: &str, extra: &[&str]| -> serde_json::Value {
        let mut args = vec!["migrate", src.to_str().unwrap(), dest.to_str().unwrap(), "--mailbox", name, "--json"];
        args.extend_from_slice(extra);
        serde_json::from_str(&moverd_ok(args, EXIT_OK)).unwrap()
    };
    let with_cache = ["--index-cache", cache.to_str().unwrap()];
    for i in 0..3 {
        migrate(&mailbox(i), &format!("m{i}"), &with_cache);
    }
    let packs = || std::fs::read_dir(dest.join("index")).unwrap().count() as u64;
    assert_eq!(packs(), 3);
    // The same new mailbox under three names: first passes that read the same objects but for the pack indexes.
    let last = mailbox(3);
    let x = migrate(&last, "x", &["--no-index-cache"]); // reads the 3 pack indexes, stores a 4th pack (not cached)
    assert!(x["new_stored_bytes"].as_u64().unwrap() > 15_000, "{x:#}");
    assert_eq!(packs(), 4);
    // The packs this host stored with the cache on are in it already: y reads only x's, z none.
    let y = migrate(&last, "y", &with_cache);
    let z = migrate(&last, "z", &with_cache);
    let gets = |s: &serde_json::Value| s["requests"]["get_requests"].as_u64().unwrap();
    assert_eq!(gets(&x) - gets(&z), 3, "x: {:#}\nz: {:#}", x["requests"], z["requests"]);
    assert_eq!(gets(&y) - gets(&z), 1, "y: {:#}\nz: {:#}", y["requests"], z["requests"]);
    for s in [&y, &z] {
        assert_eq!(s["stats"]["new_raw_bytes"].as_u64(), Some(0), "deduplicated against x: {s:#}");
    }
    assert_eq!(std::fs::read_dir(&cache).unwrap().count(), 1, "one cache file per destination");
    for name in ["x", "z"] {
        let to = work.path().join(format!("restored-{name}"));
        moverd_ok(["restore", dest.to_str().unwrap(), "--mailbox", name, "--to", to.to_str().unwrap()], EXIT_OK);
        assert_same_tree(&last, &to);
    }
}

/// Several moverd processes migrating into one destination at once share one index cache file: appends and
/// rewrites under the file lock leave it whole, every mailbox restores, and afterwards the cache holds every pack.
#[test]
fn concurrent_migrations_share_the_index_cache() {
    let work = tempfile::tempdir().unwrap();
    let dest = work.path().join("dest");
    let cache = work.path().join("cache");
    let sources: Vec<_> = (0..6u64)
        .map(|i| {
            let src = work.path().join(format!("m{i}"));
            for j in 0..20 {
                // Half the bodies shared between mailboxes, half their own.
                let body = noise(if j % 2 == 0 { j } else { i * 1000 + j }, 2000 + 50 * j as usize);
                let m = message(&[("Subject", &format!("{i}/{j}")[..])], &body, "\n");
                write_file(&src.join(format!("cur/{j}.host:2,S")), &m, 1_600_000_000);
            }
            std::fs::create_dir_all(src.join("new")).unwrap();
            src
        })
        .collect();
    all_at_once_quietly(sources.iter().enumerate().map(|(i, src)| {
        let mut cmd = moverd_cmd();
        cmd.args(["migrate", src.to_str().unwrap(), dest.to_str().unwrap(), "--mailbox", &format!("m{i}")]).args([
            "--index-cache",
            cache.to_str().unwrap(),
            "--json",
        ]);
        cmd
    }));
    for (i, src) in sources.iter().enumerate() {
        let to = work.path().join(format!("restored-{i}"));
        let mailbox = format!("m{i}");
        moverd_ok(["verify", dest.to_str().unwrap(), "--mailbox", &mailbox], EXIT_OK);
        moverd_ok(["restore", dest.to_str().unwrap(), "--mailbox", &mailbox, "--to", to.to_str().unwrap()], EXIT_OK);
        assert_same_tree(src, &to);
    }
    // Every pack is in the cache now: a new mailbox reads none of their indexes (the same migration without the
    // cache reads all of them).
    let packs = std::fs::read_dir(dest.join("index")).unwrap().count() as u64;
    assert!(packs >= 6, "{packs} packs");
    let run = |name: &str, cache_args: &[&str]| -> u64 {
        let mut args =
            vec!["migrate", sources[0].to_str().unwrap(), dest.to_str().unwrap(), "--mailbox", name, "--json"];
        args.extend_from_slice(cache_args);
        let s: serde_json::Value = serde_json::from_str(&moverd_ok(args, EXIT_OK)).unwrap();
        s["requests"]["get_requests"].as_u64().unwrap()
    };
    let uncached = run("again-without", &["--no-index-cache"]);
    let cached = run("again-with", &["--index-cache", cache.to_str().unwrap()]);
    assert_eq!(uncached - cached, packs);
}

/// Maildir `m{i}` under `root` of `n` messages: body `j` is the same in every mailbox when `j` is a multiple of
/// `shared_every`, this mailbox's own otherwise, and `len(j)` bytes long.
fn shared_bodies_mailbox(root: &Path, i: u64, n: u64, shared_every: u64, len: impl Fn(usize) -> usize) -> PathBuf {
    let src = root.join(format!("m{i}"));
    for j in 0..n {
        let body = noise(if j % shared_every == 0 { j } else { i * 1000 + j }, len(j as usize));
        write_file(
            &src.join(format!("cur/{j}.host:2,S")),
            &message(&[("Subject", &format!("{i}/{j}"))], &body, "\n"),
            1_600_000_000,
        );
    }
    std::fs::create_dir_all(src.join("new")).unwrap();
    src
}

/// A program that migrates mailbox after mailbox in one process keeps the destination's dedupe index from pass to
/// pass (`MigrateOptions::keep_index`): each pass reads no pack index it already holds, dedupes as well as a pass
/// that loads everything, and restores byte for byte. A kept index whose packs the destination no longer lists (a
/// destination emptied and started again under the same name) is not used: blobs in the gone packs are stored
/// again, not referenced.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_kept_index_reads_only_new_pack_indexes_and_never_outlives_its_packs() {
    use mover_core::pipeline::{KeptIndex, MigrateOptions, migrate};
    let work = tempfile::tempdir().unwrap();
    // Even bodies shared by every mailbox, odd ones each mailbox's own.
    let mailbox = |i: u64| shared_bodies_mailbox(work.path(), i, 12, 2, |j| 3000 + 100 * j);
    let sources: Vec<_> = (0..4).map(mailbox).collect();
    let store = |d: &Path| mover_core::store::open_destination(d.to_str().unwrap()).unwrap();
    let run = |dest: std::path::PathBuf, keep: Option<KeptIndex>| {
        let sources = sources.clone();
        async move {
            let mut out = Vec::new();
            for (i, src) in sources.iter().enumerate() {
                let mut opts = MigrateOptions::new(format!("m{i}"));
                opts.keep_index = keep.clone();
                out.push(migrate(src, store(&dest), opts).await.unwrap());
            }
            out
        }
    };
    let kept = KeptIndex::new();
    let with = run(work.path().join("with"), Some(kept.clone())).await;
    let without = run(work.path().join("without"), None).await;
    for (i, (w, wo)) in with.iter().zip(&without).enumerate() {
        // Pass i reads the i pack indexes before it without a kept index, none with one.
        assert_eq!(wo.requests.get_requests - w.requests.get_requests, i as u64, "pass {i}: {w:?}\n{wo:?}");
        assert_eq!(w.requests.list_requests, wo.requests.list_requests, "the destination is listed either way");
        assert_eq!(w.stats.new_raw_bytes, wo.stats.new_raw_bytes, "the same dedupe: {w:?}\n{wo:?}");
        if i > 0 {
            assert!(w.stats.deduplicated_bytes > 15_000, "shared bodies deduplicated: {w:?}");
        }
        let to = work.path().join(format!("restored-{i}"));
        let r =
            mover_core::restore::restore(store(&work.path().join("with")), &format!("m{i}"), &to, &Default::default())
                .await
                .unwrap();
        assert!(r.errors.is_empty(), "{:?}", r.errors);
        assert_same_tree(&sources[i], &to);
    }

    // The destination emptied and started again: the kept index names packs it no longer lists.
    let dest = work.path().join("with");
    std::fs::remove_dir_all(&dest).unwrap();
    let again = mailbox(9);
    let mut opts = MigrateOptions::new("again");
    opts.keep_index = Some(kept.clone());
    let s = migrate(&again, store(&dest), opts).await.unwrap();
    assert_eq!(s.stats.deduplicated_bytes, 0, "nothing to dedupe against in an empty destination: {s:?}");
    let to = work.path().join("restored-again");
    let r = mover_core::restore::restore(store(&dest), "again", &to, &Default::default()).await.unwrap();
    assert!(r.errors.is_empty(), "{:?}", r.errors);
    assert_same_tree(&again, &to);
    let v = mover_core::restore::verify(store(&dest), "again", None).await.unwrap();
    assert!(v.errors.is_empty(), "{:?}", v.errors);
}

/// Migrations run at the same time in one process, into one destination, sharing one kept index and one index
/// cache (as an embedding tool might run them): none dedupes against a pack another has not stored yet (each
/// loads the index of what is stored, or takes the kept index of a pass that stored all its packs), so every
/// mailbox verifies and restores byte for byte, and a later pass still finds every pack.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_migrations_in_one_process_share_nothing_unstored() {
    use mover_core::pipeline::{KeptIndex, MigrateOptions, migrate};
    let work = tempfile::tempdir().unwrap();
    // A third of the bodies shared by every mailbox, the rest each mailbox's own.
    let mailbox = |i: u64| shared_bodies_mailbox(work.path(), i, 40, 3, |j| 20_000 + 1000 * j);
    let dest = work.path().join("dest");
    let cache = work.path().join("cache");
    let store = || mover_core::store::open_destination(dest.to_str().unwrap()).unwrap();
    let kept = KeptIndex::new();
    let opts = |i: u64| {
        let mut o = MigrateOptions::new(format!("m{i}"));
        o.keep_index = Some(kept.clone());
        o.index_cache = Some(cache.clone());
        // Small packs, so that each migration seals several while the others are running.
        o.pack_target = 256 << 10;
        o.segment_target = 64 << 10;
        o
    };
    let sources: Vec<_> = (0..5).map(mailbox).collect();
    let running: Vec<_> = (0..4)
        .map(|i| {
            let (src, store, opts) = (sources[i as usize].clone(), store(), opts(i));
            tokio::spawn(async move { migrate(&src, store, opts).await })
        })
        .collect();
    for r in running {
        r.await.unwrap().unwrap();
    }
    let last = migrate(&sources[4], store(), opts(4)).await.unwrap();
    assert!(last.stats.deduplicated_bytes > 100_000, "the shared bodies are found in the others' packs: {last:?}");
    for (i, src) in sources.iter().enumerate() {
        let to = work.path().join(format!("restored-{i}"));
        let r = mover_core::restore::restore(store(), &format!("m{i}"), &to, &Default::default()).await.unwrap();
        assert!(r.errors.is_empty(), "{:?}", r.errors);
        assert_same_tree(src, &to);
    }
    let v = mover_core::restore::verify(store(), "m4", None).await.unwrap();
    assert!(v.errors.is_empty(), "{:?}", v.errors);
}
