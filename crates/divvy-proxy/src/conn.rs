//! One client connection's deadlines: nothing stays open just because the client is silent.
//!
//! hyper's own `header_read_timeout` starts only once HTTP/1 has been chosen, so a socket that
//! sends no byte, or part of the HTTP/2 preface, or an HTTP/2 connection with no stream, would
//! stay open forever. The deadline here covers the whole connection instead, from accept:
//!
//! - until its first request head is complete: `header_timeout` (nginx
//!   `client_header_timeout`; for HTTP/2 this is the preface and first-stream timeout);
//! - while no request is in progress after that: `keepalive_timeout` (nginx
//!   `keepalive_timeout`, which nginx 1.19.7+ also applies to idle HTTP/2 connections);
//! - while a request is in progress: none here (the upstream timeouts bound the answer).
//!
//! A request is in progress from the moment hyper hands its head to the service until its
//! response body has been written or dropped ([`Busy`] travels inside [`Tracked`]).

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Buf;
use http_body::{Body, Frame, SizeHint};
use parking_lot::Mutex;
use tokio::sync::{watch, Notify};
use tokio::time::Instant;

/// The idle limits of a connection.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Deadlines {
    /// From accept to the first complete request head.
    pub header: Duration,
    /// Between requests, once one has been served.
    pub keepalive: Duration,
}

/// How long an idle connection past its deadline may take to close politely (HTTP/2 GOAWAY)
/// before it is dropped.
const GRACE: Duration = Duration::from_millis(500);

/// What a connection is doing, shared by its service and its watchdog.
#[derive(Debug)]
pub struct Activity {
    state: Mutex<State>,
    changed: Notify,
}

#[derive(Debug)]
struct State {
    /// Requests in progress.
    busy: usize,
    /// Requests started so far.
    served: u64,
    /// When `busy` last became 0 (or the accept).
    idle_since: Instant,
}

impl Activity {
    /// A connection accepted now.
    pub fn new() -> Arc<Activity> {
        Arc::new(Activity {
            state: Mutex::new(State {
                busy: 0,
                served: 0,
                idle_since: Instant::now(),
            }),
            changed: Notify::new(),
        })
    }

    /// A request head has arrived: the connection is busy until the guard is dropped.
    pub fn begin(self: &Arc<Self>) -> Busy {
        {
            let mut s = self.state.lock();
            s.busy += 1;
            s.served += 1;
        }
        self.changed.notify_waiters();
        Busy(self.clone())
    }

    /// Resolves when the connection has been idle past its deadline.
    async fn expired(&self, deadlines: Deadlines) {
        loop {
            // Registered before the state is read, so a change in between is not missed.
            let notified = self.changed.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            let (busy, served, since) = {
                let s = self.state.lock();
                (s.busy, s.served, s.idle_since)
            };
            if busy > 0 {
                notified.await;
                continue;
            }
            let limit = if served == 0 {
                deadlines.header
            } else {
                deadlines.keepalive
            };
            tokio::select! {
                _ = tokio::time::sleep_until(since + limit) => return,
                _ = notified => {}
            }
        }
    }
}

/// A request in progress on a connection; dropping it makes the connection idle again if it was
/// the last one.
#[derive(Debug)]
pub struct Busy(Arc<Activity>);

impl Drop for Busy {
    fn drop(&mut self) {
        {
            let mut s = self.0.state.lock();
            s.busy -= 1;
            if s.busy == 0 {
                s.idle_since = Instant::now();
            }
        }
        self.0.changed.notify_waiters();
    }
}

/// A response body that keeps its connection busy until it is finished or dropped.
#[derive(Debug)]
pub struct Tracked<B> {
    inner: B,
    _busy: Busy,
}

impl<B> Tracked<B> {
    /// `inner`, keeping `busy` alive as long as it is.
    pub fn new(inner: B, busy: Busy) -> Tracked<B> {
        Tracked { inner, _busy: busy }
    }
}

impl<B: Body + Unpin> Body for Tracked<B>
where
    B::Data: Buf,
{
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        Pin::new(&mut self.inner).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// Runs `conn` until it ends, the proxy shuts down (then `graceful` asks it to finish), or it
/// has been idle past `deadlines` (then it is closed: at once if no request ever arrived, else
/// politely within half a second).
pub async fn drive<C, E>(
    conn: C,
    graceful: impl Fn(Pin<&mut C>),
    activity: &Activity,
    deadlines: Deadlines,
    shutdown: &mut watch::Receiver<bool>,
) -> Result<(), E>
where
    C: Future<Output = Result<(), E>>,
{
    tokio::pin!(conn);
    tokio::select! {
        r = conn.as_mut() => r,
        _ = shutdown.changed() => {
            graceful(conn.as_mut());
            conn.await
        }
        _ = activity.expired(deadlines) => {
            if activity.state.lock().served == 0 {
                return Ok(());
            }
            graceful(conn.as_mut());
            tokio::time::timeout(GRACE, conn).await.unwrap_or(Ok(()))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const D: Deadlines = Deadlines {
        header: Duration::from_secs(10),
        keepalive: Duration::from_secs(75),
    };

    #[tokio::test(start_paused = true)]
    async fn a_silent_connection_expires_at_the_header_timeout() {
        let a = Activity::new();
        let start = Instant::now();
        a.expired(D).await;
        assert_eq!(start.elapsed(), D.header);
    }

    #[tokio::test(start_paused = true)]
    async fn a_busy_connection_never_expires_and_then_waits_the_keepalive() {
        let a = Activity::new();
        let busy = a.begin();
        let waited = tokio::time::timeout(Duration::from_secs(3600), a.expired(D)).await;
        assert!(waited.is_err(), "expired while a request was in progress");
        let idle_from = Instant::now();
        drop(busy);
        a.expired(D).await;
        assert_eq!(idle_from.elapsed(), D.keepalive);
    }
}
