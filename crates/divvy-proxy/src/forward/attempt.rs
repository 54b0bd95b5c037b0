//! One request's tries: pick a backend, send, retry on the next, relay the answer or an upgrade.

use std::error::Error as StdError;
use std::sync::Arc;
use std::time::Instant;

use divvy::{Context, Outcome, Pick};
use http::header::{self, HeaderValue};
use http::{Method, Request, Response, StatusCode, Version};
use http_body::Body;
use hyper::body::Incoming;
use hyper::upgrade::OnUpgrade;
use hyper_util::rt::TokioIo;

use crate::pool::Lease;
use crate::sticky;
use crate::upstream::Upstream;

use super::body::{ProxyBody, ReqBody};
use super::headers::{strip_hop_by_hop, upgrade_protocol, upstream_uri, Forwarding};
use super::{plain, Peer, Proxy};
/// Why a try failed, and the status the client gets if it was the last.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Failure {
    /// Connection refused, reset, or closed before the response head: 502.
    Error,
    /// Connect or response timeout: 504.
    Timeout,
}

/// The response, and for the access log: the upstream, the last backend tried, the tries.
pub(super) type Forwarded = (
    Response<ProxyBody>,
    Option<Arc<Upstream>>,
    Option<Arc<str>>,
    u32,
);

pub(super) async fn forward(
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
