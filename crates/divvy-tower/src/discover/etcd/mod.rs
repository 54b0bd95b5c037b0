//! etcd discovery and lease-based self-registration (feature `etcd`).
//!
//! - [`EtcdDiscovery`] watches a key prefix (`/divvy/<upstream>/`) whose keys each hold one
//!   backend as a JSON [`Record`], and keeps a balancer's set equal to them: a consistent
//!   listing, then a watch from the next revision, again after any failure.
//! - [`Registration`] puts a backend's own record under a lease and keeps the lease alive, so
//!   that a crashed backend disappears after the TTL, and drains then deletes it on shutdown.
//!
//! Many instances watching one prefix see the same keys, build the same set (sorted by
//! address), and so route every key to the same backend with a hashing strategy; see
//! `docs/MANY_INSTANCES.md`.

mod client;
mod discovery;
mod error;
mod members;
mod record;
mod registration;
mod watch;

pub use discovery::{EtcdDiscovery, Listing};
pub use error::EtcdError;
pub use record::{Record, RecordError};
pub use registration::{Registration, RegistrationHandle};
pub use watch::{EtcdHandle, EtcdStats};
