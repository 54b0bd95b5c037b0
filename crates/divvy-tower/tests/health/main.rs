//! Active health checks against real backends on loopback, and the checker's schedule under
//! tokio's paused time (custom probes only: no sockets there).

mod support;

use std::sync::atomic::{AtomicUsize, Ordering::SeqCst};
use std::sync::Arc;
use std::time::Duration;

use divvy::{Backend, HealthState};
use divvy_tower::health::{ConfigError, HealthChecker, ProbeError};
use parking_lot::Mutex;
use tokio::time::Instant;

use support::{balancer, eventually, HttpBackend, Recorder, TcpBackend, FALL, RISE};

const INTERVAL: Duration = Duration::from_millis(25);
const TIMEOUT: Duration = Duration::from_millis(200);
/// Room for the scheduler of a loaded two-core machine; the bounds below are otherwise exact.
const SLACK: Duration = Duration::from_millis(500);

fn fast(mut checker: HealthChecker) -> HealthChecker {
    checker.interval(INTERVAL).timeout(TIMEOUT);
    checker
}

/// The longest `n` probes can take to land after a change: the round in flight may have started
/// just before it (one probe timeout), then `n` rounds of at most `interval × 1.1`.
fn within(n: u32) -> Duration {
    INTERVAL.mul_f64(1.1) * n + TIMEOUT + SLACK
}

/// The shortest: `n - 1` gaps of at least `interval × 0.9` between the `n` rounds.
fn at_least(n: u32) -> Duration {
    INTERVAL.mul_f64(0.9) * (n - 1)
}

// === real sockets ===

#[tokio::test]
async fn a_backend_that_stops_listening_fails_within_fall_intervals_and_recovers_within_rise() {
    let mut backend = TcpBackend::start().await;
    let id = backend.id();
    let lb = balancer([id.clone()]);
    let rec = Recorder::default();
    let mut checker = fast(HealthChecker::tcp());
    rec.install(&mut checker);
    let handle = checker.spawn(lb.clone()).unwrap();
    eventually("a first passing probe", within(1), || rec.passed(&id) > 0).await;
    assert_eq!(lb.health(&id), Ok(HealthState::Healthy));

    // Timed from before the change: a round that runs while the listener closes counts.
    let t0 = Instant::now();
    backend.stop().await;
    eventually("failing after the listener closed", within(FALL), || {
        lb.health(&id) == Ok(HealthState::Failing)
    })
    .await;
    let took = t0.elapsed();
    assert!(
        took >= at_least(FALL),
        "failing after {took:?}: fewer than {FALL} rounds"
    );
    assert!(rec.failed(&id) >= FALL as usize);

    let t0 = Instant::now();
    backend.listen().await;
    eventually("healthy after listening again", within(RISE), || {
        lb.health(&id) == Ok(HealthState::Healthy)
    })
    .await;
    let took = t0.elapsed();
    assert!(
        took >= at_least(RISE),
        "healthy after {took:?}: fewer than {RISE} rounds"
    );
    handle.shutdown().await;
}

#[tokio::test]
async fn an_http_backend_answering_500_fails_and_answering_200_recovers() {
    let backend = HttpBackend::start(500).await;
    let id = backend.id();
    let lb = balancer([id.clone()]);
    let handle = fast(HealthChecker::http("/healthz"))
        .spawn(lb.clone())
        .unwrap();

    eventually("failing on 500", within(FALL), || {
        lb.health(&id) == Ok(HealthState::Failing)
    })
    .await;
    backend.status.store(200, SeqCst);
    eventually("healthy on 200", within(RISE), || {
        lb.health(&id) == Ok(HealthState::Healthy)
    })
    .await;
    handle.shutdown().await;
}

#[tokio::test]
async fn http_probes_send_the_configured_path_and_host_header() {
    let backend = HttpBackend::start(200).await;
    let lb = balancer([backend.id()]);
    let mut checker = fast(HealthChecker::http("/status?deep=1"));
    checker.host("app.example");
    let handle = checker.spawn(lb.clone()).unwrap();
    eventually("a request", within(1), || backend.seen.lock().is_some()).await;
    assert_eq!(
        backend.seen.lock().clone(),
        Some(("/status?deep=1".to_owned(), "app.example".to_owned()))
    );
    handle.shutdown().await;

    // Without a configured host, the Host header is the backend's identity.
    *backend.seen.lock() = None;
    let handle = fast(HealthChecker::http("/")).spawn(lb.clone()).unwrap();
    eventually("a request", within(1), || backend.seen.lock().is_some()).await;
    assert_eq!(
        backend.seen.lock().clone(),
        Some(("/".to_owned(), backend.id()))
    );
    handle.shutdown().await;
}

#[tokio::test]
async fn a_status_outside_a_narrowed_range_fails_the_probe() {
    let backend = HttpBackend::start(204).await;
    let id = backend.id();
    let lb = balancer([id.clone()]);
    let statuses = Arc::new(Mutex::new(Vec::new()));
    let mut checker = fast(HealthChecker::http("/"));
    let s = statuses.clone();
    checker.expect_status(200..=200).on_probe(move |r| {
        if let Err(ProbeError::Status(code)) = &r.outcome {
            s.lock().push(*code);
        }
    });
    let handle = checker.spawn(lb.clone()).unwrap();
    eventually("failing on 204", within(FALL), || {
        lb.health(&id) == Ok(HealthState::Failing)
    })
    .await;
    assert!(statuses.lock().iter().all(|&c| c == 204));
    handle.shutdown().await;
}

#[tokio::test]
async fn a_backend_added_by_update_gets_probed_and_a_removed_one_no_longer() {
    let a = TcpBackend::start().await;
    let b = TcpBackend::start().await;
    let lb = balancer([a.id()]);
    let rec = Recorder::default();
    let mut checker = fast(HealthChecker::tcp());
    rec.install(&mut checker);
    let handle = checker.spawn(lb.clone()).unwrap();
    eventually("a probed", within(1), || rec.passed(&a.id()) > 0).await;
    assert_eq!(rec.passed(&b.id()), 0);

    lb.update([a.id(), b.id()].map(Backend::new)).unwrap();
    eventually("b probed after it was added", within(1), || {
        rec.passed(&b.id()) > 0
    })
    .await;
    assert!(b.accepted.load(SeqCst) > 0);

    // No await between the update and the count: on this single-threaded runtime the checker
    // cannot report in between.
    lb.update([Backend::new(b.id())]).unwrap();
    let a_before = rec.passed(&a.id());
    let b_before = rec.passed(&b.id());
    eventually("three more rounds for b", within(3), || {
        rec.passed(&b.id()) >= b_before + 3
    })
    .await;
    assert_eq!(
        rec.passed(&a.id()),
        a_before,
        "a was probed after its removal"
    );
    handle.shutdown().await;
}

#[tokio::test]
async fn after_shutdown_returns_no_probe_result_is_reported() {
    let backend = TcpBackend::start().await;
    let lb = balancer([backend.id()]);
    let first = Recorder::default();
    let mut checker = fast(HealthChecker::tcp());
    first.install(&mut checker);
    let handle = checker.spawn(lb.clone()).unwrap();
    eventually("two probes", within(2), || first.total() >= 2).await;
    handle.shutdown().await;
    let reported = first.total();

    // A second checker on the same backend witnesses that time went on: five of its rounds.
    let second = Recorder::default();
    let mut witness = fast(HealthChecker::tcp());
    second.install(&mut witness);
    let witness = witness.spawn(lb.clone()).unwrap();
    eventually("five witness rounds", within(5), || second.total() >= 5).await;
    assert_eq!(first.total(), reported);
    witness.shutdown().await;
}

#[tokio::test]
async fn a_backend_named_by_host_and_port_is_resolved_before_it_is_probed() {
    let backend = TcpBackend::start().await;
    let id = format!("localhost:{}", backend.addr.port());
    let lb = balancer([id.clone()]);
    let rec = Recorder::default();
    let mut checker = fast(HealthChecker::tcp());
    rec.install(&mut checker);
    let handle = checker.spawn(lb.clone()).unwrap();
    eventually("a passing probe of a named backend", within(1), || {
        rec.passed(&id) > 0
    })
    .await;
    handle.shutdown().await;
}

#[tokio::test]
async fn a_probe_port_replaces_the_backends_own_port() {
    let backend = TcpBackend::start().await;
    let closed = TcpBackend::start().await;
    let mut closed = closed;
    closed.stop().await; // a port on which nothing listens
    let id = closed.id();
    let lb = balancer([id.clone()]);
    let rec = Recorder::default();
    let mut checker = fast(HealthChecker::tcp());
    checker.port(backend.addr.port());
    rec.install(&mut checker);
    let handle = checker.spawn(lb.clone()).unwrap();
    eventually("a passing probe on the probe port", within(1), || {
        rec.passed(&id) > 0
    })
    .await;
    assert_eq!(rec.failed(&id), 0);
    handle.shutdown().await;
}

#[tokio::test]
async fn invalid_settings_are_refused_before_anything_is_spawned() {
    let lb = balancer(["127.0.0.1:1".to_owned()]);
    let err = HealthChecker::http("no-slash")
        .spawn(lb.clone())
        .unwrap_err();
    assert_eq!(
        err,
        ConfigError::InvalidPath {
            path: "no-slash".into()
        }
    );
    let err = HealthChecker::tcp()
        .timeout(Duration::ZERO)
        .spawn(lb)
        .unwrap_err();
    assert_eq!(err, ConfigError::ZeroTimeout);
}

// === paused time, custom probes ===

/// A custom checker that records when each probe of each backend starts.
fn timed_checker(log: Arc<Mutex<Vec<(String, Instant)>>>, probe_time: Duration) -> HealthChecker {
    HealthChecker::custom(move |b: Backend| {
        log.lock().push((b.id().to_owned(), Instant::now()));
        async move {
            tokio::time::sleep(probe_time).await;
            Ok(())
        }
    })
}

#[tokio::test(start_paused = true)]
async fn the_first_round_is_immediate_and_rounds_start_one_interval_apart() {
    let log = Arc::new(Mutex::new(Vec::new()));
    let lb = balancer(["a".to_owned()]);
    let mut checker = timed_checker(log.clone(), Duration::from_millis(300));
    checker.interval(Duration::from_secs(1)).jitter_percent(0);
    let start = Instant::now();
    let handle = checker.spawn(lb).unwrap();
    tokio::time::sleep(Duration::from_millis(3500)).await;
    handle.shutdown().await;
    let at: Vec<Duration> = log.lock().iter().map(|(_, t)| *t - start).collect();
    // Rounds start from the previous start, not from its end: the probe's 300 ms do not add up.
    let secs = |s: &[u64]| {
        s.iter()
            .map(|&s| Duration::from_secs(s))
            .collect::<Vec<_>>()
    };
    assert_eq!(at, secs(&[0, 1, 2, 3]));
}

#[tokio::test(start_paused = true)]
async fn jittered_rounds_stay_within_ten_percent_of_the_interval_and_vary() {
    let log = Arc::new(Mutex::new(Vec::new()));
    let lb = balancer(["a".to_owned()]);
    let mut checker = timed_checker(log.clone(), Duration::ZERO);
    checker.interval(Duration::from_secs(1));
    let handle = checker.spawn(lb).unwrap();
    tokio::time::sleep(Duration::from_secs(40)).await;
    handle.shutdown().await;
    let at: Vec<Instant> = log.lock().iter().map(|(_, t)| *t).collect();
    let gaps: Vec<Duration> = at.windows(2).map(|w| w[1] - w[0]).collect();
    assert!(gaps.len() >= 30);
    for g in &gaps {
        assert!(
            (Duration::from_millis(900)..=Duration::from_millis(1100)).contains(g),
            "gap {g:?}"
        );
    }
    assert!(gaps.iter().any(|g| *g != gaps[0]), "no jitter: {gaps:?}");
}

#[tokio::test(start_paused = true)]
async fn a_probe_slower_than_the_timeout_fails_at_exactly_the_timeout() {
    let lb = balancer(["slow".to_owned()]);
    let reports = Arc::new(Mutex::new(Vec::new()));
    let mut checker = HealthChecker::custom(|_| async {
        tokio::time::sleep(Duration::from_secs(60)).await;
        Ok(())
    });
    let r = reports.clone();
    checker
        .interval(Duration::from_secs(5))
        .timeout(Duration::from_secs(2))
        .on_probe(move |p| {
            r.lock().push((
                matches!(p.outcome, Err(ProbeError::Timeout(t)) if t == Duration::from_secs(2)),
                p.elapsed,
            ))
        });
    let handle = checker.spawn(lb.clone()).unwrap();
    // Rounds start at 0, 5 and 10 s; the third result lands at 12 s.
    tokio::time::sleep(Duration::from_secs(13)).await;
    handle.shutdown().await;
    assert_eq!(
        *reports.lock(),
        vec![(true, Duration::from_secs(2)); FALL as usize]
    );
    assert_eq!(lb.health("slow"), Ok(HealthState::Failing));
}

#[tokio::test(start_paused = true)]
async fn probes_run_concurrently_up_to_the_limit() {
    let in_flight = Arc::new(AtomicUsize::new(0));
    let most = Arc::new(AtomicUsize::new(0));
    let (f, m) = (in_flight.clone(), most.clone());
    let mut checker = HealthChecker::custom(move |_| {
        let (f, m) = (f.clone(), m.clone());
        async move {
            let now = f.fetch_add(1, SeqCst) + 1;
            m.fetch_max(now, SeqCst);
            tokio::time::sleep(Duration::from_millis(100)).await;
            f.fetch_sub(1, SeqCst);
            Ok(())
        }
    });
    let rec = Recorder::default();
    rec.install(&mut checker);
    checker.interval(Duration::from_secs(10)).concurrency(3);
    let lb = balancer((0..10).map(|i| format!("b{i}")));
    let handle = checker.spawn(lb).unwrap();
    // Ten 100 ms probes, three at a time: four waves, ending at 100, 200, 300 and 400 ms.
    tokio::time::sleep(Duration::from_millis(399)).await;
    assert_eq!(rec.total(), 9);
    tokio::time::sleep(Duration::from_millis(2)).await;
    assert_eq!(rec.total(), 10);
    assert_eq!(most.load(SeqCst), 3);
    handle.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn shutdown_ends_the_task_and_nothing_is_reported_after_it() {
    let rec = Recorder::default();
    let mut checker = HealthChecker::custom(|_| async { Ok(()) });
    checker.interval(Duration::from_secs(1));
    rec.install(&mut checker);
    let handle = checker.spawn(balancer(["a".to_owned()])).unwrap();
    tokio::time::sleep(Duration::from_millis(2500)).await;
    assert_eq!(rec.total(), 3);
    handle.shutdown().await;
    tokio::time::sleep(Duration::from_secs(60)).await;
    assert_eq!(rec.total(), 3);
}

#[tokio::test(start_paused = true)]
async fn dropping_the_handle_stops_probing() {
    let rec = Recorder::default();
    let mut checker = HealthChecker::custom(|_| async { Ok(()) });
    checker.interval(Duration::from_secs(1));
    rec.install(&mut checker);
    let handle = checker.spawn(balancer(["a".to_owned()])).unwrap();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(rec.total(), 2);
    drop(handle);
    tokio::time::sleep(Duration::from_secs(60)).await;
    assert_eq!(rec.total(), 2);
}

#[tokio::test(start_paused = true)]
async fn a_failing_custom_probe_marks_the_backend_failing_after_fall_rounds() {
    let lb = balancer(["a".to_owned(), "b".to_owned()]);
    let mut checker = HealthChecker::custom(|b: Backend| async move {
        if b.id() == "a" {
            Err(ProbeError::other("not serving"))
        } else {
            Ok(())
        }
    });
    checker.interval(Duration::from_secs(1)).jitter_percent(0);
    let handle = checker.spawn(lb.clone()).unwrap();
    // Rounds at 0 and 1 s: two failures, one short of `fall`.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(lb.health("a"), Ok(HealthState::Healthy));
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(lb.health("a"), Ok(HealthState::Failing));
    assert_eq!(lb.health("b"), Ok(HealthState::Healthy));
    handle.shutdown().await;
}
