//! The pick path allocates nothing: a counting global allocator watches every strategy.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::net::{IpAddr, Ipv4Addr};

use divvy::strategy::{
    Failover, IpHash, Ketama, LeastConnections, Maglev, PowerOfTwoChoices, Random, RoundRobin,
    WeightedRoundRobin,
};
use divvy::{Backend, Balancer, Context, Strategy};

struct Counting;

thread_local! {
    static ALLOCS: Cell<u64> = const { Cell::new(0) };
}

// SAFETY: every call is passed unchanged to the system allocator; the count is per thread, so
// other test threads cannot disturb it.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let _ = ALLOCS.try_with(|c| c.set(c.get() + 1));
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        let _ = ALLOCS.try_with(|c| c.set(c.get() + 1));
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

fn allocations_during(f: impl FnOnce()) -> u64 {
    let before = ALLOCS.with(Cell::get);
    f();
    ALLOCS.with(Cell::get) - before
}

fn backends(n: usize) -> Vec<Backend> {
    (0..n)
        .map(|i| {
            Backend::new(format!("10.0.{}.{}:80", i / 250, i % 250)).weight(1 + (i % 7) as u32)
        })
        .collect()
}

/// Picks with contexts that exercise every optional field, with outcomes and held guards.
fn assert_no_allocation<S: Strategy>(strategy: S) {
    let name = strategy.name();
    let lb = Balancer::new(strategy, backends(100)).unwrap();
    let keys: Vec<String> = (0..64).map(|i| format!("user-{i}")).collect();
    let excluded = [
        Backend::new("10.0.0.1:80").key(),
        Backend::new("10.0.0.2:80").key(),
    ];
    let run = |rounds: usize| {
        for r in 0..rounds {
            let ip = IpAddr::V4(Ipv4Addr::new(192, 0, (r % 256) as u8, 7));
            let ctx = Context::new()
                .client_ip(ip)
                .key(keys[r % keys.len()].as_bytes())
                .zone("z");
            let held = lb.pick(&ctx).unwrap();
            lb.pick(&ctx.exclude(&excluded)).unwrap().success();
            lb.pick(&ctx.sticky(held.key())).unwrap().failure();
            drop(held);
        }
    };
    run(50); // warm up thread-local state (arc-swap's debt slots are allocated on first use)
    let n = allocations_during(|| run(2_000));
    assert_eq!(n, 0, "{name}: the pick path allocated {n} times");
    let mut picker = lb.picker();
    drop(picker.pick(&Context::new()));
    let n = allocations_during(|| {
        for i in 0..2_000u32 {
            let key = i.to_le_bytes();
            drop(picker.pick(&Context::new().key(&key)).unwrap());
        }
    });
    assert_eq!(n, 0, "{name}: Picker::pick allocated {n} times");
}

#[test]
fn the_counter_sees_an_allocation() {
    let n = allocations_during(|| drop(std::hint::black_box(vec![1u8; 16])));
    assert_eq!(n, 1);
}

macro_rules! no_allocation {
    ($($test:ident: $strategy:expr,)*) => {$(
        #[test]
        fn $test() {
            assert_no_allocation($strategy);
        }
    )*};
}

no_allocation! {
    round_robin_picks_without_allocating: RoundRobin::new(),
    weighted_round_robin_picks_without_allocating: WeightedRoundRobin::new(),
    least_connections_picks_without_allocating: LeastConnections::new(),
    ip_hash_picks_without_allocating: IpHash::new(),
    full_address_ip_hash_picks_without_allocating: IpHash::full_address(),
    ketama_picks_without_allocating: Ketama::new(),
    bounded_ketama_picks_without_allocating: Ketama::new().bounded_load(1.25),
    maglev_picks_without_allocating: Maglev::new(),
    bounded_maglev_picks_without_allocating: Maglev::new().bounded_load(1.25),
    random_picks_without_allocating: Random::from_seed(1),
    p2c_picks_without_allocating: PowerOfTwoChoices::from_seed(1),
    peak_ewma_p2c_picks_without_allocating: PowerOfTwoChoices::peak_ewma(),
    failover_picks_without_allocating: Failover::zone_aware(WeightedRoundRobin::new()),
}
