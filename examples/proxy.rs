//! The divvy reverse proxy, as `cargo run --example proxy` from the top of the checkout: the same
//! command line as the `divvy-proxy` binary (see `docs/PROXY.md`).
//!
//! ```text
//! cargo run --example proxy                                          # embedded demo
//! cargo run --example proxy -- --config examples/proxy.toml          # a real config
//! cargo run --example proxy -- --config examples/proxy.toml --check  # validate, like `nginx -t`
//! ```

use std::process::ExitCode;

/// mimalloc instead of glibc malloc, as the `divvy-proxy` binary (docs/PROXY.md, Performance).
#[global_allocator]
static ALLOC: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    divvy_proxy::cli::run(std::env::args())
}
