//! nginx's `hash $key consistent`: a ketama ring with nginx's exact point placement.

use std::fmt;
use std::sync::atomic::{AtomicUsize, Ordering::Relaxed};

use crate::backend::Backend;
use crate::context::Context;
use crate::error::UpdateError;
use crate::hash::crc32;
use crate::set::BackendSet;
use crate::strategy::bounded::{scan_with_room, LoadFactor, Room};
use crate::strategy::Strategy;
use crate::view::View;

const NAME: &str = "ketama";

/// Ring points per unit of weight (nginx: `peer->weight * 160`).
const NGINX_POINTS_PER_WEIGHT: u32 = 160;

/// How many points past the key's own one a pick may look at before falling back, as nginx:
/// `get_chash_peer` gives up when `++tries > 20`, so 21 points are tried in all.
const MAX_TRIES: usize = 20;

/// The largest ring divvy builds (8 bytes a point: 128 MiB). nginx has no limit; a larger ring
/// only costs memory and preparation time without spreading keys better. A set whose
/// `160 × Σ weight` exceeds it gets fewer points per unit of weight (`Σ weight > 104 857`).
const MAX_POINTS: u64 = 1 << 24;

/// The bucket index has at most `2^22 + 1` entries (16 MiB, for a ring of 2²⁴ points).
const MAX_INDEX_BITS: u32 = 22;

/// The bucket index aims at `2^AVERAGE_BUCKET_BITS` points per bucket: 4 points of 8 bytes, so
/// that a lookup reads one index entry and, most of the time, one cache line of points.
const AVERAGE_BUCKET_BITS: u32 = 2;

/// Consistent hashing on a ketama ring, with the points placed exactly as nginx's
/// `hash $key consistent` places them, so a key reaches the same server through divvy as through
/// nginx and a migration moves no cache key and no session.
///
/// Origin: Cache::Memcached::Fast's ketama ring as nginx's `ngx_http_upstream_hash_module`
/// builds it; optional bounded loads after Mirrokni, Thorup and Zadimoghaddam (2017).
///
/// Cost: O(1) expected per pick at any size: the top bits of the key's hash index a bucket table
/// that narrows the search to about 4 points (one cache line, as the point and its owner are
/// stored side by side), where a binary search finishes; the ring itself is never searched
/// whole. So a pick costs about the same at 10,000 backends as at 16, where a plain binary search
/// over the 4-million-point ring took 4.9 times as long. Preparing costs O(points · log points)
/// for `160 × Σ weight` points, plus one byte of index per point.
///
/// # Placement (nginx's `ngx_http_upstream_init_chash`)
///
/// A backend's identity (`"10.0.0.1:8080"`, nginx's `server` as written) is split into host and
/// port at the last `:` when everything after it is digits; an identity starting with `unix:`
/// (any case) is all host, without that prefix. Its points are `160 × weight` CRC-32s: the first of
/// `host \0 port 00 00 00 00`, each next one of `host \0 port` followed by the previous point in
/// little-endian bytes. Points are sorted and, where two share a hash, the first in configuration
/// order keeps it.
///
/// # Pick (nginx's `ngx_http_upstream_get_chash_peer`)
///
/// The key's CRC-32 selects the first point at or after it, wrapping. When that point's backend is
/// unavailable the next point is tried, up to 21 points in all; past that, and for a request
/// without a key (or with an empty one), the pick falls back to round robin, as nginx does.
///
/// Differences from nginx, none of which moves a key while its backend is available:
/// - the round-robin fallback steps a shared cursor around the ring (each backend in turn in
///   proportion to its points, so to its weight) instead of nginx's smooth weighted sequence, so
///   that it needs no lock;
/// - a retry is a new pick that excludes the backends already tried, with its own budget of 21
///   points; nginx continues one walk and one budget across the retries of a request, which
///   usually ends at the same backend;
/// - nginx balances between the addresses a `server` name resolves to; a divvy backend is one
///   identity;
/// - rings above 2²⁴ points (`Σ weight > 104 857`, e.g. more than 41,943 backends of weight
///   2.5 on average) would cost more than 128 MiB; such a set gets `⌊2²⁴ / Σ weight⌋` points per
///   unit of weight instead of 160 (or of the configured [`points_per_weight`](Self::points_per_weight); a backend's points are the first ones of nginx's sequence
///   for it), so keys spread as evenly but do not land where nginx would put them
///   (the prepared ring's `is_nginx_exact` tells). Only when `Σ weight > 2²⁴`, where not even
///   one point per unit of weight fits, is the set rejected.
///
/// # Very large sets
///
/// [`points_per_weight`](Self::points_per_weight)`(p)` places the first `p` of nginx's points per
/// unit of weight instead of 160: a non-nginx mode (a key's backend then differs from nginx's) for
/// sets whose ring would otherwise be too large or too slow to prepare. The ring limit becomes
/// `Σ weight ≤ 2²⁴ / p` and preparing costs `p / 160` as much; the price is a coarser spread, since
/// a backend's share of the ring varies as about `1 / √(p · w)`. Removing a backend still moves
/// exactly its own keys. Measured load skew (max / mean share) at 10 000 equal backends: 1.38 with
/// 160 points, 2.31 with 16 (see `docs/MANY_INSTANCES.md`): prefer [`Maglev`](super::Maglev) when
/// an even load matters more than the fewest moved keys.
///
/// # Bounded loads
///
/// With [`bounded_load`](Self::bounded_load)`(c)`, the walk also skips backends that are full:
/// `in_flight ≥ ⌈c · (T + 1) · w / W⌉`, with `T` the requests in flight across the balancer, `w`
/// the backend's weight and `W` the weight of the available backends (with equal weights, the
/// paper's `⌈c · (T + 1) / n⌉`). A hot key spills to the next backends on the ring, in the same
/// order in every balancer, instead of overloading one.
///
/// ```
/// use divvy::{Backend, Balancer, Context, strategy::Ketama};
///
/// let lb = Balancer::new(Ketama::new(), ["127.0.0.1:8081", "127.0.0.1:8082"].map(Backend::new))?;
/// let a = lb.pick(&Context::new().key(b"/videos/42"))?;
/// let b = lb.pick(&Context::new().key(b"/videos/42"))?;
/// assert_eq!(a.id(), b.id());
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Ketama {
    bound: Option<f64>,
    points: u32,
}

impl Default for Ketama {
    fn default() -> Self {
        Ketama::new()
    }
}

impl Ketama {
    /// A ketama ring, nginx-compatible (160 points per unit of weight), without a load bound.
    pub const fn new() -> Self {
        Ketama {
            bound: None,
            points: NGINX_POINTS_PER_WEIGHT,
        }
    }

    /// Places `p` points per unit of weight instead of nginx's 160 (see
    /// [Very large sets](#very-large-sets)): any other value is a non-nginx mode, whose keys map
    /// differently from nginx's. `p` must be between 1 and 160; another value is rejected with
    /// [`UpdateError::Strategy`] when the set is prepared. Default is 160, as nginx.
    #[must_use]
    pub const fn points_per_weight(mut self, p: u32) -> Self {
        self.points = p;
        self
    }

    /// The ring points per unit of weight: 160 unless set by
    /// [`points_per_weight`](Self::points_per_weight).
    pub const fn get_points_per_weight(&self) -> u32 {
        self.points
    }

    /// Bounds each backend's load to `c` times its weighted share of the requests in flight
    /// (consistent hashing with bounded loads, Mirrokni et al. 2017). `c` must be at least 1.0;
    /// a smaller or non-finite value is rejected with [`UpdateError::Strategy`] when the set is
    /// prepared. Typical values are 1.25 to 2. Default is unbounded, as nginx.
    #[must_use]
    pub const fn bounded_load(mut self, c: f64) -> Self {
        self.bound = Some(c);
        self
    }

    /// The load bound factor, if any.
    pub const fn get_bounded_load(&self) -> Option<f64> {
        self.bound
    }
}

/// A point of the ring: its hash and the backend that owns it, side by side so that the cache
/// line a lookup ends on also holds the answer.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
struct Point {
    hash: u32,
    owner: u32,
}

/// The prepared ring of a [`Ketama`] strategy.
pub struct Ring {
    /// The points, by ascending hash, without duplicate hashes.
    points: Box<[Point]>,
    /// The bucket index: `index[b]` is the first point whose hash is at least `b << shift`, and
    /// `index[2^bits]` the number of points. A lookup searches only between two neighbouring
    /// entries, about 4 points, instead of the whole ring: at 10,000 backends the ring has 4
    /// million points, and each step of a binary search over it was a cache miss.
    index: Box<[u32]>,
    shift: u32,
    /// Points per unit of weight: nginx's 160, or fewer for a set too heavy for the point limit.
    points_per_weight: u64,
    /// The round-robin fallback's position on the ring.
    cursor: AtomicUsize,
    bound: Option<LoadFactor>,
    total_weight: u64,
}

impl Ring {
    /// Builds the ring of at most `max_points` points ([`MAX_POINTS`] but in tests), with at most
    /// `per_weight` points per unit of weight (160, as nginx, unless configured).
    fn build(
        backends: &[Backend],
        bound: Option<LoadFactor>,
        per_weight: u32,
        max_points: u64,
    ) -> Result<Ring, UpdateError> {
        let total_weight: u64 = backends.iter().map(|b| u64::from(b.get_weight())).sum();
        let points_per_weight = u64::from(per_weight).min(max_points / total_weight);
        if points_per_weight == 0 {
            return Err(UpdateError::Strategy {
                strategy: NAME,
                reason: format!(
                    "weights sum to {total_weight}; the limit is {max_points}, one ring point per unit of weight"
                ),
            });
        }
        let npoints = total_weight * points_per_weight;
        let mut points: Vec<Point> = Vec::with_capacity(npoints as usize);
        for (i, b) in backends.iter().enumerate() {
            // `npoints` bounds the set's length far below u32::MAX.
            let owner = i as u32;
            place_points(
                b.id().as_bytes(),
                u64::from(b.get_weight()) * points_per_weight,
                |hash| points.push(Point { hash, owner }),
            );
        }
        // Sorting (hash, owner) pairs puts equal hashes in configuration order, which is where a
        // stable sort by hash (nginx's `ngx_qsort` on glibc) leaves them; nginx then keeps the
        // first of each run of equal hashes.
        points.sort_unstable();
        points.dedup_by_key(|p| p.hash);

        let index_bits = (usize::BITS - (points.len() - 1).leading_zeros())
            .saturating_sub(AVERAGE_BUCKET_BITS)
            .clamp(1, MAX_INDEX_BITS);
        let shift = 32 - index_bits;
        let mut index = Vec::with_capacity((1 << index_bits) + 1);
        let mut at = 0;
        for b in 0..=(1u64 << index_bits) {
            while at < points.len() && u64::from(points[at].hash >> shift) < b {
                at += 1;
            }
            index.push(at as u32);
        }
        Ok(Ring {
            points: points.into_boxed_slice(),
            index: index.into_boxed_slice(),
            shift,
            points_per_weight,
            cursor: AtomicUsize::new(0),
            bound,
            total_weight,
        })
    }

    /// Points per unit of weight: 160 as in nginx, or fewer for a set whose `160 × Σ weight`
    /// exceeds the ring's limit of 2²⁴ points.
    pub fn points_per_weight(&self) -> u64 {
        self.points_per_weight
    }

    /// Whether the ring has nginx's points (160 per unit of weight), so that keys reach the
    /// backends nginx's `hash … consistent` would choose.
    pub fn is_nginx_exact(&self) -> bool {
        self.points_per_weight == u64::from(NGINX_POINTS_PER_WEIGHT)
    }

    /// The index of the first point at or after `hash`, wrapping (nginx's
    /// `ngx_http_upstream_find_chash_point`, then `% points->number`). Every point before
    /// `index[b]` has a smaller hash and every point from `index[b + 1]` on a larger one, so the
    /// answer is the same as a binary search over the whole ring.
    #[inline]
    fn find(&self, hash: u32) -> usize {
        let b = (hash >> self.shift) as usize;
        let lo = self.index[b] as usize;
        let hi = self.index[b + 1] as usize;
        let i = lo + self.points[lo..hi].partition_point(|p| p.hash < hash);
        if i == self.points.len() {
            0
        } else {
            i
        }
    }

    #[inline]
    fn owner(&self, at: usize) -> usize {
        self.points[at].owner as usize
    }

    #[inline]
    fn next(&self, at: usize) -> usize {
        if at + 1 == self.points.len() {
            0
        } else {
            at + 1
        }
    }

    /// nginx's fallback to round robin, lock-free: the owner of the next point on the ring, or
    /// the next available backend after it.
    #[cold]
    fn round_robin(&self, view: &View<'_>, room: Option<&mut Room<'_, '_>>) -> Option<usize> {
        let at = self.cursor.fetch_add(1, Relaxed) % self.points.len();
        scan_with_room(view, self.owner(at), room)
    }

    /// The backend that owns `key` when every backend is available.
    #[cfg(test)]
    fn owner_of(&self, key: &[u8]) -> usize {
        self.owner(self.find(crc32(key)))
    }
}

impl fmt::Debug for Ring {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Ring")
            .field("points", &self.points.len())
            .field("points_per_weight", &self.points_per_weight)
            .field("bounded", &self.bound.is_some())
            .finish_non_exhaustive()
    }
}

/// Calls `emit` with the first `count` points of the server named `server`, in nginx's order
/// (nginx places `160 × weight`).
fn place_points(server: &[u8], count: u64, mut emit: impl FnMut(u32)) {
    let (host, port) = split_host_port(server);
    let mut base = crc32fast::Hasher::new();
    base.update(host);
    base.update(&[0]);
    base.update(port);
    // nginx keeps the previous point in a union and feeds its four bytes as laid out in memory,
    // converting to little-endian on big-endian machines: the bytes are always little-endian.
    let mut prev = 0u32;
    for _ in 0..count {
        let mut h = base.clone();
        h.update(&prev.to_le_bytes());
        prev = h.finalize();
        emit(prev);
    }
}

/// nginx's host/port split of a `server` name: `unix:` (any case) makes the rest the host with no
/// port; otherwise the port is what follows the last `:` if it is all digits (possibly none), and
/// without such a `:` the whole name is the host.
fn split_host_port(server: &[u8]) -> (&[u8], &[u8]) {
    if server.len() >= 5 && server[..5].eq_ignore_ascii_case(b"unix:") {
        return (&server[5..], b"");
    }
    for (i, &c) in server.iter().enumerate().rev() {
        if c == b':' {
            return (&server[..i], &server[i + 1..]);
        }
        if !c.is_ascii_digit() {
            break;
        }
    }
    (server, b"")
}

impl Strategy for Ketama {
    type Prepared = Ring;

    fn name(&self) -> &'static str {
        NAME
    }

    fn prepare(&self, backends: &BackendSet<'_>) -> Result<Ring, UpdateError> {
        let bound = self.bound.map(|c| LoadFactor::new(NAME, c)).transpose()?;
        if !(1..=NGINX_POINTS_PER_WEIGHT).contains(&self.points) {
            return Err(UpdateError::Strategy {
                strategy: NAME,
                reason: format!(
                    "points_per_weight {} is out of range: it must be between 1 and {NGINX_POINTS_PER_WEIGHT}",
                    self.points
                ),
            });
        }
        Ring::build(backends, bound, self.points, MAX_POINTS)
    }

    #[inline]
    fn pick(&self, ring: &Ring, ctx: &Context<'_>, view: &View<'_>) -> Option<usize> {
        let mut room = ring.bound.map(|f| Room::new(view, f, ring.total_weight));
        // nginx goes to round robin for an empty key (and for a lone peer, which needs no special
        // case here: it owns the whole ring).
        let key = match ctx.get_key() {
            Some(key) if !key.is_empty() => key,
            _ => return ring.round_robin(view, room.as_mut()),
        };
        let mut at = ring.find(crc32(key));
        match room.as_mut() {
            None => {
                for _ in 0..=MAX_TRIES {
                    let b = ring.owner(at);
                    if view.is_available(b) {
                        return Some(b);
                    }
                    at = ring.next(at);
                }
                // Past 21 points nginx gives up on the ring and goes to round robin.
                ring.round_robin(view, None)
            }
            Some(room) => {
                for _ in 0..=MAX_TRIES {
                    let b = ring.owner(at);
                    if view.is_available(b) && room.has_room(b) {
                        return Some(b);
                    }
                    at = ring.next(at);
                }
                ring.round_robin(view, Some(room))
            }
        }
    }

    fn tracks_total_in_flight(&self) -> bool {
        self.bound.is_some()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::strategy::test_util::valid;
    use crate::{AdminState, Balancer, PickError};
    use proptest::prelude::{any, prop, prop_assert_eq, proptest, Just, ProptestConfig};
    use proptest::strategy::Strategy as _;

    // === An independent reference ===
    //
    // A direct transcription of nginx's `ngx_http_upstream_init_chash` and
    // `ngx_http_upstream_find_chash_point` over a bitwise CRC-32 (reflected polynomial
    // 0xEDB88320, as `ngx_crc32_update`), sharing no code with the implementation above.

    fn crc_update(mut crc: u32, bytes: &[u8]) -> u32 {
        for &byte in bytes {
            crc ^= u32::from(byte);
            for _ in 0..8 {
                crc = if crc & 1 == 1 {
                    (crc >> 1) ^ 0xEDB8_8320
                } else {
                    crc >> 1
                };
            }
        }
        crc
    }

    fn crc(bytes: &[u8]) -> u32 {
        !crc_update(!0, bytes)
    }

    /// The sorted, deduplicated (hash, owner) points of `servers`.
    fn reference_points(servers: &[(&str, u32)]) -> Vec<(u32, usize)> {
        let mut points = Vec::new();
        for (owner, &(server, weight)) in servers.iter().enumerate() {
            let s = server.as_bytes();
            let (host, port): (&[u8], &[u8]) =
                if s.len() >= 5 && s[..5].iter().map(u8::to_ascii_lowercase).eq(*b"unix:") {
                    (&s[5..], &[])
                } else {
                    let mut split = (s, &[][..]);
                    let mut j = 0;
                    while j < s.len() {
                        let c = s[s.len() - j - 1];
                        if c == b':' {
                            split = (&s[..s.len() - j - 1], &s[s.len() - j..]);
                            break;
                        }
                        if !c.is_ascii_digit() {
                            break;
                        }
                        j += 1;
                    }
                    split
                };
            let mut base = crc_update(!0, host);
            base = crc_update(base, &[0]);
            base = crc_update(base, port);
            let mut prev = [0u8; 4];
            for _ in 0..weight * 160 {
                let hash = !crc_update(base, &prev);
                points.push((hash, owner));
                prev = hash.to_le_bytes();
            }
        }
        points.sort_by_key(|p| p.0); // stable, as glibc's qsort
        points.dedup_by_key(|p| p.0); // keeps the first of a run, as nginx
        points
    }

    fn reference_owner(points: &[(u32, usize)], key: &[u8]) -> usize {
        let hash = crc(key);
        points.iter().find(|p| p.0 >= hash).unwrap_or(&points[0]).1
    }

    fn ring(servers: &[(&str, u32)]) -> Ring {
        let backends: Vec<Backend> = servers
            .iter()
            .map(|&(id, w)| Backend::new(id).weight(w))
            .collect();
        Ketama::new().prepare(&valid(&backends)).unwrap()
    }

    fn ring_points(r: &Ring) -> Vec<(u32, usize)> {
        r.points
            .iter()
            .map(|p| (p.hash, p.owner as usize))
            .collect()
    }

    /// The first point at or after `hash` by a binary search over the whole ring, wrapping: what
    /// the bucket index must reproduce.
    fn find_plain(r: &Ring, hash: u32) -> usize {
        let i = r.points.partition_point(|p| p.hash < hash);
        if i == r.points.len() {
            0
        } else {
            i
        }
    }

    fn pick_id<S: Strategy>(lb: &Balancer<S>, key: &[u8]) -> String {
        lb.pick(&Context::new().key(key))
            .unwrap()
            .backend()
            .id()
            .to_owned()
    }

    const SERVERS: [(&str, u32); 5] = [
        ("127.0.0.1:18081", 1),
        ("127.0.0.1:18082", 2),
        ("127.0.0.1:18083", 1),
        ("127.0.0.1:18084", 3),
        ("unix:/tmp/divvy/b5.sock", 1),
    ];

    // === Placement ===

    #[test]
    fn the_reference_crc_is_the_standard_crc32() {
        assert_eq!(crc(b"123456789"), 0xCBF4_3926);
    }

    #[test]
    fn server_names_split_into_host_and_port_as_nginx_does() {
        let cases: [(&str, &str, &str); 11] = [
            ("127.0.0.1:8081", "127.0.0.1", "8081"),
            ("backend.example:80", "backend.example", "80"),
            ("[::1]:8080", "[::1]", "8080"),
            ("a:b:80", "a:b", "80"),
            ("example.com:", "example.com", ""),
            ("example.com", "example.com", ""),
            ("[::1]", "[::1]", ""),
            ("host:8a", "host:8a", ""),
            ("12345", "12345", ""),
            ("unix:/run/app.sock", "/run/app.sock", ""),
            ("UNIX:/run/app.sock:80", "/run/app.sock:80", ""),
        ];
        for (server, host, port) in cases {
            let (h, p) = split_host_port(server.as_bytes());
            assert_eq!((h, p), (host.as_bytes(), port.as_bytes()), "{server}");
        }
    }

    #[test]
    fn ring_points_match_the_reference_transcription_of_nginx() {
        let r = ring(&SERVERS);
        assert_eq!(ring_points(&r), reference_points(&SERVERS));
    }

    #[test]
    fn keys_map_as_the_reference_transcription_of_nginx() {
        let r = ring(&SERVERS);
        let points = reference_points(&SERVERS);
        for i in 0..5_000 {
            let key = format!("/objects/{i}");
            assert_eq!(
                r.owner_of(key.as_bytes()),
                reference_owner(&points, key.as_bytes()),
                "{key}"
            );
        }
        // The ends of the hash space: the first point, and the wrap past the last.
        for hash in [
            0,
            1,
            points[0].0,
            points[0].0 + 1,
            points.last().unwrap().0,
            u32::MAX,
        ] {
            let expect = points.iter().find(|p| p.0 >= hash).unwrap_or(&points[0]).1;
            assert_eq!(r.owner(r.find(hash)), expect, "hash {hash:#x}");
        }
    }

    /// Recorded from nginx 1.22.1 serving `hash $arg_k consistent` over [`SERVERS`] (each server
    /// answering with its own name), for the keys `key-0` … `key-47`, first with every server up,
    /// then with `127.0.0.1:18084` marked `down`.
    const NGINX_OWNERS: [usize; 48] = [
        1, 3, 3, 3, 2, 0, 4, 1, 2, 3, 1, 0, 3, 3, 0, 3, 3, 3, 0, 0, 3, 1, 3, 2, 2, 2, 1, 3, 3, 4,
        3, 3, 2, 3, 3, 1, 3, 3, 3, 3, 3, 3, 4, 3, 4, 3, 2, 3,
    ];
    const NGINX_OWNERS_WITH_18084_DOWN: [usize; 48] = [
        1, 0, 2, 1, 2, 0, 4, 1, 2, 1, 1, 0, 1, 1, 0, 1, 0, 0, 0, 0, 4, 1, 4, 2, 2, 2, 1, 1, 1, 4,
        1, 1, 2, 2, 1, 1, 1, 2, 1, 4, 1, 2, 4, 0, 4, 1, 2, 2,
    ];

    #[test]
    fn keys_reach_the_server_nginx_chose() {
        let backends = SERVERS.map(|(id, w)| Backend::new(id).weight(w));
        let lb = Balancer::new(Ketama::new(), backends.clone()).unwrap();
        for (i, &owner) in NGINX_OWNERS.iter().enumerate() {
            assert_eq!(
                pick_id(&lb, format!("key-{i}").as_bytes()),
                SERVERS[owner].0,
                "key-{i}"
            );
        }
        let mut down = backends;
        down[3] = down[3].clone().state(AdminState::Down);
        let lb = Balancer::new(Ketama::new(), down).unwrap();
        for (i, &owner) in NGINX_OWNERS_WITH_18084_DOWN.iter().enumerate() {
            assert_eq!(
                pick_id(&lb, format!("key-{i}").as_bytes()),
                SERVERS[owner].0,
                "key-{i}"
            );
        }
    }

    #[test]
    fn fewer_points_per_weight_place_a_prefix_of_nginxs_points() {
        let set = [
            Backend::new("127.0.0.1:18081").weight(2),
            Backend::new("b:1"),
        ];
        let full = Ketama::new().prepare(&valid(&set)).unwrap();
        let few = Ketama::new()
            .points_per_weight(16)
            .prepare(&valid(&set))
            .unwrap();
        assert_eq!(Ketama::new().get_points_per_weight(), 160);
        assert_eq!(few.points.len(), 48);
        let full_points = ring_points(&full);
        for p in ring_points(&few) {
            assert!(full_points.contains(&p), "{p:?}");
        }
        for p in [0, 161] {
            let err = Ketama::new()
                .points_per_weight(p)
                .prepare(&valid(&set))
                .unwrap_err();
            assert!(
                matches!(&err, UpdateError::Strategy { reason, .. } if reason.contains(&format!("points_per_weight {p}"))),
                "{err:?}"
            );
        }
        // Past the ring limit the default falls back to fewer points (83 for 200 000 weight
        // units); a configured count below that is kept.
        let big: Vec<Backend> = (0..20)
            .map(|i| Backend::new(format!("h{i}")).weight(10_000))
            .collect();
        let auto = Ketama::new().prepare(&valid(&big)).unwrap();
        assert_eq!(auto.points_per_weight(), 83);
        assert_eq!(
            Ketama::new()
                .points_per_weight(16)
                .prepare(&valid(&big))
                .unwrap()
                .points_per_weight(),
            16
        );
        assert!(Ketama::new()
            .points_per_weight(16)
            .prepare(&valid(&big))
            .is_ok());
    }

    /// Each backend's exact share of the 2³² hash space: a point owns the arc after the previous
    /// point, up to and including itself.
    fn shares(r: &Ring, n: usize) -> Vec<f64> {
        let mut owned = vec![0u64; n];
        let last = u64::from(r.points.last().unwrap().hash);
        let mut prev = last;
        for (i, h) in r.points.iter().map(|p| p.hash).enumerate() {
            let h = u64::from(h);
            let arc = if i == 0 {
                h + (1 << 32) - prev
            } else {
                h - prev
            };
            owned[r.owner(i)] += arc;
            prev = h;
        }
        owned
            .iter()
            .map(|&a| a as f64 / (1u64 << 32) as f64)
            .collect()
    }

    /// The exact fraction of the hash space whose backend differs between two rings over `a` and
    /// `b`: between two neighbouring points of either ring, both rings' owners are constant.
    fn moved(ra: &Ring, a: &[Backend], rb: &Ring, b: &[Backend]) -> f64 {
        let mut bounds: Vec<u32> = ra
            .points
            .iter()
            .chain(rb.points.iter())
            .map(|p| p.hash)
            .collect();
        bounds.sort_unstable();
        bounds.dedup();
        let mut prev = u64::from(*bounds.last().unwrap());
        let mut moved = 0u64;
        for (i, &h) in bounds.iter().enumerate() {
            let arc = if i == 0 {
                u64::from(h) + (1 << 32) - prev
            } else {
                u64::from(h) - prev
            };
            prev = u64::from(h);
            if a[ra.owner(ra.find(h))].id() != b[rb.owner(rb.find(h))].id() {
                moved += arc;
            }
        }
        moved as f64 / (1u64 << 32) as f64
    }

    /// Movement on one removal and load skew at the sizes users run: the figures
    /// `docs/MANY_INSTANCES.md` quotes. Maglev's are printed by its own test.
    #[test]
    fn removing_one_of_n_moves_exactly_its_share_at_every_size() {
        for (n, per_weight) in [
            (10, 160),
            (100, 160),
            (1_000, 160),
            (10_000, 160),
            (10_000, 16),
        ] {
            let set: Vec<Backend> = (0..n)
                .map(|i| Backend::new(format!("10.0.{}.{}:80", i / 256, i % 256)))
                .collect();
            let ketama = Ketama::new().points_per_weight(per_weight);
            let before = ketama.prepare(&valid(&set)).unwrap();
            let share = shares(&before, n);
            let skew = share.iter().fold(0.0, |m: f64, &s| m.max(s)) * n as f64;
            let removed = n / 2;
            let mut rest = set.clone();
            rest.remove(removed);
            let after = ketama.prepare(&valid(&rest)).unwrap();
            let moved = moved(&before, &set, &after, &rest);
            println!(
                "ketama n={n:>6} points/weight={per_weight:>3}: skew {skew:.4}, one removal moves \
                 {:.2}/n, the removed backend's share {:.2}/n",
                moved * n as f64,
                share[removed] * n as f64
            );
            // Exactly the removed backend's arcs change hands: no excess movement.
            assert!(
                (moved - share[removed]).abs() < 1e-12,
                "n = {n}: {moved} vs {}",
                share[removed]
            );
        }
    }

    #[test]
    fn each_backend_has_160_points_per_weight_minus_duplicates() {
        let r = ring(&SERVERS);
        let mut counts = [0u32; 5];
        for p in r.points.iter() {
            counts[p.owner as usize] += 1;
        }
        // No two of these points collide, so every backend keeps all of its points.
        assert_eq!(counts, SERVERS.map(|(_, w)| 160 * w));
    }

    #[test]
    fn a_duplicated_point_goes_to_the_first_backend_in_configuration_order() {
        // 160 000 points: the birthday bound makes a few 32-bit collisions likely, and this set
        // has some (asserted, so the test keeps exercising them).
        let names: Vec<String> = (0..1000)
            .map(|i| format!("10.1.{}.{}:80", i / 256, i % 256))
            .collect();
        let servers: Vec<(&str, u32)> = names.iter().map(|n| (n.as_str(), 1)).collect();
        let reference = reference_points(&servers);
        let dropped = 160 * servers.len() - reference.len();
        assert!(
            dropped > 0,
            "the set was chosen to contain colliding points"
        );
        let r = ring(&servers);
        assert_eq!(ring_points(&r), reference);
        let mut counts = vec![0usize; servers.len()];
        for p in r.points.iter() {
            counts[p.owner as usize] += 1;
        }
        let short: usize = counts.iter().map(|&c| 160 - c).sum();
        assert_eq!(short, dropped);
    }

    #[test]
    fn rings_above_the_point_limit_get_fewer_points_per_weight_from_nginxs_sequence() {
        // SERVERS weigh 8 in all: nginx's 1,280 points, or 125 per unit of weight under a limit
        // of 1,000 points (the real limit, 2²⁴, makes rings too large to build in a unit test).
        let backends = SERVERS.map(|(id, w)| Backend::new(id).weight(w));
        let r = Ring::build(&backends, None, NGINX_POINTS_PER_WEIGHT, 1000).unwrap();
        assert_eq!(r.points_per_weight(), 125);
        assert!(!r.is_nginx_exact());
        // Each backend's points are the first 125 per weight of the ones nginx gives it.
        let nginx = reference_points(&SERVERS);
        for (owner, (id, w)) in SERVERS.iter().enumerate() {
            let mut first = Vec::new();
            place_points(id.as_bytes(), u64::from(*w) * 125, |h| first.push(h));
            let mut mine: Vec<u32> = ring_points(&r)
                .into_iter()
                .filter(|&(_, o)| o == owner)
                .map(|(h, _)| h)
                .collect();
            first.sort_unstable();
            mine.sort_unstable();
            assert_eq!(mine, first, "{id}");
            assert!(mine.iter().all(|h| nginx.contains(&(*h, owner))));
        }
        assert!(ring(&SERVERS).is_nginx_exact());
    }

    #[test]
    fn a_set_heavier_than_one_point_per_unit_of_weight_allows_is_rejected_naming_the_weights() {
        let backends: Vec<Backend> = (0..1678)
            .map(|i| {
                Backend::new(format!("10.0.{}.{}:80", i / 256, i % 256)).weight(crate::MAX_WEIGHT)
            })
            .collect();
        match Ketama::new().prepare(&valid(&backends)) {
            Err(UpdateError::Strategy { strategy, reason }) => {
                assert_eq!(strategy, "ketama");
                assert!(reason.contains("weights sum to 16780000"), "{reason}");
            }
            other => panic!("expected a strategy error, got {other:?}"),
        }
    }

    // === Picks ===

    #[test]
    fn an_unavailable_backend_is_skipped_to_the_next_point() {
        let backends = SERVERS.map(|(id, w)| Backend::new(id).weight(w));
        let lb = Balancer::new(Ketama::new(), backends).unwrap();
        let r = ring(&SERVERS);
        lb.set_admin_state(SERVERS[1].0, Some(AdminState::Down))
            .unwrap();
        for i in 0..2_000 {
            let key = format!("session-{i}");
            let mut at = r.find(crc(key.as_bytes()));
            while r.owner(at) == 1 {
                at = r.next(at);
            }
            assert_eq!(
                pick_id(&lb, key.as_bytes()),
                SERVERS[r.owner(at)].0,
                "{key}"
            );
        }
    }

    #[test]
    fn keys_still_find_the_last_backend_when_more_than_21_points_are_down() {
        let names: Vec<String> = (0..30).map(|i| format!("10.0.0.{i}:80")).collect();
        let lb = Balancer::new(
            Ketama::new(),
            names.iter().map(|n| Backend::new(n.as_str())),
        )
        .unwrap();
        for n in &names[1..] {
            lb.set_admin_state(n, Some(AdminState::Down)).unwrap();
        }
        for i in 0..500 {
            assert_eq!(pick_id(&lb, format!("k{i}").as_bytes()), names[0]);
        }
        lb.set_admin_state(&names[0], Some(AdminState::Down))
            .unwrap();
        assert_eq!(
            lb.pick(&Context::new().key(b"k")).unwrap_err(),
            PickError::NoneAvailable { total: 30 }
        );
    }

    #[test]
    fn requests_without_a_key_go_round_the_ring_in_proportion_to_weight() {
        let backends = SERVERS.map(|(id, w)| Backend::new(id).weight(w));
        let lb = Balancer::new(Ketama::new(), backends).unwrap();
        let total: u32 = SERVERS.iter().map(|s| 160 * s.1).sum();
        let mut counts = std::collections::HashMap::new();
        for i in 0..total {
            // An empty key counts as none, as nginx's `hp->key.len == 0`.
            let ctx = if i % 2 == 0 {
                Context::new()
            } else {
                Context::new().key(b"")
            };
            *counts
                .entry(lb.pick(&ctx).unwrap().id().to_owned())
                .or_insert(0) += 1;
        }
        for (id, w) in SERVERS {
            assert_eq!(counts[id], 160 * w, "{id}");
        }
    }

    fn arb_servers() -> impl proptest::strategy::Strategy<Value = Vec<(String, u32)>> {
        proptest::collection::hash_set("[a-z0-9.]{1,12}(:[0-9]{1,5})?", 2..10).prop_flat_map(
            |names| {
                let n = names.len();
                (
                    Just(names.into_iter().collect::<Vec<_>>()),
                    proptest::collection::vec(1u32..4, n),
                )
                    .prop_map(|(names, weights)| names.into_iter().zip(weights).collect())
            },
        )
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(48))]

        #[test]
        fn rings_match_the_reference_for_any_set(servers in arb_servers(), keys in proptest::collection::vec(any::<Vec<u8>>(), 64)) {
            let servers: Vec<(&str, u32)> = servers.iter().map(|(n, w)| (n.as_str(), *w)).collect();
            let r = ring(&servers);
            let reference = reference_points(&servers);
            prop_assert_eq!(ring_points(&r), reference.clone());
            for key in &keys {
                prop_assert_eq!(r.owner_of(key), reference_owner(&reference, key));
            }
        }

        #[test]
        fn the_bucket_index_finds_the_point_a_binary_search_of_the_whole_ring_finds(
            servers in arb_servers(),
            hashes in proptest::collection::vec(any::<u32>(), 256),
        ) {
            let servers: Vec<(&str, u32)> = servers.iter().map(|(n, w)| (n.as_str(), *w)).collect();
            let r = ring(&servers);
            // Random hashes, the ring's own points and their neighbours, and both ends.
            let own = r.points.iter().step_by(7).flat_map(|p| {
                [p.hash.wrapping_sub(1), p.hash, p.hash.wrapping_add(1)]
            });
            for h in hashes.into_iter().chain(own).chain([0, u32::MAX]) {
                prop_assert_eq!(r.find(h), find_plain(&r, h), "hash {:#x}", h);
            }
        }

        #[test]
        fn removing_a_backend_moves_only_its_keys(
            servers in arb_servers(),
            removed in any::<prop::sample::Index>(),
            keys in proptest::collection::vec(any::<Vec<u8>>(), 256),
        ) {
            let servers: Vec<(&str, u32)> = servers.iter().map(|(n, w)| (n.as_str(), *w)).collect();
            let removed = removed.index(servers.len());
            let mut rest = servers.clone();
            rest.remove(removed);
            let (before, after) = (ring(&servers), ring(&rest));
            for key in &keys {
                let was = servers[before.owner_of(key)].0;
                let now = rest[after.owner_of(key)].0;
                if was != servers[removed].0 {
                    prop_assert_eq!(was, now);
                }
            }
        }
    }
}
