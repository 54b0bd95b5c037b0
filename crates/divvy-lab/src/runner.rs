//! Runs scenarios × strategies on a few worker threads; results come back in a fixed order, so
//! the output does not depend on which thread finished first.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;

use crate::scenario::Scenario;
use crate::sim::{Options, Run};
use crate::strategies::{self, Entry};

/// Runs every scenario with each of its strategies, `jobs` runs at a time. Returns, per
/// scenario, one run per strategy in table order.
pub fn run_all(
    scenarios: &[Scenario],
    requests: Option<u64>,
    seed: u64,
    jobs: usize,
) -> Result<Vec<Vec<Run>>, String> {
    let mut work: Vec<(usize, Entry, Options)> = Vec::new();
    for (si, sc) in scenarios.iter().enumerate() {
        let opts = Options::new(requests.unwrap_or(sc.requests), seed);
        for e in strategies::for_scenario(sc).map_err(|e| format!("{}: {e}", sc.name))? {
            work.push((si, e, opts.clone()));
        }
    }
    let next = AtomicUsize::new(0);
    let results: Mutex<Vec<Option<Result<Run, String>>>> =
        Mutex::new((0..work.len()).map(|_| None).collect());
    std::thread::scope(|s| {
        for _ in 0..jobs.clamp(1, work.len().max(1)) {
            s.spawn(|| loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                let Some((si, entry, opts)) = work.get(i) else {
                    break;
                };
                let r = entry
                    .run(&scenarios[*si], opts)
                    .map_err(|e| format!("{} with {}: {e}", scenarios[*si].name, entry.name));
                results
                    .lock()
                    .expect("no worker panics while holding the lock")[i] = Some(r);
            });
        }
    });
    let mut out: Vec<Vec<Run>> = scenarios.iter().map(|_| Vec::new()).collect();
    let results = results.into_inner().expect("workers are done");
    for ((si, _, _), r) in work.iter().zip(results) {
        out[*si].push(r.expect("every run finished")?);
    }
    Ok(out)
}
