//! A plain driver for profilers (callgrind, perf): picks and drops from one strategy in a loop,
//! with the same sets and contexts as the criterion benches, and nothing else in the process.
//!
//! ```text
//! cargo bench -p divvy-benches --bench profile --no-run    # prints the binary's path
//! valgrind --tool=callgrind target/release/deps/profile-… RoundRobin 16 picker 200000
//! ```
//!
//! Arguments: strategy name (as in the tables), backend count, `balancer` or `picker`, picks.
//! The strategy name `layer` runs requests through `divvy_tower::Balance` (round robin, as the
//! `layer` bench) instead.
//! Instructions per pick = the difference between two runs with different pick counts, divided
//! by the difference in picks (setup cancels out). Under `cargo bench` (no arguments) it does
//! nothing.

mod support;

use std::hint::black_box;
use std::time::Instant;

use std::future::Future;
use std::pin::pin;
use std::task::{Context as TaskContext, Poll, Waker};

use divvy::strategy::RoundRobin;
use divvy::{Backend, Balancer, Outcome, Strategy};
use divvy_tower::track::Opaque;
use divvy_tower::Balance;
use support::{each_strategy, Echo, Requests, SetKind, Visit, CONTEXTS};
use tower::Service;

struct Args {
    name: String,
    n: usize,
    picker: bool,
    picks: usize,
}

struct Drive(Args, bool);

impl Visit for Drive {
    fn visit<S: Strategy>(&mut self, name: &'static str, set: SetKind, make: &dyn Fn() -> S) {
        let args = &self.0;
        if name != args.name {
            return;
        }
        self.1 = true;
        let lb = Balancer::new(make(), set.backends(args.n)).expect("valid set");
        let requests = Requests::new();
        let ctxs = requests.contexts();
        let t = Instant::now();
        if args.picker {
            let mut picker = lb.picker();
            for k in 0..args.picks {
                black_box(picker.pick(black_box(&ctxs[k & (CONTEXTS - 1)])).is_ok());
            }
        } else {
            for k in 0..args.picks {
                black_box(lb.pick(black_box(&ctxs[k & (CONTEXTS - 1)])).is_ok());
            }
        }
        let per_pick = t.elapsed().as_nanos() as f64 / args.picks.max(1) as f64;
        println!("{name} n={} {per_pick:.1} ns/pick", args.n);
    }
}

fn parse() -> Option<Args> {
    let mut it = std::env::args().skip(1);
    let name = it.next().filter(|a| !a.starts_with('-'))?;
    let n = it.next()?.parse().ok()?;
    let picker = match it.next()?.as_str() {
        "picker" => true,
        "balancer" => false,
        _ => return None,
    };
    let picks = it.next()?.parse().ok()?;
    Some(Args {
        name,
        n,
        picker,
        picks,
    })
}

fn layer(args: &Args) {
    let lb = Balancer::new(RoundRobin::new(), support::backends(args.n)).expect("valid set");
    let classify = |_: &u32| Outcome::Success;
    let mut balance = Balance::new(lb, |_: &Backend| Echo, (), classify).track(Opaque);
    let mut cx = TaskContext::from_waker(Waker::noop());
    let t = Instant::now();
    for k in 0..args.picks as u32 {
        assert!(matches!(balance.poll_ready(&mut cx), Poll::Ready(Ok(()))));
        let response = pin!(balance.call(black_box(k))).poll(&mut cx);
        black_box(matches!(response, Poll::Ready(Ok(_))));
    }
    let per = t.elapsed().as_nanos() as f64 / args.picks.max(1) as f64;
    println!("layer n={} {per:.1} ns/request", args.n);
}

fn main() {
    let Some(args) = parse() else {
        eprintln!("profile: usage: profile STRATEGY BACKENDS balancer|picker PICKS (idle under cargo bench)");
        return;
    };
    if args.name == "layer" {
        layer(&args);
        return;
    }
    let name = args.name.clone();
    let mut drive = Drive(args, false);
    each_strategy(&mut drive);
    if !drive.1 {
        eprintln!("profile: no strategy named {name:?}");
        std::process::exit(2);
    }
}
