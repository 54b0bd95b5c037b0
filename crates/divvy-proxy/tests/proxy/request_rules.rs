//! Method, request-target and `Host` rules, sent as raw bytes: what nginx 1.22 refuses is
//! refused before any backend sees it, and the host a request is routed by is the host the
//! backend gets.

use std::net::SocketAddr;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::support::*;

/// Sends `raw` (which asks for `Connection: close` or is HTTP/1.0) and returns the status code
/// and the whole answer.
async fn exchange(addr: SocketAddr, raw: &str) -> (u16, String) {
    let mut s = TcpStream::connect(addr).await.unwrap();
    s.write_all(raw.as_bytes()).await.unwrap();
    let mut buf = Vec::new();
    tokio::time::timeout(DEADLINE, s.read_to_end(&mut buf))
        .await
        .expect("an answer before the deadline")
        .unwrap();
    let text = String::from_utf8_lossy(&buf).into_owned();
    let status = text
        .split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or_else(|| panic!("no status line in {text:?}"));
    (status, text)
}

#[tokio::test]
async fn duplicate_missing_empty_or_invalid_host_is_400_and_reaches_no_backend() {
    let bs = backends(&["a"]).await;
    let p = proxy(&simple("", &bs)).await;
    for raw in [
        "GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\nConnection: close\r\n\r\n",
        "GET / HTTP/1.1\r\nConnection: close\r\n\r\n",
        "GET / HTTP/1.1\r\nHost: \r\nConnection: close\r\n\r\n",
        "GET / HTTP/1.1\r\nHost: a b\r\nConnection: close\r\n\r\n",
        "GET / HTTP/1.1\r\nHost: a/b\r\nConnection: close\r\n\r\n",
        "GET / HTTP/1.1\r\nHost: a..b\r\nConnection: close\r\n\r\n",
        "GET / HTTP/1.1\r\nHost: u@a\r\nConnection: close\r\n\r\n",
        "GET http://a.example/ HTTP/1.1\r\nConnection: close\r\n\r\n",
        "GET http://u@a.example/ HTTP/1.1\r\nHost: a.example\r\nConnection: close\r\n\r\n",
    ] {
        let (status, text) = exchange(p.listen[0], raw).await;
        assert_eq!(status, 400, "{raw:?} got {text:?}");
    }
    assert_eq!(bs[0].hits(), 0);
}

#[tokio::test]
async fn an_absolute_form_target_routes_and_forwards_by_its_own_host() {
    let a = backends(&["a"]).await;
    let b = backends(&["b"]).await;
    let toml = format!(
        "listen = [\"127.0.0.1:0\"]\n\
         [[host]]\nnames = [\"a.example\"]\nupstream = \"a\"\n\
         [[host]]\nnames = [\"b.example\"]\nupstream = \"b\"\ndefault = true\n\
         [upstream.a]\n{}\n[upstream.b]\n{}",
        servers("a", &a, &[]),
        servers("b", &b, &[])
    );
    let p = proxy(&toml).await;
    let (status, text) = exchange(
        p.listen[0],
        "GET http://a.example/x HTTP/1.1\r\nHost: b.example\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert_eq!(status, 200, "{text}");
    assert!(
        text.ends_with("\r\n\r\na"),
        "routed by the target's host: {text:?}"
    );
    let seen = a[0].seen.lock().last().cloned().unwrap();
    let hosts: Vec<_> = seen.headers.get_all("host").iter().collect();
    assert_eq!(hosts, ["a.example"]);
    assert_eq!(seen.uri, "/x");
    assert_eq!(b[0].hits(), 0);
}

#[tokio::test]
async fn http_1_0_without_host_is_served_and_the_backend_gets_a_host() {
    let bs = backends(&["a"]).await;
    let p = proxy(&simple("", &bs)).await;
    let (status, text) = exchange(p.listen[0], "GET / HTTP/1.0\r\n\r\n").await;
    assert_eq!(status, 200, "{text}");
    let seen = bs[0].seen.lock().last().cloned().unwrap();
    assert_eq!(seen.headers.get_all("host").iter().count(), 1);
}

#[tokio::test]
async fn methods_trace_and_asterisk_form_are_refused_as_nginx_does() {
    let bs = backends(&["a"]).await;
    let p = proxy(&simple("", &bs)).await;
    for (raw, want) in [
        (
            "get / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
            400,
        ),
        (
            "GeT / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
            400,
        ),
        (
            "G1T / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
            400,
        ),
        (
            "TRACE / HTTP/1.1\r\nHost: x\r\nCookie: s=1\r\nConnection: close\r\n\r\n",
            405,
        ),
        (
            "OPTIONS * HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
            400,
        ),
    ] {
        let (status, text) = exchange(p.listen[0], raw).await;
        assert_eq!(status, want, "{raw:?} got {text:?}");
    }
    assert_eq!(bs[0].hits(), 0);
    // nginx's method alphabet includes `_` and `-`: such a method is forwarded.
    let (status, _) = exchange(
        p.listen[0],
        "G_T / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(bs[0].hits(), 1);
}

#[tokio::test]
async fn trace_is_forwarded_when_the_config_allows_it() {
    let bs = backends(&["a"]).await;
    let p = proxy(&simple("[client]\nallow_trace = true\n", &bs)).await;
    let (status, text) = exchange(
        p.listen[0],
        "TRACE / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert_eq!(status, 200, "{text}");
    assert_eq!(bs[0].hits(), 1);
}

/// A raw backend (hyper's own parser stops at 100 fields) that answers each request with the
/// number of header fields it received.
async fn field_counter() -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let Ok((mut s, _)) = listener.accept().await else {
                return;
            };
            tokio::spawn(async move {
                let mut head = Vec::new();
                let mut buf = [0u8; 8192];
                while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                    match s.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => head.extend_from_slice(&buf[..n]),
                    }
                }
                let fields = String::from_utf8_lossy(&head).split("\r\n").count() - 3;
                let body = fields.to_string();
                let answer = format!(
                    "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                    body.len()
                );
                let _ = s.write_all(answer.as_bytes()).await;
            });
        }
    });
    addr
}

#[tokio::test]
async fn a_3_kb_head_with_120_headers_is_accepted_by_default() {
    let backend = field_counter().await;
    let toml = |client: &str| {
        format!(
            "listen = [\"127.0.0.1:0\"]\n{client}\n[[host]]\ndefault = true\nupstream = \"app\"\n\
             [upstream.app]\n[[upstream.app.server]]\naddress = \"{backend}\"\n"
        )
    };
    let p = proxy(&toml("")).await;
    let mut raw = String::from("GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n");
    for i in 0..118 {
        raw.push_str(&format!("X-Field-{i:03}: value-{i:06}\r\n"));
    }
    raw.push_str("\r\n");
    assert!((3000..3600).contains(&raw.len()), "{}", raw.len());
    let (status, text) = exchange(p.listen[0], &raw).await;
    assert_eq!(status, 200, "{text}");
    // The 119 end-to-end fields and the proxy's own (Host, X-Forwarded-*) reached the backend.
    let fields: usize = text.rsplit("\r\n\r\n").next().unwrap().parse().unwrap();
    assert!(fields >= 119, "{fields} fields forwarded");
    // The count limit is a config field: set under the count, the same head is refused.
    let q = proxy(&toml("[client]\nmax_headers = 100\n")).await;
    let (status, _) = exchange(q.listen[0], &raw).await;
    assert_eq!(status, 431);
}
