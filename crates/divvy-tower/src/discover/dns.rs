//! The DNS discovery configuration, the resolver it builds, and one lookup.

use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use divvy::{Backend, Balancer, Strategy};
use hickory_resolver::config::{NameServerConfig, ResolverConfig};
use hickory_resolver::name_server::TokioConnectionProvider;
use hickory_resolver::proto::op::ResponseCode;
use hickory_resolver::proto::rr::Record;
use hickory_resolver::proto::xfer::Protocol;
use hickory_resolver::proto::ProtoErrorKind;
use hickory_resolver::{ResolveError, TokioResolver};

use super::error::DiscoverError;
use super::records::{self, Srv};
use super::task::{self, Counters, DiscoveryEvent, DiscoveryHandle};
use crate::health::handle::Background;

pub(crate) type OnEvent = Arc<dyn Fn(&DiscoveryEvent<'_>) + Send + Sync>;

/// What is asked of DNS.
#[derive(Clone, Debug)]
enum Query {
    /// A and AAAA records, each address with this port.
    Host { name: Arc<str>, port: u16 },
    /// SRV records.
    Srv { name: Arc<str> },
}

/// Backends from DNS: a tokio task resolves a name, publishes the answer as the balancer's
/// backend set when it changed, and resolves again when the answer's TTL runs out.
///
/// - [`host`](Self::host): A and AAAA records; each address becomes a backend `ip:port` of
///   weight 1.
/// - [`srv`](Self::srv): SRV records; each `target:port` becomes a backend whose weight is the
///   SRV weight and whose tier ranks the SRV priority (lowest priority = tier 0, the primary).
///   See [`DiscoveryEvent`] for what each round reports.
///
/// The set is compared with the balancer's current one and published with [`Balancer::update`]
/// only when it differs, so an unchanged answer costs nothing downstream; backends that stay keep
/// their identity and so their live state (in flight, health, latency). The discovered set
/// replaces the whole set, including backends the balancer was built with.
///
/// When a query fails (timeout, `SERVFAIL`) or answers nothing (`NXDOMAIN`, no records), the
/// last good set keeps serving: the failure is logged with `tracing` at warn level, counted in
/// [`DiscoveryStats::failures`](super::DiscoveryStats::failures), reported to the
/// [callback](Self::on_event), and the query is retried after
/// [`retry_interval`](Self::retry_interval).
///
/// ```no_run
/// use std::time::Duration;
/// use divvy::{strategy::RoundRobin, Balancer};
/// use divvy_tower::discover::DnsDiscovery;
///
/// # async fn run() -> Result<(), Box<dyn std::error::Error>> {
/// // Consul's DNS interface: SRV records carry ports, weights and priorities.
/// let mut dns = DnsDiscovery::srv("web.service.consul.");
/// dns.nameserver("127.0.0.1:8600".parse()?).max_ttl(Duration::from_secs(30));
/// let lb = Balancer::new(RoundRobin::new(), dns.resolve().await?)?;
/// let discovery = dns.spawn(lb.clone())?;
/// // … serve traffic with `lb` …
/// discovery.shutdown().await; // or drop it
/// # Ok(())
/// # }
/// ```
#[derive(Clone)]
pub struct DnsDiscovery {
    query: Query,
    nameservers: Vec<SocketAddr>,
    min_ttl: Duration,
    max_ttl: Duration,
    retry_interval: Duration,
    timeout: Duration,
    on_event: Option<OnEvent>,
}

impl DnsDiscovery {
    /// Discovers the A and AAAA records of `name`; each address with `port` is a backend of
    /// weight 1 whose identity is `ip:port` (`10.0.0.7:8080`, `[2001:db8::7]:8080`). Both record
    /// types are asked for; if either query fails the round fails, so a passing hiccup of one
    /// family never shrinks the set.
    pub fn host(name: impl Into<Arc<str>>, port: u16) -> Self {
        Self::with_query(Query::Host {
            name: name.into(),
            port,
        })
    }

    /// Discovers the SRV records of `name` (`_http._tcp.web.example.` or Consul's
    /// `web.service.consul.`). Each record's `target:port` is a backend, its identity the target
    /// in lower case without the final dot (`web-1.node.dc1.consul:21000`). Its weight is the SRV
    /// weight, with 0 read as 1 (the smallest divvy weight, so that weight-0 records still get a
    /// little traffic, as RFC 2782 asks) and weights above [`MAX_WEIGHT`](divvy::MAX_WEIGHT)
    /// scaled down in proportion. Its tier ranks the SRV priority: the lowest priority is tier 0,
    /// the next distinct one tier 1, and so on up to tier
    /// [`MAX_TIERS`](divvy::MAX_TIERS)` - 1`, which later priorities share. Tiers take effect
    /// with a tier-aware strategy such as divvy's `Failover`. Targets are
    /// not resolved here: the health checker and the connector resolve them when they connect.
    pub fn srv(name: impl Into<Arc<str>>) -> Self {
        Self::with_query(Query::Srv { name: name.into() })
    }

    fn with_query(query: Query) -> Self {
        DnsDiscovery {
            query,
            nameservers: Vec::new(),
            min_ttl: Duration::from_secs(1),
            max_ttl: Duration::from_secs(300),
            retry_interval: Duration::from_secs(5),
            timeout: Duration::from_secs(5),
            on_event: None,
        }
    }

    /// Asks this nameserver (UDP, and TCP for truncated answers) instead of the system's; call it
    /// again to add more, tried in turn. For Consul's DNS interface use `127.0.0.1:8600`. Default
    /// is the system configuration (`/etc/resolv.conf`).
    pub fn nameserver(&mut self, addr: SocketAddr) -> &mut Self {
        self.nameservers.push(addr);
        self
    }

    /// The shortest time between two queries, however short the TTL (a TTL of 0 would otherwise
    /// mean querying in a loop). Default is 1 s.
    pub fn min_ttl(&mut self, ttl: Duration) -> &mut Self {
        self.min_ttl = ttl;
        self
    }

    /// The longest time between two queries, however long the TTL, so that a change is seen
    /// within this bound. When it is below [`min_ttl`](Self::min_ttl), it wins. Default is 300 s.
    pub fn max_ttl(&mut self, ttl: Duration) -> &mut Self {
        self.max_ttl = ttl;
        self
    }

    /// How long to wait before querying again after a failed or empty answer. Default is 5 s.
    pub fn retry_interval(&mut self, interval: Duration) -> &mut Self {
        self.retry_interval = interval;
        self
    }

    /// How long one query waits for an answer from a nameserver. Default is 5 s, as
    /// `resolv.conf`'s `timeout`.
    pub fn timeout(&mut self, timeout: Duration) -> &mut Self {
        self.timeout = timeout;
        self
    }

    /// Calls `f` after every round with what it found (see [`DiscoveryEvent`]), on the
    /// discovery task: keep it quick. Default is no callback.
    pub fn on_event(
        &mut self,
        f: impl Fn(&DiscoveryEvent<'_>) + Send + Sync + 'static,
    ) -> &mut Self {
        self.on_event = Some(Arc::new(f));
        self
    }

    /// Resolves once and returns the set, in the order [`spawn`](Self::spawn) would publish it:
    /// the initial set for [`Balancer::new`], since a balancer cannot start empty.
    ///
    /// # Errors
    ///
    /// A [`DiscoverError`]: the configuration could not be read, the query failed, or it answered
    /// no usable record.
    pub async fn resolve(&self) -> Result<Vec<Backend>, DiscoverError> {
        let resolver = self.resolver()?;
        self.lookup(&resolver).await.map(|(backends, _)| backends)
    }

    /// Starts discovering on the current tokio runtime: the first query is sent at once, and
    /// every answer that differs from the balancer's current set is published to `balancer`.
    ///
    /// # Errors
    ///
    /// [`DiscoverError::Config`] when no nameserver is set and the system configuration cannot
    /// be read; nothing is spawned then.
    ///
    /// # Panics
    ///
    /// When called outside a tokio runtime, as [`tokio::spawn`].
    pub fn spawn<S: Strategy>(
        &self,
        balancer: Balancer<S>,
    ) -> Result<DiscoveryHandle, DiscoverError> {
        let resolver = self.resolver()?;
        let counters = Arc::new(Counters::default());
        let this = self.clone();
        let c = counters.clone();
        let inner = Background::spawn(move |stop| task::run(this, resolver, balancer, c, stop));
        Ok(DiscoveryHandle { inner, counters })
    }

    // === impl DnsDiscovery: resolving ===

    fn resolver(&self) -> Result<TokioResolver, DiscoverError> {
        let mut builder = if self.nameservers.is_empty() {
            TokioResolver::builder_tokio().map_err(|e| DiscoverError::Config(e.into()))?
        } else {
            let mut config = ResolverConfig::new();
            for &addr in &self.nameservers {
                config.add_name_server(NameServerConfig::new(addr, Protocol::Udp));
                config.add_name_server(NameServerConfig::new(addr, Protocol::Tcp));
            }
            TokioResolver::builder_with_config(config, TokioConnectionProvider::default())
        };
        builder.options_mut().timeout = self.timeout;
        Ok(builder.build())
    }

    /// One round: the set (sorted, never empty) and the time until it should be asked again.
    pub(crate) async fn lookup(
        &self,
        resolver: &TokioResolver,
    ) -> Result<(Vec<Backend>, Duration), DiscoverError> {
        // Each round asks the nameserver: the resolver's cache would answer from memory until
        // the TTL ends, and `max_ttl` may be shorter than the TTL.
        resolver.clear_cache();
        let (backends, ttl) = match &self.query {
            Query::Host { name, port } => {
                let (v4, v6) = futures_util::future::join(
                    resolver.ipv4_lookup(&**name),
                    resolver.ipv6_lookup(&**name),
                )
                .await;
                let v4 = answer(
                    name,
                    v4.map(|l| {
                        let ips = l.iter().map(|a| IpAddr::V4(a.0)).collect::<Vec<_>>();
                        (ips, min_ttl(l.as_lookup().records()))
                    }),
                )?;
                let v6 = answer(
                    name,
                    v6.map(|l| {
                        let ips = l.iter().map(|a| IpAddr::V6(a.0)).collect::<Vec<_>>();
                        (ips, min_ttl(l.as_lookup().records()))
                    }),
                )?;
                let ttl = v4.1.min(v6.1);
                let ips = v4.0.into_iter().chain(v6.0);
                (records::from_addrs(ips, *port), ttl)
            }
            Query::Srv { name } => {
                let lookup = resolver.srv_lookup(&**name).await;
                let (srvs, ttl) = answer(
                    name,
                    lookup.map(|l| {
                        let srvs = l
                            .iter()
                            .map(|s| Srv {
                                priority: s.priority(),
                                weight: s.weight(),
                                port: s.port(),
                                target: s.target().to_utf8(),
                            })
                            .collect::<Vec<_>>();
                        (srvs, min_ttl(l.as_lookup().records()))
                    }),
                )?;
                (records::from_srv(&srvs), ttl)
            }
        };
        if backends.is_empty() {
            return Err(DiscoverError::Empty {
                name: self.name().clone(),
            });
        }
        Ok((backends, self.clamp(ttl)))
    }

    /// The TTL bounded by `min_ttl` and `max_ttl` (`max_ttl` wins when they cross).
    pub(crate) fn clamp(&self, ttl: Duration) -> Duration {
        ttl.max(self.min_ttl).min(self.max_ttl)
    }

    pub(crate) fn name(&self) -> &Arc<str> {
        match &self.query {
            Query::Host { name, .. } | Query::Srv { name } => name,
        }
    }

    pub(crate) fn retry(&self) -> Duration {
        self.retry_interval
    }

    pub(crate) fn callback(&self) -> Option<&OnEvent> {
        self.on_event.as_ref()
    }
}

/// The smallest TTL of the records, or `Duration::MAX` (then `max_ttl` applies) for none.
fn min_ttl(records: &[Record]) -> Duration {
    records
        .iter()
        .map(|r| Duration::from_secs(u64::from(r.ttl())))
        .min()
        .unwrap_or(Duration::MAX)
}

/// Sorts a resolver result into records, "no records" (an empty answer, kept apart from a
/// failure so that one family without records does not fail the round), or an error.
fn answer<T>(
    name: &Arc<str>,
    result: Result<(Vec<T>, Duration), ResolveError>,
) -> Result<(Vec<T>, Duration), DiscoverError> {
    match result {
        Ok(found) => Ok(found),
        Err(e) if is_empty_answer(&e) => Ok((Vec::new(), Duration::MAX)),
        Err(e) => Err(DiscoverError::Resolve {
            name: name.clone(),
            source: e.into(),
        }),
    }
}

/// `NXDOMAIN`, or `NOERROR` with no record of the type: the name has nothing to offer, which is
/// an answer, unlike `SERVFAIL`, `REFUSED` or a timeout (hickory reports all of them as "no
/// records found" and tells them apart by response code).
fn is_empty_answer(e: &ResolveError) -> bool {
    e.proto().is_some_and(|p| {
        matches!(
            p.kind(),
            ProtoErrorKind::NoRecordsFound {
                response_code: ResponseCode::NoError | ResponseCode::NXDomain,
                ..
            }
        )
    })
}

impl fmt::Debug for DnsDiscovery {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DnsDiscovery")
            .field("query", &self.query)
            .field("nameservers", &self.nameservers)
            .field("min_ttl", &self.min_ttl)
            .field("max_ttl", &self.max_ttl)
            .field("retry_interval", &self.retry_interval)
            .field("timeout", &self.timeout)
            .field("on_event", &self.on_event.is_some())
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_ttl_is_bounded_and_the_maximum_wins_when_bounds_cross() {
        let mut d = DnsDiscovery::host("a.example.", 80);
        d.min_ttl(Duration::from_secs(2))
            .max_ttl(Duration::from_secs(60));
        assert_eq!(d.clamp(Duration::ZERO), Duration::from_secs(2));
        assert_eq!(d.clamp(Duration::from_secs(30)), Duration::from_secs(30));
        assert_eq!(d.clamp(Duration::MAX), Duration::from_secs(60));
        d.min_ttl(Duration::from_secs(90));
        assert_eq!(d.clamp(Duration::ZERO), Duration::from_secs(60));
    }
}
