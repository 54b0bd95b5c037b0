//! Strategies: how a balancer chooses among available backends.
//!
//! A strategy is two functions. [`Strategy::prepare`] runs once per published backend set, off
//! the pick path, and builds whatever the strategy needs (a schedule, a ring, a lookup table).
//! [`Strategy::pick`] runs per request with `&self`, the prepared state, the request's
//! [`Context`] and a [`View`] of the live state, and returns the index of an available backend.
//! A pick must not block, lock or allocate: it is called concurrently from every thread.
//!
//! | strategy | origin | pick cost |
//! |---|---|---|
//! | [`RoundRobin`] | classic | O(1) |
//! | [`WeightedRoundRobin`] | nginx smooth weighted round robin | O(1) (precomputed schedule) |
//! | [`LeastConnections`] | nginx `least_conn` | O(n) scan |
//! | [`IpHash`] | nginx `ip_hash` | O(1) |
//! | [`Ketama`] | nginx `hash … consistent` | O(log points) |
//! | [`Maglev`] | Google Maglev, NSDI 2016 | O(1) |
//! | [`Random`] | weighted random (Vose alias table) | O(1) |
//! | [`PowerOfTwoChoices`] | Mitzenmacher; Finagle / linkerd peak-EWMA | O(1) |
//! | [`Failover`] | nginx `backup`, Envoy priorities and zones | inner strategy per tier |
//!
//! # Writing a strategy
//!
//! ```
//! use divvy::{Backend, Balancer, Context, Strategy, UpdateError, View};
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
//!     fn prepare(&self, _backends: &[Backend]) -> Result<(), UpdateError> {
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

use crate::backend::Backend;
use crate::context::Context;
use crate::error::UpdateError;
use crate::view::View;

mod bounded;
pub(crate) mod failover;
mod ip_hash;
mod ketama;
mod least_conn;
mod maglev;
mod p2c;
mod random;
mod round_robin;
mod weighted;

pub use failover::Failover;
pub use ip_hash::{IpHash, Placement};
pub use ketama::Ketama;
pub use least_conn::{CurrentWeights, LeastConnections};
pub use maglev::Maglev;
pub use p2c::{Cost, PowerOfTwoChoices};
pub use random::Random;
pub use round_robin::RoundRobin;
pub use weighted::{Schedule, WeightedRoundRobin};

/// A load-balancing strategy. See the [module docs](self) for the contract and an example.
pub trait Strategy: Send + Sync + 'static {
    /// What [`prepare`](Self::prepare) builds once per backend set.
    type Prepared: Send + Sync + 'static;

    /// A short name for errors and logs (`"maglev"`).
    fn name(&self) -> &'static str;

    /// Builds the per-set state. `backends` is the validated set, in configuration order; it is
    /// never empty. Runs off the pick path, before the set is published; an error rejects the set
    /// and keeps the previous one serving.
    fn prepare(&self, backends: &[Backend]) -> Result<Self::Prepared, UpdateError>;

    /// Chooses an available backend: an index `i < view.len()` with `view.is_available(i)`, or
    /// `None` when there is none. Must not block, lock or allocate.
    fn pick(&self, prepared: &Self::Prepared, ctx: &Context<'_>, view: &View<'_>) -> Option<usize>;

    /// Whether the balancer should maintain [`View::total_in_flight`] (one more atomic add per
    /// pick). Bounded-load strategies need it. Default is false.
    fn tracks_total_in_flight(&self) -> bool {
        false
    }

    /// Whether the strategy routes priority tiers itself, by handing each tier to an inner
    /// strategy through [`View::subset`] ([`Failover`] does). A balancer whose strategy does
    /// not is given tier routing implicitly: over a set with more than one tier it prepares the
    /// strategy once per tier and picks in [`Failover`]'s tier order, so `backup` servers take
    /// traffic only when the primaries cannot. A strategy that does route tiers cannot be nested
    /// in another that does ([`UpdateError::NestedComposite`]). Default is false.
    fn routes_tiers(&self) -> bool {
        false
    }
}

/// Returns the first available index scanning from `start` (wrapping), trying at most every index
/// once. The fallback most strategies share when their first choice is unavailable.
#[inline]
pub(crate) fn scan_from(view: &View<'_>, start: usize) -> Option<usize> {
    let n = view.len();
    let mut i = start;
    for _ in 0..n {
        if view.is_available(i) {
            return Some(i);
        }
        i += 1;
        if i == n {
            i = 0;
        }
    }
    None
}
