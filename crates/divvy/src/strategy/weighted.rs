//! Smooth weighted round robin, nginx's default `upstream` balancing, as a precomputed schedule.
//!
//! nginx (`ngx_http_upstream_get_peer` in `ngx_http_upstream_round_robin.c`) keeps a
//! `current_weight` per peer. On every pick it adds each peer's weight to its `current_weight`,
//! chooses the peer with the largest `current_weight` (the earliest peer on a tie, because it only
//! replaces its candidate on a strictly greater value), and subtracts the sum of the weights from
//! the chosen one. For fixed weights the sequence is periodic with period `Σ weight`, so divvy
//! computes one period when the set is published and a pick is a table lookup.

use crate::shard::ChunkedTurns;
use std::fmt;

use crate::context::Context;
use crate::error::UpdateError;
use crate::hash::mix64;
use crate::set::BackendSet;
use crate::strategy::support::{checked_weights, reduce, FastMod, Indices, GAMMA, SCHEDULE_LIMIT};
use crate::strategy::{scan_from, Strategy};
use crate::view::View;

const NAME: &str = "weighted_round_robin";

/// How many pseudo-random schedule positions a pick tries after its scheduled backend turned out
/// unavailable, before it scans. With half the weight unavailable, a scan is needed once in 256
/// such picks.
const PROBES: u32 = 8;

/// nginx's smooth weighted round robin: for the same weights, the same sequence of backends as an
/// nginx `upstream` block without a balancing directive (weights 5, 1, 1 → `a a b a c a a`).
///
/// **Origin:** nginx `ngx_http_upstream_round_robin.c` (smooth weighted round robin, nginx 1.0.0+).
///
/// **Cost:** a pick is one atomic add, a division-free remainder and one table load: O(1), no
/// lock, no allocation. Publishing a set computes one period of the sequence: `Σ weight / gcd`
/// entries of 2 bytes (4 bytes above 65,536 backends), about
/// [`max_schedule_len`](Self::max_schedule_len) at most, with a kinetic tournament over the `d`
/// distinct weights (O(log d) per entry plus overtaking events). Measured in a release build:
/// 10,000 backends of weights 1..=100 (a 502,260-entry period) in ≈ 55 ms; a full 2²²-entry
/// schedule over 10,000 distinct weights in ≈ 0.55 s. Off the pick path, but an update waits
/// for it.
///
/// ```
/// use divvy::{Backend, Balancer, Context, strategy::WeightedRoundRobin};
///
/// let lb = Balancer::new(
///     WeightedRoundRobin::new(),
///     vec![Backend::new("a").weight(5), Backend::new("b"), Backend::new("c")],
/// )?;
/// let picks: String = (0..7).map(|_| lb.pick(&Context::new()).unwrap().id().to_owned()).collect();
/// assert_eq!(picks, "aabacaa");
/// # Ok::<(), divvy::UpdateError>(())
/// ```
///
/// # Where it differs from nginx
///
/// While every backend is available and weights are static, the sequence is nginx's exactly. It
/// differs in these cases, each for a reason:
///
/// - **An unavailable backend.** nginx leaves an unavailable peer out of the sum for that pick, so
///   its share is spread over the others in smooth order. divvy's schedule is fixed, so a pick
///   whose scheduled backend is unavailable tries up to 8 pseudo-random positions of the schedule
///   (each hits a backend in proportion to its weight, which is how nginx spreads the share too),
///   and then scans forward from the scheduled backend. The long-run shares match nginx's; the
///   exact order differs while a backend is out. Recomputing the schedule on every health change
///   would put O(period) work on the health path for every flap.
/// - **After a failure.** nginx lowers a failed peer's `effective_weight` by `weight / max_fails`
///   and raises it by one each time the peer is considered. divvy models recovery with the health
///   registry's slow start instead: a backend whose [`View::effective_weight`] is below its weight
///   is taken with probability `effective / weight` (the unrounded
///   [`View::slow_start_factor`]) when scheduled (a deterministic coin derived
///   from the pick counter), otherwise the pick probes on as above.
/// - **Very long periods.** When `Σ weight / gcd` exceeds the cap (default 2²²), weights are
///   scaled down proportionally (each to at least 1) until the period fits; only then is the
///   sequence no longer nginx's. [`Schedule::is_nginx_exact`] reports it.
/// - **Shared sequence.** nginx without a `zone` runs one sequence per worker process; a balancer
///   runs one sequence shared by all threads (as nginx does with `zone`).
///
/// A new backend set gets a new schedule starting from its first entry, as nginx starts every
/// `current_weight` from zero on reload.
#[derive(Clone, Copy, Debug)]
pub struct WeightedRoundRobin {
    max_schedule_len: usize,
}

impl WeightedRoundRobin {
    /// The default cap on the schedule length: 2²² entries (8 MiB with 2-byte indices).
    pub const DEFAULT_MAX_SCHEDULE_LEN: usize = 1 << 22;

    /// Smooth weighted round robin with the default schedule cap.
    pub const fn new() -> Self {
        WeightedRoundRobin {
            max_schedule_len: Self::DEFAULT_MAX_SCHEDULE_LEN,
        }
    }

    /// Caps the schedule (one period of the sequence) at about `len` entries. A set whose period
    /// `Σ weight / gcd` is longer has each weight scaled to `⌊weight · len / period⌋`, at least 1
    /// (so the period is at most `len` plus the number of backends), and its sequence is then
    /// proportional to nginx's but not identical. A cap below the number of backends gives every
    /// backend one entry (plain round robin); caps above 2³¹ count as 2³¹. Default is
    /// [`DEFAULT_MAX_SCHEDULE_LEN`](Self::DEFAULT_MAX_SCHEDULE_LEN).
    #[must_use]
    pub const fn max_schedule_len(mut self, len: usize) -> Self {
        self.max_schedule_len = len;
        self
    }
}

impl Default for WeightedRoundRobin {
    fn default() -> Self {
        Self::new()
    }
}

// === impl Schedule ===

/// One period of the smooth weighted sequence of a backend set, and the cursor into it.
///
/// The cursor hands each thread chunks of consecutive positions (see [`ChunkedTurns`]): one
/// thread alone follows nginx's sequence exactly; threads picking at once each follow their own
/// runs of it, as nginx's worker processes each keep their own weighted round-robin state. A
/// chunk is whole periods plus one position, so each thread's share stays the weights'.
pub struct Schedule {
    order: Indices,
    len: FastMod,
    backends: usize,
    exact: bool,
    cursor: ChunkedTurns,
    /// Positions per chunk: whole periods to reach 64, plus one, so that chunks taken one after
    /// another start one position apart rather than all at the period's start.
    chunk: u64,
}

impl Schedule {
    /// The number of entries in one period.
    pub fn cycle_len(&self) -> usize {
        self.order.len()
    }

    /// Whether the sequence is nginx's exactly (false only when the weights had to be scaled down
    /// to fit [`WeightedRoundRobin::max_schedule_len`]).
    pub fn is_nginx_exact(&self) -> bool {
        self.exact
    }

    /// The backend index at `position` of the period, if `position < cycle_len()`.
    pub fn backend_at(&self, position: usize) -> Option<usize> {
        (position < self.order.len()).then(|| self.order.get(position))
    }
}

impl fmt::Debug for Schedule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Schedule")
            .field("cycle_len", &self.cycle_len())
            .field("backends", &self.backends)
            .field("exact", &self.exact)
            .finish_non_exhaustive()
    }
}

// === impl WeightedRoundRobin ===

impl Strategy for WeightedRoundRobin {
    type Prepared = Schedule;

    fn name(&self) -> &'static str {
        NAME
    }

    fn prepare(&self, backends: &BackendSet<'_>) -> Result<Schedule, UpdateError> {
        let weights = checked_weights(NAME, backends)?;
        let (weights, exact) = fit_weights(&weights, self.max_schedule_len);
        let order = smooth_cycle(&weights);
        let order_len = order.len() as u64;
        Ok(Schedule {
            len: FastMod::new(order.len() as u64),
            order: Indices::new(order, backends.len()),
            backends: backends.len(),
            exact,
            cursor: ChunkedTurns::default(),
            chunk: (order_len * 64u64.div_ceil(order_len)) + 1,
        })
    }

    #[inline]
    fn pick(&self, s: &Schedule, _ctx: &Context<'_>, view: &View<'_>) -> Option<usize> {
        if view.len() != s.backends {
            // Never the case for a balancer's own view; stay correct for a caller that mixes sets.
            return scan_from(view, 0);
        }
        let c = s.cursor.take(s.chunk);
        let first = s.order.get(s.len.rem(c) as usize);
        if view.is_available(first) && slow_start_admits(view, first, || mix64(c) as u32) {
            return Some(first);
        }
        // The scheduled backend is out. A uniformly random schedule position lands on each backend
        // in proportion to its weight, so probing spreads the missing share as nginx does (it
        // drops the peer from the weighted sum), without touching the shared cursor.
        let mut state = c;
        for _ in 0..PROBES {
            state = state.wrapping_add(GAMMA);
            let h = mix64(state);
            let i = s.order.get(reduce(h, s.order.len()));
            if view.is_available(i) && slow_start_admits(view, i, || h as u32) {
                return Some(i);
            }
        }
        scan_from(view, first)
    }
}

/// Whether a pick may take backend `i` given slow start: always at full effective weight;
/// otherwise with probability `effective / weight`, decided by the 32-bit `coin` (computed only
/// when needed). Scaling the chance of taking a scheduled backend by `effective / weight` scales
/// its share by the same factor, which is what a lower weight in nginx's sum would do.
#[inline]
fn slow_start_admits(view: &View<'_>, i: usize, coin: impl FnOnce() -> u32) -> bool {
    // The unrounded factor, so that a backend of weight 1 ramps too.
    let factor = view.slow_start_factor(i);
    factor >= 1.0 || f64::from(coin()) < factor * 4_294_967_296.0
}

fn gcd(mut a: u64, mut b: u64) -> u64 {
    while b != 0 {
        (a, b) = (b, a % b);
    }
    a
}

/// Divides the weights by their gcd and, if the period still exceeds `cap`, scales them down.
/// Returns the weights to schedule and whether the schedule is nginx's exact sequence.
///
/// Dividing by the gcd loses nothing: with every weight multiplied by `g`, every
/// `current_weight` in nginx's computation is multiplied by `g` too, so each pick compares the
/// same values scaled and chooses the same peer; the period `g · W` is the period `W` repeated
/// `g` times (the `gcd_scaled_weights_repeat_the_reduced_sequence` test checks this).
fn fit_weights(weights: &[u32], cap: usize) -> (Vec<u64>, bool) {
    let g = weights.iter().fold(0, |g, &w| gcd(g, u64::from(w)));
    let reduced: Vec<u64> = weights.iter().map(|&w| u64::from(w) / g).collect();
    let total: u64 = reduced.iter().sum();
    let cap = cap.min(SCHEDULE_LIMIT) as u64;
    if total <= cap {
        return (reduced, true);
    }
    // Proportional scaling, each weight at least 1: the period is at most cap + n, and the
    // backend count is below SCHEDULE_LIMIT, so it stays below 2³².
    let scaled: Vec<u64> = reduced
        .iter()
        .map(|&w| ((u128::from(w) * u128::from(cap) / u128::from(total)) as u64).max(1))
        .collect();
    let g = scaled.iter().fold(0, |g, &w| gcd(g, w));
    (scaled.iter().map(|&w| w / g).collect(), false)
}

// === the sequence ===

/// One period of nginx's smooth sequence for `weights` (all ≥ 1): `Σ weights` backend indices.
///
/// nginx's definition costs O(n) per pick, O(W · n) per period, too slow for 10,000 backends. Two
/// observations make it fast while keeping the sequence exact:
///
/// 1. **Backends of equal weight take turns in index order.** Two peers of equal weight start at
///    the same `current_weight` and gain the same amount every pick. While they are equal the
///    earlier one wins a tie; once it is chosen it sits `W` below the other, so the other must be
///    chosen before it can be again, which makes them equal again. So a class of `m` equal-weight
///    peers is one contender whose value is that of its not-yet-chosen members,
///    `w · t − W · rounds`, whose tie-break index is its next member's, and which advances to the
///    next member (and after `m` turns, one round) each time it wins.
/// 2. **Between turns each contender's value is linear in the pick number `t`.** A kinetic
///    tournament tree over the classes keeps, at each node, the winner of its two children and
///    the first `t` at which the loser would overtake. Advancing to the next pick revisits only the
///    nodes whose overtaking time has come, and a win updates one leaf-to-root path.
///
/// Together: O(W · log d) for `d` distinct weights, in practice far less than O(W · n).
fn smooth_cycle(weights: &[u64]) -> Vec<u32> {
    let total: u64 = weights.iter().sum();
    let first = weights[0];
    if weights.iter().all(|&w| w == first) {
        // After the gcd every weight is 1: plain round robin, one class.
        return (0..weights.len() as u32).collect();
    }
    let mut tree = Tournament::new(weights);
    let mut out = Vec::with_capacity(total as usize);
    for t in 1..=total {
        tree.refresh(1, t);
        let c = tree.winner[1] as usize;
        out.push(tree.next_member(c));
        tree.advance(c, t);
    }
    out
}

/// A class of equal-weight backends, as one contender.
struct Class {
    weight: i64,
    /// `−W · rounds`: the value at `t` is `weight · t + base`.
    base: i64,
    /// This class's members (ascending indices) in `Tournament::members`.
    start: usize,
    len: usize,
    /// The member whose turn is next (`0..len`).
    next: usize,
}

const NONE: u32 = u32::MAX;
const NEVER: u64 = u64::MAX;

struct Tournament {
    classes: Vec<Class>,
    members: Vec<u32>,
    total: i64,
    /// Leaves start at `size`; node `k` has children `2k`, `2k + 1`.
    size: usize,
    winner: Vec<u32>,
    /// The earliest pick number at which this node or a descendant may change its winner.
    event: Vec<u64>,
}

impl Tournament {
    fn new(weights: &[u64]) -> Self {
        let mut by_weight: Vec<(u64, u32)> = weights
            .iter()
            .enumerate()
            .map(|(i, &w)| (w, i as u32))
            .collect();
        by_weight.sort_unstable();
        let members: Vec<u32> = by_weight.iter().map(|&(_, i)| i).collect();
        let mut classes: Vec<Class> = Vec::new();
        for (pos, &(w, _)) in by_weight.iter().enumerate() {
            match classes.last_mut() {
                Some(c) if c.weight == w as i64 => c.len += 1,
                _ => classes.push(Class {
                    weight: w as i64,
                    base: 0,
                    start: pos,
                    len: 1,
                    next: 0,
                }),
            }
        }
        let size = classes.len().next_power_of_two();
        let mut winner = vec![NONE; 2 * size];
        for c in 0..classes.len() {
            winner[size + c] = c as u32;
        }
        let mut tree = Tournament {
            classes,
            members,
            total: weights.iter().sum::<u64>() as i64,
            size,
            winner,
            event: vec![NEVER; 2 * size],
        };
        for node in (1..size).rev() {
            tree.combine(node, 0);
        }
        tree
    }

    fn next_member(&self, c: usize) -> u32 {
        let class = &self.classes[c];
        self.members[class.start + class.next]
    }

    fn value(&self, c: u32, t: u64) -> i64 {
        let class = &self.classes[c as usize];
        class.weight * t as i64 + class.base
    }

    /// nginx's comparison: the larger `current_weight` wins, the earlier peer on a tie.
    fn beats(&self, a: u32, b: u32, t: u64) -> bool {
        let (va, vb) = (self.value(a, t), self.value(b, t));
        va > vb || (va == vb && self.next_member(a as usize) < self.next_member(b as usize))
    }

    /// The first pick number after `t` at which `loser` beats `winner`, if their classes do not
    /// change before then.
    fn overtakes_at(&self, winner: u32, loser: u32, t: u64) -> u64 {
        let (ws, ls) = (
            self.classes[winner as usize].weight,
            self.classes[loser as usize].weight,
        );
        if ls <= ws {
            return NEVER;
        }
        let gap = self.value(winner, t) - self.value(loser, t);
        let closing = ls - ws;
        // `gap` shrinks by `closing` per pick. An earlier-indexed loser wins at equality, a later
        // one only once strictly ahead. (An earlier-indexed loser has gap > 0, or it would have
        // won already, so the quotient is at least 1 either way.)
        let steps = if self.next_member(loser as usize) < self.next_member(winner as usize) {
            (gap + closing - 1) / closing
        } else {
            gap / closing + 1
        };
        t + steps as u64
    }

    fn combine(&mut self, node: usize, t: u64) {
        let (l, r) = (self.winner[2 * node], self.winner[2 * node + 1]);
        let (win, at) = if l == NONE || r == NONE {
            (l.min(r), NEVER)
        } else if self.beats(r, l, t) {
            (r, self.overtakes_at(r, l, t))
        } else {
            (l, self.overtakes_at(l, r, t))
        };
        self.winner[node] = win;
        self.event[node] = at.min(self.event[2 * node]).min(self.event[2 * node + 1]);
    }

    /// Brings the subtree at `node` up to pick number `t`.
    fn refresh(&mut self, node: usize, t: u64) {
        if self.event[node] > t {
            return;
        }
        // Leaves never carry an event, so this stops above them.
        self.refresh(2 * node, t);
        self.refresh(2 * node + 1, t);
        self.combine(node, t);
    }

    /// Class `c` won pick `t`: its next member takes the turn, as nginx subtracts `W` from it.
    fn advance(&mut self, c: usize, t: u64) {
        let class = &mut self.classes[c];
        class.next += 1;
        if class.next == class.len {
            class.next = 0;
            class.base -= self.total;
        }
        let mut node = (self.size + c) / 2;
        while node >= 1 {
            self.combine(node, t);
            node /= 2;
        }
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::backend::Backend;
    use crate::strategy::test_util::valid;
    use crate::strategy::test_util::{index, set};
    use crate::strategy::Strategy;
    use crate::{AdminState, Balancer, HealthConfig, ManualClock};
    use proptest::prelude::{any, prop, prop_assert, prop_assert_eq, proptest};
    use std::time::Duration;

    /// nginx's smooth weighted round robin exactly as `ngx_http_upstream_get_peer` computes it,
    /// every peer available and no failures: add each weight to its current, take the first peer
    /// with the largest current, subtract the total from it. O(n) per pick.
    pub(crate) fn nginx_sequence(weights: &[u32], picks: usize) -> Vec<usize> {
        let mut current = vec![0i64; weights.len()];
        let total: i64 = weights.iter().map(|&w| i64::from(w)).sum();
        (0..picks)
            .map(|_| {
                let mut best = 0;
                for (i, &w) in weights.iter().enumerate() {
                    current[i] += i64::from(w);
                    if current[i] > current[best] {
                        best = i;
                    }
                }
                current[best] -= total;
                best
            })
            .collect()
    }

    fn picks<S: Strategy>(lb: &Balancer<S>, n: usize) -> Vec<usize> {
        (0..n)
            .map(|_| index(&lb.pick(&Context::new()).unwrap()))
            .collect()
    }

    fn schedule(weights: &[u32]) -> Schedule {
        WeightedRoundRobin::new()
            .prepare(&valid(&set(weights)))
            .unwrap()
    }

    fn period(s: &Schedule) -> Vec<usize> {
        (0..s.cycle_len())
            .map(|p| s.backend_at(p).unwrap())
            .collect()
    }

    /// A fixed pseudo-random weight in `1..=max` for backend `i`.
    fn weight_of(i: u64, max: u64) -> u32 {
        (mix64(i) % max + 1) as u32
    }

    #[test]
    fn weights_five_one_one_give_nginxs_sequence() {
        let lb = Balancer::new(
            WeightedRoundRobin::new(),
            vec![
                Backend::new("a").weight(5),
                Backend::new("b"),
                Backend::new("c"),
            ],
        )
        .unwrap();
        let seq: String = (0..14)
            .map(|_| lb.pick(&Context::new()).unwrap().id().to_owned())
            .collect();
        // The sequence nginx's documentation of the smooth algorithm gives for 5, 1, 1.
        assert_eq!(seq, "aabacaaaabacaa");
    }

    #[test]
    fn equal_weights_are_plain_round_robin_in_index_order() {
        assert_eq!(period(&schedule(&[3, 3, 3, 3])), vec![0, 1, 2, 3]);
    }

    #[test]
    fn ten_thousand_backends_prepare_nginxs_sequence() {
        let weights: Vec<u32> = (0..10_000).map(|i| weight_of(i, 100)).collect();
        let s = schedule(&weights);
        let total: usize = weights.iter().map(|&w| w as usize).sum();
        assert!(s.is_nginx_exact());
        assert_eq!(s.cycle_len(), total); // weight 1 occurs among 10,000 draws: gcd 1
        let mut counts = vec![0u32; weights.len()];
        for p in 0..s.cycle_len() {
            counts[s.backend_at(p).unwrap()] += 1;
        }
        assert_eq!(counts, weights);
        // The reference is O(n) per pick; its first 2,000 picks already exercise every class.
        let prefix: Vec<usize> = period(&s).into_iter().take(2_000).collect();
        assert_eq!(prefix, nginx_sequence(&weights, 2_000));
    }

    #[test]
    fn a_period_longer_than_the_cap_is_scaled_and_marked_inexact() {
        let strategy = WeightedRoundRobin::new().max_schedule_len(10);
        let s = strategy.prepare(&valid(&set(&[50, 30, 7]))).unwrap();
        assert!(!s.is_nginx_exact());
        // 87 > 10: each weight becomes ⌊w · 10 / 87⌋, at least 1: 5, 3, 1.
        assert_eq!(period(&s), nginx_sequence(&[5, 3, 1], 9));
        let exact = strategy.prepare(&valid(&set(&[40, 20, 10]))).unwrap();
        assert!(exact.is_nginx_exact()); // gcd 10 brings the period to 7
        assert_eq!(exact.cycle_len(), 7);
    }

    #[test]
    fn a_cap_below_the_backend_count_gives_each_backend_one_entry() {
        let s = WeightedRoundRobin::new()
            .max_schedule_len(0)
            .prepare(&valid(&set(&[5, 1, 2])))
            .unwrap();
        assert_eq!(period(&s), vec![0, 1, 2]);
    }

    #[test]
    fn a_new_set_restarts_the_sequence_from_its_first_entry() {
        let lb = Balancer::new(WeightedRoundRobin::new(), set(&[5, 1, 1])).unwrap();
        let _ = picks(&lb, 3);
        lb.update(set(&[1, 2, 3])).unwrap();
        assert_eq!(picks(&lb, 12), nginx_sequence(&[1, 2, 3], 12));
    }

    #[test]
    fn an_unavailable_backends_share_goes_to_the_others_by_weight() {
        let lb = Balancer::new(WeightedRoundRobin::new(), set(&[4, 2, 3, 4])).unwrap();
        lb.set_admin_state("b3", Some(AdminState::Down)).unwrap();
        let mut counts = [0usize; 4];
        for i in picks(&lb, 13_000) {
            counts[i] += 1;
        }
        assert_eq!(counts[3], 0);
        // The 4,000 picks scheduled for b3 split 4 : 2 : 3 over the others.
        let expected = [4.0 / 9.0, 2.0 / 9.0, 3.0 / 9.0].map(|f| 13_000.0 * f);
        for (got, want) in counts.iter().zip(expected) {
            assert!(
                (*got as f64 - want).abs() < want * 0.05,
                "{counts:?} vs {expected:?}"
            );
        }
    }

    #[test]
    fn a_backend_in_slow_start_gets_its_effective_share_then_its_full_share() {
        let clock = ManualClock::new();
        let mut b = Balancer::builder(WeightedRoundRobin::new());
        b.health(
            HealthConfig::builder()
                .slow_start(Duration::from_secs(10))
                .slow_start_min_percent(10)
                .build(),
        )
        .clock(clock.clone());
        let lb = b.build(set(&[10, 10])).unwrap();
        lb.set_admin_state("b1", Some(AdminState::Down)).unwrap();
        lb.set_admin_state("b1", None).unwrap(); // back up: slow start at 10 %, weight 1 of 10
        let slow = picks(&lb, 2_000).iter().filter(|&&i| i == 1).count();
        // Scheduled 1,000 times, taken 1 time in 10 (≈ 100), plus the probes of refused picks
        // that land on it and pass the coin (≈ 900 · ½ · ⅒ ≈ 45).
        assert!((100..200).contains(&slow), "{slow}");
        clock.advance(Duration::from_secs(10));
        let seq = picks(&lb, 20);
        assert_eq!(seq.iter().filter(|&&i| i == 1).count(), 10);
    }

    proptest! {
        #[test]
        fn the_sequence_is_nginxs_for_three_cycles(
            weights in prop::collection::vec(1u32..=100, 1..=20),
        ) {
            let lb = Balancer::new(WeightedRoundRobin::new(), set(&weights)).unwrap();
            let total: usize = weights.iter().map(|&w| w as usize).sum();
            prop_assert_eq!(picks(&lb, 3 * total), nginx_sequence(&weights, 3 * total));
        }

        #[test]
        fn many_backends_sharing_few_weights_follow_nginx(
            weights in prop::collection::vec(1u32..=4, 1..=64),
        ) {
            let total: usize = weights.iter().map(|&w| w as usize).sum();
            let g = weights.iter().fold(0, |g, &w| gcd(g, u64::from(w))) as usize;
            prop_assert_eq!(period(&schedule(&weights)), nginx_sequence(&weights, total / g));
        }

        #[test]
        fn each_backend_is_picked_its_reduced_weight_per_cycle(
            weights in prop::collection::vec(1u32..=1000, 1..=40),
        ) {
            let s = schedule(&weights);
            let g = weights.iter().fold(0, |g, &w| gcd(g, u64::from(w))) as u32;
            let mut counts = vec![0u32; weights.len()];
            for p in 0..s.cycle_len() {
                counts[s.backend_at(p).unwrap()] += 1;
            }
            prop_assert_eq!(counts, weights.iter().map(|&w| w / g).collect::<Vec<_>>());
        }

        #[test]
        fn gcd_scaled_weights_repeat_the_reduced_sequence(
            weights in prop::collection::vec(1u32..=30, 1..=10),
            g in 2u32..=5,
        ) {
            let scaled: Vec<u32> = weights.iter().map(|&w| w * g).collect();
            let total: usize = weights.iter().map(|&w| w as usize).sum();
            let n = total * g as usize;
            prop_assert_eq!(nginx_sequence(&scaled, n), nginx_sequence(&weights, n));
            let once = nginx_sequence(&weights, total);
            prop_assert_eq!(nginx_sequence(&weights, n), once.repeat(g as usize));
        }

        #[test]
        fn unavailable_backends_are_never_returned(
            weights in prop::collection::vec(1u32..=50, 1..=12),
            down in prop::collection::vec(any::<bool>(), 12),
        ) {
            let lb = Balancer::new(WeightedRoundRobin::new(), set(&weights)).unwrap();
            for (i, _) in weights.iter().enumerate().filter(|&(i, _)| down[i]) {
                lb.set_admin_state(&format!("b{i}"), Some(AdminState::Down)).unwrap();
            }
            let any_up = (0..weights.len()).any(|i| !down[i]);
            for _ in 0..200 {
                match lb.pick(&Context::new()) {
                    Ok(p) => prop_assert!(!down[index(&p)]),
                    Err(_) => prop_assert!(!any_up),
                }
            }
        }
    }
}
