//! Self-registration: a backend's record under a lease that a task keeps alive.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use divvy::AdminState;
use etcd_client::{Client, PutOptions};
use parking_lot::Mutex;

use super::client::{bounded, connect};
use super::error::EtcdError;
use super::record::Record;
use crate::health::handle::{Background, Stop};

/// A backend's own entry in etcd: its [`Record`] put at a key under a lease, which a task keeps
/// alive for as long as the backend runs.
///
/// - A backend that **crashes** stops renewing its lease; etcd deletes the key when the lease's
///   TTL runs out, and every [`EtcdDiscovery`](super::EtcdDiscovery) watching the prefix drops
///   it (the DNS-TTL failover of nginx-era setups, done with a lease).
/// - A backend that **shuts down** calls [`RegistrationHandle::deregister`]: its record is
///   rewritten with state `drain` (balancers stop sending it new requests, requests in flight
///   finish), and after [`drain_for`](Self::drain_for) the lease is revoked, deleting the key.
/// - While etcd is **unreachable** the task keeps trying; if the lease expired meanwhile, it
///   grants a new one and puts the record again.
///
/// ```no_run
/// use std::time::Duration;
/// use divvy_tower::discover::{Record, Registration};
///
/// # async fn run() -> Result<(), Box<dyn std::error::Error>> {
/// let mut reg = Registration::new(
///     ["http://127.0.0.1:2379"],
///     "/divvy/web/10.0.0.7:8080",
///     Record::new("10.0.0.7:8080"),
/// );
/// reg.ttl(Duration::from_secs(5));
/// let registered = reg.register().await?;
/// // … serve until asked to stop …
/// registered.deregister().await?;
/// # Ok(())
/// # }
/// ```
#[derive(Clone, Debug)]
pub struct Registration {
    endpoints: Arc<[Arc<str>]>,
    key: Arc<str>,
    record: Record,
    ttl: Duration,
    drain: Duration,
    timeout: Duration,
}

/// What the keep-alive task and [`RegistrationHandle::deregister`] share: the lease in force and
/// the record to put again should it have to be re-granted.
#[derive(Debug)]
struct Current {
    lease: i64,
    record: Record,
}

impl Registration {
    /// Registers `record` at `key` (conventionally the discovery prefix followed by the address,
    /// `/divvy/web/10.0.0.7:8080`) in the etcd cluster at `endpoints`.
    pub fn new<E: AsRef<str>>(
        endpoints: impl IntoIterator<Item = E>,
        key: impl Into<Arc<str>>,
        record: Record,
    ) -> Self {
        Registration {
            endpoints: endpoints.into_iter().map(|e| e.as_ref().into()).collect(),
            key: key.into(),
            record,
            ttl: Duration::from_secs(10),
            drain: Duration::from_secs(5),
            timeout: Duration::from_secs(5),
        }
    }

    /// The lease's time to live: how long after a crash the key disappears. Rounded up to whole
    /// seconds (etcd's unit), at least 1 s; the lease is renewed every third of it. Default is
    /// 10 s.
    pub fn ttl(&mut self, ttl: Duration) -> &mut Self {
        self.ttl = ttl;
        self
    }

    /// How long [`deregister`](RegistrationHandle::deregister) leaves the record in state
    /// `drain` before deleting it, so that requests in flight finish. Default is 5 s.
    pub fn drain_for(&mut self, drain: Duration) -> &mut Self {
        self.drain = drain;
        self
    }

    /// How long each request to etcd waits for an answer. Default is 5 s.
    pub fn timeout(&mut self, timeout: Duration) -> &mut Self {
        self.timeout = timeout;
        self
    }

    fn ttl_secs(&self) -> i64 {
        let s = self.ttl.as_secs() + u64::from(self.ttl.subsec_nanos() > 0);
        s.clamp(1, i64::MAX as u64) as i64
    }

    /// Grants a lease, puts the record under it, and starts the task that keeps it alive.
    ///
    /// # Errors
    ///
    /// An [`EtcdError`] when etcd cannot be reached or refuses; nothing is registered then.
    ///
    /// # Panics
    ///
    /// When called outside a tokio runtime, as [`tokio::spawn`].
    pub async fn register(&self) -> Result<RegistrationHandle, EtcdError> {
        let mut client = connect(&self.endpoints, self.timeout).await?;
        let lease = self.grant_and_put(&mut client, &self.record).await?;
        let current = Arc::new(Mutex::new(Current {
            lease,
            record: self.record.clone(),
        }));
        let this = self.clone();
        let c = current.clone();
        let inner = Background::spawn(move |stop| keep_alive(this, client, c, stop));
        Ok(RegistrationHandle {
            inner,
            current,
            config: self.clone(),
        })
    }

    async fn grant_and_put(&self, client: &mut Client, record: &Record) -> Result<i64, EtcdError> {
        let lease = bounded(
            "lease grant",
            self.timeout,
            client.lease_grant(self.ttl_secs(), None),
        )
        .await?
        .id();
        self.put(client, record, lease).await?;
        tracing::info!(key = %self.key, lease, "registered in etcd");
        Ok(lease)
    }

    async fn put(&self, client: &mut Client, record: &Record, lease: i64) -> Result<(), EtcdError> {
        let options = PutOptions::new().with_lease(lease);
        bounded(
            "put",
            self.timeout,
            client.put(self.key.as_bytes(), record.to_json(), Some(options)),
        )
        .await?;
        Ok(())
    }
}

/// A registered backend, from [`Registration::register`].
///
/// Dropping it stops renewing the lease without deleting the key, which then disappears after
/// the TTL, as after a crash; [`deregister`](Self::deregister) drains and deletes it at once.
#[must_use = "dropping the handle stops renewing the lease"]
#[derive(Debug)]
pub struct RegistrationHandle {
    inner: Background,
    current: Arc<Mutex<Current>>,
    config: Registration,
}

impl RegistrationHandle {
    /// The lease the record is held under now (a new one after etcd lost the first).
    pub fn lease(&self) -> i64 {
        self.current.lock().lease
    }

    /// Whether the keep-alive task has ended (after a panic; it retries every failure).
    pub fn is_finished(&self) -> bool {
        self.inner.is_finished()
    }

    /// Deregisters gracefully: rewrites the record with state `drain`, keeps the lease alive for
    /// the drain period, then revokes the lease, which deletes the key.
    ///
    /// # Errors
    ///
    /// An [`EtcdError`] when etcd cannot be reached; the lease then expires after its TTL, and
    /// the key with it.
    pub async fn deregister(self) -> Result<(), EtcdError> {
        let RegistrationHandle {
            inner,
            current,
            config,
        } = self;
        let (lease, record) = {
            let mut c = current.lock();
            // A lease re-granted from now on puts the draining record, not the serving one.
            c.record.state = AdminState::Drain;
            (c.lease, c.record.clone())
        };
        let mut client = connect(&config.endpoints, config.timeout).await?;
        config.put(&mut client, &record, lease).await?;
        tracing::info!(key = %config.key, "draining before deregistering from etcd");
        tokio::time::sleep(config.drain).await;
        inner.shutdown().await;
        let lease = current.lock().lease;
        bounded("lease revoke", config.timeout, client.lease_revoke(lease)).await?;
        tracing::info!(key = %config.key, "deregistered from etcd");
        Ok(())
    }
}

/// Renews the lease every third of its TTL; on a failure, waits a second and tries again on a
/// new connection; when etcd no longer knows the lease, grants a new one and puts the record.
async fn keep_alive(
    config: Registration,
    client: Client,
    current: Arc<Mutex<Current>>,
    mut stop: Stop,
) {
    let mut client = Some(client);
    loop {
        let error = tokio::select! {
            biased;
            _ = &mut stop => return,
            e = renew(&config, &mut client, &current) => e,
        };
        client = None;
        tracing::warn!(key = %config.key, %error, "etcd lease renewal failed; retrying");
        tokio::select! {
            biased;
            _ = &mut stop => return,
            () = tokio::time::sleep(Duration::from_secs(1)) => {}
        }
    }
}

/// Keeps the current lease alive until something fails; only returns on failure.
async fn renew(
    config: &Registration,
    client: &mut Option<Client>,
    current: &Mutex<Current>,
) -> EtcdError {
    let result: Result<Infallible, EtcdError> = async {
        let c = match client {
            Some(c) => c,
            None => client.insert(connect(&config.endpoints, config.timeout).await?),
        };
        let lease = current.lock().lease;
        let (mut keeper, mut responses) = bounded(
            "lease keep-alive",
            config.timeout,
            c.lease_keep_alive(lease),
        )
        .await?;
        let every = Duration::from_secs(config.ttl_secs() as u64) / 3;
        loop {
            keeper
                .keep_alive()
                .await
                .map_err(EtcdError::request("lease keep-alive"))?;
            let resp = match tokio::time::timeout(config.timeout, responses.message()).await {
                Ok(r) => r.map_err(EtcdError::request("lease keep-alive"))?,
                Err(_) => {
                    return Err(EtcdError::Timeout {
                        op: "lease keep-alive",
                        timeout: config.timeout,
                    })
                }
            };
            if resp.is_none_or(|r| r.ttl() <= 0) {
                // The lease expired while etcd was out of reach (or was revoked by hand): the key
                // went with it. Register again under a new lease.
                let record = current.lock().record.clone();
                let renewed = config.grant_and_put(c, &record).await?;
                current.lock().lease = renewed;
                return Err(EtcdError::LeaseExpired {
                    key: config.key.clone(),
                    lease,
                });
            }
            tokio::time::sleep(every.max(Duration::from_millis(100))).await;
        }
    }
    .await;
    match result {
        Ok(never) => match never {},
        Err(e) => e,
    }
}
