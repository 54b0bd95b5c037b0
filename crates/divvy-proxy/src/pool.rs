//! Keep-alive HTTP/1.1 connections to the backends of one upstream.
//!
//! Built on hyper's low-level `client::conn::http1` rather than hyper-util's pooled client: the
//! proxy already knows the backend's socket address, so a request needs no URI rebuilt around an
//! authority, no pool key hashed from it and no DNS step. Per backend address the pool keeps a
//! LIFO stack of idle connections (the most recently used one is the warmest). A connection goes
//! back to the pool when the response body it carried has been relayed to the end
//! ([`Lease::release`]); dropped earlier (client gone, error, upgrade), it closes.

use std::collections::{HashMap, VecDeque};
use std::error::Error as StdError;
use std::fmt;
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use http::{Request, Response};
use hyper::body::Incoming;
use hyper::client::conn::http1::{self, SendRequest};
use hyper_util::rt::TokioIo;
use parking_lot::Mutex;
use tokio::net::TcpStream;

use crate::forward::ReqBody;

/// How long an idle connection is kept (hyper-util's client used 60 s too).
const IDLE_TIMEOUT: Duration = Duration::from_secs(60);
/// Idle connections kept per backend address; more are closed when they come back.
const MAX_IDLE_PER_BACKEND: usize = 256;

type Sender = SendRequest<ReqBody>;

/// Idle connections to one upstream's backends.
pub struct Pool {
    idle: Mutex<HashMap<SocketAddr, VecDeque<(Sender, Instant)>>>,
    connect_timeout: Duration,
}

impl std::fmt::Debug for Pool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pool")
            .field("idle_backends", &self.idle.lock().len())
            .field("connect_timeout", &self.connect_timeout)
            .finish()
    }
}

/// A connection lent to one request; see [`Lease::release`].
pub struct Lease {
    pool: Arc<Pool>,
    addr: SocketAddr,
    sender: Sender,
}

impl std::fmt::Debug for Lease {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Lease").field("addr", &self.addr).finish()
    }
}

/// Why a request to a backend failed.
#[derive(Debug)]
pub enum SendError {
    /// No connection could be made: nothing was sent.
    Connect(io::Error),
    /// The connection failed while the request was sent or the response awaited.
    Request(hyper::Error),
}

impl Pool {
    /// An empty pool whose new connections give up after `connect_timeout`.
    pub fn new(connect_timeout: Duration) -> Arc<Pool> {
        Arc::new(Pool {
            idle: Mutex::new(HashMap::new()),
            connect_timeout,
        })
    }

    /// The connect timeout this pool was built with.
    pub fn connect_timeout(&self) -> Duration {
        self.connect_timeout
    }

    /// Sends `req` (origin-form URI, `Host` set) to `addr` on an idle connection, or a new one.
    /// A request that a pooled connection closed before sending goes out on a new connection.
    pub async fn send(
        self: &Arc<Self>,
        addr: SocketAddr,
        mut req: Request<ReqBody>,
    ) -> Result<(Response<Incoming>, Lease), SendError> {
        while let Some(mut sender) = self.checkout(addr) {
            if sender.ready().await.is_err() {
                continue;
            }
            match sender.try_send_request(req).await {
                Ok(resp) => return Ok((resp, self.lease(addr, sender))),
                Err(mut e) => match e.take_message() {
                    // Closed by the backend (idle timeout) before a byte was written.
                    Some(back) => req = back,
                    None => return Err(SendError::Request(e.into_error())),
                },
            }
        }
        let mut sender = self.connect(addr).await?;
        match sender.send_request(req).await {
            Ok(resp) => Ok((resp, self.lease(addr, sender))),
            Err(e) => Err(SendError::Request(e)),
        }
    }

    fn lease(self: &Arc<Self>, addr: SocketAddr, sender: Sender) -> Lease {
        Lease {
            pool: self.clone(),
            addr,
            sender,
        }
    }

    /// The most recently returned open connection to `addr`, if any.
    fn checkout(&self, addr: SocketAddr) -> Option<Sender> {
        let mut idle = self.idle.lock();
        let stack = idle.get_mut(&addr)?;
        while let Some((sender, since)) = stack.pop_back() {
            if !sender.is_closed() && since.elapsed() < IDLE_TIMEOUT {
                return Some(sender);
            }
        }
        None
    }

    async fn connect(&self, addr: SocketAddr) -> Result<Sender, SendError> {
        let stream =
            match tokio::time::timeout(self.connect_timeout, TcpStream::connect(addr)).await {
                Ok(r) => r.map_err(SendError::Connect)?,
                Err(_) => {
                    return Err(SendError::Connect(io::Error::new(
                        io::ErrorKind::TimedOut,
                        "connect timed out",
                    )))
                }
            };
        stream.set_nodelay(true).map_err(SendError::Connect)?;
        let (sender, conn) = http1::Builder::new()
            .handshake(TokioIo::new(stream))
            .await
            .map_err(SendError::Request)?;
        tokio::spawn(async move {
            if let Err(e) = conn.with_upgrades().await {
                tracing::debug!(backend = %addr, error = %e, "upstream connection ended with an error");
            }
        });
        Ok(sender)
    }
}

impl Lease {
    /// Returns the connection to the pool: call once the response has been read to its end.
    /// The oldest idle connection of the backend is closed if it has been idle too long or the
    /// backend already has [`MAX_IDLE_PER_BACKEND`] idle ones.
    pub fn release(self) {
        if self.sender.is_closed() {
            return;
        }
        let now = Instant::now();
        let mut idle = self.pool.idle.lock();
        let stack = idle.entry(self.addr).or_default();
        while let Some((front, since)) = stack.front() {
            if front.is_closed()
                || now.duration_since(*since) >= IDLE_TIMEOUT
                || stack.len() >= MAX_IDLE_PER_BACKEND
            {
                stack.pop_front();
            } else {
                break;
            }
        }
        stack.push_back((self.sender, now));
    }
}

impl SendError {
    /// Whether no connection could be made (so nothing was sent).
    pub fn is_connect(&self) -> bool {
        matches!(self, SendError::Connect(_))
    }
}

impl fmt::Display for SendError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SendError::Connect(_) => f.write_str("connect failed"),
            SendError::Request(_) => f.write_str("request failed"),
        }
    }
}

impl StdError for SendError {
    fn source(&self) -> Option<&(dyn StdError + 'static)> {
        match self {
            SendError::Connect(e) => Some(e),
            SendError::Request(e) => Some(e),
        }
    }
}
