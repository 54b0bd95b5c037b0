//! A response body that holds its request's pick guard until it ends.

use std::fmt;
use std::pin::Pin;
use std::task::{ready, Context, Poll};

use divvy::Backend;
use http_body::{Body, Frame, SizeHint};
use pin_project_lite::pin_project;

use super::Completion;

pin_project! {
    /// A response body that keeps its request in flight until the body ends, fails or is
    /// dropped, whichever comes first.
    ///
    /// Frames, errors and size hints pass through unchanged. The request ends at the first of:
    /// the inner body returns its last frame (or `None`), reports [`is_end_stream`]
    /// after a frame, returns an error (then the outcome becomes a failure), or is dropped.
    /// An empty body (`is_end_stream` at once, as for `HEAD` or `204`) ends the request as soon
    /// as the response head arrives.
    ///
    /// [`is_end_stream`]: Body::is_end_stream
    pub struct PickBody<B> {
        #[pin]
        inner: B,
        completion: Option<Completion>,
        backend: Backend,
    }
}

impl<B: Body> PickBody<B> {
    /// Wraps `inner`; the request ends when the body does.
    pub fn new(inner: B, completion: Completion) -> Self {
        let backend = completion.backend().clone();
        let completion = if inner.is_end_stream() {
            drop(completion);
            None
        } else {
            Some(completion)
        };
        PickBody {
            inner,
            completion,
            backend,
        }
    }
}

impl<B> PickBody<B> {
    /// The backend that sent this response. A proxy reads it to set a sticky cookie or a
    /// header naming the backend; a retry policy, to exclude it.
    pub fn backend(&self) -> &Backend {
        &self.backend
    }

    /// Whether the request still counts as in flight (the body has not ended, failed or been
    /// released).
    pub fn in_flight(&self) -> bool {
        self.completion.is_some()
    }

    /// Ends the request now (reporting its pending outcome), keeping the body.
    pub fn release(&mut self) {
        self.completion = None;
    }

    /// The inner body.
    pub fn get_ref(&self) -> &B {
        &self.inner
    }

    /// The inner body, mutably.
    pub fn get_mut(&mut self) -> &mut B {
        &mut self.inner
    }

    /// The inner body; the request ends here.
    pub fn into_inner(self) -> B {
        self.inner
    }
}

impl<B: Body> Body for PickBody<B> {
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<B::Data>, B::Error>>> {
        let mut this = self.project();
        let frame = ready!(this.inner.as_mut().poll_frame(cx));
        match &frame {
            Some(Ok(_)) => {
                // Consumers such as hyper stop polling once `is_end_stream` says so, without
                // waiting for `None`: end the request on the last frame.
                if this.inner.is_end_stream() {
                    *this.completion = None;
                }
            }
            Some(Err(_)) => {
                if let Some(completion) = this.completion.take() {
                    completion.fail();
                }
            }
            None => *this.completion = None,
        }
        Poll::Ready(frame)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

impl<B> fmt::Debug for PickBody<B> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PickBody")
            .field("backend", &self.backend.id())
            .field("in_flight", &self.completion.is_some())
            .finish_non_exhaustive()
    }
}
