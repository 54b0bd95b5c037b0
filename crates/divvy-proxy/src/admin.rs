//! The admin listener: `GET /status` (JSON) and `GET /metrics` (Prometheus text format).
//!
//! Off unless `[admin] listen` is configured; meant for 127.0.0.1. It only reads.

use std::convert::Infallible;
use std::fmt::Write as _;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;

use bytes::Bytes;
use divvy::Context;
use http::{header, HeaderValue, Method, Request, Response, StatusCode};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use serde_json::json;
use tokio::net::TcpListener;
use tokio::sync::watch;

use crate::forward::{plain, Proxy, ProxyBody};

/// Serves the admin endpoints until shutdown.
pub async fn serve(listener: TcpListener, proxy: Arc<Proxy>, mut shutdown: watch::Receiver<bool>) {
    loop {
        let (stream, _) = tokio::select! {
            _ = shutdown.changed() => return,
            r = listener.accept() => match r {
                Ok(x) => x,
                Err(_) => {
                    // Out of file descriptors and the like: back off instead of spinning.
                    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let proxy = proxy.clone();
        tokio::spawn(async move {
            let service = service_fn(move |req| {
                let proxy = proxy.clone();
                async move { Ok::<_, Infallible>(route(&proxy, &req)) }
            });
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}

fn route(proxy: &Proxy, req: &Request<Incoming>) -> Response<ProxyBody> {
    if req.method() != Method::GET {
        return plain(StatusCode::METHOD_NOT_ALLOWED, "405 method not allowed\n");
    }
    match req.uri().path() {
        "/status" => body(status(proxy).to_string(), "application/json"),
        "/metrics" => body(metrics(proxy), "text/plain; version=0.0.4"),
        "/mapping" => match mapping(proxy, req.uri().query().unwrap_or("")) {
            Ok(v) => body(v.to_string(), "application/json"),
            Err(e) => plain(StatusCode::BAD_REQUEST, e),
        },
        _ => plain(
            StatusCode::NOT_FOUND,
            "404 not found: try /status, /metrics or /mapping\n",
        ),
    }
}

fn body(text: String, content_type: &'static str) -> Response<ProxyBody> {
    let mut resp = Response::new(ProxyBody::full(Bytes::from(text)));
    resp.headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    resp
}

/// Every upstream with its strategy and, per backend, health and counters.
pub fn status(proxy: &Proxy) -> serde_json::Value {
    let table = proxy.table.load();
    let upstreams: Vec<_> = table
        .upstreams
        .iter()
        .map(|u| {
            let backends: Vec<_> =
                u.lb.stats()
                    .into_iter()
                    .map(|s| {
                        json!({
                            "id": &*s.id,
                            "tier": s.tier,
                            "weight": s.weight,
                            "effective_weight": s.effective_weight,
                            "admin": s.admin.to_string(),
                            "health": format!("{:?}", s.health).to_lowercase(),
                            "available": s.available,
                            "in_flight": s.in_flight,
                            "picks": s.picks,
                            "successes": s.successes,
                            "failures": s.failures,
                            "ejections": s.ejections,
                            "latency_ewma_ms": s.latency_ewma.map(|d| d.as_secs_f64() * 1e3),
                        })
                    })
                    .collect();
            json!({
                "name": u.name(),
                "strategy": u.config.strategy.name(),
                "divvy_strategy": divvy::Strategy::name(u.lb.strategy()),
                "source": u.source_status(),
                "backends": backends,
            })
        })
        .collect();
    let m = &proxy.metrics;
    json!({
        "in_flight": m.in_flight.load(Relaxed),
        "retries": m.retries.load(Relaxed),
        "responses": {
            "1xx": m.responses[0].load(Relaxed),
            "2xx": m.responses[1].load(Relaxed),
            "3xx": m.responses[2].load(Relaxed),
            "4xx": m.responses[3].load(Relaxed),
            "5xx": m.responses[4].load(Relaxed),
        },
        "upstreams": upstreams,
    })
}

/// The most keys `/mapping` answers for in one request.
const MAX_MAPPING_KEYS: usize = 100_000;

/// `GET /mapping?upstream=NAME&keys=N`: the backend each of the keys `0`, `1`, … `N - 1` (their
/// decimal text, as a request's hash key) maps to in the upstream, now; `null` where no backend
/// is available. Instances that agree on routing answer alike: compare their answers (or a hash
/// of them) to check. Each key is a real pick, counted in `/status`'s `picks`, and released at
/// once.
pub fn mapping(proxy: &Proxy, query: &str) -> Result<serde_json::Value, &'static str> {
    let mut upstream = None;
    let mut keys = None;
    for pair in query.split('&') {
        match pair.split_once('=') {
            Some(("upstream", v)) => upstream = Some(v),
            Some(("keys", v)) => keys = v.parse::<usize>().ok(),
            _ => {}
        }
    }
    const USAGE: &str =
        "400 bad request: expected /mapping?upstream=NAME&keys=N (N at most 100000)\n";
    let (Some(name), Some(n)) = (upstream, keys) else {
        return Err(USAGE);
    };
    if n > MAX_MAPPING_KEYS {
        return Err(USAGE);
    }
    let table = proxy.table.load();
    let u = table
        .upstreams
        .iter()
        .find(|u| u.name() == name)
        .ok_or("404 no such upstream\n")?;
    let mut text = String::new();
    let backends: Vec<serde_json::Value> = (0..n)
        .map(|k| {
            text.clear();
            let _ = write!(text, "{k}");
            match u.lb.pick(&Context::new().key(text.as_bytes())) {
                Ok(pick) => json!(pick.id()),
                Err(_) => serde_json::Value::Null,
            }
        })
        .collect();
    Ok(json!({ "upstream": name, "keys": n, "backends": backends }))
}

/// The same figures in Prometheus text exposition format.
pub fn metrics(proxy: &Proxy) -> String {
    let mut out = String::new();
    let m = &proxy.metrics;
    let _ = writeln!(
        out,
        "# HELP divvy_proxy_responses_total Responses sent, by status class."
    );
    let _ = writeln!(out, "# TYPE divvy_proxy_responses_total counter");
    for (i, c) in m.responses.iter().enumerate() {
        let _ = writeln!(
            out,
            "divvy_proxy_responses_total{{code=\"{}xx\"}} {}",
            i + 1,
            c.load(Relaxed)
        );
    }
    let _ = writeln!(
        out,
        "# HELP divvy_proxy_retries_total Tries beyond the first."
    );
    let _ = writeln!(out, "# TYPE divvy_proxy_retries_total counter");
    let _ = writeln!(out, "divvy_proxy_retries_total {}", m.retries.load(Relaxed));
    let _ = writeln!(out, "# HELP divvy_proxy_in_flight Requests in progress.");
    let _ = writeln!(out, "# TYPE divvy_proxy_in_flight gauge");
    let _ = writeln!(out, "divvy_proxy_in_flight {}", m.in_flight.load(Relaxed));

    let table = proxy.table.load();
    let families: [(&str, &str, &str); 6] = [
        (
            "divvy_backend_up",
            "gauge",
            "1 when the backend may take traffic.",
        ),
        (
            "divvy_backend_in_flight",
            "gauge",
            "Requests in flight to the backend.",
        ),
        (
            "divvy_backend_picks_total",
            "counter",
            "Times the backend was chosen.",
        ),
        (
            "divvy_backend_successes_total",
            "counter",
            "Requests reported successful.",
        ),
        (
            "divvy_backend_failures_total",
            "counter",
            "Requests reported failed.",
        ),
        (
            "divvy_backend_ejections_total",
            "counter",
            "Times passive health took the backend out.",
        ),
    ];
    let stats: Vec<_> = table
        .upstreams
        .iter()
        .map(|u| (u.name().to_owned(), u.lb.stats()))
        .collect();
    for (i, (name, kind, help)) in families.iter().enumerate() {
        let _ = writeln!(out, "# HELP {name} {help}");
        let _ = writeln!(out, "# TYPE {name} {kind}");
        for (up, backends) in &stats {
            for s in backends {
                let v = match i {
                    0 => u64::from(s.available),
                    1 => u64::from(s.in_flight),
                    2 => s.picks,
                    3 => s.successes,
                    4 => s.failures,
                    _ => u64::from(s.ejections),
                };
                let _ = writeln!(out, "{name}{{upstream=\"{up}\",backend=\"{}\"}} {v}", s.id);
            }
        }
    }
    out
}
