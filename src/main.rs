//! The `spoa-guard` command: parses the command line and hands over — `serve` (the
//! default) to [`spoa_guard::serve::run`], every other command to [`spoa_guard::cli`].
//!
//! It also picks the process's memory allocator (Cargo features `jemalloc`, the default,
//! and `mimalloc`; neither: the system allocator). jemalloc runs with background threads
//! that give freed pages back to the system within seconds, so the agent's RSS after
//! reloads of large lists and bursts of connections returns near a fresh agent's;
//! BENCHMARKS.md ("Memory given back") has the measurements behind the choice.

#![forbid(unsafe_code)]

use std::process::ExitCode;

use clap::Parser;
use spoa_guard::cli::Cli;

#[cfg(feature = "jemalloc")]
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

#[cfg(all(feature = "mimalloc", not(feature = "jemalloc")))]
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    let cli = Cli::parse();
    if let Some(code) = cli.run_tool() {
        return code;
    }
    match spoa_guard::serve::run(&cli.config) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            // Logging may not be up yet: say it on stderr either way.
            eprintln!("spoa-guard: {err}");
            ExitCode::FAILURE
        }
    }
}
