//! Request keys: the sticky cookie and the hash key of `strategy = "hash"`.
//!
//! The sticky cookie carries the chosen backend's [`Backend::key`](divvy::Backend::key) as 16 hex
//! digits: an opaque, stable token that names the backend in every proxy instance without
//! revealing its address.

use std::borrow::Cow;
use std::net::IpAddr;

use http::header::{self, HeaderMap, HeaderValue};
use http::request::Parts;

use crate::config::{HashKey, Sticky};

/// The backend key a request's sticky cookie names, if it carries a well-formed one.
pub fn read(headers: &HeaderMap, name: &str) -> Option<u64> {
    let value = cookie(headers, name)?;
    if value.len() != 16 {
        return None;
    }
    u64::from_str_radix(value, 16).ok()
}

/// The `Set-Cookie` value that pins a client to the backend with `key`.
pub fn set_cookie(s: &Sticky, key: u64) -> HeaderValue {
    let mut v = format!(
        "{}={key:016x}; Path={}; HttpOnly; SameSite=Lax",
        s.cookie, s.path
    );
    if let Some(age) = s.max_age {
        v.push_str(&format!("; Max-Age={age}"));
    }
    // Cookie name and path were checked to be tokens / `;`-free, so this cannot fail.
    HeaderValue::from_str(&v).unwrap_or_else(|_| HeaderValue::from_static(""))
}

/// The first value of cookie `name` in the request's `Cookie` headers.
pub fn cookie<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v.trim_matches('"'))
}

/// The bytes `strategy = "hash"` hashes for this request; `None` when the request lacks the
/// property (the strategy then picks as it does without a key).
pub fn hash_key<'a>(key: &HashKey, parts: &'a Parts, client: IpAddr) -> Option<Cow<'a, [u8]>> {
    match key {
        HashKey::Header(name) => parts.headers.get(name).map(|v| Cow::Borrowed(v.as_bytes())),
        HashKey::Cookie(name) => cookie(&parts.headers, name).map(|v| Cow::Borrowed(v.as_bytes())),
        HashKey::Query(name) => parts.uri.query().and_then(|q| {
            q.split('&')
                .filter_map(|pair| pair.split_once('=').or(Some((pair, ""))))
                .find(|(k, _)| k == name)
                .map(|(_, v)| Cow::Borrowed(v.as_bytes()))
        }),
        HashKey::Uri => Some(Cow::Borrowed(
            parts
                .uri
                .path_and_query()
                .map_or(parts.uri.path(), |pq| pq.as_str())
                .as_bytes(),
        )),
        HashKey::ClientIp => Some(Cow::Owned(client.to_string().into_bytes())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_sticky_cookie_round_trips_through_set_cookie_and_cookie() {
        let s = Sticky {
            cookie: "lb".into(),
            path: "/".into(),
            max_age: None,
        };
        let set = set_cookie(&s, 0x00ab_cdef_0123_4567);
        let pair = set.to_str().unwrap().split(';').next().unwrap().to_owned();
        let mut h = HeaderMap::new();
        h.insert(
            header::COOKIE,
            HeaderValue::from_str(&format!("a=1; {pair}")).unwrap(),
        );
        assert_eq!(read(&h, "lb"), Some(0x00ab_cdef_0123_4567));
    }

    #[test]
    fn a_malformed_sticky_cookie_is_ignored() {
        let mut h = HeaderMap::new();
        h.insert(
            header::COOKIE,
            HeaderValue::from_static("lb=127.0.0.1:8081"),
        );
        assert_eq!(read(&h, "lb"), None);
    }
}
