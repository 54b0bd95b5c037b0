//! What a client request must satisfy before it is routed: method, target form and `Host`.
//!
//! hyper parses any RFC 9110 token as a method and any target it can turn into a URI; nginx
//! 1.22 is stricter, and a proxy behind or in front of other proxies must not be the lenient
//! one (a request two hops disagree about is how smuggling and cache poisoning start). Measured
//! against nginx 1.22 with raw sockets, [`admit`] answers:
//!
//! | request | nginx 1.22 | here |
//! |---|---|---|
//! | method with a lower-case letter or a digit (`get`, `G1T`) | 400 | 400 |
//! | method of `A-Z`, `_`, `-` (`G_T`) | forwarded | forwarded |
//! | `TRACE` | 405 | 405 (`[client] allow_trace = true` forwards it) |
//! | `OPTIONS * HTTP/1.1` (asterisk form) | 400 | 400 |
//! | two `Host` headers | 400 | 400 |
//! | HTTP/1.1 without `Host`, or with an empty one | 400 | 400 |
//! | `Host` with a space, `/`, `..` | 400 | 400 |
//! | `Host` with other characters no host has (`@`, `!`) | forwarded | 400 (RFC 3986 `host[:port]`) |
//! | absolute form `GET http://a/ HTTP/1.1`, `Host: b` | routes and forwards as `a` | the same |
//! | absolute form with user info (`http://u@a/`) | 400 | 400 |
//! | HTTP/1.0 without `Host` | default server | default host; the backend gets a `Host` |
//!
//! RFC 9112 §3.2 is the rule behind the `Host` rows: a server must answer 400 to an HTTP/1.1
//! request without `Host`, with more than one, or with an invalid one, and an absolute-form
//! target's authority replaces `Host` (§3.2.2), so routing and the backend see the same name.

use http::header::{self, HeaderValue};
use http::{Method, Request, Response, StatusCode, Version};

use crate::forward::{plain, ProxyBody};

/// The request-level rules that can be configured (`[client]`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Policy {
    /// Forward `TRACE` instead of answering 405.
    pub allow_trace: bool,
}

/// Why a request was refused before routing.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Refusal {
    /// The method has a character outside `A-Z`, `_`, `-`.
    InvalidMethod,
    /// `TRACE`, with `allow_trace` off.
    Trace,
    /// The asterisk-form target `*`.
    AsteriskForm,
    /// More than one `Host` header.
    DuplicateHost,
    /// HTTP/1.1 or later without a `Host` header.
    MissingHost,
    /// A `Host` header or target authority that is no `host[:port]`.
    InvalidHost,
    /// A target authority with user info (`http://user@host/`).
    UserInfo,
}

impl Refusal {
    /// The status the client gets: 405 for `TRACE`, else 400.
    pub fn status(self) -> StatusCode {
        match self {
            Refusal::Trace => StatusCode::METHOD_NOT_ALLOWED,
            _ => StatusCode::BAD_REQUEST,
        }
    }

    /// The answer to send.
    pub fn response(self) -> Response<ProxyBody> {
        match self {
            Refusal::Trace => plain(self.status(), "405 method not allowed\n"),
            _ => plain(self.status(), "400 bad request\n"),
        }
    }
}

impl std::fmt::Display for Refusal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Refusal::InvalidMethod => "invalid method (only A-Z, `_` and `-`)",
            Refusal::Trace => "TRACE is not allowed",
            Refusal::AsteriskForm => "asterisk-form target",
            Refusal::DuplicateHost => "more than one Host header",
            Refusal::MissingHost => "no Host header",
            Refusal::InvalidHost => "invalid host",
            Refusal::UserInfo => "user info in the target",
        })
    }
}

impl std::error::Error for Refusal {}

/// Checks `req` and puts its host in one place: the returned request's `Host` header is the
/// name it is routed by. A request that breaks a rule is refused with the reason.
pub fn admit<B>(mut req: Request<B>, policy: Policy) -> Result<Request<B>, Refusal> {
    if !valid_method(req.method()) {
        return Err(Refusal::InvalidMethod);
    }
    if req.method() == Method::TRACE && !policy.allow_trace {
        return Err(Refusal::Trace);
    }
    // hyper gives the asterisk form (`OPTIONS *`) a URI with path `*`; nginx refuses it, and
    // forwarding it as `/*` (what routing would do) asks the backend something else.
    if req.uri().path() == "*" {
        return Err(Refusal::AsteriskForm);
    }
    let mut hosts = req.headers().get_all(header::HOST).iter();
    let host = hosts.next().cloned();
    if hosts.next().is_some() {
        return Err(Refusal::DuplicateHost);
    }
    if let Some(h) = &host {
        if !valid_host(h.as_bytes()) {
            return Err(Refusal::InvalidHost);
        }
    }
    match req.uri().authority() {
        Some(authority) => {
            // Absolute form (HTTP/1) or `:authority` (HTTP/2). RFC 9110 §4.2.4: user info in
            // an http(s) URI is an error; nginx answers 400.
            if authority.as_str().contains('@') {
                return Err(Refusal::UserInfo);
            }
            if !valid_host(authority.as_str().as_bytes()) {
                return Err(Refusal::InvalidHost);
            }
            // An HTTP/1.1 client must send `Host` even with an absolute target (nginx: 400).
            if host.is_none() && req.version() == Version::HTTP_11 {
                return Err(Refusal::MissingHost);
            }
            let value =
                HeaderValue::from_str(authority.as_str()).map_err(|_| Refusal::InvalidHost)?;
            req.headers_mut().insert(header::HOST, value);
        }
        None if host.is_none() && req.version() >= Version::HTTP_11 => {
            return Err(Refusal::MissingHost);
        }
        // HTTP/1.0 may name no host: it goes to the default host, and the forwarding path
        // gives the backend a `Host`.
        None => {}
    }
    Ok(req)
}

/// nginx's method rule (`ngx_http_parse_request_line`): upper-case letters, `_` and `-`.
fn valid_method(m: &Method) -> bool {
    let s = m.as_str();
    !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_uppercase() || b == b'_' || b == b'-')
}

/// RFC 3986 `host [ ":" port ]` with a non-empty host: a reg-name (unreserved, `%`-escapes
/// and sub-delims, no empty label as nginx refuses `a..b`), or an IP literal in brackets.
pub fn valid_host(h: &[u8]) -> bool {
    let (host, port) = if let Some(rest) = h.strip_prefix(b"[") {
        let Some(end) = rest.iter().position(|&b| b == b']') else {
            return false;
        };
        let literal = &rest[..end];
        let ok = !literal.is_empty()
            && literal
                .iter()
                .all(|&b| b.is_ascii_hexdigit() || b == b':' || b == b'.');
        if !ok {
            return false;
        }
        match &rest[end + 1..] {
            [] => return true,
            [b':', port @ ..] => (&b""[..], Some(port)),
            _ => return false,
        }
    } else {
        match h.iter().rposition(|&b| b == b':') {
            Some(i) => (&h[..i], Some(&h[i + 1..])),
            None => (h, None),
        }
    };
    if let Some(port) = port {
        if !port.iter().all(u8::is_ascii_digit) || port.len() > 5 {
            return false;
        }
    }
    if h.starts_with(b"[") {
        return true;
    }
    !host.is_empty()
        && !host.starts_with(b".")
        && !host.windows(2).any(|w| w == b"..")
        && host
            .iter()
            .all(|&b| b.is_ascii_alphanumeric() || b"-._~%!$&'()*+,;=".contains(&b))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(method: &str, target: &str, version: Version, hosts: &[&str]) -> Request<()> {
        let mut b = Request::builder()
            .method(method)
            .uri(target)
            .version(version);
        for h in hosts {
            b = b.header(header::HOST, *h);
        }
        b.body(()).unwrap()
    }

    fn status(r: Result<Request<()>, Refusal>) -> u16 {
        match r {
            Ok(_) => 200,
            Err(refusal) => refusal.status().as_u16(),
        }
    }

    #[test]
    fn methods_follow_nginx_upper_case_underscore_and_dash() {
        let p = Policy::default();
        let v = Version::HTTP_11;
        assert_eq!(status(admit(req("get", "/", v, &["a"]), p)), 400);
        assert_eq!(status(admit(req("G1T", "/", v, &["a"]), p)), 400);
        assert_eq!(status(admit(req("G_T", "/", v, &["a"]), p)), 200);
        assert_eq!(status(admit(req("PURGE", "/", v, &["a"]), p)), 200);
    }

    #[test]
    fn trace_is_405_unless_allowed() {
        let v = Version::HTTP_11;
        assert_eq!(
            status(admit(req("TRACE", "/", v, &["a"]), Policy::default())),
            405
        );
        let allow = Policy { allow_trace: true };
        assert_eq!(status(admit(req("TRACE", "/", v, &["a"]), allow)), 200);
    }

    #[test]
    fn host_rules_match_rfc_9112() {
        let p = Policy::default();
        let v11 = Version::HTTP_11;
        assert_eq!(status(admit(req("GET", "/", v11, &["a", "a"]), p)), 400);
        assert_eq!(status(admit(req("GET", "/", v11, &[]), p)), 400);
        assert_eq!(status(admit(req("GET", "/", v11, &[""]), p)), 400);
        assert_eq!(status(admit(req("GET", "/", v11, &["a/b"]), p)), 400);
        assert_eq!(status(admit(req("GET", "/", v11, &["a..b"]), p)), 400);
        assert_eq!(status(admit(req("GET", "/", v11, &["a:8x"]), p)), 400);
        assert_eq!(
            status(admit(req("GET", "/", Version::HTTP_10, &[]), p)),
            200
        );
        assert_eq!(
            status(admit(req("GET", "/", v11, &["a.example:8080"]), p)),
            200
        );
        assert_eq!(status(admit(req("GET", "/", v11, &["[::1]:80"]), p)), 200);
    }

    #[test]
    fn an_absolute_target_replaces_host() {
        let r = admit(
            req(
                "GET",
                "http://a.example/x",
                Version::HTTP_11,
                &["b.example"],
            ),
            Policy::default(),
        )
        .unwrap();
        assert_eq!(r.headers()[header::HOST], "a.example");
        assert_eq!(r.headers().get_all(header::HOST).iter().count(), 1);
    }

    #[test]
    fn host_validation_takes_ports_and_ip_literals() {
        assert!(valid_host(b"example.com"));
        assert!(valid_host(b"example.com:443"));
        assert!(valid_host(b"[2001:db8::1]"));
        assert!(!valid_host(b"a b"));
        assert!(!valid_host(b"u@a"));
        assert!(!valid_host(b"[::1"));
        assert!(!valid_host(b":80"));
        assert!(!valid_host(b"a:123456"));
    }
}
