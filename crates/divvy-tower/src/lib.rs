//! # divvy-tower
//!
//! [divvy](divvy)'s balancer as [tower] middleware, with active health checks and DNS discovery
//! on tokio.

#![forbid(unsafe_code)]
#![warn(
    missing_docs,
    missing_debug_implementations,
    rust_2018_idioms,
    unreachable_pub
)]

pub use divvy;
