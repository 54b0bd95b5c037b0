//! Headers on the way through (hop-by-hop, `X-Forwarded-*`), upgraded connections (WebSocket-style tunnels), streamed bodies and HTTP/2 (h2c) clients.

use bytes::Bytes;
use http::{Request, StatusCode};
use http_body_util::Full;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::support::*;

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
