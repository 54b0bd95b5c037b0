//! The strategies the lab compares: every divvy strategy, under the name the tables use.
//!
//! Each entry monomorphises the simulator for one strategy (`Strategy` has an associated type,
//! so the lab keeps a table of functions rather than trait objects). Randomised strategies are
//! seeded from the run's seed, so a run stays reproducible.

use divvy::strategy::{
    Failover, IpHash, Ketama, LeastConnections, Maglev, PowerOfTwoChoices, Random, RoundRobin,
    WeightedRoundRobin,
};

use crate::scenario::Scenario;
use crate::sim::{self, Options, Run};

/// A strategy the lab can run.
#[derive(Clone, Copy, Debug)]
pub struct Entry {
    /// The name used in tables, charts and `strategies = [...]`.
    pub name: &'static str,
    /// One line for `--list`.
    pub about: &'static str,
    /// Only meaningful with priority tiers: left out of scenarios without backups unless named.
    pub tiers_only: bool,
    /// Runs a scenario with a fresh instance of the strategy.
    pub run: fn(&Scenario, &Options) -> Result<Run, String>,
}

/// The seed of a randomised strategy: derived from the run's seed, apart from the workload's
/// streams so that the strategy's coin flips do not shadow the arrivals'.
fn seed(o: &Options) -> u64 {
    o.seed ^ 0x5eed_0f5e_a7e9
}

/// The load bound of the bounded-load rows: the middle of the 1.25 to 2 the paper and the
/// strategy docs suggest would hide the effect; 1.25 is the tightest usual setting.
pub const BOUND: f64 = 1.25;

/// Every strategy, in the order tables list them.
pub fn all() -> Vec<Entry> {
    vec![
        Entry {
            name: "round-robin",
            about: "each backend in turn, ignoring weights and load",
            tiers_only: false,
            run: |sc, o| sim::run(sc, "round-robin", RoundRobin::new(), o),
        },
        Entry {
            name: "weighted-round-robin",
            about: "nginx's smooth weighted round robin",
            tiers_only: false,
            run: |sc, o| sim::run(sc, "weighted-round-robin", WeightedRoundRobin::new(), o),
        },
        Entry {
            name: "least-connections",
            about: "nginx least_conn: fewest in flight per weight, smooth tie-break",
            tiers_only: false,
            run: |sc, o| sim::run(sc, "least-connections", LeastConnections::new(), o),
        },
        Entry {
            name: "random",
            about: "weighted random",
            tiers_only: false,
            run: |sc, o| sim::run(sc, "random", Random::from_seed(seed(o)), o),
        },
        Entry {
            name: "p2c-least-loaded",
            about: "best of two random backends by in-flight requests per weight",
            tiers_only: false,
            run: |sc, o| {
                sim::run(
                    sc,
                    "p2c-least-loaded",
                    PowerOfTwoChoices::from_seed(seed(o)),
                    o,
                )
            },
        },
        Entry {
            name: "p2c-peak-ewma",
            about: "best of two random backends by peak-EWMA latency x (in flight + 1)",
            tiers_only: false,
            run: |sc, o| {
                sim::run(
                    sc,
                    "p2c-peak-ewma",
                    PowerOfTwoChoices::peak_ewma().seed(seed(o)),
                    o,
                )
            },
        },
        Entry {
            name: "ip-hash",
            about: "nginx ip_hash: the client's /24 network picks the backend",
            tiers_only: false,
            run: |sc, o| sim::run(sc, "ip-hash", IpHash::new(), o),
        },
        Entry {
            name: "ketama",
            about: "nginx `hash $key consistent`: a ring of 160 points per weight",
            tiers_only: false,
            run: |sc, o| sim::run(sc, "ketama", Ketama::new(), o),
        },
        Entry {
            name: "maglev",
            about: "Maglev lookup table (65,537 slots) on the request key",
            tiers_only: false,
            run: |sc, o| sim::run(sc, "maglev", Maglev::new(), o),
        },
        Entry {
            name: "maglev-bounded",
            about: "Maglev with bounded loads, c = 1.25 (Mirrokni et al.)",
            tiers_only: false,
            run: |sc, o| sim::run(sc, "maglev-bounded", Maglev::new().bounded_load(BOUND), o),
        },
        Entry {
            name: "failover(p2c-peak-ewma)",
            about: "lowest tier with a healthy backend, p2c-peak-ewma inside it",
            tiers_only: true,
            run: |sc, o| {
                sim::run(
                    sc,
                    "failover(p2c-peak-ewma)",
                    Failover::new(PowerOfTwoChoices::peak_ewma().seed(seed(o))),
                    o,
                )
            },
        },
    ]
}

/// The entries a scenario asks for (all when it names none), or an error naming the unknown one.
pub fn for_scenario(sc: &Scenario) -> Result<Vec<Entry>, String> {
    let all = all();
    let tiers = sc.backends.iter().any(|b| b.tier > 0);
    match &sc.strategies {
        None => Ok(all.into_iter().filter(|e| tiers || !e.tiers_only).collect()),
        Some(names) => names
            .iter()
            .map(|n| {
                all.iter().find(|e| e.name == n).copied().ok_or_else(|| {
                    let known: Vec<&str> = all.iter().map(|e| e.name).collect();
                    format!("unknown strategy `{n}` (known: {})", known.join(", "))
                })
            })
            .collect(),
    }
}
