//! `Balance::backpressure`: `poll_ready` waits while no backend can take a request, and each
//! change that may free one wakes it.

use std::convert::Infallible;
use std::time::Duration;

use divvy::strategy::RoundRobin;
use divvy::{AdminState, Backend, Balancer, HealthConfig, Outcome};
use divvy_tower::track::Opaque;
use divvy_tower::Balance;
use tokio::sync::oneshot;
use tokio::time::Instant;
use tokio_test::{assert_pending, assert_ready_ok};
use tower::util::BoxCloneSyncService;
use tower::ServiceExt;
use tower_test::mock::Spawn;

use crate::support::bounded;

/// A backend whose answer waits for the request's own `oneshot`: the test decides when each
/// request ends.
type Endpoint = BoxCloneSyncService<oneshot::Receiver<()>, (), Infallible>;

fn endpoint(_: &Backend) -> Endpoint {
    BoxCloneSyncService::new(tower::service_fn(|rx: oneshot::Receiver<()>| async move {
        let _ = rx.await;
        Ok::<_, Infallible>(())
    }))
}

fn ok(_: &()) -> Outcome {
    Outcome::Success
}

type Lb = Balancer<RoundRobin>;

/// The balanced service under test: round robin over [`endpoint`]s, every answer a success.
type Waiting = Balance<RoundRobin, fn(&Backend) -> Endpoint, (), fn(&()) -> Outcome, Opaque>;

fn waiting(lb: &Lb) -> Spawn<Waiting> {
    let maker: fn(&Backend) -> Endpoint = endpoint;
    let classify: fn(&()) -> Outcome = ok;
    Spawn::new(
        Balance::new(lb.clone(), maker, (), classify)
            .track(Opaque)
            .backpressure(),
    )
}

fn no_panic() -> HealthConfig {
    HealthConfig::builder().panic_threshold(0).build()
}

#[tokio::test]
async fn a_full_backend_makes_readiness_wait_until_a_request_ends() {
    let lb = Balancer::new(RoundRobin::new(), [Backend::new("a").max_in_flight(1)]).unwrap();
    let mut svc = waiting(&lb);
    assert_ready_ok!(svc.poll_ready::<oneshot::Receiver<()>>());
    let (end, rx) = oneshot::channel();
    let first = tokio::spawn(svc.call(rx));
    assert_pending!(svc.poll_ready::<oneshot::Receiver<()>>());
    assert!(!svc.is_woken());
    end.send(()).unwrap();
    bounded(first).await.unwrap().unwrap();
    assert!(svc.is_woken());
    assert_ready_ok!(svc.poll_ready::<oneshot::Receiver<()>>());
}

#[tokio::test]
async fn every_backend_down_waits_until_the_operator_brings_one_back() {
    let mut b = Balancer::builder(RoundRobin::new());
    b.health(no_panic());
    let lb = b.build(["a", "b"].map(Backend::new)).unwrap();
    lb.set_admin_state("a", Some(AdminState::Down)).unwrap();
    lb.set_admin_state("b", Some(AdminState::Down)).unwrap();
    let mut svc = waiting(&lb);
    assert_pending!(svc.poll_ready::<oneshot::Receiver<()>>());
    lb.set_admin_state("b", None).unwrap();
    assert!(svc.is_woken());
    assert_ready_ok!(svc.poll_ready::<oneshot::Receiver<()>>());
}

#[tokio::test]
async fn an_empty_set_waits_until_a_backend_is_added() {
    let lb = Balancer::new(RoundRobin::new(), Vec::new()).unwrap();
    let mut svc = waiting(&lb);
    assert_pending!(svc.poll_ready::<oneshot::Receiver<()>>());
    lb.add(Backend::new("a")).unwrap();
    assert!(svc.is_woken());
    assert_ready_ok!(svc.poll_ready::<oneshot::Receiver<()>>());
}

#[tokio::test]
async fn without_backpressure_readiness_never_waits() {
    let lb = Balancer::new(RoundRobin::new(), Vec::new()).unwrap();
    let maker: fn(&Backend) -> Endpoint = endpoint;
    let classify: fn(&()) -> Outcome = ok;
    let mut svc = Spawn::new(Balance::new(lb, maker, (), classify).track(Opaque));
    assert_ready_ok!(svc.poll_ready::<oneshot::Receiver<()>>());
}

/// The balancer's clock is tokio's, so that paused time drives both the ejection and the wait.
struct TokioClock(Instant);

impl divvy::Clock for TokioClock {
    fn now(&self) -> Duration {
        self.0.elapsed()
    }
}

#[tokio::test(start_paused = true)]
async fn an_ejection_that_expires_ends_the_wait_at_its_expiry() {
    let mut b = Balancer::builder(RoundRobin::new());
    b.health(no_panic()).clock(TokioClock(Instant::now()));
    let lb = b.build([Backend::new("a")]).unwrap();
    lb.pick(&divvy::Context::new()).unwrap().failure();
    let start = Instant::now();
    let svc = waiting(&lb).into_inner();
    tokio::time::timeout(Duration::from_secs(60), svc.ready_oneshot())
        .await
        .expect("ready within the deadline")
        .unwrap();
    // nginx's `fail_timeout` (10 s), to the timer's millisecond.
    let waited = start.elapsed();
    assert!(
        waited >= Duration::from_secs(10) && waited <= Duration::from_millis(10_002),
        "{waited:?}"
    );
}
