//! Snapshot rebuilds, the work an update does off the pick path: `Strategy::prepare` alone and
//! a whole `Balancer::update` (validation, prepare, per-backend state carried over, publication),
//! for every strategy at 1,000, 10,000 and 100,000 backends.
//!
//! `cargo bench -p divvy-benches --bench rebuild`; `DIVVY_BENCH_QUICK=1` for a smoke run.

mod support;

use std::hint::black_box;

use criterion::{criterion_group, criterion_main, BatchSize, BenchmarkId, Criterion};
use divvy::{BackendSet, Balancer, Strategy};
use support::{each_strategy, rebuild_sizes, SetKind, Visit};

struct Rebuilds<'a> {
    c: &'a mut Criterion,
}

impl Visit for Rebuilds<'_> {
    fn visit<S: Strategy>(&mut self, name: &'static str, set: SetKind, make: &dyn Fn() -> S) {
        for &n in rebuild_sizes() {
            let sets = [set.backends(n), set.changed(n)];

            let strategy = make();
            let valid = BackendSet::new(&sets[0]).expect("valid set");
            let mut g = self.c.benchmark_group("rebuild_prepare");
            g.bench_function(BenchmarkId::new(name, n), |b| {
                b.iter(|| black_box(strategy.prepare(black_box(&valid)).is_ok()))
            });
            g.finish();

            // Alternate between two sets that differ in one backend, as a discovery update does;
            // cloning the set (the caller's work) is outside the timing.
            let lb = Balancer::new(make(), sets[0].clone()).expect("valid set");
            let mut flip = 0;
            let mut g = self.c.benchmark_group("rebuild_update");
            g.bench_function(BenchmarkId::new(name, n), |b| {
                b.iter_batched(
                    || {
                        flip ^= 1;
                        sets[flip].clone()
                    },
                    |set| lb.update(set).expect("valid set"),
                    BatchSize::LargeInput,
                )
            });
            g.finish();
        }
    }
}

fn rebuilds(c: &mut Criterion) {
    each_strategy(&mut Rebuilds { c });
}

criterion_group! {
    name = benches;
    config = support::criterion();
    targets = rebuilds
}
criterion_main!(benches);
