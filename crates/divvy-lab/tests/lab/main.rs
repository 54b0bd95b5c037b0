//! The strategy lab's tests: the simulator against queueing theory, reproducibility, and the
//! results the load-balancing literature predicts.
//!
//! They drive the `divvy_lab` library, which is exactly what the `divvy-lab` binary runs.

mod support;

use divvy_lab::sim::{self, Options};
use divvy_lab::{chart, report, runner, scenario, strategies};
use support::*;

// === The simulator against queueing theory ===

/// Runs an M/M/1 queue through a real balancer, with the balancer's in-flight count checked
/// against the simulation after every event.
fn mm1_run(lambda: f64, mu: f64, requests: u64) -> sim::Run {
    let mut opts = Options::new(requests, 42);
    opts.check_in_flight = true;
    run(&mm1(lambda, mu), "round_robin", &opts)
}

#[test]
fn littles_law_holds_on_a_single_mm1_backend() {
    for (lambda, mu) in [(500.0, 1000.0), (800.0, 1000.0)] {
        let r = mm1_run(lambda, mu, 200_000);
        let span = r.end as f64;
        // L from the balancer's own in-flight counts (the Pick guards alive), not from the
        // simulator's bookkeeping; λ and W from arrivals and recorded latencies.
        let l = r.balancer_in_flight_area.expect("checked run") / span;
        let lambda_obs = r.requests as f64 / span;
        let w = mean_latency(&r);
        let lw = lambda_obs * w;
        assert!(
            (l / lw - 1.0).abs() < 0.01,
            "ρ = {}: L = {l:.4}, λW = {lw:.4}",
            lambda / mu
        );
        // And L matches the M/M/1 formula ρ / (1 − ρ).
        let rho = lambda / mu;
        let expected = rho / (1.0 - rho);
        assert!(
            (l / expected - 1.0).abs() < 0.08,
            "ρ = {rho}: L = {l:.3}, ρ/(1−ρ) = {expected:.3}"
        );
    }
}

#[test]
fn the_mm1_mean_sojourn_is_one_over_mu_minus_lambda() {
    // 200,000 requests: at ρ = 0.5 the sample mean's standard error is about 1 %, at ρ = 0.8
    // (strongly correlated sojourns) about 3 %; the tolerances are a little over twice that.
    for (lambda, mu, tolerance) in [(500.0, 1000.0, 0.03), (800.0, 1000.0, 0.07)] {
        let r = mm1_run(lambda, mu, 200_000);
        let w = mean_latency(&r) / 1e9;
        let expected = 1.0 / (mu - lambda);
        assert!(
            (w / expected - 1.0).abs() < tolerance,
            "λ = {lambda}, μ = {mu}: W = {:.3} ms, 1/(μ−λ) = {:.3} ms",
            w * 1e3,
            expected * 1e3
        );
        assert_eq!(r.failures + r.unavailable, 0);
        assert_eq!(r.latencies.len() as u64, r.requests);
    }
}

#[test]
fn in_flight_counts_match_the_balancer_through_failures_and_membership_changes() {
    for name in ["failure-recovery", "membership-change"] {
        let mut opts = Options::new(20_000, 3);
        opts.check_in_flight = true;
        for e in strategies::all() {
            e.run(&builtin(name), &opts)
                .unwrap_or_else(|err| panic!("{name}/{}: {err}", e.name));
        }
    }
}

// === Reproducibility ===

fn tables(seed: u64) -> String {
    let scenarios: Vec<scenario::Scenario> =
        scenario::BUILTIN.iter().map(|(n, _)| builtin(n)).collect();
    let runs = runner::run_all(&scenarios, Some(20_000), seed, 2).expect("runs");
    scenarios
        .iter()
        .zip(&runs)
        .map(|(sc, r)| report::markdown(sc, r, 20_000, seed))
        .collect()
}

#[test]
fn a_seed_reproduces_the_same_table() {
    assert_eq!(tables(7), tables(7));
}

#[test]
fn a_different_seed_changes_the_table() {
    assert_ne!(tables(7), tables(8));
}

// === Charts ===

#[test]
fn charts_are_svg_and_name_every_strategy() {
    let sc = builtin("failure-recovery");
    let runs = runner::run_all(std::slice::from_ref(&sc), Some(10_000), 1, 2)
        .expect("runs")
        .remove(0);
    let dir = std::env::temp_dir().join(format!("divvy-lab-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let files = [
        dir.join("cdf.svg"),
        dir.join("share.svg"),
        dir.join("time.svg"),
    ];
    chart::latency_cdf(&files[0], &sc, &runs).unwrap();
    chart::load_share(&files[1], &sc, &runs).unwrap();
    chart::load_over_time(&files[2], &sc, &runs, "e").unwrap();
    for f in &files {
        let svg = std::fs::read_to_string(f).unwrap();
        assert!(svg.starts_with("<svg"), "{}", f.display());
        for r in &runs {
            assert!(
                svg.contains(&r.strategy),
                "{} lacks {}",
                f.display(),
                r.strategy
            );
        }
    }
    std::fs::remove_dir_all(&dir).unwrap();
}

// === What the literature predicts ===

#[test]
fn a_failing_backend_gets_almost_nothing_while_it_fails_and_traffic_returns_after() {
    let sc = builtin("failure-recovery");
    for e in strategies::all() {
        let r = support::run(&sc, &e.name, &Options::new(200_000, 1));
        let n = r.backends.len();
        let ei = r.backends.iter().position(|b| b == "e").unwrap();
        let tl = &r.timeline;
        let share = |from: usize, to: usize| {
            let picks: u32 = (from..to).map(|b| tl.picks[b * n + ei]).sum();
            let reqs: u32 = (from..to).map(|b| tl.requests[b]).sum();
            f64::from(picks) / f64::from(reqs)
        };
        // The failure covers buckets 30..60 of 100; allow a few buckets for detection (one
        // failure with max_fails = 1) and for recovery (probes `rise 2` every 5 s, slow start).
        assert!(share(35, 58) < 0.002, "{}: {}", e.name, share(35, 58));
        assert!(share(80, 100) > 0.1, "{}: {}", e.name, share(80, 100));
        assert!(share(0, 28) > 0.1, "{}: {}", e.name, share(0, 28));
    }
}

/// p99 of `strategy` in `scenario`, 200,000 requests, seed 1.
fn p99(sc: &scenario::Scenario, strategy: &str) -> f64 {
    summary(sc, strategy, 200_000, 1).p99
}

#[test]
fn least_loaded_and_peak_ewma_cut_p99_versus_round_robin_when_one_backend_is_slow() {
    // Linkerd's "Beyond Round Robin" and Finagle: a balancer that measures load sends less to a
    // slow backend. Round robin gives it a fifth of the traffic, 82 % of its capacity, and the
    // queue there sets the tail; the load-aware strategies shift traffic away and cut p99.
    let sc = builtin("slow-backend");
    let rr = p99(&sc, "round_robin");
    for s in ["p2c", "p2c_ewma", "least_conn"] {
        let got = summary(&sc, s, 200_000, 1);
        assert!(
            got.p99 < rr / 2.0,
            "{s}: p99 {} vs round robin {rr}",
            got.p99
        );
        let slow = *got.shares.last().unwrap();
        assert!(slow < 0.15, "{s} sends {slow} to the slow backend");
    }
    // Peak-EWMA sees latency, not only queue length, so it avoids the slow backend hardest.
    let ewma = summary(&sc, "p2c_ewma", 200_000, 1);
    let ll = summary(&sc, "p2c", 200_000, 1);
    assert!(
        ewma.shares[4] < ll.shares[4],
        "{:?} vs {:?}",
        ewma.shares,
        ll.shares
    );
}

#[test]
fn weighted_strategies_follow_capacity_and_round_robin_overloads_the_small_backends() {
    let sc = builtin("heterogeneous");
    let weights = [1.0, 1.0, 2.0, 2.0, 4.0, 4.0];
    let total: f64 = weights.iter().sum();
    for s in ["random", "weighted_round_robin"] {
        let got = summary(&sc, s, 200_000, 1);
        for (share, w) in got.shares.iter().zip(weights) {
            assert!((share - w / total).abs() < 0.01, "{s}: {:?}", got.shares);
        }
    }
    let rr = summary(&sc, "round_robin", 200_000, 1);
    assert!(rr.shares.iter().all(|s| (s - 1.0 / 6.0).abs() < 0.001));
    assert!(rr.p99 > 2.0 * p99(&sc, "random"));
}

#[test]
fn consistent_hashing_moves_only_the_keys_it_must_and_round_robin_moves_most() {
    // Removing one of five backends must move its fifth of the keys; adding a fifth backend
    // must move the fifth of the keys it takes over. Anything key-oblivious moves about 4/5.
    let sc = builtin("membership-change");
    let rr = summary(&sc, "round_robin", 200_000, 1);
    assert_eq!(rr.keys_moved.len(), 2);
    assert!(
        rr.keys_moved.iter().all(|&m| m > 0.7),
        "{:?}",
        rr.keys_moved
    );
    for s in ["ketama", "maglev", "ip_hash"] {
        let got = summary(&sc, s, 200_000, 1);
        let bound = if s == "ip_hash" { 1.0 } else { 0.26 };
        for &m in &got.keys_moved {
            assert!((0.17..bound).contains(&m), "{s}: {:?}", got.keys_moved);
        }
    }
}

#[test]
fn maglev_balances_uniform_keys_within_a_few_percent() {
    let sc = builtin("membership-change");
    let got = summary(&sc, "maglev", 200_000, 1);
    assert!(got.max_over_mean < 1.05, "{}", got.max_over_mean);
}

#[test]
fn bounded_loads_cap_the_hot_keys_backend() {
    let sc = builtin("hot-keys");
    let plain = summary(&sc, "maglev", 200_000, 1);
    let bounded = summary(&sc, "maglev bounded_load=1.25", 200_000, 1);
    // The hottest key alone is about 13 % of requests, more than a fair eighth.
    assert!(plain.max_over_mean > 1.5, "{}", plain.max_over_mean);
    assert!(bounded.max_over_mean < 1.3, "{}", bounded.max_over_mean);
    assert!(bounded.p99 < plain.p99, "{} vs {}", bounded.p99, plain.p99);
}

#[test]
fn fast_error_responses_draw_a_latency_balancer_into_failing_backends() {
    // A backend that answers errors in 1 ms looks ten times faster than a healthy one to
    // peak-EWMA, so with health in panic mode it takes more traffic than when its failures
    // carry no latency (refused connections). Round robin cannot tell the difference.
    let refused = builtin("backup-tier");
    let text = scenario::BUILTIN
        .iter()
        .find(|(n, _)| *n == "backup-tier")
        .unwrap()
        .1
        .replace(
            "failures = [{ from = 0.4, until = 0.6 }]",
            "failures = [{ from = 0.4, until = 0.6, kind = \"error-response\" }]",
        );
    let responses = scenario::Scenario::from_toml(&text).unwrap();
    assert!(responses.backends[0].failures[0].kind == scenario::FailureKind::ErrorResponse);
    let errors = |sc: &scenario::Scenario, s: &str| summary(sc, s, 100_000, 1).error_rate;
    assert!(errors(&responses, "p2c_ewma") > errors(&refused, "p2c_ewma") + 0.01);
    assert_eq!(
        errors(&responses, "round_robin"),
        errors(&refused, "round_robin")
    );
}

// === Invariants ===

#[test]
fn the_scenario_format_documented_in_lab_md_parses() {
    let doc = include_str!("../../../../docs/LAB.md");
    let start = doc.find("```toml\n").expect("a TOML example") + "```toml\n".len();
    let len = doc[start..].find("```").expect("the end of the example");
    let sc =
        scenario::Scenario::from_toml(&doc[start..start + len]).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(sc.name, "my-fleet");
    assert_eq!(sc.expanded().len(), 4);
    assert_eq!(
        sc.strategies.as_deref(),
        Some(&["round_robin".to_owned(), "p2c_ewma".to_owned()][..])
    );
    for e in strategies::for_scenario(&sc).unwrap() {
        e.run(&sc, &Options::new(2_000, 1)).unwrap();
    }
}

proptest::proptest! {
    #![proptest_config(proptest::prelude::ProptestConfig::with_cases(24))]

    /// Whatever the fleet, load, failures and seed: every request is accounted for exactly once,
    /// the balancer's in-flight counts are the simulated ones after every event, and nothing is
    /// in flight at the end.
    #[test]
    fn every_request_is_accounted_for_and_in_flight_counts_agree(
        servers in proptest::collection::vec(1u32..6, 1..5),
        load in 0.2f64..1.5,
        fail in proptest::option::of((0.0f64..0.5, 0.05f64..0.5)),
        strategy in 0usize..11,
        seed in 0u64..1_000,
    ) {
        let mut text = String::from("name = \"prop\"\n[health]\nprobe_interval_ms = 200\n");
        let capacity: f64 = servers.iter().map(|&s| f64::from(s) * 100.0).sum();
        text.push_str(&format!("[arrivals]\nrate = {:?}\n", capacity * load));
        for (i, s) in servers.iter().enumerate() {
            text.push_str(&format!(
                "[[backends]]\nname = \"b{i}\"\nservers = {s}\nweight = {s}\n\
                 service = {{ dist = \"exponential\", mean_ms = 10.0 }}\n"
            ));
            if let (0, Some((from, len))) = (i, fail) {
                text.push_str(&format!("failures = [{{ from = {from:?}, until = {:?} }}]\n", from + len));
            }
        }
        let sc = scenario::Scenario::from_toml(&text).unwrap();
        let all = strategies::all();
        let entry = &all[strategy % all.len()];
        let mut opts = Options::new(3_000, seed);
        opts.check_in_flight = true;
        let r = entry.run(&sc, &opts).unwrap();
        proptest::prop_assert_eq!(r.requests, 3_000);
        proptest::prop_assert_eq!(
            r.latencies.len() as u64 + r.failures + r.unavailable,
            r.requests
        );
        proptest::prop_assert_eq!(r.picks.iter().sum::<u64>(), r.requests - r.unavailable);
        proptest::prop_assert!(r.latencies.windows(2).all(|w| w[0] <= w[1]));
        proptest::prop_assert_eq!(
            r.timeline.requests.iter().map(|&n| u64::from(n)).sum::<u64>(),
            r.requests
        );
        if fail.is_none() {
            proptest::prop_assert_eq!(r.failures + r.unavailable, 0);
        }
    }
}
