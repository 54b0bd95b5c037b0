//! The health registry: which backends may take traffic, and why.
//!
//! One state machine per backend identity, surviving snapshot updates, driven by an injected
//! [`Clock`](crate::Clock):
//!
//! - **Active results** ([`Balancer::report_probe`](crate::Balancer::report_probe)): HAProxy's
//!   `rise` / `fall`; a backend that fails `fall` probes in a row is *failing* until it passes
//!   `rise` in a row. A passing probe also lifts a passive ejection (Envoy's default).
//! - **Passive, nginx rule**: `max_fails` failures, counted as nginx counts them, make the backend
//!   unavailable for `fail_timeout`; then one request is let through (half-open). Its success
//!   restores the backend; its failure starts another `fail_timeout`.
//! - **Passive, Envoy rule** (opt-in): `consecutive_failures` failures in a row eject the backend
//!   for `base_ejection_time × k` on its k-th ejection (capped); at most `max_ejection_percent` of
//!   the set (but always at least one backend) is ejected at once. After the ejection one request
//!   probes; failure re-ejects for longer.
//! - **Slow start**: a backend that recovers, or joins a running set, ramps its effective weight
//!   from `slow_start_min_percent` to 100 % over `slow_start`. Weighted strategies (weighted round
//!   robin, least connections, random) use effective weight; hashing strategies (IP hash,
//!   consistent hashing) do not, because changing a weight there moves keys between backends,
//!   which is exactly what consistent hashing exists to avoid.
//! - **Panic threshold**: when fewer than `panic_threshold` % of a tier's operator-enabled
//!   backends are healthy, picks in that tier ignore health (Envoy's panic routing) rather than
//!   overload the few. [`Failover`](crate::strategy::Failover) (explicit, or implicit for any
//!   strategy over a set with several tiers) chooses its tier *before* panic
//!   applies: a tier with no healthy backend is skipped for the next one, and panic only widens the
//!   choice inside the tier that was chosen. When no tier has a healthy backend, the first tier
//!   with an operator-enabled backend is used in panic mode; with panic off, the pick fails with
//!   [`PickError::NoneAvailable`](crate::PickError) and, as in nginx, the next pick tries again.
//! - **Start state**: a joining backend is healthy at once (the default, as nginx), or
//!   [unchecked](StartState::Unchecked) until its first probe passes (Envoy, HAProxy
//!   `init-state`); an unchecked backend counts as unhealthy, so panic routing can still reach it.
//! - **Operator state** (up / drain / down), configured per backend or overridden at run time,
//!   always wins over health.
//!
//! Everything a pick reads is an atomic load; transitions take a per-backend lock and a
//! registry lock, off the pick path.

mod config;
mod machine;
mod registry;

pub use config::{HealthConfig, HealthConfigBuilder, StartState};
pub(crate) use machine::{same_state, Machine};
pub(crate) use registry::Registry;
pub use registry::{BackendStats, Cause, HealthEvent, HealthState};

#[cfg(test)]
mod tests;
