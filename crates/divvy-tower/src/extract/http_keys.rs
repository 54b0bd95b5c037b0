//! Hash keys and sticky targets read from HTTP requests: headers, cookies, the path.

use std::sync::Arc;

use divvy::Backend;
use http::header::{HeaderName, HeaderValue, COOKIE};
use http::HeaderMap;

use super::{Extract, RequestKey};

/// Hash key = the value of a header (the first, if repeated); no key when it is absent.
#[derive(Clone, Debug)]
pub struct HeaderKey {
    name: HeaderName,
}

impl HeaderKey {
    /// Hashes on the header `name` (`HeaderName::from_static("x-user-id")`).
    pub const fn new(name: HeaderName) -> Self {
        HeaderKey { name }
    }
}

impl<B> Extract<http::Request<B>> for HeaderKey {
    #[inline]
    fn extract<'r>(&'r self, request: &'r http::Request<B>) -> RequestKey<'r> {
        match request.headers().get(&self.name) {
            Some(v) => RequestKey::new().key(v.as_bytes()),
            None => RequestKey::new(),
        }
    }
}

/// Hash key = the value of a cookie; no key when it is absent.
#[derive(Clone, Debug)]
pub struct CookieKey {
    name: Arc<str>,
}

impl CookieKey {
    /// Hashes on the cookie `name`.
    pub fn new(name: impl Into<Arc<str>>) -> Self {
        CookieKey { name: name.into() }
    }
}

impl<B> Extract<http::Request<B>> for CookieKey {
    #[inline]
    fn extract<'r>(&'r self, request: &'r http::Request<B>) -> RequestKey<'r> {
        match cookie(request.headers(), &self.name) {
            Some(v) => RequestKey::new().key(v),
            None => RequestKey::new(),
        }
    }
}

/// Sticky sessions by cookie: the cookie names the backend a client is pinned to.
///
/// The cookie's value is the backend's [`Backend::key`] as 16 lowercase hex digits: opaque
/// (it does not reveal the backend's address) and the same in every process, so any divvy
/// instance honours a cookie another one set. A request whose cookie names a backend that is
/// gone, down or full is balanced as usual; the response then carries a new cookie if the caller
/// sets one with [`set_cookie`](Self::set_cookie) (for example from
/// [`PickBody::backend`](crate::track::PickBody::backend)).
///
/// ```
/// use divvy::Backend;
/// use divvy_tower::extract::{Extract, StickyCookie};
///
/// let sticky = StickyCookie::new("srv");
/// let backend = Backend::new("10.0.0.2:8080");
/// let set = sticky.set_cookie(&backend);
/// assert!(set.to_str().unwrap().starts_with("srv="));
///
/// // The next request carries the cookie back and is pinned.
/// let value = set.to_str().unwrap().split(';').next().unwrap().to_owned();
/// let req = http::Request::get("/").header("cookie", value).body(()).unwrap();
/// assert_eq!(sticky.extract(&req).get_sticky(), Some(backend.key()));
/// ```
#[derive(Clone, Debug)]
pub struct StickyCookie {
    name: Arc<str>,
    attributes: Arc<str>,
}

impl StickyCookie {
    /// Pins clients with the cookie `name`.
    pub fn new(name: impl Into<Arc<str>>) -> Self {
        StickyCookie {
            name: name.into(),
            attributes: Arc::from("Path=/; HttpOnly"),
        }
    }

    /// Sets the attributes [`set_cookie`](Self::set_cookie) appends after the value
    /// (`"Path=/; HttpOnly; Secure; SameSite=Lax; Max-Age=3600"`). Default is
    /// `Path=/; HttpOnly`: a session cookie for the whole site, hidden from scripts.
    #[must_use]
    pub fn attributes(mut self, attributes: impl Into<Arc<str>>) -> Self {
        self.attributes = attributes.into();
        self
    }

    /// The cookie's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The cookie value that pins a client to `backend`.
    pub fn value(backend: &Backend) -> String {
        format!("{:016x}", backend.key())
    }

    /// A `Set-Cookie` header value pinning the client to `backend`.
    ///
    /// A name or attributes with characters a header cannot carry are dropped from the value
    /// rather than panicking; use plain cookie names.
    pub fn set_cookie(&self, backend: &Backend) -> HeaderValue {
        let s = format!(
            "{}={}; {}",
            self.name,
            Self::value(backend),
            self.attributes
        );
        HeaderValue::try_from(s).unwrap_or_else(|_| {
            let clean: String = format!("{}={:016x}", self.name, backend.key())
                .chars()
                .filter(|c| c.is_ascii_graphic())
                .collect();
            HeaderValue::try_from(clean).unwrap_or(HeaderValue::from_static(""))
        })
    }

    /// The sticky target named by `request`'s cookie, if it carries a well-formed one.
    pub fn sticky<B>(&self, request: &http::Request<B>) -> Option<u64> {
        let v = cookie(request.headers(), &self.name)?;
        if v.len() != 16 {
            return None;
        }
        u64::from_str_radix(std::str::from_utf8(v).ok()?, 16).ok()
    }
}

impl<B> Extract<http::Request<B>> for StickyCookie {
    #[inline]
    fn extract<'r>(&'r self, request: &'r http::Request<B>) -> RequestKey<'r> {
        match self.sticky(request) {
            Some(key) => RequestKey::new().sticky(key),
            None => RequestKey::new(),
        }
    }
}

/// Hash key = the request path (nginx's `$uri`, before normalisation).
#[derive(Clone, Copy, Debug, Default)]
pub struct PathKey;

impl<B> Extract<http::Request<B>> for PathKey {
    #[inline]
    fn extract<'r>(&'r self, request: &'r http::Request<B>) -> RequestKey<'r> {
        RequestKey::new().key(request.uri().path().as_bytes())
    }
}

/// Hash key = the path and query (nginx's `$request_uri`), the usual cache key.
#[derive(Clone, Copy, Debug, Default)]
pub struct PathAndQueryKey;

impl<B> Extract<http::Request<B>> for PathAndQueryKey {
    #[inline]
    fn extract<'r>(&'r self, request: &'r http::Request<B>) -> RequestKey<'r> {
        let pq = request
            .uri()
            .path_and_query()
            .map_or(request.uri().path(), |pq| pq.as_str());
        RequestKey::new().key(pq.as_bytes())
    }
}

/// Hash key = the raw (undecoded) value of a query parameter (nginx's `$arg_NAME`); no key when
/// the parameter is absent. A parameter without `=` has the empty value; the first occurrence
/// wins.
#[derive(Clone, Debug)]
pub struct QueryKey {
    name: Arc<str>,
}

impl QueryKey {
    /// Hashes on the query parameter `name`.
    pub fn new(name: impl Into<Arc<str>>) -> Self {
        QueryKey { name: name.into() }
    }
}

impl<B> Extract<http::Request<B>> for QueryKey {
    #[inline]
    fn extract<'r>(&'r self, request: &'r http::Request<B>) -> RequestKey<'r> {
        let value = request.uri().query().and_then(|q| {
            q.split('&')
                .map(|pair| pair.split_once('=').unwrap_or((pair, "")))
                .find(|(k, _)| *k == &*self.name)
                .map(|(_, v)| v)
        });
        match value {
            Some(v) => RequestKey::new().key(v.as_bytes()),
            None => RequestKey::new(),
        }
    }
}

/// The value of cookie `name` in the request's `Cookie` headers (RFC 6265 `name=value; …`,
/// possibly split over several headers by HTTP/2), without surrounding quotes.
fn cookie<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a [u8]> {
    let name = name.as_bytes();
    headers.get_all(COOKIE).iter().find_map(|value| {
        value.as_bytes().split(|&b| b == b';').find_map(|pair| {
            let pair = pair.trim_ascii();
            let eq = pair.iter().position(|&b| b == b'=')?;
            let (k, v) = (&pair[..eq], &pair[eq + 1..]);
            if k.trim_ascii() != name {
                return None;
            }
            let v = v.trim_ascii();
            Some(match v {
                [b'"', inner @ .., b'"'] => inner,
                _ => v,
            })
        })
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn with_cookies(values: &[&str]) -> http::Request<()> {
        let mut b = http::Request::builder().uri("/a/b?c=1");
        for v in values {
            b = b.header(COOKIE, *v);
        }
        b.body(()).unwrap()
    }

    #[test]
    fn cookies_are_found_across_headers_and_quotes_are_removed() {
        let req = with_cookies(&["a=1; session=\"xyz\"", "other=2"]);
        assert_eq!(cookie(req.headers(), "session"), Some(&b"xyz"[..]));
        assert_eq!(cookie(req.headers(), "other"), Some(&b"2"[..]));
        assert_eq!(cookie(req.headers(), "sess"), None);
        assert_eq!(cookie(req.headers(), "a"), Some(&b"1"[..]));
    }

    #[test]
    fn a_cookie_name_must_match_exactly_not_as_a_suffix() {
        let req = with_cookies(&["xsession=1; session=2"]);
        assert_eq!(cookie(req.headers(), "session"), Some(&b"2"[..]));
    }

    #[test]
    fn a_malformed_sticky_cookie_pins_nothing() {
        let s = StickyCookie::new("srv");
        for bad in [
            "srv=12",
            "srv=zzzzzzzzzzzzzzzz",
            "srv=",
            "srv=0123456789abcdef0",
        ] {
            assert_eq!(s.sticky(&with_cookies(&[bad])), None, "{bad}");
        }
        assert_eq!(
            s.sticky(&with_cookies(&["srv=00000000000000ff"])),
            Some(255)
        );
    }

    #[test]
    fn path_keys_borrow_the_path_with_and_without_query() {
        let req = with_cookies(&[]);
        assert_eq!(PathKey.extract(&req).get_key(), Some(&b"/a/b"[..]));
        assert_eq!(
            PathAndQueryKey.extract(&req).get_key(),
            Some(&b"/a/b?c=1"[..])
        );
    }

    #[test]
    fn a_query_key_is_the_first_raw_value_and_a_bare_name_is_empty() {
        let q = QueryKey::new("u");
        let req = |uri: &str| http::Request::get(uri).body(()).unwrap();
        assert_eq!(
            q.extract(&req("/p?a=1&u=x%20y&u=2")).get_key(),
            Some(&b"x%20y"[..])
        );
        assert_eq!(q.extract(&req("/p?a=1&u")).get_key(), Some(&b""[..]));
        assert_eq!(q.extract(&req("/p?uu=1")).get_key(), None);
        assert_eq!(q.extract(&req("/p")).get_key(), None);
    }

    #[test]
    fn a_header_key_is_the_first_value_and_absent_means_no_key() {
        let x = HeaderKey::new(HeaderName::from_static("x-user"));
        let req = http::Request::builder()
            .header("x-user", "alice")
            .header("x-user", "bob")
            .body(())
            .unwrap();
        assert_eq!(x.extract(&req).get_key(), Some(&b"alice"[..]));
        assert_eq!(x.extract(&with_cookies(&[])).get_key(), None);
    }

    mod prop {
        use super::*;
        use proptest::prelude::*;

        proptest! {
            #[test]
            fn a_cookie_value_is_found_among_any_other_cookies(
                others in proptest::collection::vec(("[a-z]{1,6}", "[A-Za-z0-9]{0,8}"), 0..5),
                value in "[A-Za-z0-9_-]{0,20}",
                at in 0usize..5,
            ) {
                let mut pairs: Vec<String> = others
                    .iter()
                    .filter(|(k, _)| k != "target")
                    .map(|(k, v)| format!("{k}={v}"))
                    .collect();
                pairs.insert(at.min(pairs.len()), format!("target={value}"));
                let req = with_cookies(&[pairs.join("; ").as_str()]);
                prop_assert_eq!(cookie(req.headers(), "target"), Some(value.as_bytes()));
            }

            #[test]
            fn any_cookie_header_parses_without_panicking(raw in proptest::collection::vec(any::<u8>(), 0..64)) {
                if let Ok(v) = HeaderValue::from_bytes(&raw) {
                    let mut req = http::Request::new(());
                    req.headers_mut().insert(COOKIE, v);
                    let _ = cookie(req.headers(), "a");
                    let _ = StickyCookie::new("a").sticky(&req);
                }
            }

            #[test]
            fn a_sticky_cookie_round_trips_for_any_backend(id in "[a-z0-9.:-]{1,30}") {
                let s = StickyCookie::new("srv");
                let b = Backend::new(id);
                let value = format!("srv={}", StickyCookie::value(&b));
                prop_assert_eq!(s.sticky(&with_cookies(&[value.as_str()])), Some(b.key()));
            }
        }
    }
}
