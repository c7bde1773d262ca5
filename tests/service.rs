//! `ustraced` as a system service (issue #16): readiness on `$NOTIFY_SOCKET`, the
//! control group, SIGHUP reloads, man pages and completions that match the CLI, and
//! the Debian package installed into the real system.

mod common;

use common::{Daemon, Running, Scratch, poke, wait_for};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::os::unix::net::{UnixDatagram, UnixStream};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::Duration;
use ustrace::control;
use ustrace::protocol::messages::{ControlOk, ControlRequest};

/// Whether this test process may create users' processes, groups and packages; the
/// tests that need it say why they skip otherwise.
fn root_or_skip(test: &str) -> bool {
    let root = nix::unistd::geteuid().is_root();
    if !root {
        println!("{test}: skipped: needs root (setuid children, groupadd, dpkg)");
    }
    root
}

/// A datagram socket standing for the service manager's `$NOTIFY_SOCKET`.
fn notify_socket(scratch: &Scratch) -> (PathBuf, UnixDatagram) {
    let path = scratch.path("notify.sock");
    let socket = UnixDatagram::bind(&path).unwrap();
    socket
        .set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    (path, socket)
}

/// The next notification, as text.
fn next_notification(socket: &UnixDatagram) -> String {
    let mut buf = [0u8; 4096];
    let n = socket.recv(&mut buf).expect("a notification within 30 s");
    String::from_utf8_lossy(&buf[..n]).into_owned()
}

/// Sends SIGHUP to `pid`.
fn hangup(pid: u32) {
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pid as i32),
        nix::sys::signal::Signal::SIGHUP,
    )
    .unwrap();
}

/// `ustraced` with an empty config file and the runtime directory `<scratch>/run`,
/// then `args`.
fn ustraced(scratch: &Scratch, args: &[&str]) -> Command {
    let config = scratch.path("ustraced.toml");
    std::fs::write(&config, "").unwrap();
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_ustraced"));
    cmd.arg("--config")
        .arg(&config)
        .args(args)
        .env("USTRACE_RUNDIR", scratch.path("run"))
        .env("RUST_LOG", "warn")
        .stdin(Stdio::null());
    cmd
}

/// Waits until the daemon of `rundir` answers a status request.
fn wait_for_daemon(rundir: &Path) {
    wait_for("the daemon to answer", Duration::from_secs(20), || {
        control::request_in(rundir, &ControlRequest::Status).is_ok()
    });
}

#[test]
fn ready_is_sent_once_both_sockets_accept_and_again_after_a_reload() {
    let scratch = Scratch::new("notify");
    let (notify, socket) = notify_socket(&scratch);
    let rundir = scratch.path("run");
    let daemon = Running(
        ustraced(&scratch, &[])
            .env("NOTIFY_SOCKET", &notify)
            .spawn()
            .unwrap(),
    );
    assert_eq!(next_notification(&socket), "READY=1");
    // No wait between the notification and the connections: READY=1 means both
    // sockets accept now.
    let control = control::request_in(&rundir, &ControlRequest::Status);
    assert!(
        matches!(control, Ok(Ok(ControlOk::Status(_)))),
        "{control:?}"
    );
    UnixStream::connect(rundir.join("apps.sock")).expect("apps.sock accepts at READY=1");

    hangup(daemon.0.id());
    let reloading = next_notification(&socket);
    assert!(
        reloading.starts_with("RELOADING=1\nMONOTONIC_USEC="),
        "{reloading}"
    );
    assert_eq!(next_notification(&socket), "READY=1");
}

#[test]
fn without_notify_socket_the_daemon_serves_and_an_unreachable_one_is_only_logged() {
    let scratch = Scratch::new("notify-missing");
    let daemon = Running(
        ustraced(&scratch, &[])
            .env("NOTIFY_SOCKET", scratch.path("nobody-listens"))
            .spawn()
            .unwrap(),
    );
    wait_for_daemon(&scratch.path("run"));
    drop(daemon);
}

/// A `[[session]]` with one per-UID channel enabling `demo:*`, written to `output`.
fn declared_session(name: &str, output: &Path) -> String {
    format!(
        "[[session]]\nname = \"{name}\"\noutput = \"{}\"\n[[session.channel]]\nname = \"chan\"\nbuffers = \"uid\"\nsubbuf_size = \"4K\"\nnum_subbuf = 4\nevents = [\"demo:*\"]\n",
        output.display()
    )
}

/// An output whose `ust` directory belongs to uid 4242: the daemon refuses to
/// write a trace into it, so each stream's writer fails at its first packet, and
/// its restarts show the supervision limits in force.
fn unwritable_output(scratch: &Scratch, name: &str) -> PathBuf {
    let output = scratch.path(name);
    std::fs::create_dir_all(output.join("ust")).unwrap();
    nix::unistd::chown(
        &output.join("ust"),
        Some(nix::unistd::Uid::from_raw(4242)),
        Some(nix::unistd::Gid::from_raw(4242)),
    )
    .unwrap();
    output
}

#[test]
fn sighup_applies_new_supervision_limits_and_sessions_without_dropping_apps() {
    if !root_or_skip("sighup reload") {
        return;
    }
    let outputs = Scratch::new("reload-out");
    let first = unwritable_output(&outputs, "a");
    let supervision = |max: u32| {
        format!("[supervision]\nmax_restarts = {max}\nwithin_secs = 600\nbackoff_ms = 1\n")
    };
    let daemon = Daemon::with_config(&(supervision(0) + &declared_session("a", &first)));
    let config = daemon.scratch.path("ustraced.toml");

    // Under max_restarts = 0, session a's writer fails at once, never restarted.
    // Enough events to fill 4 KiB sub-buffers: packets reach the writer.
    let mut app = daemon.app_that_emitted(2000);
    wait_for("session a's writer failed", Duration::from_secs(20), || {
        let status = daemon.status();
        status
            .failed_writers
            .iter()
            .any(|f| f.stream.starts_with("a/"))
    });
    assert_eq!(daemon.status().writer_restarts, 0);
    assert_eq!(daemon.status().apps, 1);

    // A bad file changes nothing.
    std::fs::write(&config, "[supervision]\nmax_restarts = \"many\"\n").unwrap();
    hangup(daemon.pid());
    let second = unwritable_output(&outputs, "b");
    std::fs::write(
        &config,
        supervision(3) + &declared_session("a", &first) + &declared_session("b", &second),
    )
    .unwrap();
    hangup(daemon.pid());
    wait_for(
        "session b created by the reload",
        Duration::from_secs(20),
        || {
            matches!(
                daemon.ok(ControlRequest::List { session: None }),
                ControlOk::Sessions(list) if list.iter().any(|s| s.name == "b" && s.started)
            )
        },
    );
    // The app connected before the reload is still served.
    assert_eq!(daemon.status().apps, 1);

    // Session b's writer gets the new limits: three restarts, then failed.
    daemon.run_pinned_app(2000);
    wait_for("session b's writer failed", Duration::from_secs(30), || {
        let status = daemon.status();
        status
            .failed_writers
            .iter()
            .any(|f| f.stream.starts_with("b/"))
    });
    assert_eq!(daemon.status().writer_restarts, 3);
    poke(&mut app.0);
    assert!(app.0.wait().unwrap().success());
}

/// A group made for one test, removed when dropped.
struct ScratchGroup {
    name: String,
    gid: u32,
}

impl ScratchGroup {
    fn new() -> ScratchGroup {
        let name = format!("ust{}", std::process::id());
        let out = Command::new("groupadd").arg(&name).output().unwrap();
        assert!(out.status.success(), "groupadd: {out:?}");
        let gid = nix::unistd::Group::from_name(&name)
            .unwrap()
            .expect("the group just made")
            .gid
            .as_raw();
        ScratchGroup { name, gid }
    }
}

impl Drop for ScratchGroup {
    fn drop(&mut self) {
        let _ = Command::new("groupdel").arg(&self.name).output();
    }
}

/// `program` to run as `uid`, with primary group `uid` and the supplementary
/// `groups`.
fn as_user(uid: u32, groups: &[u32], program: &str) -> Command {
    let groups: Vec<libc::gid_t> = groups.to_vec();
    let mut cmd = Command::new(program);
    // SAFETY: setgroups, setgid and setuid are async-signal-safe and change only
    // the child, on data made before the fork.
    unsafe {
        cmd.pre_exec(move || {
            if libc::setgroups(groups.len(), groups.as_ptr()) != 0
                || libc::setgid(uid) != 0
                || libc::setuid(uid) != 0
            {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    cmd
}

/// Runs the `ustrace` CLI as `uid`, with primary group `uid` and the
/// supplementary `groups`, against the daemon of `rundir`.
fn ustrace_as(uid: u32, groups: &[u32], rundir: &Path, args: &[&str]) -> Output {
    as_user(uid, groups, env!("CARGO_BIN_EXE_ustrace"))
        .args(args)
        .env("USTRACE_RUNDIR", rundir)
        .output()
        .unwrap()
}

#[test]
fn members_of_the_control_group_control_the_daemon_and_others_are_told_why_not() {
    if !root_or_skip("control group") {
        return;
    }
    let group = ScratchGroup::new();
    let scratch = Scratch::new("group");
    let rundir = scratch.path("run");
    let _daemon = Running(
        ustraced(&scratch, &["--group", &group.name])
            .spawn()
            .unwrap(),
    );
    wait_for_daemon(&rundir);
    let control_sock = std::fs::metadata(rundir.join("control.sock")).unwrap();
    assert_eq!(control_sock.permissions().mode() & 0o777, 0o660);
    assert_eq!((control_sock.uid(), control_sock.gid()), (0, group.gid));
    let apps_sock = std::fs::metadata(rundir.join("apps.sock")).unwrap();
    assert_eq!(apps_sock.permissions().mode() & 0o777, 0o666);

    let output = scratch.path("member-out");
    let output = output.to_str().unwrap();
    let create = ustrace_as(
        4243,
        &[group.gid],
        &rundir,
        &["create", "membersession", "-o", output],
    );
    assert!(create.status.success(), "member create: {create:?}");
    let list = ustrace_as(4243, &[group.gid], &rundir, &["list"]);
    assert!(list.status.success(), "member list: {list:?}");
    assert!(
        String::from_utf8_lossy(&list.stdout).contains("membersession"),
        "{list:?}"
    );

    let refused = ustrace_as(4244, &[], &rundir, &["list"]);
    assert!(!refused.status.success());
    let why = String::from_utf8_lossy(&refused.stderr);
    assert!(why.contains("permission denied"), "{why}");
    assert!(
        why.contains(&format!("members of group {}", group.name)),
        "{why}"
    );
}

#[test]
fn an_unknown_group_stops_the_daemon_with_a_message_naming_it() {
    let scratch = Scratch::new("nogroup");
    let out = ustraced(&scratch, &["--group", "no-such-group-for-ustrace"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("no-such-group-for-ustrace: no such group"),
        "{err}"
    );
}

/// The subcommands of a clap command, recursively, as `parent child` paths.
fn subcommands(cmd: &clap::Command, prefix: &str, out: &mut Vec<String>) {
    for sub in cmd.get_subcommands() {
        let path = format!("{prefix}{}", sub.get_name());
        out.push(path.clone());
        subcommands(sub, &format!("{path} "), out);
    }
}

#[test]
fn every_subcommand_is_in_the_man_pages_and_in_every_completion_script() {
    use clap::CommandFactory;
    let scratch = Scratch::new("man");
    let dir = scratch.path("man");
    let out = Command::new(env!("CARGO_BIN_EXE_ustrace"))
        .arg("man")
        .arg(&dir)
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let mut names = Vec::new();
    subcommands(&ustrace::cli::Cli::command(), "", &mut names);
    assert!(names.len() > 10, "{names:?}");
    let main_page = std::fs::read_to_string(dir.join("ustrace.1")).unwrap();
    for name in &names {
        let top = name.split(' ').next().unwrap();
        assert!(
            main_page.contains(&format!("ustrace\\-{}(1)", top.replace('-', "\\-"))),
            "{top} missing from ustrace(1)"
        );
        let page = dir.join(format!("ustrace-{}.1", name.replace(' ', "-")));
        assert!(page.exists(), "no {}", page.display());
    }
    for page in ["ustraced.8", "ustraced.toml.5"] {
        assert!(dir.join(page).exists(), "no {page}");
    }
    let daemon_page = std::fs::read_to_string(dir.join("ustraced.8")).unwrap();
    for flag in ["\\-\\-config", "\\-\\-group"] {
        assert!(
            daemon_page.contains(flag),
            "{flag} missing from ustraced(8)"
        );
    }
    for shell in ["bash", "zsh", "fish"] {
        let out = Command::new(env!("CARGO_BIN_EXE_ustrace"))
            .args(["completions", shell])
            .output()
            .unwrap();
        assert!(out.status.success(), "{out:?}");
        let script = String::from_utf8_lossy(&out.stdout);
        for name in &names {
            let last = name.rsplit(' ').next().unwrap();
            assert!(
                script.contains(last),
                "{name} missing from the {shell} completions"
            );
        }
        let out = Command::new(env!("CARGO_BIN_EXE_ustrace"))
            .args(["completions", shell, "--program", "ustraced"])
            .output()
            .unwrap();
        assert!(
            String::from_utf8_lossy(&out.stdout).contains("group"),
            "{shell}"
        );
    }
}

/// Holds an exclusive lock on a file for as long as it lives: dpkg runs one at a
/// time, and two suites on one machine must not install or remove at once.
struct DpkgLock {
    _file: std::fs::File,
}

impl DpkgLock {
    fn take() -> DpkgLock {
        use std::os::fd::AsRawFd;
        let file = std::fs::File::create("/run/lock/ustrace-deb-test.lock").unwrap();
        // SAFETY: flock on an fd this struct owns; blocks until the lock is ours.
        assert_eq!(unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX) }, 0);
        DpkgLock { _file: file }
    }
}

/// Runs `cmd` and returns its output, panicking with it if it failed.
fn run_ok(cmd: &mut Command) -> Output {
    let out = cmd.output().unwrap();
    assert!(out.status.success(), "{cmd:?}: {out:?}");
    out
}

/// The installed unit's `key=` lines.
fn unit_values(unit: &str, key: &str) -> Vec<String> {
    unit.lines()
        .filter_map(|l| l.strip_prefix(&format!("{key}=")))
        .map(str::to_owned)
        .collect()
}

/// The files the package installs, besides those of the C library.
const PACKAGED: &[&str] = &[
    "/usr/bin/ustrace",
    "/usr/bin/ustraced",
    "/lib/systemd/system/ustraced.service",
    "/usr/share/man/man1/ustrace.1.gz",
    "/usr/share/man/man1/ustrace-enable-channel.1.gz",
    "/usr/share/man/man8/ustraced.8.gz",
    "/usr/share/man/man5/ustraced.toml.5.gz",
    "/usr/share/bash-completion/completions/ustrace",
    "/usr/share/zsh/vendor-completions/_ustrace",
    "/usr/share/fish/vendor_completions.d/ustrace.fish",
];

#[test]
fn the_debian_package_installs_runs_as_its_unit_would_traces_an_app_and_is_removed_cleanly() {
    if !root_or_skip("debian package") {
        return;
    }
    if Command::new("dpkg-deb").arg("--version").output().is_err() {
        println!("debian package: skipped: dpkg-deb is missing (not a Debian system)");
        return;
    }
    let _lock = DpkgLock::take();
    let installed = Command::new("dpkg-query")
        .args(["-W", "-f=${Status}", "ustrace"])
        .output()
        .unwrap();
    if String::from_utf8_lossy(&installed.stdout).contains("installed") {
        println!(
            "debian package: skipped: a ustrace package is installed already; not replacing it"
        );
        return;
    }
    let group_existed = nix::unistd::Group::from_name("tracing").unwrap().is_some();
    let scratch = Scratch::new("deb");
    let bindir = Path::new(env!("CARGO_BIN_EXE_ustraced")).parent().unwrap();
    let built = run_ok(
        Command::new(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/packaging/deb/build.sh"
        ))
        .arg("--bindir")
        .arg(bindir)
        .arg("--out")
        .arg(scratch.path("deb")),
    );
    let deb = String::from_utf8_lossy(&built.stdout)
        .lines()
        .last()
        .expect("build.sh prints the .deb")
        .to_owned();
    run_ok(Command::new("dpkg").args(["-i", &deb]));
    // Removed however the test ends, so a failure leaves no package behind.
    struct Installed;
    impl Drop for Installed {
        fn drop(&mut self) {
            let _ = Command::new("dpkg").args(["-P", "ustrace"]).output();
        }
    }
    let installed = Installed;

    for file in PACKAGED.iter().chain(&["/etc/ustrace/ustraced.toml"]) {
        assert!(Path::new(file).exists(), "{file} not installed");
    }
    assert!(
        nix::unistd::Group::from_name("tracing").unwrap().is_some(),
        "no tracing group"
    );
    let conffiles = run_ok(Command::new("dpkg-query").args(["-W", "-f=${Conffiles}", "ustrace"]));
    assert!(String::from_utf8_lossy(&conffiles.stdout).contains("/etc/ustrace/ustraced.toml"));

    // The daemon as the unit starts it: its ExecStart and Environment, with a
    // private runtime directory and a NOTIFY_SOCKET standing for systemd.
    let unit = std::fs::read_to_string("/lib/systemd/system/ustraced.service").unwrap();
    assert_eq!(unit_values(&unit, "Type"), ["notify"]);
    assert_eq!(unit_values(&unit, "Restart"), ["on-failure"]);
    assert_eq!(
        unit_values(&unit, "ExecReload"),
        ["/bin/kill -HUP $MAINPID"]
    );
    let exec = unit_values(&unit, "ExecStart").pop().expect("ExecStart");
    let mut words = exec.split_whitespace();
    let mut daemon = Command::new(words.next().unwrap());
    daemon
        .args(words)
        .env_clear()
        .env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin");
    let home = scratch.path("state");
    for env in unit_values(&unit, "Environment") {
        let (key, value) = env.split_once('=').unwrap();
        // HOME is the unit's state directory; here, a scratch one.
        let value = if key == "HOME" {
            home.to_str().unwrap()
        } else {
            value
        };
        daemon.env(key, value);
    }
    let (notify, socket) = notify_socket(&scratch);
    let rundir = scratch.path("run");
    let daemon = Running(
        daemon
            .env("NOTIFY_SOCKET", &notify)
            .env("USTRACE_RUNDIR", &rundir)
            .env("RUST_LOG", "warn")
            .stdin(Stdio::null())
            .spawn()
            .unwrap(),
    );
    assert_eq!(next_notification(&socket), "READY=1");
    let control_sock = std::fs::metadata(rundir.join("control.sock")).unwrap();
    let tracing = nix::unistd::Group::from_name("tracing").unwrap().unwrap();
    assert_eq!(
        control_sock.gid(),
        tracing.gid.as_raw(),
        "control.sock group"
    );
    assert_eq!(control_sock.permissions().mode() & 0o777, 0o660);

    let cli = |args: &[&str]| {
        run_ok(
            Command::new("/usr/bin/ustrace")
                .args(args)
                .env("USTRACE_RUNDIR", &rundir),
        )
    };
    cli(&["create", "pkg"]);
    cli(&["enable-channel", "chan", "--buffers-uid"]);
    cli(&["enable-event", "demo:*"]);
    cli(&["start"]);
    run_ok(
        Command::new(env!("CARGO_BIN_EXE_ustrace-demo"))
            .args(["--events", "500"])
            .env("USTRACE_RUNDIR", &rundir),
    );
    cli(&["stop"]);
    // The session's default output: below the unit's HOME.
    let traces = home.join("ustrace-traces");
    let output = std::fs::read_dir(&traces)
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.file_name().unwrap().to_string_lossy().starts_with("pkg-"))
        .expect("the session's output");
    let view = cli(&["view", output.to_str().unwrap()]);
    let events = String::from_utf8_lossy(&view.stdout)
        .lines()
        .filter(|l| l.contains("demo:"))
        .count();
    assert_eq!(events, 500, "events in the trace");
    drop(daemon);

    // Removed: every file but the conffile; purged: that too.
    run_ok(Command::new("dpkg").args(["-r", "ustrace"]));
    for file in PACKAGED {
        assert!(!Path::new(file).exists(), "{file} left after dpkg -r");
    }
    assert!(
        Path::new("/etc/ustrace/ustraced.toml").exists(),
        "conffile kept until purge"
    );
    run_ok(Command::new("dpkg").args(["-P", "ustrace"]));
    assert!(
        !Path::new("/etc/ustrace").exists(),
        "/etc/ustrace left after purge"
    );
    drop(installed);
    if !group_existed {
        run_ok(Command::new("groupdel").arg("tracing"));
    }
}

#[test]
fn a_per_uid_trace_and_its_archives_are_readable_by_its_user_and_by_no_other() {
    if !root_or_skip("per-uid trace readers") {
        return;
    }
    let daemon = Daemon::start();
    let output = daemon.session(
        "s",
        &[("chan", ustrace::protocol::messages::Buffering::PerUid)],
        true,
    );
    let app = || {
        let app = as_user(4245, &[], env!("CARGO_BIN_EXE_ustrace-demo"))
            .args(["--events", "300"])
            .env("USTRACE_RUNDIR", &daemon.rundir)
            .output()
            .unwrap();
        assert!(app.status.success(), "{app:?}");
    };
    // The first 300 in an archived chunk, the next 300 in the live one.
    app();
    daemon.ok(ControlRequest::Rotate {
        session: Some("s".into()),
    });
    app();
    daemon.stop("s");
    let archives: Vec<PathBuf> = std::fs::read_dir(output.join("archives"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    assert_eq!(archives.len(), 1, "{archives:?}");
    for trace in [output.clone(), archives[0].clone()] {
        readable_by_its_user_only(&trace.join("ust/uid/4245/64-bit"));
    }
}

/// Checks that the per-UID trace `trace` of uid 4245 (300 events) is read by that
/// user, whole, and not by uid 4246.
fn readable_by_its_user_only(trace: &Path) {
    for entry in std::fs::read_dir(trace).unwrap() {
        let meta = entry.unwrap().metadata().unwrap();
        assert_eq!((meta.uid(), meta.permissions().mode() & 0o007), (0, 0));
    }
    let view = |uid| {
        as_user(uid, &[], env!("CARGO_BIN_EXE_ustrace"))
            .arg("view")
            .arg(trace)
            .output()
            .unwrap()
    };
    let own = view(4245);
    assert!(own.status.success(), "the user reads its trace: {own:?}");
    let events = String::from_utf8_lossy(&own.stdout)
        .lines()
        .filter(|l| l.contains("demo:"))
        .count();
    assert_eq!(events, 300);
    let other = view(4246);
    assert!(
        !other.status.success(),
        "another user reads the trace: {other:?}"
    );
    let metadata = trace.join("metadata");
    let read = as_user(4246, &[], "cat").arg(&metadata).output().unwrap();
    assert!(!read.status.success(), "another user reads the metadata");
    let read = as_user(4245, &[], "cat").arg(&metadata).output().unwrap();
    assert!(read.status.success(), "{read:?}");
}
