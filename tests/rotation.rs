//! Rotation (`rotate`, `enable-rotation`) and `clear` on a real daemon, real apps
//! and the real babeltrace2: while several apps flood a per-UID and a per-PID
//! channel, timer rotations and `rotate`s close the trace into `archives/`; each
//! archive reads on its own, and the archives with the live chunk hold every event
//! written exactly once. `clear` under load drops what was recorded before it and
//! keeps what is emitted after it returned.

mod common;

use common::{Daemon, Running, babeltrace2, stream_bytes, wait_for};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::Duration;
use ustrace::ctf::context::ContextType;
use ustrace::protocol::messages::{Buffering, ControlOk, ControlRequest, RotationSchedule};

const WAIT: Duration = Duration::from_secs(30);

/// Session `name` with a per-UID channel `u` (with the vpid context) and a per-PID
/// channel `p`, both enabling `demo:*`, started.
fn session(daemon: &Daemon, name: &str) -> PathBuf {
    let output = daemon.session(
        name,
        &[("u", Buffering::PerUid), ("p", Buffering::PerPid)],
        false,
    );
    daemon.ok(ControlRequest::AddContext {
        session: Some(name.into()),
        channel: Some("u".into()),
        contexts: vec![ContextType::Vpid],
    });
    daemon.ok(ControlRequest::Start {
        session: Some(name.into()),
    });
    output
}

/// An integer field `name = N` of a babeltrace2 line.
fn field(line: &str, name: &str) -> Option<i64> {
    let key = format!("{name} = ");
    let at = line.find(&key)? + key.len();
    let end = line[at..]
        .find([',', ' ', '}'])
        .map_or(line.len(), |e| e + at);
    line[at..end].trim().parse().ok()
}

/// The `demo:ev` events of one trace chunk (`<chunk>/ust`), each sub-trace read
/// by babeltrace2 on its own: `(channel, pid) -> i values`. Per-UID events name
/// their pid in the vpid context, per-PID ones in their directory name.
fn chunk_events(ust: &Path, into: &mut HashMap<(char, u32), Vec<i64>>) {
    let uid_root = ust.join("uid");
    if let Ok(uids) = std::fs::read_dir(&uid_root) {
        for uid in uids.flatten() {
            for line in babeltrace2(&uid.path().join("64-bit")) {
                if line.contains("demo:ev") {
                    let vpid = field(&line, "vpid").expect("a vpid context") as u32;
                    let i = field(&line, "i").expect("an i field");
                    into.entry(('u', vpid)).or_default().push(i);
                }
            }
        }
    }
    if let Ok(pids) = std::fs::read_dir(ust.join("pid")) {
        for dir in pids.flatten() {
            let name = dir.file_name().to_string_lossy().into_owned();
            // <procname>-<pid>-<YYYYMMDD>-<HHMMSS>-<connection>
            let pid: u32 = name.rsplit('-').nth(3).unwrap().parse().unwrap();
            for line in babeltrace2(&dir.path()) {
                if line.contains("demo:ev") {
                    let i = field(&line, "i").expect("an i field");
                    into.entry(('p', pid)).or_default().push(i);
                }
            }
        }
    }
}

/// The archives of a session's output, oldest first.
fn archives(output: &Path) -> Vec<PathBuf> {
    let mut found: Vec<PathBuf> = std::fs::read_dir(output.join("archives"))
        .map(|d| d.flatten().map(|e| e.path()).collect())
        .unwrap_or_default();
    found.sort_by_key(|p| {
        let name = p.file_name().unwrap().to_string_lossy().into_owned();
        name.rsplit('-').next().unwrap().parse::<u64>().unwrap()
    });
    found
}

/// The number of chunks `status` says `session` closed.
fn chunks_closed(daemon: &Daemon, session: &str) -> u64 {
    daemon
        .status()
        .rotations
        .iter()
        .find(|r| r.session == session)
        .map_or(0, |r| r.info.archives)
}

/// `rotate` of `session`: the archive path it printed, which exists.
fn rotate(daemon: &Daemon, session: &str) -> PathBuf {
    let ControlOk::Done(answer) = daemon.ok(ControlRequest::Rotate {
        session: Some(session.into()),
    }) else {
        panic!("rotate answered no message");
    };
    let path = PathBuf::from(answer.rsplit(" to ").next().unwrap());
    assert!(path.is_dir(), "{answer}: the archive exists");
    path
}

#[test]
fn rotations_under_load_archive_every_event_exactly_once() {
    let daemon = Daemon::with_config("[daemon]\nflush_interval_ms = 20\n");
    let output = session(&daemon, "rot");
    let apps: Vec<Running> = (0..3).map(|_| daemon.paced_app(50)).collect();
    wait_for("the apps to record", WAIT, || {
        stream_bytes(&output.join("ust")) > 0
    });

    // Timer rotations, until two chunks are archived.
    daemon.ok(ControlRequest::EnableRotation {
        session: Some("rot".into()),
        schedule: RotationSchedule {
            timer_us: Some(300_000),
            size: None,
        },
    });
    let status = daemon.cli(&["status"]);
    assert!(
        String::from_utf8_lossy(&status.stdout).contains("session rot rotates every 300ms"),
        "{status:?}"
    );
    wait_for("two timer rotations", WAIT, || {
        chunks_closed(&daemon, "rot") >= 2
    });
    daemon.ok(ControlRequest::DisableRotation {
        session: Some("rot".into()),
        timer: false,
        size: false,
    });

    // Three rotations on request, each once the live chunk has packets again.
    let mut printed = Vec::new();
    for _ in 0..3 {
        wait_for("the live chunk to record", WAIT, || {
            stream_bytes(&output.join("ust")) > 0
        });
        printed.push(rotate(&daemon, "rot"));
    }
    let emitted: Vec<(u32, i64)> = apps.into_iter().map(Running::finish_paced).collect();
    daemon.stop("rot");

    let all = archives(&output);
    assert!(all.len() >= 5, "{all:?}");
    for p in &printed {
        assert!(all.contains(p), "{p:?} among {all:?}");
    }
    let last = daemon.status().rotations;
    let last = last.iter().find(|r| r.session == "rot").unwrap();
    assert_eq!(
        last.info.last_archive.as_deref(),
        Some(printed[2].to_str().unwrap())
    );

    let mut events = HashMap::new();
    for archive in &all {
        chunk_events(&archive.join("ust"), &mut events);
    }
    chunk_events(&output.join("ust"), &mut events);
    let mut missing = 0;
    for (pid, count) in &emitted {
        for channel in ['u', 'p'] {
            let mut got = events.remove(&(channel, *pid)).unwrap_or_default();
            let recorded = got.len();
            got.sort_unstable();
            got.dedup();
            assert_eq!(
                got.len(),
                recorded,
                "app {pid} channel {channel}: duplicates"
            );
            assert!(got.iter().all(|i| (0..*count).contains(i)));
            missing += count - got.len() as i64;
        }
    }
    assert!(
        events.is_empty(),
        "events of unknown apps: {:?}",
        events.keys()
    );
    assert_eq!(
        missing as u64,
        daemon.status().events_discarded,
        "every event not recorded was counted discarded"
    );
}

#[test]
fn clear_under_load_drops_what_came_before_and_keeps_what_came_after() {
    let daemon = Daemon::with_config("[daemon]\nflush_interval_ms = 20\n");
    let output = session(&daemon, "clr");
    let before = daemon.app_that_emitted(2000);
    let load = daemon.paced_app(50);
    wait_for("the events before the clear on disk", WAIT, || {
        stream_bytes(&output.join("ust")) > 0
    });

    let ControlOk::Done(answer) = daemon.ok(ControlRequest::Clear {
        session: Some("clr".into()),
    }) else {
        panic!("clear answered no message");
    };
    assert!(answer.contains("cleared"), "{answer}");
    let after = daemon.run_app(&["--events", "3000"]);
    assert!(after.status.success());
    let (load_pid, _) = load.finish_paced();
    let before_pid = before.0.id();
    drop(before);
    daemon.stop("clr");

    assert!(!output.join("archives").exists(), "clear archives nothing");
    let mut events = HashMap::new();
    chunk_events(&output.join("ust"), &mut events);
    for channel in ['u', 'p'] {
        assert!(
            !events.contains_key(&(channel, before_pid)),
            "channel {channel}: an event emitted before the clear survived it"
        );
        assert!(
            events.contains_key(&(channel, load_pid)),
            "channel {channel}: the flooding app records after the clear"
        );
    }
    let after_apps: Vec<_> = events
        .iter()
        .filter(|((_, pid), _)| *pid != load_pid)
        .collect();
    assert_eq!(
        after_apps.len(),
        2,
        "the app after the clear, in both channels"
    );
    for (key, got) in after_apps {
        let mut got = got.clone();
        got.sort_unstable();
        assert_eq!(got, (0..3000).collect::<Vec<i64>>(), "{key:?}");
    }
}

#[test]
fn rotation_is_refused_by_name_where_there_is_nothing_to_rotate() {
    let daemon = Daemon::start();
    daemon.ok(ControlRequest::CreateSnapshot {
        name: "flight".into(),
        output: Some(daemon.scratch.path("out-flight").display().to_string()),
    });
    let refused = daemon
        .ask(ControlRequest::Rotate {
            session: Some("flight".into()),
        })
        .unwrap_err();
    assert!(
        refused.contains("flight") && refused.contains("snapshot"),
        "{refused}"
    );
    let refused = daemon
        .ask(ControlRequest::EnableRotation {
            session: Some("nope".into()),
            schedule: RotationSchedule {
                timer_us: Some(1),
                size: None,
            },
        })
        .unwrap_err();
    assert!(refused.contains("nope"), "{refused}");
    let bad = daemon.cli(&["enable-rotation", "--timer", "10parsecs"]);
    assert!(!bad.status.success());
    assert!(String::from_utf8_lossy(&bad.stderr).contains("10parsecs"));
}

#[test]
fn a_config_session_rotates_on_its_timer_and_the_cli_prints_each_archive() {
    let scratch = common::Scratch::new("rotation-config");
    let output = scratch.path("out");
    let daemon = Daemon::with_config(&format!(
        "[daemon]\nflush_interval_ms = 20\n\n[[session]]\nname = \"conf\"\noutput = \"{}\"\n\
         rotate_timer = \"200ms\"\n  [[session.channel]]\n  name = \"u\"\n  events = [\"demo:*\"]\n",
        output.display()
    ));
    daemon.run_app(&["--events", "100"]);
    let archived = || {
        archives(&output)
            .iter()
            .flat_map(|a| babeltrace2(a))
            .filter(|l| l.contains("demo:ev"))
            .count()
    };
    wait_for("timer rotations to archive the app's events", WAIT, || {
        archived() == 100
    });
    let saved = daemon.cli(&["save", "conf"]);
    let saved = String::from_utf8_lossy(&saved.stdout).into_owned();
    assert!(saved.contains("rotate_timer = \"200ms\""), "{saved}");

    let disabled = daemon.cli(&["disable-rotation", "-s", "conf", "--timer"]);
    assert!(disabled.status.success(), "{disabled:?}");
    daemon.run_app(&["--events", "100"]);
    wait_for("the app's events in the live chunk", WAIT, || {
        stream_bytes(&output.join("ust")) > 0
    });
    let rotated = daemon.cli(&["--json", "rotate", "conf"]);
    assert!(rotated.status.success(), "{rotated:?}");
    let answer: serde_json::Value = serde_json::from_slice(&rotated.stdout).unwrap();
    assert_eq!(answer["command"], "rotate");
    let message = answer["message"].as_str().unwrap();
    let archive = PathBuf::from(message.rsplit(" to ").next().unwrap());
    assert!(archive.starts_with(output.join("archives")), "{message}");
    let events = babeltrace2(&archive);
    assert_eq!(
        events.iter().filter(|l| l.contains("demo:ev")).count(),
        100,
        "the archive holds the second app's events and reads on its own"
    );
}
