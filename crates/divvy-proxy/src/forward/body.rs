//! The response body the proxy streams back, never buffered whole.
//!
//! It carries its request's [`Completion`]: the request counts in flight to its backend until
//! the body ends, and its outcome is reported exactly once. A body that breaks or stalls after
//! a good head turns the head's pending success into one failure; a body the client stops
//! reading (it went away) leaves the success standing, since the backend did its job.

use std::error::Error as StdError;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context as TaskContext, Poll};
use std::time::Duration;

use bytes::Bytes;
use divvy_tower::track::Completion;
use http_body::{Body, Frame, SizeHint};
use hyper::body::Incoming;
use tokio::time::Sleep;

use crate::pool::Lease;

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
        /// In flight until the body ends; reports the outcome once.
        completion: Option<Completion>,
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

    pub(super) fn upstream(
        body: Incoming,
        completion: Completion,
        lease: Lease,
        idle: Duration,
    ) -> Self {
        ProxyBody {
            inner: Inner::Upstream {
                body,
                completion: Some(completion),
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
                completion,
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
                    if let Some(c) = completion.take() {
                        c.fail();
                    }
                    Poll::Ready(Some(Err(e.into())))
                }
                Poll::Ready(None) => {
                    if let Some(l) = lease.take() {
                        l.release();
                    }
                    completion.take();
                    Poll::Ready(None)
                }
                Poll::Pending => {
                    if completion.is_none() {
                        return Poll::Pending;
                    }
                    let t = timer.get_or_insert_with(|| Box::pin(tokio::time::sleep(*idle)));
                    if t.as_mut().poll(cx).is_ready() {
                        lease.take();
                        if let Some(c) = completion.take() {
                            c.fail();
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
