//! Request accounting: a wrapper that counts the requests and bytes going through a store, for run reports and
//! metrics.
//!
//! Where it sits decides what it counts: inside a [`super::RetryStore`]
//! (`RetryStore<CountingStore<S3Store>>`) every attempt is counted, which is what a bill counts; outside it, each
//! logical operation once.

use std::ops::Range;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use async_trait::async_trait;
use bytes::Bytes;
use serde::{Deserialize, Serialize};

use super::{ObjectMeta, ObjectWriter, PutMode, PutOutcome, Store};
use crate::error::Result;

/// Counts at one instant. Serializable for reports; all counts are since the store was wrapped.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RequestCounts {
    /// Put requests (each put once, however it travels; multipart parts are not counted separately).
    pub put_requests: u64,
    /// Bytes of the puts that wrote (`PutOutcome::Written`).
    pub put_bytes: u64,
    /// Create-puts that found the object already there.
    pub put_already_existed: u64,
    /// Get and ranged-get requests.
    pub get_requests: u64,
    /// Bytes returned by gets.
    pub get_bytes: u64,
    /// Head requests.
    pub head_requests: u64,
    /// List requests.
    pub list_requests: u64,
    /// Objects returned by lists.
    pub listed_objects: u64,
    /// Delete requests.
    pub delete_requests: u64,
    /// Requests of any kind that returned an error.
    pub failed_requests: u64,
}

impl RequestCounts {
    /// All requests, of every kind.
    pub fn total_requests(&self) -> u64 {
        self.put_requests + self.get_requests + self.head_requests + self.list_requests + self.delete_requests
    }
}

/// The live counters of a [`CountingStore`]; a clone of the handle keeps reading them after the store has been
/// type-erased into a [`super::DynStore`].
#[derive(Debug, Default)]
pub struct StoreCounters {
    put_requests: AtomicU64,
    put_bytes: AtomicU64,
    put_already_existed: AtomicU64,
    get_requests: AtomicU64,
    get_bytes: AtomicU64,
    head_requests: AtomicU64,
    list_requests: AtomicU64,
    listed_objects: AtomicU64,
    delete_requests: AtomicU64,
    failed_requests: AtomicU64,
}

impl StoreCounters {
    /// The counts now.
    pub fn snapshot(&self) -> RequestCounts {
        let r = |c: &AtomicU64| c.load(Ordering::Relaxed);
        RequestCounts {
            put_requests: r(&self.put_requests),
            put_bytes: r(&self.put_bytes),
            put_already_existed: r(&self.put_already_existed),
            get_requests: r(&self.get_requests),
            get_bytes: r(&self.get_bytes),
            head_requests: r(&self.head_requests),
            list_requests: r(&self.list_requests),
            listed_objects: r(&self.listed_objects),
            delete_requests: r(&self.delete_requests),
            failed_requests: r(&self.failed_requests),
        }
    }

    fn add(c: &AtomicU64, n: u64) {
        c.fetch_add(n, Ordering::Relaxed);
    }

    fn count<T>(&self, requests: &AtomicU64, r: &Result<T>) {
        Self::add(requests, 1);
        if r.is_err() {
            Self::add(&self.failed_requests, 1);
        }
    }
}

/// A piece-by-piece write, counted as one put when it is committed.
struct CountingWriter {
    inner: Box<dyn ObjectWriter>,
    counters: Arc<StoreCounters>,
}

impl ObjectWriter for CountingWriter {
    fn write(&mut self, data: &[u8]) -> Result<()> {
        self.inner.write(data)
    }

    fn written(&self) -> u64 {
        self.inner.written()
    }

    fn commit(self: Box<Self>) -> Result<PutOutcome> {
        let (len, c) = (self.inner.written(), self.counters.clone());
        let r = self.inner.commit();
        c.count(&c.put_requests, &r);
        match r {
            Ok(PutOutcome::Written) => StoreCounters::add(&c.put_bytes, len),
            Ok(PutOutcome::AlreadyExists) => StoreCounters::add(&c.put_already_existed, 1),
            Err(_) => {}
        }
        r
    }
}

/// A store that counts what passes through it.
#[derive(Debug)]
pub struct CountingStore<S> {
    inner: S,
    counters: Arc<StoreCounters>,
}

impl<S: Store> CountingStore<S> {
    /// Wrap `inner` with fresh counters.
    pub fn new(inner: S) -> Self {
        CountingStore { inner, counters: Arc::default() }
    }

    /// The counts now.
    pub fn snapshot(&self) -> RequestCounts {
        self.counters.snapshot()
    }

    /// A handle on the live counters, for reading them after the store has been moved or type-erased.
    pub fn counters(&self) -> Arc<StoreCounters> {
        self.counters.clone()
    }

    /// The wrapped store.
    pub fn inner(&self) -> &S {
        &self.inner
    }

    fn counting_writer(&self, inner: Option<Box<dyn ObjectWriter>>) -> Option<Box<dyn ObjectWriter>> {
        inner.map(|inner| Box::new(CountingWriter { inner, counters: self.counters.clone() }) as Box<dyn ObjectWriter>)
    }
}

#[async_trait]
impl<S: Store> Store for CountingStore<S> {
    fn describe(&self) -> String {
        self.inner.describe()
    }

    async fn put(&self, key: &str, data: Bytes, mode: PutMode) -> Result<PutOutcome> {
        let len = data.len() as u64;
        let r = self.inner.put(key, data, mode).await;
        let c = &self.counters;
        c.count(&c.put_requests, &r);
        match r {
            Ok(PutOutcome::Written) => StoreCounters::add(&c.put_bytes, len),
            Ok(PutOutcome::AlreadyExists) => StoreCounters::add(&c.put_already_existed, 1),
            Err(_) => {}
        }
        r
    }

    async fn get(&self, key: &str) -> Result<Bytes> {
        let r = self.inner.get(key).await;
        let c = &self.counters;
        c.count(&c.get_requests, &r);
        if let Ok(b) = &r {
            StoreCounters::add(&c.get_bytes, b.len() as u64);
        }
        r
    }

    async fn get_range(&self, key: &str, range: Range<u64>) -> Result<Bytes> {
        let r = self.inner.get_range(key, range).await;
        let c = &self.counters;
        c.count(&c.get_requests, &r);
        if let Ok(b) = &r {
            StoreCounters::add(&c.get_bytes, b.len() as u64);
        }
        r
    }

    async fn head(&self, key: &str) -> Result<Option<ObjectMeta>> {
        let r = self.inner.head(key).await;
        let c = &self.counters;
        c.count(&c.head_requests, &r);
        r
    }

    async fn list(&self, prefix: &str) -> Result<Vec<ObjectMeta>> {
        let r = self.inner.list(prefix).await;
        let c = &self.counters;
        c.count(&c.list_requests, &r);
        if let Ok(v) = &r {
            StoreCounters::add(&c.listed_objects, v.len() as u64);
        }
        r
    }

    async fn delete(&self, key: &str) -> Result<()> {
        let r = self.inner.delete(key).await;
        let c = &self.counters;
        c.count(&c.delete_requests, &r);
        r
    }

    fn writer(&self, key: &str, mode: PutMode) -> Result<Option<Box<dyn ObjectWriter>>> {
        Ok(self.counting_writer(self.inner.writer(key, mode)?))
    }

    fn resumes_puts(&self) -> bool {
        self.inner.resumes_puts()
    }

    fn writer_retrying(
        &self,
        key: &str,
        mode: PutMode,
        retry: &super::RetryConfig,
    ) -> Result<Option<Box<dyn ObjectWriter>>> {
        Ok(self.counting_writer(self.inner.writer_retrying(key, mode, retry)?))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::MemoryStore;

    #[tokio::test]
    async fn counts_requests_and_bytes() {
        let store = CountingStore::new(MemoryStore::new());
        let handle = store.counters();
        let data = Bytes::from(vec![7u8; 1000]);
        assert_eq!(store.put("a/1", data.clone(), PutMode::Create).await.unwrap(), PutOutcome::Written);
        assert_eq!(store.put("a/1", data.clone(), PutMode::Create).await.unwrap(), PutOutcome::AlreadyExists);
        store.put("a/2", Bytes::from_static(b"xyz"), PutMode::Overwrite).await.unwrap();
        assert_eq!(store.get("a/1").await.unwrap(), data);
        assert_eq!(store.get_range("a/1", 10..110).await.unwrap(), data.slice(10..110));
        assert!(store.get("a/missing").await.is_err());
        assert!(store.head("a/2").await.unwrap().is_some());
        assert_eq!(store.list("a/").await.unwrap().len(), 2);
        store.delete("a/2").await.unwrap();
        let want = RequestCounts {
            put_requests: 3,
            put_bytes: 1003,
            put_already_existed: 1,
            get_requests: 3,
            get_bytes: 1100,
            head_requests: 1,
            list_requests: 1,
            listed_objects: 2,
            delete_requests: 1,
            failed_requests: 1,
        };
        assert_eq!(store.snapshot(), want);
        assert_eq!(handle.snapshot(), want, "the handle sees the same counters");
        assert_eq!(want.total_requests(), 9);
        let json = serde_json::to_value(want).unwrap();
        assert_eq!(json["put_bytes"], 1003);
        assert_eq!(serde_json::from_value::<RequestCounts>(json).unwrap(), want);
    }

    #[tokio::test]
    async fn conformance_through_the_wrapper() {
        let store = CountingStore::new(MemoryStore::new());
        super::super::conformance::run_all(&store).await;
        assert!(store.snapshot().put_requests > 0);
    }
}
