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
