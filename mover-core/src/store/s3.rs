//! The S3 store: objects in a bucket of Amazon S3 or of an S3-compatible server (Ceph RGW, s3s, Garage, MinIO …).
//!
//! ```text
//!  Store::put ──► small (≤ threshold): PutObject [If-None-Match: *]
//!             └─► large:  CreateMultipartUpload ─► UploadPart × n (bounded) ─► CompleteMultipartUpload [If-None-Match: *]
//!                         (or resume a journaled      │ each acknowledged part ──► journal (state dir, fsync)
//!                          upload: ListParts)         └── on failure or drop: AbortMultipartUpload (no journal), or
//!                                                          left in the journal for the next put to resume
//!  Store::writer ─► write: buffer one part; full ─► (HEAD for a create) CreateMultipartUpload, UploadPart task
//!                   (≤ 2 in flight, each retried) │ commit: last part, CompleteMultipartUpload [If-None-Match: *]
//!                   (nothing full: PutObject)     └ dropped uncommitted: AbortMultipartUpload (from a task)
//! ```
//!
//! Configuration is the AWS way: the standard credential chain and `AWS_*` variables (`AWS_ACCESS_KEY_ID`,
//! `AWS_PROFILE`, `AWS_REGION`, `AWS_ENDPOINT_URL`, …) apply unless [`S3Config`] says otherwise. When an endpoint URL
//! is set (explicitly or through the environment) the store assumes a non-AWS server: path-style addressing and
//! checksums only where an operation requires them (plain-http servers reject the SDK's default signed-chunk
//! uploads with trailing checksums).
//!
//! **Who retries what**: the SDK's own retries are disabled and every error is classified into an [`ErrorKind`].
//! Whole store operations are retried by [`super::RetryStore`] (wrap the store in it). The one exception is inside
//! a multipart upload: each of its requests (create, every part, complete) is retried here with the same
//! [`super::Backoff`] code and its own [`S3Config::part_retry`], because retrying a multi-GiB upload from scratch
//! for one failed part would rarely finish under a steady low fault rate. When the upload still fails, it is
//! aborted and the error goes up, so `RetryStore` may retry the whole put — unless it is journaled.
//!
//! **Resuming** ([`S3Config::state_dir`]): each multipart upload is recorded in a local journal (upload id, part
//! size, length and BLAKE3 of the object; number, size, ETag and BLAKE3 of every part S3 acknowledged). A journaled
//! upload that fails with a transient error, is cancelled, or whose process dies, is not aborted: the next put of
//! the same bytes under the same key (a retry by `RetryStore`, or the next run: large blobs live under keys derived
//! from their content) checks the entry against its own bytes and against ListParts, uploads only the missing parts
//! and completes. Anything that does not match starts the upload over (aborting the stale one, best effort); a
//! resumed upload that fails for good is started over once. Creates refused because the object exists, and
//! permanent failures, are aborted and their entries removed.
//!
//! Known server quirks handled here: Ceph RGW returns an empty ETag from CompleteMultipartUpload (the ETag is not
//! needed and not checked); s3s-fs reports a missing bucket as `NoSuchKey` (the bucket is checked with HeadBucket
//! before the first request, so a missing bucket is a configuration error and never a missing object); s3s-fs
//! lists no ETags in ListParts (the size decides there) and lists an unknown upload as one without parts (never
//! resumed: nothing to gain); s3s-fs has no ListMultipartUploads (not used: the journal knows the upload ids).

use std::collections::{HashMap, HashSet};
use std::fmt;
use std::ops::Range;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use aws_sdk_s3::Client;
use aws_sdk_s3::config::retry::RetryConfig;
use aws_sdk_s3::config::timeout::TimeoutConfig;
use aws_sdk_s3::config::{
    BehaviorVersion, Credentials, Region, RequestChecksumCalculation, ResponseChecksumValidation, SharedHttpClient,
};
use aws_sdk_s3::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_s3::primitives::ByteStream;
use aws_sdk_s3::types::{CompletedMultipartUpload, CompletedPart};
use bytes::{Bytes, BytesMut};
use serde::Deserialize;
use tokio::runtime::Handle;
use tokio::sync::{OnceCell, Semaphore, SemaphorePermit};
use tokio::task::JoinSet;

use super::journal::{Journal, JournalEntry, PartRecord, Recorded, UploadRecord};
use super::retry::{Backoff, RetryConfig as StoreRetryConfig};
use super::{ObjectMeta, ObjectWriter, PutMode, PutOutcome, Store, validate_key};
use crate::error::{Error, ErrorKind, Result};

/// S3's smallest part size, except for the last part (S3 user guide, "Amazon S3 multipart upload limits").
pub const MIN_PART_SIZE: u64 = 5 << 20;
/// S3's largest part size (same source).
pub const MAX_PART_SIZE: u64 = 5 << 30;
/// S3's largest number of parts in one upload (same source).
pub const MAX_PARTS: u64 = 10_000;
/// S3's largest single PutObject (same source); larger objects must be multipart.
pub const MAX_SINGLE_PUT: u64 = 5 << 30;

const DEFAULT_PART_SIZE: u64 = 8 << 20;
const DEFAULT_MULTIPART_THRESHOLD: u64 = 16 << 20;
const DEFAULT_MAX_IN_FLIGHT: usize = 16;
/// Parts of one object in flight at once (also bounded by `max_in_flight`).
const PARTS_IN_FLIGHT: usize = 4;
/// Parts of one streamed object ([`Store::writer`]) in flight at once (also bounded by `max_in_flight`): with the
/// part being filled, a streamed object holds at most three parts in memory.
const STREAM_PARTS_IN_FLIGHT: usize = 2;
const LIST_PAGE: i32 = 1000;

/// When the SDK computes and sends request checksums and validates response checksums.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ChecksumMode {
    /// `WhenRequired` when an endpoint URL is set (non-AWS servers), the SDK default (`WhenSupported`) otherwise.
    #[default]
    Auto,
    /// Checksums on every operation that supports them (the SDK default; right for AWS).
    WhenSupported,
    /// Checksums only where an operation requires them (right for most S3-compatible servers on plain http).
    WhenRequired,
}

/// Explicit S3 options; every field left unset falls back to the AWS environment (variables, profile, instance
/// metadata) or to a default suited to mover's workload.
///
/// Deserializable so that a config file can carry it (`deny_unknown_fields`). `Debug` never shows the secret key or
/// session token.
#[derive(Clone, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct S3Config {
    /// Endpoint URL of an S3-compatible server (`http://127.0.0.1:7480`); `None`: AWS, or `AWS_ENDPOINT_URL`.
    pub endpoint_url: Option<String>,
    /// Region; `None`: the AWS chain (`AWS_REGION`, profile), else `us-east-1` when an endpoint is set.
    pub region: Option<String>,
    /// Path-style addressing (`http://host/bucket/key`); `None`: on when an endpoint URL is set.
    pub force_path_style: Option<bool>,
    /// Checksum behaviour.
    pub checksum_mode: ChecksumMode,
    /// Access key id; with `secret_access_key` it replaces the credential chain.
    pub access_key_id: Option<String>,
    /// Secret access key (never printed).
    pub secret_access_key: Option<String>,
    /// Session token for temporary credentials (never printed).
    pub session_token: Option<String>,
    /// Requests in flight at once through this store, parts included; `None`: 16.
    pub max_in_flight: Option<usize>,
    /// Preferred multipart part size in bytes (at least 5 MiB; raised when needed to stay within 10,000 parts);
    /// `None`: 8 MiB.
    pub part_size: Option<u64>,
    /// Objects larger than this go up as multipart uploads; `None`: 16 MiB.
    pub multipart_threshold: Option<u64>,
    /// Timeout for establishing a connection, in seconds; `None`: 10.
    pub connect_timeout_secs: Option<u64>,
    /// Timeout for one request attempt (sending the body included), in seconds; `None`: no limit (stalled
    /// transfers are still caught by the SDK's stalled-stream protection).
    pub attempt_timeout_secs: Option<u64>,
    /// Skip the HeadBucket check before the first request (for credentials that may not list the bucket).
    pub skip_bucket_check: bool,
    /// Retries of the requests inside one multipart upload (create, each part, complete); `None`: 5 attempts,
    /// 200 ms doubling to at most 5 s. Whole operations are retried by [`super::RetryStore`], not here.
    pub part_retry: Option<StoreRetryConfig>,
    /// A local directory for state that outlives the process: with it, multipart uploads are journaled there and
    /// an interrupted upload is resumed by the next put of the same bytes under the same key (see the module docs);
    /// `None`: no journal, and a failed upload is aborted at once.
    pub state_dir: Option<PathBuf>,
}

impl fmt::Debug for S3Config {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let redact = |s: &Option<String>| s.as_ref().map(|_| "<redacted>");
        f.debug_struct("S3Config")
            .field("endpoint_url", &self.endpoint_url.as_deref().map(strip_userinfo))
            .field("region", &self.region)
            .field("force_path_style", &self.force_path_style)
            .field("checksum_mode", &self.checksum_mode)
            .field("access_key_id", &self.access_key_id)
            .field("secret_access_key", &redact(&self.secret_access_key))
            .field("session_token", &redact(&self.session_token))
            .field("max_in_flight", &self.max_in_flight)
            .field("part_size", &self.part_size)
            .field("multipart_threshold", &self.multipart_threshold)
            .field("connect_timeout_secs", &self.connect_timeout_secs)
            .field("attempt_timeout_secs", &self.attempt_timeout_secs)
            .field("skip_bucket_check", &self.skip_bucket_check)
            .field("part_retry", &self.part_retry)
            .field("state_dir", &self.state_dir)
            .finish()
    }
}

/// A bucket and a key prefix, parsed from `s3://bucket/prefix`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct S3Location {
    /// The bucket name.
    pub bucket: String,
    /// The key prefix without leading or trailing `/` (empty: the bucket root).
    pub prefix: String,
}

impl S3Location {
    /// Parse `s3://bucket` or `s3://bucket/prefix/…` (a trailing `/` is ignored).
    pub fn parse(dest: &str) -> Result<Self> {
        let rest = dest
            .strip_prefix("s3://")
            .ok_or_else(|| Error::config(format!("{dest}: an S3 destination starts with s3://")))?;
        let (bucket, prefix) = match rest.split_once('/') {
            Some((b, p)) => (b, p.trim_end_matches('/')),
            None => (rest, ""),
        };
        // Bucket naming rules (S3 user guide, "Bucket naming rules"), relaxed to what S3-compatible servers accept.
        let bucket_ok = (3..=63).contains(&bucket.len())
            && bucket.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'.')
            && bucket.as_bytes()[0].is_ascii_alphanumeric()
            && bucket.as_bytes()[bucket.len() - 1].is_ascii_alphanumeric();
        if !bucket_ok {
            return Err(Error::config(format!("{dest}: invalid bucket name {bucket:?}")));
        }
        if !prefix.is_empty() {
            validate_key(prefix).map_err(|e| e.context(format!("{dest}: invalid key prefix")))?;
        }
        Ok(S3Location { bucket: bucket.to_string(), prefix: prefix.to_string() })
    }
}

impl fmt::Display for S3Location {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.prefix.is_empty() {
            write!(f, "s3://{}", self.bucket)
        } else {
            write!(f, "s3://{}/{}", self.bucket, self.prefix)
        }
    }
}

/// `http://user:pass@host/` → `http://host/`: an endpoint shown to people never carries credentials.
fn strip_userinfo(url: &str) -> String {
    match url.split_once("://") {
        Some((scheme, rest)) => {
            let (authority, path) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
            let host = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
            format!("{scheme}://{host}{path}")
        }
        None => url.rsplit_once('@').map_or(url, |(_, h)| h).to_string(),
    }
}

/// The part size for an object of `len` bytes: the preferred size, raised (to a whole MiB) so the object fits in
/// [`MAX_PARTS`] parts, never below [`MIN_PART_SIZE`]. Errors when the object cannot fit at all.
pub fn part_size_for(len: u64, preferred: u64) -> Result<u64> {
    const MIB: u64 = 1 << 20;
    let needed = len.div_ceil(MAX_PARTS).div_ceil(MIB) * MIB;
    let size = preferred.max(needed).max(MIN_PART_SIZE);
    if size > MAX_PART_SIZE {
        return Err(Error::config(format!(
            "object of {len} bytes is too large for S3 ({MAX_PARTS} parts of at most {MAX_PART_SIZE} bytes)"
        )));
    }
    Ok(size)
}

/// Options after validation and defaults.
#[derive(Debug, Clone, Copy)]
struct Tuning {
    part_size: u64,
    multipart_threshold: u64,
}

/// A store in an S3 bucket under a key prefix.
///
/// Cheap to clone (shared state). The SDK client is built on first use (loading credentials and region is
/// asynchronous); [`S3Store::connect`] builds it at once and checks the bucket.
#[derive(Clone)]
pub struct S3Store {
    inner: Arc<Inner>,
}

struct Inner {
    location: S3Location,
    config: S3Config,
    tuning: Tuning,
    client: OnceCell<Client>,
    permits: Semaphore,
    part_backoff: Arc<Backoff>,
    /// For `describe()`: the explicit endpoint, without credentials.
    endpoint_shown: Option<String>,
    /// Multipart uploads in progress, for resuming them (`S3Config::state_dir`).
    journal: Option<Journal>,
    /// Parts not uploaded again because a journaled upload was resumed.
    resumed_parts: AtomicU64,
    /// The tokio runtime the store was created or last used on: streamed writes ([`Store::writer`]) are called
    /// from plain threads and run their requests there. The last one, so that a store outliving a runtime follows
    /// the next.
    runtime: Mutex<Option<Handle>>,
}

impl fmt::Debug for S3Store {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("S3Store")
            .field("location", &self.inner.location)
            .field("config", &self.inner.config)
            .finish_non_exhaustive()
    }
}

impl S3Store {
    /// A store for `location` with `config`, validated now; the client is built on first use.
    pub fn new(location: S3Location, config: S3Config) -> Result<Self> {
        let part_size = config.part_size.unwrap_or(DEFAULT_PART_SIZE);
        if !(MIN_PART_SIZE..=MAX_PART_SIZE).contains(&part_size) {
            return Err(Error::config(format!(
                "S3 part size {part_size} is outside {MIN_PART_SIZE}..={MAX_PART_SIZE} bytes"
            )));
        }
        let multipart_threshold = config.multipart_threshold.unwrap_or(DEFAULT_MULTIPART_THRESHOLD);
        if multipart_threshold > MAX_SINGLE_PUT {
            return Err(Error::config(format!(
                "S3 multipart threshold {multipart_threshold} is above the single-PUT limit of {MAX_SINGLE_PUT} bytes"
            )));
        }
        let max_in_flight = config.max_in_flight.unwrap_or(DEFAULT_MAX_IN_FLIGHT);
        if max_in_flight == 0 {
            return Err(Error::config("S3 max_in_flight must be at least 1"));
        }
        if config.access_key_id.is_some() != config.secret_access_key.is_some() {
            return Err(Error::config("S3 access_key_id and secret_access_key must be given together"));
        }
        if let Some(url) = &config.endpoint_url
            && !(url.starts_with("http://") || url.starts_with("https://"))
        {
            return Err(Error::config(format!(
                "S3 endpoint {:?} must start with http:// or https://",
                strip_userinfo(url)
            )));
        }
        let endpoint_shown = config.endpoint_url.clone().or_else(env_endpoint).as_deref().map(strip_userinfo);
        let part_backoff = Arc::new(Backoff::new(config.part_retry.clone().unwrap_or(StoreRetryConfig {
            max_attempts: 5,
            base_backoff_ms: 200,
            max_backoff_ms: 5_000,
        }))?);
        Ok(S3Store {
            inner: Arc::new(Inner {
                location,
                tuning: Tuning { part_size, multipart_threshold },
                client: OnceCell::new(),
                permits: Semaphore::new(max_in_flight),
                part_backoff,
                endpoint_shown,
                journal: config.state_dir.as_deref().map(Journal::new),
                resumed_parts: AtomicU64::new(0),
                runtime: Mutex::new(Handle::try_current().ok()),
                config,
            }),
        })
    }

    /// A store for an `s3://bucket/prefix` destination.
    pub fn from_url(dest: &str, config: S3Config) -> Result<Self> {
        Self::new(S3Location::parse(dest)?, config)
    }

    /// Build the client now and check that the bucket exists (unless the config skips that check).
    pub async fn connect(location: S3Location, config: S3Config) -> Result<Self> {
        let store = Self::new(location, config)?;
        store.client().await?;
        Ok(store)
    }

    /// Where the store writes.
    pub fn location(&self) -> &S3Location {
        &self.inner.location
    }

    /// Parts that were not uploaded again because an interrupted upload was resumed from the journal (since this
    /// store was created).
    pub fn resumed_parts(&self) -> u64 {
        self.inner.resumed_parts.load(Ordering::Relaxed)
    }

    /// Create the bucket if it does not exist yet (for test servers and first-time setup).
    pub async fn create_bucket_if_missing(&self) -> Result<()> {
        let client = build_client(&self.inner.config).await?;
        let bucket = &self.inner.location.bucket;
        match client.head_bucket().bucket(bucket).send().await {
            Ok(_) => return Ok(()),
            Err(e) if e.raw_response().is_some_and(|r| r.status().as_u16() == 404) => {}
            Err(e) => return Err(map_sdk_error(format!("checking bucket {bucket}"), e)),
        }
        match client.create_bucket().bucket(bucket).send().await {
            Ok(_) => Ok(()),
            Err(e) if matches!(e.code(), Some("BucketAlreadyOwnedByYou")) => Ok(()),
            Err(e) => Err(map_sdk_error(format!("creating bucket {bucket}"), e)),
        }
    }

    async fn client(&self) -> Result<&Client> {
        if let Ok(handle) = Handle::try_current() {
            *self.inner.runtime.lock().unwrap_or_else(|e| e.into_inner()) = Some(handle);
        }
        self.inner
            .client
            .get_or_try_init(|| async {
                let client = build_client(&self.inner.config).await?;
                if !self.inner.config.skip_bucket_check {
                    let bucket = &self.inner.location.bucket;
                    if let Err(e) = client.head_bucket().bucket(bucket).send().await {
                        // A missing bucket must never look like a missing object (s3s-fs answers NoSuchKey).
                        if e.raw_response().is_some_and(|r| r.status().as_u16() == 404) {
                            return Err(Error::config(format!("{}: bucket {bucket} does not exist", self.describe())));
                        }
                        return Err(map_sdk_error(format!("checking bucket {bucket} of {}", self.describe()), e));
                    }
                }
                Ok(client)
            })
            .await
    }

    async fn permit(&self) -> SemaphorePermit<'_> {
        self.inner.permits.acquire().await.expect("the semaphore is never closed")
    }

    /// The full object key of a store key.
    fn full_key(&self, key: &str) -> Result<String> {
        validate_key(key)?;
        Ok(self.full_key_unchecked(key))
    }

    fn full_key_unchecked(&self, key: &str) -> String {
        let p = &self.inner.location.prefix;
        if p.is_empty() { key.to_string() } else { format!("{p}/{key}") }
    }

    /// `s3://bucket/full-key` for error messages.
    fn url(&self, full_key: &str) -> String {
        format!("s3://{}/{full_key}", self.inner.location.bucket)
    }

    /// A writer streaming `key` as a multipart upload, retrying its requests with `backoff`; `None` (the caller puts
    /// the object whole) when there is no tokio runtime to run the requests on.
    fn stream_writer(&self, key: &str, mode: PutMode, backoff: Arc<Backoff>) -> Result<Option<Box<dyn ObjectWriter>>> {
        let full_key = self.full_key(key)?;
        let last = || self.inner.runtime.lock().unwrap_or_else(|e| e.into_inner()).clone();
        let Some(runtime) = Handle::try_current().ok().or_else(last) else {
            return Ok(None);
        };
        Ok(Some(Box::new(S3Writer {
            store: self.clone(),
            runtime,
            backoff,
            full_key,
            mode,
            part_size: self.inner.tuning.part_size as usize,
            buf: BytesMut::new(),
            written: 0,
            upload: None,
            exists: false,
            failed: false,
        })))
    }

    /// A whole object: a single PutObject up to the multipart threshold, a multipart upload above.
    async fn put_full(&self, full_key: &str, data: Bytes, mode: PutMode) -> Result<PutOutcome> {
        if data.len() as u64 > self.inner.tuning.multipart_threshold {
            self.put_multipart(full_key, data, mode).await
        } else {
            self.put_single(full_key, data, mode).await
        }
    }

    async fn put_single(&self, full_key: &str, data: Bytes, mode: PutMode) -> Result<PutOutcome> {
        let client = self.client().await?;
        let _permit = self.permit().await;
        let mut req = client
            .put_object()
            .bucket(&self.inner.location.bucket)
            .key(full_key)
            .content_length(data.len() as i64)
            .body(ByteStream::from(data));
        if mode == PutMode::Create {
            req = req.if_none_match("*");
        }
        match req.send().await {
            Ok(_) => Ok(PutOutcome::Written),
            Err(e) if mode == PutMode::Create && is_precondition_conflict(&e) => Ok(PutOutcome::AlreadyExists),
            Err(e) => Err(map_sdk_error(format!("PUT {}", self.url(full_key)), e)),
        }
    }

    async fn put_multipart(&self, full_key: &str, data: Bytes, mode: PutMode) -> Result<PutOutcome> {
        let part_size = part_size_for(data.len() as u64, self.inner.tuning.part_size)?;
        let journal = self.open_journal(full_key).await;
        // A create of an existing large object: do not upload gigabytes to have them refused at the end.
        if mode == PutMode::Create && self.head_full(full_key).await?.is_some() {
            if let Some(entry) = &journal {
                // A journaled upload of this key is finished with: it completed before a crash that came ahead of
                // the entry's removal, or another writer's object is there.
                self.forget_journaled(entry, full_key).await;
            }
            return Ok(PutOutcome::AlreadyExists);
        }
        let client = self.client().await?.clone();
        match journal {
            Some(entry) => self.put_journaled(&client, full_key, data, part_size, mode, &entry).await,
            None => self.put_unjournaled(&client, full_key, data, part_size, mode).await,
        }
    }

    /// A multipart upload that is aborted when it fails or is cancelled (no state directory, or the journal entry
    /// is held by another put of the same key).
    async fn put_unjournaled(
        &self,
        client: &Client,
        full_key: &str,
        data: Bytes,
        part_size: u64,
        mode: PutMode,
    ) -> Result<PutOutcome> {
        let upload_id = self.create_upload(&self.inner.part_backoff, client, full_key).await?;
        let mut guard = AbortGuard::new(client, &self.inner.location.bucket, full_key, &upload_id);
        let result =
            self.upload_parts_and_complete(client, full_key, &upload_id, data, part_size, mode, Vec::new(), None).await;
        guard.armed = false;
        if !matches!(result, Ok(PutOutcome::Written)) {
            // Refused by If-None-Match, or failed: abort now and wait for it, so that nothing is left behind.
            self.abort_upload(client, full_key, &upload_id).await;
        }
        result
    }

    /// A multipart upload recorded in the journal: a recorded upload of the same bytes is resumed, the parts are
    /// recorded as S3 acknowledges them, and an upload that fails with a transient error (or is cancelled) is left
    /// for the next put to resume.
    async fn put_journaled(
        &self,
        client: &Client,
        full_key: &str,
        data: Bytes,
        part_size: u64,
        mode: PutMode,
        entry: &JournalEntry,
    ) -> Result<PutOutcome> {
        let url = self.url(full_key);
        let len = data.len() as u64;
        let hashes = hash_parts(data.clone(), part_size).await?;
        let mut may_resume = true;
        loop {
            let resumed = match may_resume {
                true => self.resumable(client, entry, full_key, len, part_size, &hashes).await,
                false => None,
            };
            let (upload_id, done, journaled) = match resumed {
                Some((upload_id, done)) => (upload_id, done, true),
                None => {
                    let upload_id = self.create_upload(&self.inner.part_backoff, client, full_key).await?;
                    let bucket = &self.inner.location.bucket;
                    let header = UploadRecord::new(bucket, full_key, &upload_id, part_size, len, &hashes.whole);
                    let journaled = match entry.begin(header).await {
                        Ok(()) => true,
                        Err(e) => {
                            tracing::warn!(error = %e, %url, "cannot journal the upload: it will not be resumable");
                            false
                        }
                    };
                    (upload_id, Vec::new(), journaled)
                }
            };
            let resumed = !done.is_empty();
            if resumed {
                let n_parts = hashes.parts.len();
                self.inner.resumed_parts.fetch_add(done.len() as u64, Ordering::Relaxed);
                tracing::info!(%url, upload_id, resumed_parts = done.len(), n_parts, "resuming an interrupted multipart upload");
            }
            // A journaled upload that is cancelled is left to the journal, to be resumed, rather than aborted.
            let mut guard = AbortGuard::new(client, &self.inner.location.bucket, full_key, &upload_id);
            guard.armed = !journaled;
            let record = journaled.then_some((entry, hashes.parts.as_slice()));
            let result = self
                .upload_parts_and_complete(client, full_key, &upload_id, data.clone(), part_size, mode, done, record)
                .await;
            guard.armed = false;
            match &result {
                Ok(PutOutcome::Written) => {}
                Ok(PutOutcome::AlreadyExists) => self.abort_upload(client, full_key, &upload_id).await,
                Err(e) if journaled && e.kind() == ErrorKind::Transient => {
                    tracing::info!(%url, upload_id, "multipart upload failed; it stays in the journal to be resumed");
                    return result;
                }
                Err(e) if resumed => {
                    // Something about the resumed upload is wrong (gone meanwhile, a part refused): never the same
                    // way twice. Start over, once.
                    tracing::warn!(error = %e, %url, upload_id, "the resumed upload failed: starting over");
                    self.abort_upload(client, full_key, &upload_id).await;
                    may_resume = false;
                    continue;
                }
                Err(_) => self.abort_upload(client, full_key, &upload_id).await,
            }
            if let Err(e) = entry.remove().await {
                tracing::warn!(error = %e, "the stale journal entry is ignored by the next put");
            }
            return result;
        }
    }

    /// The journal entry of `full_key`, locked for this put; `None` without a state directory, when another put of
    /// the key holds it, or when the journal cannot be used (then the put goes on without it).
    async fn open_journal(&self, full_key: &str) -> Option<JournalEntry> {
        let journal = self.inner.journal.as_ref()?;
        match journal.open_entry(&self.inner.location.bucket, full_key).await {
            Ok(Some(entry)) => Some(entry),
            Ok(None) => {
                tracing::debug!(url = %self.url(full_key), "another put of this key holds its upload journal entry");
                None
            }
            Err(e) => {
                tracing::warn!(error = %e, "uploading without the journal: an interruption will not be resumable");
                None
            }
        }
    }

    /// Abort the upload recorded in `entry` (best effort) and remove the entry.
    async fn forget_journaled(&self, entry: &JournalEntry, full_key: &str) {
        if let Ok(Some(recorded)) = entry.load().await
            && recorded.upload.bucket == self.inner.location.bucket
            && recorded.upload.key == full_key
        {
            let client = match self.client().await {
                Ok(c) => c.clone(),
                Err(_) => return,
            };
            self.abort_upload(&client, full_key, &recorded.upload.upload_id).await;
        }
        if let Err(e) = entry.remove().await {
            tracing::warn!(error = %e, "the stale journal entry is ignored by the next put");
        }
    }

    /// The upload in the journal entry and the parts of it that need not be uploaded again, when the entry is for
    /// these bytes cut in these parts and the server still has the upload with those parts; otherwise `None` (the
    /// stale upload is aborted, best effort) and the put starts over.
    async fn resumable(
        &self,
        client: &Client,
        entry: &JournalEntry,
        full_key: &str,
        len: u64,
        part_size: u64,
        hashes: &PartHashes,
    ) -> Option<(String, Vec<CompletedPart>)> {
        let url = self.url(full_key);
        let recorded = match entry.load().await {
            Ok(Some(r)) => r,
            Ok(None) => return None,
            Err(e) => {
                tracing::warn!(error = %e, "starting the upload over");
                return None;
            }
        };
        let upload_id = recorded.upload.upload_id.clone();
        if recorded.upload.bucket != self.inner.location.bucket || recorded.upload.key != full_key {
            tracing::warn!(%url, "the journal entry is for another object: starting over");
            return None;
        }
        let parts = match usable_parts(&recorded, len, part_size, hashes) {
            Ok(parts) => parts,
            Err(why) => {
                tracing::info!(%url, upload_id, "not resuming the journaled upload: {why}; starting over");
                self.abort_upload(client, full_key, &upload_id).await;
                return None;
            }
        };
        let listed = match self.list_parts(client, full_key, &upload_id).await {
            Ok(Some(listed)) => listed,
            Ok(None) => {
                tracing::info!(%url, upload_id, "the journaled upload is gone from the server: starting over");
                return None;
            }
            Err(e) => {
                tracing::warn!(error = %e, %url, upload_id, "cannot list the journaled upload's parts: starting over");
                self.abort_upload(client, full_key, &upload_id).await;
                return None;
            }
        };
        // A part counts as there only when the server lists it with the recorded size and ETag (s3s-fs lists no
        // ETags: then the size decides, and CompleteMultipartUpload checks the recorded ETags on S3 and RGW).
        let done: Vec<CompletedPart> = parts
            .into_iter()
            .filter(|p| {
                listed
                    .get(&p.part)
                    .is_some_and(|l| l.size == Some(p.size) && l.e_tag.as_deref().is_none_or(|t| same_etag(t, &p.etag)))
            })
            .map(|p| CompletedPart::builder().part_number(p.part).e_tag(&p.etag).build())
            .collect();
        if done.is_empty() {
            // Nothing to gain, and s3s-fs lists an unknown upload as one without parts.
            tracing::info!(%url, upload_id, "no part of the journaled upload is usable: starting over");
            self.abort_upload(client, full_key, &upload_id).await;
            return None;
        }
        Some((upload_id, done))
    }

    /// The parts the server has of an upload; `None` when the upload does not exist (`NoSuchUpload`).
    async fn list_parts(
        &self,
        client: &Client,
        full_key: &str,
        upload_id: &str,
    ) -> Result<Option<HashMap<i32, ListedPart>>> {
        let url = self.url(full_key);
        self.inner
            .part_backoff
            .run("listing the parts of", &url, || async {
                let mut listed = HashMap::new();
                let mut marker: Option<String> = None;
                loop {
                    let _permit = self.permit().await;
                    let page = match client
                        .list_parts()
                        .bucket(&self.inner.location.bucket)
                        .key(full_key)
                        .upload_id(upload_id)
                        .max_parts(LIST_PAGE)
                        .set_part_number_marker(marker.take())
                        .send()
                        .await
                    {
                        Ok(page) => page,
                        Err(e) if status_of(&e) == Some(404) => return Ok(None),
                        Err(e) => return Err(map_sdk_error(format!("listing the parts of {url}"), e)),
                    };
                    for p in page.parts() {
                        let Some(n) = p.part_number() else { continue };
                        let size = p.size().and_then(|s| u64::try_from(s).ok());
                        let e_tag = p.e_tag().filter(|t| !t.is_empty()).map(str::to_string);
                        listed.insert(n, ListedPart { size, e_tag });
                    }
                    match page.next_part_number_marker() {
                        Some(m) if page.is_truncated() == Some(true) => marker = Some(m.to_string()),
                        _ => break,
                    }
                }
                Ok(Some(listed))
            })
            .await
    }

    async fn create_upload(&self, backoff: &Backoff, client: &Client, full_key: &str) -> Result<String> {
        let url = self.url(full_key);
        backoff
            .run("starting multipart upload of", &url, || async {
                let _permit = self.permit().await;
                let out = client
                    .create_multipart_upload()
                    .bucket(&self.inner.location.bucket)
                    .key(full_key)
                    .send()
                    .await
                    .map_err(|e| map_sdk_error(format!("starting multipart upload of {url}"), e))?;
                out.upload_id.ok_or_else(|| {
                    Error::new(ErrorKind::Other, format!("{url}: CreateMultipartUpload returned no upload id"))
                })
            })
            .await
    }

    /// Abort an upload and wait for it (best effort: a failure is logged).
    async fn abort_upload(&self, client: &Client, full_key: &str, upload_id: &str) {
        let _permit = self.permit().await;
        let bucket = &self.inner.location.bucket;
        match client.abort_multipart_upload().bucket(bucket).key(full_key).upload_id(upload_id).send().await {
            Ok(_) => {}
            // Already gone (a completion whose answer was lost, then refused on retry; a journaled upload aborted).
            Err(e) if status_of(&e) == Some(404) => {}
            Err(e) => {
                let e = map_sdk_error(format!("aborting multipart upload of {}", self.url(full_key)), e);
                tracing::warn!(error = %e, "the upload's parts stay until a lifecycle rule removes them");
            }
        }
    }

    /// Record an acknowledged part in the journal, if there is one; a journal that cannot be written is dropped (a
    /// resume would then upload those parts again).
    async fn journal_part(
        journal: &mut Option<(&JournalEntry, &[blake3::Hash])>,
        part: &CompletedPart,
        size: u64,
        url: &str,
    ) {
        if let Some((entry, hashes)) = *journal
            && let Some(n) = part.part_number()
        {
            let record = PartRecord {
                part: n,
                size,
                etag: part.e_tag().unwrap_or_default().to_string(),
                blake3: hashes[(n - 1) as usize].to_hex().to_string(),
            };
            if let Err(e) = entry.record_part(record).await {
                tracing::warn!(error = %e, %url, "parts are no longer journaled: a resume would upload them again");
                *journal = None;
            }
        }
    }

    /// Upload the parts that are not in `done`, then complete. With `journal`, each acknowledged part is recorded
    /// (with the BLAKE3 of its bytes from the slice, by part index) before the upload goes on.
    #[allow(clippy::too_many_arguments)]
    async fn upload_parts_and_complete(
        &self,
        client: &Client,
        full_key: &str,
        upload_id: &str,
        data: Bytes,
        part_size: u64,
        mode: PutMode,
        done: Vec<CompletedPart>,
        mut journal: Option<(&JournalEntry, &[blake3::Hash])>,
    ) -> Result<PutOutcome> {
        let url = self.url(full_key);
        let len = data.len() as u64;
        let n_parts = len.div_ceil(part_size).max(1);
        let skip: HashSet<i32> = done.iter().filter_map(|p| p.part_number()).collect();
        let mut parts: Vec<CompletedPart> = Vec::with_capacity(n_parts as usize);
        parts.extend(done);
        let mut tasks = JoinSet::new();
        let mut next = 0u64;
        let in_flight = PARTS_IN_FLIGHT.min(self.inner.config.max_in_flight.unwrap_or(DEFAULT_MAX_IN_FLIGHT));
        loop {
            while next < n_parts && tasks.len() < in_flight {
                if skip.contains(&((next + 1) as i32)) {
                    next += 1;
                    continue;
                }
                let start = next * part_size;
                let end = (start + part_size).min(len);
                let body = data.slice(start as usize..end as usize);
                let part_number = (next + 1) as i32;
                tasks.spawn(self.clone().upload_part_retrying(
                    self.inner.part_backoff.clone(),
                    client.clone(),
                    full_key.to_string(),
                    upload_id.to_string(),
                    part_number,
                    body,
                ));
                next += 1;
            }
            let Some(done) = tasks.join_next().await else { break };
            let done = done
                .map_err(|e| Error::new(ErrorKind::Other, format!("{url}: part upload task failed: {e}")))
                .flatten();
            let (part, size) = match done {
                Ok(p) => p,
                Err(e) => {
                    // The first failure ends the upload, but the parts already on the wire are let finish (and
                    // journaled when they succeed): a part request the server handles after the abort would leave
                    // a part behind, and a resume can use them.
                    while let Some(other) = tasks.join_next().await {
                        if let Ok(Ok((part, size))) = other {
                            Self::journal_part(&mut journal, &part, size, &url).await;
                        }
                    }
                    return Err(e);
                }
            };
            Self::journal_part(&mut journal, &part, size, &url).await;
            parts.push(part);
        }
        self.complete_upload(&self.inner.part_backoff, client, full_key, upload_id, parts, len, mode).await
    }

    /// CompleteMultipartUpload of `parts` (in any order), retried with the part backoff; `If-None-Match: *` for a
    /// create (`AlreadyExists` when refused). A retry that finds the upload gone asks HEAD whether an earlier
    /// attempt completed it (an object of `len` bytes).
    #[allow(clippy::too_many_arguments)]
    async fn complete_upload(
        &self,
        backoff: &Backoff,
        client: &Client,
        full_key: &str,
        upload_id: &str,
        mut parts: Vec<CompletedPart>,
        len: u64,
        mode: PutMode,
    ) -> Result<PutOutcome> {
        let url = self.url(full_key);
        parts.sort_by_key(|p| p.part_number());
        let upload = CompletedMultipartUpload::builder().set_parts(Some(parts)).build();
        let attempts = AtomicU32::new(0);
        backoff
            .run("completing multipart upload of", &url, || async {
                let retry = attempts.fetch_add(1, Ordering::Relaxed) > 0;
                let mut req = client
                    .complete_multipart_upload()
                    .bucket(&self.inner.location.bucket)
                    .key(full_key)
                    .upload_id(upload_id)
                    .multipart_upload(upload.clone());
                if mode == PutMode::Create {
                    req = req.if_none_match("*");
                }
                let permit = self.permit().await;
                // The response's ETag is not used: Ceph RGW sends an empty one.
                let err = match req.send().await {
                    Ok(_) => return Ok(PutOutcome::Written),
                    Err(e) => e,
                };
                drop(permit);
                if mode == PutMode::Create && is_precondition_conflict(&err) {
                    return Ok(PutOutcome::AlreadyExists);
                }
                if retry && matches!(status_of(&err), Some(403 | 404)) {
                    // NoSuchUpload on a retry (s3s-fs: AccessDenied): an earlier attempt completed the upload but
                    // its answer was lost. The object is there with our size, or this is a real error.
                    if self.head_full(full_key).await?.is_some_and(|m| m.size == len) {
                        return Ok(PutOutcome::Written);
                    }
                }
                Err(map_sdk_error(format!("completing multipart upload of {url}"), err))
            })
            .await
    }

    /// One part, retried with the part backoff (an owned future, to be spawned); returns the part and its size.
    async fn upload_part_retrying(
        self,
        backoff: Arc<Backoff>,
        client: Client,
        key: String,
        upload_id: String,
        part_number: i32,
        body: Bytes,
    ) -> Result<(CompletedPart, u64)> {
        let what = format!("part {part_number} of {}", self.url(&key));
        let size = body.len() as u64;
        backoff
            .run("uploading", &what, || self.upload_part(&client, &key, &upload_id, part_number, body.clone(), &what))
            .await
            .map(|part| (part, size))
    }

    /// One UploadPart request; the part's ETag is what completion needs.
    async fn upload_part(
        &self,
        client: &Client,
        key: &str,
        upload_id: &str,
        part_number: i32,
        body: Bytes,
        what: &str,
    ) -> Result<CompletedPart> {
        let _permit = self.permit().await;
        let out = client
            .upload_part()
            .bucket(&self.inner.location.bucket)
            .key(key)
            .upload_id(upload_id)
            .part_number(part_number)
            .content_length(body.len() as i64)
            .body(ByteStream::from(body))
            .send()
            .await
            .map_err(|e| map_sdk_error(format!("uploading {what}"), e))?;
        let e_tag = out
            .e_tag
            .filter(|t| !t.is_empty())
            .ok_or_else(|| Error::new(ErrorKind::Transient, format!("uploading {what}: no ETag in the answer")))?;
        Ok(CompletedPart::builder().part_number(part_number).e_tag(e_tag).build())
    }

    async fn head_full(&self, full_key: &str) -> Result<Option<ObjectMeta>> {
        let client = self.client().await?;
        let _permit = self.permit().await;
        match client.head_object().bucket(&self.inner.location.bucket).key(full_key).send().await {
            Ok(out) => Ok(Some(ObjectMeta {
                key: String::new(),
                size: out.content_length.and_then(|n| u64::try_from(n).ok()).unwrap_or(0),
            })),
            Err(e) if status_of(&e) == Some(404) => Ok(None),
            Err(e) => Err(map_sdk_error(format!("HEAD {}", self.url(full_key)), e)),
        }
    }

    /// GET with an optional `Range` header; returns the body and whether the server honoured the range.
    async fn get_object(&self, full_key: &str, range: Option<(u64, u64)>) -> Result<(Bytes, bool)> {
        let client = self.client().await?;
        let url = self.url(full_key);
        let _permit = self.permit().await;
        let mut req = client.get_object().bucket(&self.inner.location.bucket).key(full_key);
        if let Some((first, last)) = range {
            req = req.range(format!("bytes={first}-{last}"));
        }
        let out = req.send().await.map_err(|e| map_sdk_error(format!("GET {url}"), e))?;
        let partial = out.content_range.is_some();
        let expected = out.content_length.and_then(|n| u64::try_from(n).ok());
        let body = out
            .body
            .collect()
            .await
            .map_err(|e| Error::new(ErrorKind::Transient, format!("GET {url}: reading the body: {e}")).with_source(e))?
            .into_bytes();
        if let Some(n) = expected
            && n != body.len() as u64
        {
            return Err(Error::new(
                ErrorKind::Transient,
                format!("GET {url}: body of {} bytes, Content-Length said {n}", body.len()),
            ));
        }
        Ok((body, partial))
    }
}

/// Aborts a multipart upload when dropped while armed (the put future was cancelled), so a cancelled upload does
/// not leave parts behind that cost storage.
struct AbortGuard {
    client: Client,
    bucket: String,
    key: String,
    upload_id: String,
    armed: bool,
}

impl AbortGuard {
    /// An armed guard.
    fn new(client: &Client, bucket: &str, key: &str, upload_id: &str) -> Self {
        AbortGuard {
            client: client.clone(),
            bucket: bucket.to_string(),
            key: key.to_string(),
            upload_id: upload_id.to_string(),
            armed: true,
        }
    }
}

impl Drop for AbortGuard {
    fn drop(&mut self) {
        if !self.armed {
            return;
        }
        let Ok(handle) = tokio::runtime::Handle::try_current() else { return };
        let req = self.client.abort_multipart_upload().bucket(&self.bucket).key(&self.key).upload_id(&self.upload_id);
        handle.spawn(async move {
            let _ = req.send().await;
        });
    }
}

/// An object uploaded as it is written ([`Store::writer`]): the bytes are cut in parts of the store's part size; the
/// multipart upload is created when the first part is full (after a HEAD, for a create: an existing object is not
/// uploaded again), and each full part goes up as a task on the store's runtime, retried (`S3Writer::backoff`), at
/// most [`STREAM_PARTS_IN_FLIGHT`] at a time (a write waits for a slot). `commit` sends the last part and completes
/// the upload with the same create semantics as a put; an object that never filled a part is put whole. Dropped
/// before `commit`, the upload is aborted (after the parts in flight end). Not journaled: streamed objects are
/// packs with fresh random names, never put again under the same key.
///
/// The calls block on the runtime: make them from plain threads or `spawn_blocking`, never from async code.
struct S3Writer {
    store: S3Store,
    runtime: Handle,
    /// Retries of every request of the stream: the policy of the `RetryStore` around the store, else `part_retry`.
    backoff: Arc<Backoff>,
    full_key: String,
    mode: PutMode,
    part_size: usize,
    /// The part being filled.
    buf: BytesMut,
    written: u64,
    upload: Option<StreamedUpload>,
    /// A create found the object already there: nothing more is uploaded and `commit` says `AlreadyExists`.
    exists: bool,
    /// A part failed for good: the upload cannot complete.
    failed: bool,
}

/// The multipart upload of a streamed object.
struct StreamedUpload {
    client: Client,
    upload_id: String,
    tasks: JoinSet<Result<(CompletedPart, u64)>>,
    parts: Vec<CompletedPart>,
    next_part: i32,
}

impl StreamedUpload {
    /// Start uploading part `next_part`.
    fn spawn_part(
        &mut self,
        store: &S3Store,
        backoff: &Arc<Backoff>,
        key: &str,
        body: Bytes,
        runtime: &Handle,
    ) -> Result<()> {
        let part_number = self.next_part;
        if part_number as u64 > MAX_PARTS {
            return Err(Error::config(format!(
                "{}: a streamed object cannot have more than {MAX_PARTS} parts of {} bytes",
                store.url(key),
                body.len()
            )));
        }
        self.next_part += 1;
        let part = store.clone().upload_part_retrying(
            backoff.clone(),
            self.client.clone(),
            key.to_string(),
            self.upload_id.clone(),
            part_number,
            body,
        );
        self.tasks.spawn_on(part, runtime);
        Ok(())
    }

    /// Take the result of a finished part task.
    fn finished(
        &mut self,
        done: std::result::Result<Result<(CompletedPart, u64)>, tokio::task::JoinError>,
    ) -> Result<()> {
        let (part, _) = done.map_err(|e| Error::new(ErrorKind::Other, format!("part upload task failed: {e}")))??;
        self.parts.push(part);
        Ok(())
    }

    /// Wait for every part in flight; the first error is returned once they all ended.
    async fn join_all(&mut self) -> Result<()> {
        let mut first_err = None;
        while let Some(done) = self.tasks.join_next().await {
            if let Err(e) = self.finished(done) {
                first_err.get_or_insert(e);
            }
        }
        first_err.map_or(Ok(()), Err)
    }
}

impl S3Writer {
    /// Upload the full part in the buffer (creating the upload first if needed).
    fn send_part(&mut self) -> Result<()> {
        let body = std::mem::replace(&mut self.buf, BytesMut::with_capacity(self.part_size)).freeze();
        let (store, key, runtime, mode) = (&self.store, &self.full_key, &self.runtime, self.mode);
        let backoff = &self.backoff;
        if self.upload.is_none() {
            let started = runtime.block_on(async {
                // Retried here like every request of a streamed object (RetryStore cannot redo a stream).
                let url = store.url(key);
                let head = || backoff.run("checking", &url, || store.head_full(key));
                if mode == PutMode::Create && head().await?.is_some() {
                    return Ok(None);
                }
                let client = store.client().await?.clone();
                let upload_id = store.create_upload(backoff, &client, key).await?;
                Ok::<_, Error>(Some(StreamedUpload {
                    client,
                    upload_id,
                    tasks: JoinSet::new(),
                    parts: Vec::new(),
                    next_part: 1,
                }))
            })?;
            match started {
                Some(upload) => self.upload = Some(upload),
                None => {
                    // A create of an existing object: do not upload what will be refused.
                    self.exists = true;
                    self.buf = BytesMut::new();
                    return Ok(());
                }
            }
        }
        let upload = self.upload.as_mut().expect("started above");
        let in_flight = STREAM_PARTS_IN_FLIGHT.min(store.inner.config.max_in_flight.unwrap_or(DEFAULT_MAX_IN_FLIGHT));
        while let Some(done) = upload.tasks.try_join_next() {
            upload.finished(done)?;
        }
        while upload.tasks.len() >= in_flight {
            let done = runtime.block_on(upload.tasks.join_next()).expect("tasks are in flight");
            upload.finished(done)?;
        }
        upload.spawn_part(store, backoff, key, body, runtime)
    }

    fn check_usable(&self) -> Result<()> {
        if self.failed {
            return Err(Error::new(
                ErrorKind::Other,
                format!("{}: an earlier write of this streamed object failed", self.store.url(&self.full_key)),
            ));
        }
        Ok(())
    }
}

impl ObjectWriter for S3Writer {
    fn write(&mut self, mut data: &[u8]) -> Result<()> {
        self.check_usable()?;
        while !data.is_empty() {
            let take = (self.part_size - self.buf.len()).min(data.len());
            if !self.exists {
                self.buf.extend_from_slice(&data[..take]);
            }
            self.written += take as u64;
            data = &data[take..];
            if self.buf.len() == self.part_size
                && let Err(e) = self.send_part()
            {
                self.failed = true;
                return Err(e);
            }
        }
        Ok(())
    }

    fn written(&self) -> u64 {
        self.written
    }

    fn commit(mut self: Box<Self>) -> Result<PutOutcome> {
        self.check_usable()?;
        if self.exists {
            return Ok(PutOutcome::AlreadyExists);
        }
        let data = std::mem::take(&mut self.buf).freeze();
        let Some(mut upload) = self.upload.take() else {
            // Never filled a part: a put, as `Store::put` would do it, retried here (RetryStore does not see it).
            let (store, key, mode, backoff) = (&self.store, &self.full_key, self.mode, &self.backoff);
            return self.runtime.block_on(async {
                if data.len() as u64 > store.inner.tuning.multipart_threshold {
                    // Parts larger than the threshold: a multipart put, whose requests are retried one by one.
                    return store.put_multipart(key, data, mode).await;
                }
                let url = store.url(key);
                backoff.run("putting", &url, || store.put_single(key, data.clone(), mode)).await
            });
        };
        let (store, key, runtime, mode, len) = (&self.store, &self.full_key, &self.runtime, self.mode, self.written);
        let backoff = &self.backoff;
        let result = runtime.block_on(async {
            if !data.is_empty() {
                upload.spawn_part(store, backoff, key, data, runtime)?;
            }
            upload.join_all().await?;
            let parts = std::mem::take(&mut upload.parts);
            store.complete_upload(backoff, &upload.client, key, &upload.upload_id, parts, len, mode).await
        });
        if !matches!(result, Ok(PutOutcome::Written)) {
            // Refused by If-None-Match, or failed: abort now and wait for it, so that nothing is left behind.
            runtime.block_on(async {
                let _ = upload.join_all().await;
                store.abort_upload(&upload.client, key, &upload.upload_id).await;
            });
        }
        result
    }
}

impl Drop for S3Writer {
    /// Not committed: abort the upload, from a task, once the parts in flight ended (a part the server handled
    /// after the abort would stay behind).
    fn drop(&mut self) {
        let Some(mut upload) = self.upload.take() else { return };
        let (store, key) = (self.store.clone(), self.full_key.clone());
        self.runtime.spawn(async move {
            let _ = upload.join_all().await;
            store.abort_upload(&upload.client, &key, &upload.upload_id).await;
        });
    }
}

/// What ListParts says of one part.
#[derive(Debug)]
struct ListedPart {
    size: Option<u64>,
    e_tag: Option<String>,
}

/// BLAKE3 of a whole object and of each of its parts.
#[derive(Debug)]
struct PartHashes {
    whole: blake3::Hash,
    parts: Vec<blake3::Hash>,
}

/// Hash an object and its parts off the async workers.
async fn hash_parts(data: Bytes, part_size: u64) -> Result<PartHashes> {
    tokio::task::spawn_blocking(move || PartHashes {
        whole: blake3::hash(&data),
        parts: data.chunks(part_size as usize).map(blake3::hash).collect(),
    })
    .await
    .map_err(|e| Error::new(ErrorKind::Other, format!("hashing task failed: {e}")))
}

/// Whether two ETags are the same (ignoring the quotes some servers leave out).
fn same_etag(a: &str, b: &str) -> bool {
    a.trim_matches('"') == b.trim_matches('"')
}

/// The recorded parts of a journaled upload, when the upload was of an object of `len` bytes with these hashes,
/// cut in parts of `part_size`; otherwise why it cannot be resumed.
fn usable_parts<'a>(
    recorded: &'a Recorded,
    len: u64,
    part_size: u64,
    hashes: &PartHashes,
) -> std::result::Result<Vec<&'a PartRecord>, &'static str> {
    let upload = &recorded.upload;
    if upload.len != len || upload.blake3 != hashes.whole.to_hex().as_str() {
        return Err("it was of other bytes");
    }
    if upload.part_size != part_size {
        return Err("it was cut in parts of another size");
    }
    recorded
        .parts
        .values()
        .map(|p| {
            let i =
                usize::try_from(p.part - 1).ok().filter(|&i| i < hashes.parts.len()).ok_or("a part is out of range")?;
            let size = part_size.min(len - i as u64 * part_size);
            if p.size != size || p.blake3 != hashes.parts[i].to_hex().as_str() || p.etag.is_empty() {
                return Err("a recorded part differs from the bytes to upload");
            }
            Ok(p)
        })
        .collect()
}

/// The endpoint the AWS environment variables configure for S3, if any (honouring
/// `AWS_IGNORE_CONFIGURED_ENDPOINT_URLS`).
fn env_endpoint() -> Option<String> {
    let var = |name: &str| std::env::var(name).ok().filter(|v| !v.is_empty());
    if var("AWS_IGNORE_CONFIGURED_ENDPOINT_URLS").is_some_and(|v| v.eq_ignore_ascii_case("true")) {
        return None;
    }
    var("AWS_ENDPOINT_URL_S3").or_else(|| var("AWS_ENDPOINT_URL"))
}

async fn build_client(config: &S3Config) -> Result<Client> {
    // One TLS stack (rustls with ring) for the SDK and for the credential providers.
    let http_client: SharedHttpClient = aws_smithy_http_client::Builder::new()
        .tls_provider(aws_smithy_http_client::tls::Provider::Rustls(
            aws_smithy_http_client::tls::rustls_provider::CryptoMode::Ring,
        ))
        .build_https();
    let mut loader = aws_config::defaults(BehaviorVersion::latest()).http_client(http_client);
    if let Some(url) = &config.endpoint_url {
        loader = loader.endpoint_url(url);
    }
    if let Some(region) = &config.region {
        loader = loader.region(Region::new(region.clone()));
    }
    if let (Some(id), Some(secret)) = (&config.access_key_id, &config.secret_access_key) {
        loader = loader.credentials_provider(Credentials::new(
            id.clone(),
            secret.clone(),
            config.session_token.clone(),
            None,
            "mover-config",
        ));
    }
    let sdk = loader.load().await;
    // AWS_ENDPOINT_URL lands in the shared config; the S3-specific variable is applied by the S3 config builder.
    let custom_endpoint = sdk.endpoint_url().is_some() || env_endpoint().is_some();
    let mut builder = aws_sdk_s3::config::Builder::from(&sdk)
        // Retries are done by RetryStore, in one place, for every store.
        .retry_config(RetryConfig::disabled())
        .timeout_config({
            let mut t = TimeoutConfig::builder()
                .connect_timeout(Duration::from_secs(config.connect_timeout_secs.unwrap_or(10)));
            if let Some(s) = config.attempt_timeout_secs {
                t = t.operation_attempt_timeout(Duration::from_secs(s));
            }
            t.build()
        })
        .force_path_style(config.force_path_style.unwrap_or(custom_endpoint));
    if sdk.region().is_none() {
        if custom_endpoint {
            builder = builder.region(Region::from_static("us-east-1"));
        } else {
            return Err(Error::config("no S3 region: set AWS_REGION, a profile region or the region option"));
        }
    }
    let when_required = match config.checksum_mode {
        ChecksumMode::Auto => custom_endpoint,
        ChecksumMode::WhenSupported => false,
        ChecksumMode::WhenRequired => true,
    };
    if when_required {
        builder = builder
            .request_checksum_calculation(RequestChecksumCalculation::WhenRequired)
            .response_checksum_validation(ResponseChecksumValidation::WhenRequired);
    }
    Ok(Client::from_conf(builder.build()))
}

type RawResponse = aws_sdk_s3::config::http::HttpResponse;

fn status_of<E>(err: &SdkError<E, RawResponse>) -> Option<u16> {
    err.raw_response().map(|r| r.status().as_u16())
}

/// 412 PreconditionFailed (the object exists), or 409 ConditionalRequestConflict (a concurrent conditional write
/// of the same key won): both mean "already there" for a create.
fn is_precondition_conflict<E: ProvideErrorMetadata>(err: &SdkError<E, RawResponse>) -> bool {
    match status_of(err) {
        Some(412) => true,
        Some(409) => matches!(err.code(), Some("ConditionalRequestConflict")),
        _ => false,
    }
}

/// What an HTTP status and S3 error code mean for mover.
fn classify(status: u16, code: Option<&str>) -> ErrorKind {
    match (status, code) {
        (_, Some("NoSuchBucket")) => ErrorKind::Config,
        (404, _) | (_, Some("NoSuchKey" | "NotFound")) => ErrorKind::NotFound,
        (416, _) | (_, Some("InvalidRange")) => ErrorKind::Corrupt,
        (
            _,
            Some(
                "SlowDown"
                | "Throttling"
                | "ThrottlingException"
                | "RequestTimeout"
                | "InternalError"
                | "ServiceUnavailable"
                | "OperationAborted",
            ),
        ) => ErrorKind::Transient,
        (408 | 429, _) | (500..=599, _) => ErrorKind::Transient,
        (400 | 401 | 403 | 405, _) => ErrorKind::Config,
        _ => ErrorKind::Other,
    }
}

/// Turn an SDK error into a mover [`Error`] whose kind says whether a retry can help. Messages name the operation
/// and object, never credentials.
fn map_sdk_error<E>(what: String, err: SdkError<E, RawResponse>) -> Error
where
    E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
{
    let (kind, detail) = match &err {
        SdkError::ConstructionFailure(_) => (ErrorKind::Config, "could not build the request".to_string()),
        SdkError::TimeoutError(_) => (ErrorKind::Transient, "timed out".to_string()),
        SdkError::DispatchFailure(d) => {
            let kind = if d.is_user() { ErrorKind::Config } else { ErrorKind::Transient };
            let why = if d.is_timeout() {
                "timed out"
            } else if d.is_io() {
                "connection failed or was reset"
            } else {
                "request could not be sent"
            };
            (kind, format!("{why}: {}", aws_sdk_s3::error::DisplayErrorContext(&err)))
        }
        SdkError::ResponseError(_) => {
            (ErrorKind::Transient, format!("bad response: {}", aws_sdk_s3::error::DisplayErrorContext(&err)))
        }
        SdkError::ServiceError(_) => {
            let status = status_of(&err).unwrap_or(0);
            let code = err.code();
            let message = err.message().unwrap_or("");
            (classify(status, code), format!("HTTP {status} {} {message}", code.unwrap_or("")).trim_end().to_string())
        }
        _ => (ErrorKind::Other, aws_sdk_s3::error::DisplayErrorContext(&err).to_string()),
    };
    Error::new(kind, format!("{what}: {detail}")).with_source(err)
}

#[async_trait]
impl Store for S3Store {
    fn describe(&self) -> String {
        match &self.inner.endpoint_shown {
            Some(ep) => format!("{} at {ep}", self.inner.location),
            None => self.inner.location.to_string(),
        }
    }

    async fn put(&self, key: &str, data: Bytes, mode: PutMode) -> Result<PutOutcome> {
        let full_key = self.full_key(key)?;
        self.put_full(&full_key, data, mode).await
    }

    /// A writer that uploads the object as it grows: parts of the configured part size go up as soon as they are
    /// full, at most [`STREAM_PARTS_IN_FLIGHT`] at a time. `None` (the caller puts the object whole) when there is
    /// no tokio runtime to run the requests on.
    fn writer(&self, key: &str, mode: PutMode) -> Result<Option<Box<dyn ObjectWriter>>> {
        self.stream_writer(key, mode, self.inner.part_backoff.clone())
    }

    /// Puts are journaled (with a state directory) and retried whole by `RetryStore`; a stream is neither.
    fn resumes_puts(&self) -> bool {
        true
    }

    /// [`Store::writer`] whose requests are retried under `retry` (the policy of the [`super::RetryStore`] around
    /// this store) instead of [`S3Config::part_retry`].
    fn writer_retrying(
        &self,
        key: &str,
        mode: PutMode,
        retry: &StoreRetryConfig,
    ) -> Result<Option<Box<dyn ObjectWriter>>> {
        self.stream_writer(key, mode, Arc::new(Backoff::new(retry.clone())?))
    }

    async fn get(&self, key: &str) -> Result<Bytes> {
        let full_key = self.full_key(key)?;
        Ok(self.get_object(&full_key, None).await?.0)
    }

    async fn get_range(&self, key: &str, range: Range<u64>) -> Result<Bytes> {
        let full_key = self.full_key(key)?;
        let outside = |len: Option<u64>| {
            Error::new(
                ErrorKind::Corrupt,
                format!(
                    "range {}..{} is outside object {} of {} bytes",
                    range.start,
                    range.end,
                    self.url(&full_key),
                    len.map_or("fewer".to_string(), |n| n.to_string())
                ),
            )
        };
        if range.start >= range.end {
            // HTTP cannot express an empty range: check the start against the size.
            let meta = self.head_full(&full_key).await?;
            return match meta {
                None => Err(Error::new(ErrorKind::NotFound, format!("object {} not found", self.url(&full_key)))),
                Some(m) if range.start < m.size && range.start == range.end => Ok(Bytes::new()),
                Some(m) => Err(outside(Some(m.size))),
            };
        }
        match self.get_object(&full_key, Some((range.start, range.end - 1))).await {
            Ok((body, true)) => Ok(body),
            // The server ignored the Range header and sent the whole object: cut the range out here.
            Ok((body, false)) => super::memory::slice_range(&self.url(&full_key), &body, range),
            Err(e) if e.kind() == ErrorKind::Corrupt => Err(outside(None).with_source(e)),
            Err(e) => Err(e),
        }
    }

    async fn head(&self, key: &str) -> Result<Option<ObjectMeta>> {
        let full_key = self.full_key(key)?;
        Ok(self.head_full(&full_key).await?.map(|m| ObjectMeta { key: key.to_string(), size: m.size }))
    }

    async fn list(&self, prefix: &str) -> Result<Vec<ObjectMeta>> {
        let client = self.client().await?;
        let full_prefix = self.full_key_unchecked(prefix);
        let strip = if self.inner.location.prefix.is_empty() { 0 } else { self.inner.location.prefix.len() + 1 };
        let mut out = Vec::new();
        let mut token: Option<String> = None;
        loop {
            let _permit = self.permit().await;
            let page = client
                .list_objects_v2()
                .bucket(&self.inner.location.bucket)
                .prefix(&full_prefix)
                .max_keys(LIST_PAGE)
                .set_continuation_token(token.take())
                .send()
                .await
                .map_err(|e| map_sdk_error(format!("LIST {}", self.url(&full_prefix)), e))?;
            for obj in page.contents() {
                let Some(k) = obj.key() else { continue };
                if !k.starts_with(&full_prefix) || k.len() < strip {
                    continue;
                }
                let size = obj.size().and_then(|n| u64::try_from(n).ok()).unwrap_or(0);
                out.push(ObjectMeta { key: k[strip..].to_string(), size });
            }
            match page.next_continuation_token() {
                Some(t) if page.is_truncated() == Some(true) => token = Some(t.to_string()),
                _ => break,
            }
        }
        // S3 lists in binary key order already; some compatible servers do not.
        out.sort_by(|a, b| a.key.cmp(&b.key));
        out.dedup_by(|a, b| a.key == b.key);
        Ok(out)
    }

    async fn delete(&self, key: &str) -> Result<()> {
        let full_key = self.full_key(key)?;
        let client = self.client().await?;
        let _permit = self.permit().await;
        match client.delete_object().bucket(&self.inner.location.bucket).key(&full_key).send().await {
            Ok(_) => Ok(()),
            Err(e) if status_of(&e) == Some(404) => Ok(()),
            Err(e) => Err(map_sdk_error(format!("DELETE {}", self.url(&full_key)), e)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_locations() {
        let l = S3Location::parse("s3://my-bucket").unwrap();
        assert_eq!((l.bucket.as_str(), l.prefix.as_str()), ("my-bucket", ""));
        let l = S3Location::parse("s3://my-bucket/a/b/").unwrap();
        assert_eq!((l.bucket.as_str(), l.prefix.as_str()), ("my-bucket", "a/b"));
        assert_eq!(l.to_string(), "s3://my-bucket/a/b");
        for bad in ["my-bucket/x", "s3://", "s3://B", "s3://ab", "s3://-bucket", "s3://bucket//x", "s3://bucket/../x"] {
            assert!(S3Location::parse(bad).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn part_sizes_respect_s3_limits() {
        const MIB: u64 = 1 << 20;
        assert_eq!(part_size_for(100 * MIB, 8 * MIB).unwrap(), 8 * MIB);
        assert_eq!(part_size_for(100 * MIB, MIB).unwrap(), MIN_PART_SIZE);
        for len in [10_000 * 8 * MIB + 1, 200_000 * MIB, 5 << 40] {
            let size = part_size_for(len, 8 * MIB).unwrap();
            assert!(len.div_ceil(size) <= MAX_PARTS, "{len} in parts of {size}");
            assert!((MIN_PART_SIZE..=MAX_PART_SIZE).contains(&size) && size.is_multiple_of(MIB));
        }
        assert!(part_size_for(MAX_PARTS * MAX_PART_SIZE + 1, 8 * MIB).is_err());
    }

    #[test]
    fn debug_and_describe_hide_secrets() {
        let config = S3Config {
            endpoint_url: Some("http://user:pw-in-url@127.0.0.1:9000".into()),
            access_key_id: Some("AKIDEXAMPLE".into()),
            secret_access_key: Some("very-secret-key".into()),
            session_token: Some("very-secret-token".into()),
            ..S3Config::default()
        };
        let store = S3Store::from_url("s3://bucket/pre", config.clone()).unwrap();
        for shown in [format!("{config:?}"), format!("{store:?}"), store.describe()] {
            for secret in ["very-secret-key", "very-secret-token", "pw-in-url"] {
                assert!(!shown.contains(secret), "{secret} shown in {shown}");
            }
        }
        assert_eq!(store.describe(), "s3://bucket/pre at http://127.0.0.1:9000");
    }

    #[test]
    fn s3_destinations_open() {
        let store = super::super::open_destination("s3://bucket/some/prefix/").unwrap();
        assert!(store.describe().starts_with("s3://bucket/some/prefix"), "{}", store.describe());
        assert!(super::super::open_destination("s3://Bad_Bucket").is_err());
    }

    #[test]
    fn config_is_validated() {
        let loc = || S3Location::parse("s3://bucket").unwrap();
        assert!(S3Store::new(loc(), S3Config { part_size: Some(1 << 20), ..Default::default() }).is_err());
        assert!(S3Store::new(loc(), S3Config { max_in_flight: Some(0), ..Default::default() }).is_err());
        assert!(S3Store::new(loc(), S3Config { access_key_id: Some("a".into()), ..Default::default() }).is_err());
        assert!(
            S3Store::new(loc(), S3Config { endpoint_url: Some("127.0.0.1:1".into()), ..Default::default() }).is_err()
        );
        let parsed: S3Config =
            serde_json::from_str(r#"{"endpoint_url":"http://127.0.0.1:7480","checksum_mode":"when-required"}"#)
                .unwrap();
        assert_eq!(parsed.checksum_mode, ChecksumMode::WhenRequired);
        assert!(serde_json::from_str::<S3Config>(r#"{"endpoint":"x"}"#).is_err(), "unknown fields are refused");
    }

    #[test]
    fn journaled_parts_must_match_the_bytes() {
        use std::collections::BTreeMap;
        const PART: u64 = 5 << 20;
        let data: Vec<u8> = (0..(12 << 20) as u32).map(|i| (i % 251) as u8).collect();
        let len = data.len() as u64;
        let hashes =
            PartHashes { whole: blake3::hash(&data), parts: data.chunks(PART as usize).map(blake3::hash).collect() };
        let part = |n: i32, size: u64| PartRecord {
            part: n,
            size,
            etag: format!("\"e{n}\""),
            blake3: hashes.parts[(n - 1) as usize].to_hex().to_string(),
        };
        let recorded = |upload: UploadRecord, parts: Vec<PartRecord>| Recorded {
            upload,
            parts: parts.into_iter().map(|p| (p.part, p)).collect::<BTreeMap<_, _>>(),
        };
        let header = UploadRecord::new("b", "k", "u", PART, len, &hashes.whole);
        let good = recorded(header.clone(), vec![part(1, PART), part(3, 2 << 20)]);
        assert_eq!(usable_parts(&good, len, PART, &hashes).unwrap().len(), 2);
        // Other bytes, another length, another part size: nothing is reused.
        let other = UploadRecord::new("b", "k", "u", PART, len, &blake3::hash(b"other"));
        assert!(usable_parts(&recorded(other, vec![part(1, PART)]), len, PART, &hashes).is_err());
        assert!(usable_parts(&good, len - 1, PART, &hashes).is_err());
        assert!(usable_parts(&good, len, 6 << 20, &hashes).is_err());
        // A part whose size, hash or number does not fit the bytes spoils the entry.
        assert!(usable_parts(&recorded(header.clone(), vec![part(3, PART)]), len, PART, &hashes).is_err());
        let mut wrong_hash = part(2, PART);
        wrong_hash.blake3 = hashes.parts[0].to_hex().to_string();
        assert!(usable_parts(&recorded(header.clone(), vec![wrong_hash]), len, PART, &hashes).is_err());
        let mut beyond = part(3, 2 << 20);
        beyond.part = 4;
        assert!(usable_parts(&recorded(header.clone(), vec![beyond]), len, PART, &hashes).is_err());
        assert!(same_etag("\"abc\"", "abc") && !same_etag("\"abc\"", "\"abd\""));
    }

    #[test]
    fn error_classification() {
        assert_eq!(classify(404, Some("NoSuchKey")), ErrorKind::NotFound);
        assert_eq!(classify(404, None), ErrorKind::NotFound);
        assert_eq!(classify(404, Some("NoSuchBucket")), ErrorKind::Config);
        assert_eq!(classify(503, Some("SlowDown")), ErrorKind::Transient);
        assert_eq!(classify(500, Some("InternalError")), ErrorKind::Transient);
        assert_eq!(classify(502, None), ErrorKind::Transient);
        assert_eq!(classify(429, None), ErrorKind::Transient);
        assert_eq!(classify(400, Some("RequestTimeout")), ErrorKind::Transient);
        assert_eq!(classify(403, Some("AccessDenied")), ErrorKind::Config);
        assert_eq!(classify(403, Some("SignatureDoesNotMatch")), ErrorKind::Config);
        assert_eq!(classify(416, Some("InvalidRange")), ErrorKind::Corrupt);
        assert_eq!(classify(409, Some("BucketNotEmpty")), ErrorKind::Other);
    }
}
