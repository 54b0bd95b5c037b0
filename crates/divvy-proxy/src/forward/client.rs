//! What the client did wrong while its request was forwarded: the request body it streams can
//! break, be invalid or stall, and none of that is the backend's fault.
//!
//! The client's body is streamed to the backend by the pool's connection, so a broken client
//! body surfaces as a failed backend request. [`ClientBody`] notes the client's fault in a
//! [`Watch`] as it happens; the try then asks the watch before blaming the backend, and answers
//! as nginx does: 400 for an invalid body, 408 for a body too slow to arrive, 499 (nginx's
//! "client closed request", logged only) for a client that went away.

use std::error::Error as StdError;
use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::Arc;
use std::task::{Context as TaskContext, Poll};
use std::time::Duration;

use bytes::Bytes;
use http::StatusCode;
use http_body::{Body, Frame, SizeHint};
use hyper::body::Incoming;
use tokio::time::Sleep;

/// A client's fault while its request body was read.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ClientFault {
    /// The body was not valid HTTP framing (a bad chunk size, say): 400.
    Invalid,
    /// The body paused longer than `client.body_timeout`: 408.
    TooSlow,
    /// The client closed or reset its connection mid-body: 499.
    Aborted,
}

impl ClientFault {
    /// The status the client gets (and the access log shows), as nginx.
    pub fn status(self) -> StatusCode {
        match self {
            ClientFault::Invalid => StatusCode::BAD_REQUEST,
            ClientFault::TooSlow => StatusCode::REQUEST_TIMEOUT,
            ClientFault::Aborted => CLIENT_CLOSED_REQUEST,
        }
    }

    /// What went wrong, from the error the client's body stream returned: framing errors are
    /// the client's invalid body; anything else (EOF, reset, an incomplete message) is the client
    /// going away.
    fn of(error: &hyper::Error) -> ClientFault {
        let mut cur: Option<&(dyn StdError + 'static)> = Some(error);
        while let Some(e) = cur {
            if let Some(io) = e.downcast_ref::<io::Error>() {
                if matches!(
                    io.kind(),
                    io::ErrorKind::InvalidData | io::ErrorKind::InvalidInput
                ) {
                    return ClientFault::Invalid;
                }
            }
            cur = e.source();
        }
        ClientFault::Aborted
    }

    fn code(self) -> u8 {
        match self {
            ClientFault::Invalid => 1,
            ClientFault::TooSlow => 2,
            ClientFault::Aborted => 3,
        }
    }
}

/// nginx's non-standard 499 "client closed request", for the access log and metrics.
pub const CLIENT_CLOSED_REQUEST: StatusCode = match StatusCode::from_u16(499) {
    Ok(s) => s,
    Err(_) => StatusCode::BAD_REQUEST,
};

/// The client's first fault, shared between the body and the try that sends it.
#[derive(Debug, Default)]
pub struct Watch(AtomicU8);

impl Watch {
    /// The client's fault, if its body broke.
    pub fn fault(&self) -> Option<ClientFault> {
        // Acquire: the body stores before the backend connection fails the request, and the try
        // reads after that failure arrived.
        match self.0.load(Ordering::Acquire) {
            1 => Some(ClientFault::Invalid),
            2 => Some(ClientFault::TooSlow),
            3 => Some(ClientFault::Aborted),
            _ => None,
        }
    }

    fn set(&self, fault: ClientFault) {
        // The first fault is the cause; later ones are its consequences.
        let _ = self
            .0
            .compare_exchange(0, fault.code(), Ordering::Release, Ordering::Relaxed);
    }
}

/// A request body on its way upstream: nothing (replayable on retry) or the client's stream.
#[derive(Debug)]
pub enum ReqBody {
    /// No body.
    Empty,
    /// The client's body, streamed.
    Stream(ClientBody),
}

/// The client's request body, watched for the client's faults and cut when it stalls.
#[derive(Debug)]
pub struct ClientBody {
    body: Incoming,
    watch: Arc<Watch>,
    idle: Duration,
    /// Armed only when the body has to wait.
    timer: Option<Pin<Box<Sleep>>>,
}

impl ClientBody {
    /// Streams `body`, noting faults in `watch`; a pause longer than `idle` ends it.
    pub fn new(body: Incoming, watch: Arc<Watch>, idle: Duration) -> Self {
        ClientBody {
            body,
            watch,
            idle,
            timer: None,
        }
    }
}

impl Body for ReqBody {
    type Data = Bytes;
    type Error = Box<dyn StdError + Send + Sync>;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut TaskContext<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        let ClientBody {
            body,
            watch,
            idle,
            timer,
        } = match self.get_mut() {
            ReqBody::Empty => return Poll::Ready(None),
            ReqBody::Stream(b) => b,
        };
        match Pin::new(body).poll_frame(cx) {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(t) = timer {
                    t.as_mut().reset(tokio::time::Instant::now() + *idle);
                }
                Poll::Ready(Some(Ok(frame)))
            }
            Poll::Ready(Some(Err(e))) => {
                watch.set(ClientFault::of(&e));
                Poll::Ready(Some(Err(e.into())))
            }
            Poll::Ready(None) => Poll::Ready(None),
            Poll::Pending => {
                let t = timer.get_or_insert_with(|| Box::pin(tokio::time::sleep(*idle)));
                if t.as_mut().poll(cx).is_ready() {
                    watch.set(ClientFault::TooSlow);
                    return Poll::Ready(Some(Err("client body timed out".into())));
                }
                Poll::Pending
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            ReqBody::Empty => true,
            ReqBody::Stream(b) => b.body.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            ReqBody::Empty => SizeHint::with_exact(0),
            ReqBody::Stream(b) => b.body.size_hint(),
        }
    }
}
