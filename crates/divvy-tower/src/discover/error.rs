//! Why a discovery round found no set to publish.

#[cfg(feature = "dns")]
use std::sync::Arc;

#[cfg(feature = "dns")]
use divvy::UpdateError;

/// A boxed error from the resolver or the etcd client, so that its type is not part of
/// divvy-tower's API.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// Why a discovery round published nothing. The last good set keeps serving.
#[cfg(feature = "dns")]
#[non_exhaustive]
#[derive(Debug, thiserror::Error)]
pub enum DiscoverError {
    /// The system resolver configuration (`/etc/resolv.conf`) could not be read.
    #[error("reading the system resolver configuration failed: {0}")]
    Config(#[source] BoxError),
    /// The query failed: a timeout, an unreachable server, or an error answer such as `SERVFAIL`
    /// or `REFUSED`.
    #[error("resolving `{name}` failed: {source}")]
    Resolve {
        /// The name queried.
        name: Arc<str>,
        /// The resolver's error.
        #[source]
        source: BoxError,
    },
    /// The name does not exist, or has no records of the type asked for (or only SRV records with
    /// the target `.`): an empty set cannot be published.
    #[error("`{name}` has no usable records")]
    Empty {
        /// The name queried.
        name: Arc<str>,
    },
    /// The balancer refused the discovered set (for example its strategy cannot serve it).
    #[error("the balancer refused the discovered set: {0}")]
    Rejected(#[from] UpdateError),
}
