//! What every bench shares: the strategy list, backend sets, pre-generated request contexts,
//! the run configuration (full or quick) and the two-thread timing harness.
//!
//! Each bench file includes this module; not every file uses every item.
#![allow(dead_code)]

use std::net::{IpAddr, Ipv4Addr};
use std::sync::Barrier;
use std::thread;
use std::time::Duration;

use criterion::Criterion;
use divvy::strategy::{
    Failover, IpHash, Ketama, LeastConnections, Maglev, PowerOfTwoChoices, Random, RoundRobin,
    WeightedRoundRobin,
};
use divvy::{Backend, Context, Strategy};

/// Set `DIVVY_BENCH_QUICK=1` for a smoke run: short warm-up and measurement, fewer sizes.
pub const QUICK_VAR: &str = "DIVVY_BENCH_QUICK";

/// Whether this is a quick run.
pub fn quick() -> bool {
    std::env::var_os(QUICK_VAR).is_some_and(|v| !v.is_empty() && v != "0")
}

/// Set `DIVVY_BENCH_SIZES=16,1000` to choose the pick matrix's backend counts.
pub const SIZES_VAR: &str = "DIVVY_BENCH_SIZES";

/// Backend counts for the pick matrix: `DIVVY_BENCH_SIZES` if set, else the full matrix, or its
/// two ends when quick.
pub fn pick_sizes() -> Vec<usize> {
    if let Some(sizes) = std::env::var(SIZES_VAR).ok().and_then(|v| parse_sizes(&v)) {
        return sizes;
    }
    if quick() {
        vec![16, 10_000]
    } else {
        vec![3, 16, 1_000, 10_000, 100_000]
    }
}

fn parse_sizes(v: &str) -> Option<Vec<usize>> {
    let sizes: Vec<usize> = v
        .split(',')
        .map(|s| s.trim().replace('_', "").parse().ok().filter(|&n| n > 0))
        .collect::<Option<_>>()?;
    (!sizes.is_empty()).then_some(sizes)
}

/// Backend counts for snapshot rebuilds.
pub fn rebuild_sizes() -> &'static [usize] {
    &[1_000, 10_000, 100_000]
}

/// Thread counts picking from one shared balancer.
pub const THREADS: [usize; 2] = [1, 2];

/// The criterion configuration: command-line options given to `cargo bench -- …` still win.
pub fn criterion() -> Criterion {
    let c = Criterion::default().without_plots();
    if quick() {
        c.warm_up_time(Duration::from_millis(200))
            .measurement_time(Duration::from_millis(500))
            .sample_size(10)
    } else {
        c.warm_up_time(Duration::from_secs(1))
            .measurement_time(Duration::from_secs(3))
    }
}

// === Backend sets ===

/// `n` backends with distinct addresses and weights 1..=4 in turn, all primary.
pub fn backends(n: usize) -> Vec<Backend> {
    (0..n)
        .map(|i| {
            let [_, a, b, c] = (i as u32).to_be_bytes();
            Backend::new(format!("10.{a}.{b}.{c}:8080")).weight(1 + (i % 4) as u32)
        })
        .collect()
}

/// As [`backends`], but the last quarter (at least one) are `backup`: a set for `Failover`.
pub fn tiered_backends(n: usize) -> Vec<Backend> {
    let spares = (n / 4).max(1);
    backends(n)
        .into_iter()
        .enumerate()
        .map(|(i, b)| if i >= n - spares { b.backup() } else { b })
        .collect()
}

/// Which backend set a strategy is measured on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SetKind {
    /// All primary.
    Flat,
    /// A quarter backup (for priority failover).
    Tiered,
}

impl SetKind {
    /// The set of `n` backends of this kind.
    pub fn backends(self, n: usize) -> Vec<Backend> {
        match self {
            SetKind::Flat => backends(n),
            SetKind::Tiered => tiered_backends(n),
        }
    }

    /// The same set with its middle member replaced: what a rebuild bench alternates with.
    pub fn changed(self, n: usize) -> Vec<Backend> {
        let mut set = self.backends(n);
        set[n / 2] = Backend::new("192.0.2.1:8080").weight(3);
        set
    }
}

// === Strategies ===

/// Called once per strategy by [`each_strategy`].
pub trait Visit {
    /// `make` builds a fresh strategy value; `name` labels it in reports.
    fn visit<S: Strategy>(&mut self, name: &'static str, set: SetKind, make: &dyn Fn() -> S);
}

/// The load-bound factor of the bounded variants: the low end of the usual 1.25 to 2.
pub const BOUND: f64 = 1.25;

/// Every strategy divvy ships, in the order the reports list them.
pub fn each_strategy(v: &mut impl Visit) {
    v.visit("RoundRobin", SetKind::Flat, &RoundRobin::new);
    v.visit(
        "WeightedRoundRobin",
        SetKind::Flat,
        &WeightedRoundRobin::new,
    );
    v.visit("LeastConnections", SetKind::Flat, &LeastConnections::new);
    v.visit("IpHash", SetKind::Flat, &IpHash::new);
    v.visit("IpHash::full_address", SetKind::Flat, &IpHash::full_address);
    v.visit("Ketama", SetKind::Flat, &Ketama::new);
    v.visit("Ketama bounded", SetKind::Flat, &|| {
        Ketama::new().bounded_load(BOUND)
    });
    v.visit("Maglev", SetKind::Flat, &Maglev::new);
    v.visit("Maglev bounded", SetKind::Flat, &|| {
        Maglev::new().bounded_load(BOUND)
    });
    // OS-seeded, as users build them: their random streams are per thread. A seeded stream
    // (`from_seed`, for reproducible tests) shares one atomic counter between threads instead.
    v.visit("Random", SetKind::Flat, &Random::new);
    v.visit("PowerOfTwoChoices", SetKind::Flat, &PowerOfTwoChoices::new);
    v.visit(
        "PowerOfTwoChoices::peak_ewma",
        SetKind::Flat,
        &PowerOfTwoChoices::peak_ewma,
    );
    v.visit("Failover(WeightedRoundRobin)", SetKind::Tiered, &|| {
        Failover::new(WeightedRoundRobin::new())
    });
}

// === Request contexts ===

/// How many pre-generated contexts a timed loop cycles through (a power of two).
pub const CONTEXTS: usize = 4096;

/// Pre-generated client addresses and hash keys, so the timed loop only indexes an array.
pub struct Requests {
    keys: Vec<[u8; 16]>,
    ips: Vec<IpAddr>,
}

impl Requests {
    /// [`CONTEXTS`] random IPv4 clients and 16-byte keys from a fixed seed.
    pub fn new() -> Self {
        let mut state = 0x9E37_79B9_7F4A_7C15_u64;
        let mut next = move || {
            // xorshift64*: a fixed, dependency-free stream; quality is not the point here.
            state ^= state >> 12;
            state ^= state << 25;
            state ^= state >> 27;
            state.wrapping_mul(0x2545_F491_4F6C_DD1D)
        };
        let mut keys = Vec::with_capacity(CONTEXTS);
        let mut ips = Vec::with_capacity(CONTEXTS);
        for _ in 0..CONTEXTS {
            let mut key = [0u8; 16];
            key[..8].copy_from_slice(&next().to_le_bytes());
            key[8..].copy_from_slice(&next().to_le_bytes());
            keys.push(key);
            ips.push(IpAddr::V4(Ipv4Addr::from(next() as u32)));
        }
        Requests { keys, ips }
    }

    /// One context per request, each with a client address and a key.
    pub fn contexts(&self) -> Vec<Context<'_>> {
        self.keys
            .iter()
            .zip(&self.ips)
            .map(|(k, &ip)| Context::new().client_ip(ip).key(k))
            .collect()
    }
}

// === Timing ===

/// Runs `work` on `threads` threads at once and returns the longest of their own timings.
///
/// `work` gets a barrier to wait on once its per-thread setup is done and returns how long its
/// timed part took; with every thread doing the same number of operations, the result divided
/// by that number is the per-operation cost while `threads` threads contend.
pub fn on_threads<F>(threads: usize, work: F) -> Duration
where
    F: Fn(&Barrier) -> Duration + Sync,
{
    let barrier = Barrier::new(threads);
    if threads == 1 {
        return work(&barrier);
    }
    thread::scope(|s| {
        let handles: Vec<_> = (0..threads).map(|_| s.spawn(|| work(&barrier))).collect();
        handles
            .into_iter()
            .map(|h| h.join().expect("bench thread panicked"))
            .max()
            .unwrap_or_default()
    })
}

/// The mock endpoint the tower benches call: always ready, answers at once with its request.
#[derive(Clone, Copy, Debug)]
pub struct Echo;

impl tower::Service<u32> for Echo {
    type Response = u32;
    type Error = std::convert::Infallible;
    type Future = std::future::Ready<Result<u32, std::convert::Infallible>>;

    fn poll_ready(
        &mut self,
        _: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Result<(), std::convert::Infallible>> {
        std::task::Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: u32) -> Self::Future {
        std::future::ready(Ok(req))
    }
}
