//! Time, injected: the core never reads the OS clock directly except through [`SystemClock`].

use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// A monotonic clock. Health rules (ejection times, `fail_timeout`, slow start) read time only
/// through this trait, so tests drive them exactly with a [`ManualClock`].
pub trait Clock: Send + Sync + 'static {
    /// Time elapsed since an arbitrary fixed origin. Must never go backwards.
    fn now(&self) -> Duration;
}

/// The real monotonic clock (`std::time::Instant`).
#[derive(Clone, Copy)]
pub struct SystemClock {
    origin: Instant,
}

impl SystemClock {
    /// A clock whose origin is now.
    pub fn new() -> Self {
        SystemClock {
            origin: Instant::now(),
        }
    }
}

impl Default for SystemClock {
    fn default() -> Self {
        Self::new()
    }
}

impl fmt::Debug for SystemClock {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SystemClock").finish_non_exhaustive()
    }
}

impl Clock for SystemClock {
    fn now(&self) -> Duration {
        self.origin.elapsed()
    }
}

/// A clock that moves only when told to. Clones share the same time.
///
/// ```
/// use divvy::{Clock, ManualClock};
/// use std::time::Duration;
///
/// let clock = ManualClock::new();
/// clock.advance(Duration::from_secs(10));
/// assert_eq!(clock.now(), Duration::from_secs(10));
/// ```
#[derive(Clone, Debug, Default)]
pub struct ManualClock {
    nanos: Arc<AtomicU64>,
}

impl ManualClock {
    /// A clock at time zero.
    pub fn new() -> Self {
        Self::default()
    }

    /// Moves the clock forward by `by`.
    pub fn advance(&self, by: Duration) {
        self.nanos
            .fetch_add(duration_to_nanos(by), Ordering::SeqCst);
    }

    /// Sets the clock to `to`, which must not be earlier than the current time (a monotonic clock
    /// never goes back); an earlier value is ignored.
    pub fn set(&self, to: Duration) {
        self.nanos
            .fetch_max(duration_to_nanos(to), Ordering::SeqCst);
    }
}

impl Clock for ManualClock {
    fn now(&self) -> Duration {
        Duration::from_nanos(self.nanos.load(Ordering::SeqCst))
    }
}

pub(crate) fn duration_to_nanos(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}

#[cfg(test)]
impl ManualClock {
    pub(crate) fn now_secs(&self) -> u64 {
        self.now().as_secs()
    }
}
