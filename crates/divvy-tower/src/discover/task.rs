//! The discovery task: resolve, publish when changed, wait for the TTL, again.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::time::Duration;

use divvy::{Backend, Balancer, Strategy};
use hickory_resolver::TokioResolver;

use super::change::Change;
use super::dns::DnsDiscovery;
use super::error::DiscoverError;
use crate::health::handle::{Background, Stop};

/// What one discovery round found, as given to
/// [`DnsDiscovery::on_event`](super::DnsDiscovery::on_event) callbacks.
#[non_exhaustive]
#[derive(Debug)]
pub enum DiscoveryEvent<'a> {
    /// The answer differed from the balancer's set and was published.
    Updated {
        /// The set now serving.
        backends: &'a [Backend],
        /// When the name is asked again: its TTL within the configured bounds.
        next: Duration,
    },
    /// The answer matched the balancer's set; nothing was published.
    Unchanged {
        /// The set, still serving.
        backends: &'a [Backend],
        /// When the name is asked again: its TTL within the configured bounds.
        next: Duration,
    },
    /// The round failed or found nothing; the last good set keeps serving.
    Failed {
        /// Why.
        error: &'a DiscoverError,
        /// When the name is asked again: the retry interval.
        next: Duration,
    },
}

/// Counts of what a discovery task did, from [`DiscoveryHandle::stats`].
#[non_exhaustive]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct DiscoveryStats {
    /// Rounds that ended (answered, failed or empty).
    pub rounds: u64,
    /// Sets published to the balancer.
    pub updates: u64,
    /// Rounds that kept the last good set because the query failed, the answer was empty or the
    /// balancer refused the set.
    pub failures: u64,
}

#[derive(Debug, Default)]
pub(crate) struct Counters {
    rounds: AtomicU64,
    updates: AtomicU64,
    failures: AtomicU64,
}

/// The running discovery from [`DnsDiscovery::spawn`](super::DnsDiscovery::spawn).
///
/// Dropping the handle stops the discovery at its next step, without waiting;
/// [`shutdown`](Self::shutdown) stops it and waits until it has ended. The balancer keeps the
/// last set published.
#[must_use = "dropping the handle stops the discovery"]
#[derive(Debug)]
pub struct DiscoveryHandle {
    pub(crate) inner: Background,
    pub(crate) counters: Arc<Counters>,
}

impl DiscoveryHandle {
    /// Stops the discovery and waits until its task has ended. Once this returns nothing more is
    /// published and no callback runs.
    pub async fn shutdown(self) {
        self.inner.shutdown().await;
    }

    /// Whether the discovery's task has ended (after a shutdown, or a panic in a callback).
    pub fn is_finished(&self) -> bool {
        self.inner.is_finished()
    }

    /// What the discovery did so far.
    pub fn stats(&self) -> DiscoveryStats {
        DiscoveryStats {
            rounds: self.counters.rounds.load(Relaxed),
            updates: self.counters.updates.load(Relaxed),
            failures: self.counters.failures.load(Relaxed),
        }
    }
}

pub(crate) async fn run<S: Strategy>(
    config: DnsDiscovery,
    resolver: TokioResolver,
    balancer: Balancer<S>,
    counters: Arc<Counters>,
    mut stop: Stop,
) {
    loop {
        // `biased`: once stopped, nothing more is published, even an answer that is ready.
        let found = tokio::select! {
            biased;
            _ = &mut stop => return,
            found = config.lookup(&resolver) => found,
        };
        let next = round(&config, &balancer, &counters, found);
        tokio::select! {
            biased;
            _ = &mut stop => return,
            () = tokio::time::sleep(next) => {}
        }
    }
}

/// Publishes what a lookup found when it differs from the current set; returns the wait until
/// the next round.
fn round<S: Strategy>(
    config: &DnsDiscovery,
    balancer: &Balancer<S>,
    counters: &Counters,
    found: Result<(Vec<Backend>, Duration), DiscoverError>,
) -> Duration {
    counters.rounds.fetch_add(1, Relaxed);
    let name = config.name();
    let published = found.and_then(|(backends, next)| {
        // The same path as every other source: one atomic replacement, published only when it
        // differs from what serves now (not from what was last published: an update from
        // elsewhere is put right on the next round).
        let changed = Change::Replace(backends.clone()).apply(balancer)?;
        Ok((backends, next, changed))
    });
    let (event, next);
    let error;
    match &published {
        Ok((backends, n, changed)) => {
            next = *n;
            if *changed {
                counters.updates.fetch_add(1, Relaxed);
                tracing::info!(%name, backends = backends.len(), ?next, "dns discovery published a new backend set");
                event = DiscoveryEvent::Updated { backends, next };
            } else {
                tracing::debug!(%name, backends = backends.len(), ?next, "dns discovery found the same backend set");
                event = DiscoveryEvent::Unchanged { backends, next };
            }
        }
        Err(e) => {
            error = e;
            next = config.retry();
            counters.failures.fetch_add(1, Relaxed);
            tracing::warn!(%name, %error, ?next, "dns discovery keeps the last good backend set");
            event = DiscoveryEvent::Failed { error, next };
        }
    }
    if let Some(f) = config.callback() {
        f(&event);
    }
    next
}
