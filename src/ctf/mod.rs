//! CTF 1.8: event descriptions, packet bytes, metadata and our own reader.

pub mod field;
pub mod layout;
pub mod metadata;
pub mod packet;
pub mod reader;
pub mod registry;
pub mod trace_writer;
#[cfg(feature = "daemon")]
pub mod view;
