//! Scaffolding for the proxy's tests: configs over test backends, an in-process proxy, and the
//! helpers several modules share. Backends, the client and bounded waits come from
//! [`divvy_test`].

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;

use http::StatusCode;

use divvy_proxy::{config, server};
pub use divvy_test::{backends, client, get, send, Answer, TestBackend, TestClient, DEADLINE};

/// Polls `cond` until it holds; panics at [`DEADLINE`] with `what`.
pub async fn eventually<F, Fut>(what: &str, cond: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    divvy_test::eventually_async(what, DEADLINE, cond).await;
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
    let config = config::parse(toml, "test.toml").unwrap_or_else(|d| {
        let lines: Vec<String> = d.iter().map(ToString::to_string).collect();
        panic!("invalid test config:\n{}\n---\n{toml}", lines.join("\n"))
    });
    server::start(config).await.unwrap()
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

/// Whether the balancer of `upstream` counts `backend` as available.
pub fn available(
    running: &divvy_proxy::server::Running,
    upstream: &str,
    backend: SocketAddr,
) -> bool {
    let table = running.proxy.table.load();
    let up = table.upstream(upstream).expect("the upstream exists");
    let id = backend.to_string();
    up.lb
        .stats()
        .iter()
        .find(|s| *s.id == *id)
        .is_some_and(|s| s.available)
}

/// `(name, count)` pairs as the map [`tally`] returns.
pub fn counts(pairs: &[(&str, usize)]) -> BTreeMap<String, usize> {
    pairs.iter().map(|(k, v)| (k.to_string(), *v)).collect()
}

/// One default host in front of upstream `app` over `bs`, with `top` added at the top level.
pub fn simple(top: &str, bs: &[Arc<TestBackend>]) -> String {
    format!(
        "listen = [\"127.0.0.1:0\"]\n{top}\n[[host]]\ndefault = true\nupstream = \"app\"\n\
         [upstream.app]\n{}",
        servers("app", bs, &[])
    )
}

/// One upstream over `bs` with fast passive and active health and two retries, `extra` added to
/// the upstream.
pub fn resilient(bs: &[Arc<TestBackend>], extra: &str) -> String {
    format!(
        r#"listen = ["127.0.0.1:0"]

[[host]]
default = true
upstream = "app"

[upstream.app]
strategy = "round_robin"
retries = 2
max_fails = 1
fail_timeout = "300ms"
connect_timeout = "1s"
response_timeout = "5s"
{extra}
[upstream.app.health_check]
path = "/healthz"
interval = "100ms"
timeout = "500ms"
rise = 1
fall = 1
{}"#,
        servers("app", bs, &[])
    )
}

/// Awaits every task, each within [`DEADLINE`], and returns their outputs in order.
pub async fn futures_join<T: Send + 'static>(
    tasks: impl Iterator<Item = tokio::task::JoinHandle<T>>,
) -> Vec<T> {
    let mut out = Vec::new();
    for t in tasks.collect::<Vec<_>>() {
        out.push(tokio::time::timeout(DEADLINE, t).await.unwrap().unwrap());
    }
    out
}

/// Upstreams `a` and `b` over the two backend sets, the default host sending to `target`.
pub fn two_upstreams(a: &[Arc<TestBackend>], b: &[Arc<TestBackend>], target: &str) -> String {
    format!(
        "listen = [\"127.0.0.1:0\"]\n[[host]]\ndefault = true\nupstream = \"{target}\"\n\
         [upstream.a]\nstrategy = \"round_robin\"\n{}\n[upstream.b]\nstrategy = \"round_robin\"\n{}",
        servers("a", a, &[]),
        servers("b", b, &[])
    )
}

/// The `divvy-proxy` binary, which `cargo test` builds for this test crate.
pub fn proxy_bin() -> std::path::PathBuf {
    std::path::PathBuf::from(env!("CARGO_BIN_EXE_divvy-proxy"))
}

/// The annotated sample config at the top of the checkout.
pub const SAMPLE_CONFIG: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../../examples/proxy.toml");
