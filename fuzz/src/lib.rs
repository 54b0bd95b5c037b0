//! Structured inputs the fuzz targets share: backend sets (valid or not), strategies, contexts.
//!
//! Raw fields are mapped so that a random input is mostly valid and sometimes invalid in each
//! way the balancer must reject (zero or oversized weight, tier out of range, empty or duplicate
//! identity, zero in-flight limit), which keeps the fuzzer exploring the pick path as well as
//! the validation path.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use arbitrary::Arbitrary;
use divvy::strategy::{
    Failover, IpHash, Ketama, LeastConnections, Maglev, PowerOfTwoChoices, Random, RoundRobin,
    WeightedRoundRobin,
};
use divvy::{AdminState, Backend, Context, Strategy, MAX_WEIGHT};

/// Identities come from a small namespace so that updates keep, drop and re-add the same backends.
pub fn backend_id(name: u8) -> String {
    match name {
        // An empty identity is invalid: keep it reachable.
        255 => String::new(),
        n => format!("10.0.0.{}:80", n % 24),
    }
}

/// One backend of a set, as raw fuzz input.
#[derive(Arbitrary, Clone, Debug)]
pub struct BackendSpec {
    /// Identity, through [`backend_id`].
    pub name: u8,
    /// Weight selector: mostly 1..=16, sometimes 0 or above [`MAX_WEIGHT`], now and then large
    /// (large weights make rings and schedules slow to build, so they are kept rare).
    pub weight: u16,
    /// Tier selector: mostly 0 or 1, sometimes out of range.
    pub tier: u8,
    /// Zone label, from three.
    pub zone: Option<u8>,
    /// Operator state: mostly up.
    pub state: u8,
    /// In-flight limit, 0 (invalid) included.
    pub max_in_flight: Option<u8>,
}

impl BackendSpec {
    /// The backend this spec describes.
    pub fn backend(&self) -> Backend {
        let weight = match self.weight % 64 {
            0 => 0,
            1 => MAX_WEIGHT + u32::from(self.weight),
            2 => u32::from(self.weight) % (MAX_WEIGHT + 1),
            w => 1 + u32::from(w % 16),
        };
        let tier = match self.tier % 8 {
            0..=4 => 0,
            5 | 6 => 1,
            _ => self.tier,
        };
        let mut b = Backend::new(backend_id(self.name))
            .weight(weight)
            .tier(tier)
            .state(admin_state(self.state));
        if let Some(z) = self.zone {
            b = b.zone(zone_name(z));
        }
        if let Some(m) = self.max_in_flight {
            b = b.max_in_flight(u32::from(m % 4));
        }
        b
    }
}

/// An operator state, mostly up.
pub fn admin_state(raw: u8) -> AdminState {
    match raw % 8 {
        0 => AdminState::Drain,
        1 => AdminState::Down,
        _ => AdminState::Up,
    }
}

/// One of three zone names.
pub fn zone_name(raw: u8) -> &'static str {
    ["eu", "us", "ap"][usize::from(raw % 3)]
}

/// A whole set, capped so that one input stays fast.
pub fn backends(specs: &[BackendSpec]) -> Vec<Backend> {
    specs.iter().take(48).map(BackendSpec::backend).collect()
}

/// A request context, as raw fuzz input.
#[derive(Arbitrary, Clone, Debug)]
pub struct ContextSpec {
    /// Client address: none, IPv4 or IPv6.
    pub ip: Option<Result<[u8; 4], [u8; 16]>>,
    /// Hash key.
    pub key: Option<Vec<u8>>,
    /// Sticky target, by name.
    pub sticky: Option<u8>,
    /// Caller's zone.
    pub zone: Option<u8>,
    /// Excluded backends, by name.
    pub exclude: Vec<u8>,
}

/// Storage a [`Context`] borrows from.
#[derive(Debug)]
pub struct ContextParts {
    ip: Option<IpAddr>,
    key: Option<Vec<u8>>,
    sticky: Option<u64>,
    zone: Option<&'static str>,
    /// Excluded backend keys.
    pub exclude: Vec<u64>,
    /// The sticky target's identity.
    pub sticky_id: Option<String>,
}

impl ContextSpec {
    /// The parts a context borrows.
    pub fn parts(&self) -> ContextParts {
        let key = |name: u8| Backend::new(backend_id(name)).key();
        ContextParts {
            ip: self.ip.map(|ip| match ip {
                Ok(v4) => IpAddr::V4(Ipv4Addr::from(v4)),
                Err(v6) => IpAddr::V6(Ipv6Addr::from(v6)),
            }),
            key: self.key.clone(),
            sticky: self.sticky.map(key),
            zone: self.zone.map(zone_name),
            exclude: self.exclude.iter().take(8).map(|&n| key(n)).collect(),
            sticky_id: self.sticky.map(backend_id),
        }
    }
}

impl ContextParts {
    /// The context.
    pub fn context(&self) -> Context<'_> {
        let mut ctx = Context::new().exclude(&self.exclude);
        if let Some(ip) = self.ip {
            ctx = ctx.client_ip(ip);
        }
        if let Some(key) = &self.key {
            ctx = ctx.key(key);
        }
        if let Some(sticky) = self.sticky {
            ctx = ctx.sticky(sticky);
        }
        if let Some(zone) = self.zone {
            ctx = ctx.zone(zone);
        }
        ctx
    }
}

/// Every strategy divvy ships, with its knobs.
#[derive(Arbitrary, Clone, Copy, Debug)]
pub enum StrategyKind {
    /// `RoundRobin`.
    RoundRobin,
    /// `Random` with a seed.
    Random(u64),
    /// `PowerOfTwoChoices` by in-flight, with a seed.
    PowerOfTwoChoices(u64),
    /// `PowerOfTwoChoices::peak_ewma`, with a seed.
    PeakEwma(u64),
    /// `WeightedRoundRobin`.
    WeightedRoundRobin,
    /// `LeastConnections`.
    LeastConnections,
    /// `IpHash`, or `IpHash::full_address` when true.
    IpHash(bool),
    /// `Ketama`, optionally bounded.
    Ketama(Option<Bound>),
    /// `Maglev` with a table-size selector, optionally bounded.
    Maglev(u16, Option<Bound>),
    /// `Failover` around round robin, optionally zone-aware.
    FailoverRoundRobin(bool),
    /// `Failover` around peak-EWMA p2c.
    FailoverPeakEwma(u64),
    /// `Failover` around weighted round robin, optionally zone-aware.
    FailoverWeighted(bool),
    /// `Failover` around bounded Maglev.
    FailoverMaglev(Bound),
}

/// A load-bound factor: usually sensible, sometimes below 1 or not finite (which `prepare`
/// must reject with a typed error).
#[derive(Arbitrary, Clone, Copy, Debug)]
pub enum Bound {
    /// 1 + n/8.
    Sensible(u8),
    /// Any `f64` at all.
    Raw(f64),
}

impl Bound {
    /// The factor.
    pub fn factor(self) -> f64 {
        match self {
            Bound::Sensible(n) => 1.0 + f64::from(n) / 8.0,
            Bound::Raw(c) => c,
        }
    }
}

/// A Maglev strategy: now and then the default table (65 537 slots, slow to build), else a small
/// one. Small sizes are not always prime nor large enough for the set: `with_table_size` and
/// `prepare` must reject those with a typed error (a rejected size falls back to 1 021 slots).
pub fn maglev(size: u16, bound: Option<Bound>) -> Maglev {
    let m = if size.is_multiple_of(16) {
        Maglev::new()
    } else {
        Maglev::with_table_size(u32::from(size % 1024)).unwrap_or_else(|e| {
            assert!(matches!(e, divvy::UpdateError::Strategy { .. }), "{e:?}");
            Maglev::with_table_size(1021).expect("1021 is a prime in range")
        })
    };
    match bound {
        Some(b) => m.bounded_load(b.factor()),
        None => m,
    }
}

/// Something generic over a strategy: [`StrategyKind::with`] calls it with the strategy built.
pub trait WithStrategy {
    /// Runs with `strategy`.
    fn run<S: Strategy>(self, strategy: S);
}

impl StrategyKind {
    /// Builds the strategy and hands it to `f`.
    pub fn with(self, f: impl WithStrategy) {
        match self {
            StrategyKind::RoundRobin => f.run(RoundRobin::new()),
            StrategyKind::Random(seed) => f.run(Random::from_seed(seed)),
            StrategyKind::PowerOfTwoChoices(seed) => f.run(PowerOfTwoChoices::from_seed(seed)),
            StrategyKind::PeakEwma(seed) => f.run(PowerOfTwoChoices::peak_ewma_from_seed(seed)),
            StrategyKind::FailoverRoundRobin(false) => f.run(Failover::new(RoundRobin::new())),
            StrategyKind::FailoverRoundRobin(true) => {
                f.run(Failover::zone_aware(RoundRobin::new()))
            }
            StrategyKind::FailoverPeakEwma(seed) => {
                f.run(Failover::new(PowerOfTwoChoices::peak_ewma_from_seed(seed)))
            }
            StrategyKind::WeightedRoundRobin => f.run(WeightedRoundRobin::new()),
            StrategyKind::LeastConnections => f.run(LeastConnections::new()),
            StrategyKind::IpHash(false) => f.run(IpHash::new()),
            StrategyKind::IpHash(true) => f.run(IpHash::full_address()),
            StrategyKind::Ketama(None) => f.run(Ketama::new()),
            StrategyKind::Ketama(Some(b)) => f.run(Ketama::new().bounded_load(b.factor())),
            StrategyKind::Maglev(size, bound) => f.run(maglev(size, bound)),
            StrategyKind::FailoverWeighted(false) => {
                f.run(Failover::new(WeightedRoundRobin::new()))
            }
            StrategyKind::FailoverWeighted(true) => {
                f.run(Failover::zone_aware(WeightedRoundRobin::new()))
            }
            StrategyKind::FailoverMaglev(b) => {
                f.run(Failover::new(Maglev::new().bounded_load(b.factor())))
            }
        }
    }

    /// Whether the strategy applies health per tier (its own panic mode), so that a pick may go
    /// to a backend the balancer-wide stats call unavailable for health reasons.
    pub fn tiered(self) -> bool {
        matches!(
            self,
            StrategyKind::FailoverRoundRobin(_)
                | StrategyKind::FailoverPeakEwma(_)
                | StrategyKind::FailoverWeighted(_)
                | StrategyKind::FailoverMaglev(_)
        )
    }
}
