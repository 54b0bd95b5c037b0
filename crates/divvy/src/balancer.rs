//! The balancer: validated backend sets, published as snapshots, picked from without locks.

use std::collections::HashMap;
use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::time::Duration;

use ahash::RandomState;
use arc_swap::ArcSwap;
use parking_lot::Mutex;

use crate::backend::{AdminState, Backend};
use crate::clock::{Clock, SystemClock};
use crate::context::Context;
use crate::error::{BackendError, PickError, UpdateError};
use crate::health::{BackendStats, HealthConfig, HealthEvent, HealthState, Registry};
use crate::live::{flag, Live, LiveRef};
use crate::local;
use crate::pick::Pick;
use crate::set::BackendSet;
use crate::strategy::Strategy;
use crate::view::{Member, View};

/// A load balancer: a strategy over a published backend set, with health and load tracking.
///
/// Cheap to clone (an `Arc`); clones share everything. [`pick`](Self::pick) reads the current
/// snapshot's id with one atomic load and finds that snapshot in a small thread-local cache (see
/// [`pick`](Self::pick)), then does the strategy's own work: no lock, no allocation.
/// [`update`](Self::update) validates a new set as a whole, lets the strategy prepare it, and swaps
/// it in atomically; an invalid set is rejected with a typed error and the previous set keeps
/// serving. Per-backend state (in flight, counters, latency, health) is keyed by identity and
/// survives updates for backends that stay.
///
/// ```
/// use divvy::{Backend, Balancer, Context, strategy::WeightedRoundRobin};
///
/// let lb = Balancer::new(
///     WeightedRoundRobin::new(),
///     vec![Backend::new("a").weight(5), Backend::new("b"), Backend::new("c")],
/// )?;
/// let seq: String = (0..7).map(|_| lb.pick(&Context::new()).unwrap().id().to_owned()).collect();
/// assert_eq!(seq, "aabacaa"); // nginx's smooth weighted sequence
/// # Ok::<(), divvy::UpdateError>(())
/// ```
pub struct Balancer<S: Strategy> {
    shared: Arc<Shared<S>>,
}

struct Shared<S: Strategy> {
    strategy: S,
    current: Arc<ArcSwap<Snapshot<S::Prepared>>>,
    /// The [`Snapshot::id`] of `current`, stored right after it: what [`Balancer::pick`] checks
    /// its thread-local cache against.
    current_id: AtomicU64,
    registry: Arc<Registry>,
    /// Identity → live state of the current set; also serialises updates.
    lives: Mutex<HashMap<Arc<str>, LiveRef, RandomState>>,
    tracks_total: bool,
}

struct Snapshot<P> {
    members: Box<[Member]>,
    by_key: HashMap<u64, u32, RandomState>,
    backends: Arc<[Backend]>,
    prepared: P,
    version: u64,
    /// Unique in the process (see [`local`]): a thread-local cache keyed by it never mixes
    /// balancers, even one built where a dropped one lived.
    id: u64,
}

impl<S: Strategy> Drop for Shared<S> {
    fn drop(&mut self) {
        // The balancer is gone: this thread lets go of its set now (other threads at their next
        // pick from another balancer, or when they exit).
        local::forget(self as *const Self as usize);
    }
}

impl<S: Strategy> Clone for Balancer<S> {
    fn clone(&self) -> Self {
        Balancer {
            shared: self.shared.clone(),
        }
    }
}

/// Builder for a [`Balancer`] with non-default health configuration or clock.
pub struct BalancerBuilder<S> {
    strategy: S,
    health: HealthConfig,
    clock: Arc<dyn Clock>,
}

impl<S: Strategy> BalancerBuilder<S> {
    /// Sets the health configuration. Default is [`HealthConfig::default`] (nginx's
    /// `max_fails=1 fail_timeout=10s`, HAProxy's `rise 2 fall 3`, Envoy's 50 % panic threshold).
    pub fn health(&mut self, config: HealthConfig) -> &mut Self {
        self.health = config;
        self
    }

    /// Sets the clock health rules read. Default is [`SystemClock`]; tests inject a
    /// [`ManualClock`](crate::ManualClock).
    pub fn clock(&mut self, clock: impl Clock) -> &mut Self {
        self.clock = Arc::new(clock);
        self
    }

    /// Validates `backends`, prepares the strategy and builds the balancer.
    pub fn build(
        self,
        backends: impl IntoIterator<Item = Backend>,
    ) -> Result<Balancer<S>, UpdateError> {
        let registry = Arc::new(Registry::new(self.health, self.clock));
        let backends: Vec<Backend> = backends.into_iter().collect();
        let prepared = self.strategy.prepare(&BackendSet::new(&backends)?)?;
        let tracks_total = self.strategy.tracks_total_in_flight();
        let mut lives = HashMap::with_hasher(RandomState::new());
        let (snapshot, events) = build_snapshot(&registry, &mut lives, backends, prepared, 0, true);
        registry.recount(&registry.lock(), snapshot.members.iter().map(|m| &*m.live));
        for e in events {
            registry.emit(Some(e));
        }
        Ok(Balancer {
            shared: Arc::new(Shared {
                strategy: self.strategy,
                current_id: AtomicU64::new(snapshot.id),
                current: Arc::new(ArcSwap::from_pointee(snapshot)),
                registry,
                lives: Mutex::new(lives),
                tracks_total,
            }),
        })
    }
}

impl<S: Strategy> Balancer<S> {
    /// A balancer over `backends` with the default health configuration and the system clock.
    pub fn new(
        strategy: S,
        backends: impl IntoIterator<Item = Backend>,
    ) -> Result<Self, UpdateError> {
        Self::builder(strategy).build(backends)
    }

    /// A builder, for health configuration or an injected clock.
    pub fn builder(strategy: S) -> BalancerBuilder<S> {
        BalancerBuilder {
            strategy,
            health: HealthConfig::default(),
            clock: Arc::new(SystemClock::new()),
        }
    }

    /// Chooses a backend for a request.
    ///
    /// A sticky target in `ctx` that is in the set and can take the request (up or draining,
    /// healthy or in panic, below its limit, not excluded) wins; otherwise the strategy picks.
    ///
    /// Each thread keeps a reference to the last set it picked from (of up to four balancers), so
    /// a pick costs one atomic load to check that the set is still current, as a [`Picker`]'s
    /// does. After an update, a thread's next pick replaces its reference; a thread that never
    /// picks from this balancer again keeps the set it last saw (and the state of backends only
    /// that set lists) until it picks from four other balancers or exits.
    #[inline]
    pub fn pick(&self, ctx: &Context<'_>) -> Result<Pick, PickError> {
        let id = self.shared.current_id.load(Relaxed);
        local::with_cached(id, |snap: &Snapshot<S::Prepared>| self.pick_in(snap, ctx))
            .unwrap_or_else(|| self.pick_and_cache(ctx))
    }

    /// A pick on a thread whose cache lacks the current set: loads it, and caches it for the
    /// thread's next picks.
    #[inline(never)]
    fn pick_and_cache(&self, ctx: &Context<'_>) -> Result<Pick, PickError> {
        let snap = self.shared.current.load_full();
        let picked = self.pick_in(&snap, ctx);
        local::store(self.owner(), snap.id, snap);
        picked
    }

    #[inline]
    fn pick_in(&self, snap: &Snapshot<S::Prepared>, ctx: &Context<'_>) -> Result<Pick, PickError> {
        self.pick_from(snap, ctx)
            .or_else(|e| self.retry_if_stale(snap, ctx, e))
    }

    /// This balancer's identity in thread-local caches: the address of its shared state.
    fn owner(&self) -> usize {
        Arc::as_ptr(&self.shared) as usize
    }

    /// A failed pick gets one more try, because what it read may have changed under it: health
    /// counts describe the newest set, so a pick racing an update may have paired the replaced
    /// set with its successor's counts (a tier looked healthy because of a backend the old set
    /// lacks); and a pick racing a transition may have read a tier's healthy count just before
    /// its last healthy backend was ejected, when panic mode was about to apply. Only a failed
    /// pick pays for this.
    #[cold]
    fn retry_if_stale(
        &self,
        snap: &Snapshot<S::Prepared>,
        ctx: &Context<'_>,
        e: PickError,
    ) -> Result<Pick, PickError> {
        let registry = &self.shared.registry;
        if snap.version != registry.counted_version.load(Relaxed) {
            // The newer snapshot is stored right after the recount, under the registry lock.
            let _published = registry.lock();
            return self.pick_from(&self.shared.current.load(), ctx);
        }
        self.pick_from(snap, ctx).map_err(|_| e)
    }

    /// A per-thread (or per-task) picker that caches the current snapshot: its
    /// [`pick`](Picker::pick) checks for a newer set with one atomic load instead of
    /// [`Balancer::pick`]'s snapshot protection, which is the cheapest way to pick when the
    /// caller has `&mut` access (a tower service, a worker loop).
    pub fn picker(&self) -> Picker<S> {
        Picker {
            balancer: self.clone(),
            cache: arc_swap::Cache::new(self.shared.current.clone()),
        }
    }

    #[inline]
    fn pick_from(
        &self,
        snap: &Snapshot<S::Prepared>,
        ctx: &Context<'_>,
    ) -> Result<Pick, PickError> {
        let shared = &*self.shared;
        let view = View::new(&snap.members, ctx.get_exclude(), &shared.registry);
        if let Some(key) = ctx.get_sticky() {
            if let Some(&i) = snap.by_key.get(&key) {
                if view.is_available_pinned(i as usize) {
                    if let Some(pick) = self.grant(&snap.members[i as usize]) {
                        return Ok(pick);
                    }
                }
            }
        }
        match shared.strategy.pick(&snap.prepared, ctx, &view) {
            Some(i) => self
                .grant(&snap.members[i])
                .ok_or(PickError::NoneAvailable {
                    total: snap.members.len(),
                }),
            None => Err(PickError::NoneAvailable {
                total: snap.members.len(),
            }),
        }
    }

    #[inline]
    fn grant(&self, member: &Member) -> Option<Pick> {
        let live = &member.live;
        let in_flight = live.begin()?;
        if live.flags.load(Relaxed) & (flag::HAS_FAILS | flag::EJECTED) != 0 {
            live.registry.on_picked(live);
        }
        if self.shared.tracks_total {
            self.shared.registry.total_in_flight.increment();
        }
        Some(Pick::new(in_flight, self.shared.tracks_total))
    }

    /// Replaces the backend set. The new set is validated as a whole and prepared by the strategy
    /// before it is published; on error the previous set keeps serving, untouched.
    pub fn update(&self, backends: impl IntoIterator<Item = Backend>) -> Result<(), UpdateError> {
        let backends: Vec<Backend> = backends.into_iter().collect();
        let prepared = self.shared.strategy.prepare(&BackendSet::new(&backends)?)?;
        let mut lives = self.shared.lives.lock();
        let version = self.shared.current.load().version + 1;
        let registry = &self.shared.registry;
        let (snapshot, events) =
            build_snapshot(registry, &mut lives, backends, prepared, version, false);
        {
            let guard = registry.lock();
            registry.recount(&guard, snapshot.members.iter().map(|m| &*m.live));
            registry.counted_version.store(version, Relaxed);
            let id = snapshot.id;
            self.shared.current.store(Arc::new(snapshot));
            self.shared.current_id.store(id, Relaxed);
        }
        drop(lives);
        // This thread's reference to the replaced set goes now; other threads' at their next pick.
        local::forget(self.owner());
        for e in events {
            registry.emit(Some(e));
        }
        Ok(())
    }

    /// The backends of the current set, in configuration order.
    pub fn backends(&self) -> Arc<[Backend]> {
        self.shared.current.load().backends.clone()
    }

    /// The version of the current set: 0 for the first, +1 per successful update.
    pub fn version(&self) -> u64 {
        self.shared.current.load().version
    }

    /// The strategy.
    pub fn strategy(&self) -> &S {
        &self.shared.strategy
    }

    /// The health configuration.
    pub fn health_config(&self) -> &HealthConfig {
        &self.shared.registry.config
    }

    /// Reports an active health-check result for the backend named `id` (HAProxy `rise`/`fall`).
    pub fn report_probe(&self, id: &str, ok: bool) -> Result<(), BackendError> {
        let live = self.live(id)?;
        self.shared.registry.on_probe(&live, ok);
        Ok(())
    }

    /// Overrides the operator state of backend `id` (`None` returns to the configured state).
    /// The override wins over health and survives updates while the backend stays in the set.
    pub fn set_admin_state(&self, id: &str, state: Option<AdminState>) -> Result<(), BackendError> {
        let live = self.live(id)?;
        self.shared.registry.set_override(&live, state);
        Ok(())
    }

    /// The health of backend `id`.
    pub fn health(&self, id: &str) -> Result<HealthState, BackendError> {
        Ok(HealthState::from_flags(self.live(id)?.flags.load(Relaxed)))
    }

    /// Calls `f` on every health transition, after the transition took effect. `f` runs on the
    /// thread that caused it (a pick's outcome, a probe report, an update), so it should be quick:
    /// log, bump a metric, or send on a channel.
    pub fn subscribe(&self, f: impl Fn(&HealthEvent) + Send + Sync + 'static) {
        self.shared.registry.subscribe(Arc::new(f));
    }

    /// A point-in-time view of every backend of the current set, in configuration order.
    pub fn stats(&self) -> Vec<BackendStats> {
        let snap = self.shared.current.load();
        let view = View::new(&snap.members, &[], &self.shared.registry);
        snap.members
            .iter()
            .enumerate()
            .map(|(i, m)| {
                let live = &m.live;
                let flags = live.flags.load(Relaxed);
                BackendStats {
                    id: live.id.clone(),
                    tier: m.backend.get_tier(),
                    weight: m.backend.get_weight(),
                    effective_weight: view.effective_weight(i),
                    admin: live.admin(),
                    health: HealthState::from_flags(flags),
                    available: view.is_available(i),
                    in_flight: live.in_flight(),
                    picks: live.picks(),
                    successes: live.successes.load(Relaxed),
                    failures: live.failures.load(Relaxed),
                    ejections: live.machine.lock().ejections,
                    consecutive_failures: live.consecutive_failures.load(Relaxed),
                    latency_ewma: live
                        .latency_ewma_nanos()
                        .map(|n| Duration::from_nanos(n as u64)),
                }
            })
            .collect()
    }

    pub(crate) fn live(&self, id: &str) -> Result<LiveRef, BackendError> {
        let snap = self.shared.current.load();
        snap.by_key
            .get(&crate::hash::backend_key(id))
            .map(|&i| &snap.members[i as usize])
            .filter(|m| m.backend.id() == id)
            .map(|m| m.live.clone())
            .ok_or_else(|| BackendError::Unknown { id: id.into() })
    }
}

type SnapshotCache<P> = arc_swap::Cache<Arc<ArcSwap<Snapshot<P>>>, Arc<Snapshot<P>>>;

/// A [`Balancer`] handle that caches the current snapshot, from [`Balancer::picker`].
///
/// Holding a picker keeps the snapshot it last saw alive until its next pick notices a newer one.
pub struct Picker<S: Strategy> {
    balancer: Balancer<S>,
    cache: SnapshotCache<S::Prepared>,
}

impl<S: Strategy> Picker<S> {
    /// Chooses a backend, as [`Balancer::pick`].
    #[inline]
    pub fn pick(&mut self, ctx: &Context<'_>) -> Result<Pick, PickError> {
        let snap = self.cache.load();
        match self.balancer.pick_from(snap, ctx) {
            Ok(p) => Ok(p),
            Err(e) => {
                let snap = snap.clone();
                self.balancer.retry_if_stale(&snap, ctx, e)
            }
        }
    }

    /// The version of the set this picker sees, checking for a newer one with one atomic load.
    #[inline]
    pub fn version(&mut self) -> u64 {
        self.cache.load().version
    }

    /// The balancer this picker picks from.
    pub fn balancer(&self) -> &Balancer<S> {
        &self.balancer
    }
}

impl<S: Strategy> Clone for Picker<S> {
    fn clone(&self) -> Self {
        self.balancer.picker()
    }
}

impl<S: Strategy> fmt::Debug for Picker<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Picker").finish_non_exhaustive()
    }
}

impl<S: Strategy + fmt::Debug> fmt::Debug for Balancer<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let snap = self.shared.current.load();
        f.debug_struct("Balancer")
            .field("strategy", &self.shared.strategy)
            .field("version", &snap.version)
            .field("backends", &snap.backends)
            .finish_non_exhaustive()
    }
}

impl<S> fmt::Debug for BalancerBuilder<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BalancerBuilder")
            .field("health", &self.health)
            .finish_non_exhaustive()
    }
}

/// Builds the members of a validated set, reusing live state by identity. The caller recounts
/// health under the registry lock, publishes, then emits the returned events.
fn build_snapshot<P>(
    registry: &Arc<Registry>,
    lives: &mut HashMap<Arc<str>, LiveRef, RandomState>,
    backends: Vec<Backend>,
    prepared: P,
    version: u64,
    first: bool,
) -> (Snapshot<P>, Vec<HealthEvent>) {
    let now = registry.now_nanos();
    let mut next: HashMap<Arc<str>, LiveRef, RandomState> =
        HashMap::with_capacity_and_hasher(backends.len(), RandomState::new());
    let mut by_key = HashMap::with_capacity_and_hasher(backends.len(), RandomState::new());
    let mut events = Vec::new();
    let mut members = Vec::with_capacity(backends.len());
    for (i, b) in backends.iter().enumerate() {
        let live = match lives.remove(b.id()) {
            Some(live) => {
                if **live.backend.load() != *b {
                    live.backend.store(Arc::new(b.clone()));
                }
                live
            }
            None => {
                let live = Live::create(b, registry.clone());
                if !first {
                    registry.joined(&live, now);
                }
                live
            }
        };
        live.tier.store(b.get_tier(), Relaxed);
        live.in_set.store(true, Relaxed);
        events.extend(registry.apply_config(&live, b.get_state(), now));
        by_key.insert(b.key(), i as u32);
        next.insert(b.id_arc().clone(), live.clone());
        members.push(Member {
            backend: b.clone(),
            live,
        });
    }
    for gone in lives.values() {
        gone.in_set.store(false, Relaxed);
    }
    *lives = next;
    let snapshot = Snapshot {
        members: members.into_boxed_slice(),
        by_key,
        backends: backends.into(),
        prepared,
        version,
        id: local::next_id(),
    };
    (snapshot, events)
}

#[cfg(test)]
impl<S: Strategy> Balancer<S> {
    /// (eligible, healthy) as the registry counts them, for invariant tests.
    pub(crate) fn shared_counts(&self) -> (u32, u32) {
        let t = &self.shared.registry.total;
        (t.eligible.load(Relaxed), t.healthy.load(Relaxed))
    }
}

#[cfg(test)]
impl<S: Strategy> Balancer<S> {
    /// Whether the set current now is still allocated, asked later: for cache-lifetime tests.
    pub(crate) fn watch_current(&self) -> impl Fn() -> bool {
        let weak = Arc::downgrade(&self.shared.current.load_full());
        move || weak.strong_count() > 0
    }
}
