//! `enable-event --filter EXPR`: LTTng's filter language over an event's fields and
//! contexts.
//!
//! The daemon parses an expression once ([`Filter::parse`], errors naming the token
//! and its column), keeps it with the event rule, and compiles it for each event of
//! each app the rule matches ([`Filter::compile`]) into a small postfix
//! [`Program`] sent with the event's enable. The app checks the program against the
//! event's fields ([`Program::check`]) and runs it on the encoded payload before it
//! reserves anything in a ring ([`Checked::passes`]); an event without a filter
//! runs nothing (see `ust::tracepoint`).

#[cfg(feature = "daemon")]
mod compile;
pub mod glob;
#[cfg(feature = "daemon")]
pub mod parse;
pub mod program;

#[cfg(feature = "daemon")]
pub use compile::Filter;
#[cfg(feature = "daemon")]
pub use parse::FilterError;
pub use program::{BadProgram, Checked, ContextValues, Program};
