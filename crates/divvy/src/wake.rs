//! Wakers waiting for a pick to become possible (tower's `poll_ready` backpressure) or for the
//! backend set to change (a membership watcher).
//!
//! Unused, this costs nothing on the pick path: a health transition or a publication reads one
//! counter (and they are rare), and a request's end wakes anyone only when wakers were enabled
//! and its backend has an in-flight limit (the only way a request's end can make a backend
//! available).

use std::fmt;
use std::sync::atomic::{fence, AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::Waker;

use parking_lot::Mutex;

use crate::health::Registry;

/// Which change a waker waits for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Interest {
    /// Anything that may make a backend available: a health or operator transition, the end of
    /// a request to a backend with an in-flight limit, a publication.
    Capacity,
    /// A publication of a new backend set.
    Membership,
}

/// One list of wakers per [`Interest`].
#[derive(Default)]
pub(crate) struct Waiters {
    /// Wakers registered in both lists: zero is the common case, checked without the lock.
    waiting: AtomicUsize,
    /// Set once anyone asked for capacity wakeups: from then on picks of backends with an
    /// in-flight limit carry what they need to wake waiters when they end.
    enabled: AtomicBool,
    capacity: Mutex<Vec<Waker>>,
    membership: Mutex<Vec<Waker>>,
}

impl Waiters {
    /// Wakes `waker` once at the next change of `interest`. A waker already registered (by
    /// [`Waker::will_wake`]) is not added twice.
    pub(crate) fn register(&self, interest: Interest, waker: &Waker) {
        if interest == Interest::Capacity {
            self.enabled.store(true, Ordering::Relaxed);
        }
        let mut list = self.list(interest).lock();
        if !list.iter().any(|w| w.will_wake(waker)) {
            list.push(waker.clone());
            self.waiting.fetch_add(1, Ordering::SeqCst);
        }
        // The caller checks its condition again after this: with the fence in `wake`, either
        // that check sees the change or the changer sees this waker (a Dekker pair).
        fence(Ordering::SeqCst);
    }

    /// Turns on wakeups at the end of requests to backends with an in-flight limit.
    pub(crate) fn enable(&self) {
        self.enabled.store(true, Ordering::Relaxed);
    }

    #[inline]
    pub(crate) fn enabled(&self) -> bool {
        self.enabled.load(Ordering::Relaxed)
    }

    /// Wakes the wakers of `interest` (and, for a publication, both lists). Call after the change
    /// took effect.
    #[inline]
    pub(crate) fn wake(&self, interest: Interest) {
        fence(Ordering::SeqCst);
        if self.waiting.load(Ordering::Relaxed) != 0 {
            self.wake_slow(interest);
        }
    }

    #[cold]
    fn wake_slow(&self, interest: Interest) {
        let mut woken = std::mem::take(&mut *self.capacity.lock());
        if interest == Interest::Membership {
            woken.append(&mut self.membership.lock());
        }
        self.waiting.fetch_sub(woken.len(), Ordering::Relaxed);
        for w in woken {
            w.wake();
        }
    }

    fn list(&self, interest: Interest) -> &Mutex<Vec<Waker>> {
        match interest {
            Interest::Capacity => &self.capacity,
            Interest::Membership => &self.membership,
        }
    }
}

impl fmt::Debug for Waiters {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Waiters")
            .field("waiting", &self.waiting.load(Ordering::Relaxed))
            .finish_non_exhaustive()
    }
}

/// Carried by a [`Pick`](crate::Pick) of a backend with an in-flight limit once wakers are
/// enabled: its drop, which runs after the pick's in-flight count is released, wakes capacity
/// waiters. It holds the registry because the backend's state may be freed by that release.
pub(crate) struct WakeOnEnd(pub(crate) Arc<Registry>);

impl Drop for WakeOnEnd {
    fn drop(&mut self) {
        self.0.waiters.wake(Interest::Capacity);
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering::Relaxed};
    use std::sync::Arc;
    use std::task::{Poll, Wake, Waker};

    use crate::strategy::RoundRobin;
    use crate::{AdminState, Backend, Balancer, Context, HealthConfig};

    #[derive(Default)]
    struct Count(AtomicUsize);

    impl Wake for Count {
        fn wake(self: Arc<Self>) {
            self.0.fetch_add(1, Relaxed);
        }
    }

    fn waker() -> (Arc<Count>, Waker) {
        let count = Arc::new(Count::default());
        (count.clone(), Waker::from(count))
    }

    fn no_panic() -> HealthConfig {
        HealthConfig::builder().panic_threshold(0).build()
    }

    #[test]
    fn the_end_of_a_request_to_a_full_backend_wakes_a_capacity_waiter() {
        let lb = Balancer::new(RoundRobin::new(), [Backend::new("a").max_in_flight(1)]).unwrap();
        lb.enable_wakers();
        let held = lb.pick(&Context::new()).unwrap();
        let (count, w) = waker();
        assert_eq!(lb.poll_available(&w), Poll::Pending);
        assert_eq!(lb.poll_available(&w), Poll::Pending); // registered once
        drop(held);
        assert_eq!(count.0.load(Relaxed), 1);
        assert_eq!(lb.poll_available(&w), Poll::Ready(()));
    }

    #[test]
    fn a_health_or_operator_transition_wakes_a_capacity_waiter() {
        let mut b = Balancer::builder(RoundRobin::new());
        b.health(no_panic());
        let lb = b.build([Backend::new("a")]).unwrap();
        lb.set_admin_state("a", Some(AdminState::Down)).unwrap();
        let (count, w) = waker();
        assert_eq!(lb.poll_available(&w), Poll::Pending);
        lb.set_admin_state("a", None).unwrap();
        assert_eq!(count.0.load(Relaxed), 1);
        assert_eq!(lb.poll_available(&w), Poll::Ready(()));
        // Failed probes take it out again (fall = 3), a passing streak brings it back.
        for _ in 0..3 {
            lb.report_probe("a", false).unwrap();
        }
        assert_eq!(lb.poll_available(&w), Poll::Pending);
        for _ in 0..2 {
            lb.report_probe("a", true).unwrap();
        }
        assert_eq!(count.0.load(Relaxed), 2);
    }

    #[test]
    fn a_new_set_wakes_capacity_and_membership_waiters() {
        let lb = Balancer::new(RoundRobin::new(), Vec::new()).unwrap();
        let (capacity, w) = waker();
        assert_eq!(lb.poll_available(&w), Poll::Pending);
        let (membership, m) = waker();
        assert_eq!(lb.poll_changed(0, &m), Poll::Pending);
        lb.add(Backend::new("a")).unwrap();
        assert_eq!(capacity.0.load(Relaxed), 1);
        assert_eq!(membership.0.load(Relaxed), 1);
        assert_eq!(lb.poll_changed(0, &m), Poll::Ready(1));
        assert_eq!(lb.poll_available(&w), Poll::Ready(()));
    }

    #[test]
    fn without_waiters_or_limits_a_pick_carries_no_waker() {
        let lb = Balancer::new(RoundRobin::new(), [Backend::new("a")]).unwrap();
        lb.enable_wakers();
        assert!(lb.pick(&Context::new()).unwrap().carries_no_waker());
        let lb = Balancer::new(RoundRobin::new(), [Backend::new("a").max_in_flight(2)]).unwrap();
        assert!(lb.pick(&Context::new()).unwrap().carries_no_waker());
        lb.enable_wakers();
        assert!(!lb.pick(&Context::new()).unwrap().carries_no_waker());
    }

    #[test]
    fn an_ejection_reports_when_it_expires() {
        let clock = crate::ManualClock::new();
        let mut b = Balancer::builder(RoundRobin::new());
        b.health(no_panic()).clock(clock.clone());
        let lb = b.build([Backend::new("a")]).unwrap();
        assert_eq!(lb.ejection_expires_in(), None);
        lb.pick(&Context::new()).unwrap().failure();
        let (_, w) = waker();
        assert_eq!(lb.poll_available(&w), Poll::Pending);
        assert_eq!(
            lb.ejection_expires_in(),
            Some(std::time::Duration::from_nanos(10_000_000_001))
        );
        clock.advance(std::time::Duration::from_secs(4));
        assert_eq!(
            lb.ejection_expires_in(),
            Some(std::time::Duration::from_nanos(6_000_000_001))
        );
    }
}
