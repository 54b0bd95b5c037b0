//! The embedded demo: three small backends on 127.0.0.1, each answering with its own name, and
//! a config that balances across them.

use std::convert::Infallible;
use std::net::SocketAddr;

use bytes::Bytes;
use http::{Request, Response};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;

use crate::config::Config;

/// Starts `n` demo backends on ephemeral loopback ports and returns their addresses.
pub async fn start_backends(n: usize) -> std::io::Result<Vec<SocketAddr>> {
    let mut addrs = Vec::with_capacity(n);
    for i in 0..n {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        addrs.push(addr);
        let name = format!("backend-{}", i + 1);
        tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                let name = name.clone();
                tokio::spawn(async move {
                    let service = service_fn(move |req: Request<Incoming>| {
                        let text =
                            format!("hello from {name} ({addr}), you asked for {}\n", req.uri());
                        async move { Ok::<_, Infallible>(Response::new(Full::new(Bytes::from(text)))) }
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        });
    }
    Ok(addrs)
}

/// The demo's config text: weighted round robin over the backends, the second with weight 2,
/// active health checks, and the admin listener on an ephemeral port.
pub fn config_text(proxy: SocketAddr, backends: &[SocketAddr]) -> String {
    let mut s = format!(
        r#"listen = ["{proxy}"]

[admin]
listen = "127.0.0.1:0"

[[host]]
default = true
upstream = "demo"

[upstream.demo]
strategy = "weighted_round_robin"
max_fails = 1
fail_timeout = "5s"
connect_timeout = "1s"
response_timeout = "10s"

[upstream.demo.health_check]
path = "/"
interval = "2s"
timeout = "1s"
"#
    );
    for (i, b) in backends.iter().enumerate() {
        let weight = if i == 1 { 2 } else { 1 };
        s.push_str(&format!(
            "\n[[upstream.demo.server]]\naddress = \"{b}\"\nweight = {weight}\n"
        ));
    }
    s
}

/// Starts the backends and returns the demo config, listening on 127.0.0.1:8080 when that port
/// is free and on an ephemeral port otherwise.
pub async fn setup() -> std::io::Result<Config> {
    let backends = start_backends(3).await?;
    let proxy: SocketAddr = match std::net::TcpListener::bind("127.0.0.1:8080") {
        Ok(l) => l.local_addr()?,
        Err(_) => "127.0.0.1:0".parse().expect("a literal address"),
    };
    let text = config_text(proxy, &backends);
    crate::config::parse(&text, "<demo>").map_err(|diags| {
        let lines: Vec<String> = diags.iter().map(ToString::to_string).collect();
        std::io::Error::other(lines.join("\n"))
    })
}
