//! Forwarding one request: route, pick, rewrite headers, send, retry, stream the answer back.
//!
//! Bodies stream both ways and are never buffered whole. The [`Pick`] guard travels inside the
//! response body, so a backend counts a request in flight until the last byte has been relayed.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::time::Instant;

use arc_swap::ArcSwap;
use bytes::Bytes;
use http::header::{self, HeaderValue};
use http::{Request, Response, StatusCode};
use hyper::body::Incoming;

use crate::route::{request_host, Table};

mod attempt;
use attempt::forward;
mod body;
mod headers;

pub use body::{ProxyBody, ReqBody};
pub use headers::strip_hop_by_hop;

/// State shared by every connection: the routing table and counters.
pub struct Proxy {
    /// The routing table, swapped whole on reload.
    pub table: ArcSwap<Table>,
    /// Send the RFC 7239 `Forwarded` header.
    pub forwarded: bool,
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

/// Proxy-wide counters, for `/metrics`.
#[derive(Debug, Default)]
pub struct Metrics {
    /// Responses by status class: 1xx … 5xx.
    pub responses: [AtomicU64; 5],
    /// Tries beyond the first.
    pub retries: AtomicU64,
    /// Requests in progress.
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
    proxy.metrics.in_flight.fetch_add(1, Relaxed);
    let (mut parts, body) = req.into_parts();
    // Cheap clones (shared bytes), so that the host can be borrowed while `parts` changes.
    let authority = parts.uri.authority().cloned();
    let host_header = parts.headers.get(header::HOST).cloned();
    let host = request_host(authority.as_ref(), host_header.as_ref());
    // Kept for the access log only when it is on: with it filtered out, nothing is copied.
    let logged = tracing::enabled!(target: "access", tracing::Level::INFO).then(|| {
        (
            Instant::now(),
            parts.method.clone(),
            parts.uri.path().to_owned(),
        )
    });
    let (resp, upstream, backend, tries) =
        forward(&proxy, &mut parts, body, host.as_deref(), &peer).await;
    proxy.metrics.in_flight.fetch_sub(1, Relaxed);
    let class = (resp.status().as_u16() / 100).clamp(1, 5) as usize - 1;
    proxy.metrics.responses[class].fetch_add(1, Relaxed);
    if let Some((started, method, path)) = logged {
        tracing::info!(
            target: "access",
            client = %peer.addr.ip(),
            %method,
            host = host.as_deref().unwrap_or("-"),
            %path,
            status = resp.status().as_u16(),
            upstream = upstream.as_ref().map_or("-", |u| u.name()),
            backend = backend.as_deref().unwrap_or("-"),
            tries,
            ms = started.elapsed().as_millis() as u64,
        );
    }
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
