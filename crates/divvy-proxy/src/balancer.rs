//! One upstream's [`divvy::Balancer`], whatever its strategy.
//!
//! The config names a strategy by its canonical divvy name; the library's
//! [`StrategySpec`] builds it as a [`BoxStrategy`], so every upstream is the same type, `Lb`,
//! whatever its strategy. The boxed pick costs one indirect call over the static one.

use std::sync::Arc;

use divvy::strategy::{BoxStrategy, FailoverMode, StrategySpec};
use divvy::{AdminState, Backend, Balancer, HealthConfig};

use crate::config::{Source, Upstream};

/// An upstream's balancer: divvy's [`Balancer`] over the strategy its config names.
pub type Lb = Balancer<BoxStrategy>;

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

/// The strategy an upstream's config asks for, as a divvy [`StrategySpec`].
///
/// Backup servers (or a zone for the proxy itself) wrap the strategy in divvy's
/// [`Failover`](divvy::strategy::Failover): backups take traffic only when no primary can, and
/// with a zone the proxy's own zone is preferred inside a tier.
pub fn spec(up: &Upstream) -> Result<StrategySpec, String> {
    let mut spec = StrategySpec::new(up.strategy);
    if let Some(c) = up.hash.as_ref().and_then(|h| h.bounded_load) {
        spec = spec.bounded_load(c).map_err(|e| e.to_string())?;
    }
    if up.zone.is_some() {
        spec = spec.failover(FailoverMode::Zone);
    } else if up.servers.iter().any(|s| s.backup) || up.source != Source::Servers {
        // A discovered set may carry tiers (an etcd record's `tier`, an SRV priority).
        spec = spec.failover(FailoverMode::Priority);
    }
    Ok(spec)
}

/// Builds the balancer an upstream's config asks for, starting with `initial`: the `[[server]]`
/// list, or what a discovery source listed.
pub fn build(up: &Upstream, initial: Vec<Backend>) -> Result<Arc<Lb>, String> {
    let mut b = Balancer::builder(spec(up)?.build());
    b.health(health_config(up));
    let lb = b.build(initial).map_err(|e| e.to_string())?;
    // Every health transition, active or passive, is worth a log line.
    let upstream = up.name.clone();
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
