//! Forwarding one request: route, pick, rewrite headers, send, retry, stream the answer back.
//!
//! Bodies stream both ways and are never buffered whole. The pick's
//! [`Completion`](divvy_tower::track::Completion) travels inside the response body, so a backend
//! counts a request in flight until the last byte has been relayed, and the request's outcome is
//! reported exactly once. Only what is the backend's fault counts against it: what the client
//! does wrong ([`ClientFault`]) is answered 400 / 408 / 499 and never retried.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use bytes::Bytes;
use http::header::{self, HeaderValue};
use http::{Request, Response, StatusCode};
use hyper::body::Incoming;

use crate::route::{request_host, Table};

mod account;
mod attempt;
use attempt::forward;
mod body;
mod client;
mod headers;

pub use account::{rejected, Route};
pub use body::ProxyBody;
pub use client::{ClientFault, ReqBody, CLIENT_CLOSED_REQUEST};
pub use headers::strip_hop_by_hop;

/// State shared by every connection: the routing table and counters.
pub struct Proxy {
    /// The routing table, swapped whole on reload.
    pub table: ArcSwap<Table>,
    /// Send the RFC 7239 `Forwarded` header.
    pub forwarded: bool,
    /// Longest pause between two reads of a request body (nginx `client_body_timeout`).
    pub client_body_timeout: Duration,
    /// Proxy-wide counters.
    pub metrics: Metrics,
}

impl std::fmt::Debug for Proxy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Proxy")
            .field("upstreams", &self.table.load().upstreams)
            .field("forwarded", &self.forwarded)
            .field("metrics", &self.metrics)
            .finish()
    }
}

/// Proxy-wide counters, for `/metrics`. Every request is counted once in `responses`, including
/// requests the client abandoned (499, in 4xx) and heads hyper's parser refused (400, 431).
#[derive(Debug, Default)]
pub struct Metrics {
    /// Responses by status class: 1xx … 5xx.
    pub responses: [AtomicU64; 5],
    /// Tries beyond the first.
    pub retries: AtomicU64,
    /// Requests in progress (back down when a request ends, however it ends).
    pub in_flight: AtomicU64,
}

// === the handler ===

/// The client end of a connection, fixed for all its requests.
#[derive(Clone, Debug)]
pub struct Peer {
    /// The client's address.
    pub addr: SocketAddr,
    /// The client's address as an `X-Forwarded-For` value, formatted once per connection.
    xff: Option<HeaderValue>,
}

impl Peer {
    /// The peer at `addr`.
    pub fn new(addr: SocketAddr) -> Peer {
        let xff = HeaderValue::from_str(&addr.ip().to_string()).ok();
        Peer { addr, xff }
    }
}

/// Serves one client request.
pub async fn handle(
    proxy: Arc<Proxy>,
    req: Request<Incoming>,
    peer: Peer,
) -> Result<Response<ProxyBody>, Infallible> {
    let host = request_host(req.uri().authority(), req.headers().get(header::HOST))
        .map(std::borrow::Cow::into_owned);
    // Closed when dropped: after the response below, or mid-await if the client leaves first.
    let mut entry = account::Entry::open(proxy, peer.addr, host, req.method(), req.uri().path());
    let resp = forward(&mut entry, req, &peer).await;
    entry.respond(resp.status());
    Ok(resp)
}

/// A short plain-text response.
pub fn plain(status: StatusCode, text: &'static str) -> Response<ProxyBody> {
    let mut resp = Response::new(ProxyBody::full(Bytes::from_static(text.as_bytes())));
    *resp.status_mut() = status;
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    resp
}

impl Metrics {
    fn retries_inc(&self) {
        self.retries.fetch_add(1, Relaxed);
    }
}
