//! Many instances, one routing: three `divvy-proxy` processes share one etcd prefix. Over a
//! scripted series of changes each converges within a second of the change (a dead
//! registration: within its lease's TTL and a second), and after every step all three map 10,000
//! keys to the same backends under Ketama and Maglev, the backends a balancer given the expected
//! set picks. etcd is killed mid-run: every instance keeps serving its last set; after the
//! restart they resume and miss nothing.
//!
//! The propagation times and the agreement of each step are printed at the end
//! (`cargo test -p divvy-proxy --test many -- --nocapture`); `docs/MANY_INSTANCES.md` quotes them.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use divvy::strategy::{Failover, Ketama, Maglev};
use divvy::{AdminState, Backend, Balancer, Context, Strategy};
use divvy_test::etcd::EtcdServer;
use divvy_test::{client, get, TestClient};
use divvy_tower::discover::{Record, Registration};
use etcd_client::Client;
use serde_json::Value;
use tokio::time::Instant;

const PREFIX: &str = "/divvy/many/";
const KEYS: usize = 10_000;
/// Each instance must converge within this of a change (the issue's bound).
const CONVERGE: Duration = Duration::from_secs(1);
/// The lease of the registered backend.
const TTL: Duration = Duration::from_secs(2);
/// The bound of waits that are not measured (processes starting, etcd restarting).
const WITHIN: Duration = Duration::from_secs(20);
/// Set in the environment of the child process that registers a backend and waits to be killed.
const REGISTRANT: &str = "DIVVY_MANY_REGISTRANT";

/// One `divvy-proxy` OS process and its admin address.
struct Instance {
    child: Child,
    admin: SocketAddr,
}

impl Drop for Instance {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn config(etcd: &str) -> String {
    let upstream = |name: &str| {
        format!(
            r#"
[upstream.{name}]
strategy = "{name}"
[upstream.{name}.hash]
key = "uri"
[upstream.{name}.etcd]
endpoints = ["{etcd}"]
prefix = "{PREFIX}"
"#
        )
    };
    format!(
        r#"listen = ["127.0.0.1:0"]
[admin]
listen = "127.0.0.1:0"
[[host]]
default = true
upstream = "ketama"
[[host.route]]
path = "/maglev/"
upstream = "maglev"
{}{}"#,
        upstream("ketama"),
        upstream("maglev")
    )
}

/// Checks the config with `--check`, starts an instance, and reads its admin address from its
/// output.
fn start(dir: &std::path::Path, i: usize, etcd: &str) -> Instance {
    let path = dir.join(format!("proxy-{i}.toml"));
    std::fs::write(&path, config(etcd)).unwrap();
    let check = Command::new(env!("CARGO_BIN_EXE_divvy-proxy"))
        .arg("--config")
        .arg(&path)
        .arg("--check")
        .output()
        .unwrap();
    assert!(check.status.success(), "{check:?}");
    let mut child = Command::new(env!("CARGO_BIN_EXE_divvy-proxy"))
        .arg("--config")
        .arg(&path)
        .env("RUST_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let admin = loop {
        let line = lines
            .next()
            .expect("the proxy prints its addresses")
            .unwrap();
        if let Some(rest) = line.strip_prefix("admin on http://") {
            break rest.split('/').next().unwrap().parse().unwrap();
        }
    };
    // Keep reading, so that the proxy never blocks on a full pipe.
    std::thread::spawn(move || lines.for_each(drop));
    Instance { child, admin }
}

async fn json(client: &TestClient, admin: SocketAddr, path: &str) -> Value {
    let answer = get(client, admin, "localhost", path).await;
    assert!(answer.status.is_success(), "{path}: {answer:?}");
    serde_json::from_str(&answer.body).unwrap()
}

/// An upstream's backends in an instance's `/status`, as `(id, weight, admin state)`.
async fn members(
    client: &TestClient,
    admin: SocketAddr,
    upstream: &str,
) -> Vec<(String, u64, String)> {
    let status = json(client, admin, "/status").await;
    let up = status["upstreams"]
        .as_array()
        .unwrap()
        .iter()
        .find(|u| u["name"] == upstream)
        .unwrap();
    up["backends"]
        .as_array()
        .unwrap()
        .iter()
        .map(|b| {
            (
                b["id"].as_str().unwrap().to_owned(),
                b["weight"].as_u64().unwrap(),
                b["admin"].as_str().unwrap().to_owned(),
            )
        })
        .collect()
}

fn expected_members(set: &[Backend]) -> Vec<(String, u64, String)> {
    set.iter()
        .map(|b| {
            (
                b.id().to_owned(),
                u64::from(b.get_weight()),
                b.get_state().to_string(),
            )
        })
        .collect()
}

/// The backend each key `0` … `KEYS - 1` maps to, from an instance's `/mapping`.
async fn mapping(client: &TestClient, admin: SocketAddr, upstream: &str) -> Vec<String> {
    let v = json(
        client,
        admin,
        &format!("/mapping?upstream={upstream}&keys={KEYS}"),
    )
    .await;
    v["backends"]
        .as_array()
        .unwrap()
        .iter()
        .map(|b| b.as_str().unwrap_or("-").to_owned())
        .collect()
}

/// The mapping a balancer given `set` computes in this process, with the strategy the proxy runs
/// for a discovered upstream (tiers from the records, so `Failover` around the hash).
fn expected_mapping<S: Strategy>(strategy: S, set: &[Backend]) -> Vec<String> {
    let lb = Balancer::new(Failover::new(strategy), set.to_vec()).unwrap();
    (0..KEYS)
        .map(|k| {
            lb.pick(&Context::new().key(k.to_string().as_bytes()))
                .map_or("-".to_owned(), |p| p.id().to_owned())
        })
        .collect()
}

/// One step's figures.
struct Step {
    name: &'static str,
    /// Each instance's time from the change to its convergence.
    times: Vec<Duration>,
    /// Keys (of 2 × 10,000: Ketama and Maglev) that all three instances and the expected
    /// balancer map to the same backend.
    agreed: usize,
}

struct Run {
    etcd: EtcdServer,
    kv: Client,
    instances: Vec<Instance>,
    client: TestClient,
    set: Vec<Backend>,
    steps: Vec<Step>,
}

impl Run {
    /// Waits until every instance serves `self.set`, each measured from `since`; then compares
    /// their mappings; records the step.
    async fn converge(&mut self, name: &'static str, since: Instant, bound: Duration) {
        let want = expected_members(&self.set);
        let mut times = Vec::new();
        let waits = self.instances.iter().map(|i| {
            let (client, want, admin) = (self.client.clone(), want.clone(), i.admin);
            async move {
                loop {
                    let got_k = members(&client, admin, "ketama").await;
                    let got_m = members(&client, admin, "maglev").await;
                    if got_k == want && got_m == want {
                        return since.elapsed();
                    }
                    assert!(
                        since.elapsed() < WITHIN,
                        "{name}: instance {admin} still has {got_k:?}, want {want:?}"
                    );
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
            }
        });
        for t in futures_util::future::join_all(waits).await {
            assert!(
                t <= bound,
                "{name}: an instance took {t:?}, more than {bound:?}"
            );
            times.push(t);
        }
        let agreed = self.agreement(name).await;
        self.steps.push(Step {
            name,
            times,
            agreed,
        });
    }

    /// Asserts that every instance maps every key as the expected balancer does; returns the
    /// number of keys (of both upstreams) on which all agree.
    async fn agreement(&self, name: &str) -> usize {
        let mut agreed = 0;
        for (upstream, want) in [
            ("ketama", expected_mapping(Ketama::new(), &self.set)),
            ("maglev", expected_mapping(Maglev::new(), &self.set)),
        ] {
            let mut got = Vec::new();
            for i in &self.instances {
                got.push(mapping(&self.client, i.admin, upstream).await);
            }
            agreed += (0..KEYS)
                .filter(|&k| got.iter().all(|g| g[k] == want[k]))
                .count();
            for (i, g) in got.iter().enumerate() {
                assert!(
                    g == &want,
                    "{name}: instance {i} maps {upstream} keys differently"
                );
            }
        }
        agreed
    }

    async fn put(&mut self, b: Backend) -> Instant {
        self.kv
            .put(
                format!("{PREFIX}{}", b.id()),
                Record::from_backend(&b).to_json(),
                None,
            )
            .await
            .unwrap();
        let at = Instant::now();
        match self.set.iter().position(|o| o.id() == b.id()) {
            Some(i) => self.set[i] = b,
            None => {
                self.set.push(b);
                self.set.sort_by(|x, y| x.id().cmp(y.id()));
            }
        }
        at
    }

    async fn delete(&mut self, id: &str) -> Instant {
        self.kv.delete(format!("{PREFIX}{id}"), None).await.unwrap();
        let at = Instant::now();
        self.set.retain(|b| b.id() != id);
        at
    }
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_instances_converge_within_a_second_and_map_every_key_alike() {
    let Some(etcd) = EtcdServer::start().await else {
        return;
    };
    let mut kv = etcd.client().await;
    let initial: Vec<Backend> = (1..=4)
        .map(|i| Backend::new(format!("10.0.0.{i}:80")))
        .collect();
    for b in &initial {
        kv.put(
            format!("{PREFIX}{}", b.id()),
            Record::from_backend(b).to_json(),
            None,
        )
        .await
        .unwrap();
    }
    let dir = tempfile::tempdir().unwrap();
    let instances = (0..3)
        .map(|i| start(dir.path(), i, &etcd.endpoint()))
        .collect();
    let mut run = Run {
        etcd,
        kv,
        instances,
        client: client(),
        set: initial,
        steps: Vec::new(),
    };
    let t = Instant::now();
    run.converge("start", t, WITHIN).await;

    let t = run.put(Backend::new("10.0.0.5:80")).await;
    run.converge("add a backend", t, CONVERGE).await;
    let t = run.delete("10.0.0.2:80").await;
    run.converge("remove a backend", t, CONVERGE).await;
    let t = run.put(Backend::new("10.0.0.3:80").weight(3)).await;
    run.converge("re-weight a backend", t, CONVERGE).await;
    let t = run
        .put(Backend::new("10.0.0.4:80").state(AdminState::Down))
        .await;
    run.converge("mark a backend down", t, CONVERGE).await;

    // A backend that registers itself from another process, under a lease.
    let registered = Backend::new("10.0.0.9:80");
    let mut registrant = Command::new(std::env::current_exe().unwrap())
        .args(["registrant", "--exact", "--nocapture"])
        .env(
            REGISTRANT,
            format!("{} {}", run.etcd.endpoint(), registered.id()),
        )
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    let t = Instant::now();
    run.set.push(registered.clone());
    run.set.sort_by(|x, y| x.id().cmp(y.id()));
    run.converge("a backend registers itself", t, WITHIN).await;
    registrant.kill().unwrap();
    registrant.wait().unwrap();
    let t = Instant::now();
    run.set.retain(|b| b.id() != registered.id());
    run.converge(
        "its process is killed: the lease expires",
        t,
        TTL + CONVERGE,
    )
    .await;

    // etcd dies: every instance notices, and keeps serving the last set.
    run.etcd.kill();
    let t = Instant::now();
    for i in &run.instances {
        let admin = i.admin;
        let client = run.client.clone();
        divvy_test::eventually_async("the instance notices etcd is gone", WITHIN, || {
            let client = client.clone();
            async move {
                let status = json(&client, admin, "/status").await;
                status["upstreams"][0]["source"]["watching"] == false
            }
        })
        .await;
    }
    run.converge("etcd is killed: the last set keeps serving", t, WITHIN)
        .await;

    // etcd comes back; changes made at once are all seen.
    run.etcd.restart().await;
    run.kv = run.etcd.client().await;
    run.delete("10.0.0.5:80").await;
    let t = run.put(Backend::new("10.0.0.6:80")).await;
    run.converge("etcd restarts; two changes at once", t, WITHIN)
        .await;

    println!(
        "| step | propagation median | max | keys agreeing (of {}) |",
        2 * KEYS
    );
    println!("|---|---|---|---|");
    for s in &run.steps {
        println!(
            "| {} | {:.0} ms | {:.0} ms | {} |",
            s.name,
            median(s.times.clone()).as_secs_f64() * 1e3,
            s.times.iter().max().unwrap().as_secs_f64() * 1e3,
            s.agreed
        );
    }
}

/// The child process of the registration step: registers a backend under a lease and waits
/// to be killed. Does nothing unless started by the test above.
#[tokio::test]
async fn registrant() {
    let Ok(spec) = std::env::var(REGISTRANT) else {
        return;
    };
    let (endpoint, address) = spec.split_once(' ').unwrap();
    let mut reg = Registration::new(
        [endpoint],
        format!("{PREFIX}{address}"),
        Record::new(address),
    );
    reg.ttl(TTL);
    let _registered = reg.register().await.unwrap();
    std::future::pending::<()>().await;
}
