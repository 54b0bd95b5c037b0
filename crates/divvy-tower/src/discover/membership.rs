//! A balancer's membership as a `tower::discover::Discover`, for code that expects one.

use std::collections::{HashMap, VecDeque};
use std::convert::Infallible;
use std::fmt;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use divvy::{Balancer, Strategy};
use futures_util::Stream;
use tower::discover::Change;

use crate::balance::MakeEndpoint;

/// The members of a [`Balancer`] as a stream of [`tower::discover::Change`]s, keyed by backend
/// identity, with a service made by `maker` for each backend that joins: a
/// [`Discover`](tower::discover::Discover) (for tower's own `p2c::Balance`, or any code written
/// against tower's discovery), fed by divvy's membership (DNS, a [`feed`](super::feed), the
/// balancer's own [`add`](Balancer::add) / [`remove`](Balancer::remove)).
///
/// The first poll inserts every current backend; later polls report what each publication
/// added and removed, woken by the publication itself (no polling interval). Changes of weight,
/// tier or state are not membership changes and are not reported. The stream never ends.
pub struct Membership<S: Strategy, M: MakeEndpoint> {
    balancer: Balancer<S>,
    maker: M,
    /// The version last reported; `None` before the first poll.
    seen: Option<u64>,
    /// The identities last reported, by [`Backend::key`](divvy::Backend::key).
    members: HashMap<u64, Arc<str>>,
    pending: VecDeque<Change<Arc<str>, M::Service>>,
}

impl<S: Strategy, M: MakeEndpoint> Membership<S, M> {
    /// The membership of `balancer`, with `maker` making each joining backend's service.
    pub fn new(balancer: Balancer<S>, maker: M) -> Self {
        Membership {
            balancer,
            maker,
            seen: None,
            members: HashMap::new(),
            pending: VecDeque::new(),
        }
    }

    /// Queues the difference between what was reported and the set of version `version`.
    fn diff(&mut self) {
        let backends = self.balancer.backends();
        let mut next = HashMap::with_capacity(backends.len());
        for b in backends.iter() {
            if !self.members.contains_key(&b.key()) {
                let service = self.maker.make_endpoint(b);
                self.pending
                    .push_back(Change::Insert(b.id_arc().clone(), service));
            }
            next.insert(b.key(), b.id_arc().clone());
        }
        for (key, id) in self.members.drain() {
            if !next.contains_key(&key) {
                self.pending.push_back(Change::Remove(id));
            }
        }
        self.members = next;
    }
}

// Nothing is pinned structurally: the services are only queued, never polled here.
impl<S: Strategy, M: MakeEndpoint> Unpin for Membership<S, M> {}

impl<S: Strategy, M: MakeEndpoint> Stream for Membership<S, M> {
    type Item = Result<Change<Arc<str>, M::Service>, Infallible>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = self.get_mut();
        loop {
            if let Some(change) = this.pending.pop_front() {
                return Poll::Ready(Some(Ok(change)));
            }
            // `u64::MAX` is never a version: the first poll always sees a change.
            let seen = this.seen.unwrap_or(u64::MAX);
            match this.balancer.poll_changed(seen, cx.waker()) {
                Poll::Ready(version) => {
                    this.seen = Some(version);
                    this.diff();
                }
                Poll::Pending => return Poll::Pending,
            }
        }
    }
}

impl<S: Strategy + fmt::Debug, M: MakeEndpoint> fmt::Debug for Membership<S, M> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Membership")
            .field("balancer", &self.balancer)
            .field("seen", &self.seen)
            .field("members", &self.members.len())
            .finish_non_exhaustive()
    }
}
