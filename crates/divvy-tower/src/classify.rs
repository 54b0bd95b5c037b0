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

/// The HTTP classifier: a service error (connect, reset, timeout) is always a failure; which
/// statuses are failures depends on the constructor.
///
/// | constructor | failing statuses | matches |
/// |---|---|---|
/// | [`new`](Self::new) (default) | 500–599 | Envoy `consecutive_5xx`, HAProxy `observe layer7` |
/// | [`gateway_errors`](Self::gateway_errors) | 502, 503, 504 | Envoy `consecutive_gateway_failure` |
/// | [`transport_only`](Self::transport_only) | none | nginx's default (`proxy_next_upstream error timeout`) |
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct HttpClassify {
    statuses: Statuses,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
enum Statuses {
    #[default]
    ServerErrors,
    GatewayErrors,
    None,
}

impl HttpClassify {
    /// Every 5xx is a failure.
    pub const fn new() -> Self {
        HttpClassify {
            statuses: Statuses::ServerErrors,
        }
    }

    /// Only 502, 503 and 504 are failures: errors a gateway reports about what is behind it,
    /// while a 500 is the application's own answer.
    pub const fn gateway_errors() -> Self {
        HttpClassify {
            statuses: Statuses::GatewayErrors,
        }
    }

    /// No status is a failure; only service errors are. This is nginx's default, where
    /// `max_fails` counts `error` and `timeout` unless `proxy_next_upstream` lists `http_5xx`.
    pub const fn transport_only() -> Self {
        HttpClassify {
            statuses: Statuses::None,
        }
    }

    /// The outcome of a response with this status.
    pub fn classify_status(&self, status: http::StatusCode) -> Outcome {
        let failed = match self.statuses {
            Statuses::ServerErrors => status.is_server_error(),
            Statuses::GatewayErrors => matches!(status.as_u16(), 502..=504),
            Statuses::None => false,
        };
        if failed {
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
    fn the_default_fails_every_server_error_and_nothing_else() {
        use Outcome::*;
        assert_eq!(
            outcomes(HttpClassify::default()),
            [Success, Success, Failure, Failure, Failure, Failure]
        );
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
    fn transport_only_never_fails_a_response_but_fails_errors() {
        let c = HttpClassify::transport_only();
        assert_eq!(outcomes(c), [Outcome::Success; 6]);
        let err = std::io::Error::other("reset");
        assert_eq!(
            Classify::<http::Response<()>, _>::classify_error(&c, &err),
            Outcome::Failure
        );
    }
}
