//! A killable HTTP/1 backend on loopback that answers with its name.

use std::convert::Infallible;
use std::fmt;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{HeaderMap, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use parking_lot::Mutex;
use tokio::net::TcpListener;
use tokio::task::JoinSet;

use crate::DEADLINE;

/// What a backend saw of one request.
#[derive(Clone, Debug)]
pub struct Seen {
    /// The request target, as received.
    pub uri: String,
    /// The request headers, as received.
    pub headers: HeaderMap,
}

/// A backend on 127.0.0.1 that answers with its name, records what it saw, and can be killed
/// (every connection closed) and restarted on the same port.
///
/// Paths it knows: `/healthz` answers `ok` without counting a hit; `/ws` upgrades and echoes
/// every byte; `/echo` answers with the request body; anything else answers with the name, an
/// `x-backend` header and hop-by-hop headers a proxy must strip.
pub struct TestBackend {
    /// The name it answers with.
    pub name: String,
    /// Where it listens.
    pub addr: SocketAddr,
    /// Requests answered (not counting `/healthz`).
    pub hits: Arc<AtomicU64>,
    /// What it saw of each request, in order.
    pub seen: Arc<Mutex<Vec<Seen>>>,
    /// Delay before answering, in milliseconds.
    pub delay_ms: Arc<AtomicU64>,
    /// Set by `kill`: a connection task that has not noticed its abort yet answers nothing.
    killed: AtomicBool,
    tasks: Mutex<Option<JoinSet<()>>>,
}

impl TestBackend {
    /// Starts a backend named `name` on an ephemeral 127.0.0.1 port.
    pub async fn start(name: &str) -> Arc<TestBackend> {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let b = Arc::new(TestBackend {
            name: name.to_owned(),
            addr: listener.local_addr().unwrap(),
            hits: Arc::default(),
            seen: Arc::default(),
            delay_ms: Arc::default(),
            killed: AtomicBool::new(false),
            tasks: Mutex::new(None),
        });
        b.serve(listener);
        b
    }

    fn serve(self: &Arc<Self>, listener: TcpListener) {
        let mut set = JoinSet::new();
        let me = self.clone();
        set.spawn(async move {
            // Connections live in this set too, so `kill` closes them all.
            let mut conns = JoinSet::new();
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                let me = me.clone();
                conns.spawn(async move {
                    let svc = service_fn(move |req| {
                        let me = me.clone();
                        async move { Ok::<_, Infallible>(me.answer(req).await) }
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), svc)
                        .with_upgrades()
                        .await;
                });
                while conns.try_join_next().is_some() {}
            }
        });
        *self.tasks.lock() = Some(set);
    }

    async fn answer(&self, mut req: Request<Incoming>) -> Response<Full<Bytes>> {
        if self.killed.load(Ordering::SeqCst) {
            // Aborted tasks stop at their next await; until then, a dead backend stays silent.
            std::future::pending::<()>().await;
        }
        if req.uri().path() == "/healthz" {
            return Response::new(Full::new(Bytes::from_static(b"ok")));
        }
        self.hits.fetch_add(1, Ordering::SeqCst);
        self.seen.lock().push(Seen {
            uri: req.uri().to_string(),
            headers: req.headers().clone(),
        });
        let delay = self.delay_ms.load(Ordering::SeqCst);
        if delay > 0 {
            tokio::time::sleep(Duration::from_millis(delay)).await;
        }
        if req.uri().path() == "/ws" {
            // Echo every byte back after the upgrade.
            let on = hyper::upgrade::on(&mut req);
            tokio::spawn(async move {
                if let Ok(up) = on.await {
                    let mut io = TokioIo::new(up);
                    let (mut r, mut w) = tokio::io::split(&mut io);
                    let _ = tokio::io::copy(&mut r, &mut w).await;
                }
            });
            return Response::builder()
                .status(StatusCode::SWITCHING_PROTOCOLS)
                .header("connection", "upgrade")
                .header("upgrade", "echo")
                .body(Full::default())
                .unwrap();
        }
        if req.uri().path() == "/echo" {
            let body = req.into_body().collect().await.map(|b| b.to_bytes());
            return Response::new(Full::new(body.unwrap_or_default()));
        }
        Response::builder()
            .header("x-backend", &self.name)
            .header("connection", "keep-alive, x-hop")
            .header("x-hop", "secret")
            .header("keep-alive", "timeout=5")
            .body(Full::new(Bytes::from(self.name.clone())))
            .unwrap()
    }

    /// Stops listening and drops every open connection.
    pub fn kill(&self) {
        self.killed.store(true, Ordering::SeqCst);
        if let Some(mut set) = self.tasks.lock().take() {
            set.abort_all();
        }
    }

    /// Listens again on the same port.
    pub async fn restart(self: &Arc<Self>) {
        let deadline = Instant::now() + DEADLINE;
        let listener = loop {
            match TcpListener::bind(self.addr).await {
                Ok(l) => break l,
                Err(e) if Instant::now() < deadline => {
                    let _ = e;
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
                Err(e) => panic!("cannot rebind {}: {e}", self.addr),
            }
        };
        self.killed.store(false, Ordering::SeqCst);
        self.serve(listener);
    }

    /// Requests answered so far (not counting `/healthz`).
    pub fn hits(&self) -> u64 {
        self.hits.load(Ordering::SeqCst)
    }
}

impl fmt::Debug for TestBackend {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TestBackend")
            .field("name", &self.name)
            .field("addr", &self.addr)
            .field("hits", &self.hits())
            .finish_non_exhaustive()
    }
}

impl Drop for TestBackend {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Starts one backend per name, in order.
pub async fn backends(names: &[&str]) -> Vec<Arc<TestBackend>> {
    let mut out = Vec::new();
    for n in names {
        out.push(TestBackend::start(n).await);
    }
    out
}
