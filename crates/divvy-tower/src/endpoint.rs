//! One HTTP client, many backends: the endpoint maker for a shared client.
//!
//! An HTTP client such as hyper-util's `Client` is one service for every host: the request's
//! URI says where it goes. [`HttpEndpoints`] makes, for each backend, an [`HttpEndpoint`] that
//! shares the client (clones of it share its connection pool) and points each request at the
//! backend by rewriting the URI's scheme and authority; the path and query are kept. A request
//! with an origin-form URI (`/path?q`, as a server receives it) is thus forwarded as
//! `http://<backend>/path?q`. The `Host` header is left as it is.

use std::fmt;
use std::task::{Context, Poll};

use bytes::Bytes;
use divvy::Backend;
use futures_util::future::{MapErr, TryFutureExt};
use http::uri::{Authority, PathAndQuery, Scheme, Uri};
use tower::BoxError;
use tower_service::Service;

use crate::balance::MakeEndpoint;
use crate::error::InvalidAuthority;

/// Makes an [`HttpEndpoint`] per backend over one shared client `S`; see the
/// [module docs](self).
#[derive(Clone, Debug)]
pub struct HttpEndpoints<S> {
    inner: S,
    scheme: Scheme,
}

impl<S> HttpEndpoints<S> {
    /// Sends requests to `http://<backend id>`.
    pub const fn new(client: S) -> Self {
        HttpEndpoints {
            inner: client,
            scheme: Scheme::HTTP,
        }
    }

    /// Sends requests to `https://<backend id>` (the client must speak TLS).
    pub const fn https(client: S) -> Self {
        HttpEndpoints {
            inner: client,
            scheme: Scheme::HTTPS,
        }
    }

    /// The client.
    pub fn get_ref(&self) -> &S {
        &self.inner
    }

    /// The client, mutably.
    pub fn get_mut(&mut self) -> &mut S {
        &mut self.inner
    }

    /// The client.
    pub fn into_inner(self) -> S {
        self.inner
    }
}

impl<S: Clone> MakeEndpoint for HttpEndpoints<S> {
    type Service = HttpEndpoint<S>;

    fn make_endpoint(&mut self, backend: &Backend) -> HttpEndpoint<S> {
        HttpEndpoint::new(self.inner.clone(), self.scheme.clone(), backend)
    }
}

/// The client `S`, pointed at one backend: each request's URI gets the backend's scheme and
/// authority. A backend whose identity is not a `host:port` authority fails readiness with
/// [`InvalidAuthority`].
#[derive(Clone)]
pub struct HttpEndpoint<S> {
    inner: S,
    scheme: Scheme,
    authority: Result<Authority, InvalidAuthority>,
}

impl<S> HttpEndpoint<S> {
    /// `client`, pointed at `scheme://<backend id>`. The authority is parsed once, here.
    pub fn new(client: S, scheme: Scheme, backend: &Backend) -> Self {
        let authority =
            Authority::from_maybe_shared(Bytes::copy_from_slice(backend.id().as_bytes()))
                .map_err(|_| InvalidAuthority::new(backend.id_arc().clone()));
        HttpEndpoint {
            inner: client,
            scheme,
            authority,
        }
    }

    /// The client.
    pub fn get_ref(&self) -> &S {
        &self.inner
    }

    /// The client, mutably.
    pub fn get_mut(&mut self) -> &mut S {
        &mut self.inner
    }

    /// The client.
    pub fn into_inner(self) -> S {
        self.inner
    }
}

impl<S, B> Service<http::Request<B>> for HttpEndpoint<S>
where
    S: Service<http::Request<B>>,
    S::Error: Into<BoxError>,
{
    type Response = S::Response;
    type Error = BoxError;
    type Future = MapErr<S::Future, fn(S::Error) -> BoxError>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        if let Err(e) = &self.authority {
            return Poll::Ready(Err(e.clone().into()));
        }
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, mut request: http::Request<B>) -> Self::Future {
        // Readiness refused an invalid authority, so a caller that honours `poll_ready` never
        // gets here without one; one that does not sends the request unchanged.
        if let Ok(authority) = &self.authority {
            let mut parts = std::mem::take(request.uri_mut()).into_parts();
            parts.scheme = Some(self.scheme.clone());
            parts.authority = Some(authority.clone());
            if parts.path_and_query.is_none() {
                parts.path_and_query = Some(PathAndQuery::from_static("/"));
            }
            // Cannot fail: scheme, authority and path are all set.
            if let Ok(uri) = Uri::from_parts(parts) {
                *request.uri_mut() = uri;
            }
        }
        self.inner.call(request).map_err(Into::into)
    }
}

impl<S: fmt::Debug> fmt::Debug for HttpEndpoint<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HttpEndpoint")
            .field("inner", &self.inner)
            .field("scheme", &self.scheme)
            .field("authority", &self.authority)
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::convert::Infallible;
    use tower::{service_fn, ServiceExt};

    async fn uri_seen(backend: &str, uri: &str) -> Result<String, BoxError> {
        let client = service_fn(|req: http::Request<()>| async move {
            Ok::<_, Infallible>(req.uri().to_string())
        });
        let mut make = HttpEndpoints::new(client);
        let svc = make.make_endpoint(&Backend::new(backend));
        svc.oneshot(http::Request::get(uri).body(()).unwrap()).await
    }

    #[tokio::test]
    async fn an_origin_form_uri_is_pointed_at_the_backend_keeping_path_and_query() {
        assert_eq!(
            uri_seen("127.0.0.1:8081", "/a/b?c=1").await.unwrap(),
            "http://127.0.0.1:8081/a/b?c=1"
        );
    }

    #[tokio::test]
    async fn an_absolute_uri_gets_the_backend_authority_instead_of_its_own() {
        assert_eq!(
            uri_seen("app.internal:80", "https://example.com/x")
                .await
                .unwrap(),
            "http://app.internal:80/x"
        );
    }

    #[tokio::test]
    async fn an_identity_that_is_no_authority_fails_readiness_with_a_typed_error() {
        let e = uri_seen("not an authority", "/").await.unwrap_err();
        let e = e
            .downcast_ref::<InvalidAuthority>()
            .expect("InvalidAuthority");
        assert_eq!(e.id(), "not an authority");
    }
}
