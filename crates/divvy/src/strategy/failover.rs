//! Priority tiers (and optionally zones) around an inner strategy.

use std::collections::BTreeMap;
use std::sync::Arc;

use crate::backend::Backend;
use crate::context::Context;
use crate::error::UpdateError;
use crate::set::BackendSet;
use crate::strategy::support::check_count;
use crate::strategy::Strategy;
use crate::view::View;

/// Priority failover: all traffic goes to the lowest-numbered tier
/// ([`Backend::tier`], [`Backend::backup`]) that can take it, and an inner strategy chooses
/// within that tier. nginx's `backup` servers and Envoy's priority levels.
///
/// The tier is chosen in the order the [`health`](crate::health) docs describe:
///
/// 1. Tiers are tried in ascending order; a tier with no operator-enabled backend is skipped.
/// 2. In a tier with a healthy backend, the inner strategy picks among the tier's backends,
///    ignoring health if the tier is below the panic threshold (panic only widens the choice
///    inside the chosen tier, it never pulls traffic from a lower tier). If it finds nothing
///    (every healthy backend is at its in-flight limit or excluded by the request), the next
///    tier is tried, as nginx moves on to its backup peers.
/// 3. A tier with no healthy backend is skipped, except for backends whose passive ejection has
///    expired: as nginx retries a failed primary once `fail_timeout` has passed, such a backend
///    takes its half-open request even while a backup tier serves, and its success brings the
///    traffic back. Finding out costs the inner strategy's search of that tier (for most
///    strategies one look at each of its backends) per pick, while the tier is down.
/// 4. When no tier has a healthy backend, the first tier with an operator-enabled backend is
///    used in panic mode if the panic threshold is on; otherwise the pick fails.
///
/// With [`zone_aware`](Self::zone_aware), the caller's zone ([`Context::zone`]) is preferred
/// inside the chosen tier: its backends take all of the tier's traffic while one of them is
/// available, and the whole tier takes over otherwise. As in Envoy, zone preference is off
/// while the tier is in panic (it would concentrate the tier's traffic on the few healthy
/// backends the panic threshold exists to protect). Backends without a zone are only reached
/// through the whole tier.
///
/// One inner strategy value serves every group: [`prepare`](Strategy::prepare) prepares it once
/// per tier (and once per zone of a tier), so per-set state such as a round-robin cursor or an
/// alias table is per group, and state the strategy keeps in itself (a seeded random stream) is
/// shared. No `Clone` and no factory is needed.
///
/// Cost: the inner strategy's pick, plus up to three atomic loads per tier tried (its enabled
/// and healthy counts and its panic flag) and, with zones, a comparison with each zone name of
/// the chosen tier.
///
/// Composite strategies do not nest: the inner strategy sees a [`View::subset`], which cannot
/// be subset again. `Failover<Failover<_>>` is rejected when the set is prepared; another
/// composite as the inner strategy would panic on its first pick.
///
/// ```
/// use divvy::{Backend, Balancer, Context, strategy::{Failover, RoundRobin}};
///
/// let lb = Balancer::new(
///     Failover::new(RoundRobin::new()),
///     [Backend::new("primary-1"), Backend::new("primary-2"), Backend::new("spare").backup()],
/// )?;
/// assert!(lb.pick(&Context::new())?.id().starts_with("primary"));
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Clone, Debug, Default)]
pub struct Failover<S> {
    inner: S,
    zone_aware: bool,
}

impl<S: Strategy> Failover<S> {
    /// Priority tiers around `inner`.
    pub const fn new(inner: S) -> Self {
        Failover {
            inner,
            zone_aware: false,
        }
    }

    /// Priority tiers around `inner`, preferring the caller's zone inside the chosen tier.
    pub const fn zone_aware(inner: S) -> Self {
        Failover {
            inner,
            zone_aware: true,
        }
    }

    /// Whether the caller's zone is preferred.
    pub fn is_zone_aware(&self) -> bool {
        self.zone_aware
    }

    /// The inner strategy.
    pub fn get_ref(&self) -> &S {
        &self.inner
    }

    /// The inner strategy, mutably.
    pub fn get_mut(&mut self) -> &mut S {
        &mut self.inner
    }

    /// The inner strategy, consuming the failover.
    pub fn into_inner(self) -> S {
        self.inner
    }

    fn group(
        &self,
        backends: &[Backend],
        map: Vec<u32>,
    ) -> Result<Group<S::Prepared>, UpdateError> {
        let members: Vec<Backend> = map.iter().map(|&i| backends[i as usize].clone()).collect();
        Ok(Group {
            // A non-empty part of a validated set is itself valid.
            prepared: self.inner.prepare(&BackendSet::part_of_valid(&members))?,
            map: map.into_boxed_slice(),
        })
    }

    /// Picks inside one tier: the caller's zone first (unless in panic), then the whole tier.
    #[inline]
    fn pick_in(
        &self,
        tier: &Tier<S::Prepared>,
        zone: Option<&str>,
        panic: bool,
        ctx: &Context<'_>,
        view: &View<'_>,
    ) -> Option<usize> {
        if let (Some(zone), false) = (zone, panic) {
            if let Some(z) = tier.zones.iter().find(|z| &*z.name == zone) {
                if let Some(i) = self.pick_group(&z.group, false, ctx, view) {
                    return Some(i);
                }
            }
        }
        self.pick_group(&tier.whole, panic, ctx, view)
    }

    #[inline]
    fn pick_group(
        &self,
        group: &Group<S::Prepared>,
        panic: bool,
        ctx: &Context<'_>,
        view: &View<'_>,
    ) -> Option<usize> {
        let sub = view.subset(&group.map, panic);
        let local = self.inner.pick(&group.prepared, ctx, &sub)?;
        Some(sub.global_index(local))
    }
}

/// The per-set state of a [`Failover`]: the tiers present, in ascending order, each with the
/// inner strategy prepared on its backends (and on each zone's).
#[derive(Debug)]
pub struct Tiers<P> {
    tiers: Box<[Tier<P>]>,
}

#[derive(Debug)]
struct Tier<P> {
    tier: u8,
    whole: Group<P>,
    /// Zones with some but not all of the tier's backends (a zone holding the whole tier would
    /// only repeat `whole`).
    zones: Box<[Zone<P>]>,
}

#[derive(Debug)]
struct Zone<P> {
    name: Arc<str>,
    group: Group<P>,
}

/// Backends of the snapshot (by index) and the inner strategy's state for them.
#[derive(Debug)]
struct Group<P> {
    map: Box<[u32]>,
    prepared: P,
}

// A wrapper answers for its inner strategy: a default method left in place here would drop
// what the inner one declares (bounded loads need the total in flight).
#[deny(clippy::missing_trait_methods)]
impl<S: Strategy> Strategy for Failover<S> {
    type Prepared = Tiers<S::Prepared>;

    fn name(&self) -> &'static str {
        "failover"
    }

    fn prepare(&self, backends: &BackendSet<'_>) -> Result<Self::Prepared, UpdateError> {
        if self.inner.name() == self.name() {
            return Err(UpdateError::Strategy {
                strategy: self.name(),
                reason: "the inner strategy is itself a failover; composite strategies do not nest"
                    .into(),
            });
        }
        check_count(self.name(), backends, u32::MAX as usize)?;
        let mut by_tier: BTreeMap<u8, Vec<u32>> = BTreeMap::new();
        for (i, b) in backends.iter().enumerate() {
            by_tier.entry(b.get_tier()).or_default().push(i as u32);
        }
        let mut tiers = Vec::with_capacity(by_tier.len());
        for (tier, map) in by_tier {
            let mut zones = Vec::new();
            if self.zone_aware {
                let mut by_zone: BTreeMap<&str, Vec<u32>> = BTreeMap::new();
                for &i in &map {
                    if let Some(zone) = backends[i as usize].get_zone() {
                        by_zone.entry(zone).or_default().push(i);
                    }
                }
                for (name, zmap) in by_zone {
                    if zmap.len() < map.len() {
                        zones.push(Zone {
                            name: name.into(),
                            group: self.group(backends, zmap)?,
                        });
                    }
                }
            }
            tiers.push(Tier {
                tier,
                whole: self.group(backends, map)?,
                zones: zones.into_boxed_slice(),
            });
        }
        Ok(Tiers {
            tiers: tiers.into_boxed_slice(),
        })
    }

    fn pick(&self, state: &Self::Prepared, ctx: &Context<'_>, view: &View<'_>) -> Option<usize> {
        let zone = if self.zone_aware {
            ctx.get_zone()
        } else {
            None
        };
        // Usually the first tier has a healthy backend and this reads one count.
        if state.tiers.iter().all(|t| view.tier_healthy(t.tier) == 0) {
            // No healthy backend anywhere: the first tier with an enabled backend. With no
            // healthy backend, it is in panic exactly when the panic threshold is on.
            let first = state
                .tiers
                .iter()
                .find(|t| view.tier_eligible(t.tier) > 0)?;
            if view.tier_in_panic(first.tier) {
                return self.pick_in(first, zone, true, ctx, view);
            }
        }
        for tier in state.tiers.iter() {
            if view.tier_eligible(tier.tier) == 0 {
                continue;
            }
            // A tier without a healthy backend is not chosen, but expired ejections (the
            // half-open requests) can still be found in it; not in panic, which would send
            // traffic to backends known to fail.
            let panic = view.tier_healthy(tier.tier) > 0 && view.tier_in_panic(tier.tier);
            if let Some(i) = self.pick_in(tier, zone, panic, ctx, view) {
                return Some(i);
            }
        }
        None
    }

    fn tracks_total_in_flight(&self) -> bool {
        self.inner.tracks_total_in_flight()
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashSet;
    use std::time::Duration;

    use proptest::prelude::{any, prop, prop_assert, proptest, TestCaseError};

    use super::*;
    use crate::backend::AdminState;
    use crate::balancer::Balancer;
    use crate::clock::ManualClock;
    use crate::error::PickError;
    use crate::health::HealthConfig;
    use crate::strategy::test_util::{
        assert_binomial, condition, count_picks, health, shares, Condition,
    };
    use crate::strategy::{Random, RoundRobin};

    fn balancer<S: Strategy>(
        strategy: S,
        panic_threshold: u32,
        backends: Vec<Backend>,
    ) -> Balancer<Failover<S>> {
        let mut builder = Balancer::builder(Failover::new(strategy));
        builder.health(health(panic_threshold));
        builder.build(backends).unwrap()
    }

    /// The ids `picks` picks went to.
    fn picked<S: Strategy>(lb: &Balancer<S>, ctx: &Context<'_>, picks: usize) -> HashSet<String> {
        (0..picks)
            .map(|_| lb.pick(ctx).unwrap().id().to_owned())
            .collect()
    }

    fn ids(ids: &[&str]) -> HashSet<String> {
        ids.iter().map(|s| (*s).to_owned()).collect()
    }

    /// Two primaries and two backups.
    fn primaries_and_backups() -> Vec<Backend> {
        vec![
            Backend::new("p0"),
            Backend::new("p1"),
            Backend::new("s0").backup(),
            Backend::new("s1").backup(),
        ]
    }

    /// The backends a pick may return, from the documented order alone; `None` when the pick
    /// must fail.
    fn allowed(tiers: &[u8], conditions: &[Condition], panic_threshold: u32) -> Option<Vec<usize>> {
        let eligible = |c: Condition| !matches!(c, Condition::Drain | Condition::Down);
        let healthy = |c: Condition| matches!(c, Condition::Up | Condition::Excluded);
        let in_tier = |t: u8| (0..tiers.len()).filter(move |&i| tiers[i] == t);
        let mut any_healthy = false;
        for t in 0..3u8 {
            let e = in_tier(t).filter(|&i| eligible(conditions[i])).count();
            let h = in_tier(t).filter(|&i| healthy(conditions[i])).count();
            if e == 0 || h == 0 {
                continue;
            }
            any_healthy = true;
            let panic = panic_threshold > 0 && h * 100 < panic_threshold as usize * e;
            let ok: Vec<usize> = in_tier(t)
                .filter(|&i| {
                    conditions[i].available()
                        || (panic && matches!(conditions[i], Condition::Failing))
                })
                .collect();
            if !ok.is_empty() {
                return Some(ok);
            }
        }
        if any_healthy || panic_threshold == 0 {
            return None;
        }
        let first = (0..3u8).find(|&t| in_tier(t).any(|i| eligible(conditions[i])))?;
        Some(
            in_tier(first)
                .filter(|&i| eligible(conditions[i]))
                .collect(),
        )
    }

    fn check_order<S: Strategy>(
        inner: S,
        tiers: &[u8],
        conditions: &[Condition],
        panic_threshold: u32,
    ) -> Result<(), TestCaseError> {
        let backends: Vec<Backend> = tiers
            .iter()
            .enumerate()
            .map(|(i, &t)| Backend::new(format!("b{i}")).tier(t))
            .collect();
        let lb = balancer(inner, panic_threshold, backends.clone());
        let excluded: Vec<u64> = conditions
            .iter()
            .zip(&backends)
            .filter_map(|(c, b)| c.apply(&lb, b))
            .collect();
        let ctx = Context::new().exclude(&excluded);
        let allowed = allowed(tiers, conditions, panic_threshold);
        for _ in 0..20 {
            match (lb.pick(&ctx), &allowed) {
                (Ok(p), Some(ok)) => {
                    let i = backends.iter().position(|b| b.id() == p.id()).unwrap();
                    prop_assert!(
                        ok.contains(&i),
                        "picked b{} ({:?}), allowed {:?}",
                        i,
                        conditions[i],
                        ok
                    );
                }
                (Err(PickError::NoneAvailable { .. }), None) => {}
                (got, want) => prop_assert!(
                    false,
                    "got {:?}, allowed {:?}",
                    got.map(|p| p.id().to_owned()),
                    want
                ),
            }
        }
        Ok(())
    }

    proptest! {
        #[test]
        fn picks_follow_the_documented_tier_order(
            backends in prop::collection::vec((0u8..3, condition()), 1..10),
            panic_threshold in prop::sample::select(vec![0u32, 50, 100]),
            seed in any::<u64>(),
        ) {
            let (tiers, conditions): (Vec<u8>, Vec<Condition>) = backends.into_iter().unzip();
            check_order(RoundRobin::new(), &tiers, &conditions, panic_threshold)?;
            check_order(Random::from_seed(seed), &tiers, &conditions, panic_threshold)?;
        }

        #[test]
        fn with_a_healthy_primary_no_backup_is_ever_picked(
            primaries in prop::collection::vec(any::<bool>(), 1..6),
            backups in 1usize..4,
            seed in any::<u64>(),
        ) {
            // Each primary is up or fails its probe; at least one is up.
            let mut up = primaries;
            up[0] = true;
            let mut backends: Vec<Backend> =
                (0..up.len()).map(|i| Backend::new(format!("p{i}"))).collect();
            backends.extend((0..backups).map(|i| Backend::new(format!("s{i}")).backup()));
            let lb = balancer(Random::from_seed(seed), 50, backends);
            for (i, &ok) in up.iter().enumerate() {
                lb.report_probe(&format!("p{i}"), ok).unwrap();
            }
            for _ in 0..50 {
                let p = lb.pick(&Context::new()).unwrap();
                prop_assert!(p.backend().get_tier() == 0, "picked {}", p.id());
            }
        }
    }

    #[test]
    fn when_every_primary_fails_traffic_goes_to_the_backups_and_returns_with_a_primary() {
        let lb = balancer(RoundRobin::new(), 0, primaries_and_backups());
        assert_eq!(picked(&lb, &Context::new(), 20), ids(&["p0", "p1"]));
        lb.report_probe("p0", false).unwrap();
        lb.report_probe("p1", false).unwrap();
        assert_eq!(picked(&lb, &Context::new(), 20), ids(&["s0", "s1"]));
        lb.report_probe("p1", true).unwrap();
        assert_eq!(picked(&lb, &Context::new(), 20), ids(&["p1"]));
    }

    #[test]
    fn operator_down_primaries_send_traffic_to_the_backups() {
        let lb = balancer(Random::from_seed(1), 50, primaries_and_backups());
        lb.set_admin_state("p0", Some(AdminState::Down)).unwrap();
        lb.set_admin_state("p1", Some(AdminState::Drain)).unwrap();
        assert_eq!(picked(&lb, &Context::new(), 50), ids(&["s0", "s1"]));
        lb.set_admin_state("p0", None).unwrap();
        assert_eq!(picked(&lb, &Context::new(), 50), ids(&["p0"]));
    }

    #[test]
    fn tiers_are_tried_by_number_not_by_configuration_order() {
        let backends = vec![
            Backend::new("third").tier(2),
            Backend::new("second").tier(1),
            Backend::new("first"),
        ];
        let lb = balancer(RoundRobin::new(), 0, backends);
        assert_eq!(picked(&lb, &Context::new(), 5), ids(&["first"]));
        lb.report_probe("first", false).unwrap();
        assert_eq!(picked(&lb, &Context::new(), 5), ids(&["second"]));
        lb.set_admin_state("second", Some(AdminState::Down))
            .unwrap();
        assert_eq!(picked(&lb, &Context::new(), 5), ids(&["third"]));
    }

    #[test]
    fn full_or_excluded_primaries_spill_over_to_the_backup() {
        let backends = vec![
            Backend::new("p").max_in_flight(1),
            Backend::new("s").backup(),
        ];
        let lb = balancer(RoundRobin::new(), 0, backends);
        let held = lb.pick(&Context::new()).unwrap();
        assert_eq!(held.id(), "p");
        assert_eq!(lb.pick(&Context::new()).unwrap().id(), "s");
        drop(held);
        let tried = [Backend::new("p").key()];
        let retry = Context::new().exclude(&tried);
        assert_eq!(lb.pick(&retry).unwrap().id(), "s");
        assert_eq!(lb.pick(&Context::new()).unwrap().id(), "p");
    }

    #[test]
    fn panic_widens_the_choice_inside_the_chosen_tier_only() {
        // One of four primaries is healthy: 25 % is below the 50 % threshold, so tier 0 is in
        // panic and all four primaries share its traffic; the healthy backup gets none.
        let mut backends: Vec<Backend> = (0..4).map(|i| Backend::new(format!("p{i}"))).collect();
        backends.push(Backend::new("s").backup());
        let lb = balancer(RoundRobin::new(), 50, backends);
        for id in ["p1", "p2", "p3"] {
            lb.report_probe(id, false).unwrap();
        }
        assert_eq!(
            picked(&lb, &Context::new(), 40),
            ids(&["p0", "p1", "p2", "p3"])
        );
        // Two of four healthy is not below 50 %: the failing ones are skipped again.
        lb.report_probe("p1", true).unwrap();
        assert_eq!(picked(&lb, &Context::new(), 40), ids(&["p0", "p1"]));
    }

    #[test]
    fn with_no_healthy_backend_the_first_enabled_tier_serves_in_panic() {
        let lb = balancer(RoundRobin::new(), 50, primaries_and_backups());
        for id in ["p0", "p1", "s0", "s1"] {
            lb.report_probe(id, false).unwrap();
        }
        assert_eq!(picked(&lb, &Context::new(), 20), ids(&["p0", "p1"]));
        // Primaries disabled by the operator are not eligible: the backups serve in panic.
        lb.set_admin_state("p0", Some(AdminState::Down)).unwrap();
        lb.set_admin_state("p1", Some(AdminState::Drain)).unwrap();
        assert_eq!(picked(&lb, &Context::new(), 20), ids(&["s0", "s1"]));
    }

    #[test]
    fn with_panic_off_and_no_healthy_backend_the_pick_fails() {
        let lb = balancer(RoundRobin::new(), 0, primaries_and_backups());
        for id in ["p0", "p1", "s0", "s1"] {
            lb.report_probe(id, false).unwrap();
        }
        assert_eq!(
            lb.pick(&Context::new()).unwrap_err(),
            PickError::NoneAvailable { total: 4 }
        );
    }

    #[test]
    fn an_expired_ejection_takes_its_half_open_request_and_brings_traffic_back() {
        // nginx defaults: max_fails=1 fail_timeout=10s, no active checks.
        let clock = ManualClock::new();
        let mut builder = Balancer::builder(Failover::new(RoundRobin::new()));
        builder.health(HealthConfig::default()).clock(clock.clone());
        let lb = builder
            .build([Backend::new("p"), Backend::new("s").backup()])
            .unwrap();
        let first = lb.pick(&Context::new()).unwrap();
        assert_eq!(first.id(), "p");
        first.failure();
        assert_eq!(picked(&lb, &Context::new(), 5), ids(&["s"]));
        clock.advance(Duration::from_secs(10));
        assert_eq!(picked(&lb, &Context::new(), 5), ids(&["s"]));
        clock.advance(Duration::from_millis(1));
        let half_open = lb.pick(&Context::new()).unwrap();
        assert_eq!(half_open.id(), "p");
        // While the half-open request is out, the backup keeps the rest.
        assert_eq!(picked(&lb, &Context::new(), 5), ids(&["s"]));
        half_open.success();
        assert_eq!(picked(&lb, &Context::new(), 5), ids(&["p"]));
    }

    #[test]
    fn nesting_a_failover_is_rejected_when_the_set_is_prepared() {
        let err = Balancer::new(
            Failover::new(Failover::new(RoundRobin::new())),
            [Backend::new("a")],
        )
        .unwrap_err();
        assert!(
            matches!(
                err,
                UpdateError::Strategy {
                    strategy: "failover",
                    ..
                }
            ),
            "{err:?}"
        );
    }

    #[test]
    fn random_inside_a_tier_follows_the_weights() {
        let backends = vec![
            Backend::new("p0").weight(3),
            Backend::new("p1"),
            Backend::new("s").backup().weight(100),
        ];
        let lb = balancer(Random::from_seed(2), 0, backends);
        let counts = count_picks(&lb, &Context::new(), 40_000);
        assert_binomial(&counts, &shares(&[3.0, 1.0, 0.0]));
    }

    // === zones ===

    fn zoned() -> Balancer<Failover<RoundRobin>> {
        let backends = vec![
            Backend::new("eu-1").zone("eu"),
            Backend::new("us-1").zone("us"),
            Backend::new("eu-2").zone("eu"),
            Backend::new("plain"),
            Backend::new("eu-backup").zone("eu").backup(),
        ];
        let mut builder = Balancer::builder(Failover::zone_aware(RoundRobin::new()));
        builder.health(health(0));
        builder.build(backends).unwrap()
    }

    #[test]
    fn same_zone_backends_take_all_traffic_while_available() {
        let lb = zoned();
        let eu = Context::new().zone("eu");
        assert_eq!(picked(&lb, &eu, 40), ids(&["eu-1", "eu-2"]));
        lb.report_probe("eu-1", false).unwrap();
        assert_eq!(picked(&lb, &eu, 40), ids(&["eu-2"]));
        let us = Context::new().zone("us");
        assert_eq!(picked(&lb, &us, 40), ids(&["us-1"]));
    }

    #[test]
    fn the_rest_of_the_tier_takes_over_when_the_callers_zone_is_down() {
        let lb = zoned();
        lb.report_probe("eu-1", false).unwrap();
        lb.set_admin_state("eu-2", Some(AdminState::Down)).unwrap();
        // The tier's other backends, never the same-zone backup.
        assert_eq!(
            picked(&lb, &Context::new().zone("eu"), 40),
            ids(&["us-1", "plain"])
        );
    }

    #[test]
    fn the_zone_is_preferred_only_inside_the_chosen_tier() {
        let lb = zoned();
        for id in ["eu-1", "us-1", "eu-2", "plain"] {
            lb.report_probe(id, false).unwrap();
        }
        assert_eq!(
            picked(&lb, &Context::new().zone("us"), 10),
            ids(&["eu-backup"])
        );
    }

    #[test]
    fn without_a_zone_or_zone_awareness_the_whole_tier_serves() {
        let lb = zoned();
        let all = ids(&["eu-1", "us-1", "eu-2", "plain"]);
        assert_eq!(picked(&lb, &Context::new(), 40), all);
        assert_eq!(picked(&lb, &Context::new().zone("mars"), 40), all);
        let plain = balancer(RoundRobin::new(), 0, lb.backends().to_vec());
        assert_eq!(picked(&plain, &Context::new().zone("eu"), 40), all);
    }

    #[test]
    fn zone_preference_is_off_while_the_tier_is_in_panic() {
        let backends = vec![
            Backend::new("eu-1").zone("eu"),
            Backend::new("us-1").zone("us"),
            Backend::new("us-2").zone("us"),
            Backend::new("us-3").zone("us"),
        ];
        let mut builder = Balancer::builder(Failover::zone_aware(RoundRobin::new()));
        builder.health(health(50));
        let lb = builder.build(backends).unwrap();
        for id in ["us-1", "us-2", "us-3"] {
            lb.report_probe(id, false).unwrap();
        }
        // 1 of 4 healthy: panic spreads the tier's traffic over all four, eu-1 included.
        assert_eq!(
            picked(&lb, &Context::new().zone("eu"), 40),
            ids(&["eu-1", "us-1", "us-2", "us-3"])
        );
    }
}
