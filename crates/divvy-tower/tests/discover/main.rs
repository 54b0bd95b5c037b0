//! DNS discovery against a real authoritative server on loopback whose records change during
//! the tests.

mod support;

use std::sync::Arc;
use std::time::Duration;

use divvy::strategy::RoundRobin;
use divvy::{Backend, Balancer, Context};
use divvy_tower::discover::{DiscoverError, DiscoveryEvent, DnsDiscovery};
use hickory_server::proto::rr::RecordType;
use parking_lot::Mutex;

use support::{eventually, DnsServer};

/// Room for the scheduler of a loaded two-core machine.
const SLACK: Duration = Duration::from_millis(500);
const WEB: &str = "web.svc.test.";
const SRV: &str = "_http._tcp.web.svc.test.";

/// What a discovery reported, round by round.
#[derive(Clone, Debug, PartialEq)]
enum Seen {
    Updated(Vec<Backend>, Duration),
    Unchanged(Duration),
    Failed(&'static str, Duration),
}

type Log = Arc<Mutex<Vec<Seen>>>;

fn record(dns: &mut DnsDiscovery) -> Log {
    let log = Log::default();
    let l = log.clone();
    dns.on_event(move |e| {
        let seen = match e {
            DiscoveryEvent::Updated { backends, next } => Seen::Updated(backends.to_vec(), *next),
            DiscoveryEvent::Unchanged { next, .. } => Seen::Unchanged(*next),
            DiscoveryEvent::Failed { error, next } => Seen::Failed(kind(error), *next),
            _ => unreachable!("no other event exists"),
        };
        l.lock().push(seen);
    });
    log
}

fn kind(e: &DiscoverError) -> &'static str {
    match e {
        DiscoverError::Resolve { .. } => "resolve",
        DiscoverError::Empty { .. } => "empty",
        DiscoverError::Rejected(_) => "rejected",
        _ => "other",
    }
}

fn discovery(server: &DnsServer, dns: DnsDiscovery) -> DnsDiscovery {
    let mut dns = dns;
    dns.nameserver(server.addr)
        .timeout(Duration::from_secs(1))
        .retry_interval(Duration::from_millis(20));
    dns
}

fn ids(backends: &[Backend]) -> Vec<String> {
    backends.iter().map(|b| b.id().to_owned()).collect()
}

#[tokio::test]
async fn a_and_aaaa_records_become_ip_port_backends_of_weight_one() {
    let server = DnsServer::start().await;
    server
        .set_addrs(WEB, 60, &["127.0.0.3", "::1", "127.0.0.2"])
        .await;
    let got = discovery(&server, DnsDiscovery::host(WEB, 8080))
        .resolve()
        .await
        .unwrap();
    let want = ["127.0.0.2:8080", "127.0.0.3:8080", "[::1]:8080"].map(Backend::new);
    assert_eq!(got, want);
}

#[tokio::test]
async fn changed_records_are_published_within_the_ttl_bound_and_staying_backends_keep_their_state()
{
    let server = DnsServer::start().await;
    server
        .set_addrs(WEB, 3600, &["127.0.0.1", "127.0.0.2"])
        .await;
    let max_ttl = Duration::from_millis(150);
    let mut dns = discovery(&server, DnsDiscovery::host(WEB, 80));
    dns.min_ttl(Duration::from_millis(10)).max_ttl(max_ttl);
    let log = record(&mut dns);
    let lb = Balancer::new(RoundRobin::new(), dns.resolve().await.unwrap()).unwrap();
    let handle = dns.spawn(lb.clone()).unwrap();
    eventually("a first round", max_ttl + SLACK, || !log.lock().is_empty()).await;
    assert_eq!(
        log.lock()[0],
        Seen::Unchanged(max_ttl),
        "the TTL of 3600 s is bounded"
    );
    assert_eq!(handle.stats().updates, 0);

    // A request in flight to a backend that stays must still count after the update.
    let pick = lb.pick(&Context::new()).unwrap();
    let kept = pick.backend().id().to_owned();
    let other = if kept == "127.0.0.1:80" {
        "127.0.0.2"
    } else {
        "127.0.0.1"
    };
    let kept_ip = kept.trim_end_matches(":80").to_owned();
    server.set_addrs(WEB, 3600, &[&kept_ip, "127.0.0.9"]).await;
    let mut want = vec![kept.clone(), "127.0.0.9:80".to_owned()];
    want.sort();
    let took = eventually("the new set", max_ttl + SLACK, || {
        ids(&lb.backends()) == want
    })
    .await;
    assert!(took <= max_ttl + SLACK);
    assert!(!ids(&lb.backends()).contains(&format!("{other}:80")));
    let stats = lb.stats();
    let kept_stats = stats.iter().find(|s| *s.id == *kept).unwrap();
    assert_eq!(kept_stats.in_flight, 1);
    drop(pick);
    assert_eq!(handle.stats().updates, 1);
    handle.shutdown().await;
}

#[tokio::test]
async fn the_next_query_follows_the_records_ttl_within_its_bounds() {
    let server = DnsServer::start().await;
    for (ttl, min, max, want) in [
        (1, 10, 10_000, 1_000), // inside the bounds: the TTL itself
        (0, 50, 10_000, 50),    // below: the minimum
        (600, 10, 250, 250),    // above: the maximum
    ] {
        server.set_addrs(WEB, ttl, &["127.0.0.1"]).await;
        let mut dns = discovery(&server, DnsDiscovery::host(WEB, 80));
        dns.min_ttl(Duration::from_millis(min))
            .max_ttl(Duration::from_millis(max));
        let log = record(&mut dns);
        let lb = Balancer::new(RoundRobin::new(), [Backend::new("placeholder")]).unwrap();
        let handle = dns.spawn(lb.clone()).unwrap();
        eventually("a first round", SLACK * 2, || !log.lock().is_empty()).await;
        assert_eq!(
            log.lock()[0],
            Seen::Updated(
                vec![Backend::new("127.0.0.1:80")],
                Duration::from_millis(want)
            ),
            "ttl {ttl} s within [{min}, {max}] ms"
        );
        handle.shutdown().await;
    }
}

#[tokio::test]
async fn srv_weights_and_priorities_become_weights_and_tiers_and_follow_changes() {
    let server = DnsServer::start().await;
    server
        .set_srv(
            SRV,
            3600,
            &[
                (10, 5, 8001, "a.svc.test."),
                (10, 0, 8002, "b.svc.test."),
                (20, 1, 8003, "c.svc.test."),
                (30, 2, 8004, "d.svc.test."),
            ],
        )
        .await;
    let max_ttl = Duration::from_millis(100);
    let mut dns = discovery(&server, DnsDiscovery::srv(SRV));
    dns.min_ttl(Duration::from_millis(10)).max_ttl(max_ttl);
    let first = dns.resolve().await.unwrap();
    assert_eq!(
        first,
        vec![
            Backend::new("a.svc.test:8001").weight(5),
            Backend::new("b.svc.test:8002").weight(1), // SRV weight 0 reads as 1
            Backend::new("c.svc.test:8003").tier(1),
            Backend::new("d.svc.test:8004").weight(2).tier(2),
        ]
    );

    let log = record(&mut dns);
    let lb = Balancer::new(RoundRobin::new(), first).unwrap();
    let handle = dns.spawn(lb.clone()).unwrap();
    eventually("a first round", max_ttl + SLACK, || {
        log.lock().first() == Some(&Seen::Unchanged(max_ttl))
    })
    .await;
    // c joins the primaries; d becomes the only backup tier; b leaves.
    server
        .set_srv(
            SRV,
            3600,
            &[
                (10, 5, 8001, "a.svc.test."),
                (10, 3, 8003, "c.svc.test."),
                (30, 2, 8004, "d.svc.test."),
            ],
        )
        .await;
    let want = vec![
        Backend::new("a.svc.test:8001").weight(5),
        Backend::new("c.svc.test:8003").weight(3),
        Backend::new("d.svc.test:8004").weight(2).tier(1),
    ];
    eventually("the changed srv set", max_ttl + SLACK, || {
        *lb.backends() == *want
    })
    .await;
    handle.shutdown().await;
}

#[tokio::test]
async fn servfail_keeps_the_last_good_set_counts_failures_and_recovery_follows() {
    let server = DnsServer::start().await;
    server.set_addrs(WEB, 0, &["127.0.0.1", "127.0.0.2"]).await;
    let mut dns = discovery(&server, DnsDiscovery::host(WEB, 80));
    dns.min_ttl(Duration::from_millis(20));
    let log = record(&mut dns);
    let good = dns.resolve().await.unwrap();
    let lb = Balancer::new(RoundRobin::new(), good.clone()).unwrap();
    let handle = dns.spawn(lb.clone()).unwrap();

    server.servfail(true);
    eventually("three failed rounds", SLACK * 2, || {
        handle.stats().failures >= 3
    })
    .await;
    assert_eq!(*lb.backends(), *good);
    assert_eq!(handle.stats().updates, 0);
    let failed: Vec<Seen> = log
        .lock()
        .iter()
        .filter(|s| matches!(s, Seen::Failed(..)))
        .cloned()
        .collect();
    assert!(failed
        .iter()
        .all(|s| *s == Seen::Failed("resolve", Duration::from_millis(20))));

    server.set_addrs(WEB, 0, &["127.0.0.3"]).await;
    server.servfail(false);
    eventually("the set after recovery", SLACK * 2, || {
        ids(&lb.backends()) == ["127.0.0.3:80"]
    })
    .await;
    handle.shutdown().await;
}

#[tokio::test]
async fn an_empty_answer_keeps_the_last_good_set() {
    let server = DnsServer::start().await;
    server.set_addrs(WEB, 0, &["127.0.0.1"]).await;
    let mut dns = discovery(&server, DnsDiscovery::host(WEB, 80));
    dns.min_ttl(Duration::from_millis(20));
    let log = record(&mut dns);
    let good = dns.resolve().await.unwrap();
    let lb = Balancer::new(RoundRobin::new(), good.clone()).unwrap();
    let handle = dns.spawn(lb.clone()).unwrap();
    eventually("a first round", SLACK, || !log.lock().is_empty()).await;

    server.clear(WEB, RecordType::A).await;
    eventually("two empty rounds", SLACK * 2, || {
        log.lock()
            .iter()
            .filter(|s| matches!(s, Seen::Failed("empty", _)))
            .count()
            >= 2
    })
    .await;
    assert_eq!(*lb.backends(), *good);
    assert_eq!(handle.stats().updates, 0);
    handle.shutdown().await;
}

#[tokio::test]
async fn a_name_that_does_not_exist_resolves_to_an_empty_error() {
    let server = DnsServer::start().await;
    let err = discovery(&server, DnsDiscovery::host("nothing.svc.test.", 80))
        .resolve()
        .await
        .unwrap_err();
    assert!(
        matches!(err, DiscoverError::Empty { ref name } if &**name == "nothing.svc.test."),
        "{err}"
    );
    let err = discovery(&server, DnsDiscovery::srv("_x._tcp.nothing.svc.test."))
        .resolve()
        .await
        .unwrap_err();
    assert!(matches!(err, DiscoverError::Empty { .. }), "{err}");
}

#[tokio::test]
async fn a_nameserver_that_never_answers_fails_the_round() {
    // Bound but never read: queries go unanswered.
    let silent = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let mut dns = DnsDiscovery::host(WEB, 80);
    dns.nameserver(silent.local_addr().unwrap())
        .timeout(Duration::from_millis(100));
    let err = dns.resolve().await.unwrap_err();
    assert!(matches!(err, DiscoverError::Resolve { .. }), "{err}");
}

/// Stops a discovery with `stop`, changes the records, and checks with a second discovery that
/// the change was visible while the first published nothing more.
async fn nothing_is_published_after(stop: impl AsyncFnOnce(divvy_tower::DiscoveryHandle)) {
    let server = DnsServer::start().await;
    server.set_addrs(WEB, 0, &["127.0.0.1"]).await;
    let mut dns = discovery(&server, DnsDiscovery::host(WEB, 80));
    dns.min_ttl(Duration::from_millis(10));
    let log = record(&mut dns);
    let lb = Balancer::new(RoundRobin::new(), dns.resolve().await.unwrap()).unwrap();
    let handle = dns.spawn(lb.clone()).unwrap();
    eventually("two rounds", SLACK, || log.lock().len() >= 2).await;
    stop(handle).await;
    let rounds = log.lock().len();

    server.set_addrs(WEB, 0, &["127.0.0.2"]).await;
    let mut witness = discovery(&server, DnsDiscovery::host(WEB, 80));
    witness.min_ttl(Duration::from_millis(10));
    let witness_log = record(&mut witness);
    let witness_lb = Balancer::new(RoundRobin::new(), [Backend::new("x")]).unwrap();
    let witness = witness.spawn(witness_lb.clone()).unwrap();
    eventually("five witness rounds", SLACK * 2, || {
        witness_log.lock().len() >= 5
    })
    .await;
    assert_eq!(ids(&witness_lb.backends()), ["127.0.0.2:80"]);
    assert_eq!(ids(&lb.backends()), ["127.0.0.1:80"]);
    assert_eq!(log.lock().len(), rounds, "rounds went on after the stop");
    witness.shutdown().await;
}

#[tokio::test]
async fn after_shutdown_returns_nothing_more_is_published() {
    nothing_is_published_after(async |h| h.shutdown().await).await;
}

#[tokio::test]
async fn dropping_the_handle_stops_discovery() {
    nothing_is_published_after(async |h| drop(h)).await;
}
