//! The session daemon end to end: real ustraced, real apps, real babeltrace2.

mod common;

use common::{Daemon, Running, babeltrace2, poke, sub_traces, wait_for};
use std::io::Write;
use std::os::unix::net::UnixStream;
use std::os::unix::process::CommandExt;
use std::time::Duration;
use ustrace::protocol::messages::{Buffering, ControlRequest};

const WAIT: Duration = Duration::from_secs(30);

fn demo_events(lines: &[String]) -> usize {
    lines.iter().filter(|l| l.contains("demo:ev")).count()
}

#[test]
fn per_uid_gives_one_sub_trace_per_uid_and_per_pid_one_per_app() {
    let daemon = Daemon::start();
    let output = daemon.session(
        "s",
        &[("byuid", Buffering::PerUid), ("bypid", Buffering::PerPid)],
        true,
    );
    for uid in [4242u32, 4243, 4242] {
        let out = daemon
            .app(&["--events", "3"])
            .uid(uid)
            .gid(uid)
            .output()
            .unwrap();
        assert!(out.status.success(), "{out:?}");
    }
    daemon.run_app(&["--events", "3"]);
    daemon.stop("s");

    let traces = sub_traces(&output);
    let uid_traces: Vec<_> = traces
        .iter()
        .filter(|t| t.starts_with("ust/uid/"))
        .collect();
    let pid_traces: Vec<_> = traces
        .iter()
        .filter(|t| t.starts_with("ust/pid/"))
        .collect();
    assert_eq!(
        uid_traces,
        [
            "ust/uid/0/64-bit",
            "ust/uid/4242/64-bit",
            "ust/uid/4243/64-bit"
        ],
        "{traces:?}"
    );
    assert_eq!(pid_traces.len(), 4, "{traces:?}");
    assert!(
        pid_traces
            .iter()
            .all(|t| t.starts_with("ust/pid/ustrace-demo-"))
    );
    // 4 apps x 3 events, recorded in both channels.
    assert_eq!(demo_events(&babeltrace2(&output)), 24);
}

#[test]
fn first_event_after_registration_is_recorded_for_each_of_100_apps() {
    let daemon = Daemon::start();
    let output = daemon.session("s", &[("c", Buffering::PerPid)], true);
    daemon.run_apps(100, 8, &["--events", "1"]);
    daemon.stop("s");
    assert_eq!(demo_events(&babeltrace2(&output)), 100);
}

#[test]
fn apps_registered_before_start_are_traced_after_it() {
    let daemon = Daemon::start();
    for (session, buffers) in [("uid", Buffering::PerUid), ("pid", Buffering::PerPid)] {
        let output = daemon.session(session, &[("c", buffers)], false);
        let registered = daemon.status().apps_total;
        let mut app = Running(
            daemon
                .app(&["--events", "10", "--await-enabled-ms", "20000"])
                .spawn()
                .unwrap(),
        );
        wait_for("the app to register", WAIT, || {
            daemon.status().apps_total == registered + 1
        });
        daemon.ok(ControlRequest::Start {
            session: Some(session.into()),
        });
        assert!(app.0.wait().unwrap().success());
        daemon.stop(session);
        assert_eq!(demo_events(&babeltrace2(&output)), 10, "{session}");
    }
}

#[test]
fn what_a_sigkilled_app_committed_is_in_the_trace() {
    let daemon = Daemon::start();
    let output = daemon.session(
        "s",
        &[("p", Buffering::PerPid), ("u", Buffering::PerUid)],
        true,
    );
    let mut app = daemon.app_that_emitted(5000);
    app.0.kill().unwrap();
    app.0.wait().unwrap();
    wait_for("the daemon to see the app die", WAIT, || {
        daemon.status().apps == 0
    });
    daemon.stop("s");
    assert_eq!(demo_events(&babeltrace2(&output)), 10_000);
}

#[test]
fn an_aborting_app_keeps_its_events() {
    let daemon = Daemon::start();
    let output = daemon.session("s", &[("p", Buffering::PerPid)], true);
    let status = daemon.app(&["--events", "50", "--abort"]).status().unwrap();
    assert!(!status.success());
    wait_for("the daemon to see the app die", WAIT, || {
        daemon.status().apps == 0
    });
    daemon.stop("s");
    assert_eq!(demo_events(&babeltrace2(&output)), 50);
}

/// Every path under `dir`, `dir` included, with its permission bits.
fn modes(dir: &std::path::Path) -> Vec<(std::path::PathBuf, u32)> {
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(dir).unwrap().permissions().mode() & 0o7777;
    let mut all = vec![(dir.to_path_buf(), mode)];
    if std::fs::metadata(dir).unwrap().is_dir() {
        for entry in std::fs::read_dir(dir).unwrap() {
            all.extend(modes(&entry.unwrap().path()));
        }
    }
    all
}

#[test]
fn traces_are_for_the_daemons_user_and_group_only() {
    let daemon = Daemon::start();
    let output = daemon.session(
        "s",
        &[("p", Buffering::PerPid), ("u", Buffering::PerUid)],
        true,
    );
    daemon.run_app(&["--events", "3"]);
    daemon.stop("s");
    let all = modes(&output);
    // The session directory, ust, uid, <uid>, 64-bit, pid, the app's directory,
    // two metadata files and at least two stream files.
    assert!(all.len() >= 11, "{all:?}");
    for (path, mode) in all {
        assert_eq!(mode & 0o027, 0, "{} has mode {mode:o}", path.display());
    }
}

/// Sends raw bytes on a socket and reads until the daemon closes it.
fn send_raw(path: &std::path::Path, bytes: &[u8]) {
    let mut sock = UnixStream::connect(path).unwrap();
    let _ = sock.write_all(bytes);
    let _ = sock.shutdown(std::net::Shutdown::Write);
    sock.set_read_timeout(Some(WAIT)).unwrap();
    let mut sink = Vec::new();
    let _ = std::io::Read::read_to_end(&mut sock, &mut sink);
}

#[test]
fn garbage_truncated_and_oversized_frames_leave_the_daemon_serving() {
    let daemon = Daemon::start();
    let output = daemon.session("s", &[("p", Buffering::PerPid)], true);
    let mut hello = Vec::new();
    hello.extend_from_slice(&8u32.to_le_bytes());
    hello.extend_from_slice(b"USTR");
    hello.extend_from_slice(&ustrace::protocol::PROTOCOL_VERSION.to_le_bytes());
    let bad: Vec<Vec<u8>> = vec![
        b"GET / HTTP/1.1\r\n\r\n".to_vec(),
        u32::MAX.to_le_bytes().to_vec(),
        vec![0xFF; 3],
        [&100u32.to_le_bytes()[..], b"short"].concat(),
        [&hello[..], &u32::MAX.to_le_bytes()[..]].concat(),
        [&hello[..], &12u32.to_le_bytes()[..], &[0xAB; 12][..]].concat(),
        [&8u32.to_le_bytes()[..], b"USTR", &99u32.to_le_bytes()[..]].concat(),
    ];
    for socket in ["apps.sock", "control.sock"] {
        for bytes in &bad {
            send_raw(&daemon.rundir.join(socket), bytes);
        }
    }
    daemon.run_app(&["--events", "7"]);
    daemon.stop("s");
    assert_eq!(demo_events(&babeltrace2(&output)), 7);
    assert_eq!(daemon.status().apps, 0);
}

#[test]
fn a_failing_writer_is_restarted_then_marked_failed_and_others_go_on() {
    let daemon =
        Daemon::with_config("[supervision]\nmax_restarts = 2\nwithin_secs = 60\nbackoff_ms = 10\n");
    let broken = daemon.session("broken", &[("p", Buffering::PerPid)], false);
    // The sub-trace directory cannot be created: `ust` is a file.
    std::fs::create_dir_all(&broken).unwrap();
    std::fs::write(broken.join("ust"), b"in the way").unwrap();
    daemon.ok(ControlRequest::Start {
        session: Some("broken".into()),
    });
    let healthy = daemon.session("healthy", &[("p", Buffering::PerPid)], true);
    daemon.run_app(&["--events", "20"]);
    wait_for("the broken writer to be marked failed", WAIT, || {
        !daemon.status().failed_writers.is_empty()
    });
    let status = daemon.status();
    assert!(status.writer_restarts >= 2, "{status:?}");
    assert!(status.packets_lost_writer >= 1, "{status:?}");
    assert!(
        status.failed_writers[0].stream.starts_with("broken/"),
        "{status:?}"
    );
    assert!(
        daemon
            .ask(ControlRequest::Stop {
                session: Some("broken".into())
            })
            .is_err()
    );
    daemon.stop("healthy");
    assert_eq!(demo_events(&babeltrace2(&healthy)), 20);
    let cli = std::process::Command::new(env!("CARGO_BIN_EXE_ustrace"))
        .arg("status")
        .env("USTRACE_RUNDIR", &daemon.rundir)
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&cli.stdout).contains("FAILED writer broken/"));
}

#[test]
fn after_1000_apps_the_daemon_holds_nothing_for_them() {
    let daemon = Daemon::start();
    let output = daemon.session(
        "s",
        &[("p", Buffering::PerPid), ("u", Buffering::PerUid)],
        true,
    );
    // One app per CPU first, so that the per-UID set, lazily made state and every
    // per-UID stream's writer (with its stream and index files) exist: the switch
    // timer starts each at its stream's first flushed packet, which would otherwise
    // happen during the 1,000 apps and raise the level.
    let cpus = ustrace::shm::cpu_count() as u64;
    for cpu in 0..cpus as usize {
        daemon.run_app_on_cpu(cpu, 1);
    }
    // Their per-PID sets and writers are gone; the per-UID ones stay for the session.
    wait_for("the first apps to be torn down", WAIT, || {
        let s = daemon.status();
        s.apps == 0 && s.buffer_sets == 1 && s.writers == cpus
    });
    // A writer opens its stream and index files with its first packet, which may
    // come after the writer itself on a loaded machine.
    let trace = output.join("ust/uid/0/64-bit");
    wait_for("every per-UID stream's files", WAIT, || {
        (0..cpus).all(|cpu| {
            trace.join(format!("u_{cpu}")).exists()
                && trace.join(format!("index/u_{cpu}.idx")).exists()
        })
    });
    // The per-PID ring pool is full before and after: it is part of the level.
    wait_for("the ring pool to be full", WAIT, || {
        let s = daemon.status();
        s.pid_sets_wanted > 0 && s.pid_sets_ready == s.pid_sets_wanted
    });
    let before = daemon.status();
    let (fds, maps) = (daemon.fds(), daemon.map_count());
    daemon.run_apps(1000, 8, &["--events", "1"]);
    let mut last = before.clone();
    let torn_down = common::poll_until(WAIT, || {
        last = daemon.status();
        last.apps == 0 && last.buffer_sets == before.buffer_sets && last.writers <= cpus
    });
    assert!(torn_down, "not torn down: before {before:?}, now {last:?}");
    assert_eq!(daemon.status().apps_total, 1000 + cpus);
    let mut now = Vec::new();
    let back = common::poll_until(WAIT, || {
        now = daemon.fds();
        now.len() <= fds.len() && daemon.map_count() <= maps
    });
    assert!(
        back,
        "fds or mappings not back to their level: fds {} then {}, extra {:?}; maps {maps} then {}",
        fds.len(),
        now.len(),
        common::extra(&fds, &now),
        daemon.map_count()
    );
    daemon.stop("s");
    wait_for("the ring pool to be freed after stop", WAIT, || {
        let s = daemon.status();
        s.pid_sets_wanted == 0 && s.pid_sets_ready == 0
    });
    assert_eq!(
        demo_events(&babeltrace2(&output)),
        2 * (1000 + cpus as usize)
    );
}

#[test]
fn without_a_daemon_an_app_warns_once_and_runs_untraced() {
    let scratch = common::Scratch::new("nodaemon");
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_ustrace-demo"))
        .args(["--events", "10"])
        .env("USTRACE_RUNDIR", &scratch.0)
        .output()
        .unwrap();
    assert!(out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(stderr.matches("runs untraced").count(), 1, "{stderr}");
}

#[test]
fn a_daemon_that_never_answers_costs_the_app_only_its_timeout() {
    let scratch = common::Scratch::new("mute");
    let listener = std::os::unix::net::UnixListener::bind(scratch.path("apps.sock")).unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_ustrace-demo"))
        .args(["--events", "10"])
        .env("USTRACE_RUNDIR", &scratch.0)
        .env("USTRACE_REGISTER_TIMEOUT_MS", "200")
        .output()
        .unwrap();
    drop(listener);
    assert!(out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("no answer from the session daemon"),
        "{stderr}"
    );
}

#[test]
fn a_stream_gets_a_writer_at_its_first_packet() {
    let daemon = Daemon::start();
    let output = daemon.session("s", &[("u", Buffering::PerUid)], true);
    let mut silent = daemon.app_that_emitted(0);
    wait_for("buffers to exist", WAIT, || {
        daemon.status().buffer_sets == 1
    });
    daemon.stop("s");
    assert_eq!(daemon.status().writers, 0, "nothing recorded, no writer");
    assert!(
        !output.join("ust").exists(),
        "nothing recorded, no file: {:?}",
        sub_traces(&output)
    );
    poke(&mut silent.0);
    assert!(silent.0.wait().unwrap().success());

    daemon.ok(ControlRequest::Start {
        session: Some("s".into()),
    });
    daemon.run_app(&["--events", "3"]);
    daemon.stop("s");
    let cpus = ustrace::shm::cpu_count() as u64;
    assert!((1..=cpus).contains(&daemon.status().writers));
    assert_eq!(demo_events(&babeltrace2(&output)), 3);
}

#[test]
fn destroy_frees_every_buffer_set_and_writer() {
    let daemon = Daemon::start();
    daemon.session("s", &[("u", Buffering::PerUid)], true);
    let mut app = daemon.app_that_emitted(3);
    wait_for("buffers to exist", WAIT, || {
        daemon.status().buffer_sets == 1
    });
    daemon.ok(ControlRequest::Destroy {
        session: Some("s".into()),
    });
    wait_for("buffers to be freed", WAIT, || {
        let s = daemon.status();
        s.buffer_sets == 0 && s.writers == 0
    });
    poke(&mut app.0);
    assert!(app.0.wait().unwrap().success());
}

#[test]
fn cli_errors_are_clear_and_exit_non_zero() {
    let daemon = Daemon::start();
    let cli = |args: &[&str]| {
        std::process::Command::new(env!("CARGO_BIN_EXE_ustrace"))
            .args(args)
            .env("USTRACE_RUNDIR", &daemon.rundir)
            .output()
            .unwrap()
    };
    let out = cli(&["start", "nosuch"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("no session named \"nosuch\""));
    assert!(cli(&["create", "a"]).status.success());
    let out = cli(&[
        "enable-channel",
        "c",
        "--buffers-pid",
        "--subbuf-size",
        "3K",
    ]);
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("power of two"),
        "{out:?}"
    );
    let out = cli(&["enable-event", "bad pattern:x"]);
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr)
            .contains("invalid event pattern \"bad pattern:x\": unexpected character ' '"),
        "{out:?}"
    );
    let listed = cli(&["list"]);
    assert!(String::from_utf8_lossy(&listed.stdout).contains("a [inactive]"));
}

/// Starts `ustraced` on a config file holding `text`, which it must refuse: the
/// file's path and the daemon's stderr.
fn refused_config(scratch: &common::Scratch, text: &str) -> (std::path::PathBuf, String) {
    let config = scratch.path("ustraced.toml");
    std::fs::write(&config, text).unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_ustraced"))
        .arg("--config")
        .arg(&config)
        .env("USTRACE_RUNDIR", scratch.path("run"))
        .output()
        .unwrap();
    assert!(!out.status.success(), "{out:?}");
    (config, String::from_utf8_lossy(&out.stderr).into_owned())
}

#[test]
fn a_bad_config_key_stops_the_daemon_naming_key_and_file() {
    let scratch = common::Scratch::new("badconfig");
    let (config, stderr) = refused_config(&scratch, "[supervision]\nmax_restart = 3\n");
    assert!(stderr.contains("max_restart"), "{stderr}");
    assert!(stderr.contains(&config.display().to_string()), "{stderr}");
}

#[test]
fn sessions_declared_in_the_config_trace_without_any_cli_call() {
    let scratch = common::Scratch::new("deployed");
    let output = scratch.path("out");
    let daemon = Daemon::with_config(&format!(
        "[[session]]\nname = \"auto\"\noutput = \"{}\"\nautostart = true\n\
         [[session.channel]]\nname = \"c\"\nbuffers = \"pid\"\nevents = [\"demo:*\"]\n",
        output.display()
    ));
    daemon.run_app(&["--events", "4"]);
    daemon.stop("auto");
    assert_eq!(demo_events(&babeltrace2(&output)), 4);
}

#[test]
fn a_config_session_the_daemon_refuses_stops_it_naming_session_and_reason() {
    let scratch = common::Scratch::new("refusedsession");
    let text = format!(
        "[[session]]\nname = \"auto\"\noutput = \"{}\"\n\
         [[session.channel]]\nname = \"c\"\nwriter = \"nosuch\"\n",
        scratch.path("out").display()
    );
    let (_, stderr) = refused_config(&scratch, &text);
    assert!(
        stderr.contains("config session auto: no writer named \"nosuch\""),
        "{stderr}"
    );
}

#[test]
fn sigterm_stops_the_daemon_with_every_started_session_on_disk() {
    let mut daemon = Daemon::start();
    let output = daemon.session("s", &[("u", Buffering::PerUid)], true);
    let mut app = daemon.app_that_emitted(30);
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(daemon.pid() as i32),
        nix::sys::signal::Signal::SIGTERM,
    )
    .unwrap();
    assert!(daemon.child.wait().unwrap().success());
    assert!(!daemon.rundir.join("apps.sock").exists());
    assert_eq!(demo_events(&babeltrace2(&output)), 30);
    poke(&mut app.0);
    assert!(app.0.wait().unwrap().success());
}

#[test]
fn a_connection_that_never_registers_is_closed_after_the_registration_timeout() {
    // 1 s: the test must see the silent peer counted before it is closed.
    let daemon = Daemon::with_config("[daemon]\nregistration_timeout_ms = 1000\n");
    let output = daemon.session("s", &[("p", Buffering::PerPid)], true);
    let mut silent = UnixStream::connect(daemon.rundir.join("apps.sock")).unwrap();
    wait_for("the silent peer to be counted", WAIT, || {
        daemon.status().apps == 1
    });
    // The daemon closes it: reading sees EOF instead of blocking for ever.
    silent.set_read_timeout(Some(WAIT)).unwrap();
    let mut sink = Vec::new();
    assert_eq!(
        std::io::Read::read_to_end(&mut silent, &mut sink).unwrap(),
        0
    );
    wait_for("its place to be freed", WAIT, || daemon.status().apps == 0);
    daemon.run_app(&["--events", "2"]);
    daemon.stop("s");
    assert_eq!(demo_events(&babeltrace2(&output)), 2);
}

#[test]
fn a_forked_rust_child_registers_as_its_own_process_before_fork_returns() {
    let daemon = Daemon::start();
    let output = daemon.session(
        "s",
        &[("p", Buffering::PerPid), ("u", Buffering::PerUid)],
        true,
    );
    // The child emits its 5 events right after fork() returned in it, and _exits.
    daemon.run_app(&["--events", "3", "--fork-child-events", "5"]);
    wait_for("both to be gone", WAIT, || daemon.status().apps == 0);
    daemon.stop("s");
    let traces = sub_traces(&output);
    let per_pid: Vec<&String> = traces.iter().filter(|t| t.contains("pid")).collect();
    assert_eq!(per_pid.len(), 2, "parent and child sub-traces: {traces:?}");
    let mut counts: Vec<(usize, usize)> = per_pid
        .iter()
        .map(|t| {
            let lines = babeltrace2(&output.join(t));
            let child = lines.iter().filter(|l| l.contains("\"child\"")).count();
            (demo_events(&lines) - child, child)
        })
        .collect();
    counts.sort();
    assert_eq!(
        counts,
        [(0, 5), (3, 0)],
        "the child's events in its own sub-trace only"
    );
    let uid = traces.iter().find(|t| t.contains("uid")).unwrap();
    assert_eq!(demo_events(&babeltrace2(&output.join(uid))), 8);
}

#[test]
fn a_registration_reaches_the_app_in_one_piece() {
    use nix::sys::socket::{ControlMessageOwned, MsgFlags, recvmsg};
    use std::io::IoSliceMut;
    use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
    use ustrace::ctf::field::{EventDesc, LogLevel};
    use ustrace::protocol::messages::{AppCommand, AppRegister};
    use ustrace::protocol::{APPS_SOCKET, frame};

    let daemon = Daemon::start();
    daemon.session("s", &[("p", Buffering::PerPid)], true);
    let sock = UnixStream::connect(daemon.rundir.join(APPS_SOCKET)).unwrap();
    frame::send_hello(&sock).unwrap();
    let register = AppRegister {
        name: "raw".into(),
        bitness: 64,
        events: vec![EventDesc {
            model_emf_uri: None,
            provider: "demo".into(),
            name: "raw".into(),
            loglevel: LogLevel::Info,
            fields: Vec::new(),
        }],
    };
    frame::send(&sock, &register, &[]).unwrap();
    sock.set_read_timeout(Some(WAIT)).unwrap();
    // One recvmsg: a unix socket stops a read after the bytes that carry fds, so
    // the channel, its enable and RegistrationDone come back together only if the
    // daemon sent them in one piece (one wake-up of the app, not three).
    let mut bytes = vec![0u8; 65536];
    let mut space = nix::cmsg_space!([RawFd; 16]);
    let mut iov = [IoSliceMut::new(&mut bytes)];
    let msg = recvmsg::<()>(
        sock.as_raw_fd(),
        &mut iov,
        Some(&mut space),
        MsgFlags::MSG_CMSG_CLOEXEC,
    )
    .unwrap();
    let mut fds = Vec::new();
    for cmsg in msg.cmsgs().unwrap() {
        if let ControlMessageOwned::ScmRights(raw) = cmsg {
            // SAFETY: SCM_RIGHTS just installed these descriptors in this process;
            // nothing else owns them.
            fds.extend(
                raw.into_iter()
                    .map(|fd| unsafe { OwnedFd::from_raw_fd(fd) }),
            );
        }
    }
    let len = msg.bytes;
    let mut commands = Vec::new();
    let mut at = 0;
    while at < len {
        let size =
            frame::payload_len(bytes[at..at + 4].try_into().unwrap(), frame::MAX_FRAME).unwrap();
        commands.push(frame::decode::<AppCommand>(&bytes[at + 4..at + 4 + size]).unwrap());
        at += 4 + size;
    }
    assert_eq!(commands.len(), 3, "{commands:?}");
    let AppCommand::Channel { streams, .. } = commands[0] else {
        panic!("expected the channel first: {commands:?}");
    };
    assert_eq!(fds.len(), streams as usize + 1);
    assert!(
        matches!(commands[1], AppCommand::Enable { .. }),
        "{commands:?}"
    );
    assert_eq!(commands[2], AppCommand::RegistrationDone);
}

#[test]
fn starting_a_per_pid_session_prepares_its_pid_directory_before_any_app() {
    use std::os::unix::fs::PermissionsExt;
    let daemon = Daemon::start();
    let output = daemon.session("s", &[("p", Buffering::PerPid)], true);
    let pid_dir = output.join("ust").join("pid");
    let meta = std::fs::metadata(&pid_dir).expect("ust/pid made at start");
    assert!(meta.is_dir());
    assert_eq!(meta.permissions().mode() & 0o027, 0);
    let per_uid = daemon.session("u", &[("c", Buffering::PerUid)], true);
    assert!(
        !per_uid.join("ust").exists(),
        "nothing for a per-UID session"
    );
}
