//! `ustraced`: the session daemon.

use clap::Parser;
use std::path::PathBuf;
use std::process::ExitCode;
use ustrace::config::Config;
use ustrace::daemon::Daemon;

/// The ustrace session daemon.
#[derive(Parser)]
#[command(name = "ustraced", version, about)]
struct Args {
    /// Config file (default: $USTRACE_CONFIG, else built-in defaults; see config/ustraced.toml).
    #[arg(long, short)]
    config: Option<PathBuf>,
}

fn main() -> ExitCode {
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("info")).init();
    let args = Args::parse();
    let path = args
        .config
        .or_else(|| std::env::var_os("USTRACE_CONFIG").map(PathBuf::from));
    let config = match path {
        Some(path) => match Config::load(&path) {
            Ok(config) => config,
            Err(e) => {
                eprintln!("ustraced: {e}");
                return ExitCode::FAILURE;
            }
        },
        None => Config::default(),
    };
    match Daemon::new(config).run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("ustraced: {e}");
            ExitCode::FAILURE
        }
    }
}
