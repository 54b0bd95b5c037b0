//! Backends: the endpoints a balancer chooses between.

use std::fmt;
use std::net::SocketAddr;
use std::sync::Arc;

use crate::hash;

/// The largest weight a backend may have.
///
/// nginx accepts any positive `int`; divvy caps weights so that every derived structure stays
/// bounded: a Ketama ring places `160 × weight` points per backend, and the smooth weighted
/// schedule holds `Σ weight / gcd` entries.
pub const MAX_WEIGHT: u32 = 10_000;

/// The number of priority tiers (`0..MAX_TIERS`): tier 0 is primary, 1 the first backup, and so on.
pub const MAX_TIERS: usize = 16;

/// What the operator says about a backend, independent of its health.
///
/// This is the configured state; [`Balancer::set_admin_state`](crate::Balancer::set_admin_state)
/// overrides it at run time, and an override always wins over health.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum AdminState {
    /// Eligible for traffic when healthy.
    #[default]
    Up,
    /// Takes no new traffic, except requests pinned to it by a sticky target; requests already in
    /// flight finish normally (HAProxy's `drain`).
    Drain,
    /// Takes no traffic at all (nginx's `down`).
    Down,
}

impl AdminState {
    pub(crate) const fn to_u8(self) -> u8 {
        match self {
            AdminState::Up => 0,
            AdminState::Drain => 1,
            AdminState::Down => 2,
        }
    }

    pub(crate) const fn from_u8(v: u8) -> Self {
        match v {
            0 => AdminState::Up,
            1 => AdminState::Drain,
            _ => AdminState::Down,
        }
    }
}

impl fmt::Display for AdminState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            AdminState::Up => "up",
            AdminState::Drain => "drain",
            AdminState::Down => "down",
        })
    }
}

/// An endpoint with a stable identity, a weight, a priority tier, an optional zone and an
/// operator state.
///
/// The identity is the string that hashing strategies hash, so it must be the same in every
/// process that should agree on routing. By default it is the address exactly as written
/// (`"127.0.0.1:8081"`), which is also how nginx names a `server`, so consistent hashing places
/// keys exactly where nginx does.
///
/// Construction is builder style; nothing is validated until the set is published, where every
/// problem is reported with the backend's identity (see [`UpdateError`](crate::UpdateError)).
///
/// ```
/// use divvy::{AdminState, Backend};
///
/// let b = Backend::new("10.0.0.7:8080").weight(3).tier(1).zone("eu-west-1a").max_in_flight(100);
/// assert_eq!(b.id(), "10.0.0.7:8080");
/// assert_eq!(b.addr(), Some("10.0.0.7:8080".parse().unwrap()));
/// assert_eq!((b.get_weight(), b.get_tier()), (3, 1));
/// assert_eq!(b.get_state(), AdminState::Up);
/// ```
#[derive(Clone, PartialEq, Eq)]
pub struct Backend {
    id: Arc<str>,
    key: u64,
    addr: Option<SocketAddr>,
    weight: u32,
    tier: u8,
    zone: Option<Arc<str>>,
    state: AdminState,
    max_in_flight: Option<u32>,
}

impl Backend {
    /// A backend named `id`, with weight 1, tier 0 (primary), no zone, state up and no in-flight
    /// limit. If `id` parses as a socket address, [`addr`](Self::addr) returns it.
    pub fn new(id: impl Into<Arc<str>>) -> Self {
        let id: Arc<str> = id.into();
        Backend {
            key: hash::backend_key(&id),
            addr: id.parse().ok(),
            id,
            weight: 1,
            tier: 0,
            zone: None,
            state: AdminState::Up,
            max_in_flight: None,
        }
    }

    /// A backend for a socket address; its identity is the address as `Display` writes it.
    pub fn from_addr(addr: SocketAddr) -> Self {
        Backend::new(addr.to_string())
    }

    /// Sets the weight (`1..=`[`MAX_WEIGHT`]). Default is 1, as nginx's `weight`.
    #[must_use]
    pub fn weight(mut self, weight: u32) -> Self {
        self.weight = weight;
        self
    }

    /// Sets the priority tier: 0 is primary, 1 the first backup tier, up to `MAX_TIERS - 1`.
    /// Every balancer honours tiers, whatever its strategy (see
    /// [`Strategy::routes_tiers`](crate::Strategy::routes_tiers)). Default is 0.
    #[must_use]
    pub fn tier(mut self, tier: u8) -> Self {
        self.tier = tier;
        self
    }

    /// Marks the backend as a backup (tier 1), as nginx's `backup` flag. Default is primary.
    #[must_use]
    pub fn backup(self) -> Self {
        self.tier(1)
    }

    /// Sets the zone or region label, used by zone-aware [`Failover`](crate::strategy::Failover).
    /// Default is no zone.
    #[must_use]
    pub fn zone(mut self, zone: impl Into<Arc<str>>) -> Self {
        self.zone = Some(zone.into());
        self
    }

    /// Sets the operator state. Default is [`AdminState::Up`].
    #[must_use]
    pub fn state(mut self, state: AdminState) -> Self {
        self.state = state;
        self
    }

    /// Limits requests in flight to this backend, as nginx's `max_conns`: at the limit the backend
    /// is skipped as if unavailable (1..=2²²). The limit is checked before the request is counted,
    /// so picks racing on several threads may overshoot it by at most the number of racers, as
    /// nginx workers sharing a zone can. Default is no limit (divvy still refuses a pick beyond 2²²
    /// requests in flight to one backend).
    #[must_use]
    pub fn max_in_flight(mut self, limit: u32) -> Self {
        self.max_in_flight = Some(limit);
        self
    }

    /// The identity: the string hashed by hashing strategies.
    pub fn id(&self) -> &str {
        &self.id
    }

    /// The identity as a shared string, cheap to clone.
    pub fn id_arc(&self) -> &Arc<str> {
        &self.id
    }

    /// A stable 64-bit key derived from the identity (XXH3-64 of its bytes).
    ///
    /// It is the opaque token for sticky sessions: it names the backend without revealing its
    /// address, and is the same in every process and build.
    pub fn key(&self) -> u64 {
        self.key
    }

    /// The socket address, when the identity parses as one.
    pub fn addr(&self) -> Option<SocketAddr> {
        self.addr
    }

    /// The configured weight.
    pub fn get_weight(&self) -> u32 {
        self.weight
    }

    /// The priority tier.
    pub fn get_tier(&self) -> u8 {
        self.tier
    }

    /// The zone label, if any.
    pub fn get_zone(&self) -> Option<&str> {
        self.zone.as_deref()
    }

    /// The configured operator state.
    pub fn get_state(&self) -> AdminState {
        self.state
    }

    /// The in-flight limit, if any.
    pub fn get_max_in_flight(&self) -> Option<u32> {
        self.max_in_flight
    }
}

impl fmt::Debug for Backend {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut d = f.debug_struct("Backend");
        d.field("id", &self.id).field("weight", &self.weight);
        if self.tier != 0 {
            d.field("tier", &self.tier);
        }
        if let Some(zone) = &self.zone {
            d.field("zone", zone);
        }
        if self.state != AdminState::Up {
            d.field("state", &self.state);
        }
        if let Some(max) = self.max_in_flight {
            d.field("max_in_flight", &max);
        }
        d.finish()
    }
}

impl fmt::Display for Backend {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.id)
    }
}

impl From<SocketAddr> for Backend {
    fn from(addr: SocketAddr) -> Self {
        Backend::from_addr(addr)
    }
}

impl From<&str> for Backend {
    fn from(id: &str) -> Self {
        Backend::new(id)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_address_identity_parses_and_a_name_does_not() {
        assert_eq!(
            Backend::new("[::1]:80").addr(),
            Some("[::1]:80".parse().unwrap())
        );
        assert_eq!(Backend::new("app.internal:80").addr(), None);
    }

    #[test]
    fn backup_is_tier_one_and_defaults_match_nginx() {
        let b = Backend::new("a");
        assert_eq!(
            (b.get_weight(), b.get_tier(), b.get_state()),
            (1, 0, AdminState::Up)
        );
        assert_eq!(b.backup().get_tier(), 1);
    }

    #[test]
    fn the_sticky_key_depends_only_on_the_identity() {
        let a = Backend::new("127.0.0.1:8081").weight(5).zone("z");
        let b = Backend::new("127.0.0.1:8081");
        assert_eq!(a.key(), b.key());
        assert_ne!(a.key(), Backend::new("127.0.0.1:8082").key());
    }
}
