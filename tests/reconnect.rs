//! Apps re-register when a session daemon appears: started before any daemon, or
//! outliving a daemon that was killed and started again on the same runtime dir.

mod common;

use common::*;
use std::io::BufRead;
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use ustrace::protocol::messages::{Buffering, ChannelRequest};

const WAIT: Duration = Duration::from_secs(30);

/// A daemon on `rundir` (shared with apps started before it), its own scratch for
/// its config and outputs.
fn daemon_on(rundir: &Path) -> Daemon {
    let scratch = Scratch::new("daemon");
    let config = scratch.path("ustraced.toml");
    std::fs::write(&config, "").unwrap();
    let child = Command::new(env!("CARGO_BIN_EXE_ustraced"))
        .arg("--config")
        .arg(&config)
        .env("USTRACE_RUNDIR", rundir)
        .env("RUST_LOG", "warn")
        .stdin(Stdio::null())
        .spawn()
        .unwrap();
    let daemon = Daemon {
        scratch,
        rundir: rundir.to_path_buf(),
        child,
    };
    wait_for("the daemon to answer", Duration::from_secs(20), || {
        ustrace::control::request_in(rundir, &ustrace::protocol::messages::ControlRequest::Status)
            .is_ok()
    });
    daemon
}

/// Starts session `s` with one channel of 4 KiB sub-buffers, so that a paced app
/// fills packets (and the disk sees them) within a fraction of a second.
fn small_session(daemon: &Daemon, buffers: Buffering) -> std::path::PathBuf {
    let channel = ChannelRequest {
        name: "c".into(),
        buffers: Some(buffers),
        subbuf_size: Some(4096),
        num_subbuf: Some(4),
        ..ChannelRequest::default()
    };
    daemon.session_with("s", "out-s", &[channel], true)
}

/// A paced app and what it has said on stderr so far (read as it comes, so that a
/// test can wait on a line).
struct Paced {
    /// The app.
    app: Running,
    /// Its stderr up to now.
    stderr: Arc<Mutex<String>>,
    /// The thread copying its stderr, done when the app exits.
    reader: std::thread::JoinHandle<()>,
}

impl Paced {
    /// Whether the app has written `text` to stderr yet.
    fn said(&self, text: &str) -> bool {
        self.stderr.lock().unwrap().contains(text)
    }

    /// Events the app has said it emitted so far (its `paced: N emitted` lines).
    fn emitted(&self) -> u64 {
        let said = self.stderr.lock().unwrap();
        said.lines()
            .rev()
            .filter_map(|l| l.strip_prefix("paced: ")?.strip_suffix(" emitted"))
            .find_map(|n| n.parse().ok())
            .unwrap_or(0)
    }

    /// Waits until the app has emitted `more` events beyond what it had said so
    /// far: emitting goes on (while `what`), it never waits on a daemon.
    fn keeps_emitting(&self, more: u64, what: &str) {
        let from = self.emitted();
        wait_for(&format!("the app to keep emitting {what}"), WAIT, || {
            self.emitted() >= from + more
        });
    }

    /// Descriptors of the app that are sockets (its connection to a daemon).
    fn sockets(&self) -> usize {
        std::fs::read_dir(format!("/proc/{}/fd", self.app.0.id()))
            .unwrap()
            .filter_map(|e| std::fs::read_link(e.ok()?.path()).ok())
            .filter(|link| link.to_string_lossy().starts_with("socket:"))
            .count()
    }
}

/// An app emitting one event per millisecond until poked (`--paced-us`).
fn paced_app(rundir: &Path) -> Paced {
    let mut app = Running(
        Command::new(env!("CARGO_BIN_EXE_ustrace-demo"))
            .args(["--paced-us", "1000", "--progress"])
            .env("USTRACE_RUNDIR", rundir)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap(),
    );
    let stderr = Arc::new(Mutex::new(String::new()));
    let pipe = app.0.stderr.take().unwrap();
    let copy = stderr.clone();
    let reader = std::thread::spawn(move || {
        for line in std::io::BufReader::new(pipe).lines() {
            let Ok(line) = line else { break };
            let mut all = copy.lock().unwrap();
            all.push_str(&line);
            all.push('\n');
        }
    });
    Paced {
        app,
        stderr,
        reader,
    }
}

/// Pokes a paced app and returns the events it emitted and its stderr.
fn finish(paced: Paced) -> (u64, String) {
    let Paced {
        mut app,
        stderr,
        reader,
    } = paced;
    poke(&mut app.0);
    let mut line = String::new();
    std::io::BufReader::new(app.0.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let status = app.0.wait().unwrap();
    reader.join().unwrap();
    let stderr = stderr.lock().unwrap().clone();
    assert!(status.success(), "{stderr}");
    let words: Vec<&str> = line.split_whitespace().collect();
    assert_eq!(words[0], "emitted", "{line}");
    (words[1].parse().unwrap(), stderr)
}

/// The `i` field of every demo event babeltrace2 reads in `dir`.
fn recorded(dir: &Path) -> Vec<i64> {
    babeltrace2(dir)
        .iter()
        .filter(|l| l.contains("demo:ev"))
        .map(|l| {
            let at = l.find("i = ").expect("an i field") + 4;
            let digits: String = l[at..]
                .chars()
                .take_while(|c| c.is_ascii_digit() || *c == '-')
                .collect();
            digits.parse().unwrap()
        })
        .collect()
}

/// Waits until the running app has registered and some of its events are on disk.
fn wait_for_events(daemon: &Daemon, output: &Path) {
    wait_for("the app to register with the daemon", WAIT, || {
        daemon.status().apps == 1
    });
    wait_for("events of the app on disk", WAIT, || {
        !sub_traces(output).is_empty() && !recorded(output).is_empty()
    });
}

/// Checks the app's events after registration: recorded in order, none repeated,
/// none beyond what it emitted.
fn check(emitted: u64, events: &[i64]) {
    assert!(!events.is_empty());
    assert!(
        events.windows(2).all(|w| w[0] < w[1]),
        "events out of order or repeated"
    );
    assert!(*events.last().unwrap() < emitted as i64);
}

#[test]
fn an_app_started_before_its_daemon_registers_when_it_appears_and_is_recorded() {
    let shared = Scratch::new("rundir");
    let rundir = shared.path("run");
    std::fs::create_dir_all(&rundir).unwrap();
    let app = paced_app(&rundir);
    // The app gives up on the missing daemon and emits untraced.
    wait_for("the app to run untraced", WAIT, || {
        app.said("runs untraced")
    });
    app.keeps_emitting(200, "with no daemon");
    let daemon = daemon_on(&rundir);
    let output = small_session(&daemon, Buffering::PerUid);
    wait_for_events(&daemon, &output);
    app.keeps_emitting(200, "once registered");
    let (emitted, stderr) = finish(app);
    daemon.stop("s");
    assert_eq!(stderr.matches("runs untraced").count(), 1, "{stderr}");
    assert!(
        stderr.contains("registered with the session daemon again"),
        "{stderr}"
    );
    check(emitted, &recorded(&output));
}

#[test]
fn an_app_outliving_a_killed_daemon_is_traced_by_the_next_one_on_the_same_rundir() {
    let shared = Scratch::new("rundir");
    let rundir = shared.path("run");
    std::fs::create_dir_all(&rundir).unwrap();
    let mut first = daemon_on(&rundir);
    let first_output = small_session(&first, Buffering::PerPid);
    let app = paced_app(&rundir);
    wait_for_events(&first, &first_output);
    let before = recorded(&first_output);
    let connected = app.sockets();
    // SIGKILL: no goodbye to the app, stale sockets left behind.
    first.child.kill().unwrap();
    first.child.wait().unwrap();

    // The app sees its connection end and closes it; it keeps emitting into
    // disabled slots until the next daemon registers it.
    wait_for(
        "the app to close its connection to the killed daemon",
        WAIT,
        || app.sockets() < connected,
    );
    app.keeps_emitting(200, "with its daemon killed");
    let second = daemon_on(&rundir);
    let output = small_session(&second, Buffering::PerPid);
    wait_for_events(&second, &output);
    app.keeps_emitting(200, "once registered again");
    let (emitted, stderr) = finish(app);
    second.stop("s");
    assert!(!stderr.contains("runs untraced"), "{stderr}");
    let events = recorded(&output);
    check(emitted, &events);
    // The second daemon records what was emitted after it registered the app,
    // later than what the first one had stored.
    assert!(
        before.last() < events.first(),
        "{:?} then {:?}",
        before.last(),
        events.first()
    );
}

#[test]
fn an_app_quiet_on_its_connection_past_the_registration_timeout_stays_registered() {
    // The timeout bounds a registration frame once it starts, never the quiet
    // between frames: an app that says nothing after registering (the usual app)
    // keeps its connection, and every event it emits is recorded.
    // 250 ms: short beside the test, long beside a registration (its buffers'
    // creation included) on a loaded machine.
    let daemon = Daemon::with_config("[daemon]\nregistration_timeout_ms = 250\n");
    let output = small_session(&daemon, Buffering::PerUid);
    let app = paced_app(&daemon.rundir);
    // One event per millisecond at most: event 2500 is at least ten timeouts after
    // the registration.
    wait_for("the app's 2500th event on disk", WAIT, || {
        !sub_traces(&output).is_empty() && recorded(&output).last() >= Some(&2500)
    });
    let status = daemon.status();
    let (_, stderr) = finish(app);
    daemon.stop("s");
    assert_eq!((status.apps, status.apps_total), (1, 1), "{status:?}");
    assert!(!stderr.contains("again"), "{stderr}");
    let events = recorded(&output);
    assert_eq!(events.first(), Some(&0));
    assert!(
        events.windows(2).all(|w| w[1] == w[0] + 1),
        "events missing: the app was cut off and registered again"
    );
}
