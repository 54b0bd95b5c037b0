//! Hostile clients, with raw sockets: only what is the backend's fault counts against it, and
//! every request is accounted once (finding 1 and 4 of the edge-safety probe).
//!
//! nginx 1.22 for each case: an aborted upload is logged 499, an invalid chunked body gets 400,
//! a body that stalls past `client_body_timeout` gets 408, a 500 is relayed; none of them counts
//! towards `max_fails` or passes the request to the next server. A client gone before the
//! answer is logged 499.

use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use http::StatusCode;
use parking_lot::Mutex;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use divvy_proxy::server::Running;

use crate::support::*;

/// Three backends behind nginx's defaults (`max_fails = 1`, `fail_timeout = 10s`, retries on
/// `error` and `timeout`): one request blamed on a backend would eject it for the whole test.
async fn three() -> (Vec<Arc<TestBackend>>, Running) {
    let bs = backends(&["a", "b", "c"]).await;
    let toml = format!(
        "listen = [\"127.0.0.1:0\"]\n[client]\nbody_timeout = \"300ms\"\n\
         [[host]]\ndefault = true\nupstream = \"app\"\n\
         [upstream.app]\nstrategy = \"round_robin\"\n{}",
        servers("app", &bs, &[])
    );
    let p = proxy(&toml).await;
    (bs, p)
}

/// Sends `bytes` on a fresh connection, then reads what the proxy answers until it closes or
/// `DEADLINE`, without closing the write side (a client that stops sending, not one that
/// leaves).
async fn exchange(proxy: SocketAddr, bytes: &[u8]) -> String {
    let mut s = TcpStream::connect(proxy).await.unwrap();
    s.write_all(bytes).await.unwrap();
    let mut out = Vec::new();
    let mut buf = [0u8; 4096];
    let _ = tokio::time::timeout(DEADLINE, async {
        loop {
            match s.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    out.extend_from_slice(&buf[..n]);
                    // One answer is enough; the proxy may keep the connection open.
                    if String::from_utf8_lossy(&out).contains("\r\n\r\n") {
                        break;
                    }
                }
            }
        }
    })
    .await;
    String::from_utf8_lossy(&out).into_owned()
}

/// Starts an upload of 1,000 bytes, sends 10 and leaves.
async fn aborted_upload(proxy: SocketAddr) {
    let mut s = TcpStream::connect(proxy).await.unwrap();
    s.write_all(b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 1000\r\n\r\n0123456789")
        .await
        .unwrap();
    drop(s);
}

const BAD_CHUNKED: &[u8] =
    b"POST /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\nzz\r\n";

/// Responses counted in the 4xx class.
fn client_errors(p: &Running) -> u64 {
    p.proxy.metrics.responses[3].load(Ordering::SeqCst)
}

/// No backend has a failure recorded, and every one is available.
fn nobody_blamed(p: &Running, bs: &[Arc<TestBackend>]) {
    let table = p.proxy.table.load();
    let stats = table.upstream("app").unwrap().lb.stats();
    for s in &stats {
        assert_eq!(s.failures, 0, "{} was blamed", s.id);
    }
    for b in bs {
        assert!(available(p, "app", b.addr), "{} was ejected", b.name);
    }
    assert_eq!(p.proxy.metrics.retries.load(Ordering::SeqCst), 0);
}

#[tokio::test]
async fn an_aborted_upload_is_counted_499_and_blames_no_backend() {
    let (bs, p) = three().await;
    for _ in 0..10 {
        aborted_upload(p.listen[0]).await;
    }
    eventually("every aborted upload is accounted", || async {
        client_errors(&p) == 10 && p.proxy.metrics.in_flight.load(Ordering::SeqCst) == 0
    })
    .await;
    nobody_blamed(&p, &bs);
}

#[tokio::test]
async fn an_invalid_chunked_body_gets_400_not_502_and_blames_no_backend() {
    let (bs, p) = three().await;
    let answer = exchange(p.listen[0], BAD_CHUNKED).await;
    assert!(answer.starts_with("HTTP/1.1 400"), "{answer}");
    nobody_blamed(&p, &bs);
}

#[tokio::test]
async fn a_body_too_slow_to_arrive_gets_408_and_blames_no_backend() {
    let (bs, p) = three().await;
    let answer = exchange(
        p.listen[0],
        b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\nonly this",
    )
    .await;
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    nobody_blamed(&p, &bs);
}

#[tokio::test]
async fn a_url_that_returns_500_is_relayed_and_blames_no_backend() {
    let (bs, p) = three().await;
    let c = client();
    for _ in 0..10 {
        let a = get(&c, p.listen[0], "x", "/status/500").await;
        assert_eq!(a.status, StatusCode::INTERNAL_SERVER_ERROR);
    }
    nobody_blamed(&p, &bs);
}

#[tokio::test]
async fn after_aborted_uploads_bad_chunked_bodies_and_500s_every_backend_is_still_healthy() {
    let (bs, p) = three().await;
    let c = client();
    for _ in 0..10 {
        aborted_upload(p.listen[0]).await;
        let answer = exchange(p.listen[0], BAD_CHUNKED).await;
        assert!(answer.starts_with("HTTP/1.1 400"), "{answer}");
        let a = get(&c, p.listen[0], "x", "/status/500").await;
        assert_eq!(a.status, StatusCode::INTERNAL_SERVER_ERROR);
    }
    eventually("every request is accounted", || async {
        client_errors(&p) == 20 && p.proxy.metrics.in_flight.load(Ordering::SeqCst) == 0
    })
    .await;
    nobody_blamed(&p, &bs);
    let a = get(&c, p.listen[0], "x", "/").await;
    assert_eq!(a.status, StatusCode::OK);
}

#[tokio::test]
async fn listed_statuses_are_passed_on_and_count_against_the_backend() {
    let bs = backends(&["a", "b", "c"]).await;
    let toml = format!(
        "listen = [\"127.0.0.1:0\"]\n[[host]]\ndefault = true\nupstream = \"app\"\n\
         [upstream.app]\nstrategy = \"round_robin\"\nretries = 2\n\
         next_upstream = [\"error\", \"timeout\", \"http_500\"]\n{}",
        servers("app", &bs, &[])
    );
    let p = proxy(&toml).await;
    let a = get(&client(), p.listen[0], "x", "/status/500").await;
    // Every backend answered 500; the last answer is relayed, as nginx does.
    assert_eq!(a.status, StatusCode::INTERNAL_SERVER_ERROR);
    assert_eq!(p.proxy.metrics.retries.load(Ordering::SeqCst), 2);
    for b in &bs {
        assert_eq!(b.hits(), 1);
        assert!(!available(&p, "app", b.addr), "{} is still in", b.name);
    }
}

/// The access log, captured for the test's thread (the runtime of `#[tokio::test]` runs the
/// proxy on it).
#[derive(Clone, Default)]
struct Log(Arc<Mutex<Vec<u8>>>);

impl std::io::Write for Log {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Log {
    /// Starts capturing `access` lines on this thread until the guard drops.
    fn capture() -> (Log, tracing::subscriber::DefaultGuard) {
        let log = Log::default();
        let writer = log.clone();
        let subscriber = tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::new("access=info"))
            .with_ansi(false)
            .with_writer(move || writer.clone())
            .finish();
        let guard = tracing::subscriber::set_default(subscriber);
        (log, guard)
    }

    /// Lines with `needle`.
    fn lines_with(&self, needle: &str) -> usize {
        let text = String::from_utf8_lossy(&self.0.lock()).into_owned();
        text.lines().filter(|l| l.contains(needle)).count()
    }
}

#[tokio::test]
async fn a_thousand_client_aborts_bring_the_in_flight_gauge_back_to_zero_and_log_499_each() {
    let (log, _guard) = Log::capture();
    let (bs, p) = three().await;
    // The backends never answer within the test: every client leaves first.
    for b in &bs {
        b.delay_ms.store(60_000, Ordering::SeqCst);
    }
    let hits = || bs.iter().map(|b| b.hits()).sum::<u64>();
    for batch in 1..=20u64 {
        let mut open = Vec::new();
        for _ in 0..50 {
            let mut s = TcpStream::connect(p.listen[0]).await.unwrap();
            s.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
                .await
                .unwrap();
            open.push(s);
        }
        // Every request reached a backend (so it is in flight) before its client leaves.
        eventually("the batch reaches the backends", || async {
            hits() == batch * 50
        })
        .await;
        drop(open);
    }
    eventually("the in-flight gauge is back to 0", || async {
        p.proxy.metrics.in_flight.load(Ordering::SeqCst) == 0
    })
    .await;
    eventually("every abort is logged", || async {
        log.lines_with("status=499") == 1_000
    })
    .await;
    assert_eq!(client_errors(&p), 1_000);
    nobody_blamed(&p, &bs);
}

#[tokio::test]
async fn heads_the_parser_refuses_are_counted_and_logged() {
    let (log, _guard) = Log::capture();
    let bs = backends(&["a"]).await;
    let p = proxy(&simple("[client]\nmax_header_size = 8192\n", &bs)).await;
    let answer = exchange(p.listen[0], b"NOT HTTP AT ALL\r\n\r\n").await;
    assert!(answer.starts_with("HTTP/1.1 400"), "{answer}");
    let huge = format!(
        "GET / HTTP/1.1\r\nHost: x\r\nX-Huge: {}\r\n\r\n",
        "a".repeat(16 * 1024)
    );
    let answer = exchange(p.listen[0], huge.as_bytes()).await;
    assert!(answer.starts_with("HTTP/1.1 431"), "{answer}");
    eventually("both refusals are accounted", || async {
        client_errors(&p) == 2
    })
    .await;
    assert_eq!(log.lines_with("status=400"), 1);
    assert_eq!(log.lines_with("status=431"), 1);
    assert_eq!(bs[0].hits(), 0);
}
