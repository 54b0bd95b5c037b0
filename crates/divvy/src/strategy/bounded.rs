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
