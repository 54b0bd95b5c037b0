//! Typed errors: one enum per operation.

use std::sync::Arc;

use crate::backend::{MAX_TIERS, MAX_WEIGHT};

/// Why a backend set was rejected. The previous set keeps serving.
#[non_exhaustive]
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum UpdateError {
    /// The set has no backends.
    #[error("backend set is empty")]
    Empty,
    /// A backend's identity is the empty string.
    #[error("backend at position {index} has an empty identity")]
    EmptyId {
        /// Position of the backend in the list given.
        index: usize,
    },
    /// Two backends share an identity.
    #[error("backend `{id}` appears twice, at positions {first} and {second}")]
    Duplicate {
        /// The repeated identity.
        id: Arc<str>,
        /// Position of its first occurrence.
        first: usize,
        /// Position of its second occurrence.
        second: usize,
    },
    /// A weight is zero.
    #[error("backend `{id}`: weight 0 is invalid (weights are 1..={max})", max = MAX_WEIGHT)]
    ZeroWeight {
        /// The backend.
        id: Arc<str>,
    },
    /// A weight is above [`MAX_WEIGHT`].
    #[error("backend `{id}`: weight {weight} exceeds the maximum of {max}", max = MAX_WEIGHT)]
    WeightTooLarge {
        /// The backend.
        id: Arc<str>,
        /// The weight given.
        weight: u32,
    },
    /// A tier is `MAX_TIERS` or more.
    #[error("backend `{id}`: tier {tier} exceeds the maximum of {max}", max = MAX_TIERS - 1)]
    TierTooLarge {
        /// The backend.
        id: Arc<str>,
        /// The tier given.
        tier: u8,
    },
    /// An in-flight limit of zero would make the backend unusable.
    #[error("backend `{id}`: max_in_flight 0 is invalid (omit it for no limit)")]
    ZeroMaxInFlight {
        /// The backend.
        id: Arc<str>,
    },
    /// An in-flight limit above what divvy counts per backend (2²², about 4 million).
    #[error("backend `{id}`: max_in_flight {max_in_flight} exceeds the maximum of 4194304")]
    MaxInFlightTooLarge {
        /// The backend.
        id: Arc<str>,
        /// The limit given.
        max_in_flight: u32,
    },
    /// A composite strategy's inner strategy routes tiers itself (a `Failover` in a `Failover`):
    /// the inner one would receive a subset of a subset, which views do not support.
    #[error(
        "strategy {outer}: its inner strategy {inner} routes tiers itself; \
         composite strategies do not nest"
    )]
    NestedComposite {
        /// The outer strategy's name.
        outer: &'static str,
        /// The inner strategy's name.
        inner: &'static str,
    },
    /// The strategy cannot serve this set (for example a Maglev table smaller than the set).
    #[error("strategy {strategy}: {reason}")]
    Strategy {
        /// The strategy's name.
        strategy: &'static str,
        /// What is wrong, naming the backend or parameter.
        reason: String,
    },
}

/// Why [`Maglev::with_table_size`](crate::strategy::Maglev::with_table_size) refused a size.
#[non_exhaustive]
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum TableSizeError {
    /// Below [`Maglev::MIN_TABLE_SIZE`](crate::strategy::Maglev::MIN_TABLE_SIZE).
    #[error("maglev table_size {size} is too small: the minimum is {min}")]
    TooSmall {
        /// The size given.
        size: u32,
        /// The smallest size accepted.
        min: u32,
    },
    /// Above [`Maglev::MAX_TABLE_SIZE`](crate::strategy::Maglev::MAX_TABLE_SIZE).
    #[error("maglev table_size {size} is too large: the maximum is {max}")]
    TooLarge {
        /// The size given.
        size: u32,
        /// The largest size accepted.
        max: u32,
    },
    /// Not prime: Maglev's permutations need a prime table size (NSDI 2016, §3.4).
    #[error("maglev table_size {size} is not prime")]
    NotPrime {
        /// The size given.
        size: u32,
    },
}

/// Why a pick found no backend.
#[non_exhaustive]
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum PickError {
    /// Every backend is down, ejected, draining, at its in-flight limit or excluded.
    #[error(
        "no backend available: all {total} backends are down, ejected, draining, full or excluded"
    )]
    NoneAvailable {
        /// The number of backends in the current set.
        total: usize,
    },
}

/// Why a health or admin operation on a named backend failed.
#[non_exhaustive]
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum BackendError {
    /// No backend with this identity is in the current set.
    #[error("backend `{id}` is not in the current set")]
    Unknown {
        /// The identity asked for.
        id: Arc<str>,
    },
}
