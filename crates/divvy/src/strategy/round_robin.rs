//! Plain round robin.

use std::sync::atomic::{AtomicUsize, Ordering::Relaxed};

use crate::context::Context;
use crate::error::UpdateError;
use crate::set::BackendSet;
use crate::strategy::{scan_from, Strategy};
use crate::view::View;

/// Each backend in turn, ignoring weights. An unavailable backend's turn passes to the next turn,
/// so the rotation stays even over the backends that are left (its load is not dumped on its
/// neighbour), and over `n` consecutive picks with a stable set every available backend is chosen.
///
/// Cost: one atomic add, O(1); up to 8 more while backends are unavailable, then an O(n) scan.
#[derive(Clone, Copy, Debug, Default)]
pub struct RoundRobin;

impl RoundRobin {
    /// Round robin.
    pub const fn new() -> Self {
        RoundRobin
    }
}

/// The shared cursor of a round-robin set.
#[derive(Debug, Default)]
pub struct Cursor(AtomicUsize);

impl Strategy for RoundRobin {
    type Prepared = Cursor;

    fn name(&self) -> &'static str {
        "round_robin"
    }

    fn prepare(&self, _backends: &BackendSet<'_>) -> Result<Cursor, UpdateError> {
        Ok(Cursor::default())
    }

    #[inline]
    fn pick(&self, cursor: &Cursor, _ctx: &Context<'_>, view: &View<'_>) -> Option<usize> {
        let n = view.len();
        // An unavailable backend's turn is skipped by taking the next turn from the shared
        // cursor, not by scanning to its neighbour: a scan would hand every skipped turn to the
        // same next backend and double its load, while taking turns keeps the rotation even
        // over the backends that are left.
        for _ in 0..n.min(8) {
            let i = cursor.0.fetch_add(1, Relaxed) % n;
            if view.is_available(i) {
                return Some(i);
            }
        }
        // Many unavailable: one scan from the cursor bounds the cost at O(n).
        scan_from(view, cursor.0.load(Relaxed) % n)
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;
    use crate::backend::Backend;
    use crate::{AdminState, Balancer};

    fn ids(n: usize) -> Vec<String> {
        (0..n).map(|i| format!("10.0.0.{i}:80")).collect()
    }

    #[test]
    fn backends_are_visited_in_configuration_order_ignoring_weights() {
        let lb = Balancer::new(
            RoundRobin::new(),
            [
                Backend::new("a").weight(9),
                Backend::new("b"),
                Backend::new("c"),
            ],
        )
        .unwrap();
        let seq: String = (0..6)
            .map(|_| lb.pick(&Context::new()).unwrap().id().to_owned())
            .collect();
        assert_eq!(seq, "abcabc");
    }

    #[test]
    fn an_unavailable_backends_turn_passes_to_the_next_turn() {
        let lb = Balancer::new(RoundRobin::new(), ["a", "b", "c"].map(Backend::new)).unwrap();
        lb.set_admin_state("b", Some(AdminState::Down)).unwrap();
        let seq: String = (0..6)
            .map(|_| lb.pick(&Context::new()).unwrap().id().to_owned())
            .collect();
        // b's turn passes to the next turn: the rotation stays even over a and c, rather than
        // c taking both its own turns and b's.
        assert_eq!(seq, "acacac");
    }

    proptest! {
        #[test]
        fn n_picks_visit_every_available_backend_and_never_an_unavailable_one(
            n in 1usize..24,
            down in proptest::collection::vec(any::<bool>(), 24),
            start in 0usize..50,
        ) {
            let names = ids(n);
            let lb = Balancer::new(RoundRobin::new(), names.iter().map(|s| Backend::new(s.as_str()))).unwrap();
            for _ in 0..start {
                drop(lb.pick(&Context::new()));
            }
            for (i, name) in names.iter().enumerate() {
                if down[i] {
                    lb.set_admin_state(name, Some(AdminState::Down)).unwrap();
                }
            }
            let up: Vec<&String> = names.iter().enumerate().filter(|(i, _)| !down[*i]).map(|(_, s)| s).collect();
            let mut seen = std::collections::BTreeSet::new();
            for _ in 0..n {
                match lb.pick(&Context::new()) {
                    Ok(p) => {
                        prop_assert!(up.iter().any(|s| s.as_str() == p.id()));
                        seen.insert(p.id().to_owned());
                    }
                    Err(_) => prop_assert!(up.is_empty()),
                }
            }
            prop_assert_eq!(seen.len(), up.len());
        }
    }
}
