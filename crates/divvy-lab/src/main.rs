//! The `divvy-lab` binary: the strategy lab's command line (see [`divvy_lab::cli`]).

use std::process::ExitCode;

fn main() -> ExitCode {
    divvy_lab::cli::run(std::env::args())
}
