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

/// Runs `scenario` with `strategy`.
///
/// The run sends `opts.requests` requests, then lets every request in flight finish. Times given
/// as fractions of the run refer to its expected length, `requests / mean rate`.
pub fn run<S: Strategy>(
    scenario: &Scenario,
    name: &str,
    strategy: S,
    opts: &Options,
) -> Result<Run, String> {
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

    // Membership: the set at time 0, then one update per distinct join or leave time.
    let member_at = |e: &Expanded, t: u64| {
        e.spec.join_at.is_none_or(|j| at_fraction(j, duration) <= t)
            && e.spec.leave_at.is_none_or(|l| t < at_fraction(l, duration))
    };
    let set_at = |t: u64| -> Vec<Backend> {
        expanded
            .iter()
            .filter(|e| member_at(e, t))
            .map(Scenario::divvy_backend)
            .collect()
    };
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
    let lb = builder.build(set_at(0)).map_err(|e| e.to_string())?;

    let mut arrivals_rng = workload::stream(opts.seed, 1);
    let mut keys_rng = workload::stream(opts.seed, 2);
    let mut arrivals = Arrivals::new(&scenario.arrivals, &mut arrivals_rng);
    let keys = Keys::new(&scenario.keys)?;

    let buckets = opts.buckets.max(1);
    let bucket = ((duration / buckets as f64).ceil() as u64).max(1);
    let mut run = Run {
        strategy: name.to_owned(),
        backends: expanded.iter().map(|e| e.name.clone()).collect(),
        weights: expanded.iter().map(|e| e.spec.weight).collect(),
        latencies: Vec::with_capacity(opts.requests as usize),
        requests: 0,
        failures: 0,
        unavailable: 0,
        picks: vec![0; n],
        timeline: Timeline {
            bucket,
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

    let track_keys = !changes.is_empty();
    let keys_len = if track_keys {
        scenario.keys.count as usize
    } else {
        0
    };
    let mut last_backend = vec![NO_BACKEND; keys_len];
    let mut tracker: Option<KeyTracker> = None;

    let mut q = Queue {
        heap: BinaryHeap::new(),
        seq: 0,
    };
    let mut slab = Slab {
        slots: Vec::new(),
        free: Vec::new(),
    };
    if opts.requests > 0 {
        q.push(
            arrivals.next(&mut arrivals_rng).round() as u64,
            What::Arrival,
        );
    }
    for (i, &t) in changes.iter().enumerate() {
        q.push(t, What::Membership(i as u32));
    }
    let probe_every = scenario
        .health
        .probe_interval_ms
        .map(|ms| ms.max(1) * 1_000_000);
    if let Some(p) = probe_every {
        q.push(p, What::Probe);
    }

    let mut now = 0u64;
    let mut in_system = 0u64;
    let mut sent = 0u64;
    while let Some(ev) = q.pop() {
        // Arrivals are over and only housekeeping is left: stop.
        if sent == opts.requests && in_system == 0 && !matches!(ev.what, What::Done(_)) {
            break;
        }
        run.in_system_area += in_system as f64 * (ev.at - now) as f64;
        if let Some(area) = &mut run.balancer_in_flight_area {
            let reported: u32 = lb.stats().iter().map(|s| s.in_flight).sum();
            *area += f64::from(reported) * (ev.at - now) as f64;
        }
        now = ev.at;
        clock.set(Duration::from_nanos(now));
        let b = ((now / bucket) as usize).min(buckets - 1);
        match ev.what {
            What::Arrival => {
                sent += 1;
                run.requests += 1;
                run.last_arrival = now;
                run.timeline.requests[b] += 1;
                let k = keys.sample(&mut keys_rng);
                let key_bytes = u64::from(k).to_le_bytes();
                let ctx = Context::new()
                    .key(&key_bytes)
                    .client_ip(workload::client_ip(k));
                match lb.pick(&ctx) {
                    Err(_) => {
                        run.unavailable += 1;
                        run.timeline.errors[b] += 1;
                    }
                    Ok(pick) => {
                        let key = pick.backend().key();
                        let si = stations
                            .iter()
                            .position(|s| s.key == key)
                            .expect("the balancer picks only backends the scenario defines");
                        run.picks[si] += 1;
                        run.timeline.picks[b * n + si] += 1;
                        if track_keys {
                            let k = k as usize;
                            if let Some(t) = &mut tracker {
                                if !t.checked[k] && t.before[k] != NO_BACKEND {
                                    t.checked[k] = true;
                                    t.result.compared += 1;
                                    t.result.moved += u64::from(t.before[k] != si as u16);
                                }
                            }
                            last_backend[k] = si as u16;
                        }
                        let st = &mut stations[si];
                        st.in_system += 1;
                        in_system += 1;
                        let failing = st.failing_at(now);
                        let slot = slab.insert(Request {
                            arrival: now,
                            station: si as u32,
                            failed: failing.map(|w| w.kind),
                            pick: Some(pick),
                        });
                        if let Some(w) = failing {
                            q.push(now + w.error, What::Done(slot));
                        } else if st.busy < st.servers {
                            st.busy += 1;
                            let s = st.service.sample(&mut st.rng).round() as u64;
                            q.push(now + s.max(1), What::Done(slot));
                        } else {
                            st.queue.push_back(slot);
                        }
                    }
                }
                if sent < opts.requests {
                    let next = (arrivals.next(&mut arrivals_rng).round() as u64).max(now);
                    q.push(next, What::Arrival);
                }
            }
            What::Done(slot) => {
                let r = &mut slab.slots[slot as usize];
                let latency = now - r.arrival;
                let pick = r.pick.take().expect("a request ends once");
                let (si, failed) = (r.station as usize, r.failed);
                slab.free.push(slot);
                let took = Some(Duration::from_nanos(latency));
                match failed {
                    Some(kind) => {
                        let took = (kind == FailureKind::ErrorResponse)
                            .then_some(took)
                            .flatten();
                        pick.record(Outcome::Failure, took);
                        run.failures += 1;
                        run.timeline.errors[b] += 1;
                    }
                    None => {
                        pick.record(Outcome::Success, took);
                        run.latencies.push(latency);
                    }
                }
                let st = &mut stations[si];
                st.in_system -= 1;
                in_system -= 1;
                if failed.is_none() {
                    match st.queue.pop_front() {
                        Some(next) => {
                            let s = st.service.sample(&mut st.rng).round() as u64;
                            q.push(now + s.max(1), What::Done(next));
                        }
                        None => st.busy -= 1,
                    }
                }
            }
            What::Probe => {
                for be in lb.backends().iter() {
                    let st = stations
                        .iter()
                        .find(|s| s.key == be.key())
                        .expect("a scenario backend");
                    let ok = st.failing_at(now).is_none();
                    lb.report_probe(be.id(), ok).map_err(|e| e.to_string())?;
                }
                if sent < opts.requests {
                    q.push(now + probe_every.expect("probing"), What::Probe);
                }
            }
            What::Membership(i) => {
                lb.update(set_at(changes[i as usize]))
                    .map_err(|e| e.to_string())?;
                if let Some(t) = tracker.take() {
                    run.keys_moved.push(t.result);
                }
                // Only keys seen since the previous change count as "before": a key last seen
                // before it would carry that change's move into this one.
                let before = std::mem::replace(&mut last_backend, vec![NO_BACKEND; keys_len]);
                tracker = Some(KeyTracker {
                    checked: vec![false; before.len()],
                    before,
                    result: KeysMoved {
                        compared: 0,
                        moved: 0,
                    },
                });
            }
        }
        if opts.check_in_flight {
            check_in_flight(&lb, &stations, &run.backends)?;
        }
    }
    if let Some(t) = tracker.take() {
        run.keys_moved.push(t.result);
    }
    run.end = now;
    run.latencies.sort_unstable();
    Ok(run)
}

/// The balancer's in-flight count of every backend in its set equals the simulated one.
fn check_in_flight<S: Strategy>(
    lb: &Balancer<S>,
    stations: &[Station],
    names: &[String],
) -> Result<(), String> {
    for s in lb.stats() {
        let i = names
            .iter()
            .position(|n| **n == *s.id)
            .expect("a scenario backend");
        if s.in_flight != stations[i].in_system {
            return Err(format!(
                "backend {}: balancer counts {} in flight, the simulation {}",
                s.id, s.in_flight, stations[i].in_system
            ));
        }
    }
    Ok(())
}
