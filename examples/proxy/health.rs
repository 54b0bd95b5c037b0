//! Active health checks of one upstream: `GET path` on every server each `interval`; a 2xx or
//! 3xx answer within `timeout` passes. Results feed the balancer's `rise` / `fall` rules.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Empty;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use tokio::task::JoinHandle;

use crate::balancer::Lb;
use crate::config::HealthCheck;

/// The running checks; dropping this stops them.
pub struct Checks {
    task: JoinHandle<()>,
}

impl Drop for Checks {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Checks {
    /// Starts checking every backend of `lb`, as the set is at each round.
    pub fn start(upstream: &str, hc: &HealthCheck, lb: Arc<dyn Lb>) -> Checks {
        let upstream = upstream.to_owned();
        let hc = hc.clone();
        let mut connector = HttpConnector::new();
        connector.set_connect_timeout(Some(hc.timeout));
        let client: Client<_, Empty<Bytes>> = Client::builder(TokioExecutor::new())
            .pool_max_idle_per_host(0)
            .build(connector);
        let task = tokio::spawn(async move {
            let mut tick = tokio::time::interval(hc.interval);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tick.tick().await;
                let backends = lb.backends();
                let probes = backends.iter().filter_map(|b| b.addr()).map(|addr| {
                    let client = client.clone();
                    let uri = format!("http://{addr}{}", hc.path);
                    async move { (addr, probe(&client, &uri, hc.timeout).await) }
                });
                for (addr, ok) in futures_join_all(probes).await {
                    let id = addr.to_string();
                    let before = lb
                        .stats()
                        .into_iter()
                        .find(|s| *s.id == *id)
                        .map(|s| s.health);
                    lb.report_probe(&id, ok);
                    let after = lb
                        .stats()
                        .into_iter()
                        .find(|s| *s.id == *id)
                        .map(|s| s.health);
                    if before != after {
                        tracing::warn!(%upstream, backend = %id, ?after, "health changed by active check");
                    }
                }
            }
        });
        Checks { task }
    }
}

async fn probe(client: &Client<HttpConnector, Empty<Bytes>>, uri: &str, timeout: Duration) -> bool {
    let Ok(uri) = uri.parse::<http::Uri>() else {
        return false;
    };
    match tokio::time::timeout(timeout, client.get(uri)).await {
        Ok(Ok(resp)) => resp.status().is_success() || resp.status().is_redirection(),
        _ => false,
    }
}

/// Runs the probes of one round concurrently.
async fn futures_join_all<F: std::future::Future + Send + 'static>(
    futs: impl Iterator<Item = F>,
) -> Vec<F::Output>
where
    F::Output: Send + 'static,
{
    let handles: Vec<_> = futs.map(tokio::spawn).collect();
    let mut out = Vec::with_capacity(handles.len());
    for h in handles {
        if let Ok(v) = h.await {
            out.push(v);
        }
    }
    out
}
