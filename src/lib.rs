//! ustrace: a user-space tracer for Linux.
//!
//! Instrumented programs register with the session daemon (`ustraced`), receive
//! shared-memory ring buffers, and record events into them without system calls; the
//! daemon drains the rings into CTF 1.8 traces. See `docs/architecture.md`.
//!
//! The app side (`ust`, `shm`, `ctf`, `protocol`) builds without default features so that
//! an instrumented program links no actor runtime; the daemon side needs the
//! `daemon` feature.

#![warn(missing_docs)]
#![warn(clippy::undocumented_unsafe_blocks)]

#[cfg(feature = "daemon")]
pub mod actors;
#[cfg(feature = "daemon")]
pub mod bench;
#[cfg(feature = "daemon")]
pub mod cli;
#[cfg(feature = "daemon")]
pub mod config;
#[cfg(feature = "daemon")]
pub mod control;
pub mod ctf;
#[cfg(feature = "daemon")]
pub mod daemon;
pub mod filter;
pub mod protocol;
#[cfg(feature = "daemon")]
pub mod relayd;
#[cfg(feature = "daemon")]
pub mod rule;
#[cfg(feature = "daemon")]
pub mod service;
pub mod shm;
#[cfg(feature = "daemon")]
pub mod trace;
pub mod ust;
