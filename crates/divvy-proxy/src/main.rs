//! The `divvy-proxy` binary: the proxy's command line (see [`divvy_proxy::cli`]).

use std::process::ExitCode;

/// mimalloc instead of glibc malloc: hyper takes a fresh read buffer for every request head (the
/// parsed headers keep the old one alive), and mimalloc serves those allocations in about half
/// the time (docs/PROXY.md, Performance).
#[global_allocator]
static ALLOC: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    divvy_proxy::cli::run(std::env::args())
}
