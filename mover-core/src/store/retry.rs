//! Retries, in one place, for every store: a wrapper that repeats operations failing with a retryable error
//! ([`crate::Error::is_retryable`], i.e. [`crate::ErrorKind::Transient`]) with capped exponential backoff and full
//! jitter.
//!
//! Every [`Store`] operation is idempotent, so every one may be retried: gets, heads, lists and deletes trivially;
//! an overwrite writes the same bytes again; a create (`If-None-Match: *`) whose first attempt landed but whose
//! answer was lost reports [`PutOutcome::AlreadyExists`] on the retry, which for content-addressed keys means the
//! same bytes are there. The stores themselves do not retry (the S3 store disables the SDK's retries), so attempts
//! do not multiply across layers.

use std::fmt;
use std::future::Future;
use std::ops::Range;
use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use serde::Deserialize;

use super::{ObjectMeta, ObjectWriter, PutMode, PutOutcome, Store};
use crate::error::{Error, Result};

/// How often and how patiently to retry. Deserializable for config files (`deny_unknown_fields`).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RetryConfig {
    /// Attempts in total, the first included (1: no retries).
    pub max_attempts: u32,
    /// Backoff before the first retry, in milliseconds; doubles for each further retry.
    pub base_backoff_ms: u64,
    /// The backoff never exceeds this, in milliseconds.
    pub max_backoff_ms: u64,
}

impl Default for RetryConfig {
    /// 8 attempts, 100 ms doubling to at most 20 s: rides out about a minute of throttling or a server restart.
    fn default() -> Self {
        RetryConfig { max_attempts: 8, base_backoff_ms: 100, max_backoff_ms: 20_000 }
    }
}

impl RetryConfig {
    /// Check the values make sense.
    pub fn validate(&self) -> Result<()> {
        if self.max_attempts == 0 {
            return Err(Error::config("retry max_attempts must be at least 1"));
        }
        if self.base_backoff_ms > self.max_backoff_ms {
            return Err(Error::config("retry base_backoff_ms must not exceed max_backoff_ms"));
        }
        Ok(())
    }

    /// The upper bound of the wait before retry number `retry` (0 for the first retry): `base · 2^retry`, capped at
    /// the maximum. Full jitter waits a uniformly random time in `0..=cap`.
    pub fn backoff_cap(&self, retry: u32) -> Duration {
        let factor = 1u64.checked_shl(retry.min(63)).unwrap_or(u64::MAX);
        Duration::from_millis(self.base_backoff_ms.saturating_mul(factor).min(self.max_backoff_ms))
    }
}

/// Backoff state: a [`RetryConfig`] applied to any async operation, with its own jitter generator and a count of
/// the retries made. [`RetryStore`] uses one for whole store operations; the S3 store uses one for the parts of a
/// multipart upload.
#[derive(Debug)]
pub struct Backoff {
    config: RetryConfig,
    rng: Mutex<u64>,
    retries: AtomicU64,
}

impl Backoff {
    /// Backoff with `config` (validated) and a jitter seed from the clock.
    pub fn new(config: RetryConfig) -> Result<Self> {
        static INSTANCES: AtomicU64 = AtomicU64::new(0);
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(0);
        Self::with_seed(config, nanos ^ INSTANCES.fetch_add(1, Ordering::Relaxed).wrapping_mul(0x9E37_79B9_7F4A_7C15))
    }

    /// Backoff with a fixed jitter seed (for reproducible tests).
    pub fn with_seed(config: RetryConfig, seed: u64) -> Result<Self> {
        config.validate()?;
        Ok(Backoff { config, rng: Mutex::new(seed), retries: AtomicU64::new(0) })
    }

    /// The configuration.
    pub fn config(&self) -> &RetryConfig {
        &self.config
    }

    /// Retries made so far (attempts beyond the first), over all operations.
    pub fn retries(&self) -> u64 {
        self.retries.load(Ordering::Relaxed)
    }

    /// A uniformly random wait in `0..=cap` (full jitter).
    fn jitter(&self, cap: Duration) -> Duration {
        let mut state = self.rng.lock().unwrap();
        let r = splitmix64(&mut state);
        let cap_ns = cap.as_nanos() as u64;
        Duration::from_nanos(if cap_ns == 0 { 0 } else { r % (cap_ns + 1) })
    }

    /// Run `f` until it succeeds, fails with an error that is not retryable, or has been tried `max_attempts`
    /// times; `op` and `key` name it in logs and in the final error.
    pub async fn run<T, F, Fut>(&self, op: &str, key: &str, mut f: F) -> Result<T>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<T>>,
    {
        let mut attempt = 1;
        loop {
            match f().await {
                Ok(v) => return Ok(v),
                Err(e) if e.is_retryable() && attempt < self.config.max_attempts => {
                    let wait = self.jitter(self.config.backoff_cap(attempt - 1));
                    tracing::debug!(op, key, attempt, wait_ms = wait.as_millis() as u64, error = %e, "retrying");
                    self.retries.fetch_add(1, Ordering::Relaxed);
                    tokio::time::sleep(wait).await;
                    attempt += 1;
                }
                Err(e) if e.is_retryable() && attempt > 1 => {
                    return Err(e.context(format!("{op} {key} failed after {attempt} attempts")));
                }
                Err(e) => return Err(e),
            }
        }
    }
}

/// A store that retries the transient failures of an inner store.
pub struct RetryStore<S> {
    inner: S,
    backoff: Backoff,
}

impl<S: Store> fmt::Debug for RetryStore<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RetryStore").field("inner", &self.inner).field("config", &self.backoff.config).finish()
    }
}

impl<S: Store> RetryStore<S> {
    /// Wrap `inner`; the config is validated.
    pub fn new(inner: S, config: RetryConfig) -> Result<Self> {
        Ok(RetryStore { inner, backoff: Backoff::new(config)? })
    }

    /// Wrap `inner` with a fixed jitter seed (for reproducible tests).
    pub fn with_seed(inner: S, config: RetryConfig, seed: u64) -> Result<Self> {
        Ok(RetryStore { inner, backoff: Backoff::with_seed(config, seed)? })
    }

    /// The wrapped store.
    pub fn inner(&self) -> &S {
        &self.inner
    }

    /// Retries made so far (attempts beyond the first), over all operations.
    pub fn retries(&self) -> u64 {
        self.backoff.retries()
    }

    async fn run<T, F, Fut>(&self, op: &str, key: &str, f: F) -> Result<T>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<T>>,
    {
        self.backoff.run(op, key, f).await
    }
}

/// SplitMix64: a tiny, good-enough generator for jitter (no cryptographic use).
fn splitmix64(state: &mut u64) -> u64 {
    *state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
    let mut z = *state;
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

#[async_trait]
impl<S: Store> Store for RetryStore<S> {
    fn describe(&self) -> String {
        self.inner.describe()
    }

    async fn put(&self, key: &str, data: Bytes, mode: PutMode) -> Result<PutOutcome> {
        self.run("put", key, || self.inner.put(key, data.clone(), mode)).await
    }

    async fn get(&self, key: &str) -> Result<Bytes> {
        self.run("get", key, || self.inner.get(key)).await
    }

    async fn get_range(&self, key: &str, range: Range<u64>) -> Result<Bytes> {
        self.run("get_range", key, || self.inner.get_range(key, range.clone())).await
    }

    async fn head(&self, key: &str) -> Result<Option<ObjectMeta>> {
        self.run("head", key, || self.inner.head(key)).await
    }

    async fn list(&self, prefix: &str) -> Result<Vec<ObjectMeta>> {
        self.run("list", prefix, || self.inner.list(prefix)).await
    }

    async fn delete(&self, key: &str) -> Result<()> {
        self.run("delete", key, || self.inner.delete(key)).await
    }

    /// The inner store's writer, which cannot be retried as a whole (its bytes are not kept): the inner store's
    /// writer retries each of its requests with this store's policy instead ([`Store::writer_retrying`]).
    fn writer(&self, key: &str, mode: PutMode) -> Result<Option<Box<dyn ObjectWriter>>> {
        self.inner.writer_retrying(key, mode, &self.backoff.config)
    }

    fn resumes_puts(&self) -> bool {
        self.inner.resumes_puts()
    }
}

/// A shared store is a store, so wrappers can go around a type-erased [`super::DynStore`]
/// (`RetryStore<DynStore>`, `CountingStore<DynStore>`).
#[async_trait]
impl<S: Store + ?Sized> Store for Arc<S> {
    fn describe(&self) -> String {
        (**self).describe()
    }

    async fn put(&self, key: &str, data: Bytes, mode: PutMode) -> Result<PutOutcome> {
        (**self).put(key, data, mode).await
    }

    async fn get(&self, key: &str) -> Result<Bytes> {
        (**self).get(key).await
    }

    async fn get_range(&self, key: &str, range: Range<u64>) -> Result<Bytes> {
        (**self).get_range(key, range).await
    }

    async fn head(&self, key: &str) -> Result<Option<ObjectMeta>> {
        (**self).head(key).await
    }

    async fn list(&self, prefix: &str) -> Result<Vec<ObjectMeta>> {
        (**self).list(prefix).await
    }

    async fn delete(&self, key: &str) -> Result<()> {
        (**self).delete(key).await
    }

    fn writer(&self, key: &str, mode: PutMode) -> Result<Option<Box<dyn super::ObjectWriter>>> {
        (**self).writer(key, mode)
    }

    fn resumes_puts(&self) -> bool {
        (**self).resumes_puts()
    }

    fn writer_retrying(
        &self,
        key: &str,
        mode: PutMode,
        retry: &RetryConfig,
    ) -> Result<Option<Box<dyn super::ObjectWriter>>> {
        (**self).writer_retrying(key, mode, retry)
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::AtomicU32;

    use super::*;
    use crate::ErrorKind;
    use crate::store::MemoryStore;

    /// Fails the first `failures` calls of every operation with `kind`, then passes through to a memory store.
    #[derive(Debug)]
    struct Flaky {
        inner: MemoryStore,
        failures: u32,
        kind: ErrorKind,
        calls: AtomicU32,
    }

    impl Flaky {
        fn new(failures: u32, kind: ErrorKind) -> Self {
            Flaky { inner: MemoryStore::new(), failures, kind, calls: AtomicU32::new(0) }
        }
        fn fail(&self) -> Result<()> {
            let n = self.calls.fetch_add(1, Ordering::SeqCst);
            if n < self.failures { Err(Error::new(self.kind, format!("injected failure {n}"))) } else { Ok(()) }
        }
    }

    #[async_trait]
    impl Store for Flaky {
        fn describe(&self) -> String {
            "flaky".into()
        }
        async fn put(&self, key: &str, data: Bytes, mode: PutMode) -> Result<PutOutcome> {
            self.fail()?;
            self.inner.put(key, data, mode).await
        }
        async fn get(&self, key: &str) -> Result<Bytes> {
            self.fail()?;
            self.inner.get(key).await
        }
        async fn get_range(&self, key: &str, range: Range<u64>) -> Result<Bytes> {
            self.fail()?;
            self.inner.get_range(key, range).await
        }
        async fn head(&self, key: &str) -> Result<Option<ObjectMeta>> {
            self.fail()?;
            self.inner.head(key).await
        }
        async fn list(&self, prefix: &str) -> Result<Vec<ObjectMeta>> {
            self.fail()?;
            self.inner.list(prefix).await
        }
        async fn delete(&self, key: &str) -> Result<()> {
            self.fail()?;
            self.inner.delete(key).await
        }
    }

    fn config(max_attempts: u32) -> RetryConfig {
        RetryConfig { max_attempts, base_backoff_ms: 100, max_backoff_ms: 1_000 }
    }

    #[test]
    fn backoff_caps_double_then_saturate() {
        let c = config(10);
        let caps: Vec<u64> = (0..7).map(|r| c.backoff_cap(r).as_millis() as u64).collect();
        assert_eq!(caps, vec![100, 200, 400, 800, 1000, 1000, 1000]);
        assert_eq!(c.backoff_cap(200), Duration::from_secs(1), "huge retry numbers do not overflow");
        assert!(RetryConfig { max_attempts: 0, ..c.clone() }.validate().is_err());
        assert!(RetryConfig { base_backoff_ms: 2_000, ..c }.validate().is_err());
    }

    #[test]
    fn jitter_stays_within_cap_and_spreads() {
        let s = Backoff::with_seed(config(3), 42).unwrap();
        let cap = Duration::from_millis(800);
        let waits: Vec<Duration> = (0..1000).map(|_| s.jitter(cap)).collect();
        assert!(waits.iter().all(|w| *w <= cap));
        let low = waits.iter().filter(|w| **w < cap / 2).count();
        assert!((350..650).contains(&low), "full jitter is uniform: {low} of 1000 below half the cap");
        assert_eq!(s.jitter(Duration::ZERO), Duration::ZERO);
    }

    #[tokio::test(start_paused = true)]
    async fn transient_failures_are_retried_with_bounded_backoff() {
        let store = RetryStore::with_seed(Flaky::new(4, ErrorKind::Transient), config(6), 7).unwrap();
        let t0 = tokio::time::Instant::now();
        let data = Bytes::from_static(b"payload");
        assert_eq!(store.put("k", data.clone(), PutMode::Create).await.unwrap(), PutOutcome::Written);
        let waited = t0.elapsed();
        assert_eq!(store.inner().calls.load(Ordering::SeqCst), 5, "4 failures then success");
        assert_eq!(store.retries(), 4);
        // Full jitter: the total wait is random but never more than the sum of the caps 100+200+400+800 ms.
        assert!(waited <= Duration::from_millis(1500), "waited {waited:?}");
        assert!(waited > Duration::ZERO, "retries wait (paused clock advanced by the sleeps)");
        assert_eq!(store.get("k").await.unwrap(), data, "the bytes written on the last attempt are the ones stored");
    }

    #[tokio::test(start_paused = true)]
    async fn gives_up_after_max_attempts_with_the_last_error() {
        let store = RetryStore::with_seed(Flaky::new(100, ErrorKind::Transient), config(5), 1).unwrap();
        let t0 = tokio::time::Instant::now();
        let err = store.get("k").await.unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Transient);
        assert!(err.to_string().contains("after 5 attempts"), "{err}");
        assert!(err.to_string().contains("injected failure 4"), "the last error is kept: {err}");
        assert_eq!(store.inner().calls.load(Ordering::SeqCst), 5);
        assert!(t0.elapsed() <= Duration::from_millis(100 + 200 + 400 + 800));
    }

    #[tokio::test(start_paused = true)]
    async fn long_outages_wait_at_most_the_max_backoff_per_retry() {
        let store = RetryStore::with_seed(Flaky::new(11, ErrorKind::Transient), config(12), 3).unwrap();
        let t0 = tokio::time::Instant::now();
        store.head("k").await.unwrap();
        assert_eq!(store.retries(), 11);
        // 100+200+400+800 then 7 × 1000 (capped).
        assert!(t0.elapsed() <= Duration::from_millis(1500 + 7 * 1000), "waited {:?}", t0.elapsed());
    }

    #[tokio::test(start_paused = true)]
    async fn permanent_errors_are_not_retried() {
        for kind in [ErrorKind::NotFound, ErrorKind::Config, ErrorKind::Corrupt, ErrorKind::Other] {
            let store = RetryStore::with_seed(Flaky::new(1, kind), config(5), 9).unwrap();
            let t0 = tokio::time::Instant::now();
            let err = store.list("p").await.unwrap_err();
            assert_eq!(err.kind(), kind);
            assert_eq!(store.inner().calls.load(Ordering::SeqCst), 1, "{kind:?} was retried");
            assert_eq!(t0.elapsed(), Duration::ZERO, "{kind:?} waited");
        }
        // A missing object is NotFound from the inner store, straight through.
        let store = RetryStore::new(MemoryStore::new(), config(5)).unwrap();
        assert_eq!(store.get("missing").await.unwrap_err().kind(), ErrorKind::NotFound);
    }

    #[tokio::test]
    async fn conformance_through_the_wrapper() {
        let store = RetryStore::new(Arc::new(MemoryStore::new()) as super::super::DynStore, config(3)).unwrap();
        super::super::conformance::run_all(&store).await;
    }
}
