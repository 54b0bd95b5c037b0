//! How long a request holds its backend, and what it may not be sent to.
//!
//! A [`Pick`] counts a request in flight to its backend until the guard is dropped, and takes
//! the request's outcome once. A [`Track`] decides, per protocol, where the guard lives after the
//! response head arrives, and which backends a request excludes:
//!
//! - [`Http`] (the default) moves the guard into the response body ([`PickBody`]): the request
//!   stays in flight until the body ends or is dropped, so least-connections and in-flight limits
//!   count streaming responses, and reads the backends a retry already tried from the request's
//!   [`Tried`](crate::retry::Tried) extension.
//! - [`Opaque`] ends the request when the response arrives and excludes nothing: for services
//!   whose response is complete when it is returned.
//!
//! A [`Completion`] carries the guard and the outcome to report. An outcome classified as a
//! failure is reported as soon as the response head arrives; a success is reported when the
//! completion ends, unless the body fails first (then it is reported as a failure). Either way
//! the outcome is reported exactly once, with the latency from `call` to the response head.

use std::fmt;
use std::time::Duration;

use divvy::{Outcome, Pick};

mod body;

pub use body::PickBody;

/// Where the pick guard lives after the response head, and what a request excludes.
///
/// Implemented by [`Http`] and [`Opaque`]; implement it for another protocol whose responses
/// stream (a gRPC-over-something, a framed TCP reply).
pub trait Track<Req, Res> {
    /// The response the balanced service returns.
    type Response;

    /// The [`Backend::key`](divvy::Backend::key)s this request must not be sent to (the ones already tried).
    fn exclude<'r>(&self, request: &'r Req) -> &'r [u64];

    /// Attaches `completion` to `response`; the request ends when `completion` is dropped.
    fn complete(&self, response: Res, completion: Completion) -> Self::Response;
}

/// HTTP: the request stays in flight until the response body ends; retries exclude the
/// backends in the request's [`Tried`](crate::retry::Tried) extension.
#[derive(Clone, Copy, Debug, Default)]
pub struct Http;

impl<B, Rb> Track<http::Request<B>, http::Response<Rb>> for Http
where
    Rb: http_body::Body,
{
    type Response = http::Response<PickBody<Rb>>;

    #[inline]
    fn exclude<'r>(&self, request: &'r http::Request<B>) -> &'r [u64] {
        match request.extensions().get::<crate::retry::Tried>() {
            Some(tried) => tried.as_slice(),
            None => &[],
        }
    }

    #[inline]
    fn complete(&self, response: http::Response<Rb>, completion: Completion) -> Self::Response {
        response.map(|body| PickBody::new(body, completion))
    }
}

/// Any protocol: the request ends when the response arrives; nothing is excluded.
#[derive(Clone, Copy, Debug, Default)]
pub struct Opaque;

impl<Req, Res> Track<Req, Res> for Opaque {
    type Response = Res;

    #[inline]
    fn exclude<'r>(&self, _request: &'r Req) -> &'r [u64] {
        &[]
    }

    #[inline]
    fn complete(&self, response: Res, completion: Completion) -> Res {
        drop(completion);
        response
    }
}

/// The end of a request: the pick guard and the outcome still to report.
///
/// Dropping it reports the pending outcome (if any) and ends the request; [`fail`](Self::fail)
/// reports a failure instead, for a response that broke after its head (a body error).
#[must_use = "the request counts as in flight until the Completion is dropped"]
pub struct Completion {
    pick: Pick,
    /// A success not reported yet, with its latency. `None` once reported (or when the head
    /// was classified as a failure, which is reported at once).
    pending: Option<Duration>,
}

impl Completion {
    /// A completion for `pick`, whose response head was classified as `outcome` after `latency`.
    ///
    /// A failure is reported now: nothing the body does can make it a success. A success waits,
    /// so that a body that fails turns it into a failure. A caller with its own forwarding path
    /// (a proxy with its own connection pool) builds one per response head and calls
    /// [`fail`](Self::fail) when the body breaks.
    pub fn new(pick: Pick, outcome: Outcome, latency: Duration) -> Self {
        match outcome {
            Outcome::Failure => {
                pick.report(Outcome::Failure, Some(latency));
                Completion {
                    pick,
                    pending: None,
                }
            }
            Outcome::Success => Completion {
                pick,
                pending: Some(latency),
            },
        }
    }

    /// The backend the request went to.
    pub fn backend(&self) -> divvy::BackendRef<'_> {
        self.pick.backend()
    }

    /// Reports a failure (unless an outcome was already reported) and ends the request.
    pub fn fail(mut self) {
        if let Some(latency) = self.pending.take() {
            self.pick.report(Outcome::Failure, Some(latency));
        }
    }
}

impl Drop for Completion {
    fn drop(&mut self) {
        if let Some(latency) = self.pending.take() {
            self.pick.report(Outcome::Success, Some(latency));
        }
    }
}

impl fmt::Debug for Completion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Completion")
            .field("backend", &self.pick.id())
            .field("pending", &self.pending.is_some())
            .finish()
    }
}
