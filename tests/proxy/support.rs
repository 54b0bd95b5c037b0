//! Shared test scaffolding: killable loopback backends, an in-process proxy, a client, and
//! deadline-bounded waiting.

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{HeaderMap, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioIo};
use parking_lot::Mutex;
use tokio::net::TcpListener;
use tokio::task::JoinSet;

use crate::{check, server};

/// Every wait in these tests ends by this deadline.
pub const DEADLINE: Duration = Duration::from_secs(10);

/// What a backend saw of one request.
#[derive(Clone, Debug)]
pub struct Seen {
    pub uri: String,
    pub headers: HeaderMap,
}

/// A backend on 127.0.0.1 that answers with its name, records what it saw, and can be killed
/// (every connection closed) and restarted on the same port.
pub struct TestBackend {
    pub name: String,
    pub addr: SocketAddr,
    pub hits: Arc<AtomicU64>,
    pub seen: Arc<Mutex<Vec<Seen>>>,
    /// Delay before answering, in milliseconds.
    pub delay_ms: Arc<AtomicU64>,
    /// Set by `kill`: a connection task that has not noticed its abort yet answers nothing.
    killed: AtomicBool,
    tasks: Mutex<Option<JoinSet<()>>>,
}

impl TestBackend {
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

    pub fn hits(&self) -> u64 {
        self.hits.load(Ordering::SeqCst)
    }
}

impl Drop for TestBackend {
    fn drop(&mut self) {
        self.kill();
    }
}

pub async fn backends(names: &[&str]) -> Vec<Arc<TestBackend>> {
    let mut out = Vec::new();
    for n in names {
        out.push(TestBackend::start(n).await);
    }
    out
}

/// `[[upstream.NAME.server]]` blocks for `backends`, with extra keys per server.
pub fn servers(upstream: &str, backends: &[Arc<TestBackend>], extra: &[&str]) -> String {
    backends
        .iter()
        .enumerate()
        .map(|(i, b)| {
            format!(
                "\n[[upstream.{upstream}.server]]\naddress = \"{}\"\n{}\n",
                b.addr,
                extra.get(i).copied().unwrap_or("")
            )
        })
        .collect()
}

/// Parses `toml` (which must be valid) and starts the proxy in this process.
pub async fn proxy(toml: &str) -> server::Running {
    let config = check::parse(toml, "test.toml").unwrap_or_else(|d| {
        let lines: Vec<String> = d.iter().map(ToString::to_string).collect();
        panic!("invalid test config:\n{}\n---\n{toml}", lines.join("\n"))
    });
    server::start(config).await.unwrap()
}

/// A pooled HTTP/1.1 client.
pub type TestClient = Client<HttpConnector, Full<Bytes>>;

pub fn client() -> TestClient {
    Client::builder(TokioExecutor::new()).build_http()
}

/// A response, read whole.
#[derive(Debug)]
pub struct Answer {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: String,
}

/// Sends `req` and reads the whole answer, within [`DEADLINE`].
pub async fn send(client: &TestClient, req: Request<Full<Bytes>>) -> Answer {
    let fut = async {
        let resp = client.request(req).await.expect("the proxy answers");
        let (parts, body) = resp.into_parts();
        let body = body.collect().await.expect("a whole body").to_bytes();
        Answer {
            status: parts.status,
            headers: parts.headers,
            body: String::from_utf8_lossy(&body).into_owned(),
        }
    };
    tokio::time::timeout(DEADLINE, fut)
        .await
        .expect("an answer before the deadline")
}

/// `GET http://{proxy}{path}` with a `Host` header.
pub async fn get(client: &TestClient, proxy: SocketAddr, host: &str, path: &str) -> Answer {
    let req = Request::get(format!("http://{proxy}{path}"))
        .header("host", host)
        .body(Full::default())
        .unwrap();
    send(client, req).await
}

/// Which backend answered how many of `n` GETs.
pub async fn tally(
    client: &TestClient,
    proxy: SocketAddr,
    host: &str,
    n: usize,
) -> BTreeMap<String, usize> {
    let mut counts = BTreeMap::new();
    for _ in 0..n {
        let a = get(client, proxy, host, "/").await;
        assert_eq!(a.status, StatusCode::OK, "body: {}", a.body);
        *counts.entry(a.body).or_default() += 1;
    }
    counts
}

/// Polls `cond` until it holds; panics at [`DEADLINE`] with `what`.
pub async fn eventually<F, Fut>(what: &str, mut cond: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let deadline = Instant::now() + DEADLINE;
    loop {
        if cond().await {
            return;
        }
        assert!(Instant::now() < deadline, "timed out waiting until {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Whether the balancer of `upstream` counts `backend` as available.
pub fn available(running: &server::Running, upstream: &str, backend: SocketAddr) -> bool {
    let table = running.proxy.table.load();
    let up = table.upstream(upstream).expect("the upstream exists");
    let id = backend.to_string();
    up.lb
        .stats()
        .iter()
        .find(|s| *s.id == *id)
        .is_some_and(|s| s.available)
}
