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
//! | strategy | what it does | nginx / peer equivalent |
//! |---|---|---|
//! | [`RoundRobin`](strategy::RoundRobin) | each backend in turn | — |
//! | [`WeightedRoundRobin`](strategy::WeightedRoundRobin) | smooth weighted round robin, nginx's exact sequence | default `upstream` |
//! | [`LeastConnections`](strategy::LeastConnections) | fewest in flight per weight | `least_conn` |
//! | [`IpHash`](strategy::IpHash) | client address → backend | `ip_hash` |
//! | [`Ketama`](strategy::Ketama) | consistent hash ring, nginx's point placement | `hash $key consistent` |
//! | [`Maglev`](strategy::Maglev) | Maglev lookup table, optional bounded loads | Envoy `MAGLEV` |
//! | [`Random`](strategy::Random) | weighted random | `random` |
//! | [`PowerOfTwoChoices`](strategy::PowerOfTwoChoices) | best of two drawn by weight, by in-flight or peak-EWMA | `random two least_conn`, linkerd |
//! | [`Failover`](strategy::Failover) | priority tiers and zones around an inner strategy | `backup`, Envoy priorities |
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
mod pick;
pub mod strategy;
mod view;

pub use backend::{AdminState, Backend, MAX_TIERS, MAX_WEIGHT};
pub use balancer::{validate, Balancer, BalancerBuilder, Picker};
pub use clock::{Clock, ManualClock, SystemClock};
pub use context::Context;
pub use error::{BackendError, PickError, UpdateError};
pub use health::{
    BackendStats, Cause, HealthConfig, HealthConfigBuilder, HealthEvent, HealthState, StartState,
};
pub use pick::{BackendRef, Outcome, Pick};
pub use strategy::Strategy;
pub use view::View;
