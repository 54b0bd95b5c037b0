//! Request headers on the way to a backend: hop-by-hop stripping and the proxy headers.

use std::net::IpAddr;

use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Uri, Version};

use super::Peer;

// === headers ===

/// The hop-by-hop headers of RFC 9110 §7.6.1 plus the legacy ones proxies also drop.
const HOP_BY_HOP: [HeaderName; 9] = [
    header::CONNECTION,
    HeaderName::from_static("keep-alive"),
    HeaderName::from_static("proxy-connection"),
    header::TE,
    header::TRANSFER_ENCODING,
    header::UPGRADE,
    header::PROXY_AUTHENTICATE,
    header::PROXY_AUTHORIZATION,
    header::TRAILER,
];

/// Removes hop-by-hop headers: the fixed list and every header `Connection` names.
///
/// One pass over the names finds which of the fixed list are present (most messages carry at
/// most `Connection`), so only those are looked up and removed.
pub fn strip_hop_by_hop(headers: &mut HeaderMap) {
    let mut present = 0u16;
    for name in headers.keys() {
        if let Some(i) = HOP_BY_HOP.iter().position(|h| h == name) {
            present |= 1 << i;
        }
    }
    if present == 0 {
        // No `Connection` header either, so no header is named by one.
        return;
    }
    let named: Vec<HeaderName> = headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(str::trim)
        .filter(|t| {
            !t.is_empty()
                && !HOP_BY_HOP
                    .iter()
                    .any(|h| h.as_str().eq_ignore_ascii_case(t))
        })
        .filter_map(|t| HeaderName::from_bytes(t.as_bytes()).ok())
        .collect();
    for name in &named {
        headers.remove(name);
    }
    for (i, name) in HOP_BY_HOP.iter().enumerate() {
        if present & (1 << i) != 0 {
            headers.remove(name);
        }
    }
}

/// The protocol a client asks to upgrade to (`Connection: upgrade` plus `Upgrade: x`), HTTP/1.1
/// only.
pub(super) fn upgrade_protocol(version: Version, headers: &HeaderMap) -> Option<HeaderValue> {
    if version != Version::HTTP_11 {
        return None;
    }
    let asks = headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|t| t.trim().eq_ignore_ascii_case("upgrade"));
    if asks {
        headers.get(header::UPGRADE).cloned()
    } else {
        None
    }
}

/// The forwarding headers a request gets: `X-Forwarded-For` (appended, as nginx's
/// `$proxy_add_x_forwarded_for`), `X-Forwarded-Proto`, `X-Forwarded-Host`, and optionally
/// RFC 7239 `Forwarded` (appended). Read from the client's headers before the hop-by-hop ones
/// are stripped, applied after.
pub(super) struct Forwarding {
    xff: Option<HeaderValue>,
    host: Option<HeaderValue>,
    forwarded: Option<HeaderValue>,
}

impl Forwarding {
    pub(super) fn read(
        headers: &HeaderMap,
        uri: &Uri,
        host: Option<&str>,
        peer: &Peer,
        forwarded: bool,
    ) -> Forwarding {
        let client = peer.addr.ip();
        let mut prior = headers
            .get_all(X_FORWARDED_FOR)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .peekable();
        // Without a prior value (the usual case) the connection's own value is shared.
        let xff = if prior.peek().is_none() {
            peer.xff.clone()
        } else {
            let prior: Vec<&str> = prior.collect();
            HeaderValue::from_str(&format!("{}, {client}", prior.join(", "))).ok()
        };
        let original_host = headers.get(header::HOST).cloned().or_else(|| {
            uri.authority()
                .and_then(|a| HeaderValue::from_str(a.as_str()).ok())
        });
        let forwarded = forwarded
            .then(|| forwarded_value(headers, host, client))
            .flatten();
        Forwarding {
            xff,
            host: original_host,
            forwarded,
        }
    }

    pub(super) fn apply(self, headers: &mut HeaderMap) {
        if let Some(v) = self.xff {
            headers.insert(X_FORWARDED_FOR, v);
        }
        headers.insert(X_FORWARDED_PROTO, HeaderValue::from_static("http"));
        match self.host {
            Some(h) => {
                headers.insert(X_FORWARDED_HOST, h);
            }
            None => {
                headers.remove(X_FORWARDED_HOST);
            }
        }
        if let Some(v) = self.forwarded {
            headers.insert(header::FORWARDED, v);
        }
    }
}

const X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
const X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
const X_FORWARDED_HOST: HeaderName = HeaderName::from_static("x-forwarded-host");

/// The RFC 7239 `Forwarded` value: the client's prior elements plus this hop's.
fn forwarded_value(headers: &HeaderMap, host: Option<&str>, client: IpAddr) -> Option<HeaderValue> {
    let node = match client {
        IpAddr::V4(ip) => ip.to_string(),
        IpAddr::V6(ip) => format!("\"[{ip}]\""),
    };
    let mut element = format!("for={node};proto=http");
    if let Some(h) = host.filter(|h| h.bytes().all(|b| b.is_ascii_graphic() && b != b'"')) {
        element.push_str(&format!(";host=\"{h}\""));
    }
    let prior: Vec<&str> = headers
        .get_all(header::FORWARDED)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .collect();
    let value = if prior.is_empty() {
        element
    } else {
        format!("{}, {element}", prior.join(", "))
    };
    HeaderValue::from_str(&value).ok()
}

/// The origin-form URI sent upstream: the client's own path and query, shared rather than copied,
/// when nothing is stripped; else [`rewrite_path`].
pub(super) fn upstream_uri(uri: &Uri, strip: usize) -> Option<Uri> {
    match uri.path_and_query() {
        Some(pq) if strip == 0 && pq.as_str().starts_with('/') => Some(Uri::from(pq.clone())),
        _ => Uri::try_from(rewrite_path(uri, strip)).ok(),
    }
}

/// The path and query sent upstream, with `strip` leading bytes of the path removed.
fn rewrite_path(uri: &Uri, strip: usize) -> String {
    let path = uri.path();
    let rest = path.get(strip..).unwrap_or("");
    let mut out = String::with_capacity(path.len() + 1);
    if !rest.starts_with('/') {
        out.push('/');
    }
    out.push_str(rest);
    if let Some(q) = uri.query() {
        out.push('?');
        out.push_str(q);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn connection_named_headers_are_stripped_with_the_fixed_list() {
        let mut h = HeaderMap::new();
        h.insert(
            header::CONNECTION,
            HeaderValue::from_static("close, x-secret"),
        );
        h.insert("x-secret", HeaderValue::from_static("1"));
        h.insert("keep-alive", HeaderValue::from_static("timeout=5"));
        h.insert("x-kept", HeaderValue::from_static("1"));
        strip_hop_by_hop(&mut h);
        assert_eq!(h.len(), 1);
        assert!(h.contains_key("x-kept"));
    }

    #[test]
    fn stripping_a_prefix_keeps_a_leading_slash_and_the_query() {
        let uri: Uri = "/api/users?id=7".parse().unwrap();
        assert_eq!(rewrite_path(&uri, "/api".len()), "/users?id=7");
        assert_eq!(rewrite_path(&uri, "/api/".len()), "/users?id=7");
        let uri: Uri = "/api".parse().unwrap();
        assert_eq!(rewrite_path(&uri, 4), "/");
    }
}
