//! The strategies the lab compares: any divvy strategy, named as the library names it.
//!
//! A strategy is a [`StrategySpec`], written as divvy writes it (`least_conn`,
//! `maglev bounded_load=1.25`, `p2c_ewma failover=priority`): the same vocabulary as the proxy's
//! config, the benches and the fuzz targets, built through the library's [`BoxStrategy`], so the
//! simulator runs every strategy through one code path. A scenario may name any spec, not only
//! the built-in list. Randomised strategies are seeded from the run's seed, so a run stays
//! reproducible.
//!
//! [`BoxStrategy`]: divvy::strategy::BoxStrategy

use divvy::strategy::StrategySpec;

use crate::scenario::Scenario;
use crate::sim::{self, Options, Run};

/// A strategy the lab can run.
#[derive(Clone, Debug)]
pub struct Entry {
    /// The name used in tables, charts and `strategies = [...]`: the spec as divvy prints it.
    pub name: String,
    /// One line for `--list`.
    pub about: &'static str,
    /// Only meaningful with priority tiers: left out of scenarios without backups unless named.
    pub tiers_only: bool,
    spec: StrategySpec,
}

impl Entry {
    fn new(spec: &str, about: &'static str, tiers_only: bool) -> Entry {
        let spec: StrategySpec = spec
            .parse()
            .unwrap_or_else(|e| panic!("built-in lab strategy `{spec}`: {e}"));
        Entry {
            name: spec.to_string(),
            about,
            tiers_only,
            spec,
        }
    }

    /// The strategy's spec.
    pub fn spec(&self) -> &StrategySpec {
        &self.spec
    }

    /// Runs a scenario with a fresh instance of the strategy, seeded from the run's seed when the
    /// strategy is randomised.
    pub fn run(&self, scenario: &Scenario, opts: &Options) -> Result<Run, String> {
        let spec = match self.spec.seed_value() {
            Some(_) => self.spec.clone(),
            None => self
                .spec
                .clone()
                .seed(seed(opts))
                .unwrap_or_else(|_| self.spec.clone()),
        };
        sim::run(scenario, &self.name, spec.build(), opts)
    }
}

/// The seed of a randomised strategy: derived from the run's seed, apart from the workload's
/// streams so that the strategy's coin flips do not shadow the arrivals'.
fn seed(o: &Options) -> u64 {
    o.seed ^ 0x5eed_0f5e_a7e9
}

/// The load bound of the bounded-load rows: 1.25, the tightest of the 1.25 to 2 the paper and the
/// strategy docs suggest; a looser bound would hide the effect.
pub const BOUND: f64 = 1.25;

/// Every built-in strategy, in the order tables list them.
pub fn all() -> Vec<Entry> {
    vec![
        Entry::new(
            "round_robin",
            "each backend in turn, ignoring weights and load",
            false,
        ),
        Entry::new(
            "weighted_round_robin",
            "nginx's smooth weighted round robin",
            false,
        ),
        Entry::new(
            "least_conn",
            "nginx least_conn: fewest in flight per weight, smooth tie-break",
            false,
        ),
        Entry::new("random", "weighted random", false),
        Entry::new(
            "p2c",
            "best of two backends drawn by weight, by in-flight requests per weight",
            false,
        ),
        Entry::new(
            "p2c_ewma",
            "best of two backends drawn by weight, by peak-EWMA latency x (in flight + 1)",
            false,
        ),
        Entry::new(
            "ip_hash",
            "nginx ip_hash: the client's /24 network picks the backend",
            false,
        ),
        Entry::new(
            "ketama",
            "nginx `hash $key consistent`: a ring of 160 points per weight",
            false,
        ),
        Entry::new("maglev", "Maglev lookup table on the request key", false),
        Entry::new(
            "maglev bounded_load=1.25",
            "Maglev with bounded loads, c = 1.25 (Mirrokni et al.)",
            false,
        ),
        Entry::new(
            "p2c_ewma failover=priority",
            "lowest tier with a healthy backend, p2c_ewma inside it",
            true,
        ),
    ]
}

/// The entries a scenario asks for (every built-in one when it names none). A name may be any
/// divvy strategy spec; one that does not parse is an error naming it.
pub fn for_scenario(sc: &Scenario) -> Result<Vec<Entry>, String> {
    let all = all();
    let tiers = sc.backends.iter().any(|b| b.tier > 0);
    match &sc.strategies {
        None => Ok(all.into_iter().filter(|e| tiers || !e.tiers_only).collect()),
        Some(names) => names
            .iter()
            .map(|n| match all.iter().find(|e| e.name == *n) {
                Some(e) => Ok(e.clone()),
                None => {
                    let spec: StrategySpec = n
                        .parse()
                        .map_err(|e| format!("unknown strategy `{n}`: {e}"))?;
                    Ok(Entry {
                        name: spec.to_string(),
                        about: "named by the scenario",
                        tiers_only: false,
                        spec,
                    })
                }
            })
            .collect(),
    }
}
