//! Service discovery: tokio tasks that keep a balancer's backend set in step with DNS.
//!
//! [`DnsDiscovery`] (feature `dns`, with `hickory-resolver`) resolves A/AAAA or SRV records,
//! publishes the answer with [`Balancer::update`](divvy::Balancer::update) when it changed, and
//! asks again when its TTL runs out (bounded by a minimum and a maximum). A failed or empty
//! answer keeps the last good set. Backends keep their identity across refreshes, so the core
//! keeps their live state (in flight, health, latency) for as long as DNS lists them.

mod dns;
mod error;
mod records;
mod task;

pub use dns::DnsDiscovery;
pub use error::{BoxError, DiscoverError};
pub use task::{DiscoveryEvent, DiscoveryHandle, DiscoveryStats};
