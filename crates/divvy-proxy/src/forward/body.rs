//! The request and response bodies the proxy streams, never buffered whole.

use std::error::Error as StdError;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context as TaskContext, Poll};
use std::time::Duration;

use bytes::Bytes;
use divvy::Pick;
use http_body::{Body, Frame, SizeHint};
use hyper::body::Incoming;
use tokio::time::Sleep;

use crate::pool::Lease;

// === bodies ===

/// A request body on its way upstream: nothing (replayable on retry) or the client's stream.
#[derive(Debug)]
pub enum ReqBody {
    /// No body.
    Empty,
    /// The client's body, streamed.
    Stream(Incoming),
}

impl Body for ReqBody {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut TaskContext<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        match self.get_mut() {
            ReqBody::Empty => Poll::Ready(None),
            ReqBody::Stream(b) => Pin::new(b).poll_frame(cx),
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            ReqBody::Empty => true,
            ReqBody::Stream(b) => b.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            ReqBody::Empty => SizeHint::with_exact(0),
            ReqBody::Stream(b) => b.size_hint(),
        }
    }
}

/// A response body on its way to the client.
pub struct ProxyBody {
    inner: Inner,
}

impl std::fmt::Debug for ProxyBody {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let kind = match &self.inner {
            Inner::Full(_) => "full",
            Inner::Upstream { .. } => "upstream",
        };
        f.debug_struct("ProxyBody").field("kind", &kind).finish()
    }
}

enum Inner {
    Full(Option<Bytes>),
    Upstream {
        body: Incoming,
        /// In flight until the body ends.
        pick: Option<Pick>,
        /// The backend connection, back to the pool once the body has ended.
        lease: Option<Lease>,
        idle: Duration,
        /// Armed only when the body has to wait: most small bodies arrive with the head.
        timer: Option<Pin<Box<Sleep>>>,
    },
}

impl ProxyBody {
    /// A complete body.
    pub fn full(bytes: Bytes) -> Self {
        ProxyBody {
            inner: Inner::Full(Some(bytes)),
        }
    }

    /// No body.
    pub fn empty() -> Self {
        ProxyBody {
            inner: Inner::Full(None),
        }
    }

    pub(super) fn upstream(body: Incoming, pick: Pick, lease: Lease, idle: Duration) -> Self {
        ProxyBody {
            inner: Inner::Upstream {
                body,
                pick: Some(pick),
                lease: Some(lease),
                idle,
                timer: None,
            },
        }
    }
}

impl Drop for ProxyBody {
    /// hyper stops polling a body whose length says it has ended, so the `None` that releases
    /// the connection may never be polled: a body dropped at its end releases it too. A body
    /// dropped before its end (client gone) closes the connection with the lease.
    fn drop(&mut self) {
        if let Inner::Upstream { body, lease, .. } = &mut self.inner {
            if body.is_end_stream() {
                if let Some(l) = lease.take() {
                    l.release();
                }
            }
        }
    }
}

impl Body for ProxyBody {
    type Data = Bytes;
    type Error = Box<dyn StdError + Send + Sync>;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut TaskContext<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        match &mut self.get_mut().inner {
            Inner::Full(b) => Poll::Ready(b.take().map(|b| Ok(Frame::data(b)))),
            Inner::Upstream {
                body,
                pick,
                lease,
                idle,
                timer,
            } => match Pin::new(body).poll_frame(cx) {
                Poll::Ready(Some(Ok(frame))) => {
                    if let Some(t) = timer {
                        t.as_mut().reset(tokio::time::Instant::now() + *idle);
                    }
                    Poll::Ready(Some(Ok(frame)))
                }
                Poll::Ready(Some(Err(e))) => {
                    lease.take();
                    if let Some(p) = pick.take() {
                        p.failure();
                    }
                    Poll::Ready(Some(Err(e.into())))
                }
                Poll::Ready(None) => {
                    if let Some(l) = lease.take() {
                        l.release();
                    }
                    pick.take();
                    Poll::Ready(None)
                }
                Poll::Pending => {
                    if pick.is_none() {
                        return Poll::Pending;
                    }
                    let t = timer.get_or_insert_with(|| Box::pin(tokio::time::sleep(*idle)));
                    if t.as_mut().poll(cx).is_ready() {
                        lease.take();
                        if let Some(p) = pick.take() {
                            p.failure();
                        }
                        return Poll::Ready(Some(Err("upstream read timed out".into())));
                    }
                    Poll::Pending
                }
            },
        }
    }

    fn is_end_stream(&self) -> bool {
        match &self.inner {
            Inner::Full(b) => b.is_none(),
            Inner::Upstream { body, .. } => body.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match &self.inner {
            Inner::Full(Some(b)) => SizeHint::with_exact(b.len() as u64),
            Inner::Full(None) => SizeHint::with_exact(0),
            Inner::Upstream { body, .. } => body.size_hint(),
        }
    }
}
