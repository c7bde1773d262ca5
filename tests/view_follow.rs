//! `ustrace view --follow DIR` on a real daemon's session while apps record: events
//! are printed as they reach the disk, per-PID sub-traces that appear later
//! included, and the command runs on until it is killed.

mod common;

use common::{Daemon, Running, wait_for};
use std::io::BufRead;
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use ustrace::protocol::messages::Buffering;

const WAIT: Duration = Duration::from_secs(30);

/// `ustrace view --follow` of `dir`, its stdout lines gathered by a thread.
fn follow(daemon: &Daemon, dir: &std::path::Path) -> (Running, Arc<Mutex<Vec<String>>>) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_ustrace"))
        .args(["view", "--follow"])
        .arg(dir)
        .env("USTRACE_RUNDIR", &daemon.rundir)
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let lines = Arc::new(Mutex::new(Vec::new()));
    let gathered = lines.clone();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(stdout).lines() {
            let Ok(line) = line else { return };
            gathered.lock().unwrap().push(line);
        }
    });
    (Running(child), lines)
}

/// The `demo:ev` lines gathered so far.
fn events(lines: &Mutex<Vec<String>>) -> Vec<String> {
    let lines = lines.lock().unwrap();
    lines
        .iter()
        .filter(|l| l.contains("demo:ev"))
        .cloned()
        .collect()
}

#[test]
fn follow_prints_events_as_they_reach_the_disk_new_per_pid_traces_included() {
    let daemon = Daemon::start();
    let output = daemon.session(
        "live",
        &[("u", Buffering::PerUid), ("p", Buffering::PerPid)],
        true,
    );
    let (mut viewer, lines) = follow(&daemon, &output);

    let first = daemon.app(&["--events", "5"]).output().unwrap();
    assert!(first.status.success(), "{first:?}");
    wait_for("the first app's 10 events", WAIT, || {
        events(&lines).len() == 10
    });

    // A second app: its per-PID sub-trace did not exist when following began.
    let mut second = daemon.app(&["--events", "3"]).spawn().unwrap();
    let pid = second.id();
    assert!(second.wait().unwrap().success());
    wait_for("the second app's 6 events", WAIT, || {
        events(&lines).len() == 16
    });
    let seen = events(&lines);
    let own = format!("ustrace-demo/{pid} ");
    assert_eq!(
        seen.iter().filter(|l| l.contains(&own)).count(),
        3,
        "the new per-PID sub-trace's events: {seen:#?}"
    );
    for i in 0..5 {
        let field = format!("{{ i = {i}, s = \"hello\" }}");
        assert_eq!(
            seen.iter().filter(|l| l.ends_with(&field)).count(),
            if i < 3 { 4 } else { 2 },
            "event {i} once per channel per app: {seen:#?}"
        );
    }
    assert!(
        viewer.0.try_wait().unwrap().is_none(),
        "view --follow runs until interrupted"
    );
    viewer.0.kill().unwrap();
    viewer.0.wait().unwrap();
}

#[test]
fn follow_of_a_directory_that_does_not_exist_is_an_error_naming_it() {
    let daemon = Daemon::start();
    let missing = daemon.scratch.path("nowhere");
    let out = daemon.cli(&["view", "--follow", missing.to_str().unwrap()]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("nowhere"), "{err}");
}
