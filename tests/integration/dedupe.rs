//! The same body under different headers is stored once per destination.

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
