//! Active health checks: a tokio task that probes every backend of a balancer and reports the
//! results to the core, which applies `rise` / `fall`.
//!
//! Probes are a TCP connect ([`HealthChecker::tcp`]), an HTTP/1.1 `GET` that reads only the status
//! line ([`HealthChecker::http`]), or your own future ([`HealthChecker::custom`]). Each probe is
//! bounded by a timeout; rounds repeat every interval with jitter; the checker follows the
//! balancer's backend set as it is updated and stops when its [`HealthCheckHandle`] is dropped or
//! shut down.
//!
//! What the results mean is the core's business: a backend that fails `fall` probes in a row is
//! [`Failing`](divvy::HealthState::Failing) and takes no traffic until it passes `rise` in a row
//! (see [`divvy::health`]).

mod checker;
mod error;
pub(crate) mod handle;
mod http;
mod probe;
mod task;

pub use checker::HealthChecker;
pub use error::{ConfigError, ProbeError};
pub use handle::HealthCheckHandle;
pub use probe::ProbeReport;
