//! CTF 1.8: event descriptions, packet bytes, metadata and our own reader.
//!
//! - [`field`], [`packet`], [`context`]: the byte contracts shared by apps, daemon
//!   and readers.
//! - [`registry`]: per-trace event ids and channels; produces the metadata text.
//! - [`metadata`]: renders that TSDL and parses it back for our reader.
//! - [`names`]: app-given names made safe for paths and checked for metadata.
//! - [`layout`], [`trace_writer`], [`spread`]: where trace files go and how they are
//!   written; [`index`]: the CTF index file of each stream.
//! - [`reader`], `view` (feature `daemon`): decode and print a session directory.
//! - `recover` (feature `daemon`): cut the torn tails a crash left, so a trace reads
//!   up to its last complete packet.
//!
//! See docs/trace-layout.md for the whole picture.

pub mod context;
pub mod field;
pub mod index;
pub mod layout;
pub mod metadata;
pub mod names;
pub mod packet;
pub mod reader;
#[cfg(feature = "daemon")]
pub mod recover;
pub mod registry;
pub mod spread;
pub mod trace_writer;
#[cfg(feature = "daemon")]
pub mod view;
