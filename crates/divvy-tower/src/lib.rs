//! # divvy-tower
//!
//! [divvy]'s balancer as [tower] middleware, with active health checks and DNS discovery
//! on tokio.
//!
//! Wrap a client with [`BalanceLayer`]: each request goes to the backend the strategy picks,
//! counts as in flight until its response body ends, and reports its outcome to passive health.
//! With [`RetryPolicy`], a failed idempotent request is retried on a backend it has not tried.
//!
//! ```no_run
//! use bytes::Bytes;
//! use divvy::{strategy::RoundRobin, Backend, Balancer};
//! use divvy_tower::{extract::ClientIp, BalanceLayer, HttpClassify, HttpEndpoints, RetryPolicy};
//! use http_body_util::Empty;
//! use hyper_util::{client::legacy::Client, rt::TokioExecutor};
//! use tower::{retry::RetryLayer, Service, ServiceBuilder, ServiceExt};
//!
//! # async fn run() -> Result<(), tower::BoxError> {
//! let backends = ["127.0.0.1:8081", "127.0.0.1:8082"].map(Backend::new);
//! let lb = Balancer::new(RoundRobin::new(), backends)?;
//! let client = Client::builder(TokioExecutor::new()).build_http::<Empty<Bytes>>();
//!
//! let mut svc = ServiceBuilder::new()
//!     .layer(RetryLayer::new(RetryPolicy::new(3)))
//!     .layer(BalanceLayer::new(lb, ClientIp::new(), HttpClassify::new()))
//!     .service(HttpEndpoints::new(client));
//!
//! let request = http::Request::get("/hello").body(Empty::new())?;
//! let response = svc.ready().await?.call(request).await?;
//! println!("{} from {}", response.status(), response.body().backend());
//! # Ok(())
//! # }
//! ```
//!
//! | module | what it holds |
//! |---|---|
//! | [`balance`] | [`Balance`], [`BalanceLayer`], [`MakeEndpoint`]: the middleware |
//! | [`extract`] | what a request tells the strategy: client IP, header, cookie, path, sticky cookie |
//! | [`classify`] | which outcomes are failures (default: transport errors and 5xx) |
//! | [`track`] | how long a request holds its backend (HTTP: until the body ends) |
//! | [`retry`] | retries on another backend, as a tower retry policy |
//! | [`endpoint`] | one shared HTTP client pointed at each backend |
//! | [`health`] | active health checks (TCP, HTTP) feeding the registry's rise/fall |
//! | `discover` | DNS discovery (A/AAAA, SRV), behind the `dns` feature; etcd discovery and lease-based self-registration, behind the `etcd` feature |
//! | [`error`] | [`NoBackendAvailable`](error::NoBackendAvailable), [`BackendFailed`](error::BackendFailed) |

#![forbid(unsafe_code)]
#![warn(
    missing_docs,
    missing_debug_implementations,
    rust_2018_idioms,
    unreachable_pub
)]

pub mod balance;
pub mod classify;
#[cfg(any(feature = "dns", feature = "etcd"))]
pub mod discover;
pub mod endpoint;
pub mod error;
pub mod extract;
pub mod health;
pub mod retry;
pub mod track;

pub use balance::{Balance, BalanceLayer, MakeEndpoint};
pub use classify::{Classify, HttpClassify};
#[cfg(feature = "dns")]
pub use discover::{DiscoveryHandle, DnsDiscovery};
pub use endpoint::HttpEndpoints;
pub use extract::{Extract, RequestKey};
pub use health::{HealthCheckHandle, HealthChecker};
pub use retry::RetryPolicy;
pub use track::PickBody;

pub use divvy;
