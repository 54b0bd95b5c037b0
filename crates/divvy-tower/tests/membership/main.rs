//! Membership from streams: a `Stream` of changes and a tower `Discover` feed a balancer, and a
//! balancer's membership is a `Discover`. Real tokio channels, waits bounded by a deadline,
//! progress observed through the balancer's own change notification (no sleeps).

use std::convert::Infallible;
use std::future::poll_fn;
use std::sync::Arc;
use std::time::Duration;

use divvy::strategy::RoundRobin;
use divvy::{AdminState, Backend, Balancer, Context, PickError};
use divvy_tower::discover::{feed, feed_discover, Change, Discovered, Membership, Removed};
use divvy_tower::track::Opaque;
use divvy_tower::Balance;
use futures_util::{Stream, StreamExt};
use tokio::sync::mpsc;
use tower::discover::Change as TowerChange;
use tower::{BoxError, ServiceExt};

const DEADLINE: Duration = Duration::from_secs(30);

async fn bounded<F: std::future::Future>(f: F) -> F::Output {
    tokio::time::timeout(DEADLINE, f)
        .await
        .expect("finished within the deadline")
}

/// Waits until the balancer publishes a set newer than `seen`; returns its version.
async fn published(lb: &Balancer<RoundRobin>, seen: u64) -> u64 {
    bounded(poll_fn(|cx| lb.poll_changed(seen, cx.waker()))).await
}

fn ids(lb: &Balancer<RoundRobin>) -> Vec<String> {
    lb.backends().iter().map(|b| b.id().to_owned()).collect()
}

/// The receiving end of a channel as a stream.
fn stream<T>(mut rx: mpsc::UnboundedReceiver<T>) -> impl Stream<Item = T> {
    futures_util::stream::poll_fn(move |cx| rx.poll_recv(cx))
}

#[tokio::test]
async fn a_stream_of_changes_drives_the_set_and_an_invalid_change_is_skipped() {
    let lb = Balancer::new(RoundRobin::new(), Vec::new()).unwrap();
    let (tx, rx) = mpsc::unbounded_channel::<Result<Change, Infallible>>();
    let task = tokio::spawn(feed(lb.clone(), stream(rx)));

    tx.send(Ok(Change::Insert(Backend::new("a")))).unwrap();
    let v = published(&lb, 0).await;
    tx.send(Ok(Change::Insert(Backend::new("b").weight(3))))
        .unwrap();
    let v = published(&lb, v).await;
    assert_eq!(ids(&lb), ["a", "b"]);
    // Refused (weight 0): the set stays, the feed goes on.
    tx.send(Ok(Change::Weight("a".into(), 0))).unwrap();
    tx.send(Ok(Change::State("b".into(), AdminState::Drain)))
        .unwrap();
    let v = published(&lb, v).await;
    assert_eq!(lb.backends()[0].get_weight(), 1);
    assert_eq!(lb.backends()[1].get_state(), AdminState::Drain);
    tx.send(Ok(Change::Remove("zzz".into()))).unwrap(); // absent: nothing to do
    tx.send(Ok(Change::Remove("a".into()))).unwrap();
    let v = published(&lb, v).await;
    assert_eq!(ids(&lb), ["b"]);
    // An explicit empty answer scales to zero.
    tx.send(Ok(Change::Replace(Vec::new()))).unwrap();
    published(&lb, v).await;
    assert_eq!(
        lb.pick(&Context::new()).unwrap_err(),
        PickError::NoneAvailable { total: 0 }
    );
    drop(tx);
    let stats = bounded(task).await.unwrap().unwrap();
    assert_eq!((stats.applied, stats.unchanged, stats.rejected), (5, 1, 1));
}

#[tokio::test]
async fn a_failed_stream_ends_its_feed_and_the_last_set_keeps_serving() {
    let lb = Balancer::new(RoundRobin::new(), [Backend::new("a")]).unwrap();
    let (tx, rx) = mpsc::unbounded_channel::<Result<Change, &'static str>>();
    let task = tokio::spawn(feed(lb.clone(), stream(rx)));
    tx.send(Ok(Change::Insert(Backend::new("b")))).unwrap();
    tx.send(Err("registry unreachable")).unwrap();
    let err = bounded(task).await.unwrap().unwrap_err();
    assert_eq!(err.error, "registry unreachable");
    assert_eq!(err.stats.applied, 1);
    assert_eq!(ids(&lb), ["a", "b"]);
    assert!(lb.pick(&Context::new()).is_ok());
}

#[tokio::test]
async fn four_streams_feeding_one_balancer_lose_no_change() {
    let lb = Balancer::new(RoundRobin::new(), Vec::new()).unwrap();
    let feeds: Vec<_> = (0..4)
        .map(|t| {
            let changes = (0..250).map(move |i| {
                Ok::<_, Infallible>(Change::Insert(Backend::new(format!("{t}-{i}"))))
            });
            tokio::spawn(feed(lb.clone(), futures_util::stream::iter(changes)))
        })
        .collect();
    for f in feeds {
        assert_eq!(bounded(f).await.unwrap().unwrap().applied, 250);
    }
    assert_eq!(lb.backends().len(), 1_000);
}

type Echo = tower::util::BoxCloneSyncService<(), &'static str, Infallible>;

fn echo(name: &'static str) -> Echo {
    Echo::new(tower::service_fn(move |()| async move { Ok(name) }))
}

#[tokio::test]
async fn a_tower_discover_feeds_backends_and_their_services() {
    let lb = Balancer::new(RoundRobin::new(), Vec::new()).unwrap();
    let services = Discovered::new();
    let (tx, rx) = mpsc::unbounded_channel::<Result<TowerChange<u16, Echo>, Infallible>>();
    let task = tokio::spawn(feed_discover(
        lb.clone(),
        stream(rx),
        services.clone(),
        |port: &u16| Backend::new(format!("127.0.0.1:{port}")),
    ));
    let classify = |_: &&'static str| divvy::Outcome::Success;
    let svc = Balance::new(lb.clone(), services.clone(), (), classify).track(Opaque);

    tx.send(Ok(TowerChange::Insert(8081, echo("first"))))
        .unwrap();
    let v = published(&lb, 0).await;
    assert_eq!(ids(&lb), ["127.0.0.1:8081"]);
    assert_eq!(bounded(svc.clone().oneshot(())).await.unwrap(), "first");

    // The same key again replaces its service, also for the clone that already made it.
    tx.send(Ok(TowerChange::Insert(8081, echo("second"))))
        .unwrap();
    tx.send(Ok(TowerChange::Insert(8082, echo("other"))))
        .unwrap();
    let mut v = v;
    while lb.backends().len() < 2 {
        v = published(&lb, v).await;
    }
    let mut answers: Vec<_> = Vec::new();
    for _ in 0..2 {
        answers.push(bounded(svc.clone().oneshot(())).await.unwrap());
    }
    answers.sort();
    assert_eq!(answers, ["other", "second"]);

    // A removed backend leaves the set, and its service goes with it.
    let stale = {
        let mut make = services.clone();
        divvy_tower::MakeEndpoint::make_endpoint(&mut make, &Backend::new("127.0.0.1:8081"))
    };
    tx.send(Ok(TowerChange::Remove(8081))).unwrap();
    published(&lb, v).await;
    assert_eq!(ids(&lb), ["127.0.0.1:8082"]);
    let err: BoxError = bounded(stale.oneshot(())).await.unwrap_err();
    assert!(err.is::<Removed>(), "{err}");
    drop(tx);
    bounded(task).await.unwrap().unwrap();
}

#[tokio::test]
async fn a_balancers_membership_is_a_tower_discover() {
    let lb = Balancer::new(RoundRobin::new(), ["a", "b"].map(Backend::new)).unwrap();
    let maker = |b: &Backend| b.id().to_owned();
    let mut discover = Membership::new(lb.clone(), maker);
    assert_eq!(next(&mut discover).await, "+a:a");
    assert_eq!(next(&mut discover).await, "+b:b");
    // Woken by the publications themselves, on another task.
    let writer = {
        let lb = lb.clone();
        tokio::spawn(async move {
            lb.remove("a").unwrap();
            lb.add(Backend::new("c")).unwrap();
            lb.set_weight("c", 4).unwrap(); // not a membership change
        })
    };
    let mut seen = Vec::new();
    while seen.len() < 2 {
        seen.push(next(&mut discover).await);
    }
    seen.sort();
    assert_eq!(seen, ["+c:c", "-a"]);
    bounded(writer).await.unwrap();
}

/// The next change of a membership stream, as `+id:service` or `-id`.
async fn next<D>(discover: &mut D) -> String
where
    D: Stream<Item = Result<TowerChange<Arc<str>, String>, Infallible>> + Unpin,
{
    match bounded(discover.next()).await {
        Some(Ok(TowerChange::Insert(id, svc))) => format!("+{id}:{svc}"),
        Some(Ok(TowerChange::Remove(id))) => format!("-{id}"),
        other => panic!("{other:?}"),
    }
}
