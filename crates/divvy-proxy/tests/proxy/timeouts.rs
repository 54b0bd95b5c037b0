//! Timeouts: connect / response (504 vs 502), stalled response bodies, slow client headers.

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use http::{Request, StatusCode};
use http_body_util::Full;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::support::*;

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
    let stats = |p: &divvy_proxy::server::Running| {
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
