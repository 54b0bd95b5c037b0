//! Client address hashing, nginx's `ip_hash`, and a full-address variant.

use std::fmt;
use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

use crate::context::Context;
use crate::error::UpdateError;
use crate::hash::{mix64, xxh3};
use crate::set::BackendSet;
use crate::strategy::support::{checked_weights, reduce, Indices, GAMMA};
use crate::strategy::{scan_from, Strategy};
use crate::view::View;

const NAME: &str = "ip_hash";

/// nginx's hash runs modulo this prime, so it only ever takes `MODULUS` values: the strategy
/// tabulates the backend for each of them.
const MODULUS: u32 = 6271;

/// nginx gives up hashing after this many unusable peers (`if (++iphp->tries > 20)`), so at
/// most 21 addresses in the chain are tried.
const MAX_TRIES: u32 = 20;

/// nginx's `ip_hash`: the client address chooses the backend, so a client keeps its backend for
/// as long as that backend is available, with nginx's exact arithmetic.
///
/// **Origin:** nginx `ngx_http_upstream_ip_hash_module.c` (weighted since nginx 1.3.1).
///
/// **Cost:** O(1): 3 (IPv4) or 16 (IPv6) multiply-modulo steps and one load from a 6,271-entry
/// table built when the set is published; each unavailable backend met costs another round.
/// [`full_address`](Self::full_address) costs one XXH3 of 4 or 16 bytes and O(log n) to place
/// the hash among unequal weights (O(1) with equal weights).
///
/// ```
/// use divvy::{Backend, Balancer, Context, strategy::IpHash};
///
/// let lb = Balancer::new(IpHash::new(), ["10.0.0.1:80", "10.0.0.2:80", "10.0.0.3:80"].map(Backend::new))?;
/// let a = lb.pick(&Context::new().client_ip("192.0.2.7".parse()?))?;
/// let b = lb.pick(&Context::new().client_ip("192.0.2.200".parse()?))?;
/// assert_eq!(a.id(), b.id()); // same /24, same backend
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
///
/// # nginx's algorithm, as reproduced
///
/// The hash starts at 89. For each byte of the address (the first three octets of an IPv4
/// address, all sixteen bytes of an IPv6 one), `hash = (hash · 113 + byte) mod 6271`. Then
/// `w = hash mod Σ weight`, and the backends are walked in order, subtracting each weight from
/// `w` until it is smaller than the next weight: that backend is chosen. If it is unavailable
/// (down, failed, at its in-flight limit, or already tried by this request), the bytes are mixed
/// into the *same running hash* again, giving the next candidate; after 20 unusable candidates
/// nginx stops hashing and falls back to round robin. With fewer than two backends there is
/// nothing to hash and the single backend is used when available.
///
/// Consequences worth knowing, all as in nginx:
/// - A whole IPv4 /24 shares a backend (only three octets are hashed). Many clients behind one
///   /24 (a carrier NAT, an office) all land on one backend; [`full_address`](Self::full_address)
///   spreads them.
/// - The hash has only 6,271 values, so when `Σ weight` exceeds 6,271 the backends whose weight
///   range starts beyond it receive no hashed traffic.
/// - An IPv4-mapped IPv6 address (`::ffff:192.0.2.7`, what a dual-stack socket reports for an
///   IPv4 client) is hashed as its sixteen IPv6 bytes, because nginx looks only at the socket's
///   address family. Pass [`IpAddr::to_canonical`] to divvy to hash it as IPv4 instead (which is
///   what nginx does when it listens on a separate IPv4 socket).
/// - When a backend becomes unavailable, only its own clients move; when it returns, they move
///   back.
///
/// Retries: a request that excludes backends it already tried (see [`Context::exclude`]) is
/// hashed from the start again, and the first time the chain meets each excluded backend does
/// not count as an unusable candidate, since in nginx that was where the earlier attempt
/// succeeded. So a retry takes the backend nginx's next attempt would take, with the same budget
/// of 20.
///
/// # Where it differs from nginx
///
/// - **After 20 unusable candidates**, nginx picks by smooth weighted round robin; divvy takes
///   the first available backend after the last candidate, in index order. That keeps even the
///   fallback sticky per client (the same client falls back to the same backend) and needs no
///   shared state.
/// - **No client address** in the [`Context`]: nginx only meets this with non-IP sockets and then
///   hashes three zero bytes, sending every such request to one backend. divvy hashes the
///   context's [`key`](Context::key) with XXH3 if one is set (sticky per key), and otherwise
///   spreads requests over the backends in proportion to weight.
/// - Slow start does not apply: changing a weight in a hash would move clients between backends.
#[derive(Clone, Copy, Debug, Default)]
pub struct IpHash {
    full: bool,
}

impl IpHash {
    /// nginx's `ip_hash`, exactly: IPv4 by its first three octets.
    pub const fn new() -> Self {
        IpHash { full: false }
    }

    /// Hashes the whole address (all four IPv4 octets, all sixteen IPv6 bytes; an IPv4-mapped
    /// IPv6 address as its IPv4 address) with XXH3, and places the hash by weight.
    ///
    /// Benefit: clients of one /24 spread over the backends instead of sharing one, and there is
    /// no 6,271-value ceiling on the hash. Cost: one XXH3 of 4 or 16 bytes and, with unequal
    /// weights, a binary search; and it is not nginx's mapping, so migrating from nginx with it
    /// moves clients once. An unavailable backend's clients are rehashed along a fixed chain
    /// (SplitMix64 steps of the hash), so they too move only while it is out.
    pub const fn full_address() -> Self {
        IpHash { full: true }
    }
}

// === impl Placement ===

/// Where each hash value lands for one backend set.
pub struct Placement {
    /// nginx mode: the backend for each of the 6,271 hash values.
    by_hash: Option<Indices>,
    /// Exclusive prefix ends of the weights: backend `i` owns `[ends[i - 1], ends[i])`.
    ends: Box<[u64]>,
    total: u64,
    /// All weights equal: a hash is placed by one multiply, no search.
    uniform: bool,
    /// Spreads requests that carry neither an address nor a key.
    cursor: AtomicU64,
}

impl Placement {
    fn new(weights: &[u32], nginx: bool) -> Self {
        let ends: Box<[u64]> = weights
            .iter()
            .scan(0u64, |sum, &w| {
                *sum += u64::from(w);
                Some(*sum)
            })
            .collect();
        let total = ends[ends.len() - 1];
        let mut placement = Placement {
            by_hash: None,
            uniform: weights.iter().all(|&w| w == weights[0]),
            ends,
            total,
            cursor: AtomicU64::new(0),
        };
        if nginx {
            // nginx takes `w = hash mod Σ weight` and walks the weights; the walk ends at the
            // backend whose range holds `w`.
            let table = (0..u64::from(MODULUS))
                .map(|h| placement.owner(h % total) as u32)
                .collect();
            placement.by_hash = Some(Indices::new(table, weights.len()));
        }
        placement
    }

    /// The backend whose weight range holds `w < total`.
    fn owner(&self, w: u64) -> usize {
        self.ends.partition_point(|&end| end <= w)
    }

    /// The backend a 64-bit hash lands on, in proportion to weight.
    #[inline]
    fn place(&self, h: u64) -> usize {
        if self.uniform {
            // ⌊h · n·k / 2⁶⁴⌋ / k = ⌊h · n / 2⁶⁴⌋: with equal weights k the search is a multiply.
            reduce(h, self.ends.len())
        } else {
            self.owner(((u128::from(h) * u128::from(self.total)) >> 64) as u64)
        }
    }
}

impl fmt::Debug for Placement {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Placement")
            .field("backends", &self.ends.len())
            .field("total_weight", &self.total)
            .field("nginx", &self.by_hash.is_some())
            .finish_non_exhaustive()
    }
}

// === impl IpHash ===

impl Strategy for IpHash {
    type Prepared = Placement;

    fn name(&self) -> &'static str {
        NAME
    }

    fn prepare(&self, backends: &BackendSet<'_>) -> Result<Placement, UpdateError> {
        let weights = checked_weights(NAME, backends)?;
        Ok(Placement::new(&weights, !self.full))
    }

    fn pick(&self, p: &Placement, ctx: &Context<'_>, view: &View<'_>) -> Option<usize> {
        let n = view.len();
        if n < 2 || n != p.ends.len() {
            // One backend: nginx skips hashing (`peers->number < 2`) and uses it if it can.
            return scan_from(view, 0);
        }
        match (ctx.get_client_ip(), &p.by_hash) {
            (Some(IpAddr::V4(ip)), Some(table)) => nginx_chain(table, &ip.octets()[..3], ctx, view),
            (Some(IpAddr::V6(ip)), Some(table)) => nginx_chain(table, &ip.octets(), ctx, view),
            (Some(IpAddr::V4(ip)), None) => hash_chain(p, xxh3(&ip.octets()), view),
            (Some(IpAddr::V6(ip)), None) => {
                let h = match ip.to_ipv4_mapped() {
                    Some(v4) => xxh3(&v4.octets()),
                    None => xxh3(&ip.octets()),
                };
                hash_chain(p, h, view)
            }
            (None, _) => {
                let h = match ctx.get_key() {
                    Some(key) => xxh3(key),
                    None => mix64(p.cursor.fetch_add(1, Relaxed)),
                };
                hash_chain(p, h, view)
            }
        }
    }
}

/// nginx's chain: mix the address bytes into the running hash, look the candidate up, and go
/// round again while it is unusable, at most 20 unusable candidates.
#[inline]
fn nginx_chain(table: &Indices, addr: &[u8], ctx: &Context<'_>, view: &View<'_>) -> Option<usize> {
    let mut hash = 89u32;
    let mut tries = 0;
    // Bit k: the chain has already met `ctx.get_exclude()[k]` once.
    let mut met: u64 = 0;
    loop {
        for &byte in addr {
            hash = (hash * 113 + u32::from(byte)) % MODULUS;
        }
        let i = table.get(hash as usize);
        if view.is_available(i) {
            return Some(i);
        }
        if !first_meeting_of_excluded(ctx, view, i, &mut met) {
            tries += 1;
            if tries > MAX_TRIES {
                return scan_from(view, i);
            }
        }
    }
}

/// Whether backend `i` is excluded by the request and met by the chain for the first time. In
/// nginx a retry continues the chain where the previous attempt chose its backend, without
/// counting that backend as a failed try; divvy restarts the chain, so the first meeting of
/// each excluded backend is where an earlier attempt succeeded and does not count either.
/// Exclusions past the 64th always count, which bounds the loop.
#[cold]
fn first_meeting_of_excluded(ctx: &Context<'_>, view: &View<'_>, i: usize, met: &mut u64) -> bool {
    let key = view.backend(i).key();
    match ctx.get_exclude().iter().take(64).position(|&k| k == key) {
        Some(k) if *met & (1 << k) == 0 => {
            *met |= 1 << k;
            true
        }
        _ => false,
    }
}

/// A 64-bit hash placed by weight; an unavailable backend's share follows a fixed chain of
/// SplitMix64 steps, so every client of a backend that is out moves, and only they do.
#[inline]
fn hash_chain(p: &Placement, mut h: u64, view: &View<'_>) -> Option<usize> {
    let mut i = p.place(h);
    for _ in 0..MAX_TRIES {
        if view.is_available(i) {
            return Some(i);
        }
        h = mix64(h.wrapping_add(GAMMA));
        i = p.place(h);
    }
    if view.is_available(i) {
        return Some(i);
    }
    scan_from(view, i)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::Backend;
    use crate::strategy::test_util::{index, set};
    use crate::strategy::Strategy;
    use crate::{AdminState, Balancer};
    use proptest::prelude::{any, prop, prop_assert, prop_assert_eq, proptest};
    use std::net::{Ipv4Addr, Ipv6Addr};

    fn pick_for<S: Strategy>(lb: &Balancer<S>, ip: IpAddr) -> Option<usize> {
        lb.pick(&Context::new().client_ip(ip))
            .ok()
            .map(|p| index(&p))
    }

    fn v4(a: u8, b: u8, c: u8, d: u8) -> IpAddr {
        IpAddr::V4(Ipv4Addr::new(a, b, c, d))
    }

    fn down<S: Strategy>(lb: &Balancer<S>, i: usize) {
        lb.set_admin_state(&format!("b{i}"), Some(AdminState::Down))
            .unwrap();
    }

    /// What nginx's `ngx_http_upstream_get_ip_hash_peer` returns, written from its description:
    /// per-request state (running hash, failed tries, tried set) persists across the attempts of
    /// one request. `Err(())` stands for nginx's round-robin fallback.
    struct NginxIpHash<'a> {
        weights: &'a [u32],
        addr: Vec<u8>,
        hash: u64,
        tries: u32,
        tried: Vec<bool>,
    }

    impl<'a> NginxIpHash<'a> {
        fn new(weights: &'a [u32], ip: IpAddr) -> Self {
            let addr = match ip {
                IpAddr::V4(ip) => ip.octets()[..3].to_vec(),
                IpAddr::V6(ip) => ip.octets().to_vec(),
            };
            NginxIpHash {
                weights,
                addr,
                hash: 89,
                tries: 0,
                tried: vec![false; weights.len()],
            }
        }

        fn get(&mut self, up: &[bool]) -> Result<usize, ()> {
            if self.tries > 20 || self.weights.len() < 2 {
                return Err(());
            }
            let total: u64 = self.weights.iter().map(|&w| u64::from(w)).sum();
            let mut hash = self.hash;
            loop {
                for &b in &self.addr {
                    hash = (hash * 113 + u64::from(b)) % 6271;
                }
                let mut w = hash % total;
                let mut p = 0;
                while w >= u64::from(self.weights[p]) {
                    w -= u64::from(self.weights[p]);
                    p += 1;
                }
                if !self.tried[p] && up[p] {
                    self.tried[p] = true;
                    self.hash = hash;
                    return Ok(p);
                }
                self.tries += 1;
                if self.tries > 20 {
                    return Err(());
                }
            }
        }
    }

    fn nginx_pick(weights: &[u32], up: &[bool], ip: IpAddr) -> Result<usize, ()> {
        NginxIpHash::new(weights, ip).get(up)
    }

    #[test]
    fn loopback_lands_where_nginxs_arithmetic_puts_it() {
        // Worked by hand: 89 → (89·113 + 127) mod 6271 = 3913 → (3913·113 + 0) mod 6271 = 3199
        // → (3199·113 + 0) mod 6271 = 4040; 4040 mod 3 = 2, the third backend.
        let lb = Balancer::new(IpHash::new(), set(&[1, 1, 1])).unwrap();
        assert_eq!(pick_for(&lb, v4(127, 0, 0, 1)), Some(2));
        // Weights 1, 2, 3: 4040 mod 6 = 2 falls in the second backend's range [1, 3).
        let lb = Balancer::new(IpHash::new(), set(&[1, 2, 3])).unwrap();
        assert_eq!(pick_for(&lb, v4(127, 0, 0, 1)), Some(1));
    }

    #[test]
    fn golden_vectors_match_the_reference_arithmetic() {
        let weights = [1, 3, 1, 2, 5];
        let lb = Balancer::new(IpHash::new(), set(&weights)).unwrap();
        let up = [true; 5];
        let addrs: Vec<IpAddr> = [
            "127.0.0.1",
            "10.1.2.3",
            "192.168.0.1",
            "203.0.113.77",
            "8.8.8.8",
            "::1",
            "2001:db8::1",
            "fe80::1ff:fe23:4567:890a",
            "::ffff:127.0.0.1",
        ]
        .iter()
        .map(|s| s.parse().unwrap())
        .collect();
        for ip in addrs {
            assert_eq!(
                pick_for(&lb, ip),
                nginx_pick(&weights, &up, ip).ok(),
                "{ip}"
            );
        }
    }

    #[test]
    fn addresses_in_one_slash_24_share_a_backend() {
        let lb = Balancer::new(IpHash::new(), set(&[1, 1, 1, 1, 1])).unwrap();
        for (a, b, c) in [(10, 0, 0), (192, 0, 2), (172, 16, 254), (1, 2, 3)] {
            let first = pick_for(&lb, v4(a, b, c, 0));
            assert!((1..=255).all(|d| pick_for(&lb, v4(a, b, c, d)) == first));
        }
    }

    #[test]
    fn many_slash_24s_spread_in_proportion_to_weight() {
        let weights = [1, 2, 3, 4];
        let lb = Balancer::new(IpHash::new(), set(&weights)).unwrap();
        let mut counts = [0f64; 4];
        for x in 0..100 {
            for y in 0..100 {
                counts[pick_for(&lb, v4(10, x, y, 1)).unwrap()] += 1.0;
            }
        }
        for (i, &w) in weights.iter().enumerate() {
            let want = 10_000.0 * f64::from(w) / 10.0;
            assert!(
                (counts[i] - want).abs() < want * 0.1,
                "{counts:?} for {weights:?}"
            );
        }
    }

    #[test]
    fn an_unavailable_backend_moves_only_its_own_clients() {
        let weights = [2, 1, 1, 3];
        let lb = Balancer::new(IpHash::new(), set(&weights)).unwrap();
        let addrs: Vec<IpAddr> = (0..2_000u32)
            .map(|i| v4(100, (i >> 8) as u8, i as u8, 9))
            .collect();
        let before: Vec<_> = addrs.iter().map(|&ip| pick_for(&lb, ip)).collect();
        down(&lb, 3);
        let mut moved = 0;
        for (k, &ip) in addrs.iter().enumerate() {
            let now = pick_for(&lb, ip);
            if before[k] == Some(3) {
                assert_ne!(now, Some(3));
                assert_eq!(
                    now,
                    nginx_pick(&weights, &[true, true, true, false], ip).ok()
                );
                moved += 1;
            } else {
                assert_eq!(now, before[k]);
            }
        }
        assert!(moved > 0);
        lb.set_admin_state("b3", None).unwrap();
        let after: Vec<_> = addrs.iter().map(|&ip| pick_for(&lb, ip)).collect();
        assert_eq!(after, before);
    }

    #[test]
    fn backends_past_the_hash_range_get_no_hashed_traffic_as_in_nginx() {
        // Σ weight = 10,000 > 6,271: the hash never reaches the last backends' ranges.
        let weights = [100; 100];
        let lb = Balancer::new(IpHash::new(), set(&weights)).unwrap();
        let mut seen = [false; 100];
        for i in 0..20_000u32 {
            seen[pick_for(&lb, v4(11, (i >> 8) as u8, i as u8, 0)).unwrap()] = true;
        }
        assert!(seen[..63].iter().all(|&s| s)); // the 63rd range starts at 6,200 < 6,271
        assert!(seen[63..].iter().all(|&s| !s));
    }

    #[test]
    fn an_ipv4_mapped_address_is_hashed_as_sixteen_bytes_like_nginx() {
        let weights = [1; 7];
        let lb = Balancer::new(IpHash::new(), set(&weights)).unwrap();
        let mapped: IpAddr = "::ffff:192.0.2.7".parse().unwrap();
        let want = nginx_pick(&weights, &[true; 7], mapped).ok();
        assert_eq!(pick_for(&lb, mapped), want);
        // The canonical form is hashed as IPv4 (and here lands elsewhere).
        let canonical = mapped.to_canonical();
        assert_eq!(
            pick_for(&lb, canonical),
            nginx_pick(&weights, &[true; 7], canonical).ok()
        );
        assert_ne!(pick_for(&lb, canonical), want);
    }

    #[test]
    fn a_single_backend_is_used_without_hashing_and_none_when_down() {
        let lb = Balancer::new(IpHash::new(), set(&[3])).unwrap();
        assert_eq!(pick_for(&lb, v4(1, 2, 3, 4)), Some(0));
        down(&lb, 0);
        assert_eq!(pick_for(&lb, v4(1, 2, 3, 4)), None);
    }

    #[test]
    fn a_retry_that_excludes_tried_backends_takes_nginxs_next_attempt() {
        let weights = [1, 2, 1, 1, 3];
        let up = [true, false, true, true, true];
        let lb = Balancer::new(IpHash::new(), set(&weights)).unwrap();
        down(&lb, 1);
        for i in 0..300u32 {
            let ip = v4(172, 20, (i >> 2) as u8, (i * 7) as u8);
            let mut model = NginxIpHash::new(&weights, ip);
            let mut excluded: Vec<u64> = Vec::new();
            for _attempt in 0..4 {
                let want = model.get(&up);
                let got = lb
                    .pick(&Context::new().client_ip(ip).exclude(&excluded))
                    .ok()
                    .map(|p| index(&p));
                match want {
                    Ok(want) => assert_eq!(got, Some(want), "{ip}"),
                    Err(()) => break, // nginx falls back to round robin; checked elsewhere
                }
                excluded.push(Backend::new(format!("b{}", got.unwrap())).key());
            }
        }
    }

    #[test]
    fn full_address_places_the_xxh3_of_the_octets() {
        let lb = Balancer::new(IpHash::full_address(), set(&[1; 5])).unwrap();
        for ip in ["127.0.0.1", "198.51.100.23", "2001:db8::7"] {
            let ip: IpAddr = ip.parse().unwrap();
            let bytes = match ip {
                IpAddr::V4(v) => v.octets().to_vec(),
                IpAddr::V6(v) => v.octets().to_vec(),
            };
            // Equal weights: backend ⌊h · n / 2⁶⁴⌋.
            let want = ((u128::from(xxh3(&bytes)) * 5) >> 64) as usize;
            assert_eq!(pick_for(&lb, ip), Some(want), "{ip}");
        }
    }

    #[test]
    fn full_address_spreads_one_slash_24_and_treats_mapped_as_ipv4() {
        let lb = Balancer::new(IpHash::full_address(), set(&[1, 2, 1, 3])).unwrap();
        let mut seen = [false; 4];
        for d in 0..=255 {
            seen[pick_for(&lb, v4(192, 0, 2, d)).unwrap()] = true;
        }
        assert_eq!(seen, [true; 4]);
        for d in 0..=255 {
            let ip = Ipv4Addr::new(198, 51, 100, d);
            assert_eq!(
                pick_for(&lb, IpAddr::V6(ip.to_ipv6_mapped())),
                pick_for(&lb, IpAddr::V4(ip))
            );
        }
    }

    #[test]
    fn without_an_address_a_key_is_sticky_and_no_key_spreads_by_weight() {
        let lb = Balancer::new(IpHash::new(), set(&[1, 3])).unwrap();
        let key = |k: &str| index(&lb.pick(&Context::new().key(k.as_bytes())).unwrap());
        assert!((0..20).all(|_| key("user-42") == key("user-42")));
        let mut counts = [0f64; 2];
        for _ in 0..4_000 {
            counts[index(&lb.pick(&Context::new()).unwrap())] += 1.0;
        }
        assert!((counts[1] / counts[0] - 3.0).abs() < 0.3, "{counts:?}");
    }

    proptest! {
        #[test]
        fn picks_match_nginx_and_never_an_unavailable_backend(
            weights in prop::collection::vec(1u32..=100, 1..=20),
            up in prop::collection::vec(any::<bool>(), 20),
            v6 in any::<bool>(),
            raw in any::<[u8; 16]>(),
            full in any::<bool>(),
        ) {
            let strategy = if full { IpHash::full_address() } else { IpHash::new() };
            let lb = Balancer::new(strategy, set(&weights)).unwrap();
            for i in (0..weights.len()).filter(|&i| !up[i]) {
                down(&lb, i);
            }
            let ip = if v6 {
                IpAddr::V6(Ipv6Addr::from(raw))
            } else {
                v4(raw[0], raw[1], raw[2], raw[3])
            };
            let got = pick_for(&lb, ip);
            let any_up = (0..weights.len()).any(|i| up[i]);
            prop_assert_eq!(got.is_some(), any_up);
            if let Some(i) = got {
                prop_assert!(up[i]);
                if !full && weights.len() >= 2 {
                    if let Ok(want) = nginx_pick(&weights, &up, ip) {
                        prop_assert_eq!(i, want);
                    }
                }
            }
        }
    }
}
