//! Weighted random choice.

use crate::backend::Backend;
use crate::context::Context;
use crate::error::UpdateError;
use crate::set::BackendSet;
use crate::strategy::support::{below, check_count, split, Stream};
use crate::strategy::Strategy;
use crate::view::View;

/// Draws before a pick stops sampling and walks the set. With a fraction `f` of the weight
/// unavailable, the walk is needed with probability `f^8`: 0.4 % when half the weight is down.
const DRAWS: usize = 8;

// === impl Random ===

/// Weighted random choice: backend `i` with probability `weight(i) / Σ weight` among the available
/// backends; uniform when every weight is equal. The choice nginx's `random` directive makes.
///
/// Cost: O(1). [`prepare`](Strategy::prepare) builds Vose's alias table (Vose, IEEE TSE 1991) in
/// O(n), and a pick is one random draw, one table lookup and one availability check. An
/// unavailable draw is redrawn; after 8 draws the pick walks the set once, summing available
/// weight, and chooses by weight in a second walk (O(n), needed with probability `f^8` when a
/// fraction `f` of the weight is unavailable). Both paths condition on the same thing, so the
/// distribution among available backends stays exactly proportional to weight.
///
/// Slow start is exact too, by rejection: a drawn backend whose effective weight is below its
/// weight is accepted with probability `effective / weight`, otherwise redrawn. The only
/// approximation is that weights are read without a lock: a pick racing a health change may
/// see the old state.
///
/// [`new`](Self::new) seeds from OS randomness and draws from per-thread state (no shared cache
/// line); [`from_seed`](Self::from_seed) is reproducible: in single-threaded use the same seed
/// gives the same picks, at the price of one shared atomic add per draw.
///
/// ```
/// use divvy::{Backend, Balancer, Context, strategy::Random};
///
/// let lb = Balancer::new(Random::from_seed(7), [Backend::new("a").weight(3), Backend::new("b")])?;
/// let picked = lb.pick(&Context::new())?;
/// assert!(["a", "b"].contains(&picked.id()));
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Clone, Debug)]
pub struct Random {
    stream: Stream,
}

impl Random {
    /// Weighted random, seeded from OS randomness.
    pub fn new() -> Self {
        Random {
            stream: Stream::from_os(),
        }
    }

    /// Weighted random with a reproducible stream: the same seed, set and live state give the
    /// same picks in single-threaded use.
    pub fn from_seed(seed: u64) -> Self {
        Random {
            stream: Stream::from_seed(seed),
        }
    }

    /// Rejection step for slow start: keeps a draw of `i` with probability equal to its slow-start
    /// factor (so even a backend of weight 1 ramps).
    #[inline]
    fn passes_slow_start(&self, view: &View<'_>, i: usize) -> bool {
        let factor = view.slow_start_factor(i);
        // 2^-64 scales a uniform u64 to [0, 1).
        factor >= 1.0
            || (self.stream.next_u64() as f64) * (1.0 / 18_446_744_073_709_551_616.0) < factor
    }
}

impl Default for Random {
    fn default() -> Self {
        Self::new()
    }
}

/// Vose's alias table over a set's weights: column `i` keeps `i` with probability
/// `keep / 2^64` and otherwise yields its alias. Empty when every weight is equal.
#[derive(Debug)]
pub struct AliasTable {
    columns: Box<[Column]>,
}

#[derive(Clone, Copy, Debug)]
struct Column {
    keep: u64,
    alias: u32,
}

impl AliasTable {
    /// Builds the table in exact integer arithmetic, so no floating-point remainder is left
    /// over to assign: column `i` starts with mass `weight(i) × n` in units where a full column
    /// holds `Σ weight`. A column below full takes its alias from one above, which gives up the
    /// difference; the masses always sum to `remaining columns × Σ weight`, so while a column
    /// is below full another is above, and the last columns are exactly full.
    pub(crate) fn new(weights: &[u32]) -> Self {
        if weights.windows(2).all(|w| w[0] == w[1]) {
            return AliasTable {
                columns: Box::new([]),
            };
        }
        let n = weights.len() as u64;
        let total: u64 = weights.iter().map(|&w| u64::from(w)).sum();
        let mut mass: Vec<u64> = weights.iter().map(|&w| u64::from(w) * n).collect();
        let mut columns: Vec<Column> = (0..weights.len() as u32)
            .map(|i| Column {
                keep: u64::MAX,
                alias: i,
            })
            .collect();
        let (mut small, mut large): (Vec<u32>, Vec<u32>) =
            (0..weights.len() as u32).partition(|&i| mass[i as usize] < total);
        while let (Some(&s), Some(&l)) = (small.last(), large.last()) {
            small.pop();
            let kept = mass[s as usize];
            // kept < total, so the quotient is below 2^64.
            let keep = ((u128::from(kept) << 64) / u128::from(total)) as u64;
            columns[s as usize] = Column { keep, alias: l };
            mass[l as usize] -= total - kept;
            if mass[l as usize] < total {
                large.pop();
                small.push(l);
            }
        }
        AliasTable {
            columns: columns.into_boxed_slice(),
        }
    }

    /// Draws an index of `0..n` with probability proportional to weight.
    #[inline]
    pub(crate) fn sample(&self, r: u64, n: usize) -> usize {
        let (i, rest) = split(r, n);
        match self.columns.get(i) {
            None => i,
            Some(c) if rest < c.keep => i,
            Some(c) => c.alias as usize,
        }
    }
}

impl Strategy for Random {
    type Prepared = AliasTable;

    fn name(&self) -> &'static str {
        "random"
    }

    fn prepare(&self, backends: &BackendSet<'_>) -> Result<AliasTable, UpdateError> {
        check_count(self.name(), backends, u32::MAX as usize)?;
        let weights: Vec<u32> = backends.iter().map(Backend::get_weight).collect();
        Ok(AliasTable::new(&weights))
    }

    #[inline]
    fn pick(&self, table: &AliasTable, _ctx: &Context<'_>, view: &View<'_>) -> Option<usize> {
        let n = view.len();
        debug_assert!(table.columns.is_empty() || table.columns.len() == n);
        for _ in 0..DRAWS {
            let i = table.sample(self.stream.next_u64(), n);
            if view.is_available(i) && self.passes_slow_start(view, i) {
                return Some(i);
            }
        }
        weighted_walk(view, self.stream.next_u64())
    }
}

/// Chooses among the available backends in proportion to effective weight, in two walks of the
/// set. If availability changes between the walks, the last available backend seen wins.
fn weighted_walk(view: &View<'_>, r: u64) -> Option<usize> {
    let total: u64 = (0..view.len())
        .filter(|&i| view.is_available(i))
        .map(|i| u64::from(view.effective_weight(i)))
        .sum();
    if total == 0 {
        return None;
    }
    let mut x = below(r, total);
    let mut last = None;
    for i in 0..view.len() {
        if view.is_available(i) {
            let w = u64::from(view.effective_weight(i));
            if x < w {
                return Some(i);
            }
            x -= w;
            last = Some(i);
        }
    }
    last
}

#[cfg(test)]
pub(crate) mod tests {
    use std::time::Duration;

    use proptest::prelude::{prop, prop_assert, proptest};

    use super::*;
    use crate::backend::AdminState;
    use crate::balancer::Balancer;
    use crate::clock::ManualClock;
    use crate::health::HealthConfig;
    use crate::strategy::test_util::{assert_binomial, count_picks, set, shares};

    // === the alias table ===

    proptest! {
        #[test]
        fn the_alias_table_gives_each_backend_exactly_its_weight(
            weights in prop::collection::vec(1u32..=crate::backend::MAX_WEIGHT, 1..200),
        ) {
            let table = AliasTable::new(&weights);
            let n = weights.len();
            let total: u128 = weights.iter().map(|&w| u128::from(w)).sum();
            // Mass of backend i across columns, in units of 2^-64 of a column.
            let mut mass = vec![0u128; n];
            if table.columns.is_empty() {
                prop_assert!(weights.iter().all(|&w| w == weights[0]));
                mass.iter_mut().for_each(|m| *m = 1 << 64);
            }
            for (c, col) in table.columns.iter().enumerate() {
                mass[c] += u128::from(col.keep);
                mass[col.alias as usize] += (1u128 << 64) - u128::from(col.keep);
            }
            for (i, &w) in weights.iter().enumerate() {
                // Exact share: w × n / total columns; each column's keep is floored, so the
                // error is at most one unit per column.
                let exact = u128::from(w) * n as u128 * (1 << 64);
                let diff = (mass[i] * total).abs_diff(exact);
                prop_assert!(diff <= n as u128 * total, "backend {} off by {}", i, diff);
            }
        }
    }

    #[test]
    fn sampling_one_column_at_its_boundary_yields_the_alias() {
        // Two backends, weights 1 and 3: column 0 keeps b0 with probability 2 × 1 / 4 = 1/2.
        let table = AliasTable::new(&[1, 3]);
        assert_eq!(table.columns[0].alias, 1);
        assert_eq!(table.columns[0].keep, 1 << 63);
        // r just below 1/2 maps to column 0 with the low word near the top: the alias.
        assert_eq!(table.sample((1 << 63) - 1, 2), 1);
        // r = 0: column 0, low word 0 < keep: kept.
        assert_eq!(table.sample(0, 2), 0);
    }

    // === distributions ===

    #[test]
    fn picks_follow_the_weights() {
        let weights = [5, 1, 1, 3];
        let lb = Balancer::new(Random::from_seed(1), set(&weights)).unwrap();
        let counts = count_picks(&lb, &Context::new(), 100_000);
        assert_binomial(&counts, &shares(&[5.0, 1.0, 1.0, 3.0]));
    }

    #[test]
    fn equal_weights_pick_uniformly() {
        let lb = Balancer::new(Random::from_seed(2), set(&[4; 5])).unwrap();
        let counts = count_picks(&lb, &Context::new(), 50_000);
        assert_binomial(&counts, &[0.2; 5]);
    }

    #[test]
    fn an_os_seeded_stream_reaches_every_backend() {
        // Each backend has probability 1/3 per pick; missing one in 1000 picks has probability
        // below 3 × (2/3)^1000.
        let lb = Balancer::new(Random::new(), set(&[1, 1, 1])).unwrap();
        let counts = count_picks(&lb, &Context::new(), 1000);
        assert!(counts.iter().all(|&c| c > 0), "{counts:?}");
    }

    #[test]
    fn unavailable_weight_is_shared_by_the_rest_in_proportion_to_weight() {
        // 100 of 103 weight is down, so most picks exhaust their draws and take the walk: the
        // two paths together must still split 1:2.
        let lb = Balancer::new(Random::from_seed(3), set(&[100, 1, 2])).unwrap();
        lb.set_admin_state("b0", Some(AdminState::Down)).unwrap();
        let counts = count_picks(&lb, &Context::new(), 30_000);
        assert_binomial(&counts, &[0.0, 1.0 / 3.0, 2.0 / 3.0]);
    }

    #[test]
    fn a_backend_in_slow_start_gets_its_effective_share() {
        let clock = ManualClock::new();
        let mut builder = Balancer::builder(Random::from_seed(4));
        builder
            .health(
                HealthConfig::builder()
                    .slow_start(Duration::from_secs(100))
                    .slow_start_min_percent(10)
                    .build(),
            )
            .clock(clock.clone());
        let lb = builder.build(set(&[100, 100])).unwrap();
        // b2 joins a running set: it starts at 10 % of its weight.
        lb.update(set(&[100, 100, 100])).unwrap();
        let counts = count_picks(&lb, &Context::new(), 42_000);
        assert_binomial(&counts, &shares(&[100.0, 100.0, 10.0]));
        // Half-way through the window: 10 + 90 × 0.5 = 55 %.
        clock.advance(Duration::from_secs(50));
        let counts = count_picks(&lb, &Context::new(), 51_000);
        assert_binomial(&counts, &shares(&[100.0, 100.0, 55.0]));
    }

    #[test]
    fn the_same_seed_gives_the_same_picks() {
        let run = |seed| {
            let lb = Balancer::new(Random::from_seed(seed), set(&[3, 1, 4, 1, 5])).unwrap();
            (0..200)
                .map(|_| lb.pick(&Context::new()).unwrap().id().to_owned())
                .collect::<Vec<_>>()
        };
        assert_eq!(run(9), run(9));
        // 200 picks over five backends agree by chance with probability far below 10^-50.
        assert_ne!(run(9), run(10));
    }
}
