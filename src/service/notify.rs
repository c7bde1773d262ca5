//! The service manager's readiness protocol (`sd_notify`), without libsystemd: one
//! datagram of `KEY=value` lines sent to the Unix socket that `$NOTIFY_SOCKET`
//! names (an abstract address when it starts with `@`). With the variable unset
//! (not started by systemd, or `Type=simple`) nothing is sent.

use std::ffi::OsString;
use std::io;
use std::os::linux::net::SocketAddrExt;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::net::{SocketAddr, UnixDatagram};

/// Why a notification could not be sent. The daemon logs it and serves on: a
/// service manager that misses READY=1 times the service out, which is the
/// visible failure.
#[derive(Debug, thiserror::Error)]
#[error("cannot notify the service manager on {socket:?}: {source}")]
pub struct NotifyError {
    /// `$NOTIFY_SOCKET` as set.
    pub socket: OsString,
    /// The cause.
    pub source: io::Error,
}

/// Sends `state` (`READY=1`, `RELOADING=1`, `STATUS=...`, lines joined by `\n`) to
/// the socket of `$NOTIFY_SOCKET`; `Ok(false)` when the variable is unset or empty.
pub fn notify(state: &str) -> Result<bool, NotifyError> {
    match std::env::var_os("NOTIFY_SOCKET").filter(|s| !s.is_empty()) {
        Some(socket) => notify_to(&socket, state).map(|()| true),
        None => Ok(false),
    }
}

/// Sends `state` to `socket`, a path or `@abstract-name`.
pub fn notify_to(socket: &OsString, state: &str) -> Result<(), NotifyError> {
    let err = |source| NotifyError {
        socket: socket.clone(),
        source,
    };
    let bytes = socket.as_bytes();
    let addr = match bytes.strip_prefix(b"@") {
        Some(name) => SocketAddr::from_abstract_name(name),
        None => SocketAddr::from_pathname(socket),
    }
    .map_err(err)?;
    let sender = UnixDatagram::unbound().map_err(err)?;
    let sent = sender.send_to_addr(state.as_bytes(), &addr).map_err(err)?;
    if sent != state.len() {
        return Err(err(io::Error::other(format!(
            "sent {sent} of {} bytes",
            state.len()
        ))));
    }
    Ok(())
}

/// `RELOADING=1` with the `MONOTONIC_USEC` systemd asks of a reload notification.
pub fn reloading_state() -> String {
    let now = nix::time::clock_gettime(nix::time::ClockId::CLOCK_MONOTONIC)
        .map(|t| t.tv_sec() as u64 * 1_000_000 + t.tv_nsec() as u64 / 1000)
        .unwrap_or(0);
    format!("RELOADING=1\nMONOTONIC_USEC={now}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_datagram_reaches_a_path_and_an_abstract_socket() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("notify");
        let listener = UnixDatagram::bind(&path).unwrap();
        notify_to(&path.clone().into_os_string(), "READY=1").unwrap();
        let mut buf = [0u8; 64];
        let n = listener.recv(&mut buf).unwrap();
        assert_eq!(&buf[..n], b"READY=1");

        let name = format!("ustrace-notify-test-{}", std::process::id());
        let addr = SocketAddr::from_abstract_name(name.as_bytes()).unwrap();
        let listener = UnixDatagram::bind_addr(&addr).unwrap();
        notify_to(&OsString::from(format!("@{name}")), "STATUS=x").unwrap();
        let n = listener.recv(&mut buf).unwrap();
        assert_eq!(&buf[..n], b"STATUS=x");
    }

    #[test]
    fn a_socket_nobody_listens_on_is_an_error_naming_it() {
        let e = notify_to(&OsString::from("/nonexistent/notify"), "READY=1").unwrap_err();
        assert!(e.to_string().contains("/nonexistent/notify"), "{e}");
    }
}
