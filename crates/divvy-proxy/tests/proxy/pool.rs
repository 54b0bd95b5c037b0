//! The keep-alive pool to backends: reuse, and backends that close idle connections.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use http::StatusCode;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::support::*;

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
