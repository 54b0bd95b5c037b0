//! Ketama and Maglev builders on arbitrary identities and weights: `prepare` never panics and
//! returns the ring/table or a typed `UpdateError::Strategy`; a balancer built on what it
//! accepted picks a backend of the set for every key, and, unbounded and with nothing in flight,
//! the same backend for the same key.
#![no_main]

use arbitrary::Arbitrary;
use divvy::strategy::Ketama;
use divvy::{validate, Backend, Balancer, Context, Strategy, UpdateError, MAX_WEIGHT};
use divvy_fuzz::{maglev, Bound};
use libfuzzer_sys::fuzz_target;

#[derive(Arbitrary, Debug)]
struct Input {
    kind: Kind,
    /// Identity and weight selector of each backend.
    backends: Vec<(String, u16)>,
    keys: Vec<Vec<u8>>,
}

#[derive(Arbitrary, Debug, Clone, Copy)]
enum Kind {
    Ketama(Option<Bound>),
    Maglev(u16, Option<Bound>),
}

fn weight(raw: u16) -> u32 {
    // Mostly small; now and then large, so that big rings (and their limit) are reached without
    // every input paying for a million-point ring.
    if raw.is_multiple_of(32) {
        u32::from(raw) % (MAX_WEIGHT + 1)
    } else {
        u32::from(raw % 8)
    }
}

fn check<S: Strategy>(strategy: S, set: Vec<Backend>, keys: &[Vec<u8>], bounded: bool) {
    if validate(&set).is_err() {
        // `prepare` is only ever given validated sets.
        return;
    }
    // `Balancer::new` validates (already done) and prepares: any error must be the strategy's.
    let lb = match Balancer::new(strategy, set.clone()) {
        Ok(lb) => lb,
        Err(UpdateError::Strategy { .. }) => return,
        Err(e) => panic!("prepare failed with a non-strategy error {e:?}"),
    };
    for key in keys.iter().take(64) {
        let ctx = Context::new().key(key);
        let first = lb.pick(&ctx).expect("every backend is up");
        assert!(set.iter().any(|b| b.id() == first.backend().id()));
        let first = first.backend().id().to_owned();
        if !bounded && !key.is_empty() {
            let again = lb.pick(&ctx).expect("every backend is up");
            assert_eq!(
                again.backend().id(),
                first,
                "a key moved with nothing changed"
            );
        }
    }
}

fuzz_target!(|input: Input| {
    let set: Vec<Backend> = input
        .backends
        .iter()
        .take(64)
        .map(|(id, w)| Backend::new(id.as_str()).weight(weight(*w)))
        .collect();
    match input.kind {
        Kind::Ketama(bound) => {
            let s = match bound {
                Some(b) => Ketama::new().bounded_load(b.factor()),
                None => Ketama::new(),
            };
            check(s, set, &input.keys, bound.is_some());
        }
        Kind::Maglev(size, bound) => check(maglev(size, bound.map(Bound::factor)), set, &input.keys, bound.is_some()),
    }
});
