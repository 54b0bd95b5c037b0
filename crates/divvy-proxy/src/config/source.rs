//! `[upstream.NAME.etcd]` and `[upstream.NAME.dns]`: an upstream whose servers come from a
//! discovery source instead of its `[[server]]` list.

use std::time::Duration;

use toml::de::DeTable;
use toml::Spanned;

use super::reader::{get, join, Checker};
use super::{DnsQuery, DnsSource, EtcdSource, Source};

/// How long an etcd request waits when `timeout` is not given.
pub(super) const DEFAULT_ETCD_TIMEOUT: Duration = Duration::from_secs(5);

impl Checker<'_> {
    /// Where the upstream's servers come from. Exactly one of `[[server]]`, `[etcd]` and `[dns]`
    /// may be given; with none, the `[[server]]` check reports the missing servers.
    pub(super) fn source(&mut self, t: &DeTable<'_>, path: &str, name: &str) -> Source {
        let given: Vec<&str> = ["server", "etcd", "dns"]
            .into_iter()
            .filter(|k| get(t, k).is_some())
            .collect();
        if given.len() > 1 {
            let second = given[1];
            let span = get(t, second).map_or(0..0, |v| v.span());
            let msg = format!(
                "an upstream takes its servers from one of [[server]], [etcd] or [dns], not from {}",
                given.join(" and ")
            );
            self.error(span, &join(path, second), msg);
        }
        let etcd = self.etcd(t, path, name);
        let dns = self.dns(t, path);
        match (etcd, dns) {
            (Some(e), _) => Source::Etcd(e),
            (None, Some(d)) => Source::Dns(d),
            (None, None) => Source::Servers,
        }
    }

    fn etcd(&mut self, t: &DeTable<'_>, path: &str, name: &str) -> Option<EtcdSource> {
        let (e, span) = self.table(t, path, "etcd")?;
        let path = join(path, "etcd");
        self.keys(e, &path, &["endpoints", "prefix", "timeout"]);
        let endpoints: Vec<String> = match self.strings(e, &path, "endpoints") {
            Some(v) => {
                if v.is_empty() {
                    let span = get(e, "endpoints").map_or(span.clone(), |v| v.span());
                    self.error(
                        span,
                        &join(&path, "endpoints"),
                        "at least one endpoint is required",
                    );
                }
                v.into_iter().map(Spanned::into_inner).collect()
            }
            None => {
                if get(e, "endpoints").is_none() {
                    self.error(
                        span.clone(),
                        &path,
                        "missing `endpoints` (e.g. [\"http://127.0.0.1:2379\"])",
                    );
                }
                Vec::new()
            }
        };
        let prefix = match self.string(e, &path, "prefix") {
            Some(p) if p.get_ref().starts_with('/') && p.get_ref().ends_with('/') => p.into_inner(),
            Some(p) => {
                let msg = format!(
                    "invalid prefix `{}`: it must start and end with `/` (e.g. /divvy/{name}/), so that it matches no longer name",
                    p.get_ref()
                );
                self.error(p.span(), &join(&path, "prefix"), msg);
                String::new()
            }
            None => format!("/divvy/{name}/"),
        };
        let timeout = self
            .duration(e, &path, "timeout")
            .unwrap_or(DEFAULT_ETCD_TIMEOUT);
        Some(EtcdSource {
            endpoints,
            prefix,
            timeout,
        })
    }

    fn dns(&mut self, t: &DeTable<'_>, path: &str) -> Option<DnsSource> {
        let (d, span) = self.table(t, path, "dns")?;
        let path = join(path, "dns");
        self.keys(d, &path, &["name", "port", "srv", "nameservers"]);
        let host = self.string(d, &path, "name");
        let port = self.integer(d, &path, "port", 1, i64::from(u16::MAX));
        let srv = self.string(d, &path, "srv");
        let mut nameservers = Vec::new();
        for (i, s) in self
            .strings(d, &path, "nameservers")
            .unwrap_or_default()
            .iter()
            .enumerate()
        {
            if let Some(addr) = self.address(s, &format!("{path}.nameservers[{i}]")) {
                nameservers.push(addr);
            }
        }
        let query = match (host, srv) {
            (Some(name), None) => match port {
                Some(p) => Some(DnsQuery::Host {
                    name: name.into_inner(),
                    port: *p.get_ref() as u16,
                }),
                None => {
                    if get(d, "port").is_none() {
                        self.error(name.span(), &join(&path, "name"), "`name` needs a `port`");
                    }
                    None
                }
            },
            (None, Some(srv)) => {
                if let Some(p) = port {
                    let msg = "`port` comes from the SRV records: only used with `name`";
                    self.error(p.span(), &join(&path, "port"), msg);
                }
                Some(DnsQuery::Srv {
                    name: srv.into_inner(),
                })
            }
            (Some(_), Some(srv)) => {
                let msg = "either `name` (A/AAAA records) or `srv` (SRV records), not both";
                self.error(srv.span(), &join(&path, "srv"), msg);
                None
            }
            (None, None) => {
                if get(d, "name").is_none() && get(d, "srv").is_none() {
                    let msg = "missing `name` (A/AAAA records, with `port`) or `srv` (SRV records)";
                    self.error(span, &path, msg);
                }
                None
            }
        };
        Some(DnsSource {
            query: query?,
            nameservers,
        })
    }
}
