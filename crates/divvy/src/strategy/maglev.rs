//! Maglev hashing (Eisenbud et al., NSDI 2016): a lookup table filled from per-backend
//! permutations.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::fmt;
use std::sync::atomic::{AtomicUsize, Ordering::Relaxed};

use crate::backend::Backend;
use crate::context::Context;
use crate::error::UpdateError;
use crate::hash::{mix64, xxh3, xxh3_seeded};
use crate::set::BackendSet;
use crate::strategy::bounded::{scan_with_room, LoadFactor, Room};
use crate::strategy::support::{reduce, GAMMA};
use crate::strategy::Strategy;
use crate::view::View;

const NAME: &str = "maglev";

/// Seeds of the two hashes of a backend identity (the paper's `h1`, `h2`). Changing either moves
/// every key of every user.
const OFFSET_SEED: u64 = 0x6d61_676c_6576_2d31; // "maglev-1"
const SKIP_SEED: u64 = 0x6d61_676c_6576_2d32; // "maglev-2"

/// How many further slots a pick tries, after the key's own, before scanning the backends.
const REHASHES: u64 = 8;

/// Consistent hashing with a Maglev lookup table: every key maps to one of `M` slots and each slot
/// names a backend. Compared with a ring, a pick is one hash and one table read whatever the number
/// of backends, and the table spreads keys evenly (each backend's share is its weight's share to
/// within a slot); the price is that removing a backend moves slightly more than its own keys.
///
/// Origin: Maglev, Google's network load balancer (Eisenbud et al., NSDI 2016, §3.4), weighted
/// as Envoy's Maglev; optional bounded loads after Mirrokni, Thorup and Zadimoghaddam (2017).
///
/// Cost: O(1) per pick (one XXH3 of the key, one multiply-shift, one table read); preparing is
/// O(M log M) expected for the table of `M` slots (by default `M` grows with the set, see
/// [Choosing `M`](#choosing-m): 65 537 slots, 128 KiB of `u16`, up to 655 backends).
///
/// # Table
///
/// Each backend has a permutation of the slots: `offset = h1(id) mod M`,
/// `skip = h2(id) mod (M − 1) + 1`, slot `j` of its preference list is `(offset + j · skip) mod M`
/// (a permutation because `M` is prime), with `h1`, `h2` XXH3 of the identity under two fixed
/// seeds. Backends take turns claiming their next preferred free slot until the table is full. With
/// equal weights the turns go round in configuration order, as in the paper; with weights, a
/// backend of weight `w` takes its `k`-th turn in round `⌈k · max_w / w⌉`, so it gets a share of
/// turns, hence of slots, proportional to its weight (Envoy's scheme).
///
/// # Choosing `M`
///
/// `M` must be a prime at least the number of backends; the larger `M / n`, the closer the spread
/// and the disruption get to ideal. By default ([`new`](Self::new)) the table grows with the set:
/// `M` is the first size of the fixed ladder [`TABLE_SIZES`](Self::TABLE_SIZES) (65 537, then the
/// largest prime below each power of two up to 2²⁴) that gives every backend at least
/// [`SLOTS_PER_BACKEND`](Self::SLOTS_PER_BACKEND) = 100 slots, the paper's advice, so each
/// backend's share of the keys is its weight's share to within about 1 % (measured load skew, max /
/// mean weighted share: 1.0014 at 10 000 backends with `M` = 1 048 573, equal or weighted 1 to 4).
/// Past 167 772 backends the largest size, 16 777 213 slots, is used with fewer slots each, and a
/// set larger than that is rejected.
///
/// `M` depends only on the number of backends, so every instance that sees the same set builds the
/// same table. It changes only when the set crosses a rung of the ladder (at 656, 1 311, 2 622,
/// 5 243, 10 486, … backends), and then most keys move once, as with any change of `M`: a set that
/// hovers at a rung, or that must never move more than its own keys, should pin the size with
/// [`with_table_size`](Self::with_table_size), or use [`Ketama`](super::Ketama).
///
/// Measured removals of one backend: at `M` = 65 537, 1 of 10 moves 10.2 % of keys, 1 of 100 moves
/// 1.55 % (1.55/n), 1 of 1 000 moves 0.67 % (6.7/n); with the grown table, 1 of 1 000 moves 6.5/n
/// (`M` = 131 071) and 1 of 10 000 moves 9.0/n (`M` = 1 048 573). That is exactly the paper's
/// algorithm's disruption at the same `M` (checked by a test), its trade of disruption for balance;
/// [`Ketama`](super::Ketama) moves 1/n. Larger tables move fewer: with `M` = 655 373, removing 1 of
/// 100 moves 1.14/n and 1 of 1 000 moves 4.3/n, for a table of 1.3 MiB prepared in about 40 ms
/// instead of 1.5 ms.
///
/// # Pick
///
/// A key goes to `table[⌊xxh3(key) · M / 2⁶⁴⌋]`. When that backend is unavailable, the pick tries
/// the slots given by the next 8 values of the SplitMix64 stream seeded with the key's hash, then
/// scans the backends in order from the last one tried. The sequence depends only on the key and
/// the table, so while a backend is unavailable its keys spread over the others, every other key
/// stays where it was, and when it returns its keys come back. A request without a key (or with an
/// empty one) goes round the table's slots in turn: weighted round robin.
///
/// # Bounded loads
///
/// With [`bounded_load`](Self::bounded_load)`(c)`, the pick also skips backends that are full:
/// `in_flight ≥ ⌈c · (T + 1) · w / W⌉`, with `T` the requests in flight across the balancer, `w`
/// the backend's weight and `W` the weight of the available backends (with equal weights, the
/// paper's `⌈c · (T + 1) / n⌉`). A hot key spills along its rehash sequence, the same in every
/// balancer.
///
/// ```
/// use divvy::{Backend, Balancer, Context, strategy::Maglev};
///
/// let lb = Balancer::new(
///     Maglev::new().bounded_load(1.25),
///     ["10.0.0.1:80", "10.0.0.2:80", "10.0.0.3:80"].map(Backend::new),
/// )?;
/// let pick = lb.pick(&Context::new().key(b"user-1234"))?;
/// println!("user-1234 → {}", pick.id());
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Maglev {
    /// A fixed `M`, or `None` to size the table from the set.
    table_size: Option<u32>,
    bound: Option<f64>,
}

impl Default for Maglev {
    fn default() -> Self {
        Maglev::new()
    }
}

impl Maglev {
    /// The paper's table size, 65 537: a prime, about 650 slots per backend for 100 backends. The
    /// smallest size of the default ladder, so sets of up to 655 backends use it.
    pub const DEFAULT_TABLE_SIZE: u32 = 65_537;

    /// The table sizes [`new`](Self::new) chooses from, ascending: 65 537, then the largest prime
    /// below 2¹⁷, 2¹⁸, … 2²⁴. A fixed ladder rather than "the next prime after 100 · n", so that
    /// adding or removing one backend changes `M` (and so moves most keys) only at a rung.
    pub const TABLE_SIZES: [u32; 9] = [
        65_537, 131_071, 262_139, 524_287, 1_048_573, 2_097_143, 4_194_301, 8_388_593, 16_777_213,
    ];

    /// The fewest slots per backend a grown table gives (the paper's `M ≥ 100 · n`), while the
    /// largest size allows it.
    pub const SLOTS_PER_BACKEND: u32 = 100;

    /// The smallest table size accepted (the paper's worked example).
    pub const MIN_TABLE_SIZE: u32 = 7;

    /// The largest table size accepted (64 MiB of `u32` slots).
    pub const MAX_TABLE_SIZE: u32 = 1 << 24;

    /// A Maglev table that grows with the set (see [Choosing `M`](#choosing-m)): the first of
    /// [`TABLE_SIZES`](Self::TABLE_SIZES) with at least 100 slots per backend, without a load
    /// bound.
    pub const fn new() -> Self {
        Maglev {
            table_size: None,
            bound: None,
        }
    }

    /// A Maglev table of `m` slots. `m` must be a prime between
    /// [`MIN_TABLE_SIZE`](Self::MIN_TABLE_SIZE) and [`MAX_TABLE_SIZE`](Self::MAX_TABLE_SIZE), and
    /// at least the number of backends of every set it serves (the paper suggests `m ≥ 100 · n`
    /// for an even spread).
    pub fn with_table_size(m: u32) -> Result<Self, UpdateError> {
        let reason = if m < Self::MIN_TABLE_SIZE {
            format!(
                "table_size {m} is too small: the minimum is {}",
                Self::MIN_TABLE_SIZE
            )
        } else if m > Self::MAX_TABLE_SIZE {
            format!(
                "table_size {m} is too large: the maximum is {}",
                Self::MAX_TABLE_SIZE
            )
        } else if !is_prime(m) {
            format!("table_size {m} is not prime")
        } else {
            return Ok(Maglev {
                table_size: Some(m),
                bound: None,
            });
        };
        Err(UpdateError::Strategy {
            strategy: NAME,
            reason,
        })
    }

    /// Bounds each backend's load to `c` times its weighted share of the requests in flight
    /// (consistent hashing with bounded loads, Mirrokni et al. 2017). `c` must be at least 1.0;
    /// a smaller or non-finite value is rejected with [`UpdateError::Strategy`] when the set is
    /// prepared. Typical values are 1.25 to 2. Default is unbounded.
    #[must_use]
    pub const fn bounded_load(mut self, c: f64) -> Self {
        self.bound = Some(c);
        self
    }

    /// The fixed table size `M`, or `None` when the table grows with the set (the default).
    pub const fn get_table_size(&self) -> Option<u32> {
        self.table_size
    }

    /// The table size `M` this strategy uses for a set of `n` backends: the fixed size, or the
    /// first rung of [`TABLE_SIZES`](Self::TABLE_SIZES) with 100 slots per backend (the largest
    /// rung when none has).
    ///
    /// # Errors
    ///
    /// [`UpdateError::Strategy`] when `n` exceeds `M`: a table needs a slot per backend.
    pub fn table_size_for(&self, n: usize) -> Result<u32, UpdateError> {
        let m = self.table_size.unwrap_or_else(|| {
            let want = n as u64 * u64::from(Self::SLOTS_PER_BACKEND);
            let last = Self::TABLE_SIZES[Self::TABLE_SIZES.len() - 1];
            Self::TABLE_SIZES
                .into_iter()
                .find(|&m| u64::from(m) >= want)
                .unwrap_or(last)
        });
        if n > m as usize {
            return Err(UpdateError::Strategy {
                strategy: NAME,
                reason: format!("table_size {m} is smaller than the {n} backends of the set"),
            });
        }
        Ok(m)
    }

    /// The load bound factor, if any.
    pub const fn get_bounded_load(&self) -> Option<f64> {
        self.bound
    }
}

/// Trial division: table sizes are at most 2²⁴, so at most 2¹² divisions, once per construction.
fn is_prime(m: u32) -> bool {
    if m < 2 {
        return false;
    }
    let mut d = 2u32;
    while d * d <= m {
        if m % d == 0 {
            return false;
        }
        d += 1;
    }
    true
}

/// The prepared lookup table of a [`Maglev`] strategy.
pub struct Table {
    slots: Slots,
    size: u32,
    /// The keyless round robin's position in the table.
    cursor: AtomicUsize,
    bound: Option<LoadFactor>,
    total_weight: u64,
}

/// Backend indices, two bytes each while they fit.
enum Slots {
    Narrow(Box<[u16]>),
    Wide(Box<[u32]>),
}

impl Table {
    /// The backend named by slot `s`.
    #[inline]
    fn get(&self, s: usize) -> usize {
        match &self.slots {
            Slots::Narrow(t) => usize::from(t[s]),
            Slots::Wide(t) => t[s] as usize,
        }
    }

    /// The slot of a 64-bit hash: multiply-shift rather than `%`, a multiplication instead of a
    /// division on the pick path.
    #[inline]
    fn slot(&self, hash: u64) -> usize {
        reduce(hash, self.size as usize)
    }

    /// The backend a key hashing to `hash` maps to when every backend is available.
    #[inline]
    fn owner(&self, hash: u64) -> usize {
        self.get(self.slot(hash))
    }

    /// The `r`-th (from 1) backend of the key's rehash sequence.
    #[inline]
    fn rehash_owner(&self, hash: u64, r: u64) -> usize {
        self.owner(mix64(hash.wrapping_add(r.wrapping_mul(GAMMA))))
    }

    #[cold]
    fn round_robin(&self, view: &View<'_>, room: Option<&mut Room<'_, '_>>) -> Option<usize> {
        let s = self.cursor.fetch_add(1, Relaxed) % self.size as usize;
        scan_with_room(view, self.get(s), room)
    }

    /// Each backend's number of slots.
    #[cfg(test)]
    fn counts(&self, n: usize) -> Vec<usize> {
        let mut c = vec![0; n];
        for s in 0..self.size as usize {
            c[self.get(s)] += 1;
        }
        c
    }
}

impl fmt::Debug for Table {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Table")
            .field("size", &self.size)
            .field("narrow", &matches!(self.slots, Slots::Narrow(_)))
            .field("bounded", &self.bound.is_some())
            .finish_non_exhaustive()
    }
}

/// A backend's preference list: slot `j` is `(offset + j · skip) mod M`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Permutation {
    offset: u32,
    skip: u32,
}

impl Permutation {
    fn of(id: &str, m: u32) -> Self {
        let m64 = u64::from(m);
        Permutation {
            offset: (xxh3_seeded(id.as_bytes(), OFFSET_SEED) % m64) as u32,
            skip: (xxh3_seeded(id.as_bytes(), SKIP_SEED) % (m64 - 1) + 1) as u32,
        }
    }
}

/// Fills a table of `m` slots (the paper's Pseudocode 1, with weighted turns). Requires
/// `0 < perms.len() <= m <= 2^24`, `m` prime, weights ≥ 1.
fn populate(perms: &[Permutation], weights: &[u32], m: u32) -> Vec<u32> {
    let mut table = vec![0u32; m as usize];
    // Which slots are taken, one bit each (8 KiB for the default size): every u32 is a valid
    // backend index, so the table itself has no spare value to mark a free slot.
    let mut taken = vec![0u64; (m as usize).div_ceil(64)];
    // The next slot each backend will try: its preference list, consumed lazily.
    let mut next: Vec<u32> = perms.iter().map(|p| p.offset).collect();
    let mut take = |i: usize| loop {
        let c = next[i];
        let n = c + perms[i].skip;
        next[i] = if n >= m { n - m } else { n };
        let (word, bit) = (c as usize / 64, 1u64 << (c % 64));
        if taken[word] & bit == 0 {
            taken[word] |= bit;
            table[c as usize] = i as u32;
            return;
        }
    };
    let max_w = weights.iter().copied().max().unwrap_or(1);
    if weights.iter().all(|&w| w == max_w) {
        // Every backend every round: the paper's loop.
        for t in 0..m as usize {
            take(t % perms.len());
        }
    } else {
        // Backend i takes its k-th turn in round ⌈k · max_w / w_i⌉; turns are ordered by round,
        // then configuration order. A heap of each backend's next turn skips the rounds in which a
        // light backend has none, which a round-by-round loop would visit. A turn is packed as
        // `round << 24 | i` (rounds stay below 2^38 and indices below 2^24), so the order is one
        // integer comparison.
        let round = |k: u64, w: u32| (k * u64::from(max_w)).div_ceil(u64::from(w));
        let mut turns = vec![1u64; perms.len()];
        let mut heap: BinaryHeap<Reverse<u64>> = weights
            .iter()
            .enumerate()
            .map(|(i, &w)| Reverse(round(1, w) << 24 | i as u64))
            .collect();
        for _ in 0..m {
            let Some(mut top) = heap.peek_mut() else {
                break;
            };
            let i = (top.0 & 0xff_ffff) as usize;
            take(i);
            turns[i] += 1;
            *top = Reverse(round(turns[i], weights[i]) << 24 | i as u64);
        }
    }
    table
}

impl Strategy for Maglev {
    type Prepared = Table;

    fn name(&self) -> &'static str {
        NAME
    }

    fn prepare(&self, backends: &BackendSet<'_>) -> Result<Table, UpdateError> {
        let bound = self.bound.map(|c| LoadFactor::new(NAME, c)).transpose()?;
        let m = self.table_size_for(backends.len())?;
        let perms: Vec<Permutation> = backends
            .iter()
            .map(|b| Permutation::of(b.id(), m))
            .collect();
        let weights: Vec<u32> = backends.iter().map(Backend::get_weight).collect();
        let table = populate(&perms, &weights, m);
        let slots = if backends.len() <= usize::from(u16::MAX) + 1 {
            Slots::Narrow(table.into_iter().map(|b| b as u16).collect())
        } else {
            Slots::Wide(table.into_boxed_slice())
        };
        Ok(Table {
            slots,
            size: m,
            cursor: AtomicUsize::new(0),
            bound,
            total_weight: weights.iter().map(|&w| u64::from(w)).sum(),
        })
    }

    #[inline]
    fn pick(&self, table: &Table, ctx: &Context<'_>, view: &View<'_>) -> Option<usize> {
        let mut room = table.bound.map(|f| Room::new(view, f, table.total_weight));
        let key = match ctx.get_key() {
            Some(key) if !key.is_empty() => key,
            _ => return table.round_robin(view, room.as_mut()),
        };
        let hash = xxh3(key);
        let mut b = table.owner(hash);
        match room.as_mut() {
            None => {
                if view.is_available(b) {
                    return Some(b);
                }
                for r in 1..=REHASHES {
                    b = table.rehash_owner(hash, r);
                    if view.is_available(b) {
                        return Some(b);
                    }
                }
                scan_with_room(view, b, None)
            }
            Some(room) => {
                if view.is_available(b) && room.has_room(b) {
                    return Some(b);
                }
                for r in 1..=REHASHES {
                    b = table.rehash_owner(hash, r);
                    if view.is_available(b) && room.has_room(b) {
                        return Some(b);
                    }
                }
                scan_with_room(view, b, Some(room))
            }
        }
    }

    fn tracks_total_in_flight(&self) -> bool {
        self.bound.is_some()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::strategy::test_util::valid;
    use crate::{AdminState, Balancer};
    use proptest::prelude::{any, prop, prop_assert, prop_assert_eq, proptest, ProptestConfig};
    use std::collections::HashMap;

    fn backends(n: usize) -> Vec<Backend> {
        (0..n)
            .map(|i| Backend::new(format!("10.0.{}.{}:80", i / 256, i % 256)))
            .collect()
    }

    fn table(m: u32, set: &[Backend]) -> Table {
        Maglev::with_table_size(m)
            .unwrap()
            .prepare(&valid(set))
            .unwrap()
    }

    fn pick_id<S: Strategy>(lb: &Balancer<S>, key: &[u8]) -> String {
        lb.pick(&Context::new().key(key))
            .unwrap()
            .backend()
            .id()
            .to_owned()
    }

    fn strategy_error(r: Result<impl fmt::Debug, UpdateError>) -> String {
        match r {
            Err(UpdateError::Strategy { strategy, reason }) => {
                assert_eq!(strategy, "maglev");
                reason
            }
            other => panic!("expected a strategy error, got {other:?}"),
        }
    }

    // === An independent reference ===

    /// The paper's Pseudocode 1, transcribed with the permutations materialised, extended with
    /// weighted turns the slow way: round by round, a backend takes a turn in round `r` when
    /// `r · w ≥ k · max_w` for its next turn `k`.
    fn reference_populate(perms: &[(u32, u32)], weights: &[u32], m: u32) -> Vec<u32> {
        let m = m as usize;
        let permutation: Vec<Vec<usize>> = perms
            .iter()
            .map(|&(offset, skip)| {
                (0..m)
                    .map(|j| (offset as usize + j * skip as usize) % m)
                    .collect()
            })
            .collect();
        let max_w = *weights.iter().max().unwrap();
        let mut next = vec![0; perms.len()];
        let mut taken = vec![0u64; perms.len()];
        let mut entry: Vec<Option<u32>> = vec![None; m];
        let mut filled = 0;
        let mut round = 1u64;
        loop {
            for i in 0..perms.len() {
                if round * u64::from(weights[i]) < (taken[i] + 1) * u64::from(max_w) {
                    continue;
                }
                taken[i] += 1;
                let mut c = permutation[i][next[i]];
                while entry[c].is_some() {
                    next[i] += 1;
                    c = permutation[i][next[i]];
                }
                entry[c] = Some(i as u32);
                next[i] += 1;
                filled += 1;
                if filled == m {
                    return entry.into_iter().map(Option::unwrap).collect();
                }
            }
            round += 1;
        }
    }

    fn perms_of(pairs: &[(u32, u32)]) -> Vec<Permutation> {
        pairs
            .iter()
            .map(|&(offset, skip)| Permutation { offset, skip })
            .collect()
    }

    // === Table size ===

    #[test]
    fn table_sizes_must_be_prime_and_in_range() {
        for m in [7, 13, 65_537, 655_373] {
            assert_eq!(
                Maglev::with_table_size(m).unwrap().get_table_size(),
                Some(m)
            );
        }
        for (m, why) in [
            (0, "too small"),
            (5, "too small"),
            (9, "not prime"),
            (65_536, "not prime"),
            (65_539 * 3, "not prime"),
            (16_777_259, "too large"),
        ] {
            let reason = strategy_error(Maglev::with_table_size(m));
            assert!(
                reason.contains("table_size") && reason.contains(why),
                "{m}: {reason}"
            );
        }
    }

    #[test]
    fn the_default_table_grows_for_a_set_beyond_65537_backends() {
        // What main's first growth rule asserted, in terms of the ladder: a set the paper's table
        // cannot hold gets a larger one, an explicit size never grows.
        let m = Maglev::new();
        assert_eq!(m.table_size_for(100_000), Ok(16_777_213));
        assert_eq!(m.table_size_for(1 << 24).map_err(|_| ()), Err(()));
        let explicit = Maglev::with_table_size(Maglev::DEFAULT_TABLE_SIZE).unwrap();
        assert!(explicit.table_size_for(100_000).is_err());
        let t = Maglev::new().prepare(&valid(&backends(65_538))).unwrap();
        assert_eq!(Ok(t.size), m.table_size_for(65_538));
    }

    #[test]
    fn a_table_smaller_than_the_set_is_rejected() {
        let reason = strategy_error(
            Maglev::with_table_size(7)
                .unwrap()
                .prepare(&valid(&backends(8))),
        );
        assert!(
            reason.contains("table_size 7") && reason.contains("8 backends"),
            "{reason}"
        );
        assert!(Maglev::with_table_size(7)
            .unwrap()
            .prepare(&valid(&backends(7)))
            .is_ok());
    }

    #[test]
    fn a_load_factor_below_one_is_rejected_at_prepare() {
        let reason = strategy_error(
            Maglev::new()
                .bounded_load(0.5)
                .prepare(&valid(&backends(3))),
        );
        assert!(reason.contains("bounded_load"), "{reason}");
    }

    #[test]
    fn the_default_table_grows_along_the_ladder_with_100_slots_per_backend() {
        let m = Maglev::new();
        for (n, want) in [
            (1, 65_537),
            (655, 65_537),
            (656, 131_071),
            (1_000, 131_071),
            (10_000, 1_048_573),
            (83_885, 8_388_593),
            (83_886, 16_777_213),
            (16_777_213, 16_777_213),
        ] {
            assert_eq!(m.table_size_for(n), Ok(want), "{n} backends");
        }
        let reason = strategy_error(m.table_size_for(16_777_214));
        assert!(reason.contains("16777214 backends"), "{reason}");
        // A fixed size stays fixed.
        let fixed = Maglev::with_table_size(1009).unwrap();
        assert_eq!(fixed.table_size_for(5), Ok(1009));
        assert_eq!(fixed.table_size_for(10_000).map_err(|_| ()), Err(()));
    }

    #[test]
    fn the_ladder_is_the_largest_prime_below_each_power_of_two() {
        assert_eq!(Maglev::TABLE_SIZES[0], Maglev::DEFAULT_TABLE_SIZE);
        for (k, &m) in (17..=24).zip(&Maglev::TABLE_SIZES[1..]) {
            assert!(is_prime(m) && m < 1 << k, "{m}");
            assert!(((m + 1)..(1 << k)).all(|x| !is_prime(x)), "{m}");
            assert!(Maglev::with_table_size(m).is_ok());
        }
    }

    #[test]
    fn more_than_65537_backends_are_served_by_a_grown_table() {
        let set = backends(70_000);
        let t = Maglev::new().prepare(&valid(&set)).unwrap();
        assert_eq!(t.size, 8_388_593);
        assert!(matches!(t.slots, Slots::Wide(_)));
        let counts = t.counts(set.len());
        assert!(
            counts.iter().all(|&c| c == 119 || c == 120),
            "{:?}",
            counts.iter().min()
        );
    }

    // === Filling ===

    #[test]
    fn the_papers_worked_example_fills_as_worked_by_hand() {
        // Eisenbud et al. §3.4: M = 7, B0 (offset 3, skip 4), B1 (0, 2), B2 (3, 1). Their
        // preference lists are 3 0 4 1 5 2 6 / 0 2 4 6 1 3 5 / 3 4 5 6 0 1 2; taking turns:
        // B0→3 B1→0 B2→4 | B0→1 B1→2 B2→5 | B0→6.
        let perms = [(3, 4), (0, 2), (3, 1)];
        assert_eq!(
            populate(&perms_of(&perms), &[1, 1, 1], 7),
            [1, 0, 1, 0, 2, 2, 0]
        );
        // Without B1: B0→3 B2→4 | B0→0 B2→5 | B0→1 B2→6 | B0→2.
        let perms = [(3, 4), (3, 1)];
        assert_eq!(
            populate(&perms_of(&perms), &[1, 1], 7),
            [0, 0, 0, 0, 1, 1, 1]
        );
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]

        #[test]
        fn tables_match_a_direct_transcription_of_the_paper(
            m in prop::sample::select(vec![7u32, 13, 31, 101, 257, 1009]),
            seeds in proptest::collection::vec((any::<u32>(), any::<u32>(), 1u32..6), 1..12),
            equal in any::<bool>(),
        ) {
            let n = seeds.len().min(m as usize);
            let pairs: Vec<(u32, u32)> = seeds[..n]
                .iter()
                .map(|&(o, s, _)| (o % m, s % (m - 1) + 1))
                .collect();
            let weights: Vec<u32> = seeds[..n].iter().map(|&(_, _, w)| if equal { 1 } else { w }).collect();
            prop_assert_eq!(
                populate(&perms_of(&pairs), &weights, m),
                reference_populate(&pairs, &weights, m)
            );
        }
    }

    #[test]
    fn equal_backends_get_equal_shares_to_within_one_slot() {
        let t = table(Maglev::DEFAULT_TABLE_SIZE, &backends(100));
        // 65 537 = 655 · 100 + 37: every backend gets 655 or 656 slots.
        for c in t.counts(100) {
            assert!(c == 655 || c == 656, "{c}");
        }
    }

    #[test]
    fn each_backends_share_is_its_weights_share() {
        let weights = [1u32, 2, 3, 4, 5, 10, 25];
        let set: Vec<Backend> = weights
            .iter()
            .enumerate()
            .map(|(i, &w)| Backend::new(format!("10.0.0.{i}:80")).weight(w))
            .collect();
        let t = table(Maglev::DEFAULT_TABLE_SIZE, &set);
        let total: u32 = weights.iter().sum();
        for (c, &w) in t.counts(weights.len()).into_iter().zip(&weights) {
            let share = f64::from(w) / f64::from(total);
            let got = c as f64 / f64::from(Maglev::DEFAULT_TABLE_SIZE);
            assert!(
                (got - share).abs() / share < 0.01,
                "weight {w}: {got} vs {share}"
            );
        }
    }

    #[test]
    fn slots_are_two_bytes_up_to_65536_backends_and_four_beyond() {
        let t = table(65_537, &backends(65_536));
        assert!(matches!(t.slots, Slots::Narrow(_)));
        // Equal weights and M ≥ n: the first round gives every backend a slot, the last included.
        assert!(t.counts(65_536).iter().all(|&c| c >= 1));
        let t = table(65_537, &backends(65_537));
        assert!(matches!(t.slots, Slots::Wide(_)));
        assert!(t.counts(65_537).iter().all(|&c| c == 1));
    }

    // === Consistency ===

    /// The fraction of slots whose backend changes when backend `removed` of `n` leaves.
    fn moved_fraction(n: usize, removed: usize) -> f64 {
        let set = backends(n);
        let mut rest = set.clone();
        rest.remove(removed);
        let m = Maglev::DEFAULT_TABLE_SIZE;
        let (before, after) = (table(m, &set), table(m, &rest));
        let moved = (0..m as usize)
            .filter(|&s| set[before.get(s)].id() != rest[after.get(s)].id())
            .count();
        moved as f64 / f64::from(m)
    }

    #[test]
    fn removing_one_of_n_backends_moves_about_one_nth_of_the_keys() {
        for (n, removed) in [(5, 2), (10, 0), (10, 9), (50, 17), (100, 42)] {
            let moved = moved_fraction(n, removed);
            let own = 1.0 / n as f64;
            println!(
                "maglev: removing 1 of {n} backends moves {moved:.4} of the keys (1/n = {own:.4})"
            );
            assert!(
                moved >= own * 0.95 && moved <= 2.0 * own,
                "n = {n}: {moved}"
            );
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(16))]

        #[test]
        fn removing_a_backend_moves_at_most_twice_its_share(n in 3usize..60, removed in any::<prop::sample::Index>()) {
            let moved = moved_fraction(n, removed.index(n));
            prop_assert!(moved <= 2.0 / n as f64, "n = {}: {}", n, moved);
        }
    }

    /// The paper's Pseudocode 1 for equal weights, with each permutation computed as it is read
    /// rather than materialised, so that it runs at 10 000 backends and a million slots.
    fn paper_populate(perms: &[Permutation], m: u32) -> Vec<u32> {
        let m = m as usize;
        let slot = |p: &Permutation, j: usize| (p.offset as usize + j * p.skip as usize) % m;
        let mut next = vec![0usize; perms.len()];
        let mut entry = vec![u32::MAX; m];
        let mut filled = 0;
        loop {
            for (i, p) in perms.iter().enumerate() {
                let mut c = slot(p, next[i]);
                while entry[c] != u32::MAX {
                    next[i] += 1;
                    c = slot(p, next[i]);
                }
                entry[c] = i as u32;
                next[i] += 1;
                filled += 1;
                if filled == m {
                    return entry;
                }
            }
        }
    }

    /// Max over backends of (share of slots) / (share of weight).
    fn skew(t: &Table, weights: &[u32]) -> f64 {
        let total: u32 = weights.iter().sum();
        t.counts(weights.len())
            .iter()
            .zip(weights)
            .map(|(&c, &w)| (c as f64 / f64::from(t.size)) / (f64::from(w) / f64::from(total)))
            .fold(0.0, f64::max)
    }

    /// Movement on one removal and load skew at the sizes users run, with the default (grown)
    /// table: the figures `docs/MANY_INSTANCES.md` quotes. Ketama's are printed by its own test.
    #[test]
    fn grown_tables_keep_skew_within_five_percent_and_move_no_more_than_the_paper() {
        for n in [10, 100, 1_000, 10_000] {
            let set = backends(n);
            let m = Maglev::new().table_size_for(n).unwrap();
            let equal = Maglev::new().prepare(&valid(&set)).unwrap();
            let weights: Vec<u32> = (0..n as u32).map(|i| 1 + i % 4).collect();
            let weighted_set: Vec<Backend> = set
                .iter()
                .zip(&weights)
                .map(|(b, &w)| b.clone().weight(w))
                .collect();
            let weighted = Maglev::new().prepare(&valid(&weighted_set)).unwrap();
            let (equal_skew, weighted_skew) =
                (skew(&equal, &vec![1; n]), skew(&weighted, &weights));

            let removed = n / 2;
            let mut rest = set.clone();
            rest.remove(removed);
            assert_eq!(Maglev::new().table_size_for(n - 1), Ok(m));
            let after = Maglev::new().prepare(&valid(&rest)).unwrap();
            let moved = (0..m as usize)
                .filter(|&s| set[equal.get(s)].id() != rest[after.get(s)].id())
                .count() as f64
                / f64::from(m);
            let perms = |set: &[Backend]| -> Vec<Permutation> {
                set.iter().map(|b| Permutation::of(b.id(), m)).collect()
            };
            let (pb, pa) = (
                paper_populate(&perms(&set), m),
                paper_populate(&perms(&rest), m),
            );
            let paper = pb
                .iter()
                .zip(&pa)
                .filter(|&(&b, &a)| set[b as usize].id() != rest[a as usize].id())
                .count() as f64
                / f64::from(m);
            let nf = n as f64;
            println!(
                "maglev n={n:>6} M={m:>9}: skew {equal_skew:.4} (weights 1-4: {weighted_skew:.4}), \
                 one removal moves {:.2}/n (paper's algorithm at this M: {:.2}/n)",
                moved * nf,
                paper * nf
            );
            assert!(equal_skew <= 1.05 && weighted_skew <= 1.05, "n = {n}");
            assert!(moved <= paper, "n = {n}: {moved} > {paper}");
            assert!(moved >= 1.0 / nf * 0.95, "n = {n}: {moved}");
        }
    }

    /// Stability contract. These are this implementation's own answers, pinned: every divvy
    /// instance, on every CPU and in every version, must route these keys to these backends, so
    /// that independent balancers agree and an upgrade moves no key. A change here breaks every
    /// user's routing (and cache hit rate) at once: treat it as a breaking release, never as a
    /// test to update. What the values themselves rest on is checked independently above: the
    /// filling against the paper, XXH3 against its reference vectors in `hash`.
    #[test]
    fn golden_keys_map_to_the_same_backends_forever() {
        let set: Vec<Backend> = [
            "10.0.0.1:80",
            "10.0.0.2:80",
            "10.0.0.3:80",
            "10.0.0.4:80",
            "10.0.0.5:80",
        ]
        .map(Backend::new)
        .to_vec();
        let lb = Balancer::new(Maglev::new(), set).unwrap();
        let got: Vec<String> = (0..24)
            .map(|i| pick_id(&lb, format!("user-{i}").as_bytes()))
            .collect();
        let got: Vec<&str> = got.iter().map(|s| &s[7..8]).collect();
        assert_eq!(got.concat(), GOLDEN);
    }

    /// The last digit of the backend `user-0` … `user-23` map to.
    const GOLDEN: &str = "553222155113444121512221";

    // === Picks ===

    #[test]
    fn an_unavailable_backends_keys_spread_and_come_back() {
        let set = backends(5);
        let lb = Balancer::new(Maglev::new(), set.clone()).unwrap();
        let keys: Vec<String> = (0..5_000).map(|i| format!("session-{i}")).collect();
        let before: Vec<String> = keys.iter().map(|k| pick_id(&lb, k.as_bytes())).collect();
        lb.set_admin_state(set[2].id(), Some(AdminState::Down))
            .unwrap();
        let mut landed: HashMap<String, usize> = HashMap::new();
        for (k, was) in keys.iter().zip(&before) {
            let now = pick_id(&lb, k.as_bytes());
            if was == set[2].id() {
                assert_ne!(now, set[2].id());
                *landed.entry(now).or_default() += 1;
            } else {
                assert_eq!(&now, was, "{k} moved although its backend is up");
            }
        }
        // The rehash sequence spreads them over all four others.
        assert_eq!(landed.len(), 4, "{landed:?}");
        lb.set_admin_state(set[2].id(), None).unwrap();
        for (k, was) in keys.iter().zip(&before) {
            assert_eq!(&pick_id(&lb, k.as_bytes()), was);
        }
    }

    #[test]
    fn keys_find_the_last_available_backend() {
        let set = backends(20);
        let lb = Balancer::new(Maglev::new(), set.clone()).unwrap();
        for b in &set[1..] {
            lb.set_admin_state(b.id(), Some(AdminState::Down)).unwrap();
        }
        for i in 0..500 {
            assert_eq!(pick_id(&lb, format!("k{i}").as_bytes()), set[0].id());
        }
    }

    #[test]
    fn requests_without_a_key_go_round_the_table_in_proportion_to_weight() {
        let set: Vec<Backend> = (0..4)
            .map(|i| Backend::new(format!("10.0.0.{i}:80")).weight(i + 1))
            .collect();
        let m = 1009;
        let lb = Balancer::new(Maglev::with_table_size(m).unwrap(), set.clone()).unwrap();
        let expect = table(m, &set).counts(4);
        let mut counts = vec![0; 4];
        for i in 0..m {
            let ctx = if i % 2 == 0 {
                Context::new()
            } else {
                Context::new().key(b"")
            };
            let id = lb.pick(&ctx).unwrap().id().to_owned();
            counts[set.iter().position(|b| b.id() == id).unwrap()] += 1;
        }
        assert_eq!(counts, expect);
    }
}
