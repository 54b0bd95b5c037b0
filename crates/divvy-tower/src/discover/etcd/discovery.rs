//! The etcd discovery configuration and its one-shot listing.

use std::sync::Arc;
use std::time::Duration;

use divvy::{Backend, Balancer, Strategy};
use etcd_client::GetOptions;

use super::client::{bounded, connect};
use super::error::EtcdError;
use super::members::Members;
use super::record::RecordError;
use super::watch::{self, Counters, EtcdHandle};
use crate::health::handle::Background;

/// Backends from etcd: a tokio task lists the keys under a prefix, publishes the set they make,
/// and watches the prefix for changes, publishing each new set atomically.
///
/// Each key under the prefix (`/divvy/<upstream>/<anything>`) is one backend; its value is a
/// JSON [`Record`](super::Record) (address, weight, tier, zone, state, optional max in flight).
/// Backends write their own key under a lease with [`Registration`](super::Registration), or an
/// operator writes them (`etcdctl put /divvy/web/a '{"address":"10.0.0.7:8080"}'`).
///
/// - **Consistency.** The task lists the prefix (a linearizable range read, which answers with
///   its revision `r`) and watches from `r + 1`, so every change after the listing arrives once,
///   in order: none is missed and none applied twice.
/// - **Failures.** When the connection is lost or the watch ends, the task reconnects and
///   resumes the watch after the last revision it applied, so etcd replays what it missed; when
///   that revision has been compacted away (or the cluster's revision went back, as after a
///   rebuild), it lists the prefix again and watches from the new revision. It retries every
///   [`retry_interval`](Self::retry_interval) while etcd is unreachable. The last known set
///   keeps serving all the while.
/// - **Malformed values.** A value that is not a valid record is logged (`tracing`, warn level,
///   naming the key) and skipped: the key keeps its last good backend, or stays absent. Two keys
///   naming one address keep the key that sorts first.
/// - **Order.** The set is sorted by address, so every instance that sees the same keys builds
///   the same set and, with a hashing strategy, routes every key to the same backend.
///
/// The set replaces the balancer's whole set, including backends it was built with; backends
/// that stay keep their live state (in flight, health, latency). An empty prefix publishes an
/// empty set when the balancer accepts one; otherwise the last set keeps serving and the refusal
/// is logged.
///
/// ```no_run
/// use divvy::{strategy::Maglev, Balancer};
/// use divvy_tower::discover::EtcdDiscovery;
///
/// # async fn run() -> Result<(), Box<dyn std::error::Error>> {
/// let etcd = EtcdDiscovery::new(["http://127.0.0.1:2379"], "/divvy/web/");
/// let lb = Balancer::new(Maglev::new(), etcd.list().await?.backends)?;
/// let discovery = etcd.spawn(lb.clone());
/// // … serve traffic with `lb` …
/// println!("at etcd revision {}", discovery.stats().revision);
/// discovery.shutdown().await; // or drop it
/// # Ok(())
/// # }
/// ```
#[derive(Clone, Debug)]
pub struct EtcdDiscovery {
    pub(crate) endpoints: Arc<[Arc<str>]>,
    pub(crate) prefix: Arc<str>,
    pub(crate) timeout: Duration,
    pub(crate) retry_interval: Duration,
}

/// The backends under the prefix at one etcd revision, from [`EtcdDiscovery::list`].
#[non_exhaustive]
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Listing {
    /// The set, sorted by address.
    pub backends: Vec<Backend>,
    /// The etcd revision the set was read at.
    pub revision: i64,
    /// The keys skipped, and why.
    pub skipped: Vec<RecordError>,
}

impl EtcdDiscovery {
    /// Discovers the keys under `prefix` (for example `/divvy/web/`: end it with `/` so that
    /// `/divvy/web/` does not also match `/divvy/webmail/`) from the etcd cluster at `endpoints`
    /// (`http://127.0.0.1:2379`, or `127.0.0.1:2379`).
    pub fn new<E: AsRef<str>>(
        endpoints: impl IntoIterator<Item = E>,
        prefix: impl Into<Arc<str>>,
    ) -> Self {
        EtcdDiscovery {
            endpoints: endpoints.into_iter().map(|e| e.as_ref().into()).collect(),
            prefix: prefix.into(),
            timeout: Duration::from_secs(5),
            retry_interval: Duration::from_secs(1),
        }
    }

    /// How long a connection attempt or a listing waits for etcd, and how long a silent
    /// connection (HTTP/2 keep-alive pings unanswered) is kept. Default is 5 s.
    pub fn timeout(&mut self, timeout: Duration) -> &mut Self {
        self.timeout = timeout;
        self
    }

    /// How long to wait before listing again after a failure (etcd unreachable, the watch
    /// ended). Default is 1 s, so that a restarted etcd is caught up with within about a second.
    pub fn retry_interval(&mut self, interval: Duration) -> &mut Self {
        self.retry_interval = interval;
        self
    }

    /// The watched prefix.
    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    /// Lists the prefix once: the initial set for [`Balancer::new`], and the revision it was read
    /// at.
    ///
    /// # Errors
    ///
    /// An [`EtcdError`] when etcd cannot be reached or does not answer within the timeout.
    pub async fn list(&self) -> Result<Listing, EtcdError> {
        let mut client = connect(&self.endpoints, self.timeout).await?;
        let mut members = Members::default();
        let mut skipped = Vec::new();
        let revision = self
            .list_into(&mut client, &mut members, &mut skipped)
            .await?;
        let backends = members.set(&mut skipped);
        Ok(Listing {
            backends,
            revision,
            skipped,
        })
    }

    /// Starts discovering on the current tokio runtime: the prefix is listed at once, published
    /// when it differs from the balancer's set, then watched.
    ///
    /// # Panics
    ///
    /// When called outside a tokio runtime, as [`tokio::spawn`].
    pub fn spawn<S: Strategy>(&self, balancer: Balancer<S>) -> EtcdHandle {
        let counters = Arc::new(Counters::default());
        let this = self.clone();
        let c = counters.clone();
        let inner = Background::spawn(move |stop| watch::run(this, balancer, c, stop));
        EtcdHandle { inner, counters }
    }

    /// The cluster's current revision, from a count-only read of the prefix.
    pub(crate) async fn cluster_revision(
        &self,
        client: &mut etcd_client::Client,
    ) -> Result<i64, EtcdError> {
        let options = GetOptions::new().with_prefix().with_count_only();
        let resp = bounded(
            "get",
            self.timeout,
            client.get(self.prefix.as_bytes(), Some(options)),
        )
        .await?;
        Ok(resp.header().map_or(0, |h| h.revision()))
    }

    /// Reads the prefix into `members` (keys with malformed values keep their last good
    /// backend); returns the revision read at.
    pub(crate) async fn list_into(
        &self,
        client: &mut etcd_client::Client,
        members: &mut Members,
        skipped: &mut Vec<RecordError>,
    ) -> Result<i64, EtcdError> {
        let options = GetOptions::new().with_prefix();
        let resp = bounded(
            "get",
            self.timeout,
            client.get(self.prefix.as_bytes(), Some(options)),
        )
        .await?;
        let revision = resp.header().map_or(0, |h| h.revision());
        members.reset(resp.kvs().iter().map(|kv| (kv.key(), kv.value())), skipped);
        Ok(revision)
    }
}
