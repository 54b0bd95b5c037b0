//! # divvy
//!
//! Load balancing you embed: a [`Balancer`] chooses a backend for each request with a pluggable
//! [`Strategy`], skips what the health registry says is down, and counts what is in flight. The
//! core is runtime-agnostic: no async runtime, no I/O, time through an injected [`Clock`].
//!
//! ```
//! use divvy::{Backend, Balancer, Context, strategy::LeastConnections};
//!
//! let lb = Balancer::new(
//!     LeastConnections::new(),
//!     ["10.0.0.1:80", "10.0.0.2:80", "10.0.0.3:80"].map(Backend::new),
//! )?;
//!
//! let pick = lb.pick(&Context::new())?;          // in flight until dropped
//! println!("send the request to {}", pick.id());
//! pick.success();                               // feeds passive health
//!
//! // Backends come and go; per-backend state survives for those that stay.
//! lb.update(["10.0.0.1:80", "10.0.0.4:80"].map(Backend::new))?;
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! ## Strategies
//!
//! Each has one canonical name, the one configs use; see [`strategy`] for costs and origins.
//!
//! | strategy | name | what it does | nginx / peer equivalent |
//! |---|---|---|---|
//! | [`RoundRobin`](strategy::RoundRobin) | `round_robin` | each backend in turn | — |
//! | [`WeightedRoundRobin`](strategy::WeightedRoundRobin) | `weighted_round_robin` | smooth weighted round robin, nginx's exact sequence | default `upstream` |
//! | [`LeastConnections`](strategy::LeastConnections) | `least_conn` | fewest in flight per weight | `least_conn` |
//! | [`IpHash`](strategy::IpHash) | `ip_hash` | client address → backend | `ip_hash` |
//! | [`Ketama`](strategy::Ketama) | `ketama` | consistent hash ring, nginx's point placement | `hash $key consistent` |
//! | [`Maglev`](strategy::Maglev) | `maglev` | Maglev lookup table, optional bounded loads | Envoy `MAGLEV` |
//! | [`Random`](strategy::Random) | `random` | weighted random | `random` |
//! | [`PowerOfTwoChoices`](strategy::PowerOfTwoChoices) | `p2c`, `p2c_ewma` | best of two random by in-flight or peak-EWMA | `random two least_conn`, linkerd |
//! | [`Failover`](strategy::Failover) | `failover=priority\|zone` | priority tiers and zones around an inner strategy | `backup`, Envoy priorities |
//!
//! ## Choosing a strategy from a string
//!
//! A config names the strategy; [`StrategySpec`](strategy::StrategySpec) parses the name and its
//! parameters and builds a [`BoxStrategy`](strategy::BoxStrategy), a strategy like any other:
//!
//! ```
//! use divvy::{Backend, Balancer, Context, Strategy};
//! use divvy::strategy::StrategySpec;
//!
//! let spec: StrategySpec = "least_conn failover=priority".parse()?;
//! let lb = Balancer::new(
//!     spec.build(),
//!     [Backend::new("10.0.0.1:80"), Backend::new("10.0.0.2:80").backup()],
//! )?;
//! assert_eq!(lb.strategy().name(), "failover");
//! assert_eq!(lb.pick(&Context::new())?.id(), "10.0.0.1:80"); // the backup waits
//!
//! let err = "fastest".parse::<StrategySpec>().unwrap_err();
//! assert!(err.to_string().starts_with("unknown strategy `fastest` (expected one of: round_robin,"));
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! ## Health
//!
//! See [`health`] for the rules (active `rise`/`fall`, nginx `max_fails`/`fail_timeout`, Envoy
//! outlier ejection, slow start, panic threshold) and [`HealthConfig`] for every knob.

// `unsafe` is allowed in one place, `live.rs`, where the in-flight count doubles as the
// reference count of a backend's state (one atomic add per pick instead of two), each use with
// its `SAFETY:` argument.
#![deny(unsafe_code)]
#![warn(
    missing_docs,
    missing_debug_implementations,
    rust_2018_idioms,
    unreachable_pub
)]

mod backend;
mod balancer;
mod clock;
mod context;
mod error;
pub mod hash;
pub mod health;
#[allow(unsafe_code)]
mod live;
mod local;
mod pick;
mod set;
mod shard;
pub mod strategy;
mod view;

pub use backend::{AdminState, Backend, MAX_TIERS, MAX_WEIGHT};
pub use balancer::{Balancer, BalancerBuilder, Picker};
pub use clock::{Clock, ManualClock, SystemClock};
pub use context::Context;
pub use error::{BackendError, PickError, UpdateError};
pub use health::{
    BackendStats, Cause, HealthConfig, HealthConfigBuilder, HealthEvent, HealthState,
};
pub use pick::{BackendRef, Outcome, Pick};
pub use set::{validate, BackendSet};
pub use strategy::Strategy;
pub use view::View;
