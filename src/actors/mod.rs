//! The session daemon's actors (actix). See docs/architecture.md for the picture.
//!
//! - [`registrar`]: accepts apps, reads SO_PEERCRED, starts one [`app_connection`] each.
//! - [`app_connection`]: one app's connection for its whole life.
//! - [`buffer_factory`]: decides and creates every app's buffers.
//! - [`buffer_set`]: one channel's rings for one owner, drained into writers.
//! - [`ring_pool`]: per-PID ring sets made ahead of registration.
//! - [`writer`], [`supervision`]: supervised per-stream writers and their limits.
//! - [`session`]: sessions, channels and event rules from the CLI and the config.
//! - [`control_socket`]: the CLI's wire requests into [`session`]'s messages, and
//!   its typed answers into the CLI's text.
//! - [`stats`]: the counters behind `ustrace status`.
//! - [`framed`]: the wire framing over the daemon's async sockets.

pub mod app_connection;
pub mod buffer_factory;
pub mod buffer_set;
pub mod control_socket;
pub mod framed;
pub mod registrar;
pub mod ring_pool;
pub mod session;
pub mod stats;
pub mod supervision;
pub mod writer;
