//! The CTF 1.8 metadata (TSDL) that ustrace writes ([`render`]), and a parser for
//! that same text ([`parse`](mod@parse)).

pub mod parse;

pub use parse::*;
