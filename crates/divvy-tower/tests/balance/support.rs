//! Shared helpers: scripted mock endpoints, a deterministic strategy, loopback hyper servers.

#![allow(dead_code)]

use std::collections::HashMap;
use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context as TaskContext, Poll};
use std::time::Duration;

use bytes::Bytes;
use divvy::{
    Backend, BackendSet, BackendStats, Balancer, Context, HealthConfig, Strategy, UpdateError, View,
};
use http_body_util::channel::{Channel, Sender};
use http_body_util::{Either, Full};
use parking_lot::Mutex;
use tower::Service;

/// The bound on every wait in these tests.
pub const DEADLINE: Duration = Duration::from_secs(30);

/// Runs `f` under [`DEADLINE`].
pub async fn bounded<F: Future>(f: F) -> F::Output {
    divvy_test::within(DEADLINE, f).await
}

// === strategies and balancers ===

/// Always the first available backend in configuration order: a strategy that would send a
/// retry straight back to the backend that failed, unless the retry excludes it.
#[derive(Debug)]
pub struct FirstAvailable;

impl Strategy for FirstAvailable {
    type Prepared = ();

    fn name(&self) -> &'static str {
        "first-available"
    }

    fn prepare(&self, _: &BackendSet<'_>) -> Result<(), UpdateError> {
        Ok(())
    }

    fn pick(&self, _: &(), _: &Context<'_>, view: &View<'_>) -> Option<usize> {
        (0..view.len()).find(|&i| view.is_available(i))
    }
}

/// Index = the client address's last octet (IPv4) modulo the set size, or the hash key's first
/// byte modulo the set size; the first available backend without either. A strategy whose choice
/// shows what context reached it.
#[derive(Debug)]
pub struct ByContext;

impl Strategy for ByContext {
    type Prepared = ();

    fn name(&self) -> &'static str {
        "by-context"
    }

    fn prepare(&self, _: &BackendSet<'_>) -> Result<(), UpdateError> {
        Ok(())
    }

    fn pick(&self, _: &(), ctx: &Context<'_>, view: &View<'_>) -> Option<usize> {
        let n = view.len();
        let wanted = match (ctx.get_key(), ctx.get_client_ip()) {
            (Some(k), _) => k.first().map(|&b| usize::from(b) % n),
            (None, Some(std::net::IpAddr::V4(ip))) => Some(usize::from(ip.octets()[3]) % n),
            _ => None,
        };
        wanted
            .filter(|&i| view.is_available(i))
            .or_else(|| (0..n).find(|&i| view.is_available(i)))
    }
}

/// A balancer whose backends stay available whatever their outcomes (no passive health), so
/// that only request exclusions can steer a pick away from a failing backend.
pub fn without_passive_health<S: Strategy>(strategy: S, ids: &[&str]) -> Balancer<S> {
    let mut b = Balancer::builder(strategy);
    b.health(HealthConfig::active_only());
    b.build(ids.iter().map(|id| Backend::new(*id)))
        .expect("a valid set")
}

/// The stats of backend `id`.
pub fn stats<S: Strategy>(lb: &Balancer<S>, id: &str) -> BackendStats {
    lb.stats()
        .into_iter()
        .find(|s| &*s.id == id)
        .unwrap_or_else(|| panic!("backend {id} is in the set"))
}

// === mock endpoints ===

/// The response body of a mock endpoint: fixed bytes, or a stream the test feeds.
pub type MockBody = Either<Full<Bytes>, Channel<Bytes, io::Error>>;

/// What a mock backend does with a request.
#[derive(Clone, Copy, Debug)]
pub enum Reply {
    /// Answers with this status and the backend's id as body.
    Status(u16),
    /// Fails as a refused connection would.
    Refuse,
    /// Answers 200 with a body the test streams through [`Mock::stream`]'s sender.
    Stream,
    /// Answers 200 after this long.
    After(Duration),
}

/// Scripted backends: each backend's reply, every call in order, every service made.
#[derive(Default)]
pub struct Mock {
    replies: Mutex<HashMap<String, Reply>>,
    calls: Mutex<Vec<String>>,
    made: Mutex<Vec<String>>,
    streams: Mutex<Vec<Channel<Bytes, io::Error>>>,
}

impl Mock {
    pub fn new() -> Arc<Mock> {
        Arc::new(Mock::default())
    }

    /// Backend `id` answers with `reply` from now on (default: 200).
    pub fn script(&self, id: &str, reply: Reply) {
        self.replies.lock().insert(id.to_owned(), reply);
    }

    /// Prepares the body of the next [`Reply::Stream`] and returns its sender.
    pub fn stream(&self) -> Sender<Bytes, io::Error> {
        let (tx, body) = Channel::new(4);
        self.streams.lock().push(body);
        tx
    }

    /// The backends called, in order.
    pub fn calls(&self) -> Vec<String> {
        self.calls.lock().clone()
    }

    /// The backends a service was made for, in order.
    pub fn made(&self) -> Vec<String> {
        self.made.lock().clone()
    }

    /// The endpoint maker.
    pub fn maker(self: &Arc<Self>) -> impl FnMut(&Backend) -> MockEndpoint + Clone {
        let mock = self.clone();
        move |b: &Backend| {
            mock.made.lock().push(b.id().to_owned());
            MockEndpoint {
                id: b.id().to_owned(),
                mock: mock.clone(),
            }
        }
    }
}

/// One backend of a [`Mock`].
#[derive(Clone)]
pub struct MockEndpoint {
    id: String,
    mock: Arc<Mock>,
}

type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send>>;

impl<B> Service<http::Request<B>> for MockEndpoint {
    type Response = http::Response<MockBody>;
    type Error = io::Error;
    type Future = BoxFuture<Result<http::Response<MockBody>, io::Error>>;

    fn poll_ready(&mut self, _: &mut TaskContext<'_>) -> Poll<Result<(), io::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, _req: http::Request<B>) -> Self::Future {
        self.mock.calls.lock().push(self.id.clone());
        let reply = self
            .mock
            .replies
            .lock()
            .get(&self.id)
            .copied()
            .unwrap_or(Reply::Status(200));
        let body = Bytes::from(self.id.clone());
        let stream = match reply {
            Reply::Stream => Some(self.mock.streams.lock().remove(0)),
            _ => None,
        };
        Box::pin(async move {
            let full = |status: u16| {
                http::Response::builder()
                    .status(status)
                    .body(Either::Left(Full::new(body.clone())))
                    .expect("a valid response")
            };
            match reply {
                Reply::Status(s) => Ok(full(s)),
                Reply::Refuse => Err(io::Error::new(
                    io::ErrorKind::ConnectionRefused,
                    "connection refused",
                )),
                Reply::Stream => Ok(http::Response::new(Either::Right(
                    stream.expect("a stream was prepared"),
                ))),
                Reply::After(d) => {
                    tokio::time::sleep(d).await;
                    Ok(full(200))
                }
            }
        })
    }
}
