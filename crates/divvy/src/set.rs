//! Validated backend sets: what a strategy prepares from.

use std::collections::HashMap;
use std::ops::Deref;

use ahash::RandomState;

use crate::backend::{Backend, MAX_TIERS, MAX_WEIGHT};
use crate::error::UpdateError;

/// A backend set that passed [`validate`]: not empty, identities non-empty and unique, weights in
/// `1..=MAX_WEIGHT`, tiers below [`MAX_TIERS`], in-flight limits in range. Derefs to `[Backend]`,
/// in configuration order.
///
/// The balancer validates each set once and hands this to
/// [`Strategy::prepare`](crate::Strategy::prepare), so strategies rely on it instead of checking
/// again. Build one yourself with [`new`](Self::new) to prepare a strategy directly.
///
/// ```
/// use divvy::{Backend, BackendSet, UpdateError};
///
/// let backends = [Backend::new("a"), Backend::new("b").weight(0)];
/// assert!(matches!(BackendSet::new(&backends), Err(UpdateError::ZeroWeight { .. })));
/// assert_eq!(BackendSet::new(&backends[..1])?.len(), 1);
/// # Ok::<(), UpdateError>(())
/// ```
#[derive(Clone, Copy, Debug)]
pub struct BackendSet<'a> {
    backends: &'a [Backend],
}

impl<'a> BackendSet<'a> {
    /// Validates `backends` as a whole; the first problem found is the error, naming the backend.
    pub fn new(backends: &'a [Backend]) -> Result<Self, UpdateError> {
        validate(backends)?;
        Ok(BackendSet { backends })
    }

    /// A set known to be valid: a non-empty part of a validated set (a failover tier or zone).
    pub(crate) fn part_of_valid(backends: &'a [Backend]) -> Self {
        debug_assert!(validate(backends).is_ok());
        BackendSet { backends }
    }

    /// The backends, in configuration order.
    pub fn as_slice(&self) -> &'a [Backend] {
        self.backends
    }
}

impl Deref for BackendSet<'_> {
    type Target = [Backend];

    #[inline]
    fn deref(&self) -> &[Backend] {
        self.backends
    }
}

/// Checks a set as a whole; the first problem found is reported, naming the backend.
pub fn validate(backends: &[Backend]) -> Result<(), UpdateError> {
    if backends.is_empty() {
        return Err(UpdateError::Empty);
    }
    let mut seen: HashMap<&str, usize, RandomState> =
        HashMap::with_capacity_and_hasher(backends.len(), RandomState::new());
    for (i, b) in backends.iter().enumerate() {
        let id = b.id_arc();
        if id.is_empty() {
            return Err(UpdateError::EmptyId { index: i });
        }
        if let Some(first) = seen.insert(b.id(), i) {
            return Err(UpdateError::Duplicate {
                id: id.clone(),
                first,
                second: i,
            });
        }
        match b.get_weight() {
            0 => return Err(UpdateError::ZeroWeight { id: id.clone() }),
            w if w > MAX_WEIGHT => {
                return Err(UpdateError::WeightTooLarge {
                    id: id.clone(),
                    weight: w,
                })
            }
            _ => {}
        }
        if usize::from(b.get_tier()) >= MAX_TIERS {
            return Err(UpdateError::TierTooLarge {
                id: id.clone(),
                tier: b.get_tier(),
            });
        }
        match b.get_max_in_flight() {
            Some(0) => return Err(UpdateError::ZeroMaxInFlight { id: id.clone() }),
            Some(m) if u64::from(m) > crate::live::IN_FLIGHT_LIMIT => {
                return Err(UpdateError::MaxInFlightTooLarge {
                    id: id.clone(),
                    max_in_flight: m,
                })
            }
            _ => {}
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::strategy::{StrategyKind, StrategySpec};

    // Before the validated set, each strategy re-checked what it relied on, so that `prepare`
    // called directly with an unchecked set was an error rather than a panic. Now such a set cannot
    // reach `prepare` at all: these are the sets those checks guarded against.
    #[test]
    fn an_empty_set_or_a_zero_weight_never_reaches_prepare() {
        assert_eq!(BackendSet::new(&[]).unwrap_err(), UpdateError::Empty);
        let zero = [Backend::new("a"), Backend::new("z").weight(0)];
        assert_eq!(
            BackendSet::new(&zero).unwrap_err(),
            UpdateError::ZeroWeight { id: "z".into() }
        );
    }

    #[test]
    fn every_strategy_prepares_any_valid_set() {
        let one = [Backend::new("a")];
        let set = BackendSet::new(&one).unwrap();
        for kind in StrategyKind::ALL {
            let s = StrategySpec::new(kind).build();
            assert!(crate::Strategy::prepare(&s, &set).is_ok(), "{kind}");
        }
    }
}
