//! Service discovery: keeping a balancer's backend set in step with a source of truth.
//!
//! Every source goes through one path, [`Change::apply`], whose changes are atomic updates of
//! the balancer ([`Balancer::upsert`](divvy::Balancer::upsert),
//! [`remove`](divvy::Balancer::remove), [`modify`](divvy::Balancer::modify)), so sources and
//! other writers never lose each other's changes:
//!
//! - [`feed`]: any [`Stream`](futures_util::Stream) of [`Change`]s (a registry watch, a channel
//!   an admin endpoint writes to);
//! - [`feed_discover`]: a [`tower::discover::Discover`], whose services become the endpoints
//!   (through [`Discovered`]);
//! - [`Membership`]: the other way round, a balancer's membership as a `Discover`;
//! - `DnsDiscovery` (feature `dns`, with `hickory-resolver`): A/AAAA or SRV records, published as
//!   a [`Change::Replace`] when the answer changed, asked again when its TTL runs out.
//!
//! # When a source has nothing to say
//!
//! While a source is unreachable, the last known set keeps serving: a stream that fails ends
//! its feed and leaves the set as it was, and a DNS query that times out or fails changes
//! nothing. An explicit answer may scale to zero: a [`Change::Replace`] with no backends, or the
//! removal of the last one, leaves an empty set, from which picks fail with
//! [`PickError::NoneAvailable`](divvy::PickError) (or, with
//! [`Balance::backpressure`](crate::Balance::backpressure), wait). DNS is the exception: an
//! empty answer (`NXDOMAIN`, no records) keeps the last set, because resolvers and registries
//! answer that way for a passing failure too (Consul answers `NXDOMAIN` while its agent has lost
//! the catalog), and a name that momentarily resolves to nothing should not take a service down.

mod change;
mod feed;
mod from_discover;
mod membership;

#[cfg(feature = "dns")]
mod dns;
#[cfg(feature = "dns")]
mod error;
#[cfg(feature = "dns")]
mod records;
#[cfg(feature = "dns")]
mod task;

pub use change::Change;
pub use feed::{feed, FeedError, FeedStats};
pub use from_discover::{feed_discover, Discovered, DiscoveredEndpoint, Removed};
pub use membership::Membership;

#[cfg(feature = "dns")]
pub use dns::DnsDiscovery;
#[cfg(feature = "dns")]
pub use error::{BoxError, DiscoverError};
#[cfg(feature = "dns")]
pub use task::{DiscoveryEvent, DiscoveryHandle, DiscoveryStats};
