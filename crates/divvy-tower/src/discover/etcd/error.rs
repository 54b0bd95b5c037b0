//! Why talking to etcd failed.

use std::sync::Arc;
use std::time::Duration;

use crate::discover::BoxError;

/// Why an etcd request, watch or lease failed. Discovery keeps the last known set and retries;
/// a registration retries too, except in [`register`](super::Registration::register) and
/// [`deregister`](super::RegistrationHandle::deregister), which return it.
#[non_exhaustive]
#[derive(Debug, thiserror::Error)]
pub enum EtcdError {
    /// The client failed: etcd unreachable, a connection lost, an error status.
    #[error("etcd {op} failed: {source}")]
    Request {
        /// What was asked (`connect`, `get`, `watch`, `put`, `lease grant`, …).
        op: &'static str,
        /// The client's error.
        #[source]
        source: BoxError,
    },
    /// etcd did not answer in time.
    #[error("etcd {op} did not answer within {timeout:?}")]
    Timeout {
        /// What was asked.
        op: &'static str,
        /// How long it was given.
        timeout: Duration,
    },
    /// The watch's start revision was compacted away: changes since then are no longer known, so
    /// the prefix is listed again.
    #[error("the watch of `{prefix}` starts before etcd's compacted revision {compacted}")]
    Compacted {
        /// The watched prefix.
        prefix: Arc<str>,
        /// The oldest revision etcd still keeps.
        compacted: i64,
    },
    /// etcd ended the watch (a cancellation, a closed stream).
    #[error("etcd ended the watch of `{prefix}`: {reason}")]
    WatchEnded {
        /// The watched prefix.
        prefix: Arc<str>,
        /// What etcd said, if anything.
        reason: String,
    },
    /// etcd no longer knows the lease (it expired while etcd was unreachable).
    #[error("etcd lease {lease} of `{key}` expired")]
    LeaseExpired {
        /// The registered key.
        key: Arc<str>,
        /// The lease.
        lease: i64,
    },
}

impl EtcdError {
    pub(crate) fn request(op: &'static str) -> impl FnOnce(etcd_client::Error) -> Self {
        move |e| EtcdError::Request {
            op,
            source: Box::new(e),
        }
    }
}
