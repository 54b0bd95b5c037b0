//! Balancing middleware: one tower [`Service`](tower_service::Service) in front of many
//! backends.
//!
//! [`Balance`] is built from four things:
//!
//! 1. a [`divvy::Balancer`]: the backend set, the strategy, health and load;
//! 2. a [`MakeEndpoint`]: the service that reaches one backend, made once per backend identity
//!    and kept while the backend stays in the set (set changes are noticed by comparing
//!    [`Balancer::version`](divvy::Balancer::version), one atomic load per request);
//! 3. an [`Extract`](crate::extract::Extract): the request's routing context (client address,
//!    hash key, sticky target);
//! 4. a [`Classify`](crate::classify::Classify): whether the backend did its job.
//!
//! [`BalanceLayer`] holds 1, 3 and 4 and wraps 2, so a stack reads
//! `ServiceBuilder::new().layer(BalanceLayer::new(lb, extract, classify)).service(maker)`.
//!
//! # A request's life
//!
//! `call` reads the context, picks a backend (excluding those this request already tried, see
//! [`retry`](crate::retry)), clones that backend's service and returns. The response future
//! drives the clone to readiness and calls it (as [`ServiceExt::oneshot`](tower::ServiceExt)).
//! The response head is classified and the latency from `call` to the head is recorded; the pick
//! guard then goes into the response body ([`PickBody`](crate::track::PickBody)), so the request
//! counts as in flight until the body ends or is dropped. The outcome is reported exactly once.
//!
//! # Readiness
//!
//! By default [`Balance`] is always ready (with [`Balance::backpressure`] it waits instead: see
//! there). Choosing a backend in `poll_ready` would bind a readiness
//! reservation to a backend before the request (and so its hash key or sticky cookie) is known,
//! and a balancer with no available backend would have to either wait (a hang with no deadline)
//! or fail the readiness of every later request. Instead, the pick happens in `call`, where the
//! request is known, and a request no backend can take fails at once with
//! [`NoBackendAvailable`](crate::error::NoBackendAvailable). Per-backend backpressure (a
//! `ConcurrencyLimit` or `Buffer` inside the endpoint) shows up as latency of that request;
//! divvy's own per-backend limit is [`Backend::max_in_flight`](divvy::Backend::max_in_flight),
//! which makes a full backend unavailable to the pick instead. To shed load at the front, put
//! tower's `ConcurrencyLimit` / `LoadShed` in front of [`Balance`].
//!
//! # Cost
//!
//! Per request, beyond the inner service: one version check, the extractor, the pick (lock and
//! allocation free), a hash-map lookup of the backend's service and its clone. No allocation;
//! a lock only when the backend set changed.

mod endpoints;
mod future;
mod layer;
mod make;
mod service;

pub use future::ResponseFuture;
pub use layer::BalanceLayer;
pub use make::MakeEndpoint;
pub use service::Balance;
