//! Streaming a session to an unmodified lttng-relayd (docs/streaming.md).
//!
//! A session created with `--set-url net://HOST[:CTRL[:DATA]]` stores its channels
//! with the `relayd` writer ([`RelaydWriterFactory`]). The factory keeps one
//! [`Link`] per session: one control and one data connection to the relayd, shared
//! by every stream writer of the session (per-UID and per-PID sub-traces alike), each
//! stream added under LTTng's relayd path `<hostname>/<session>-<date>/ust/...`.
//!
//! The link is opened by the first packet and reopened (after the writer's
//! restart back-off) by the first packet after it broke: a broken link fails the
//! write, so the supervised writer actor's restarts, loss counting and `status`
//! reporting apply to the network as they do to a disk. Writers run on the daemon's
//! I/O threads, never on an app's path: an app only ever sees its ring discard.

mod link;
mod url;
pub mod wire;
mod writer;

pub use link::{Link, LinkError};
pub use url::{RelaydUrl, UrlError};
pub use writer::{RELAYD_WRITER, RelaydWriterFactory, StreamTarget};
