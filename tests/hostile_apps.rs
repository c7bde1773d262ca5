//! Hostile apps of an unprivileged uid against a root daemon (issue #15 items 1, 7,
//! 8): identity that survives pid collisions, fair shares per uid, and nothing held
//! for a registered peer. Real daemon, real sockets, real setuid processes.

mod common;

use common::{Daemon, Running, babeltrace2, poke, sub_traces, wait_for};
use std::ffi::CString;
use std::io::{BufRead, BufReader, Read, Write};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::net::UnixStream;
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::Stdio;
use std::time::Duration;
use ustrace::protocol::frame;
use ustrace::protocol::messages::{AppCommand, AppRegister, Buffering, ChannelRequest};

ustrace::event!(static DEMO_EV: demo:ev(i: i64, s: &str), loglevel = Info);

/// Deadline of every wait.
const WAIT_LONG: Duration = Duration::from_secs(20);

/// The unprivileged user of these tests.
const HOSTILE: u32 = 4242;

/// What a hand-written app got for its registration.
enum Answer {
    /// Registered: the ring memfds of every channel (eventfds left out).
    Registered(Vec<OwnedFd>),
    /// Refused, with the reason.
    Refused(String),
}

/// Registers a hand-written app named `name` with the demo's event on `sock`.
fn register(sock: &UnixStream, name: &str) -> Answer {
    frame::send_hello(sock).unwrap();
    let register = AppRegister {
        name: name.into(),
        bitness: 64,
        events: vec![DEMO_EV.desc()],
    };
    frame::send(sock, &register, &[]).unwrap();
    sock.set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let mut rings = Vec::new();
    loop {
        let (command, fds) = frame::recv::<AppCommand>(sock, frame::MAX_FRAME)
            .unwrap()
            .expect("the daemon answers the registration");
        match command {
            AppCommand::Channel { .. } => rings.extend(fds.into_iter().skip(1)),
            AppCommand::RegistrationDone => return Answer::Registered(rings),
            AppCommand::Refused { reason } => return Answer::Refused(reason),
            _ => {}
        }
    }
}

/// Number of `demo:ev` events babeltrace2 reads in the sub-trace `dir`.
fn events_in(dir: &Path) -> usize {
    babeltrace2(dir)
        .iter()
        .filter(|l| l.contains("demo:ev"))
        .count()
}

/// Sub-traces under `output` whose path starts with `prefix`, with their events.
fn traces(output: &Path, prefix: &str) -> Vec<(String, usize)> {
    sub_traces(output)
        .into_iter()
        .filter(|t| t.starts_with(prefix))
        .map(|t| {
            let n = events_in(&output.join(&t));
            (t, n)
        })
        .collect()
}

/// A demo app of `uid` that emitted `events` events (traced or not) and waits for a
/// line on stdin; its stderr is kept for [`finish`].
fn holder(daemon: &Daemon, uid: u32, events: u32) -> Running {
    let mut app = Running(
        daemon
            .app(&["--events", &events.to_string(), "--wait"])
            .uid(uid)
            .gid(uid)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap(),
    );
    let mut line = String::new();
    BufReader::new(app.0.stdout.as_mut().unwrap())
        .read_line(&mut line)
        .unwrap();
    assert_eq!(line.trim(), "emitted");
    app
}

/// Lets a holder exit and returns its stderr.
fn finish(mut app: Running) -> String {
    poke(&mut app.0);
    let mut stderr = String::new();
    app.0
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut stderr)
        .unwrap();
    assert!(app.0.wait().unwrap().success());
    stderr
}

/// How many apps `status` counts as refused for `cause`.
fn refusals(daemon: &Daemon, cause: &str) -> u64 {
    daemon
        .status()
        .refusals
        .iter()
        .find(|(c, _)| c == cause)
        .map_or(0, |(_, n)| *n)
}

/// The address of `daemon`'s apps.sock, made before a fork.
fn apps_addr(daemon: &Daemon) -> libc::sockaddr_un {
    let path = daemon.rundir.join("apps.sock");
    // SAFETY: sockaddr_un is plain data; all zeroes is a valid (empty) address.
    let mut addr: libc::sockaddr_un = unsafe { std::mem::zeroed() };
    addr.sun_family = libc::AF_UNIX as libc::sa_family_t;
    for (dst, src) in addr.sun_path.iter_mut().zip(path.as_os_str().as_bytes()) {
        *dst = *src as libc::c_char;
    }
    addr
}

/// An unconnected Unix stream socket: a forked child connects it, the parent keeps it.
fn unconnected_socket() -> OwnedFd {
    // SAFETY: plain system call; the fd is owned right below.
    let raw = unsafe { libc::socket(libc::AF_UNIX, libc::SOCK_STREAM | libc::SOCK_CLOEXEC, 0) };
    assert!(raw >= 0);
    // SAFETY: `raw` is a fresh descriptor nobody else owns.
    unsafe { OwnedFd::from_raw_fd(raw) }
}

/// In a forked child: connects `sock` to `addr` as uid 4242 (effective ids only, so
/// the child can become root again), as the daemon will see in SO_PEERCRED.
///
/// # Safety
/// Only async-signal-safe calls: fit for a child of a multithreaded fork.
unsafe fn connect_as_hostile(sock: &OwnedFd, addr: &libc::sockaddr_un) -> bool {
    let len = std::mem::size_of::<libc::sockaddr_un>() as libc::socklen_t;
    // SAFETY: plain system calls on a valid fd and address.
    unsafe {
        libc::setegid(HOSTILE) == 0
            && libc::seteuid(HOSTILE) == 0
            && libc::connect(sock.as_raw_fd(), std::ptr::from_ref(addr).cast(), len) == 0
            && libc::seteuid(0) == 0
            && libc::setegid(0) == 0
    }
}

/// `execve` of `ustrace-demo --events 100` for `daemon`, prepared before a fork.
struct DemoExec {
    /// The program.
    exe: CString,
    /// Owns what `argv` points to.
    _args: Vec<CString>,
    /// Owns what `envp` points to.
    _env: Vec<CString>,
    /// Null-terminated.
    argv: Vec<*const libc::c_char>,
    /// Null-terminated.
    envp: Vec<*const libc::c_char>,
}

impl DemoExec {
    fn new(daemon: &Daemon) -> DemoExec {
        let args: Vec<CString> = ["ustrace-demo", "--events", "100"]
            .iter()
            .map(|a| CString::new(*a).unwrap())
            .collect();
        let env =
            vec![CString::new(format!("USTRACE_RUNDIR={}", daemon.rundir.display())).unwrap()];
        let nul = |v: &[CString]| {
            v.iter()
                .map(|a| a.as_ptr())
                .chain([std::ptr::null()])
                .collect()
        };
        DemoExec {
            exe: CString::new(env!("CARGO_BIN_EXE_ustrace-demo")).unwrap(),
            argv: nul(&args),
            envp: nul(&env),
            _args: args,
            _env: env,
        }
    }

    /// Becomes the demo (or exits 127).
    ///
    /// # Safety
    /// Only async-signal-safe calls: fit for a child of a multithreaded fork.
    unsafe fn exec(&self) -> ! {
        // SAFETY: every pointer is to a live, null-terminated array of C strings.
        unsafe {
            libc::execve(self.exe.as_ptr(), self.argv.as_ptr(), self.envp.as_ptr());
            libc::_exit(127)
        }
    }
}

/// Registers the kept socket as the attacker "evil" and returns its per-PID rings.
fn register_attacker(sock: OwnedFd) -> (UnixStream, Vec<OwnedFd>) {
    let attacker = UnixStream::from(sock);
    let rings = match register(&attacker, "evil") {
        Answer::Registered(rings) => rings,
        Answer::Refused(reason) => panic!("attacker refused: {reason}"),
    };
    assert!(!rings.is_empty(), "the attacker got per-PID rings");
    (attacker, rings)
}

/// Waits for the root app of pid `pid` to exit cleanly, stops the session and checks
/// that its 100 events are all in its own trace and none in the attacker's rings or
/// trace.
fn root_app_recorded_alone(daemon: &Daemon, output: &Path, pid: i32, rings: Vec<OwnedFd>) {
    let pid = nix::unistd::Pid::from_raw(pid);
    let status = nix::sys::wait::waitpid(pid, None).unwrap();
    assert_eq!(status, nix::sys::wait::WaitStatus::Exited(pid, 0));
    daemon.stop("s");
    // No byte of the root app's events ("hello" payloads) in the attacker's rings.
    for ring in rings {
        let mut bytes = Vec::new();
        std::fs::File::from(ring).read_to_end(&mut bytes).unwrap();
        assert!(
            !bytes.windows(5).any(|w| w == b"hello"),
            "the attacker's ring holds the root app's events"
        );
    }
    let victim = traces(output, &format!("ust/pid/ustrace-demo-{pid}-"));
    assert_eq!(victim.len(), 1, "{:?}", sub_traces(output));
    assert_eq!(victim[0].1, 100, "{victim:?}");
    for (trace, events) in traces(output, "ust/pid/evil-") {
        assert_eq!(events, 0, "{trace} holds the root app's events");
    }
}

/// Pid X connects twice to apps.sock: once as uid 4242 (the socket is kept and
/// registered by its parent, the attacker) and once as root (X itself, after exec'ing
/// a real app). Both connections carry SO_PEERCRED pid X, as with a reused pid, but
/// both processes alive; the root app's events must never reach the attacker.
#[test]
fn a_connection_kept_past_its_process_never_shares_rings_with_a_later_app_of_its_pid() {
    let daemon = Daemon::start();
    let output = daemon.session("s", &[("p", Buffering::PerPid)], true);
    // Everything the child needs is made before fork: it only makes system calls.
    let addr = apps_addr(&daemon);
    let sock = unconnected_socket();
    let demo = DemoExec::new(&daemon);
    let (connected_r, connected_w) = nix::unistd::pipe().unwrap();
    let (go_r, go_w) = nix::unistd::pipe().unwrap();

    // SAFETY: the child calls only async-signal-safe functions on data prepared
    // before the fork.
    let pid = unsafe { libc::fork() };
    assert!(pid >= 0, "fork failed");
    if pid == 0 {
        // SAFETY: see the fork above.
        unsafe {
            if !connect_as_hostile(&sock, &addr) {
                libc::_exit(3);
            }
            libc::write(connected_w.as_raw_fd(), [1u8].as_ptr().cast(), 1);
            let mut go = 0u8;
            libc::read(go_r.as_raw_fd(), (&raw mut go).cast(), 1);
            demo.exec()
        }
    }
    drop(connected_w);
    drop(go_r);
    let mut byte = [0u8; 1];
    let connected = std::fs::File::from(connected_r).read(&mut byte).unwrap();
    assert_eq!(connected, 1, "the child connected");

    // The attacker (uid 4242 as the daemon sees it, pid X) registers first...
    let (_attacker, rings) = register_attacker(sock);
    // ... then X becomes a real root app and records 100 events.
    std::fs::File::from(go_w).write_all(&[1]).unwrap();
    root_app_recorded_alone(&daemon, &output, pid, rings);
}

/// The real attack: a uid-4242 child connects and exits, its parent keeps the socket
/// and registers it as pid X while X is dead; then the kernel gives pid X to a root
/// app (forced with /proc/sys/kernel/ns_last_pid, retried if another process takes
/// X first). The root app gets its own rings; the attacker's never see its events.
#[test]
fn a_reused_pid_never_receives_the_rings_of_the_connection_its_dead_owner_left() {
    let daemon = Daemon::start();
    let output = daemon.session("s", &[("p", Buffering::PerPid)], true);
    let addr = apps_addr(&daemon);
    let demo = DemoExec::new(&daemon);
    // Another process of the machine may take X first: then a new round.
    for _round in 0..5 {
        let sock = unconnected_socket();
        // SAFETY: the child calls only async-signal-safe functions, then _exits.
        let x = unsafe { libc::fork() };
        assert!(x >= 0, "fork failed");
        if x == 0 {
            // SAFETY: see the fork above.
            unsafe {
                libc::_exit(if connect_as_hostile(&sock, &addr) {
                    0
                } else {
                    3
                })
            }
        }
        let x_pid = nix::unistd::Pid::from_raw(x);
        let status = nix::sys::wait::waitpid(x_pid, None).unwrap();
        assert_eq!(status, nix::sys::wait::WaitStatus::Exited(x_pid, 0));
        // X is dead and reaped; its connection lives on in this process.
        let (_attacker, rings) = register_attacker(sock);
        if reuse_pid(x, &demo) {
            root_app_recorded_alone(&daemon, &output, x, rings);
            return;
        }
    }
    panic!("no round got its pid given again");
}

/// Forks until the child gets pid `x` (setting ns_last_pid to `x - 1` before each
/// fork), and lets that child become the demo; says whether it did.
fn reuse_pid(x: i32, demo: &DemoExec) -> bool {
    for _ in 0..100 {
        std::fs::write("/proc/sys/kernel/ns_last_pid", (x - 1).to_string())
            .expect("root may set ns_last_pid");
        // SAFETY: the child calls only async-signal-safe functions (getpid, execve,
        // _exit) on data prepared before the fork.
        let pid = unsafe { libc::fork() };
        assert!(pid >= 0, "fork failed");
        if pid == 0 {
            // SAFETY: see the fork above.
            unsafe {
                if libc::getpid() != x {
                    libc::_exit(0);
                }
                demo.exec()
            }
        }
        if pid == x {
            return true;
        }
        nix::sys::wait::waitpid(nix::unistd::Pid::from_raw(pid), None).unwrap();
    }
    false
}

/// Per-uid connection shares: with `max_apps = 8` (a quarter, 2, per uid), uid 4242
/// holding registered idle apps is refused past its share, each refused app says
/// which limit in its one warning, status counts them, and root still registers.
#[test]
fn one_uid_holding_idle_apps_never_shuts_out_another_uid() {
    let daemon = Daemon::with_config("[limits]\nmax_apps = 8\n");
    let output = daemon.session("s", &[("u", Buffering::PerUid)], true);
    let held: Vec<Running> = (0..8).map(|_| holder(&daemon, HOSTILE, 1)).collect();
    assert_eq!(daemon.status().apps, 2, "uid 4242 holds its share only");

    let root = daemon.run_app(&["--events", "10"]);
    assert!(root.stderr.is_empty(), "{root:?}");

    let stderrs: Vec<String> = held.into_iter().map(finish).collect();
    let refused: Vec<&String> = stderrs.iter().filter(|e| !e.is_empty()).collect();
    assert_eq!(refused.len(), 6, "{stderrs:?}");
    for stderr in refused {
        assert_eq!(stderr.lines().count(), 1, "{stderr}");
        assert!(stderr.contains("runs untraced"), "{stderr}");
        assert!(stderr.contains("limits.max_apps_per_uid (2)"), "{stderr}");
    }
    assert_eq!(refusals(&daemon, "limits.max_apps_per_uid"), 6);
    daemon.stop("s");
    assert_eq!(events_in(&output.join("ust/uid/0/64-bit")), 10);
    assert_eq!(
        events_in(&output.join(format!("ust/uid/{HOSTILE}/64-bit"))),
        2
    );
    let shown = daemon.cli(&["status"]);
    assert!(
        String::from_utf8_lossy(&shown.stdout)
            .contains("apps refused (limits.max_apps_per_uid): 6"),
        "{shown:?}"
    );
}

/// Per-uid per-PID memory shares: uid 4242 gets a quarter of
/// `max_pid_buffer_bytes`, so a root per-PID app still records every event; the
/// refused apps say which limit and status counts them.
#[test]
fn one_uid_taking_its_per_pid_memory_leaves_another_uid_its_buffers() {
    let set = 64 * 1024 * 4 * ustrace::shm::cpu_count() as u64;
    let daemon = Daemon::with_config(&format!("[limits]\nmax_pid_buffer_bytes = {}\n", 4 * set));
    let channel = ChannelRequest {
        name: "p".into(),
        buffers: Some(Buffering::PerPid),
        subbuf_size: Some(64 * 1024),
        num_subbuf: Some(4),
        ..ChannelRequest::default()
    };
    let output = daemon.session_with("s", "out", &[channel], true);
    let held: Vec<Running> = (0..4).map(|_| holder(&daemon, HOSTILE, 1)).collect();

    let root = daemon.run_app(&["--events", "1000"]);
    assert!(root.stderr.is_empty(), "{root:?}");

    let stderrs: Vec<String> = held.into_iter().map(finish).collect();
    let refused: Vec<&String> = stderrs.iter().filter(|e| !e.is_empty()).collect();
    assert_eq!(refused.len(), 3, "{stderrs:?}");
    for stderr in refused {
        assert_eq!(stderr.lines().count(), 1, "{stderr}");
        assert!(
            stderr.contains(&format!(
                "limits.max_pid_buffer_bytes_per_uid ({set} bytes) reached by the per-PID buffers of uid {HOSTILE}"
            )),
            "{stderr}"
        );
    }
    assert_eq!(refusals(&daemon, "limits.max_pid_buffer_bytes_per_uid"), 3);
    daemon.stop("s");
    let root_traces = traces(&output, "ust/pid/ustrace-demo-");
    let counts: Vec<usize> = root_traces.iter().map(|(_, n)| *n).collect();
    assert!(counts.contains(&1000), "{root_traces:?}");
    assert_eq!(counts.iter().sum::<usize>(), 1000 + 1, "{root_traces:?}");
    assert_eq!(daemon.status().events_discarded, 0);
}

/// An app whose per-PID channel its uid's share refuses keeps its per-UID channel
/// (traced, no warning), and the refusal is counted once however often later
/// session changes try the channel again.
#[test]
fn a_channel_refused_to_a_registered_app_is_counted_once_and_its_other_channels_kept() {
    let set = 64 * 1024 * 4 * ustrace::shm::cpu_count() as u64;
    let daemon = Daemon::with_config(&format!("[limits]\nmax_pid_buffer_bytes = {}\n", 4 * set));
    let channels = [
        ChannelRequest {
            name: "p".into(),
            buffers: Some(Buffering::PerPid),
            subbuf_size: Some(64 * 1024),
            num_subbuf: Some(4),
            ..ChannelRequest::default()
        },
        ChannelRequest {
            name: "u".into(),
            buffers: Some(Buffering::PerUid),
            ..ChannelRequest::default()
        },
    ];
    let output = daemon.session_with("s", "out", &channels, true);
    let held: Vec<Running> = (0..2).map(|_| holder(&daemon, HOSTILE, 1)).collect();
    let cause = "limits.max_pid_buffer_bytes_per_uid";
    assert_eq!(refusals(&daemon, cause), 1);
    for pattern in ["other:*", "more:*"] {
        daemon.ok(ustrace::protocol::messages::ControlRequest::EnableEvent {
            session: Some("s".into()),
            channel: Some("p".into()),
            pattern: pattern.into(),
            exclude: Vec::new(),
            loglevel: Default::default(),
            filter: None,
        });
    }
    assert_eq!(refusals(&daemon, cause), 1);
    for stderr in held.into_iter().map(finish) {
        assert!(stderr.is_empty(), "{stderr}");
    }
    daemon.stop("s");
    assert_eq!(
        events_in(&output.join(format!("ust/uid/{HOSTILE}/64-bit"))),
        2
    );
}

/// Resident memory of a process, in KiB.
fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmRSS in /proc/PID/status")
}

/// 64 registered apps each start a 1 MiB frame after their registration: past
/// `MAX_LATE_FRAME` (64 KiB), each connection is closed at its frame header and the
/// daemon's memory does not grow by what they sent.
#[test]
fn bytes_after_registration_close_the_connection_and_are_never_held() {
    const PEERS: usize = 64;
    const FRAME: usize = 1 << 20;
    let daemon = Daemon::start();
    daemon.session("s", &[("u", Buffering::PerUid)], true);
    let peers: Vec<UnixStream> = (0..PEERS)
        .map(|_| {
            let sock = UnixStream::connect(daemon.rundir.join("apps.sock")).unwrap();
            assert!(matches!(register(&sock, "hoarder"), Answer::Registered(_)));
            sock
        })
        .collect();
    let before = rss_kib(daemon.pid());

    let mut partial = (FRAME as u32).to_le_bytes().to_vec();
    partial.resize(4 + FRAME - 1, 0x55);
    for mut sock in &peers {
        sock.set_write_timeout(Some(Duration::from_secs(2)))
            .unwrap();
        // The daemon may close the connection before all of it is written.
        let _ = sock.write_all(&partial);
    }
    for mut sock in &peers {
        sock.set_read_timeout(Some(WAIT_LONG)).unwrap();
        let mut byte = [0u8; 1];
        match sock.read(&mut byte) {
            Ok(0) => {}
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => {}
            other => panic!("the connection stayed open: {other:?}"),
        }
    }
    wait_for("the hoarders to be gone", WAIT_LONG, || {
        daemon.status().apps == 0
    });
    let grown = rss_kib(daemon.pid()).saturating_sub(before);
    assert!(
        grown < 16 * 1024,
        "daemon RSS grew by {grown} KiB for {PEERS} partial frames"
    );
}
