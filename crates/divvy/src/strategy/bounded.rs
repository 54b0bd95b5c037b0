//! Consistent hashing with bounded loads (Mirrokni, Thorup, Zadimoghaddam, 2017), shared by
//! [`Ketama`](super::Ketama) and [`Maglev`](super::Maglev).
//!
//! With a load factor `c ≥ 1`, a backend is *full* when taking one more request would put it above
//! its share of `c` times the average: a backend with `in_flight ≥ ⌈c · (T + 1) · w / W⌉` is
//! skipped, where `T` is the number of requests in flight across the balancer, `w` the backend's
//! weight and `W` the total weight of the available backends. With equal weights this is the
//! paper's `⌈c · (T + 1) / n⌉`; weighting it keeps a weight-5 backend from being capped at the load
//! of a weight-1 one. The capacities sum to `c · (T + 1) > T`, so some available backend always has
//! room: the hashing strategy walks its own probe sequence (the ring, the rehash sequence) past
//! full backends until it finds one.

use crate::error::UpdateError;
use crate::view::View;

/// `c` in fixed point: the bound is computed with integers only, so it is exact and the same on
/// every CPU. `c` is rounded to a multiple of 2⁻¹⁶.
const FRACTION_BITS: u32 = 16;

/// The largest accepted load factor. Any factor above the number of backends never binds, so this
/// only keeps the fixed-point arithmetic far from overflow.
const MAX_FACTOR: f64 = 1_000_000.0;

/// A validated load factor `c`, in fixed point.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct LoadFactor {
    fixed: u64,
}

impl LoadFactor {
    /// Validates `c` for `strategy`: finite, at least 1 (below 1 the capacities sum to less than
    /// the load, so every backend could be full) and at most [`MAX_FACTOR`].
    pub(crate) fn new(strategy: &'static str, c: f64) -> Result<Self, UpdateError> {
        if !(1.0..=MAX_FACTOR).contains(&c) {
            return Err(UpdateError::Strategy {
                strategy,
                reason: format!(
                    "bounded_load factor {c} is invalid: it must be between 1.0 and {MAX_FACTOR}"
                ),
            });
        }
        Ok(LoadFactor {
            fixed: (c * f64::from(1u32 << FRACTION_BITS)).round() as u64,
        })
    }
}

/// Per-pick bound state. Reads the balancer-wide in-flight total once; sums the available weight
/// only when a candidate is close enough to its bound for it to matter, so an uncontended pick
/// stays O(1).
pub(crate) struct Room<'a, 'v> {
    view: &'a View<'v>,
    /// `c · (T + 1)` in fixed point.
    demand: u128,
    /// Total weight of every backend the strategy prepared for: an upper bound on the available
    /// weight, so a backend below its bound computed with it is below its real bound.
    total_weight: u128,
    /// Total weight of the available backends, once computed (0 = not yet).
    available_weight: u128,
}

impl<'a, 'v> Room<'a, 'v> {
    #[inline]
    pub(crate) fn new(view: &'a View<'v>, factor: LoadFactor, total_weight: u64) -> Self {
        Room {
            view,
            demand: u128::from(factor.fixed) * (u128::from(view.total_in_flight()) + 1),
            total_weight: u128::from(total_weight),
            available_weight: 0,
        }
    }

    /// Whether backend `i`, which the caller found available, is below its bound.
    ///
    /// `load < ⌈q⌉ ⟺ load < q` for an integer load, so with `q = demand · w / (2¹⁶ · W)` the test
    /// is `load · 2¹⁶ · W < demand · w`: multiplications only, exact.
    #[inline]
    pub(crate) fn has_room(&mut self, i: usize) -> bool {
        let load = u128::from(self.view.in_flight(i)) << FRACTION_BITS;
        let want = self.demand * u128::from(self.view.weight(i));
        if load * self.total_weight < want {
            return true;
        }
        if self.available_weight == 0 {
            self.available_weight = self.sum_available_weight();
        }
        load * self.available_weight < want
    }

    #[cold]
    fn sum_available_weight(&self) -> u128 {
        let w: u64 = (0..self.view.len())
            .filter(|&i| self.view.is_available(i))
            .map(|i| u64::from(self.view.weight(i)))
            .sum();
        // Only called for an available backend, so `w > 0`; the max keeps a racing health change
        // from making the bound vanish.
        u128::from(w.max(1))
    }
}

/// The fallback shared by the bounded and unbounded paths of both strategies: the first backend,
/// scanning from `start` (wrapping), that is available and (when bounded) has room; failing that
/// (only possible while the in-flight counts race with the total), the first available one.
#[inline]
pub(crate) fn scan_with_room(
    view: &View<'_>,
    start: usize,
    mut room: Option<&mut Room<'_, '_>>,
) -> Option<usize> {
    let n = view.len();
    let mut spare = None;
    let mut i = start;
    for _ in 0..n {
        if view.is_available(i) {
            let fits = match room.as_deref_mut() {
                None => true,
                Some(room) => room.has_room(i),
            };
            if fits {
                return Some(i);
            }
            spare.get_or_insert(i);
        }
        i += 1;
        if i == n {
            i = 0;
        }
    }
    spare
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::strategy::{Ketama, Maglev, Strategy};
    use crate::{Backend, Balancer, Context, Pick};
    use proptest::prelude::{any, prop, prop_assert, proptest, ProptestConfig};
    use proptest::strategy::Strategy as _;

    /// `⌈c · t · w / W⌉` for `c = num / den`, in integers: the bound a backend of weight `w` may
    /// reach once `t` requests are in flight, written independently of `Room`.
    fn bound(num: u64, den: u64, t: u64, w: u64, total_w: u64) -> u64 {
        (num * t * w).div_ceil(den * total_w)
    }

    fn set(weights: &[u32]) -> Vec<Backend> {
        weights
            .iter()
            .enumerate()
            .map(|(i, &w)| Backend::new(format!("10.0.0.{i}:80")).weight(w))
            .collect()
    }

    fn pick<S: Strategy>(lb: &Balancer<S>, key: &[u8]) -> Pick {
        lb.pick(&Context::new().key(key)).unwrap()
    }

    /// Holds `picks` requests for one hot key, then checks every backend against its bound.
    fn hot_key_respects_the_bound<S: Strategy>(
        strategy: S,
        weights: &[u32],
        (num, den): (u64, u64),
    ) {
        let lb = Balancer::new(strategy, set(weights)).unwrap();
        let total_w: u64 = weights.iter().map(|&w| u64::from(w)).sum();
        let mut held = Vec::new();
        for t in 1..=200u64 {
            held.push(pick(&lb, b"hot"));
            for (i, s) in lb.stats().iter().enumerate() {
                let limit = bound(num, den, t, u64::from(weights[i]), total_w);
                assert!(
                    u64::from(s.in_flight) <= limit,
                    "{} has {} > {limit} after {t}",
                    s.id,
                    s.in_flight
                );
            }
        }
        // And the hot key did spread: no single backend holds it all.
        assert!(lb.stats().iter().all(|s| u64::from(s.in_flight) < 200));
    }

    #[test]
    fn a_hot_key_spreads_without_exceeding_the_bound_on_the_ring() {
        hot_key_respects_the_bound(Ketama::new().bounded_load(1.25), &[1, 1, 1, 1, 1], (5, 4));
        hot_key_respects_the_bound(Ketama::new().bounded_load(1.0), &[1, 1, 1], (1, 1));
        hot_key_respects_the_bound(Ketama::new().bounded_load(1.5), &[1, 2, 3, 4], (3, 2));
    }

    #[test]
    fn a_hot_key_spreads_without_exceeding_the_bound_in_the_table() {
        hot_key_respects_the_bound(Maglev::new().bounded_load(1.25), &[1, 1, 1, 1, 1], (5, 4));
        hot_key_respects_the_bound(Maglev::new().bounded_load(1.0), &[1, 1, 1], (1, 1));
        hot_key_respects_the_bound(Maglev::new().bounded_load(1.5), &[1, 2, 3, 4], (3, 2));
    }

    fn unbounded_hot_key_stays_put<S: Strategy>(strategy: S) {
        assert!(!strategy.tracks_total_in_flight());
        let lb = Balancer::new(strategy, set(&[1, 1, 1, 1, 1])).unwrap();
        let held: Vec<Pick> = (0..100).map(|_| pick(&lb, b"hot")).collect();
        let first = held[0].id();
        assert!(held.iter().all(|p| p.id() == first));
        assert_eq!(held[0].in_flight(), 100);
    }

    #[test]
    fn without_a_bound_a_hot_key_always_maps_to_one_backend() {
        unbounded_hot_key_stays_put(Ketama::new());
        unbounded_hot_key_stays_put(Maglev::new());
    }

    #[test]
    fn bounded_strategies_ask_for_the_in_flight_total() {
        assert!(Ketama::new().bounded_load(1.25).tracks_total_in_flight());
        assert!(Maglev::new().bounded_load(1.25).tracks_total_in_flight());
    }

    #[test]
    fn a_light_key_stays_on_its_backend_under_a_bound() {
        // Below the bound nothing moves: the bounded strategies route as the unbounded ones.
        for c in [1.0, 1.25] {
            let plain = Balancer::new(Ketama::new(), set(&[1, 2, 1])).unwrap();
            let bounded = Balancer::new(Ketama::new().bounded_load(c), set(&[1, 2, 1])).unwrap();
            let plain_m = Balancer::new(Maglev::new(), set(&[1, 2, 1])).unwrap();
            let bounded_m = Balancer::new(Maglev::new().bounded_load(c), set(&[1, 2, 1])).unwrap();
            for i in 0..300 {
                let k = format!("k{i}");
                assert_eq!(
                    pick(&plain, k.as_bytes()).id(),
                    pick(&bounded, k.as_bytes()).id()
                );
                assert_eq!(
                    pick(&plain_m, k.as_bytes()).id(),
                    pick(&bounded_m, k.as_bytes()).id()
                );
            }
        }
    }

    #[test]
    fn a_load_factor_below_one_is_rejected_when_the_balancer_is_built() {
        let err = Balancer::new(Ketama::new().bounded_load(0.9), set(&[1, 1])).unwrap_err();
        assert!(
            matches!(
                err,
                UpdateError::Strategy {
                    strategy: "ketama",
                    ..
                }
            ),
            "{err:?}"
        );
        let err = Balancer::new(Maglev::new().bounded_load(f64::NAN), set(&[1, 1])).unwrap_err();
        assert!(
            matches!(
                err,
                UpdateError::Strategy {
                    strategy: "maglev",
                    ..
                }
            ),
            "{err:?}"
        );
    }

    /// One step of a random workload: pick for key `k` (0 is the hot key) and hold it, or end the
    /// held request at `drop` (an index into those held, modulo their number).
    #[derive(Clone, Debug)]
    enum Op {
        Pick(u8),
        Drop(prop::sample::Index),
    }

    fn ops() -> impl proptest::strategy::Strategy<Value = Vec<Op>> {
        proptest::collection::vec(
            proptest::prop_oneof![
                6 => proptest::prelude::Just(0u8).prop_map(Op::Pick),
                3 => (0u8..40).prop_map(Op::Pick),
                2 => any::<prop::sample::Index>().prop_map(Op::Drop),
            ],
            1..300,
        )
    }

    /// At every pick, the chosen backend ends at most at its bound for the new total: before the
    /// pick it had room, `load < ⌈c · (T + 1) · w / W⌉`.
    fn every_pick_respects_the_bound<S: Strategy>(
        strategy: S,
        weights: &[u32],
        (num, den): (u64, u64),
        ops: &[Op],
    ) -> Result<(), proptest::test_runner::TestCaseError> {
        let lb = Balancer::new(strategy, set(weights)).unwrap();
        let total_w: u64 = weights.iter().map(|&w| u64::from(w)).sum();
        let mut held: Vec<Pick> = Vec::new();
        for op in ops {
            match op {
                Op::Pick(k) => {
                    let p = pick(&lb, format!("key-{k}").as_bytes());
                    held.push(p);
                    let p = held.last().unwrap();
                    let i: usize = p.id()[7..].trim_end_matches(":80").parse().unwrap();
                    let limit = bound(num, den, held.len() as u64, u64::from(weights[i]), total_w);
                    prop_assert!(
                        u64::from(p.in_flight()) <= limit,
                        "{} at {} > {}",
                        p.id(),
                        p.in_flight(),
                        limit
                    );
                }
                Op::Drop(at) if !held.is_empty() => {
                    drop(held.swap_remove(at.index(held.len())));
                }
                Op::Drop(_) => {}
            }
        }
        Ok(())
    }

    fn arb_weights() -> impl proptest::strategy::Strategy<Value = Vec<u32>> {
        proptest::collection::vec(1u32..4, 2..8)
    }

    fn arb_factor() -> impl proptest::strategy::Strategy<Value = (u64, u64)> {
        prop::sample::select(vec![(1u64, 1u64), (5, 4), (3, 2), (2, 1)])
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(48))]

        #[test]
        fn ring_picks_never_exceed_the_bound(weights in arb_weights(), c in arb_factor(), ops in ops()) {
            let s = Ketama::new().bounded_load(c.0 as f64 / c.1 as f64);
            every_pick_respects_the_bound(s, &weights, c, &ops)?;
        }

        #[test]
        fn table_picks_never_exceed_the_bound(weights in arb_weights(), c in arb_factor(), ops in ops()) {
            let s = Maglev::with_table_size(1009).unwrap().bounded_load(c.0 as f64 / c.1 as f64);
            every_pick_respects_the_bound(s, &weights, c, &ops)?;
        }
    }

    #[test]
    fn load_factors_below_one_or_not_finite_are_rejected() {
        for c in [0.0, 0.99, -1.0, f64::NAN, f64::INFINITY, 2e6] {
            let err = LoadFactor::new("maglev", c).unwrap_err();
            match err {
                UpdateError::Strategy { strategy, reason } => {
                    assert_eq!(strategy, "maglev");
                    assert!(reason.contains("bounded_load"), "{reason}");
                }
                other => panic!("unexpected error {other:?}"),
            }
        }
    }

    #[test]
    fn load_factors_are_kept_exactly_when_binary_fractions() {
        assert_eq!(LoadFactor::new("k", 1.0).unwrap().fixed, 1 << 16);
        assert_eq!(LoadFactor::new("k", 1.25).unwrap().fixed, 5 << 14);
    }
}
