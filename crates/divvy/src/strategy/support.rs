//! Helpers the strategies share: the golden-ratio increment, the random stream, multiply-shift
//! reduction, division-free remainders, compact index tables, weight checks and the fallback scan.
//! Each is defined once here rather than in the first strategy that needed it.

use std::cell::Cell;
use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

use crate::backend::Backend;
use crate::error::UpdateError;
use crate::hash::mix64;
use crate::set::BackendSet;
use crate::view::View;

/// SplitMix64's increment, 2^64 divided by the golden ratio, rounded to odd: a counter advanced by
/// it visits every 64-bit value before repeating, and consecutive states fed to [`mix64`] give
/// independent-looking values. The random stream, Maglev's rehash sequence, nginx-mode `ip_hash`'s
/// rehash chain and the weighted schedule's probes all step by it.
pub(crate) const GAMMA: u64 = 0x9e37_79b9_7f4a_7c15;

/// The largest schedule length accepted; keeps every schedule position and the divisor of the
/// remainder below 2³².
pub(crate) const SCHEDULE_LIMIT: usize = 1 << 31;

// === the random stream ===

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

// === multiply-shift reduction ===

/// Maps a uniform `r` to `0..n` by multiply-shift (Lemire) and returns the low word of the
/// product too: given the index, it is still uniform (to within `n / 2^64`), so one draw serves
/// a second decision. The one multiply-shift every reduction below is made of.
#[inline]
pub(crate) fn mul_shift(r: u64, n: u64) -> (u64, u64) {
    let m = u128::from(r) * u128::from(n);
    ((m >> 64) as u64, m as u64)
}

/// [`mul_shift`] for an index range.
#[inline]
pub(crate) fn split(r: u64, n: usize) -> (usize, u64) {
    let (i, rest) = mul_shift(r, n as u64);
    (i as usize, rest)
}

/// Maps a uniform 64-bit value to `0..n` without division.
#[inline]
pub(crate) fn reduce(x: u64, n: usize) -> usize {
    split(x, n).0
}

/// `r` mapped uniformly to `0..n`.
#[inline]
pub(crate) fn below(r: u64, n: u64) -> u64 {
    mul_shift(r, n).0
}

// === division-free remainder ===

/// `c mod d` for any 64-bit `c` and `1 ≤ d < 2³²`, without a division instruction (Lemire, Kaser
/// and Kurz, "Faster remainder by direct computation", 2019): with `M = ⌈2¹²⁸ / d⌉`, the
/// remainder is the top of `(M · c mod 2¹²⁸) · d`, exact because 128 ≥ 64 + 32 bits.
///
/// Measured on the 2-core development VM, single thread, per pick including the atomic add:
/// `fetch_add` alone ≈ 7 ns, with this remainder ≈ 7.2–8.5 ns, with `%` ≈ 7.5–11 ns, and a
/// compare-exchange loop that wraps the counter in `[0, len)` ≈ 8.7–10 ns (and it retries under
/// contention, where `fetch_add` never does).
pub(crate) struct FastMod {
    magic: u128,
    d: u64,
}

impl FastMod {
    pub(crate) fn new(d: u64) -> Self {
        debug_assert!((1..1 << 32).contains(&d));
        // For d = 1 the magic wraps to 0, which correctly yields remainder 0.
        FastMod {
            magic: (u128::MAX / u128::from(d)).wrapping_add(1),
            d,
        }
    }

    #[inline]
    pub(crate) fn rem(&self, c: u64) -> u64 {
        let low = self.magic.wrapping_mul(u128::from(c));
        let d = u128::from(self.d);
        let lo = u128::from(low as u64) * d;
        let hi = (low >> 64) * d + (lo >> 64);
        (hi >> 64) as u64
    }
}

// === compact index tables ===

/// Backend indices in the narrowest type that holds them: a schedule or lookup table of 2-byte
/// entries fits twice as much in cache.
pub(crate) enum Indices {
    Narrow(Box<[u16]>),
    Wide(Box<[u32]>),
}

impl Indices {
    /// `entries` are indices below `backends`.
    pub(crate) fn new(entries: Vec<u32>, backends: usize) -> Self {
        if backends <= 1 << 16 {
            Indices::Narrow(entries.iter().map(|&i| i as u16).collect())
        } else {
            Indices::Wide(entries.into_boxed_slice())
        }
    }

    #[inline]
    pub(crate) fn get(&self, pos: usize) -> usize {
        match self {
            Indices::Narrow(v) => usize::from(v[pos]),
            Indices::Wide(v) => v[pos] as usize,
        }
    }

    pub(crate) fn len(&self) -> usize {
        match self {
            Indices::Narrow(v) => v.len(),
            Indices::Wide(v) => v.len(),
        }
    }
}

// === weights and fallback ===

/// The weights of a validated set, rejecting a set too large for a schedule or lookup table of
/// 32-bit positions.
pub(crate) fn checked_weights(
    strategy: &'static str,
    backends: &BackendSet<'_>,
) -> Result<Vec<u32>, UpdateError> {
    check_count(strategy, backends, SCHEDULE_LIMIT)?;
    Ok(backends.iter().map(Backend::get_weight).collect())
}

/// Rejects a set of more than `limit` backends, the most `strategy`'s tables can index.
pub(crate) fn check_count(
    strategy: &'static str,
    backends: &BackendSet<'_>,
    limit: usize,
) -> Result<(), UpdateError> {
    if backends.len() > limit {
        return Err(UpdateError::Strategy {
            strategy,
            reason: format!("{} backends exceed the limit of {limit}", backends.len()),
        });
    }
    Ok(())
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

#[cfg(test)]
mod tests {
    use proptest::prelude::{any, prop_assert_eq, proptest};

    use super::*;

    #[test]
    fn split_maps_the_extremes_to_the_ends_of_the_range() {
        for n in 1..50usize {
            assert_eq!(split(0, n).0, 0);
            assert_eq!(split(u64::MAX, n).0, n - 1);
        }
    }

    #[test]
    fn the_remainder_without_division_handles_the_extremes() {
        for d in [1u64, 2, 3, 7, 1 << 22, (1 << 32) - 1] {
            let m = FastMod::new(d);
            for c in [0, 1, d - 1, d, d + 1, u64::MAX - 1, u64::MAX] {
                assert_eq!(m.rem(c), c % d, "{c} mod {d}");
            }
        }
    }

    proptest! {
        #[test]
        fn the_remainder_without_division_is_exact(c in any::<u64>(), d in 1u64..(1 << 32)) {
            prop_assert_eq!(FastMod::new(d).rem(c), c % d);
        }
    }

    #[test]
    fn reduce_stays_in_range() {
        for n in [1usize, 2, 3, 7, 1000] {
            assert!(reduce(u64::MAX, n) < n);
            assert_eq!(reduce(0, n), 0);
        }
    }
}
