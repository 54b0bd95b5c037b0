//! The per-backend state machine: every transition, with the rule it implements.

use std::sync::atomic::Ordering::Relaxed;
use std::time::Duration;

use crate::backend::AdminState;
use crate::clock::duration_to_nanos;
use crate::health::config::StartState;
use crate::health::registry::{Cause, HealthEvent, HealthState, Registry};
use crate::live::{flag, Live, NO_OVERRIDE};

/// What a backend's transitions need beyond its atomic flags. Guarded by `Live::machine`.
#[derive(Debug, Default)]
pub(crate) struct Machine {
    /// Active probe streaks.
    probe_passes: u32,
    probe_fails: u32,
    /// nginx `peer->fails`, `peer->accessed`, `peer->checked` (nanoseconds).
    fails: u32,
    accessed: u64,
    checked: u64,
    /// Passive ejections so far (the k in `base_ejection_time × k`).
    pub(crate) ejections: u32,
    /// The length of the ejection in force, reused as the half-open window.
    ejection_len: u64,
    /// A half-open request was let through since the last ejection.
    probing: bool,
    /// A probe result was reported: the first one is always delivered to subscribers.
    probed: bool,
}

impl Registry {
    /// A passive outcome reported through a [`Pick`](crate::Pick).
    pub(crate) fn on_outcome(&self, live: &Live, ok: bool) {
        if ok {
            live.successes.fetch_add(1, Relaxed);
            // Fast path: nothing on record, nothing to reset.
            if live.consecutive_failures.load(Relaxed) == 0
                && live.flags.load(Relaxed) & (flag::HAS_FAILS | flag::EJECTED) == 0
            {
                return;
            }
            live.consecutive_failures.store(0, Relaxed);
            let now = self.now_nanos();
            let mut m = live.machine.lock();
            let flags = live.flags.load(Relaxed);
            let mut new = flags;
            // nginx: `if (peer->accessed < peer->checked) peer->fails = 0;` a success counts only
            // when the backend was picked after its last failure's window had passed.
            if m.fails > 0 && m.accessed < m.checked {
                m.fails = 0;
                new &= !flag::HAS_FAILS;
            }
            if flags & flag::EJECTED != 0
                && m.probing
                && (m.fails == 0 || self.config.max_fails == 0)
            {
                m.probing = false;
                new &= !(flag::EJECTED | flag::OUTLIER);
                new = self.begin_slow_start(live, new, now);
            }
            self.commit(live, m, new, Cause::Recovered, now);
        } else {
            live.failures.fetch_add(1, Relaxed);
            let consecutive = live.consecutive_failures.fetch_add(1, Relaxed) + 1;
            let now = self.now_nanos();
            let mut m = live.machine.lock();
            let flags = live.flags.load(Relaxed);
            let mut new = flags;
            let mut eject_for: Option<u64> = None;
            if self.config.max_fails > 0 {
                // nginx: fails++, accessed = checked = now; at max_fails the peer is skipped
                // while `now - checked <= fail_timeout`.
                m.fails = m.fails.saturating_add(1);
                m.accessed = now;
                m.checked = now;
                new |= flag::HAS_FAILS;
                if m.fails >= self.config.max_fails {
                    eject_for = Some(duration_to_nanos(self.config.fail_timeout));
                }
            }
            if let Some(limit) = self.config.consecutive_failures {
                let half_open_failed = flags & flag::OUTLIER != 0 && m.probing;
                if half_open_failed
                    || (consecutive >= limit
                        && flags & flag::OUTLIER == 0
                        && self.may_eject_outlier())
                {
                    m.ejections = m.ejections.saturating_add(1);
                    let len = self.config.base_ejection_time.saturating_mul(m.ejections);
                    let len = duration_to_nanos(len.min(self.config.max_ejection_time));
                    eject_for = Some(eject_for.map_or(len, |l| l.max(len)));
                    new |= flag::OUTLIER;
                    live.consecutive_failures.store(0, Relaxed);
                }
            }
            if let Some(len) = eject_for {
                m.probing = false;
                m.ejection_len = len;
                new |= flag::EJECTED;
                new &= !flag::SLOW_START;
                live.ejected_until.store(now.saturating_add(len), Relaxed);
            }
            self.commit(live, m, new, Cause::PassiveFailures, now);
        }
    }

    /// A pick chose a backend with failures on record or an expired ejection: nginx updates
    /// `checked` here, which both opens the half-open window and lets the next success reset
    /// `fails`.
    pub(crate) fn on_picked(&self, live: &Live) {
        let now = self.now_nanos();
        let mut m = live.machine.lock();
        let fail_timeout = duration_to_nanos(self.config.fail_timeout);
        if m.fails > 0 && now.saturating_sub(m.checked) > fail_timeout {
            m.checked = now;
        }
        if live.flags.load(Relaxed) & flag::EJECTED != 0 && now > live.ejected_until.load(Relaxed) {
            // Claim the half-open request: others skip the backend for another window.
            m.probing = true;
            m.checked = now;
            live.ejected_until
                .store(now.saturating_add(m.ejection_len), Relaxed);
        }
    }

    /// An active probe result.
    pub(crate) fn on_probe(&self, live: &Live, ok: bool) {
        let now = self.now_nanos();
        let mut m = live.machine.lock();
        let first = !std::mem::replace(&mut m.probed, true);
        let flags = live.flags.load(Relaxed);
        let mut new = flags;
        if ok {
            m.probe_fails = 0;
            m.probe_passes = m.probe_passes.saturating_add(1);
            if flags & flag::FAILING != 0 && m.probe_passes >= self.config.rise {
                new &= !flag::FAILING;
            }
            // An unchecked backend's first pass makes it healthy at once, as Envoy's first check
            // of a new host.
            new &= !flag::UNCHECKED;
            // A passing probe lifts a passive ejection, as Envoy does by default
            // (`successful_active_health_check_uneject_host`).
            if flags & flag::EJECTED != 0 {
                new &= !(flag::EJECTED | flag::OUTLIER | flag::HAS_FAILS);
                m.fails = 0;
                m.probing = false;
            }
            if flags & flag::UNHEALTHY != 0 && new & flag::UNHEALTHY == 0 {
                new = self.begin_slow_start(live, new, now);
            }
        } else {
            m.probe_passes = 0;
            m.probe_fails = m.probe_fails.saturating_add(1);
            // Likewise its first failure makes it failing at once.
            if m.probe_fails >= self.config.fall || flags & flag::UNCHECKED != 0 {
                new |= flag::FAILING;
                new &= !(flag::SLOW_START | flag::UNCHECKED);
            }
        }
        if first && new == flags {
            // Nothing changes, but a subscriber still learns that the backend was checked.
            let ev = {
                let _g = self.lock();
                live.in_set
                    .load(Relaxed)
                    .then(|| same(live, flags, Cause::ActiveCheck, now))
            };
            drop(m);
            self.emit(ev);
            return;
        }
        self.commit(live, m, new, Cause::ActiveCheck, now);
    }

    /// The start state of a backend that joins the set (a new identity).
    pub(crate) fn started(&self, live: &Live) {
        if self.config.start == StartState::Unchecked {
            live.flags.fetch_or(flag::UNCHECKED, Relaxed);
        }
    }

    /// Sets or clears (`None`) the operator override.
    pub(crate) fn set_override(&self, live: &Live, state: Option<AdminState>) {
        let now = self.now_nanos();
        let m = live.machine.lock();
        live.admin_override
            .store(state.map_or(NO_OVERRIDE, AdminState::to_u8), Relaxed);
        let flags = live.flags.load(Relaxed);
        let new = self.with_admin(live, flags, now);
        self.commit(live, m, new, Cause::Operator, now);
    }

    /// Applies the configured state of a (new) snapshot. Call with the registry lock held (the
    /// caller recounts afterwards).
    pub(crate) fn apply_config(
        &self,
        live: &Live,
        state: AdminState,
        now: u64,
    ) -> Option<HealthEvent> {
        let _m = live.machine.lock();
        live.admin_config.store(state.to_u8(), Relaxed);
        let old = live.flags.load(Relaxed);
        let new = self.with_admin(live, old, now);
        live.flags.store(new, Relaxed);
        event(live, old, new, Cause::Update, now)
    }

    /// Starts slow start for a backend that joins a running set.
    pub(crate) fn joined(&self, live: &Live, now: u64) {
        let flags = live.flags.load(Relaxed);
        live.flags
            .store(self.begin_slow_start(live, flags, now), Relaxed);
    }

    fn with_admin(&self, live: &Live, flags: u8, now: u64) -> u8 {
        let bits = match live.admin() {
            AdminState::Up => 0,
            AdminState::Drain => flag::DRAIN,
            AdminState::Down => flag::DOWN,
        };
        let new = (flags & !flag::ADMIN) | bits;
        if flags & flag::DOWN != 0 && new & flag::ADMIN == 0 && new & flag::UNHEALTHY == 0 {
            self.begin_slow_start(live, new, now)
        } else {
            new
        }
    }

    fn begin_slow_start(&self, live: &Live, flags: u8, now: u64) -> u8 {
        if self.config.slow_start == Duration::ZERO {
            return flags;
        }
        live.slow_start_from.store(now, Relaxed);
        flags | flag::SLOW_START
    }

    /// Publishes new flags under the registry lock and emits the event, after every lock is
    /// released (a subscriber may call back into the balancer).
    fn commit(
        &self,
        live: &Live,
        m: parking_lot::MutexGuard<'_, Machine>,
        new: u8,
        cause: Cause,
        now: u64,
    ) {
        let old = live.flags.load(Relaxed);
        if old == new {
            return;
        }
        let ev = {
            let g = self.lock();
            let old = self.store_flags(&g, live, new);
            // A backend no longer in the set (a pick that outlived its removal reported) changes
            // state silently: subscribers track the set.
            if live.in_set.load(Relaxed) {
                event(live, old, new, cause, now)
            } else {
                None
            }
        };
        drop(m);
        self.emit(ev);
    }

    /// The fraction of its weight a backend in slow start takes now, clearing the flag once the
    /// window ends.
    pub(crate) fn slow_start_factor(&self, live: &Live, now: u64) -> f64 {
        let window = duration_to_nanos(self.config.slow_start);
        let elapsed = now.saturating_sub(live.slow_start_from.load(Relaxed));
        if window == 0 || elapsed >= window {
            live.flags.fetch_and(!flag::SLOW_START, Relaxed);
            return 1.0;
        }
        let min = f64::from(self.config.slow_start_min_percent) / 100.0;
        min + (1.0 - min) * (elapsed as f64 / window as f64)
    }

    /// The effective weight of a backend in slow start (at least 1).
    pub(crate) fn slow_start_weight(&self, live: &Live, weight: u32, now: u64) -> u32 {
        ((f64::from(weight) * self.slow_start_factor(live, now)) as u32).clamp(1, weight)
    }
}

/// The event that reports a backend's state at subscription.
pub(crate) fn same_state(live: &Live, flags: u8, now: u64) -> HealthEvent {
    same(live, flags, Cause::Subscribed, now)
}

/// An event that reports a state without a change (`from == to`).
fn same(live: &Live, flags: u8, cause: Cause, now: u64) -> HealthEvent {
    let state = HealthState::from_flags(flags);
    HealthEvent {
        backend: live.id.clone(),
        from: state,
        to: state,
        cause,
        at: Duration::from_nanos(now),
    }
}

fn event(live: &Live, old: u8, new: u8, cause: Cause, now: u64) -> Option<HealthEvent> {
    let (from, to) = (HealthState::from_flags(old), HealthState::from_flags(new));
    (from != to).then(|| HealthEvent {
        backend: live.id.clone(),
        from,
        to,
        cause,
        at: Duration::from_nanos(now),
    })
}
