//! Clients that hold sockets without sending requests: every one is closed at its deadline, on
//! the client and the admin listeners, and idle sockets past the descriptor limit do not lock
//! normal clients out.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::support::*;

/// The short deadlines these tests configure.
const HEADER: Duration = Duration::from_millis(500);
const KEEPALIVE: Duration = Duration::from_millis(700);
/// What the issue allows beyond a deadline.
const SLACK: Duration = Duration::from_secs(1);

fn config(bs: &[std::sync::Arc<TestBackend>]) -> String {
    simple(
        "[client]\nheader_timeout = \"500ms\"\nkeepalive_timeout = \"700ms\"\n\n[admin]\nlisten = \"127.0.0.1:0\"\n",
        bs,
    )
}

/// Reads until the peer closes; returns what was read and when the close came.
async fn until_closed(s: &mut TcpStream) -> (Vec<u8>, Instant) {
    let mut buf = Vec::new();
    tokio::time::timeout(DEADLINE, s.read_to_end(&mut buf))
        .await
        .expect("the proxy closes the connection before the deadline")
        .ok();
    (buf, Instant::now())
}

/// Connects, sends `first`, and asserts the proxy closes the socket within `limit` + 1 s.
async fn closed_within(addr: SocketAddr, first: &[u8], limit: Duration) {
    let t = Instant::now();
    let mut s = TcpStream::connect(addr).await.unwrap();
    if !first.is_empty() {
        s.write_all(first).await.unwrap();
    }
    let (_, closed) = until_closed(&mut s).await;
    let took = closed - t;
    assert!(
        took >= limit.saturating_sub(Duration::from_millis(50)),
        "closed early, after {took:?}"
    );
    assert!(
        took < limit + SLACK,
        "closed after {took:?}, limit {limit:?}"
    );
}

#[tokio::test]
async fn a_socket_that_sends_nothing_is_closed_at_the_header_timeout_on_both_listeners() {
    let bs = backends(&["a"]).await;
    let p = proxy(&config(&bs)).await;
    let admin = p.admin.unwrap();
    tokio::join!(
        closed_within(p.listen[0], b"", HEADER),
        closed_within(admin, b"", HEADER),
        // Part of a head on the admin listener: it had no header timeout at all before.
        closed_within(admin, b"GET /metr", HEADER),
    );
    assert_eq!(bs[0].hits(), 0);
}

#[tokio::test]
async fn part_of_the_h2_preface_or_an_idle_h2c_connection_is_closed_at_the_header_timeout() {
    let bs = backends(&["a"]).await;
    let p = proxy(&config(&bs)).await;
    // The preface and an empty SETTINGS frame: a complete HTTP/2 start, then no stream.
    let mut h2 = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n".to_vec();
    h2.extend_from_slice(&[0, 0, 0, 4, 0, 0, 0, 0, 0]);
    tokio::join!(
        closed_within(p.listen[0], b"PRI * HTTP/2.0\r\n", HEADER),
        closed_within(p.listen[0], &h2, HEADER),
    );
}

#[tokio::test]
async fn an_idle_keep_alive_connection_is_closed_at_the_keepalive_timeout() {
    let bs = backends(&["a"]).await;
    let p = proxy(&config(&bs)).await;
    let mut s = TcpStream::connect(p.listen[0]).await.unwrap();
    s.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    // The whole answer ("a", with a content length) arrives, then the connection idles.
    let mut got = Vec::new();
    let answered = tokio::time::timeout(DEADLINE, async {
        let mut buf = [0u8; 4096];
        loop {
            let n = s.read(&mut buf).await.unwrap();
            assert!(n > 0, "closed before answering");
            got.extend_from_slice(&buf[..n]);
            let text = String::from_utf8_lossy(&got);
            if text.contains("\r\n\r\n") && text.ends_with('a') {
                return Instant::now();
            }
        }
    })
    .await
    .expect("an answer before the deadline");
    assert!(String::from_utf8_lossy(&got).starts_with("HTTP/1.1 200"));
    let (rest, closed) = until_closed(&mut s).await;
    assert!(rest.is_empty());
    let idle = closed - answered;
    assert!(
        idle >= KEEPALIVE.saturating_sub(Duration::from_millis(50)),
        "closed early, after {idle:?}"
    );
    assert!(idle < KEEPALIVE + SLACK, "closed after {idle:?}");
}

#[tokio::test]
async fn with_256_descriptors_and_300_idle_sockets_a_normal_client_gets_every_answer() {
    use tokio::io::AsyncBufReadExt;
    let bs = backends(&["a"]).await;
    let dir = std::env::temp_dir().join(format!("divvy-proxy-fds-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("proxy.toml");
    let toml = simple("[client]\nheader_timeout = \"1s\"\n", &bs);
    std::fs::write(&path, toml).unwrap();
    // prlimit limits the child only: this test process keeps its own descriptor limit.
    let mut child = tokio::process::Command::new("prlimit")
        .arg("--nofile=256")
        .arg(proxy_bin())
        .arg("--config")
        .arg(&path)
        .env("RUST_LOG", "info")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("prlimit (util-linux) runs the proxy");
    let mut out = tokio::io::BufReader::new(child.stdout.take().unwrap()).lines();
    let mut err = tokio::io::BufReader::new(child.stderr.take().unwrap()).lines();
    let addr = crate::cli::listen_addr(
        &crate::cli::line_with(&mut out, "proxy listening on http://").await,
    );

    let mut idle = Vec::with_capacity(300);
    for _ in 0..300 {
        idle.push(TcpStream::connect(addr).await.unwrap());
    }
    for i in 0..5 {
        let mut s = TcpStream::connect(addr).await.unwrap();
        s.write_all(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            .await
            .unwrap();
        let (got, _) = until_closed(&mut s).await;
        let got = String::from_utf8_lossy(&got);
        assert!(got.starts_with("HTTP/1.1 200"), "request {i}: {got:?}");
        assert!(got.ends_with("\r\n\r\na"), "request {i}: {got:?}");
    }
    assert_eq!(bs[0].hits(), 5);
    // The limit was really hit: the proxy ran out of descriptors and backed off.
    crate::cli::line_with(&mut err, "accept failed").await;
    drop(idle);
    let _ = std::fs::remove_dir_all(&dir);
}
