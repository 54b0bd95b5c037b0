//! An upstream whose servers come from etcd or DNS: the divvy-tower discovery task that feeds its
//! balancer, and what `/status` says of it.
//!
//! The task runs for as long as the upstream keeps its balancer: a reload that keeps the balancer
//! and the source keeps the task (and the set it found); any other reload lists the source once
//! for the new balancer's first set and starts a new task on it.

use std::sync::Arc;

use divvy::Backend;
use divvy_tower::discover::{DiscoveryHandle, DnsDiscovery, EtcdDiscovery, EtcdHandle};
use serde_json::{json, Value};

use crate::balancer::Lb;
use crate::config::{DnsQuery, DnsSource, Source};

/// A running discovery task; stopped when dropped.
#[derive(Debug)]
pub struct Discovery {
    running: Running,
}

#[derive(Debug)]
enum Running {
    Etcd(EtcdHandle),
    Dns(DiscoveryHandle),
}

impl Discovery {
    /// Starts following `source` into `lb`; `None` for a `[[server]]` list, which is not
    /// discovered.
    ///
    /// # Errors
    ///
    /// The resolver configuration could not be read (DNS without `nameservers` on a system
    /// without `/etc/resolv.conf`).
    pub fn start(source: &Source, lb: &Arc<Lb>) -> Result<Option<Arc<Discovery>>, String> {
        let running = match source {
            Source::Servers => return Ok(None),
            Source::Etcd(e) => {
                let mut d = EtcdDiscovery::new(&e.endpoints, e.prefix.as_str());
                d.timeout(e.timeout);
                Running::Etcd(d.spawn(Lb::clone(lb)))
            }
            Source::Dns(s) => Running::Dns(dns(s).spawn(Lb::clone(lb)).map_err(|e| e.to_string())?),
        };
        Ok(Some(Arc::new(Discovery { running })))
    }
}

/// The set `source` holds now, read once: an etcd listing or a DNS answer (empty for a
/// `[[server]]` list, which is not discovered). Runs on its own thread and runtime, so that it can
/// be called from any code, async or not, on any tokio runtime flavour; it waits at most the
/// source's timeout.
///
/// # Errors
///
/// The source could not be reached, or answered nothing usable.
pub fn initial(source: &Source) -> Result<Vec<Backend>, String> {
    let source = source.clone();
    std::thread::scope(|scope| {
        scope
            .spawn(move || {
                let rt = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .map_err(|e| e.to_string())?;
                rt.block_on(async {
                    match &source {
                        Source::Servers => Ok(Vec::new()),
                        Source::Etcd(e) => {
                            let mut d = EtcdDiscovery::new(&e.endpoints, e.prefix.as_str());
                            d.timeout(e.timeout);
                            let listing = d.list().await.map_err(|e| e.to_string())?;
                            if listing.backends.is_empty() {
                                return Err(format!("etcd has no servers under {}", e.prefix));
                            }
                            Ok(listing.backends)
                        }
                        Source::Dns(s) => dns(s).resolve().await.map_err(|e| e.to_string()),
                    }
                })
            })
            .join()
            .unwrap_or_else(|_| Err("the first listing panicked".into()))
    })
}

fn dns(s: &DnsSource) -> DnsDiscovery {
    let mut d = match &s.query {
        DnsQuery::Host { name, port } => DnsDiscovery::host(name.as_str(), *port),
        DnsQuery::Srv { name } => DnsDiscovery::srv(name.as_str()),
    };
    for &ns in &s.nameservers {
        d.nameserver(ns);
    }
    d
}

/// What `/status` shows of an upstream's source: its kind, what it follows, and for etcd the
/// revision its set reflects and whether the watch is up.
pub fn status(source: &Source, discovery: Option<&Discovery>) -> Value {
    match (source, discovery.map(|d| &d.running)) {
        (Source::Etcd(e), Some(Running::Etcd(h))) => {
            let s = h.stats();
            json!({
                "kind": "etcd",
                "endpoints": e.endpoints,
                "prefix": e.prefix,
                "revision": s.revision,
                "watching": s.watching,
                "lists": s.lists,
                "resumes": s.resumes,
                "compacted": s.compacted,
                "skipped": s.skipped,
                "failures": s.failures,
            })
        }
        (Source::Dns(d), Some(Running::Dns(h))) => {
            let s = h.stats();
            let name = match &d.query {
                DnsQuery::Host { name, port } => json!({"name": name, "port": port}),
                DnsQuery::Srv { name } => json!({"srv": name}),
            };
            json!({
                "kind": "dns",
                "query": name,
                "rounds": s.rounds,
                "updates": s.updates,
                "failures": s.failures,
            })
        }
        _ => json!({"kind": "servers"}),
    }
}
