//! One request's tries: pick a backend, send, retry on the next, relay the answer or an upgrade.
//!
//! Which failures are retried and which count against a backend follows nginx's
//! `proxy_next_upstream` (the upstream's `next_upstream`): a connect error, a timeout and an
//! invalid response always count; a status counts only when listed (5xx and 429); what the
//! client did never counts and is never retried.

use std::error::Error as StdError;
use std::sync::Arc;
use std::time::Instant;

use divvy::Context;
use divvy_tower::retry::is_idempotent;
use divvy_tower::track::Completion;
use http::header::{self, HeaderValue};
use http::{Method, Request, Response, StatusCode, Version};
use http_body::Body;
use hyper::body::Incoming;
use hyper::upgrade::OnUpgrade;
use hyper_util::rt::TokioIo;

use crate::pool::{Lease, SendError};
use crate::upstream::Upstream;

use super::account::Entry;
use super::body::ProxyBody;
use super::client::{ClientBody, ClientFault, ReqBody, Watch};
use super::headers::{strip_hop_by_hop, upgrade_protocol, upstream_uri, Forwarding};
use super::{plain, Peer};

/// Why a try failed, and the status the client gets if it was the last.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Failure {
    /// Connection refused, reset, or closed before the response head: 502.
    Error,
    /// A response head that is not valid HTTP: 502.
    Invalid,
    /// Connect or response timeout: 504.
    Timeout,
}

pub(super) async fn forward(
    entry: &mut Entry,
    req: Request<Incoming>,
    peer: &Peer,
) -> Response<ProxyBody> {
    if req.method() == Method::CONNECT {
        // Not a forward proxy: tunnels go nowhere.
        return plain(StatusCode::METHOD_NOT_ALLOWED, "405 method not allowed\n");
    }
    let proxy = &*entry.proxy;
    let table = proxy.table.load();
    let host = entry.host.as_deref();
    let Some(routed) = table.route(host.unwrap_or(""), req.uri().path()) else {
        return plain(
            StatusCode::NOT_FOUND,
            "404 not found: no route for this host and path\n",
        );
    };
    let up: &Arc<Upstream> = routed.upstream;
    entry.route.upstream = Some(up.clone());

    // --- what the request says about routing, read with divvy-tower's extractors ---
    let peer_ip = peer.addr.ip();
    let hash_key = up.keys.hash_key(&req, peer_ip);
    let pinned = up.keys.pinned(&req);
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

    let (mut parts, body) = req.into_parts();
    let upgrade = upgrade_protocol(parts.version, &parts.headers);
    // What `hyper::upgrade::on` takes from a whole request, taken from its parts.
    let mut client_upgrade = upgrade
        .as_ref()
        .and_then(|_| parts.extensions.remove::<OnUpgrade>());

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
        return plain(StatusCode::BAD_REQUEST, "400 bad request\n");
    };
    let replayable = body.is_end_stream();
    let next = &up.config.next_upstream;
    // A request that may have reached a backend is passed on only if sending it twice is safe.
    let resendable = replayable && (is_idempotent(&parts.method) || next.non_idempotent);
    let watch = Arc::new(Watch::default());
    let mut body = Some(body);

    // --- tries ---
    let max_tries = 1 + up.config.retries;
    let mut tried: Vec<u64> = Vec::new();
    let mut last: Option<Failure> = None;
    // A listed status passed on to the next backend; relayed if no other backend is left.
    let mut held: Option<Response<ProxyBody>> = None;
    for attempt in 0..max_tries {
        let ctx = base.exclude(&tried);
        let pick = match up.lb.pick(&ctx) {
            Ok(p) => p,
            Err(_) => break,
        };
        if attempt > 0 {
            proxy.metrics.retries_inc();
        }
        entry.route.tries += 1;
        let backend = pick.backend().clone();
        let addr = backend
            .addr()
            .expect("configured servers are socket addresses");
        entry.route.backend = Some(backend.id_arc().clone());
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
                Some(b) => {
                    ReqBody::Stream(ClientBody::new(b, watch.clone(), proxy.client_body_timeout))
                }
                None => break,
            }
        };
        let out = match out.body(out_body) {
            Ok(r) => r,
            Err(_) => return plain(StatusCode::BAD_REQUEST, "400 bad request\n"),
        };
        let sent = Instant::now();
        let result =
            tokio::time::timeout(up.config.response_timeout, up.pool.send(addr, out)).await;
        let failure = match result {
            Ok(Ok((resp, lease))) => {
                let status = resp.status();
                let completion =
                    Completion::new(pick, up.classify.classify_status(status), sent.elapsed());
                let resp = respond(resp, completion, lease, up, pinned, &mut client_upgrade);
                if !(resendable && next.statuses.contains(&status)) {
                    return resp;
                }
                // nginx's `proxy_next_upstream http_NNN`: try the next backend; this answer
                // (its outcome already classified) is kept in case none is left.
                held = Some(resp);
                tried.push(backend.key());
                continue;
            }
            Ok(Err(e)) => {
                if let Some(fault) = watch.fault() {
                    return client_fault(up, &backend, fault);
                }
                let connect = e.is_connect();
                let failure = if is_timeout(&e) {
                    Failure::Timeout
                } else if matches!(&e, SendError::Request(h) if h.is_parse()) {
                    Failure::Invalid
                } else {
                    Failure::Error
                };
                tracing::warn!(upstream = %up.name(), backend = %backend, error = %error_chain(&e), "upstream request failed");
                pick.failure();
                let listed = match failure {
                    Failure::Error => next.error,
                    Failure::Invalid => next.invalid_header,
                    Failure::Timeout => next.timeout,
                };
                // A connect failure sent nothing, so any replayable request may go elsewhere.
                if !(listed && (resendable || (replayable && connect))) {
                    last = Some(failure);
                    break;
                }
                failure
            }
            Err(_) => {
                if let Some(fault) = watch.fault() {
                    return client_fault(up, &backend, fault);
                }
                tracing::warn!(upstream = %up.name(), backend = %backend, "upstream response timed out");
                pick.failure();
                if !(next.timeout && resendable) {
                    last = Some(Failure::Timeout);
                    break;
                }
                Failure::Timeout
            }
        };
        held = None;
        last = Some(failure);
        tried.push(backend.key());
    }
    if let Some(resp) = held {
        return resp;
    }
    match last {
        None => plain(
            StatusCode::SERVICE_UNAVAILABLE,
            "503 service unavailable: no backend available\n",
        ),
        Some(Failure::Error | Failure::Invalid) => plain(
            StatusCode::BAD_GATEWAY,
            "502 bad gateway: no backend answered\n",
        ),
        Some(Failure::Timeout) => plain(
            StatusCode::GATEWAY_TIMEOUT,
            "504 gateway timeout: the backend did not answer in time\n",
        ),
    }
}

/// The answer to a client whose own body broke the try: the pick was dropped without an
/// outcome, so the backend is not blamed, and nothing is retried.
fn client_fault(
    up: &Upstream,
    backend: &divvy::Backend,
    fault: ClientFault,
) -> Response<ProxyBody> {
    tracing::debug!(upstream = %up.name(), %backend, ?fault, "client request body failed");
    let text = match fault {
        ClientFault::Invalid => "400 bad request: invalid request body\n",
        ClientFault::TooSlow => "408 request timeout: the request body stalled\n",
        ClientFault::Aborted => "499 client closed request\n",
    };
    plain(fault.status(), text)
}

/// Turns the backend's response into the client's; a `101 Switching Protocols` to a client
/// that asked for it starts the tunnel.
fn respond(
    mut resp: Response<Incoming>,
    completion: Completion,
    lease: Lease,
    up: &Upstream,
    pinned: Option<u64>,
    client_upgrade: &mut Option<OnUpgrade>,
) -> Response<ProxyBody> {
    let switching = client_upgrade.is_some() && resp.status() == StatusCode::SWITCHING_PROTOCOLS;
    let upgrade_proto = resp.headers().get(header::UPGRADE).cloned();
    strip_hop_by_hop(resp.headers_mut());
    if pinned != Some(completion.backend().key()) {
        if let Some(cookie) = up.keys.set_cookie(&completion.backend()) {
            resp.headers_mut().append(header::SET_COOKIE, cookie);
        }
    }
    if switching {
        if let (Some(client), Some(proto)) = (client_upgrade.take(), upgrade_proto) {
            resp.headers_mut()
                .insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
            resp.headers_mut().insert(header::UPGRADE, proto);
            let upstream = hyper::upgrade::on(&mut resp);
            // The connection now belongs to the tunnel, not to the pool.
            drop(lease);
            tokio::spawn(tunnel(client, upstream, completion));
            return resp.map(|_| ProxyBody::empty());
        }
    }
    let read_timeout = up.config.read_timeout;
    resp.map(|body| ProxyBody::upstream(body, completion, lease, read_timeout))
}

/// Relays bytes both ways after a `101 Switching Protocols`; the request lasts as long as the
/// tunnel.
async fn tunnel(client: OnUpgrade, upstream: OnUpgrade, completion: Completion) {
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
    drop(completion);
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
