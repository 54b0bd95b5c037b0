//! The proxy, run in-process (and as the `divvy-proxy` binary) against real loopback backends,
//! one module per concern. Every wait has a deadline ([`divvy_test::DEADLINE`]) and every load
//! loop a fixed request count.

mod admin;
mod check;
mod cli;
mod headers;
mod pool;
mod reload;
mod retry;
mod routing;
mod servers;
mod sticky;
mod support;
mod timeouts;
