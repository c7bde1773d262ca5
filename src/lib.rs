//! ustrace: a user-space tracer for Linux.
//!
//! Instrumented programs register with the session daemon (`ustraced`), receive
//! shared-memory ring buffers, and record events into them without system calls; the
//! daemon drains the rings into CTF 1.8 traces. See `docs/architecture.md`.
//!
//! The app side (`shm`, `ctf`, `protocol`) builds without default features so that
//! an instrumented program links no actor runtime; the daemon side needs the
//! `daemon` feature.

#[cfg(feature = "daemon")]
pub mod config;
pub mod ctf;
pub mod protocol;
pub mod shm;
pub mod ust;
