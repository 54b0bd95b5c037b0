//! What a strategy may know about the request being routed.

use std::net::IpAddr;

/// Per-request routing input. Every field is optional; strategies use what they need and say in
/// their docs what they do without it.
///
/// A `Context` borrows from the request and costs nothing to build:
///
/// ```
/// use divvy::Context;
///
/// let ctx = Context::new().client_ip("192.0.2.7".parse().unwrap()).key(b"/videos/42");
/// assert_eq!(ctx.get_key(), Some(&b"/videos/42"[..]));
/// ```
#[derive(Clone, Copy, Debug, Default)]
pub struct Context<'a> {
    client_ip: Option<IpAddr>,
    key: Option<&'a [u8]>,
    sticky: Option<u64>,
    zone: Option<&'a str>,
    exclude: &'a [u64],
}

impl<'a> Context<'a> {
    /// An empty context.
    pub const fn new() -> Self {
        Context {
            client_ip: None,
            key: None,
            sticky: None,
            zone: None,
            exclude: &[],
        }
    }

    /// The client's address, for [`IpHash`](crate::strategy::IpHash).
    #[must_use]
    pub const fn client_ip(mut self, ip: IpAddr) -> Self {
        self.client_ip = Some(ip);
        self
    }

    /// The hash key for consistent hashing (a user id, a URL, a cache key).
    #[must_use]
    pub const fn key(mut self, key: &'a [u8]) -> Self {
        self.key = Some(key);
        self
    }

    /// A sticky target: the [`Backend::key`](crate::Backend::key) of the backend this request is
    /// pinned to. When that backend is in the set and available (or draining), it is chosen without
    /// consulting the strategy; otherwise the strategy picks as usual.
    #[must_use]
    pub const fn sticky(mut self, backend_key: u64) -> Self {
        self.sticky = Some(backend_key);
        self
    }

    /// The caller's zone, for zone-aware [`Failover`](crate::strategy::Failover).
    #[must_use]
    pub const fn zone(mut self, zone: &'a str) -> Self {
        self.zone = Some(zone);
        self
    }

    /// Backends (by [`Backend::key`](crate::Backend::key)) this request must not go to, typically
    /// the ones a retry already tried. They count as unavailable for this pick only, as nginx's
    /// per-request `tried` bitmap.
    #[must_use]
    pub const fn exclude(mut self, backend_keys: &'a [u64]) -> Self {
        self.exclude = backend_keys;
        self
    }

    /// The client's address, if set.
    pub const fn get_client_ip(&self) -> Option<IpAddr> {
        self.client_ip
    }

    /// The hash key, if set.
    pub const fn get_key(&self) -> Option<&'a [u8]> {
        self.key
    }

    /// The sticky target, if set.
    pub const fn get_sticky(&self) -> Option<u64> {
        self.sticky
    }

    /// The caller's zone, if set.
    pub const fn get_zone(&self) -> Option<&'a str> {
        self.zone
    }

    /// The excluded backend keys.
    pub const fn get_exclude(&self) -> &'a [u64] {
        self.exclude
    }
}
