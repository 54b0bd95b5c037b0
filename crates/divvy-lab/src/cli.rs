//! The lab's command line: the `divvy-lab` binary is [`run`] over the process arguments.
//!
//! A deterministic discrete-event simulation drives the real divvy strategies and health
//! registry (a `Balancer` on a simulated clock) with seeded workloads, and prints, per strategy,
//! latency percentiles, error rate, load shares and keys moved, as a Markdown table; with `--out`
//! it also draws SVG charts. See `docs/LAB.md`.
//!
//! ```text
//! cargo run --release -p divvy-lab -- --scenario slow-backend --out target/lab
//! cargo run --release -p divvy-lab -- --all --requests 200000 --seed 7
//! cargo run --release -p divvy-lab -- --config my-fleet.toml --out target/lab
//! ```

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Instant;

use crate::scenario::{self, Scenario};
use crate::{chart, report, runner, strategies};

const USAGE: &str = "\
usage: lab [--scenario NAME]... [--all] [--config FILE.toml]... [options]

  --scenario NAME   run a built-in scenario (repeatable)
  --all             run every built-in scenario
  --config FILE     run a scenario from a TOML file (repeatable; format in docs/LAB.md)
  --requests N      requests per strategy (default: the scenario's, 1,000,000 for built-ins)
  --seed S          seed of every random stream (default 1)
  --out DIR         write SVG charts and report.md into DIR
  --jobs J          simulations run in parallel (default: available cores)
  --list            list built-in scenarios and strategies
";

struct Args {
    scenarios: Vec<Scenario>,
    requests: Option<u64>,
    seed: u64,
    out: Option<PathBuf>,
    jobs: usize,
    list: bool,
}

fn parse(mut it: impl Iterator<Item = String>) -> Result<Args, String> {
    let mut a = Args {
        scenarios: Vec::new(),
        requests: None,
        seed: 1,
        out: None,
        jobs: std::thread::available_parallelism().map_or(1, |n| n.get()),
        list: false,
    };
    let value = |it: &mut dyn Iterator<Item = String>, flag: &str| {
        it.next().ok_or_else(|| format!("{flag} needs a value"))
    };
    let number = |v: String, flag: &str| {
        v.replace('_', "")
            .parse::<u64>()
            .map_err(|_| format!("{flag} {v}: not a whole number"))
    };
    while let Some(arg) = it.next() {
        match arg.as_str() {
            "--scenario" => a.scenarios.push(scenario::builtin(&value(&mut it, &arg)?)?),
            "--all" => {
                for (name, _) in scenario::BUILTIN {
                    a.scenarios.push(scenario::builtin(name)?);
                }
            }
            "--config" => {
                let path = value(&mut it, &arg)?;
                let text = std::fs::read_to_string(&path).map_err(|e| format!("{path}: {e}"))?;
                a.scenarios
                    .push(Scenario::from_toml(&text).map_err(|e| format!("{path}: {e}"))?);
            }
            "--requests" => {
                let n = number(value(&mut it, &arg)?, &arg)?;
                if n == 0 {
                    return Err("--requests must be at least 1".into());
                }
                a.requests = Some(n);
            }
            "--seed" => a.seed = number(value(&mut it, &arg)?, &arg)?,
            "--out" => a.out = Some(PathBuf::from(value(&mut it, &arg)?)),
            "--jobs" => a.jobs = number(value(&mut it, &arg)?, &arg)?.max(1) as usize,
            "--list" => a.list = true,
            "-h" | "--help" => return Err(String::new()),
            other => return Err(format!("unknown argument `{other}`")),
        }
    }
    Ok(a)
}

fn list() {
    println!("built-in scenarios:");
    for (name, _) in scenario::BUILTIN {
        let sc = scenario::builtin(name).expect("built-ins parse");
        let first = sc.description.split(". ").next().unwrap_or_default();
        println!("  {name:<20} {}", first.trim_end_matches('.'));
    }
    println!("strategies:");
    for e in strategies::all() {
        println!("  {:<20} {}", e.name, e.about);
    }
}

/// Runs the lab as the command line `argv` asks (`argv[0]` is the program name): lists, or runs
/// the chosen scenarios and prints their tables (and writes charts with `--out`). Returns the
/// process's exit code: 2 for bad arguments, 1 for a failed run.
pub fn run(argv: impl IntoIterator<Item = String>) -> ExitCode {
    let args = match parse(argv.into_iter().skip(1)) {
        Ok(a) => a,
        Err(e) => {
            if !e.is_empty() {
                eprintln!("error: {e}\n");
            }
            eprint!("{USAGE}");
            return ExitCode::from(2);
        }
    };
    if args.list {
        list();
        return ExitCode::SUCCESS;
    }
    if args.scenarios.is_empty() {
        eprint!("{USAGE}");
        return ExitCode::from(2);
    }
    match run_args(&args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

fn run_args(args: &Args) -> Result<(), String> {
    let started = Instant::now();
    let all = runner::run_all(&args.scenarios, args.requests, args.seed, args.jobs)?;
    let simulated: u64 = all.iter().flatten().map(|r| r.requests).sum();
    eprintln!(
        "simulated {} requests ({} runs) in {:.1} s",
        report::thousands(simulated),
        all.iter().map(Vec::len).sum::<usize>(),
        started.elapsed().as_secs_f64()
    );
    let mut md = String::new();
    for (sc, runs) in args.scenarios.iter().zip(&all) {
        let requests = args.requests.unwrap_or(sc.requests);
        md.push_str(&report::markdown(sc, runs, requests, args.seed));
        md.push('\n');
    }
    print!("{md}");
    let Some(out) = &args.out else {
        eprintln!("(add --out DIR for SVG charts)");
        return Ok(());
    };
    std::fs::create_dir_all(out).map_err(|e| format!("{}: {e}", out.display()))?;
    std::fs::write(out.join("report.md"), &md).map_err(|e| e.to_string())?;
    for (sc, runs) in args.scenarios.iter().zip(&all) {
        let file = |what: &str| out.join(format!("{}-{what}.svg", sc.name));
        chart::latency_cdf(&file("latency-cdf"), sc, runs)?;
        chart::load_share(&file("load-share"), sc, runs)?;
        if let Some(w) = sc.watched() {
            chart::load_over_time(&file("load-over-time"), sc, runs, &w)?;
        }
    }
    eprintln!("charts and report.md written to {}", out.display());
    Ok(())
}
