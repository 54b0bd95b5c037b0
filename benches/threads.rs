//! Contention: every strategy with one thread and with two threads picking from one shared
//! balancer (pick + guard drop through a per-thread `Picker`), at 16 and 1,000 backends, printing
//! ns per pick per thread and the 2-thread ÷ 1-thread ratio; and the single-thread cost of
//! `Balancer::pick` next to `Picker::pick`, with their ratio.
//!
//! Not criterion: the point is a ratio between runs that share the same minutes, so each round
//! times 1 thread, 2 threads and `Balancer::pick` back to back, and the table reports the median
//! of the rounds. `cargo bench --bench threads`; `DIVVY_BENCH_QUICK=1` for fewer, shorter rounds;
//! `DIVVY_BENCH_SIZES=16` to choose the backend counts; a first argument filters strategies by
//! substring (`cargo bench --bench threads -- Maglev`).

mod support;

use std::hint::black_box;
use std::time::{Duration, Instant};

use divvy::{Balancer, Context, Strategy};
use support::{each_strategy, on_threads, quick, Requests, SetKind, Visit, CONTEXTS, SIZES_VAR};

const MASK: usize = CONTEXTS - 1;

/// Picks timed once to size the runs.
const CALIBRATION: usize = 20_000;

struct Table<'a, 'c> {
    ctxs: &'a [Context<'c>],
    filter: Option<String>,
    sizes: Vec<usize>,
    rounds: usize,
    /// How long one timed run should take: the pick count is sized to it per strategy and size,
    /// so a slow strategy (least connections over 1,000) does not take minutes.
    run_time: Duration,
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// Time this thread has spent on a CPU (`CLOCK_THREAD_CPUTIME_ID`, Linux); `None` elsewhere. On
/// a shared machine with more runnable threads than cores, wall time mostly measures the
/// scheduler; time on CPU still includes every cache miss and contended write.
#[cfg(target_os = "linux")]
fn on_cpu() -> Option<Duration> {
    #[repr(C)]
    struct Timespec {
        tv_sec: i64,
        tv_nsec: i64,
    }
    extern "C" {
        fn clock_gettime(clock: i32, tp: *mut Timespec) -> i32;
    }
    const CLOCK_THREAD_CPUTIME_ID: i32 = 3;
    let mut t = Timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `clock_gettime` (libc, which std links) writes one `timespec`, whose layout on
    // 64-bit Linux is two `i64`s, to the pointer it is given, here a live local.
    let rc = unsafe { clock_gettime(CLOCK_THREAD_CPUTIME_ID, &mut t) };
    (rc == 0).then(|| Duration::new(t.tv_sec as u64, t.tv_nsec as u32))
}

#[cfg(not(target_os = "linux"))]
fn on_cpu() -> Option<Duration> {
    None
}

/// A timer of on-CPU time where the platform has it, of wall time otherwise.
struct Timer {
    cpu: Option<Duration>,
    wall: Instant,
}

impl Timer {
    fn start() -> Self {
        Timer {
            cpu: on_cpu(),
            wall: Instant::now(),
        }
    }

    fn elapsed(&self) -> Duration {
        match (self.cpu, on_cpu()) {
            (Some(a), Some(b)) => b.saturating_sub(a),
            _ => self.wall.elapsed(),
        }
    }
}

fn ns_per_pick(d: Duration, picks: usize) -> f64 {
    d.as_nanos() as f64 / picks as f64
}

impl Visit for Table<'_, '_> {
    fn visit<S: Strategy>(&mut self, name: &'static str, set: SetKind, make: &dyn Fn() -> S) {
        if self.filter.as_deref().is_some_and(|f| !name.contains(f)) {
            return;
        }
        let ctxs = self.ctxs;
        for &n in &self.sizes {
            let lb = Balancer::new(make(), set.backends(n))
                .unwrap_or_else(|e| panic!("{name} with {n} backends: {e}"));
            let picks = {
                let mut picker = lb.picker();
                let t = Timer::start();
                for k in 0..CALIBRATION {
                    black_box(picker.pick(black_box(&ctxs[k & MASK])).is_ok());
                }
                let per_pick = t.elapsed().as_secs_f64() / CALIBRATION as f64;
                ((self.run_time.as_secs_f64() / per_pick) as usize).clamp(CALIBRATION, 4_000_000)
            };
            let picker_run = |threads: usize| {
                on_threads(threads, |start| {
                    let mut picker = lb.picker();
                    start.wait();
                    let t = Timer::start();
                    for k in 0..picks {
                        black_box(picker.pick(black_box(&ctxs[k & MASK])).is_ok());
                    }
                    t.elapsed()
                })
            };
            let balancer_run = || {
                let t = Timer::start();
                for k in 0..picks {
                    black_box(lb.pick(black_box(&ctxs[k & MASK])).is_ok());
                }
                t.elapsed()
            };
            // Warm-up: caches, branch predictors, the thread-local state of both paths.
            picker_run(2);
            balancer_run();
            let (mut one, mut two, mut bal) = (Vec::new(), Vec::new(), Vec::new());
            for _ in 0..self.rounds {
                one.push(ns_per_pick(picker_run(1), picks));
                two.push(ns_per_pick(picker_run(2), picks));
                bal.push(ns_per_pick(balancer_run(), picks));
            }
            let (one, two, bal) = (median(one), median(two), median(bal));
            println!(
                "| {name} | {n} | {one:.1} | {two:.1} | {:.2} | {bal:.1} | {:.2} |",
                two / one,
                bal / one
            );
            assert!(
                lb.stats().iter().all(|s| s.in_flight == 0),
                "{name} leaks in-flight"
            );
        }
    }
}

fn main() {
    // `cargo bench` passes `--bench`; anything else not starting with `-` is a filter.
    let filter = std::env::args().skip(1).find(|a| !a.starts_with('-'));
    let sizes = std::env::var(SIZES_VAR)
        .ok()
        .and_then(|v| {
            v.split(',')
                .map(|s| s.trim().replace('_', "").parse().ok())
                .collect::<Option<Vec<usize>>>()
        })
        .filter(|v| !v.is_empty() && v.iter().all(|&n| n > 0))
        .unwrap_or_else(|| vec![16, 1_000]);
    let (rounds, run_time) = if quick() {
        (5, Duration::from_millis(5))
    } else {
        (15, Duration::from_millis(25))
    };
    let requests = Requests::new();
    let ctxs = requests.contexts();
    println!(
        "ns per pick + guard drop per thread (time on CPU where the OS reports it), median of \
         {rounds} rounds of about {} ms each",
        run_time.as_millis()
    );
    println!();
    println!("| strategy | backends | P 1t | P 2t | 2t ÷ 1t | B 1t | B ÷ P 1t |");
    println!("|---|---:|---:|---:|---:|---:|---:|");
    each_strategy(&mut Table {
        ctxs: &ctxs,
        filter,
        sizes,
        rounds,
        run_time,
    });
}
