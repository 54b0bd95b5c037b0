//! Bounded waits: every wait in a test ends, with a message naming what did not happen.

use std::future::Future;
use std::time::Duration;

use tokio::time::Instant;

/// The default bound on any single wait in a network test: generous for a loaded machine,
/// short enough that a hang fails the run.
pub const DEADLINE: Duration = Duration::from_secs(10);

/// Runs `f` to completion, or panics once `limit` has passed.
pub async fn within<F: Future>(limit: Duration, f: F) -> F::Output {
    tokio::time::timeout(limit, f)
        .await
        .unwrap_or_else(|_| panic!("not done within {limit:?}"))
}

/// Polls `done` every 2 ms until it holds and returns how long that took, or panics naming `what`
/// once `limit` has passed. Waiting on a condition (not sleeping a fixed time) keeps the tests
/// both fast and tolerant of a loaded machine.
pub async fn eventually(what: &str, limit: Duration, mut done: impl FnMut() -> bool) -> Duration {
    let start = Instant::now();
    loop {
        if done() {
            return start.elapsed();
        }
        assert!(start.elapsed() < limit, "{what}: not within {limit:?}");
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
}

/// As [`eventually`], for a condition that must itself await (a request through a proxy): polls
/// `cond` every 20 ms until it holds, or panics naming `what` once `limit` has passed.
pub async fn eventually_async<F, Fut>(what: &str, limit: Duration, mut cond: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let deadline = Instant::now() + limit;
    loop {
        if cond().await {
            return;
        }
        assert!(Instant::now() < deadline, "timed out waiting until {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
