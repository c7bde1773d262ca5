//! Peer credentials and the runtime directory rule, with real sockets and a real
//! child process.

use std::ffi::OsString;
use std::fs;
use std::os::fd::AsRawFd;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::{UnixListener, UnixStream};
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::Command;

use nix::sys::socket::{AddressFamily, SockFlag, SockType, UnixAddr, connect, socket};
use nix::unistd::{Gid, Pid, Uid, getgid, getpid, getuid};
use ustrace::protocol::{
    APPS_SOCKET, CONTROL_SOCKET, PeerCredentials, ProtocolError, credentials, rundir_from,
};

/// Unprivileged IDs the child switches to when the tests run as root.
const NOBODY: u32 = 65534;

#[test]
fn socketpair_peer_is_this_process() {
    let (a, _b) = UnixStream::pair().unwrap();
    assert_eq!(
        credentials(&a).unwrap(),
        PeerCredentials {
            pid: getpid(),
            uid: getuid(),
            gid: getgid(),
        }
    );
}

#[test]
fn accepted_connection_reports_the_connecting_child_not_ourselves() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join(APPS_SOCKET);
    let listener = UnixListener::bind(&path).unwrap();
    // As the daemon must do when run as root: let other users reach the socket.
    fs::set_permissions(dir.path(), fs::Permissions::from_mode(0o755)).unwrap();
    fs::set_permissions(&path, fs::Permissions::from_mode(0o777)).unwrap();
    let addr = UnixAddr::new(&path).unwrap();
    let as_root = getuid().is_root();

    let mut command = Command::new("/bin/true");
    if as_root {
        command.uid(NOBODY).gid(NOBODY);
    } else {
        eprintln!("not root: the child keeps our uid, the setuid half is not checked");
    }
    // SAFETY: the closure runs in the forked child before exec and only makes
    // async-signal-safe system calls (socket, connect, close) on an address built
    // before the fork; it allocates nothing. The kernel records the child's
    // credentials at connect(), after std applied uid/gid.
    unsafe {
        command.pre_exec(move || {
            let sock = socket(
                AddressFamily::Unix,
                SockType::Stream,
                SockFlag::empty(),
                None,
            )?;
            connect(sock.as_raw_fd(), &addr)?;
            Ok(())
        });
    }
    let mut child = command.spawn().unwrap();
    let child_pid = Pid::from_raw(i32::try_from(child.id()).unwrap());
    let (conn, _) = listener.accept().unwrap();
    let status = child.wait().unwrap();
    assert!(status.success());

    let peer = credentials(&conn).unwrap();
    assert_eq!(peer.pid, child_pid);
    assert_ne!(peer.pid, getpid());
    if as_root {
        assert_eq!(
            (peer.uid, peer.gid),
            (Uid::from_raw(NOBODY), Gid::from_raw(NOBODY))
        );
    } else {
        assert_eq!((peer.uid, peer.gid), (getuid(), getgid()));
    }
}

#[test]
fn credentials_of_a_non_socket_is_an_error_naming_the_call() {
    let file = tempfile::tempfile().unwrap();
    let err = credentials(&file).unwrap_err();
    assert!(
        matches!(err, ProtocolError::Io { op, .. } if op.contains("SO_PEERCRED")),
        "{err}"
    );
}

fn os(s: &str) -> Option<OsString> {
    Some(OsString::from(s))
}

const USER: Uid = Uid::from_raw(1000);

#[test]
fn ustrace_rundir_overrides_everything() {
    assert_eq!(
        rundir_from(os("/tmp/private"), Uid::from_raw(0), os("/run/user/0")).unwrap(),
        PathBuf::from("/tmp/private")
    );
    assert_eq!(
        rundir_from(os("/tmp/private"), USER, os("/run/user/1000")).unwrap(),
        PathBuf::from("/tmp/private")
    );
}

#[test]
fn root_uses_run_ustrace() {
    assert_eq!(
        rundir_from(None, Uid::from_raw(0), os("/run/user/0")).unwrap(),
        PathBuf::from("/run/ustrace")
    );
}

#[test]
fn users_use_their_xdg_runtime_dir() {
    assert_eq!(
        rundir_from(None, USER, os("/run/user/1000")).unwrap(),
        PathBuf::from("/run/user/1000/ustrace")
    );
}

#[test]
fn empty_variables_count_as_unset() {
    assert_eq!(
        rundir_from(os(""), USER, os("/run/user/1000")).unwrap(),
        PathBuf::from("/run/user/1000/ustrace")
    );
    assert!(matches!(
        rundir_from(os(""), USER, os("")),
        Err(ProtocolError::NoRuntimeDir)
    ));
}

#[test]
fn a_user_without_any_runtime_dir_gets_an_error() {
    let err = rundir_from(None, USER, None).unwrap_err();
    assert!(err.to_string().contains("USTRACE_RUNDIR"), "{err}");
}

#[test]
fn socket_names_are_fixed() {
    assert_eq!((CONTROL_SOCKET, APPS_SOCKET), ("control.sock", "apps.sock"));
}
