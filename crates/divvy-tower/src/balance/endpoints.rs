//! The per-backend services of one backend set, keyed by backend identity.

use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};

use divvy::{Backend, Balancer, Strategy};

use super::MakeEndpoint;

/// The services of the set published as `version`, by [`Backend::key`].
pub(crate) struct Endpoints<Svc> {
    pub(crate) version: u64,
    services: HashMap<u64, Svc, BuildHasherDefault<KeyHasher>>,
}

impl<Svc> Endpoints<Svc> {
    pub(crate) fn len(&self) -> usize {
        self.services.len()
    }

    #[inline]
    pub(crate) fn get(&self, backend: &Backend) -> Option<&Svc> {
        self.get_key(backend.key())
    }

    /// The service of the backend with this [`Backend::key`].
    #[inline]
    pub(crate) fn get_key(&self, key: u64) -> Option<&Svc> {
        self.services.get(&key)
    }
}

impl<Svc: Clone> Endpoints<Svc> {
    /// The services of `balancer`'s current set: those of `previous` for backends that stay,
    /// new ones from `maker` for backends that joined.
    pub(crate) fn build<S, M>(
        balancer: &Balancer<S>,
        maker: &mut M,
        previous: Option<&Endpoints<Svc>>,
    ) -> Self
    where
        S: Strategy,
        M: MakeEndpoint<Service = Svc>,
    {
        // The version and the set are two loads; retry until they agree (versions only grow,
        // so equal versions around the read mean the set did not change in between).
        let (version, backends) = loop {
            let before = balancer.version();
            let backends = balancer.backends();
            if balancer.version() == before {
                break (before, backends);
            }
        };
        let mut services =
            HashMap::with_capacity_and_hasher(backends.len(), BuildHasherDefault::default());
        for b in backends.iter() {
            let svc = match previous.and_then(|p| p.services.get(&b.key())) {
                Some(svc) => svc.clone(),
                None => maker.make_endpoint(b),
            };
            services.insert(b.key(), svc);
        }
        Endpoints { version, services }
    }
}

/// [`Backend::key`] is already a good 64-bit hash (XXH3): hash it as itself.
#[derive(Default)]
pub(crate) struct KeyHasher(u64);

impl Hasher for KeyHasher {
    #[inline]
    fn finish(&self) -> u64 {
        self.0
    }

    #[inline]
    fn write_u64(&mut self, n: u64) {
        self.0 = n;
    }

    fn write(&mut self, bytes: &[u8]) {
        // Not used for u64 keys; fold anything else so the hasher is still correct.
        for &b in bytes {
            self.0 = self.0.rotate_left(8) ^ u64::from(b);
        }
    }
}
