//! Listeners, connections, reload and graceful shutdown.
//!
//! Every client connection has a deadline ([`crate::conn`]), the listeners share a connection
//! cap ([`crate::listener`]), and each request passes [`crate::edge::admit`] before it is routed.
//! Each accepted connection is served by hyper-util's auto server (HTTP/1.1, or HTTP/2 when the
//! client opens with the h2c prior-knowledge preface) with upgrades enabled. Shutdown stops the
//! accept loops, asks every connection to finish its in-flight requests and close (HTTP/1: after
//! the current response; HTTP/2: GOAWAY), and waits for that up to `shutdown_timeout`.

use std::convert::Infallible;
use std::io;
use std::net::SocketAddr;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;

use arc_swap::ArcSwap;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use parking_lot::Mutex;
use tokio::net::TcpListener;
use tokio::sync::{watch, Semaphore};

use crate::config::Config;
use crate::conn::{self, Activity, Deadlines, Tracked};
use crate::edge;
use crate::forward::{self, Metrics, Proxy};
use crate::listener::{Accepted, Acceptor};
use crate::route::Table;
use crate::upstream::Upstream;

/// A running proxy.
pub struct Running {
    /// The addresses the proxy accepts clients on (ports resolved when the config said 0).
    pub listen: Vec<SocketAddr>,
    /// The admin listener's address, if enabled.
    pub admin: Option<SocketAddr>,
    /// The shared state: table and counters.
    pub proxy: Arc<Proxy>,
    config: Mutex<Config>,
    shutdown: watch::Sender<bool>,
}

impl std::fmt::Debug for Running {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Running")
            .field("listen", &self.listen)
            .field("admin", &self.admin)
            .field("proxy", &self.proxy)
            .finish_non_exhaustive()
    }
}

/// Builds the routing table for `config`, reusing what `previous` can lend.
fn build_table(config: &Config, previous: Option<&Table>) -> Result<Table, String> {
    let mut plans = Vec::with_capacity(config.upstreams.len());
    for u in &config.upstreams {
        let prev = previous.and_then(|t| t.upstream(&u.name));
        plans.push(Upstream::plan(u, prev)?);
    }
    let upstreams = plans.into_iter().map(|p| p.apply()).collect();
    Ok(Table::new(config, upstreams))
}

/// Binds every listener and starts serving `config`.
pub async fn start(config: Config) -> io::Result<Running> {
    let table = build_table(&config, None).map_err(io::Error::other)?;
    let proxy = Arc::new(Proxy {
        table: ArcSwap::from_pointee(table),
        forwarded: config.forwarded,
        client_body_timeout: config.client_body_timeout,
        metrics: Metrics::default(),
    });
    let (shutdown, _) = watch::channel(false);
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        // hyper runs this timer from the end of one response to the next head too, so at
        // `header_timeout` alone it would cut idle keep-alive connections before
        // `keepalive_timeout`. The connection's own deadline (`conn`) enforces both from accept;
        // hyper's bounds a slow second head, no later than the idle limit would.
        .header_read_timeout(config.client_header_timeout.max(config.keepalive_timeout))
        .max_buf_size(config.max_header_size)
        .max_headers(config.max_headers);
    builder
        .http2()
        .timer(TokioTimer::new())
        .max_header_list_size(config.max_header_size as u32);
    let deadlines = Deadlines {
        header: config.client_header_timeout,
        keepalive: config.keepalive_timeout,
    };
    let edge = Arc::new(Edge {
        proxy: proxy.clone(),
        builder,
        deadlines,
        policy: edge::Policy {
            allow_trace: config.allow_trace,
        },
    });
    // One cap for all client listeners, as nginx's `worker_connections` per worker.
    let slots = Arc::new(Semaphore::new(config.max_connections));

    let mut listen = Vec::with_capacity(config.listen.len());
    for addr in &config.listen {
        let listener = TcpListener::bind(addr).await?;
        listen.push(listener.local_addr()?);
        tokio::spawn(accept_loop(
            Acceptor::new(listener, slots.clone()),
            edge.clone(),
            shutdown.subscribe(),
        ));
    }
    let admin = match config.admin {
        Some(addr) => {
            let listener = TcpListener::bind(addr).await?;
            let local = listener.local_addr()?;
            if !local.ip().is_loopback() {
                tracing::warn!(admin = %local, "the admin listener is reachable from other hosts");
            }
            tokio::spawn(crate::admin::serve(
                listener,
                proxy.clone(),
                deadlines,
                shutdown.subscribe(),
            ));
            Some(local)
        }
        None => None,
    };
    Ok(Running {
        listen,
        admin,
        proxy,
        config: Mutex::new(config),
        shutdown,
    })
}

impl Running {
    /// Swaps in `config`. Upstreams whose balancing rules are unchanged keep their balancer (and
    /// its live state) and get the new server list; requests in flight finish on the table they
    /// started with. Listener changes need a restart and are reported, not applied.
    pub fn reload(&self, config: Config) -> Result<(), String> {
        let current = self.proxy.table.load();
        let table = build_table(&config, Some(&current))?;
        let mut old = self.config.lock();
        if old.listen != config.listen || old.admin != config.admin {
            tracing::warn!("listen and admin addresses change only on restart");
        }
        if old.forwarded != config.forwarded
            || old.client_header_timeout != config.client_header_timeout
            || old.keepalive_timeout != config.keepalive_timeout
            || old.max_header_size != config.max_header_size
            || old.max_headers != config.max_headers
            || old.max_connections != config.max_connections
            || old.allow_trace != config.allow_trace
        {
            tracing::warn!("forwarded_header and [client] settings change only on restart");
        }
        self.proxy.table.store(Arc::new(table));
        *old = config;
        Ok(())
    }

    /// Reads, checks and swaps in the config at `path` (what SIGHUP does). Any error leaves the
    /// running config in place; the message lists every problem, one per line.
    pub fn reload_file(&self, path: &std::path::Path) -> Result<(), String> {
        let config = crate::config::load(path).map_err(|diags| {
            let lines: Vec<String> = diags.iter().map(ToString::to_string).collect();
            lines.join("\n")
        })?;
        self.reload(config)
    }

    /// Stops accepting, lets in-flight requests finish, and returns when every connection has
    /// closed or `shutdown_timeout` has passed (then the remaining connections are abandoned).
    pub async fn shutdown(self) {
        let deadline = self.config.lock().shutdown_timeout;
        let _ = self.shutdown.send(true);
        let drained = tokio::time::timeout(deadline, self.shutdown.closed()).await;
        if drained.is_err() {
            tracing::warn!(
                open = self.shutdown.receiver_count(),
                "shutdown timeout reached with connections still open"
            );
        }
    }
}

/// What every client connection of one proxy shares.
struct Edge {
    proxy: Arc<Proxy>,
    builder: auto::Builder<TokioExecutor>,
    deadlines: Deadlines,
    policy: edge::Policy,
}

async fn accept_loop(mut acceptor: Acceptor, edge: Arc<Edge>, mut shutdown: watch::Receiver<bool>) {
    loop {
        let accepted = tokio::select! {
            _ = shutdown.changed() => return,
            a = acceptor.next() => a,
        };
        let _ = accepted.stream.set_nodelay(true);
        tokio::spawn(serve_connection(accepted, edge.clone(), shutdown.clone()));
    }
}

async fn serve_connection(
    accepted: Accepted,
    edge: Arc<Edge>,
    mut shutdown: watch::Receiver<bool>,
) {
    let Accepted { stream, peer, slot } = accepted;
    let client = forward::Peer::new(peer);
    let accounting = edge.proxy.clone();
    let activity = Activity::new();
    let (proxy, policy) = (edge.proxy.clone(), edge.policy);
    let busy_from = activity.clone();
    let service = service_fn(move |req| {
        let busy = busy_from.begin();
        let (proxy, client) = (proxy.clone(), client.clone());
        async move {
            let resp = match edge::admit(req, policy) {
                Ok(req) => forward::handle(proxy, req, client).await?,
                Err(refusal) => {
                    tracing::debug!(peer = %client.addr, %refusal, "request refused");
                    proxy.metrics.responses[3].fetch_add(1, Relaxed);
                    refusal.response()
                }
            };
            Ok::<_, Infallible>(resp.map(|body| Tracked::new(body, busy)))
        }
    });
    let conn = edge
        .builder
        .serve_connection_with_upgrades(TokioIo::new(stream), service);
    // `shutdown` is held until the connection ends: `Running::shutdown` waits for every receiver.
    let result = conn::drive(
        conn,
        |c| c.graceful_shutdown(),
        &activity,
        edge.deadlines,
        &mut shutdown,
    )
    .await;
    drop(slot);
    if let Err(e) = result {
        // A head hyper's parser refused was answered (400, 431) by hyper itself, before any
        // handler: it is accounted here, once.
        if let Some(h) = e.downcast_ref::<hyper::Error>().filter(|h| h.is_parse()) {
            forward::rejected(&accounting, peer, h);
        }
        tracing::debug!(%peer, error = %e, "connection ended with an error");
    }
}
