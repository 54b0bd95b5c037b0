//! Workload models: service-time distributions, bursty arrivals and key popularity.
//!
//! Every model samples from a caller-supplied seeded RNG, so a run is a pure function of its
//! scenario and seed. Times are `f64` nanoseconds until the simulator rounds them onto its clock.

use rand::Rng;
use rand_distr::{Distribution, Exp, LogNormal, Zipf};
use rand_pcg::Pcg64Mcg;

use crate::scenario::{ArrivalSpec, KeySpec, ServiceSpec};

/// The RNG of every stream: PCG with a documented, platform-independent output sequence.
pub type SimRng = Pcg64Mcg;

/// A seeded RNG for one independent stream of a run. Arrivals, keys and each backend's service
/// times draw from separate streams, so every strategy sees the same arrivals and keys for the
/// same seed (common random numbers: differences between strategies are not sampling noise).
pub fn stream(seed: u64, stream: u64) -> SimRng {
    use rand::SeedableRng;
    // splitmix64 of (seed, stream): distinct, well-mixed seeds for nearby inputs.
    let mut z = seed ^ stream.wrapping_mul(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    SimRng::seed_from_u64(z ^ (z >> 31))
}

const NANOS_PER_MS: f64 = 1e6;

// === Service times ===

/// A service-time distribution, in nanoseconds.
#[derive(Clone, Debug)]
pub enum ServiceTime {
    /// Memoryless: the M in M/M/k.
    Exponential(Exp<f64>),
    /// Heavy right tail, the usual shape of measured RPC latency.
    LogNormal(LogNormal<f64>),
    /// Mostly fast, sometimes slow (a cache hit or miss), each mode exponential.
    Bimodal {
        /// The fast mode's service time.
        fast: Exp<f64>,
        /// The slow mode's service time.
        slow: Exp<f64>,
        /// How often a request takes the slow mode, in `[0, 1]`.
        slow_prob: f64,
    },
    /// Always the same time.
    Constant(f64),
}

impl ServiceTime {
    /// Builds the distribution from its scenario description, scaled by `slowdown`.
    pub fn new(spec: &ServiceSpec, slowdown: f64) -> Result<Self, String> {
        let ns = |ms: f64| ms * NANOS_PER_MS * slowdown;
        let exp = |mean_ms: f64, field: &str| {
            Exp::new(1.0 / ns(mean_ms)).map_err(|e| format!("{field} = {mean_ms}: {e}"))
        };
        Ok(match *spec {
            ServiceSpec::Exponential { mean_ms } => Self::Exponential(exp(mean_ms, "mean_ms")?),
            ServiceSpec::LogNormal { mean_ms, sigma } => {
                // E[X] = exp(mu + sigma²/2), so mu follows from the mean asked for.
                let mu = ns(mean_ms).ln() - sigma * sigma / 2.0;
                Self::LogNormal(
                    LogNormal::new(mu, sigma).map_err(|e| format!("sigma = {sigma}: {e}"))?,
                )
            }
            ServiceSpec::Bimodal {
                fast_ms,
                slow_ms,
                slow_prob,
            } => {
                if !(0.0..=1.0).contains(&slow_prob) {
                    return Err(format!("slow_prob = {slow_prob}: must be within 0..=1"));
                }
                Self::Bimodal {
                    fast: exp(fast_ms, "fast_ms")?,
                    slow: exp(slow_ms, "slow_ms")?,
                    slow_prob,
                }
            }
            ServiceSpec::Constant { ms } => Self::Constant(ns(ms)),
        })
    }

    /// One service time, in nanoseconds.
    #[inline]
    pub fn sample(&self, rng: &mut SimRng) -> f64 {
        match self {
            Self::Exponential(e) => e.sample(rng),
            Self::LogNormal(l) => l.sample(rng),
            Self::Bimodal {
                fast,
                slow,
                slow_prob,
            } => {
                if rng.random::<f64>() < *slow_prob {
                    slow.sample(rng)
                } else {
                    fast.sample(rng)
                }
            }
            Self::Constant(c) => *c,
        }
    }
}

// === Arrivals ===

/// Open-loop arrivals: a Poisson process whose rate switches between a calm and a burst state
/// (a two-state Markov-modulated Poisson process). Without a burst state it is plain Poisson.
#[derive(Clone, Debug)]
pub struct Arrivals {
    /// Rate (per nanosecond) and mean dwell time (nanoseconds) of each state.
    states: [(f64, f64); 2],
    bursty: bool,
    state: usize,
    state_ends: f64,
    now: f64,
}

impl Arrivals {
    /// The arrival process of a scenario, starting calm at time zero.
    pub fn new(spec: &ArrivalSpec, rng: &mut SimRng) -> Self {
        let calm = (
            spec.rate / 1e9,
            spec.burst
                .as_ref()
                .map_or(f64::INFINITY, |b| b.mean_gap_ms * NANOS_PER_MS),
        );
        let burst = spec.burst.as_ref().map_or((0.0, 0.0), |b| {
            (b.rate / 1e9, b.mean_duration_ms * NANOS_PER_MS)
        });
        let mut a = Arrivals {
            states: [calm, burst],
            bursty: spec.burst.is_some(),
            state: 0,
            state_ends: f64::INFINITY,
            now: 0.0,
        };
        a.state_ends = a.dwell(rng);
        a
    }

    fn dwell(&self, rng: &mut SimRng) -> f64 {
        if !self.bursty {
            return f64::INFINITY;
        }
        let mean = self.states[self.state].1;
        -mean * (1.0 - rng.random::<f64>()).ln()
    }

    /// The time of the next arrival, in nanoseconds since the start.
    ///
    /// Exact for a modulated process: an exponential gap that would cross the end of the current
    /// state is discarded and redrawn at the new rate from the switch, which the memoryless
    /// property makes equivalent to thinning.
    pub fn next(&mut self, rng: &mut SimRng) -> f64 {
        loop {
            let rate = self.states[self.state].0;
            let gap = -(1.0 - rng.random::<f64>()).ln() / rate;
            if self.now + gap <= self.state_ends {
                self.now += gap;
                return self.now;
            }
            self.now = self.state_ends;
            self.state ^= 1;
            self.state_ends = self.now + self.dwell(rng);
        }
    }
}

// === Keys ===

/// Which key (client, user, URL) a request carries: uniform or Zipf-distributed ranks.
#[derive(Clone, Debug)]
pub enum Keys {
    /// Every key equally likely.
    Uniform(u32),
    /// Rank `r` with probability proportional to `r^-s`.
    Zipf(Zipf<f64>),
}

impl Keys {
    /// The key model of a scenario.
    pub fn new(spec: &KeySpec) -> Result<Self, String> {
        if spec.count == 0 {
            return Err("keys.count must be at least 1".into());
        }
        if spec.zipf == 0.0 {
            Ok(Self::Uniform(spec.count))
        } else {
            Zipf::new(f64::from(spec.count), spec.zipf)
                .map(Self::Zipf)
                .map_err(|e| format!("keys.zipf = {}: {e}", spec.zipf))
        }
    }

    /// A key index in `0..count`; with Zipf, index 0 is the hottest key.
    #[inline]
    pub fn sample(&self, rng: &mut SimRng) -> u32 {
        match self {
            Self::Uniform(n) => rng.random_range(0..*n),
            Self::Zipf(z) => z.sample(rng) as u32 - 1,
        }
    }
}

/// The client address of key `k`: a fixed scramble of the key over the IPv4 space, so that
/// clients land in different /24 networks (what nginx's `ip_hash` hashes) as real clients do.
#[inline]
pub fn client_ip(k: u32) -> std::net::IpAddr {
    let x = k.wrapping_add(1).wrapping_mul(0x9E37_79B1).rotate_left(16) ^ 0x5bd1_e995;
    std::net::IpAddr::V4(std::net::Ipv4Addr::from(x))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_bursty_process_keeps_its_long_run_mean_rate() {
        let spec = ArrivalSpec {
            rate: 1000.0,
            burst: Some(crate::scenario::BurstSpec {
                rate: 5000.0,
                mean_duration_ms: 10.0,
                mean_gap_ms: 40.0,
            }),
        };
        // 400,000 arrivals span about 4,400 calm/burst cycles; the share of time in bursts then
        // has a standard error near 0.4 %, so the rate's is near 0.9 %: 3 % is over 3 sigma.
        let mut rng = stream(1, 1);
        let mut a = Arrivals::new(&spec, &mut rng);
        let n = 400_000;
        let mut t = 0.0;
        for _ in 0..n {
            t = a.next(&mut rng);
        }
        let observed = n as f64 / (t / 1e9);
        let expected = spec.mean_rate();
        assert!(
            (observed / expected - 1.0).abs() < 0.03,
            "{observed} vs {expected}"
        );
    }
}
