//! Prometheus metrics for a balancer, with [`prometheus-client`](prometheus_client) (feature
//! `prometheus`, off by default).
//!
//! [`Balancer::register_metrics`] registers a collector that reads, at each scrape, what the
//! balancer keeps anyway (the atomic counters of every backend): counting costs the pick path
//! nothing more, and only the latency histogram adds work, a few atomic adds per reported
//! latency. The proxy's `/metrics` and any other exposition encode the same registry, so a
//! service's own metrics and divvy's come out together.
//!
//! | metric | type | labels | what |
//! |---|---|---|---|
//! | `divvy_backend_picks_total` | counter | `upstream`, `backend` | picks of the backend (a counter that resets past 2⁴⁰) |
//! | `divvy_backend_in_flight` | gauge | `upstream`, `backend` | requests in flight |
//! | `divvy_backend_outcomes_total` | counter | + `outcome` (`success`, `failure`) | reported outcomes |
//! | `divvy_backend_ejections_total` | counter | + `rule` (`max_fails`, `consecutive_failures`) | passive ejections, by the rule that caused them |
//! | `divvy_backend_health` | gauge | + `state` (`healthy`, `failing`, `ejected`, `drain`, `down`) | 1 for the backend's state, 0 for the others |
//! | `divvy_backend_available` | gauge | `upstream`, `backend` | 1 when a pick could choose it now |
//! | `divvy_backend_effective_weight` | gauge | `upstream`, `backend` | the weight after slow start |
//! | `divvy_backend_latency_seconds` | histogram | `upstream`, `backend` | reported latencies |
//!
//! # Why `prometheus-client`
//!
//! The two well-kept choices are the `metrics` facade (with `metrics-exporter-prometheus` or
//! another recorder) and `prometheus-client`, the Prometheus project's own Rust client. divvy
//! uses `prometheus-client` because its [`Collector`] lets a library expose state it already
//! keeps: the counters are read at scrape time, so a pick pays nothing for metrics, and the
//! label values are escaped by the encoder (a backend identity is user data). The facade has no
//! collector: every pick would call into the installed recorder (a lookup of the labelled
//! series, an atomic add) to keep a second copy of divvy's counters. Users of
//! `prometheus-client` (and of axum / actix exporters built on it) register divvy into their
//! registry; users of the `metrics` facade can read [`Balancer::stats`] on a timer and set
//! their gauges from it.

use std::fmt;
use std::sync::Arc;

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric, MetricEncoder};
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::{Registry, Unit};

use crate::balancer::Balancer;
use crate::health::{BackendStats, HealthState};
use crate::strategy::Strategy;

/// Upper bounds of the latency histogram's buckets, in seconds (Prometheus' default buckets).
pub(crate) const LATENCY_BUCKETS: [f64; 11] = [
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

/// One backend's latency histogram: a count per bucket (and one past the last), and the sum.
#[derive(Debug, Default)]
pub(crate) struct LatencyHistogram {
    counts: [std::sync::atomic::AtomicU64; LATENCY_BUCKETS.len() + 1],
    sum_nanos: std::sync::atomic::AtomicU64,
}

impl LatencyHistogram {
    pub(crate) fn record(&self, nanos: u64) {
        use std::sync::atomic::Ordering::Relaxed;
        let secs = nanos as f64 / 1e9;
        let i = LATENCY_BUCKETS
            .iter()
            .position(|&le| secs <= le)
            .unwrap_or(LATENCY_BUCKETS.len());
        self.counts[i].fetch_add(1, Relaxed);
        self.sum_nanos.fetch_add(nanos, Relaxed);
    }

    /// (sum in seconds, count, (upper bound, count) per bucket): `prometheus-client` makes the
    /// buckets cumulative as it encodes them.
    fn read(&self) -> HistogramRead {
        use std::sync::atomic::Ordering::Relaxed;
        let mut total = 0;
        let mut buckets = Vec::with_capacity(LATENCY_BUCKETS.len() + 1);
        for (i, c) in self.counts.iter().enumerate() {
            let n = c.load(Relaxed);
            total += n;
            let le = LATENCY_BUCKETS.get(i).copied().unwrap_or(f64::INFINITY);
            buckets.push((le, n));
        }
        (self.sum_nanos.load(Relaxed) as f64 / 1e9, total, buckets)
    }
}

/// A histogram as read for encoding: sum, count and per-bucket counts.
type HistogramRead = (f64, u64, Vec<(f64, u64)>);

type Visit = dyn Fn(&mut dyn FnMut(&BackendStats, &LatencyHistogram)) + Send + Sync;

/// The collector [`Balancer::register_metrics`] registers: reads the balancer at each scrape.
pub struct BalancerMetrics {
    upstream: Arc<str>,
    visit: Box<Visit>,
}

impl fmt::Debug for BalancerMetrics {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BalancerMetrics")
            .field("upstream", &self.upstream)
            .finish_non_exhaustive()
    }
}

impl<S: Strategy> Balancer<S> {
    /// Registers this balancer's per-backend metrics (see the [module docs](self)) in
    /// `registry`, labelled `upstream="<upstream>"`. Register each balancer once, with its own
    /// `upstream` name.
    pub fn register_metrics(&self, registry: &mut Registry, upstream: &str) {
        registry.register_collector(Box::new(self.metrics(upstream)));
    }

    /// The collector of this balancer's metrics, for registries built another way.
    pub fn metrics(&self, upstream: &str) -> BalancerMetrics {
        let balancer = self.clone();
        BalancerMetrics {
            upstream: upstream.into(),
            visit: Box::new(move |f| balancer.visit_stats(f)),
        }
    }
}

/// A label set of `upstream`, `backend` and up to one more pair.
struct Labels<'a>(&'a str, &'a str, Option<(&'static str, &'a str)>);

impl prometheus_client::encoding::EncodeLabelSet for Labels<'_> {
    fn encode(
        &self,
        encoder: &mut prometheus_client::encoding::LabelSetEncoder<'_>,
    ) -> Result<(), fmt::Error> {
        use prometheus_client::encoding::EncodeLabel;
        ("upstream", self.0).encode(encoder.encode_label())?;
        ("backend", self.1).encode(encoder.encode_label())?;
        if let Some(extra) = self.2 {
            extra.encode(encoder.encode_label())?;
        }
        Ok(())
    }
}

/// One sample's value, encoded as the family's type asks.
enum Sample {
    Counter(u64),
    Gauge(i64),
}

impl EncodeMetric for Sample {
    fn encode(&self, mut encoder: MetricEncoder<'_>) -> Result<(), fmt::Error> {
        match *self {
            Sample::Counter(v) => {
                encoder.encode_counter::<prometheus_client::encoding::NoLabelSet, _, u64>(&v, None)
            }
            Sample::Gauge(v) => encoder.encode_gauge(&v),
        }
    }

    fn metric_type(&self) -> MetricType {
        match self {
            Sample::Counter(_) => MetricType::Counter,
            Sample::Gauge(_) => MetricType::Gauge,
        }
    }
}

const STATES: [HealthState; 5] = [
    HealthState::Healthy,
    HealthState::Failing,
    HealthState::Ejected,
    HealthState::Drain,
    HealthState::Down,
];

impl Collector for BalancerMetrics {
    fn encode(&self, mut encoder: DescriptorEncoder<'_>) -> Result<(), fmt::Error> {
        let mut rows: Vec<(BackendStats, HistogramRead)> = Vec::new();
        (self.visit)(&mut |s, h| rows.push((s.clone(), h.read())));
        let up = &*self.upstream;
        type Family = (&'static str, &'static str, MetricType);
        let families: [Family; 7] = [
            (
                "divvy_backend_picks",
                "Picks of the backend.",
                MetricType::Counter,
            ),
            (
                "divvy_backend_in_flight",
                "Requests in flight to the backend.",
                MetricType::Gauge,
            ),
            (
                "divvy_backend_outcomes",
                "Outcomes reported for the backend.",
                MetricType::Counter,
            ),
            (
                "divvy_backend_ejections",
                "Passive ejections of the backend, by rule.",
                MetricType::Counter,
            ),
            (
                "divvy_backend_health",
                "1 for the backend's health state, 0 for the others.",
                MetricType::Gauge,
            ),
            (
                "divvy_backend_available",
                "1 when a pick could choose the backend now.",
                MetricType::Gauge,
            ),
            (
                "divvy_backend_effective_weight",
                "The backend's weight after slow start.",
                MetricType::Gauge,
            ),
        ];
        for (k, (name, help, ty)) in families.into_iter().enumerate() {
            let mut family = encoder.encode_descriptor(name, help, None, ty)?;
            for (s, _) in &rows {
                let id = &*s.id;
                let mut one = |extra: Option<(&'static str, &str)>, v: Sample| {
                    v.encode(family.encode_family(&Labels(up, id, extra))?)
                };
                match k {
                    0 => one(None, Sample::Counter(s.picks))?,
                    1 => one(None, Sample::Gauge(i64::from(s.in_flight)))?,
                    2 => {
                        one(Some(("outcome", "success")), Sample::Counter(s.successes))?;
                        one(Some(("outcome", "failure")), Sample::Counter(s.failures))?;
                    }
                    3 => {
                        let by_rule = [
                            ("max_fails", s.max_fails_ejections),
                            ("consecutive_failures", s.consecutive_ejections),
                        ];
                        for (rule, n) in by_rule {
                            one(Some(("rule", rule)), Sample::Counter(u64::from(n)))?;
                        }
                    }
                    4 => {
                        for state in STATES {
                            let v = i64::from(s.health == state);
                            one(Some(("state", &state.to_string())), Sample::Gauge(v))?;
                        }
                    }
                    5 => one(None, Sample::Gauge(i64::from(s.available)))?,
                    _ => one(None, Sample::Gauge(i64::from(s.effective_weight)))?,
                }
            }
        }
        let mut family = encoder.encode_descriptor(
            "divvy_backend_latency",
            "Latencies reported for the backend.",
            Some(&Unit::Seconds),
            MetricType::Histogram,
        )?;
        for (s, (sum, count, buckets)) in &rows {
            family
                .encode_family(&Labels(up, &s.id, None))?
                .encode_histogram::<prometheus_client::encoding::NoLabelSet>(
                *sum, *count, buckets, None,
            )?;
        }
        Ok(())
    }
}
