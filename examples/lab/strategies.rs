//! The strategies the lab compares: every divvy strategy, under the name the tables use.
//!
//! Each entry monomorphises the simulator for one strategy (`Strategy` has an associated type,
//! so the lab keeps a table of functions rather than trait objects). Randomised strategies are
//! seeded from the run's seed, so a run stays reproducible.

use divvy::strategy::RoundRobin;

use crate::scenario::Scenario;
use crate::sim::{self, Options, Run};

/// A strategy the lab can run.
#[derive(Clone, Copy, Debug)]
pub struct Entry {
    /// The name used in tables, charts and `strategies = [...]`.
    pub name: &'static str,
    /// One line for `--list`.
    pub about: &'static str,
    /// Runs a scenario with a fresh instance of the strategy.
    pub run: fn(&Scenario, &Options) -> Result<Run, String>,
}

/// Every strategy, in the order tables list them.
pub fn all() -> Vec<Entry> {
    vec![Entry {
        name: "round-robin",
        about: "each backend in turn, ignoring weights and load",
        run: |sc, o| sim::run(sc, "round-robin", RoundRobin::new(), o),
    }]
}

/// The entries a scenario asks for (all when it names none), or an error naming the unknown one.
pub fn for_scenario(sc: &Scenario) -> Result<Vec<Entry>, String> {
    let all = all();
    match &sc.strategies {
        None => Ok(all),
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
