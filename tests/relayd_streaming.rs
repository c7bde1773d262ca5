//! Sessions streamed to a real, unmodified lttng-relayd on loopback: its output
//! read by babeltrace2, a live viewer attached while apps run, the relayd killed and
//! restarted mid-session.

mod common;

use common::{Daemon, Running, Scratch, poke, poll_until, wait_for};
use std::io::{BufRead, BufReader};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;
use ustrace::protocol::messages::{Buffering, ChannelRequest, ControlRequest, LogLevelRule};

/// Three distinct free loopback ports (the kernel's picks, all held until the
/// three are chosen, then released for the relayd to take).
fn free_ports() -> [u16; 3] {
    let listeners = [(); 3].map(|()| TcpListener::bind("127.0.0.1:0").unwrap());
    listeners.map(|l| l.local_addr().unwrap().port())
}

/// Relayds started on ports found in use before they bound them (another test's
/// connection took one in between) before giving up.
const PORT_TRIES: usize = 5;

/// What lttng-relayd logs when a port it was given is in use: it may then keep
/// running with its other ports bound.
const PORT_TAKEN: &str = "Failed to bind socket: Address already in use";

/// An `lttng-relayd` on 127.0.0.1 with its own output directory and ports, killed
/// (by pid) on drop.
struct Relayd {
    child: Child,
    output: PathBuf,
    control: u16,
    data: u16,
    live: u16,
}

impl Relayd {
    /// A relayd on free ports: started again on others when a port it was given
    /// was taken before it could bind it.
    fn start(scratch: &Scratch) -> Relayd {
        let mut log = String::new();
        for _ in 0..PORT_TRIES {
            let [control, data, live] = free_ports();
            match Relayd::try_start_on(scratch, control, data, live, "relayd-out") {
                Ok(relayd) => return relayd,
                Err(e) if e.contains(PORT_TAKEN) => log = e,
                Err(e) => panic!("lttng-relayd does not listen: {e}"),
            }
        }
        panic!("lttng-relayd found its ports taken {PORT_TRIES} times: {log}")
    }

    fn start_on(scratch: &Scratch, control: u16, data: u16, live: u16, output: &str) -> Relayd {
        Relayd::try_start_on(scratch, control, data, live, output)
            .unwrap_or_else(|log| panic!("lttng-relayd does not listen: {log}"))
    }

    /// The relayd once it listens, or its log if it ended (or did not listen
    /// within the deadline) first; killed then.
    fn try_start_on(
        scratch: &Scratch,
        control: u16,
        data: u16,
        live: u16,
        output: &str,
    ) -> Result<Relayd, String> {
        let output = scratch.path(output);
        let home = scratch.path("lttng-home");
        std::fs::create_dir_all(&home).unwrap();
        let child = Command::new("lttng-relayd")
            .arg(format!("--control-port=tcp://127.0.0.1:{control}"))
            .arg(format!("--data-port=tcp://127.0.0.1:{data}"))
            .arg(format!("--live-port=tcp://127.0.0.1:{live}"))
            .arg("--output")
            .arg(&output)
            .env("LTTNG_HOME", &home)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(scratch.path("relayd.log")).unwrap())
            .spawn()
            .expect("lttng-relayd installed (scripts/test.sh installs lttng-tools)");
        let mut relayd = Relayd {
            child,
            output,
            control,
            data,
            live,
        };
        let mut ended = false;
        let listening = poll_until(Duration::from_secs(20), || {
            ended = relayd.child.try_wait().is_ok_and(|status| status.is_some());
            ended || TcpStream::connect(("127.0.0.1", relayd.live)).is_ok()
        });
        let log = std::fs::read_to_string(scratch.path("relayd.log")).unwrap_or_default();
        if listening && !ended && !log.contains(PORT_TAKEN) {
            return Ok(relayd);
        }
        Err(log)
    }

    fn url(&self) -> String {
        format!("net://127.0.0.1:{}:{}", self.control, self.data)
    }

    /// The session directories `<output>/<host>/<session>-<date>` of `session`.
    fn session_dirs(&self, session: &str) -> Vec<PathBuf> {
        let mut found = Vec::new();
        for host in std::fs::read_dir(&self.output)
            .into_iter()
            .flatten()
            .flatten()
        {
            for dir in std::fs::read_dir(host.path())
                .into_iter()
                .flatten()
                .flatten()
            {
                let name = dir.file_name().to_string_lossy().into_owned();
                if name.starts_with(&format!("{session}-")) {
                    found.push(dir.path());
                }
            }
        }
        found.sort();
        found
    }

    fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Relayd {
    fn drop(&mut self) {
        self.kill();
    }
}

/// This host's name as the daemon files traces under it.
fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .unwrap()
        .trim()
        .to_owned()
}

/// Creates `name` streaming to `url` (live when `live_us` is given) with channels
/// `pp` (per-PID) and `pu` (per-UID), both enabling `demo:*`, and starts it.
fn streaming_session(daemon: &Daemon, name: &str, url: &str, live_us: Option<u32>) {
    daemon.ok(ControlRequest::Create {
        name: name.into(),
        output: None,
        url: Some(url.into()),
        live_timer_us: live_us,
    });
    for (channel, buffers) in [("pp", Buffering::PerPid), ("pu", Buffering::PerUid)] {
        daemon.ok(ControlRequest::EnableChannel {
            session: Some(name.into()),
            channel: ChannelRequest {
                name: channel.into(),
                buffers: Some(buffers),
                ..ChannelRequest::default()
            },
        });
        daemon.ok(ControlRequest::EnableEvent {
            session: Some(name.into()),
            channel: Some(channel.into()),
            pattern: "demo:*".into(),
            exclude: Vec::new(),
            loglevel: LogLevelRule::All,
            filter: None,
        });
    }
    daemon.ok(ControlRequest::Start {
        session: Some(name.into()),
    });
}

/// Event lines babeltrace2 reads from every sub-trace under `dir` (0 while a
/// sub-trace is still incomplete).
fn events_under(dir: &Path) -> usize {
    common::sub_traces(dir)
        .iter()
        .map(|sub| {
            let out = common::babeltrace2_raw(&[], &dir.join(sub));
            if !out.status.success() {
                return 0;
            }
            String::from_utf8_lossy(&out.stdout)
                .lines()
                .filter(|l| l.contains("demo:"))
                .count()
        })
        .sum()
}

const APPS: usize = 50;
const EVENTS_PER_APP: u64 = 40;
const FLOOD: u64 = 20_000;

#[test]
fn per_pid_apps_and_a_per_uid_flood_reach_the_relayd_whole() {
    let scratch = Scratch::new("relayd");
    let relayd = Relayd::start(&scratch);
    let daemon = Daemon::start();
    streaming_session(&daemon, "fleet", &relayd.url(), None);
    daemon.run_apps(APPS, 10, &["--events", &EVENTS_PER_APP.to_string()]);
    daemon.run_app(&["--events", &FLOOD.to_string()]);
    daemon.stop("fleet");
    let status = daemon.status();
    daemon.ok(ControlRequest::Destroy {
        session: Some("fleet".into()),
    });
    // Every event is in both channels: the per-PID one and the per-UID one.
    let expected = 2 * (APPS as u64 * EVENTS_PER_APP + FLOOD) - status.events_discarded;
    let dirs = relayd.session_dirs("fleet");
    assert_eq!(dirs.len(), 1, "one relayd session directory: {dirs:?}");
    let dir = &dirs[0];
    assert_eq!(
        dir.parent().unwrap().file_name().unwrap().to_string_lossy(),
        hostname()
    );
    let subs = common::sub_traces(dir);
    assert!(
        subs.iter()
            .any(|s| s == "ust/uid/0/64-bit" || s.starts_with("ust/uid/")),
        "{subs:?}"
    );
    let pids = subs.iter().filter(|s| s.starts_with("ust/pid/")).count();
    assert_eq!(pids, APPS + 1, "one per-PID sub-trace per app: {subs:?}");
    let mut seen = 0;
    let whole = poll_until(Duration::from_secs(30), || {
        seen = events_under(dir);
        seen as u64 == expected
    });
    assert!(
        whole,
        "babeltrace2 read {seen} events from the relayd, expected {expected} \
         ({} discarded)",
        status.events_discarded
    );
    assert_eq!(status.packets_lost_writer, 0);
    assert_eq!(
        (status.relayd_connects, status.relayd_send_failures),
        (1, 0)
    );
}

/// Reads `babeltrace2` lines on a thread: the test waits on the channel with a deadline.
fn lines_of(child: &mut Child) -> mpsc::Receiver<String> {
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                return;
            }
        }
    });
    rx
}

#[test]
fn a_live_viewer_sees_events_while_apps_run() {
    let scratch = Scratch::new("relayd-live");
    let relayd = Relayd::start(&scratch);
    let daemon = Daemon::start();
    streaming_session(&daemon, "watched", &relayd.url(), Some(100_000));
    // The relayd learns of the session with its first packet.
    daemon.run_app(&["--events", "5"]);
    wait_for("the session on the relayd", Duration::from_secs(20), || {
        !relayd.session_dirs("watched").is_empty()
    });
    let url = format!(
        "net://127.0.0.1:{}/host/{}/watched",
        relayd.live,
        hostname()
    );
    let mut viewer = Running(
        Command::new("babeltrace2")
            .args(["--input-format=lttng-live", &url])
            .stdout(Stdio::piped())
            .stderr(std::fs::File::create(scratch.path("viewer.log")).unwrap())
            .spawn()
            .unwrap(),
    );
    let lines = lines_of(&mut viewer.0);
    // A per-UID app that keeps running, and per-PID apps that start and end.
    let mut paced = daemon.paced_app(2000);
    let mut seen = 0;
    let saw = poll_until(Duration::from_secs(30), || {
        daemon.run_app(&["--events", "3"]);
        while let Ok(line) = lines.try_recv() {
            if line.contains("demo:") {
                seen += 1;
            }
        }
        seen >= 50
    });
    let log = std::fs::read_to_string(scratch.path("viewer.log")).unwrap_or_default();
    assert!(saw, "the live viewer printed {seen} events; it said: {log}");
    poke(&mut paced.0);
    assert!(paced.0.wait().unwrap().success());
    // Destroying the session closes its streams: the viewer reaches their end.
    daemon.ok(ControlRequest::Destroy {
        session: Some("watched".into()),
    });
    wait_for("the live viewer to end", Duration::from_secs(30), || {
        viewer.0.try_wait().unwrap().is_some()
    });
}

#[test]
fn relayd_killed_and_restarted_costs_a_counted_gap_only() {
    let scratch = Scratch::new("relayd-kill");
    let mut relayd = Relayd::start(&scratch);
    let (control, data, live) = (relayd.control, relayd.data, relayd.live);
    let daemon =
        Daemon::with_config("[supervision]\nmax_restarts = 2\nwithin_secs = 1\nbackoff_ms = 50\n");
    streaming_session(&daemon, "gap", &relayd.url(), None);
    daemon.run_apps(5, 5, &["--events", "20"]);
    wait_for("packets on the relayd", Duration::from_secs(20), || {
        relayd
            .session_dirs("gap")
            .first()
            .is_some_and(|d| events_under(d) > 0)
    });
    relayd.kill();
    // Local apps are served while the relayd is gone: they register, emit and end.
    let mut paced = daemon.paced_app(500);
    daemon.run_apps(5, 5, &["--events", "20"]);
    // Past its restart budget a writer counts its packets lost (and retries later).
    wait_for(
        "the writers to count a loss",
        Duration::from_secs(30),
        || daemon.status().packets_lost_writer > 0,
    );
    let relayd = Relayd::start_on(&scratch, control, data, live, "relayd-out-2");
    // Writers retry a restart window later; a fresh app's packets then get through.
    let reconnected = poll_until(Duration::from_secs(60), || {
        daemon.run_app(&["--events", "10"]);
        relayd
            .session_dirs("gap")
            .first()
            .is_some_and(|d| events_under(d) > 0)
    });
    assert!(reconnected, "no packet reached the restarted relayd");
    poke(&mut paced.0);
    let mut out = String::new();
    BufReader::new(paced.0.stdout.take().unwrap())
        .read_line(&mut out)
        .unwrap();
    assert!(paced.0.wait().unwrap().success());
    assert!(out.starts_with("emitted "), "{out}");
    // `stop` answers; the loss stays counted in status.
    let _ = daemon.ask(ControlRequest::Stop {
        session: Some("gap".into()),
    });
    let status = daemon.status();
    assert!(status.packets_lost_writer > 0);
    assert!(status.relayd_connects >= 2, "{status:?}");
    assert!(status.relayd_send_failures > 0, "{status:?}");
}

#[test]
fn bad_urls_and_live_without_url_are_refused_with_the_reason() {
    let daemon = Daemon::start();
    for (args, says) in [
        (
            vec!["create", "a", "--set-url", "file:///tmp"],
            "expected net://HOST",
        ),
        (
            vec!["create", "b", "--set-url", "net://h:99999"],
            "port \"99999\"",
        ),
        (vec!["create", "c", "--set-url", "net://"], "names no host"),
        (vec!["create", "d", "--live"], "--live needs --set-url"),
        (
            vec!["create", "e", "--set-url", "net://h", "--live", "0"],
            "at least 1",
        ),
    ] {
        let out = daemon.cli(&args);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{args:?} accepted");
        assert!(stderr.contains(says), "{args:?}: {stderr}");
    }
    // The daemon serves on, and none of them was created.
    let out = daemon.cli(&["create", "ok", "--set-url", "net://127.0.0.1:1", "--live"]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{out:?}");
    assert!(
        stdout.contains("streaming to net://127.0.0.1:1:2 live every 1000000 us"),
        "{stdout}"
    );
    let list = String::from_utf8_lossy(&daemon.cli(&["list"]).stdout).into_owned();
    assert!(list.contains("net://127.0.0.1:1:2"), "{list}");
}

#[test]
fn a_config_session_with_a_url_streams_from_daemon_start() {
    let scratch = Scratch::new("relayd-config");
    let relayd = Relayd::start(&scratch);
    let daemon = Daemon::with_config(&format!(
        "[[session]]\nname = \"boot\"\nurl = \"{}\"\nlive_timer_us = 500000\n\
         [[session.channel]]\nname = \"c\"\nbuffers = \"pid\"\nevents = [\"demo:*\"]\n",
        relayd.url()
    ));
    daemon.run_app(&["--events", "25"]);
    daemon.stop("boot");
    let dirs = relayd.session_dirs("boot");
    assert_eq!(dirs.len(), 1, "{dirs:?}");
    wait_for(
        "the 25 events on the relayd",
        Duration::from_secs(20),
        || events_under(&dirs[0]) == 25,
    );
}
