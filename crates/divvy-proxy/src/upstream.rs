//! A running upstream: its config, its balancer, its connection pool and its health checks.
//!
//! On reload an upstream whose balancing and health rules are unchanged keeps its balancer and
//! only [`update`](divvy::Balancer::update)s the backend set, so in-flight counts, passive failure
//! counts, health and latency of the servers that stay survive the reload.

use std::sync::Arc;

use crate::balancer::{self, Lb};
use crate::config::{self, Source};
use crate::discovery::Discovery;
use crate::pool::Pool;

/// An upstream as the proxy runs it.
pub struct Upstream {
    /// Its config.
    pub config: config::Upstream,
    /// Its balancer.
    pub lb: Arc<Lb>,
    /// Its keep-alive connections to the backends.
    pub pool: Arc<Pool>,
    /// Active health checks, stopped when the last upstream sharing them is dropped.
    checks: Option<Arc<crate::health::Checks>>,
    /// The etcd or DNS task feeding the balancer, stopped likewise.
    discovery: Option<Arc<Discovery>>,
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

    /// What `/status` shows of where the servers come from.
    pub fn source_status(&self) -> serde_json::Value {
        crate::discovery::status(&self.config.source, self.discovery.as_deref())
    }

    /// Plans the upstream for `config`, reusing `previous` (same name, from the running table)
    /// where its balancer or pool can be kept. Nothing running is changed until
    /// [`Plan::apply`].
    pub fn plan(
        config: &config::Upstream,
        previous: Option<&Arc<Upstream>>,
    ) -> Result<Plan, String> {
        let reuse_lb = previous.filter(|p| same_balancing(&p.config, config));
        // A discovered upstream keeps what its source found while the source is unchanged;
        // otherwise its new balancer starts empty and fills when the source answers.
        let discovery = reuse_lb
            .filter(|p| p.config.source == config.source)
            .map(|p| p.discovery.clone());
        let backends = match (&config.source, reuse_lb, &discovery) {
            (Source::Servers, _, _) => balancer::backends(config),
            (_, Some(p), Some(_)) => p.lb.backends().to_vec(),
            // A new balancer cannot start empty: it starts from a first listing, so that it never
            // serves before its source answered. (So an unreachable source refuses the config.)
            (source, _, _) => crate::discovery::initial(source)
                .map_err(|e| format!("upstream {}: {e}", config.name))?,
        };
        let lb = match reuse_lb {
            Some(_) => {
                divvy::validate(&backends).map_err(|e| format!("upstream {}: {e}", config.name))?;
                None
            }
            None => Some(
                balancer::build(config, backends.clone())
                    .map_err(|e| format!("upstream {}: {e}", config.name))?,
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
            discovery,
            lb,
            backends,
            pool,
        })
    }
}

/// An upstream ready to be swapped in (see [`Upstream::plan`]).
pub struct Plan {
    config: config::Upstream,
    kept: Option<Arc<Lb>>,
    lb: Option<Arc<Lb>>,
    backends: Vec<divvy::Backend>,
    checks: Option<Option<Arc<crate::health::Checks>>>,
    discovery: Option<Option<Arc<Discovery>>>,
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
        let discovery = match self.discovery {
            Some(kept) => kept,
            None => Discovery::start(&self.config.source, &lb).unwrap_or_else(|e| {
                tracing::error!(upstream = %self.config.name, error = %e, "discovery not started; the upstream has no servers");
                None
            }),
        };
        Arc::new(Upstream {
            config: self.config,
            lb,
            pool: self.pool,
            checks,
            discovery,
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
        && (a.source == Source::Servers) == (b.source == Source::Servers)
}
