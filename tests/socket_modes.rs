//! The daemon's sockets appear with their final mode (issue #15 item 9): under
//! umask 000, a uid-4242 process spinning on connect() to control.sock from before
//! the daemon starts never gets a reply, and each socket's mode is final the moment
//! its path exists.

mod common;

use common::{Scratch, wait_for};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};
use ustrace::control;
use ustrace::protocol::frame;
use ustrace::protocol::messages::ControlRequest;

/// Starts of the daemon.
const STARTS: usize = 25;

/// What the spinning child found: denied, answered, connected without an answer, or
/// neither a connection nor a denial before its deadline.
const NEVER_CONNECTED: i32 = 0;
const GOT_REPLY: i32 = 1;
const CONNECTED_NO_REPLY: i32 = 2;
const TIMED_OUT: i32 = 3;

/// Forks a child that, as uid 4242, tries to connect to `path` in a tight loop until
/// connect() says EACCES (the socket has its final mode: every later try fails the
/// same way) or `spin` passed; once connected, it sends a Hello and a Status request
/// and waits for an answer. It exits with one of the codes above.
fn spawn_spinner(path: &std::path::Path, spin: Duration) -> nix::unistd::Pid {
    // SAFETY: sockaddr_un is plain data; all zeroes is a valid (empty) address.
    let mut addr: libc::sockaddr_un = unsafe { std::mem::zeroed() };
    addr.sun_family = libc::AF_UNIX as libc::sa_family_t;
    for (dst, src) in addr.sun_path.iter_mut().zip(path.as_os_str().as_bytes()) {
        *dst = *src as libc::c_char;
    }
    let mut request = frame::encode(&ustrace::protocol::Hello::CURRENT).unwrap();
    request.extend(frame::encode(&ControlRequest::Status).unwrap());
    let spin_ns = spin.as_nanos() as i64;
    let now_ns = || {
        // SAFETY: clock_gettime writes only into `ts`; async-signal-safe.
        let mut ts: libc::timespec = unsafe { std::mem::zeroed() };
        unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
        ts.tv_sec * 1_000_000_000 + ts.tv_nsec
    };
    // SAFETY: the child only makes async-signal-safe system calls on data made
    // before the fork, then _exits.
    let pid = unsafe { libc::fork() };
    assert!(pid >= 0, "fork failed");
    if pid > 0 {
        return nix::unistd::Pid::from_raw(pid);
    }
    // SAFETY: see the fork above.
    unsafe {
        if libc::setgid(4242) != 0 || libc::setuid(4242) != 0 {
            libc::_exit(10);
        }
        let deadline = now_ns() + spin_ns;
        let len = std::mem::size_of::<libc::sockaddr_un>() as libc::socklen_t;
        while now_ns() < deadline {
            let fd = libc::socket(libc::AF_UNIX, libc::SOCK_STREAM, 0);
            if libc::connect(fd, (&raw const addr).cast(), len) != 0 {
                let denied = *libc::__errno_location() == libc::EACCES;
                libc::close(fd);
                if denied {
                    libc::_exit(NEVER_CONNECTED);
                }
                continue;
            }
            libc::write(fd, request.as_ptr().cast(), request.len());
            let mut pfd = libc::pollfd {
                fd,
                events: libc::POLLIN,
                revents: 0,
            };
            let mut byte = 0u8;
            if libc::poll(&mut pfd, 1, 5000) == 1 && libc::read(fd, (&raw mut byte).cast(), 1) == 1
            {
                libc::_exit(GOT_REPLY);
            }
            libc::_exit(CONNECTED_NO_REPLY);
        }
        libc::_exit(TIMED_OUT);
    }
}

#[test]
fn under_umask_000_control_sock_is_never_reachable_by_another_user() {
    let scratch = Scratch::new("sockets");
    let config = scratch.path("ustraced.toml");
    std::fs::write(&config, "").unwrap();
    for start in 0..STARTS {
        let rundir = scratch.path(&format!("run-{start}"));
        std::fs::create_dir_all(&rundir).unwrap();
        std::fs::set_permissions(&rundir, std::fs::Permissions::from_mode(0o755)).unwrap();
        let control_sock = rundir.join("control.sock");
        let apps_sock = rundir.join("apps.sock");
        let spinner = spawn_spinner(&control_sock, Duration::from_secs(20));

        let mut cmd = Command::new(env!("CARGO_BIN_EXE_ustraced"));
        // No control group, whatever groups this machine has: control.sock is 0600.
        cmd.args(["--group", ""])
            .arg("--config")
            .arg(&config)
            .env("USTRACE_RUNDIR", &rundir)
            .env("RUST_LOG", "error")
            .stdin(Stdio::null());
        // SAFETY: umask is async-signal-safe and touches only the child's state.
        unsafe {
            cmd.pre_exec(|| {
                libc::umask(0);
                Ok(())
            });
        }
        let mut daemon = cmd.spawn().unwrap();

        // Each socket's mode the first time its path is seen.
        let mut seen = [None, None];
        let deadline = Instant::now() + Duration::from_secs(20);
        while seen.iter().any(Option::is_none) && Instant::now() < deadline {
            for (i, path) in [&control_sock, &apps_sock].into_iter().enumerate() {
                if seen[i].is_none()
                    && let Ok(meta) = std::fs::symlink_metadata(path)
                {
                    seen[i] = Some(meta.permissions().mode() & 0o777);
                }
            }
        }
        assert_eq!(
            seen,
            [Some(0o600), Some(0o666)],
            "start {start}: socket modes"
        );
        wait_for("the daemon to answer", Duration::from_secs(20), || {
            control::request_in(&rundir, &ControlRequest::Status).is_ok()
        });

        let status = nix::sys::wait::waitpid(spinner, None).unwrap();
        let _ = daemon.kill();
        let _ = daemon.wait();
        let nix::sys::wait::WaitStatus::Exited(_, code) = status else {
            panic!("start {start}: spinner ended with {status:?}");
        };
        assert_ne!(
            code, GOT_REPLY,
            "start {start}: uid 4242 got a control reply"
        );
        assert_eq!(code, NEVER_CONNECTED, "start {start}: uid 4242 connected");
    }
}
