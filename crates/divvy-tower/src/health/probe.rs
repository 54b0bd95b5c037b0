//! Probe kinds, the address a probe goes to, and what a probe reports.

use std::fmt;
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::ops::RangeInclusive;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use divvy::Backend;
use tokio::net::TcpStream;

use super::error::ProbeError;
use super::http;

type BoxProbe = Pin<Box<dyn Future<Output = Result<(), ProbeError>> + Send>>;
pub(crate) type CustomProbe = Arc<dyn Fn(Backend) -> BoxProbe + Send + Sync>;

/// What one probe does.
#[derive(Clone)]
pub(crate) enum Kind {
    /// A TCP connection that is accepted passes.
    Tcp,
    /// An HTTP/1.1 `GET` of this path answered with an expected status passes.
    Http { path: String },
    /// The user's own check.
    Custom(CustomProbe),
}

/// Everything a probe needs besides the backend: fixed when the checker is spawned.
#[derive(Clone)]
pub(crate) struct Probe {
    pub(crate) kind: Kind,
    pub(crate) port: Option<u16>,
    pub(crate) host: Option<String>,
    pub(crate) status: RangeInclusive<u16>,
}

impl Probe {
    /// Runs one probe of `backend`, without a timeout (the caller bounds it).
    pub(crate) async fn run(&self, backend: Backend) -> Result<(), ProbeError> {
        match &self.kind {
            Kind::Tcp => connect(&backend, self.port).await.map(drop),
            Kind::Http { path } => {
                let stream = connect(&backend, self.port).await?;
                let host = self.host.as_deref().unwrap_or(backend.id());
                let status = http::get_status(stream, path, host).await?;
                if self.status.contains(&status) {
                    Ok(())
                } else {
                    Err(ProbeError::Status(status))
                }
            }
            Kind::Custom(f) => f(backend).await,
        }
    }
}

impl fmt::Debug for Kind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Kind::Tcp => f.write_str("Tcp"),
            Kind::Http { path } => f.debug_struct("Http").field("path", path).finish(),
            Kind::Custom(_) => f.write_str("Custom"),
        }
    }
}

/// Boxes a user's probe function.
pub(crate) fn custom<F, Fut>(probe: F) -> CustomProbe
where
    F: Fn(Backend) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<(), ProbeError>> + Send + 'static,
{
    Arc::new(move |b| Box::pin(probe(b)) as BoxProbe)
}

/// The result of one probe of one backend, as given to
/// [`HealthChecker::on_probe`](super::HealthChecker::on_probe) callbacks.
#[non_exhaustive]
#[derive(Debug)]
pub struct ProbeReport {
    /// The backend's identity.
    pub backend: Arc<str>,
    /// Whether the probe passed, and why not.
    pub outcome: Result<(), ProbeError>,
    /// How long the probe took, up to the timeout.
    pub elapsed: Duration,
}

impl ProbeReport {
    /// Whether the probe passed.
    pub fn is_ok(&self) -> bool {
        self.outcome.is_ok()
    }
}

/// Connects to the backend: its socket address when the identity is one, otherwise the identity
/// resolved as `host:port`. Every resolved address is tried in order, so a name that resolves to
/// `::1` and `127.0.0.1` passes when either accepts.
async fn connect(backend: &Backend, port: Option<u16>) -> Result<TcpStream, ProbeError> {
    let addrs = addresses(backend, port).await?;
    let mut last = None;
    for addr in addrs {
        match TcpStream::connect(addr).await {
            Ok(stream) => return Ok(stream),
            Err(e) => last = Some(e),
        }
    }
    Err(last.map_or(ProbeError::NoAddress, ProbeError::Connect))
}

async fn addresses(backend: &Backend, port: Option<u16>) -> Result<Vec<SocketAddr>, ProbeError> {
    if let Some(mut addr) = backend.addr() {
        if let Some(port) = port {
            addr.set_port(port);
        }
        return Ok(vec![addr]);
    }
    let (host, own_port) = split_host_port(backend.id());
    let Some(port) = port.or(own_port) else {
        return Err(ProbeError::NoAddress);
    };
    let addrs: Vec<SocketAddr> = tokio::net::lookup_host((host, port))
        .await
        .map_err(ProbeError::Resolve)?
        .collect();
    if addrs.is_empty() {
        return Err(ProbeError::Resolve(io::Error::new(
            io::ErrorKind::NotFound,
            "no address",
        )));
    }
    Ok(addrs)
}

/// Splits `host:port`, `[v6]:port` or a bare `host` into the host and its port, if any.
pub(crate) fn split_host_port(id: &str) -> (&str, Option<u16>) {
    if let Some((host, port)) = id.rsplit_once(':') {
        if let Ok(port) = port.parse::<u16>() {
            let host = host
                .strip_prefix('[')
                .and_then(|h| h.strip_suffix(']'))
                .unwrap_or(host);
            // A bare IPv6 address ("::1") also has colons: only a host without one, or a
            // bracketed one, carries a port.
            if !host.contains(':') || id.starts_with('[') {
                return (host, Some(port));
            }
        }
    }
    (id, None)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_and_port_are_split_for_names_and_bracketed_addresses() {
        assert_eq!(
            split_host_port("app.internal:8080"),
            ("app.internal", Some(8080))
        );
        assert_eq!(split_host_port("[::1]:80"), ("::1", Some(80)));
        assert_eq!(split_host_port("app.internal"), ("app.internal", None));
        assert_eq!(split_host_port("::1"), ("::1", None));
        assert_eq!(split_host_port("app:notaport"), ("app:notaport", None));
    }

    #[tokio::test]
    async fn a_name_without_a_port_has_no_address_unless_a_probe_port_is_set() {
        let b = Backend::new("localhost");
        assert!(matches!(
            addresses(&b, None).await,
            Err(ProbeError::NoAddress)
        ));
        let addrs = addresses(&b, Some(9)).await.unwrap();
        assert!(addrs.iter().all(|a| a.port() == 9 && a.ip().is_loopback()));
    }

    #[tokio::test]
    async fn a_probe_port_replaces_the_port_of_an_address_identity() {
        let b = Backend::new("127.0.0.1:80");
        let addrs = addresses(&b, Some(8081)).await.unwrap();
        assert_eq!(addrs, vec!["127.0.0.1:8081".parse().unwrap()]);
    }
}
