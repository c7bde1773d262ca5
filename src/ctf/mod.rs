//! CTF 1.8: event descriptions, packet bytes, metadata and our own reader.

pub mod field;
pub mod packet;
