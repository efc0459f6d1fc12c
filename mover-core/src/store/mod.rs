//! Where the bytes go: one small object-store trait, an in-memory store, the local-directory store (the embedded
//! default) and a conformance suite that every store runs.
//!
//! A [`Store`] knows nothing about mail, packs or manifests: it moves opaque objects named by `/`-separated keys.
//! Cross-cutting behaviour (retries, limits, throttling, request counting, fault injection) belongs in wrappers that
//! implement the same trait around an inner store.

use std::fmt;
use std::ops::Range;
use std::sync::Arc;

use async_trait::async_trait;
use bytes::Bytes;

use crate::error::{Error, Result};

pub mod conformance;
mod counting;
#[cfg(feature = "s3")]
mod journal;
mod local;
mod memory;
mod retry;
#[cfg(feature = "s3")]
pub mod s3;

pub use counting::{CountingStore, RequestCounts, StoreCounters};
pub use local::LocalStore;
pub use memory::MemoryStore;
pub use retry::{Backoff, RetryConfig, RetryStore};
#[cfg(feature = "s3")]
pub use s3::{S3Config, S3Location, S3Store};

/// How a put treats an object that already exists under the key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PutMode {
    /// Replace it.
    Overwrite,
    /// Leave it and report [`PutOutcome::AlreadyExists`] (S3 `If-None-Match: *`). Content-addressed writes use this:
    /// an existing object under a content address already holds these bytes.
    Create,
}

/// What a put did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PutOutcome {
    /// The object now holds the new bytes.
    Written,
    /// `PutMode::Create` found an object already there; nothing was written.
    AlreadyExists,
}

/// What a listing or head says about one object.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObjectMeta {
    /// The object's key.
    pub key: String,
    /// Its size in bytes.
    pub size: u64,
}

/// An object being written piece by piece ([`Store::writer`]): invisible until [`ObjectWriter::commit`], discarded
/// if dropped before. The calls block (they are made from the pipeline's threads, not from async tasks).
pub trait ObjectWriter: Send {
    /// Append `data`.
    fn write(&mut self, data: &[u8]) -> Result<()>;
    /// Bytes appended so far.
    fn written(&self) -> u64;
    /// Make the object durable and visible under its key, as [`Store::put`] with the writer's mode would.
    fn commit(self: Box<Self>) -> Result<PutOutcome>;
}

/// An object store: the one interface the pipeline writes through.
///
/// Keys are `/`-separated relative names made of ASCII letters, digits and `._-%=+`; see [`validate_key`].
#[async_trait]
pub trait Store: Send + Sync + fmt::Debug + 'static {
    /// A short description for people and logs (`local:/srv/dest`, `s3://bucket/prefix`), never containing secrets.
    fn describe(&self) -> String;

    /// Write `data` under `key`.
    async fn put(&self, key: &str, data: Bytes, mode: PutMode) -> Result<PutOutcome>;

    /// Read a whole object. A missing object is an error of kind [`crate::ErrorKind::NotFound`].
    async fn get(&self, key: &str) -> Result<Bytes>;

    /// Read `range` of an object. A range reaching past the end returns the bytes up to the end; a range starting at
    /// or after the end is an error.
    async fn get_range(&self, key: &str, range: Range<u64>) -> Result<Bytes>;

    /// The object's metadata, or `None` when it does not exist.
    async fn head(&self, key: &str) -> Result<Option<ObjectMeta>>;

    /// Every object whose key starts with `prefix`, in key order.
    async fn list(&self, prefix: &str) -> Result<Vec<ObjectMeta>>;

    /// Remove an object; removing a missing object is not an error.
    async fn delete(&self, key: &str) -> Result<()>;

    /// Start writing `key` piece by piece, when the store can take an object before it is complete without holding
    /// it in memory (the local store writes a temporary file and starts flushing it to disk as it grows, so that a
    /// pack is on disk by the time it is sealed). `None` (the default): write it with [`Store::put`]. Wrappers that
    /// do not forward this fall back to `put`, which is always correct.
    fn writer(&self, key: &str, mode: PutMode) -> Result<Option<Box<dyn ObjectWriter>>> {
        let _ = (key, mode);
        Ok(None)
    }

    /// Whether [`Store::put`] of an object named by its content does more for it than [`Store::writer`] would: S3's
    /// puts are journaled, so that the next put of the same key after a crash resumes the upload, and `RetryStore`
    /// retries a failed put whole, which it cannot do for a stream. The pipeline then puts a large blob's own pack
    /// whole instead of streaming it. The default, `false`, streams whenever [`Store::writer`] can; wrappers forward it.
    fn resumes_puts(&self) -> bool {
        false
    }

    /// [`Store::writer`], for a writer that retries its own requests failing with transient errors under `retry`:
    /// what [`RetryStore`] asks of its inner store, since it cannot redo a stream whose bytes are gone. The default
    /// ignores `retry` (right for a writer whose requests cannot fail transiently, like the local store's);
    /// wrappers forward it.
    fn writer_retrying(&self, key: &str, mode: PutMode, retry: &RetryConfig) -> Result<Option<Box<dyn ObjectWriter>>> {
        let _ = retry;
        self.writer(key, mode)
    }
}

/// A shared, type-erased store.
pub type DynStore = Arc<dyn Store>;

/// Check that `key` is a key every store accepts: non-empty `/`-separated components of ASCII letters, digits and
/// `._-%=+`, no component `.` or `..`, no leading or trailing `/`.
pub fn validate_key(key: &str) -> Result<()> {
    let ok = !key.is_empty()
        && key.len() <= 1024
        && key.split('/').all(|c| {
            !c.is_empty()
                && c != "."
                && c != ".."
                && c.bytes().all(|b| b.is_ascii_alphanumeric() || b"._-%=+".contains(&b))
        });
    if ok { Ok(()) } else { Err(Error::config(format!("invalid object key {key:?}"))) }
}

/// Open a store from a destination string: a local directory path (the embedded default), or `s3://bucket/prefix`
/// (with the `s3` feature) configured the AWS way (credential chain, `AWS_*` variables), with retries.
pub fn open_destination(dest: &str) -> Result<DynStore> {
    #[cfg(feature = "s3")]
    return open_destination_with(dest, s3::S3Config::default());
    #[cfg(not(feature = "s3"))]
    open_local_or_refuse(dest)
}

/// [`open_destination`] with explicit S3 options (endpoint, region, path style, concurrency, part size…); they are
/// ignored for a local directory.
#[cfg(feature = "s3")]
pub fn open_destination_with(dest: &str, config: s3::S3Config) -> Result<DynStore> {
    if dest.starts_with("s3://") {
        return Ok(Arc::new(RetryStore::new(s3::S3Store::from_url(dest, config)?, RetryConfig::default())?));
    }
    open_local_or_refuse(dest)
}

fn open_local_or_refuse(dest: &str) -> Result<DynStore> {
    if dest.starts_with("s3://") {
        // Only reached without the `s3` feature: open_destination_with handles s3:// first.
        return Err(Error::config(format!("{dest}: this build has no S3 support (cargo feature `s3`)")));
    }
    if dest.contains("://") {
        return Err(Error::config(format!("{dest}: unknown destination scheme (use a local directory path)")));
    }
    Ok(Arc::new(LocalStore::create(dest)?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys() {
        for good in ["a", "packs/ab/abcdef.pack", "mailboxes/a%20b/pass-000001.manifest", "mover.json"] {
            validate_key(good).unwrap();
        }
        for bad in ["", "/a", "a/", "a//b", "../a", "a/./b", "a b", "a\\b", "ä"] {
            assert!(validate_key(bad).is_err(), "{bad:?} accepted");
        }
    }
}
