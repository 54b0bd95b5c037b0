//! The routing table: host and path → upstream, rebuilt on reload and swapped atomically.
//!
//! Host matching follows nginx's `server_name` order: an exact name first, then the longest
//! matching `*.suffix` wildcard, then the default host (the one marked `default = true`, else the
//! first host, as nginx's `default_server`). Inside a host the longest matching path prefix wins.

use std::borrow::Cow;
use std::collections::HashMap;
use std::sync::Arc;

use crate::config::{Config, Host};
use crate::upstream::Upstream;

/// Everything a request needs to find its upstream. Immutable once built.
pub struct Table {
    exact: HashMap<String, usize>,
    /// `(".example.com", host)`, longest suffix first.
    wildcards: Vec<(String, usize)>,
    default: usize,
    hosts: Vec<VirtualHost>,
    /// Every upstream by name, in file order.
    pub upstreams: Vec<Arc<Upstream>>,
}

impl std::fmt::Debug for Table {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Table")
            .field("exact", &self.exact)
            .field("wildcards", &self.wildcards)
            .field("default", &self.default)
            .field("upstreams", &self.upstreams)
            .finish_non_exhaustive()
    }
}

struct VirtualHost {
    upstream: Option<Arc<Upstream>>,
    /// Longest prefix first.
    routes: Vec<PathRoute>,
}

struct PathRoute {
    prefix: String,
    strip: bool,
    upstream: Arc<Upstream>,
}

/// Where a request goes.
#[derive(Debug)]
pub struct Routed<'a> {
    /// The upstream.
    pub upstream: &'a Arc<Upstream>,
    /// How many leading bytes of the path to remove before forwarding.
    pub strip: usize,
}

impl Table {
    /// Builds the table for `config`, taking each upstream from `upstreams` by name.
    pub fn new(config: &Config, upstreams: Vec<Arc<Upstream>>) -> Table {
        let by_name: HashMap<&str, &Arc<Upstream>> =
            upstreams.iter().map(|u| (u.name(), u)).collect();
        let mut exact = HashMap::new();
        let mut wildcards = Vec::new();
        let mut hosts = Vec::with_capacity(config.hosts.len());
        let mut default = 0;
        for (i, host) in config.hosts.iter().enumerate() {
            if host.default {
                default = i;
            }
            for name in &host.names {
                match name.strip_prefix('*') {
                    Some(suffix) => wildcards.push((suffix.to_owned(), i)),
                    None => {
                        exact.insert(name.clone(), i);
                    }
                }
            }
            hosts.push(virtual_host(host, &by_name));
        }
        wildcards.sort_by_key(|(suffix, _)| std::cmp::Reverse(suffix.len()));
        Table {
            exact,
            wildcards,
            default,
            hosts,
            upstreams,
        }
    }

    /// The upstream for a request to `host` (lower case, without port) and `path`.
    pub fn route(&self, host: &str, path: &str) -> Option<Routed<'_>> {
        let i = self
            .exact
            .get(host)
            .copied()
            .or_else(|| {
                self.wildcards
                    .iter()
                    .find(|(suffix, _)| {
                        host.len() > suffix.len() && host.ends_with(suffix.as_str())
                    })
                    .map(|(_, i)| *i)
            })
            .unwrap_or(self.default);
        let vhost = self.hosts.get(i)?;
        for r in &vhost.routes {
            if path.starts_with(&r.prefix) {
                let strip = if r.strip { r.prefix.len() } else { 0 };
                return Some(Routed {
                    upstream: &r.upstream,
                    strip,
                });
            }
        }
        vhost
            .upstream
            .as_ref()
            .map(|upstream| Routed { upstream, strip: 0 })
    }

    /// The upstream called `name`.
    pub fn upstream(&self, name: &str) -> Option<&Arc<Upstream>> {
        self.upstreams.iter().find(|u| u.name() == name)
    }
}

fn virtual_host(host: &Host, by_name: &HashMap<&str, &Arc<Upstream>>) -> VirtualHost {
    // `check` guarantees every reference resolves; a miss would only drop the route.
    let mut routes: Vec<PathRoute> = host
        .routes
        .iter()
        .filter_map(|r| {
            Some(PathRoute {
                prefix: r.path.clone(),
                strip: r.strip_prefix,
                upstream: (*by_name.get(r.upstream.as_str())?).clone(),
            })
        })
        .collect();
    routes.sort_by_key(|r| std::cmp::Reverse(r.prefix.len()));
    VirtualHost {
        upstream: host
            .upstream
            .as_deref()
            .and_then(|n| by_name.get(n).map(|u| (*u).clone())),
        routes,
    }
}

/// The host a request names: the URI's authority (HTTP/2, absolute form) or else the `Host`
/// header, lower case, without port. Borrowed from the request when it is already in that form.
pub fn request_host<'a>(
    authority: Option<&'a http::uri::Authority>,
    host_header: Option<&'a http::HeaderValue>,
) -> Option<Cow<'a, str>> {
    let raw = match authority {
        Some(a) => a.host(),
        None => strip_port(host_header?.to_str().ok()?),
    };
    let raw = raw.trim_end_matches('.');
    if raw.bytes().any(|b| b.is_ascii_uppercase()) {
        Some(Cow::Owned(raw.to_ascii_lowercase()))
    } else {
        Some(Cow::Borrowed(raw))
    }
}

fn strip_port(h: &str) -> &str {
    if let Some(rest) = h.strip_prefix('[') {
        // [v6]:port
        return rest.split(']').next().unwrap_or(rest);
    }
    match h.rsplit_once(':') {
        Some((host, port)) if port.bytes().all(|b| b.is_ascii_digit()) => host,
        _ => h,
    }
}
