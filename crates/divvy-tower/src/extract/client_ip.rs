//! The client's address: from the connection, or from `X-Forwarded-For` behind trusted proxies.

use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::str::FromStr;
use std::sync::Arc;

use http::header::HeaderName;

use super::{Extract, RequestKey};

/// The address of the peer that opened the connection, as a request extension.
///
/// A server inserts it into every request it accepts; [`ClientIp`] reads it (and, failing that,
/// a plain [`SocketAddr`] extension):
///
/// ```
/// use divvy_tower::extract::ClientAddr;
///
/// let peer: std::net::SocketAddr = "192.0.2.7:50123".parse().unwrap();
/// let mut req = http::Request::new(());
/// req.extensions_mut().insert(ClientAddr(peer));
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct ClientAddr(pub SocketAddr);

/// The client address of a request, for IP hashing.
///
/// By default it is the connection's peer, from a [`ClientAddr`] (or [`SocketAddr`]) request
/// extension; `X-Forwarded-For` is ignored, because any client can write it. Behind proxies,
/// [`trust`](Self::trust) the proxies' networks: when the peer is trusted, the header is read
/// from right to left, skipping trusted addresses, and the first untrusted address is the client
/// (nginx's `set_real_ip_from` with `real_ip_recursive on`). If every address is trusted, the
/// left-most is used; an entry that is not an address stops the walk at the last good one.
/// IPv4-mapped IPv6 addresses (`::ffff:192.0.2.7`, from dual-stack sockets) count as IPv4.
#[derive(Clone, Debug)]
pub struct ClientIp {
    trusted: Option<Arc<[IpNet]>>,
    header: HeaderName,
}

impl ClientIp {
    /// The connection's peer; no header is trusted.
    pub const fn new() -> Self {
        ClientIp {
            trusted: None,
            header: HeaderName::from_static("x-forwarded-for"),
        }
    }

    /// Trusts the proxies in `networks` to append the address they saw to the forwarding
    /// header. Default is to trust no one.
    #[must_use]
    pub fn trust(mut self, networks: impl IntoIterator<Item = IpNet>) -> Self {
        let nets: Arc<[IpNet]> = networks.into_iter().collect();
        self.trusted = (!nets.is_empty()).then_some(nets);
        self
    }

    /// Reads the forwarding chain from `header` instead. Default is `X-Forwarded-For`.
    #[must_use]
    pub fn header(mut self, header: HeaderName) -> Self {
        self.header = header;
        self
    }

    /// The client address of `request`, if the server recorded the peer.
    pub fn client_ip<B>(&self, request: &http::Request<B>) -> Option<IpAddr> {
        let ext = request.extensions();
        let peer = ext
            .get::<ClientAddr>()
            .map(|a| a.0)
            .or_else(|| ext.get::<SocketAddr>().copied())?
            .ip()
            .to_canonical();
        match &self.trusted {
            Some(trusted) => Some(forwarded_client(
                peer,
                trusted,
                request.headers().get_all(&self.header).iter().rev(),
            )),
            None => Some(peer),
        }
    }
}

impl Default for ClientIp {
    fn default() -> Self {
        ClientIp::new()
    }
}

impl<B> Extract<http::Request<B>> for ClientIp {
    #[inline]
    fn extract<'r>(&'r self, request: &'r http::Request<B>) -> RequestKey<'r> {
        match self.client_ip(request) {
            Some(ip) => RequestKey::new().client_ip(ip),
            None => RequestKey::new(),
        }
    }
}

/// Walks the forwarding chain right to left from a trusted `peer`; `values` are the header's
/// values, last first.
fn forwarded_client<'a>(
    peer: IpAddr,
    trusted: &[IpNet],
    values: impl Iterator<Item = &'a http::HeaderValue>,
) -> IpAddr {
    let is_trusted = |ip: IpAddr| trusted.iter().any(|net| net.contains(ip));
    if !is_trusted(peer) {
        return peer;
    }
    let mut last = peer;
    for value in values {
        let Ok(value) = value.to_str() else {
            return last;
        };
        for entry in value.rsplit(',') {
            match parse_forwarded(entry.trim()) {
                Some(ip) if !is_trusted(ip) => return ip,
                Some(ip) => last = ip,
                None => return last,
            }
        }
    }
    last
}

/// An address as proxies write it: `192.0.2.7`, `2001:db8::1`, `192.0.2.7:8080` or
/// `[2001:db8::1]:8080`.
fn parse_forwarded(entry: &str) -> Option<IpAddr> {
    entry
        .parse::<IpAddr>()
        .or_else(|_| entry.parse::<SocketAddr>().map(|s| s.ip()))
        .ok()
        .map(|ip| ip.to_canonical())
}

/// An IP network in CIDR notation (`10.0.0.0/8`, `2001:db8::/32`); a bare address is a
/// single-host network.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct IpNet {
    addr: IpAddr,
    prefix: u8,
}

impl IpNet {
    /// The network of `addr` with `prefix` leading bits; host bits are cleared. Fails when the
    /// prefix is longer than the address (32 for IPv4, 128 for IPv6). An IPv4-mapped IPv6
    /// network (`::ffff:10.0.0.0/104`) becomes the IPv4 network (`10.0.0.0/8`).
    pub fn new(addr: IpAddr, prefix: u8) -> Result<Self, IpNetParseError> {
        let max = if addr.is_ipv4() { 32 } else { 128 };
        if prefix > max {
            return Err(IpNetParseError::Prefix { prefix, max });
        }
        let (addr, prefix) = match addr {
            IpAddr::V6(a) if prefix >= 96 => match a.to_ipv4_mapped() {
                Some(v4) => (IpAddr::V4(v4), prefix - 96),
                None => (addr, prefix),
            },
            _ => (addr, prefix),
        };
        let addr = match addr {
            IpAddr::V4(a) => IpAddr::V4((u32::from(a) & mask32(prefix)).into()),
            IpAddr::V6(a) => IpAddr::V6((u128::from(a) & mask128(prefix)).into()),
        };
        Ok(IpNet { addr, prefix })
    }

    /// The network address.
    pub const fn addr(&self) -> IpAddr {
        self.addr
    }

    /// The prefix length.
    pub const fn prefix(&self) -> u8 {
        self.prefix
    }

    /// Whether `ip` is in this network. IPv4-mapped IPv6 addresses match IPv4 networks.
    pub fn contains(&self, ip: IpAddr) -> bool {
        match (self.addr, ip.to_canonical()) {
            (IpAddr::V4(net), IpAddr::V4(ip)) => {
                u32::from(ip) & mask32(self.prefix) == u32::from(net)
            }
            (IpAddr::V6(net), IpAddr::V6(ip)) => {
                u128::from(ip) & mask128(self.prefix) == u128::from(net)
            }
            _ => false,
        }
    }
}

fn mask32(prefix: u8) -> u32 {
    u32::MAX.checked_shl(32 - u32::from(prefix)).unwrap_or(0)
}

fn mask128(prefix: u8) -> u128 {
    u128::MAX.checked_shl(128 - u32::from(prefix)).unwrap_or(0)
}

impl FromStr for IpNet {
    type Err = IpNetParseError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let (addr, prefix) = match s.split_once('/') {
            Some((addr, prefix)) => (addr, Some(prefix)),
            None => (s, None),
        };
        let addr: IpAddr = addr.parse().map_err(|_| IpNetParseError::Address {
            input: s.to_owned(),
        })?;
        let prefix = match prefix {
            Some(p) => p.parse::<u8>().map_err(|_| IpNetParseError::Address {
                input: s.to_owned(),
            })?,
            None if addr.is_ipv4() => 32,
            None => 128,
        };
        IpNet::new(addr, prefix)
    }
}

impl fmt::Display for IpNet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr, self.prefix)
    }
}

/// Why a string is not an [`IpNet`].
#[non_exhaustive]
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum IpNetParseError {
    /// Not an address, or an address followed by something other than `/prefix`.
    #[error("`{input}` is not an IP network (expected `192.0.2.0/24` or `2001:db8::/32`)")]
    Address {
        /// The text given.
        input: String,
    },
    /// The prefix is longer than the address.
    #[error("prefix /{prefix} is longer than the address ({max} bits)")]
    Prefix {
        /// The prefix given.
        prefix: u8,
        /// The address length in bits.
        max: u8,
    },
}

#[cfg(test)]
mod tests {
    use super::*;

    fn net(s: &str) -> IpNet {
        s.parse().unwrap()
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    fn request(peer: &str, xff: &[&str]) -> http::Request<()> {
        let mut b = http::Request::builder();
        for v in xff {
            b = b.header("x-forwarded-for", *v);
        }
        let mut req = b.body(()).unwrap();
        req.extensions_mut()
            .insert(ClientAddr(peer.parse().unwrap()));
        req
    }

    #[test]
    fn networks_parse_clear_host_bits_and_match_their_members() {
        let n = net("10.1.2.3/8");
        assert_eq!(n.to_string(), "10.0.0.0/8");
        assert!(n.contains(ip("10.255.0.1")));
        assert!(!n.contains(ip("11.0.0.1")));
        assert_eq!(net("::ffff:10.0.0.0/104"), net("10.0.0.0/8"));
        assert!(net("::ffff:10.0.0.0/104").contains(ip("10.9.9.9")));
        assert!(n.contains(ip("::ffff:10.9.9.9")));
        assert!(net("2001:db8::/32").contains(ip("2001:db8:ffff::1")));
        assert!(!net("2001:db8::/32").contains(ip("10.0.0.1")));
        assert!(net("0.0.0.0/0").contains(ip("203.0.113.1")));
        assert_eq!(net("192.0.2.7").prefix(), 32);
    }

    #[test]
    fn bad_networks_are_typed_errors() {
        assert_eq!(
            "10.0.0.0/33".parse::<IpNet>(),
            Err(IpNetParseError::Prefix {
                prefix: 33,
                max: 32
            })
        );
        assert!(matches!(
            "ten/8".parse::<IpNet>(),
            Err(IpNetParseError::Address { .. })
        ));
        assert!(matches!(
            "10.0.0.0/x".parse::<IpNet>(),
            Err(IpNetParseError::Address { .. })
        ));
    }

    #[test]
    fn forwarded_for_is_ignored_unless_proxies_are_trusted() {
        let req = request("198.51.100.1:4000", &["203.0.113.9"]);
        assert_eq!(ClientIp::new().client_ip(&req), Some(ip("198.51.100.1")));
    }

    #[test]
    fn an_untrusted_peer_is_the_client_whatever_the_header_says() {
        let req = request("198.51.100.1:4000", &["203.0.113.9"]);
        let x = ClientIp::new().trust([net("10.0.0.0/8")]);
        assert_eq!(x.client_ip(&req), Some(ip("198.51.100.1")));
    }

    #[test]
    fn the_right_most_untrusted_address_is_the_client() {
        // The client forged 1.1.1.1; its real address 203.0.113.9 was appended by a trusted hop.
        let req = request("10.0.0.2:4000", &["1.1.1.1, 203.0.113.9", "10.0.0.1"]);
        let x = ClientIp::new().trust([net("10.0.0.0/8")]);
        assert_eq!(x.client_ip(&req), Some(ip("203.0.113.9")));
    }

    #[test]
    fn when_every_hop_is_trusted_the_left_most_is_used() {
        let req = request("10.0.0.2:4000", &["10.0.0.7, 10.0.0.1"]);
        let x = ClientIp::new().trust([net("10.0.0.0/8")]);
        assert_eq!(x.client_ip(&req), Some(ip("10.0.0.7")));
    }

    #[test]
    fn garbage_in_the_chain_stops_at_the_last_trusted_hop() {
        let req = request("10.0.0.2:4000", &["203.0.113.9, unknown, 10.0.0.1"]);
        let x = ClientIp::new().trust([net("10.0.0.0/8")]);
        assert_eq!(x.client_ip(&req), Some(ip("10.0.0.1")));
    }

    #[test]
    fn ports_and_brackets_and_mapped_addresses_are_understood() {
        let x = ClientIp::new().trust([net("10.0.0.0/8")]);
        let req = request("[::ffff:10.0.0.2]:4000", &["[2001:db8::5]:9999"]);
        assert_eq!(x.client_ip(&req), Some(ip("2001:db8::5")));
        let req = request("10.0.0.2:4000", &["203.0.113.9:1234"]);
        assert_eq!(x.client_ip(&req), Some(ip("203.0.113.9")));
    }

    #[test]
    fn a_plain_socket_addr_extension_is_accepted_and_none_means_unknown() {
        let mut req = http::Request::new(());
        assert_eq!(ClientIp::new().client_ip(&req), None);
        req.extensions_mut()
            .insert("192.0.2.1:1".parse::<SocketAddr>().unwrap());
        assert_eq!(ClientIp::new().client_ip(&req), Some(ip("192.0.2.1")));
    }

    mod prop {
        use super::*;
        use proptest::prelude::*;

        /// (address, trusted?) — trusted hops are in 10/8, clients in 203.0.113/24.
        fn hop() -> impl Strategy<Value = (IpAddr, bool)> {
            (any::<bool>(), any::<u8>()).prop_map(|(trusted, last)| {
                let ip = if trusted {
                    IpAddr::from([10, 0, 0, last])
                } else {
                    IpAddr::from([203, 0, 113, last])
                };
                (ip, trusted)
            })
        }

        proptest! {
            #[test]
            fn the_client_is_the_right_most_untrusted_hop(
                peer in hop(),
                chain in proptest::collection::vec(hop(), 0..8),
                splits in proptest::collection::vec(any::<bool>(), 8),
            ) {
                // The header, split over several header lines at arbitrary points.
                let mut values = vec![String::new()];
                for (i, (ip, _)) in chain.iter().enumerate() {
                    let last = values.last_mut().unwrap();
                    if !last.is_empty() {
                        last.push_str(", ");
                    }
                    last.push_str(&ip.to_string());
                    if splits[i] && i + 1 < chain.len() {
                        values.push(String::new());
                    }
                }
                let values: Vec<&str> = if chain.is_empty() {
                    vec![]
                } else {
                    values.iter().map(String::as_str).collect()
                };
                let req = request(&format!("{}:1000", peer.0), &values);
                let x = ClientIp::new().trust([net("10.0.0.0/8")]);

                // The model: nginx's real_ip_recursive, written as a plain search.
                let expected = if !peer.1 {
                    peer.0
                } else {
                    chain
                        .iter()
                        .rev()
                        .find(|(_, trusted)| !trusted)
                        .or(chain.first())
                        .map_or(peer.0, |(ip, _)| *ip)
                };
                prop_assert_eq!(x.client_ip(&req), Some(expected));
            }

            #[test]
            fn a_network_contains_exactly_the_addresses_sharing_its_prefix(
                a in any::<u32>(),
                b in any::<u32>(),
                prefix in 0u8..=32,
            ) {
                let n = IpNet::new(IpAddr::from(a.to_be_bytes()), prefix).unwrap();
                let same_prefix = prefix == 0 || (a ^ b) >> (32 - u32::from(prefix)) == 0;
                prop_assert_eq!(n.contains(IpAddr::from(b.to_be_bytes())), same_prefix);
            }

            #[test]
            fn parsing_a_network_never_panics(s in "\\PC{0,40}") {
                let _ = s.parse::<IpNet>();
            }
        }
    }
}
