//! TOML text → [`Config`], or every error in it with `file:line:column`, like `nginx -t`.
//!
//! The text is parsed with `toml`'s span-preserving [`DeTable`], then walked by hand rather than
//! through serde derive: serde stops at the first error, and an operator fixing a config wants
//! every unknown key, bad address and dangling reference in one run. Each diagnostic names the
//! field by its path (`upstream.app.server[1].weight`) and points at the offending key or value.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::ops::Range;
use std::path::Path;
use std::time::Duration;

use toml::de::{DeTable, DeValue};
use toml::Spanned;

use super::reader::{get, join, Checker, Seen};
use super::*;

/// Reads and checks a config file.
pub fn load(path: &Path) -> Result<Config, Vec<Diagnostic>> {
    let file = path.display().to_string();
    match std::fs::read_to_string(path) {
        Ok(src) => parse(&src, &file),
        Err(e) => Err(vec![Diagnostic {
            file,
            line: 0,
            column: 0,
            field: String::new(),
            message: format!("cannot read: {e}"),
        }]),
    }
}

/// Checks config text; `file` is only used in diagnostics.
pub fn parse(src: &str, file: &str) -> Result<Config, Vec<Diagnostic>> {
    let mut c = Checker {
        src,
        file,
        diags: Vec::new(),
    };
    let (doc, syntax) = DeTable::parse_recoverable(src);
    if !syntax.is_empty() {
        for e in syntax {
            let span = e.span().unwrap_or(0..0);
            let message = e.message().trim().replace('\n', "; ");
            c.error(span, "", message);
        }
        return Err(c.finish());
    }
    let config = c.document(&doc);
    let diags = c.finish();
    if diags.is_empty() {
        Ok(config)
    } else {
        Err(diags)
    }
}

impl Checker<'_> {
    fn document(&mut self, doc: &Spanned<DeTable<'_>>) -> Config {
        let root = doc.get_ref();
        let top = doc.span().start..doc.span().start;
        self.keys(
            root,
            "",
            &[
                "listen",
                "admin",
                "client",
                "shutdown_timeout",
                "forwarded_header",
                "host",
                "upstream",
            ],
        );

        let mut listen = Vec::new();
        let mut listen_seen: HashMap<SocketAddr, Seen> = HashMap::new();
        match self.strings(root, "", "listen") {
            None if get(root, "listen").is_none() => {
                self.error(
                    top.clone(),
                    "listen",
                    "missing: at least one address to listen on is required, e.g. listen = [\"127.0.0.1:8080\"]",
                )
            }
            None => {}
            Some(addrs) if addrs.is_empty() => self.error(
                get(root, "listen").map_or(top.clone(), |v| v.span()),
                "listen",
                "at least one address is required",
            ),
            Some(addrs) => {
                for (i, a) in addrs.iter().enumerate() {
                    let field = format!("listen[{i}]");
                    if let Some(addr) = self.address(a, &field) {
                        // Port 0 asks for any free port, so two of them never clash.
                        let first = listen_seen.get(&addr).filter(|_| addr.port() != 0);
                        if let Some(first) = first {
                            let msg = format!(
                                "duplicate listen address {addr} (first at line {})",
                                first.line
                            );
                            self.error(a.span(), &field, msg);
                        } else {
                            listen_seen.insert(
                                addr,
                                Seen {
                                    line: self.line_of(&a.span()),
                                },
                            );
                            listen.push(addr);
                        }
                    }
                }
            }
        }

        let mut admin = None;
        if let Some((t, _)) = self.table(root, "", "admin") {
            self.keys(t, "admin", &["listen"]);
            if let Some(s) = self.string(t, "admin", "listen") {
                if let Some(addr) = self.address(&s, "admin.listen") {
                    if addr.port() != 0 && listen_seen.contains_key(&addr) {
                        let msg = format!("{addr} is also a proxy listen address");
                        self.error(s.span(), "admin.listen", msg);
                    }
                    admin = Some(addr);
                }
            }
        }

        let mut client_header_timeout = DEFAULT_CLIENT_HEADER_TIMEOUT;
        let mut max_header_size = DEFAULT_MAX_HEADER_SIZE;
        if let Some((t, _)) = self.table(root, "", "client") {
            self.keys(t, "client", &["header_timeout", "max_header_size"]);
            if let Some(d) = self.duration(t, "client", "header_timeout") {
                client_header_timeout = d;
            }
            let (min, max) = (MIN_MAX_HEADER_SIZE as i64, 1 << 20);
            if let Some(n) = self.integer(t, "client", "max_header_size", min, max) {
                max_header_size = *n.get_ref() as usize;
            }
        }
        let shutdown_timeout = self
            .duration(root, "", "shutdown_timeout")
            .unwrap_or(DEFAULT_SHUTDOWN_TIMEOUT);
        let forwarded = self.boolean(root, "", "forwarded_header").unwrap_or(false);

        // Upstreams first, so hosts can check their references.
        let mut upstreams = Vec::new();
        if let Some((t, _)) = self.table(root, "", "upstream") {
            for (name, v) in t.iter() {
                let path = format!("upstream.{}", name.get_ref());
                if !valid_name(name.get_ref()) {
                    let msg = "invalid upstream name (use letters, digits, `-` and `_`)";
                    self.error(name.span(), &path, msg);
                }
                match v.get_ref() {
                    DeValue::Table(u) => {
                        if let Some(up) = self.upstream(name.get_ref(), u, &path, v.span()) {
                            upstreams.push(up);
                        }
                    }
                    other => self.type_error(v.span(), &path, "a table", other),
                }
            }
        }

        let hosts = self.hosts(root, top, &upstreams);

        Config {
            listen,
            admin,
            client_header_timeout,
            max_header_size,
            shutdown_timeout,
            forwarded,
            hosts,
            upstreams,
        }
    }

    fn hosts(
        &mut self,
        root: &DeTable<'_>,
        top: Range<usize>,
        upstreams: &[Upstream],
    ) -> Vec<Host> {
        let Some(array) = self.array(root, "", "host") else {
            if get(root, "host").is_none() {
                self.error(
                    top,
                    "host",
                    "missing: at least one [[host]] is required to route requests",
                );
            }
            return Vec::new();
        };
        let mut hosts = Vec::new();
        let mut names_seen: HashMap<String, Seen> = HashMap::new();
        let mut default_seen: Option<Seen> = None;
        for (i, v) in array.iter().enumerate() {
            let path = format!("host[{i}]");
            let DeValue::Table(t) = v.get_ref() else {
                self.type_error(v.span(), &path, "a table", v.get_ref());
                continue;
            };
            self.keys(t, &path, &["names", "default", "upstream", "route"]);
            let default = self.boolean(t, &path, "default").unwrap_or(false);
            if default {
                if let Some(first) = &default_seen {
                    let msg = format!("a default host is already defined at line {}", first.line);
                    let span = get(t, "default").map_or(v.span(), |d| d.span());
                    self.error(span, &join(&path, "default"), msg);
                } else {
                    default_seen = Some(Seen {
                        line: self.line_of(&get(t, "default").map_or(v.span(), |d| d.span())),
                    });
                }
            }
            let mut names = Vec::new();
            for (j, n) in self
                .strings(t, &path, "names")
                .unwrap_or_default()
                .into_iter()
                .enumerate()
            {
                let field = format!("{path}.names[{j}]");
                let name = n.get_ref().to_ascii_lowercase();
                if !valid_host_name(&name) {
                    let msg = format!(
                        "invalid host name `{}` (expected a name such as example.com or *.example.com)",
                        n.get_ref()
                    );
                    self.error(n.span(), &field, msg);
                    continue;
                }
                if let Some(first) = names_seen.get(&name) {
                    let msg = format!(
                        "duplicate host name `{name}` (first at line {})",
                        first.line
                    );
                    self.error(n.span(), &field, msg);
                    continue;
                }
                names_seen.insert(
                    name.clone(),
                    Seen {
                        line: self.line_of(&n.span()),
                    },
                );
                names.push(name);
            }
            if names.is_empty() && !default && get(t, "names").is_none() {
                self.error(v.span(), &path, "a host needs `names` or `default = true`");
            }
            let upstream = self.reference(t, &path, "upstream", upstreams);
            let mut routes = Vec::new();
            if let Some(rs) = self.array(t, &path, "route") {
                for (j, r) in rs.iter().enumerate() {
                    let rpath = format!("{path}.route[{j}]");
                    let DeValue::Table(rt) = r.get_ref() else {
                        self.type_error(r.span(), &rpath, "a table", r.get_ref());
                        continue;
                    };
                    self.keys(rt, &rpath, &["path", "upstream", "strip_prefix"]);
                    let p = self.string(rt, &rpath, "path");
                    if let Some(p) = &p {
                        if !p.get_ref().starts_with('/') {
                            let msg = format!("path `{}` must start with `/`", p.get_ref());
                            self.error(p.span(), &join(&rpath, "path"), msg);
                        }
                    } else if get(rt, "path").is_none() {
                        self.error(r.span(), &rpath, "missing `path`");
                    }
                    let up = self.reference(rt, &rpath, "upstream", upstreams);
                    if get(rt, "upstream").is_none() {
                        self.error(r.span(), &rpath, "missing `upstream`");
                    }
                    let strip_prefix = self.boolean(rt, &rpath, "strip_prefix").unwrap_or(false);
                    if let (Some(p), Some(up)) = (p, up) {
                        routes.push(Route {
                            path: p.into_inner(),
                            upstream: up,
                            strip_prefix,
                        });
                    }
                }
            }
            if get(t, "upstream").is_none() && get(t, "route").is_none() {
                self.error(
                    v.span(),
                    &path,
                    "a host needs an `upstream` or at least one [[host.route]]",
                );
            }
            hosts.push(Host {
                names,
                default,
                upstream,
                routes,
            });
        }
        hosts
    }

    /// A field naming an upstream, which must be defined.
    fn reference(
        &mut self,
        t: &DeTable<'_>,
        path: &str,
        key: &str,
        upstreams: &[Upstream],
    ) -> Option<String> {
        let s = self.string(t, path, key)?;
        if upstreams.iter().any(|u| &u.name == s.get_ref()) {
            Some(s.into_inner())
        } else {
            let msg = format!("upstream `{}` is not defined", s.get_ref());
            self.error(s.span(), &join(path, key), msg);
            None
        }
    }

    fn upstream(
        &mut self,
        name: &str,
        t: &DeTable<'_>,
        path: &str,
        span: Range<usize>,
    ) -> Option<Upstream> {
        self.keys(
            t,
            path,
            &[
                "strategy",
                "hash",
                "zone",
                "server",
                "health_check",
                "max_fails",
                "fail_timeout",
                "panic_threshold",
                "retries",
                "connect_timeout",
                "response_timeout",
                "read_timeout",
                "sticky",
                "etcd",
                "dns",
            ],
        );
        let strategy_value = self.string(t, path, "strategy");
        // `None` when the name is unknown: that error is enough, the [hash] table is not judged.
        let parsed = match &strategy_value {
            None => Some(StrategyKind::WeightedRoundRobin),
            Some(s) => match s.get_ref().parse::<StrategyKind>() {
                Ok(k) => Some(k),
                Err(_) => {
                    let names: Vec<&str> = StrategyKind::ALL.iter().map(|k| k.name()).collect();
                    let hint = if s.get_ref() == "hash" {
                        " (nginx's `hash $key consistent` is `ketama`; `maglev` is the lookup table)"
                    } else {
                        ""
                    };
                    let msg = format!(
                        "unknown strategy `{}`{hint} (expected one of: {})",
                        s.get_ref(),
                        names.join(", ")
                    );
                    self.error(s.span(), &join(path, "strategy"), msg);
                    None
                }
            },
        };
        let strategy = parsed.unwrap_or(StrategyKind::WeightedRoundRobin);
        let hashing = matches!(strategy, StrategyKind::Ketama | StrategyKind::Maglev);
        let hash = self.hash(t, path);
        match (&hash, &strategy_value) {
            _ if parsed.is_none() => {}
            (None, Some(s)) if hashing && get(t, "hash").is_none() => {
                let msg = format!("strategy `{strategy}` needs a [{path}.hash] table with a `key`");
                self.error(s.span(), &join(path, "strategy"), msg);
            }
            (Some(_), _) if !hashing => {
                let span = get(t, "hash").map_or(span.clone(), |v| v.span());
                self.error(
                    span,
                    &join(path, "hash"),
                    "only used with strategy = \"ketama\" or \"maglev\"",
                );
            }
            _ => {}
        }

        let zone = self.string(t, path, "zone").map(Spanned::into_inner);
        let source = self.source(t, path, name);
        let servers = match source {
            Source::Servers => self.servers(t, path, span.clone()),
            Source::Etcd(_) | Source::Dns(_) => Vec::new(),
        };
        let health_check = self.health_check(t, path);
        let max_fails = self
            .integer(t, path, "max_fails", 0, 1000)
            .map_or(DEFAULT_MAX_FAILS, |n| *n.get_ref() as u32);
        let fail_timeout = self
            .duration(t, path, "fail_timeout")
            .unwrap_or(DEFAULT_FAIL_TIMEOUT);
        let panic_threshold = self
            .integer(t, path, "panic_threshold", 0, 100)
            .map_or(0, |n| *n.get_ref() as u32);
        let retries = self
            .integer(t, path, "retries", 0, 10)
            .map_or(DEFAULT_RETRIES, |n| *n.get_ref() as u32);
        let connect_timeout = self
            .duration(t, path, "connect_timeout")
            .unwrap_or(DEFAULT_CONNECT_TIMEOUT);
        let response_timeout = self
            .duration(t, path, "response_timeout")
            .unwrap_or(DEFAULT_RESPONSE_TIMEOUT);
        let read_timeout = self
            .duration(t, path, "read_timeout")
            .unwrap_or(DEFAULT_READ_TIMEOUT);
        let sticky = self.sticky(t, path);

        Some(Upstream {
            name: name.to_owned(),
            strategy,
            hash,
            zone,
            servers,
            source,
            health_check,
            max_fails,
            fail_timeout,
            panic_threshold,
            retries,
            connect_timeout,
            response_timeout,
            read_timeout,
            sticky,
        })
    }

    fn hash(&mut self, t: &DeTable<'_>, path: &str) -> Option<HashConfig> {
        let (h, span) = self.table(t, path, "hash")?;
        let path = join(path, "hash");
        self.keys(h, &path, &["key", "bounded_load", "method"]);
        if let Some(m) = get(h, "method") {
            // Before the one strategy vocabulary the method lived here, under `strategy = "hash"`.
            let msg = "no longer a field: the strategy names the method (`strategy = \"ketama\"` or `\"maglev\"`)";
            self.error(m.span(), &join(&path, "method"), msg);
        }
        let key = match self.string(h, &path, "key") {
            Some(k) => match parse_hash_key(k.get_ref()) {
                Some(key) => Some(key),
                None => {
                    let msg = format!(
                        "invalid hash key `{}` (expected header:NAME, cookie:NAME, query:NAME, uri or client_ip)",
                        k.get_ref()
                    );
                    self.error(k.span(), &join(&path, "key"), msg);
                    None
                }
            },
            None => {
                if get(h, "key").is_none() {
                    self.error(span, &path, "missing `key`");
                }
                None
            }
        };
        let bounded_load = match self.number(h, &path, "bounded_load") {
            Some(n) if *n.get_ref() > 1.0 && n.get_ref().is_finite() => Some(*n.get_ref()),
            Some(n) => {
                let msg = format!("must be greater than 1.0 (e.g. 1.25), got {}", n.get_ref());
                self.error(n.span(), &join(&path, "bounded_load"), msg);
                None
            }
            None => None,
        };
        Some(HashConfig {
            key: key?,
            bounded_load,
        })
    }

    fn servers(&mut self, t: &DeTable<'_>, path: &str, span: Range<usize>) -> Vec<Server> {
        let Some(array) = self.array(t, path, "server") else {
            if get(t, "server").is_none() {
                self.error(
                    span,
                    path,
                    "an upstream needs at least one [[server]], or an [etcd] or [dns] table",
                );
            }
            return Vec::new();
        };
        if array.is_empty() {
            let span = get(t, "server").map_or(span, |v| v.span());
            self.error(
                span,
                &join(path, "server"),
                "at least one server is required",
            );
        }
        let mut servers = Vec::new();
        let mut seen: HashMap<SocketAddr, Seen> = HashMap::new();
        for (i, v) in array.iter().enumerate() {
            let spath = format!("{path}.server[{i}]");
            let DeValue::Table(s) = v.get_ref() else {
                self.type_error(v.span(), &spath, "a table", v.get_ref());
                continue;
            };
            self.keys(
                s,
                &spath,
                &["address", "weight", "backup", "zone", "down", "max_conns"],
            );
            let field = join(&spath, "address");
            let address = match self.string(s, &spath, "address") {
                Some(a) => match self.address(&a, &field) {
                    Some(addr) => {
                        if let Some(first) = seen.get(&addr) {
                            let msg =
                                format!("duplicate server {addr} (first at line {})", first.line);
                            self.error(a.span(), &field, msg);
                            None
                        } else {
                            seen.insert(
                                addr,
                                Seen {
                                    line: self.line_of(&a.span()),
                                },
                            );
                            Some(addr)
                        }
                    }
                    None => None,
                },
                None => {
                    if get(s, "address").is_none() {
                        self.error(v.span(), &spath, "missing `address`");
                    }
                    None
                }
            };
            let weight = self
                .integer(s, &spath, "weight", 1, i64::from(divvy::MAX_WEIGHT))
                .map_or(1, |n| *n.get_ref() as u32);
            let backup = self.boolean(s, &spath, "backup").unwrap_or(false);
            let zone = self.string(s, &spath, "zone").map(Spanned::into_inner);
            let down = self.boolean(s, &spath, "down").unwrap_or(false);
            let max_conns = self
                .integer(s, &spath, "max_conns", 1, i64::from(u32::MAX))
                .map(|n| *n.get_ref() as u32);
            if let Some(address) = address {
                servers.push(Server {
                    address,
                    weight,
                    backup,
                    zone,
                    down,
                    max_conns,
                });
            }
        }
        servers
    }

    fn health_check(&mut self, t: &DeTable<'_>, path: &str) -> Option<HealthCheck> {
        let (h, _) = self.table(t, path, "health_check")?;
        let path = join(path, "health_check");
        self.keys(h, &path, &["path", "interval", "timeout", "rise", "fall"]);
        let check_path = match self.string(h, &path, "path") {
            Some(p)
                if p.get_ref().starts_with('/')
                    && p.get_ref().bytes().all(|b| b.is_ascii_graphic()) =>
            {
                p.into_inner()
            }
            Some(p) => {
                let msg = format!(
                    "path `{}` must start with `/` and contain only visible ASCII",
                    p.get_ref()
                );
                self.error(p.span(), &join(&path, "path"), msg);
                "/".to_owned()
            }
            None => "/".to_owned(),
        };
        let interval = self
            .duration(h, &path, "interval")
            .unwrap_or(Duration::from_secs(5));
        let timeout = self
            .duration(h, &path, "timeout")
            .unwrap_or(Duration::from_secs(2));
        let rise = self
            .integer(h, &path, "rise", 1, 100)
            .map_or(2, |n| *n.get_ref() as u32);
        let fall = self
            .integer(h, &path, "fall", 1, 100)
            .map_or(3, |n| *n.get_ref() as u32);
        Some(HealthCheck {
            path: check_path,
            interval,
            timeout,
            rise,
            fall,
        })
    }

    fn sticky(&mut self, t: &DeTable<'_>, path: &str) -> Option<Sticky> {
        let (s, _) = self.table(t, path, "sticky")?;
        let path = join(path, "sticky");
        self.keys(s, &path, &["cookie", "path", "max_age"]);
        let cookie = match self.string(s, &path, "cookie") {
            Some(c) if is_token(c.get_ref()) => c.into_inner(),
            Some(c) => {
                let msg = format!("invalid cookie name `{}`", c.get_ref());
                self.error(c.span(), &join(&path, "cookie"), msg);
                DEFAULT_STICKY_COOKIE.to_owned()
            }
            None => DEFAULT_STICKY_COOKIE.to_owned(),
        };
        let cookie_path = match self.string(s, &path, "path") {
            Some(p) if p.get_ref().starts_with('/') && !p.get_ref().contains(';') => p.into_inner(),
            Some(p) => {
                let msg = format!(
                    "path `{}` must start with `/` and contain no `;`",
                    p.get_ref()
                );
                self.error(p.span(), &join(&path, "path"), msg);
                "/".to_owned()
            }
            None => "/".to_owned(),
        };
        let max_age = self
            .duration(s, &path, "max_age")
            .map(|d| d.as_secs().max(1));
        Some(Sticky {
            cookie,
            path: cookie_path,
            max_age,
        })
    }
}

fn parse_hash_key(s: &str) -> Option<HashKey> {
    match s {
        "uri" => return Some(HashKey::Uri),
        "client_ip" => return Some(HashKey::ClientIp),
        _ => {}
    }
    let (kind, name) = s.split_once(':')?;
    if name.is_empty() {
        return None;
    }
    match kind {
        "header" => http::HeaderName::from_bytes(name.as_bytes())
            .ok()
            .map(HashKey::Header),
        "cookie" if is_token(name) => Some(HashKey::Cookie(name.to_owned())),
        "query" => Some(HashKey::Query(name.to_owned())),
        _ => None,
    }
}

fn valid_name(s: &str) -> bool {
    !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

fn valid_host_name(s: &str) -> bool {
    let rest = s.strip_prefix("*.").unwrap_or(s);
    !rest.is_empty()
        && !rest.starts_with('.')
        && !rest.ends_with('.')
        && !rest.contains("..")
        && rest
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.' || b == b'_')
}

/// An RFC 9110 token (cookie names are tokens).
fn is_token(s: &str) -> bool {
    !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_take_a_unit_or_mean_seconds() {
        assert_eq!(parse_duration("250ms"), Some(Duration::from_millis(250)));
        assert_eq!(parse_duration("5"), Some(Duration::from_secs(5)));
        assert_eq!(parse_duration("2m"), Some(Duration::from_secs(120)));
        assert_eq!(parse_duration("5x"), None);
        assert_eq!(parse_duration("s"), None);
    }

    #[test]
    fn wildcards_are_only_a_leading_star_dot() {
        assert!(valid_host_name("*.example.com"));
        assert!(valid_host_name("example.com"));
        assert!(!valid_host_name("a.*.example.com"));
        assert!(!valid_host_name("*example.com"));
    }
}
