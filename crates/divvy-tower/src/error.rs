//! divvy's own failures, as small error structs.
//!
//! Every error a [`Balance`](crate::Balance) returns is a [`tower::BoxError`]. It is one of:
//!
//! - [`NoBackendAvailable`]: the pick failed before any backend was tried (a proxy answers 503);
//! - [`BackendFailed`]: the backend's service failed (a proxy answers 502); the service's own
//!   error is its [`source`](std::error::Error::source), and the failed backend is named so that
//!   logs and retry policies know which one it was.
//!
//! ```
//! use divvy_tower::error::{BackendFailed, NoBackendAvailable};
//!
//! fn status_for(error: &tower::BoxError) -> u16 {
//!     if error.is::<NoBackendAvailable>() {
//!         503
//!     } else if error.is::<BackendFailed>() {
//!         502
//!     } else {
//!         500
//!     }
//! }
//! # let _ = status_for;
//! ```

use std::error::Error;
use std::fmt;

use divvy::{Backend, PickError};
use tower::BoxError;

/// No backend could take the request: every backend is down, ejected, draining, at its
/// in-flight limit, or already tried by this request. Returned at once, without waiting.
///
/// Its [`source`](Error::source) is divvy's [`PickError`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NoBackendAvailable {
    source: PickError,
}

impl NoBackendAvailable {
    pub(crate) fn new(source: PickError) -> Self {
        NoBackendAvailable { source }
    }

    /// Why the pick failed.
    pub fn pick_error(&self) -> &PickError {
        &self.source
    }
}

impl fmt::Display for NoBackendAvailable {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("no backend available")
    }
}

impl Error for NoBackendAvailable {
    fn source(&self) -> Option<&(dyn Error + 'static)> {
        Some(&self.source)
    }
}

/// The service of one backend failed: a connect error, a reset, a timeout inside the endpoint.
///
/// Its [`source`](Error::source) is the service's own error, so a caller that wants it
/// downcasts the source (`e.source().and_then(|s| s.downcast_ref::<hyper_util::…::Error>())`).
pub struct BackendFailed {
    backend: Backend,
    source: BoxError,
}

impl BackendFailed {
    pub(crate) fn new(backend: Backend, source: BoxError) -> Self {
        BackendFailed { backend, source }
    }

    /// The backend whose service failed.
    pub fn backend(&self) -> &Backend {
        &self.backend
    }

    /// The service's error, owned.
    pub fn into_source(self) -> BoxError {
        self.source
    }
}

impl fmt::Debug for BackendFailed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BackendFailed")
            .field("backend", &self.backend.id())
            .field("source", &self.source)
            .finish()
    }
}

impl fmt::Display for BackendFailed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "backend `{}` failed", self.backend.id())
    }
}

impl Error for BackendFailed {
    fn source(&self) -> Option<&(dyn Error + 'static)> {
        Some(&*self.source)
    }
}

/// A backend's identity is not a valid URI authority (`host:port`), so an
/// [`HttpEndpoint`](crate::endpoint::HttpEndpoint) cannot address it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct InvalidAuthority {
    id: std::sync::Arc<str>,
}

impl InvalidAuthority {
    pub(crate) fn new(id: std::sync::Arc<str>) -> Self {
        InvalidAuthority { id }
    }

    /// The backend identity that failed to parse.
    pub fn id(&self) -> &str {
        &self.id
    }
}

impl fmt::Display for InvalidAuthority {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "backend `{}`: identity is not a valid `host:port` authority",
            self.id
        )
    }
}

impl Error for InvalidAuthority {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backend_failed_names_the_backend_and_keeps_the_cause_as_source() {
        let cause = std::io::Error::new(std::io::ErrorKind::ConnectionRefused, "refused");
        let e = BackendFailed::new(Backend::new("10.0.0.1:80"), cause.into());
        assert_eq!(e.to_string(), "backend `10.0.0.1:80` failed");
        let source = e.source().expect("a source");
        let io = source
            .downcast_ref::<std::io::Error>()
            .expect("the io error");
        assert_eq!(io.kind(), std::io::ErrorKind::ConnectionRefused);
    }

    #[test]
    fn no_backend_available_has_the_pick_error_as_source() {
        let e = NoBackendAvailable::new(PickError::NoneAvailable { total: 3 });
        let source = e.source().and_then(|s| s.downcast_ref::<PickError>());
        assert_eq!(source, Some(&PickError::NoneAvailable { total: 3 }));
    }
}
