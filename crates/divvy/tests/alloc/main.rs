//! The pick path allocates nothing: a counting global allocator watches every strategy.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::net::{IpAddr, Ipv4Addr};

use divvy::strategy::RoundRobin;
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
    let mut run = |rounds: usize| {
        for r in 0..rounds {
            let ip = IpAddr::V4(Ipv4Addr::new(192, 0, (r % 256) as u8, 7));
            let ctx = Context::new()
                .client_ip(ip)
                .key(keys[r % keys.len()].as_bytes())
                .zone("z");
            let held = lb.pick(&ctx).unwrap();
            lb.pick(&ctx.exclude(&excluded)).unwrap().success();
            lb.pick(&ctx.sticky(held.backend().key()))
                .unwrap()
                .failure();
            drop(held);
        }
    };
    run(50); // warm up thread-local state (arc-swap's debt slots are allocated on first use)
    let n = allocations_during(|| run(2_000));
    assert_eq!(n, 0, "{name}: the pick path allocated {n} times");
}

#[test]
fn the_counter_sees_an_allocation() {
    let n = allocations_during(|| drop(std::hint::black_box(vec![1u8; 16])));
    assert_eq!(n, 1);
}

#[test]
fn round_robin_picks_without_allocating() {
    assert_no_allocation(RoundRobin::new());
}
