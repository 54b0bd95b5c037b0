//! The admin listener: `GET /status` (JSON) and `GET /metrics` (OpenMetrics text format).
//!
//! Off unless `[admin] listen` is configured; meant for 127.0.0.1. It only reads.

use std::convert::Infallible;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;

use bytes::Bytes;
use http::{header, HeaderValue, Method, Request, Response, StatusCode};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, NoLabelSet};
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::Registry;
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
        "/metrics" => body(
            metrics(proxy),
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        ),
        _ => plain(
            StatusCode::NOT_FOUND,
            "404 not found: try /status or /metrics\n",
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
                "divvy_strategy": u.lb.strategy_name(),
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

/// The same figures in the Prometheus / OpenMetrics text format, through one
/// `prometheus-client` registry: the proxy-wide counters, and each upstream's per-backend metrics
/// from the library (`divvy::metrics`), which escapes label values. Built per scrape, because a
/// reload replaces the upstreams.
pub fn metrics(proxy: &Proxy) -> String {
    let mut registry = Registry::default();
    let m = &proxy.metrics;
    registry.register_collector(Box::new(ProxyMetrics {
        responses: std::array::from_fn(|i| m.responses[i].load(Relaxed)),
        retries: m.retries.load(Relaxed),
        in_flight: m.in_flight.load(Relaxed),
    }));
    let table = proxy.table.load();
    for u in &table.upstreams {
        registry.register_collector(Box::new(u.lb.metrics(u.name())));
    }
    let mut out = String::new();
    // Writing to a `String` cannot fail.
    let _ = prometheus_client::encoding::text::encode(&mut out, &registry);
    out
}

/// The proxy-wide counters as read for one scrape.
#[derive(Debug)]
struct ProxyMetrics {
    responses: [u64; 5],
    retries: u64,
    in_flight: u64,
}

impl Collector for ProxyMetrics {
    fn encode(&self, mut encoder: DescriptorEncoder<'_>) -> std::fmt::Result {
        let mut family = encoder.encode_descriptor(
            "divvy_proxy_responses",
            "Responses sent, by status class.",
            None,
            MetricType::Counter,
        )?;
        for (i, n) in self.responses.iter().enumerate() {
            let code = format!("{}xx", i + 1);
            family
                .encode_family(&[("code", code.as_str())])?
                .encode_counter::<NoLabelSet, _, u64>(n, None)?;
        }
        encoder
            .encode_descriptor(
                "divvy_proxy_retries",
                "Tries beyond the first.",
                None,
                MetricType::Counter,
            )?
            .encode_counter::<NoLabelSet, _, u64>(&self.retries, None)?;
        encoder
            .encode_descriptor(
                "divvy_proxy_in_flight",
                "Requests in progress.",
                None,
                MetricType::Gauge,
            )?
            .encode_gauge(&self.in_flight)
    }
}
