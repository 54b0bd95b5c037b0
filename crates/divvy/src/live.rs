//! Per-backend live state: in-flight count, outcome counters, latency EWMA and health flags.
//!
//! One `Live` exists per backend identity and survives snapshot updates for backends that stay.
//! Everything a pick reads is an atomic load; writes that need more than one word go through the
//! per-backend mutex in [`health`](crate::health), off the pick path.

use std::fmt;
use std::ops::Deref;
use std::ptr::NonNull;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::atomic::{fence, AtomicBool, AtomicU32, AtomicU64, AtomicU8, AtomicUsize, Ordering};
use std::sync::Arc;

use arc_swap::ArcSwap;
use parking_lot::Mutex;

use crate::backend::{AdminState, Backend};
use crate::health::{Machine, Registry};
use crate::shard::Padded;

/// `load` packs, from the low bits up: the requests in flight (23 bits), a `HELD` bit set while
/// any snapshot or the identity map holds the backend, and the number of picks (40 bits). A pick
/// costs one atomic add for its in-flight count and its pick count, and the same word is the
/// allocation's reference count: it is freed when no holder is left and nothing is in flight, so
/// a [`Pick`](crate::Pick) needs no reference count of its own.
pub(crate) const IN_FLIGHT_MASK: u64 = (1 << 23) - 1;
const HELD: u64 = 1 << 23;
const LIFE_MASK: u64 = (1 << 24) - 1;
const PICKS_SHIFT: u32 = 24;
pub(crate) const PICK_ONE: u64 = 1 | (1 << PICKS_SHIFT);
/// The most requests one backend may have in flight: half the field, so that even 2²² threads
/// racing past the check at once cannot carry into `HELD` (the headroom argument of `Arc`'s
/// `MAX_REFCOUNT`). A pick beyond it is refused rather than corrupting the count.
pub(crate) const IN_FLIGHT_LIMIT: u64 = 1 << 22;

// The last holder or request may free a `Live` on any thread.
const _: fn() = || {
    fn send_sync<T: Send + Sync>() {}
    send_sync::<Live>();
};

/// Flag bits. Zero means "up and healthy": the common case costs one load and one compare.
pub(crate) mod flag {
    /// Operator state is drain.
    pub(crate) const DRAIN: u8 = 1;
    /// Operator state is down.
    pub(crate) const DOWN: u8 = 1 << 1;
    /// Active checks marked the backend failing.
    pub(crate) const FAILING: u8 = 1 << 2;
    /// Passive health ejected the backend until `ejected_until`.
    pub(crate) const EJECTED: u8 = 1 << 3;
    /// nginx accounting has failures on record: a pick must update `checked`.
    pub(crate) const HAS_FAILS: u8 = 1 << 4;
    /// In slow start: effective weight is below the configured weight.
    pub(crate) const SLOW_START: u8 = 1 << 5;
    /// The ejection came from the consecutive-failure rule (counts toward `max_ejection_percent`).
    pub(crate) const OUTLIER: u8 = 1 << 6;

    /// Bits that make a backend unavailable for new, unpinned requests (before time checks).
    pub(crate) const ADMIN: u8 = DRAIN | DOWN;
    /// Bits that make a backend unhealthy.
    pub(crate) const UNHEALTHY: u8 = FAILING | EJECTED;
}

pub(crate) struct Live {
    pub(crate) id: Arc<str>,
    pub(crate) key: u64,
    pub(crate) addr: Option<std::net::SocketAddr>,
    /// The backend as the newest snapshot configures it (weight and the like may change while
    /// the identity stays).
    pub(crate) backend: ArcSwap<Backend>,
    /// On cache lines of its own: every pick and every guard drop writes it, while picks on
    /// other threads read the fields around it (flags, identity, configuration) to choose; on a
    /// shared line each of those reads would miss after every write.
    pub(crate) load: Padded<AtomicU64>,
    /// Holders: the identity map and every snapshot that lists the backend ([`LiveRef`]s).
    holders: AtomicUsize,
    pub(crate) successes: AtomicU64,
    pub(crate) failures: AtomicU64,
    pub(crate) flags: AtomicU8,
    /// Nanoseconds (clock time) until which an ejected backend is skipped.
    pub(crate) ejected_until: AtomicU64,
    /// Nanoseconds (clock time) when slow start began.
    pub(crate) slow_start_from: AtomicU64,
    pub(crate) consecutive_failures: AtomicU32,
    /// f64 bits of the latency EWMA in nanoseconds; 0 = no sample yet.
    pub(crate) ewma_bits: AtomicU64,
    pub(crate) ewma_stamp: AtomicU64,
    /// Operator override (`AdminState::to_u8`) or `NO_OVERRIDE`.
    pub(crate) admin_override: AtomicU8,
    /// The configured operator state of the current snapshot.
    pub(crate) admin_config: AtomicU8,
    pub(crate) tier: AtomicU8,
    pub(crate) in_set: AtomicBool,
    pub(crate) machine: Mutex<Machine>,
    pub(crate) registry: Arc<Registry>,
}

pub(crate) const NO_OVERRIDE: u8 = u8::MAX;

impl Live {
    /// A new backend's state, with one holder.
    pub(crate) fn create(backend: &Backend, registry: Arc<Registry>) -> LiveRef {
        let live = Box::new(Live {
            id: backend.id_arc().clone(),
            key: backend.key(),
            addr: backend.addr(),
            backend: ArcSwap::from_pointee(backend.clone()),
            load: Padded(AtomicU64::new(HELD)),
            holders: AtomicUsize::new(1),
            successes: AtomicU64::new(0),
            failures: AtomicU64::new(0),
            flags: AtomicU8::new(0),
            ejected_until: AtomicU64::new(0),
            slow_start_from: AtomicU64::new(0),
            consecutive_failures: AtomicU32::new(0),
            ewma_bits: AtomicU64::new(0),
            ewma_stamp: AtomicU64::new(0),
            admin_override: AtomicU8::new(NO_OVERRIDE),
            admin_config: AtomicU8::new(AdminState::Up.to_u8()),
            tier: AtomicU8::new(0),
            in_set: AtomicBool::new(false),
            machine: Mutex::new(Machine::default()),
            registry,
        });
        LiveRef {
            ptr: NonNull::from(Box::leak(live)),
        }
    }

    #[inline]
    pub(crate) fn in_flight(&self) -> u32 {
        (self.load.load(Relaxed) & IN_FLIGHT_MASK) as u32
    }

    pub(crate) fn picks(&self) -> u64 {
        self.load.load(Relaxed) >> PICKS_SHIFT
    }

    /// Releases one unit of `load`'s life field (`HELD` or one request in flight) and frees the
    /// allocation when that was the last.
    ///
    /// # Safety
    /// `this` must point to a live allocation made by [`Live::create`], and the caller must own the
    /// unit it releases, never touching `this` afterwards.
    #[inline]
    unsafe fn release(this: NonNull<Live>, unit: u64) {
        // SAFETY: the caller owns a unit, so the allocation is alive until it is released here.
        let prev = unsafe { this.as_ref() }
            .load
            .fetch_sub(unit, Ordering::Release);
        if prev & LIFE_MASK == unit {
            // The last unit: every other owner's release happened before this point (they
            // were all Release decrements of the same word), as in `Arc`'s drop.
            fence(Ordering::Acquire);
            // SAFETY: no holder and no request in flight is left, and no new one can appear:
            // requests begin only through a holder. The pointer came from `Box::leak`.
            drop(unsafe { Box::from_raw(this.as_ptr()) });
        }
    }

    pub(crate) fn admin(&self) -> AdminState {
        let o = self.admin_override.load(Relaxed);
        if o == NO_OVERRIDE {
            AdminState::from_u8(self.admin_config.load(Relaxed))
        } else {
            AdminState::from_u8(o)
        }
    }

    pub(crate) fn latency_ewma_nanos(&self) -> Option<f64> {
        let bits = self.ewma_bits.load(Relaxed);
        (bits != 0).then(|| f64::from_bits(bits))
    }

    /// Peak-EWMA update (Finagle / linkerd): a sample above the average replaces it at once, so
    /// a slowing backend is noticed immediately; below, the average decays toward it with weight
    /// `exp(-elapsed / decay)` on the old value. Lost updates under a race only drop a sample.
    pub(crate) fn record_latency(&self, nanos: f64, now: u64, decay_nanos: f64) {
        let old = self.ewma_bits.load(Relaxed);
        let next = if old == 0 {
            nanos
        } else {
            let prev = f64::from_bits(old);
            if nanos > prev {
                nanos
            } else {
                let elapsed = now.saturating_sub(self.ewma_stamp.load(Relaxed)) as f64;
                let w = (-elapsed / decay_nanos).exp();
                prev * w + nanos * (1.0 - w)
            }
        };
        // Keep 0 reserved for "no sample".
        self.ewma_bits
            .store(next.max(f64::MIN_POSITIVE).to_bits(), Relaxed);
        self.ewma_stamp.store(now, Relaxed);
    }
}

/// A holder's handle on a [`Live`] (the identity map's, or a snapshot member's): like an `Arc`,
/// counted in `holders`; the last holder gives up the `HELD` unit of `load`.
pub(crate) struct LiveRef {
    ptr: NonNull<Live>,
}

// SAFETY: `Live` is `Send + Sync` (checked at compile time above): `LiveRef` hands out `&Live`
// and its last drop may free the `Live` on any thread.
unsafe impl Send for LiveRef {}
// SAFETY: as above.
unsafe impl Sync for LiveRef {}

impl Clone for LiveRef {
    fn clone(&self) -> Self {
        self.holders.fetch_add(1, Relaxed);
        LiveRef { ptr: self.ptr }
    }
}

impl Drop for LiveRef {
    fn drop(&mut self) {
        if self.holders.fetch_sub(1, Ordering::Release) == 1 {
            fence(Ordering::Acquire);
            // SAFETY: the last holder owns the `HELD` unit and gives it up once.
            unsafe { Live::release(self.ptr, HELD) };
        }
    }
}

impl LiveRef {
    /// Counts a request in flight; the returned handle keeps the state alive until it drops.
    /// `None` when the backend already has `IN_FLIGHT_LIMIT` requests in flight.
    #[inline]
    pub(crate) fn begin(&self) -> Option<InFlight> {
        let prev = self.load.fetch_add(PICK_ONE, Relaxed);
        if prev & IN_FLIGHT_MASK >= IN_FLIGHT_LIMIT {
            return self.refuse();
        }
        // The handle keeps the pointer `Live::create` made (not one derived from `&self`), so the
        // last release may free through it.
        Some(InFlight { ptr: self.ptr })
    }

    #[cold]
    fn refuse(&self) -> Option<InFlight> {
        // Undo the whole add. This holder keeps `HELD` set, so this is never the last unit.
        self.load.fetch_sub(PICK_ONE, Relaxed);
        None
    }
}

impl Deref for LiveRef {
    type Target = Live;

    #[inline]
    fn deref(&self) -> &Live {
        // SAFETY: a holder keeps `HELD` set, so the allocation is alive.
        unsafe { self.ptr.as_ref() }
    }
}

impl fmt::Debug for LiveRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        (**self).fmt(f)
    }
}

/// One request in flight to a [`Live`]: keeps it alive without a reference count of its own.
pub(crate) struct InFlight {
    ptr: NonNull<Live>,
}

// SAFETY: as for `LiveRef`.
unsafe impl Send for InFlight {}
// SAFETY: as for `LiveRef`.
unsafe impl Sync for InFlight {}

impl Drop for InFlight {
    #[inline]
    fn drop(&mut self) {
        // SAFETY: this request's unit was added by `LiveRef::begin` and is released once, here.
        unsafe { Live::release(self.ptr, 1) };
    }
}

impl Deref for InFlight {
    type Target = Live;

    #[inline]
    fn deref(&self) -> &Live {
        // SAFETY: the unit this request holds keeps the allocation alive.
        unsafe { self.ptr.as_ref() }
    }
}

impl std::fmt::Debug for Live {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Live")
            .field("id", &self.id)
            .field("in_flight", &self.in_flight())
            .field("flags", &self.flags.load(Relaxed))
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::Ordering::Relaxed;

    use crate::strategy::RoundRobin;
    use crate::{Backend, Balancer, Context};

    #[test]
    fn a_pick_outlives_its_backends_removal_and_the_balancer() {
        let lb = Balancer::new(RoundRobin::new(), ["a", "b"].map(Backend::new)).unwrap();
        let held = lb.pick(&Context::new()).unwrap();
        let id = held.id().to_owned();
        lb.update([Backend::new("c")]).unwrap();
        assert_eq!(held.in_flight(), 1);
        drop(lb);
        assert_eq!(held.id(), id);
        assert_eq!(held.backend().id(), id);
        held.failure();
    }

    #[test]
    fn the_last_release_frees_whichever_comes_last() {
        let lb = Balancer::new(RoundRobin::new(), [Backend::new("a")]).unwrap();
        let picks: Vec<_> = (0..3).map(|_| lb.pick(&Context::new()).unwrap()).collect();
        let live = lb.live("a").unwrap();
        assert_eq!(live.in_flight(), 3);
        assert_eq!(live.picks(), 3);
        assert_eq!(live.load.load(Relaxed) & super::HELD, super::HELD);
        drop(live);
        drop(lb);
        // Only the picks keep the state alive now; the last one frees it (miri checks).
        let mut picks = picks;
        picks.pop().unwrap().success();
        assert_eq!(picks[0].in_flight(), 2);
        drop(picks);
    }

    #[test]
    #[cfg_attr(miri, ignore = "millions of picks")]
    fn past_the_in_flight_limit_a_pick_is_refused_and_nothing_is_corrupted() {
        let lb = Balancer::new(RoundRobin::new(), [Backend::new("a")]).unwrap();
        for _ in 0..super::IN_FLIGHT_LIMIT {
            // Leaking a guard is safe Rust: the count must stay sound anyway.
            std::mem::forget(lb.pick(&Context::new()).unwrap());
        }
        assert_eq!(
            lb.pick(&Context::new()).unwrap_err(),
            crate::PickError::NoneAvailable { total: 1 }
        );
        let live = lb.live("a").unwrap();
        assert_eq!(u64::from(live.in_flight()), super::IN_FLIGHT_LIMIT);
        assert_eq!(live.load.load(Relaxed) & super::HELD, super::HELD);
        drop(live);
        drop(lb); // the leaked requests keep the state allocated: leaked, never freed twice
    }

    #[test]
    fn picks_race_their_backends_removal_on_other_threads() {
        let lb = Balancer::new(RoundRobin::new(), ["a", "b"].map(Backend::new)).unwrap();
        let threads: Vec<_> = (0..2)
            .map(|_| {
                let lb = lb.clone();
                std::thread::spawn(move || {
                    let mut held = Vec::new();
                    for _ in 0..50 {
                        held.push(lb.pick(&Context::new()).unwrap());
                        if held.len() > 4 {
                            drop(held.remove(0));
                        }
                    }
                    held
                })
            })
            .collect();
        for i in 0..20 {
            lb.update([Backend::new(if i % 2 == 0 { "a" } else { "b" })])
                .unwrap();
        }
        drop(lb);
        for t in threads {
            drop(t.join().unwrap());
        }
    }
}
