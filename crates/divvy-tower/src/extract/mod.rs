//! Context extractors: what a strategy may know about a request.
//!
//! An [`Extract`] reads a request and returns a [`RequestKey`]: the client address, a hash key,
//! a sticky target and a zone, any of which may be missing. The key may borrow from the request
//! (a header value, the path) or own its bytes; it lives across the pick, which happens inside
//! `call`, and is gone before the request is sent. Nothing is allocated for borrowed keys.
//!
//! | extractor | sets | nginx equivalent |
//! |---|---|---|
//! | [`ClientIp`] | client address (from the connection, or `X-Forwarded-For` behind trusted proxies) | `ip_hash`, `set_real_ip_from` + `real_ip_recursive on` |
//! | [`HeaderKey`] | hash key = a header's value | `hash $http_x_user consistent` |
//! | [`CookieKey`] | hash key = a cookie's value | `hash $cookie_session consistent` |
//! | [`StickyCookie`] | sticky target from a cookie divvy set | nginx Plus `sticky cookie` |
//! | [`PathKey`] / [`PathAndQueryKey`] | hash key = path (and query) | `hash $uri` / `hash $request_uri` |
//! | [`QueryKey`] | hash key = a query parameter's raw value | `hash $arg_user consistent` |
//! | [`extract_fn`] | anything a closure returns | `hash $anything` |
//! | `()` | nothing | — |
//!
//! Tuples combine extractors: each field comes from the first element that sets it, so
//! `(StickyCookie::new("srv"), CookieKey::new("session"))` pins a client with a sticky cookie
//! and hashes its session cookie when it has none yet (or its pinned backend is gone).
//!
//! ```
//! use divvy_tower::extract::{extract_fn, Extract, RequestKey};
//!
//! // Hash on the tenant, which is the first path segment.
//! let tenant = extract_fn(|req: &http::Request<()>| {
//!     let path = req.uri().path().trim_start_matches('/');
//!     RequestKey::new().key(path.split('/').next().unwrap_or("").as_bytes())
//! });
//! let req = http::Request::get("/acme/orders/7").body(()).unwrap();
//! assert_eq!(tenant.extract(&req).get_key(), Some(&b"acme"[..]));
//! ```

use std::fmt;
use std::net::IpAddr;

use bytes::Bytes;
use divvy::Context;

mod client_ip;
mod http_keys;

pub use client_ip::{ClientAddr, ClientIp, IpNet, IpNetParseError};
pub use http_keys::{CookieKey, HeaderKey, PathAndQueryKey, PathKey, QueryKey, StickyCookie};

/// Reads a [`RequestKey`] from a request.
///
/// The key may borrow from the request and from the extractor itself.
pub trait Extract<Req> {
    /// The routing input for `request`.
    fn extract<'r>(&'r self, request: &'r Req) -> RequestKey<'r>;
}

/// The longest key kept inline by [`RequestKey::key_copy`]; longer keys are copied to the heap.
pub const INLINE_KEY: usize = 32;

/// What a request tells the strategy: client address, hash key, sticky target and zone, each
/// optional. It borrows from the request (or owns small copies) and becomes a divvy
/// [`Context`] for the pick with [`context`](Self::context).
#[derive(Clone, Default)]
pub struct RequestKey<'r> {
    client_ip: Option<IpAddr>,
    key: Key<'r>,
    sticky: Option<u64>,
    zone: Option<&'r str>,
}

#[derive(Clone, Default)]
enum Key<'r> {
    #[default]
    None,
    Borrowed(&'r [u8]),
    Inline {
        len: u8,
        buf: [u8; INLINE_KEY],
    },
    Shared(Bytes),
}

impl<'r> RequestKey<'r> {
    /// Nothing known.
    pub const fn new() -> Self {
        RequestKey {
            client_ip: None,
            key: Key::None,
            sticky: None,
            zone: None,
        }
    }

    /// Sets the client address.
    #[must_use]
    pub const fn client_ip(mut self, ip: IpAddr) -> Self {
        self.client_ip = Some(ip);
        self
    }

    /// Sets the hash key, borrowed.
    #[must_use]
    pub fn key(mut self, key: &'r [u8]) -> Self {
        self.key = Key::Borrowed(key);
        self
    }

    /// Sets the hash key to a copy of `key`: inline (no allocation) up to [`INLINE_KEY`] bytes.
    /// For keys computed from the request rather than found in it.
    #[must_use]
    pub fn key_copy(mut self, key: &[u8]) -> Self {
        self.key = if key.len() <= INLINE_KEY {
            let mut buf = [0; INLINE_KEY];
            buf[..key.len()].copy_from_slice(key);
            Key::Inline {
                len: key.len() as u8,
                buf,
            }
        } else {
            Key::Shared(Bytes::copy_from_slice(key))
        };
        self
    }

    /// Sets the hash key to shared bytes.
    #[must_use]
    pub fn key_bytes(mut self, key: Bytes) -> Self {
        self.key = Key::Shared(key);
        self
    }

    /// Sets the sticky target, a [`Backend::key`](divvy::Backend::key).
    #[must_use]
    pub const fn sticky(mut self, backend_key: u64) -> Self {
        self.sticky = Some(backend_key);
        self
    }

    /// Sets the caller's zone.
    #[must_use]
    pub const fn zone(mut self, zone: &'r str) -> Self {
        self.zone = Some(zone);
        self
    }

    /// The client address, if known.
    pub const fn get_client_ip(&self) -> Option<IpAddr> {
        self.client_ip
    }

    /// The hash key, if known.
    pub fn get_key(&self) -> Option<&[u8]> {
        match &self.key {
            Key::None => None,
            Key::Borrowed(k) => Some(k),
            Key::Inline { len, buf } => Some(&buf[..usize::from(*len)]),
            Key::Shared(b) => Some(b),
        }
    }

    /// The sticky target, if known.
    pub const fn get_sticky(&self) -> Option<u64> {
        self.sticky
    }

    /// The zone, if known.
    pub const fn get_zone(&self) -> Option<&'r str> {
        self.zone
    }

    /// Fills each field this key lacks from `other`.
    #[must_use]
    pub fn or(mut self, other: RequestKey<'r>) -> Self {
        if self.client_ip.is_none() {
            self.client_ip = other.client_ip;
        }
        if matches!(self.key, Key::None) {
            self.key = other.key;
        }
        if self.sticky.is_none() {
            self.sticky = other.sticky;
        }
        if self.zone.is_none() {
            self.zone = other.zone;
        }
        self
    }

    /// The divvy context for the pick, borrowing from this key.
    #[inline]
    pub fn context(&self) -> Context<'_> {
        let mut ctx = Context::new();
        if let Some(ip) = self.client_ip {
            ctx = ctx.client_ip(ip);
        }
        if let Some(key) = self.get_key() {
            ctx = ctx.key(key);
        }
        if let Some(sticky) = self.sticky {
            ctx = ctx.sticky(sticky);
        }
        if let Some(zone) = self.zone {
            ctx = ctx.zone(zone);
        }
        ctx
    }
}

impl fmt::Debug for RequestKey<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RequestKey")
            .field("client_ip", &self.client_ip)
            .field("key", &self.get_key().map(|k| String::from_utf8_lossy(k)))
            .field("sticky", &self.sticky)
            .field("zone", &self.zone)
            .finish()
    }
}

// === impl Extract for combinators ===

impl<Req> Extract<Req> for () {
    #[inline]
    fn extract<'r>(&'r self, _request: &'r Req) -> RequestKey<'r> {
        RequestKey::new()
    }
}

impl<Req, A: Extract<Req>, B: Extract<Req>> Extract<Req> for (A, B) {
    #[inline]
    fn extract<'r>(&'r self, request: &'r Req) -> RequestKey<'r> {
        self.0.extract(request).or(self.1.extract(request))
    }
}

impl<Req, A: Extract<Req>, B: Extract<Req>, C: Extract<Req>> Extract<Req> for (A, B, C) {
    #[inline]
    fn extract<'r>(&'r self, request: &'r Req) -> RequestKey<'r> {
        self.0
            .extract(request)
            .or(self.1.extract(request))
            .or(self.2.extract(request))
    }
}

/// An extractor from a closure; see [`extract_fn`].
#[derive(Clone, Copy)]
pub struct ExtractFn<F> {
    f: F,
}

/// An extractor from a closure returning a [`RequestKey`], which may borrow from the request.
/// Annotate the request type in the closure (`|req: &http::Request<B>| …`).
pub fn extract_fn<Req, F>(f: F) -> ExtractFn<F>
where
    F: for<'r> Fn(&'r Req) -> RequestKey<'r>,
{
    ExtractFn { f }
}

impl<Req, F> Extract<Req> for ExtractFn<F>
where
    F: for<'r> Fn(&'r Req) -> RequestKey<'r>,
{
    #[inline]
    fn extract<'r>(&'r self, request: &'r Req) -> RequestKey<'r> {
        (self.f)(request)
    }
}

impl<F> fmt::Debug for ExtractFn<F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ExtractFn").finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_copied_key_is_inline_up_to_the_limit_and_shared_beyond() {
        let short = [7u8; INLINE_KEY];
        let k = RequestKey::new().key_copy(&short);
        assert!(matches!(k.key, Key::Inline { .. }));
        assert_eq!(k.get_key(), Some(&short[..]));
        let long = [9u8; INLINE_KEY + 1];
        let k = RequestKey::new().key_copy(&long);
        assert!(matches!(k.key, Key::Shared(_)));
        assert_eq!(k.get_key(), Some(&long[..]));
    }

    #[test]
    fn or_keeps_set_fields_and_fills_missing_ones() {
        let a = RequestKey::new().sticky(1);
        let b = RequestKey::new()
            .sticky(2)
            .key(b"k")
            .client_ip("192.0.2.1".parse().unwrap());
        let merged = a.or(b);
        assert_eq!(merged.get_sticky(), Some(1));
        assert_eq!(merged.get_key(), Some(&b"k"[..]));
        assert_eq!(merged.get_client_ip(), Some("192.0.2.1".parse().unwrap()));
    }

    #[test]
    fn the_context_carries_every_field_set() {
        let k = RequestKey::new()
            .client_ip("192.0.2.9".parse().unwrap())
            .key_copy(b"abc")
            .sticky(42)
            .zone("eu");
        let ctx = k.context();
        assert_eq!(ctx.get_client_ip(), Some("192.0.2.9".parse().unwrap()));
        assert_eq!(ctx.get_key(), Some(&b"abc"[..]));
        assert_eq!(ctx.get_sticky(), Some(42));
        assert_eq!(ctx.get_zone(), Some("eu"));
        assert!(ctx.get_exclude().is_empty());
    }
}
