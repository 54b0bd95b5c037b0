//! Strategies: how a balancer chooses among available backends.
//!
//! A strategy is two functions. [`Strategy::prepare`] runs once per published backend set, off
//! the pick path, and builds whatever the strategy needs (a schedule, a ring, a lookup table).
//! [`Strategy::pick`] runs per request with `&self`, the prepared state, the request's
//! [`Context`] and a [`View`] of the live state, and returns the index of an available backend.
//! A pick must not block, lock or allocate: it is called concurrently from every thread.
//!
//! | strategy | name | origin | pick cost |
//! |---|---|---|---|
//! | [`RoundRobin`] | `round_robin` | classic | O(1) |
//! | [`WeightedRoundRobin`] | `weighted_round_robin` | nginx smooth weighted round robin | O(1) (precomputed schedule) |
//! | [`LeastConnections`] | `least_conn` | nginx `least_conn`; sampled above 64 backends | O(n) up to 64, then O(1) |
//! | [`IpHash`] | `ip_hash` | nginx `ip_hash` | O(1) |
//! | [`Ketama`] | `ketama` | nginx `hash … consistent` | O(1) expected (bucket index) |
//! | [`Maglev`] | `maglev` | Google Maglev, NSDI 2016 | O(1) |
//! | [`Random`] | `random` | weighted random (Vose alias table) | O(1) |
//! | [`PowerOfTwoChoices::new`] | `p2c` | Mitzenmacher; nginx `random two least_conn` | O(1) |
//! | [`PowerOfTwoChoices::peak_ewma`] | `p2c_ewma` | Finagle / linkerd peak-EWMA | O(1) |
//! | [`Failover`] | `failover` (a [`StrategySpec`] parameter) | nginx `backup`, Envoy priorities and zones | inner strategy per tier |
//!
//! # Choosing a strategy at run time
//!
//! The name column is each strategy's one canonical name: [`Strategy::name`] returns it,
//! [`StrategyKind`] parses and prints it (no aliases), and a [`StrategySpec`] adds the
//! parameters a strategy takes (`ketama bounded_load=1.25`, `p2c seed=7 failover=priority`).
//! [`StrategySpec::build`] returns a [`BoxStrategy`], which any strategy converts into and which
//! is itself a strategy, so `Balancer<BoxStrategy>` has the whole balancer API; it costs one
//! indirect call per pick over the concrete type.
//!
//! ```
//! use divvy::{Backend, Balancer, Context};
//! use divvy::strategy::BoxStrategy;
//!
//! let strategy: BoxStrategy = "ketama bounded_load=1.25".parse()?;
//! let lb = Balancer::new(strategy, ["a:80", "b:80", "c:80"].map(Backend::new))?;
//! let pick = lb.pick(&Context::new().key(b"user-42"))?;
//! # drop(pick);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! # Writing a strategy
//!
//! ```
//! use divvy::{Backend, BackendSet, Balancer, Context, Strategy, UpdateError, View};
//!
//! /// Always the first available backend, in configuration order.
//! #[derive(Debug)]
//! struct FirstAvailable;
//!
//! impl Strategy for FirstAvailable {
//!     type Prepared = ();
//!
//!     fn name(&self) -> &'static str {
//!         "first-available"
//!     }
//!
//!     fn prepare(&self, _backends: &BackendSet<'_>) -> Result<(), UpdateError> {
//!         Ok(())
//!     }
//!
//!     fn pick(&self, _: &(), _ctx: &Context<'_>, view: &View<'_>) -> Option<usize> {
//!         (0..view.len()).find(|&i| view.is_available(i))
//!     }
//! }
//!
//! let lb = Balancer::new(FirstAvailable, vec![Backend::new("a"), Backend::new("b")])?;
//! assert_eq!(lb.pick(&Context::new())?.id(), "a");
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

use crate::context::Context;
use crate::error::UpdateError;
use crate::set::BackendSet;
use crate::view::View;

mod bounded;
mod boxed;
mod failover;
mod ip_hash;
mod ketama;
mod least_conn;
mod maglev;
mod p2c;
mod random;
mod round_robin;
mod spec;
mod support;
#[cfg(test)]
pub(crate) mod test_util;
mod weighted;

pub use boxed::{BoxPrepared, BoxStrategy};
pub use failover::Failover;
pub use ip_hash::{IpHash, Placement};
pub use ketama::Ketama;
pub use least_conn::{CurrentWeights, LeastConnections};
pub use maglev::Maglev;
pub use p2c::{Cost, PowerOfTwoChoices};
pub use random::Random;
pub use round_robin::RoundRobin;
pub use spec::{FailoverMode, ParseStrategyError, StrategyKind, StrategySpec};
pub(crate) use support::scan_from;
pub use weighted::{Schedule, WeightedRoundRobin};

/// A load-balancing strategy. See the [module docs](self) for the contract and an example.
pub trait Strategy: Send + Sync + 'static {
    /// What [`prepare`](Self::prepare) builds once per backend set.
    type Prepared: Send + Sync + 'static;

    /// A short name for errors and logs: for divvy's strategies, the canonical name of
    /// [`StrategyKind`] (`"maglev"`, `"least_conn"`).
    fn name(&self) -> &'static str;

    /// Builds the per-set state. `backends` is the validated set, in configuration order (so it is
    /// never empty, and every weight is at least 1: see [`BackendSet`]). Runs off the pick path, before the set is published; an error rejects the set
    /// and keeps the previous one serving.
    fn prepare(&self, backends: &BackendSet<'_>) -> Result<Self::Prepared, UpdateError>;

    /// Chooses an available backend: an index `i < view.len()` with `view.is_available(i)`, or
    /// `None` when there is none. Must not block, lock or allocate.
    fn pick(&self, prepared: &Self::Prepared, ctx: &Context<'_>, view: &View<'_>) -> Option<usize>;

    /// Whether the balancer should maintain [`View::total_in_flight`] (one more atomic add per
    /// pick). Bounded-load strategies need it. Default is false.
    fn tracks_total_in_flight(&self) -> bool {
        false
    }
}
