//! Service discovery: tokio tasks that keep a balancer's backend set in step with DNS or etcd.
//!
//! [`DnsDiscovery`] (feature `dns`, with `hickory-resolver`) resolves A/AAAA or SRV records,
//! publishes the answer with [`Balancer::update`](divvy::Balancer::update) when it changed, and
//! asks again when its TTL runs out (bounded by a minimum and a maximum). A failed or empty
//! answer keeps the last good set.
//!
//! [`EtcdDiscovery`] (feature `etcd`, with `etcd-client`) watches a key prefix and publishes
//! each change as it happens; [`Registration`] lets a backend register itself under a lease.
//! While etcd is unreachable the last known set keeps serving.
//!
//! Either way backends keep their identity across refreshes, so the core keeps their live state
//! (in flight, health, latency) for as long as the source lists them.

#[cfg(feature = "dns")]
mod dns;
mod error;
#[cfg(feature = "etcd")]
mod etcd;
#[cfg(feature = "dns")]
mod records;
#[cfg(feature = "dns")]
mod task;

#[cfg(feature = "dns")]
pub use dns::DnsDiscovery;
pub use error::BoxError;
#[cfg(feature = "dns")]
pub use error::DiscoverError;
#[cfg(feature = "etcd")]
pub use etcd::{
    EtcdDiscovery, EtcdError, EtcdHandle, EtcdStats, Listing, Record, RecordError, Registration,
    RegistrationHandle,
};
#[cfg(feature = "dns")]
pub use task::{DiscoveryEvent, DiscoveryHandle, DiscoveryStats};
