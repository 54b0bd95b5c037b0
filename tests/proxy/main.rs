//! The proxy example, run in-process against real loopback backends.
//!
//! The example's modules are compiled into this test crate with `#[path]`, so the tests drive
//! the same code `cargo run --example proxy` runs. Every wait has a deadline
//! ([`support::DEADLINE`]) and every load loop a fixed request count.

#![allow(dead_code)]

#[path = "../../examples/proxy/admin.rs"]
mod admin;
#[path = "../../examples/proxy/balancer.rs"]
mod balancer;
#[path = "../../examples/proxy/check.rs"]
mod check;
#[path = "../../examples/proxy/config.rs"]
mod config;
#[path = "../../examples/proxy/demo.rs"]
mod demo;
#[path = "../../examples/proxy/forward.rs"]
mod forward;
#[path = "../../examples/proxy/health.rs"]
mod health;
#[path = "../../examples/proxy/pool.rs"]
mod pool;
#[path = "../../examples/proxy/route.rs"]
mod route;
#[path = "../../examples/proxy/server.rs"]
mod server;
#[path = "../../examples/proxy/sticky.rs"]
mod sticky;
#[path = "../../examples/proxy/upstream.rs"]
mod upstream;

mod support;

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{Request, StatusCode};
use http_body_util::Full;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use support::*;

fn counts(pairs: &[(&str, usize)]) -> BTreeMap<String, usize> {
    pairs.iter().map(|(k, v)| (k.to_string(), *v)).collect()
}

/// One default host in front of upstream `app` over `bs`, with `top` added at the top level.
fn simple(top: &str, bs: &[Arc<TestBackend>]) -> String {
    format!(
        "listen = [\"127.0.0.1:0\"]\n{top}\n[[host]]\ndefault = true\nupstream = \"app\"\n\
         [upstream.app]\n{}",
        servers("app", bs, &[])
    )
}

// === distribution and routing ===

#[tokio::test]
async fn round_robin_sends_each_backend_one_request_per_cycle() {
    let bs = backends(&["a", "b", "c"]).await;
    let toml = format!(
        "listen = [\"127.0.0.1:0\"]\n[[host]]\ndefault = true\nupstream = \"app\"\n\
         [upstream.app]\nstrategy = \"round_robin\"\n{}",
        servers("app", &bs, &[])
    );
    let p = proxy(&toml).await;
    let c = client();
    // Every window of three consecutive answers names each backend once.
    for _ in 0..5 {
        let cycle = tally(&c, p.listen[0], "x.test", 3).await;
        assert_eq!(cycle, counts(&[("a", 1), ("b", 1), ("c", 1)]));
    }
}

#[tokio::test]
async fn weighted_round_robin_is_the_default_and_follows_nginx_smooth_sequence() {
    let bs = backends(&["a", "b", "c"]).await;
    let toml = format!(
        "listen = [\"127.0.0.1:0\"]\n[[host]]\ndefault = true\nupstream = \"app\"\n[upstream.app]\n{}",
        servers("app", &bs, &["weight = 5", "", ""])
    );
    let p = proxy(&toml).await;
    let c = client();
    // nginx documents weights 5, 1, 1 as the smooth sequence a a b a c a a.
    let mut seq = String::new();
    for _ in 0..14 {
        seq.push_str(&get(&c, p.listen[0], "x", "/").await.body);
    }
    assert_eq!(seq, "aabacaaaabacaa");
}

#[tokio::test]
async fn every_strategy_in_the_config_serves_requests() {
    let bs = backends(&["a", "b", "c"]).await;
    let c = client();
    let ketama = "[upstream.app.hash]\nkey = \"uri\"\n";
    let maglev = "[upstream.app.hash]\nkey = \"uri\"\nmethod = \"maglev\"\nbounded_load = 1.5\n";
    for (strategy, extra) in [
        ("round_robin", ""),
        ("weighted_round_robin", ""),
        ("least_conn", ""),
        ("ip_hash", ""),
        ("random", ""),
        ("p2c", ""),
        ("p2c_ewma", ""),
        ("hash", ketama),
        ("hash", maglev),
    ] {
        let toml = format!(
            "listen = [\"127.0.0.1:0\"]\n[[host]]\ndefault = true\nupstream = \"app\"\n\
             [upstream.app]\nstrategy = \"{strategy}\"\n{extra}{}",
            servers("app", &bs, &[])
        );
        let p = proxy(&toml).await;
        let served = tally(&c, p.listen[0], "x", 6).await;
        assert_eq!(served.values().sum::<usize>(), 6, "{strategy}");
    }
}

#[tokio::test]
async fn hash_by_header_keeps_each_key_on_one_backend() {
    let bs = backends(&["a", "b", "c"]).await;
    let toml = format!(
        "listen = [\"127.0.0.1:0\"]\n[[host]]\ndefault = true\nupstream = \"app\"\n\
         [upstream.app]\nstrategy = \"hash\"\n[upstream.app.hash]\nkey = \"header:x-user\"\n{}",
        servers("app", &bs, &[])
    );
    let p = proxy(&toml).await;
    let c = client();
    let mut used = std::collections::BTreeSet::new();
    for user in 0..30 {
        let mut answers = Vec::new();
        for _ in 0..3 {
            let req = Request::get(format!("http://{}/", p.listen[0]))
                .header("x-user", format!("user-{user}"))
                .body(Full::default())
                .unwrap();
            answers.push(send(&c, req).await.body);
        }
        assert!(
            answers.iter().all(|a| *a == answers[0]),
            "user-{user}: {answers:?}"
        );
        used.insert(answers[0].clone());
    }
    // Thirty keys on a ring of three equal backends land on more than one of them.
    assert!(used.len() > 1, "{used:?}");
}

#[tokio::test]
async fn hosts_route_by_exact_name_then_longest_wildcard_then_default() {
    let bs = backends(&["apex", "sub", "api", "deep", "fallback"]).await;
    let mut toml = String::from(
        r#"listen = ["127.0.0.1:0"]

[[host]]
names = ["example.com"]
upstream = "apex"

[[host]]
names = ["*.example.com"]
upstream = "sub"

[[host]]
names = ["api.example.com"]
upstream = "api"

[[host]]
names = ["*.deep.example.com"]
upstream = "deep"

[[host]]
default = true
upstream = "fallback"
"#,
    );
    for (i, name) in ["apex", "sub", "api", "deep", "fallback"]
        .iter()
        .enumerate()
    {
        toml.push_str(&format!(
            "\n[upstream.{name}]\nstrategy = \"round_robin\"\n"
        ));
        toml.push_str(&servers(name, &bs[i..=i], &[]));
    }
    let p = proxy(&toml).await;
    let c = client();
    let addr = p.listen[0];
    for (host, want) in [
        ("example.com", "apex"),
        ("EXAMPLE.com:8080", "apex"),
        ("www.example.com", "sub"),
        ("a.b.example.com", "sub"),
        ("api.example.com", "api"),
        ("x.deep.example.com", "deep"),
        ("deep.example.com", "sub"),
        ("unknown.org", "fallback"),
        ("127.0.0.1", "fallback"),
    ] {
        assert_eq!(get(&c, addr, host, "/").await.body, want, "host {host}");
    }
}

#[tokio::test]
async fn paths_route_by_longest_prefix_and_strip_it_when_asked() {
    let bs = backends(&["web", "api", "v2"]).await;
    let toml = format!(
        r#"listen = ["127.0.0.1:0"]

[[host]]
names = ["site.test"]
upstream = "web"

[[host.route]]
path = "/api/"
upstream = "api"
strip_prefix = true

[[host.route]]
path = "/api/v2/"
upstream = "v2"

[upstream.web]
strategy = "round_robin"
{}
[upstream.api]
strategy = "round_robin"
{}
[upstream.v2]
strategy = "round_robin"
{}"#,
        servers("web", &bs[0..1], &[]),
        servers("api", &bs[1..2], &[]),
        servers("v2", &bs[2..3], &[])
    );
    let p = proxy(&toml).await;
    let c = client();
    let addr = p.listen[0];
    assert_eq!(get(&c, addr, "site.test", "/").await.body, "web");
    assert_eq!(get(&c, addr, "site.test", "/apis").await.body, "web");
    assert_eq!(
        get(&c, addr, "site.test", "/api/users?id=7").await.body,
        "api"
    );
    assert_eq!(bs[1].seen.lock()[0].uri, "/users?id=7");
    assert_eq!(get(&c, addr, "site.test", "/api/v2/items").await.body, "v2");
    assert_eq!(bs[2].seen.lock()[0].uri, "/api/v2/items");
}

#[tokio::test]
async fn an_absolute_form_uri_never_changes_the_destination() {
    let bs = backends(&["only"]).await;
    let toml = simple("", &bs);
    let p = proxy(&toml).await;
    // A raw request in absolute form naming another server: it must land on the configured
    // backend, with the path only.
    let mut s = TcpStream::connect(p.listen[0]).await.unwrap();
    s.write_all(b"GET http://198.51.100.1:9/steal?x=1 HTTP/1.1\r\nHost: 198.51.100.1:9\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    let mut out = String::new();
    tokio::time::timeout(DEADLINE, s.read_to_string(&mut out))
        .await
        .unwrap()
        .unwrap();
    assert!(out.starts_with("HTTP/1.1 200"), "{out}");
    assert!(out.ends_with("only"), "{out}");
    assert_eq!(bs[0].seen.lock()[0].uri, "/steal?x=1");

    // CONNECT tunnels go nowhere.
    let mut s = TcpStream::connect(p.listen[0]).await.unwrap();
    s.write_all(b"CONNECT 198.51.100.1:443 HTTP/1.1\r\nHost: 198.51.100.1:443\r\n\r\n")
        .await
        .unwrap();
    let mut head = [0u8; 12];
    tokio::time::timeout(DEADLINE, s.read_exact(&mut head))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(&head, b"HTTP/1.1 405");
    assert_eq!(bs[0].hits(), 1);
}

// === headers ===

#[tokio::test]
async fn hop_by_hop_headers_are_stripped_and_forwarded_headers_added() {
    let bs = backends(&["a"]).await;
    let toml = simple("forwarded_header = true\n", &bs);
    let p = proxy(&toml).await;
    let req = Request::get(format!("http://{}/h", p.listen[0]))
        .header("host", "app.test:8080")
        .header("connection", "keep-alive, x-drop-me")
        .header("x-drop-me", "1")
        .header("keep-alive", "timeout=5")
        .header("proxy-connection", "keep-alive")
        .header("te", "trailers")
        .header("trailer", "x-checksum")
        .header("upgrade", "h2c")
        .header("proxy-authorization", "Basic Zm9vOmJhcg==")
        .header("x-forwarded-for", "203.0.113.9")
        .header("forwarded", "for=203.0.113.9")
        .header("x-kept", "yes")
        .body(Full::default())
        .unwrap();
    let a = send(&client(), req).await;
    assert_eq!(a.status, StatusCode::OK);
    let seen = bs[0].seen.lock()[0].headers.clone();
    for gone in [
        "x-drop-me",
        "keep-alive",
        "proxy-connection",
        "te",
        "trailer",
        "upgrade",
        "proxy-authorization",
    ] {
        assert!(!seen.contains_key(gone), "{gone} reached the backend");
    }
    // `Connection` itself is hop-by-hop; hyper's client may add its own keep-alive value only.
    assert!(seen
        .get("connection")
        .is_none_or(|v| !v.to_str().unwrap().contains("x-drop-me")));
    assert_eq!(seen["x-kept"], "yes");
    assert_eq!(seen["host"], "app.test:8080");
    assert_eq!(seen["x-forwarded-for"], "203.0.113.9, 127.0.0.1");
    assert_eq!(seen["x-forwarded-proto"], "http");
    assert_eq!(seen["x-forwarded-host"], "app.test:8080");
    assert_eq!(
        seen["forwarded"],
        "for=203.0.113.9, for=127.0.0.1;proto=http;host=\"app.test\""
    );
    // And on the way back: the backend's hop-by-hop headers stop at the proxy.
    assert_eq!(a.headers["x-backend"], "a");
    assert!(!a.headers.contains_key("x-hop"));
    assert!(!a.headers.contains_key("keep-alive"));
}

#[tokio::test]
async fn upgrade_requests_are_tunnelled_both_ways() {
    let bs = backends(&["ws"]).await;
    let toml = simple("", &bs);
    let p = proxy(&toml).await;
    let mut s = TcpStream::connect(p.listen[0]).await.unwrap();
    s.write_all(
        b"GET /ws HTTP/1.1\r\nHost: ws.test\r\nConnection: Upgrade\r\nUpgrade: echo\r\n\r\n",
    )
    .await
    .unwrap();
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    tokio::time::timeout(DEADLINE, async {
        while !head.ends_with(b"\r\n\r\n") {
            s.read_exact(&mut byte).await.unwrap();
            head.push(byte[0]);
        }
    })
    .await
    .unwrap();
    let head = String::from_utf8(head).unwrap().to_ascii_lowercase();
    assert!(head.starts_with("http/1.1 101"), "{head}");
    assert!(head.contains("upgrade: echo"), "{head}");
    s.write_all(b"ping through the tunnel").await.unwrap();
    let mut echo = [0u8; 23];
    tokio::time::timeout(DEADLINE, s.read_exact(&mut echo))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(&echo, b"ping through the tunnel");
}

#[tokio::test]
async fn request_bodies_stream_through_and_http2_clients_are_served() {
    let bs = backends(&["a"]).await;
    let toml = simple("", &bs);
    let p = proxy(&toml).await;
    let big = Bytes::from(vec![b'x'; 1 << 20]);
    let req = Request::post(format!("http://{}/echo", p.listen[0]))
        .body(Full::new(big.clone()))
        .unwrap();
    let a = send(&client(), req).await;
    assert_eq!(a.body.len(), big.len());

    let h2: TestClient =
        hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
            .http2_only(true)
            .build_http();
    let req = Request::get(format!("http://{}/over-h2", p.listen[0]))
        .body(Full::default())
        .unwrap();
    let a = send(&h2, req).await;
    assert_eq!((a.status, a.body.as_str()), (StatusCode::OK, "a"));
    assert_eq!(bs[0].seen.lock()[1].uri, "/over-h2");
}

// === failure handling ===

/// A bare HTTP/1.1 backend that answers `ok` to every request and counts the connections it
/// accepts; with `close_after_each`, it closes the connection after each answer without saying
/// so (as a backend whose keep-alive timeout is shorter than the proxy's does).
async fn raw_backend(close_after_each: bool) -> (std::net::SocketAddr, Arc<AtomicU64>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let accepted = Arc::new(AtomicU64::new(0));
    let count = accepted.clone();
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            count.fetch_add(1, Ordering::SeqCst);
            tokio::spawn(async move {
                let mut buf = Vec::new();
                let mut chunk = [0u8; 1024];
                loop {
                    let Ok(n) = stream.read(&mut chunk).await else {
                        return;
                    };
                    if n == 0 {
                        return;
                    }
                    buf.extend_from_slice(&chunk[..n]);
                    // Bodiless GETs only: each head ends a request.
                    while let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                        buf.drain(..end + 4);
                        let answer = b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok";
                        if stream.write_all(answer).await.is_err() {
                            return;
                        }
                        if close_after_each {
                            return;
                        }
                    }
                }
            });
        }
    });
    (addr, accepted)
}

fn raw_upstream(addr: std::net::SocketAddr) -> String {
    format!(
        "listen = [\"127.0.0.1:0\"]\n[[host]]\ndefault = true\nupstream = \"app\"\n\
         [upstream.app]\n[[upstream.app.server]]\naddress = \"{addr}\"\n"
    )
}

#[tokio::test]
async fn sequential_requests_reuse_one_keep_alive_connection_to_the_backend() {
    let (addr, accepted) = raw_backend(false).await;
    let p = proxy(&raw_upstream(addr)).await;
    let c = client();
    for _ in 0..10 {
        let a = get(&c, p.listen[0], "x", "/").await;
        assert_eq!((a.status, a.body.as_str()), (StatusCode::OK, "ok"));
    }
    assert_eq!(accepted.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn a_backend_closing_idle_connections_costs_no_failed_request_and_no_retry() {
    let (addr, accepted) = raw_backend(true).await;
    let p = proxy(&raw_upstream(addr)).await;
    let c = client();
    for _ in 0..10 {
        let a = get(&c, p.listen[0], "x", "/").await;
        assert_eq!((a.status, a.body.as_str()), (StatusCode::OK, "ok"));
    }
    // Each request needed a new connection, and none was first tried on a closed one.
    assert_eq!(accepted.load(Ordering::SeqCst), 10);
    assert_eq!(p.proxy.metrics.retries.load(Ordering::SeqCst), 0);
}

fn resilient(bs: &[Arc<TestBackend>], extra: &str) -> String {
    format!(
        r#"listen = ["127.0.0.1:0"]

[[host]]
default = true
upstream = "app"

[upstream.app]
strategy = "round_robin"
retries = 2
max_fails = 1
fail_timeout = "300ms"
connect_timeout = "1s"
response_timeout = "5s"
{extra}
[upstream.app.health_check]
path = "/healthz"
interval = "100ms"
timeout = "500ms"
rise = 1
fall = 1
{}"#,
        servers("app", bs, &[])
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killing_a_backend_under_load_fails_no_request_and_it_rejoins_after_restart() {
    let bs = backends(&["a", "b", "c"]).await;
    let p = proxy(&resilient(&bs, "")).await;
    let addr = p.listen[0];
    let c = client();
    let done = Arc::new(AtomicU64::new(0));
    let failed = Arc::new(AtomicU64::new(0));
    let mut workers = Vec::new();
    for _ in 0..16 {
        let (c, done, failed) = (c.clone(), done.clone(), failed.clone());
        workers.push(tokio::spawn(async move {
            for _ in 0..125 {
                let a = get(&c, addr, "load.test", "/").await;
                if a.status != StatusCode::OK {
                    failed.fetch_add(1, Ordering::SeqCst);
                }
                done.fetch_add(1, Ordering::SeqCst);
            }
        }));
    }
    let d = done.clone();
    eventually("500 requests are done", || {
        let d = d.clone();
        async move { d.load(Ordering::SeqCst) >= 500 }
    })
    .await;
    bs[1].kill();
    let killed_at = bs[1].hits();
    for w in workers {
        tokio::time::timeout(DEADLINE, w).await.unwrap().unwrap();
    }
    assert_eq!(done.load(Ordering::SeqCst), 2000);
    assert_eq!(failed.load(Ordering::SeqCst), 0, "failed responses");
    assert_eq!(bs[1].hits(), killed_at, "a killed backend answered");
    assert!(bs[0].hits() + bs[2].hits() >= 2000 - killed_at);

    eventually("the killed backend is marked down", || async {
        !available(&p, "app", bs[1].addr)
    })
    .await;
    bs[1].restart().await;
    eventually("the restarted backend is marked up", || async {
        available(&p, "app", bs[1].addr)
    })
    .await;
    let before = bs[1].hits();
    tally(&c, addr, "load.test", 6).await;
    assert!(
        bs[1].hits() > before,
        "the restarted backend takes traffic again"
    );
}

#[tokio::test]
async fn all_backends_down_answers_503_quickly_then_recovers() {
    let bs = backends(&["a", "b"]).await;
    let p = proxy(&resilient(&bs, "")).await;
    let c = client();
    let addr = p.listen[0];
    assert_eq!(get(&c, addr, "x", "/").await.status, StatusCode::OK);
    for b in &bs {
        b.kill();
    }
    // The first requests may still try the dead backends (502); once both are marked down,
    // the proxy answers 503 without dialling anything.
    eventually("the proxy answers 503", || async {
        get(&c, addr, "x", "/").await.status == StatusCode::SERVICE_UNAVAILABLE
    })
    .await;
    let t = Instant::now();
    let a = get(&c, addr, "x", "/").await;
    assert_eq!(a.status, StatusCode::SERVICE_UNAVAILABLE);
    assert!(a.body.starts_with("503 "), "{}", a.body);
    assert!(
        t.elapsed() < Duration::from_secs(1),
        "503 took {:?}",
        t.elapsed()
    );
    for b in &bs {
        b.restart().await;
    }
    eventually("the proxy serves again", || async {
        get(&c, addr, "x", "/").await.status == StatusCode::OK
    })
    .await;
}

#[tokio::test]
async fn a_slow_backend_gets_504_and_a_dead_one_502() {
    let slow = backends(&["slow"]).await;
    slow[0].delay_ms.store(3_000, Ordering::SeqCst);
    let dead = backends(&["dead"]).await;
    dead[0].kill();
    let toml = format!(
        r#"listen = ["127.0.0.1:0"]
[[host]]
names = ["slow.test"]
upstream = "slow"
[[host]]
names = ["dead.test"]
upstream = "dead"
[upstream.slow]
strategy = "round_robin"
response_timeout = "200ms"
retries = 0
{}
[upstream.dead]
strategy = "round_robin"
retries = 0
{}"#,
        servers("slow", &slow, &[]),
        servers("dead", &dead, &[])
    );
    let p = proxy(&toml).await;
    let c = client();
    let t = Instant::now();
    let a = get(&c, p.listen[0], "slow.test", "/").await;
    assert_eq!(a.status, StatusCode::GATEWAY_TIMEOUT);
    assert!(t.elapsed() < Duration::from_secs(2));
    let a = get(&c, p.listen[0], "dead.test", "/").await;
    assert_eq!(a.status, StatusCode::BAD_GATEWAY);
    assert!(a.body.starts_with("502 "));
}

#[tokio::test]
async fn a_backend_counts_in_flight_until_its_body_ends_and_a_stalled_body_is_cut() {
    // A raw backend that sends a head and part of the body, then stalls with the socket open.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let backend = listener.local_addr().unwrap();
    let stall = tokio::spawn(async move {
        let (mut s, _) = listener.accept().await.unwrap();
        let mut buf = [0u8; 4096];
        let _ = s.read(&mut buf).await.unwrap();
        s.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\npartial")
            .await
            .unwrap();
        // Hold the connection until the test ends.
        let _ = s.read(&mut buf).await;
    });
    let toml = format!(
        "listen = [\"127.0.0.1:0\"]\n[[host]]\ndefault = true\nupstream = \"app\"\n\
         [upstream.app]\nread_timeout = \"300ms\"\nretries = 0\n\
         [[upstream.app.server]]\naddress = \"{backend}\"\n"
    );
    let p = proxy(&toml).await;
    let stats = |p: &server::Running| {
        let t = p.proxy.table.load();
        let s = t.upstream("app").unwrap().lb.stats();
        (s[0].in_flight, s[0].successes, s[0].failures)
    };
    let req = Request::get(format!("http://{}/", p.listen[0]))
        .body(Full::default())
        .unwrap();
    let resp = tokio::time::timeout(DEADLINE, client().request(req))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    // The head arrived and was reported a success; the body has not ended, so it is in flight.
    assert_eq!(stats(&p), (1, 1, 0));
    let body = tokio::time::timeout(DEADLINE, http_body_util::BodyExt::collect(resp.into_body()))
        .await
        .expect("the proxy cuts the stalled body before the deadline");
    assert!(body.is_err(), "a cut body is an error, not a short success");
    eventually("the request is no longer in flight", || async {
        stats(&p).0 == 0
    })
    .await;
    assert_eq!(stats(&p), (0, 1, 1));
    stall.abort();
}

#[tokio::test]
async fn a_client_that_never_finishes_its_headers_is_cut_off() {
    let bs = backends(&["a"]).await;
    let toml = simple(
        "[client]\nheader_timeout = \"300ms\"\nmax_header_size = 8192\n",
        &bs,
    );
    let p = proxy(&toml).await;
    let mut s = TcpStream::connect(p.listen[0]).await.unwrap();
    s.write_all(b"GET / HTTP/1.1\r\nHost: slow").await.unwrap();
    let mut buf = Vec::new();
    let t = Instant::now();
    // The proxy closes the connection (EOF, possibly after a 408) well before the deadline.
    tokio::time::timeout(DEADLINE, s.read_to_end(&mut buf))
        .await
        .expect("the proxy closes a stalled connection")
        .ok();
    assert!(t.elapsed() < Duration::from_secs(3));
    assert_eq!(bs[0].hits(), 0);

    // A head larger than max_header_size is refused.
    let mut s = TcpStream::connect(p.listen[0]).await.unwrap();
    let huge = "a".repeat(16 * 1024);
    let req = format!("GET / HTTP/1.1\r\nHost: x\r\nX-Huge: {huge}\r\n\r\n");
    let _ = s.write_all(req.as_bytes()).await;
    let mut out = Vec::new();
    let _ = tokio::time::timeout(DEADLINE, s.read_to_end(&mut out))
        .await
        .expect("the proxy answers or closes");
    let out = String::from_utf8_lossy(&out);
    assert!(out.is_empty() || out.starts_with("HTTP/1.1 431"), "{out}");
    assert_eq!(bs[0].hits(), 0);
}

#[tokio::test]
async fn a_backup_takes_over_when_the_primary_dies_and_hands_back_when_it_returns() {
    let bs = backends(&["primary", "backup"]).await;
    let toml = resilient(&bs, "").replace(
        &format!("address = \"{}\"\n", bs[1].addr),
        &format!("address = \"{}\"\nbackup = true\n", bs[1].addr),
    );
    let p = proxy(&toml).await;
    let c = client();
    let addr = p.listen[0];
    assert_eq!(tally(&c, addr, "x", 6).await, counts(&[("primary", 6)]));
    bs[0].kill();
    // Requests keep succeeding: the one that finds the primary dead is retried on the backup.
    assert_eq!(tally(&c, addr, "x", 6).await, counts(&[("backup", 6)]));
    bs[0].restart().await;
    eventually("the primary is marked up again", || async {
        available(&p, "app", bs[0].addr)
    })
    .await;
    assert_eq!(tally(&c, addr, "x", 6).await, counts(&[("primary", 6)]));
}

#[tokio::test]
async fn down_servers_get_nothing_and_max_conns_caps_requests_in_flight() {
    let bs = backends(&["capped", "other", "off"]).await;
    bs[0].delay_ms.store(300, Ordering::SeqCst);
    let toml = format!(
        "listen = [\"127.0.0.1:0\"]\n[[host]]\ndefault = true\nupstream = \"app\"\n[upstream.app]\n{}",
        servers("app", &bs, &["weight = 10\nmax_conns = 1", "", "down = true"])
    );
    let p = proxy(&toml).await;
    let c = client();
    let addr = p.listen[0];
    // Three at once: the heavy server takes one (its limit), the rest go to the other.
    let answers = futures_join((0..3).map(|_| {
        let c = c.clone();
        tokio::spawn(async move { get(&c, addr, "x", "/").await })
    }))
    .await;
    assert!(answers.iter().all(|a| a.status == StatusCode::OK));
    assert_eq!((bs[0].hits(), bs[1].hits(), bs[2].hits()), (1, 2, 0));
}

#[tokio::test]
async fn the_proxy_zone_is_preferred_until_its_servers_fail() {
    let bs = backends(&["near", "far"]).await;
    let toml = resilient(&bs, "zone = \"z1\"\n")
        .replace(
            &format!("address = \"{}\"\n", bs[0].addr),
            &format!("address = \"{}\"\nzone = \"z1\"\n", bs[0].addr),
        )
        .replace(
            &format!("address = \"{}\"\n", bs[1].addr),
            &format!("address = \"{}\"\nzone = \"z2\"\n", bs[1].addr),
        );
    let p = proxy(&toml).await;
    let c = client();
    assert_eq!(tally(&c, p.listen[0], "x", 4).await, counts(&[("near", 4)]));
    bs[0].kill();
    assert_eq!(tally(&c, p.listen[0], "x", 4).await, counts(&[("far", 4)]));
}

async fn futures_join<T: Send + 'static>(
    tasks: impl Iterator<Item = tokio::task::JoinHandle<T>>,
) -> Vec<T> {
    let mut out = Vec::new();
    for t in tasks.collect::<Vec<_>>() {
        out.push(tokio::time::timeout(DEADLINE, t).await.unwrap().unwrap());
    }
    out
}

// === sticky sessions ===

fn cookie_of(a: &Answer) -> Option<String> {
    let v = a.headers.get("set-cookie")?.to_str().ok()?;
    Some(v.split(';').next()?.to_owned())
}

#[tokio::test]
async fn a_sticky_cookie_keeps_a_client_on_one_backend_and_re_pins_after_failure() {
    let bs = backends(&["a", "b", "c"]).await;
    let p = proxy(&resilient(&bs, "[upstream.app.sticky]\ncookie = \"lb\"\n")).await;
    let c = client();
    let addr = p.listen[0];
    let first = get(&c, addr, "x", "/").await;
    let cookie = cookie_of(&first).expect("a sticky cookie");
    let value = cookie.strip_prefix("lb=").unwrap();
    assert_eq!(value.len(), 16);
    assert!(!value.contains("127.0.0.1"));
    let pinned = first.body.clone();
    let with_cookie = |cookie: String| {
        let c = c.clone();
        async move {
            let req = Request::get(format!("http://{addr}/"))
                .header("cookie", format!("theme=dark; {cookie}"))
                .body(Full::default())
                .unwrap();
            send(&c, req).await
        }
    };
    for _ in 0..9 {
        let a = with_cookie(cookie.clone()).await;
        assert_eq!(a.body, pinned);
        assert!(cookie_of(&a).is_none(), "a valid pin is not re-issued");
    }
    let victim = bs.iter().find(|b| b.name == pinned).unwrap();
    victim.kill();
    let moved = with_cookie(cookie.clone()).await;
    assert_eq!(moved.status, StatusCode::OK);
    assert_ne!(moved.body, pinned);
    let new_cookie = cookie_of(&moved).expect("the cookie is re-issued");
    assert_ne!(new_cookie, cookie);
    for _ in 0..5 {
        assert_eq!(with_cookie(new_cookie.clone()).await.body, moved.body);
    }
}

// === reload and shutdown ===

fn two_upstreams(a: &[Arc<TestBackend>], b: &[Arc<TestBackend>], target: &str) -> String {
    format!(
        "listen = [\"127.0.0.1:0\"]\n[[host]]\ndefault = true\nupstream = \"{target}\"\n\
         [upstream.a]\nstrategy = \"round_robin\"\n{}\n[upstream.b]\nstrategy = \"round_robin\"\n{}",
        servers("a", a, &[]),
        servers("b", b, &[])
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_valid_reload_changes_routing_without_failing_requests_in_flight() {
    let a = backends(&["a"]).await;
    let b = backends(&["b"]).await;
    let p = proxy(&two_upstreams(&a, &b, "a")).await;
    let addr = p.listen[0];
    let c = client();
    assert_eq!(get(&c, addr, "x", "/").await.body, "a");

    a[0].delay_ms.store(400, Ordering::SeqCst);
    let slow = {
        let c = c.clone();
        tokio::spawn(async move { get(&c, addr, "x", "/slow").await })
    };
    eventually("the slow request reached its backend", || async {
        a[0].hits() == 2
    })
    .await;
    let lb_before = Arc::as_ptr(&p.proxy.table.load().upstream("a").unwrap().lb);
    let config = check::parse(&two_upstreams(&a, &b, "b"), "reload.toml").unwrap();
    p.reload(config).unwrap();
    // The unchanged upstream kept its balancer, and so its live state.
    let lb_after = Arc::as_ptr(&p.proxy.table.load().upstream("a").unwrap().lb);
    assert!(std::ptr::addr_eq(lb_before, lb_after));
    assert_eq!(get(&c, addr, "x", "/").await.body, "b");
    let slow = tokio::time::timeout(DEADLINE, slow).await.unwrap().unwrap();
    assert_eq!((slow.status, slow.body.as_str()), (StatusCode::OK, "a"));

    // Reloads back and forth under load: every request is answered 200 by one side or the other.
    a[0].delay_ms.store(0, Ordering::SeqCst);
    let done = Arc::new(AtomicU64::new(0));
    let workers: Vec<_> = (0..4)
        .map(|_| {
            let (c, done) = (c.clone(), done.clone());
            tokio::spawn(async move {
                let mut bad = 0;
                for _ in 0..100 {
                    if get(&c, addr, "x", "/").await.status != StatusCode::OK {
                        bad += 1;
                    }
                    done.fetch_add(1, Ordering::SeqCst);
                }
                bad
            })
        })
        .collect();
    for i in 0..10 {
        // Spread the reloads over the run.
        let d = done.clone();
        eventually("the load makes progress", || {
            let d = d.clone();
            async move { d.load(Ordering::SeqCst) >= i * 35 }
        })
        .await;
        let target = if i % 2 == 0 { "a" } else { "b" };
        let config = check::parse(&two_upstreams(&a, &b, target), "reload.toml").unwrap();
        p.reload(config).unwrap();
    }
    let bad = futures_join(workers.into_iter()).await;
    assert_eq!(bad.iter().sum::<u32>(), 0);
}

#[tokio::test]
async fn an_invalid_reload_is_refused_and_the_old_config_keeps_serving() {
    let a = backends(&["a"]).await;
    let b = backends(&["b"]).await;
    let p = proxy(&two_upstreams(&a, &b, "a")).await;
    let dir = std::env::temp_dir().join(format!("divvy-proxy-reload-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("broken.toml");
    std::fs::write(&path, two_upstreams(&a, &b, "nowhere")).unwrap();
    let err = p.reload_file(&path).unwrap_err();
    assert!(err.contains("upstream `nowhere` is not defined"), "{err}");
    assert_eq!(get(&client(), p.listen[0], "x", "/").await.body, "a");
    std::fs::write(&path, two_upstreams(&a, &b, "b")).unwrap();
    p.reload_file(&path).unwrap();
    assert_eq!(get(&client(), p.listen[0], "x", "/").await.body, "b");
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_stops_accepting_and_drains_requests_in_flight() {
    let a = backends(&["a"]).await;
    let b = backends(&["b"]).await;
    let p = proxy(&two_upstreams(&a, &b, "a")).await;
    let addr = p.listen[0];
    a[0].delay_ms.store(300, Ordering::SeqCst);
    let c = client();
    let slow = {
        let c = c.clone();
        tokio::spawn(async move { get(&c, addr, "x", "/").await })
    };
    eventually("the request is in flight", || async { a[0].hits() == 1 }).await;
    tokio::time::timeout(DEADLINE, p.shutdown()).await.unwrap();
    let slow = tokio::time::timeout(DEADLINE, slow).await.unwrap().unwrap();
    assert_eq!((slow.status, slow.body.as_str()), (StatusCode::OK, "a"));
    assert!(TcpStream::connect(addr).await.is_err(), "still accepting");
}

// === admin ===

#[tokio::test]
async fn the_admin_listener_reports_status_and_metrics() {
    let bs = backends(&["a", "b"]).await;
    let toml = format!(
        "listen = [\"127.0.0.1:0\"]\n[admin]\nlisten = \"127.0.0.1:0\"\n[[host]]\ndefault = true\n\
         upstream = \"app\"\n[upstream.app]\nstrategy = \"round_robin\"\n{}",
        servers("app", &bs, &[])
    );
    let p = proxy(&toml).await;
    let c = client();
    tally(&c, p.listen[0], "x", 4).await;
    let admin = p.admin.expect("admin enabled");
    let status = get(&c, admin, "admin", "/status").await;
    let v: serde_json::Value = serde_json::from_str(&status.body).unwrap();
    assert_eq!(v["responses"]["2xx"], 4);
    let backends = v["upstreams"][0]["backends"].as_array().unwrap();
    assert_eq!(backends.len(), 2);
    for b in backends {
        assert_eq!(b["successes"], 2);
        assert_eq!(b["available"], true);
    }
    let m = get(&c, admin, "admin", "/metrics").await.body;
    assert!(
        m.contains("divvy_proxy_responses_total{code=\"2xx\"} 4"),
        "{m}"
    );
    let line = format!(
        "divvy_backend_successes_total{{upstream=\"app\",backend=\"{}\"}} 2",
        bs[0].addr
    );
    assert!(m.contains(&line), "{m}");
}

#[tokio::test]
async fn the_admin_listener_is_off_unless_configured() {
    let bs = backends(&["a"]).await;
    let toml = simple("", &bs);
    assert_eq!(proxy(&toml).await.admin, None);
}

// === --check ===

fn diagnostics(src: &str) -> Vec<String> {
    match check::parse(src, "test.toml") {
        Ok(_) => Vec::new(),
        Err(d) => d.iter().map(ToString::to_string).collect(),
    }
}

const BROKEN: &str = r#"listen = ["127.0.0.1:8080", "nope"]
colour = "blue"

[[host]]
names = ["example.com"]
upstream = "missing"

[upstream.app]
strategy = "fastest"
retries = 2

[[upstream.app.server]]
address = "127.0.0.1:8081"
weight = 0

[[upstream.app.server]]
address = "127.0.0.1:8081"

[[upstream.app.server]]
address = "localhost:80"
bogus = true
"#;

#[test]
fn check_reports_every_error_with_file_line_column_and_field() {
    let strategies =
        "round_robin, weighted_round_robin, least_conn, ip_hash, hash, random, p2c, p2c_ewma";
    assert_eq!(
        diagnostics(BROKEN),
        vec![
            "test.toml:1:29: listen[1]: invalid address `nope` (expected IP:PORT, e.g. 127.0.0.1:8080; the proxy does no DNS)".to_owned(),
            "test.toml:2:1: colour: unknown key (expected one of: listen, admin, client, shutdown_timeout, forwarded_header, host, upstream)".to_owned(),
            "test.toml:6:12: host[0].upstream: upstream `missing` is not defined".to_owned(),
            format!("test.toml:9:12: upstream.app.strategy: unknown strategy `fastest` (expected one of: {strategies})"),
            "test.toml:14:10: upstream.app.server[0].weight: must be between 1 and 10000, got 0".to_owned(),
            "test.toml:17:11: upstream.app.server[1].address: duplicate server 127.0.0.1:8081 (first at line 13)".to_owned(),
            "test.toml:20:11: upstream.app.server[2].address: invalid address `localhost:80` (expected IP:PORT, e.g. 127.0.0.1:8080; the proxy does no DNS)".to_owned(),
            "test.toml:21:1: upstream.app.server[2].bogus: unknown key (expected one of: address, weight, backup, zone, down, max_conns)".to_owned(),
        ]
    );
}

#[test]
fn check_reports_host_hash_and_duration_mistakes() {
    let src = r#"listen = "127.0.0.1:8080"
shutdown_timeout = "soon"

[[host]]
names = ["a.test", "*.b.test"]
default = true
upstream = "app"

[[host]]
names = ["A.test", "x.*.test"]
default = true
upstream = "app"

[upstream.app]
strategy = "hash"
fail_timeout = 0

[upstream.app.hash]
method = "rendezvous"
bounded_load = 0.5

[[upstream.app.server]]
address = "127.0.0.1:8081"
"#;
    assert_eq!(
        diagnostics(src),
        vec![
            "test.toml:2:20: shutdown_timeout: invalid duration (expected a number with a unit: ms, s, m or h, e.g. \"500ms\")",
            "test.toml:10:10: host[1].names[0]: duplicate host name `a.test` (first at line 5)",
            "test.toml:10:20: host[1].names[1]: invalid host name `x.*.test` (expected a name such as example.com or *.example.com)",
            "test.toml:11:11: host[1].default: a default host is already defined at line 6",
            "test.toml:16:16: upstream.app.fail_timeout: must be greater than zero",
            "test.toml:18:1: upstream.app.hash: missing `key`",
            "test.toml:19:10: upstream.app.hash.method: unknown hash method `rendezvous` (expected ketama or maglev)",
            "test.toml:20:16: upstream.app.hash.bounded_load: must be greater than 1.0 (e.g. 1.25), got 0.5",
        ]
    );
}

#[test]
fn check_reports_a_syntax_error_and_missing_sections() {
    assert_eq!(
        diagnostics("listen = [\"127.0.0.1:8080\"\n"),
        vec!["test.toml:1:27: unclosed array, expected `]`"]
    );
    assert_eq!(
        diagnostics("# nothing\n"),
        vec![
            "test.toml:1:1: listen: missing: at least one address to listen on is required, e.g. listen = [\"127.0.0.1:8080\"]",
            "test.toml:1:1: host: missing: at least one [[host]] is required to route requests",
        ]
    );
}

#[test]
fn the_sample_config_passes_check() {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/examples/proxy.toml");
    if let Err(d) = check::load(std::path::Path::new(path)) {
        let lines: Vec<String> = d.iter().map(ToString::to_string).collect();
        panic!("{}", lines.join("\n"));
    }
}

/// The example binary, which `cargo test` builds next to the test binaries.
fn example_bin() -> std::path::PathBuf {
    let exe = std::env::current_exe().unwrap();
    let bin = exe
        .parent()
        .and_then(|deps| deps.parent())
        .map(|dir| dir.join("examples").join("proxy"))
        .unwrap();
    assert!(bin.exists(), "{} is built by cargo test", bin.display());
    bin
}

#[test]
fn the_check_flag_exits_non_zero_with_every_error_and_zero_with_ok() {
    let bin = example_bin();
    let dir = std::env::temp_dir().join(format!("divvy-proxy-check-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let broken = dir.join("broken.toml");
    std::fs::write(&broken, BROKEN).unwrap();
    let out = std::process::Command::new(&bin)
        .args(["--check", "--config"])
        .arg(&broken)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8(out.stderr).unwrap();
    let file = broken.display().to_string();
    assert_eq!(stderr.lines().filter(|l| l.starts_with(&file)).count(), 9);
    assert!(stderr.contains(&format!("{file}:14:10: upstream.app.server[0].weight")));
    assert!(stderr.ends_with(&format!("{file}: 8 errors\n")));

    let sample = concat!(env!("CARGO_MANIFEST_DIR"), "/examples/proxy.toml");
    let out = std::process::Command::new(&bin)
        .args(["--check", "--config", sample])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(String::from_utf8(out.stdout).unwrap(), "ok\n");
    let _ = std::fs::remove_dir_all(&dir);
}

// === the binary: demo and signals ===

/// Reads lines from `from` until one contains `needle`, within [`DEADLINE`].
async fn line_with<R: tokio::io::AsyncBufRead + Unpin>(
    from: &mut tokio::io::Lines<R>,
    needle: &str,
) -> String {
    tokio::time::timeout(DEADLINE, async {
        loop {
            match from.next_line().await.unwrap() {
                Some(line) if line.contains(needle) => return line,
                Some(_) => continue,
                None => panic!("output ended before a line with `{needle}`"),
            }
        }
    })
    .await
    .unwrap_or_else(|_| panic!("no line with `{needle}` before the deadline"))
}

fn listen_addr(line: &str) -> std::net::SocketAddr {
    line.rsplit("http://")
        .next()
        .unwrap()
        .trim()
        .parse()
        .unwrap()
}

fn signal(child: &tokio::process::Child, name: &str) {
    let pid = child.id().expect("the child is running").to_string();
    let ok = std::process::Command::new("kill")
        .args([&format!("-{name}"), &pid])
        .status()
        .unwrap()
        .success();
    assert!(ok, "kill -{name} {pid}");
}

#[tokio::test]
async fn the_demo_runs_three_backends_behind_the_proxy() {
    use tokio::io::AsyncBufReadExt;
    let mut child = tokio::process::Command::new(example_bin())
        .env("RUST_LOG", "info")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut out = tokio::io::BufReader::new(child.stdout.take().unwrap()).lines();
    let mut err = tokio::io::BufReader::new(child.stderr.take().unwrap()).lines();
    let addr = listen_addr(&line_with(&mut out, "proxy listening on http://").await);
    let c = client();
    let mut names = std::collections::BTreeSet::new();
    for _ in 0..4 {
        let a = get(&c, addr, "demo", "/").await;
        assert!(a.body.starts_with("hello from backend-"), "{}", a.body);
        names.insert(a.body.split_whitespace().nth(2).unwrap().to_owned());
    }
    assert_eq!(names.len(), 3, "{names:?}");
    // The access log names the backend that served each request.
    line_with(&mut err, "backend=").await;
    signal(&child, "INT");
    let status = tokio::time::timeout(DEADLINE, child.wait())
        .await
        .unwrap()
        .unwrap();
    assert!(status.success());
}

#[tokio::test]
async fn sighup_reloads_the_config_file_and_sigterm_exits_cleanly() {
    use tokio::io::AsyncBufReadExt;
    let a = backends(&["a"]).await;
    let b = backends(&["b"]).await;
    let dir = std::env::temp_dir().join(format!("divvy-proxy-hup-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("proxy.toml");
    std::fs::write(&path, two_upstreams(&a, &b, "a")).unwrap();
    let mut child = tokio::process::Command::new(example_bin())
        .arg("--config")
        .arg(&path)
        .env("RUST_LOG", "info")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut out = tokio::io::BufReader::new(child.stdout.take().unwrap()).lines();
    let mut err = tokio::io::BufReader::new(child.stderr.take().unwrap()).lines();
    let addr = listen_addr(&line_with(&mut out, "proxy listening on http://").await);
    let c = client();
    assert_eq!(get(&c, addr, "x", "/").await.body, "a");

    std::fs::write(&path, two_upstreams(&a, &b, "b")).unwrap();
    signal(&child, "HUP");
    line_with(&mut err, "reloaded").await;
    assert_eq!(get(&c, addr, "x", "/").await.body, "b");

    std::fs::write(&path, "listen = [").unwrap();
    signal(&child, "HUP");
    line_with(&mut err, "reload refused").await;
    assert_eq!(get(&c, addr, "x", "/").await.body, "b");

    signal(&child, "TERM");
    let status = tokio::time::timeout(DEADLINE, child.wait())
        .await
        .unwrap()
        .unwrap();
    assert!(status.success());
    let _ = std::fs::remove_dir_all(&dir);
}
