//! Shared helpers for the lab's tests: small scenarios and single runs by strategy name.

use divvy_lab::report::{self, Summary};
use divvy_lab::scenario::{self, Scenario};
use divvy_lab::sim::{Options, Run};
use divvy_lab::strategies;

/// A built-in scenario.
pub fn builtin(name: &str) -> Scenario {
    scenario::builtin(name).unwrap_or_else(|e| panic!("{e}"))
}

/// One backend of one server with exponential service (rate `mu` per second) fed by Poisson
/// arrivals at `lambda` per second: the M/M/1 queue.
pub fn mm1(lambda: f64, mu: f64) -> Scenario {
    Scenario::from_toml(&format!(
        "name = \"mm1\"\n\
         [arrivals]\nrate = {lambda:?}\n\
         [[backends]]\nname = \"only\"\nservers = 1\n\
         service = {{ dist = \"exponential\", mean_ms = {:?} }}\n",
        1000.0 / mu
    ))
    .unwrap_or_else(|e| panic!("{e}"))
}

/// Runs `sc` with the strategy the lab calls `strategy`.
pub fn run(sc: &Scenario, strategy: &str, opts: &Options) -> Run {
    let entry = strategies::all()
        .into_iter()
        .find(|e| e.name == strategy)
        .unwrap_or_else(|| panic!("no strategy `{strategy}` in the lab"));
    entry.run(sc, opts).unwrap_or_else(|e| panic!("{e}"))
}

/// Runs `sc` with `strategy` and summarises it.
pub fn summary(sc: &Scenario, strategy: &str, requests: u64, seed: u64) -> Summary {
    let r = run(sc, strategy, &Options::new(requests, seed));
    report::summarize(&r, &report::steady_backends(sc))
}

/// Mean of successful latencies, nanoseconds.
pub fn mean_latency(r: &Run) -> f64 {
    r.latencies.iter().map(|&l| l as f64).sum::<f64>() / r.latencies.len() as f64
}
