//! What a strategy sees of the live state: availability and load, by index, as atomic reads.

use std::cell::Cell;
use std::fmt;
use std::sync::atomic::Ordering::Relaxed;
use std::time::Duration;

use crate::backend::Backend;
use crate::health::Registry;
use crate::live::{flag, Live, LiveRef};

/// A backend of a published snapshot with its live state.
pub(crate) struct Member {
    pub(crate) backend: Backend,
    pub(crate) live: LiveRef,
}

impl fmt::Debug for Member {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Member")
            .field("backend", &self.backend)
            .field("live", &self.live)
            .finish()
    }
}

/// A strategy's window onto the backends of the snapshot it prepared for, in the same order as
/// the `&[Backend]` given to [`Strategy::prepare`](crate::Strategy::prepare).
///
/// Every method is a few atomic loads. [`is_available`](Self::is_available) folds in operator
/// state, health (unless the view is in panic mode), the in-flight limit and the request's
/// exclusions, so a strategy only has to skip what it reports unavailable.
pub struct View<'a> {
    members: &'a [Member],
    map: Option<&'a [u32]>,
    exclude: &'a [u64],
    registry: &'a Registry,
    ignore_health: bool,
    now: Cell<u64>,
}

impl<'a> View<'a> {
    pub(crate) fn new(members: &'a [Member], exclude: &'a [u64], registry: &'a Registry) -> Self {
        View {
            members,
            map: None,
            exclude,
            registry,
            ignore_health: registry.total.panic.load(Relaxed),
            now: Cell::new(u64::MAX),
        }
    }

    #[inline]
    pub(crate) fn member(&self, i: usize) -> &'a Member {
        match self.map {
            None => &self.members[i],
            Some(map) => &self.members[map[i] as usize],
        }
    }

    /// Translates an index of this view to an index of the whole snapshot.
    #[inline]
    pub(crate) fn global_index(&self, i: usize) -> usize {
        match self.map {
            None => i,
            Some(map) => map[i] as usize,
        }
    }

    /// The number of backends in view.
    #[inline]
    pub fn len(&self) -> usize {
        match self.map {
            None => self.members.len(),
            Some(map) => map.len(),
        }
    }

    /// Whether the view is empty.
    #[inline]
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The backend at `i`.
    #[inline]
    pub fn backend(&self, i: usize) -> &'a Backend {
        &self.member(i).backend
    }

    /// Whether a new request may go to backend `i`: operator state up, healthy (or the view is in
    /// panic mode), below its in-flight limit, and not excluded by the request. An ejected backend
    /// whose ejection time has passed counts as available: the pick that chooses it is the
    /// half-open request.
    #[inline]
    pub fn is_available(&self, i: usize) -> bool {
        let m = self.member(i);
        let flags = m.live.flags.load(Relaxed);
        if flags & !(flag::HAS_FAILS | flag::SLOW_START) != 0 && !self.flags_allow(flags, &m.live) {
            return false;
        }
        if let Some(max) = m.backend.get_max_in_flight() {
            if m.live.in_flight() >= max {
                return false;
            }
        }
        self.exclude.is_empty() || !self.exclude.contains(&m.backend.key())
    }

    /// Availability for a request pinned to backend `i` (a sticky target): as
    /// [`is_available`](Self::is_available), but a draining backend still takes it.
    pub(crate) fn is_available_pinned(&self, i: usize) -> bool {
        let live = &self.member(i).live;
        let flags = live.flags.load(Relaxed);
        if flags & flag::DRAIN != 0 && flags & flag::DOWN == 0 {
            let undrained = flags & !flag::DRAIN;
            if undrained & !(flag::HAS_FAILS | flag::SLOW_START) != 0
                && !self.flags_allow(undrained, live)
            {
                return false;
            }
            let m = self.member(i);
            return m
                .backend
                .get_max_in_flight()
                .is_none_or(|max| live.in_flight() < max)
                && !self.exclude.contains(&m.backend.key());
        }
        self.is_available(i)
    }

    #[cold]
    fn flags_allow(&self, flags: u8, live: &Live) -> bool {
        if flags & flag::ADMIN != 0 {
            return false;
        }
        if self.ignore_health {
            return true;
        }
        if flags & flag::FAILING != 0 {
            return false;
        }
        // Ejected: skipped while `now <= until` (nginx: `now - checked <= fail_timeout`).
        self.now_nanos() > live.ejected_until.load(Relaxed)
    }

    /// Requests in flight to backend `i`.
    #[inline]
    pub fn in_flight(&self, i: usize) -> u32 {
        self.member(i).live.in_flight()
    }

    /// The configured weight of backend `i`.
    #[inline]
    pub fn weight(&self, i: usize) -> u32 {
        self.member(i).backend.get_weight()
    }

    /// The weight after slow start: equal to [`weight`](Self::weight) except while the backend
    /// ramps up after recovering or joining.
    #[inline]
    pub fn effective_weight(&self, i: usize) -> u32 {
        let m = self.member(i);
        let w = m.backend.get_weight();
        if m.live.flags.load(Relaxed) & flag::SLOW_START == 0 {
            w
        } else {
            self.registry
                .slow_start_weight(&m.live, w, self.now_nanos())
        }
    }

    /// The fraction of its weight backend `i` takes now: 1.0, except during slow start, where it
    /// ramps from `slow_start_min_percent` to 1.0. Unlike [`effective_weight`](Self::effective_weight)
    /// it does not round, so it ramps even a backend of weight 1.
    #[inline]
    pub fn slow_start_factor(&self, i: usize) -> f64 {
        let m = self.member(i);
        if m.live.flags.load(Relaxed) & flag::SLOW_START == 0 {
            1.0
        } else {
            self.registry.slow_start_factor(&m.live, self.now_nanos())
        }
    }

    /// Backend `i`'s weight after slow start in 1/1024ths of a weight unit (at least 1): the
    /// integer form of `weight × slow_start_factor` for comparisons and tie-breaks that must
    /// see even a weight-1 backend ramp. Outside slow start it is exactly `weight × 1024`.
    #[inline]
    pub fn weight_1024ths(&self, i: usize) -> u64 {
        ((f64::from(self.weight(i)) * self.slow_start_factor(i) * 1024.0) as u64).max(1)
    }

    /// Whether any backend in view is in slow start (so effective weights differ from weights).
    pub fn any_slow_start(&self) -> bool {
        (0..self.len()).any(|i| self.member(i).live.flags.load(Relaxed) & flag::SLOW_START != 0)
    }

    /// The peak-EWMA latency of backend `i`, once a latency was reported.
    #[inline]
    pub fn latency_ewma(&self, i: usize) -> Option<Duration> {
        self.member(i)
            .live
            .latency_ewma_nanos()
            .map(|n| Duration::from_nanos(n as u64))
    }

    /// The peak-EWMA latency of backend `i` in nanoseconds, once a latency was reported.
    #[inline]
    pub fn latency_ewma_nanos(&self, i: usize) -> Option<f64> {
        self.member(i).live.latency_ewma_nanos()
    }

    /// Requests in flight across the whole balancer. Maintained only for strategies whose
    /// [`Strategy::tracks_total_in_flight`](crate::Strategy::tracks_total_in_flight) is true;
    /// zero otherwise. Each thread counts on a shard of its own (so that picks on two threads do
    /// not write one cache line) and this sums the shards: while other threads pick it may miss
    /// the requests that began or ended during the read, as one counter read a moment earlier
    /// or later would.
    #[inline]
    pub fn total_in_flight(&self) -> u64 {
        self.registry.total_in_flight.sum()
    }

    /// Whether the view ignores health (panic mode).
    pub fn is_panic(&self) -> bool {
        self.ignore_health
    }

    /// Healthy, operator-enabled backends in `tier` across the snapshot.
    pub fn tier_healthy(&self, tier: u8) -> u32 {
        self.registry
            .tiers
            .get(usize::from(tier))
            .map_or(0, |t| t.healthy.load(Relaxed))
    }

    /// Operator-enabled backends in `tier` across the snapshot.
    pub fn tier_eligible(&self, tier: u8) -> u32 {
        self.registry
            .tiers
            .get(usize::from(tier))
            .map_or(0, |t| t.eligible.load(Relaxed))
    }

    /// Whether `tier` is below the panic threshold.
    pub fn tier_in_panic(&self, tier: u8) -> bool {
        self.registry
            .tiers
            .get(usize::from(tier))
            .is_some_and(|t| t.panic.load(Relaxed))
    }

    /// A view of the backends at `indices` (indices of this view), with panic mode set as given.
    /// Composite strategies use it to hand a tier or zone to an inner strategy, whose indices are
    /// then positions in `indices`.
    ///
    /// # Panics
    /// When called on a view that is itself a subset: composites do not nest.
    pub fn subset<'b>(&'b self, indices: &'b [u32], panic: bool) -> View<'b>
    where
        'a: 'b,
    {
        assert!(
            self.map.is_none(),
            "View::subset: composite strategies do not nest"
        );
        View {
            members: self.members,
            map: Some(indices),
            exclude: self.exclude,
            registry: self.registry,
            ignore_health: panic,
            now: Cell::new(self.now.get()),
        }
    }

    /// Clock time, read at most once per pick.
    fn now_nanos(&self) -> u64 {
        let n = self.now.get();
        if n != u64::MAX {
            return n;
        }
        let n = self.registry.now_nanos();
        self.now.set(n);
        n
    }
}

impl fmt::Debug for View<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("View")
            .field("len", &self.len())
            .field("panic", &self.ignore_health)
            .finish_non_exhaustive()
    }
}
