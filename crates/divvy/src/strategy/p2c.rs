//! The power of two random choices, by in-flight count or by peak-EWMA latency.

use std::cmp::Ordering;
use std::fmt;
use std::time::Duration;

use crate::context::Context;
use crate::error::UpdateError;
use crate::set::BackendSet;
use crate::strategy::support::{reduce, split, Stream};
use crate::strategy::{scan_from, Strategy};
use crate::view::View;

/// Pairs drawn before a pick gives up on sampling and scans the set. Both candidates are
/// unavailable with probability about `f²` when a fraction `f` of the set is, so the scan is
/// needed with probability about `f^8`.
const DRAWS: usize = 4;

/// linkerd2-proxy's `EWMA_DEFAULT_RTT`.
const DEFAULT_RTT: Duration = Duration::from_millis(30);

// === impl Cost ===

/// A backend's load score as [`PowerOfTwoChoices`] sees it: lower is better.
///
/// Least in-flight mode scores `in_flight / effective_weight`; peak-EWMA mode scores
/// `latency_ewma × (in_flight + 1) / effective_weight`. Scores are finite and non-negative, and
/// compare totally.
#[derive(Clone, Copy, Debug)]
pub struct Cost(f64);

impl Cost {
    /// The score as a number.
    pub fn get(self) -> f64 {
        self.0
    }
}

impl PartialEq for Cost {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other) == Ordering::Equal
    }
}

impl Eq for Cost {}

impl PartialOrd for Cost {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Cost {
    fn cmp(&self, other: &Self) -> Ordering {
        self.0.total_cmp(&other.0)
    }
}

impl fmt::Display for Cost {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&self.0, f)
    }
}

// === impl PowerOfTwoChoices ===

/// The power of two random choices (Mitzenmacher, 2001): draw two distinct backends uniformly
/// at random and send the request to the one with the lower [`Cost`]. Nearly as good as
/// scanning for the least loaded backend, at O(1), and without the herd behaviour of a strict
/// least-loaded choice when many balancers see the same stale counts.
///
/// Two cost models:
///
/// - [`new`](Self::new): fewest requests in flight per unit of weight (nginx's `random two
///   least_conn`). Weights scale the load a backend is expected to carry.
/// - [`peak_ewma`](Self::peak_ewma): Finagle's and linkerd's peak-EWMA ("Beyond Round Robin"):
///   latency EWMA × (in flight + 1), so a backend that slows down or queues loses traffic at
///   once. Divided by weight as well; with equal weights the order is exactly linkerd's.
///
/// Both use the effective weight, so a backend in slow start looks proportionally busier.
/// Equal costs (common when idle: nothing in flight) are broken by a coin weighted by the two
/// candidates' effective weights, so an idle pair splits in proportion to weight.
///
/// An unavailable candidate yields to the other; when both are unavailable the pair is redrawn,
/// up to four pairs, then the set is scanned from a random start.
///
/// Cost: O(1), one random draw per pair; O(n) only when four pairs in a row were unavailable.
///
/// ```
/// use divvy::{Backend, Balancer, Context, strategy::PowerOfTwoChoices};
/// use std::time::Duration;
///
/// let p2c = PowerOfTwoChoices::peak_ewma().default_rtt(Duration::from_millis(50));
/// let lb = Balancer::new(p2c, ["a", "b", "c"].map(Backend::new))?;
/// let pick = lb.pick(&Context::new())?;
/// pick.record(divvy::Outcome::Success, Some(Duration::from_millis(12)));
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Clone, Debug)]
pub struct PowerOfTwoChoices {
    stream: Stream,
    peak_ewma: bool,
    default_rtt_nanos: f64,
}

impl PowerOfTwoChoices {
    /// Least in flight per weight, seeded from OS randomness.
    pub fn new() -> Self {
        PowerOfTwoChoices {
            stream: Stream::from_os(),
            peak_ewma: false,
            default_rtt_nanos: DEFAULT_RTT.as_nanos() as f64,
        }
    }

    /// Least in flight per weight, with a reproducible random stream: the same seed, set and
    /// live state give the same picks in single-threaded use.
    pub fn from_seed(seed: u64) -> Self {
        PowerOfTwoChoices::new().seed(seed)
    }

    /// Peak-EWMA cost (latency × (in flight + 1), per weight), seeded from OS randomness.
    pub fn peak_ewma() -> Self {
        PowerOfTwoChoices {
            peak_ewma: true,
            ..PowerOfTwoChoices::new()
        }
    }

    /// Replaces the random stream with a reproducible one (for `peak_ewma()` in tests).
    /// Default is a stream seeded from OS randomness.
    #[must_use]
    pub fn seed(mut self, seed: u64) -> Self {
        self.stream = Stream::from_seed(seed);
        self
    }

    /// The latency assumed for a backend that has not reported one yet (peak-EWMA only).
    ///
    /// It decides how a new backend competes. Zero would make it look infinitely fast, and
    /// every pick that drew it would send it a request until the first latency came back: a
    /// herd onto a cold backend. A very large value would make it lose every comparison while
    /// others have samples, so it would never earn one. A moderate guess lets it take traffic,
    /// and the `(in flight + 1)` factor still spreads that traffic while the guess stands.
    /// Default is 30 ms, as linkerd's `EWMA_DEFAULT_RTT`.
    #[must_use]
    pub fn default_rtt(mut self, rtt: Duration) -> Self {
        self.default_rtt_nanos = rtt.as_nanos() as f64;
        self
    }

    /// The latency assumed for a backend without samples.
    pub fn get_default_rtt(&self) -> Duration {
        Duration::from_nanos(self.default_rtt_nanos as u64)
    }

    /// Whether the cost is peak-EWMA (otherwise least in flight).
    pub fn is_peak_ewma(&self) -> bool {
        self.peak_ewma
    }

    /// The cost of backend `i` of `view`, as a pick would compare it.
    #[inline]
    pub fn cost(&self, view: &View<'_>, i: usize) -> Cost {
        let in_flight = f64::from(view.in_flight(i));
        let weight = f64::from(view.weight(i)) * view.slow_start_factor(i);
        if self.peak_ewma {
            let rtt = view.latency_ewma_nanos(i).unwrap_or(self.default_rtt_nanos);
            Cost(rtt * (in_flight + 1.0) / weight)
        } else {
            Cost(in_flight / weight)
        }
    }

    /// The better of two available candidates; `coin` breaks ties by weight.
    #[inline]
    fn better(&self, view: &View<'_>, i: usize, j: usize, coin: u64) -> usize {
        match self.cost(view, i).cmp(&self.cost(view, j)) {
            Ordering::Less => i,
            Ordering::Greater => j,
            Ordering::Equal => {
                // In 1/1024ths of a weight unit, so that slow start shows even at weight 1.
                let (wi, wj) = (
                    view.weight_1024ths(i) as usize,
                    view.weight_1024ths(j) as usize,
                );
                if split(coin, wi + wj).0 < wi {
                    i
                } else {
                    j
                }
            }
        }
    }
}

impl Default for PowerOfTwoChoices {
    fn default() -> Self {
        Self::new()
    }
}

/// Two distinct uniform indices of `0..n` (`n ≥ 2`) and leftover randomness, from one draw and
/// without allocating: `i` from `n`, then `j` from the `n − 1` others by skipping over `i`.
#[inline]
fn two_distinct(r: u64, n: usize) -> (usize, usize, u64) {
    let (i, rest) = split(r, n);
    let (j, rest) = split(rest, n - 1);
    (i, if j >= i { j + 1 } else { j }, rest)
}

impl Strategy for PowerOfTwoChoices {
    type Prepared = ();

    fn name(&self) -> &'static str {
        if self.peak_ewma {
            "p2c_ewma"
        } else {
            "p2c"
        }
    }

    fn prepare(&self, _backends: &BackendSet<'_>) -> Result<(), UpdateError> {
        Ok(())
    }

    #[inline]
    fn pick(&self, _: &(), _ctx: &Context<'_>, view: &View<'_>) -> Option<usize> {
        let n = view.len();
        if n < 2 {
            return (n == 1 && view.is_available(0)).then_some(0);
        }
        for _ in 0..DRAWS {
            let (i, j, coin) = two_distinct(self.stream.next_u64(), n);
            match (view.is_available(i), view.is_available(j)) {
                (true, true) => return Some(self.better(view, i, j, coin)),
                (true, false) => return Some(i),
                (false, true) => return Some(j),
                (false, false) => {}
            }
        }
        scan_from(view, reduce(self.stream.next_u64(), n))
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::{any, prop, prop_assert, prop_assert_ne, proptest};

    use super::*;
    use crate::backend::AdminState;
    use crate::backend::Backend;
    use crate::balancer::Balancer;
    use crate::pick::{Outcome, Pick};
    use crate::strategy::test_util::{assert_binomial, count_picks, set};

    fn hold<S: Strategy>(lb: &Balancer<S>, id: &str, n: usize) -> Vec<Pick> {
        let key = Backend::new(id).key();
        (0..n)
            .map(|_| lb.pick(&Context::new().sticky(key)).unwrap())
            .inspect(|p| assert_eq!(p.id(), id))
            .collect()
    }

    proptest! {
        #[test]
        fn the_two_candidates_are_distinct_and_in_range(r in any::<u64>(), n in 2usize..10_000) {
            let (i, j, _) = two_distinct(r, n);
            prop_assert!(i < n && j < n);
            prop_assert_ne!(i, j);
        }

        #[test]
        fn the_uniquely_most_loaded_backend_is_never_picked(
            loads in prop::collection::vec(0usize..6, 2..8),
            seed in any::<u64>(),
        ) {
            let max = *loads.iter().max().unwrap();
            let busiest: Vec<usize> = (0..loads.len()).filter(|&i| loads[i] == max).collect();
            let backends = set(&vec![1; loads.len()]);
            let lb = Balancer::new(PowerOfTwoChoices::from_seed(seed), backends).unwrap();
            let _held: Vec<Vec<Pick>> = loads
                .iter()
                .enumerate()
                .map(|(i, &n)| hold(&lb, &format!("b{i}"), n))
                .collect();
            for _ in 0..30 {
                let p = lb.pick(&Context::new()).unwrap();
                if busiest.len() == 1 && max > 0 {
                    prop_assert_ne!(p.id(), format!("b{}", busiest[0]));
                }
            }
        }
    }

    #[test]
    fn of_two_backends_the_one_with_fewer_in_flight_wins() {
        let lb = Balancer::new(PowerOfTwoChoices::from_seed(1), set(&[1, 1])).unwrap();
        let _held = hold(&lb, "b0", 2);
        for _ in 0..100 {
            let p = lb.pick(&Context::new()).unwrap();
            assert_eq!(p.id(), "b1");
        }
    }

    #[test]
    fn in_flight_is_compared_per_unit_of_weight() {
        // b0: 3 in flight over weight 4 = 0.75; b1: 1 over weight 1 = 1.0. b0 is less loaded.
        let lb = Balancer::new(PowerOfTwoChoices::from_seed(2), set(&[4, 1])).unwrap();
        let _a = hold(&lb, "b0", 3);
        let _b = hold(&lb, "b1", 1);
        for _ in 0..100 {
            assert_eq!(lb.pick(&Context::new()).unwrap().id(), "b0");
        }
    }

    #[test]
    fn an_unavailable_candidate_yields_to_the_other() {
        let lb = Balancer::new(PowerOfTwoChoices::from_seed(3), set(&[1, 1])).unwrap();
        // b1 is less loaded but down.
        let _held = hold(&lb, "b0", 5);
        lb.set_admin_state("b1", Some(AdminState::Down)).unwrap();
        for _ in 0..100 {
            assert_eq!(lb.pick(&Context::new()).unwrap().id(), "b0");
        }
    }

    #[test]
    fn idle_ties_split_in_proportion_to_the_pair_weights() {
        // Nothing stays in flight, so every pair ties and the weighted coin decides:
        // P(k) = Σ_{j≠k} P(pair {k, j}) × w_k / (w_k + w_j), with P(pair) = 2 / (n (n − 1)).
        let w = [1.0, 2.0, 5.0, 8.0];
        let pair = 2.0 / (w.len() * (w.len() - 1)) as f64;
        let probs: Vec<f64> = (0..w.len())
            .map(|k| {
                (0..w.len())
                    .filter(|&j| j != k)
                    .map(|j| pair * w[k] / (w[k] + w[j]))
                    .sum()
            })
            .collect();
        let lb = Balancer::new(PowerOfTwoChoices::from_seed(4), set(&[1, 2, 5, 8])).unwrap();
        let counts = count_picks(&lb, &Context::new(), 60_000);
        assert_binomial(&counts, &probs);
    }

    #[test]
    fn candidates_are_drawn_uniformly() {
        // b0 carries one request, the others none, so b0 wins no pair: each of the other three
        // wins the pairs it is in with b0 (1/3 each) and half of its pairs among the other two
        // (1/2 × 2 × 1/6): 1/6 + 1/6 = 1/3 each.
        let lb = Balancer::new(PowerOfTwoChoices::from_seed(5), set(&[1; 4])).unwrap();
        let _held = hold(&lb, "b0", 1);
        let counts = count_picks(&lb, &Context::new(), 30_000);
        assert_binomial(&counts, &[0.0, 1.0 / 3.0, 1.0 / 3.0, 1.0 / 3.0]);
    }

    #[test]
    fn peak_ewma_prefers_the_faster_backend() {
        let lb = Balancer::new(PowerOfTwoChoices::peak_ewma().seed(6), set(&[1, 1])).unwrap();
        let fast = lb
            .pick(&Context::new().sticky(Backend::new("b0").key()))
            .unwrap();
        fast.record(Outcome::Success, Some(Duration::from_millis(10)));
        let slow = lb
            .pick(&Context::new().sticky(Backend::new("b1").key()))
            .unwrap();
        slow.record(Outcome::Success, Some(Duration::from_millis(50)));
        for _ in 0..100 {
            assert_eq!(lb.pick(&Context::new()).unwrap().id(), "b0");
        }
        // Four requests in flight make b0 cost 10 ms × 5 = 50 ms: a tie with idle b1 (50 ms × 1),
        // and a fifth makes b1 the cheaper one.
        let _held = hold(&lb, "b0", 5);
        assert_eq!(lb.pick(&Context::new()).unwrap().id(), "b1");
    }

    #[test]
    fn a_backend_without_samples_costs_the_default_rtt() {
        for (default_ms, winner) in [(30, "b0"), (50, "b1")] {
            let p2c = PowerOfTwoChoices::peak_ewma()
                .seed(7)
                .default_rtt(Duration::from_millis(default_ms));
            assert_eq!(p2c.get_default_rtt(), Duration::from_millis(default_ms));
            let lb = Balancer::new(p2c, set(&[1, 1])).unwrap();
            // b1 has a 40 ms sample; b0 has none.
            let p = lb
                .pick(&Context::new().sticky(Backend::new("b1").key()))
                .unwrap();
            p.record(Outcome::Success, Some(Duration::from_millis(40)));
            for _ in 0..50 {
                assert_eq!(lb.pick(&Context::new()).unwrap().id(), winner);
            }
        }
    }

    #[test]
    fn the_default_rtt_is_linkerds() {
        assert_eq!(
            PowerOfTwoChoices::peak_ewma().get_default_rtt(),
            Duration::from_millis(30)
        );
    }

    #[test]
    fn costs_order_by_value() {
        assert!(Cost(0.5) < Cost(1.0));
        assert_eq!(Cost(2.0 / 4.0), Cost(1.0 / 2.0));
        assert_eq!(Cost(1.5).get(), 1.5);
    }

    #[test]
    fn the_same_seed_gives_the_same_picks() {
        let run = |seed| {
            let lb = Balancer::new(PowerOfTwoChoices::from_seed(seed), set(&[1, 2, 3, 4])).unwrap();
            (0..200)
                .map(|_| lb.pick(&Context::new()).unwrap().id().to_owned())
                .collect::<Vec<_>>()
        };
        assert_eq!(run(11), run(11));
        assert_ne!(run(11), run(12));
    }

    #[test]
    fn a_single_backend_is_picked_while_available() {
        let lb = Balancer::new(PowerOfTwoChoices::new(), set(&[1])).unwrap();
        assert_eq!(lb.pick(&Context::new()).unwrap().id(), "b0");
        lb.set_admin_state("b0", Some(AdminState::Down)).unwrap();
        assert!(lb.pick(&Context::new()).is_err());
    }
}
