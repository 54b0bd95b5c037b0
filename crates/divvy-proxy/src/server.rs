//! Listeners, connections, reload and graceful shutdown.
//!
//! Each accepted connection is served by hyper-util's auto server (HTTP/1.1, or HTTP/2 when the
//! client opens with the h2c prior-knowledge preface) with upgrades enabled. Shutdown stops the
//! accept loops, asks every connection to finish its in-flight requests and close (HTTP/1: after
//! the current response; HTTP/2: GOAWAY), and waits for that up to `shutdown_timeout`.

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;

use arc_swap::ArcSwap;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use parking_lot::Mutex;
use tokio::net::TcpListener;
use tokio::sync::watch;

use crate::config::Config;
use crate::forward::{self, Metrics, Proxy};
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
        metrics: Metrics::default(),
    });
    let (shutdown, _) = watch::channel(false);
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(config.client_header_timeout)
        .max_buf_size(config.max_header_size);
    builder
        .http2()
        .timer(TokioTimer::new())
        .max_header_list_size(config.max_header_size as u32);
    let builder = Arc::new(builder);

    let mut listen = Vec::with_capacity(config.listen.len());
    for addr in &config.listen {
        let listener = TcpListener::bind(addr).await?;
        listen.push(listener.local_addr()?);
        tokio::spawn(accept_loop(
            listener,
            proxy.clone(),
            builder.clone(),
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
            || old.max_header_size != config.max_header_size
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

async fn accept_loop(
    listener: TcpListener,
    proxy: Arc<Proxy>,
    builder: Arc<auto::Builder<TokioExecutor>>,
    mut shutdown: watch::Receiver<bool>,
) {
    loop {
        let (stream, peer) = tokio::select! {
            _ = shutdown.changed() => return,
            r = listener.accept() => match r {
                Ok(x) => x,
                Err(e) => {
                    // Out of file descriptors and the like: back off instead of spinning.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let _ = stream.set_nodelay(true);
        tokio::spawn(serve_connection(
            stream,
            peer,
            proxy.clone(),
            builder.clone(),
            shutdown.clone(),
        ));
    }
}

async fn serve_connection(
    stream: tokio::net::TcpStream,
    peer: SocketAddr,
    proxy: Arc<Proxy>,
    builder: Arc<auto::Builder<TokioExecutor>>,
    mut shutdown: watch::Receiver<bool>,
) {
    let client = forward::Peer::new(peer);
    let service = service_fn(move |req| forward::handle(proxy.clone(), req, client.clone()));
    let conn = builder.serve_connection_with_upgrades(TokioIo::new(stream), service);
    tokio::pin!(conn);
    // `shutdown` is held until the connection ends: `Running::shutdown` waits for every receiver.
    let result = tokio::select! {
        r = conn.as_mut() => r,
        _ = shutdown.changed() => {
            conn.as_mut().graceful_shutdown();
            conn.await
        }
    };
    if let Err(e) = result {
        tracing::debug!(%peer, error = %e, "connection ended with an error");
    }
}
