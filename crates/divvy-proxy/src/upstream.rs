//! A running upstream: its config, its balancer, its connection pool and its health checks.
//!
//! On reload an upstream whose balancing and health rules are unchanged keeps its balancer and
//! only [`update`](divvy::Balancer::update)s the backend set, so in-flight counts, passive failure
//! counts, health and latency of the servers that stay survive the reload.

use std::sync::Arc;

use crate::balancer::{self, Lb};
use crate::config;
use crate::pool::Pool;

/// An upstream as the proxy runs it.
pub struct Upstream {
    /// Its config.
    pub config: config::Upstream,
    /// Its balancer.
    pub lb: Arc<dyn Lb>,
    /// Its keep-alive connections to the backends.
    pub pool: Arc<Pool>,
    /// Active health checks, stopped when the last upstream sharing them is dropped.
    checks: Option<Arc<crate::health::Checks>>,
}

impl std::fmt::Debug for Upstream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Upstream")
            .field("name", &self.config.name)
            .field("backends", &self.lb.backends().len())
            .finish_non_exhaustive()
    }
}

impl Upstream {
    /// The upstream's name.
    pub fn name(&self) -> &str {
        &self.config.name
    }

    /// Plans the upstream for `config`, reusing `previous` (same name, from the running table)
    /// where its balancer or pool can be kept. Nothing running is changed until
    /// [`Plan::apply`].
    pub fn plan(
        config: &config::Upstream,
        previous: Option<&Arc<Upstream>>,
    ) -> Result<Plan, String> {
        let backends = balancer::backends(config);
        let reuse_lb = previous.filter(|p| same_balancing(&p.config, config));
        let lb = match reuse_lb {
            Some(_) => {
                divvy::validate(&backends).map_err(|e| format!("upstream {}: {e}", config.name))?;
                None
            }
            None => Some(
                balancer::build(config).map_err(|e| format!("upstream {}: {e}", config.name))?,
            ),
        };
        let pool = match previous {
            Some(p) if p.pool.connect_timeout() == config.connect_timeout => p.pool.clone(),
            _ => Pool::new(config.connect_timeout),
        };
        // A kept balancer with unchanged checks keeps its checker too.
        let checks = reuse_lb
            .filter(|p| p.config.health_check == config.health_check)
            .map(|p| p.checks.clone());
        Ok(Plan {
            config: config.clone(),
            kept: reuse_lb.map(|p| p.lb.clone()),
            checks,
            lb,
            backends,
            pool,
        })
    }
}

/// An upstream ready to be swapped in (see [`Upstream::plan`]).
pub struct Plan {
    config: config::Upstream,
    kept: Option<Arc<dyn Lb>>,
    lb: Option<Arc<dyn Lb>>,
    backends: Vec<divvy::Backend>,
    checks: Option<Option<Arc<crate::health::Checks>>>,
    pool: Arc<Pool>,
}

impl std::fmt::Debug for Plan {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Plan")
            .field("name", &self.config.name)
            .field("backends", &self.backends)
            .finish_non_exhaustive()
    }
}

impl Plan {
    /// Applies the plan: updates a kept balancer's backends, starts health checks.
    pub fn apply(self) -> Arc<Upstream> {
        let lb = match (self.kept, self.lb) {
            (Some(kept), _) => {
                if let Err(e) = kept.update(self.backends) {
                    // `plan` validated the set; only a strategy's own preparation can still
                    // refuse it, and then the old set keeps serving.
                    tracing::error!(upstream = %self.config.name, error = %e, "backend update refused");
                }
                kept
            }
            (None, Some(lb)) => lb,
            (None, None) => unreachable!("a plan has a balancer"),
        };
        let checks = match self.checks {
            Some(kept) => kept,
            None => self.config.health_check.as_ref().and_then(|hc| {
                match crate::health::Checks::start(hc, &lb) {
                    Ok(c) => Some(Arc::new(c)),
                    Err(e) => {
                        // `check` validated the settings; this is a defensive log only.
                        tracing::error!(upstream = %self.config.name, error = %e, "health checks not started");
                        None
                    }
                }
            }),
        };
        Arc::new(Upstream {
            config: self.config,
            lb,
            pool: self.pool,
            checks,
        })
    }
}

/// Whether a balancer built for `a` can serve `b`: the strategy and health rules are fixed at
/// build time, the backend set is not.
fn same_balancing(a: &config::Upstream, b: &config::Upstream) -> bool {
    a.strategy == b.strategy
        && a.hash == b.hash
        && balancer::health_config(a) == balancer::health_config(b)
        && a.servers.iter().any(|s| s.backup) == b.servers.iter().any(|s| s.backup)
        && a.zone == b.zone
}
