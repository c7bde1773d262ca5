//! The wire protocol between apps, the CLI and the daemon.
