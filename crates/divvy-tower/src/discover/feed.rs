//! Feeding a balancer from a stream of changes.

use std::fmt;

use divvy::{Balancer, Strategy};
use futures_util::{Stream, StreamExt};

use super::change::Change;

/// What a [`feed`] did before its stream ended.
#[non_exhaustive]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FeedStats {
    /// Changes that published a new set.
    pub applied: u64,
    /// Changes that left the set as it was (a removal of an absent backend, an equal set).
    pub unchanged: u64,
    /// Changes the balancer refused (an invalid weight, a duplicate identity in a
    /// replacement…): logged at warn level; the set stayed as it was.
    pub rejected: u64,
}

/// The stream of a [`feed`] failed. The balancer keeps the last set the stream gave it.
#[derive(Debug)]
pub struct FeedError<E> {
    /// The stream's error.
    pub error: E,
    /// What the feed did before the error.
    pub stats: FeedStats,
}

impl<E: fmt::Display> fmt::Display for FeedError<E> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "discovery stream failed: {}", self.error)
    }
}

impl<E: std::error::Error + 'static> std::error::Error for FeedError<E> {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(&self.error)
    }
}

/// Applies every change of `changes` to `balancer`, in order, until the stream ends (`Ok`) or
/// yields an error (`Err`, ending the feed).
///
/// Each change is one atomic update ([`Change::apply`]); a change the balancer refuses is
/// logged, counted in [`FeedStats::rejected`] and skipped, and the feed goes on. When the stream
/// fails or ends, the balancer keeps serving the last set it was given: an unreachable source
/// never empties a balancer (reconnect and feed again; a source that resumes with its full state
/// can send [`Change::Replace`]). Spawn it to run it in the background:
///
/// ```
/// use std::convert::Infallible;
/// use divvy::{strategy::RoundRobin, Backend, Balancer};
/// use divvy_tower::discover::{feed, Change};
///
/// # #[tokio::main(flavor = "current_thread")] async fn main() {
/// let lb = Balancer::new(RoundRobin::new(), Vec::new()).unwrap();
/// let changes = futures_util::stream::iter([
///     Ok::<_, Infallible>(Change::Insert(Backend::new("10.0.0.1:80"))),
///     Ok(Change::Insert(Backend::new("10.0.0.2:80"))),
///     Ok(Change::Remove("10.0.0.1:80".into())),
/// ]);
/// let stats = tokio::spawn(feed(lb.clone(), changes)).await.unwrap().unwrap();
/// assert_eq!(stats.applied, 3);
/// assert_eq!(lb.backends()[0].id(), "10.0.0.2:80");
/// # }
/// ```
pub async fn feed<S, St, E>(balancer: Balancer<S>, changes: St) -> Result<FeedStats, FeedError<E>>
where
    S: Strategy,
    St: Stream<Item = Result<Change, E>>,
{
    let mut stats = FeedStats::default();
    let mut changes = std::pin::pin!(changes);
    while let Some(change) = changes.next().await {
        let change = match change {
            Ok(change) => change,
            Err(error) => return Err(FeedError { error, stats }),
        };
        match change.apply(&balancer) {
            Ok(true) => stats.applied += 1,
            Ok(false) => stats.unchanged += 1,
            Err(error) => {
                stats.rejected += 1;
                tracing::warn!(%error, "discovery change refused; the set stays as it was");
            }
        }
    }
    Ok(stats)
}
