//! Forwarding one request: route, pick, rewrite headers, send, retry, stream the answer back.
//!
//! Bodies stream both ways and are never buffered whole. The [`Pick`] guard travels inside the
//! response body, so a backend counts a request in flight until the last byte has been relayed.

use std::convert::Infallible;
use std::error::Error as StdError;
use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::task::{Context as TaskContext, Poll};
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use bytes::Bytes;
use divvy::{Context, Outcome, Pick};
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Method, Request, Response, StatusCode, Uri, Version};
use http_body::{Body, Frame, SizeHint};
use hyper::body::Incoming;
use hyper::upgrade::OnUpgrade;
use hyper_util::rt::TokioIo;
use tokio::time::Sleep;

use crate::pool::Lease;
use crate::route::{request_host, Table};
use crate::sticky;
use crate::upstream::Upstream;

/// State shared by every connection: the routing table and counters.
pub struct Proxy {
    /// The routing table, swapped whole on reload.
    pub table: ArcSwap<Table>,
    /// Send the RFC 7239 `Forwarded` header.
    pub forwarded: bool,
    /// Proxy-wide counters.
    pub metrics: Metrics,
}

/// Proxy-wide counters, for `/metrics`.
#[derive(Default)]
pub struct Metrics {
    /// Responses by status class: 1xx … 5xx.
    pub responses: [AtomicU64; 5],
    /// Tries beyond the first.
    pub retries: AtomicU64,
    /// Requests in progress.
    pub in_flight: AtomicU64,
}

// === the handler ===

/// Why a try failed, and the status the client gets if it was the last.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Failure {
    /// Connection refused, reset, or closed before the response head: 502.
    Error,
    /// Connect or response timeout: 504.
    Timeout,
}

/// The client end of a connection, fixed for all its requests.
#[derive(Clone)]
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

/// The response, and for the access log: the upstream, the last backend tried, the tries.
type Forwarded = (
    Response<ProxyBody>,
    Option<Arc<Upstream>>,
    Option<Arc<str>>,
    u32,
);

async fn forward(
    proxy: &Proxy,
    parts: &mut http::request::Parts,
    body: Incoming,
    host: Option<&str>,
    peer: &Peer,
) -> Forwarded {
    if parts.method == Method::CONNECT {
        // Not a forward proxy: tunnels go nowhere.
        return (
            plain(StatusCode::METHOD_NOT_ALLOWED, "405 method not allowed\n"),
            None,
            None,
            0,
        );
    }
    let table = proxy.table.load();
    let Some(routed) = table.route(host.unwrap_or(""), parts.uri.path()) else {
        return (
            plain(
                StatusCode::NOT_FOUND,
                "404 not found: no route for this host and path\n",
            ),
            None,
            None,
            0,
        );
    };
    let up: &Arc<Upstream> = routed.upstream;
    let name = Some(up.clone());

    // --- what the request says about routing ---
    let upgrade = upgrade_protocol(parts.version, &parts.headers);
    // What `hyper::upgrade::on` takes from a whole request, taken from its parts.
    let client_upgrade = upgrade
        .as_ref()
        .and_then(|_| parts.extensions.remove::<OnUpgrade>());
    let peer_ip = peer.addr.ip();
    // Owned, so that the headers can be moved out of `parts` below (only hash upstreams pay).
    let hash_key =
        up.config.hash.as_ref().and_then(|h| {
            sticky::hash_key(&h.key, parts, peer_ip).map(std::borrow::Cow::into_owned)
        });
    let pinned = up
        .config
        .sticky
        .as_ref()
        .and_then(|s| sticky::read(&parts.headers, &s.cookie));
    let mut base = Context::new().client_ip(peer_ip);
    if let Some(k) = &hash_key {
        base = base.key(k);
    }
    if let Some(k) = pinned {
        base = base.sticky(k);
    }
    if let Some(zone) = &up.config.zone {
        base = base.zone(zone);
    }

    // --- the request as the backend will see it: the client's headers, edited in place ---
    let mut headers = std::mem::take(&mut parts.headers);
    let forwarding = Forwarding::read(&headers, &parts.uri, host, peer, proxy.forwarded);
    strip_hop_by_hop(&mut headers);
    forwarding.apply(&mut headers);
    if let Some(proto) = &upgrade {
        headers.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
        headers.insert(header::UPGRADE, proto.clone());
    }
    if !headers.contains_key(header::HOST) {
        if let Some(a) = parts.uri.authority() {
            if let Ok(v) = HeaderValue::from_str(a.as_str()) {
                headers.insert(header::HOST, v);
            }
        }
    }
    let Some(path_and_query) = upstream_uri(&parts.uri, routed.strip) else {
        return (
            plain(StatusCode::BAD_REQUEST, "400 bad request\n"),
            name,
            None,
            0,
        );
    };
    let replayable = body.is_end_stream();
    let idempotent = matches!(
        parts.method,
        Method::GET | Method::HEAD | Method::OPTIONS | Method::TRACE | Method::PUT | Method::DELETE
    );
    let mut body = Some(body);

    // --- tries ---
    let max_tries = 1 + up.config.retries;
    let mut tried: Vec<u64> = Vec::new();
    let mut last: Option<Failure> = None;
    let mut last_backend = None;
    let mut tries = 0;
    for attempt in 0..max_tries {
        let ctx = base.exclude(&tried);
        let pick = match up.lb.pick(&ctx) {
            Ok(p) => p,
            Err(_) => break,
        };
        if attempt > 0 {
            proxy.metrics.retries_inc();
        }
        tries += 1;
        let backend = pick.backend().clone();
        let addr = backend
            .addr()
            .expect("configured servers are socket addresses");
        last_backend = Some(backend.id_arc().clone());
        let mut out = Request::builder()
            .method(parts.method.clone())
            .uri(path_and_query.clone())
            .version(Version::HTTP_11);
        let out_headers = out.headers_mut().expect("a fresh builder");
        // The last possible try takes the headers; earlier ones copy them for the next.
        *out_headers = if attempt + 1 < max_tries {
            headers.clone()
        } else {
            std::mem::take(&mut headers)
        };
        if !out_headers.contains_key(header::HOST) {
            // An HTTP/1.0 client may send no host at all; HTTP/1.1 requires one upstream.
            if let Ok(v) = HeaderValue::from_str(&addr.to_string()) {
                out_headers.insert(header::HOST, v);
            }
        }
        let out_body = if replayable {
            ReqBody::Empty
        } else {
            match body.take() {
                Some(b) => ReqBody::Stream(b),
                None => break,
            }
        };
        let out = match out.body(out_body) {
            Ok(r) => r,
            Err(_) => {
                return (
                    plain(StatusCode::BAD_REQUEST, "400 bad request\n"),
                    name,
                    None,
                    tries,
                )
            }
        };
        let sent = Instant::now();
        let result =
            tokio::time::timeout(up.config.response_timeout, up.pool.send(addr, out)).await;
        let failure = match result {
            Ok(Ok((resp, lease))) => {
                let latency = sent.elapsed();
                let outcome = if resp.status().is_server_error() {
                    Outcome::Failure
                } else {
                    Outcome::Success
                };
                pick.report(outcome, Some(latency));
                let resp = respond(
                    resp,
                    pick,
                    lease,
                    up,
                    pinned,
                    client_upgrade,
                    upgrade.is_some(),
                );
                return (resp, name, last_backend, tries);
            }
            Ok(Err(e)) => {
                let timed_out = is_timeout(&e);
                let connect = e.is_connect();
                tracing::warn!(upstream = %up.name(), backend = %backend, error = %error_chain(&e), "upstream request failed");
                pick.failure();
                let f = if timed_out {
                    Failure::Timeout
                } else {
                    Failure::Error
                };
                // A connect failure sent nothing, so any request may go elsewhere; a failure
                // after sending may have had effects, so only idempotent requests are retried.
                if !(replayable && (connect || idempotent)) {
                    last = Some(f);
                    break;
                }
                f
            }
            Err(_) => {
                tracing::warn!(upstream = %up.name(), backend = %backend, "upstream response timed out");
                pick.failure();
                if !(replayable && idempotent) {
                    last = Some(Failure::Timeout);
                    break;
                }
                Failure::Timeout
            }
        };
        last = Some(failure);
        tried.push(backend.key());
    }
    let resp = match last {
        None => plain(
            StatusCode::SERVICE_UNAVAILABLE,
            "503 service unavailable: no backend available\n",
        ),
        Some(Failure::Error) => plain(
            StatusCode::BAD_GATEWAY,
            "502 bad gateway: no backend answered\n",
        ),
        Some(Failure::Timeout) => plain(
            StatusCode::GATEWAY_TIMEOUT,
            "504 gateway timeout: the backend did not answer in time\n",
        ),
    };
    (resp, name, last_backend, tries)
}

/// Turns the backend's response into the client's.
#[allow(clippy::too_many_arguments)]
fn respond(
    mut resp: Response<Incoming>,
    pick: Pick,
    lease: Lease,
    up: &Upstream,
    pinned: Option<u64>,
    client_upgrade: Option<OnUpgrade>,
    upgrading: bool,
) -> Response<ProxyBody> {
    let switching = upgrading && resp.status() == StatusCode::SWITCHING_PROTOCOLS;
    let upgrade_proto = resp.headers().get(header::UPGRADE).cloned();
    strip_hop_by_hop(resp.headers_mut());
    if let Some(s) = &up.config.sticky {
        let key = pick.backend().key();
        if pinned != Some(key) {
            resp.headers_mut()
                .append(header::SET_COOKIE, sticky::set_cookie(s, key));
        }
    }
    if switching {
        if let (Some(client), Some(proto)) = (client_upgrade, upgrade_proto) {
            resp.headers_mut()
                .insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
            resp.headers_mut().insert(header::UPGRADE, proto);
            let upstream = hyper::upgrade::on(&mut resp);
            // The connection now belongs to the tunnel, not to the pool.
            drop(lease);
            tokio::spawn(tunnel(client, upstream, pick));
            return resp.map(|_| ProxyBody::empty());
        }
    }
    let read_timeout = up.config.read_timeout;
    resp.map(|body| ProxyBody::upstream(body, pick, lease, read_timeout))
}

/// Relays bytes both ways after a `101 Switching Protocols`; the pick lives as long as the tunnel.
async fn tunnel(
    client: hyper::upgrade::OnUpgrade,
    upstream: hyper::upgrade::OnUpgrade,
    pick: Pick,
) {
    match tokio::try_join!(client, upstream) {
        Ok((c, u)) => {
            let mut c = TokioIo::new(c);
            let mut u = TokioIo::new(u);
            if let Err(e) = tokio::io::copy_bidirectional(&mut c, &mut u).await {
                tracing::debug!(error = %e, "upgraded connection ended");
            }
        }
        Err(e) => tracing::warn!(error = %e, "upgrade failed"),
    }
    drop(pick);
}

// === headers ===

/// The hop-by-hop headers of RFC 9110 §7.6.1 plus the legacy ones proxies also drop.
const HOP_BY_HOP: [HeaderName; 9] = [
    header::CONNECTION,
    HeaderName::from_static("keep-alive"),
    HeaderName::from_static("proxy-connection"),
    header::TE,
    header::TRANSFER_ENCODING,
    header::UPGRADE,
    header::PROXY_AUTHENTICATE,
    header::PROXY_AUTHORIZATION,
    header::TRAILER,
];

/// Removes hop-by-hop headers: the fixed list and every header `Connection` names.
///
/// One pass over the names finds which of the fixed list are present (most messages carry at
/// most `Connection`), so only those are looked up and removed.
pub fn strip_hop_by_hop(headers: &mut HeaderMap) {
    let mut present = 0u16;
    for name in headers.keys() {
        if let Some(i) = HOP_BY_HOP.iter().position(|h| h == name) {
            present |= 1 << i;
        }
    }
    if present == 0 {
        // No `Connection` header either, so no header is named by one.
        return;
    }
    let named: Vec<HeaderName> = headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(str::trim)
        .filter(|t| {
            !t.is_empty()
                && !HOP_BY_HOP
                    .iter()
                    .any(|h| h.as_str().eq_ignore_ascii_case(t))
        })
        .filter_map(|t| HeaderName::from_bytes(t.as_bytes()).ok())
        .collect();
    for name in &named {
        headers.remove(name);
    }
    for (i, name) in HOP_BY_HOP.iter().enumerate() {
        if present & (1 << i) != 0 {
            headers.remove(name);
        }
    }
}

/// The protocol a client asks to upgrade to (`Connection: upgrade` plus `Upgrade: x`), HTTP/1.1
/// only.
fn upgrade_protocol(version: Version, headers: &HeaderMap) -> Option<HeaderValue> {
    if version != Version::HTTP_11 {
        return None;
    }
    let asks = headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|t| t.trim().eq_ignore_ascii_case("upgrade"));
    if asks {
        headers.get(header::UPGRADE).cloned()
    } else {
        None
    }
}

/// The forwarding headers a request gets: `X-Forwarded-For` (appended, as nginx's
/// `$proxy_add_x_forwarded_for`), `X-Forwarded-Proto`, `X-Forwarded-Host`, and optionally
/// RFC 7239 `Forwarded` (appended). Read from the client's headers before the hop-by-hop ones
/// are stripped, applied after.
struct Forwarding {
    xff: Option<HeaderValue>,
    host: Option<HeaderValue>,
    forwarded: Option<HeaderValue>,
}

impl Forwarding {
    fn read(
        headers: &HeaderMap,
        uri: &Uri,
        host: Option<&str>,
        peer: &Peer,
        forwarded: bool,
    ) -> Forwarding {
        let client = peer.addr.ip();
        let mut prior = headers
            .get_all(X_FORWARDED_FOR)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .peekable();
        // Without a prior value (the usual case) the connection's own value is shared.
        let xff = if prior.peek().is_none() {
            peer.xff.clone()
        } else {
            let prior: Vec<&str> = prior.collect();
            HeaderValue::from_str(&format!("{}, {client}", prior.join(", "))).ok()
        };
        let original_host = headers.get(header::HOST).cloned().or_else(|| {
            uri.authority()
                .and_then(|a| HeaderValue::from_str(a.as_str()).ok())
        });
        let forwarded = forwarded
            .then(|| forwarded_value(headers, host, client))
            .flatten();
        Forwarding {
            xff,
            host: original_host,
            forwarded,
        }
    }

    fn apply(self, headers: &mut HeaderMap) {
        if let Some(v) = self.xff {
            headers.insert(X_FORWARDED_FOR, v);
        }
        headers.insert(X_FORWARDED_PROTO, HeaderValue::from_static("http"));
        match self.host {
            Some(h) => {
                headers.insert(X_FORWARDED_HOST, h);
            }
            None => {
                headers.remove(X_FORWARDED_HOST);
            }
        }
        if let Some(v) = self.forwarded {
            headers.insert(header::FORWARDED, v);
        }
    }
}

const X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
const X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
const X_FORWARDED_HOST: HeaderName = HeaderName::from_static("x-forwarded-host");

/// The RFC 7239 `Forwarded` value: the client's prior elements plus this hop's.
fn forwarded_value(headers: &HeaderMap, host: Option<&str>, client: IpAddr) -> Option<HeaderValue> {
    let node = match client {
        IpAddr::V4(ip) => ip.to_string(),
        IpAddr::V6(ip) => format!("\"[{ip}]\""),
    };
    let mut element = format!("for={node};proto=http");
    if let Some(h) = host.filter(|h| h.bytes().all(|b| b.is_ascii_graphic() && b != b'"')) {
        element.push_str(&format!(";host=\"{h}\""));
    }
    let prior: Vec<&str> = headers
        .get_all(header::FORWARDED)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .collect();
    let value = if prior.is_empty() {
        element
    } else {
        format!("{}, {element}", prior.join(", "))
    };
    HeaderValue::from_str(&value).ok()
}

/// The origin-form URI sent upstream: the client's own path and query, shared rather than copied,
/// when nothing is stripped; else [`rewrite_path`].
fn upstream_uri(uri: &Uri, strip: usize) -> Option<Uri> {
    match uri.path_and_query() {
        Some(pq) if strip == 0 && pq.as_str().starts_with('/') => Some(Uri::from(pq.clone())),
        _ => Uri::try_from(rewrite_path(uri, strip)).ok(),
    }
}

/// The path and query sent upstream, with `strip` leading bytes of the path removed.
fn rewrite_path(uri: &Uri, strip: usize) -> String {
    let path = uri.path();
    let rest = path.get(strip..).unwrap_or("");
    let mut out = String::with_capacity(path.len() + 1);
    if !rest.starts_with('/') {
        out.push('/');
    }
    out.push_str(rest);
    if let Some(q) = uri.query() {
        out.push('?');
        out.push_str(q);
    }
    out
}

fn is_timeout(e: &(dyn StdError + 'static)) -> bool {
    let mut cur: Option<&(dyn StdError + 'static)> = Some(e);
    while let Some(err) = cur {
        if let Some(io) = err.downcast_ref::<std::io::Error>() {
            if io.kind() == std::io::ErrorKind::TimedOut {
                return true;
            }
        }
        cur = err.source();
    }
    false
}

fn error_chain(e: &(dyn StdError + 'static)) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(err) = cur {
        s.push_str(": ");
        s.push_str(&err.to_string());
        cur = err.source();
    }
    s
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

// === bodies ===

/// A request body on its way upstream: nothing (replayable on retry) or the client's stream.
pub enum ReqBody {
    /// No body.
    Empty,
    /// The client's body, streamed.
    Stream(Incoming),
}

impl Body for ReqBody {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut TaskContext<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        match self.get_mut() {
            ReqBody::Empty => Poll::Ready(None),
            ReqBody::Stream(b) => Pin::new(b).poll_frame(cx),
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            ReqBody::Empty => true,
            ReqBody::Stream(b) => b.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            ReqBody::Empty => SizeHint::with_exact(0),
            ReqBody::Stream(b) => b.size_hint(),
        }
    }
}

/// A response body on its way to the client.
pub struct ProxyBody {
    inner: Inner,
}

enum Inner {
    Full(Option<Bytes>),
    Upstream {
        body: Incoming,
        /// In flight until the body ends.
        pick: Option<Pick>,
        /// The backend connection, back to the pool once the body has ended.
        lease: Option<Lease>,
        idle: Duration,
        /// Armed only when the body has to wait: most small bodies arrive with the head.
        timer: Option<Pin<Box<Sleep>>>,
    },
}

impl ProxyBody {
    /// A complete body.
    pub fn full(bytes: Bytes) -> Self {
        ProxyBody {
            inner: Inner::Full(Some(bytes)),
        }
    }

    /// No body.
    pub fn empty() -> Self {
        ProxyBody {
            inner: Inner::Full(None),
        }
    }

    fn upstream(body: Incoming, pick: Pick, lease: Lease, idle: Duration) -> Self {
        ProxyBody {
            inner: Inner::Upstream {
                body,
                pick: Some(pick),
                lease: Some(lease),
                idle,
                timer: None,
            },
        }
    }
}

impl Drop for ProxyBody {
    /// hyper stops polling a body whose length says it has ended, so the `None` that releases
    /// the connection may never be polled: a body dropped at its end releases it too. A body
    /// dropped before its end (client gone) closes the connection with the lease.
    fn drop(&mut self) {
        if let Inner::Upstream { body, lease, .. } = &mut self.inner {
            if body.is_end_stream() {
                if let Some(l) = lease.take() {
                    l.release();
                }
            }
        }
    }
}

impl Body for ProxyBody {
    type Data = Bytes;
    type Error = Box<dyn StdError + Send + Sync>;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut TaskContext<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        match &mut self.get_mut().inner {
            Inner::Full(b) => Poll::Ready(b.take().map(|b| Ok(Frame::data(b)))),
            Inner::Upstream {
                body,
                pick,
                lease,
                idle,
                timer,
            } => match Pin::new(body).poll_frame(cx) {
                Poll::Ready(Some(Ok(frame))) => {
                    if let Some(t) = timer {
                        t.as_mut().reset(tokio::time::Instant::now() + *idle);
                    }
                    Poll::Ready(Some(Ok(frame)))
                }
                Poll::Ready(Some(Err(e))) => {
                    lease.take();
                    if let Some(p) = pick.take() {
                        p.failure();
                    }
                    Poll::Ready(Some(Err(e.into())))
                }
                Poll::Ready(None) => {
                    if let Some(l) = lease.take() {
                        l.release();
                    }
                    pick.take();
                    Poll::Ready(None)
                }
                Poll::Pending => {
                    if pick.is_none() {
                        return Poll::Pending;
                    }
                    let t = timer.get_or_insert_with(|| Box::pin(tokio::time::sleep(*idle)));
                    if t.as_mut().poll(cx).is_ready() {
                        lease.take();
                        if let Some(p) = pick.take() {
                            p.failure();
                        }
                        return Poll::Ready(Some(Err("upstream read timed out".into())));
                    }
                    Poll::Pending
                }
            },
        }
    }

    fn is_end_stream(&self) -> bool {
        match &self.inner {
            Inner::Full(b) => b.is_none(),
            Inner::Upstream { body, .. } => body.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match &self.inner {
            Inner::Full(Some(b)) => SizeHint::with_exact(b.len() as u64),
            Inner::Full(None) => SizeHint::with_exact(0),
            Inner::Upstream { body, .. } => body.size_hint(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn connection_named_headers_are_stripped_with_the_fixed_list() {
        let mut h = HeaderMap::new();
        h.insert(
            header::CONNECTION,
            HeaderValue::from_static("close, x-secret"),
        );
        h.insert("x-secret", HeaderValue::from_static("1"));
        h.insert("keep-alive", HeaderValue::from_static("timeout=5"));
        h.insert("x-kept", HeaderValue::from_static("1"));
        strip_hop_by_hop(&mut h);
        assert_eq!(h.len(), 1);
        assert!(h.contains_key("x-kept"));
    }

    #[test]
    fn stripping_a_prefix_keeps_a_leading_slash_and_the_query() {
        let uri: Uri = "/api/users?id=7".parse().unwrap();
        assert_eq!(rewrite_path(&uri, "/api".len()), "/users?id=7");
        assert_eq!(rewrite_path(&uri, "/api/".len()), "/users?id=7");
        let uri: Uri = "/api".parse().unwrap();
        assert_eq!(rewrite_path(&uri, 4), "/");
    }
}
