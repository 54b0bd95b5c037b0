//! Sequences of operations on one balancer: updates with arbitrary sets (valid or not), picks
//! through `Balancer::pick` and a `Picker` with arbitrary contexts, outcomes and latencies, probe
//! results, clock steps and operator overrides. After every step:
//!
//! - nothing panicked;
//! - a pick went to a backend of the current set that was not excluded, was below its in-flight
//!   limit, was operator-enabled (or draining and the request's sticky target) and, for strategies
//!   without per-tier health, that `stats()` called available (which folds in panic mode);
//! - a failed pick happened only when `stats()` showed no available backend the request allows;
//! - every backend's in-flight count equals the guards held for it (so it returns to zero when
//!   they drop);
//! - an update is rejected exactly when `validate` rejects the set or the strategy returns a typed
//!   error, and a rejected update leaves `version()` and `backends()` unchanged;
//! - `report_probe` and `set_admin_state` fail exactly for identities outside the current set.
#![no_main]

use std::sync::Arc;
use std::time::Duration;

use arbitrary::Arbitrary;
use divvy::{
    validate, AdminState, Backend, BackendStats, Balancer, HealthConfig, HealthState, ManualClock,
    Outcome, Pick, PickError, Strategy, UpdateError,
};
use divvy_fuzz::{admin_state, backend_id, backends, BackendSpec, ContextSpec, StrategyKind};
use libfuzzer_sys::fuzz_target;

#[derive(Arbitrary, Debug)]
struct Input {
    strategy: StrategyKind,
    health: HealthSpec,
    initial: Vec<BackendSpec>,
    ops: Vec<Op>,
}

#[derive(Arbitrary, Debug)]
struct HealthSpec {
    rise: u8,
    fall: u8,
    max_fails: u8,
    fail_timeout_ms: u16,
    consecutive_failures: Option<u8>,
    base_ejection_ms: u16,
    max_ejection_ms: u16,
    max_ejection_percent: u8,
    slow_start_ms: u16,
    slow_start_min_percent: u8,
    panic_threshold: u8,
    latency_decay_ms: u16,
}

impl HealthSpec {
    fn config(&self) -> HealthConfig {
        let ms = |v: u16| Duration::from_millis(u64::from(v) * 10);
        HealthConfig::builder()
            .rise(u32::from(self.rise % 5))
            .fall(u32::from(self.fall % 5))
            .max_fails(u32::from(self.max_fails % 4))
            .fail_timeout(ms(self.fail_timeout_ms))
            .consecutive_failures(self.consecutive_failures.map(|n| u32::from(n % 6)))
            .base_ejection_time(ms(self.base_ejection_ms))
            .max_ejection_time(ms(self.max_ejection_ms))
            .max_ejection_percent(u32::from(self.max_ejection_percent))
            .slow_start(ms(self.slow_start_ms))
            .slow_start_min_percent(u32::from(self.slow_start_min_percent))
            .panic_threshold(u32::from(self.panic_threshold % 120))
            .latency_decay(ms(self.latency_decay_ms))
            .build()
    }
}

#[derive(Arbitrary, Debug)]
enum Op {
    Update(Vec<BackendSpec>),
    Pick {
        ctx: ContextSpec,
        hold: bool,
        picker: bool,
    },
    Release(u8),
    Report {
        guard: u8,
        success: bool,
        latency_ms: Option<u16>,
        end: bool,
    },
    Probe {
        name: u8,
        ok: bool,
    },
    Advance(u16),
    Admin {
        name: u8,
        state: Option<u8>,
    },
}

struct Held {
    pick: Pick,
    id: String,
}

struct Run<'a>(&'a Input);

impl divvy_fuzz::WithStrategy for Run<'_> {
    fn run<S: Strategy>(self, strategy: S) {
        let input = self.0;
        let clock = ManualClock::new();
        let initial = backends(&input.initial);
        let expected = validate(&initial);
        let mut builder = Balancer::builder(strategy);
        builder = builder.health(input.health.config()).clock(clock.clone());
        let lb = match builder.build(initial) {
            Ok(lb) => lb,
            Err(e) => {
                assert_rejection(&expected, &e);
                return;
            }
        };
        assert_eq!(expected, Ok(()), "an invalid initial set was accepted");
        // Failover, or any strategy over a set with more than one tier (routed by tier).
        let tiered = |lb: &Balancer<S>| {
            let set = lb.backends();
            input.strategy.tiered() || set.iter().any(|b| b.get_tier() != set[0].get_tier())
        };
        let mut picker = lb.picker();
        let mut held: Vec<Held> = Vec::new();

        for op in input.ops.iter().take(256) {
            match op {
                Op::Update(specs) => {
                    let set = backends(specs);
                    let expected = validate(&set);
                    let (version, before) = (lb.version(), lb.backends());
                    match lb.update(set.clone()) {
                        Ok(()) => {
                            assert_eq!(expected, Ok(()), "an invalid set was accepted");
                            assert_eq!(lb.version(), version + 1);
                            assert_eq!(ids(&lb.backends()), ids(&set));
                        }
                        Err(e) => {
                            assert_rejection(&expected, &e);
                            assert_eq!(
                                lb.version(),
                                version,
                                "a rejected update moved the version"
                            );
                            assert!(
                                Arc::ptr_eq(&lb.backends(), &before),
                                "a rejected update changed the set"
                            );
                        }
                    }
                }
                Op::Pick {
                    ctx,
                    hold,
                    picker: through_picker,
                } => {
                    let parts = ctx.parts();
                    let ctx = parts.context();
                    let before = lb.stats();
                    let tiered = tiered(&lb);
                    let result = if *through_picker {
                        picker.pick(&ctx)
                    } else {
                        lb.pick(&ctx)
                    };
                    match result {
                        Ok(pick) => {
                            let id = pick.backend().id().to_owned();
                            let s = before
                                .iter()
                                .find(|s| *s.id == *id)
                                .unwrap_or_else(|| panic!("picked {id}, not in the current set"));
                            assert!(
                                !parts.exclude.contains(&pick.backend().key()),
                                "picked excluded {id}"
                            );
                            if let Some(max) = pick.backend().get_max_in_flight() {
                                assert!(s.in_flight < max, "picked {id} at its in-flight limit");
                            }
                            let sticky = parts.sticky_id.as_deref() == Some(id.as_str());
                            match s.admin {
                                AdminState::Up => assert!(
                                    s.available || tiered,
                                    "picked {id}, which stats call unavailable: {s:?}"
                                ),
                                AdminState::Drain => {
                                    assert!(sticky, "picked draining {id} without pinning it")
                                }
                                AdminState::Down => panic!("picked {id}, which is down"),
                            }
                            if *hold {
                                held.push(Held { pick, id });
                            }
                        }
                        Err(PickError::NoneAvailable { total }) => {
                            assert_eq!(total, before.len());
                            let allowed = |s: &&BackendStats| {
                                s.available
                                    && (!tiered || s.health == HealthState::Healthy)
                                    && !parts.exclude.contains(&Backend::new(&*s.id).key())
                            };
                            if let Some(s) = before.iter().find(allowed) {
                                panic!("no pick although {} was available: {s:?}", s.id);
                            }
                        }
                        Err(e) => panic!("unexpected pick error {e:?}"),
                    }
                }
                Op::Release(i) => {
                    if !held.is_empty() {
                        held.swap_remove(usize::from(*i) % held.len());
                    }
                }
                Op::Report {
                    guard,
                    success,
                    latency_ms,
                    end,
                } => {
                    if !held.is_empty() {
                        let i = usize::from(*guard) % held.len();
                        let outcome = if *success {
                            Outcome::Success
                        } else {
                            Outcome::Failure
                        };
                        let latency = latency_ms.map(|ms| Duration::from_millis(u64::from(ms)));
                        if *end {
                            held.swap_remove(i).pick.record(outcome, latency);
                        } else {
                            held[i].pick.report(outcome, latency);
                        }
                    }
                }
                Op::Probe { name, ok } => {
                    let id = backend_id(*name);
                    let known = lb.backends().iter().any(|b| b.id() == id);
                    assert_eq!(lb.report_probe(&id, *ok).is_ok(), known);
                }
                Op::Advance(ms) => clock.advance(Duration::from_millis(u64::from(*ms) * 10)),
                Op::Admin { name, state } => {
                    let id = backend_id(*name);
                    let known = lb.backends().iter().any(|b| b.id() == id);
                    let state = state.map(admin_state);
                    assert_eq!(lb.set_admin_state(&id, state).is_ok(), known);
                }
            }
            assert_in_flight(&lb.stats(), &held);
        }

        drop(held);
        assert!(
            lb.stats().iter().all(|s| s.in_flight == 0),
            "in flight left after every guard dropped"
        );
    }
}

fn ids(set: &[Backend]) -> Vec<&str> {
    set.iter().map(Backend::id).collect()
}

/// A rejected set: the set-wide error `validate` gives, or the strategy's own typed error.
fn assert_rejection(expected: &Result<(), UpdateError>, got: &UpdateError) {
    match expected {
        Err(e) => assert_eq!(e, got),
        Ok(()) => assert!(
            matches!(got, UpdateError::Strategy { .. }),
            "a valid set was rejected with {got:?}"
        ),
    }
}

/// A removed backend's state outlives it while picks on it are held, so every held pick on a
/// backend of the set counts, even across its removal and re-adding.
fn assert_in_flight(stats: &[BackendStats], held: &[Held]) {
    for s in stats {
        let expected = held.iter().filter(|h| *h.id == *s.id).count();
        assert_eq!(s.in_flight as usize, expected, "in flight of {}", s.id);
    }
}

fuzz_target!(|input: Input| {
    input.strategy.with(Run(&input));
});
