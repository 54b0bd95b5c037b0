//! Turns the criterion results of `cargo bench` into the Markdown tables of docs/BENCHMARKS.md.
//!
//! ```text
//! DIVVY_BENCH_QUICK=1 cargo bench -p divvy-benches --bench pick --bench rebuild
//! cargo run -p divvy-benches --bin bench_table            # or: … -- path/to/target/criterion
//! ```
//!
//! Reads every `<criterion dir>/**/new/benchmark.json` with its `estimates.json` and prints
//! median times in nanoseconds, with each divvy pick's ratio to the baselines measured in the same
//! run (below 1 is faster than the baseline). The criterion directory is the first argument, else
//! `$CRITERION_HOME`, else `criterion/` in the target directory this example was built into.

use std::collections::{BTreeMap, BTreeSet};
use std::error::Error;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::{env, fs};

use serde_json::Value;

/// (group, function, backends) → median ns.
type Medians = BTreeMap<(String, String, u64), f64>;

fn main() -> Result<(), Box<dyn Error>> {
    let dir = criterion_dir()?;
    let mut medians = Medians::new();
    collect(&dir, &mut medians)?;
    if medians.is_empty() {
        return Err(format!(
            "no criterion results under {}: run `cargo bench -p divvy-benches --bench pick` first",
            dir.display()
        )
        .into());
    }
    print!("{}", render(&medians));
    Ok(())
}

fn criterion_dir() -> Result<PathBuf, Box<dyn Error>> {
    if let Some(arg) = env::args_os().nth(1) {
        return Ok(arg.into());
    }
    if let Some(home) = env::var_os("CRITERION_HOME") {
        return Ok(home.into());
    }
    // <target>/<profile>/bench_table: criterion writes to <target>/criterion.
    let exe = env::current_exe()?;
    let target = exe
        .ancestors()
        .nth(2)
        .ok_or("cannot locate the target directory")?;
    Ok(target.join("criterion"))
}

/// Walks `dir` for `new/benchmark.json` files and records each benchmark's median.
fn collect(dir: &Path, out: &mut Medians) -> Result<(), Box<dyn Error>> {
    let Ok(entries) = fs::read_dir(dir) else {
        return Ok(());
    };
    for entry in entries {
        let path = entry?.path();
        if !path.is_dir() {
            continue;
        }
        if path.file_name().is_some_and(|n| n == "new") {
            let meta = path.join("benchmark.json");
            let estimates = path.join("estimates.json");
            if meta.is_file() && estimates.is_file() {
                record(&meta, &estimates, out)?;
            }
        } else {
            collect(&path, out)?;
        }
    }
    Ok(())
}

fn record(meta: &Path, estimates: &Path, out: &mut Medians) -> Result<(), Box<dyn Error>> {
    let meta: Value = serde_json::from_str(&fs::read_to_string(meta)?)?;
    let estimates: Value = serde_json::from_str(&fs::read_to_string(estimates)?)?;
    let text = |v: &Value| v.as_str().map(str::to_owned);
    let (Some(group), Some(function), Some(size), Some(median)) = (
        text(&meta["group_id"]),
        text(&meta["function_id"]),
        meta["value_str"]
            .as_str()
            .and_then(|s| s.parse::<u64>().ok()),
        estimates["median"]["point_estimate"].as_f64(),
    ) else {
        return Ok(()); // not one of ours
    };
    out.insert((group, function, size), median);
    Ok(())
}

// === Rendering ===

const MUTEX: &str = "Mutex<usize> RR";
const MUTEX_COUNTED: &str = "Mutex<usize> RR + in-flight";
const TOWER: &str = "tower p2c";

fn render(m: &Medians) -> String {
    let get = |group: &str, function: &str, n: u64| {
        m.get(&(group.to_owned(), function.to_owned(), n)).copied()
    };
    let ns = |v: Option<f64>| v.map_or_else(|| "–".to_owned(), fmt_ns);
    let ratio = |a: Option<f64>, b: Option<f64>| match (a, b) {
        (Some(a), Some(b)) if b > 0.0 => format!("{:.2}", a / b),
        _ => "–".to_owned(),
    };
    let mut out = String::new();

    // Strategies in the order the bench ran them (first appearance), sizes ascending.
    let strategies = ordered_functions(m, "pick_1t_picker");
    let sizes = |group: &str| -> BTreeSet<u64> {
        m.keys()
            .filter(|(g, _, _)| g == group)
            .map(|&(_, _, n)| n)
            .collect()
    };

    if !strategies.is_empty() {
        out.push_str("### Pick + guard drop, median ns per pick\n\n");
        out.push_str(
            "`B` = `Balancer::pick`, `P` = `Picker::pick` (per-thread handle caching the \
             snapshot, as the tower adapter uses). 2t = two threads picking from one shared \
             balancer, time per pick on each. Ratios are divvy ÷ baseline at the same size and \
             thread count (below 1 = faster than the baseline).\n\n",
        );
        out.push_str(
            "| strategy | backends | B 1t | P 1t | B 2t | P 2t | ÷ Mutex 1t (B / P) | ÷ Mutex+in-flight 1t (B / P) | ÷ tower p2c (B / P) | ÷ Mutex 2t (B / P) |\n",
        );
        out.push_str("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n");
        for s in &strategies {
            for n in sizes("pick_1t_picker") {
                let b1 = get("pick_1t_balancer", s, n);
                let p1 = get("pick_1t_picker", s, n);
                let b2 = get("pick_2t_balancer", s, n);
                let p2 = get("pick_2t_picker", s, n);
                let mutex1 = get("baseline_1t", MUTEX, n);
                let mutex2 = get("baseline_2t", MUTEX, n);
                let counted1 = get("baseline_1t", MUTEX_COUNTED, n);
                let tower = get("baseline_1t", TOWER, n);
                let _ = writeln!(
                    out,
                    "| {s} | {n} | {} | {} | {} | {} | {} / {} | {} / {} | {} / {} | {} / {} |",
                    ns(b1),
                    ns(p1),
                    ns(b2),
                    ns(p2),
                    ratio(b1, mutex1),
                    ratio(p1, mutex1),
                    ratio(b1, counted1),
                    ratio(p1, counted1),
                    ratio(b1, tower),
                    ratio(p1, tower),
                    ratio(b2, mutex2),
                    ratio(p2, mutex2),
                );
            }
        }
        out.push('\n');
    }

    let baselines = ordered_functions(m, "baseline_1t");
    if !baselines.is_empty() {
        out.push_str("### Baselines, median ns per pick (same run)\n\n");
        out.push_str("| baseline | backends | 1t | 2t |\n|---|---:|---:|---:|\n");
        for s in &baselines {
            for n in sizes("baseline_1t") {
                let _ = writeln!(
                    out,
                    "| {s} | {n} | {} | {} |",
                    ns(get("baseline_1t", s, n)),
                    ns(get("baseline_2t", s, n)),
                );
            }
        }
        out.push('\n');
    }

    let rebuilt = ordered_functions(m, "rebuild_update");
    if !rebuilt.is_empty() {
        out.push_str("### Snapshot rebuild, median µs\n\n");
        out.push_str(
            "`prepare` = the strategy's own per-set work; `update` = a whole \
             `Balancer::update` (validation, prepare, state carried over, publication).\n\n",
        );
        out.push_str("| strategy | backends | prepare | update |\n|---|---:|---:|---:|\n");
        let us = |v: Option<f64>| v.map_or_else(|| "–".to_owned(), |v| format!("{:.1}", v / 1e3));
        for s in &rebuilt {
            for n in sizes("rebuild_update") {
                let _ = writeln!(
                    out,
                    "| {s} | {n} | {} | {} |",
                    us(get("rebuild_prepare", s, n)),
                    us(get("rebuild_update", s, n)),
                );
            }
        }
        out.push('\n');
    }

    let layer = ordered_functions(m, "layer");
    if !layer.is_empty() {
        out.push_str("### tower adapter, median ns per request\n\n");
        out.push_str("| path | backends | ns |\n|---|---:|---:|\n");
        for s in &layer {
            for n in sizes("layer") {
                if let Some(v) = get("layer", s, n) {
                    let _ = writeln!(out, "| {s} | {n} | {} |", fmt_ns(v));
                }
            }
        }
        out.push('\n');
    }
    out
}

/// The functions of `group`, in a stable order: the one `support::each_strategy` uses is not
/// recorded by criterion, so the list is sorted by name except that known names come first in
/// the README's order.
fn ordered_functions(m: &Medians, group: &str) -> Vec<String> {
    const ORDER: &[&str] = &[
        "RoundRobin",
        "WeightedRoundRobin",
        "LeastConnections",
        "IpHash",
        "IpHash::full_address",
        "Ketama",
        "Ketama bounded",
        "Maglev",
        "Maglev bounded",
        "Random",
        "PowerOfTwoChoices",
        "PowerOfTwoChoices::peak_ewma",
        "Failover(WeightedRoundRobin)",
        "Mutex<usize> RR",
        "Mutex<usize> RR + in-flight",
        "AtomicUsize RR",
        "tower p2c",
        "direct",
        "divvy Balance",
    ];
    let names: BTreeSet<&str> = m
        .keys()
        .filter(|(g, _, _)| g == group)
        .map(|(_, f, _)| f.as_str())
        .collect();
    let mut out: Vec<String> = ORDER
        .iter()
        .filter(|n| names.contains(*n))
        .map(|n| (*n).to_owned())
        .collect();
    out.extend(
        names
            .iter()
            .filter(|n| !ORDER.contains(n))
            .map(|n| (*n).to_owned()),
    );
    out
}

fn fmt_ns(v: f64) -> String {
    if v < 100.0 {
        format!("{v:.1}")
    } else {
        format!("{v:.0}")
    }
}
