//! `ustrace`: the control CLI.

use clap::Parser;
use std::process::ExitCode;

fn main() -> ExitCode {
    ustrace::cli::Cli::parse().run()
}
