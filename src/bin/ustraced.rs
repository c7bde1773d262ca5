//! `ustraced`: the session daemon.

use clap::Parser;
use std::process::ExitCode;
use ustrace::daemon::Daemon;
use ustrace::service::access::ControlAccess;
use ustrace::service::{ConfigSource, DaemonArgs};

fn main() -> ExitCode {
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("info")).init();
    let args = DaemonArgs::parse();
    let source = ConfigSource::resolve(args.config, std::env::var_os("USTRACE_CONFIG"));
    let started = source.load().map_err(|e| e.to_string()).and_then(|config| {
        let access = ControlAccess::resolve(args.group.as_deref()).map_err(|e| e.to_string())?;
        Daemon::new(config)
            .control_access(access)
            .reload_from(source)
            .run()
            .map_err(|e| e.to_string())
    });
    match started {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("ustraced: {e}");
            ExitCode::FAILURE
        }
    }
}
