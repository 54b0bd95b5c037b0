//! Pick + guard drop: every strategy × backend count × {1, 2} threads, through both
//! `Balancer::pick` and a per-thread `Picker::pick`, and the baselines measured in the same run:
//! a `Mutex<usize>` round robin, an `AtomicUsize` round robin and tower's p2c balancer.
//!
//! `cargo bench -p divvy-benches --bench pick`; `DIVVY_BENCH_QUICK=1` for a smoke run; then
//! `cargo run -p divvy-benches --bin bench_table` for the Markdown table (docs/BENCHMARKS.md).

mod support;

use std::future::Future;
use std::hint::black_box;
use std::pin::pin;
use std::sync::atomic::{AtomicUsize, Ordering::Relaxed};
use std::sync::Mutex;
use std::task::{Context as TaskContext, Poll, Waker};
use std::time::Instant;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion};
use divvy::{Backend, Balancer, Context, Strategy};
use support::{
    each_strategy, on_threads, pick_sizes, Echo, Requests, SetKind, Visit, CONTEXTS, THREADS,
};
use tower::balance::p2c::Balance as TowerP2c;
use tower::discover::ServiceList;
use tower::load::{CompleteOnResponse, PendingRequests};
use tower::Service;

const MASK: usize = CONTEXTS - 1;

// === divvy ===

struct PickMatrix<'a, 'c> {
    c: &'a mut Criterion,
    ctxs: &'a [Context<'c>],
}

impl Visit for PickMatrix<'_, '_> {
    fn visit<S: Strategy>(&mut self, name: &'static str, set: SetKind, make: &dyn Fn() -> S) {
        let ctxs = self.ctxs;
        for n in pick_sizes() {
            let lb = Balancer::new(make(), set.backends(n))
                .unwrap_or_else(|e| panic!("{name} with {n} backends: {e}"));
            assert!(lb.pick(&ctxs[0]).is_ok(), "{name} picks nothing");
            for threads in THREADS {
                let mut g = self.c.benchmark_group(format!("pick_{threads}t_balancer"));
                g.bench_function(BenchmarkId::new(name, n), |b| {
                    b.iter_custom(|iters| {
                        on_threads(threads, |start| {
                            start.wait();
                            let t = Instant::now();
                            for k in 0..iters as usize {
                                black_box(lb.pick(black_box(&ctxs[k & MASK])).is_ok());
                            }
                            t.elapsed()
                        })
                    })
                });
                g.finish();

                let mut g = self.c.benchmark_group(format!("pick_{threads}t_picker"));
                g.bench_function(BenchmarkId::new(name, n), |b| {
                    b.iter_custom(|iters| {
                        on_threads(threads, |start| {
                            let mut picker = lb.picker();
                            start.wait();
                            let t = Instant::now();
                            for k in 0..iters as usize {
                                black_box(picker.pick(black_box(&ctxs[k & MASK])).is_ok());
                            }
                            t.elapsed()
                        })
                    })
                });
                g.finish();
            }
            // Every guard dropped: nothing may be left in flight.
            assert!(
                lb.stats().iter().all(|s| s.in_flight == 0),
                "{name} leaks in-flight"
            );
        }
    }
}

fn divvy_picks(c: &mut Criterion) {
    let requests = Requests::new();
    let ctxs = requests.contexts();
    each_strategy(&mut PickMatrix { c, ctxs: &ctxs });
}

// === Baselines ===

fn baselines(c: &mut Criterion) {
    for n in pick_sizes() {
        let set: Vec<Backend> = support::backends(n);
        let set = &set[..];
        for threads in THREADS {
            let mut g = c.benchmark_group(format!("baseline_{threads}t"));

            // What a hand-rolled balancer usually starts as: a counter behind a lock.
            let next = Mutex::new(0usize);
            g.bench_function(BenchmarkId::new("Mutex<usize> RR", n), |b| {
                b.iter_custom(|iters| {
                    on_threads(threads, |start| {
                        start.wait();
                        let t = Instant::now();
                        for _ in 0..iters {
                            let i = {
                                let mut next = next.lock().unwrap();
                                let i = *next;
                                *next = if i + 1 == set.len() { 0 } else { i + 1 };
                                i
                            };
                            black_box(&set[i]);
                        }
                        t.elapsed()
                    })
                })
            });

            // The same, counting what is in flight as divvy's guard does (one increment at the
            // pick, one decrement at the end): the like-for-like floor for a locked balancer.
            let next = Mutex::new(0usize);
            let in_flight: Vec<AtomicUsize> = (0..n).map(|_| AtomicUsize::new(0)).collect();
            g.bench_function(BenchmarkId::new("Mutex<usize> RR + in-flight", n), |b| {
                b.iter_custom(|iters| {
                    on_threads(threads, |start| {
                        start.wait();
                        let t = Instant::now();
                        for _ in 0..iters {
                            let i = {
                                let mut next = next.lock().unwrap();
                                let i = *next;
                                *next = if i + 1 == set.len() { 0 } else { i + 1 };
                                i
                            };
                            in_flight[i].fetch_add(1, Relaxed);
                            black_box(&set[i]);
                            in_flight[i].fetch_sub(1, Relaxed);
                        }
                        t.elapsed()
                    })
                })
            });

            // The lock-free floor for any shared-cursor strategy.
            let next = AtomicUsize::new(0);
            g.bench_function(BenchmarkId::new("AtomicUsize RR", n), |b| {
                b.iter_custom(|iters| {
                    on_threads(threads, |start| {
                        start.wait();
                        let t = Instant::now();
                        for _ in 0..iters {
                            black_box(&set[next.fetch_add(1, Relaxed) % set.len()]);
                        }
                        t.elapsed()
                    })
                })
            });

            // tower's balancer needs `&mut self` to pick: it cannot be shared by two threads
            // without a lock of its own, so it is measured single-threaded only.
            if threads == 1 {
                tower_p2c(&mut g, n);
            }
            g.finish();
        }
    }
}

/// tower's p2c over `n` ready endpoints, each behind `PendingRequests`: `poll_ready` (which
/// samples two endpoints and compares their load) then `call`, polling the response to
/// completion so the pending-request handle is released, as a request would.
fn tower_p2c(g: &mut criterion::BenchmarkGroup<'_, criterion::measurement::WallTime>, n: usize) {
    let endpoints = (0..n).map(|_| PendingRequests::new(Echo, CompleteOnResponse::default()));
    let mut balance: TowerP2c<_, u32> =
        TowerP2c::new(ServiceList::new(endpoints.collect::<Vec<_>>()));
    let mut cx = TaskContext::from_waker(Waker::noop());
    // The first poll discovers every endpoint; that is setup, not a pick.
    assert!(matches!(balance.poll_ready(&mut cx), Poll::Ready(Ok(()))));
    assert_eq!(balance.len(), n);
    g.bench_function(BenchmarkId::new("tower p2c", n), |b| {
        b.iter_custom(|iters| {
            let t = Instant::now();
            for k in 0..iters as u32 {
                match balance.poll_ready(&mut cx) {
                    Poll::Ready(Ok(())) => {}
                    other => panic!("tower p2c not ready: {other:?}"),
                }
                let response = pin!(balance.call(k)).poll(&mut cx);
                black_box(response.is_ready());
            }
            t.elapsed()
        })
    });
}

criterion_group! {
    name = benches;
    config = support::criterion();
    targets = divvy_picks, baselines
}
criterion_main!(benches);
