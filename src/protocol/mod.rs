//! The wire protocol between apps, the CLI and the daemon.
//!
//! This module is the plumbing under the messages: how a message becomes bytes on a
//! Unix stream socket ([`frame`]), how file descriptors travel with it ([`fds`]),
//! who is at the other end ([`peer`]), and where the daemon's sockets live
//! ([`rundir`]). It is shared by the app side, so it uses blocking system calls only
//! and never an async runtime. See `docs/protocol.md`.

pub mod fds;
pub mod frame;
pub mod messages;
pub mod peer;

use std::ffi::OsString;
use std::path::PathBuf;

use nix::unistd::Uid;

pub use fds::MAX_FDS;
pub use frame::{
    HELLO_MAGIC, Hello, MAX_FRAME, PROTOCOL_VERSION, expect_hello, recv, send, send_hello,
};
pub use peer::{PeerCredentials, credentials};

/// File name of the control socket (CLI to daemon) inside the runtime directory.
pub const CONTROL_SOCKET: &str = "control.sock";

/// File name of the app socket (instrumented apps to daemon) inside the runtime
/// directory.
pub const APPS_SOCKET: &str = "apps.sock";

/// Everything that can go wrong while framing, passing descriptors or locating
/// sockets. Each message says what was received and what was allowed, so a log line
/// is enough to tell a buggy peer from a broken system.
#[derive(Debug, thiserror::Error)]
pub enum ProtocolError {
    /// A system call on the socket failed (other than interruptions, which are
    /// retried).
    #[error("{op} on socket failed: {source}")]
    Io {
        /// The operation that failed (`sendmsg`, `recvmsg`, `getsockopt(SO_PEERCRED)`...).
        op: &'static str,
        /// The error the kernel returned.
        #[source]
        source: std::io::Error,
    },
    /// A frame length above the limit: refused before any allocation, because the
    /// length comes from the peer.
    #[error("frame of {len} bytes exceeds the limit of {max} bytes")]
    FrameTooLarge {
        /// Length announced (receive) or produced (send).
        len: u64,
        /// Limit in force for this call.
        max: u64,
    },
    /// The peer closed the connection in the middle of a frame.
    #[error("connection closed mid-frame: got {received} of {expected} bytes of the {part}")]
    Truncated {
        /// Which part was cut: `length header` or `payload`.
        part: &'static str,
        /// Bytes that part needs.
        expected: usize,
        /// Bytes that arrived before end of file.
        received: usize,
    },
    /// The payload is not a valid bincode encoding of the expected message type.
    #[error("cannot decode a {type_name} from a {len}-byte frame: {source}")]
    Decode {
        /// Rust type the receiver expected.
        type_name: &'static str,
        /// Payload length.
        len: usize,
        /// What bincode rejected.
        #[source]
        source: bincode::Error,
    },
    /// The message could not be encoded (a serde implementation refused it).
    #[error("cannot encode a {type_name}: {source}")]
    Encode {
        /// Rust type being sent.
        type_name: &'static str,
        /// What bincode reported.
        #[source]
        source: bincode::Error,
    },
    /// More descriptors than one frame may carry; every one that arrived was closed.
    #[error("{count} file descriptors attached to one frame, at most {max} allowed")]
    TooManyFds {
        /// Descriptors offered (send) or received (receive).
        count: usize,
        /// The per-frame limit.
        max: usize,
    },
    /// The kernel truncated the control message (`MSG_CTRUNC`): some descriptors were
    /// lost. Those that did arrive were closed.
    #[error(
        "control message truncated (MSG_CTRUNC): {arrived} descriptors arrived and were closed, others were lost"
    )]
    ControlTruncated {
        /// Descriptors that arrived (and were closed).
        arrived: usize,
    },
    /// Descriptors attached to a byte other than a frame's first one: the peer does
    /// not follow the framing rules. The kernel closed them.
    #[error("file descriptors attached in the middle of a frame")]
    MisplacedFds,
    /// The first frame was not a hello with our magic number.
    #[error(
        "peer is not speaking the ustrace protocol: magic {found:#010x}, expected {expected:#010x}"
    )]
    BadMagic {
        /// Magic number received.
        found: u32,
        /// [`HELLO_MAGIC`].
        expected: u32,
    },
    /// The peer speaks another version of the protocol.
    #[error(
        "protocol version mismatch: peer speaks version {theirs}, this build speaks version {ours}"
    )]
    VersionMismatch {
        /// Peer's version.
        theirs: u32,
        /// [`PROTOCOL_VERSION`].
        ours: u32,
    },
    /// The peer closed the connection before its hello.
    #[error("connection closed before the protocol hello")]
    ClosedBeforeHello,
    /// A hello frame carried file descriptors (they were closed).
    #[error("protocol hello carried {count} file descriptors, expected none")]
    FdsWithHello {
        /// How many arrived.
        count: usize,
    },
    /// No runtime directory can be derived from the environment.
    #[error("no runtime directory: set USTRACE_RUNDIR (or XDG_RUNTIME_DIR for non-root users)")]
    NoRuntimeDir,
}

/// The directory holding [`CONTROL_SOCKET`] and [`APPS_SOCKET`]: `$USTRACE_RUNDIR`,
/// else `/run/ustrace` for root, else `$XDG_RUNTIME_DIR/ustrace`. Apps, the CLI and
/// the daemon all call this so that they agree without configuration, and tests set
/// `USTRACE_RUNDIR` to run private daemons side by side.
pub fn rundir() -> Result<PathBuf, ProtocolError> {
    rundir_from(
        std::env::var_os("USTRACE_RUNDIR"),
        Uid::effective(),
        std::env::var_os("XDG_RUNTIME_DIR"),
    )
}

/// The rule behind [`rundir`], with the environment passed in so that it can be
/// checked without mutating the process environment. Empty variables count as
/// unset.
pub fn rundir_from(
    ustrace_rundir: Option<OsString>,
    euid: Uid,
    xdg_runtime_dir: Option<OsString>,
) -> Result<PathBuf, ProtocolError> {
    let non_empty = |v: Option<OsString>| v.filter(|s| !s.is_empty());
    if let Some(dir) = non_empty(ustrace_rundir) {
        return Ok(PathBuf::from(dir));
    }
    if euid.is_root() {
        return Ok(PathBuf::from("/run/ustrace"));
    }
    non_empty(xdg_runtime_dir)
        .map(|dir| PathBuf::from(dir).join("ustrace"))
        .ok_or(ProtocolError::NoRuntimeDir)
}
