//! The pick guard.

use std::fmt;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::Duration;

use crate::backend::Backend;
use crate::clock::duration_to_nanos;
use crate::view::Member;

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
    member: Arc<Member>,
    counted_total: bool,
}

impl Pick {
    #[inline]
    pub(crate) fn new(member: Arc<Member>, counted_total: bool) -> Self {
        Pick {
            member,
            counted_total,
        }
    }

    /// The chosen backend.
    #[inline]
    pub fn backend(&self) -> &Backend {
        &self.member.backend
    }

    /// Requests in flight to this backend, this one included.
    pub fn in_flight(&self) -> u32 {
        self.member.live.in_flight()
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
        let live = &self.member.live;
        let registry = &live.registry;
        if let Some(latency) = latency {
            let decay = duration_to_nanos(registry.config.latency_decay) as f64;
            live.record_latency(
                duration_to_nanos(latency) as f64,
                registry.now_nanos(),
                decay,
            );
        }
        registry.on_outcome(live, outcome == Outcome::Success);
    }
}

impl Drop for Pick {
    #[inline]
    fn drop(&mut self) {
        let live = &self.member.live;
        live.load.fetch_sub(1, Relaxed);
        if self.counted_total {
            live.registry.total_in_flight.fetch_sub(1, Relaxed);
        }
    }
}

impl fmt::Debug for Pick {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Pick")
            .field("backend", &self.member.backend.id())
            .finish()
    }
}
