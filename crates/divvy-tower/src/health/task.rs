//! The checker's task: rounds of concurrent probes, spaced by a jittered interval.

use std::time::Duration;

use divvy::{Backend, Balancer, Strategy};
use futures_util::stream::{self, StreamExt};
use rand::Rng;
use tokio::time::{sleep_until, Instant};

use super::checker::OnProbe;
use super::error::ProbeError;
use super::handle::Stop;
use super::probe::{Probe, ProbeReport};

/// The checker's settings, fixed at spawn.
pub(crate) struct Config {
    pub(crate) probe: Probe,
    pub(crate) interval: Duration,
    pub(crate) jitter_percent: u32,
    pub(crate) timeout: Duration,
    pub(crate) concurrency: usize,
    pub(crate) on_probe: Option<OnProbe>,
}

pub(crate) async fn run<S: Strategy>(
    balancer: Balancer<S>,
    config: std::sync::Arc<Config>,
    mut stop: Stop,
) {
    let mut version = None;
    loop {
        let started = Instant::now();
        // `biased`: once stopped, no further probe result is reported, even one that is ready.
        tokio::select! {
            biased;
            _ = &mut stop => return,
            () = round(&balancer, &config, &mut version) => {}
        }
        let r = rand::rng().random_range(-1.0..=1.0);
        let next = started + jittered(config.interval, config.jitter_percent, r);
        tokio::select! {
            biased;
            _ = &mut stop => return,
            () = sleep_until(next) => {}
        }
    }
}

/// Probes every backend of the current set once, reporting each result as it arrives.
async fn round<S: Strategy>(balancer: &Balancer<S>, config: &Config, version: &mut Option<u64>) {
    // Read the set anew each round: backends added by an update are probed from now on, and
    // removed ones are no longer probed.
    let backends = balancer.backends();
    let v = balancer.version();
    if *version != Some(v) {
        tracing::debug!(
            version = v,
            backends = backends.len(),
            "health checker follows a new backend set"
        );
        *version = Some(v);
    }
    let mut reports = stream::iter(backends.iter().cloned())
        .map(|b| probe(config, b))
        .buffer_unordered(config.concurrency);
    while let Some(report) = reports.next().await {
        if balancer
            .report_probe(&report.backend, report.is_ok())
            .is_err()
        {
            // Removed by an update while the probe ran: its result no longer means anything.
            continue;
        }
        match &report.outcome {
            Ok(()) => tracing::debug!(
                backend = %report.backend,
                elapsed = ?report.elapsed,
                "health probe passed"
            ),
            Err(error) => tracing::debug!(
                backend = %report.backend,
                elapsed = ?report.elapsed,
                %error,
                "health probe failed"
            ),
        }
        if let Some(f) = &config.on_probe {
            f(&report);
        }
    }
}

async fn probe(config: &Config, backend: Backend) -> ProbeReport {
    let started = Instant::now();
    let id = backend.id_arc().clone();
    let outcome = match tokio::time::timeout(config.timeout, config.probe.run(backend)).await {
        Ok(outcome) => outcome,
        Err(_) => Err(ProbeError::Timeout(config.timeout)),
    };
    ProbeReport {
        backend: id,
        outcome,
        elapsed: started.elapsed(),
    }
}

/// `interval` stretched or shrunk by `r × pct` percent, `r` in `-1.0..=1.0`.
pub(crate) fn jittered(interval: Duration, pct: u32, r: f64) -> Duration {
    let factor = 1.0 + f64::from(pct) / 100.0 * r.clamp(-1.0, 1.0);
    interval.mul_f64(factor.max(0.0))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn jitter_reaches_exactly_the_ends_of_its_range() {
        let i = Duration::from_secs(5);
        assert_eq!(jittered(i, 10, -1.0), Duration::from_millis(4500));
        assert_eq!(jittered(i, 10, 1.0), Duration::from_millis(5500));
        assert_eq!(jittered(i, 0, 1.0), i);
    }

    proptest! {
        #[test]
        fn jitter_stays_within_its_percentage(ms in 1u64..100_000, pct in 0u32..=50, r in -1.0f64..=1.0) {
            let i = Duration::from_millis(ms);
            let d = jittered(i, pct, r);
            let slack = Duration::from_nanos(1);
            prop_assert!(d + slack >= i.mul_f64(1.0 - f64::from(pct) / 100.0));
            prop_assert!(d <= i.mul_f64(1.0 + f64::from(pct) / 100.0) + slack);
        }
    }
}
