//! Running `ustraced` as a system service: its command line, where its config file
//! is, readiness for the service manager, who may use `control.sock`, and the man
//! pages and shell completions generated from the command-line definitions.
//!
//! See `docs/service.md`.

pub mod access;
pub mod manual;
pub mod notify;

use crate::config::{Config, ConfigError};
use clap::Parser;
use std::ffi::OsString;
use std::path::{Path, PathBuf};

/// Where a packaged `ustraced` finds its config when neither `--config` nor
/// `$USTRACE_CONFIG` names one. A missing file there means the built-in defaults.
pub const DEFAULT_CONFIG_PATH: &str = "/etc/ustrace/ustraced.toml";

/// The group whose members may control a root daemon when it exists, as LTTng's
/// `tracing` group.
pub const DEFAULT_GROUP: &str = "tracing";

/// The `ustraced` command line. It lives in the library so that `ustrace man`
/// renders `ustraced(8)` from the same definition that parses it.
#[derive(Parser, Debug)]
#[command(
    name = "ustraced",
    version,
    about = "The ustrace session daemon",
    long_about = "The ustrace session daemon: apps register on apps.sock and record into \
shared-memory rings, the CLI controls sessions on control.sock, and the daemon drains the \
rings into CTF 1.8 traces. SIGHUP reloads the supervision limits and the sessions of the \
config file; SIGINT and SIGTERM stop every started session, flushing it, and exit. With \
$NOTIFY_SOCKET set (systemd Type=notify) it sends READY=1 once both sockets accept."
)]
pub struct DaemonArgs {
    /// Config file [default: $USTRACE_CONFIG, else /etc/ustrace/ustraced.toml if it
    /// exists, else built-in defaults].
    #[arg(long, short)]
    pub config: Option<PathBuf>,
    /// Group whose members may control the daemon: control.sock becomes 0660
    /// owner:GROUP. An empty name gives 0600 (the daemon's user only). Default:
    /// `tracing` when that group exists.
    #[arg(long, value_name = "NAME")]
    pub group: Option<String>,
}

/// Where the config comes from: the file to read, and whether its absence is an
/// error (`--config` and `$USTRACE_CONFIG` name a file that must exist; the default
/// path is optional).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigSource {
    /// The file.
    pub path: PathBuf,
    /// Whether a missing file is an error rather than the built-in defaults.
    pub required: bool,
}

impl ConfigSource {
    /// `--config`, else `$USTRACE_CONFIG` (empty counts as unset), else
    /// [`DEFAULT_CONFIG_PATH`].
    pub fn resolve(arg: Option<PathBuf>, env: Option<OsString>) -> ConfigSource {
        match arg.or_else(|| env.filter(|v| !v.is_empty()).map(PathBuf::from)) {
            Some(path) => ConfigSource {
                path,
                required: true,
            },
            None => ConfigSource {
                path: PathBuf::from(DEFAULT_CONFIG_PATH),
                required: false,
            },
        }
    }

    /// Reads the config: the file's, or the built-in defaults when an optional
    /// file does not exist.
    pub fn load(&self) -> Result<Config, ConfigError> {
        if !self.required && !Path::new(&self.path).exists() {
            return Ok(Config::default());
        }
        Config::load(&self.path)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_flag_wins_then_the_environment_then_the_optional_default() {
        let flag = ConfigSource::resolve(Some("a.toml".into()), Some("b.toml".into()));
        assert_eq!(flag.path, PathBuf::from("a.toml"));
        assert!(flag.required);
        let env = ConfigSource::resolve(None, Some("b.toml".into()));
        assert_eq!(env.path, PathBuf::from("b.toml"));
        assert!(env.required);
        for unset in [None, Some(OsString::new())] {
            let default = ConfigSource::resolve(None, unset);
            assert_eq!(default.path, PathBuf::from(DEFAULT_CONFIG_PATH));
            assert!(!default.required);
        }
    }

    #[test]
    fn a_missing_optional_file_gives_the_defaults_and_a_missing_named_one_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("absent.toml");
        let optional = ConfigSource {
            path: missing.clone(),
            required: false,
        };
        assert_eq!(optional.load().unwrap(), Config::default());
        let named = ConfigSource {
            path: missing,
            required: true,
        };
        assert!(
            named
                .load()
                .unwrap_err()
                .to_string()
                .contains("absent.toml")
        );
        std::fs::write(
            dir.path().join("set.toml"),
            "[supervision]\nmax_restarts = 9\n",
        )
        .unwrap();
        let present = ConfigSource {
            path: dir.path().join("set.toml"),
            required: false,
        };
        assert_eq!(present.load().unwrap().supervision.max_restarts, 9);
    }
}
