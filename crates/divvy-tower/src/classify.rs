//! Outcome classifiers: was a response a success or a failure of its backend?
//!
//! The outcome feeds passive health (nginx `max_fails`, outlier ejection) and the outcome
//! counters of [`Balancer::stats`](divvy::Balancer::stats). It says whether the *backend* did its
//! job, not whether the client got what it wanted: a 404 is the backend working.
//!
//! [`HttpClassify`] is the default for HTTP. Any `Fn(&Response) -> Outcome` is a classifier
//! too (errors are then failures), and [`Classify`] can be implemented for anything else:
//!
//! ```
//! use divvy::Outcome;
//! use divvy_tower::Classify;
//!
//! // 5xx and 429 (the backend is overloaded) are failures.
//! let classify = |res: &http::Response<()>| {
//!     let s = res.status();
//!     if s.is_server_error() || s == http::StatusCode::TOO_MANY_REQUESTS {
//!         Outcome::Failure
//!     } else {
//!         Outcome::Success
//!     }
//! };
//! let res = http::Response::builder().status(429).body(()).unwrap();
//! assert_eq!(Classify::<_, std::io::Error>::classify_response(&classify, &res), Outcome::Failure);
//! ```

use divvy::Outcome;

/// Decides the [`Outcome`] of a request from its response or its error.
pub trait Classify<Res, E> {
    /// The outcome of a request that got `response`.
    fn classify_response(&self, response: &Res) -> Outcome;

    /// The outcome of a request whose service failed with `error`. Default: a failure.
    fn classify_error(&self, error: &E) -> Outcome {
        let _ = error;
        Outcome::Failure
    }
}

impl<F, Res, E> Classify<Res, E> for F
where
    F: Fn(&Res) -> Outcome,
{
    #[inline]
    fn classify_response(&self, response: &Res) -> Outcome {
        self(response)
    }
}

/// The HTTP classifier: a service error (connect error, reset, timeout, a response that is not
/// HTTP) is always a failure; which statuses are failures depends on the constructor.
///
/// | constructor | failing statuses | matches |
/// |---|---|---|
/// | [`new`](Self::new) (default) | none | nginx's default: `max_fails` counts `error`, `timeout` and `invalid_header` |
/// | [`consecutive_5xx`](Self::consecutive_5xx) | 500–599 | Envoy `consecutive_5xx`, HAProxy `observe layer7`, nginx `proxy_next_upstream … http_500 http_502 http_503 http_504` |
/// | [`gateway_errors`](Self::gateway_errors) | 502, 503, 504 | Envoy `consecutive_gateway_failure` |
/// | [`statuses`](Self::statuses) | the ones listed | nginx `proxy_next_upstream http_500 http_429 …` |
///
/// The default counts no status: an application's 500 on one URL says nothing about the
/// backend's health, and counting it lets any client that finds such a URL eject every backend
/// (three requests with nginx's `max_fails = 1`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct HttpClassify {
    /// Bit `s - 400` is set when status `s` (400..=599) is a failure.
    failing: [u64; 4],
}

/// The first status a classifier can count.
const FIRST: u16 = 400;
/// The last status a classifier can count.
const LAST: u16 = 599;

impl HttpClassify {
    /// No status is a failure; only service errors are (nginx's default).
    pub const fn new() -> Self {
        HttpClassify { failing: [0; 4] }
    }

    /// Every 5xx is a failure (Envoy's `consecutive_5xx`).
    pub const fn consecutive_5xx() -> Self {
        let mut c = Self::new();
        let mut s = 500;
        while s <= LAST {
            c = c.with(s);
            s += 1;
        }
        c
    }

    /// Only 502, 503 and 504 are failures: errors a gateway reports about what is behind it,
    /// while a 500 is the application's own answer (Envoy's `consecutive_gateway_failure`).
    pub const fn gateway_errors() -> Self {
        Self::new().with(502).with(503).with(504)
    }

    /// Exactly the listed statuses are failures (besides service errors), as nginx's
    /// `proxy_next_upstream http_500 http_503 http_429` makes those count for `max_fails`.
    /// Statuses outside 400..=599 are never failures and are ignored.
    pub fn statuses(statuses: impl IntoIterator<Item = http::StatusCode>) -> Self {
        statuses
            .into_iter()
            .fold(Self::new(), |c, s| c.with(s.as_u16()))
    }

    const fn with(mut self, status: u16) -> Self {
        if status >= FIRST && status <= LAST {
            let bit = (status - FIRST) as usize;
            self.failing[bit / 64] |= 1 << (bit % 64);
        }
        self
    }

    /// Whether a response with this status is a failure of its backend.
    pub fn is_failure(&self, status: http::StatusCode) -> bool {
        let s = status.as_u16();
        if !(FIRST..=LAST).contains(&s) {
            return false;
        }
        let bit = usize::from(s - FIRST);
        self.failing[bit / 64] & (1 << (bit % 64)) != 0
    }

    /// The outcome of a response with this status.
    pub fn classify_status(&self, status: http::StatusCode) -> Outcome {
        if self.is_failure(status) {
            Outcome::Failure
        } else {
            Outcome::Success
        }
    }
}

impl<B, E> Classify<http::Response<B>, E> for HttpClassify {
    #[inline]
    fn classify_response(&self, response: &http::Response<B>) -> Outcome {
        self.classify_status(response.status())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::StatusCode;

    fn outcomes(c: HttpClassify) -> [Outcome; 6] {
        [200, 404, 500, 502, 503, 504].map(|s| c.classify_status(StatusCode::from_u16(s).unwrap()))
    }

    #[test]
    fn the_default_fails_no_status_but_fails_errors_as_nginx() {
        let c = HttpClassify::default();
        assert_eq!(c, HttpClassify::new());
        assert_eq!(outcomes(c), [Outcome::Success; 6]);
        let err = std::io::Error::other("reset");
        assert_eq!(
            Classify::<http::Response<()>, _>::classify_error(&c, &err),
            Outcome::Failure
        );
    }

    #[test]
    fn consecutive_5xx_fails_every_server_error_and_nothing_else() {
        use Outcome::*;
        assert_eq!(
            outcomes(HttpClassify::consecutive_5xx()),
            [Success, Success, Failure, Failure, Failure, Failure]
        );
        assert!(HttpClassify::consecutive_5xx().is_failure(StatusCode::from_u16(599).unwrap()));
    }

    #[test]
    fn gateway_errors_spare_a_plain_500() {
        use Outcome::*;
        assert_eq!(
            outcomes(HttpClassify::gateway_errors()),
            [Success, Success, Success, Failure, Failure, Failure]
        );
    }

    #[test]
    fn listed_statuses_fail_and_others_do_not() {
        let c = HttpClassify::statuses([StatusCode::TOO_MANY_REQUESTS, StatusCode::BAD_GATEWAY]);
        assert!(c.is_failure(StatusCode::TOO_MANY_REQUESTS));
        assert!(c.is_failure(StatusCode::BAD_GATEWAY));
        assert!(!c.is_failure(StatusCode::INTERNAL_SERVER_ERROR));
        assert!(!c.is_failure(StatusCode::OK));
        // Outside 400..=599 nothing can be a failure.
        assert_eq!(
            HttpClassify::statuses([StatusCode::OK]),
            HttpClassify::new()
        );
    }
}
