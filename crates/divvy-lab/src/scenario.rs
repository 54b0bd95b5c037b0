//! Scenarios: a workload, a backend fleet and a health configuration, read from TOML.
//!
//! The built-in scenarios are TOML files under `crates/divvy-lab/scenarios/`, compiled in, so the
//! format a user writes for `--config` is exactly the one the built-ins are written in.
//! `docs/LAB.md` documents every field.

use std::time::Duration;

use divvy::{Backend, HealthConfig};
use serde::Deserialize;

/// The built-in scenarios, by name, in the order `--all` runs them.
pub const BUILTIN: &[(&str, &str)] = &[
    (
        "slow-backend",
        include_str!("../scenarios/slow-backend.toml"),
    ),
    (
        "heterogeneous",
        include_str!("../scenarios/heterogeneous.toml"),
    ),
    (
        "failure-recovery",
        include_str!("../scenarios/failure-recovery.toml"),
    ),
    (
        "membership-change",
        include_str!("../scenarios/membership-change.toml"),
    ),
    ("hot-keys", include_str!("../scenarios/hot-keys.toml")),
    ("backup-tier", include_str!("../scenarios/backup-tier.toml")),
];

/// A built-in scenario by name.
pub fn builtin(name: &str) -> Result<Scenario, String> {
    let (_, text) = BUILTIN.iter().find(|(n, _)| *n == name).ok_or_else(|| {
        let names: Vec<&str> = BUILTIN.iter().map(|(n, _)| *n).collect();
        format!(
            "no built-in scenario `{name}` (built in: {})",
            names.join(", ")
        )
    })?;
    Scenario::from_toml(text)
}

/// One experiment: who sends what to whom, and which strategies compete.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Scenario {
    /// Short name, used for file names.
    pub name: String,
    /// One or two sentences shown above the table.
    #[serde(default)]
    pub description: String,
    /// Requests per strategy unless `--requests` says otherwise.
    #[serde(default = "default_requests")]
    pub requests: u64,
    /// Strategies to compare, by lab name (`--list` shows them); all of them when absent.
    #[serde(default)]
    pub strategies: Option<Vec<String>>,
    /// The backend the load-over-time chart follows; the first one with failures, a slowdown,
    /// a join or a leave when absent.
    #[serde(default)]
    pub watch: Option<String>,
    /// The arrival process.
    pub arrivals: ArrivalSpec,
    /// The keys requests carry.
    #[serde(default)]
    pub keys: KeySpec,
    /// Health rules and active probes.
    #[serde(default)]
    pub health: HealthSpec,
    /// The fleet.
    pub backends: Vec<BackendSpec>,
}

fn default_requests() -> u64 {
    1_000_000
}

/// Open-loop arrivals: Poisson at `rate`, with optional bursts (a two-state Markov-modulated
/// Poisson process).
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ArrivalSpec {
    /// Requests per second outside bursts.
    pub rate: f64,
    /// Bursts at a higher rate.
    #[serde(default)]
    pub burst: Option<BurstSpec>,
}

/// The burst state of the arrival process.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BurstSpec {
    /// Requests per second during a burst.
    pub rate: f64,
    /// Mean burst length (exponentially distributed), milliseconds.
    pub mean_duration_ms: f64,
    /// Mean calm time between bursts (exponentially distributed), milliseconds.
    pub mean_gap_ms: f64,
}

impl ArrivalSpec {
    /// The long-run mean rate, requests per second: each state's rate weighted by the share of
    /// time spent in it.
    pub fn mean_rate(&self) -> f64 {
        match &self.burst {
            None => self.rate,
            Some(b) => {
                (self.rate * b.mean_gap_ms + b.rate * b.mean_duration_ms)
                    / (b.mean_gap_ms + b.mean_duration_ms)
            }
        }
    }
}

/// The key each request carries (`Context::key`, and a client address derived from it).
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KeySpec {
    /// Distinct keys.
    #[serde(default = "default_key_count")]
    pub count: u32,
    /// Zipf exponent: 0 for uniform keys, around 1 for the skew of real caches and users.
    #[serde(default)]
    pub zipf: f64,
}

fn default_key_count() -> u32 {
    100_000
}

impl Default for KeySpec {
    fn default() -> Self {
        KeySpec {
            count: default_key_count(),
            zipf: 0.0,
        }
    }
}

/// Health rules (each absent field keeps divvy's default) and the lab's active prober.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HealthSpec {
    /// nginx `max_fails`.
    pub max_fails: Option<u32>,
    /// nginx `fail_timeout`, milliseconds.
    pub fail_timeout_ms: Option<u64>,
    /// Envoy consecutive-failure ejection (absent: off).
    pub consecutive_failures: Option<u32>,
    /// Envoy `base_ejection_time`, milliseconds.
    pub base_ejection_ms: Option<u64>,
    /// Envoy `max_ejection_time`, milliseconds.
    pub max_ejection_ms: Option<u64>,
    /// Envoy `max_ejection_percent`.
    pub max_ejection_percent: Option<u32>,
    /// Slow-start window, milliseconds.
    pub slow_start_ms: Option<u64>,
    /// Panic threshold, percent.
    pub panic_threshold: Option<u32>,
    /// Peak-EWMA decay, milliseconds.
    pub latency_decay_ms: Option<u64>,
    /// Active probe passes to recover.
    pub rise: Option<u32>,
    /// Active probe failures to fail.
    pub fall: Option<u32>,
    /// Every this many milliseconds the lab probes every backend in the set (absent: no probes).
    pub probe_interval_ms: Option<u64>,
}

impl HealthSpec {
    /// The divvy health configuration.
    pub fn config(&self) -> HealthConfig {
        let ms = Duration::from_millis;
        let mut b = HealthConfig::builder();
        if let Some(v) = self.max_fails {
            b.max_fails(v);
        }
        if let Some(v) = self.fail_timeout_ms {
            b.fail_timeout(ms(v));
        }
        b.consecutive_failures(self.consecutive_failures);
        if let Some(v) = self.base_ejection_ms {
            b.base_ejection_time(ms(v));
        }
        if let Some(v) = self.max_ejection_ms {
            b.max_ejection_time(ms(v));
        }
        if let Some(v) = self.max_ejection_percent {
            b.max_ejection_percent(v);
        }
        if let Some(v) = self.slow_start_ms {
            b.slow_start(ms(v));
        }
        if let Some(v) = self.panic_threshold {
            b.panic_threshold(v);
        }
        if let Some(v) = self.latency_decay_ms {
            b.latency_decay(ms(v));
        }
        if let Some(v) = self.rise {
            b.rise(v);
        }
        if let Some(v) = self.fall {
            b.fall(v);
        }
        b.build()
    }
}

/// A service-time distribution.
#[derive(Clone, Copy, Debug, Deserialize)]
#[serde(tag = "dist", rename_all = "kebab-case", deny_unknown_fields)]
pub enum ServiceSpec {
    /// Exponential with the given mean.
    Exponential {
        /// Mean, milliseconds.
        mean_ms: f64,
    },
    /// Log-normal with the given mean and shape.
    LogNormal {
        /// Mean, milliseconds.
        mean_ms: f64,
        /// Standard deviation of the underlying normal (0.5: mild tail, 1.0: heavy tail).
        sigma: f64,
    },
    /// Exponential around a fast mean, or with probability `slow_prob` around a slow one.
    Bimodal {
        /// Mean of the fast mode, milliseconds.
        fast_ms: f64,
        /// Mean of the slow mode, milliseconds.
        slow_ms: f64,
        /// Probability of the slow mode.
        slow_prob: f64,
    },
    /// Always `ms`.
    Constant {
        /// Milliseconds.
        ms: f64,
    },
}

impl ServiceSpec {
    /// The mean service time, milliseconds.
    pub fn mean_ms(&self) -> f64 {
        match *self {
            ServiceSpec::Exponential { mean_ms } | ServiceSpec::LogNormal { mean_ms, .. } => {
                mean_ms
            }
            ServiceSpec::Bimodal {
                fast_ms,
                slow_ms,
                slow_prob,
            } => fast_ms * (1.0 - slow_prob) + slow_ms * slow_prob,
            ServiceSpec::Constant { ms } => ms,
        }
    }
}

/// A backend (or `replicas` identical ones): `servers` parallel servers behind one FIFO queue.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BackendSpec {
    /// Identity; replicas are named `name-1`, `name-2`, ….
    pub name: String,
    /// Identical copies of this backend.
    #[serde(default = "one")]
    pub replicas: u32,
    /// Requests served in parallel; the rest wait in FIFO order.
    #[serde(default = "one")]
    pub servers: u32,
    /// divvy weight.
    #[serde(default = "one")]
    pub weight: u32,
    /// Priority tier (0 primary, 1 backup …), honoured by failover.
    #[serde(default)]
    pub tier: u8,
    /// Service-time distribution.
    pub service: ServiceSpec,
    /// Multiplies every service time (2.0: twice as slow).
    #[serde(default = "unit")]
    pub slowdown: f64,
    /// Joins the set at this fraction of the run (absent: from the start).
    #[serde(default)]
    pub join_at: Option<f64>,
    /// Leaves the set at this fraction of the run (absent: stays).
    #[serde(default)]
    pub leave_at: Option<f64>,
    /// Windows in which every request fails fast.
    #[serde(default)]
    pub failures: Vec<FailureSpec>,
}

fn one() -> u32 {
    1
}

fn unit() -> f64 {
    1.0
}

/// A window of fast failures.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FailureSpec {
    /// Start, as a fraction of the run.
    pub from: f64,
    /// End, as a fraction of the run.
    pub until: f64,
    /// How long a failing request takes, milliseconds.
    #[serde(default = "unit")]
    pub error_ms: f64,
    /// How the failure looks to the caller.
    #[serde(default)]
    pub kind: FailureKind,
}

/// How a failing backend fails, which decides what the balancer is told.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum FailureKind {
    /// The connection is refused: a failure with no latency to report (what the tower adapter
    /// reports for a transport error).
    #[default]
    Refused,
    /// The backend answers with an error (a 5xx): a failure and its latency, which feeds the
    /// latency EWMA like any response.
    ErrorResponse,
}

/// A backend after replica expansion.
#[derive(Clone, Debug)]
pub struct Expanded {
    /// Identity.
    pub name: String,
    /// The spec it came from.
    pub spec: BackendSpec,
}

impl Scenario {
    /// Parses and validates a scenario.
    pub fn from_toml(text: &str) -> Result<Scenario, String> {
        let sc: Scenario = toml::from_str(text).map_err(|e| e.to_string())?;
        sc.validate()?;
        Ok(sc)
    }

    /// Backends with replicas expanded, in file order.
    pub fn expanded(&self) -> Vec<Expanded> {
        let mut out = Vec::new();
        for b in &self.backends {
            for r in 1..=b.replicas {
                let name = if b.replicas == 1 {
                    b.name.clone()
                } else {
                    format!("{}-{r}", b.name)
                };
                out.push(Expanded {
                    name,
                    spec: b.clone(),
                });
            }
        }
        out
    }

    /// The divvy backend of an expanded backend.
    pub fn divvy_backend(e: &Expanded) -> Backend {
        Backend::new(e.name.as_str())
            .weight(e.spec.weight)
            .tier(e.spec.tier)
    }

    /// Requests per second the fleet can serve at full utilisation (all backends counted).
    pub fn capacity(&self) -> f64 {
        self.expanded()
            .iter()
            .filter(|e| e.spec.join_at.is_none() && e.spec.leave_at.is_none())
            .map(|e| {
                f64::from(e.spec.servers) * 1000.0 / (e.spec.service.mean_ms() * e.spec.slowdown)
            })
            .sum()
    }

    /// The backend the load-over-time chart follows.
    pub fn watched(&self) -> Option<String> {
        if let Some(w) = &self.watch {
            return Some(w.clone());
        }
        self.expanded()
            .into_iter()
            .find(|e| {
                !e.spec.failures.is_empty()
                    || e.spec.slowdown != 1.0
                    || e.spec.join_at.is_some()
                    || e.spec.leave_at.is_some()
            })
            .map(|e| e.name)
    }

    fn validate(&self) -> Result<(), String> {
        let positive = |v: f64, what: &str| {
            if v.is_finite() && v > 0.0 {
                Ok(())
            } else {
                Err(format!("{what} = {v}: must be a positive number"))
            }
        };
        let fraction = |v: f64, what: &str| {
            if (0.0..=1.0).contains(&v) {
                Ok(())
            } else {
                Err(format!(
                    "{what} = {v}: must be a fraction of the run, 0..=1"
                ))
            }
        };
        if self.requests == 0 {
            return Err("requests must be at least 1".into());
        }
        positive(self.arrivals.rate, "arrivals.rate")?;
        if let Some(b) = &self.arrivals.burst {
            positive(b.rate, "arrivals.burst.rate")?;
            positive(b.mean_duration_ms, "arrivals.burst.mean_duration_ms")?;
            positive(b.mean_gap_ms, "arrivals.burst.mean_gap_ms")?;
        }
        if self.keys.count == 0 {
            return Err("keys.count must be at least 1".into());
        }
        if !(self.keys.zipf >= 0.0 && self.keys.zipf.is_finite()) {
            return Err(format!("keys.zipf = {}: must be 0 or more", self.keys.zipf));
        }
        if self.backends.is_empty() {
            return Err("a scenario needs at least one [[backends]]".into());
        }
        let mut seen = std::collections::BTreeSet::new();
        for e in self.expanded() {
            if !seen.insert(e.name.clone()) {
                return Err(format!("backend `{}` is defined twice", e.name));
            }
        }
        for b in &self.backends {
            let at = |f: &str| format!("backend `{}`: {f}", b.name);
            if b.replicas == 0 || b.servers == 0 {
                return Err(at("replicas and servers must be at least 1"));
            }
            positive(b.service.mean_ms(), &at("service mean"))?;
            positive(b.slowdown, &at("slowdown"))?;
            crate::workload::ServiceTime::new(&b.service, b.slowdown).map_err(|e| at(&e))?;
            if let Some(j) = b.join_at {
                fraction(j, &at("join_at"))?;
            }
            if let Some(l) = b.leave_at {
                fraction(l, &at("leave_at"))?;
                if b.join_at.is_some_and(|j| j >= l) {
                    return Err(at("join_at must come before leave_at"));
                }
            }
            for f in &b.failures {
                fraction(f.from, &at("failures.from"))?;
                fraction(f.until, &at("failures.until"))?;
                positive(f.error_ms, &at("failures.error_ms"))?;
                if f.from >= f.until {
                    return Err(at("failures.from must come before failures.until"));
                }
            }
        }
        if self.expanded().iter().all(|e| e.spec.join_at.is_some()) {
            return Err("at least one backend must be in the set from the start".into());
        }
        if let Some(w) = &self.watch {
            if !seen.contains(w) {
                return Err(format!("watch = `{w}` names no backend"));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_builtin_scenario_parses_and_validates() {
        for (name, text) in BUILTIN {
            let sc = Scenario::from_toml(text).unwrap_or_else(|e| panic!("{name}: {e}"));
            assert_eq!(&sc.name, name);
        }
    }

    #[test]
    fn a_typo_in_a_field_is_rejected_with_its_name() {
        let err = Scenario::from_toml(
            "name = \"x\"\n[arrivals]\nrate = 1.0\n[[backends]]\nname = \"a\"\nserverz = 2\n\
             service = { dist = \"exponential\", mean_ms = 1.0 }\n",
        )
        .unwrap_err();
        assert!(err.contains("serverz"), "{err}");
    }

    #[test]
    fn replicas_expand_to_numbered_backends_and_duplicates_are_rejected() {
        let text =
            "name = \"x\"\n[arrivals]\nrate = 1.0\n[[backends]]\nname = \"a\"\nreplicas = 3\n\
                    service = { dist = \"constant\", ms = 1.0 }\n";
        let sc = Scenario::from_toml(text).unwrap();
        let names: Vec<String> = sc.expanded().into_iter().map(|e| e.name).collect();
        assert_eq!(names, ["a-1", "a-2", "a-3"]);
        let dup = format!(
            "{text}[[backends]]\nname = \"a-2\"\nservice = {{ dist = \"constant\", ms = 1.0 }}\n"
        );
        assert_eq!(
            Scenario::from_toml(&dup).unwrap_err(),
            "backend `a-2` is defined twice"
        );
    }
}
