//! One upstream's [`divvy::Balancer`], whatever its strategy.
//!
//! `Balancer<S>` is generic over its strategy; the proxy chooses the strategy at run time from the
//! config, so it holds an `Arc<dyn Lb>`. The dynamic call costs one indirect jump per pick, far
//! below the cost of the request it routes.

use std::sync::Arc;

use divvy::strategy::RoundRobin;
use divvy::{
    AdminState, Backend, BackendStats, Balancer, Context, HealthConfig, Pick, PickError, Strategy,
    UpdateError,
};

use crate::config::{StrategyKind, Upstream};

/// What the proxy needs from a balancer, object safe.
pub trait Lb: Send + Sync + 'static {
    /// Chooses a backend.
    fn pick(&self, ctx: &Context<'_>) -> Result<Pick, PickError>;
    /// Replaces the backend set, keeping live state of backends that stay.
    fn update(&self, backends: Vec<Backend>) -> Result<(), UpdateError>;
    /// Per-backend counters and health.
    fn stats(&self) -> Vec<BackendStats>;
    /// Feeds an active health check result.
    fn report_probe(&self, id: &str, ok: bool);
    /// The current backends.
    fn backends(&self) -> Arc<[Backend]>;
    /// The strategy's name.
    fn strategy_name(&self) -> &'static str;
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

    fn report_probe(&self, id: &str, ok: bool) {
        // A backend removed by a reload between the probe and its report is simply ignored.
        let _ = Balancer::report_probe(self, id, ok);
    }

    fn backends(&self) -> Arc<[Backend]> {
        Balancer::backends(self)
    }

    fn strategy_name(&self) -> &'static str {
        self.strategy().name()
    }
}

/// Whether the running divvy has the strategy; `Err` explains what is missing.
pub fn available(kind: StrategyKind) -> Result<(), String> {
    match kind {
        StrategyKind::RoundRobin => Ok(()),
        other => Err(format!(
            "strategy `{}` is not available yet in this build of divvy",
            other.name()
        )),
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
pub fn build(up: &Upstream) -> Result<Arc<dyn Lb>, String> {
    let health = health_config(up);
    let backends = backends(up);
    fn make<S: Strategy>(
        s: S,
        health: HealthConfig,
        backends: Vec<Backend>,
    ) -> Result<Arc<dyn Lb>, String> {
        let mut b = Balancer::builder(s);
        b.health(health);
        let lb = b.build(backends).map_err(|e| e.to_string())?;
        Ok(Arc::new(lb))
    }
    available(up.strategy)?;
    match up.strategy {
        StrategyKind::RoundRobin => make(RoundRobin::new(), health, backends),
        _ => unreachable!("checked by available()"),
    }
}
