//! Active health checks of one upstream, run by divvy-tower's [`HealthChecker`]: `GET path` on
//! every server each `interval`; a 2xx or 3xx status within `timeout` passes. Results feed the
//! balancer's `rise` / `fall` rules.

use std::sync::Arc;

use divvy_tower::health::{HealthCheckHandle, HealthChecker};

use crate::balancer::Lb;
use crate::config::HealthCheck;

/// The running checks of one upstream; dropping this stops them.
pub struct Checks {
    _handle: HealthCheckHandle,
}

impl std::fmt::Debug for Checks {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Checks").finish_non_exhaustive()
    }
}

impl Checks {
    /// Starts checking every backend of `lb`, as its set is at each round.
    pub fn start(hc: &HealthCheck, lb: &Arc<Lb>) -> Result<Checks, String> {
        let mut checker = HealthChecker::http(hc.path.clone());
        checker
            .interval(hc.interval)
            .timeout(hc.timeout)
            .expect_status(200..=399);
        let handle = checker.spawn(Lb::clone(lb)).map_err(|e| e.to_string())?;
        Ok(Checks { _handle: handle })
    }
}
