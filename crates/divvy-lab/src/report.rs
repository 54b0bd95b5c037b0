//! From runs to numbers: percentiles, error rate, load shares, and the Markdown table.

use std::fmt::Write as _;

use crate::scenario::Scenario;
use crate::sim::Run;

/// What the table shows for one strategy.
#[derive(Clone, Debug, PartialEq)]
pub struct Summary {
    /// Strategy name.
    pub strategy: String,
    /// Latency percentiles of successful requests, milliseconds.
    pub p50: f64,
    /// 99th percentile, milliseconds.
    pub p99: f64,
    /// 99.9th percentile, milliseconds.
    pub p999: f64,
    /// Failed or unroutable requests over requests sent.
    pub error_rate: f64,
    /// Share of picks per backend, scenario order.
    pub shares: Vec<f64>,
    /// The busiest backend's picks per unit of weight over the mean, among backends in the set
    /// for the whole run (1.0 is perfectly proportional to weight).
    pub max_over_mean: f64,
    /// Share of keys moved at each membership change.
    pub keys_moved: Vec<f64>,
}

/// The `p`-quantile (0..=1) of sorted values, nearest rank; 0 when empty.
pub fn quantile(sorted: &[u64], p: f64) -> u64 {
    if sorted.is_empty() {
        return 0;
    }
    let rank = (p * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

/// Summarises a run. `steady` marks the backends in the set for the whole run.
pub fn summarize(run: &Run, steady: &[bool]) -> Summary {
    let ms = |p: f64| quantile(&run.latencies, p) as f64 / 1e6;
    let picked: u64 = run.picks.iter().sum();
    let shares = run
        .picks
        .iter()
        .map(|&p| p as f64 / picked.max(1) as f64)
        .collect();
    let per_weight: Vec<f64> = run
        .picks
        .iter()
        .zip(&run.weights)
        .zip(steady)
        .filter(|(_, &s)| s)
        .map(|((&p, &w), _)| p as f64 / f64::from(w))
        .collect();
    let mean = per_weight.iter().sum::<f64>() / per_weight.len().max(1) as f64;
    let max = per_weight.iter().copied().fold(0.0, f64::max);
    Summary {
        strategy: run.strategy.clone(),
        p50: ms(0.5),
        p99: ms(0.99),
        p999: ms(0.999),
        error_rate: (run.failures + run.unavailable) as f64 / run.requests.max(1) as f64,
        shares,
        max_over_mean: if mean > 0.0 { max / mean } else { 0.0 },
        keys_moved: run.keys_moved.iter().map(|k| k.fraction()).collect(),
    }
}

/// Which backends of a scenario are in the set for the whole run.
pub fn steady_backends(sc: &Scenario) -> Vec<bool> {
    let steady: Vec<bool> = sc
        .expanded()
        .iter()
        .map(|e| e.spec.join_at.is_none() && e.spec.leave_at.is_none())
        .collect();
    if steady.iter().any(|&s| s) {
        steady
    } else {
        vec![true; steady.len()]
    }
}

/// Milliseconds with three significant figures, the precision a simulation deserves.
fn fmt_ms(v: f64) -> String {
    if v < 10.0 {
        format!("{v:.2}")
    } else if v < 100.0 {
        format!("{v:.1}")
    } else {
        format!("{v:.0}")
    }
}

/// A percentage with two significant figures, so that rare errors still show as a number.
fn fmt_pct(v: f64) -> String {
    let p = v * 100.0;
    if p == 0.0 {
        return "0".into();
    }
    let decimals = (1 - p.log10().floor() as i32).max(1) as usize;
    format!("{p:.decimals$} %")
}

/// `1234567` as `1,234,567`.
pub fn thousands(n: u64) -> String {
    let digits = n.to_string();
    let groups: Vec<&str> = digits
        .as_bytes()
        .rchunks(3)
        .rev()
        .map(|g| std::str::from_utf8(g).expect("ASCII digits"))
        .collect();
    groups.join(",")
}

/// The scenario's Markdown section: a heading, the description, and the table, one row per run.
pub fn markdown(sc: &Scenario, runs: &[Run], requests: u64, seed: u64) -> String {
    let steady = steady_backends(sc);
    let sums: Vec<Summary> = runs.iter().map(|r| summarize(r, &steady)).collect();
    let names = sc.expanded();
    let moves = sums.iter().any(|s| !s.keys_moved.is_empty());
    let mut out = String::new();
    let _ = writeln!(out, "### {}\n", sc.name);
    if !sc.description.is_empty() {
        let _ = writeln!(out, "{}\n", sc.description.trim());
    }
    let _ = writeln!(
        out,
        "{} requests per strategy, seed {seed}; offered load {} req/s, capacity {} req/s. \
         Latency of successful requests, in ms; load share is each backend's part of all picks.\n",
        thousands(requests),
        thousands(sc.arrivals.mean_rate().round() as u64),
        thousands(sc.capacity().round() as u64)
    );
    let mut header = String::from("| strategy | p50 | p99 | p99.9 | errors | max/mean |");
    let mut rule = String::from("|---|--:|--:|--:|--:|--:|");
    for e in &names {
        let _ = write!(header, " {} |", e.name);
        rule.push_str("--:|");
    }
    if moves {
        header.push_str(" keys moved |");
        rule.push_str("--:|");
    }
    let _ = writeln!(out, "{header}\n{rule}");
    for s in &sums {
        let _ = write!(
            out,
            "| {} | {} | {} | {} | {} | {:.2} |",
            s.strategy,
            fmt_ms(s.p50),
            fmt_ms(s.p99),
            fmt_ms(s.p999),
            fmt_pct(s.error_rate),
            s.max_over_mean
        );
        for sh in &s.shares {
            let _ = write!(out, " {:.1} % |", sh * 100.0);
        }
        if moves {
            let k: Vec<String> = s
                .keys_moved
                .iter()
                .map(|k| format!("{:.1} %", k * 100.0))
                .collect();
            let _ = write!(out, " {} |", k.join(" / "));
        }
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantiles_use_the_nearest_rank() {
        let v: Vec<u64> = (1..=1000).collect();
        assert_eq!(quantile(&v, 0.5), 500);
        assert_eq!(quantile(&v, 0.99), 990);
        assert_eq!(quantile(&v, 0.999), 999);
        assert_eq!(quantile(&v, 1.0), 1000);
        assert_eq!(quantile(&v, 0.0), 1);
        assert_eq!(quantile(&[], 0.5), 0);
    }

    #[test]
    fn thousands_are_separated_by_commas() {
        assert_eq!(thousands(0), "0");
        assert_eq!(thousands(999), "999");
        assert_eq!(thousands(1000), "1,000");
        assert_eq!(thousands(1_000_000), "1,000,000");
        assert_eq!(thousands(12_345_678), "12,345,678");
    }

    #[test]
    fn rare_error_rates_keep_two_significant_figures() {
        assert_eq!(fmt_pct(0.0), "0");
        assert_eq!(fmt_pct(0.000_002_34), "0.00023 %");
        assert_eq!(fmt_pct(0.0123), "1.2 %");
        assert_eq!(fmt_pct(0.5), "50.0 %");
    }
}
