//! `backup` and tiers mean the same for every strategy: a balancer routes by tier whatever its
//! strategy, as if it were wrapped in `Failover`.

use std::collections::HashMap;

use divvy::strategy::{
    Failover, IpHash, Ketama, LeastConnections, Maglev, PowerOfTwoChoices, Random, RoundRobin,
    WeightedRoundRobin,
};
use divvy::{AdminState, Backend, Balancer, Context, HealthConfig, Strategy};

/// The backends of the README's "Ten lines" snippet.
fn readme_set() -> [Backend; 3] {
    [
        Backend::new("10.0.0.1:80").weight(5),
        Backend::new("10.0.0.2:80"),
        Backend::new("10.0.0.3:80").backup(),
    ]
}

/// Picks per backend over `n` picks, each with its own hash key and client address.
fn spread<S: Strategy>(lb: &Balancer<S>, n: u32) -> HashMap<String, u32> {
    let mut counts = HashMap::new();
    for k in 0..n {
        let key = k.to_le_bytes();
        let ip = std::net::Ipv4Addr::from(k.wrapping_mul(2_654_435_761));
        let p = lb
            .pick(&Context::new().key(&key).client_ip(ip.into()))
            .expect("a backend is available");
        *counts.entry(p.id().to_owned()).or_insert(0) += 1;
    }
    counts
}

#[test]
fn the_readme_snippets_backup_takes_nothing_while_the_primaries_are_up_and_everything_after() {
    let lb = Balancer::new(WeightedRoundRobin::new(), readme_set()).unwrap();
    // Smooth weighted round robin over the primaries alone: exactly 5:1.
    let counts = spread(&lb, 600);
    assert_eq!(counts.get("10.0.0.3:80"), None, "{counts:?}");
    assert_eq!(counts["10.0.0.1:80"], 500);
    assert_eq!(counts["10.0.0.2:80"], 100);

    for id in ["10.0.0.1:80", "10.0.0.2:80"] {
        lb.set_admin_state(id, Some(AdminState::Down)).unwrap();
    }
    let counts = spread(&lb, 700);
    assert_eq!(counts.get("10.0.0.3:80"), Some(&700), "{counts:?}");
}

fn backup_is_only_a_backup<S: Strategy>(strategy: S) {
    let name = strategy.name();
    let mut builder = Balancer::builder(strategy);
    // Failing probes take the primaries out; rise/fall 1 so one probe decides.
    builder = builder.health(HealthConfig::builder().rise(1).fall(1).build());
    let lb = builder.build(readme_set()).unwrap();
    let counts = spread(&lb, 1000);
    assert_eq!(counts.get("10.0.0.3:80"), None, "{name}: {counts:?}");

    // One primary failing: the other takes everything (the backup still nothing).
    lb.report_probe("10.0.0.1:80", false).unwrap();
    let counts = spread(&lb, 1000);
    assert_eq!(counts.get("10.0.0.2:80"), Some(&1000), "{name}: {counts:?}");

    lb.report_probe("10.0.0.2:80", false).unwrap();
    let counts = spread(&lb, 1000);
    assert_eq!(counts.get("10.0.0.3:80"), Some(&1000), "{name}: {counts:?}");

    // A primary back: traffic returns to it.
    lb.report_probe("10.0.0.2:80", true).unwrap();
    let counts = spread(&lb, 1000);
    assert_eq!(counts.get("10.0.0.2:80"), Some(&1000), "{name}: {counts:?}");
}

macro_rules! tiers {
    ($($test:ident: $strategy:expr,)*) => {$(
        #[test]
        fn $test() {
            backup_is_only_a_backup($strategy);
        }
    )*};
}

tiers! {
    round_robin_honours_backup: RoundRobin::new(),
    weighted_round_robin_honours_backup: WeightedRoundRobin::new(),
    least_connections_honours_backup: LeastConnections::new(),
    ip_hash_honours_backup: IpHash::new(),
    ketama_honours_backup: Ketama::new(),
    ketama_with_bounded_loads_honours_backup: Ketama::new().bounded_load(1.25),
    maglev_honours_backup: Maglev::new(),
    random_honours_backup: Random::new(),
    p2c_honours_backup: PowerOfTwoChoices::new(),
    peak_ewma_honours_backup: PowerOfTwoChoices::peak_ewma(),
    failover_honours_backup: Failover::new(RoundRobin::new()),
}

#[test]
fn a_single_tier_set_of_backups_is_served_as_one_tier() {
    // Only backups: they are the first tier there is.
    let lb = Balancer::new(
        RoundRobin::new(),
        [Backend::new("a").backup(), Backend::new("b").backup()],
    )
    .unwrap();
    let counts = spread(&lb, 10);
    assert_eq!((counts["a"], counts["b"]), (5, 5));
}

#[test]
fn an_update_that_adds_a_tier_starts_routing_by_tier() {
    let lb = Balancer::new(RoundRobin::new(), [Backend::new("a"), Backend::new("b")]).unwrap();
    assert_eq!(spread(&lb, 10).len(), 2);
    lb.update([Backend::new("a"), Backend::new("b").backup()])
        .unwrap();
    assert_eq!(spread(&lb, 10).get("a"), Some(&10));
}
