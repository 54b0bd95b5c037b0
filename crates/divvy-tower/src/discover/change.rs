//! One change of a backend set, as discovery sources report it, and how it is applied.

use std::sync::Arc;

use divvy::{AdminState, Backend, Balancer, Strategy, UpdateError};

/// A change of membership, from a registry, a watch or any other source.
///
/// Applied with [`apply`](Self::apply) (or fed from a stream with
/// [`feed`](super::feed)), each change is one atomic update of the balancer: validated as a
/// whole set would be, so an invalid change is an error that leaves the set as it was.
#[non_exhaustive]
#[derive(Clone, Debug, PartialEq)]
pub enum Change {
    /// Adds a backend, or replaces the backend of the same identity in place (its position and
    /// live state stay).
    Insert(Backend),
    /// Removes the backend of this identity. Removing one that is not in the set changes
    /// nothing: sources that replay their state send removals twice.
    Remove(Arc<str>),
    /// Sets the weight of the backend of this identity.
    Weight(Arc<str>, u32),
    /// Sets the configured operator state of the backend of this identity.
    State(Arc<str>, AdminState),
    /// Replaces the whole set (a source that answers with a full list, as DNS does). An empty
    /// list is an explicit answer and scales the balancer to zero: a source that cannot tell
    /// "nothing" from "unreachable" must not send it (see the [module docs](super)).
    Replace(Vec<Backend>),
}

impl Change {
    /// Applies the change to `balancer`; returns whether the set changed (a removal of an
    /// absent backend, or a replacement by an equal set, publishes nothing).
    pub fn apply<S: Strategy>(self, balancer: &Balancer<S>) -> Result<bool, UpdateError> {
        let before = balancer.version();
        match self {
            Change::Insert(backend) => {
                balancer.upsert(backend)?;
            }
            Change::Remove(id) => match balancer.remove(&id) {
                Ok(_) | Err(UpdateError::NotInSet { .. }) => {}
                Err(e) => return Err(e),
            },
            Change::Weight(id, weight) => balancer.set_weight(&id, weight)?,
            Change::State(id, state) => balancer.set_state(&id, state)?,
            Change::Replace(backends) => {
                balancer.modify(|set| {
                    if *set != backends {
                        *set = backends;
                    }
                })?;
            }
        }
        Ok(balancer.version() != before)
    }
}
