//! divvy-lab: which strategy should I use? Numbers on your own workload's shape.
//!
//! A deterministic discrete-event simulation drives the real divvy strategies and health
//! registry (a `Balancer` on a simulated clock) with seeded workloads, and reports, per strategy,
//! latency percentiles, error rate, load shares and keys moved, as a Markdown table and SVG
//! charts. The `divvy-lab` binary is [`cli::run`]; see `docs/LAB.md`:
//!
//! ```text
//! cargo run --release -p divvy-lab -- --all --out target/lab
//! ```
//!
//! Layout: `scenario` (the TOML scenario format and the built-in scenarios), `workload`
//! (seeded arrivals, keys, service times), `sim` (the event loop around a real balancer),
//! `strategies` (every strategy by the lab's name), `runner` (scenarios × strategies on a few
//! threads), `report` (summaries and tables), `chart` (SVG), `cli`.

#![forbid(unsafe_code)]
#![warn(
    missing_docs,
    missing_debug_implementations,
    rust_2018_idioms,
    unreachable_pub
)]

pub mod chart;
pub mod cli;
pub mod report;
pub mod runner;
pub mod scenario;
pub mod sim;
pub mod strategies;
pub mod workload;
