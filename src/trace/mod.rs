//! Daemon-side CTF traces: writing them, reading them back and repairing them.
//!
//! An instrumented app never links this tree (it needs feature `daemon`); the byte
//! formats it shares with apps live in [`crate::ctf`].
//!
//! - [`owner`]: who a trace and its buffers belong to (a uid, or an app connection).
//! - [`registry`]: per-trace event ids and channels; produces the metadata text.
//! - [`metadata`]: renders that TSDL and parses it back for our reader.
//! - [`layout`], [`writer`], [`spread`]: where trace files go and how they are
//!   written; [`index`]: the CTF index file of each stream.
//! - [`reader`], [`view`]: decode and print a session directory.
//! - [`recover`]: cut the torn tails a crash left, so a trace reads up to its last
//!   complete packet.
//!
//! See docs/trace-layout.md for the whole picture.

pub mod acl;
pub mod index;
pub mod layout;
pub mod metadata;
pub mod owner;
pub mod reader;
pub mod recover;
pub mod registry;
pub mod spread;
pub mod view;
pub mod writer;
