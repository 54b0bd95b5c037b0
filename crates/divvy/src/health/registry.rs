//! The registry: tier counts, panic flags, events and statistics.

use std::fmt;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::time::Duration;

use parking_lot::{Mutex, MutexGuard, RwLock};

use crate::backend::{AdminState, MAX_TIERS};
use crate::clock::Clock;
use crate::health::HealthConfig;
use crate::live::{flag, Live};

/// A backend's health as the registry sees it. Operator state takes precedence: a backend that is
/// both down and failing reports [`HealthState::Down`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum HealthState {
    /// Takes traffic.
    Healthy,
    /// Active checks failed `fall` times in a row.
    Failing,
    /// Passive health ejected it (nginx `max_fails` or consecutive failures).
    Ejected,
    /// The operator drains it: no new unpinned traffic.
    Drain,
    /// The operator took it down.
    Down,
}

impl HealthState {
    pub(crate) fn from_flags(flags: u8) -> Self {
        if flags & flag::DOWN != 0 {
            HealthState::Down
        } else if flags & flag::DRAIN != 0 {
            HealthState::Drain
        } else if flags & flag::FAILING != 0 {
            HealthState::Failing
        } else if flags & flag::EJECTED != 0 {
            HealthState::Ejected
        } else {
            HealthState::Healthy
        }
    }
}

impl fmt::Display for HealthState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            HealthState::Healthy => "healthy",
            HealthState::Failing => "failing",
            HealthState::Ejected => "ejected",
            HealthState::Drain => "drain",
            HealthState::Down => "down",
        })
    }
}

/// What caused a transition.
#[non_exhaustive]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Cause {
    /// Active probe results crossed `rise` or `fall`.
    ActiveCheck,
    /// Passive failures crossed `max_fails` or `consecutive_failures`.
    PassiveFailures,
    /// A half-open request after an ejection succeeded.
    Recovered,
    /// The operator changed the backend's state.
    Operator,
    /// A snapshot update changed the configured state.
    Update,
}

/// A state transition, delivered to [`Balancer::subscribe`](crate::Balancer::subscribe)rs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HealthEvent {
    /// The backend's identity.
    pub backend: Arc<str>,
    /// The state before.
    pub from: HealthState,
    /// The state after.
    pub to: HealthState,
    /// Why.
    pub cause: Cause,
    /// Clock time of the transition.
    pub at: Duration,
}

/// A point-in-time view of one backend, from [`Balancer::stats`](crate::Balancer::stats).
#[non_exhaustive]
#[derive(Clone, Debug, PartialEq)]
pub struct BackendStats {
    /// Identity.
    pub id: Arc<str>,
    /// Priority tier.
    pub tier: u8,
    /// Configured weight.
    pub weight: u32,
    /// Weight after slow start.
    pub effective_weight: u32,
    /// Operator state in force (override or configured).
    pub admin: AdminState,
    /// Health.
    pub health: HealthState,
    /// Whether a pick could choose it now (health, operator state and in-flight limit).
    pub available: bool,
    /// Requests in flight.
    pub in_flight: u32,
    /// Picks since the backend joined, modulo 2⁴⁰ (a counter that resets, for monitoring).
    pub picks: u64,
    /// Outcomes reported as success.
    pub successes: u64,
    /// Outcomes reported as failure.
    pub failures: u64,
    /// Passive ejections so far.
    pub ejections: u32,
    /// Failures since the last success.
    pub consecutive_failures: u32,
    /// Peak-EWMA latency, once a latency was reported.
    pub latency_ewma: Option<Duration>,
}

#[derive(Default)]
pub(crate) struct TierCount {
    pub(crate) eligible: AtomicU32,
    pub(crate) healthy: AtomicU32,
    pub(crate) panic: AtomicBool,
}

type Subscriber = Arc<dyn Fn(&HealthEvent) + Send + Sync>;

/// Balancer-wide health state shared by every [`Live`].
pub(crate) struct Registry {
    pub(crate) config: HealthConfig,
    pub(crate) clock: Arc<dyn Clock>,
    /// Serialises flag changes with count updates and publications.
    lock: Mutex<()>,
    pub(crate) tiers: [TierCount; MAX_TIERS],
    pub(crate) total: TierCount,
    /// Backends ejected by the consecutive-failure rule, in the current set.
    pub(crate) outlier_ejected: AtomicU32,
    pub(crate) set_size: AtomicU32,
    /// Requests in flight for strategies that track a total, one shard per thread.
    pub(crate) total_in_flight: crate::shard::ShardedCounter,
    /// The version of the set the counts describe; the balancer publishes that set's snapshot
    /// right after recounting, under the same lock.
    pub(crate) counted_version: AtomicU64,
    subscribers: RwLock<Vec<Subscriber>>,
}

impl Registry {
    pub(crate) fn new(config: HealthConfig, clock: Arc<dyn Clock>) -> Self {
        Registry {
            config,
            clock,
            lock: Mutex::new(()),
            tiers: Default::default(),
            total: TierCount::default(),
            outlier_ejected: AtomicU32::new(0),
            set_size: AtomicU32::new(0),
            total_in_flight: crate::shard::ShardedCounter::default(),
            counted_version: AtomicU64::new(0),
            subscribers: RwLock::new(Vec::new()),
        }
    }

    #[inline]
    pub(crate) fn now_nanos(&self) -> u64 {
        crate::clock::duration_to_nanos(self.clock.now())
    }

    pub(crate) fn subscribe(&self, f: Subscriber) {
        self.subscribers.write().push(f);
    }

    pub(crate) fn emit(&self, event: Option<HealthEvent>) {
        if let Some(event) = event {
            for s in self.subscribers.read().iter() {
                s(&event);
            }
        }
    }

    pub(crate) fn lock(&self) -> MutexGuard<'_, ()> {
        self.lock.lock()
    }

    /// Stores `new` flags on `live` and keeps the counts right. Call with the registry lock held.
    pub(crate) fn store_flags(&self, _guard: &MutexGuard<'_, ()>, live: &Live, new: u8) -> u8 {
        let old = live.flags.swap(new, Relaxed);
        if live.in_set.load(Relaxed) {
            let tier = usize::from(live.tier.load(Relaxed));
            let d_el = i64::from(eligible(new)) - i64::from(eligible(old));
            let d_he = i64::from(healthy(new)) - i64::from(healthy(old));
            let d_out = i64::from(new & flag::OUTLIER != 0) - i64::from(old & flag::OUTLIER != 0);
            if d_el != 0 || d_he != 0 {
                for c in [&self.tiers[tier], &self.total] {
                    add(&c.eligible, d_el);
                    add(&c.healthy, d_he);
                    self.refresh_panic(c);
                }
            }
            add(&self.outlier_ejected, d_out);
        }
        old
    }

    /// Recounts everything from the lives of a new set. Call with the registry lock held.
    pub(crate) fn recount<'a>(
        &self,
        _guard: &MutexGuard<'_, ()>,
        lives: impl Iterator<Item = &'a Live>,
    ) {
        let mut tiers = [(0u32, 0u32); MAX_TIERS];
        let (mut n, mut out) = (0u32, 0u32);
        for live in lives {
            let f = live.flags.load(Relaxed);
            let t = &mut tiers[usize::from(live.tier.load(Relaxed))];
            t.0 += u32::from(eligible(f));
            t.1 += u32::from(healthy(f));
            out += u32::from(f & flag::OUTLIER != 0);
            n += 1;
        }
        let (mut el, mut he) = (0, 0);
        for (c, (e, h)) in self.tiers.iter().zip(tiers) {
            c.eligible.store(e, Relaxed);
            c.healthy.store(h, Relaxed);
            self.refresh_panic(c);
            el += e;
            he += h;
        }
        self.total.eligible.store(el, Relaxed);
        self.total.healthy.store(he, Relaxed);
        self.refresh_panic(&self.total);
        self.set_size.store(n, Relaxed);
        self.outlier_ejected.store(out, Relaxed);
    }

    fn refresh_panic(&self, c: &TierCount) {
        let (e, h) = (c.eligible.load(Relaxed), c.healthy.load(Relaxed));
        let t = self.config.panic_threshold;
        let panic = t > 0 && e > 0 && u64::from(h) * 100 < u64::from(t) * u64::from(e);
        c.panic.store(panic, Relaxed);
    }

    /// Whether one more backend may be ejected by the consecutive-failure rule.
    pub(crate) fn may_eject_outlier(&self) -> bool {
        let n = u64::from(self.set_size.load(Relaxed));
        let cap = (n * u64::from(self.config.max_ejection_percent) / 100).max(1);
        u64::from(self.outlier_ejected.load(Relaxed)) < cap
    }
}

impl fmt::Debug for Registry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Registry")
            .field("config", &self.config)
            .field("healthy", &self.total.healthy.load(Relaxed))
            .field("eligible", &self.total.eligible.load(Relaxed))
            .finish_non_exhaustive()
    }
}

fn add(a: &AtomicU32, d: i64) {
    if d > 0 {
        a.fetch_add(d as u32, Relaxed);
    } else if d < 0 {
        a.fetch_sub((-d) as u32, Relaxed);
    }
}

/// Enabled by the operator (up; drain and down take no new traffic).
pub(crate) const fn eligible(flags: u8) -> bool {
    flags & flag::ADMIN == 0
}

/// Enabled and healthy.
pub(crate) const fn healthy(flags: u8) -> bool {
    flags & (flag::ADMIN | flag::UNHEALTHY) == 0
}
