//! Builds a balancer over a few backends, picks with several strategies and prints the
//! distribution.
//!
//! ```text
//! cargo run --example quickstart
//! ```

use std::collections::BTreeMap;

use divvy::strategy::RoundRobin;
use divvy::{Backend, Balancer, Context, Strategy};

fn backends() -> Vec<Backend> {
    vec![
        Backend::new("127.0.0.1:8081").weight(5),
        Backend::new("127.0.0.1:8082").weight(1),
        Backend::new("127.0.0.1:8083").weight(1),
    ]
}

fn distribution<S: Strategy>(strategy: S, picks: usize) -> BTreeMap<String, usize> {
    let lb = Balancer::new(strategy, backends()).expect("a valid backend set");
    let mut counts = BTreeMap::new();
    for i in 0..picks {
        let key = format!("user-{i}");
        let pick = lb
            .pick(&Context::new().key(key.as_bytes()))
            .expect("a backend");
        *counts.entry(pick.backend().id().to_owned()).or_default() += 1;
    }
    counts
}

fn main() {
    println!(
        "{:<24} {}",
        "strategy", "picks per backend (weights 5, 1, 1)"
    );
    println!(
        "{:<24} {:?}",
        "round-robin",
        distribution(RoundRobin::new(), 700)
    );
}
