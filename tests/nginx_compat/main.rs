//! Differential tests against a real nginx: for the same backends and the same requests, divvy's
//! nginx-compatible strategies choose exactly the servers nginx chooses.
//!
//! Each test starts loopback backends, an nginx (one process) with an upstream over them, sends
//! requests through nginx and reads which servers it tried (`$upstream_addr`), then routes the same
//! requests with a `divvy::Balancer` over the same backends and compares decision by decision.
//! Without an nginx binary every test prints why and passes: the suite installs nothing itself.

// Some helpers serve cases whose strategies land later (source addresses, nginx's clock).
#[allow(dead_code)]
mod support;

use std::time::Duration;

use divvy::strategy::RoundRobin;
use divvy::{Backend, Balancer, Context, HealthConfig, ManualClock, Strategy};

use support::{assert_agree, divvy_route, nginx_health, Backends, Decision, Nginx};

/// nginx's defaults: `max_fails=1 fail_timeout=10s`.
fn default_health() -> HealthConfig {
    nginx_health(1, Duration::from_secs(10))
}

/// A balancer with the given health rules and, when given, a manual clock.
fn balancer<S: Strategy>(
    strategy: S,
    health: HealthConfig,
    clock: Option<ManualClock>,
    backends: impl IntoIterator<Item = Backend>,
) -> Balancer<S> {
    let mut builder = Balancer::builder(strategy);
    builder.health(health);
    if let Some(clock) = clock {
        builder.clock(clock);
    }
    builder.build(backends).expect("a valid backend set")
}

/// An upstream body with one `server` line per backend, each with its parameters.
fn upstream(directive: &str, backends: &Backends, params: &[String]) -> String {
    let mut s = String::from(directive);
    for (i, p) in params.iter().enumerate() {
        s.push_str(&support::server_line(&backends.id(i), p));
    }
    s
}

/// Sends `n` sequential requests to `/` on one keepalive connection and returns nginx's
/// decisions.
fn nginx_sequence(nginx: &Nginx, backends: &Backends, n: usize) -> Vec<Decision> {
    let mut client = nginx.client();
    (0..n)
        .map(|_| Decision::from_reply(&client.must_get("/", nginx), backends))
        .collect()
}

#[test]
fn round_robin_chooses_as_nginx_does_with_equal_weights() {
    let Some(bin) = support::nginx_or_skip("round_robin_chooses_as_nginx_does_with_equal_weights")
    else {
        return;
    };
    let backends = Backends::start(4);
    let nginx = Nginx::start(&bin, &upstream("", &backends, &vec![String::new(); 4]));
    let seen = nginx_sequence(&nginx, &backends, 1000);

    let lb = balancer(
        RoundRobin::new(),
        default_health(),
        None,
        (0..4).map(|i| Backend::new(backends.id(i))),
    );
    let ours: Vec<Decision> = (0..1000)
        .map(|_| divvy_route(&lb, Context::new(), &backends, |_| true))
        .collect();
    let inputs: Vec<String> = (0..1000).map(|i| format!("request {i}")).collect();
    assert_agree(
        "round robin, 4 × weight 1",
        &inputs,
        &seen,
        &ours,
        &backends,
    );
}
