//! A metadata bomb: registrations past `[limits]` are refused with a reason naming
//! the limit, the daemon stays small, and one uid's registrations never make
//! another's wait for them to end.

mod common;

use common::*;
use std::os::unix::net::UnixStream;
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;
use ustrace::ctf::field::{EventDesc, FieldDesc, FieldType, LogLevel};
use ustrace::protocol::messages::{AppCommand, AppRegister, Buffering};
use ustrace::protocol::{APPS_SOCKET, frame};

const WAIT: Duration = Duration::from_secs(60);
/// The unprivileged user the hostile client runs as.
const HOSTILE_UID: u32 = 4242;

/// Not a test: the hostile client's body, run by `hostile` in a child process of
/// uid 4242 (the test binary again, with `USTRACE_HOSTILE` set). Registers `rounds`
/// times, each on a new connection, `events` new events of `fields` fields named
/// after `tag` and the round, and prints `round N done` or `round N refused: why`.
#[test]
fn hostile_client() {
    let Ok(spec) = std::env::var("USTRACE_HOSTILE") else {
        return;
    };
    let numbers: Vec<usize> = spec.split(',').map(|n| n.parse().unwrap()).collect();
    let [rounds, events, fields] = numbers[..] else {
        panic!("USTRACE_HOSTILE={spec}");
    };
    let tag = std::env::var("USTRACE_HOSTILE_TAG").unwrap();
    let path = ustrace::protocol::rundir().unwrap().join(APPS_SOCKET);
    let fields: Vec<FieldDesc> = (0..fields)
        .map(|f| FieldDesc {
            name: format!("f{f}"),
            ty: FieldType::Bool,
        })
        .collect();
    // Rounds 0: register again and again until a line (or EOF) on stdin.
    let stop = Arc::new(AtomicBool::new(false));
    if rounds == 0 {
        let stop = stop.clone();
        std::thread::spawn(move || {
            let _ = std::io::stdin().read_line(&mut String::new());
            stop.store(true, Ordering::Relaxed);
        });
    }
    let mut round = 0;
    while (rounds == 0 && !stop.load(Ordering::Relaxed)) || round < rounds {
        let register = AppRegister {
            name: "bomb".into(),
            bitness: 64,
            events: (0..events)
                .map(|i| EventDesc {
                    model_emf_uri: None,
                    provider: "demo".into(),
                    name: format!("{tag}{round}_{i}"),
                    loglevel: LogLevel::Info,
                    fields: fields.clone(),
                })
                .collect(),
        };
        let sock = UnixStream::connect(&path).unwrap();
        frame::send_hello(&sock).unwrap();
        frame::send(&sock, &register, &[]).unwrap();
        let outcome = loop {
            match frame::recv::<AppCommand>(&sock, frame::MAX_FRAME).unwrap() {
                Some((AppCommand::RegistrationDone, _)) => break "done".to_string(),
                Some((AppCommand::Refused { reason }, _)) => break format!("refused: {reason}"),
                Some(_) => {}
                None => break "closed".to_string(),
            }
        };
        println!("round {round} {outcome}");
        round += 1;
    }
}

/// Starts the hostile client as uid 4242 against `rundir`: `rounds` registrations,
/// or (0) registrations until poked.
fn hostile(rundir: &Path, tag: &str, rounds: usize, events: usize, fields: usize) -> Child {
    Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "hostile_client",
            "--nocapture",
            "--test-threads",
            "1",
        ])
        .env("USTRACE_HOSTILE", format!("{rounds},{events},{fields}"))
        .env("USTRACE_HOSTILE_TAG", tag)
        .env("USTRACE_RUNDIR", rundir)
        .uid(HOSTILE_UID)
        .gid(HOSTILE_UID)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
}

/// Waits for a hostile client and returns its outcome lines.
fn outcomes(child: Child) -> Vec<String> {
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "{out:?}");
    String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        // The harness prints `test hostile_client ... ` before the first one.
        .filter_map(|l| l.find("round ").map(|at| l[at..].to_string()))
        .collect()
}

/// Registrations the daemon refused because their trace was full.
fn trace_refusals(daemon: &Daemon) -> u64 {
    daemon
        .status()
        .refusals
        .iter()
        .filter(|(cause, _)| cause == "limits.max_events_per_trace")
        .map(|(_, n)| n)
        .sum()
}

/// Resident memory of `pid`, in bytes.
fn rss(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let line = status.lines().find(|l| l.starts_with("VmRSS:")).unwrap();
    let kib: u64 = line.split_whitespace().nth(1).unwrap().parse().unwrap();
    kib * 1024
}

fn demo_events(dir: &Path) -> usize {
    babeltrace2(dir)
        .iter()
        .filter(|l| l.contains("demo:ev"))
        .count()
}

#[test]
fn an_app_registering_100000_events_is_refused_naming_the_limit_and_the_daemon_stays_small() {
    // Frames big enough to carry the bomb: the event limit, not the frame size,
    // must stop it.
    let daemon = Daemon::with_config("[daemon]\nmax_frame_bytes = \"16M\"\n");
    let output = daemon.session("s", &[("c", Buffering::PerUid)], true);
    let before = rss(daemon.pid());
    let lines = outcomes(hostile(&daemon.rundir, "bomb", 5, 100_000, 0));
    assert_eq!(lines.len(), 5, "{lines:?}");
    for line in &lines {
        assert!(
            line.ends_with(
                "refused: the app registers 100000 events, more than limits.max_events_per_app (8192)"
            ),
            "{line}"
        );
    }
    let grown = rss(daemon.pid()).saturating_sub(before);
    assert!(grown < 64 << 20, "the daemon grew by {grown} bytes");
    // Everyone else is served as before.
    daemon.run_app(&["--events", "10"]);
    daemon.stop("s");
    assert_eq!(demo_events(&output), 10);
}

#[test]
fn an_event_with_too_many_fields_is_refused_naming_the_limit() {
    let daemon = Daemon::start();
    daemon.session("s", &[("c", Buffering::PerUid)], true);
    let lines = outcomes(hostile(&daemon.rundir, "wide", 1, 1, 1000));
    assert_eq!(
        lines,
        [
            "round 0 refused: event demo:wide0_0 has 1000 fields, more than limits.max_fields_per_event (128)"
        ]
    );
}

#[test]
fn a_user_filling_its_trace_is_refused_there_and_never_delays_another_user_s_registration() {
    let daemon = Daemon::with_config("[daemon]\nregistration_timeout_ms = 60000\n");
    let output = daemon.session("s", &[("c", Buffering::PerUid)], true);
    // Two processes of uid 4242, each registering 8,000 new events (just under
    // limits.max_events_per_app) again and again into their user's trace, until
    // poked: the attack goes on until every root app below is served.
    let mut bombs: Vec<Child> = ["a", "b"]
        .iter()
        .map(|tag| hostile(&daemon.rundir, tag, 0, 8000, 0))
        .collect();
    // Under attack: the bombs have filled their user's trace and go on being refused.
    wait_for("the bombs to fill their user's trace", WAIT, || {
        daemon
            .status()
            .refusals
            .iter()
            .any(|(cause, n)| cause == "limits.max_events_per_trace" && *n > 0)
    });
    // Each root registration waits at most for the bomb registrations queued before
    // it (each bounded by limits.max_events_per_app), never for the attack to end:
    // every root app is registered, and has run and exited, while both bombs still
    // hold their place and attack. An ordering, not a speed: nothing is timed.
    // The root apps (as every test app) and the daemon wait longer than the default
    // 3 s for a registration: a loaded machine slows the queue down; what is checked
    // is its order.
    let root_apps = 5;
    for n in 0..root_apps {
        let out = daemon.run_app(&["--events", "10", "--report"]);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            stderr.lines().any(|l| l.starts_with("registration ")),
            "root app {n} was not registered: {stderr}"
        );
        for bomb in &mut bombs {
            assert!(
                bomb.try_wait().unwrap().is_none(),
                "a bomb ended before root app {n} was served"
            );
        }
    }
    let refused_before = trace_refusals(&daemon);
    // The bombs went on meanwhile: they are refused again after the last root app.
    wait_for("a bomb refused after the root apps", WAIT, || {
        trace_refusals(&daemon) > refused_before
    });
    for bomb in &mut bombs {
        poke(bomb);
    }
    let lines: Vec<String> = bombs.into_iter().flat_map(outcomes).collect();
    assert!(
        lines
            .iter()
            .any(|l| l
                .ends_with("the trace holds limits.max_events_per_trace (65536) events already")),
        "{lines:?}"
    );
    wait_for("the root apps to be gone", WAIT, || {
        daemon.status().apps == 0
    });
    daemon.stop("s");
    let root_trace = output.join("ust/uid/0/64-bit");
    assert_eq!(demo_events(&root_trace), 10 * root_apps);
}

#[test]
fn an_app_past_a_limit_prints_the_reason_naming_it_once_and_runs_untraced() {
    // demo:ev has two fields.
    let daemon = Daemon::with_config("[limits]\nmax_fields_per_event = 1\n");
    daemon.session("s", &[("c", Buffering::PerUid)], true);
    let out = daemon.run_app(&["--events", "10"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(
        stderr.trim(),
        "ustrace: ustrace-demo runs untraced: refused by the session daemon: \
         event demo:ev has 2 fields, more than limits.max_fields_per_event (1)"
    );
    assert_eq!(daemon.status().apps_total, 1);
}
