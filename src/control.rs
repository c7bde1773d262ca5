//! The client side of `control.sock`: one request, one reply.
//!
//! Used by the `ustrace` CLI, by the demo, and by tests that drive a real daemon.

use crate::protocol::messages::{ControlReply, ControlRequest};
use crate::protocol::{self, CONTROL_SOCKET, ProtocolError, frame};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};

/// Why a control request got no answer.
#[derive(Debug, thiserror::Error)]
pub enum ControlError {
    /// No daemon listens in the runtime directory.
    #[error("no ustraced on {path}: {source} (start ustraced, or set USTRACE_RUNDIR)")]
    Connect {
        /// The socket.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// The exchange failed.
    #[error("control.sock: {0}")]
    Protocol(#[from] ProtocolError),
    /// The daemon closed the connection without answering.
    #[error("the daemon closed the connection without answering")]
    NoReply,
}

/// Sends `request` to the daemon of `rundir` and returns its reply.
pub fn request_in(rundir: &Path, request: &ControlRequest) -> Result<ControlReply, ControlError> {
    let path = rundir.join(CONTROL_SOCKET);
    let sock =
        UnixStream::connect(&path).map_err(|source| ControlError::Connect { path, source })?;
    frame::send_hello(&sock)?;
    frame::send(&sock, request, &[])?;
    let (reply, _) =
        frame::recv::<ControlReply>(&sock, frame::MAX_FRAME)?.ok_or(ControlError::NoReply)?;
    Ok(reply)
}

/// Sends `request` to the daemon of the usual runtime directory.
pub fn request(request: &ControlRequest) -> Result<ControlReply, ControlError> {
    request_in(&protocol::rundir()?, request)
}
