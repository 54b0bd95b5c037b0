//! The health checker's configuration and how it is started.

use std::fmt;
use std::future::Future;
use std::ops::RangeInclusive;
use std::sync::Arc;
use std::time::Duration;

use divvy::{Backend, Balancer, Strategy};

use super::error::{ConfigError, ProbeError};
use super::handle::{Background, HealthCheckHandle};
use super::probe::{self, Kind, Probe, ProbeReport};
use super::task;

pub(crate) type OnProbe = Arc<dyn Fn(&ProbeReport) + Send + Sync>;

/// Active health checks for every backend of a [`Balancer`], on tokio.
///
/// One task per checker probes all backends of the balancer's current set each round,
/// concurrently (at most [`concurrency`](Self::concurrency) at once), and reports every result
/// with [`Balancer::report_probe`]; the core applies `rise` / `fall` (see
/// [`HealthConfig`](divvy::HealthConfig)). The set is re-read each round, so backends added by
/// [`Balancer::update`] are probed from the next round on and removed ones are no longer probed.
/// The first round starts at once; later rounds start every [`interval`](Self::interval), give or
/// take the [jitter](Self::jitter_percent) (so many checkers started together spread out).
///
/// ```no_run
/// use std::time::Duration;
/// use divvy::{strategy::RoundRobin, Backend, Balancer};
/// use divvy_tower::health::HealthChecker;
///
/// # async fn run() -> Result<(), Box<dyn std::error::Error>> {
/// let lb = Balancer::new(RoundRobin::new(), ["10.0.0.1:80", "10.0.0.2:80"].map(Backend::new))?;
/// let mut checker = HealthChecker::http("/healthz");
/// checker
///     .interval(Duration::from_secs(2))
///     .timeout(Duration::from_millis(500))
///     .expect_status(200..=299);
/// let handle = checker.spawn(lb.clone())?;
/// // … serve traffic with `lb` …
/// handle.shutdown().await; // or drop it
/// # Ok(())
/// # }
/// ```
///
/// A backend whose identity is a socket address is probed there; any other identity is resolved
/// as `host:port` with [`tokio::net::lookup_host`] at each probe, and every address it resolves to
/// is tried in turn.
#[derive(Clone)]
pub struct HealthChecker {
    probe: Probe,
    interval: Duration,
    jitter_percent: u32,
    timeout: Duration,
    concurrency: usize,
    on_probe: Option<OnProbe>,
}

/// The largest jitter: beyond it consecutive rounds could nearly coincide.
const MAX_JITTER_PERCENT: u32 = 50;

impl HealthChecker {
    /// A checker whose probe passes when the backend accepts a TCP connection.
    pub fn tcp() -> Self {
        Self::with_kind(Kind::Tcp)
    }

    /// A checker whose probe sends an HTTP/1.1 `GET path` and passes when the answer's status is
    /// in the [expected range](Self::expect_status). Only the status line is read.
    pub fn http(path: impl Into<String>) -> Self {
        Self::with_kind(Kind::Http { path: path.into() })
    }

    /// A checker running your own probe (a gRPC health call, a Redis `PING` …). The checker
    /// still applies the [timeout](Self::timeout): a probe that runs longer fails with
    /// [`ProbeError::Timeout`].
    pub fn custom<F, Fut>(probe: F) -> Self
    where
        F: Fn(Backend) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<(), ProbeError>> + Send + 'static,
    {
        Self::with_kind(Kind::Custom(probe::custom(probe)))
    }

    fn with_kind(kind: Kind) -> Self {
        HealthChecker {
            probe: Probe {
                kind,
                port: None,
                host: None,
                status: 200..=399,
            },
            interval: Duration::from_secs(5),
            jitter_percent: 10,
            timeout: Duration::from_secs(2),
            concurrency: 16,
            on_probe: None,
        }
    }

    /// Time between the starts of two rounds. A round that takes longer (many backends timing
    /// out) is followed by the next at once. Default is 5 s, as nginx Plus's `health_check
    /// interval`.
    pub fn interval(&mut self, interval: Duration) -> &mut Self {
        self.interval = interval;
        self
    }

    /// Spreads rounds by up to ± this percentage of the interval, drawn anew each round, so that
    /// checkers started together do not probe in lockstep. Capped at 50. Default is 10 %.
    pub fn jitter_percent(&mut self, pct: u32) -> &mut Self {
        self.jitter_percent = pct.min(MAX_JITTER_PERCENT);
        self
    }

    /// How long one probe (resolve, connect and, for HTTP, the status line) may take before it
    /// fails. Default is 2 s.
    pub fn timeout(&mut self, timeout: Duration) -> &mut Self {
        self.timeout = timeout;
        self
    }

    /// The most probes in flight at once; values below 1 count as 1. Default is 16.
    pub fn concurrency(&mut self, n: usize) -> &mut Self {
        self.concurrency = n.max(1);
        self
    }

    /// Probes this port instead of the backend's own, as nginx Plus's `health_check port=`.
    /// Default is the backend's port.
    pub fn port(&mut self, port: u16) -> &mut Self {
        self.probe.port = Some(port);
        self
    }

    /// The `Host` header of HTTP probes. Default is the backend's identity (`10.0.0.1:8080`,
    /// `app.internal:80`).
    pub fn host(&mut self, host: impl Into<String>) -> &mut Self {
        self.probe.host = Some(host.into());
        self
    }

    /// The statuses an HTTP probe accepts. Default is `200..=399`, as nginx Plus's default
    /// `match`.
    pub fn expect_status(&mut self, range: RangeInclusive<u16>) -> &mut Self {
        self.probe.status = range;
        self
    }

    /// Calls `f` with every probe result, after it was reported to the balancer, on the checker's
    /// task: keep it quick (log, count, send on a channel). Every result is also logged with
    /// `tracing` at debug level. Default is no callback.
    pub fn on_probe(&mut self, f: impl Fn(&ProbeReport) + Send + Sync + 'static) -> &mut Self {
        self.on_probe = Some(Arc::new(f));
        self
    }

    /// Checks the settings and starts probing `balancer`'s backends on the current tokio runtime.
    ///
    /// # Errors
    ///
    /// A [`ConfigError`] naming the setting that cannot work; nothing is spawned then.
    ///
    /// # Panics
    ///
    /// When called outside a tokio runtime, as [`tokio::spawn`].
    pub fn spawn<S: Strategy>(
        &self,
        balancer: Balancer<S>,
    ) -> Result<HealthCheckHandle, ConfigError> {
        self.validate()?;
        let config = Arc::new(task::Config {
            probe: self.probe.clone(),
            interval: self.interval,
            jitter_percent: self.jitter_percent,
            timeout: self.timeout,
            concurrency: self.concurrency,
            on_probe: self.on_probe.clone(),
        });
        Ok(HealthCheckHandle {
            inner: Background::spawn(|stop| task::run(balancer, config, stop)),
        })
    }

    fn validate(&self) -> Result<(), ConfigError> {
        if self.interval.is_zero() {
            return Err(ConfigError::ZeroInterval);
        }
        if self.timeout.is_zero() {
            return Err(ConfigError::ZeroTimeout);
        }
        if let Kind::Http { path } = &self.probe.kind {
            if !path.starts_with('/') || !is_token_text(path) {
                return Err(ConfigError::InvalidPath { path: path.clone() });
            }
            let (start, end) = (*self.probe.status.start(), *self.probe.status.end());
            if start > end || start < 100 || end > 599 {
                return Err(ConfigError::InvalidStatusRange { start, end });
            }
        }
        if let Some(host) = &self.probe.host {
            if host.is_empty() || !is_token_text(host) {
                return Err(ConfigError::InvalidHost { host: host.clone() });
            }
        }
        Ok(())
    }
}

/// Visible ASCII only: no space, CR, LF or other control character that could end the request
/// line or a header early.
fn is_token_text(s: &str) -> bool {
    s.bytes().all(|b| b.is_ascii_graphic())
}

impl fmt::Debug for HealthChecker {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HealthChecker")
            .field("kind", &self.probe.kind)
            .field("port", &self.probe.port)
            .field("host", &self.probe.host)
            .field("status", &self.probe.status)
            .field("interval", &self.interval)
            .field("jitter_percent", &self.jitter_percent)
            .field("timeout", &self.timeout)
            .field("concurrency", &self.concurrency)
            .field("on_probe", &self.on_probe.is_some())
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    #[allow(clippy::reversed_empty_ranges)] // an empty range is the point of one case
    fn settings_that_cannot_work_are_named() {
        let cases: [(HealthChecker, ConfigError); 6] = [
            (
                HealthChecker::http("healthz"),
                ConfigError::InvalidPath {
                    path: "healthz".into(),
                },
            ),
            (
                HealthChecker::http("/a b"),
                ConfigError::InvalidPath {
                    path: "/a b".into(),
                },
            ),
            (
                HealthChecker::http("/\r\nX: y"),
                ConfigError::InvalidPath {
                    path: "/\r\nX: y".into(),
                },
            ),
            (
                HealthChecker::http("/").expect_status(400..=200).clone(),
                ConfigError::InvalidStatusRange {
                    start: 400,
                    end: 200,
                },
            ),
            (
                HealthChecker::tcp().host("a\nb").clone(),
                ConfigError::InvalidHost {
                    host: "a\nb".into(),
                },
            ),
            (
                HealthChecker::tcp().interval(Duration::ZERO).clone(),
                ConfigError::ZeroInterval,
            ),
        ];
        for (checker, want) in cases {
            assert_eq!(checker.validate(), Err(want));
        }
        assert_eq!(HealthChecker::http("/healthz?full=1").validate(), Ok(()));
    }

    #[test]
    fn jitter_and_concurrency_are_kept_in_range() {
        let mut c = HealthChecker::tcp();
        c.jitter_percent(90).concurrency(0);
        assert_eq!((c.jitter_percent, c.concurrency), (MAX_JITTER_PERCENT, 1));
    }
}
