//! The thread-local snapshot cache behind [`Balancer::pick`](crate::Balancer::pick).
//!
//! Loading the current snapshot from an `ArcSwap` protects it against a concurrent swap, which
//! costs a few atomic operations per pick; a [`Picker`](crate::Picker) avoids them by owning a
//! reference to the snapshot and checking one word for a newer one. This cache gives
//! `Balancer::pick` the same: each thread keeps strong references to the last few snapshots it
//! picked from, each under the snapshot's process-unique id, and a pick whose balancer still
//! publishes that id uses the cached reference.
//!
//! What it keeps alive: at most [`SLOTS`] snapshots per thread. A thread's entry for a balancer
//! is replaced when that thread next picks from it after an update, cleared on that thread by an
//! update or the balancer's drop, and otherwise lives until the thread picks from [`SLOTS`] other
//! balancers or exits. So a set replaced by an update (and the state of backends it removed)
//! can outlive the update on a thread that never picks again: bounded, never forever while the
//! thread works.

use std::any::Any;
use std::cell::RefCell;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Arc;

/// Snapshots each thread keeps: enough for a service that picks from a few balancers in turn.
pub(crate) const SLOTS: usize = 4;

static NEXT_ID: AtomicU64 = AtomicU64::new(1);

/// A new process-unique snapshot id (never 0, which marks an empty slot).
pub(crate) fn next_id() -> u64 {
    NEXT_ID.fetch_add(1, Relaxed)
}

type Shared = Arc<dyn Any + Send + Sync>;

#[derive(Default)]
struct Slot {
    /// The balancer's address, only to choose which slot an update replaces: ids, not
    /// addresses, decide a hit, so a new balancer at a freed one's address never sees its sets.
    owner: usize,
    id: u64,
    snapshot: Option<Shared>,
}

#[derive(Default)]
struct Slots {
    slots: [Slot; SLOTS],
    /// The slot the next balancer new to this thread takes.
    victim: usize,
}

thread_local! {
    static CACHE: RefCell<Slots> = RefCell::new(Slots::default());
}

/// Calls `f` with this thread's cached snapshot `id`, if it has it, and returns `None`
/// otherwise (or when the cache is unavailable: being torn down with the thread, or borrowed by
/// a pick on this thread that is still running, such as a strategy picking from a balancer).
#[inline]
pub(crate) fn with_cached<T: Any, R>(id: u64, f: impl FnOnce(&T) -> R) -> Option<R> {
    CACHE
        .try_with(|c| {
            let c = c.try_borrow().ok()?;
            let slot = c.slots.iter().find(|s| s.id == id)?;
            let snapshot = slot.snapshot.as_deref()?.downcast_ref::<T>()?;
            Some(f(snapshot))
        })
        .ok()
        .flatten()
}

/// Caches `snapshot` under `id` for `owner` on this thread, replacing `owner`'s previous
/// snapshot (or the oldest other entry). Does nothing when the cache is unavailable.
pub(crate) fn store(owner: usize, id: u64, snapshot: Shared) {
    let old = CACHE.try_with(|c| {
        let mut c = c.try_borrow_mut().ok()?;
        let i = match c.slots.iter().position(|s| s.owner == owner) {
            Some(i) => i,
            None => {
                let i = c.victim;
                c.victim = (i + 1) % SLOTS;
                i
            }
        };
        let slot = &mut c.slots[i];
        slot.owner = owner;
        slot.id = id;
        slot.snapshot.replace(snapshot)
    });
    // Dropped after the borrow ends: the last reference to a set may run arbitrary drops.
    drop(old);
}

/// Forgets `owner`'s entry on this thread (after an update or when the balancer goes).
pub(crate) fn forget(owner: usize) {
    let old = CACHE.try_with(|c| {
        let mut c = c.try_borrow_mut().ok()?;
        let slot = c.slots.iter_mut().find(|s| s.owner == owner)?;
        slot.owner = 0;
        slot.id = 0;
        slot.snapshot.take()
    });
    drop(old);
}

#[cfg(test)]
mod tests {
    use crate::strategy::RoundRobin;
    use crate::{Backend, Balancer, Context};

    fn seq<S: crate::Strategy>(lb: &Balancer<S>, n: usize) -> String {
        (0..n)
            .map(|_| lb.pick(&Context::new()).unwrap().id().to_owned())
            .collect()
    }

    #[test]
    fn a_set_replaced_on_another_thread_is_let_go_at_this_threads_next_pick() {
        let lb = Balancer::new(RoundRobin::new(), ["a", "b"].map(Backend::new)).unwrap();
        assert_eq!(seq(&lb, 2), "ab");
        let old_alive = lb.watch_current();
        std::thread::scope(|s| {
            s.spawn(|| lb.update([Backend::new("c")]).unwrap());
        });
        // Only this thread's cache holds the replaced set now.
        assert!(old_alive());
        assert_eq!(seq(&lb, 2), "cc");
        assert!(!old_alive());
    }

    #[test]
    fn an_update_lets_go_of_the_replaced_set_on_its_own_thread_at_once() {
        let lb = Balancer::new(RoundRobin::new(), ["a", "b"].map(Backend::new)).unwrap();
        assert_eq!(seq(&lb, 1), "a");
        let old_alive = lb.watch_current();
        lb.update([Backend::new("c")]).unwrap();
        assert!(!old_alive());
    }

    #[test]
    fn a_dropped_balancer_leaves_nothing_in_this_threads_cache() {
        let lb = Balancer::new(RoundRobin::new(), ["a", "b"].map(Backend::new)).unwrap();
        assert_eq!(seq(&lb, 1), "a");
        let alive = lb.watch_current();
        drop(lb);
        assert!(!alive());
    }

    #[test]
    fn balancers_picked_in_turn_on_one_thread_never_mix() {
        // More balancers than slots, of one type, so entries are evicted and reloaded.
        let lbs: Vec<_> = (0..super::SLOTS + 2)
            .map(|k| {
                Balancer::new(
                    RoundRobin::new(),
                    ["x", "y", "z"].map(|id| Backend::new(format!("{k}{id}"))),
                )
                .unwrap()
            })
            .collect();
        for round in 0..6 {
            for (k, lb) in lbs.iter().enumerate() {
                let id = ["x", "y", "z"][round % 3];
                assert_eq!(lb.pick(&Context::new()).unwrap().id(), format!("{k}{id}"));
            }
        }
    }

    #[test]
    fn a_balancer_built_where_a_dropped_one_lived_sees_only_its_own_set() {
        // Few rounds under miri, where each thread spawn is slow.
        for k in 0..if cfg!(miri) { 3 } else { 50 } {
            let lb = Balancer::new(RoundRobin::new(), [Backend::new(format!("b{k}"))]).unwrap();
            assert_eq!(lb.pick(&Context::new()).unwrap().id(), format!("b{k}"));
            // Dropped on another thread, so this thread's cache keeps the set under the freed
            // address the next balancer is likely to get.
            std::thread::scope(|s| {
                s.spawn(move || drop(lb));
            });
        }
    }
}
