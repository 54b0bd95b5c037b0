//! Plain round robin.

use std::sync::atomic::{AtomicUsize, Ordering::Relaxed};

use crate::context::Context;
use crate::error::UpdateError;
use crate::set::BackendSet;
use crate::shard::{slot, Padded, SHARDS};
use crate::strategy::{scan_from, Strategy};
use crate::view::View;

/// Each backend in turn, ignoring weights. An unavailable backend's turn passes to the next turn,
/// so the rotation stays even over the backends that are left (its load is not dumped on its
/// neighbour), and over `n` consecutive picks with a stable set every available backend is chosen.
///
/// Cost: O(1), with no write another thread reads except one atomic add per chunk of about 64
/// turns (see [`Cursor`] for how threads share the rotation); up to 8 more turns while backends
/// are unavailable, then an O(n) scan.
#[derive(Clone, Copy, Debug, Default)]
pub struct RoundRobin;

impl RoundRobin {
    /// Round robin.
    pub const fn new() -> Self {
        RoundRobin
    }
}

/// The round-robin state of a backend set. Turns are handed out from one shared counter in
/// chunks, and each thread (each [shard](crate::shard)) takes the turns of its chunk one by one
/// without writing anything another thread reads: the shared counter is written once a chunk,
/// not once a pick.
///
/// One thread alone takes consecutive chunks, so its sequence is exactly one global cursor's
/// (nginx's). Threads picking at once each walk their own chunk, as nginx's worker processes
/// each keep their own round-robin state: the interleaved sequence is no longer one rotation,
/// but every chunk is whole rotations plus one turn, so each thread's picks stay even over the
/// backends, and chunks taken one after another start one backend further on (threads that
/// pick once each still spread over the set). A thread that stops picking leaves the rest of
/// its chunk unused.
#[derive(Debug, Default)]
pub struct Cursor {
    /// Turns handed out so far, in chunks.
    handed_out: Padded<AtomicUsize>,
    shards: Box<[Padded<Turns>; SHARDS]>,
}

/// One shard's place in its chunk. Only its thread writes it; threads beyond [`SHARDS`] that
/// share a shard may race on it, which can repeat or skip a turn but never yields an index out
/// of range.
#[derive(Debug, Default)]
struct Turns {
    /// The backend index of the next turn.
    index: AtomicUsize,
    /// Turns left in the chunk.
    left: AtomicUsize,
}

/// Turns per chunk for `n` backends: enough whole rotations to reach 64 turns, plus one.
/// Whole rotations keep a thread's share even; the extra turn makes consecutive chunks start one
/// backend apart instead of all at the first.
#[inline]
fn chunk_len(n: usize) -> usize {
    n * 64usize.div_ceil(n) + 1
}

impl Cursor {
    /// The backend index of this thread's next turn, for a view of `n > 0` backends.
    #[inline]
    fn take(&self, t: &Turns, n: usize) -> usize {
        let left = t.left.load(Relaxed);
        if left == 0 {
            return self.refill(t, n);
        }
        let mut i = t.index.load(Relaxed);
        if i >= n {
            // Only when one prepared set serves views of different lengths.
            i %= n;
        }
        t.left.store(left - 1, Relaxed);
        t.index.store(if i + 1 == n { 0 } else { i + 1 }, Relaxed);
        i
    }

    /// Takes the next chunk from the shared counter and returns its first turn.
    #[inline(never)]
    fn refill(&self, t: &Turns, n: usize) -> usize {
        let len = chunk_len(n);
        let i = self.handed_out.fetch_add(len, Relaxed) % n;
        t.left.store(len - 1, Relaxed);
        t.index.store(if i + 1 == n { 0 } else { i + 1 }, Relaxed);
        i
    }
}

impl Strategy for RoundRobin {
    type Prepared = Cursor;

    fn name(&self) -> &'static str {
        "round_robin"
    }

    fn prepare(&self, _backends: &BackendSet<'_>) -> Result<Cursor, UpdateError> {
        Ok(Cursor::default())
    }

    #[inline]
    fn pick(&self, cursor: &Cursor, _ctx: &Context<'_>, view: &View<'_>) -> Option<usize> {
        let n = view.len();
        if n == 0 {
            return None;
        }
        let turns = &cursor.shards[slot()];
        // An unavailable backend's turn is skipped by taking the next turn, not by scanning to
        // its neighbour: a scan would hand every skipped turn to the same next backend and
        // double its load, while taking turns keeps the rotation even over the backends that
        // are left.
        for _ in 0..n.min(8) {
            let i = cursor.take(turns, n);
            if view.is_available(i) {
                return Some(i);
            }
        }
        // Many unavailable: one scan from the next turn bounds the cost at O(n).
        scan_from(view, cursor.take(turns, n))
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;
    use crate::backend::Backend;
    use crate::{AdminState, Balancer};

    fn ids(n: usize) -> Vec<String> {
        (0..n).map(|i| format!("10.0.0.{i}:80")).collect()
    }

    #[test]
    fn backends_are_visited_in_configuration_order_ignoring_weights() {
        let lb = Balancer::new(
            RoundRobin::new(),
            [
                Backend::new("a").weight(9),
                Backend::new("b"),
                Backend::new("c"),
            ],
        )
        .unwrap();
        let seq: String = (0..6)
            .map(|_| lb.pick(&Context::new()).unwrap().id().to_owned())
            .collect();
        assert_eq!(seq, "abcabc");
    }

    #[test]
    fn an_unavailable_backends_turn_passes_to_the_next_turn() {
        let lb = Balancer::new(RoundRobin::new(), ["a", "b", "c"].map(Backend::new)).unwrap();
        lb.set_admin_state("b", Some(AdminState::Down)).unwrap();
        let seq: String = (0..6)
            .map(|_| lb.pick(&Context::new()).unwrap().id().to_owned())
            .collect();
        // b's turn passes to the next turn: the rotation stays even over a and c, rather than
        // c taking both its own turns and b's.
        assert_eq!(seq, "acacac");
    }

    #[test]
    fn one_thread_follows_one_rotation_across_chunk_boundaries() {
        let lb = Balancer::new(RoundRobin::new(), ["a", "b", "c"].map(Backend::new)).unwrap();
        // Several chunks of `chunk_len(3)` = 67 turns.
        let seq: String = (0..300)
            .map(|_| lb.pick(&Context::new()).unwrap().id().to_owned())
            .collect();
        assert_eq!(seq, "abc".repeat(100));
    }

    #[test]
    fn a_chunk_is_whole_rotations_plus_one_turn() {
        for n in [1, 2, 3, 16, 63, 64, 65, 1_000] {
            let len = chunk_len(n);
            assert_eq!(len % n, 1 % n, "n = {n}");
            assert!(len > 64.min(n), "n = {n}");
        }
    }

    #[test]
    fn threads_that_pick_once_each_still_spread_over_the_set() {
        let lb = Balancer::new(RoundRobin::new(), ["a", "b", "c", "d"].map(Backend::new)).unwrap();
        let mut seen = std::collections::BTreeSet::new();
        for _ in 0..16 {
            let id = std::thread::scope(|s| {
                s.spawn(|| lb.pick(&Context::new()).unwrap().id().to_owned())
                    .join()
                    .unwrap()
            });
            seen.insert(id);
        }
        // Each new thread starts a chunk one backend further on (or continues a chunk another
        // thread left): a rotation that restarted per thread would send all sixteen to "a".
        assert!(seen.len() > 1, "{seen:?}");
    }

    proptest! {
        #[test]
        fn n_picks_visit_every_available_backend_and_never_an_unavailable_one(
            n in 1usize..24,
            down in proptest::collection::vec(any::<bool>(), 24),
            start in 0usize..50,
        ) {
            let names = ids(n);
            let lb = Balancer::new(RoundRobin::new(), names.iter().map(|s| Backend::new(s.as_str()))).unwrap();
            for _ in 0..start {
                drop(lb.pick(&Context::new()));
            }
            for (i, name) in names.iter().enumerate() {
                if down[i] {
                    lb.set_admin_state(name, Some(AdminState::Down)).unwrap();
                }
            }
            let up: Vec<&String> = names.iter().enumerate().filter(|(i, _)| !down[*i]).map(|(_, s)| s).collect();
            let mut seen = std::collections::BTreeSet::new();
            for _ in 0..n {
                match lb.pick(&Context::new()) {
                    Ok(p) => {
                        prop_assert!(up.iter().any(|s| s.as_str() == p.id()));
                        seen.insert(p.id().to_owned());
                    }
                    Err(_) => prop_assert!(up.is_empty()),
                }
            }
            prop_assert_eq!(seen.len(), up.len());
        }
    }
}
