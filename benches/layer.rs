//! The tower adapter's cost: a request through `divvy_tower::Balance` (round robin, no context,
//! the guard held until the response arrives) against calling the same mock endpoint directly.
//! The difference is what the middleware adds per request, pick included.
//!
//! `cargo bench -p divvy-benches --bench layer`; `DIVVY_BENCH_QUICK=1` for a smoke run.

mod support;

use std::future::Future;
use std::hint::black_box;
use std::pin::pin;
use std::task::{Context as TaskContext, Poll, Waker};
use std::time::Instant;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion};
use divvy::strategy::RoundRobin;
use divvy::{Backend, Balancer, Outcome};
use divvy_tower::track::Opaque;
use divvy_tower::Balance;
use support::Echo;
use tower::Service;

/// `poll_ready`, `call`, and the response polled to completion: one request.
#[inline]
fn request<S: Service<u32>>(svc: &mut S, cx: &mut TaskContext<'_>, req: u32) -> bool {
    assert!(matches!(svc.poll_ready(cx), Poll::Ready(Ok(()))));
    let response = pin!(svc.call(req)).poll(cx);
    matches!(response, Poll::Ready(Ok(_)))
}

fn layer(c: &mut Criterion) {
    let sizes: &[usize] = if support::quick() {
        &[16]
    } else {
        &[16, 10_000]
    };
    let mut g = c.benchmark_group("layer");
    for &n in sizes {
        let mut cx = TaskContext::from_waker(Waker::noop());

        let mut direct = Echo;
        g.bench_function(BenchmarkId::new("direct", n), |b| {
            b.iter_custom(|iters| {
                let t = Instant::now();
                for k in 0..iters as u32 {
                    black_box(request(&mut direct, &mut cx, black_box(k)));
                }
                t.elapsed()
            })
        });

        let lb = Balancer::new(RoundRobin::new(), support::backends(n)).expect("valid set");
        let classify = |_: &u32| Outcome::Success;
        let mut balance = Balance::new(lb.clone(), |_: &Backend| Echo, (), classify).track(Opaque);
        assert!(
            request(&mut balance, &mut cx, 0),
            "the balanced request failed"
        );
        g.bench_function(BenchmarkId::new("divvy Balance", n), |b| {
            b.iter_custom(|iters| {
                let t = Instant::now();
                for k in 0..iters as u32 {
                    black_box(request(&mut balance, &mut cx, black_box(k)));
                }
                t.elapsed()
            })
        });
        assert!(
            lb.stats().iter().all(|s| s.in_flight == 0),
            "the layer leaks in-flight"
        );
    }
    g.finish();
}

criterion_group! {
    name = benches;
    config = support::criterion();
    targets = layer
}
criterion_main!(benches);
