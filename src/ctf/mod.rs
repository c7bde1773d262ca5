//! CTF 1.8 format primitives that apps and the daemon share.
//!
//! - [`field`], [`packet`], [`context`]: the byte contracts shared by apps, daemon
//!   and readers.
//! - [`names`]: app-given names made safe for paths and checked for metadata.
//!
//! Writing, reading and repairing whole traces is daemon-side: see [`crate::trace`]
//! (feature `daemon`). See docs/trace-layout.md for the whole picture.

pub mod context;
pub mod field;
pub mod names;
pub mod packet;
