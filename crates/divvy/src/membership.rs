//! Incremental membership changes: one backend at a time, atomically, with no lost update.
//!
//! Each change is a [`Balancer::modify`] underneath: it runs under the publication lock against
//! the newest set, and the result is validated and prepared as a whole update would be. So
//! concurrent writers (a discovery stream, an admin endpoint, an autoscaler) never lose each
//! other's changes, and an invalid change is a typed error that leaves the set as it was.

use crate::backend::{AdminState, Backend};
use crate::balancer::Balancer;
use crate::error::UpdateError;
use crate::strategy::Strategy;

impl<S: Strategy> Balancer<S> {
    /// Adds `backend` at the end of the set (the lowest precedence for order-sensitive
    /// strategies such as weighted round robin's tie-break).
    ///
    /// A backend whose identity is already in the set is [`UpdateError::Duplicate`]; use
    /// [`upsert`](Self::upsert) to add or replace. A backend removed while requests to it were
    /// still in flight and added back before they ended takes its live state back: its
    /// in-flight count, counters and health continue where they were.
    pub fn add(&self, backend: Backend) -> Result<(), UpdateError> {
        self.try_modify(|set| {
            if let Some(first) = position(set, backend.id()) {
                return Err(UpdateError::Duplicate {
                    id: backend.id_arc().clone(),
                    first,
                    second: set.len(),
                });
            }
            set.push(backend);
            Ok(())
        })
    }

    /// Adds `backend`, or replaces the backend of the same identity in place (keeping its
    /// position and live state). Returns whether it was already in the set.
    pub fn upsert(&self, backend: Backend) -> Result<bool, UpdateError> {
        self.try_modify(|set| match position(set, backend.id()) {
            Some(i) => {
                set[i] = backend;
                Ok(true)
            }
            None => {
                set.push(backend);
                Ok(false)
            }
        })
    }

    /// Removes the backend named `id` and returns its configuration. Requests in flight to it
    /// finish normally; new picks no longer choose it. Removing the last backend leaves an empty
    /// set, from which picks fail with [`PickError::NoneAvailable`](crate::PickError).
    ///
    /// An identity not in the set is [`UpdateError::NotInSet`].
    pub fn remove(&self, id: &str) -> Result<Backend, UpdateError> {
        self.try_modify(|set| match position(set, id) {
            Some(i) => Ok(set.remove(i)),
            None => Err(not_in_set(id)),
        })
    }

    /// Sets the configured weight of backend `id`. The weight is validated as in a whole
    /// update (1..=[`MAX_WEIGHT`](crate::MAX_WEIGHT)).
    pub fn set_weight(&self, id: &str, weight: u32) -> Result<(), UpdateError> {
        self.replace_with(id, |b| b.weight(weight))
    }

    /// Sets the configured operator state of backend `id` (up, drain, down), as if the set had
    /// been published with it. An operator override from
    /// [`set_admin_state`](Self::set_admin_state) still wins over it.
    pub fn set_state(&self, id: &str, state: AdminState) -> Result<(), UpdateError> {
        self.replace_with(id, |b| b.state(state))
    }

    fn replace_with(
        &self,
        id: &str,
        f: impl FnOnce(Backend) -> Backend,
    ) -> Result<(), UpdateError> {
        self.try_modify(|set| {
            let i = position(set, id).ok_or_else(|| not_in_set(id))?;
            set[i] = f(set[i].clone());
            Ok(())
        })
    }
}

fn position(set: &[Backend], id: &str) -> Option<usize> {
    set.iter().position(|b| b.id() == id)
}

fn not_in_set(id: &str) -> UpdateError {
    UpdateError::NotInSet { id: id.into() }
}

#[cfg(test)]
mod tests {
    use crate::strategy::{Maglev, RoundRobin, WeightedRoundRobin};
    use crate::{AdminState, Backend, Balancer, Context, HealthState, PickError, UpdateError};

    fn ids<S: crate::Strategy>(lb: &Balancer<S>) -> Vec<String> {
        lb.backends().iter().map(|b| b.id().to_owned()).collect()
    }

    #[test]
    fn four_writers_adding_a_thousand_backends_each_lose_none() {
        let lb = Balancer::new(RoundRobin::new(), Vec::new()).unwrap();
        let threads: Vec<_> = (0..4)
            .map(|t| {
                let lb = lb.clone();
                std::thread::spawn(move || {
                    for i in 0..1_000 {
                        lb.add(Backend::new(format!("{t}-{i}"))).unwrap();
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        assert_eq!(lb.backends().len(), 4_000);
        assert_eq!(lb.version(), 4_000);
        let mut seen: Vec<_> = ids(&lb);
        seen.sort();
        seen.dedup();
        assert_eq!(seen.len(), 4_000);
    }

    #[test]
    fn a_pick_from_the_empty_set_fails_with_none_available() {
        let lb = Balancer::new(Maglev::new(), Vec::new()).unwrap();
        assert_eq!(
            lb.pick(&Context::new()).unwrap_err(),
            PickError::NoneAvailable { total: 0 }
        );
        lb.add(Backend::new("a")).unwrap();
        assert_eq!(lb.pick(&Context::new()).unwrap().id(), "a");
        assert_eq!(lb.remove("a").unwrap(), Backend::new("a"));
        assert_eq!(
            lb.pick(&Context::new()).unwrap_err(),
            PickError::NoneAvailable { total: 0 }
        );
        assert!(lb.stats().is_empty());
    }

    #[test]
    fn an_invalid_change_is_a_typed_error_and_leaves_the_set_as_it_was() {
        let lb = Balancer::new(WeightedRoundRobin::new(), ["a", "b"].map(Backend::new)).unwrap();
        let before = (lb.version(), lb.backends());
        assert_eq!(
            lb.add(Backend::new("a")).unwrap_err(),
            UpdateError::Duplicate {
                id: "a".into(),
                first: 0,
                second: 2
            }
        );
        assert_eq!(
            lb.set_weight("b", 0).unwrap_err(),
            UpdateError::ZeroWeight { id: "b".into() }
        );
        assert_eq!(
            lb.remove("z").unwrap_err(),
            UpdateError::NotInSet { id: "z".into() }
        );
        assert_eq!(
            lb.set_state("z", AdminState::Down).unwrap_err().to_string(),
            "backend `z` is not in the set"
        );
        assert_eq!(
            lb.add(Backend::new("")).unwrap_err(),
            UpdateError::EmptyId { index: 2 }
        );
        assert_eq!((lb.version(), lb.backends()), before);
    }

    #[test]
    fn set_weight_and_set_state_change_one_backend_and_keep_the_others() {
        let lb =
            Balancer::new(WeightedRoundRobin::new(), ["a", "b", "c"].map(Backend::new)).unwrap();
        lb.set_weight("a", 5).unwrap();
        let seq: String = (0..7)
            .map(|_| lb.pick(&Context::new()).unwrap().id().to_owned())
            .collect();
        assert_eq!(seq, "aabacaa");
        lb.set_state("a", AdminState::Down).unwrap();
        assert_eq!(lb.health("a").unwrap(), HealthState::Down);
        assert!((0..10).all(|_| lb.pick(&Context::new()).unwrap().id() != "a"));
        assert_eq!(
            lb.backends()[0],
            Backend::new("a").weight(5).state(AdminState::Down)
        );
        assert!(lb.upsert(Backend::new("a")).unwrap());
        assert!(!lb.upsert(Backend::new("d")).unwrap());
        assert_eq!(ids(&lb), ["a", "b", "c", "d"]);
        assert_eq!(lb.health("a").unwrap(), HealthState::Healthy);
    }

    #[test]
    fn a_change_that_leaves_the_set_as_it_was_publishes_nothing() {
        let lb = Balancer::new(RoundRobin::new(), ["a"].map(Backend::new)).unwrap();
        lb.set_weight("a", 1).unwrap();
        assert_eq!(lb.modify(|set| set.len()).unwrap(), 1);
        assert_eq!(lb.version(), 0);
    }

    #[test]
    fn a_backend_removed_and_readded_with_requests_in_flight_keeps_its_live_state() {
        let lb = Balancer::new(RoundRobin::new(), ["a", "b"].map(Backend::new)).unwrap();
        let held: Vec<_> = (0..4).map(|_| lb.pick(&Context::new()).unwrap()).collect();
        // One failure ejects `a` under the default nginx rule (max_fails = 1).
        lb.pick(&Context::new().sticky(Backend::new("a").key()))
            .unwrap()
            .failure();
        assert_eq!(lb.health("a").unwrap(), HealthState::Ejected);
        lb.remove("a").unwrap();
        lb.remove("b").unwrap();
        assert_eq!(held.iter().filter(|p| p.id() == "a").count(), 2);
        lb.add(Backend::new("a")).unwrap();
        let stats = &lb.stats()[0];
        assert_eq!(stats.in_flight, 2);
        assert_eq!(stats.picks, 3);
        assert_eq!(stats.failures, 1);
        assert_eq!(stats.health, HealthState::Ejected);
        drop(held);
        assert_eq!(lb.stats()[0].in_flight, 0);
        // `b` had requests in flight too, but they ended before it came back: a fresh start
        // once a publication has pruned it.
        lb.set_weight("a", 2).unwrap();
        lb.add(Backend::new("b")).unwrap();
        assert_eq!(lb.stats()[1].picks, 0);
    }
}
