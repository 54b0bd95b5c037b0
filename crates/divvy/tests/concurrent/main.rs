//! Several threads pick while another publishes updates: no panic, consistent counts.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread;

use divvy::strategy::{
    Failover, IpHash, Ketama, LeastConnections, Maglev, PowerOfTwoChoices, Random, RoundRobin,
    WeightedRoundRobin,
};
use divvy::{Backend, Balancer, Context, Strategy};

fn set(generation: usize) -> Vec<Backend> {
    // Backends 0..8 always stay; 8..16 come and go, so live state is both kept and replaced.
    (0..16)
        .filter(|i| *i < 8 || (i + generation) % 3 != 0)
        .map(|i| {
            Backend::new(format!("10.1.0.{i}:80"))
                .weight(1 + (i % 4) as u32)
                .tier((i % 2) as u8)
        })
        .collect()
}

fn picks_race_with_updates<S: Strategy>(strategy: S) {
    let name = strategy.name();
    let lb = Balancer::new(strategy, set(0)).unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let picked = Arc::new(AtomicU64::new(0));
    let workers: Vec<_> = (0..3)
        .map(|t| {
            let (lb, stop, picked) = (lb.clone(), stop.clone(), picked.clone());
            thread::spawn(move || {
                let mut held = Vec::new();
                let mut n = 0u64;
                // Bounded: at most this many picks even if the updater is slow.
                while !stop.load(Ordering::Relaxed) && n < 200_000 {
                    let key = n.to_le_bytes();
                    let p = lb
                        .pick(&Context::new().key(&key))
                        .expect("a set with up backends always picks");
                    if n % 3 == t {
                        held.push(p);
                        if held.len() > 16 {
                            held.remove(0).success();
                        }
                    } else if n % 5 == 0 {
                        p.failure();
                    }
                    n += 1;
                }
                picked.fetch_add(n, Ordering::Relaxed);
            })
        })
        .collect();
    for generation in 1..300 {
        lb.update(set(generation)).unwrap();
    }
    stop.store(true, Ordering::Relaxed);
    for w in workers {
        w.join().unwrap();
    }
    assert!(picked.load(Ordering::Relaxed) > 0);
    let stats = lb.stats();
    assert_eq!(lb.version(), 299);
    assert_eq!(
        stats.iter().map(|s| s.in_flight).sum::<u32>(),
        0,
        "{name}: every guard was dropped"
    );
    for s in &stats {
        assert!(s.successes + s.failures <= s.picks, "{name}: {s:?}");
    }
}

macro_rules! concurrent {
    ($($test:ident: $strategy:expr,)*) => {$(
        #[test]
        fn $test() {
            picks_race_with_updates($strategy);
        }
    )*};
}

concurrent! {
    round_robin_survives_concurrent_updates: RoundRobin::new(),
    weighted_round_robin_survives_concurrent_updates: WeightedRoundRobin::new(),
    least_connections_survives_concurrent_updates: LeastConnections::new(),
    ip_hash_survives_concurrent_updates: IpHash::new(),
    ketama_survives_concurrent_updates: Ketama::new().bounded_load(1.5),
    maglev_survives_concurrent_updates: Maglev::new().bounded_load(1.5),
    random_survives_concurrent_updates: Random::new(),
    p2c_survives_concurrent_updates: PowerOfTwoChoices::peak_ewma(),
    failover_survives_concurrent_updates: Failover::new(WeightedRoundRobin::new()),
}

/// One tier of up backends, 6 that stay and 3 that come and go.
fn one_tier(generation: usize) -> Vec<Backend> {
    (0..9)
        .filter(|i| *i < 6 || (i + generation) % 2 == 0)
        .map(|i| Backend::new(format!("10.2.0.{i}:80")))
        .collect()
}

/// With the panic threshold on, every up backend with no in-flight limit, and no exclusions,
/// some backend can always take a request: either enough are healthy (so one is) or the set is
/// in panic (so all are). A `NoneAvailable` is then a race between a pick and the health counts.
fn failures_racing_updates_never_leave_a_pick_without_a_backend<S: Strategy>(strategy: S) {
    let name = strategy.name();
    let mut builder = Balancer::builder(strategy);
    builder = builder.clock(divvy::ManualClock::new());
    let lb = builder.build(one_tier(0)).unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let none = Arc::new(AtomicU64::new(0));
    let workers: Vec<_> = (0..2u64)
        .map(|t| {
            let (lb, stop, none) = (lb.clone(), stop.clone(), none.clone());
            thread::spawn(move || {
                // Bounded: at most this many picks even if the updater is slow.
                for n in 0..50_000u64 {
                    if stop.load(Ordering::Relaxed) {
                        break;
                    }
                    let key = (n * 2 + t).to_le_bytes();
                    let ip = std::net::Ipv4Addr::from((n as u32).wrapping_mul(2_654_435_761));
                    match lb.pick(&Context::new().key(&key).client_ip(ip.into())) {
                        // A third of the picks fail: backends are ejected all the time.
                        Ok(p) if n % 3 == 0 => p.failure(),
                        Ok(p) => p.success(),
                        Err(_) => {
                            none.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                    // Now and then a probe brings a backend back, so transitions never stop.
                    if n % 64 == 0 {
                        let id = format!("10.2.0.{}:80", n % 6);
                        lb.report_probe(&id, true).unwrap();
                    }
                }
            })
        })
        .collect();
    for generation in 1..200 {
        lb.update(one_tier(generation)).unwrap();
    }
    stop.store(true, Ordering::Relaxed);
    for w in workers {
        w.join().unwrap();
    }
    assert_eq!(
        none.load(Ordering::Relaxed),
        0,
        "{name}: spurious NoneAvailable"
    );
}

macro_rules! panic_races {
    ($($test:ident: $strategy:expr,)*) => {$(
        #[test]
        fn $test() {
            failures_racing_updates_never_leave_a_pick_without_a_backend($strategy);
        }
    )*};
}

panic_races! {
    ip_hash_finds_a_backend_while_failures_race_updates: IpHash::new(),
    maglev_finds_a_backend_while_failures_race_updates: Maglev::new(),
    round_robin_finds_a_backend_while_failures_race_updates: RoundRobin::new(),
    random_finds_a_backend_while_failures_race_updates: Random::new(),
    ketama_finds_a_backend_while_failures_race_updates: Ketama::new(),
}
