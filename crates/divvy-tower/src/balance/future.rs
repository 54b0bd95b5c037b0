//! The response future of [`Balance`](super::Balance).

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::task::{ready, Context, Poll};

use divvy::{Pick, PickError};
use pin_project_lite::pin_project;
use tokio::time::Instant;
use tower::util::Oneshot;
use tower::BoxError;
use tower_service::Service;

use crate::classify::Classify;
use crate::error::{BackendFailed, NoBackendAvailable};
use crate::track::{Completion, Track};

pin_project! {
    /// Drives the chosen backend's service to readiness, calls it, classifies the outcome and
    /// hands the pick guard to the response (see [`Track`]).
    pub struct ResponseFuture<Svc: Service<Req>, Req, C, T> {
        #[pin]
        state: State<Svc, Req>,
        pick: Option<Pick>,
        start: Instant,
        classify: C,
        track: T,
    }
}

pin_project! {
    #[project = StateProj]
    enum State<Svc: Service<Req>, Req> {
        Called { #[pin] call: Oneshot<Svc, Req> },
        NoBackend { error: Option<PickError> },
    }
}

impl<Svc: Service<Req>, Req, C, T> ResponseFuture<Svc, Req, C, T> {
    pub(crate) fn new(
        pick: Pick,
        svc: Svc,
        request: Req,
        start: Instant,
        classify: C,
        track: T,
    ) -> Self {
        ResponseFuture {
            state: State::Called {
                call: Oneshot::new(svc, request),
            },
            pick: Some(pick),
            start,
            classify,
            track,
        }
    }

    pub(crate) fn no_backend(error: PickError, classify: C, track: T) -> Self {
        ResponseFuture {
            state: State::NoBackend { error: Some(error) },
            pick: None,
            start: Instant::now(),
            classify,
            track,
        }
    }
}

impl<Svc, Req, C, T> Future for ResponseFuture<Svc, Req, C, T>
where
    Svc: Service<Req>,
    Svc::Error: Into<BoxError>,
    C: Classify<Svc::Response, Svc::Error>,
    T: Track<Req, Svc::Response>,
{
    type Output = Result<T::Response, BoxError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let result = match this.state.project() {
            StateProj::NoBackend { error } => {
                let error = error
                    .take()
                    .expect("ResponseFuture polled after completion");
                return Poll::Ready(Err(NoBackendAvailable::new(error).into()));
            }
            StateProj::Called { call } => ready!(call.poll(cx)),
        };
        let pick = this
            .pick
            .take()
            .expect("ResponseFuture polled after completion");
        match result {
            Ok(response) => {
                let outcome = this.classify.classify_response(&response);
                let completion = Completion::new(pick, outcome, this.start.elapsed());
                Poll::Ready(Ok(this.track.complete(response, completion)))
            }
            Err(error) => {
                // No latency: a refused connection is fast, and must not make a dead backend
                // look like the quickest one to latency-aware strategies.
                pick.report(this.classify.classify_error(&error), None);
                let backend = pick.backend().clone();
                drop(pick);
                Poll::Ready(Err(BackendFailed::new(backend, error.into()).into()))
            }
        }
    }
}

impl<Svc: Service<Req>, Req, C, T> fmt::Debug for ResponseFuture<Svc, Req, C, T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ResponseFuture")
            .field("pick", &self.pick)
            .finish_non_exhaustive()
    }
}
