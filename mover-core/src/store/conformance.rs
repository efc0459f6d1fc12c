//! The behaviours every [`Store`] must have, as one suite that each implementation runs (memory, local directory,
//! S3 against real servers). New stores are tested by calling [`run_all`], not by copying tests.
//!
//! The suite panics on the first violated expectation, naming the store and the behaviour.

use bytes::Bytes;

use super::{ObjectWriter, PutMode, PutOutcome, Store};
use crate::error::ErrorKind;

/// Run every behaviour check against `store`, under a fresh key prefix so a shared bucket can be used.
pub async fn run_all(store: &dyn Store) {
    let prefix = format!("conformance-{}", crate::id::PackId::fresh());
    put_get_round_trip(store, &prefix).await;
    missing_objects(store, &prefix).await;
    ranges(store, &prefix).await;
    conditional_put(store, &prefix).await;
    listing(store, &prefix).await;
    delete(store, &prefix).await;
    empty_and_large(store, &prefix).await;
    streamed_writes(store, &prefix).await;
}

fn who(store: &dyn Store) -> String {
    store.describe()
}

/// Bytes written come back identical, and overwrite replaces them.
pub async fn put_get_round_trip(store: &dyn Store, prefix: &str) {
    let key = format!("{prefix}/a/b/object.bin");
    let data: Bytes = (0..=255u8).cycle().take(70_000).collect::<Vec<u8>>().into();
    assert_eq!(store.put(&key, data.clone(), PutMode::Overwrite).await.unwrap(), PutOutcome::Written, "{}", who(store));
    assert_eq!(store.get(&key).await.unwrap(), data, "{}: get after put", who(store));
    let meta = store.head(&key).await.unwrap().expect("head after put");
    assert_eq!(meta.size, data.len() as u64, "{}: head size", who(store));
    let other = Bytes::from_static(b"replacement");
    assert_eq!(store.put(&key, other.clone(), PutMode::Overwrite).await.unwrap(), PutOutcome::Written);
    assert_eq!(store.get(&key).await.unwrap(), other, "{}: overwrite", who(store));
}

/// Missing objects are `NotFound` on get and `None` on head.
pub async fn missing_objects(store: &dyn Store, prefix: &str) {
    let key = format!("{prefix}/missing/nothing-here");
    let err = store.get(&key).await.expect_err("get of a missing object must fail");
    assert_eq!(err.kind(), ErrorKind::NotFound, "{}: get missing gave {err}", who(store));
    assert!(store.head(&key).await.unwrap().is_none(), "{}: head missing", who(store));
    let err = store.get_range(&key, 0..10).await.expect_err("range of a missing object must fail");
    assert_eq!(err.kind(), ErrorKind::NotFound, "{}: range missing gave {err}", who(store));
}

/// Ranges return exactly the bytes asked for, clipped at the end.
pub async fn ranges(store: &dyn Store, prefix: &str) {
    let key = format!("{prefix}/range.bin");
    let data: Bytes = (0..10_000u32).map(|i| (i * 7 % 251) as u8).collect::<Vec<u8>>().into();
    store.put(&key, data.clone(), PutMode::Overwrite).await.unwrap();
    for (a, b) in [(0u64, 1u64), (0, 10_000), (1234, 5678), (9_999, 10_000)] {
        let got = store.get_range(&key, a..b).await.unwrap();
        assert_eq!(got, data.slice(a as usize..b as usize), "{}: range {a}..{b}", who(store));
    }
    let clipped = store.get_range(&key, 9_990..20_000).await.unwrap();
    assert_eq!(clipped, data.slice(9_990..), "{}: range past the end is clipped", who(store));
    assert!(store.get_range(&key, 10_000..10_010).await.is_err(), "{}: range after the end must fail", who(store));
}

/// `PutMode::Create` writes once and then reports `AlreadyExists` without changing the object.
pub async fn conditional_put(store: &dyn Store, prefix: &str) {
    let key = format!("{prefix}/cas/blob");
    let first = Bytes::from_static(b"first");
    assert_eq!(store.put(&key, first.clone(), PutMode::Create).await.unwrap(), PutOutcome::Written);
    let second = Bytes::from_static(b"second");
    assert_eq!(
        store.put(&key, second, PutMode::Create).await.unwrap(),
        PutOutcome::AlreadyExists,
        "{}: second create must report AlreadyExists",
        who(store)
    );
    assert_eq!(store.get(&key).await.unwrap(), first, "{}: create must not overwrite", who(store));
}

/// Listing returns every key under a prefix, in order, with sizes, and nothing outside it.
pub async fn listing(store: &dyn Store, prefix: &str) {
    let base = format!("{prefix}/list");
    let keys = [format!("{base}/x/1"), format!("{base}/x/2"), format!("{base}/y"), format!("{base}z/outside")];
    for (i, k) in keys.iter().enumerate() {
        store.put(k, Bytes::from(vec![b'a'; i + 1]), PutMode::Overwrite).await.unwrap();
    }
    let listed = store.list(&format!("{base}/")).await.unwrap();
    let names: Vec<&str> = listed.iter().map(|m| m.key.as_str()).collect();
    assert_eq!(names, vec![keys[0].as_str(), keys[1].as_str(), keys[2].as_str()], "{}: list", who(store));
    assert_eq!(listed.iter().map(|m| m.size).collect::<Vec<_>>(), vec![1, 2, 3], "{}: list sizes", who(store));
    let partial = store.list(&format!("{base}/x/")).await.unwrap();
    assert_eq!(partial.len(), 2, "{}: list of a sub-prefix", who(store));
    let by_name_prefix = store.list(&format!("{base}z")).await.unwrap();
    assert_eq!(by_name_prefix.len(), 1, "{}: list by a prefix that ends mid-name", who(store));
    assert!(store.list(&format!("{prefix}/nothing/")).await.unwrap().is_empty());
}

/// Delete removes; deleting a missing object is fine.
pub async fn delete(store: &dyn Store, prefix: &str) {
    let key = format!("{prefix}/del/x");
    store.put(&key, Bytes::from_static(b"x"), PutMode::Overwrite).await.unwrap();
    store.delete(&key).await.unwrap();
    assert!(store.head(&key).await.unwrap().is_none(), "{}: deleted object still there", who(store));
    store.delete(&key).await.unwrap();
}

/// Empty objects and objects of several MiB round-trip.
pub async fn empty_and_large(store: &dyn Store, prefix: &str) {
    let key = format!("{prefix}/sizes/empty");
    store.put(&key, Bytes::new(), PutMode::Overwrite).await.unwrap();
    assert_eq!(store.get(&key).await.unwrap().len(), 0, "{}: empty object", who(store));
    let key = format!("{prefix}/sizes/large");
    let data: Bytes = (0..(9 << 20)).map(|i: u32| (i.wrapping_mul(2654435761) >> 24) as u8).collect::<Vec<u8>>().into();
    store.put(&key, data.clone(), PutMode::Create).await.unwrap();
    assert!(store.get(&key).await.unwrap() == data, "{}: 9 MiB object", who(store));
    let mid = store.get_range(&key, (5 << 20) - 3..(5 << 20) + 3).await.unwrap();
    assert_eq!(mid, data.slice((5 << 20) - 3..(5 << 20) + 3));
}

/// Objects written piece by piece ([`Store::writer`], for the stores that have one) round-trip byte for byte, small
/// and spanning several parts (12 MiB in uneven pieces), honour `Create`, and leave nothing when dropped uncommitted.
///
/// The writer's calls block, as on the pipeline's threads: on a multi-threaded runtime they run in
/// `block_in_place`; on a current-thread runtime they run inline (only for stores whose writer needs no runtime).
pub async fn streamed_writes(store: &dyn Store, prefix: &str) {
    fn blocking<R>(f: impl FnOnce() -> R) -> R {
        if tokio::runtime::Handle::current().runtime_flavor() == tokio::runtime::RuntimeFlavor::MultiThread {
            tokio::task::block_in_place(f)
        } else {
            f()
        }
    }
    let write_all = |w: &mut Box<dyn ObjectWriter>, data: &[u8]| {
        // Uneven pieces: tiny ones, ones across part boundaries, one larger than a part.
        let sizes = [1usize, 1000, 3 << 20, 7, (6 << 20) + 12_345, 65_536, 999_999];
        let mut at = 0;
        for n in sizes.iter().cycle() {
            if at == data.len() {
                break;
            }
            let end = (at + n).min(data.len());
            w.write(&data[at..end]).unwrap();
            at = end;
            assert_eq!(w.written(), at as u64, "{}: written()", who(store));
        }
    };
    let data: Bytes =
        (0..(12 << 20) + 4321).map(|i: u32| (i.wrapping_mul(2654435761) >> 24) as u8).collect::<Vec<u8>>().into();
    let key = format!("{prefix}/streamed/large");
    let Some(mut w) = store.writer(&key, PutMode::Create).unwrap() else { return };
    blocking(|| write_all(&mut w, &data));
    assert!(store.head(&key).await.unwrap().is_none(), "{}: a streamed object is visible before commit", who(store));
    let outcome = blocking(|| w.commit().unwrap());
    assert_eq!(outcome, PutOutcome::Written, "{}: streamed create", who(store));
    assert!(store.get(&key).await.unwrap() == data, "{}: streamed object differs", who(store));

    // Write all of `bytes` under `key` and commit.
    let put = |key: &str, mode: PutMode, bytes: &[u8]| {
        let mut w = store.writer(key, mode).unwrap().expect("a writer again");
        blocking(|| {
            write_all(&mut w, bytes);
            w.commit().unwrap()
        })
    };

    // Create of an existing key: AlreadyExists, and the old bytes stay.
    let other: Bytes = data.iter().map(|b| b ^ 0x5a).collect::<Vec<u8>>().into();
    let outcome = put(&key, PutMode::Create, &other);
    assert_eq!(outcome, PutOutcome::AlreadyExists, "{}: streamed create of an existing key", who(store));
    assert!(store.get(&key).await.unwrap() == data, "{}: a refused streamed create changed the object", who(store));

    // Overwrite replaces it.
    let outcome = put(&key, PutMode::Overwrite, &other);
    assert_eq!(outcome, PutOutcome::Written, "{}: streamed overwrite", who(store));
    assert!(store.get(&key).await.unwrap() == other, "{}: streamed overwrite", who(store));

    // Small objects, and the empty one.
    for (name, len) in [("small", 70_000usize), ("empty", 0)] {
        let key = format!("{prefix}/streamed/{name}");
        let outcome = put(&key, PutMode::Create, &data[..len]);
        assert_eq!(outcome, PutOutcome::Written, "{}: streamed {name} object", who(store));
        assert_eq!(store.get(&key).await.unwrap(), data.slice(..len), "{}: streamed {name} object", who(store));
    }

    // Dropped before commit: nothing under the key, then or later.
    let key = format!("{prefix}/streamed/dropped");
    let mut w = store.writer(&key, PutMode::Create).unwrap().expect("a writer again");
    blocking(|| {
        write_all(&mut w, &data);
        drop(w);
    });
    assert!(store.head(&key).await.unwrap().is_none(), "{}: a dropped writer's object is visible", who(store));
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    assert!(store.head(&key).await.unwrap().is_none(), "{}: a dropped writer's object is visible", who(store));
    assert!(
        store.list(&format!("{prefix}/streamed/")).await.unwrap().iter().all(|m| !m.key.ends_with("/dropped")),
        "{}: a dropped writer's object is listed",
        who(store)
    );
}
