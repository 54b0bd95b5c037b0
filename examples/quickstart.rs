//! Builds a balancer over a few backends, picks with every strategy and prints the distribution.
//!
//! ```text
//! cargo run --example quickstart
//! ```

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr};

use divvy::strategy::{
    Failover, IpHash, Ketama, LeastConnections, Maglev, PowerOfTwoChoices, Random, RoundRobin,
    WeightedRoundRobin,
};
use divvy::{AdminState, Backend, Balancer, Context, Strategy};

const PICKS: usize = 7_000;

fn backends() -> Vec<Backend> {
    vec![
        Backend::new("127.0.0.1:8081").weight(5),
        Backend::new("127.0.0.1:8082").weight(1),
        Backend::new("127.0.0.1:8083").weight(1),
        Backend::new("127.0.0.1:8084").backup(),
    ]
}

/// Picks `PICKS` times, each request with its own client address and key, and counts where they went.
fn distribution<S: Strategy>(
    strategy: S,
    lb_setup: impl Fn(&Balancer<S>),
) -> BTreeMap<String, usize> {
    let lb = Balancer::new(strategy, backends()).expect("a valid backend set");
    lb_setup(&lb);
    let mut counts: BTreeMap<String, usize> =
        backends().iter().map(|b| (b.id().to_owned(), 0)).collect();
    for i in 0..PICKS {
        let key = format!("user-{}", i % 500);
        let ip = IpAddr::V4(Ipv4Addr::new(198, 51, (i % 256) as u8, 7));
        let pick = lb
            .pick(&Context::new().key(key.as_bytes()).client_ip(ip))
            .expect("a backend");
        *counts
            .get_mut(pick.backend().id())
            .expect("a known backend") += 1;
        pick.success();
    }
    counts
}

fn row<S: Strategy>(label: &str, strategy: S) {
    row_with(label, strategy, |_| {});
}

fn row_with<S: Strategy>(label: &str, strategy: S, setup: impl Fn(&Balancer<S>)) {
    let counts = distribution(strategy, setup);
    let cells: Vec<String> = counts.values().map(|n| format!("{n:>6}")).collect();
    println!("{label:<34}{}", cells.join(""));
}

fn main() {
    println!(
        "{PICKS} picks over 4 backends: :8081 weight 5, :8082 and :8083 weight 1, :8084 backup\n"
    );
    println!(
        "{:<34}{:>6}{:>6}{:>6}{:>6}",
        "strategy", ":8081", ":8082", ":8083", ":8084"
    );
    row("round robin", RoundRobin::new());
    row("weighted round robin (nginx)", WeightedRoundRobin::new());
    row("least connections", LeastConnections::new());
    row("ip hash (nginx, first 3 octets)", IpHash::new());
    row("ip hash (full address)", IpHash::full_address());
    row("ketama (nginx hash consistent)", Ketama::new());
    row("maglev", Maglev::new());
    row("random", Random::from_seed(7));
    row("power of two choices", PowerOfTwoChoices::from_seed(7));
    row(
        "failover over weighted rr",
        Failover::new(WeightedRoundRobin::new()),
    );
    row_with(
        "failover, primaries down",
        Failover::new(WeightedRoundRobin::new()),
        |lb| {
            for id in ["127.0.0.1:8081", "127.0.0.1:8082", "127.0.0.1:8083"] {
                lb.set_admin_state(id, Some(AdminState::Down))
                    .expect("a known backend");
            }
        },
    );
    println!("\nHashing strategies send each of the 500 keys (or /24 networks) to one backend;");
    println!("only failover honours the backup tier, and only when every primary is down.");
}
