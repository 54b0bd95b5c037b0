//! The power of two random choices, by in-flight count or by peak-EWMA latency.

use std::cmp::Ordering;
use std::fmt;
use std::time::Duration;

use crate::context::Context;
use crate::error::UpdateError;
use crate::set::BackendSet;
use crate::strategy::support::{reduce, split, AliasTable, Stream};
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

/// The power of two random choices (Mitzenmacher, 2001): draw two backends at random, in
/// proportion to weight, and send the request to the one with the lower [`Cost`]. Nearly as good
/// as scanning for the least loaded backend, at O(1), and without the herd behaviour of a strict
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
/// **Weights.** With equal weights the two candidates are distinct and uniform (one draw). With
/// unequal weights each candidate is drawn independently from the same alias table
/// [`Random`](crate::strategy::Random) uses (Vose, O(1) per draw), so an idle set, where every
/// comparison ties, is split exactly in proportion to weight: a 1 % canary (weights 198:1:1)
/// gets 0.5 % of the picks, not the third a uniform draw would give it. When both draws name
/// the same backend it is the choice. Drawing without replacement instead would bias an idle
/// set toward the light backends (a heavy backend is rarely drawn twice but often drawn first),
/// which is the bias weighted P2C exists to remove.
///
/// Both costs use the effective weight, so a backend in slow start looks proportionally busier.
/// Equal costs (common when idle: nothing in flight) are broken by a coin weighted by the two
/// candidates' slow-start factors: a fair coin outside slow start.
///
/// An unavailable candidate yields to the other; when both are unavailable the pair is redrawn,
/// up to four pairs, then the set is scanned from a random start.
///
/// Cost: O(1): one random draw per pair with equal weights, three with unequal weights (two
/// candidates and the coin); O(n) only when four pairs in a row were unavailable.
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
        PowerOfTwoChoices {
            stream: Stream::from_seed(seed),
            ..PowerOfTwoChoices::new()
        }
    }

    /// Peak-EWMA cost (latency × (in flight + 1), per weight), seeded from OS randomness.
    pub fn peak_ewma() -> Self {
        PowerOfTwoChoices {
            peak_ewma: true,
            ..PowerOfTwoChoices::new()
        }
    }

    /// Peak-EWMA cost with a reproducible random stream, as [`from_seed`](Self::from_seed).
    pub fn peak_ewma_from_seed(seed: u64) -> Self {
        PowerOfTwoChoices {
            peak_ewma: true,
            ..PowerOfTwoChoices::from_seed(seed)
        }
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

    /// The better of two distinct available candidates; `coin` breaks ties in proportion to the
    /// candidates' slow-start factors (a fair coin outside slow start).
    #[inline]
    fn better(&self, view: &View<'_>, i: usize, j: usize, coin: u64) -> usize {
        match self.cost(view, i).cmp(&self.cost(view, j)) {
            Ordering::Less => i,
            Ordering::Greater => j,
            Ordering::Equal => {
                // In 1/1024ths, so that slow start shows even at weight 1. Candidates are drawn
                // in proportion to configured weight already, so only the ramp weighs here.
                let (si, sj) = (tie_share(view, i), tie_share(view, j));
                if split(coin, si + sj).0 < si {
                    i
                } else {
                    j
                }
            }
        }
    }
}

/// Backend `i`'s slow-start factor in 1/1024ths (at least 1): 1024 outside slow start.
#[inline]
fn tie_share(view: &View<'_>, i: usize) -> usize {
    ((view.slow_start_factor(i) * 1024.0) as usize).max(1)
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
    type Prepared = AliasTable;

    fn name(&self) -> &'static str {
        if self.peak_ewma {
            "p2c_ewma"
        } else {
            "p2c"
        }
    }

    fn prepare(&self, backends: &BackendSet<'_>) -> Result<AliasTable, UpdateError> {
        AliasTable::for_set(self.name(), backends)
    }

    #[inline]
    fn pick(&self, table: &AliasTable, _ctx: &Context<'_>, view: &View<'_>) -> Option<usize> {
        let n = view.len();
        debug_assert!(table.covers(n));
        if n < 2 {
            return (n == 1 && view.is_available(0)).then_some(0);
        }
        if table.is_uniform() {
            for _ in 0..DRAWS {
                let (i, j, coin) = two_distinct(self.stream.next_u64(), n);
                if let Some(k) = self.choose(view, i, j, coin) {
                    return Some(k);
                }
            }
        } else {
            for _ in 0..DRAWS {
                let i = table.sample(self.stream.next_u64(), n);
                let j = table.sample(self.stream.next_u64(), n);
                if i == j {
                    if view.is_available(i) {
                        return Some(i);
                    }
                } else if let Some(k) = self.choose(view, i, j, self.stream.next_u64()) {
                    return Some(k);
                }
            }
        }
        scan_from(view, reduce(self.stream.next_u64(), n))
    }
}

impl PowerOfTwoChoices {
    /// The pick among two distinct candidates, if either is available.
    #[inline]
    fn choose(&self, view: &View<'_>, i: usize, j: usize, coin: u64) -> Option<usize> {
        match (view.is_available(i), view.is_available(j)) {
            (true, true) => Some(self.better(view, i, j, coin)),
            (true, false) => Some(i),
            (false, true) => Some(j),
            (false, false) => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::{any, prop, prop_assert, prop_assert_ne, proptest, ProptestConfig};

    use super::*;
    use crate::backend::AdminState;
    use crate::backend::Backend;
    use crate::balancer::Balancer;
    use crate::pick::{Outcome, Pick};
    use crate::strategy::test_util::{assert_binomial, count_picks, set, shares};

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

    proptest! {
        // Each case counts tens of thousands of picks.
        #![proptest_config(ProptestConfig::with_cases(24))]

        #[test]
        fn idle_picks_give_each_backend_its_weighted_share_within_one_point(
            weights in prop::collection::vec(1u32..=200, 2..6),
            seed in any::<u64>(),
        ) {
            // 198:1:1 is the canary the weights were added for; the rest are arbitrary.
            for weights in [vec![198, 1, 1], weights] {
                let total: u32 = weights.iter().sum();
                let lb = Balancer::new(PowerOfTwoChoices::from_seed(seed), set(&weights))
                    .unwrap();
                let picks = 40_000;
                let counts = count_picks(&lb, &Context::new(), picks);
                for (k, (&c, &w)) in counts.iter().zip(&weights).enumerate() {
                    let share = c as f64 / picks as f64;
                    let expected = f64::from(w) / f64::from(total);
                    prop_assert!(
                        (share - expected).abs() < 0.01,
                        "backend {} of {:?}: share {} expected {}", k, weights, share, expected
                    );
                }
            }
        }

        #[test]
        fn under_load_the_less_loaded_per_weight_of_the_two_candidates_wins(
            weights in prop::collection::vec(1u32..=8, 2..5),
            loads in prop::collection::vec(0usize..4, 5),
            seed in any::<u64>(),
        ) {
            let n = weights.len();
            let lb = Balancer::new(PowerOfTwoChoices::from_seed(seed), set(&weights)).unwrap();
            let _held: Vec<Vec<Pick>> = (0..n).map(|i| hold(&lb, &format!("b{i}"), loads[i])).collect();
            // Candidates are drawn independently by weight (uniform distinct pairs when the
            // weights are equal); the pick is the candidate of lower in-flight per weight, a
            // fair coin on a tie. So P(k) follows from the rule alone.
            let total: u32 = weights.iter().sum();
            let uniform = weights.iter().all(|&w| w == weights[0]);
            let p: Vec<f64> = weights.iter().map(|&w| f64::from(w) / f64::from(total)).collect();
            let cost = |i: usize| loads[i] as f64 / f64::from(weights[i]);
            let probs: Vec<f64> = (0..n)
                .map(|k| {
                    let pair = |j: usize| if uniform { 2.0 / (n * (n - 1)) as f64 } else { 2.0 * p[k] * p[j] };
                    let alone = if uniform { 0.0 } else { p[k] * p[k] };
                    alone + (0..n)
                        .filter(|&j| j != k)
                        .map(|j| match cost(k).total_cmp(&cost(j)) {
                            Ordering::Less => pair(j),
                            Ordering::Equal => pair(j) / 2.0,
                            Ordering::Greater => 0.0,
                        })
                        .sum::<f64>()
                })
                .collect();
            let counts = count_picks(&lb, &Context::new(), 20_000);
            assert_binomial(&counts, &probs);
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
        // b0: 3 in flight over weight 4 = 0.75; b1: 1 over weight 1 = 1.0. b0 is less loaded, so
        // b1 is chosen only when both candidates are b1: (1/5)² of the picks.
        let lb = Balancer::new(PowerOfTwoChoices::from_seed(2), set(&[4, 1])).unwrap();
        let _a = hold(&lb, "b0", 3);
        let _b = hold(&lb, "b1", 1);
        let counts = count_picks(&lb, &Context::new(), 20_000);
        assert_binomial(&counts, &[24.0 / 25.0, 1.0 / 25.0]);
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
    fn an_idle_weighted_set_is_split_in_proportion_to_weight() {
        // Nothing stays in flight, so every pair ties and the fair coin decides: each candidate
        // is drawn with probability w_k / Σw, so the pick is too.
        let lb = Balancer::new(PowerOfTwoChoices::from_seed(4), set(&[1, 2, 5, 8])).unwrap();
        let counts = count_picks(&lb, &Context::new(), 60_000);
        assert_binomial(&counts, &shares(&[1.0, 2.0, 5.0, 8.0]));
    }

    #[test]
    fn a_one_percent_canary_gets_its_share_when_idle() {
        let lb = Balancer::new(PowerOfTwoChoices::from_seed(13), set(&[198, 1, 1])).unwrap();
        let counts = count_picks(&lb, &Context::new(), 100_000);
        assert_binomial(&counts, &shares(&[198.0, 1.0, 1.0]));
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
        let lb = Balancer::new(PowerOfTwoChoices::peak_ewma_from_seed(6), set(&[1, 1])).unwrap();
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
            let p2c = PowerOfTwoChoices::peak_ewma_from_seed(7)
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
