//! Connecting to etcd, and bounding each request by a timeout.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use etcd_client::{Client, ConnectOptions};

use super::error::EtcdError;

/// A client of `endpoints`. Connection attempts and HTTP/2 keep-alive pings are bounded by
/// `timeout`, so that a silent server (a partition rather than a refused connection) ends the
/// watch within about twice `timeout`. No request deadline is set on the client itself: it would
/// be sent as `grpc-timeout` and end the long-lived watch stream.
pub(crate) async fn connect(
    endpoints: &[Arc<str>],
    timeout: Duration,
) -> Result<Client, EtcdError> {
    let options = ConnectOptions::new()
        .with_connect_timeout(timeout)
        .with_keep_alive(timeout, timeout)
        .with_keep_alive_while_idle(true);
    let endpoints: Vec<&str> = endpoints.iter().map(|e| &**e).collect();
    bounded(
        "connect",
        timeout,
        Client::connect(endpoints, Some(options)),
    )
    .await
}

/// `fut`, failing with [`EtcdError::Timeout`] after `timeout`.
pub(crate) async fn bounded<T>(
    op: &'static str,
    timeout: Duration,
    fut: impl Future<Output = Result<T, etcd_client::Error>>,
) -> Result<T, EtcdError> {
    match tokio::time::timeout(timeout, fut).await {
        Ok(r) => r.map_err(EtcdError::request(op)),
        Err(_) => Err(EtcdError::Timeout { op, timeout }),
    }
}
