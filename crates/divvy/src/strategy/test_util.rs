//! Test support shared by the strategies' unit tests, and the properties every strategy must
//! have, checked over every strategy at once.

use std::collections::HashMap;

use proptest::prelude::{any, prop, prop_assert, prop_oneof, proptest, Just};
use proptest::strategy::Strategy as Generator;

use crate::backend::{AdminState, Backend};
use crate::balancer::Balancer;
use crate::context::Context;
use crate::error::PickError;
use crate::health::HealthConfig;
use crate::pick::Pick;
use crate::set::BackendSet;
use crate::strategy::{FailoverMode, Strategy, StrategyKind, StrategySpec};

/// `backends` as the validated set `prepare` takes; panics on a set a test got wrong.
pub(crate) fn valid(backends: &[Backend]) -> BackendSet<'_> {
    BackendSet::new(backends).expect("a test set is valid")
}

/// The position of a backend of [`set`] from its identity.
pub(crate) fn index(pick: &Pick) -> usize {
    pick.id()[1..].parse().unwrap()
}

/// Asserts each count is within 5 binomial standard deviations of `picks × p`: a correct
/// strategy fails a cell with probability below 10^-6, while a bias of a few percent of a
/// share fails at the sample sizes used here.
pub(crate) fn assert_binomial(counts: &[u64], probs: &[f64]) {
    assert_eq!(counts.len(), probs.len());
    let picks: u64 = counts.iter().sum();
    let n = picks as f64;
    for (k, (&c, &p)) in counts.iter().zip(probs).enumerate() {
        let expected = n * p;
        let tolerance = 5.0 * (n * p * (1.0 - p)).sqrt();
        assert!(
            (c as f64 - expected).abs() <= tolerance,
            "backend {k}: {c} picks of {picks}, expected {expected:.0} ± {tolerance:.0} \
             (all counts {counts:?}, probabilities {probs:?})"
        );
    }
}

/// Probabilities proportional to `weights`.
pub(crate) fn shares(weights: &[f64]) -> Vec<f64> {
    let total: f64 = weights.iter().sum();
    weights.iter().map(|w| w / total).collect()
}

/// Health with single-probe transitions and the given panic threshold.
pub(crate) fn health(panic_threshold: u32) -> HealthConfig {
    HealthConfig::builder()
        .rise(1)
        .fall(1)
        .panic_threshold(panic_threshold)
        .build()
}

/// Picks `picks` times (dropping each guard at once) and counts picks per backend position.
pub(crate) fn count_picks<S: Strategy>(
    lb: &Balancer<S>,
    ctx: &Context<'_>,
    picks: usize,
) -> Vec<u64> {
    let backends = lb.backends();
    let position: HashMap<&str, usize> = backends
        .iter()
        .enumerate()
        .map(|(i, b)| (b.id(), i))
        .collect();
    let mut counts = vec![0; backends.len()];
    for _ in 0..picks {
        let pick = lb.pick(ctx).expect("a backend is available");
        counts[position[pick.id()]] += 1;
    }
    counts
}

/// What a proptest may do to one backend before picking.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Condition {
    Up,
    Failing,
    Drain,
    Down,
    Excluded,
}

pub(crate) fn condition() -> impl Generator<Value = Condition> {
    prop_oneof![
        3 => Just(Condition::Up),
        1 => Just(Condition::Failing),
        1 => Just(Condition::Drain),
        1 => Just(Condition::Down),
        1 => Just(Condition::Excluded),
    ]
}

impl Condition {
    /// Whether a backend in this condition may take a new request (panic off).
    pub(crate) fn available(self) -> bool {
        matches!(self, Condition::Up)
    }

    /// Applies the condition through the balancer's public controls; returns the key to
    /// exclude, if any.
    pub(crate) fn apply<S: Strategy>(self, lb: &Balancer<S>, b: &Backend) -> Option<u64> {
        match self {
            Condition::Up => None,
            Condition::Failing => {
                lb.report_probe(b.id(), false).unwrap();
                None
            }
            Condition::Drain => {
                lb.set_admin_state(b.id(), Some(AdminState::Drain)).unwrap();
                None
            }
            Condition::Down => {
                lb.set_admin_state(b.id(), Some(AdminState::Down)).unwrap();
                None
            }
            Condition::Excluded => Some(b.key()),
        }
    }
}

/// Backends `b0`, `b1`, … with the given weights.
pub(crate) fn set(weights: &[u32]) -> Vec<Backend> {
    weights
        .iter()
        .enumerate()
        .map(|(i, &w)| Backend::new(format!("b{i}")).weight(w))
        .collect()
}

// === properties of every strategy ===

/// Any strategy divvy ships, with any parameters it takes, wrapped in any failover mode.
fn any_spec() -> impl Generator<Value = StrategySpec> {
    (
        0..StrategyKind::ALL.len(),
        0..3usize,
        any::<bool>(),
        any::<u64>(),
    )
        .prop_map(|(kind, failover, variant, seed)| {
            let kind = StrategyKind::ALL[kind];
            let mut spec = StrategySpec::new(kind);
            // The variant: bounded loads for the hashing strategies, the full address for
            // `ip_hash`; each setter refuses a strategy without the parameter.
            if variant {
                spec = spec.clone().bounded_load(1.25).unwrap_or(spec);
                spec = spec.clone().full_address().unwrap_or(spec);
            }
            spec = spec.clone().seed(seed).unwrap_or(spec);
            match failover {
                1 => spec.failover(FailoverMode::Priority),
                2 => spec.failover(FailoverMode::Zone),
                _ => spec,
            }
        })
}

/// One backend of a generated set: its condition, whether it is at its in-flight limit, its
/// tier and zone.
fn any_backend() -> impl Generator<Value = (Condition, bool, u8, Option<&'static str>)> {
    (
        condition(),
        prop::bool::weighted(0.2),
        0u8..3,
        prop::option::of(prop::sample::select(vec!["z1", "z2"])),
    )
}

proptest! {
    // Every strategy, through the boxed path a config uses: whatever the set, the health, the
    // operator states, the in-flight limits and the request, a pick is an available backend, and
    // "none available" means none is.
    #[test]
    fn no_strategy_ever_picks_an_unavailable_backend(
        spec in any_spec(),
        members in prop::collection::vec(any_backend(), 1..10),
        weights in prop::collection::vec(1u32..=20, 10),
        ip in prop::option::of(any::<[u8; 4]>()),
        key in prop::option::of(prop::collection::vec(any::<u8>(), 0..8)),
        zone in prop::option::of(prop::sample::select(vec!["z1", "z2", "z3"])),
    ) {
        let backends: Vec<Backend> = members
            .iter()
            .zip(set(&weights))
            .map(|(&(_, full, tier, z), b)| {
                let b = if full { b.max_in_flight(1) } else { b };
                let b = b.tier(tier);
                match z {
                    Some(z) => b.zone(z),
                    None => b,
                }
            })
            .collect();
        let mut builder = Balancer::builder(spec.build());
        builder.health(health(0));
        let lb = builder.build(backends.clone()).unwrap();
        // A backend at its limit holds one pinned request (only an up one can take it).
        let held: Vec<Pick> = members
            .iter()
            .zip(&backends)
            .filter(|((c, full, _, _), _)| *full && c.available())
            .map(|(_, b)| lb.pick(&Context::new().sticky(b.key())).unwrap())
            .collect();
        let excluded: Vec<u64> = members
            .iter()
            .zip(&backends)
            .filter_map(|((c, _, _, _), b)| c.apply(&lb, b))
            .collect();
        let available = |i: usize| members[i].0.available() && !members[i].1;
        let mut ctx = Context::new().exclude(&excluded);
        if let Some(ip) = ip {
            ctx = ctx.client_ip(ip.into());
        }
        if let Some(key) = &key {
            ctx = ctx.key(key);
        }
        if let Some(zone) = zone {
            ctx = ctx.zone(zone);
        }
        let any = (0..backends.len()).any(available);
        for _ in 0..20 {
            match lb.pick(&ctx) {
                Ok(p) => {
                    let i = backends.iter().position(|b| b.id() == p.id()).unwrap();
                    prop_assert!(available(i), "{spec}: picked {:?}", members[i]);
                }
                Err(PickError::NoneAvailable { .. }) => prop_assert!(!any, "{spec}: none picked"),
            }
        }
        drop(held);
    }
}
