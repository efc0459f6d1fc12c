//! An S3 server inside the test process: s3s-fs over a temporary directory, SigV4 authentication with a test key,
//! served by hyper on 127.0.0.1 (a free port), with optional fault injection between the client and s3s.
//!
//! ```ignore
//! let server = S3Server::start().await?;          // bucket `S3Server::BUCKET` exists, empty
//! let store: DynStore = server.store("run-1");    // S3Store at s3://mover-test/run-1, SDK over real HTTP
//! server.set_faults(every(3, 0, 0));              // every 3rd request: 503 SlowDown
//! // A child process (moverd) reaches it with `server.url("run-1")` and the variables of `server.aws_env()`.
//! ```
//!
//! The server stops when the [`S3Server`] is dropped; its files live in [`S3Server::root`] until then.

// A toolbox for every test module: not each one uses every helper.
#![allow(dead_code)]

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use mover_core::store::{DynStore, S3Config, S3Location, S3Store};
use s3s::service::{S3Service, S3ServiceBuilder};
use tokio::net::TcpListener;
use tokio::task::{JoinHandle, JoinSet};

/// A fault the server can inject instead of answering a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// 503 with S3 error code `SlowDown` (throttling).
    SlowDown,
    /// 500 with S3 error code `InternalError`.
    InternalError,
    /// The connection is closed without an answer.
    Reset,
    /// The request is carried out, then the connection is closed without an answer (the answer is lost).
    LoseAnswer,
}

/// What the server saw of one request.
#[derive(Debug, Clone)]
pub struct RequestInfo {
    /// 1-based number of the request since the server started.
    pub n: u64,
    /// HTTP method.
    pub method: String,
    /// Path (`/bucket/key`).
    pub path: String,
    /// Query string without `?` (empty when none).
    pub query: String,
    /// The fault injected instead of an answer, if any.
    pub fault: Option<Fault>,
}

impl RequestInfo {
    /// Whether this is an UploadPart request.
    pub fn is_upload_part(&self) -> bool {
        self.method == "PUT" && self.query.contains("partNumber=")
    }
}

/// Decides per request whether to inject a fault (the request's number is in [`RequestInfo::n`]).
pub type FaultRule = dyn Fn(&RequestInfo) -> Option<Fault> + Send + Sync;

/// Every `n503`-th request gets a 503 SlowDown, every `n500`-th a 500, every `nreset`-th a killed connection
/// (0: never); the first matching rule in that order wins. One request (the same method, path and query) is
/// faulted at most [`MAX_FAULTS_IN_A_ROW`] times in a row, so that a client that retries gets through: the rule
/// tests recovery, not luck. (Without the cap, `every(4, 7, 9)` faults 44 % of requests independently of their
/// retries: an operation failed all of its 8 attempts about once in 700, and a run of a few hundred operations
/// failed about one time in ten.)
pub fn every(n503: u64, n500: u64, nreset: u64) -> impl Fn(&RequestInfo) -> Option<Fault> + Send + Sync {
    let in_a_row: Mutex<std::collections::HashMap<String, u32>> = Mutex::default();
    move |r| {
        let hit = |every: u64| every != 0 && r.n.is_multiple_of(every);
        let fault = if hit(n503) {
            Some(Fault::SlowDown)
        } else if hit(n500) {
            Some(Fault::InternalError)
        } else if hit(nreset) {
            Some(Fault::Reset)
        } else {
            None
        };
        let mut in_a_row = in_a_row.lock().unwrap();
        let id = format!("{} {}?{}", r.method, r.path, r.query);
        match fault {
            Some(_) if in_a_row.get(&id).copied().unwrap_or(0) >= MAX_FAULTS_IN_A_ROW => {
                in_a_row.remove(&id);
                None
            }
            Some(f) => {
                *in_a_row.entry(id).or_default() += 1;
                Some(f)
            }
            None => {
                in_a_row.remove(&id);
                None
            }
        }
    }
}

/// See [`every`]: fewer than the 8 attempts of the default retry policy.
pub const MAX_FAULTS_IN_A_ROW: u32 = 3;

#[derive(Default)]
struct State {
    requests: AtomicU64,
    rule: Mutex<Option<Arc<FaultRule>>>,
    log: Mutex<Vec<RequestInfo>>,
}

/// A running in-process S3 server (see the module docs).
pub struct S3Server {
    endpoint: String,
    root: tempfile::TempDir,
    state: Arc<State>,
    task: JoinHandle<()>,
}

impl S3Server {
    /// The bucket that exists from the start.
    pub const BUCKET: &'static str = "mover-test";
    /// The test access key id.
    pub const ACCESS_KEY: &'static str = "MOVERTESTACCESSKEY01";
    /// The test secret key.
    pub const SECRET_KEY: &'static str = "mover-test-secret-key-for-loopback-only";

    /// Start a server on 127.0.0.1 with an empty bucket [`Self::BUCKET`].
    pub async fn start() -> anyhow::Result<S3Server> {
        let root = tempfile::tempdir()?;
        std::fs::create_dir(root.path().join(Self::BUCKET))?;
        let fs = s3s_fs::FileSystem::new(root.path()).map_err(|e| anyhow::anyhow!("s3s-fs: {e:?}"))?;
        let mut builder = S3ServiceBuilder::new(fs);
        builder.set_auth(s3s::auth::SimpleAuth::from_single(Self::ACCESS_KEY, Self::SECRET_KEY));
        let service = builder.build();

        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let endpoint = format!("http://{}", listener.local_addr()?);
        let state = Arc::new(State::default());
        let task = tokio::spawn(serve(listener, service, state.clone()));
        Ok(S3Server { endpoint, root, state, task })
    }

    /// `http://127.0.0.1:PORT`.
    pub fn endpoint(&self) -> &str {
        &self.endpoint
    }

    /// The directory s3s-fs keeps its files in (buckets are subdirectories, objects files below them).
    pub fn root(&self) -> &std::path::Path {
        self.root.path()
    }

    /// An [`S3Config`] for this server: endpoint, test keys, region, and multipart from 6 MiB in 5 MiB parts (so
    /// that tests exercise multipart with small objects).
    pub fn config(&self) -> S3Config {
        S3Config {
            endpoint_url: Some(self.endpoint.clone()),
            region: Some("us-east-1".into()),
            access_key_id: Some(Self::ACCESS_KEY.into()),
            secret_access_key: Some(Self::SECRET_KEY.into()),
            part_size: Some(5 << 20),
            multipart_threshold: Some(6 << 20),
            ..S3Config::default()
        }
    }

    /// An [`S3Store`] at `s3://BUCKET/prefix` (empty prefix: the bucket root) with [`Self::config`].
    pub fn s3_store(&self, prefix: &str) -> S3Store {
        self.s3_store_with(prefix, self.config())
    }

    /// An [`S3Store`] at `s3://BUCKET/prefix` with the given config.
    pub fn s3_store_with(&self, prefix: &str, config: S3Config) -> S3Store {
        let location = S3Location { bucket: Self::BUCKET.into(), prefix: prefix.into() };
        S3Store::new(location, config).expect("valid test config")
    }

    /// [`Self::s3_store`] as a type-erased store.
    pub fn store(&self, prefix: &str) -> DynStore {
        Arc::new(self.s3_store(prefix))
    }

    /// `s3://BUCKET/prefix` (or `s3://BUCKET` for an empty prefix): the destination string for this server.
    pub fn url(&self, prefix: &str) -> String {
        if prefix.is_empty() { format!("s3://{}", Self::BUCKET) } else { format!("s3://{}/{prefix}", Self::BUCKET) }
    }

    /// Environment variables for a child process (moverd, say) so that `open_destination(&server.url(..))` reaches
    /// this server through the standard AWS configuration. Instance metadata is disabled so the credential chain
    /// never leaves loopback.
    pub fn aws_env(&self) -> Vec<(&'static str, String)> {
        vec![
            ("AWS_ENDPOINT_URL", self.endpoint.clone()),
            ("AWS_ACCESS_KEY_ID", Self::ACCESS_KEY.into()),
            ("AWS_SECRET_ACCESS_KEY", Self::SECRET_KEY.into()),
            ("AWS_REGION", "us-east-1".into()),
            ("AWS_EC2_METADATA_DISABLED", "true".into()),
        ]
    }

    /// Inject faults decided by `rule` from now on.
    pub fn set_faults(&self, rule: impl Fn(&RequestInfo) -> Option<Fault> + Send + Sync + 'static) {
        *self.state.rule.lock().unwrap() = Some(Arc::new(rule));
    }

    /// Stop injecting faults.
    pub fn clear_faults(&self) {
        *self.state.rule.lock().unwrap() = None;
    }

    /// Every request seen so far, in arrival order.
    pub fn requests(&self) -> Vec<RequestInfo> {
        self.state.log.lock().unwrap().clone()
    }
}

impl Drop for S3Server {
    fn drop(&mut self) {
        // Aborting the accept loop drops its JoinSet, which aborts every connection task.
        self.task.abort();
    }
}

async fn serve(listener: TcpListener, service: S3Service, state: Arc<State>) {
    let mut connections = JoinSet::new();
    loop {
        let Ok((socket, _)) = listener.accept().await else { continue };
        let service = service.clone();
        let state = state.clone();
        connections.spawn(async move {
            let svc = service_fn(move |req| handle(state.clone(), service.clone(), req));
            // Errors here are clients going away and injected resets; neither is interesting.
            let _ = http1::Builder::new().serve_connection(TokioIo::new(socket), svc).await;
        });
        while connections.try_join_next().is_some() {}
    }
}

async fn handle(
    state: Arc<State>,
    service: S3Service,
    req: Request<Incoming>,
) -> Result<Response<s3s::Body>, s3s::HttpError> {
    let mut info = RequestInfo {
        n: state.requests.fetch_add(1, Ordering::SeqCst) + 1,
        method: req.method().to_string(),
        path: req.uri().path().to_string(),
        query: req.uri().query().unwrap_or("").to_string(),
        fault: None,
    };
    let rule = state.rule.lock().unwrap().clone();
    info.fault = rule.and_then(|r| r(&info));
    let fault = info.fault;
    state.log.lock().unwrap().push(info);
    match fault {
        None => service.call(req.map(s3s::Body::from)).await,
        Some(Fault::SlowDown) => {
            Ok(error_response(StatusCode::SERVICE_UNAVAILABLE, "SlowDown", "Please reduce your request rate."))
        }
        Some(Fault::InternalError) => {
            Ok(error_response(StatusCode::INTERNAL_SERVER_ERROR, "InternalError", "injected"))
        }
        // hyper closes the connection without an answer when the service fails.
        Some(Fault::Reset) => Err(s3s::HttpError::new("injected connection reset".into())),
        Some(Fault::LoseAnswer) => {
            let answer = service.call(req.map(s3s::Body::from)).await;
            drop(answer);
            Err(s3s::HttpError::new("injected: answer lost".into()))
        }
    }
}

fn error_response(status: StatusCode, code: &str, message: &str) -> Response<s3s::Body> {
    let xml = format!(
        r#"<?xml version="1.0" encoding="UTF-8"?><Error><Code>{code}</Code><Message>{message}</Message><RequestId>fault</RequestId></Error>"#
    );
    Response::builder()
        .status(status)
        .header("content-type", "application/xml")
        .body(s3s::Body::from(xml))
        .expect("static response")
}

/// A Ceph RGW from the environment (`MOVER_TEST_RGW_ENDPOINT`, `…_ACCESS_KEY`, `…_SECRET_KEY`, `…_BUCKET`, as
/// `scripts/ceph-rgw.sh env` prints them): its bucket and the store configuration, or `None` when not set.
pub fn rgw_from_env() -> Option<(String, S3Config)> {
    let endpoint = std::env::var("MOVER_TEST_RGW_ENDPOINT").ok()?;
    let var = |name: &str, default: &str| std::env::var(name).unwrap_or_else(|_| default.to_string());
    let config = S3Config {
        endpoint_url: Some(endpoint),
        region: Some("us-east-1".into()),
        access_key_id: Some(var("MOVER_TEST_RGW_ACCESS_KEY", "testkey")),
        secret_access_key: Some(var("MOVER_TEST_RGW_SECRET_KEY", "testsecret")),
        ..S3Config::default()
    };
    Some((var("MOVER_TEST_RGW_BUCKET", "mover-test"), config))
}
