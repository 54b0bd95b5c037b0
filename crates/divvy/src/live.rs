//! Per-backend live state: in-flight count, outcome counters, latency EWMA and health flags.
//!
//! One `Live` exists per backend identity and survives snapshot updates for backends that stay.
//! Everything a pick reads is an atomic load; writes that need more than one word go through the
//! per-backend mutex in [`health`](crate::health), off the pick path.

use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, AtomicU8, Ordering::Relaxed};
use std::sync::Arc;

use parking_lot::Mutex;

use crate::backend::AdminState;
use crate::health::{Machine, Registry};

/// `load` packs the in-flight count (low bits) and the number of picks (high bits), so a pick
/// costs one atomic add for both.
pub(crate) const IN_FLIGHT_BITS: u32 = 24;
pub(crate) const IN_FLIGHT_MASK: u64 = (1 << IN_FLIGHT_BITS) - 1;
pub(crate) const PICK_ONE: u64 = 1 | (1 << IN_FLIGHT_BITS);

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
    pub(crate) load: AtomicU64,
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
    pub(crate) fn new(id: Arc<str>, registry: Arc<Registry>) -> Self {
        Live {
            id,
            load: AtomicU64::new(0),
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
        }
    }

    #[inline]
    pub(crate) fn in_flight(&self) -> u32 {
        (self.load.load(Relaxed) & IN_FLIGHT_MASK) as u32
    }

    pub(crate) fn picks(&self) -> u64 {
        self.load.load(Relaxed) >> IN_FLIGHT_BITS
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

impl std::fmt::Debug for Live {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Live")
            .field("id", &self.id)
            .field("in_flight", &self.in_flight())
            .field("flags", &self.flags.load(Relaxed))
            .finish_non_exhaustive()
    }
}
