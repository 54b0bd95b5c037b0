//! One upstream's [`divvy::Balancer`], whatever its strategy.
//!
//! `Balancer<S>` is generic over its strategy; the proxy chooses the strategy at run time from the
//! config, so it holds an `Arc<dyn Lb>`. The dynamic call costs one indirect jump per pick, far
//! below the cost of the request it routes.

use std::sync::Arc;

use divvy::strategy::{
    Failover, IpHash, Ketama, LeastConnections, Maglev, PowerOfTwoChoices, Random, RoundRobin,
    WeightedRoundRobin,
};
use divvy::{
    AdminState, Backend, BackendStats, Balancer, Context, HealthConfig, Pick, PickError, Strategy,
    UpdateError,
};

use divvy_tower::discover::{
    DiscoverError, DiscoveryHandle, DnsDiscovery, EtcdDiscovery, EtcdHandle,
};
use divvy_tower::health::{HealthCheckHandle, HealthChecker};

use crate::config::{HashMethod, Source, StrategyKind, Upstream};

/// What the proxy needs from a balancer, object safe.
pub trait Lb: Send + Sync + 'static {
    /// Chooses a backend.
    fn pick(&self, ctx: &Context<'_>) -> Result<Pick, PickError>;
    /// Replaces the backend set, keeping live state of backends that stay.
    fn update(&self, backends: Vec<Backend>) -> Result<(), UpdateError>;
    /// Per-backend counters and health.
    fn stats(&self) -> Vec<BackendStats>;
    /// The current backends.
    fn backends(&self) -> Arc<[Backend]>;
    /// The strategy's name.
    fn strategy_name(&self) -> &'static str;
    /// Starts active health checks of this balancer's backends.
    fn spawn_checks(
        &self,
        checker: &HealthChecker,
    ) -> Result<HealthCheckHandle, divvy_tower::health::ConfigError>;
    /// Starts following an etcd prefix into this balancer.
    fn spawn_etcd(&self, discovery: &EtcdDiscovery) -> EtcdHandle;
    /// Starts following DNS records into this balancer.
    fn spawn_dns(&self, discovery: &DnsDiscovery) -> Result<DiscoveryHandle, DiscoverError>;
}

impl<S: Strategy> Lb for Balancer<S> {
    #[inline]
    fn pick(&self, ctx: &Context<'_>) -> Result<Pick, PickError> {
        Balancer::pick(self, ctx)
    }

    fn update(&self, backends: Vec<Backend>) -> Result<(), UpdateError> {
        Balancer::update(self, backends)
    }

    fn stats(&self) -> Vec<BackendStats> {
        Balancer::stats(self)
    }

    fn backends(&self) -> Arc<[Backend]> {
        Balancer::backends(self)
    }

    fn strategy_name(&self) -> &'static str {
        self.strategy().name()
    }

    fn spawn_checks(
        &self,
        checker: &HealthChecker,
    ) -> Result<HealthCheckHandle, divvy_tower::health::ConfigError> {
        checker.spawn(self.clone())
    }

    fn spawn_etcd(&self, discovery: &EtcdDiscovery) -> EtcdHandle {
        discovery.spawn(self.clone())
    }

    fn spawn_dns(&self, discovery: &DnsDiscovery) -> Result<DiscoveryHandle, DiscoverError> {
        discovery.spawn(self.clone())
    }
}

/// The backends of an upstream, as divvy sees them.
pub fn backends(up: &Upstream) -> Vec<Backend> {
    up.servers
        .iter()
        .map(|s| {
            let mut b = Backend::from_addr(s.address).weight(s.weight);
            if s.backup {
                b = b.backup();
            }
            if let Some(zone) = &s.zone {
                b = b.zone(zone.as_str());
            }
            if s.down {
                b = b.state(AdminState::Down);
            }
            if let Some(max) = s.max_conns {
                b = b.max_in_flight(max);
            }
            b
        })
        .collect()
}

/// The health rules of an upstream: nginx's passive `max_fails` / `fail_timeout`, the active
/// check's `rise` / `fall`, and panic routing only when asked for (nginx has none).
pub fn health_config(up: &Upstream) -> HealthConfig {
    let mut b = HealthConfig::builder();
    b.max_fails(up.max_fails)
        .fail_timeout(up.fail_timeout)
        .panic_threshold(up.panic_threshold);
    if let Some(hc) = &up.health_check {
        b.rise(hc.rise).fall(hc.fall);
    }
    b.build()
}

/// Builds the balancer an upstream's config asks for.
///
/// Backup servers (or a zone for the proxy itself) wrap the strategy in divvy's [`Failover`]:
/// backups take traffic only when no primary can, and with a zone the proxy's own zone is
/// preferred inside a tier.
/// `initial` is the set to start with: the `[[server]]` list, or what a discovery source listed.
pub fn build(up: &Upstream, initial: Vec<Backend>) -> Result<Arc<dyn Lb>, String> {
    let b = Builder {
        upstream: up.name.clone(),
        health: health_config(up),
        backends: initial,
        tiers: if up.zone.is_some() {
            Tiers::ZoneAware
        } else if up.servers.iter().any(|s| s.backup) || up.source != Source::Servers {
            // A discovered set may carry tiers (an etcd record's `tier`, an SRV priority).
            Tiers::Priority
        } else {
            Tiers::Flat
        },
    };
    match up.strategy {
        StrategyKind::RoundRobin => b.make(RoundRobin::new()),
        StrategyKind::WeightedRoundRobin => b.make(WeightedRoundRobin::new()),
        StrategyKind::LeastConn => b.make(LeastConnections::new()),
        StrategyKind::IpHash => b.make(IpHash::new()),
        StrategyKind::Random => b.make(Random::new()),
        StrategyKind::P2c => b.make(PowerOfTwoChoices::new()),
        StrategyKind::P2cEwma => b.make(PowerOfTwoChoices::peak_ewma()),
        StrategyKind::Hash => {
            // `check` requires a [hash] table for this strategy.
            let hash = up
                .hash
                .as_ref()
                .ok_or("strategy `hash` needs a [hash] table")?;
            match (hash.method, hash.bounded_load) {
                (HashMethod::Ketama, None) => b.make(Ketama::new()),
                (HashMethod::Ketama, Some(c)) => b.make(Ketama::new().bounded_load(c)),
                (HashMethod::Maglev, None) => b.make(Maglev::new()),
                (HashMethod::Maglev, Some(c)) => b.make(Maglev::new().bounded_load(c)),
            }
        }
    }
}

enum Tiers {
    Flat,
    Priority,
    ZoneAware,
}

struct Builder {
    upstream: String,
    health: HealthConfig,
    backends: Vec<Backend>,
    tiers: Tiers,
}

impl Builder {
    fn make<S: Strategy>(self, s: S) -> Result<Arc<dyn Lb>, String> {
        match self.tiers {
            Tiers::Flat => self.finish(s),
            Tiers::Priority => self.finish(Failover::new(s)),
            Tiers::ZoneAware => self.finish(Failover::zone_aware(s)),
        }
    }

    fn finish<S: Strategy>(self, s: S) -> Result<Arc<dyn Lb>, String> {
        let mut b = Balancer::builder(s);
        b.health(self.health);
        let lb = b.build(self.backends).map_err(|e| e.to_string())?;
        // Every health transition, active or passive, is worth a log line.
        let upstream = self.upstream;
        lb.subscribe(move |e| {
            tracing::warn!(
                %upstream,
                backend = %e.backend,
                from = ?e.from,
                to = ?e.to,
                cause = ?e.cause,
                "backend health changed"
            );
        });
        Ok(Arc::new(lb))
    }
}
