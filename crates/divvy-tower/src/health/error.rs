//! Why a checker could not start, and why a probe failed.

use std::io;
use std::time::Duration;

/// A [`HealthChecker`](super::HealthChecker) setting that cannot work, reported by
/// [`spawn`](super::HealthChecker::spawn) before any probe is sent.
#[non_exhaustive]
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    /// The HTTP path does not start with `/` or holds whitespace or control characters (which
    /// would let it end the request line early).
    #[error("http path `{path}` must start with `/` and hold no whitespace or control characters")]
    InvalidPath {
        /// The path given.
        path: String,
    },
    /// The `Host` header value is empty or holds whitespace or control characters.
    #[error("host header `{host}` must be non-empty and hold no whitespace or control characters")]
    InvalidHost {
        /// The host given.
        host: String,
    },
    /// The expected status range is empty or leaves `100..=599`.
    #[error("expected status range {start}..={end} must be non-empty and within 100..=599")]
    InvalidStatusRange {
        /// First accepted status.
        start: u16,
        /// Last accepted status.
        end: u16,
    },
    /// A zero interval would probe in a busy loop.
    #[error("interval must be greater than zero")]
    ZeroInterval,
    /// A zero timeout would fail every probe.
    #[error("timeout must be greater than zero")]
    ZeroTimeout,
}

/// Why one probe of one backend failed.
#[non_exhaustive]
#[derive(Debug, thiserror::Error)]
pub enum ProbeError {
    /// The probe did not finish within the checker's timeout.
    #[error("no answer within {0:?}")]
    Timeout(Duration),
    /// The identity is not `ip:port` and resolving it as `host:port` failed.
    #[error("resolving the backend's address failed: {0}")]
    Resolve(#[source] io::Error),
    /// The identity resolved to no address (or has no port and no probe port is set).
    #[error("the backend's identity names no address to probe")]
    NoAddress,
    /// Every address refused or failed the TCP connection.
    #[error("connecting failed: {0}")]
    Connect(#[source] io::Error),
    /// Sending the request or reading the answer failed.
    #[error("i/o error: {0}")]
    Io(#[source] io::Error),
    /// The answer did not start with an HTTP/1.x status line within the read bound.
    #[error("the answer does not start with an http/1.x status line")]
    BadStatusLine,
    /// The status is outside the expected range.
    #[error("status {0} is outside the expected range")]
    Status(u16),
    /// A custom probe failed.
    #[error("{0}")]
    Other(#[source] Box<dyn std::error::Error + Send + Sync>),
}

impl ProbeError {
    /// A custom probe's failure.
    pub fn other(error: impl Into<Box<dyn std::error::Error + Send + Sync>>) -> Self {
        ProbeError::Other(error.into())
    }
}
