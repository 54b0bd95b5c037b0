//! From DNS answers to backend sets: pure functions, so every rule is tested without a server.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};

use divvy::{Backend, MAX_TIERS, MAX_WEIGHT};

/// One SRV record, as RFC 2782 defines it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Srv {
    pub(crate) priority: u16,
    pub(crate) weight: u16,
    pub(crate) port: u16,
    pub(crate) target: String,
}

/// One backend per distinct address, identity `ip:port`, weight 1, in address order.
pub(crate) fn from_addrs(ips: impl IntoIterator<Item = IpAddr>, port: u16) -> Vec<Backend> {
    let mut addrs: Vec<SocketAddr> = ips
        .into_iter()
        .map(|ip| SocketAddr::new(ip, port))
        .collect();
    addrs.sort_unstable();
    addrs.dedup();
    addrs.into_iter().map(Backend::from_addr).collect()
}

/// One backend per distinct `target:port`, ordered by tier then identity.
///
/// - The identity is the target in lower case without its final dot, a colon, and the port
///   (`web-1.svc.example:8080`): DNS names are case-insensitive, and the same name must hash the
///   same way in every process.
/// - Tiers rank the distinct priorities: the lowest priority is tier 0, the next tier 1, and so on;
///   priorities past the last tier share tier `MAX_TIERS - 1`.
/// - Weights are the SRV weights, with 0 read as 1 (RFC 2782 gives weight-0 records a small
///   chance when others weigh more, and an equal one among themselves; 1, the smallest divvy
///   weight, does both). When the largest weight exceeds `MAX_WEIGHT`, every weight is scaled
///   down in proportion (rounding up, so none becomes 0).
/// - A record whose target is `.` says the service is not offered there (RFC 2782) and is
///   skipped. A target and port listed more than once keeps its lowest priority, and the weights
///   of its records at that priority add up.
pub(crate) fn from_srv(records: &[Srv]) -> Vec<Backend> {
    // identity → (priority, summed weight), in first-seen order for determinism.
    let mut merged: Vec<(String, u16, u64)> = Vec::new();
    let mut index: HashMap<String, usize> = HashMap::new();
    for r in records {
        let target = r.target.trim_end_matches('.');
        if target.is_empty() {
            continue;
        }
        let id = format!("{}:{}", target.to_ascii_lowercase(), r.port);
        let weight = u64::from(r.weight.max(1));
        match index.get(&id) {
            Some(&i) => {
                let e = &mut merged[i];
                if r.priority < e.1 {
                    (e.1, e.2) = (r.priority, weight);
                } else if r.priority == e.1 {
                    e.2 += weight;
                }
            }
            None => {
                index.insert(id.clone(), merged.len());
                merged.push((id, r.priority, weight));
            }
        }
    }
    let mut priorities: Vec<u16> = merged.iter().map(|e| e.1).collect();
    priorities.sort_unstable();
    priorities.dedup();
    let max = merged.iter().map(|e| e.2).max().unwrap_or(1);
    let limit = u64::from(MAX_WEIGHT);
    let mut backends: Vec<Backend> = merged
        .into_iter()
        .map(|(id, priority, weight)| {
            let rank = priorities.partition_point(|&p| p < priority);
            let tier = rank.min(MAX_TIERS - 1) as u8;
            let weight = if max > limit {
                (weight * limit).div_ceil(max)
            } else {
                weight
            };
            Backend::new(id).weight(weight as u32).tier(tier)
        })
        .collect();
    backends.sort_by(|a, b| (a.get_tier(), a.id()).cmp(&(b.get_tier(), b.id())));
    backends
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn srv(priority: u16, weight: u16, port: u16, target: &str) -> Srv {
        Srv {
            priority,
            weight,
            port,
            target: target.into(),
        }
    }

    #[test]
    fn addresses_become_sorted_distinct_ip_port_backends_of_weight_one() {
        let ips = ["10.0.0.2", "::1", "10.0.0.1", "10.0.0.2"].map(|s| s.parse().unwrap());
        let got = from_addrs(ips, 8080);
        let want = ["10.0.0.1:8080", "10.0.0.2:8080", "[::1]:8080"].map(Backend::new);
        assert_eq!(got, want);
    }

    #[test]
    fn priorities_rank_into_dense_tiers_and_weight_zero_reads_as_one() {
        let got = from_srv(&[
            srv(20, 3, 80, "c.example."),
            srv(10, 5, 80, "A.Example."),
            srv(10, 0, 81, "b.example."),
            srv(30, 1, 80, "d.example."),
        ]);
        let want = vec![
            Backend::new("a.example:80").weight(5),
            Backend::new("b.example:81").weight(1),
            Backend::new("c.example:80").weight(3).tier(1),
            Backend::new("d.example:80").weight(1).tier(2),
        ];
        assert_eq!(got, want);
    }

    #[test]
    fn priorities_past_the_last_tier_share_it() {
        let records: Vec<Srv> = (0..20u16)
            .map(|p| srv(p * 10, 1, 80, &format!("h{p:02}.")))
            .collect();
        let got = from_srv(&records);
        let last = (MAX_TIERS - 1) as u8;
        assert_eq!(
            got.iter().filter(|b| b.get_tier() == last).count(),
            20 - (MAX_TIERS - 1)
        );
        assert_eq!(got[0].get_tier(), 0);
    }

    #[test]
    fn weights_above_the_maximum_scale_down_in_proportion() {
        let got = from_srv(&[
            srv(0, 60_000, 80, "a."),
            srv(0, 30_000, 80, "b."),
            srv(0, 1, 80, "c."),
        ]);
        let w: Vec<u32> = got.iter().map(Backend::get_weight).collect();
        assert_eq!(w, vec![MAX_WEIGHT, MAX_WEIGHT / 2, 1]);
    }

    #[test]
    fn a_root_target_is_skipped_and_duplicates_merge_at_their_lowest_priority() {
        let got = from_srv(&[
            srv(0, 5, 80, "."),
            srv(20, 9, 80, "a."),
            srv(10, 2, 80, "a."),
            srv(10, 3, 80, "A."),
            srv(10, 1, 80, "b."),
        ]);
        assert_eq!(
            got,
            vec![Backend::new("a:80").weight(5), Backend::new("b:80")]
        );
    }

    fn any_srv() -> impl Strategy<Value = Srv> {
        (any::<u16>(), any::<u16>(), 1u16.., "[a-e]{1,2}\\.?").prop_map(
            |(priority, weight, port, target)| Srv {
                priority,
                weight,
                port,
                target,
            },
        )
    }

    proptest! {
        #[test]
        fn every_srv_answer_maps_to_a_valid_set_that_keeps_priority_order(
            records in proptest::collection::vec(any_srv(), 1..40)
        ) {
            let got = from_srv(&records);
            prop_assert!(!got.is_empty());
            prop_assert_eq!(divvy::validate(&got), Ok(()));
            // Tiers are dense from 0.
            let mut tiers: Vec<u8> = got.iter().map(Backend::get_tier).collect();
            tiers.dedup();
            prop_assert_eq!(tiers, (0..=got.last().unwrap().get_tier()).collect::<Vec<_>>());
            // A lower priority never lands in a higher tier than a higher priority.
            let best = |id: &str| records.iter()
                .filter(|r| format!("{}:{}", r.target.trim_end_matches('.').to_ascii_lowercase(), r.port) == id)
                .map(|r| r.priority).min().unwrap();
            for a in &got {
                for b in &got {
                    if best(a.id()) < best(b.id()) {
                        prop_assert!(a.get_tier() <= b.get_tier());
                    }
                }
            }
        }
    }
}
