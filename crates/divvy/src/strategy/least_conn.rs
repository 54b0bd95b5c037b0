//! Least connections, nginx's `least_conn`.

use std::fmt;
use std::sync::atomic::{AtomicI64, Ordering::Relaxed};

use crate::context::Context;
use crate::error::UpdateError;
use crate::set::BackendSet;
use crate::strategy::support::checked_weights;
use crate::strategy::{scan_from, Strategy};
use crate::view::View;

const NAME: &str = "least_conn";

/// nginx's `least_conn`: the available backend with the fewest requests in flight per unit of
/// weight; among several tied at that minimum, smooth weighted round robin over the tied ones.
///
/// **Origin:** nginx `ngx_http_upstream_least_conn_module.c`.
///
/// **Cost:** O(n) per pick: every backend's availability, in-flight count and weight are read
/// (atomic loads, no lock, no allocation); a tie adds a second pass over the backends from the
/// first tied one. For large sets, or many balancer instances that should not all pile onto the
/// same idle backend, [`PowerOfTwoChoices`](crate::strategy::PowerOfTwoChoices) compares two
/// random backends in O(1) and is known to balance nearly as well; `LeastConnections` stays an
/// exact `least_conn` rather than growing a sampling mode that nginx does not have.
///
/// ```
/// use divvy::{Backend, Balancer, Context, strategy::LeastConnections};
///
/// let lb = Balancer::new(LeastConnections::new(), ["a", "b"].map(Backend::new))?;
/// let first = lb.pick(&Context::new())?;   // both idle: the tie goes to a
/// let second = lb.pick(&Context::new())?;  // a is busy: b
/// assert_eq!((first.id(), second.id()), ("a", "b"));
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
///
/// # How it matches nginx
///
/// nginx scans the peers, keeps the first with the smallest `conns / weight` (compared as
/// `a.conns · b.weight < b.conns · a.weight`, so no division and no rounding), and notes whether
/// another peer has the same ratio. If none does, that peer is chosen and nothing else changes.
/// If some do, it runs smooth weighted round robin over the peers with that ratio only, starting
/// from the first: each adds its weight to its `current_weight`, the first with the largest
/// `current_weight` wins, and the winner gives back the sum. Peers not tied keep their
/// `current_weight`. divvy does the same, with requests in flight for `conns` and per-set
/// `current_weight`s.
///
/// # Where it differs
///
/// - **Weights in slow start.** Both the ratio and the tie-break use
///   [`View::effective_weight`], which equals the configured weight except while a backend ramps
///   up after recovering, so a recovering backend takes a smaller share of the load. nginx uses
///   the configured weight for the ratio (open-source nginx has no slow start).
/// - **After a failure** nginx's tie-break uses a failure-lowered `effective_weight`; divvy's
///   health registry ejects failing backends instead (see [`health`](crate::health)).
/// - **Concurrency.** nginx takes a lock for the pick; divvy reads in-flight counts and
///   `current_weight`s with plain atomic loads and stores. Two concurrent picks may see the same
///   counts and choose the same backend, and a racing tie-break may lose one update of a
///   `current_weight`. That only perturbs the tie order for a moment: smooth round robin pulls
///   relative `current_weight`s back together, because the peer left behind wins ties until it
///   has caught up. Counts, not the tie-break, decide who is least loaded.
#[derive(Clone, Copy, Debug, Default)]
pub struct LeastConnections;

impl LeastConnections {
    /// nginx's `least_conn`.
    pub const fn new() -> Self {
        LeastConnections
    }
}

/// The per-set `current_weight` of each backend, which breaks ties between equally loaded
/// backends in smooth weighted round-robin order.
pub struct CurrentWeights {
    current: Box<[AtomicI64]>,
}

impl fmt::Debug for CurrentWeights {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CurrentWeights")
            .field("backends", &self.current.len())
            .finish_non_exhaustive()
    }
}

impl Strategy for LeastConnections {
    type Prepared = CurrentWeights;

    fn name(&self) -> &'static str {
        NAME
    }

    fn prepare(&self, backends: &BackendSet<'_>) -> Result<CurrentWeights, UpdateError> {
        checked_weights(NAME, backends)?;
        Ok(CurrentWeights {
            current: backends.iter().map(|_| AtomicI64::new(0)).collect(),
        })
    }

    fn pick(&self, cw: &CurrentWeights, _ctx: &Context<'_>, view: &View<'_>) -> Option<usize> {
        let n = view.len();
        if n != cw.current.len() {
            // Never the case for a balancer's own view; stay correct for a caller that mixes sets.
            return scan_from(view, 0);
        }
        // Pass 1: the first backend with the least in flight per weight, and whether it has
        // company. Only a strictly smaller ratio replaces the candidate, so the candidate is the
        // first of the tied (nginx keeps `best` the same way).
        let mut best: Option<(usize, u64, u64)> = None;
        let mut many = false;
        for i in 0..n {
            if !view.is_available(i) {
                continue;
            }
            let (conns, weight) = load(view, i);
            match best {
                Some((_, bc, bw)) if conns * bw > bc * weight => {}
                Some((_, bc, bw)) if conns * bw == bc * weight => many = true,
                _ => {
                    best = Some((i, conns, weight));
                    many = false;
                }
            }
        }
        let (first, bc, bw) = best?;
        if !many {
            // nginx subtracts a total of zero here: no current_weight moves.
            return Some(first);
        }
        // Pass 2: smooth weighted round robin over the backends with the same ratio, from the
        // first of them on (earlier ones cannot be tied). The first tied peer is compared with
        // itself in nginx, so the winner is the first with the strictly largest current_weight.
        let mut total = 0i64;
        let mut chosen: Option<(usize, i64)> = None;
        for i in first..n {
            if !view.is_available(i) {
                continue;
            }
            let (conns, weight) = load(view, i);
            if conns * bw != bc * weight {
                continue;
            }
            let weight = tie_weight(view, i);
            let current = cw.current[i].load(Relaxed) + weight;
            cw.current[i].store(current, Relaxed);
            total += weight;
            if chosen.is_none_or(|(_, c)| current > c) {
                chosen = Some((i, current));
            }
        }
        match chosen {
            Some((i, current)) => {
                cw.current[i].store(current - total, Relaxed);
                Some(i)
            }
            // Every tied backend changed between the passes; take any that is available.
            None => scan_from(view, first),
        }
    }
}

/// In flight and weight of backend `i`, both in 1/1024ths, so that slow start's unrounded factor
/// ramps even a backend of weight 1. Scaling every backend's pair alike leaves nginx's ratio
/// comparison unchanged outside slow start; the cross products stay below 2⁵⁷ (in flight < 2²³,
/// weight ≤ 10,000).
#[inline]
fn load(view: &View<'_>, i: usize) -> (u64, u64) {
    (u64::from(view.in_flight(i)) * 1024, view.weight_1024ths(i))
}

/// The tie-break weight of backend `i` in 1/1024ths, slow start included. Every tied backend is
/// measured in the same unit, and scaling all weights alike leaves the smooth sequence unchanged.
#[inline]
fn tie_weight(view: &View<'_>, i: usize) -> i64 {
    view.weight_1024ths(i) as i64
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::Backend;
    use crate::strategy::test_util::{index, set};
    use crate::strategy::weighted::tests::nginx_sequence;
    use crate::{AdminState, Balancer, Pick};
    use proptest::prelude::{any, prop, prop_assert, prop_assert_eq, proptest};

    /// Holds `count` requests in flight to backend `i`, pinned with a sticky target.
    fn hold(lb: &Balancer<LeastConnections>, i: usize, count: usize) -> Vec<Pick> {
        let key = Backend::new(format!("b{i}")).key();
        (0..count)
            .map(|_| lb.pick(&Context::new().sticky(key)).unwrap())
            .collect()
    }

    /// nginx's `ngx_http_upstream_get_least_conn_peer` over peers that are all up: the model the
    /// strategy is compared with. `conns` and `current` are the peers' state, updated as nginx
    /// updates them.
    fn nginx_least_conn(
        weights: &[u32],
        up: &[bool],
        conns: &mut [u64],
        current: &mut [i64],
    ) -> Option<usize> {
        let mut best: Option<usize> = None;
        let mut many = false;
        for i in 0..weights.len() {
            if !up[i] {
                continue;
            }
            match best {
                None => best = Some(i),
                Some(b) => {
                    let (l, r) = (
                        conns[i] * u64::from(weights[b]),
                        conns[b] * u64::from(weights[i]),
                    );
                    if l < r {
                        best = Some(i);
                        many = false;
                    } else if l == r {
                        many = true;
                    }
                }
            }
        }
        let mut best = best?;
        let mut total = 0;
        if many {
            let first = best;
            for i in first..weights.len() {
                if !up[i]
                    || conns[i] * u64::from(weights[first]) != conns[first] * u64::from(weights[i])
                {
                    continue;
                }
                current[i] += i64::from(weights[i]);
                total += i64::from(weights[i]);
                if current[i] > current[best] {
                    best = i;
                }
            }
        }
        current[best] -= total;
        conns[best] += 1;
        Some(best)
    }

    #[test]
    fn the_least_loaded_backend_is_chosen() {
        let lb = Balancer::new(LeastConnections::new(), set(&[1, 1, 1])).unwrap();
        let _a = hold(&lb, 0, 2);
        let _b = hold(&lb, 1, 1);
        assert_eq!(index(&lb.pick(&Context::new()).unwrap()), 2);
        let _c = hold(&lb, 2, 3);
        assert_eq!(index(&lb.pick(&Context::new()).unwrap()), 1);
    }

    #[test]
    fn load_is_compared_per_unit_of_weight() {
        let lb = Balancer::new(LeastConnections::new(), set(&[3, 1])).unwrap();
        let _a = hold(&lb, 0, 2);
        let _b = hold(&lb, 1, 1);
        // 2 / 3 < 1 / 1: the heavier backend, although it has more in flight.
        let p = lb.pick(&Context::new()).unwrap();
        assert_eq!(index(&p), 0);
        drop(p);
        let _more = hold(&lb, 0, 2);
        // 4 / 3 > 1 / 1.
        assert_eq!(index(&lb.pick(&Context::new()).unwrap()), 1);
    }

    #[test]
    fn ties_between_idle_backends_follow_the_smooth_weighted_sequence() {
        let lb = Balancer::new(LeastConnections::new(), set(&[2, 1])).unwrap();
        // Each pick ends before the next, so all are idle and tied every time.
        let seq: Vec<usize> = (0..9)
            .map(|_| index(&lb.pick(&Context::new()).unwrap()))
            .collect();
        assert_eq!(seq, nginx_sequence(&[2, 1], 9));
        assert_eq!(seq[..3], [0, 1, 0]); // nginx: 2,1 → a b a
    }

    #[test]
    fn only_the_tied_backends_take_part_in_the_tie_break() {
        let lb = Balancer::new(LeastConnections::new(), set(&[5, 1, 1])).unwrap();
        let _a = hold(&lb, 0, 1);
        // b and c tie at 0 in flight; a is out of the round, so the tie alternates b, c.
        let seq: Vec<usize> = (0..4)
            .map(|_| index(&lb.pick(&Context::new()).unwrap()))
            .collect();
        assert_eq!(seq, [1, 2, 1, 2]);
    }

    #[test]
    fn a_single_backend_is_chosen_when_available() {
        let lb = Balancer::new(LeastConnections::new(), set(&[4])).unwrap();
        let _held = hold(&lb, 0, 5);
        assert_eq!(index(&lb.pick(&Context::new()).unwrap()), 0);
        lb.set_admin_state("b0", Some(AdminState::Down)).unwrap();
        assert!(lb.pick(&Context::new()).is_err());
    }

    proptest! {
        #[test]
        fn picks_follow_nginxs_least_conn(
            weights in prop::collection::vec(1u32..=5, 1..=6),
            up in prop::collection::vec(any::<bool>(), 6),
            ops in prop::collection::vec(any::<(bool, usize)>(), 1..80),
        ) {
            let lb = Balancer::new(LeastConnections::new(), set(&weights)).unwrap();
            for i in (0..weights.len()).filter(|&i| !up[i]) {
                lb.set_admin_state(&format!("b{i}"), Some(AdminState::Down)).unwrap();
            }
            let mut conns = vec![0u64; weights.len()];
            let mut current = vec![0i64; weights.len()];
            let mut held: Vec<Pick> = Vec::new();
            for (pick, which) in ops {
                if pick || held.is_empty() {
                    let want = nginx_least_conn(&weights, &up, &mut conns, &mut current);
                    let got = lb.pick(&Context::new()).ok();
                    prop_assert_eq!(got.as_ref().map(index), want);
                    held.extend(got);
                } else {
                    let done = held.swap_remove(which % held.len());
                    conns[index(&done)] -= 1;
                }
            }
        }

        #[test]
        fn the_pick_is_an_available_backend_with_the_least_load_per_weight(
            weights in prop::collection::vec(1u32..=10, 1..=8),
            down in prop::collection::vec(any::<bool>(), 8),
            load in prop::collection::vec(0usize..6, 8),
        ) {
            let lb = Balancer::new(LeastConnections::new(), set(&weights)).unwrap();
            let _held: Vec<Vec<Pick>> =
                (0..weights.len()).map(|i| hold(&lb, i, load[i])).collect();
            for i in (0..weights.len()).filter(|&i| down[i]) {
                lb.set_admin_state(&format!("b{i}"), Some(AdminState::Down)).unwrap();
            }
            let up: Vec<usize> = (0..weights.len()).filter(|&i| !down[i]).collect();
            match lb.pick(&Context::new()) {
                Err(_) => prop_assert!(up.is_empty()),
                Ok(p) => {
                    let i = index(&p);
                    prop_assert!(!down[i]);
                    let ratio = |j: usize| load[j] as f64 / f64::from(weights[j]);
                    prop_assert!(up.iter().all(|&j| ratio(i) <= ratio(j)));
                }
            }
        }
    }
}
