//! Accepting clients: a cap on open connections and a back-off when accepting fails.
//!
//! The cap (nginx `worker_connections`) is a semaphore shared by every listener that serves
//! clients: at the cap the proxy stops calling `accept`, so further clients wait in the kernel's
//! accept queue (using no descriptor of the proxy) until a connection closes, and their
//! connections are served then rather than refused. When `accept` fails anyway (out of file
//! descriptors: EMFILE / ENFILE, or out of memory), the pending connection also stays queued; the
//! loop waits 10 ms, doubling to 1 s while failures continue, instead of spinning on a listener
//! that stays readable. Some servers keep a spare descriptor to accept and close such clients at
//! once; that turns a wait into a refusal, and since every connection has a deadline
//! ([`crate::conn`]) descriptors come back within `header_timeout`, so waiting serves clients
//! better.

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// The first wait after a failed accept.
const FIRST_BACKOFF: Duration = Duration::from_millis(10);
/// The longest wait between two failed accepts.
const MAX_BACKOFF: Duration = Duration::from_secs(1);

/// A listener with its connection cap.
#[derive(Debug)]
pub struct Acceptor {
    listener: TcpListener,
    slots: Arc<Semaphore>,
    backoff: Duration,
}

/// An accepted connection and its place under the cap (freed when dropped).
#[derive(Debug)]
pub struct Accepted {
    /// The client's socket.
    pub stream: TcpStream,
    /// The client's address.
    pub peer: SocketAddr,
    /// The connection's slot; hold it until the connection closes.
    pub slot: OwnedSemaphorePermit,
}

impl Acceptor {
    /// Accepts on `listener` while `slots` has room.
    pub fn new(listener: TcpListener, slots: Arc<Semaphore>) -> Acceptor {
        Acceptor {
            listener,
            slots,
            backoff: FIRST_BACKOFF,
        }
    }

    /// The next client, waiting for a free slot first.
    pub async fn next(&mut self) -> Accepted {
        let slot = self
            .slots
            .clone()
            .acquire_owned()
            .await
            .expect("the connection semaphore is never closed");
        loop {
            match self.listener.accept().await {
                Ok((stream, peer)) => {
                    self.backoff = FIRST_BACKOFF;
                    return Accepted { stream, peer, slot };
                }
                Err(e) => {
                    if is_per_connection(&e) {
                        // The client went away before we accepted it: nothing to wait for.
                        continue;
                    }
                    tracing::warn!(error = %e, wait_ms = self.backoff.as_millis() as u64, "accept failed");
                    tokio::time::sleep(self.backoff).await;
                    self.backoff = (self.backoff * 2).min(MAX_BACKOFF);
                }
            }
        }
    }
}

/// Errors about one pending connection, not about the listener or the process.
fn is_per_connection(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::ConnectionAborted
            | io::ErrorKind::ConnectionReset
            | io::ErrorKind::Interrupted
    )
}
