//! Test support shared by divvy's crates, in one place instead of a copy per test suite (as
//! `tower-test` and linkerd's `pool/mock` are for theirs).
//!
//! - [`TestBackend`]: a killable HTTP/1 backend on 127.0.0.1 that answers with its name and
//!   records what it saw;
//! - [`client`], [`send`], [`get`]: a pooled HTTP/1.1 client that reads whole answers;
//! - [`DEADLINE`], [`within`], [`eventually`], [`eventually_async`]: waits that end, so a broken
//!   test fails with a message instead of hanging;
//! - `etcd::EtcdServer` (feature `etcd`): a real etcd process on loopback, killable and
//!   restartable.
//!
//! Every network helper binds loopback only. Never published.

#![forbid(unsafe_code)]
#![warn(
    missing_docs,
    missing_debug_implementations,
    rust_2018_idioms,
    unreachable_pub
)]

mod backend;
mod client;
#[cfg(feature = "etcd")]
pub mod etcd;
mod wait;

pub use backend::{backends, Seen, TestBackend};
pub use client::{client, get, send, Answer, TestClient};
pub use wait::{eventually, eventually_async, within, DEADLINE};
