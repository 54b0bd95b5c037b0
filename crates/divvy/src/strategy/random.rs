//! Weighted random choice, and the random stream every randomised strategy draws from.

use std::cell::Cell;
use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

use crate::backend::Backend;
use crate::context::Context;
use crate::error::UpdateError;
use crate::hash::mix64;
use crate::strategy::Strategy;
use crate::view::View;

/// Draws before a pick stops sampling and walks the set. With a fraction `f` of the weight
/// unavailable, the walk is needed with probability `f^8`: 0.4 % when half the weight is down.
const DRAWS: usize = 8;

// === impl Stream ===

/// SplitMix64's increment: 2^64 divided by the golden ratio, odd, so the counter visits every
/// 64-bit value before repeating.
const GAMMA: u64 = 0x9e37_79b9_7f4a_7c15;

thread_local! {
    /// The per-thread SplitMix64 counter of OS-seeded streams; 0 = not yet seeded.
    static THREAD_STATE: Cell<u64> = const { Cell::new(0) };
}

/// Threads that seeded their state so far: makes each thread's stream distinct.
static THREADS_SEEDED: AtomicU64 = AtomicU64::new(0);

/// Where a randomised strategy draws its random numbers: SplitMix64 (Steele, Lea and Flood,
/// OOPSLA 2014), a counter advanced by [`GAMMA`] and finalised by [`mix64`].
///
/// Measured on the development machine, a per-thread counter costs about 1.3 ns per draw and
/// stays there with several threads, while one counter shared through an atomic costs about
/// 7 ns alone and 20–35 ns once two threads contend for its cache line. So OS-seeded streams
/// keep their state per thread, and only seeded streams, whose point is reproducibility, share
/// one atomic counter: with a single thread, the same seed gives the same draws.
pub(crate) enum Stream {
    /// Per-thread state, first seeded from this seed (itself from OS randomness) and the
    /// thread's ordinal.
    Thread { seed: u64 },
    /// One counter shared by every thread.
    Seeded(AtomicU64),
}

impl Stream {
    /// A stream seeded from OS randomness.
    pub(crate) fn from_os() -> Self {
        Stream::Thread {
            seed: rand::random(),
        }
    }

    /// A reproducible stream.
    pub(crate) fn from_seed(seed: u64) -> Self {
        Stream::Seeded(AtomicU64::new(seed))
    }

    /// The next uniformly distributed 64-bit value.
    #[inline]
    pub(crate) fn next_u64(&self) -> u64 {
        match self {
            Stream::Thread { seed } => THREAD_STATE
                .try_with(|state| {
                    let mut x = state.get();
                    if x == 0 {
                        x = first_state(*seed);
                    }
                    x = x.wrapping_add(GAMMA);
                    state.set(x);
                    mix64(x)
                })
                // Only during thread teardown (a pick from another thread-local's destructor).
                .unwrap_or_else(|_| first_state(*seed)),
            Stream::Seeded(counter) => mix64(counter.fetch_add(GAMMA, Relaxed).wrapping_add(GAMMA)),
        }
    }
}

#[cold]
fn first_state(seed: u64) -> u64 {
    let ordinal = THREADS_SEEDED.fetch_add(1, Relaxed);
    // Never 0, which marks an unseeded thread.
    mix64(seed ^ mix64(ordinal.wrapping_mul(GAMMA))) | 1
}

impl Clone for Stream {
    /// A seeded stream's clone continues from the same point, independently of the original.
    fn clone(&self) -> Self {
        match self {
            Stream::Thread { seed } => Stream::Thread { seed: *seed },
            Stream::Seeded(counter) => Stream::Seeded(AtomicU64::new(counter.load(Relaxed))),
        }
    }
}

impl fmt::Debug for Stream {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Stream::Thread { .. } => "Stream::Thread",
            Stream::Seeded(_) => "Stream::Seeded",
        })
    }
}

/// Maps a uniform `r` to `0..n` by multiply-shift (Lemire) and returns the low word of the
/// product too: given the index, it is still uniform (to within `n / 2^64`), so one draw serves
/// a second decision.
#[inline]
pub(crate) fn split(r: u64, n: usize) -> (usize, u64) {
    let m = u128::from(r) * n as u128;
    ((m >> 64) as usize, m as u64)
}

/// `r` mapped uniformly to `0..n`.
#[inline]
fn below(r: u64, n: u64) -> u64 {
    ((u128::from(r) * u128::from(n)) >> 64) as u64
}

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
    fn new(weights: &[u32]) -> Self {
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

    /// The table over a validated set's weights, for the strategy named `strategy` (named in the
    /// error when the set has more backends than a column can address).
    pub(crate) fn for_set(
        strategy: &'static str,
        backends: &[Backend],
    ) -> Result<AliasTable, UpdateError> {
        if u32::try_from(backends.len()).is_err() {
            return Err(UpdateError::Strategy {
                strategy,
                reason: format!(
                    "{} backends exceed the limit of {}",
                    backends.len(),
                    u32::MAX
                ),
            });
        }
        let weights: Vec<u32> = backends.iter().map(Backend::get_weight).collect();
        Ok(AliasTable::new(&weights))
    }

    /// Whether every weight is equal, so that a uniform draw is already a weighted one.
    #[inline]
    pub(crate) fn is_uniform(&self) -> bool {
        self.columns.is_empty()
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

    fn prepare(&self, backends: &[Backend]) -> Result<AliasTable, UpdateError> {
        AliasTable::for_set(self.name(), backends)
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
    use std::collections::HashMap;
    use std::time::Duration;

    use proptest::prelude::{any, prop, prop_assert, prop_oneof, proptest, Just};
    use proptest::strategy::Strategy as Generator;

    use super::*;
    use crate::backend::AdminState;
    use crate::balancer::Balancer;
    use crate::clock::ManualClock;
    use crate::error::PickError;
    use crate::health::HealthConfig;

    // === shared helpers for the strategy tests ===

    /// Asserts each count is within 5 binomial standard deviations of `picks × p`: a correct
    /// strategy fails a cell with probability below 10^-6, while a bias of a few percent of a
    /// share fails at the sample sizes used here.
    pub(crate) fn assert_binomial(counts: &[u64], probs: &[f64]) {
        assert_eq!(counts.len(), probs.len());
        let picks: u64 = counts.iter().sum();
        let n = picks as f64;
        for (k, (&c, &p)) in counts.iter().zip(probs).enumerate() {
            let expected = n * p;
            let tolerance = 5.0 * (n * p * (1.0 - p)).sqrt();
            assert!(
                (c as f64 - expected).abs() <= tolerance,
                "backend {k}: {c} picks of {picks}, expected {expected:.0} ± {tolerance:.0} \
                 (all counts {counts:?}, probabilities {probs:?})"
            );
        }
    }

    /// Probabilities proportional to `weights`.
    pub(crate) fn shares(weights: &[f64]) -> Vec<f64> {
        let total: f64 = weights.iter().sum();
        weights.iter().map(|w| w / total).collect()
    }

    /// Health with single-probe transitions and the given panic threshold.
    pub(crate) fn health(panic_threshold: u32) -> HealthConfig {
        HealthConfig::builder()
            .rise(1)
            .fall(1)
            .panic_threshold(panic_threshold)
            .build()
    }

    /// Picks `picks` times (dropping each guard at once) and counts picks per backend position.
    pub(crate) fn count_picks<S: Strategy>(
        lb: &Balancer<S>,
        ctx: &Context<'_>,
        picks: usize,
    ) -> Vec<u64> {
        let backends = lb.backends();
        let position: HashMap<&str, usize> = backends
            .iter()
            .enumerate()
            .map(|(i, b)| (b.id(), i))
            .collect();
        let mut counts = vec![0; backends.len()];
        for _ in 0..picks {
            let pick = lb.pick(ctx).expect("a backend is available");
            counts[position[pick.id()]] += 1;
        }
        counts
    }

    /// What a proptest may do to one backend before picking.
    #[derive(Clone, Copy, Debug)]
    pub(crate) enum Condition {
        Up,
        Failing,
        Drain,
        Down,
        Excluded,
    }

    pub(crate) fn condition() -> impl Generator<Value = Condition> {
        prop_oneof![
            3 => Just(Condition::Up),
            1 => Just(Condition::Failing),
            1 => Just(Condition::Drain),
            1 => Just(Condition::Down),
            1 => Just(Condition::Excluded),
        ]
    }

    impl Condition {
        /// Whether a backend in this condition may take a new request (panic off).
        pub(crate) fn available(self) -> bool {
            matches!(self, Condition::Up)
        }

        /// Applies the condition through the balancer's public controls; returns the key to
        /// exclude, if any.
        pub(crate) fn apply<S: Strategy>(self, lb: &Balancer<S>, b: &Backend) -> Option<u64> {
            match self {
                Condition::Up => None,
                Condition::Failing => {
                    lb.report_probe(b.id(), false).unwrap();
                    None
                }
                Condition::Drain => {
                    lb.set_admin_state(b.id(), Some(AdminState::Drain)).unwrap();
                    None
                }
                Condition::Down => {
                    lb.set_admin_state(b.id(), Some(AdminState::Down)).unwrap();
                    None
                }
                Condition::Excluded => Some(b.key()),
            }
        }
    }

    fn weighted(weights: &[u32]) -> Vec<Backend> {
        weights
            .iter()
            .enumerate()
            .map(|(i, &w)| Backend::new(format!("b{i}")).weight(w))
            .collect()
    }

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

        #[test]
        fn a_random_pick_is_never_an_unavailable_backend(
            conditions in prop::collection::vec(condition(), 1..12),
            weights in prop::collection::vec(1u32..=20, 12),
            seed in any::<u64>(),
        ) {
            let backends = weighted(&weights[..conditions.len()]);
            let mut builder = Balancer::builder(Random::from_seed(seed));
            builder.health(health(0));
            let lb = builder.build(backends.clone()).unwrap();
            let excluded: Vec<u64> = conditions
                .iter()
                .zip(&backends)
                .filter_map(|(c, b)| c.apply(&lb, b))
                .collect();
            let ctx = Context::new().exclude(&excluded);
            let any = conditions.iter().any(|c| c.available());
            for _ in 0..20 {
                match lb.pick(&ctx) {
                    Ok(p) => {
                        let i = backends.iter().position(|b| b.id() == p.id()).unwrap();
                        prop_assert!(conditions[i].available(), "picked {:?}", conditions[i]);
                    }
                    Err(PickError::NoneAvailable { .. }) => prop_assert!(!any),
                }
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
        let lb = Balancer::new(Random::from_seed(1), weighted(&weights)).unwrap();
        let counts = count_picks(&lb, &Context::new(), 100_000);
        assert_binomial(&counts, &shares(&[5.0, 1.0, 1.0, 3.0]));
    }

    #[test]
    fn equal_weights_pick_uniformly() {
        let lb = Balancer::new(Random::from_seed(2), weighted(&[4; 5])).unwrap();
        let counts = count_picks(&lb, &Context::new(), 50_000);
        assert_binomial(&counts, &[0.2; 5]);
    }

    #[test]
    fn an_os_seeded_stream_reaches_every_backend() {
        // Each backend has probability 1/3 per pick; missing one in 1000 picks has probability
        // below 3 × (2/3)^1000.
        let lb = Balancer::new(Random::new(), weighted(&[1, 1, 1])).unwrap();
        let counts = count_picks(&lb, &Context::new(), 1000);
        assert!(counts.iter().all(|&c| c > 0), "{counts:?}");
    }

    #[test]
    fn unavailable_weight_is_shared_by_the_rest_in_proportion_to_weight() {
        // 100 of 103 weight is down, so most picks exhaust their draws and take the walk: the
        // two paths together must still split 1:2.
        let lb = Balancer::new(Random::from_seed(3), weighted(&[100, 1, 2])).unwrap();
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
        let lb = builder.build(weighted(&[100, 100])).unwrap();
        // b2 joins a running set: it starts at 10 % of its weight.
        lb.update(weighted(&[100, 100, 100])).unwrap();
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
            let lb = Balancer::new(Random::from_seed(seed), weighted(&[3, 1, 4, 1, 5])).unwrap();
            (0..200)
                .map(|_| lb.pick(&Context::new()).unwrap().id().to_owned())
                .collect::<Vec<_>>()
        };
        assert_eq!(run(9), run(9));
        // 200 picks over five backends agree by chance with probability far below 10^-50.
        assert_ne!(run(9), run(10));
    }

    #[test]
    fn split_maps_the_extremes_to_the_ends_of_the_range() {
        for n in 1..50usize {
            assert_eq!(split(0, n).0, 0);
            assert_eq!(split(u64::MAX, n).0, n - 1);
        }
    }
}
