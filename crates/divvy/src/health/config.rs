//! Health configuration: every knob, its default, and what it corresponds to elsewhere.

use std::time::Duration;

/// How the health registry decides availability. Built with [`HealthConfig::builder`].
///
/// | knob | default | nginx | HAProxy | Envoy |
/// |---|---|---|---|---|
/// | [`rise`](HealthConfigBuilder::rise) | 2 | — (nginx Plus `passes`) | `rise` | `healthy_threshold` |
/// | [`fall`](HealthConfigBuilder::fall) | 3 | — (nginx Plus `fails`) | `fall` | `unhealthy_threshold` |
/// | [`max_fails`](HealthConfigBuilder::max_fails) | 1 | `max_fails` | — | — |
/// | [`fail_timeout`](HealthConfigBuilder::fail_timeout) | 10 s | `fail_timeout` | — | — |
/// | [`consecutive_failures`](HealthConfigBuilder::consecutive_failures) | off (5 when on) | — | `observe layer7` + `error-limit` | `consecutive_5xx` |
/// | [`base_ejection_time`](HealthConfigBuilder::base_ejection_time) | 30 s | — | — | `base_ejection_time` |
/// | [`max_ejection_time`](HealthConfigBuilder::max_ejection_time) | 300 s | — | — | `max_ejection_time` |
/// | [`max_ejection_percent`](HealthConfigBuilder::max_ejection_percent) | 10 % | — | — | `max_ejection_percent` |
/// | [`slow_start`](HealthConfigBuilder::slow_start) | off | nginx Plus `slow_start` | `slowstart` | `slow_start_window` |
/// | [`slow_start_min_percent`](HealthConfigBuilder::slow_start_min_percent) | 10 % | — | — | `min_weight_percent` |
/// | [`panic_threshold`](HealthConfigBuilder::panic_threshold) | 50 % | — | — | `healthy_panic_threshold` |
/// | [`latency_decay`](HealthConfigBuilder::latency_decay) | 10 s | — | — | (Finagle / linkerd peak-EWMA decay) |
/// | [`start`](HealthConfigBuilder::start) | healthy | (always healthy) | `init-state` | `ignore_new_hosts_until_first_hc` |
#[derive(Clone, Debug, PartialEq)]
pub struct HealthConfig {
    pub(crate) rise: u32,
    pub(crate) fall: u32,
    pub(crate) max_fails: u32,
    pub(crate) fail_timeout: Duration,
    pub(crate) consecutive_failures: Option<u32>,
    pub(crate) base_ejection_time: Duration,
    pub(crate) max_ejection_time: Duration,
    pub(crate) max_ejection_percent: u32,
    pub(crate) slow_start: Duration,
    pub(crate) slow_start_min_percent: u32,
    pub(crate) panic_threshold: u32,
    pub(crate) latency_decay: Duration,
    pub(crate) start: StartState,
}

/// The health a backend starts with when it joins a set (at build or in an update).
#[non_exhaustive]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum StartState {
    /// Healthy at once: the backend takes traffic before any probe, as nginx's servers do and
    /// HAProxy's `init-state up`. A failing probe then takes `fall` results to mark it failing.
    #[default]
    Healthy,
    /// Unknown until the first probe: [`HealthState::Unchecked`](crate::HealthState), no traffic
    /// until a probe passes, as Envoy's `ignore_new_hosts_until_first_hc` and HAProxy's
    /// `init-state down`. The first result decides at once, without waiting for `rise` or `fall`
    /// (a pass makes the backend healthy, a failure makes it failing), as Envoy treats a new
    /// host's first check.
    ///
    /// An unchecked backend counts as unhealthy for the panic threshold, and panic routing
    /// applies to it as to any unhealthy backend: when too few backends of its tier are healthy,
    /// it takes traffic unchecked rather than leave the few to carry everything (Envoy routes
    /// to hosts still waiting for their first check in panic too). A set whose backends all
    /// start unchecked is in panic until enough of them pass a probe; set
    /// [`panic_threshold`](HealthConfigBuilder::panic_threshold) to 0 to refuse traffic until
    /// then.
    Unchecked,
}

impl Default for HealthConfig {
    fn default() -> Self {
        HealthConfig {
            rise: 2,
            fall: 3,
            max_fails: 1,
            fail_timeout: Duration::from_secs(10),
            consecutive_failures: None,
            base_ejection_time: Duration::from_secs(30),
            max_ejection_time: Duration::from_secs(300),
            max_ejection_percent: 10,
            slow_start: Duration::ZERO,
            slow_start_min_percent: 10,
            panic_threshold: 50,
            latency_decay: Duration::from_secs(10),
            start: StartState::Healthy,
        }
    }
}

impl HealthConfig {
    /// A builder starting from the defaults.
    pub fn builder() -> HealthConfigBuilder {
        HealthConfigBuilder {
            config: HealthConfig::default(),
        }
    }

    /// No passive health at all: only active results and operator state decide availability,
    /// and panic mode is off.
    pub fn active_only() -> Self {
        HealthConfig {
            max_fails: 0,
            panic_threshold: 0,
            ..HealthConfig::default()
        }
    }

    /// Active probe successes needed to mark a failing backend healthy.
    pub fn rise(&self) -> u32 {
        self.rise
    }

    /// Active probe failures needed to mark a healthy backend failing.
    pub fn fall(&self) -> u32 {
        self.fall
    }

    /// nginx `max_fails` (0 = off).
    pub fn max_fails(&self) -> u32 {
        self.max_fails
    }

    /// nginx `fail_timeout`.
    pub fn fail_timeout(&self) -> Duration {
        self.fail_timeout
    }

    /// The slow-start window (zero = off).
    pub fn slow_start(&self) -> Duration {
        self.slow_start
    }

    /// The panic threshold in percent (0 = off).
    pub fn panic_threshold(&self) -> u32 {
        self.panic_threshold
    }

    /// The health a joining backend starts with.
    pub fn start(&self) -> StartState {
        self.start
    }
}

/// Builder for [`HealthConfig`] (`&mut Self` setters, a final [`build`](Self::build)).
#[derive(Clone, Debug)]
pub struct HealthConfigBuilder {
    config: HealthConfig,
}

impl HealthConfigBuilder {
    /// Active probe successes in a row that bring a failing backend back. Values below 1 count
    /// as 1. Default is 2, as HAProxy's `rise`.
    pub fn rise(&mut self, n: u32) -> &mut Self {
        self.config.rise = n.max(1);
        self
    }

    /// Active probe failures in a row that mark a backend failing. Values below 1 count as 1.
    /// Default is 3, as HAProxy's `fall`.
    pub fn fall(&mut self, n: u32) -> &mut Self {
        self.config.fall = n.max(1);
        self
    }

    /// Passive failures that make a backend unavailable for `fail_timeout`, with nginx's exact
    /// accounting (failures count until a success after a quiet `fail_timeout`); 0 turns the
    /// nginx rule off. Default is 1, as nginx's `max_fails`.
    pub fn max_fails(&mut self, n: u32) -> &mut Self {
        self.config.max_fails = n;
        self
    }

    /// How long a backend stays unavailable after `max_fails`, and the window those failures are
    /// counted in. Default is 10 s, as nginx's `fail_timeout`.
    pub fn fail_timeout(&mut self, d: Duration) -> &mut Self {
        self.config.fail_timeout = d;
        self
    }

    /// Envoy-style outlier detection: this many failures in a row eject the backend for
    /// `base_ejection_time × number of ejections` (capped at `max_ejection_time`). `None` turns it
    /// off. Default is off; Envoy's default count is 5.
    pub fn consecutive_failures(&mut self, n: Option<u32>) -> &mut Self {
        self.config.consecutive_failures = n.map(|n| n.max(1));
        self
    }

    /// The first ejection's length; the k-th ejection lasts k times as long. Default is 30 s, as
    /// Envoy's `base_ejection_time`.
    pub fn base_ejection_time(&mut self, d: Duration) -> &mut Self {
        self.config.base_ejection_time = d;
        self
    }

    /// The longest an ejection may last. Default is 300 s, as Envoy's `max_ejection_time`.
    pub fn max_ejection_time(&mut self, d: Duration) -> &mut Self {
        self.config.max_ejection_time = d;
        self
    }

    /// The largest share of backends consecutive-failure detection may eject at once; at least
    /// one backend can always be ejected, as in Envoy. Capped at 100. Default is 10 %.
    pub fn max_ejection_percent(&mut self, pct: u32) -> &mut Self {
        self.config.max_ejection_percent = pct.min(100);
        self
    }

    /// After a backend recovers (or joins a running set) its effective weight ramps linearly from
    /// `slow_start_min_percent` to 100 % over this window. Zero turns slow start off. Default is
    /// off.
    pub fn slow_start(&mut self, window: Duration) -> &mut Self {
        self.config.slow_start = window;
        self
    }

    /// The effective weight at the start of slow start, in percent (1..=100). Default is 10 %, as
    /// Envoy's `min_weight_percent`.
    pub fn slow_start_min_percent(&mut self, pct: u32) -> &mut Self {
        self.config.slow_start_min_percent = pct.clamp(1, 100);
        self
    }

    /// When fewer than this percentage of a tier's backends are healthy, route across all of the
    /// tier's backends regardless of health rather than overload the few. 0 turns panic mode off.
    /// Capped at 100. Default is 50 %, as Envoy's `healthy_panic_threshold`.
    pub fn panic_threshold(&mut self, pct: u32) -> &mut Self {
        self.config.panic_threshold = pct.min(100);
        self
    }

    /// The time constant of the latency EWMA: a sample `decay` old weighs 1/e of a fresh one.
    /// Default is 10 s, as linkerd's peak-EWMA.
    pub fn latency_decay(&mut self, d: Duration) -> &mut Self {
        self.config.latency_decay = d.max(Duration::from_millis(1));
        self
    }

    /// The health a backend starts with when it joins a set: [`StartState::Healthy`] (takes
    /// traffic at once) or [`StartState::Unchecked`] (none until its first probe passes).
    /// Default is healthy, as nginx and HAProxy's default `init-state`.
    pub fn start(&mut self, start: StartState) -> &mut Self {
        self.config.start = start;
        self
    }

    /// The configuration.
    pub fn build(&self) -> HealthConfig {
        self.config.clone()
    }
}
