//! The balancer: validated backend sets, published as snapshots, picked from without locks.

use std::collections::HashMap;
use std::fmt;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::task::{Poll, Waker};
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
use crate::pick::Pick;
use crate::set::BackendSet;
use crate::strategy::Strategy;
use crate::view::{Member, View};
use crate::wake::{Interest, WakeOnEnd};

/// A load balancer: a strategy over a published backend set, with health and load tracking.
///
/// Cheap to clone (an `Arc`); clones share everything. [`pick`](Self::pick) is one atomic load of
/// the current snapshot plus the strategy's own work: no lock, no allocation.
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
    registry: Arc<Registry>,
    /// The live state of every backend by identity; its lock is the publication lock, which
    /// serialises every change of the set.
    lives: Mutex<Lives>,
    tracks_total: bool,
}

/// Identity → live state, for the current set and for backends that left it with requests
/// still in flight.
#[derive(Default)]
struct Lives {
    current: HashMap<Arc<str>, LiveRef, RandomState>,
    /// Backends removed while requests to them were in flight. A backend re-added before those
    /// requests end takes its state back (in flight, health, counters), so its in-flight count
    /// and its health stay continuous across remove → re-add. Pruned at each publication once
    /// nothing is in flight.
    departed: HashMap<Arc<str>, LiveRef, RandomState>,
}

struct Snapshot<P> {
    members: Box<[Member]>,
    by_key: HashMap<u64, u32, RandomState>,
    backends: Arc<[Backend]>,
    /// `None` for the empty set: strategies are never asked to prepare it, and a pick from it
    /// fails with [`PickError::NoneAvailable`].
    prepared: Option<P>,
    version: u64,
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
        let prepared = prepare(&self.strategy, &backends)?;
        let tracks_total = self.strategy.tracks_total_in_flight();
        let mut lives = Lives::default();
        let (snapshot, events) = build_snapshot(&registry, &mut lives, backends, prepared, 0, true);
        registry.recount(&registry.lock(), snapshot.members.iter().map(|m| &*m.live));
        for e in events {
            registry.emit(Some(e));
        }
        Ok(Balancer {
            shared: Arc::new(Shared {
                strategy: self.strategy,
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
    #[inline]
    pub fn pick(&self, ctx: &Context<'_>) -> Result<Pick, PickError> {
        let snap = self.shared.current.load();
        let picked = self
            .pick_from(&snap, ctx)
            .or_else(|e| self.retry_if_stale(&snap, ctx, e));
        #[cfg(feature = "tracing")]
        trace_pick(self.shared.strategy.name(), &picked);
        picked
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
        let Some(prepared) = &snap.prepared else {
            return Err(PickError::NoneAvailable { total: 0 });
        };
        match shared.strategy.pick(prepared, ctx, &view) {
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
            self.shared.registry.total_in_flight.fetch_add(1, Relaxed);
        }
        // Only the end of a request to a backend with a limit can make a backend available.
        let wake = match member.backend.get_max_in_flight() {
            Some(_) if self.shared.registry.waiters.enabled() => {
                Some(WakeOnEnd(self.shared.registry.clone()))
            }
            _ => None,
        };
        Some(Pick::new(in_flight, self.shared.tracks_total, wake))
    }

    /// Whether a pick with no exclusions could find a backend now: some backend is up, healthy
    /// (or its tier is in panic), below its in-flight limit. One scan that usually stops at the
    /// first backend.
    pub fn has_available(&self) -> bool {
        let snap = self.shared.current.load();
        let view = View::new(&snap.members, &[], &self.shared.registry);
        (0..view.len()).any(|i| view.is_available(i))
    }

    /// [`Poll::Ready`] when [`has_available`](Self::has_available); otherwise registers `waker`
    /// to be woken once at the next change that may make a backend available (a health or
    /// operator transition, the end of a request to a backend with an in-flight limit, a new
    /// set) and returns [`Poll::Pending`]. This is what tower's `poll_ready` backpressure needs.
    ///
    /// An ejection that simply expires is not a change anyone reports: a waiter that must not
    /// miss it also waits for [`ejection_expires_in`](Self::ejection_expires_in). The first call
    /// turns on wakeups at the end of requests (as [`enable_wakers`](Self::enable_wakers)).
    pub fn poll_available(&self, waker: &Waker) -> Poll<()> {
        if self.has_available() {
            return Poll::Ready(());
        }
        self.shared
            .registry
            .waiters
            .register(Interest::Capacity, waker);
        // Checked again after registering: a change between the first check and the
        // registration would otherwise wake nobody.
        if self.has_available() {
            Poll::Ready(())
        } else {
            Poll::Pending
        }
    }

    /// From now on, requests to backends with an in-flight limit wake the wakers of
    /// [`poll_available`](Self::poll_available) when they end (one `Arc` clone per such pick).
    /// Call it before handing out picks that a waiter may wait on; `divvy-tower`'s backpressure
    /// mode calls it when it is built. Off until called; it cannot be turned off.
    pub fn enable_wakers(&self) {
        self.shared.registry.waiters.enable();
    }

    /// [`Poll::Ready`] with the current [`version`](Self::version) when it differs from `seen`;
    /// otherwise registers `waker` to be woken once at the next publication and returns
    /// [`Poll::Pending`]. For code that follows the membership (a `Discover` stream).
    pub fn poll_changed(&self, seen: u64, waker: &Waker) -> Poll<u64> {
        let now = self.version();
        if now != seen {
            return Poll::Ready(now);
        }
        self.shared
            .registry
            .waiters
            .register(Interest::Membership, waker);
        match self.version() {
            now if now != seen => Poll::Ready(now),
            _ => Poll::Pending,
        }
    }

    /// How long until the earliest passive ejection in the current set is over, when a backend
    /// is ejected: the time to the first instant past its end (nginx still skips a backend at
    /// exactly `fail_timeout`), so at least a nanosecond. Read by waiters of
    /// [`poll_available`](Self::poll_available), because an ejection that ends by itself wakes
    /// nobody.
    pub fn ejection_expires_in(&self) -> Option<Duration> {
        let snap = self.shared.current.load();
        let now = self.shared.registry.now_nanos();
        snap.members
            .iter()
            .filter(|m| m.live.flags.load(Relaxed) & flag::EJECTED != 0)
            .map(|m| m.live.ejected_until.load(Relaxed).saturating_sub(now) + 1)
            .min()
            .map(Duration::from_nanos)
    }

    /// Replaces the backend set. The new set is validated as a whole and prepared by the strategy
    /// before it is published; on error the previous set keeps serving, untouched. An empty set
    /// is valid: picks from it fail with [`PickError::NoneAvailable`] until backends are added.
    ///
    /// For a change relative to the current set (one backend more, one weight changed) use
    /// [`add`](Self::add), [`remove`](Self::remove), [`set_weight`](Self::set_weight),
    /// [`set_state`](Self::set_state) or [`modify`](Self::modify): reading
    /// [`backends`](Self::backends), changing the copy and calling `update` loses the changes
    /// other writers publish in between.
    pub fn update(&self, backends: impl IntoIterator<Item = Backend>) -> Result<(), UpdateError> {
        let backends: Vec<Backend> = backends.into_iter().collect();
        // Validated and prepared before the publication lock is taken: a whole set does not
        // depend on the current one, so only its publication needs to be serialised.
        let prepared = prepare(&self.shared.strategy, &backends)?;
        let mut lives = self.shared.lives.lock();
        self.publish(&mut lives, backends, prepared);
        Ok(())
    }

    /// Changes the backend set in place: `f` gets the current set (in configuration order) and
    /// may change it freely; the result is validated, prepared and published as one update.
    ///
    /// `f` runs under the publication lock, so concurrent `modify` calls (and
    /// [`add`](Self::add), [`remove`](Self::remove) …, which are built on it) apply one after
    /// the other and none is lost; keep `f` short, and do not call back into the balancer's
    /// membership from it (that would deadlock). When the changed set is invalid, nothing is
    /// published, the previous set keeps serving and the error says why; when `f` leaves the
    /// set as it was, nothing is published either (the [`version`](Self::version) stays).
    ///
    /// ```
    /// use divvy::{Backend, Balancer, strategy::RoundRobin};
    ///
    /// let lb = Balancer::new(RoundRobin::new(), ["a", "b"].map(Backend::new))?;
    /// lb.modify(|set| {
    ///     set.retain(|b| b.id() != "a");
    ///     set.push(Backend::new("c").weight(2));
    /// })?;
    /// let ids: Vec<_> = lb.backends().iter().map(|b| b.id().to_owned()).collect();
    /// assert_eq!(ids, ["b", "c"]);
    /// # Ok::<(), divvy::UpdateError>(())
    /// ```
    pub fn modify<R>(&self, f: impl FnOnce(&mut Vec<Backend>) -> R) -> Result<R, UpdateError> {
        self.try_modify(|set| Ok(f(set)))
    }

    /// As [`modify`](Self::modify), for a change that may itself fail: an `Err` from `f`
    /// publishes nothing and is returned as it is.
    pub(crate) fn try_modify<R>(
        &self,
        f: impl FnOnce(&mut Vec<Backend>) -> Result<R, UpdateError>,
    ) -> Result<R, UpdateError> {
        let mut lives = self.shared.lives.lock();
        // Under the publication lock the current snapshot is the newest: every publication
        // stores its snapshot before releasing this lock.
        let current = self.shared.current.load().backends.clone();
        let mut next = current.to_vec();
        let out = f(&mut next)?;
        if *next == *current {
            return Ok(out);
        }
        let prepared = prepare(&self.shared.strategy, &next)?;
        self.publish(&mut lives, next, prepared);
        Ok(out)
    }

    /// Publishes a validated, prepared set. Call with the publication lock held.
    fn publish(&self, lives: &mut Lives, backends: Vec<Backend>, prepared: Option<S::Prepared>) {
        let version = self.shared.current.load().version + 1;
        let registry = &self.shared.registry;
        let (snapshot, events) =
            build_snapshot(registry, lives, backends, prepared, version, false);
        {
            let guard = registry.lock();
            registry.recount(&guard, snapshot.members.iter().map(|m| &*m.live));
            registry.counted_version.store(version, Relaxed);
            self.shared.current.store(Arc::new(snapshot));
        }
        for e in events {
            registry.emit(Some(e));
        }
        registry.waiters.wake(Interest::Membership);
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
        (0..snap.members.len())
            .map(|i| member_stats(&view, &snap.members[i], i))
            .collect()
    }

    /// Calls `f` with the statistics and latency histogram of every backend of the current set.
    #[cfg(feature = "prometheus")]
    pub(crate) fn visit_stats(
        &self,
        f: &mut dyn FnMut(&BackendStats, &crate::metrics::LatencyHistogram),
    ) {
        let snap = self.shared.current.load();
        let view = View::new(&snap.members, &[], &self.shared.registry);
        for (i, m) in snap.members.iter().enumerate() {
            f(&member_stats(&view, m, i), &m.live.latency_histogram);
        }
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

/// The pick's `tracing` event: at trace level for a backend chosen, debug for none. With no
/// subscriber (or one that does not want them) this is one relaxed load of tracing's global
/// level filter and a compare.
#[cfg(feature = "tracing")]
#[inline(always)]
fn trace_pick(strategy: &'static str, picked: &Result<Pick, PickError>) {
    match picked {
        Ok(pick) => tracing::trace!(strategy, backend = pick.id(), "divvy pick"),
        Err(error) => tracing::debug!(strategy, %error, "divvy pick found no backend"),
    }
}

/// One member's statistics, read from its live state.
fn member_stats(view: &View<'_>, m: &Member, i: usize) -> BackendStats {
    let live = &m.live;
    let flags = live.flags.load(Relaxed);
    let ejections = {
        let machine = live.machine.lock();
        (machine.max_fails_ejections, machine.ejections)
    };
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
        ejections: ejections.0 + ejections.1,
        max_fails_ejections: ejections.0,
        consecutive_ejections: ejections.1,
        consecutive_failures: live.consecutive_failures.load(Relaxed),
        latency_ewma: live
            .latency_ewma_nanos()
            .map(|n| Duration::from_nanos(n as u64)),
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
        let picked = match self.balancer.pick_from(snap, ctx) {
            Ok(p) => Ok(p),
            Err(e) => {
                let snap = snap.clone();
                self.balancer.retry_if_stale(&snap, ctx, e)
            }
        };
        #[cfg(feature = "tracing")]
        trace_pick(self.balancer.shared.strategy.name(), &picked);
        picked
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

/// Validates a set and lets the strategy prepare it; the empty set needs no preparation (a
/// balancer publishes it with no strategy state, and picks from it fail before the strategy is
/// asked).
fn prepare<S: Strategy>(
    strategy: &S,
    backends: &[Backend],
) -> Result<Option<S::Prepared>, UpdateError> {
    if backends.is_empty() {
        return Ok(None);
    }
    strategy.prepare(&BackendSet::new(backends)?).map(Some)
}

/// Builds the members of a validated set, reusing live state by identity. The caller recounts
/// health under the registry lock, publishes, then emits the returned events.
fn build_snapshot<P>(
    registry: &Arc<Registry>,
    lives: &mut Lives,
    backends: Vec<Backend>,
    prepared: Option<P>,
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
        let kept = lives
            .current
            .remove(b.id())
            .or_else(|| lives.departed.remove(b.id()));
        let fresh = kept.is_none();
        let live = match kept {
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
        // Most publications change one backend or none: the configured state of the others is
        // what they already apply.
        if fresh || live.admin_config.load(Relaxed) != b.get_state().to_u8() {
            events.extend(registry.apply_config(&live, b.get_state(), now));
        }
        by_key.insert(b.key(), i as u32);
        next.insert(b.id_arc().clone(), live.clone());
        members.push(Member {
            backend: b.clone(),
            live,
        });
    }
    for (id, gone) in lives.current.drain() {
        gone.in_set.store(false, Relaxed);
        lives.departed.insert(id, gone);
    }
    lives.departed.retain(|_, live| live.in_flight() > 0);
    lives.current = next;
    let snapshot = Snapshot {
        members: members.into_boxed_slice(),
        by_key,
        backends: backends.into(),
        prepared,
        version,
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
