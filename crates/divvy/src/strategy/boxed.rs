//! A type-erased strategy, for strategies chosen at run time.

use std::fmt;
use std::sync::Arc;

use crate::context::Context;
use crate::error::UpdateError;
use crate::set::BackendSet;
use crate::strategy::{
    Failover, IpHash, Ketama, LeastConnections, Maglev, PowerOfTwoChoices, Random, RoundRobin,
    Strategy, WeightedRoundRobin,
};
use crate::view::View;

/// Any [`Strategy`] behind one type, in the spirit of tower's `BoxService`: a `Balancer<BoxStrategy>`
/// can run any strategy, chosen at run time (from a name, see [`StrategySpec`](super::StrategySpec)).
///
/// ```
/// use divvy::{Backend, Balancer, Context, Strategy};
/// use divvy::strategy::{BoxStrategy, LeastConnections, RoundRobin};
///
/// let fair = true;
/// let strategy = if fair {
///     BoxStrategy::new(LeastConnections::new())
/// } else {
///     RoundRobin::new().into()
/// };
/// let lb = Balancer::new(strategy, ["a", "b"].map(Backend::new))?;
/// assert_eq!(lb.strategy().name(), "least_conn");
/// # Ok::<(), divvy::UpdateError>(())
/// ```
///
/// **Cost:** one indirect call per pick over the concrete strategy. The prepared state is the
/// concrete strategy's own, boxed once per backend set together with a shared handle on the
/// strategy, so a pick calls straight into that box: no downcast, no second dispatch.
///
/// Everything the concrete strategy declares is forwarded — its name and whether it needs the
/// total in flight (bounded loads do) — by one generic implementation, so no hand-written wrapper
/// can drop it; a lint fails the build if a method added to [`Strategy`] is not forwarded here.
#[derive(Clone)]
pub struct BoxStrategy {
    inner: Arc<dyn DynStrategy>,
}

/// The prepared state of a [`BoxStrategy`]: the concrete strategy's, type-erased.
pub struct BoxPrepared {
    inner: Box<dyn DynPrepared>,
}

impl BoxStrategy {
    /// Boxes `strategy`.
    pub fn new<S: Strategy>(strategy: S) -> Self {
        BoxStrategy {
            inner: Arc::new(Erased(Arc::new(strategy))),
        }
    }
}

// A blanket `impl<S: Strategy> From<S>` would overlap `From<BoxStrategy> for BoxStrategy`, so
// each of divvy's strategies gets its own; a user's strategy boxes with `BoxStrategy::new`.
macro_rules! from_strategy {
    ($($t:ty),*) => {$(
        impl From<$t> for BoxStrategy {
            fn from(strategy: $t) -> Self {
                BoxStrategy::new(strategy)
            }
        }
    )*};
}

from_strategy!(
    RoundRobin,
    WeightedRoundRobin,
    LeastConnections,
    IpHash,
    Ketama,
    Maglev,
    Random,
    PowerOfTwoChoices
);

impl<S: Strategy> From<Failover<S>> for BoxStrategy {
    fn from(strategy: Failover<S>) -> Self {
        BoxStrategy::new(strategy)
    }
}

// Forwarding every method is what keeps bounded loads bounded through a box: a default left in
// place here would silently answer for the concrete strategy.
#[deny(clippy::missing_trait_methods)]
impl Strategy for BoxStrategy {
    type Prepared = BoxPrepared;

    fn name(&self) -> &'static str {
        self.inner.name()
    }

    fn prepare(&self, backends: &BackendSet<'_>) -> Result<BoxPrepared, UpdateError> {
        Ok(BoxPrepared {
            inner: self.inner.prepare_dyn(backends)?,
        })
    }

    #[inline]
    fn pick(&self, prepared: &BoxPrepared, ctx: &Context<'_>, view: &View<'_>) -> Option<usize> {
        // The prepared box carries its strategy, so this is the only dynamic call.
        prepared.inner.pick(ctx, view)
    }

    fn tracks_total_in_flight(&self) -> bool {
        self.inner.tracks_total_in_flight()
    }
}

impl fmt::Debug for BoxStrategy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("BoxStrategy").field(&self.name()).finish()
    }
}

impl fmt::Debug for BoxPrepared {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BoxPrepared").finish_non_exhaustive()
    }
}

// === the object-safe halves ===

/// [`Strategy`] without its associated type: what a strategy declares, and a prepare that boxes.
trait DynStrategy: Send + Sync + 'static {
    fn name(&self) -> &'static str;
    fn prepare_dyn(&self, backends: &BackendSet<'_>) -> Result<Box<dyn DynPrepared>, UpdateError>;
    fn tracks_total_in_flight(&self) -> bool;
}

/// A prepared state that picks by itself: it holds the strategy it was prepared by.
trait DynPrepared: Send + Sync + 'static {
    fn pick(&self, ctx: &Context<'_>, view: &View<'_>) -> Option<usize>;
}

/// The one implementation of [`DynStrategy`], for every strategy.
struct Erased<S>(Arc<S>);

struct ErasedPrepared<S: Strategy> {
    strategy: Arc<S>,
    prepared: S::Prepared,
}

#[deny(clippy::missing_trait_methods)]
impl<S: Strategy> DynStrategy for Erased<S> {
    fn name(&self) -> &'static str {
        self.0.name()
    }

    fn prepare_dyn(&self, backends: &BackendSet<'_>) -> Result<Box<dyn DynPrepared>, UpdateError> {
        Ok(Box::new(ErasedPrepared {
            strategy: self.0.clone(),
            prepared: self.0.prepare(backends)?,
        }))
    }

    fn tracks_total_in_flight(&self) -> bool {
        self.0.tracks_total_in_flight()
    }
}

impl<S: Strategy> DynPrepared for ErasedPrepared<S> {
    #[inline]
    fn pick(&self, ctx: &Context<'_>, view: &View<'_>) -> Option<usize> {
        self.strategy.pick(&self.prepared, ctx, view)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::Backend;
    use crate::balancer::Balancer;

    fn ids<S: Strategy>(lb: &Balancer<S>, n: usize) -> Vec<String> {
        (0..n)
            .map(|_| lb.pick(&Context::new()).unwrap().id().to_owned())
            .collect()
    }

    #[test]
    fn a_boxed_strategy_picks_the_same_sequence_as_the_static_one() {
        let set = || {
            vec![
                Backend::new("a").weight(5),
                Backend::new("b"),
                Backend::new("c"),
            ]
        };
        let boxed = Balancer::new(BoxStrategy::new(WeightedRoundRobin::new()), set()).unwrap();
        let plain = Balancer::new(WeightedRoundRobin::new(), set()).unwrap();
        assert_eq!(ids(&boxed, 21), ids(&plain, 21));
    }

    #[test]
    fn a_boxed_strategy_keeps_the_concrete_name_and_requirements() {
        let rr = BoxStrategy::from(RoundRobin::new());
        assert_eq!(rr.name(), "round_robin");
        assert!(!rr.tracks_total_in_flight());
        let bounded = BoxStrategy::new(Ketama::new().bounded_load(1.25));
        assert_eq!(bounded.name(), "ketama");
        assert!(bounded.tracks_total_in_flight());
        assert!(BoxStrategy::new(Maglev::new().bounded_load(1.25)).tracks_total_in_flight());
    }

    /// Holds every pick to one hot key and checks no backend exceeds `⌈c · (total + 1) / n⌉`.
    /// Without the total in flight the bound reads 0 requests and every pick goes to the key's
    /// own backend.
    fn hot_key_spreads(strategy: BoxStrategy) {
        let n = 4;
        let lb = Balancer::new(strategy, (0..n).map(|i| Backend::new(format!("b{i}")))).unwrap();
        let ctx = Context::new().key(b"the one hot key");
        let picks: Vec<_> = (0..40).map(|_| lb.pick(&ctx).unwrap()).collect();
        let max = lb.stats().iter().map(|s| s.in_flight).max().unwrap();
        // 40 requests, 4 equal backends, c = 1.25: at most ⌈1.25 · 40 / 4⌉ = 13 each.
        assert!(max <= 13, "a backend holds {max} of 40 requests");
        drop(picks);
    }

    #[test]
    fn bounded_load_ketama_through_a_box_still_bounds_loads() {
        hot_key_spreads(BoxStrategy::new(Ketama::new().bounded_load(1.25)));
    }

    #[test]
    fn bounded_load_maglev_through_a_box_still_bounds_loads() {
        hot_key_spreads(BoxStrategy::new(Maglev::new().bounded_load(1.25)));
    }

    #[test]
    fn a_boxed_strategy_can_be_boxed_again() {
        let twice = BoxStrategy::new(BoxStrategy::new(Ketama::new().bounded_load(2.0)));
        assert!(twice.tracks_total_in_flight());
        assert_eq!(twice.name(), "ketama");
    }
}
