//! The proxy's configuration, as plain data.
//!
//! [`parse`] and [`load`] turn TOML text into a [`Config`] (or every [`Diagnostic`] in it); the rest of
//! the proxy only ever sees a `Config` that passed every check. `docs/PROXY.md` documents each
//! field and `examples/proxy.toml` shows them all.

use std::net::SocketAddr;
use std::time::Duration;

pub use divvy::strategy::StrategyKind;

mod check;
mod diagnostic;
mod reader;

pub use check::{load, parse};
pub use diagnostic::Diagnostic;
pub use reader::parse_duration;

/// A whole, validated configuration.
#[derive(Clone, Debug, PartialEq)]
pub struct Config {
    /// Addresses the proxy accepts clients on.
    pub listen: Vec<SocketAddr>,
    /// The admin listener (`/status`, `/metrics`); off when `None`.
    pub admin: Option<SocketAddr>,
    /// How long a client may take to send a request's headers (nginx `client_header_timeout`).
    pub client_header_timeout: Duration,
    /// How long an idle keep-alive connection (HTTP/1 between requests, HTTP/2 with no stream
    /// open) stays open (nginx `keepalive_timeout`).
    pub keepalive_timeout: Duration,
    /// Longest pause between two reads of a request body (nginx `client_body_timeout`); a
    /// client that is slower gets 408 and its backend is not blamed.
    pub client_body_timeout: Duration,
    /// The largest request head a client may send, in bytes (nginx
    /// `large_client_header_buffers`).
    pub max_header_size: usize,
    /// The most header fields in one HTTP/1 request head (nginx has only the size limit).
    pub max_headers: usize,
    /// The most client connections open at once, over all listeners (nginx
    /// `worker_connections`); further clients wait in the kernel's accept queue.
    pub max_connections: usize,
    /// Forward `TRACE` requests instead of answering 405 (nginx always answers 405).
    pub allow_trace: bool,
    /// How long shutdown waits for in-flight requests before closing connections.
    pub shutdown_timeout: Duration,
    /// Also send the RFC 7239 `Forwarded` header, besides the `X-Forwarded-*` ones.
    pub forwarded: bool,
    /// Virtual hosts, in file order.
    pub hosts: Vec<Host>,
    /// Upstreams, in file order.
    pub upstreams: Vec<Upstream>,
}

/// A virtual host: the names it answers to and where its requests go.
#[derive(Clone, Debug, PartialEq)]
pub struct Host {
    /// Exact names (`example.com`) and leading wildcards (`*.example.com`), lower case.
    pub names: Vec<String>,
    /// Serves requests whose host matches no other name.
    pub default: bool,
    /// The upstream for paths no route matches.
    pub upstream: Option<String>,
    /// Path-prefix routes, in file order (the longest matching prefix wins).
    pub routes: Vec<Route>,
}

/// A path-prefix route inside a host.
#[derive(Clone, Debug, PartialEq)]
pub struct Route {
    /// The prefix, starting with `/`.
    pub path: String,
    /// The upstream that serves it.
    pub upstream: String,
    /// Remove the prefix before forwarding (keeping a leading `/`).
    pub strip_prefix: bool,
}

/// A named group of servers with its balancing strategy and failure handling.
#[derive(Clone, Debug, PartialEq)]
pub struct Upstream {
    /// The name hosts refer to.
    pub name: String,
    /// How a server is chosen: divvy's canonical strategy names (`weighted_round_robin`, the
    /// default as in nginx, `least_conn`, `ketama`, …).
    pub strategy: StrategyKind,
    /// The hash key, for `strategy = "ketama"` or `"maglev"`.
    pub hash: Option<HashConfig>,
    /// The proxy's own zone, for zone-aware failover (servers in this zone are preferred).
    pub zone: Option<String>,
    /// The servers, in file order.
    pub servers: Vec<Server>,
    /// Active health checks; off when `None`.
    pub health_check: Option<HealthCheck>,
    /// Passive health: failures within `fail_timeout` that take a server out (nginx `max_fails`;
    /// 0 turns it off).
    pub max_fails: u32,
    /// Passive health: the window and the time out (nginx `fail_timeout`).
    pub fail_timeout: Duration,
    /// Percentage of healthy servers under which health is ignored (Envoy panic routing; 0 = off,
    /// as nginx).
    pub panic_threshold: u32,
    /// Further tries on other servers after a failed one.
    pub retries: u32,
    /// Which failures pass a request on to the next server, and which statuses count against a
    /// server (nginx `proxy_next_upstream`).
    pub next_upstream: NextUpstream,
    /// Upstream connect timeout (nginx `proxy_connect_timeout`).
    pub connect_timeout: Duration,
    /// Time from sending a request to receiving the response head (nginx `proxy_read_timeout`
    /// for the first byte).
    pub response_timeout: Duration,
    /// Longest pause between two chunks of a response body (nginx `proxy_read_timeout`).
    pub read_timeout: Duration,
    /// Sticky sessions by cookie; off when `None`.
    pub sticky: Option<Sticky>,
}

/// nginx's `proxy_next_upstream`: when a failed try passes the request on to another server,
/// and which answers count against a server's passive health.
///
/// As nginx: a connect error, a timeout and an invalid response (`error`, `timeout`,
/// `invalid_header`) always count against the server, listed or not; they only decide
/// whether the request is retried. A listed 500, 502, 503, 504 or 429 is retried *and* counts;
/// a listed 403 or 404 is retried and never counts. A status not listed is the application's
/// answer: relayed, and the server stays healthy. What the client did (aborted, sent an invalid
/// or too slow body) never counts and is never retried.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NextUpstream {
    /// `error`: retry after a connection error or reset.
    pub error: bool,
    /// `timeout`: retry after a connect or response timeout.
    pub timeout: bool,
    /// `invalid_header`: retry after a response that is not valid HTTP.
    pub invalid_header: bool,
    /// `http_NNN`: retry after these statuses (the 5xx and 429 among them also count as failures).
    pub statuses: Vec<http::StatusCode>,
    /// `non_idempotent`: also retry POST, PATCH… once they were sent (nginx never does by default).
    pub non_idempotent: bool,
}

impl Default for NextUpstream {
    /// nginx's default, `proxy_next_upstream error timeout`.
    fn default() -> Self {
        NextUpstream {
            error: true,
            timeout: true,
            ..NextUpstream::off()
        }
    }
}

impl NextUpstream {
    /// Every condition `next_upstream` accepts, as nginx spells them.
    pub const NAMES: [&'static str; 12] = [
        "error",
        "timeout",
        "invalid_header",
        "http_500",
        "http_502",
        "http_503",
        "http_504",
        "http_403",
        "http_404",
        "http_429",
        "non_idempotent",
        "off",
    ];

    /// `off`: never retry.
    pub fn off() -> Self {
        NextUpstream {
            error: false,
            timeout: false,
            invalid_header: false,
            statuses: Vec::new(),
            non_idempotent: false,
        }
    }

    /// The status an `http_NNN` condition names, if nginx has that condition.
    pub fn status(condition: &str) -> Option<http::StatusCode> {
        let code: u16 = condition.strip_prefix("http_")?.parse().ok()?;
        if matches!(code, 500 | 502 | 503 | 504 | 403 | 404 | 429) {
            http::StatusCode::from_u16(code).ok()
        } else {
            None
        }
    }

    /// The statuses that count against a server: the listed 5xx and 429 (nginx never counts 403
    /// and 404).
    pub fn failing_statuses(&self) -> impl Iterator<Item = http::StatusCode> + '_ {
        self.statuses
            .iter()
            .copied()
            .filter(|s| s.is_server_error() || *s == http::StatusCode::TOO_MANY_REQUESTS)
    }
}

/// Where the hash key of `strategy = "ketama"` or `"maglev"` comes from.
#[derive(Clone, Debug, PartialEq)]
pub struct HashConfig {
    /// The request property that is hashed.
    pub key: HashKey,
    /// Bounded loads (Mirrokni et al.): no server takes more than this factor times the average
    /// load (e.g. 1.25). `None` is plain consistent hashing.
    pub bounded_load: Option<f64>,
}

/// A request property to hash.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum HashKey {
    /// `header:NAME`: a request header's value.
    Header(http::HeaderName),
    /// `cookie:NAME`: a cookie's value.
    Cookie(String),
    /// `query:NAME`: a query parameter's raw value.
    Query(String),
    /// `uri`: path and query.
    Uri,
    /// `client_ip`: the client's address.
    ClientIp,
}

/// One backend server.
#[derive(Clone, Debug, PartialEq)]
pub struct Server {
    /// Where it listens (an IP address and port: the proxy does no DNS).
    pub address: SocketAddr,
    /// Relative weight, 1..=10000.
    pub weight: u32,
    /// Takes traffic only when no primary server is available.
    pub backup: bool,
    /// Zone label, for zone-aware failover.
    pub zone: Option<String>,
    /// Marked down by the operator (nginx `down`).
    pub down: bool,
    /// Most requests in flight at once (nginx `max_conns`).
    pub max_conns: Option<u32>,
}

/// Active health checks of one upstream.
#[derive(Clone, Debug, PartialEq)]
pub struct HealthCheck {
    /// The path requested with `GET`; a 2xx or 3xx answer passes.
    pub path: String,
    /// Time between two checks of a server.
    pub interval: Duration,
    /// How long a check may take.
    pub timeout: Duration,
    /// Passing checks in a row that bring a server back.
    pub rise: u32,
    /// Failing checks in a row that take a server out.
    pub fall: u32,
}

/// Sticky sessions by cookie.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Sticky {
    /// The cookie's name.
    pub cookie: String,
    /// The cookie's `Path`.
    pub path: String,
    /// The cookie's `Max-Age` in seconds; a session cookie when `None`.
    pub max_age: Option<u64>,
}

// === defaults ===

/// nginx's `client_header_timeout`.
pub const DEFAULT_CLIENT_HEADER_TIMEOUT: Duration = Duration::from_secs(60);
/// nginx's `client_body_timeout`.
pub const DEFAULT_CLIENT_BODY_TIMEOUT: Duration = Duration::from_secs(60);
/// nginx's `large_client_header_buffers 4 8k`.
pub const DEFAULT_MAX_HEADER_SIZE: usize = 32 * 1024;
/// nginx's `keepalive_timeout`.
pub const DEFAULT_KEEPALIVE_TIMEOUT: Duration = Duration::from_secs(75);
/// Header fields per request head: any head of 3 KB or less fits (a field takes at least 5
/// bytes, `a:b` and CRLF), so nothing nginx accepts at that size is refused. Any value above
/// hyper's own 100 moves the parse buffer to the heap, about 5 % slower per request head.
pub const DEFAULT_MAX_HEADERS: usize = 1000;
/// The largest `max_headers`: a 1 MiB head of minimal fields.
pub const MAX_MAX_HEADERS: usize = 200_000;
/// nginx's compiled-in `worker_connections` (its packaged config says 768 or 1024; the proxy
/// also needs descriptors for backends, so it stays under the usual 1024 limit).
pub const DEFAULT_MAX_CONNECTIONS: usize = 512;
/// The largest `max_connections`.
pub const MAX_MAX_CONNECTIONS: usize = 1 << 20;
/// The longest timeout, interval or drain in a config: one day. Anything longer is a typo, and
/// values near `u64::MAX` seconds overflow the runtime's clock arithmetic.
pub const MAX_TIMEOUT: Duration = Duration::from_secs(24 * 3600);
/// The longest sticky cookie `max_age`: 400 days, the cap browsers apply (RFC 6265bis).
pub const MAX_STICKY_AGE: Duration = Duration::from_secs(400 * 24 * 3600);
/// The smallest head buffer hyper accepts.
pub const MIN_MAX_HEADER_SIZE: usize = 8 * 1024;
/// How long a shutdown drains.
pub const DEFAULT_SHUTDOWN_TIMEOUT: Duration = Duration::from_secs(30);
/// nginx's `proxy_connect_timeout`.
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(60);
/// nginx's `proxy_read_timeout`.
pub const DEFAULT_RESPONSE_TIMEOUT: Duration = Duration::from_secs(60);
/// nginx's `proxy_read_timeout`.
pub const DEFAULT_READ_TIMEOUT: Duration = Duration::from_secs(60);
/// nginx's `fail_timeout`.
pub const DEFAULT_FAIL_TIMEOUT: Duration = Duration::from_secs(10);
/// nginx's `max_fails`.
pub const DEFAULT_MAX_FAILS: u32 = 1;
/// Further tries after a failure (nginx tries every server; a bound keeps tail latency sane).
pub const DEFAULT_RETRIES: u32 = 2;
/// The sticky cookie's default name.
pub const DEFAULT_STICKY_COOKIE: &str = "divvy_sticky";
