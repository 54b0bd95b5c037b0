//! Per-thread shards of state that every pick writes, so that two threads picking from one
//! balancer do not make every pick write the same cache line.
//!
//! A thread gets a small number, its [`slot`], the first time it asks; state that every pick
//! would otherwise write in one shared word is split into [`SHARDS`] cache-line-padded copies,
//! and a thread writes the copy of its slot. Threads are numbered in the order they first pick,
//! so up to [`SHARDS`] threads never share a copy; beyond that two threads may, which costs
//! speed, never correctness (every user of a shard stays correct when another thread races it).

use std::cell::Cell;
use std::ops::Deref;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering::Relaxed};

/// How many copies sharded state keeps: a power of two at least the core count of the machines
/// divvy usually runs on, small enough that summing them stays a few loads.
pub(crate) const SHARDS: usize = 16;

/// Aligned to 128 bytes, not 64: x86 prefetches cache lines in pairs, so neighbours 64 bytes
/// apart still contend (the width crossbeam's `CachePadded` uses on x86-64 and aarch64).
#[repr(align(128))]
#[derive(Debug, Default)]
pub(crate) struct Padded<T>(pub(crate) T);

impl<T> Deref for Padded<T> {
    type Target = T;

    #[inline]
    fn deref(&self) -> &T {
        &self.0
    }
}

static NEXT_THREAD: AtomicUsize = AtomicUsize::new(0);

thread_local! {
    // `const` and without a destructor: reading it is one thread-pointer-relative load.
    static SLOT: Cell<usize> = const { Cell::new(usize::MAX) };
}

/// This thread's shard number, in `0..SHARDS`.
#[inline]
pub(crate) fn slot() -> usize {
    // `try_with` fails only while the thread's locals are being destroyed (a guard dropped by
    // another thread-local's destructor): any shard is correct then.
    SLOT.try_with(|s| {
        let v = s.get();
        if v != usize::MAX {
            return v;
        }
        let v = NEXT_THREAD.fetch_add(1, Relaxed) % SHARDS;
        s.set(v);
        v
    })
    .unwrap_or(0)
}

/// A counter that many threads add to and subtract from, and that is read as a sum: each thread
/// writes only its own shard. A request may end on another thread than the one it began on, so
/// one shard may wrap below zero; the wrapping sum of all of them is still the exact count.
#[derive(Debug, Default)]
pub(crate) struct ShardedCounter {
    shards: [Padded<AtomicU64>; SHARDS],
}

impl ShardedCounter {
    /// Adds one on this thread's shard.
    #[inline]
    pub(crate) fn increment(&self) {
        self.shards[slot()].fetch_add(1, Relaxed);
    }

    /// Subtracts one on this thread's shard.
    #[inline]
    pub(crate) fn decrement(&self) {
        self.shards[slot()].fetch_sub(1, Relaxed);
    }

    /// The sum of every shard. Each load is atomic but the sum is not one snapshot: while other
    /// threads add and subtract it may be off by the requests that began or ended during the
    /// read, the same slack a single counter read a moment earlier or later would have; a
    /// transient sum below zero (an end counted before its begin) reads as 0.
    #[inline]
    pub(crate) fn sum(&self) -> u64 {
        let s = self
            .shards
            .iter()
            .fold(0u64, |acc, s| acc.wrapping_add(s.load(Relaxed)));
        if s > u64::MAX / 2 {
            0
        } else {
            s
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_threads_slot_is_stable_and_in_range() {
        let a = slot();
        assert!(a < SHARDS);
        assert_eq!(slot(), a);
    }

    #[test]
    fn the_sum_is_exact_when_requests_end_on_other_threads() {
        let c = ShardedCounter::default();
        for _ in 0..5 {
            c.increment();
        }
        std::thread::scope(|s| {
            for _ in 0..3 {
                s.spawn(|| c.decrement());
            }
        });
        assert_eq!(c.sum(), 2);
        std::thread::scope(|s| {
            s.spawn(|| {
                c.decrement();
                c.decrement();
            });
        });
        assert_eq!(c.sum(), 0);
    }

    #[test]
    fn a_sum_caught_between_an_end_and_its_begin_reads_as_zero() {
        let c = ShardedCounter::default();
        c.decrement();
        assert_eq!(c.sum(), 0);
        c.increment();
        assert_eq!(c.sum(), 0);
        c.increment();
        assert_eq!(c.sum(), 1);
    }
}

/// A turn counter for schedules: every call returns a turn number, each thread walking a chunk
/// of consecutive turns it took from one shared counter, so the shared counter is written once
/// a chunk instead of once a turn.
///
/// One thread alone gets 0, 1, 2, … exactly as from one shared counter. Threads taking turns at
/// once each get consecutive runs from their own chunks; every turn is handed out at most once
/// (unless threads beyond [`SHARDS`] race on one shard, which can repeat or skip a turn), and a
/// thread that stops leaves the rest of its chunk unused.
#[derive(Debug, Default)]
pub(crate) struct ChunkedTurns {
    handed_out: Padded<AtomicU64>,
    shards: Box<[Padded<Span>; SHARDS]>,
}

/// The turns a shard has left: `next..end`.
#[derive(Debug, Default)]
struct Span {
    next: AtomicU64,
    end: AtomicU64,
}

impl ChunkedTurns {
    /// The next turn of this thread, taking `chunk > 0` more from the shared counter when its
    /// chunk is used up.
    #[inline]
    pub(crate) fn take(&self, chunk: u64) -> u64 {
        let s = &self.shards[slot()];
        let next = s.next.load(Relaxed);
        if next < s.end.load(Relaxed) {
            s.next.store(next + 1, Relaxed);
            return next;
        }
        self.refill(s, chunk)
    }

    #[inline(never)]
    fn refill(&self, s: &Span, chunk: u64) -> u64 {
        let start = self.handed_out.fetch_add(chunk, Relaxed);
        s.end.store(start.wrapping_add(chunk), Relaxed);
        s.next.store(start.wrapping_add(1), Relaxed);
        start
    }
}
