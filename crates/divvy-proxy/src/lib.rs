//! divvy-proxy: a reverse proxy and load balancer on hyper 1.x, routing with divvy.
//!
//! The library is the whole proxy; the `divvy-proxy` binary and `cargo run --example proxy` are
//! [`cli::run`] over the process arguments:
//!
//! ```text
//! cargo run -p divvy-proxy                                        # embedded demo: 3 backends + proxy
//! cargo run -p divvy-proxy -- --config examples/proxy.toml        # a real config
//! cargo run -p divvy-proxy -- --config examples/proxy.toml --check   # validate, like `nginx -t`
//! ```
//!
//! Embedding it: [`config::parse`] (or [`config::load`]) checks TOML text into a
//! [`config::Config`] and reports every error with `file:line:column`; [`server::start`] serves a
//! config and returns a [`server::Running`] handle that reloads and shuts down.
//!
//! Layout: `config` (the data, and the checker from TOML), `route` (host / path → upstream),
//! `upstream` + `balancer` (a divvy `Balancer` per upstream), `discovery` (servers from etcd or
//! DNS), `forward` (one request), `pool`
//! (keep-alive connections to backends), `server` (listeners, reload, shutdown), `admin`
//! (`/status`, `/metrics`), `health` (active checks), `sticky` (cookie and hash keys), `demo`,
//! `cli`. See `docs/PROXY.md` for every config field.

#![forbid(unsafe_code)]
#![warn(
    missing_docs,
    missing_debug_implementations,
    rust_2018_idioms,
    unreachable_pub
)]

pub mod admin;
pub mod balancer;
pub mod cli;
pub mod config;
pub mod demo;
pub mod discovery;
pub mod forward;
pub mod health;
pub mod pool;
pub mod route;
pub mod server;
pub mod sticky;
pub mod upstream;
