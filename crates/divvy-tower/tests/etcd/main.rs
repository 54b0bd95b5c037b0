//! etcd discovery and registration against a real etcd on loopback: changes, malformed values,
//! a restart of etcd, a partition, a compacted revision, leases that expire and drain.

mod support;

use std::time::Duration;

use divvy::strategy::Maglev;
use divvy::{AdminState, Backend, Balancer, Context};
use divvy_tower::discover::{EtcdDiscovery, Record, Registration};
use etcd_client::Client;
use tokio::time::Instant;

use support::{eventually, EtcdServer, Relay};

/// Bound of every wait: room for a loaded two-core machine, far above the expected times.
const WITHIN: Duration = Duration::from_secs(10);
const PREFIX: &str = "/divvy/web/";

async fn put(c: &mut Client, name: &str, value: &str) -> i64 {
    let resp = c.put(format!("{PREFIX}{name}"), value, None).await.unwrap();
    resp.header().unwrap().revision()
}

fn rec(addr: &str) -> String {
    Record::new(addr).to_json()
}

fn ids(lb: &Balancer<Maglev>) -> Vec<String> {
    lb.backends().iter().map(|b| b.id().to_owned()).collect()
}

async fn wait_for(lb: &Balancer<Maglev>, want: &[&str]) -> Duration {
    eventually(&format!("the set becomes {want:?}"), WITHIN, || {
        ids(lb) == want
    })
    .await
}

/// A balancer fed by a discovery of `endpoint`, started from a listing.
async fn discover(endpoint: String) -> (Balancer<Maglev>, divvy_tower::discover::EtcdHandle) {
    let mut d = EtcdDiscovery::new([endpoint], PREFIX);
    d.retry_interval(Duration::from_millis(100))
        .timeout(Duration::from_secs(2));
    let listing = d.list().await.unwrap();
    let lb = Balancer::new(Maglev::new(), listing.backends).unwrap();
    let handle = d.spawn(lb.clone());
    eventually("the watch starts", WITHIN, || handle.stats().watching).await;
    (lb, handle)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn discovery_follows_puts_reweights_and_deletes_under_its_prefix_only() {
    let Some(etcd) = EtcdServer::start().await else {
        return;
    };
    let mut c = etcd.client().await;
    put(&mut c, "b", &rec("10.0.0.2:80")).await;
    put(&mut c, "a", &rec("10.0.0.1:80")).await;
    let listing = EtcdDiscovery::new([etcd.endpoint()], PREFIX)
        .list()
        .await
        .unwrap();
    assert_eq!(
        listing.backends,
        ["10.0.0.1:80", "10.0.0.2:80"].map(Backend::new)
    );
    let (lb, handle) = discover(etcd.endpoint()).await;

    put(&mut c, "c", &rec("10.0.0.3:80")).await;
    wait_for(&lb, &["10.0.0.1:80", "10.0.0.2:80", "10.0.0.3:80"]).await;
    put(
        &mut c,
        "b",
        r#"{"address":"10.0.0.2:80","weight":3,"state":"down"}"#,
    )
    .await;
    eventually("b is re-weighted and down", WITHIN, || {
        lb.backends()[1]
            == Backend::new("10.0.0.2:80")
                .weight(3)
                .state(AdminState::Down)
    })
    .await;
    // A sibling prefix is not ours; the delete after it orders the check.
    c.put("/divvy/webmail/x", rec("10.9.9.9:80"), None)
        .await
        .unwrap();
    c.delete(format!("{PREFIX}a"), None).await.unwrap();
    wait_for(&lb, &["10.0.0.2:80", "10.0.0.3:80"]).await;
    let rev = put(&mut c, "d", &rec("10.0.0.4:80")).await;
    wait_for(&lb, &["10.0.0.2:80", "10.0.0.3:80", "10.0.0.4:80"]).await;
    assert_eq!(handle.stats().revision, rev);
    assert_eq!(handle.stats().lists, 1);
    handle.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_first_listing_replaces_the_set_the_balancer_was_built_with() {
    let Some(etcd) = EtcdServer::start().await else {
        return;
    };
    let mut c = etcd.client().await;
    put(&mut c, "b", &rec("10.0.0.2:80")).await;
    put(&mut c, "a", &rec("10.0.0.1:80")).await;
    let lb = Balancer::new(Maglev::new(), [Backend::new("192.0.2.1:80")]).unwrap();
    let handle = EtcdDiscovery::new([etcd.endpoint()], PREFIX).spawn(lb.clone());
    wait_for(&lb, &["10.0.0.1:80", "10.0.0.2:80"]).await;
    put(&mut c, "0", &rec("10.0.0.0:80")).await;
    // Inserted in identity order, not appended: the order every instance has.
    wait_for(&lb, &["10.0.0.0:80", "10.0.0.1:80", "10.0.0.2:80"]).await;
    handle.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_malformed_value_is_skipped_and_never_applied() {
    let Some(etcd) = EtcdServer::start().await else {
        return;
    };
    let mut c = etcd.client().await;
    put(&mut c, "a", &rec("10.0.0.1:80")).await;
    let (lb, handle) = discover(etcd.endpoint()).await;

    put(&mut c, "junk", "not json").await;
    put(&mut c, "a", r#"{"address":"10.0.0.1:80","weight":0}"#).await;
    put(&mut c, "b", r#"{"address":"10.0.0.2:80","state":"asleep"}"#).await;
    // Changes arrive in order: once c is in, the three malformed values were read and skipped.
    put(&mut c, "c", &rec("10.0.0.3:80")).await;
    wait_for(&lb, &["10.0.0.1:80", "10.0.0.3:80"]).await;
    assert_eq!(lb.backends()[0], Backend::new("10.0.0.1:80"));
    assert_eq!(handle.stats().skipped, 3);
    assert!(lb.pick(&Context::new().key(b"k")).is_ok());
    // A listing (a fresh instance) skips them too.
    let listing = EtcdDiscovery::new([etcd.endpoint()], PREFIX)
        .list()
        .await
        .unwrap();
    assert_eq!(listing.backends, [Backend::new("10.0.0.3:80")]);
    assert_eq!(listing.skipped.len(), 3);
    handle.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_etcd_restart_keeps_the_set_serving_and_misses_nothing() {
    let Some(mut etcd) = EtcdServer::start().await else {
        return;
    };
    let mut c = etcd.client().await;
    put(&mut c, "a", &rec("10.0.0.1:80")).await;
    put(&mut c, "b", &rec("10.0.0.2:80")).await;
    let (lb, handle) = discover(etcd.endpoint()).await;

    etcd.kill();
    eventually("the watch notices", WITHIN, || !handle.stats().watching).await;
    assert_eq!(ids(&lb), ["10.0.0.1:80", "10.0.0.2:80"]);
    assert!(lb.pick(&Context::new().key(b"k")).is_ok());

    etcd.restart().await;
    // Changed as soon as etcd is back, whether or not the discovery has reconnected yet.
    let mut c = etcd.client().await;
    c.delete(format!("{PREFIX}a"), None).await.unwrap();
    put(&mut c, "c", &rec("10.0.0.3:80")).await;
    wait_for(&lb, &["10.0.0.2:80", "10.0.0.3:80"]).await;
    assert!(handle.stats().failures >= 1);
    handle.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lost_connection_resumes_the_watch_and_replays_what_it_missed() {
    let Some(etcd) = EtcdServer::start().await else {
        return;
    };
    let relay = Relay::start(etcd.endpoint()[7..].parse().unwrap()).await;
    let mut c = etcd.client().await;
    put(&mut c, "a", &rec("10.0.0.1:80")).await;
    let (lb, handle) = discover(relay.endpoint()).await;

    relay.cut();
    eventually("the watch notices", WITHIN, || !handle.stats().watching).await;
    put(&mut c, "b", &rec("10.0.0.2:80")).await;
    c.delete(format!("{PREFIX}a"), None).await.unwrap();
    put(&mut c, "c", &rec("10.0.0.3:80")).await;
    assert_eq!(ids(&lb), ["10.0.0.1:80"]);
    relay.mend();
    wait_for(&lb, &["10.0.0.2:80", "10.0.0.3:80"]).await;
    let stats = handle.stats();
    assert_eq!((stats.lists, stats.compacted), (1, 0), "{stats:?}");
    assert!(stats.resumes >= 1, "{stats:?}");
    handle.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_compacted_watch_revision_is_listed_again_without_losing_the_set() {
    let Some(etcd) = EtcdServer::start().await else {
        return;
    };
    let relay = Relay::start(etcd.endpoint()[7..].parse().unwrap()).await;
    let mut c = etcd.client().await;
    put(&mut c, "a", &rec("10.0.0.1:80")).await;
    put(&mut c, "b", &rec("10.0.0.2:80")).await;
    let (lb, handle) = discover(relay.endpoint()).await;

    relay.cut();
    eventually("the watch notices", WITHIN, || !handle.stats().watching).await;
    c.delete(format!("{PREFIX}a"), None).await.unwrap();
    put(&mut c, "c", &rec("10.0.0.3:80")).await;
    let last = put(&mut c, "d", &rec("10.0.0.4:80")).await;
    // The deletion of a is now history etcd no longer has: a resumed watch cannot replay it.
    c.compact(last, None).await.unwrap();
    assert_eq!(ids(&lb), ["10.0.0.1:80", "10.0.0.2:80"]);
    assert!(lb.pick(&Context::new().key(b"k")).is_ok());
    relay.mend();
    wait_for(&lb, &["10.0.0.2:80", "10.0.0.3:80", "10.0.0.4:80"]).await;
    let stats = handle.stats();
    assert!(stats.compacted >= 1 && stats.lists >= 2, "{stats:?}");
    handle.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_registered_backend_stays_while_alive_and_expires_after_its_ttl_when_it_dies() {
    let Some(etcd) = EtcdServer::start().await else {
        return;
    };
    let (lb, handle) = {
        let mut c = etcd.client().await;
        put(&mut c, "static", &rec("10.0.0.1:80")).await;
        discover(etcd.endpoint()).await
    };
    let ttl = Duration::from_secs(2);
    let mut reg = Registration::new(
        [etcd.endpoint()],
        format!("{PREFIX}10.0.0.9:80"),
        Record::new("10.0.0.9:80"),
    );
    reg.ttl(ttl);
    let registered = reg.register().await.unwrap();
    wait_for(&lb, &["10.0.0.1:80", "10.0.0.9:80"]).await;

    // Kept alive: still there after twice its TTL.
    let since = Instant::now();
    eventually("two TTLs pass", WITHIN, || {
        assert_eq!(ids(&lb), ["10.0.0.1:80", "10.0.0.9:80"]);
        since.elapsed() > 2 * ttl
    })
    .await;

    // Dropped without deregistering, as by a crash: gone within the TTL and a second.
    drop(registered);
    let died = Instant::now();
    wait_for(&lb, &["10.0.0.1:80"]).await;
    let gone = died.elapsed();
    println!("a dead registration left the set after {gone:?} (TTL {ttl:?})");
    assert!(gone <= ttl + Duration::from_secs(1), "{gone:?}");
    handle.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deregistering_drains_the_backend_first_then_deletes_it() {
    let Some(etcd) = EtcdServer::start().await else {
        return;
    };
    let (lb, handle) = {
        let mut c = etcd.client().await;
        put(&mut c, "static", &rec("10.0.0.1:80")).await;
        discover(etcd.endpoint()).await
    };
    let mut reg = Registration::new(
        [etcd.endpoint()],
        format!("{PREFIX}10.0.0.9:80"),
        Record::from_backend(&Backend::new("10.0.0.9:80").weight(2)),
    );
    reg.drain_for(Duration::from_millis(500));
    let registered = reg.register().await.unwrap();
    wait_for(&lb, &["10.0.0.1:80", "10.0.0.9:80"]).await;
    assert_eq!(lb.backends()[1], Backend::new("10.0.0.9:80").weight(2));

    let deregistering = tokio::spawn(registered.deregister());
    eventually("the backend drains", WITHIN, || {
        lb.backends()[1].get_state() == AdminState::Drain
    })
    .await;
    wait_for(&lb, &["10.0.0.1:80"]).await;
    deregistering.await.unwrap().unwrap();
    handle.shutdown().await;
}
