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
mod source;

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
    /// The largest request head a client may send, in bytes (nginx
    /// `large_client_header_buffers`).
    pub max_header_size: usize,
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
    /// The servers, in file order; empty when they come from a discovery [`source`](Self::source).
    pub servers: Vec<Server>,
    /// Where the servers come from: the `[[server]]` list, etcd or DNS.
    pub source: Source,
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

/// Where an upstream's servers come from.
#[derive(Clone, Debug, PartialEq)]
pub enum Source {
    /// The upstream's `[[server]]` list.
    Servers,
    /// The keys under an etcd prefix (`[upstream.NAME.etcd]`), followed with divvy-tower's
    /// `EtcdDiscovery`.
    Etcd(EtcdSource),
    /// DNS records (`[upstream.NAME.dns]`), followed with divvy-tower's `DnsDiscovery`.
    Dns(DnsSource),
}

/// `[upstream.NAME.etcd]`.
#[derive(Clone, Debug, PartialEq)]
pub struct EtcdSource {
    /// The etcd cluster's client URLs.
    pub endpoints: Vec<String>,
    /// The watched prefix; each key under it is one server (default `/divvy/NAME/`).
    pub prefix: String,
    /// How long a connection attempt or a listing waits (default 5 s).
    pub timeout: Duration,
}

/// `[upstream.NAME.dns]`.
#[derive(Clone, Debug, PartialEq)]
pub struct DnsSource {
    /// What is asked.
    pub query: DnsQuery,
    /// The nameservers asked; the system's when empty.
    pub nameservers: Vec<SocketAddr>,
}

/// The records a [`DnsSource`] asks for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum DnsQuery {
    /// A and AAAA records of `name`, each address with `port`.
    Host {
        /// The name.
        name: String,
        /// The servers' port.
        port: u16,
    },
    /// SRV records of `name` (ports, weights and priorities from the records).
    Srv {
        /// The name, e.g. `_http._tcp.web.example.`.
        name: String,
    },
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
/// nginx's `large_client_header_buffers 4 8k`.
pub const DEFAULT_MAX_HEADER_SIZE: usize = 32 * 1024;
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
