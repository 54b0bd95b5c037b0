//! A bounded wait on a condition, shared by the integration tests that use real sockets.

use std::time::Duration;

use tokio::time::Instant;

/// Polls `done` every 2 ms until it holds and returns how long that took, or panics naming `what`
/// once `within` has passed. Waiting on a condition (not sleeping a fixed time) keeps the tests
/// both fast and tolerant of a loaded machine.
pub async fn eventually(what: &str, within: Duration, mut done: impl FnMut() -> bool) -> Duration {
    let start = Instant::now();
    loop {
        if done() {
            return start.elapsed();
        }
        assert!(start.elapsed() < within, "{what}: not within {within:?}");
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
}
