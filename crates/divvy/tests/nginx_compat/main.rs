//! Differential tests against a real nginx: for the same backends and the same requests, divvy's
//! nginx-compatible strategies choose exactly the servers nginx chooses.
//!
//! Each test starts loopback backends, an nginx (one process) with an upstream over them, sends
//! requests through nginx and reads which servers it tried (`$upstream_addr`), then routes the same
//! requests with a `divvy::Balancer` over the same backends and compares decision by decision.
//! Without an nginx binary every test prints why and passes: the suite installs nothing itself.

mod support;

use std::collections::{BTreeSet, HashSet};
use std::net::{IpAddr, Ipv4Addr};
use std::time::Duration;

use divvy::strategy::{Failover, IpHash, Ketama, RoundRobin, WeightedRoundRobin};
use divvy::{AdminState, Backend, Balancer, Context, HealthConfig, ManualClock, Strategy};

use support::{
    assert_agree, assert_same_shares, divvy_route, nginx_health, Backends, Decision, Nginx, Summary,
};

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
#[cfg_attr(nginx_missing, ignore = "nginx is not installed")]
fn round_robin_chooses_as_nginx_does_with_equal_weights() {
    let bin = support::nginx("round_robin_chooses_as_nginx_does_with_equal_weights");
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

// === deterministic inputs ===

/// SplitMix64: a fixed, documented generator, so every run sends the same inputs.
struct SplitMix(u64);

impl SplitMix {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

// === 1. smooth weighted round robin ===

/// The first 1,000 choices of nginx's default balancer and of divvy's `WeightedRoundRobin` over
/// servers with `weights`, requests sent one after another.
fn weighted_round_robin_agrees(test: &str, weights: &[u32]) {
    let bin = support::nginx(test);
    let n = weights.len();
    let backends = Backends::start(n);
    let params: Vec<String> = weights.iter().map(|w| format!("weight={w}")).collect();
    let nginx = Nginx::start(&bin, &upstream("", &backends, &params));
    let seen = nginx_sequence(&nginx, &backends, 1000);

    let lb = balancer(
        WeightedRoundRobin::new(),
        default_health(),
        None,
        (0..n).map(|i| Backend::new(backends.id(i)).weight(weights[i])),
    );
    let ours: Vec<Decision> = (0..1000)
        .map(|_| divvy_route(&lb, Context::new(), &backends, |_| true))
        .collect();
    let inputs: Vec<String> = (0..1000).map(|i| format!("request {i}")).collect();
    assert_agree(
        &format!("weighted round robin, weights {weights:?}"),
        &inputs,
        &seen,
        &ours,
        &backends,
    );
}

#[test]
#[cfg_attr(nginx_missing, ignore = "nginx is not installed")]
fn weighted_round_robin_chooses_as_nginx_does_with_equal_weights() {
    weighted_round_robin_agrees(
        "weighted_round_robin_chooses_as_nginx_does_with_equal_weights",
        &[1, 1, 1, 1],
    );
}

#[test]
#[cfg_attr(nginx_missing, ignore = "nginx is not installed")]
fn weighted_round_robin_chooses_as_nginx_does_with_weights_5_1_1() {
    weighted_round_robin_agrees(
        "weighted_round_robin_chooses_as_nginx_does_with_weights_5_1_1",
        &[5, 1, 1],
    );
}

#[test]
#[cfg_attr(nginx_missing, ignore = "nginx is not installed")]
fn weighted_round_robin_chooses_as_nginx_does_when_weights_share_a_divisor() {
    // 3:2 written as 6:4: nginx runs its sequence over the weights as written, and a schedule
    // reduced by the gcd must still give the same choices in the same order.
    weighted_round_robin_agrees(
        "weighted_round_robin_chooses_as_nginx_does_when_weights_share_a_divisor",
        &[6, 4],
    );
}

#[test]
#[cfg_attr(nginx_missing, ignore = "nginx is not installed")]
fn weighted_round_robin_chooses_as_nginx_does_with_ten_random_weights() {
    let mut rng = SplitMix(0x6e67_696e_7877_7272);
    let weights: Vec<u32> = (0..10).map(|_| 1 + rng.below(100) as u32).collect();
    weighted_round_robin_agrees(
        "weighted_round_robin_chooses_as_nginx_does_with_ten_random_weights",
        &weights,
    );
}

// === 2. ip_hash ===

/// Client addresses in 127.0.0.0/8 (all loopback on Linux), spread over many /24s, since
/// `ip_hash` hashes an IPv4 client's first three octets. Every tenth address shares the /24 of the
/// one before it with another last octet, so that the fourth octet is shown not to matter.
fn client_addresses(count: usize, seed: u64) -> Vec<Ipv4Addr> {
    let mut rng = SplitMix(seed);
    let mut seen = HashSet::new();
    let mut out: Vec<Ipv4Addr> = Vec::with_capacity(count);
    while out.len() < count {
        let ip = match out.last() {
            Some(prev) if out.len() % 10 == 9 => {
                let [a, b, c, d] = prev.octets();
                Ipv4Addr::new(a, b, c, 1 + (d % 253))
            }
            _ => Ipv4Addr::new(
                127,
                rng.below(255) as u8,
                rng.below(256) as u8,
                1 + rng.below(254) as u8,
            ),
        };
        if seen.insert(ip) {
            out.push(ip);
        }
    }
    out
}

/// How long a failed server stays unavailable in the tests that kill one: longer than any test.
const LONG_FAIL_TIMEOUT: Duration = Duration::from_secs(600);

/// nginx's `ip_hash` and divvy's `IpHash` over servers with `weights` (and `down` where
/// `down[i]`), for 600 client addresses, one connection from each. When `dead` names a server,
/// it stops listening first: the request that finds out retries elsewhere, and later ones skip it.
fn ip_hash_agrees(test: &str, weights: &[u32], down: &[bool], dead: Option<usize>) {
    let bin = support::nginx(test);
    let n = weights.len();
    let mut backends = Backends::start(n);
    if let Some(i) = dead {
        backends.stop(i);
    }
    let params: Vec<String> = (0..n)
        .map(|i| {
            let flag = if down[i] { " down" } else { "" };
            format!("weight={} max_fails=1 fail_timeout=600s{flag}", weights[i])
        })
        .collect();
    let nginx = Nginx::start(&bin, &upstream("ip_hash;\n", &backends, &params));
    let clients = client_addresses(600, 0x6970_6861_7368 ^ n as u64);
    let slash24s: HashSet<[u8; 3]> = clients
        .iter()
        .map(|ip| {
            let [a, b, c, _] = ip.octets();
            [a, b, c]
        })
        .collect();
    assert!(slash24s.len() >= 500, "{} distinct /24s", slash24s.len());

    let seen: Vec<Decision> = clients
        .iter()
        .map(|&ip| Decision::from_reply(&nginx.client_from(ip).must_get("/", &nginx), &backends))
        .collect();

    let lb = balancer(
        IpHash::new(),
        nginx_health(1, LONG_FAIL_TIMEOUT),
        Some(ManualClock::new()),
        (0..n).map(|i| {
            let b = Backend::new(backends.id(i)).weight(weights[i]);
            if down[i] {
                b.state(AdminState::Down)
            } else {
                b
            }
        }),
    );
    let ours: Vec<Decision> = clients
        .iter()
        .map(|&ip| {
            let ctx = Context::new().client_ip(IpAddr::V4(ip));
            divvy_route(&lb, ctx, &backends, |i| backends.serves(i))
        })
        .collect();
    let inputs: Vec<String> = clients.iter().map(Ipv4Addr::to_string).collect();
    // nginx saw the clients' addresses: its choices cover every server that is up.
    let answered = Summary::of(&seen).answered;
    let up = |i: usize| !down[i] && dead != Some(i);
    assert!(
        (0..n).all(|i| answered.contains_key(&i) == up(i)),
        "{answered:?}"
    );
    if let Some(i) = dead {
        assert_eq!(Summary::of(&seen).failed.get(&i), Some(&1));
    }
    assert_agree(
        &format!("ip_hash, weights {weights:?}, down {down:?}, dead {dead:?}"),
        &inputs,
        &seen,
        &ours,
        &backends,
    );
}

#[test]
#[cfg_attr(nginx_missing, ignore = "nginx is not installed")]
fn ip_hash_chooses_as_nginx_does_with_equal_weights() {
    ip_hash_agrees(
        "ip_hash_chooses_as_nginx_does_with_equal_weights",
        &[1; 5],
        &[false; 5],
        None,
    );
}

#[test]
#[cfg_attr(nginx_missing, ignore = "nginx is not installed")]
fn ip_hash_chooses_as_nginx_does_with_weights() {
    ip_hash_agrees(
        "ip_hash_chooses_as_nginx_does_with_weights",
        &[3, 1, 4, 1, 5, 9],
        &[false; 6],
        None,
    );
}

#[test]
#[cfg_attr(nginx_missing, ignore = "nginx is not installed")]
fn ip_hash_rehashes_as_nginx_does_around_a_down_server() {
    // A `down` server keeps its place in the hash (nginx's advice for taking one out), and its
    // clients are rehashed onto the others with nginx's arithmetic.
    ip_hash_agrees(
        "ip_hash_rehashes_as_nginx_does_around_a_down_server",
        &[2, 1, 1, 3, 1],
        &[false, true, false, false, false],
        None,
    );
}

#[test]
#[cfg_attr(nginx_missing, ignore = "nginx is not installed")]
fn ip_hash_moves_the_clients_of_a_dead_server_as_nginx_does() {
    // The first client hashed to the dead server finds out (nginx retries with its next hash,
    // divvy reports the failure and picks again without it); afterwards its clients are rehashed
    // onto the others as for a `down` server.
    ip_hash_agrees(
        "ip_hash_moves_the_clients_of_a_dead_server_as_nginx_does",
        &[2, 1, 3, 1, 1],
        &[false; 5],
        Some(2),
    );
}

// === 3. hash $arg_key consistent ===

/// Sends `GET /?key=…` for every key and returns nginx's decisions.
fn nginx_keys(nginx: &Nginx, backends: &Backends, keys: &[String]) -> Vec<Decision> {
    let mut client = nginx.client();
    keys.iter()
        .map(|k| Decision::from_reply(&client.must_get(&format!("/?key={k}"), nginx), backends))
        .collect()
}

fn divvy_keys<S: Strategy>(
    lb: &Balancer<S>,
    backends: &Backends,
    keys: &[String],
) -> Vec<Decision> {
    keys.iter()
        .map(|k| divvy_route(lb, Context::new().key(k.as_bytes()), backends, |_| true))
        .collect()
}

/// The keys whose backend differs between two routings.
fn moved(keys: &[String], before: &[Decision], after: &[Decision]) -> BTreeSet<String> {
    (0..keys.len())
        .filter(|&i| before[i] != after[i])
        .map(|i| keys[i].clone())
        .collect()
}

#[test]
#[cfg_attr(nginx_missing, ignore = "nginx is not installed")]
fn ketama_places_keys_as_nginx_hash_consistent_does_and_moves_the_same_keys() {
    let test = "ketama_places_keys_as_nginx_hash_consistent_does_and_moves_the_same_keys";
    let bin = support::nginx(test);
    let weights = [3, 1, 2, 5, 1, 4];
    let removed = 3;
    let n = weights.len();
    let backends = Backends::start(n);
    let mut rng = SplitMix(0x6b65_7461_6d61);
    // Query-string-safe keys, so that `$arg_key` is the key's bytes exactly.
    let keys: Vec<String> = (0..2000)
        .map(|i| format!("user{i}-{:x}", rng.next()))
        .collect();
    let directive = "hash $arg_key consistent;\n";
    let all: Vec<usize> = (0..n).collect();
    let rest: Vec<usize> = all.iter().copied().filter(|&i| i != removed).collect();
    let upstream_of = |members: &[usize]| {
        let mut s = String::from(directive);
        for &i in members {
            s.push_str(&support::server_line(
                &backends.id(i),
                &format!("weight={}", weights[i]),
            ));
        }
        s
    };
    let set_of = |members: &[usize]| -> Vec<Backend> {
        members
            .iter()
            .map(|&i| Backend::new(backends.id(i)).weight(weights[i]))
            .collect()
    };

    // All six servers.
    let seen_all = {
        let nginx = Nginx::start(&bin, &upstream_of(&all));
        nginx_keys(&nginx, &backends, &keys)
    };
    let lb = balancer(Ketama::new(), default_health(), None, set_of(&all));
    let ours_all = divvy_keys(&lb, &backends, &keys);
    assert_agree(
        &format!("hash consistent, weights {weights:?}"),
        &keys,
        &seen_all,
        &ours_all,
        &backends,
    );

    // One server removed from the configuration (nginx) and from the set (divvy).
    let seen_rest = {
        let nginx = Nginx::start(&bin, &upstream_of(&rest));
        nginx_keys(&nginx, &backends, &keys)
    };
    lb.update(set_of(&rest)).unwrap();
    let ours_rest = divvy_keys(&lb, &backends, &keys);
    assert_agree(
        &format!("hash consistent, weights {weights:?} without b{removed}"),
        &keys,
        &seen_rest,
        &ours_rest,
        &backends,
    );

    let nginx_moved = moved(&keys, &seen_all, &seen_rest);
    let divvy_moved = moved(&keys, &ours_all, &ours_rest);
    assert_eq!(nginx_moved, divvy_moved, "the keys that move differ");
    // Consistent hashing: exactly the removed server's keys move (a property of nginx itself,
    // checked so that the comparison above is known to compare something).
    let on_removed: BTreeSet<String> = (0..keys.len())
        .filter(|&i| seen_all[i].tried == [removed])
        .map(|i| keys[i].clone())
        .collect();
    assert_eq!(nginx_moved, on_removed);
    assert!(!on_removed.is_empty());
}

/// nginx's `hash $arg_key consistent` and divvy's `Ketama` for 2,000 keys over five weighted
/// servers, one of them `down` (configured) or dead (stopped before the first request: the
/// first key that reaches it finds out and is retried, later ones skip it).
fn ketama_walks_past(test: &str, out: usize, dead: bool) {
    let bin = support::nginx(test);
    let weights = [2, 1, 3, 1, 2];
    let n = weights.len();
    let mut backends = Backends::start(n);
    if dead {
        backends.stop(out);
    }
    let mut rng = SplitMix(0x646f_776e);
    let keys: Vec<String> = (0..2000)
        .map(|i| format!("k{i}x{:x}", rng.next()))
        .collect();
    let params: Vec<String> = (0..n)
        .map(|i| {
            let flag = if i == out && !dead { " down" } else { "" };
            format!("weight={} max_fails=1 fail_timeout=600s{flag}", weights[i])
        })
        .collect();
    let nginx = Nginx::start(
        &bin,
        &upstream("hash $arg_key consistent;\n", &backends, &params),
    );
    let seen = nginx_keys(&nginx, &backends, &keys);
    let lb = balancer(
        Ketama::new(),
        nginx_health(1, LONG_FAIL_TIMEOUT),
        Some(ManualClock::new()),
        (0..n).map(|i| {
            let b = Backend::new(backends.id(i)).weight(weights[i]);
            if i == out && !dead {
                b.state(AdminState::Down)
            } else {
                b
            }
        }),
    );
    let ours: Vec<Decision> = keys
        .iter()
        .map(|k| {
            let ctx = Context::new().key(k.as_bytes());
            divvy_route(&lb, ctx, &backends, |i| backends.serves(i))
        })
        .collect();
    let how = if dead { "dead" } else { "down" };
    let summary = Summary::of(&seen);
    assert!(!summary.answered.contains_key(&out));
    assert_eq!(summary.failed.get(&out), dead.then_some(&1));
    assert_agree(
        &format!("hash consistent, weights {weights:?}, b{out} {how}"),
        &keys,
        &seen,
        &ours,
        &backends,
    );
}

#[test]
#[cfg_attr(nginx_missing, ignore = "nginx is not installed")]
fn ketama_walks_past_a_down_server_as_nginx_does() {
    ketama_walks_past("ketama_walks_past_a_down_server_as_nginx_does", 2, false);
}

#[test]
#[cfg_attr(nginx_missing, ignore = "nginx is not installed")]
fn ketama_retries_past_a_dead_server_as_nginx_does() {
    ketama_walks_past("ketama_retries_past_a_dead_server_as_nginx_does", 2, true);
}

// === 4. backup and down ===

/// `server` parameters for nginx from weights and flags.
fn params_of(weights: &[u32], flags: &[&str]) -> Vec<String> {
    weights
        .iter()
        .zip(flags)
        .map(|(w, f)| format!("weight={w}{f}"))
        .collect()
}

/// divvy backends from weights and the same flags (`down`, `backup`).
fn backends_of(backends: &Backends, weights: &[u32], flags: &[&str]) -> Vec<Backend> {
    (0..weights.len())
        .map(|i| {
            let mut b = Backend::new(backends.id(i)).weight(weights[i]);
            if flags[i].contains("down") {
                b = b.state(AdminState::Down);
            }
            if flags[i].contains("backup") {
                b = b.backup();
            }
            b
        })
        .collect()
}

/// Sends `count` requests through nginx, then routes `count` requests with divvy (backends that
/// stopped listening fail), and returns both.
fn phase<S: Strategy>(
    nginx: &Nginx,
    client: &mut support::Client,
    lb: &Balancer<S>,
    backends: &Backends,
    count: usize,
) -> (Vec<Decision>, Vec<Decision>) {
    let seen = (0..count)
        .map(|_| Decision::from_reply(&client.must_get("/", nginx), backends))
        .collect();
    let ours = (0..count)
        .map(|_| divvy_route(lb, Context::new(), backends, |i| backends.serves(i)))
        .collect();
    (seen, ours)
}

fn labels(name: &str, count: usize) -> Vec<String> {
    (0..count).map(|i| format!("{name} #{i}")).collect()
}

#[test]
#[cfg_attr(nginx_missing, ignore = "nginx is not installed")]
fn backups_take_traffic_exactly_when_every_primary_has_failed_as_in_nginx() {
    let test = "backups_take_traffic_exactly_when_every_primary_has_failed_as_in_nginx";
    let bin = support::nginx(test);
    // Two primaries, two backups. fail_timeout is longer than the test, so a server that failed
    // stays unavailable on both sides without a clock to align.
    let weights = [3, 2, 2, 1];
    let flags = [
        " max_fails=1 fail_timeout=600s",
        " max_fails=1 fail_timeout=600s",
        " backup",
        " backup",
    ];
    let mut backends = Backends::start(weights.len());
    let nginx = Nginx::start(&bin, &upstream("", &backends, &params_of(&weights, &flags)));
    let lb = balancer(
        Failover::new(WeightedRoundRobin::new()),
        nginx_health(1, Duration::from_secs(600)),
        Some(ManualClock::new()),
        backends_of(&backends, &weights, &flags),
    );
    let mut client = nginx.client();

    // Both primaries up: they share the traffic in nginx's order; backups get none.
    let (seen, ours) = phase(&nginx, &mut client, &lb, &backends, 300);
    assert_agree("primaries up", &labels("up", 300), &seen, &ours, &backends);
    assert!(seen.iter().all(|d| d.answered && d.tried[0] < 2));

    // Both primaries die. The next request tries each primary in nginx's order, fails on both
    // and moves to the backups, which from then on share the traffic in their own order.
    backends.stop(0);
    backends.stop(1);
    let (seen, ours) = phase(&nginx, &mut client, &lb, &backends, 300);
    assert_agree(
        "primaries stopped",
        &labels("down", 300),
        &seen,
        &ours,
        &backends,
    );
    assert_eq!(seen[0].tried.len(), 3);
    assert!(seen[1..]
        .iter()
        .all(|d| d.answered && d.tried.len() == 1 && d.tried[0] >= 2));
}

#[test]
#[cfg_attr(nginx_missing, ignore = "nginx is not installed")]
fn a_down_server_and_a_dead_one_get_the_traffic_nginx_gives_them() {
    let test = "a_down_server_and_a_dead_one_get_the_traffic_nginx_gives_them";
    let bin = support::nginx(test);
    // b2 is `down`; b4 is a backup.
    let weights = [3, 2, 1, 1, 1];
    let ft = " max_fails=1 fail_timeout=600s";
    let flags = [ft, ft, " down", ft, " backup"];
    let mut backends = Backends::start(weights.len());
    let nginx = Nginx::start(&bin, &upstream("", &backends, &params_of(&weights, &flags)));
    let set = backends_of(&backends, &weights, &flags);
    let lb = balancer(
        Failover::new(WeightedRoundRobin::new()),
        nginx_health(1, Duration::from_secs(600)),
        Some(ManualClock::new()),
        set.clone(),
    );
    // The same set without the down server, for the exact order nginx follows.
    let without_down = balancer(
        Failover::new(WeightedRoundRobin::new()),
        nginx_health(1, Duration::from_secs(600)),
        Some(ManualClock::new()),
        set.into_iter()
            .enumerate()
            .filter(|&(i, _)| i != 2)
            .map(|(_, b)| b),
    );
    let mut client = nginx.client();

    // nginx leaves a `down` server out of its smooth sequence entirely: its order is exactly the
    // order over the set without it. divvy's WeightedRoundRobin keeps the server's turns in its
    // schedule and hands them to the others in proportion to weight (docs/NGINX_COMPAT.md), so
    // divvy gives the same shares, and nothing to the down server or the backup.
    let (seen, ours) = phase(&nginx, &mut client, &lb, &backends, 300);
    let exact: Vec<Decision> = (0..300)
        .map(|_| divvy_route(&without_down, Context::new(), &backends, |_| true))
        .collect();
    assert_agree(
        "b2 down, as if absent",
        &labels("up", 300),
        &seen,
        &exact,
        &backends,
    );
    assert_same_shares("b2 down", &seen, &ours, 30);
    assert!(!Summary::of(&ours).answered.contains_key(&2));
    assert!(!Summary::of(&ours).answered.contains_key(&4));

    // b1 dies: both try it once, then share its traffic among the other primaries.
    backends.stop(1);
    let (seen, ours) = phase(&nginx, &mut client, &lb, &backends, 300);
    assert_same_shares("b1 stopped", &seen, &ours, 30);
    assert_eq!(Summary::of(&seen).failed.get(&1), Some(&1));

    // Every primary dead: each is tried once, then the backup takes everything.
    backends.stop(0);
    backends.stop(3);
    let (seen, ours) = phase(&nginx, &mut client, &lb, &backends, 100);
    assert_same_shares("primaries stopped", &seen, &ours, 0);
    assert_eq!(Summary::of(&seen).answered.get(&4), Some(&100));
}

// === 5. max_fails and fail_timeout ===

/// One step of a timed script, run against nginx in real time and replayed in divvy.
#[derive(Clone, Copy, Debug)]
enum Step {
    /// Wait until this many whole seconds after the script's start.
    At(u64),
    /// Backend `i` fails every request from now on (closes without answering).
    Break(usize),
    /// Backend `i` serves again.
    Repair(usize),
    /// Send this many requests, one after another.
    Requests(usize),
}

/// What one request of a script saw: nginx's second (relative to the start), which backends
/// could serve, and nginx's decision.
struct Observed {
    second: u64,
    serving: Vec<bool>,
    decision: Decision,
}

/// Runs `script` against nginx in real time. nginx reads its clock in whole seconds
/// (`ngx_time()`), so each request is sent well inside a second and nginx's `$msec` on the reply
/// must name that same second: the second in which nginx chose.
fn run_against_nginx(script: &[Step], nginx: &Nginx, backends: &Backends) -> Vec<Observed> {
    let mut client = nginx.client();
    let start = support::mid_second();
    let mut second = start;
    let mut out = Vec::new();
    for step in script {
        match *step {
            Step::At(k) => second = support::wait_for_second(start + k),
            Step::Break(i) => backends.set_broken(i, true),
            Step::Repair(i) => backends.set_broken(i, false),
            Step::Requests(count) => {
                for _ in 0..count {
                    let reply = client.must_get("/", nginx);
                    assert_eq!(
                        reply.second, second,
                        "nginx answered in another second than the one the request was sent in \
                         (the machine is too slow for this test's 300 ms margin)"
                    );
                    out.push(Observed {
                        second: second - start,
                        serving: (0..backends.len()).map(|i| backends.serves(i)).collect(),
                        decision: Decision::from_reply(&reply, backends),
                    });
                }
            }
        }
    }
    out
}

/// Replays what nginx saw in divvy: the clock set to nginx's second before each request (offset
/// so that time zero is long past, as it is for nginx's never-checked servers), the same backends
/// serving or failing, outcomes reported through each pick.
fn replay_in_divvy<S: Strategy>(
    lb: &Balancer<S>,
    clock: &ManualClock,
    observed: &[Observed],
    backends: &Backends,
) -> Vec<Decision> {
    const ORIGIN: u64 = 1_000;
    observed
        .iter()
        .map(|o| {
            clock.set(Duration::from_secs(ORIGIN + o.second));
            divvy_route(lb, Context::new(), backends, |i| o.serving[i])
        })
        .collect()
}

/// Runs `script` with nginx and with divvy (`Failover` over `WeightedRoundRobin`, nginx's health
/// rules) over a primary b0 with `max_fails` and `fail_timeout=1s` and a backup b1. With one
/// server per tier the order within a tier is not in question: what is compared is exactly when
/// the primary is tried, skipped and trusted again.
///
/// Returns what nginx did (`None` when skipped), for the test to check that its script took
/// nginx down the path it describes.
fn passive_health_agrees(test: &str, max_fails: u32, script: &[Step]) -> Vec<Observed> {
    let bin = support::nginx(test);
    let backends = Backends::start(2);
    let flags = [
        &format!(" max_fails={max_fails} fail_timeout=1s")[..],
        " backup",
    ];
    let nginx = Nginx::start(&bin, &upstream("", &backends, &params_of(&[1, 1], &flags)));
    let observed = run_against_nginx(script, &nginx, &backends);

    let clock = ManualClock::new();
    let lb = balancer(
        Failover::new(WeightedRoundRobin::new()),
        nginx_health(max_fails, Duration::from_secs(1)),
        Some(clock.clone()),
        backends_of(&backends, &[1, 1], &flags),
    );
    let ours = replay_in_divvy(&lb, &clock, &observed, &backends);
    let seen: Vec<Decision> = observed.iter().map(|o| o.decision.clone()).collect();
    let inputs: Vec<String> = observed
        .iter()
        .map(|o| {
            format!(
                "t={}s, b0 {}",
                o.second,
                if o.serving[0] { "serves" } else { "broken" }
            )
        })
        .collect();
    assert_agree(
        &format!("max_fails={max_fails} fail_timeout=1s"),
        &inputs,
        &seen,
        &ours,
        &backends,
    );
    observed
}

/// nginx's decisions (as tried-lists) for the requests sent in second `t` of a script.
fn tried_at(observed: &[Observed], t: u64) -> Vec<Vec<usize>> {
    observed
        .iter()
        .filter(|o| o.second == t)
        .map(|o| o.decision.tried.clone())
        .collect()
}

#[test]
#[cfg_attr(nginx_missing, ignore = "nginx is not installed")]
fn a_failing_primary_is_skipped_for_fail_timeout_and_retried_after_as_in_nginx() {
    use Step::*;
    // b0 fails; its second failure (max_fails=2) disables it while `now - checked <=
    // fail_timeout` in whole seconds, so from t to t + 2. Retried while still broken, one more
    // failure disables it again; retried once repaired, its success brings the traffic back.
    let script = [
        At(0),
        Break(0),
        Requests(4),
        At(1),
        Requests(3),
        At(2),
        Requests(3),
        Repair(0),
        At(3),
        Requests(3),
        At(4),
        Requests(3),
    ];
    let test = "a_failing_primary_is_skipped_for_fail_timeout_and_retried_after_as_in_nginx";
    let seen = passive_health_agrees(test, 2, &script);
    // The path the script means to take (nginx's documented `max_fails` semantics).
    assert_eq!(
        tried_at(&seen, 0),
        [vec![0, 1], vec![0, 1], vec![1], vec![1]]
    );
    assert_eq!(tried_at(&seen, 1), [[1]; 3]);
    assert_eq!(tried_at(&seen, 2), [vec![0, 1], vec![1], vec![1]]);
    assert_eq!(tried_at(&seen, 3), [[1]; 3]);
    assert_eq!(tried_at(&seen, 4), [[0]; 3]);
}

#[test]
#[cfg_attr(nginx_missing, ignore = "nginx is not installed")]
fn failures_are_forgotten_only_after_a_quiet_fail_timeout_as_in_nginx() {
    use Step::*;
    // nginx resets a server's failures on a success only if the server was chosen after its last
    // failure's `fail_timeout` had passed (`accessed < checked`). b0 fails once, answers twice in
    // the same second, then fails again: the two failures add up to max_fails=2 and disable it
    // although it answered in between. Two seconds later a success does reset them, so one new
    // failure is not enough.
    let script = [
        At(0),
        Break(0),
        Requests(1),
        Repair(0),
        Requests(2),
        Break(0),
        Requests(2),
        Repair(0),
        Requests(2),
        At(2),
        Requests(2),
        Break(0),
        Requests(1),
        Repair(0),
        Requests(2),
    ];
    let test = "failures_are_forgotten_only_after_a_quiet_fail_timeout_as_in_nginx";
    let seen = passive_health_agrees(test, 2, &script);
    // The path the script means to take: skipped after the second failure although repaired,
    // and still chosen after one failure once a late success reset the count.
    let t0 = tried_at(&seen, 0);
    assert_eq!(t0[3..], [vec![0, 1], vec![1], vec![1], vec![1]]);
    assert_eq!(
        tried_at(&seen, 2),
        [vec![0], vec![0], vec![0, 1], vec![0], vec![0]]
    );
}
