//! Shared helpers for the health-check tests: real backends on loopback, a balancer with
//! active-only health, bounded waits and a probe-result recorder.

use std::collections::HashMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU16, AtomicUsize, Ordering::SeqCst};
use std::sync::Arc;

use divvy::strategy::RoundRobin;
use divvy::{Backend, Balancer, HealthConfig};
use divvy_tower::health::{HealthChecker, ProbeReport};
use parking_lot::Mutex;
use tokio::net::{TcpListener, TcpSocket};
use tokio::task::JoinHandle;

pub use divvy_test::eventually;

/// HAProxy's defaults, which the deadlines below are computed from.
pub const RISE: u32 = 2;
pub const FALL: u32 = 3;

/// A balancer over `ids` where only active probes decide health (no passive rules, no panic).
pub fn balancer(ids: impl IntoIterator<Item = String>) -> Balancer<RoundRobin> {
    let mut b = Balancer::builder(RoundRobin::new());
    b.health(
        HealthConfig::builder()
            .rise(RISE)
            .fall(FALL)
            .max_fails(0)
            .panic_threshold(0)
            .build(),
    );
    b.build(ids.into_iter().map(Backend::new)).unwrap()
}

/// Counts probe results per backend, split by outcome.
#[derive(Clone, Default)]
pub struct Recorder {
    counts: Arc<Mutex<HashMap<String, (usize, usize)>>>,
}

impl Recorder {
    /// Installs the recorder as the checker's callback.
    pub fn install(&self, checker: &mut HealthChecker) {
        let counts = self.counts.clone();
        checker.on_probe(move |r: &ProbeReport| {
            let mut c = counts.lock();
            let e = c.entry(r.backend.to_string()).or_default();
            if r.is_ok() {
                e.0 += 1;
            } else {
                e.1 += 1;
            }
        });
    }

    /// Passed probes of `id` so far.
    pub fn passed(&self, id: &str) -> usize {
        self.counts.lock().get(id).map_or(0, |c| c.0)
    }

    /// Failed probes of `id` so far.
    pub fn failed(&self, id: &str) -> usize {
        self.counts.lock().get(id).map_or(0, |c| c.1)
    }

    /// All probe results so far.
    pub fn total(&self) -> usize {
        self.counts.lock().values().map(|c| c.0 + c.1).sum()
    }
}

/// A TCP backend on 127.0.0.1 that accepts and closes connections, and can stop listening and
/// listen again on the same port.
pub struct TcpBackend {
    pub addr: SocketAddr,
    pub accepted: Arc<AtomicUsize>,
    task: Option<JoinHandle<()>>,
}

impl TcpBackend {
    /// Listens on an ephemeral port.
    pub async fn start() -> Self {
        let mut b = TcpBackend {
            addr: "127.0.0.1:0".parse().unwrap(),
            accepted: Arc::default(),
            task: None,
        };
        b.listen().await;
        b
    }

    /// The backend's identity.
    pub fn id(&self) -> String {
        self.addr.to_string()
    }

    /// Closes the listening socket: connections are refused from now on.
    pub async fn stop(&mut self) {
        if let Some(task) = self.task.take() {
            task.abort();
            let _ = task.await;
        }
    }

    /// Listens again on the same port (SO_REUSEADDR, since closed connections linger in
    /// TIME_WAIT on it).
    pub async fn listen(&mut self) {
        let socket = TcpSocket::new_v4().unwrap();
        socket.set_reuseaddr(true).unwrap();
        socket.bind(self.addr).unwrap();
        let listener = socket.listen(64).unwrap();
        self.addr = listener.local_addr().unwrap();
        let accepted = self.accepted.clone();
        self.task = Some(tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                accepted.fetch_add(1, SeqCst);
                drop(stream);
            }
        }));
    }
}

impl Drop for TcpBackend {
    fn drop(&mut self) {
        if let Some(task) = self.task.take() {
            task.abort();
        }
    }
}

/// What an HTTP backend saw of the last request: path and `Host` header.
pub type Seen = Arc<Mutex<Option<(String, String)>>>;

/// A hyper HTTP/1.1 server on 127.0.0.1 answering every request with a status that can be
/// changed while it runs.
pub struct HttpBackend {
    pub addr: SocketAddr,
    pub status: Arc<AtomicU16>,
    pub seen: Seen,
    task: JoinHandle<()>,
}

impl HttpBackend {
    /// Serves `status` on an ephemeral port.
    pub async fn start(status: u16) -> Self {
        use hyper::server::conn::http1;
        use hyper::service::service_fn;
        use hyper_util::rt::TokioIo;

        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let status = Arc::new(AtomicU16::new(status));
        let seen: Seen = Arc::default();
        let (st, sn) = (status.clone(), seen.clone());
        let task = tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let (st, sn) = (st.clone(), sn.clone());
                let service = service_fn(move |req: hyper::Request<hyper::body::Incoming>| {
                    let host = req
                        .headers()
                        .get(hyper::header::HOST)
                        .and_then(|h| h.to_str().ok())
                        .unwrap_or_default()
                        .to_owned();
                    let target = req
                        .uri()
                        .path_and_query()
                        .map(|p| p.to_string())
                        .unwrap_or_default();
                    *sn.lock() = Some((target, host));
                    let mut resp =
                        hyper::Response::new(http_body_util::Empty::<bytes::Bytes>::new());
                    *resp.status_mut() = hyper::StatusCode::from_u16(st.load(SeqCst)).unwrap();
                    async move { Ok::<_, Infallible>(resp) }
                });
                tokio::spawn(async move {
                    // The probe hangs up after the status line; that error is expected.
                    let _ = http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        HttpBackend {
            addr,
            status,
            seen,
            task,
        }
    }

    /// The backend's identity.
    pub fn id(&self) -> String {
        self.addr.to_string()
    }
}

impl Drop for HttpBackend {
    fn drop(&mut self) {
        self.task.abort();
    }
}
