//! Every request accounted once: the in-flight gauge, the status counters and the access log.
//!
//! An [`Entry`] is opened when a request arrives and closed when its guard drops, whatever
//! ended it: a response, or the client going away before the backend answered (hyper then drops
//! the handler's future mid-await, so straight-line code after the await would never run). A
//! request that never got its response is counted and logged as 499, nginx's "client closed
//! request". Requests hyper's parser refused never reach the handler; the connection reports
//! them through [`rejected`].

use std::net::SocketAddr;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::Instant;

use http::{Method, StatusCode};

use super::client::CLIENT_CLOSED_REQUEST;
use super::{Metrics, Proxy};
use crate::upstream::Upstream;

/// Where a request went, filled in as it is forwarded, for the access log.
#[derive(Debug, Default)]
pub struct Route {
    /// The upstream it was routed to.
    pub upstream: Option<Arc<Upstream>>,
    /// The last backend tried.
    pub backend: Option<Arc<str>>,
    /// Backends tried.
    pub tries: u32,
}

/// One request's accounting, closed on drop.
#[derive(Debug)]
pub(super) struct Entry {
    /// The proxy the request is served by.
    pub(super) proxy: Arc<Proxy>,
    client: SocketAddr,
    /// The request's host, lower case, if it names one.
    pub(super) host: Option<String>,
    /// Kept only when the access log is on.
    logged: Option<(Instant, Method, String)>,
    /// Where the request went.
    pub(super) route: Route,
    /// The response's status, once there is one.
    status: Option<StatusCode>,
}

impl Entry {
    /// Opens the entry of a request and counts it in flight.
    pub(super) fn open(
        proxy: Arc<Proxy>,
        client: SocketAddr,
        host: Option<String>,
        method: &Method,
        path: &str,
    ) -> Entry {
        proxy.metrics.in_flight.fetch_add(1, Relaxed);
        // Copied for the access log only when it is on: with it filtered out, nothing is copied.
        let logged = tracing::enabled!(target: "access", tracing::Level::INFO)
            .then(|| (Instant::now(), method.clone(), path.to_owned()));
        Entry {
            proxy,
            client,
            host,
            logged,
            route: Route::default(),
            status: None,
        }
    }

    /// Records the status the client is sent; the entry closes when dropped.
    pub(super) fn respond(&mut self, status: StatusCode) {
        self.status = Some(status);
    }
}

impl Drop for Entry {
    fn drop(&mut self) {
        let metrics = &self.proxy.metrics;
        metrics.in_flight.fetch_sub(1, Relaxed);
        // No response: the client left before one was ready.
        let status = self.status.unwrap_or(CLIENT_CLOSED_REQUEST);
        metrics.count(status);
        if let Some((started, method, path)) = &self.logged {
            tracing::info!(
                target: "access",
                client = %self.client.ip(),
                %method,
                host = self.host.as_deref().unwrap_or("-"),
                %path,
                status = status.as_u16(),
                upstream = self.route.upstream.as_ref().map_or("-", |u| u.name()),
                backend = self.route.backend.as_deref().unwrap_or("-"),
                tries = self.route.tries,
                ms = started.elapsed().as_millis() as u64,
            );
        }
    }
}

/// Accounts a request hyper's parser refused (a malformed head: 400; a head over
/// `max_header_size`: 431), which never reached the handler.
pub fn rejected(proxy: &Proxy, client: SocketAddr, error: &hyper::Error) {
    let status = if error.is_parse_too_large() {
        StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE
    } else {
        StatusCode::BAD_REQUEST
    };
    proxy.metrics.count(status);
    tracing::info!(
        target: "access",
        client = %client.ip(),
        method = "-",
        host = "-",
        path = "-",
        status = status.as_u16(),
        upstream = "-",
        backend = "-",
        tries = 0u32,
        ms = 0u64,
        error = %error,
    );
}

impl Metrics {
    /// Counts one response by status class.
    fn count(&self, status: StatusCode) {
        let class = (status.as_u16() / 100).clamp(1, 5) as usize - 1;
        self.responses[class].fetch_add(1, Relaxed);
    }
}
