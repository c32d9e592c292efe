//! The `spoa-guard` command: parses the command line and hands over — `serve` (the
//! default) to [`spoa_guard::serve::run`], every other command to [`spoa_guard::cli`].

#![forbid(unsafe_code)]

use std::process::ExitCode;

use clap::Parser;
use spoa_guard::cli::Cli;

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
