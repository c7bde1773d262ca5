//! Who is at the other end of a Unix socket, as the kernel saw it.
//!
//! The daemon decides which buffers an app may map (per-UID buffers are shared by
//! every process of one user) from these credentials. They come from `SO_PEERCRED`,
//! which the kernel records at `connect()` time and the peer cannot forge. The pid
//! and uid of an app must NEVER be taken from a message: a message says whatever its
//! sender wants.

use std::os::fd::AsFd;

use nix::sys::socket::{getsockopt, sockopt};
use nix::unistd::{Gid, Pid, Uid};

use super::ProtocolError;
use super::fds::io_error;

/// Process, user and group of the peer when it connected (`SO_PEERCRED`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PeerCredentials {
    /// Process that called `connect()` (or `socketpair()`).
    pub pid: Pid,
    /// Its effective user ID at that time: selects per-UID buffers.
    pub uid: Uid,
    /// Its effective group ID at that time.
    pub gid: Gid,
}

/// Reads the peer credentials of a connected Unix socket (`&UnixStream`, an owned or
/// borrowed fd).
pub fn credentials(sock: impl AsFd) -> Result<PeerCredentials, ProtocolError> {
    let cred = getsockopt(&sock.as_fd(), sockopt::PeerCredentials)
        .map_err(|e| io_error("getsockopt(SO_PEERCRED)", e.into()))?;
    Ok(PeerCredentials {
        pid: Pid::from_raw(cred.pid()),
        uid: Uid::from_raw(cred.uid()),
        gid: Gid::from_raw(cred.gid()),
    })
}
