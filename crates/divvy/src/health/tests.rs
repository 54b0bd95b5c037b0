//! Deterministic tests of every health rule, driven by a manual clock.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use proptest::prelude::*;

use crate::strategy::RoundRobin;
use crate::{
    AdminState, Backend, Balancer, Cause, Clock, Context, HealthConfig, HealthEvent, HealthState,
    ManualClock, PickError,
};

const A: &str = "10.0.0.1:80";
const B: &str = "10.0.0.2:80";
const C: &str = "10.0.0.3:80";
const D: &str = "10.0.0.4:80";

fn secs(s: u64) -> Duration {
    Duration::from_secs(s)
}

fn balancer(cfg: HealthConfig, ids: &[&str]) -> (Balancer<RoundRobin>, ManualClock) {
    let clock = ManualClock::new();
    let mut b = Balancer::builder(RoundRobin::new());
    b = b.health(cfg).clock(clock.clone());
    (
        b.build(ids.iter().map(|id| Backend::new(*id))).unwrap(),
        clock,
    )
}

fn no_passive() -> HealthConfig {
    HealthConfig::builder()
        .max_fails(0)
        .panic_threshold(0)
        .build()
}

/// Picks `n` times, dropping each guard, and returns the ids.
fn picks(lb: &Balancer<RoundRobin>, n: usize) -> Vec<String> {
    (0..n)
        .map(|_| lb.pick(&Context::new()).unwrap().id().to_owned())
        .collect()
}

/// Fails one request to `id` (picking until it comes up).
fn fail_on(lb: &Balancer<RoundRobin>, id: &str) {
    for _ in 0..64 {
        let p = lb.pick(&Context::new()).unwrap();
        if p.id() == id {
            p.failure();
            return;
        }
    }
    panic!("{id} was never picked");
}

fn succeed_on(lb: &Balancer<RoundRobin>, id: &str) -> bool {
    for _ in 0..64 {
        let p = lb.pick(&Context::new()).unwrap();
        if p.id() == id {
            p.success();
            return true;
        }
    }
    false
}

fn events(lb: &Balancer<RoundRobin>) -> Arc<Mutex<Vec<HealthEvent>>> {
    let log = Arc::new(Mutex::new(Vec::new()));
    let l = log.clone();
    lb.subscribe(move |e| l.lock().unwrap().push(e.clone()));
    log
}

// === active checks ===

#[test]
fn fall_consecutive_probe_failures_mark_a_backend_failing() {
    let cfg = HealthConfig::builder()
        .fall(3)
        .rise(2)
        .max_fails(0)
        .panic_threshold(0)
        .build();
    let (lb, _) = balancer(cfg, &[A, B]);
    lb.report_probe(A, false).unwrap();
    lb.report_probe(A, false).unwrap();
    assert_eq!(
        lb.health(A),
        Ok(HealthState::Healthy),
        "two failures are below fall = 3"
    );
    lb.report_probe(A, true).unwrap();
    lb.report_probe(A, false).unwrap();
    lb.report_probe(A, false).unwrap();
    assert_eq!(
        lb.health(A),
        Ok(HealthState::Healthy),
        "a pass resets the failure streak"
    );
    lb.report_probe(A, false).unwrap();
    assert_eq!(lb.health(A), Ok(HealthState::Failing));
    assert!(picks(&lb, 10).iter().all(|id| id == B));
}

#[test]
fn rise_consecutive_passes_bring_a_failing_backend_back() {
    let cfg = HealthConfig::builder()
        .fall(1)
        .rise(2)
        .max_fails(0)
        .panic_threshold(0)
        .build();
    let (lb, _) = balancer(cfg, &[A, B]);
    lb.report_probe(A, false).unwrap();
    assert_eq!(lb.health(A), Ok(HealthState::Failing));
    lb.report_probe(A, true).unwrap();
    assert_eq!(
        lb.health(A),
        Ok(HealthState::Failing),
        "one pass is below rise = 2"
    );
    lb.report_probe(A, false).unwrap();
    lb.report_probe(A, true).unwrap();
    assert_eq!(
        lb.health(A),
        Ok(HealthState::Failing),
        "a failure resets the pass streak"
    );
    lb.report_probe(A, true).unwrap();
    assert_eq!(lb.health(A), Ok(HealthState::Healthy));
}

#[test]
fn probing_an_unknown_backend_is_a_typed_error() {
    let (lb, _) = balancer(no_passive(), &[A]);
    let err = lb.report_probe("nope:1", true).unwrap_err();
    assert_eq!(
        err.to_string(),
        "backend `nope:1` is not in the current set"
    );
}

// === passive, nginx rule ===

#[test]
fn one_failure_disables_for_fail_timeout_with_nginx_defaults() {
    let (lb, clock) = balancer(HealthConfig::builder().panic_threshold(0).build(), &[A, B]);
    fail_on(&lb, A);
    assert_eq!(lb.health(A), Ok(HealthState::Ejected));
    clock.advance(secs(10));
    // nginx skips the peer while `now - checked <= fail_timeout`: 10 s exactly is still inside.
    assert!(picks(&lb, 6).iter().all(|id| id == B));
    clock.advance(Duration::from_nanos(1));
    let after = picks(&lb, 6);
    assert_eq!(
        after.iter().filter(|id| *id == A).count(),
        1,
        "exactly one half-open request: {after:?}"
    );
}

#[test]
fn max_fails_counts_failures_until_a_success_after_a_quiet_window() {
    let cfg = HealthConfig::builder()
        .max_fails(3)
        .fail_timeout(secs(10))
        .panic_threshold(0)
        .build();
    let (lb, clock) = balancer(cfg, &[A, B]);
    fail_on(&lb, A);
    fail_on(&lb, A);
    // A success within fail_timeout of the last failure does not reset nginx's counter.
    assert!(succeed_on(&lb, A));
    fail_on(&lb, A);
    assert_eq!(
        lb.health(A),
        Ok(HealthState::Ejected),
        "three failures within the window"
    );

    let (lb, clock2) = balancer(
        HealthConfig::builder()
            .max_fails(3)
            .panic_threshold(0)
            .build(),
        &[A, B],
    );
    fail_on(&lb, A);
    fail_on(&lb, A);
    clock2.advance(secs(11));
    // Picked after a quiet fail_timeout: `checked` moves, so this success resets the count.
    assert!(succeed_on(&lb, A));
    fail_on(&lb, A);
    fail_on(&lb, A);
    assert_eq!(
        lb.health(A),
        Ok(HealthState::Healthy),
        "the count restarted at the success"
    );
    fail_on(&lb, A);
    assert_eq!(lb.health(A), Ok(HealthState::Ejected));
    drop(clock);
}

#[test]
fn a_successful_half_open_request_restores_and_a_failed_one_waits_again() {
    let (lb, clock) = balancer(HealthConfig::builder().panic_threshold(0).build(), &[A, B]);
    fail_on(&lb, A);
    clock.advance(secs(11));
    fail_on(&lb, A); // the half-open request fails
    assert_eq!(lb.health(A), Ok(HealthState::Ejected));
    clock.advance(secs(5));
    assert!(
        picks(&lb, 6).iter().all(|id| id == B),
        "another full fail_timeout after the failed probe"
    );
    clock.advance(secs(6));
    assert!(succeed_on(&lb, A));
    assert_eq!(lb.health(A), Ok(HealthState::Healthy));
    assert_eq!(picks(&lb, 4).iter().filter(|id| *id == A).count(), 2);
}

#[test]
fn a_success_from_a_request_sent_before_the_ejection_does_not_restore() {
    let (lb, _) = balancer(HealthConfig::builder().panic_threshold(0).build(), &[A, B]);
    let early = loop {
        let p = lb.pick(&Context::new()).unwrap();
        if p.id() == A {
            break p;
        }
    };
    fail_on(&lb, A);
    early.success();
    assert_eq!(lb.health(A), Ok(HealthState::Ejected));
}

// === passive, Envoy rule ===

fn outlier(n: u32, pct: u32) -> HealthConfig {
    HealthConfig::builder()
        .max_fails(0)
        .consecutive_failures(Some(n))
        .base_ejection_time(secs(30))
        .max_ejection_time(secs(75))
        .max_ejection_percent(pct)
        .panic_threshold(0)
        .build()
}

#[test]
fn consecutive_failures_eject_and_a_success_resets_the_streak() {
    let (lb, _) = balancer(outlier(3, 100), &[A, B]);
    fail_on(&lb, A);
    fail_on(&lb, A);
    assert!(succeed_on(&lb, A));
    fail_on(&lb, A);
    fail_on(&lb, A);
    assert_eq!(lb.health(A), Ok(HealthState::Healthy));
    fail_on(&lb, A);
    assert_eq!(lb.health(A), Ok(HealthState::Ejected));
}

#[test]
fn ejection_time_grows_with_each_ejection_and_is_capped() {
    let (lb, clock) = balancer(outlier(1, 100), &[A, B]);
    let mut lengths = Vec::new();
    fail_on(&lb, A);
    for _ in 0..4 {
        let start = clock.now_secs();
        // Find when A takes traffic again, one second at a time; that pick is the half-open
        // request, and its failure re-ejects.
        'wait: loop {
            clock.advance(secs(1));
            for _ in 0..2 {
                let p = lb.pick(&Context::new()).unwrap();
                if p.id() == A {
                    p.failure();
                    break 'wait;
                }
            }
        }
        lengths.push(clock.now_secs() - start);
    }
    // 30 s, 60 s, then capped at 75 s; a re-ejection happens on the failed half-open request.
    assert_eq!(lengths, vec![31, 61, 76, 76]);
    assert_eq!(lb.stats()[0].ejections, 5);
}

#[test]
fn max_ejection_percent_keeps_a_floor_but_always_allows_one() {
    let ids = [A, B, C, D];
    // 25 % of 4 = 1 backend.
    let (lb, _) = balancer(outlier(1, 25), &ids);
    fail_on(&lb, A);
    fail_on(&lb, B);
    assert_eq!(lb.health(A), Ok(HealthState::Ejected));
    assert_eq!(
        lb.health(B),
        Ok(HealthState::Healthy),
        "a second ejection would exceed 25 %"
    );
    // 10 % of 4 rounds to 0, but one may always be ejected.
    let (lb, _) = balancer(outlier(1, 10), &ids);
    fail_on(&lb, C);
    assert_eq!(lb.health(C), Ok(HealthState::Ejected));
    fail_on(&lb, D);
    assert_eq!(lb.health(D), Ok(HealthState::Healthy));
}

#[test]
fn a_passing_active_probe_lifts_a_passive_ejection() {
    let (lb, _) = balancer(outlier(1, 100), &[A, B]);
    fail_on(&lb, A);
    assert_eq!(lb.health(A), Ok(HealthState::Ejected));
    lb.report_probe(A, true).unwrap();
    assert_eq!(lb.health(A), Ok(HealthState::Healthy));
}

// === slow start ===

#[test]
fn slow_start_ramps_effective_weight_linearly_from_the_minimum() {
    let cfg = HealthConfig::builder()
        .fall(1)
        .rise(1)
        .max_fails(0)
        .panic_threshold(0)
        .slow_start(secs(100))
        .slow_start_min_percent(10)
        .build();
    let clock = ManualClock::new();
    let mut b = Balancer::builder(RoundRobin::new());
    b = b.health(cfg).clock(clock.clone());
    let lb = b
        .build([Backend::new(A).weight(1000), Backend::new(B)])
        .unwrap();
    assert_eq!(
        lb.stats()[0].effective_weight,
        1000,
        "the initial set starts at full weight"
    );
    lb.report_probe(A, false).unwrap();
    lb.report_probe(A, true).unwrap();
    let at = |s: u64| {
        clock.set(clock.now().max(secs(s)));
        lb.stats()[0].effective_weight
    };
    assert_eq!(at(0), 100);
    assert_eq!(at(25), 325);
    assert_eq!(at(50), 550);
    assert_eq!(at(99), 991);
    assert_eq!(at(100), 1000);
    assert_eq!(at(200), 1000);
}

#[test]
fn a_backend_joining_a_running_set_slow_starts_but_the_first_set_does_not() {
    let cfg = HealthConfig::builder()
        .slow_start(secs(10))
        .slow_start_min_percent(50)
        .build();
    let clock = ManualClock::new();
    let mut b = Balancer::builder(RoundRobin::new());
    b = b.health(cfg).clock(clock.clone());
    let lb = b.build([Backend::new(A).weight(10)]).unwrap();
    lb.update([Backend::new(A).weight(10), Backend::new(B).weight(10)])
        .unwrap();
    let w: Vec<u32> = lb.stats().iter().map(|s| s.effective_weight).collect();
    assert_eq!(w, vec![10, 5]);
}

// === panic threshold ===

#[test]
fn below_the_panic_threshold_picks_ignore_health() {
    let cfg = HealthConfig::builder()
        .fall(1)
        .max_fails(0)
        .panic_threshold(50)
        .build();
    let (lb, _) = balancer(cfg, &[A, B, C, D]);
    lb.report_probe(A, false).unwrap();
    lb.report_probe(B, false).unwrap();
    // 2 of 4 healthy = 50 %: not below the threshold, failing backends are skipped.
    let p = picks(&lb, 8);
    assert!(p.iter().all(|id| id == C || id == D), "{p:?}");
    lb.report_probe(C, false).unwrap();
    // 1 of 4 = 25 % < 50 %: panic, every backend takes traffic.
    let p = picks(&lb, 8);
    for id in [A, B, C, D] {
        assert_eq!(p.iter().filter(|x| *x == id).count(), 2, "{p:?}");
    }
    lb.report_probe(C, true).unwrap();
    lb.report_probe(C, true).unwrap();
    let p = picks(&lb, 8);
    assert!(
        p.iter().all(|id| id == C || id == D),
        "panic ends when health returns: {p:?}"
    );
}

#[test]
fn operator_down_backends_are_excluded_even_in_panic() {
    let cfg = HealthConfig::builder()
        .fall(1)
        .max_fails(0)
        .panic_threshold(100)
        .build();
    let (lb, _) = balancer(cfg, &[A, B]);
    lb.set_admin_state(A, Some(AdminState::Down)).unwrap();
    lb.report_probe(B, false).unwrap();
    assert!(picks(&lb, 4).iter().all(|id| id == B));
}

#[test]
fn all_down_is_a_typed_error_then_recovery_after_fail_timeout() {
    let (lb, clock) = balancer(HealthConfig::builder().panic_threshold(0).build(), &[A, B]);
    fail_on(&lb, A);
    fail_on(&lb, B);
    assert_eq!(
        lb.pick(&Context::new()).unwrap_err(),
        PickError::NoneAvailable { total: 2 }
    );
    clock.advance(secs(11));
    // As in nginx, the next attempt after fail_timeout tries again rather than staying dark.
    let p = lb.pick(&Context::new()).unwrap();
    p.success();
    let ok = lb
        .stats()
        .iter()
        .filter(|s| s.health == HealthState::Healthy)
        .count();
    assert_eq!(ok, 1);
}

// === operator state ===

#[test]
fn operator_overrides_win_over_health_and_survive_updates() {
    let cfg = HealthConfig::builder()
        .fall(1)
        .max_fails(0)
        .panic_threshold(0)
        .build();
    let (lb, _) = balancer(cfg, &[A, B]);
    lb.set_admin_state(B, Some(AdminState::Drain)).unwrap();
    assert!(picks(&lb, 4).iter().all(|id| id == A));
    lb.update([Backend::new(A), Backend::new(B), Backend::new(C)])
        .unwrap();
    assert_eq!(lb.health(B), Ok(HealthState::Drain));
    // A draining backend still takes requests pinned to it.
    let pinned = lb
        .pick(&Context::new().sticky(Backend::new(B).key()))
        .unwrap();
    assert_eq!(pinned.id(), B);
    drop(pinned);
    lb.set_admin_state(B, None).unwrap();
    assert_eq!(lb.health(B), Ok(HealthState::Healthy));
    lb.set_admin_state(A, Some(AdminState::Up)).unwrap();
    lb.report_probe(A, false).unwrap();
    assert_eq!(
        lb.health(A),
        Ok(HealthState::Failing),
        "an Up override does not hide health"
    );
}

#[test]
fn configured_down_is_like_nginx_down() {
    let (lb, _) = balancer(no_passive(), &[A]);
    lb.update([Backend::new(A).state(AdminState::Down), Backend::new(B)])
        .unwrap();
    assert!(picks(&lb, 4).iter().all(|id| id == B));
    assert_eq!(lb.health(A), Ok(HealthState::Down));
}

// === events and stats ===

#[test]
fn transitions_are_delivered_to_subscribers_with_their_cause() {
    let cfg = HealthConfig::builder()
        .fall(1)
        .rise(1)
        .panic_threshold(0)
        .build();
    let (lb, clock) = balancer(cfg, &[A, B]);
    let log = events(&lb);
    lb.report_probe(A, false).unwrap();
    lb.report_probe(A, true).unwrap();
    fail_on(&lb, B);
    clock.advance(secs(11));
    assert!(succeed_on(&lb, B));
    lb.set_admin_state(A, Some(AdminState::Down)).unwrap();
    let got: Vec<(String, HealthState, HealthState, Cause)> = log
        .lock()
        .unwrap()
        .iter()
        .map(|e| (e.backend.to_string(), e.from, e.to, e.cause))
        .collect();
    use HealthState::*;
    assert_eq!(
        got,
        vec![
            (A.into(), Healthy, Failing, Cause::ActiveCheck),
            (A.into(), Failing, Healthy, Cause::ActiveCheck),
            (B.into(), Healthy, Ejected, Cause::PassiveFailures),
            (B.into(), Ejected, Healthy, Cause::Recovered),
            (A.into(), Healthy, Down, Cause::Operator),
        ]
    );
}

/// The log as (backend, from, to, cause) tuples.
fn log_of(log: &Arc<Mutex<Vec<HealthEvent>>>) -> Vec<(String, HealthState, HealthState, Cause)> {
    log.lock()
        .unwrap()
        .iter()
        .map(|e| (e.backend.to_string(), e.from, e.to, e.cause))
        .collect()
}

#[test]
fn the_first_probe_result_of_a_backend_is_delivered_even_when_it_changes_nothing() {
    let (lb, _) = balancer(HealthConfig::default(), &[A]);
    let log = events(&lb);
    lb.report_probe(A, true).unwrap();
    lb.report_probe(A, true).unwrap();
    lb.update([Backend::new(A), Backend::new(B)]).unwrap();
    lb.report_probe(B, true).unwrap();
    use HealthState::*;
    assert_eq!(
        log_of(&log),
        vec![
            (A.into(), Healthy, Healthy, Cause::ActiveCheck),
            (B.into(), Healthy, Healthy, Cause::ActiveCheck),
        ]
    );
}

#[test]
fn subscribing_with_the_current_state_reports_every_backend_first() {
    let cfg = HealthConfig::builder().fall(1).panic_threshold(0).build();
    let (lb, _) = balancer(cfg, &[A, B, C]);
    lb.report_probe(B, false).unwrap();
    lb.set_admin_state(C, Some(AdminState::Drain)).unwrap();
    let log = Arc::new(Mutex::new(Vec::new()));
    let l = log.clone();
    lb.subscribe_current(move |e| l.lock().unwrap().push(e.clone()));
    lb.report_probe(A, false).unwrap();
    use HealthState::*;
    assert_eq!(
        log_of(&log),
        vec![
            (A.into(), Healthy, Healthy, Cause::Subscribed),
            (B.into(), Failing, Failing, Cause::Subscribed),
            (C.into(), Drain, Drain, Cause::Subscribed),
            (A.into(), Healthy, Failing, Cause::ActiveCheck),
        ]
    );
}

#[test]
fn a_failure_reported_after_its_backend_was_removed_emits_nothing() {
    let (lb, _) = balancer(HealthConfig::default(), &[A, B]);
    let log = events(&lb);
    let held: Vec<_> = (0..2).map(|_| lb.pick(&Context::new()).unwrap()).collect();
    lb.update([Backend::new(C)]).unwrap();
    for p in held {
        p.failure();
    }
    assert_eq!(log_of(&log), vec![]);
    // The set's own transitions still are.
    fail_on(&lb, C);
    assert_eq!(log_of(&log).len(), 1);
}

#[test]
fn a_backend_removed_and_readded_while_requests_are_in_flight_keeps_its_state() {
    let (lb, _) = balancer(no_passive(), &[A, B]);
    let held: Vec<_> = (0..4).map(|_| lb.pick(&Context::new()).unwrap()).collect();
    lb.report_probe(A, false).unwrap();
    lb.update([Backend::new(B)]).unwrap();
    lb.update([Backend::new(A), Backend::new(B)]).unwrap();
    let a = |lb: &Balancer<RoundRobin>| lb.stats().into_iter().find(|s| *s.id == *A).unwrap();
    // Two requests to A are still out, and its failed probe still counts toward `fall`.
    assert_eq!((a(&lb).in_flight, a(&lb).picks), (2, 2));
    lb.report_probe(A, false).unwrap();
    lb.report_probe(A, false).unwrap();
    assert_eq!(lb.health(A), Ok(HealthState::Failing));
    drop(held);
    assert_eq!(a(&lb).in_flight, 0);
    // Once idle, a removed backend is forgotten: re-adding it starts afresh.
    lb.update([Backend::new(B)]).unwrap();
    lb.update([Backend::new(A), Backend::new(B)]).unwrap();
    assert_eq!((a(&lb).picks, lb.health(A)), (0, Ok(HealthState::Healthy)));
}

// === start state ===

fn unchecked(panic_threshold: u32) -> HealthConfig {
    HealthConfig::builder()
        .start(crate::StartState::Unchecked)
        .panic_threshold(panic_threshold)
        .build()
}

#[test]
fn an_unchecked_backend_takes_no_traffic_until_its_first_probe_passes() {
    let (lb, _) = balancer(unchecked(0), &[A, B]);
    let log = events(&lb);
    assert_eq!(lb.health(A), Ok(HealthState::Unchecked));
    assert_eq!(
        lb.pick(&Context::new()).unwrap_err(),
        PickError::NoneAvailable { total: 2 }
    );
    // One pass is enough (not `rise`), as Envoy's first check of a new host.
    lb.report_probe(A, true).unwrap();
    assert_eq!(picks(&lb, 3), [A, A, A]);
    // One failure is enough too: B is failing and needs `rise` passes to come back.
    lb.report_probe(B, false).unwrap();
    assert_eq!(lb.health(B), Ok(HealthState::Failing));
    lb.report_probe(B, true).unwrap();
    assert_eq!(lb.health(B), Ok(HealthState::Failing));
    lb.report_probe(B, true).unwrap();
    assert_eq!(lb.health(B), Ok(HealthState::Healthy));
    use HealthState::*;
    assert_eq!(
        log_of(&log),
        vec![
            (A.into(), Unchecked, Healthy, Cause::ActiveCheck),
            (B.into(), Unchecked, Failing, Cause::ActiveCheck),
            (B.into(), Failing, Healthy, Cause::ActiveCheck),
        ]
    );
}

#[test]
fn a_backend_joining_later_starts_unchecked_while_the_others_keep_serving() {
    let (lb, _) = balancer(unchecked(50), &[A, B]);
    lb.report_probe(A, true).unwrap();
    lb.report_probe(B, true).unwrap();
    lb.update([Backend::new(A), Backend::new(B), Backend::new(C)])
        .unwrap();
    assert_eq!(lb.health(C), Ok(HealthState::Unchecked));
    assert!(picks(&lb, 10).iter().all(|id| id != C));
    lb.report_probe(C, true).unwrap();
    assert!(picks(&lb, 3).iter().any(|id| id == C));
}

#[test]
fn unchecked_backends_count_as_unhealthy_so_panic_routing_reaches_them() {
    // Only A of A, B, C has passed a probe: 1 of 3 healthy is below 50 %, so all three serve.
    let (lb, _) = balancer(unchecked(50), &[A, B, C]);
    lb.report_probe(A, true).unwrap();
    let mut seen = picks(&lb, 6);
    seen.sort();
    seen.dedup();
    assert_eq!(seen, [A, B, C]);
}

#[test]
fn stats_count_picks_outcomes_in_flight_and_latency() {
    let (lb, _) = balancer(no_passive(), &[A]);
    let held = lb.pick(&Context::new()).unwrap();
    lb.pick(&Context::new())
        .unwrap()
        .record(crate::Outcome::Success, Some(Duration::from_millis(20)));
    lb.pick(&Context::new()).unwrap().failure();
    let s = &lb.stats()[0];
    assert_eq!(
        (s.picks, s.in_flight, s.successes, s.failures),
        (3, 1, 1, 1)
    );
    assert_eq!(s.latency_ewma, Some(Duration::from_millis(20)));
    drop(held);
    assert_eq!(lb.stats()[0].in_flight, 0);
}

#[test]
fn live_state_survives_updates_for_backends_that_stay() {
    let (lb, _) = balancer(no_passive(), &[A, B]);
    let held = lb.pick(&Context::new()).unwrap();
    let id = held.id().to_owned();
    lb.update([Backend::new(B).weight(3), Backend::new(A), Backend::new(C)])
        .unwrap();
    let s = lb.stats().into_iter().find(|s| *s.id == *id).unwrap();
    assert_eq!((s.in_flight, s.picks), (1, 1));
    drop(held);
    assert_eq!(lb.stats().iter().map(|s| s.in_flight).sum::<u32>(), 0);
}

// === invariants under random event sequences ===

#[derive(Clone, Debug)]
enum Event {
    Probe(usize, bool),
    Outcome(bool),
    Hold,
    Release,
    Advance(u64),
    Admin(usize, Option<AdminState>),
    Update(Vec<bool>),
}

fn event() -> impl Strategy<Value = Event> {
    let admin = prop_oneof![
        Just(None),
        Just(Some(AdminState::Up)),
        Just(Some(AdminState::Drain)),
        Just(Some(AdminState::Down))
    ];
    prop_oneof![
        3 => (0..5usize, any::<bool>()).prop_map(|(i, ok)| Event::Probe(i, ok)),
        4 => any::<bool>().prop_map(Event::Outcome),
        1 => Just(Event::Hold),
        1 => Just(Event::Release),
        2 => (0..20_000u64).prop_map(Event::Advance),
        1 => (0..5usize, admin).prop_map(|(i, s)| Event::Admin(i, s)),
        1 => proptest::collection::vec(any::<bool>(), 5).prop_map(Event::Update),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(200))]

    #[test]
    fn health_invariants_hold_under_random_events(
        events in proptest::collection::vec(event(), 1..120),
        passive in 0u32..3,
        panic in prop_oneof![Just(0u32), Just(50)],
    ) {
        let ids = ["b0:1", "b1:1", "b2:1", "b3:1", "b4:1"];
        let mut cfg = HealthConfig::builder();
        cfg.fall(1).rise(2).max_fails(passive).fail_timeout(secs(3)).panic_threshold(panic);
        if passive == 2 {
            cfg.consecutive_failures(Some(2)).max_ejection_percent(40).base_ejection_time(secs(2));
        }
        let clock = ManualClock::new();
        let mut b = Balancer::builder(RoundRobin::new());
        b = b.health(cfg.build()).clock(clock.clone());
        let lb = b.build(ids.iter().map(|id| Backend::new(*id))).unwrap();
        let mut held = Vec::new();
        let mut present = vec![true; 5];
        for e in events {
            match e {
                Event::Probe(i, ok) => { let _ = lb.report_probe(ids[i], ok); }
                Event::Outcome(ok) => {
                    if let Ok(p) = lb.pick(&Context::new()) {
                        if ok { p.success() } else { p.failure() }
                    }
                }
                Event::Hold => {
                    if let Ok(p) = lb.pick(&Context::new()) {
                        let i = ids.iter().position(|id| *id == p.id()).unwrap();
                        held.push((p, i));
                    }
                }
                Event::Release => { held.pop(); }
                Event::Advance(ms) => clock.advance(Duration::from_millis(ms)),
                Event::Admin(i, s) => { let _ = lb.set_admin_state(ids[i], s); }
                Event::Update(keep) => {
                    let set: Vec<Backend> = ids.iter().zip(&keep).filter(|(_, k)| **k).map(|(id, _)| Backend::new(*id)).collect();
                    if lb.update(set).is_ok() {
                        present = keep;
                    }
                }
            }
            let stats = lb.stats();
            prop_assert_eq!(stats.len(), present.iter().filter(|p| **p).count());
            // Counts the registry keeps match a recount from the states.
            let healthy = stats.iter().filter(|s| s.health == HealthState::Healthy).count() as u32;
            let eligible = stats.iter().filter(|s| s.admin == AdminState::Up).count() as u32;
            prop_assert_eq!(lb.shared_counts(), (eligible, healthy));
            let in_panic = panic > 0 && eligible > 0 && healthy * 100 < panic * eligible;
            for s in &stats {
                // An unhealthy backend is available only in panic or once its ejection expired;
                // an operator-disabled one never.
                if s.admin != AdminState::Up { prop_assert!(!s.available, "{:?}", s); }
                if s.health == HealthState::Failing && !in_panic { prop_assert!(!s.available, "{:?}", s); }
            }
            // A successful pick never returns an unavailable backend.
            if let Ok(p) = lb.pick(&Context::new()) {
                let s = stats.iter().find(|s| *s.id == *p.id()).unwrap();
                prop_assert!(s.available, "picked {:?}", s);
            }
            // A removed backend's state outlives it while picks on it are held, so a backend of
            // the same name that comes back meanwhile counts them again: every held pick on a
            // backend of the set counts, whatever updates came between.
            prop_assert_eq!(
                lb.stats().iter().map(|s| s.in_flight as usize).sum::<usize>(),
                held.iter().filter(|h| present[h.1]).count()
            );
        }
    }
}

/// The share of picks a weight-1 backend that just joined gets, at the start of slow start and
/// after the window, against one weight-1 backend at full weight.
fn slow_start_shares<S: crate::Strategy>(strategy: S) -> (f64, f64) {
    let cfg = HealthConfig::builder()
        .slow_start(secs(100))
        .slow_start_min_percent(10)
        .build();
    let clock = ManualClock::new();
    let mut b = Balancer::builder(strategy);
    b = b.health(cfg).clock(clock.clone());
    let lb = b.build([Backend::new(A)]).unwrap();
    lb.update([Backend::new(A), Backend::new(B)]).unwrap();
    let share = |lb: &Balancer<S>| {
        let n = 20_000;
        let hits = (0..n)
            .filter(|_| lb.pick(&Context::new()).unwrap().id() == B)
            .count();
        hits as f64 / n as f64
    };
    let early = share(&lb);
    clock.advance(secs(100));
    (early, share(&lb))
}

#[test]
fn slow_start_ramps_even_a_backend_of_weight_one() {
    use crate::strategy::{LeastConnections, PowerOfTwoChoices, Random, WeightedRoundRobin};
    let results = [
        ("random", slow_start_shares(Random::from_seed(7))),
        (
            "weighted round robin",
            slow_start_shares(WeightedRoundRobin::new()),
        ),
        (
            "least connections",
            slow_start_shares(LeastConnections::new()),
        ),
        ("p2c", slow_start_shares(PowerOfTwoChoices::from_seed(7))),
    ];
    for (name, (early, late)) in results {
        // At the start B takes 10 % of a weight against A's 100 %: 1/11 of the picks.
        assert!(
            (early - 1.0 / 11.0).abs() < 0.015,
            "{name}: share at t=0 is {early}"
        );
        assert!(
            (late - 0.5).abs() < 0.02,
            "{name}: share after the window is {late}"
        );
    }
}
