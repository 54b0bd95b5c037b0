//! Retrying a failed request on another backend, as a tower [`Policy`].
//!
//! [`RetryPolicy`] goes in tower's [`Retry`](tower::retry::Retry) *outside*
//! [`Balance`](crate::Balance):
//!
//! ```text
//! Retry<RetryPolicy>  →  Balance  →  per-backend service
//! ```
//!
//! When an attempt fails, the policy records the failed backend in the request's [`Tried`]
//! extension; [`Balance`](crate::Balance) excludes the backends in it from the next pick (as
//! nginx's per-request `tried` set), so each try goes to a backend not tried yet. Tries are
//! bounded; when every backend has been tried, the last real failure is returned (as nginx
//! returns the last upstream's answer), not a "no backend available".
//!
//! What is retried, by default (nginx's `proxy_next_upstream error timeout`, non-idempotent
//! requests excepted as nginx does since 1.9.13):
//!
//! - only requests whose method is idempotent (GET, HEAD, OPTIONS, PUT, DELETE, TRACE), unless
//!   [`any_method`](RetryPolicy::any_method);
//! - only when the backend's service failed ([`BackendFailed`]: connect error, reset,
//!   timeout inside the endpoint); responses are final unless
//!   [`on_gateway_errors`](RetryPolicy::on_gateway_errors) also retries 502, 503 and 504;
//! - a non-idempotent request is retried on errors that prove it was never sent when
//!   [`non_idempotent_when`](RetryPolicy::non_idempotent_when) says so (a connect error).
//!
//! A request is replayed by cloning it, so its body must be `Clone` (`Full<Bytes>`, `Empty`);
//! requests the policy would never retry are not cloned. Errors that do not come from a backend
//! (a `Timeout` layered *outside* `Balance`, say) are not retried, since no backend can be
//! excluded for them: put per-try timeouts inside the endpoint.

use std::error::Error;
use std::fmt;
use std::future::{ready, Ready};

use http::{Method, StatusCode};
use tower::retry::Policy;
use tower::BoxError;

use crate::error::{BackendFailed, NoBackendAvailable};
use crate::track::PickBody;

/// The most tries a request can make, counting the first.
pub const MAX_TRIES: usize = 16;

/// The backends a request has tried, by [`Backend::key`](divvy::Backend::key), as a request
/// extension. [`Balance`](crate::Balance) excludes them from the pick (with the
/// [`Http`](crate::track::Http) tracker); [`RetryPolicy`] adds to it. A caller with its own retry
/// loop can maintain it too.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct Tried {
    keys: [u64; MAX_TRIES],
    len: u8,
}

impl Tried {
    /// No backend tried.
    pub const fn new() -> Self {
        Tried {
            keys: [0; MAX_TRIES],
            len: 0,
        }
    }

    /// Records `backend_key`; false (and nothing recorded) when [`MAX_TRIES`] are recorded.
    pub fn push(&mut self, backend_key: u64) -> bool {
        let len = usize::from(self.len);
        if len == MAX_TRIES {
            return false;
        }
        self.keys[len] = backend_key;
        self.len += 1;
        true
    }

    /// The recorded keys, oldest first.
    pub fn as_slice(&self) -> &[u64] {
        &self.keys[..usize::from(self.len)]
    }

    /// How many backends were tried.
    pub fn len(&self) -> usize {
        usize::from(self.len)
    }

    /// Whether no backend was tried.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
}

impl Default for Tried {
    fn default() -> Self {
        Tried::new()
    }
}

impl fmt::Debug for Tried {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list().entries(self.as_slice()).finish()
    }
}

/// Retries failed HTTP requests on backends not tried yet; see the [module docs](self).
///
/// `Rb` is the response body type of the balanced service (inferred).
pub struct RetryPolicy<Rb> {
    max_tries: u8,
    any_method: bool,
    gateway_errors: bool,
    non_idempotent_when: Option<fn(&(dyn Error + 'static)) -> bool>,
    /// The failure a retry replaced, returned if the next try finds no backend left.
    last: Option<Result<http::Response<PickBody<Rb>>, BoxError>>,
}

impl<Rb> RetryPolicy<Rb> {
    /// At most `max_tries` tries per request, counting the first (clamped to
    /// `1..=`[`MAX_TRIES`]); nginx's `proxy_next_upstream_tries`. A request is never sent to the
    /// same backend twice, so with fewer backends there are fewer tries.
    pub const fn new(max_tries: usize) -> Self {
        let max_tries = if max_tries == 0 {
            1
        } else if max_tries > MAX_TRIES {
            MAX_TRIES
        } else {
            max_tries
        };
        RetryPolicy {
            max_tries: max_tries as u8,
            any_method: false,
            gateway_errors: false,
            non_idempotent_when: None,
            last: None,
        }
    }

    /// Also retries 502, 503 and 504 responses (of replayable requests). Default is off: a
    /// response is final, as with nginx's default `proxy_next_upstream error timeout`.
    #[must_use]
    pub const fn on_gateway_errors(mut self) -> Self {
        self.gateway_errors = true;
        self
    }

    /// Retries every method, for services whose POSTs are idempotent. Default is only
    /// GET, HEAD, OPTIONS, PUT, DELETE and TRACE.
    #[must_use]
    pub const fn any_method(mut self) -> Self {
        self.any_method = true;
        self
    }

    /// Retries a non-idempotent request when `sent_nothing` says the backend's error proves
    /// the request never left (a connect error). It receives the endpoint's own error (the
    /// [`BackendFailed`] source). Default is never.
    ///
    /// ```
    /// # use divvy_tower::retry::RetryPolicy;
    /// let policy = RetryPolicy::<hyper::body::Incoming>::new(3).non_idempotent_when(|e| {
    ///     e.downcast_ref::<hyper_util::client::legacy::Error>()
    ///         .is_some_and(|e| e.is_connect())
    /// });
    /// ```
    #[must_use]
    pub const fn non_idempotent_when(
        mut self,
        sent_nothing: fn(&(dyn Error + 'static)) -> bool,
    ) -> Self {
        self.non_idempotent_when = Some(sent_nothing);
        self
    }

    /// The most tries per request.
    pub const fn max_tries(&self) -> usize {
        self.max_tries as usize
    }

    fn replayable(&self, method: &Method) -> bool {
        self.any_method
            || matches!(
                *method,
                Method::GET
                    | Method::HEAD
                    | Method::OPTIONS
                    | Method::PUT
                    | Method::DELETE
                    | Method::TRACE
            )
    }
}

impl<Rb> Clone for RetryPolicy<Rb> {
    /// A policy with the same settings and no memory of a request (tower clones the policy
    /// per request).
    fn clone(&self) -> Self {
        RetryPolicy {
            max_tries: self.max_tries,
            any_method: self.any_method,
            gateway_errors: self.gateway_errors,
            non_idempotent_when: self.non_idempotent_when,
            last: None,
        }
    }
}

impl<Rb> fmt::Debug for RetryPolicy<Rb> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RetryPolicy")
            .field("max_tries", &self.max_tries)
            .field("any_method", &self.any_method)
            .field("gateway_errors", &self.gateway_errors)
            .field("non_idempotent_when", &self.non_idempotent_when.is_some())
            .finish()
    }
}

/// Stands in for a result the policy kept; tower drops it unseen when a retry starts.
#[derive(Debug)]
struct Superseded;

impl fmt::Display for Superseded {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("superseded by a retry")
    }
}

impl Error for Superseded {}

type Attempt<Rb> = Result<http::Response<PickBody<Rb>>, BoxError>;

impl<B: Clone, Rb> Policy<http::Request<B>, http::Response<PickBody<Rb>>, BoxError>
    for RetryPolicy<Rb>
{
    type Future = Ready<()>;

    fn retry(
        &mut self,
        request: &mut http::Request<B>,
        result: &mut Attempt<Rb>,
    ) -> Option<Ready<()>> {
        let failed = match result {
            Ok(response) => {
                let retry = self.gateway_errors
                    && matches!(
                        response.status(),
                        StatusCode::BAD_GATEWAY
                            | StatusCode::SERVICE_UNAVAILABLE
                            | StatusCode::GATEWAY_TIMEOUT
                    )
                    && self.replayable(request.method());
                if !retry {
                    self.last = None;
                    return None;
                }
                response.body().backend().key()
            }
            Err(error) => {
                if error.is::<NoBackendAvailable>() {
                    // Every backend not tried yet is unavailable: the last real failure is the
                    // better answer.
                    if let Some(last) = self.last.take() {
                        *result = last;
                    }
                    return None;
                }
                let Some(failed) = error.downcast_ref::<BackendFailed>() else {
                    self.last = None;
                    return None;
                };
                let allowed = self.replayable(request.method())
                    || match (self.non_idempotent_when, failed.source()) {
                        (Some(sent_nothing), Some(source)) => sent_nothing(source),
                        _ => false,
                    };
                if !allowed {
                    self.last = None;
                    return None;
                }
                failed.backend().key()
            }
        };
        let ext = request.extensions_mut();
        if ext.get::<Tried>().is_none() {
            ext.insert(Tried::new());
        }
        let tried = ext.get_mut::<Tried>()?;
        if tried.len() + 1 >= usize::from(self.max_tries) || !tried.push(failed) {
            self.last = None;
            return None;
        }
        let attempt = tried.len() + 1;
        // Costs one load of tracing's global level filter when nobody listens.
        tracing::debug!(
            attempt,
            failed_backend_key = failed,
            method = %request.method(),
            "divvy retries the request on a backend not tried yet"
        );
        let mut last = std::mem::replace(result, Err(Box::new(Superseded)));
        if let Ok(response) = &mut last {
            // The failed backend's request is over; do not count it in flight while retrying.
            response.body_mut().release();
        }
        self.last = Some(last);
        Some(ready(()))
    }

    fn clone_request(&mut self, request: &http::Request<B>) -> Option<http::Request<B>> {
        let may_retry = self.max_tries > 1
            && (self.replayable(request.method()) || self.non_idempotent_when.is_some());
        may_retry.then(|| request.clone())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tried_holds_at_most_max_tries_keys_in_order() {
        let mut t = Tried::new();
        for k in 0..MAX_TRIES as u64 {
            assert!(t.push(k * 10));
        }
        assert!(!t.push(999));
        assert_eq!(t.len(), MAX_TRIES);
        assert_eq!(t.as_slice()[..3], [0, 10, 20]);
    }

    #[test]
    fn tries_are_clamped_to_at_least_one_and_at_most_the_maximum() {
        assert_eq!(RetryPolicy::<()>::new(0).max_tries(), 1);
        assert_eq!(RetryPolicy::<()>::new(3).max_tries(), 3);
        assert_eq!(RetryPolicy::<()>::new(1000).max_tries(), MAX_TRIES);
    }

    #[test]
    fn only_idempotent_methods_are_replayable_by_default() {
        let p = RetryPolicy::<()>::new(3);
        for m in ["GET", "HEAD", "OPTIONS", "PUT", "DELETE", "TRACE"] {
            assert!(p.replayable(&m.parse().unwrap()), "{m}");
        }
        for m in ["POST", "PATCH", "CONNECT", "PURGE"] {
            assert!(!p.replayable(&m.parse().unwrap()), "{m}");
        }
        assert!(p.any_method().replayable(&Method::POST));
    }

    #[test]
    fn a_request_that_will_never_be_retried_is_not_cloned() {
        let mut p = RetryPolicy::<()>::new(3);
        let post = http::Request::post("/").body(()).unwrap();
        let get = http::Request::get("/").body(()).unwrap();
        assert!(
            Policy::<_, http::Response<PickBody<()>>, BoxError>::clone_request(&mut p, &post)
                .is_none()
        );
        assert!(
            Policy::<_, http::Response<PickBody<()>>, BoxError>::clone_request(&mut p, &get)
                .is_some()
        );
        let mut once = RetryPolicy::<()>::new(1);
        assert!(
            Policy::<_, http::Response<PickBody<()>>, BoxError>::clone_request(&mut once, &get)
                .is_none()
        );
    }
}
