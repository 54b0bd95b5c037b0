//! The pick guard.

use std::fmt;
use std::marker::PhantomData;
use std::net::SocketAddr;
use std::ops::Deref;
use std::sync::atomic::{AtomicU64, AtomicU8, Ordering::Relaxed};
use std::sync::Arc;
use std::time::Duration;

use crate::backend::Backend;
use crate::clock::duration_to_nanos;
use crate::live::InFlight;

/// How a request to a backend went, as far as the backend's health is concerned.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Outcome {
    /// The backend did its job.
    Success,
    /// The backend failed (connect error, timeout, 5xx …): feeds passive health.
    Failure,
}

/// A chosen backend. While the guard lives the request counts as in flight to that backend; drop
/// it when the request ends (for a streamed response: when the body ends).
///
/// Report how the request went with [`success`](Self::success), [`failure`](Self::failure),
/// [`record`](Self::record) or [`report`](Self::report); those feed passive health, outcome
/// counters and the latency EWMA. A guard dropped without an outcome (a request the client
/// cancelled, say) leaves health untouched.
///
/// A pick records **exactly one** outcome, whatever its adapter reports. A failure is recorded at
/// once and is final. A success [reported](Self::report) before the request ends (a response
/// head that looked fine) is held until the guard ends, and a failure reported meanwhile (the body
/// broke, its read timed out) replaces it. So an adapter that reports the head early and the body
/// later records one failure for a body that failed after a 200 head, never a success and a
/// failure, and nginx's `max_fails` accounting sees one failure.
#[must_use = "the request counts as in flight until the Pick is dropped"]
pub struct Pick {
    live: InFlight,
    counted_total: bool,
    /// [`NONE`], [`PENDING`] (a success waits for the end) or [`RECORDED`]. Atomic, not a `Cell`,
    /// so the guard stays `Sync` (bodies that carry it often must be).
    outcome: AtomicU8,
    /// The pending success's latency in nanoseconds, [`NO_LATENCY`] when it has none.
    pending_latency: AtomicU64,
}

/// No outcome reported yet.
const NONE: u8 = 0;
/// A success was reported; it is recorded when the guard ends unless a failure replaces it.
const PENDING: u8 = 1;
/// The outcome is recorded; every later report is ignored.
const RECORDED: u8 = 2;
const NO_LATENCY: u64 = u64::MAX;

impl Pick {
    #[inline]
    pub(crate) fn new(live: InFlight, counted_total: bool) -> Self {
        Pick {
            live,
            counted_total,
            outcome: AtomicU8::new(NONE),
            pending_latency: AtomicU64::new(NO_LATENCY),
        }
    }

    /// The chosen backend, as the newest backend set configures it.
    ///
    /// The guard reads the configuration with one atomic load; for the identity alone,
    /// [`id`](Self::id) and [`key`](Self::key) cost nothing.
    #[inline]
    pub fn backend(&self) -> BackendRef<'_> {
        BackendRef {
            guard: self.live.backend.load(),
            _pick: PhantomData,
        }
    }

    /// The chosen backend's identity.
    #[inline]
    pub fn id(&self) -> &str {
        &self.live.id
    }

    /// The chosen backend's identity as a shared string.
    #[inline]
    pub fn id_arc(&self) -> &Arc<str> {
        &self.live.id
    }

    /// The chosen backend's [`key`](Backend::key).
    #[inline]
    pub fn key(&self) -> u64 {
        self.live.key
    }

    /// The chosen backend's socket address, when its identity is one.
    #[inline]
    pub fn addr(&self) -> Option<SocketAddr> {
        self.live.addr
    }

    /// Requests in flight to this backend, this one included.
    pub fn in_flight(&self) -> u32 {
        self.live.in_flight()
    }

    /// Reports success and ends the request.
    pub fn success(self) {
        self.record(Outcome::Success, None);
    }

    /// Reports failure and ends the request.
    pub fn failure(self) {
        self.record(Outcome::Failure, None);
    }

    /// Reports the outcome and, when known, the latency, and ends the request.
    pub fn record(self, outcome: Outcome, latency: Option<Duration>) {
        self.report(outcome, latency);
    }

    /// Reports the outcome without ending the request (the guard still counts it in flight until
    /// dropped). For adapters that learn the outcome before the response body ends.
    ///
    /// A failure is recorded now; a success waits for the guard to end, and a failure reported
    /// before then replaces it (taking the success's latency when it has none of its own). Returns
    /// whether the report counted: false once the outcome is decided (a failure was recorded, or a
    /// success is already waiting and this is another success).
    pub fn report(&self, outcome: Outcome, latency: Option<Duration>) -> bool {
        match outcome {
            Outcome::Success => {
                if self
                    .outcome
                    .compare_exchange(NONE, PENDING, Relaxed, Relaxed)
                    .is_err()
                {
                    return false;
                }
                let nanos =
                    latency.map_or(NO_LATENCY, |l| duration_to_nanos(l).min(NO_LATENCY - 1));
                self.pending_latency.store(nanos, Relaxed);
                true
            }
            Outcome::Failure => match self.outcome.swap(RECORDED, Relaxed) {
                RECORDED => false,
                _ => {
                    self.commit(false, latency.or_else(|| self.pending()));
                    true
                }
            },
        }
    }

    /// Whether an outcome has been reported for this pick (a success may still wait for the end).
    pub fn is_reported(&self) -> bool {
        self.outcome.load(Relaxed) != NONE
    }

    fn pending(&self) -> Option<Duration> {
        match self.pending_latency.load(Relaxed) {
            NO_LATENCY => None,
            nanos => Some(Duration::from_nanos(nanos)),
        }
    }

    /// Feeds one outcome to the latency EWMA, the counters and passive health.
    fn commit(&self, success: bool, latency: Option<Duration>) {
        let live = &*self.live;
        let registry = &live.registry;
        if let Some(latency) = latency {
            let decay = duration_to_nanos(registry.config.latency_decay) as f64;
            live.record_latency(
                duration_to_nanos(latency) as f64,
                registry.now_nanos(),
                decay,
            );
        }
        registry.on_outcome(live, success);
    }

    #[cold]
    fn commit_pending(&self) {
        self.commit(true, self.pending());
    }
}

impl Drop for Pick {
    #[inline]
    fn drop(&mut self) {
        // A success waiting for the end of the request is final now. (A plain load: the guard
        // is exclusively ours here.)
        if *self.outcome.get_mut() == PENDING {
            self.commit_pending();
        }
        // The in-flight count itself is released when `self.live` drops, after this.
        if self.counted_total {
            self.live.registry.total_in_flight.decrement();
        }
    }
}

impl fmt::Debug for Pick {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Pick").field("backend", &self.id()).finish()
    }
}

/// The configuration of a picked backend, from [`Pick::backend`]; derefs to [`Backend`].
pub struct BackendRef<'a> {
    guard: arc_swap::Guard<Arc<Backend>>,
    _pick: PhantomData<&'a Pick>,
}

impl Deref for BackendRef<'_> {
    type Target = Backend;

    #[inline]
    fn deref(&self) -> &Backend {
        &self.guard
    }
}

impl fmt::Debug for BackendRef<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        (**self).fmt(f)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::strategy::RoundRobin;
    use crate::{Balancer, Context, HealthConfig, HealthState, ManualClock};

    /// One backend under nginx's `max_fails` (within a 10 s `fail_timeout`), no panic routing.
    fn one_backend(max_fails: u32) -> Balancer<RoundRobin> {
        let mut b = Balancer::builder(RoundRobin::new());
        b.health(
            HealthConfig::builder()
                .max_fails(max_fails)
                .panic_threshold(0)
                .build(),
        )
        .clock(ManualClock::new());
        b.build([Backend::new("a")]).unwrap()
    }

    fn counts(lb: &Balancer<RoundRobin>) -> (u64, u64) {
        let s = &lb.stats()[0];
        (s.successes, s.failures)
    }

    #[test]
    fn a_failure_after_a_reported_success_records_one_failure_and_no_success() {
        let lb = one_backend(2);
        let pick = lb.pick(&Context::new()).unwrap();
        // The proxy's flow: the 200 head is reported, then the body breaks and fails the pick.
        assert!(pick.report(Outcome::Success, Some(Duration::from_millis(5))));
        assert!(pick.report(Outcome::Failure, None));
        assert!(!pick.report(Outcome::Failure, None));
        pick.failure();
        assert_eq!(counts(&lb), (0, 1));
        // max_fails=2 saw one failure: the backend is still in; one more failure takes it out.
        assert_eq!(lb.health("a"), Ok(HealthState::Healthy));
        lb.pick(&Context::new()).unwrap().failure();
        assert_eq!(counts(&lb), (0, 2));
        assert_eq!(lb.health("a"), Ok(HealthState::Ejected));
    }

    #[test]
    fn a_success_after_a_failure_does_not_undo_it() {
        let lb = one_backend(1);
        let pick = lb.pick(&Context::new()).unwrap();
        assert!(pick.report(Outcome::Failure, None));
        assert!(!pick.report(Outcome::Success, None));
        pick.record(Outcome::Success, Some(Duration::from_millis(5)));
        assert_eq!(counts(&lb), (0, 1));
        assert_eq!(lb.health("a"), Ok(HealthState::Ejected));
        assert_eq!(lb.stats()[0].latency_ewma, None);
    }

    #[test]
    fn a_success_reported_early_is_recorded_once_when_the_request_ends() {
        let lb = one_backend(1);
        let pick = lb.pick(&Context::new()).unwrap();
        assert!(pick.report(Outcome::Success, Some(Duration::from_millis(5))));
        assert!(!pick.report(Outcome::Success, None));
        assert!(pick.is_reported());
        assert_eq!((counts(&lb), lb.stats()[0].in_flight), ((0, 0), 1));
        pick.success();
        assert_eq!((counts(&lb), lb.stats()[0].in_flight), ((1, 0), 0));
        assert!(lb.stats()[0].latency_ewma.is_some());
    }

    #[test]
    fn a_pick_without_a_report_records_nothing() {
        let lb = one_backend(1);
        let pick = lb.pick(&Context::new()).unwrap();
        assert!(!pick.is_reported());
        drop(pick);
        assert_eq!(counts(&lb), (0, 0));
    }
}
