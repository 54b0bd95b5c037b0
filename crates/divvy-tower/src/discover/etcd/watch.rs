//! The etcd discovery task: list, publish, watch from the next revision, publish each change;
//! on any failure, wait and list again.

use std::convert::Infallible;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering::Relaxed};
use std::sync::Arc;

use divvy::{Backend, Balancer, Strategy};
use etcd_client::{EventType, WatchOptions};

use super::client::connect;
use super::discovery::EtcdDiscovery;
use super::error::EtcdError;
use super::members::{self, Members};
use super::record::RecordError;
use crate::health::handle::{Background, Stop};

/// What an etcd discovery task did so far, from [`EtcdHandle::stats`].
#[non_exhaustive]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct EtcdStats {
    /// The etcd revision the balancer's set reflects: the listing's, then each watched change's.
    /// 0 before the first listing.
    pub revision: i64,
    /// Whether the watch is established now (listed and watching).
    pub watching: bool,
    /// Listings of the prefix: the first, and one after each failure that a resumed watch could
    /// not bridge (a compacted revision, a cluster whose revision went back).
    pub lists: u64,
    /// Watches resumed from the last revision seen after a lost connection, without listing.
    pub resumes: u64,
    /// Watches whose start revision etcd had compacted away (followed by a listing).
    pub compacted: u64,
    /// Sets published to the balancer.
    pub updates: u64,
    /// Failures (etcd unreachable, the watch ended or compacted, the balancer refused a set);
    /// the last set kept serving through each.
    pub failures: u64,
    /// Values skipped as malformed or as a second key for one address.
    pub skipped: u64,
}

#[derive(Debug, Default)]
pub(crate) struct Counters {
    revision: AtomicI64,
    watching: AtomicBool,
    lists: AtomicU64,
    resumes: AtomicU64,
    compacted: AtomicU64,
    updates: AtomicU64,
    failures: AtomicU64,
    skipped: AtomicU64,
}

/// The running discovery from [`EtcdDiscovery::spawn`].
///
/// Dropping the handle stops the discovery at its next step, without waiting;
/// [`shutdown`](Self::shutdown) stops it and waits until it has ended. The balancer keeps the
/// last set published.
#[must_use = "dropping the handle stops the discovery"]
#[derive(Debug)]
pub struct EtcdHandle {
    pub(crate) inner: Background,
    pub(crate) counters: Arc<Counters>,
}

impl EtcdHandle {
    /// Stops the discovery and waits until its task has ended. Once this returns nothing more is
    /// published.
    pub async fn shutdown(self) {
        self.inner.shutdown().await;
    }

    /// Whether the discovery's task has ended (after a shutdown).
    pub fn is_finished(&self) -> bool {
        self.inner.is_finished()
    }

    /// What the discovery did so far, and the revision it is at.
    pub fn stats(&self) -> EtcdStats {
        let c = &self.counters;
        EtcdStats {
            revision: c.revision.load(Relaxed),
            watching: c.watching.load(Relaxed),
            lists: c.lists.load(Relaxed),
            resumes: c.resumes.load(Relaxed),
            compacted: c.compacted.load(Relaxed),
            updates: c.updates.load(Relaxed),
            failures: c.failures.load(Relaxed),
            skipped: c.skipped.load(Relaxed),
        }
    }
}

pub(crate) async fn run<S: Strategy>(
    config: EtcdDiscovery,
    balancer: Balancer<S>,
    counters: Arc<Counters>,
    mut stop: Stop,
) {
    // Kept across sessions: a re-list compares against it, and a malformed value keeps the last
    // good backend of its key.
    let mut members = Members::default();
    // The set last published from etcd; at first the balancer's own, so that the first listing
    // replaces whatever the balancer was built with.
    let mut published: Vec<Backend> = balancer.backends().to_vec();
    published.sort_unstable_by(|a, b| a.id().cmp(b.id()));
    // The revision the members reflect, once a watch ran: a new watch resumes after it.
    let mut resume = None;
    loop {
        // `biased`: once stopped, nothing more is published.
        let error = tokio::select! {
            biased;
            _ = &mut stop => return,
            e = session(&config, &balancer, &counters, &mut members, &mut published, &mut resume) => e,
        };
        counters.watching.store(false, Relaxed);
        counters.failures.fetch_add(1, Relaxed);
        let next = config.retry_interval;
        tracing::warn!(prefix = %config.prefix, %error, ?next, "etcd discovery keeps the last known backend set and lists again");
        tokio::select! {
            biased;
            _ = &mut stop => return,
            () = tokio::time::sleep(next) => {}
        }
    }
}

/// One session: connect, list (or resume), publish, watch until something fails. Only returns
/// on failure.
async fn session<S: Strategy>(
    config: &EtcdDiscovery,
    balancer: &Balancer<S>,
    counters: &Counters,
    members: &mut Members,
    published: &mut Vec<Backend>,
    resume: &mut Option<i64>,
) -> EtcdError {
    match watch_once(config, balancer, counters, members, published, resume).await {
        Ok(never) => match never {},
        Err(e) => e,
    }
}

async fn watch_once<S: Strategy>(
    config: &EtcdDiscovery,
    balancer: &Balancer<S>,
    counters: &Counters,
    members: &mut Members,
    published: &mut Vec<Backend>,
    resume: &mut Option<i64>,
) -> Result<Infallible, EtcdError> {
    let prefix = &config.prefix;
    let mut client = connect(&config.endpoints, config.timeout).await?;
    let mut skipped = Vec::new();
    // After a lost connection, etcd replays what changed since the last revision seen, cheaper
    // than listing a large prefix again; unless the cluster's revision went back (a cluster
    // rebuilt from scratch or from an old backup), where a resumed watch would wait for
    // revisions that already mean something else.
    let resumable = match *resume {
        Some(seen) => config.cluster_revision(&mut client).await? >= seen,
        None => false,
    };
    let revision = if let (true, Some(seen)) = (resumable, *resume) {
        counters.resumes.fetch_add(1, Relaxed);
        seen
    } else {
        let revision = config.list_into(&mut client, members, &mut skipped).await?;
        counters.lists.fetch_add(1, Relaxed);
        publish(
            config,
            balancer,
            counters,
            members,
            published,
            &mut skipped,
            revision,
        );
        revision
    };
    *resume = Some(revision);

    // From the revision after the listing (or the last change seen): every later change arrives
    // once, in order.
    let options = WatchOptions::new()
        .with_prefix()
        .with_start_revision(revision + 1)
        .with_progress_notify();
    let mut stream = client
        .watch(prefix.as_bytes(), Some(options))
        .await
        .map_err(EtcdError::request("watch"))?;
    counters.watching.store(true, Relaxed);
    loop {
        let resp = stream
            .message()
            .await
            .map_err(EtcdError::request("watch"))?
            .ok_or_else(|| EtcdError::WatchEnded {
                prefix: prefix.clone(),
                reason: "the stream closed".into(),
            })?;
        if resp.compact_revision() > 0 {
            // What changed between our revision and the compaction is gone: list again.
            *resume = None;
            counters.compacted.fetch_add(1, Relaxed);
            return Err(EtcdError::Compacted {
                prefix: prefix.clone(),
                compacted: resp.compact_revision(),
            });
        }
        if resp.canceled() {
            return Err(EtcdError::WatchEnded {
                prefix: prefix.clone(),
                reason: resp.cancel_reason().to_owned(),
            });
        }
        let Some(revision) = resp.header().map(|h| h.revision()) else {
            continue;
        };
        if resp.created() {
            // The header of the creation answer is the cluster's revision now, but the changes
            // since our start revision are still to come: nothing is known complete yet.
            continue;
        }
        if resp.events().is_empty() {
            // A progress notification: every change up to `revision` has been sent.
            *resume = Some(revision);
            counters.revision.store(revision, Relaxed);
            continue;
        }
        for event in resp.events() {
            let Some(kv) = event.kv() else { continue };
            match event.event_type() {
                EventType::Put => {
                    if let Err(e) = members.put(kv.key(), kv.value()) {
                        skipped.push(e);
                    }
                }
                EventType::Delete => members.delete(kv.key()),
            }
        }
        publish(
            config,
            balancer,
            counters,
            members,
            published,
            &mut skipped,
            revision,
        );
        *resume = Some(revision);
    }
}

/// Logs what was skipped, applies what changed in etcd since the last publication to the
/// balancer, and records the revision.
fn publish<S: Strategy>(
    config: &EtcdDiscovery,
    balancer: &Balancer<S>,
    counters: &Counters,
    members: &Members,
    published: &mut Vec<Backend>,
    skipped: &mut Vec<RecordError>,
    revision: i64,
) {
    let prefix = &config.prefix;
    let set = members.set(skipped);
    for error in skipped.drain(..) {
        counters.skipped.fetch_add(1, Relaxed);
        tracing::warn!(%prefix, %error, "etcd discovery skipped a value");
    }
    let changes = members::diff(published, &set);
    if !changes.is_empty() {
        let mut next = balancer.backends().to_vec();
        let result = if members::apply(&mut next, &changes) {
            balancer.update(next).map(|()| true)
        } else {
            Ok(false)
        };
        match result {
            Ok(changed) => {
                *published = set;
                if changed {
                    counters.updates.fetch_add(1, Relaxed);
                    tracing::info!(%prefix, revision, changes = changes.len(), backends = published.len(), "etcd discovery published a change");
                }
            }
            Err(error) => {
                counters.failures.fetch_add(1, Relaxed);
                tracing::warn!(%prefix, revision, %error, "the balancer refused the change from etcd; the last set keeps serving");
            }
        }
    }
    counters.revision.store(revision, Relaxed);
}
