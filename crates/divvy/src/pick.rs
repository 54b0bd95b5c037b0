//! The pick guard.

use std::fmt;
use std::marker::PhantomData;
use std::net::SocketAddr;
use std::ops::Deref;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::Duration;

use crate::backend::Backend;
use crate::clock::duration_to_nanos;
use crate::live::InFlight;
use crate::wake::WakeOnEnd;

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
/// Report how the request went with [`success`](Self::success), [`failure`](Self::failure) or
/// [`record`](Self::record); those feed passive health, outcome counters and the latency EWMA. A
/// guard dropped without an outcome (a request the client cancelled, say) leaves health untouched.
#[must_use = "the request counts as in flight until the Pick is dropped"]
pub struct Pick {
    live: InFlight,
    /// Declared after `live`: fields drop in order, so waiters are woken after the in-flight
    /// count is released. `None` unless the backend has an in-flight limit and wakers are on.
    _wake: Option<WakeOnEnd>,
    counted_total: bool,
}

impl Pick {
    #[inline]
    pub(crate) fn new(live: InFlight, counted_total: bool, wake: Option<WakeOnEnd>) -> Self {
        Pick {
            live,
            _wake: wake,
            counted_total,
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
    pub fn report(&self, outcome: Outcome, latency: Option<Duration>) {
        let live = &*self.live;
        let registry = &live.registry;
        if let Some(latency) = latency {
            let decay = duration_to_nanos(registry.config.latency_decay) as f64;
            let nanos = duration_to_nanos(latency);
            live.record_latency(nanos as f64, registry.now_nanos(), decay);
            #[cfg(feature = "prometheus")]
            live.latency_histogram.record(nanos);
        }
        #[cfg(feature = "tracing")]
        tracing::trace!(backend = &*live.id, ?outcome, ?latency, "divvy outcome");
        registry.on_outcome(live, outcome == Outcome::Success);
    }
}

#[cfg(test)]
impl Pick {
    pub(crate) fn carries_no_waker(&self) -> bool {
        self._wake.is_none()
    }
}

impl Drop for Pick {
    #[inline]
    fn drop(&mut self) {
        // The in-flight count itself is released when `self.live` drops, after this.
        if self.counted_total {
            self.live.registry.total_in_flight.fetch_sub(1, Relaxed);
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
