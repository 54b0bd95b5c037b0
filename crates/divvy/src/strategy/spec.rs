//! Strategies by name: one canonical name per strategy, and specs that build any of them.

use std::fmt;
use std::str::FromStr;

use crate::strategy::{
    BoxStrategy, Failover, IpHash, Ketama, LeastConnections, Maglev, PowerOfTwoChoices, Random,
    RoundRobin, WeightedRoundRobin,
};

/// Every strategy divvy ships, by its canonical name: the name configs use, [`Display`](fmt::Display) prints,
/// [`FromStr`] accepts (no aliases) and [`Strategy::name`](super::Strategy::name) returns.
///
/// ```
/// use divvy::strategy::StrategyKind;
///
/// let kind: StrategyKind = "least_conn".parse()?;
/// assert_eq!(kind, StrategyKind::LeastConn);
/// assert_eq!(kind.to_string(), "least_conn");
/// # Ok::<(), divvy::strategy::ParseStrategyError>(())
/// ```
#[non_exhaustive]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum StrategyKind {
    /// `round_robin`: [`RoundRobin`].
    RoundRobin,
    /// `weighted_round_robin`: [`WeightedRoundRobin`], nginx's default.
    WeightedRoundRobin,
    /// `least_conn`: [`LeastConnections`].
    LeastConn,
    /// `ip_hash`: [`IpHash`].
    IpHash,
    /// `ketama`: [`Ketama`], nginx's `hash $key consistent`.
    Ketama,
    /// `maglev`: [`Maglev`].
    Maglev,
    /// `random`: [`Random`].
    Random,
    /// `p2c`: [`PowerOfTwoChoices::new`], least in flight of two.
    P2c,
    /// `p2c_ewma`: [`PowerOfTwoChoices::peak_ewma`], least peak-EWMA cost of two.
    P2cEwma,
}

impl StrategyKind {
    /// Every kind, in the order of the documentation's table.
    pub const ALL: [StrategyKind; 9] = [
        StrategyKind::RoundRobin,
        StrategyKind::WeightedRoundRobin,
        StrategyKind::LeastConn,
        StrategyKind::IpHash,
        StrategyKind::Ketama,
        StrategyKind::Maglev,
        StrategyKind::Random,
        StrategyKind::P2c,
        StrategyKind::P2cEwma,
    ];

    /// The canonical name.
    pub const fn name(self) -> &'static str {
        match self {
            StrategyKind::RoundRobin => "round_robin",
            StrategyKind::WeightedRoundRobin => "weighted_round_robin",
            StrategyKind::LeastConn => "least_conn",
            StrategyKind::IpHash => "ip_hash",
            StrategyKind::Ketama => "ketama",
            StrategyKind::Maglev => "maglev",
            StrategyKind::Random => "random",
            StrategyKind::P2c => "p2c",
            StrategyKind::P2cEwma => "p2c_ewma",
        }
    }

    /// The strategy with its defaults, boxed.
    pub fn build(self) -> BoxStrategy {
        StrategySpec::new(self).build()
    }

    fn accepts(self, parameter: Parameter) -> bool {
        match parameter {
            Parameter::BoundedLoad => matches!(self, StrategyKind::Ketama | StrategyKind::Maglev),
            Parameter::Placement => self == StrategyKind::IpHash,
            Parameter::Seed => matches!(
                self,
                StrategyKind::Random | StrategyKind::P2c | StrategyKind::P2cEwma
            ),
            Parameter::Failover => true,
        }
    }
}

impl fmt::Display for StrategyKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for StrategyKind {
    type Err = ParseStrategyError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        StrategyKind::ALL
            .into_iter()
            .find(|k| k.name() == s)
            .ok_or_else(|| ParseStrategyError::UnknownStrategy { name: s.into() })
    }
}

/// How [`Failover`] wraps a spec's strategy.
#[non_exhaustive]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum FailoverMode {
    /// `failover=priority`: [`Failover::new`], lower tiers first (nginx `backup`).
    Priority,
    /// `failover=zone`: [`Failover::zone_aware`], and the caller's zone first inside a tier.
    Zone,
}

impl FailoverMode {
    const fn name(self) -> &'static str {
        match self {
            FailoverMode::Priority => "priority",
            FailoverMode::Zone => "zone",
        }
    }
}

/// A strategy and its parameters, as a config names it: the canonical name followed by
/// `parameter=value` words, e.g. `ketama bounded_load=1.25` or `p2c seed=7 failover=priority`.
///
/// | parameter | strategies | values | default |
/// |---|---|---|---|
/// | `bounded_load` | `ketama`, `maglev` | a load factor, 1.0 to 1,000,000 (Mirrokni et al.) | unbounded |
/// | `placement` | `ip_hash` | `nginx` (first three IPv4 octets), `full_address` | `nginx` |
/// | `seed` | `random`, `p2c`, `p2c_ewma` | a `u64`, for a reproducible stream | OS randomness |
/// | `failover` | all | `priority` (backup tiers), `zone` (tiers, then the caller's zone) | none |
///
/// [`Display`](fmt::Display) prints the canonical form (defaults left out), which parses back to an equal spec.
///
/// ```
/// use divvy::{Backend, Balancer, Context, Strategy};
/// use divvy::strategy::StrategySpec;
///
/// let spec: StrategySpec = "maglev bounded_load=1.25".parse()?;
/// let lb = Balancer::new(spec.build(), ["a", "b", "c"].map(Backend::new))?;
/// assert!(lb.strategy().tracks_total_in_flight());
/// let _pick = lb.pick(&Context::new().key(b"user-42"))?;
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Clone, Debug, PartialEq)]
pub struct StrategySpec {
    kind: StrategyKind,
    bounded_load: Option<f64>,
    full_address: bool,
    seed: Option<u64>,
    failover: Option<FailoverMode>,
}

impl StrategySpec {
    /// `kind` with its defaults.
    pub const fn new(kind: StrategyKind) -> Self {
        StrategySpec {
            kind,
            bounded_load: None,
            full_address: false,
            seed: None,
            failover: None,
        }
    }

    /// The strategy.
    pub const fn kind(&self) -> StrategyKind {
        self.kind
    }

    /// Bounds each backend's load to `c` times the average (`ketama`, `maglev` only).
    pub fn bounded_load(mut self, c: f64) -> Result<Self, ParseStrategyError> {
        self.check(Parameter::BoundedLoad)?;
        self.bounded_load = Some(check_factor(c, &c.to_string())?);
        Ok(self)
    }

    /// Hashes the whole client address instead of nginx's first three octets (`ip_hash` only).
    pub fn full_address(mut self) -> Result<Self, ParseStrategyError> {
        self.check(Parameter::Placement)?;
        self.full_address = true;
        Ok(self)
    }

    /// A reproducible random stream (`random`, `p2c`, `p2c_ewma` only).
    pub fn seed(mut self, seed: u64) -> Result<Self, ParseStrategyError> {
        self.check(Parameter::Seed)?;
        self.seed = Some(seed);
        Ok(self)
    }

    /// Wraps the strategy in [`Failover`] (any strategy).
    #[must_use]
    pub const fn failover(mut self, mode: FailoverMode) -> Self {
        self.failover = Some(mode);
        self
    }

    /// The bounded-load factor, if set.
    pub const fn load_factor(&self) -> Option<f64> {
        self.bounded_load
    }

    /// The seed, if set.
    pub const fn seed_value(&self) -> Option<u64> {
        self.seed
    }

    /// The failover wrapping, if set.
    pub const fn failover_mode(&self) -> Option<FailoverMode> {
        self.failover
    }

    /// Whether `ip_hash` hashes the full address.
    pub const fn is_full_address(&self) -> bool {
        self.full_address
    }

    /// Builds the strategy, boxed.
    pub fn build(&self) -> BoxStrategy {
        match self.failover {
            None => self.build_inner(),
            Some(FailoverMode::Priority) => Failover::new(self.build_inner()).into(),
            Some(FailoverMode::Zone) => Failover::zone_aware(self.build_inner()).into(),
        }
    }

    fn build_inner(&self) -> BoxStrategy {
        let p2c = |s: PowerOfTwoChoices| match self.seed {
            Some(seed) => s.seed(seed),
            None => s,
        };
        match self.kind {
            StrategyKind::RoundRobin => RoundRobin::new().into(),
            StrategyKind::WeightedRoundRobin => WeightedRoundRobin::new().into(),
            StrategyKind::LeastConn => LeastConnections::new().into(),
            StrategyKind::IpHash if self.full_address => IpHash::full_address().into(),
            StrategyKind::IpHash => IpHash::new().into(),
            StrategyKind::Ketama => match self.bounded_load {
                Some(c) => Ketama::new().bounded_load(c).into(),
                None => Ketama::new().into(),
            },
            StrategyKind::Maglev => match self.bounded_load {
                Some(c) => Maglev::new().bounded_load(c).into(),
                None => Maglev::new().into(),
            },
            StrategyKind::Random => match self.seed {
                Some(seed) => Random::from_seed(seed).into(),
                None => Random::new().into(),
            },
            StrategyKind::P2c => p2c(PowerOfTwoChoices::new()).into(),
            StrategyKind::P2cEwma => p2c(PowerOfTwoChoices::peak_ewma()).into(),
        }
    }

    fn check(&self, parameter: Parameter) -> Result<(), ParseStrategyError> {
        if self.kind.accepts(parameter) {
            Ok(())
        } else {
            Err(ParseStrategyError::UnsupportedParameter {
                strategy: self.kind,
                parameter: parameter.name(),
            })
        }
    }
}

impl From<StrategyKind> for StrategySpec {
    fn from(kind: StrategyKind) -> Self {
        StrategySpec::new(kind)
    }
}

impl fmt::Display for StrategySpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.kind.name())?;
        if let Some(c) = self.bounded_load {
            write!(f, " bounded_load={c}")?;
        }
        if self.full_address {
            f.write_str(" placement=full_address")?;
        }
        if let Some(seed) = self.seed {
            write!(f, " seed={seed}")?;
        }
        if let Some(mode) = self.failover {
            write!(f, " failover={}", mode.name())?;
        }
        Ok(())
    }
}

impl FromStr for StrategySpec {
    type Err = ParseStrategyError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let mut words = s.split_ascii_whitespace();
        let kind: StrategyKind = words.next().ok_or(ParseStrategyError::Empty)?.parse()?;
        let mut spec = StrategySpec::new(kind);
        let mut seen = Vec::new();
        for word in words {
            let (name, value) =
                word.split_once('=')
                    .ok_or_else(|| ParseStrategyError::MissingValue {
                        parameter: word.into(),
                    })?;
            let parameter = Parameter::ALL
                .into_iter()
                .find(|p| p.name() == name)
                .ok_or_else(|| ParseStrategyError::UnknownParameter {
                    strategy: kind,
                    parameter: name.into(),
                })?;
            spec.check(parameter)?;
            if seen.contains(&parameter) {
                return Err(ParseStrategyError::Repeated {
                    parameter: parameter.name(),
                });
            }
            seen.push(parameter);
            let invalid = |expected: &'static str| ParseStrategyError::InvalidValue {
                parameter: parameter.name(),
                value: value.into(),
                expected,
            };
            match parameter {
                Parameter::BoundedLoad => {
                    let c = value.parse().map_err(|_| invalid(FACTOR_RANGE))?;
                    spec.bounded_load = Some(check_factor(c, value)?);
                }
                Parameter::Placement => match value {
                    "nginx" => spec.full_address = false,
                    "full_address" => spec.full_address = true,
                    _ => return Err(invalid("`nginx` or `full_address`")),
                },
                Parameter::Seed => {
                    spec.seed = Some(value.parse().map_err(|_| invalid("an unsigned integer"))?);
                }
                Parameter::Failover => match value {
                    "priority" => spec.failover = Some(FailoverMode::Priority),
                    "zone" => spec.failover = Some(FailoverMode::Zone),
                    _ => return Err(invalid("`priority` or `zone`")),
                },
            }
        }
        Ok(spec)
    }
}

impl FromStr for BoxStrategy {
    type Err = ParseStrategyError;

    /// Parses a [`StrategySpec`] and builds it.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Ok(s.parse::<StrategySpec>()?.build())
    }
}

const FACTOR_RANGE: &str = "a number from 1.0 to 1000000";

/// The range [`Ketama`] and [`Maglev`] accept, checked here too so a config fails when it is
/// read rather than when the first set is prepared.
fn check_factor(c: f64, text: &str) -> Result<f64, ParseStrategyError> {
    if (1.0..=1_000_000.0).contains(&c) {
        Ok(c)
    } else {
        Err(ParseStrategyError::InvalidValue {
            parameter: Parameter::BoundedLoad.name(),
            value: text.into(),
            expected: FACTOR_RANGE,
        })
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Parameter {
    BoundedLoad,
    Placement,
    Seed,
    Failover,
}

impl Parameter {
    const ALL: [Parameter; 4] = [
        Parameter::BoundedLoad,
        Parameter::Placement,
        Parameter::Seed,
        Parameter::Failover,
    ];

    const fn name(self) -> &'static str {
        match self {
            Parameter::BoundedLoad => "bounded_load",
            Parameter::Placement => "placement",
            Parameter::Seed => "seed",
            Parameter::Failover => "failover",
        }
    }
}

/// The list of valid names, for error messages.
struct ValidNames;

impl fmt::Display for ValidNames {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, k) in StrategyKind::ALL.iter().enumerate() {
            if i > 0 {
                f.write_str(", ")?;
            }
            f.write_str(k.name())?;
        }
        Ok(())
    }
}

/// Why a strategy name or spec did not parse.
#[non_exhaustive]
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ParseStrategyError {
    /// No name was given.
    #[error("no strategy named (expected one of: {})", ValidNames)]
    Empty,
    /// The name is not one of [`StrategyKind::ALL`].
    #[error("unknown strategy `{name}` (expected one of: {})", ValidNames)]
    UnknownStrategy {
        /// The name given.
        name: String,
    },
    /// A word after the name is not `parameter=value`.
    #[error("strategy parameter `{parameter}` has no value (write `{parameter}=VALUE`)")]
    MissingValue {
        /// The word given.
        parameter: String,
    },
    /// No strategy takes a parameter of this name.
    #[error(
        "unknown parameter `{parameter}` for strategy {strategy} \
         (parameters are bounded_load, placement, seed, failover)"
    )]
    UnknownParameter {
        /// The strategy named.
        strategy: StrategyKind,
        /// The parameter given.
        parameter: String,
    },
    /// The parameter exists but this strategy does not take it.
    #[error("strategy {strategy} takes no `{parameter}` parameter")]
    UnsupportedParameter {
        /// The strategy named.
        strategy: StrategyKind,
        /// The parameter given.
        parameter: &'static str,
    },
    /// A parameter is given twice.
    #[error("strategy parameter `{parameter}` is given twice")]
    Repeated {
        /// The parameter.
        parameter: &'static str,
    },
    /// A parameter's value is not one it accepts.
    #[error("strategy parameter `{parameter}`: `{value}` is invalid (expected {expected})")]
    InvalidValue {
        /// The parameter.
        parameter: &'static str,
        /// The value given.
        value: String,
        /// What it accepts.
        expected: &'static str,
    },
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::Backend;
    use crate::balancer::Balancer;
    use crate::context::Context;
    use crate::strategy::Strategy;

    #[test]
    fn every_name_round_trips_and_is_the_strategys_own_name() {
        for kind in StrategyKind::ALL {
            assert_eq!(kind.to_string().parse::<StrategyKind>(), Ok(kind));
            assert_eq!(kind.build().name(), kind.name());
        }
    }

    #[test]
    fn an_unknown_name_is_a_typed_error_listing_the_valid_ones() {
        let err = "least-connections".parse::<StrategyKind>().unwrap_err();
        assert_eq!(
            err,
            ParseStrategyError::UnknownStrategy {
                name: "least-connections".into()
            }
        );
        assert_eq!(
            err.to_string(),
            "unknown strategy `least-connections` (expected one of: round_robin, \
             weighted_round_robin, least_conn, ip_hash, ketama, maglev, random, p2c, p2c_ewma)"
        );
        assert_eq!("".parse::<StrategySpec>(), Err(ParseStrategyError::Empty));
    }

    #[test]
    fn specs_with_parameters_round_trip_through_display() {
        for text in [
            "ketama bounded_load=1.25",
            "maglev bounded_load=2 failover=zone",
            "ip_hash placement=full_address",
            "random seed=7",
            "p2c_ewma seed=18446744073709551615 failover=priority",
            "least_conn",
        ] {
            let spec: StrategySpec = text.parse().unwrap();
            assert_eq!(spec.to_string(), text);
            assert_eq!(spec.to_string().parse::<StrategySpec>().unwrap(), spec);
        }
        // Defaults are left out of the canonical form.
        let spec: StrategySpec = "ip_hash placement=nginx".parse().unwrap();
        assert_eq!(spec.to_string(), "ip_hash");
    }

    #[test]
    fn bad_parameters_are_typed_errors_naming_them() {
        let parse = |s: &str| s.parse::<StrategySpec>().unwrap_err();
        assert_eq!(
            parse("round_robin bounded_load=1.5"),
            ParseStrategyError::UnsupportedParameter {
                strategy: StrategyKind::RoundRobin,
                parameter: "bounded_load"
            }
        );
        assert_eq!(
            parse("ketama bounded_load=0.5"),
            ParseStrategyError::InvalidValue {
                parameter: "bounded_load",
                value: "0.5".into(),
                expected: FACTOR_RANGE
            }
        );
        assert_eq!(
            parse("ketama bounded_load=NaN"),
            ParseStrategyError::InvalidValue {
                parameter: "bounded_load",
                value: "NaN".into(),
                expected: FACTOR_RANGE
            }
        );
        assert_eq!(
            parse("ketama weight=3"),
            ParseStrategyError::UnknownParameter {
                strategy: StrategyKind::Ketama,
                parameter: "weight".into()
            }
        );
        assert_eq!(
            parse("random seed"),
            ParseStrategyError::MissingValue {
                parameter: "seed".into()
            }
        );
        assert_eq!(
            parse("random seed=1 seed=2"),
            ParseStrategyError::Repeated { parameter: "seed" }
        );
        assert_eq!(
            StrategySpec::new(StrategyKind::P2c).full_address(),
            Err(ParseStrategyError::UnsupportedParameter {
                strategy: StrategyKind::P2c,
                parameter: "placement"
            })
        );
    }

    fn sequence<S: Strategy>(strategy: S, ctx: &Context<'_>) -> Vec<String> {
        let set = (0..5).map(|i| Backend::new(format!("10.0.0.{i}:80")).weight(i % 3 + 1));
        let lb = Balancer::new(strategy, set).unwrap();
        (0..50)
            .map(|_| lb.pick(ctx).unwrap().id().to_owned())
            .collect()
    }

    #[test]
    fn a_strategy_built_from_a_string_picks_like_the_static_one() {
        let ctx = Context::new()
            .client_ip("192.0.2.9".parse().unwrap())
            .key(b"user-7");
        let built = |s: &str| sequence(s.parse::<BoxStrategy>().unwrap(), &ctx);
        assert_eq!(built("round_robin"), sequence(RoundRobin::new(), &ctx));
        assert_eq!(
            built("weighted_round_robin"),
            sequence(WeightedRoundRobin::new(), &ctx)
        );
        assert_eq!(built("least_conn"), sequence(LeastConnections::new(), &ctx));
        assert_eq!(built("ip_hash"), sequence(IpHash::new(), &ctx));
        assert_eq!(
            built("ip_hash placement=full_address"),
            sequence(IpHash::full_address(), &ctx)
        );
        assert_eq!(built("ketama"), sequence(Ketama::new(), &ctx));
        assert_eq!(
            built("ketama bounded_load=1.25"),
            sequence(Ketama::new().bounded_load(1.25), &ctx)
        );
        assert_eq!(built("maglev"), sequence(Maglev::new(), &ctx));
        assert_eq!(built("random seed=3"), sequence(Random::from_seed(3), &ctx));
        assert_eq!(
            built("p2c seed=3"),
            sequence(PowerOfTwoChoices::from_seed(3), &ctx)
        );
        assert_eq!(
            built("p2c_ewma seed=3"),
            sequence(PowerOfTwoChoices::peak_ewma().seed(3), &ctx)
        );
        assert_eq!(
            built("weighted_round_robin failover=priority"),
            sequence(Failover::new(WeightedRoundRobin::new()), &ctx)
        );
    }

    #[test]
    fn failover_wraps_the_named_strategy() {
        let spec: StrategySpec = "ketama bounded_load=1.5 failover=zone".parse().unwrap();
        let s = spec.build();
        assert_eq!(s.name(), "failover");
        assert!(s.tracks_total_in_flight());
    }
}
