//! Making one service per backend.

use divvy::Backend;

/// Makes the service that sends requests to one backend.
///
/// [`Balance`](super::Balance) calls it once when a backend first appears in the set and keeps
/// the service until the backend leaves; changes of weight, tier, zone or state keep it. Each
/// request clones the backend's service and drives it to readiness inside the response future,
/// so the service should be cheap to clone (an `Arc` inside, as hyper-util's `Client`, or a
/// tower `Buffer`).
///
/// Any `FnMut(&Backend) -> Svc` is a maker; [`HttpEndpoints`](crate::endpoint::HttpEndpoints)
/// is the maker for one shared HTTP client.
pub trait MakeEndpoint {
    /// The per-backend service.
    type Service;

    /// The service for `backend`.
    fn make_endpoint(&mut self, backend: &Backend) -> Self::Service;
}

impl<F, Svc> MakeEndpoint for F
where
    F: FnMut(&Backend) -> Svc,
{
    type Service = Svc;

    fn make_endpoint(&mut self, backend: &Backend) -> Svc {
        self(backend)
    }
}
