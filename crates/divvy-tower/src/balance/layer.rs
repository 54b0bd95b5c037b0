//! The balancing layer.

use std::fmt;

use divvy::{Balancer, Strategy};
use tower_layer::Layer;

use super::{Balance, MakeEndpoint};
use crate::track::Http;

/// Wraps a [`MakeEndpoint`] (the maker of per-backend services) into a [`Balance`].
///
/// The layer holds what every balanced stack shares: the [`Balancer`], the context extractor
/// and the outcome classifier. What it wraps is the one thing that differs per stack: how to
/// reach a backend. With one shared HTTP client that is
/// [`HttpEndpoints`](crate::endpoint::HttpEndpoints); it can be any `FnMut(&Backend) -> Svc`.
pub struct BalanceLayer<S: Strategy, X, C, T = Http> {
    balancer: Balancer<S>,
    extract: X,
    classify: C,
    track: T,
    backpressure: bool,
}

impl<S: Strategy, X, C> BalanceLayer<S, X, C, Http> {
    /// A layer balancing over `balancer`, reading each request's context with `extract` and its
    /// outcome with `classify`; HTTP responses hold their backend until the body ends.
    pub const fn new(balancer: Balancer<S>, extract: X, classify: C) -> Self {
        BalanceLayer {
            balancer,
            extract,
            classify,
            track: Http,
            backpressure: false,
        }
    }
}

impl<S: Strategy, X, C, T> BalanceLayer<S, X, C, T> {
    /// Uses `track` to decide how long a request holds its backend, for example
    /// [`Opaque`](crate::track::Opaque) for a service that is not HTTP.
    pub fn track<T2>(self, track: T2) -> BalanceLayer<S, X, C, T2> {
        BalanceLayer {
            balancer: self.balancer,
            extract: self.extract,
            classify: self.classify,
            track,
            backpressure: self.backpressure,
        }
    }

    /// Services made by this layer wait in `poll_ready` while no backend can take a request:
    /// see [`Balance::backpressure`]. Default is off (always ready).
    pub fn backpressure(mut self) -> Self {
        self.backpressure = true;
        self
    }

    /// The balancer.
    pub fn balancer(&self) -> &Balancer<S> {
        &self.balancer
    }
}

impl<S, M, X, C, T> Layer<M> for BalanceLayer<S, X, C, T>
where
    S: Strategy,
    M: MakeEndpoint,
    M::Service: Clone,
    X: Clone,
    C: Clone,
    T: Clone,
{
    type Service = Balance<S, M, X, C, T>;

    fn layer(&self, maker: M) -> Self::Service {
        let balance = Balance::from_parts(
            self.balancer.clone(),
            maker,
            self.extract.clone(),
            self.classify.clone(),
            self.track.clone(),
        );
        if self.backpressure {
            balance.backpressure()
        } else {
            balance
        }
    }
}

impl<S: Strategy, X: Clone, C: Clone, T: Clone> Clone for BalanceLayer<S, X, C, T> {
    fn clone(&self) -> Self {
        BalanceLayer {
            balancer: self.balancer.clone(),
            extract: self.extract.clone(),
            classify: self.classify.clone(),
            track: self.track.clone(),
            backpressure: self.backpressure,
        }
    }
}

impl<S, X, C, T> fmt::Debug for BalanceLayer<S, X, C, T>
where
    S: Strategy + fmt::Debug,
    X: fmt::Debug,
    C: fmt::Debug,
    T: fmt::Debug,
{
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BalanceLayer")
            .field("balancer", &self.balancer)
            .field("extract", &self.extract)
            .field("classify", &self.classify)
            .field("track", &self.track)
            .field("backpressure", &self.backpressure)
            .finish()
    }
}
