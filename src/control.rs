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
    /// The socket's mode keeps this user out (the kernel refused `connect()`).
    #[error(
        "permission denied on {path}: {who}; ask an administrator to add you to the group (usermod -aG GROUP USER) or use sudo"
    )]
    Denied {
        /// The socket.
        path: PathBuf,
        /// Who may use it, from its owner, group and mode.
        who: String,
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
    let sock = UnixStream::connect(&path).map_err(|source| {
        if source.kind() == std::io::ErrorKind::PermissionDenied {
            let who = who_may_connect(&path);
            ControlError::Denied { path, who }
        } else {
            ControlError::Connect { path, source }
        }
    })?;
    frame::send_hello(&sock)?;
    frame::send(&sock, request, &[])?;
    let (reply, _) =
        frame::recv::<ControlReply>(&sock, frame::MAX_FRAME)?.ok_or(ControlError::NoReply)?;
    Ok(reply)
}

/// Who the socket at `path` lets in, from its owner, group and mode: "only uid 0
/// and members of group tracing may control this daemon (0660 root:tracing)".
fn who_may_connect(path: &Path) -> String {
    use nix::unistd::{Gid, Group, Uid, User};
    use std::os::unix::fs::MetadataExt;
    let Ok(meta) = std::fs::metadata(path) else {
        return "cannot read who may connect".to_owned();
    };
    let user = User::from_uid(Uid::from_raw(meta.uid()))
        .ok()
        .flatten()
        .map_or_else(|| meta.uid().to_string(), |u| u.name);
    let group = Group::from_gid(Gid::from_raw(meta.gid()))
        .ok()
        .flatten()
        .map_or_else(|| meta.gid().to_string(), |g| g.name);
    let mode = meta.mode() & 0o777;
    let members = if mode & 0o020 != 0 {
        format!(" and members of group {group}")
    } else {
        String::new()
    };
    format!("only {user}{members} may control this daemon ({mode:04o} {user}:{group})")
}

/// Sends `request` to the daemon of the usual runtime directory.
pub fn request(request: &ControlRequest) -> Result<ControlReply, ControlError> {
    request_in(&protocol::rundir()?, request)
}
