//! Feeding a balancer from a `tower::discover::Discover`: keys become backends, services become
//! the endpoints [`Balance`](crate::Balance) sends to.

use std::collections::HashMap;
use std::fmt;
use std::hash::Hash;
use std::sync::Arc;
use std::task::{Context, Poll};

use divvy::{Backend, Balancer, Strategy};
use futures_util::future::{Either, MapErr, Ready};
use futures_util::TryFutureExt;
use parking_lot::Mutex;
use tower::discover::{Change as TowerChange, Discover};
use tower::BoxError;
use tower_service::Service;

use crate::balance::MakeEndpoint;

type Slot<Svc> = Arc<Mutex<Option<Svc>>>;

/// The services a [`Discover`] inserted, by backend, as a [`MakeEndpoint`] for
/// [`Balance`](crate::Balance); filled by [`feed_discover`].
///
/// A service replaced by a later `Insert` of the same key takes effect for the next request,
/// even in `Balance` clones that made their endpoint before; a removed backend's endpoint fails
/// the requests that still reach it with [`Removed`].
pub struct Discovered<Svc> {
    slots: Arc<Mutex<HashMap<u64, Slot<Svc>>>>,
}

impl<Svc> Discovered<Svc> {
    /// An empty set of services, to hand to [`feed_discover`] and to `Balance`.
    pub fn new() -> Self {
        Discovered {
            slots: Arc::new(Mutex::new(HashMap::new())),
        }
    }

    fn slot(&self, key: u64) -> Slot<Svc> {
        self.slots.lock().entry(key).or_default().clone()
    }
}

impl<Svc> Default for Discovered<Svc> {
    fn default() -> Self {
        Self::new()
    }
}

impl<Svc> Clone for Discovered<Svc> {
    fn clone(&self) -> Self {
        Discovered {
            slots: self.slots.clone(),
        }
    }
}

impl<Svc> fmt::Debug for Discovered<Svc> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Discovered")
            .field("backends", &self.slots.lock().len())
            .finish()
    }
}

impl<Svc: Clone> MakeEndpoint for Discovered<Svc> {
    type Service = DiscoveredEndpoint<Svc>;

    fn make_endpoint(&mut self, backend: &Backend) -> DiscoveredEndpoint<Svc> {
        DiscoveredEndpoint {
            slot: self.slot(backend.key()),
            current: None,
        }
    }
}

/// One backend's service from a [`Discover`]: the one most recently inserted for its key.
pub struct DiscoveredEndpoint<Svc> {
    slot: Slot<Svc>,
    /// The service this clone drives, taken from the slot when first polled.
    current: Option<Svc>,
}

impl<Svc> Clone for DiscoveredEndpoint<Svc> {
    fn clone(&self) -> Self {
        // A clone starts afresh: it reads the newest service when it is polled.
        DiscoveredEndpoint {
            slot: self.slot.clone(),
            current: None,
        }
    }
}

impl<Svc> fmt::Debug for DiscoveredEndpoint<Svc> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DiscoveredEndpoint")
            .field("present", &self.slot.lock().is_some())
            .finish()
    }
}

/// A request reached a backend that its [`Discover`] had removed.
#[derive(Clone, Copy, Debug, Default, thiserror::Error)]
#[error("the backend was removed by discovery")]
pub struct Removed;

type EndpointFuture<F, E, R> = Either<MapErr<F, fn(E) -> BoxError>, Ready<Result<R, BoxError>>>;

impl<Svc, Req> Service<Req> for DiscoveredEndpoint<Svc>
where
    Svc: Service<Req> + Clone,
    Svc::Error: Into<BoxError>,
{
    type Response = Svc::Response;
    type Error = BoxError;
    type Future = EndpointFuture<Svc::Future, Svc::Error, Svc::Response>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        if self.current.is_none() {
            self.current = self.slot.lock().clone();
        }
        match &mut self.current {
            Some(svc) => svc.poll_ready(cx).map_err(Into::into),
            None => Poll::Ready(Err(Removed.into())),
        }
    }

    fn call(&mut self, request: Req) -> Self::Future {
        match &mut self.current {
            Some(svc) => Either::Left(svc.call(request).map_err(Into::into as fn(_) -> _)),
            None => Either::Right(futures_util::future::ready(Err(Removed.into()))),
        }
    }
}

/// Applies every change of `discover` to `balancer` and `services`, until the stream ends
/// (`Ok`) or fails (`Err`, ending the feed; the balancer keeps the last set).
///
/// `Insert(key, service)` makes `backend(&key)` a member (or replaces the service of one already
/// in) and `Remove(key)` removes it. The service is stored before the backend joins the set and
/// dropped after it leaves, so a pick never finds a backend without one. A backend the balancer
/// refuses (an invalid weight from `backend`) is logged at warn level and skipped.
///
/// ```
/// use std::convert::Infallible;
/// use divvy::{strategy::RoundRobin, Backend, Balancer};
/// use divvy_tower::discover::{feed_discover, Discovered};
/// use tower::discover::Change;
///
/// # #[tokio::main(flavor = "current_thread")] async fn main() {
/// let lb = Balancer::new(RoundRobin::new(), Vec::new()).unwrap();
/// let services = Discovered::new();
/// let echo = tower::service_fn(|x: u32| async move { Ok::<_, Infallible>(x) });
/// let discover = futures_util::stream::iter([Ok::<_, Infallible>(Change::Insert(7u16, echo))]);
/// feed_discover(lb.clone(), discover, services.clone(), |port: &u16| {
///     Backend::new(format!("127.0.0.1:{port}"))
/// })
/// .await
/// .unwrap();
/// assert_eq!(lb.backends()[0].id(), "127.0.0.1:7");
/// # }
/// ```
pub async fn feed_discover<S, D, F>(
    balancer: Balancer<S>,
    discover: D,
    services: Discovered<D::Service>,
    mut backend: F,
) -> Result<(), D::Error>
where
    S: Strategy,
    D: Discover,
    D::Key: Hash + Eq + Clone,
    F: FnMut(&D::Key) -> Backend,
{
    let mut ids: HashMap<D::Key, Backend> = HashMap::new();
    let mut discover = std::pin::pin!(discover);
    while let Some(change) = std::future::poll_fn(|cx| discover.as_mut().poll_discover(cx)).await {
        let change = change?;
        match change {
            TowerChange::Insert(key, service) => {
                let b = backend(&key);
                *services.slot(b.key()).lock() = Some(service);
                match balancer.upsert(b.clone()) {
                    Ok(_) => {
                        if let Some(old) = ids.insert(key, b.clone()) {
                            if old.key() != b.key() {
                                remove(&balancer, &services, &old);
                            }
                        }
                    }
                    Err(error) => {
                        tracing::warn!(%error, backend = b.id(), "discovered backend refused");
                        if !ids.values().any(|known| known.key() == b.key()) {
                            services.slots.lock().remove(&b.key());
                        }
                    }
                }
            }
            TowerChange::Remove(key) => {
                if let Some(old) = ids.remove(&key) {
                    remove(&balancer, &services, &old);
                }
            }
        }
    }
    Ok(())
}

fn remove<S: Strategy, Svc>(balancer: &Balancer<S>, services: &Discovered<Svc>, b: &Backend) {
    // Removed from the set first, so that no new pick finds it without a service.
    let _ = balancer.remove(b.id());
    if let Some(slot) = services.slots.lock().remove(&b.key()) {
        *slot.lock() = None;
    }
}
