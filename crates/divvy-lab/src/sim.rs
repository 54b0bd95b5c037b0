//! The discrete-event simulator: a seeded workload driven through a real `divvy::Balancer`.
//!
//! Nothing here re-implements a strategy or a health rule. The simulator owns only the world
//! around the balancer: a simulated clock (a [`ManualClock`] moved to each event's time), the
//! backends (each `servers` parallel servers behind a FIFO queue), arrivals and keys. For every
//! request it calls [`Balancer::pick`], holds the [`Pick`] guard while the request queues and is
//! served (so the in-flight counts strategies read are the simulated ones), and reports the
//! outcome and latency through [`Pick::record`] (which feeds passive health and the peak-EWMA).
//! Membership changes go through [`Balancer::update`] and active probes through
//! [`Balancer::report_probe`]. No sleeping, no sockets, no threads: a run is a pure function of
//! the scenario, the strategy and the seed.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, VecDeque};
use std::time::Duration;

use divvy::{Backend, Balancer, Context, ManualClock, Outcome, Pick, Strategy};

use crate::scenario::{Expanded, FailureKind, Scenario};
use crate::workload::{self, Arrivals, Keys, ServiceTime, SimRng};

/// What a run is asked to do.
#[derive(Clone, Debug)]
pub struct Options {
    /// Requests to send.
    pub requests: u64,
    /// Seed of every random stream.
    pub seed: u64,
    /// Time buckets of the load-over-time series.
    pub buckets: usize,
    /// Check after every event that the balancer's in-flight count of each backend equals the
    /// number of simulated requests at that backend (slow: for tests).
    pub check_in_flight: bool,
}

impl Options {
    /// `requests` requests with `seed`, 100 time buckets, no in-flight checking.
    pub fn new(requests: u64, seed: u64) -> Self {
        Options {
            requests,
            seed,
            buckets: 100,
            check_in_flight: false,
        }
    }
}

/// Everything measured in one run of one strategy.
#[derive(Clone, Debug)]
pub struct Run {
    /// The strategy's lab name.
    pub strategy: String,
    /// Backend identities, in scenario order (including those that join later).
    pub backends: Vec<String>,
    /// Backend weights, in the same order.
    pub weights: Vec<u32>,
    /// Latency of every successful request, nanoseconds, sorted.
    pub latencies: Vec<u64>,
    /// Requests sent.
    pub requests: u64,
    /// Requests a backend failed.
    pub failures: u64,
    /// Requests for which the balancer had no backend.
    pub unavailable: u64,
    /// Requests picked per backend.
    pub picks: Vec<u64>,
    /// Per time bucket: picks per backend, errors and requests.
    pub timeline: Timeline,
    /// One entry per membership change.
    pub keys_moved: Vec<KeysMoved>,
    /// Time integral of requests in the system (sum over backends), request × nanoseconds.
    pub in_system_area: f64,
    /// The same integral of the in-flight counts the balancer reports (`Balancer::stats`), when
    /// [`Options::check_in_flight`] is set.
    pub balancer_in_flight_area: Option<f64>,
    /// Time of the last arrival, nanoseconds.
    pub last_arrival: u64,
    /// Time the last request ended, nanoseconds.
    pub end: u64,
}

/// Counts per time bucket.
#[derive(Clone, Debug)]
pub struct Timeline {
    /// Bucket width, nanoseconds.
    pub bucket: u64,
    /// Number of buckets.
    pub len: usize,
    /// `picks[bucket * backends + b]`.
    pub picks: Vec<u32>,
    /// Failed or unroutable requests per bucket.
    pub errors: Vec<u32>,
    /// Requests per bucket.
    pub requests: Vec<u32>,
}

/// How keys moved at one membership change.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct KeysMoved {
    /// Keys seen both before and after the change.
    pub compared: u64,
    /// Of those, keys whose first backend after differs from their last before. "Before" is the
    /// time since the previous change (or the start).
    pub moved: u64,
}

impl KeysMoved {
    /// The moved share, 0..=1.
    pub fn fraction(&self) -> f64 {
        if self.compared == 0 {
            0.0
        } else {
            self.moved as f64 / self.compared as f64
        }
    }
}

// === Events ===

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum What {
    /// The next arrival.
    Arrival,
    /// Request in slab slot `n` ends.
    Done(u32),
    /// Probe every backend in the set.
    Probe,
    /// Membership change `n` (index into the change list).
    Membership(u32),
}

/// Ordered by time, then by scheduling order, so simultaneous events run first-in first-out.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
struct Event {
    at: u64,
    seq: u64,
    what: What,
}

struct Queue {
    heap: BinaryHeap<Reverse<Event>>,
    seq: u64,
}

impl Queue {
    fn push(&mut self, at: u64, what: What) {
        self.seq += 1;
        self.heap.push(Reverse(Event {
            at,
            seq: self.seq,
            what,
        }));
    }

    fn pop(&mut self) -> Option<Event> {
        self.heap.pop().map(|Reverse(e)| e)
    }
}

// === Backends ===

/// A simulated backend: `servers` parallel servers behind one FIFO queue.
struct Station {
    key: u64,
    servers: u32,
    busy: u32,
    queue: VecDeque<u32>,
    service: ServiceTime,
    rng: SimRng,
    /// Fast-failure windows `[from, until)`, nanoseconds.
    failures: Vec<Window>,
    /// Requests at this backend (queued, in service or failing).
    in_system: u32,
}

/// A window of fast failures.
#[derive(Clone, Copy, Debug)]
struct Window {
    from: u64,
    until: u64,
    /// How long a failing request takes, nanoseconds.
    error: u64,
    kind: FailureKind,
}

impl Station {
    fn failing_at(&self, t: u64) -> Option<Window> {
        self.failures
            .iter()
            .find(|w| w.from <= t && t < w.until)
            .copied()
    }
}

/// A request between its pick and its end.
struct Request {
    arrival: u64,
    station: u32,
    /// How it fails, when it arrived during a failure window.
    failed: Option<FailureKind>,
    pick: Option<Pick>,
}

struct Slab {
    slots: Vec<Request>,
    free: Vec<u32>,
}

impl Slab {
    fn insert(&mut self, r: Request) -> u32 {
        match self.free.pop() {
            Some(i) => {
                self.slots[i as usize] = r;
                i
            }
            None => {
                self.slots.push(r);
                (self.slots.len() - 1) as u32
            }
        }
    }
}

const NO_BACKEND: u16 = u16::MAX;

/// Follows keys across one membership change.
struct KeyTracker {
    before: Vec<u16>,
    checked: Vec<bool>,
    result: KeysMoved,
}

/// Nanoseconds of `fraction` of a run lasting `duration` nanoseconds.
fn at_fraction(fraction: f64, duration: f64) -> u64 {
    (fraction * duration).round() as u64
}

/// Runs `scenario` with `strategy`, naming the run `name`.
///
/// The run sends `opts.requests` requests, then lets every request in flight finish. Times given
/// as fractions of the run refer to its expected length, `requests / mean rate`.
pub fn run<S: Strategy>(
    scenario: &Scenario,
    name: &str,
    strategy: S,
    opts: &Options,
) -> Result<Run, String> {
    let mut sim = Sim::new(scenario, name, strategy, opts)?;
    while let Some(ev) = sim.events.pop() {
        // Arrivals are over and only housekeeping (probes, late changes) is left: stop.
        if sim.sent == opts.requests && sim.in_system == 0 && !matches!(ev.what, What::Done(_)) {
            break;
        }
        sim.advance(ev.at);
        match ev.what {
            What::Arrival => sim.arrive(),
            What::Done(slot) => sim.finish(slot),
            What::Probe => sim.probe()?,
            What::Membership(i) => sim.change(i)?,
        }
        if opts.check_in_flight {
            sim.check_in_flight()?;
        }
    }
    Ok(sim.into_run())
}

// === impl Sim ===

/// The state of one run: the balancer under test and the world around it.
struct Sim<'a, S: Strategy> {
    opts: &'a Options,
    expanded: Vec<Expanded>,
    /// Expected run length, nanoseconds.
    duration: f64,
    lb: Balancer<S>,
    clock: ManualClock,
    stations: Vec<Station>,
    events: Queue,
    requests: Slab,
    arrivals: Arrivals,
    arrivals_rng: SimRng,
    keys: Keys,
    keys_rng: SimRng,
    probe_every: Option<u64>,
    /// Times of the membership changes, nanoseconds.
    changes: Vec<u64>,
    /// Per key, the backend it last went to since the previous change (only with changes).
    last_backend: Vec<u16>,
    tracker: Option<KeyTracker>,
    now: u64,
    /// The time bucket of `now`.
    bucket: usize,
    sent: u64,
    in_system: u64,
    run: Run,
}

impl<'a, S: Strategy> Sim<'a, S> {
    fn new(
        scenario: &Scenario,
        name: &str,
        strategy: S,
        opts: &'a Options,
    ) -> Result<Self, String> {
        let expanded = scenario.expanded();
        let duration = opts.requests as f64 / scenario.arrivals.mean_rate() * 1e9;
        let n = expanded.len();
        if n >= usize::from(NO_BACKEND) {
            return Err(format!("at most {} backends", NO_BACKEND - 1));
        }
        let mut stations = Vec::with_capacity(n);
        for (i, e) in expanded.iter().enumerate() {
            stations.push(Station {
                key: Scenario::divvy_backend(e).key(),
                servers: e.spec.servers,
                busy: 0,
                queue: VecDeque::new(),
                service: ServiceTime::new(&e.spec.service, e.spec.slowdown)?,
                rng: workload::stream(opts.seed, 100 + i as u64),
                failures: e
                    .spec
                    .failures
                    .iter()
                    .map(|f| Window {
                        from: at_fraction(f.from, duration),
                        until: at_fraction(f.until, duration),
                        error: (f.error_ms * 1e6).round() as u64,
                        kind: f.kind,
                    })
                    .collect(),
                in_system: 0,
            });
        }
        let mut changes: Vec<u64> = expanded
            .iter()
            .flat_map(|e| [e.spec.join_at, e.spec.leave_at])
            .flatten()
            .map(|f| at_fraction(f, duration))
            .filter(|&t| t > 0)
            .collect();
        changes.sort_unstable();
        changes.dedup();

        let clock = ManualClock::new();
        let mut builder = Balancer::builder(strategy);
        builder
            .clock(clock.clone())
            .health(scenario.health.config());
        let lb = builder
            .build(set_at(&expanded, duration, 0))
            .map_err(|e| e.to_string())?;

        let mut arrivals_rng = workload::stream(opts.seed, 1);
        let arrivals = Arrivals::new(&scenario.arrivals, &mut arrivals_rng);
        let buckets = opts.buckets.max(1);
        let run = Run {
            strategy: name.to_owned(),
            backends: expanded.iter().map(|e| e.name.clone()).collect(),
            weights: expanded.iter().map(|e| e.spec.weight).collect(),
            latencies: Vec::with_capacity(opts.requests as usize),
            requests: 0,
            failures: 0,
            unavailable: 0,
            picks: vec![0; n],
            timeline: Timeline {
                bucket: ((duration / buckets as f64).ceil() as u64).max(1),
                len: buckets,
                picks: vec![0; buckets * n],
                errors: vec![0; buckets],
                requests: vec![0; buckets],
            },
            keys_moved: Vec::new(),
            in_system_area: 0.0,
            balancer_in_flight_area: opts.check_in_flight.then_some(0.0),
            last_arrival: 0,
            end: 0,
        };
        let keys_len = if changes.is_empty() {
            0
        } else {
            scenario.keys.count as usize
        };
        let mut sim = Sim {
            opts,
            expanded,
            duration,
            lb,
            clock,
            stations,
            events: Queue {
                heap: BinaryHeap::new(),
                seq: 0,
            },
            requests: Slab {
                slots: Vec::new(),
                free: Vec::new(),
            },
            arrivals,
            arrivals_rng,
            keys: Keys::new(&scenario.keys)?,
            keys_rng: workload::stream(opts.seed, 2),
            probe_every: scenario
                .health
                .probe_interval_ms
                .map(|ms| ms.max(1) * 1_000_000),
            changes,
            last_backend: vec![NO_BACKEND; keys_len],
            tracker: None,
            now: 0,
            bucket: 0,
            sent: 0,
            in_system: 0,
            run,
        };
        if opts.requests > 0 {
            let first = sim.arrivals.next(&mut sim.arrivals_rng).round() as u64;
            sim.events.push(first, What::Arrival);
        }
        for i in 0..sim.changes.len() {
            sim.events.push(sim.changes[i], What::Membership(i as u32));
        }
        if let Some(p) = sim.probe_every {
            sim.events.push(p, What::Probe);
        }
        Ok(sim)
    }

    /// Moves simulated time (and the balancer's clock) to `t`, integrating the load on the way.
    fn advance(&mut self, t: u64) {
        let dt = (t - self.now) as f64;
        self.run.in_system_area += self.in_system as f64 * dt;
        if let Some(area) = &mut self.run.balancer_in_flight_area {
            let reported: u32 = self.lb.stats().iter().map(|s| s.in_flight).sum();
            *area += f64::from(reported) * dt;
        }
        self.now = t;
        self.clock.set(Duration::from_nanos(t));
        let tl = &self.run.timeline;
        self.bucket = ((t / tl.bucket) as usize).min(tl.len - 1);
    }

    /// A request arrives: pick, then fail fast, start service, or queue.
    fn arrive(&mut self) {
        let (now, b, n) = (self.now, self.bucket, self.stations.len());
        self.sent += 1;
        self.run.requests += 1;
        self.run.last_arrival = now;
        self.run.timeline.requests[b] += 1;
        let k = self.keys.sample(&mut self.keys_rng);
        let key_bytes = u64::from(k).to_le_bytes();
        let ctx = Context::new()
            .key(&key_bytes)
            .client_ip(workload::client_ip(k));
        match self.lb.pick(&ctx) {
            Err(_) => {
                self.run.unavailable += 1;
                self.run.timeline.errors[b] += 1;
            }
            Ok(pick) => {
                let key = pick.backend().key();
                let si = self
                    .stations
                    .iter()
                    .position(|s| s.key == key)
                    .expect("the balancer picks only backends the scenario defines");
                self.run.picks[si] += 1;
                self.run.timeline.picks[b * n + si] += 1;
                self.follow_key(k as usize, si as u16);
                let st = &mut self.stations[si];
                st.in_system += 1;
                self.in_system += 1;
                let failing = st.failing_at(now);
                let slot = self.requests.insert(Request {
                    arrival: now,
                    station: si as u32,
                    failed: failing.map(|w| w.kind),
                    pick: Some(pick),
                });
                if let Some(w) = failing {
                    self.events.push(now + w.error, What::Done(slot));
                } else if st.busy < st.servers {
                    st.busy += 1;
                    let s = st.service.sample(&mut st.rng).round() as u64;
                    self.events.push(now + s.max(1), What::Done(slot));
                } else {
                    st.queue.push_back(slot);
                }
            }
        }
        if self.sent < self.opts.requests {
            let next = self.arrivals.next(&mut self.arrivals_rng).round() as u64;
            self.events.push(next.max(now), What::Arrival);
        }
    }

    /// Records where key `k` went, for keys moved at membership changes.
    fn follow_key(&mut self, k: usize, backend: u16) {
        if self.last_backend.is_empty() {
            return;
        }
        if let Some(t) = &mut self.tracker {
            if !t.checked[k] && t.before[k] != NO_BACKEND {
                t.checked[k] = true;
                t.result.compared += 1;
                t.result.moved += u64::from(t.before[k] != backend);
            }
        }
        self.last_backend[k] = backend;
    }

    /// A request ends: report it through its `Pick`, free its server for the next in line.
    fn finish(&mut self, slot: u32) {
        let now = self.now;
        let r = &mut self.requests.slots[slot as usize];
        let latency = now - r.arrival;
        let pick = r.pick.take().expect("a request ends once");
        let (si, failed) = (r.station as usize, r.failed);
        self.requests.free.push(slot);
        let took = Some(Duration::from_nanos(latency));
        match failed {
            Some(kind) => {
                // A refused connection has no latency to report; an error response has one.
                let took = (kind == FailureKind::ErrorResponse)
                    .then_some(took)
                    .flatten();
                pick.record(Outcome::Failure, took);
                self.run.failures += 1;
                self.run.timeline.errors[self.bucket] += 1;
            }
            None => {
                pick.record(Outcome::Success, took);
                self.run.latencies.push(latency);
            }
        }
        let st = &mut self.stations[si];
        st.in_system -= 1;
        self.in_system -= 1;
        if failed.is_none() {
            match st.queue.pop_front() {
                Some(next) => {
                    let s = st.service.sample(&mut st.rng).round() as u64;
                    self.events.push(now + s.max(1), What::Done(next));
                }
                None => st.busy -= 1,
            }
        }
    }

    /// Active health checks: every backend in the set passes unless it is in a failure window.
    fn probe(&mut self) -> Result<(), String> {
        for be in self.lb.backends().iter() {
            let st = self
                .stations
                .iter()
                .find(|s| s.key == be.key())
                .expect("a scenario backend");
            let ok = st.failing_at(self.now).is_none();
            self.lb
                .report_probe(be.id(), ok)
                .map_err(|e| e.to_string())?;
        }
        if let (true, Some(every)) = (self.sent < self.opts.requests, self.probe_every) {
            self.events.push(self.now + every, What::Probe);
        }
        Ok(())
    }

    /// Membership change `i`: publish the new set and start following keys across it.
    fn change(&mut self, i: u32) -> Result<(), String> {
        let at = self.changes[i as usize];
        self.lb
            .update(set_at(&self.expanded, self.duration, at))
            .map_err(|e| e.to_string())?;
        if let Some(t) = self.tracker.take() {
            self.run.keys_moved.push(t.result);
        }
        // Only keys seen since the previous change count as "before": a key last seen before it
        // would carry that change's move into this one.
        let fresh = vec![NO_BACKEND; self.last_backend.len()];
        let before = std::mem::replace(&mut self.last_backend, fresh);
        self.tracker = Some(KeyTracker {
            checked: vec![false; before.len()],
            before,
            result: KeysMoved {
                compared: 0,
                moved: 0,
            },
        });
        Ok(())
    }

    /// The balancer's in-flight count of every backend in its set equals the simulated one.
    fn check_in_flight(&self) -> Result<(), String> {
        for s in self.lb.stats() {
            let i = self
                .run
                .backends
                .iter()
                .position(|n| **n == *s.id)
                .expect("a scenario backend");
            if s.in_flight != self.stations[i].in_system {
                return Err(format!(
                    "backend {}: balancer counts {} in flight, the simulation {}",
                    s.id, s.in_flight, self.stations[i].in_system
                ));
            }
        }
        Ok(())
    }

    fn into_run(mut self) -> Run {
        if let Some(t) = self.tracker.take() {
            self.run.keys_moved.push(t.result);
        }
        self.run.end = self.now;
        self.run.latencies.sort_unstable();
        self.run
    }
}

/// The backends in the set at time `t` of a run lasting `duration` nanoseconds.
fn set_at(expanded: &[Expanded], duration: f64, t: u64) -> Vec<Backend> {
    expanded
        .iter()
        .filter(|e| {
            e.spec.join_at.is_none_or(|j| at_fraction(j, duration) <= t)
                && e.spec.leave_at.is_none_or(|l| t < at_fraction(l, duration))
        })
        .map(Scenario::divvy_backend)
        .collect()
}
