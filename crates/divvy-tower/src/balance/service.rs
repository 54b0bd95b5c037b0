//! The balancing service.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use divvy::{Backend, Balancer, Picker, Strategy};
use parking_lot::Mutex;
use tokio::time::{Instant, Sleep};
use tower::BoxError;
use tower_service::Service;

use super::endpoints::Endpoints;
use super::future::ResponseFuture;
use super::MakeEndpoint;
use crate::classify::Classify;
use crate::extract::Extract;
use crate::track::{Http, Track};

/// Balances requests over the backends of a [`Balancer`]: see the [module docs](super).
///
/// - `S`: the balancer's [`Strategy`];
/// - `M`: the [`MakeEndpoint`] that makes one service per backend;
/// - `X`: the [`Extract`] that reads the routing context from a request;
/// - `C`: the [`Classify`] that decides each request's outcome;
/// - `T`: the [`Track`] that decides how long a request holds its backend ([`Http`]: until the
///   response body ends).
///
/// Cheap to clone: the balancer and the per-backend services are shared, and the maker,
/// extractor, classifier and tracker are cloned (keep them small, or behind an `Arc`).
pub struct Balance<S: Strategy, M: MakeEndpoint, X, C, T = Http> {
    /// Caches the balancer's snapshot: a version check and a pick cost one atomic load.
    picker: Picker<S>,
    maker: M,
    extract: X,
    classify: C,
    track: T,
    /// The services this clone uses; replaced when the balancer's version moves on.
    endpoints: Arc<Endpoints<M::Service>>,
    /// The newest services any clone built, so that a set change is made once, not per clone.
    latest: Arc<Mutex<Arc<Endpoints<M::Service>>>>,
    /// `poll_ready` waits until a backend can take a request (see [`backpressure`](Self::backpressure)).
    backpressure: bool,
    /// In backpressure mode, the wait for the earliest ejection to expire: that is no event the
    /// balancer reports, so readiness wakes itself for it.
    expiry: Option<Pin<Box<Sleep>>>,
}

impl<S, M, X, C> Balance<S, M, X, C, Http>
where
    S: Strategy,
    M: MakeEndpoint,
    M::Service: Clone,
{
    /// Balances over `balancer`'s backends, making each backend's service with `maker`,
    /// reading each request's context with `extract` and its outcome with `classify`. The
    /// services of the current set are made now.
    pub fn new(balancer: Balancer<S>, maker: M, extract: X, classify: C) -> Self {
        Balance::from_parts(balancer, maker, extract, classify, Http)
    }
}

impl<S, M, X, C, T> Balance<S, M, X, C, T>
where
    S: Strategy,
    M: MakeEndpoint,
    M::Service: Clone,
{
    pub(crate) fn from_parts(
        balancer: Balancer<S>,
        mut maker: M,
        extract: X,
        classify: C,
        track: T,
    ) -> Self {
        let endpoints = Arc::new(Endpoints::build(&balancer, &mut maker, None));
        Balance {
            picker: balancer.picker(),
            maker,
            extract,
            classify,
            track,
            latest: Arc::new(Mutex::new(endpoints.clone())),
            endpoints,
            backpressure: false,
            expiry: None,
        }
    }

    /// Makes `poll_ready` wait while no backend can take a request (every backend down,
    /// ejected, draining or at its [`max_in_flight`](divvy::Backend::max_in_flight)), as tower's
    /// own balancer does, instead of being always ready and failing such a request at once with
    /// [`NoBackendAvailable`](crate::error::NoBackendAvailable).
    ///
    /// The wait ends at the next change that may free a backend: a health or operator
    /// transition, the end of a request to a backend with an in-flight limit, a new backend set,
    /// or the expiry of the earliest passive ejection. Readiness reserves nothing: when several
    /// callers race for one freed slot, the losers' requests still fail with
    /// `NoBackendAvailable`. Put a timeout (tower's `Timeout`) around a stack in this mode, as
    /// the wait has no deadline of its own. Default is off (always ready).
    pub fn backpressure(mut self) -> Self {
        self.picker.balancer().enable_wakers();
        self.backpressure = true;
        self
    }

    /// Waits for a backend that can take a request (backpressure mode).
    fn poll_capacity(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        let balancer = self.picker.balancer();
        if balancer.poll_available(cx.waker()).is_ready() {
            self.expiry = None;
            return Poll::Ready(Ok(()));
        }
        if let Some(left) = balancer.ejection_expires_in() {
            let deadline = Instant::now() + left;
            let sleep = self
                .expiry
                .get_or_insert_with(|| Box::pin(tokio::time::sleep_until(deadline)));
            if sleep.deadline() != deadline {
                sleep.as_mut().reset(deadline);
            }
            if sleep.as_mut().poll(cx).is_ready() {
                // The balancer's clock and tokio's disagree by a hair: look again in a
                // millisecond (the timer's resolution) rather than spin.
                sleep
                    .as_mut()
                    .reset(Instant::now() + Duration::from_millis(1));
                let _ = sleep.as_mut().poll(cx);
            }
        }
        Poll::Pending
    }

    /// Uses `track` to decide how long a request holds its backend, for example
    /// [`Opaque`](crate::track::Opaque) for a service that is not HTTP.
    pub fn track<T2>(self, track: T2) -> Balance<S, M, X, C, T2> {
        Balance {
            picker: self.picker,
            maker: self.maker,
            extract: self.extract,
            classify: self.classify,
            track,
            endpoints: self.endpoints,
            latest: self.latest,
            backpressure: self.backpressure,
            expiry: None,
        }
    }

    /// Picks up a new backend set: reuses the services another clone built for it, or builds
    /// them (keeping the services of backends that stay).
    #[cold]
    fn refresh(&mut self) {
        let mut latest = self.latest.lock();
        if latest.version != self.picker.version() {
            *latest = Arc::new(Endpoints::build(
                self.picker.balancer(),
                &mut self.maker,
                Some(&latest),
            ));
        }
        self.endpoints = latest.clone();
    }

    /// The service for a backend the current services lack: the pick saw a set published
    /// after this clone last looked.
    #[cold]
    fn endpoint_for(&mut self, backend: &Backend) -> M::Service {
        self.refresh();
        match self.endpoints.get(backend) {
            Some(svc) => svc.clone(),
            // Published and then replaced again while we looked: serve this one request.
            None => self.maker.make_endpoint(backend),
        }
    }
}

impl<S: Strategy, M: MakeEndpoint, X, C, T> Balance<S, M, X, C, T> {
    /// The balancer.
    pub fn balancer(&self) -> &Balancer<S> {
        self.picker.balancer()
    }

    /// The maker of per-backend services.
    pub fn get_ref(&self) -> &M {
        &self.maker
    }

    /// The maker of per-backend services, mutably; services already made are kept.
    pub fn get_mut(&mut self) -> &mut M {
        &mut self.maker
    }

    /// The maker of per-backend services.
    pub fn into_inner(self) -> M {
        self.maker
    }

    /// The context extractor.
    pub fn extractor(&self) -> &X {
        &self.extract
    }

    /// The outcome classifier.
    pub fn classifier(&self) -> &C {
        &self.classify
    }

    /// The number of per-backend services this clone holds.
    pub fn endpoints(&self) -> usize {
        self.endpoints.len()
    }
}

impl<S, M, X, C, T, Req> Service<Req> for Balance<S, M, X, C, T>
where
    S: Strategy,
    M: MakeEndpoint,
    M::Service: Service<Req> + Clone,
    <M::Service as Service<Req>>::Error: Into<BoxError>,
    X: Extract<Req>,
    C: Classify<<M::Service as Service<Req>>::Response, <M::Service as Service<Req>>::Error>
        + Clone,
    T: Track<Req, <M::Service as Service<Req>>::Response> + Clone,
{
    type Response = T::Response;
    type Error = BoxError;
    type Future = ResponseFuture<M::Service, Req, C, T>;

    /// Ready by default: the backend is chosen in `call`, and its service's readiness is awaited
    /// in the response future. A request no backend can take fails at once with
    /// [`NoBackendAvailable`](crate::error::NoBackendAvailable) instead of waiting. With
    /// [`backpressure`](Balance::backpressure), pending while no backend can take a request.
    #[inline]
    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        if self.backpressure {
            return self.poll_capacity(cx);
        }
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: Req) -> Self::Future {
        let start = Instant::now();
        if self.picker.version() != self.endpoints.version {
            self.refresh();
        }
        let picked = {
            let key = self.extract.extract(&request);
            let ctx = key.context().exclude(self.track.exclude(&request));
            self.picker.pick(&ctx)
        };
        let pick = match picked {
            Ok(pick) => pick,
            Err(e) => {
                return ResponseFuture::no_backend(e, self.classify.clone(), self.track.clone())
            }
        };
        let svc = match self.endpoints.get_key(pick.key()) {
            Some(svc) => svc.clone(),
            None => self.endpoint_for(&pick.backend()),
        };
        ResponseFuture::new(
            pick,
            svc,
            request,
            start,
            self.classify.clone(),
            self.track.clone(),
        )
    }
}

impl<S, M, X, C, T> Clone for Balance<S, M, X, C, T>
where
    S: Strategy,
    M: MakeEndpoint + Clone,
    X: Clone,
    C: Clone,
    T: Clone,
{
    fn clone(&self) -> Self {
        Balance {
            picker: self.picker.clone(),
            maker: self.maker.clone(),
            extract: self.extract.clone(),
            classify: self.classify.clone(),
            track: self.track.clone(),
            endpoints: self.endpoints.clone(),
            latest: self.latest.clone(),
            backpressure: self.backpressure,
            expiry: None,
        }
    }
}

impl<S, M, X, C, T> fmt::Debug for Balance<S, M, X, C, T>
where
    S: Strategy + fmt::Debug,
    M: MakeEndpoint + fmt::Debug,
    X: fmt::Debug,
    C: fmt::Debug,
    T: fmt::Debug,
{
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Balance")
            .field("balancer", self.picker.balancer())
            .field("maker", &self.maker)
            .field("extract", &self.extract)
            .field("classify", &self.classify)
            .field("track", &self.track)
            .field("version", &self.endpoints.version)
            .field("backpressure", &self.backpressure)
            .finish()
    }
}
