//! Snapshot sessions (`create --snapshot`, `snapshot record`) on a real daemon, real
//! apps and the real babeltrace2: snapshots taken while apps flood the rings read
//! cleanly and hold the newest events; a partly filled sub-buffer is in them; a
//! SIGKILLed per-PID app's last events are in the next snapshot; nothing is written
//! while the session runs; bad requests are refused by name.

mod common;

use common::{Daemon, Running, babeltrace2, poke, sub_traces, wait_for};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;
use ustrace::protocol::messages::{
    Buffering, ChannelRequest, ControlOk, ControlRequest, LogLevelRule,
};
use ustrace::shm::Mode;

const WAIT: Duration = Duration::from_secs(30);

/// A channel of 4 sub-buffers of 4 KiB, its mode left to the session.
fn small(name: &str, buffers: Buffering) -> ChannelRequest {
    ChannelRequest {
        name: name.into(),
        buffers: Some(buffers),
        subbuf_size: Some(4096),
        num_subbuf: Some(4),
        ..ChannelRequest::default()
    }
}

/// Creates snapshot session `name` under the daemon's scratch dir with `channels`
/// each enabling `demo:*`, starts it, and returns its output.
fn snapshot_session(daemon: &Daemon, name: &str, channels: &[ChannelRequest]) -> PathBuf {
    let output = daemon.scratch.path(&format!("out-{name}"));
    daemon.ok(ControlRequest::CreateSnapshot {
        name: name.into(),
        output: Some(output.display().to_string()),
    });
    for channel in channels {
        daemon.ok(ControlRequest::EnableChannel {
            session: Some(name.into()),
            channel: channel.clone(),
        });
        daemon.ok(ControlRequest::EnableEvent {
            session: Some(name.into()),
            channel: Some(channel.name.clone()),
            pattern: "demo:*".into(),
            exclude: Vec::new(),
            loglevel: LogLevelRule::All,
            filter: None,
        });
    }
    daemon.ok(ControlRequest::Start {
        session: Some(name.into()),
    });
    output
}

/// Records a snapshot of `session`; returns the daemon's answer and the new
/// `snapshot-*` directory of `output`.
fn record(daemon: &Daemon, session: &str, output: &Path) -> (String, PathBuf) {
    let before = snapshot_dirs(output);
    let answer = match daemon.ok(ControlRequest::SnapshotRecord {
        session: Some(session.into()),
        output: None,
        max_size: None,
    }) {
        ControlOk::Done(message) => message,
        other => panic!("snapshot record answered {other:?}"),
    };
    let new: Vec<PathBuf> = snapshot_dirs(output)
        .into_iter()
        .filter(|d| !before.contains(d))
        .collect();
    assert_eq!(
        new.len(),
        1,
        "one new snapshot directory: {new:?} ({answer})"
    );
    (answer, new[0].clone())
}

/// The `snapshot-*` directories of `output`, sorted.
fn snapshot_dirs(output: &Path) -> Vec<PathBuf> {
    let mut dirs: Vec<PathBuf> = std::fs::read_dir(output)
        .map(|entries| {
            entries
                .flatten()
                .map(|e| e.path())
                .filter(|p| {
                    p.file_name()
                        .is_some_and(|n| n.to_string_lossy().starts_with("snapshot-"))
                })
                .collect()
        })
        .unwrap_or_default();
    dirs.sort();
    dirs
}

/// `(vpid-less) i` values of the `demo:ev` lines babeltrace2 prints for `dir`.
fn indexes(dir: &Path) -> Vec<i64> {
    babeltrace2(dir)
        .iter()
        .filter(|l| l.contains("demo:ev"))
        .filter_map(|l| l.split_once("{ i = "))
        .map(|(_, rest)| rest.split_once(',').expect("i then s").0.parse().unwrap())
        .collect()
}

/// The number after `label` in an answer.
fn figure(answer: &str, label: &str) -> u64 {
    let (_, rest) = answer
        .split_once(label)
        .unwrap_or_else(|| panic!("no {label:?} in {answer}"));
    let digits: String = rest
        .trim_start()
        .chars()
        .take_while(char::is_ascii_digit)
        .collect();
    digits
        .parse()
        .unwrap_or_else(|_| panic!("no count after {label:?} in {answer}"))
}

/// An app emitting an event every 20 µs until poked.
fn flooding_app(daemon: &Daemon) -> Running {
    Running(
        daemon
            .app(&["--paced-us", "20"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .unwrap(),
    )
}

#[test]
fn snapshots_of_a_flooded_overwrite_session_read_cleanly_and_hold_the_newest_events() {
    let daemon = Daemon::start();
    let output = snapshot_session(
        &daemon,
        "fr",
        &[small("u", Buffering::PerUid), small("p", Buffering::PerPid)],
    );
    let mut apps: Vec<Running> = (0..3).map(|_| flooding_app(&daemon)).collect();
    wait_for("three apps registered", WAIT, || daemon.status().apps == 3);
    // Each ring holds 16 KiB: flooded well past that, overwriting.
    wait_for("rings overwritten", WAIT, || {
        daemon.status().packets_overwritten > 0
    });

    let mut newest = Vec::new();
    for n in 1..=3 {
        let (answer, dir) = record(&daemon, "fr", &output);
        let name = dir.file_name().unwrap().to_string_lossy().into_owned();
        assert!(name.starts_with(&format!("snapshot-{n}-")), "{name}");
        let traces = sub_traces(&dir);
        assert!(
            traces.iter().any(|t| t.starts_with("ust/uid/")),
            "{traces:?}"
        );
        assert_eq!(
            traces.iter().filter(|t| t.starts_with("ust/pid/")).count(),
            3,
            "one per-PID sub-trace per app: {traces:?}"
        );
        let events = indexes(&dir);
        assert!(!events.is_empty(), "snapshot {n} holds events ({answer})");
        assert!(
            figure(&answer, "packets overwritten since the session started:") > 0,
            "{answer}"
        );
        newest.push(*events.iter().max().unwrap());
        // The apps go on between snapshots: the next one must hold newer events.
        let at = daemon.status().packets_overwritten;
        wait_for("more events overwritten", WAIT, || {
            daemon.status().packets_overwritten > at
        });
    }
    assert!(
        newest.windows(2).all(|w| w[0] < w[1]),
        "each snapshot holds newer events than the one before: {newest:?}"
    );
    // Nothing but snapshots was written while the session ran.
    let top: Vec<String> = std::fs::read_dir(&output)
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| !n.starts_with("snapshot-"))
        .collect();
    assert!(top.is_empty(), "only snapshots in the output: {top:?}");
    for app in &mut apps {
        poke(&mut app.0);
    }
    for mut app in apps {
        assert!(app.0.wait().unwrap().success());
    }
}

#[test]
fn a_snapshot_holds_the_partly_filled_sub_buffer_of_a_live_app() {
    let daemon = Daemon::start();
    let output = snapshot_session(&daemon, "part", &[small("u", Buffering::PerUid)]);
    let mut app = daemon.app_that_emitted(3);
    let (_, dir) = record(&daemon, "part", &output);
    assert_eq!(
        indexes(&dir),
        vec![0, 1, 2],
        "the three events of an open packet"
    );
    // Taking a snapshot takes nothing away: the next one holds them too, and the
    // app records on into the rings.
    let (_, again) = record(&daemon, "part", &output);
    assert_eq!(indexes(&again), vec![0, 1, 2]);
    poke(&mut app.0);
    assert!(app.0.wait().unwrap().success());
}

#[test]
fn a_sigkilled_per_pid_apps_last_events_are_in_the_next_snapshot() {
    let daemon = Daemon::start();
    let output = snapshot_session(&daemon, "crash", &[small("p", Buffering::PerPid)]);
    let mut app = daemon.app_that_emitted(50);
    let pid = app.0.id();
    app.0.kill().unwrap();
    app.0.wait().unwrap();
    wait_for("the daemon to see the app die", WAIT, || {
        daemon.status().apps == 0
    });
    let (_, dir) = record(&daemon, "crash", &output);
    let traces = sub_traces(&dir);
    assert_eq!(traces.len(), 1, "{traces:?}");
    assert!(
        traces[0].starts_with("ust/pid/ustrace-demo-") && traces[0].contains(&format!("-{pid}-")),
        "{traces:?}"
    );
    assert_eq!(indexes(&dir), (0..50).collect::<Vec<i64>>());
    // It was kept for one snapshot: the next has nothing of it.
    let answer = match daemon.ok(ControlRequest::SnapshotRecord {
        session: Some("crash".into()),
        output: None,
        max_size: None,
    }) {
        ControlOk::Done(message) => message,
        other => panic!("{other:?}"),
    };
    assert!(answer.contains("nothing to record"), "{answer}");
    wait_for("the dead app's rings freed", WAIT, || {
        daemon.status().buffer_sets == 0
    });
}

#[test]
fn dead_apps_kept_for_a_snapshot_are_bounded() {
    let daemon = Daemon::with_config("[daemon]\nsnapshot_kept_dead_apps = 2\n");
    let output = snapshot_session(&daemon, "few", &[small("p", Buffering::PerPid)]);
    for _ in 0..4 {
        daemon.run_app(&["--events", "5"]);
    }
    wait_for("two dead apps' sets left", WAIT, || {
        daemon.status().apps == 0 && daemon.status().buffer_sets == 2
    });
    let (_, dir) = record(&daemon, "few", &output);
    assert_eq!(sub_traces(&dir).len(), 2);
    assert_eq!(indexes(&dir).len(), 10);
}

#[test]
fn max_size_bounds_a_snapshot_to_its_newest_packets() {
    let daemon = Daemon::start();
    let output = snapshot_session(&daemon, "max", &[small("u", Buffering::PerUid)]);
    let cpus = ustrace::shm::cpu_count() as u64;
    daemon.run_pinned_app(20_000);
    let limit = 2 * 4096 * cpus;
    let answer = match daemon.ok(ControlRequest::SnapshotRecord {
        session: Some("max".into()),
        output: Some(daemon.scratch.path("elsewhere").display().to_string()),
        max_size: Some(limit),
    }) {
        ControlOk::Done(message) => message,
        other => panic!("{other:?}"),
    };
    let dirs = snapshot_dirs(&daemon.scratch.path("elsewhere"));
    assert_eq!(dirs.len(), 1, "--output places the snapshot: {answer}");
    assert!(snapshot_dirs(&output).is_empty());
    let bytes = figure(&answer, "packets (");
    assert!(
        bytes <= limit && bytes > 0,
        "{bytes} of at most {limit}: {answer}"
    );
    assert!(figure(&answer, "packets left out:") > 0, "{answer}");
    let events = indexes(&dirs[0]);
    assert_eq!(
        events.iter().max(),
        Some(&19_999),
        "the newest event is kept when older packets are left out"
    );

    let refused = daemon.ask(ControlRequest::SnapshotRecord {
        session: Some("max".into()),
        output: None,
        max_size: Some(4095),
    });
    let error = refused.expect_err("a max size below a sub-buffer per stream");
    assert!(error.contains("--max-size 4095 is too small"), "{error}");
}

#[test]
fn snapshot_requests_that_cannot_work_are_refused_by_name() {
    let daemon = Daemon::start();
    daemon.session("plain", &[("c", Buffering::PerUid)], true);
    let error = daemon
        .ask(ControlRequest::SnapshotRecord {
            session: Some("plain".into()),
            output: None,
            max_size: None,
        })
        .expect_err("not a snapshot session");
    assert!(error.contains("plain is not a snapshot session"), "{error}");

    daemon.ok(ControlRequest::CreateSnapshot {
        name: "snap".into(),
        output: Some(daemon.scratch.path("snap").display().to_string()),
    });
    let error = daemon
        .ask(ControlRequest::EnableChannel {
            session: Some("snap".into()),
            channel: ChannelRequest {
                mode: Some(Mode::Discard),
                ..small("d", Buffering::PerUid)
            },
        })
        .expect_err("discard mode in a snapshot session");
    assert!(
        error.contains("channel d must be in overwrite mode"),
        "{error}"
    );
    // Unset, the mode is overwrite whatever the defaults say.
    daemon.ok(ControlRequest::EnableChannel {
        session: Some("snap".into()),
        channel: small("o", Buffering::PerUid),
    });
    let Ok(ControlOk::Sessions(list)) = daemon.ask(ControlRequest::List {
        session: Some("snap".into()),
    }) else {
        panic!("list");
    };
    assert_eq!(list[0].channels[0].0.mode, Mode::Overwrite);
    assert!(list[0].snapshot);
    let listed = daemon.cli(&["list", "snap"]);
    let listed = String::from_utf8_lossy(&listed.stdout);
    assert!(
        listed.contains("snap [inactive, snapshot mode]"),
        "{listed}"
    );

    let cli = daemon.cli(&["snapshot", "record", "-s", "nope"]);
    assert!(!cli.status.success());
    assert!(
        String::from_utf8_lossy(&cli.stderr).contains("no session named \"nope\""),
        "{cli:?}"
    );
}

#[test]
fn the_cli_creates_a_snapshot_session_and_records() {
    let daemon = Daemon::start();
    let output = daemon.scratch.path("cli-out");
    let out = daemon.cli(&["create", "c", "--snapshot", "-o", output.to_str().unwrap()]);
    assert!(out.status.success(), "{out:?}");
    assert!(daemon.cli(&["enable-event", "demo:*"]).status.success());
    assert!(daemon.cli(&["start"]).status.success());
    daemon.run_pinned_app(10);
    let out = daemon.cli(&["snapshot", "record"]);
    assert!(out.status.success(), "{out:?}");
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(said.contains("snapshot of session c written to"), "{said}");
    let dirs = snapshot_dirs(&output);
    assert_eq!(dirs.len(), 1);
    assert_eq!(indexes(&dirs[0]).len(), 10);
}

#[test]
fn clear_empties_a_snapshot_sessions_rings() {
    let daemon = Daemon::start();
    let output = snapshot_session(
        &daemon,
        "cl",
        &[small("u", Buffering::PerUid), small("p", Buffering::PerPid)],
    );
    let before = daemon.app_that_emitted(300);
    let (_, full) = record(&daemon, "cl", &output);
    assert_eq!(
        indexes(&full).len(),
        600,
        "both channels hold the app's events"
    );

    daemon.ok(ControlRequest::Clear {
        session: Some("cl".into()),
    });
    daemon.run_app(&["--events", "40"]);
    let (_, cleared) = record(&daemon, "cl", &output);
    let mut events = indexes(&cleared);
    events.sort_unstable();
    let expected: Vec<i64> = (0..40).flat_map(|i| [i, i]).collect();
    assert_eq!(
        events, expected,
        "only the events emitted after the clear, in both channels"
    );
    drop(before);
}
