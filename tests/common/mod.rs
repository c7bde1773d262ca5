//! A real daemon on a private runtime directory, real apps, real babeltrace2.
#![allow(dead_code)]

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};
use ustrace::control;
use ustrace::protocol::messages::{
    Buffering, ChannelRequest, ControlOk, ControlReply, ControlRequest, StatusReport,
};

/// A fresh directory under the system temp dir, removed on drop.
pub struct Scratch(pub PathBuf);

impl Scratch {
    pub fn new(tag: &str) -> Scratch {
        static NEXT: AtomicU32 = AtomicU32::new(0);
        let dir = std::env::temp_dir().join(format!(
            "ustrace-test-{tag}-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        // Apps of other uids must reach the sockets below.
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).unwrap();
        Scratch(dir)
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.0.join(name)
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// The path of the ustrace package's binary `name`: `built`, the one cargo built
/// for this test, or, in a test of another workspace crate (which cargo gives no
/// `CARGO_BIN_EXE_*`), the one in this test's own profile directory, where
/// scripts/test.sh builds it first.
pub fn bin(name: &str, built: Option<&str>) -> PathBuf {
    if let Some(built) = built {
        return PathBuf::from(built);
    }
    let exe = std::env::current_exe().unwrap();
    let path = exe.parent().unwrap().parent().unwrap().join(name);
    assert!(
        path.exists(),
        "{} is not built: build the ustrace package's binaries in this profile first",
        path.display()
    );
    path
}

/// Polls `cond` until it holds or `timeout` passes; says whether it held.
pub fn poll_until(timeout: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    while !cond() {
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    true
}

/// Waits for `cond` with a deadline; panics with `what` when it never holds.
pub fn wait_for(what: &str, timeout: Duration, cond: impl FnMut() -> bool) {
    assert!(poll_until(timeout, cond), "timed out waiting for {what}");
}

/// How long the apps of [`Daemon::app`] wait for their registration (the default
/// is 3 s): on a loaded machine a slow registration makes a test slower, not an app
/// run untraced and its events missing. Tests of the timeout set their own.
const APP_REGISTER_TIMEOUT_MS: &str = "30000";

/// A running `ustraced`, killed on drop.
pub struct Daemon {
    pub scratch: Scratch,
    pub rundir: PathBuf,
    pub child: Child,
}

impl Daemon {
    /// A daemon with the default config.
    pub fn start() -> Daemon {
        Daemon::with_config("")
    }

    /// A daemon whose config file holds `toml`.
    pub fn with_config(toml: &str) -> Daemon {
        Daemon::with_config_env(toml, &[])
    }

    /// A daemon whose config file holds `toml`, with `env` added to its environment.
    pub fn with_config_env(toml: &str, env: &[(&str, &str)]) -> Daemon {
        let scratch = Scratch::new("daemon");
        let rundir = scratch.path("run");
        std::fs::create_dir_all(&rundir).unwrap();
        let config = scratch.path("ustraced.toml");
        std::fs::write(&config, toml).unwrap();
        let child = Command::new(bin("ustraced", option_env!("CARGO_BIN_EXE_ustraced")))
            .arg("--config")
            .arg(&config)
            .env("USTRACE_RUNDIR", &rundir)
            .env("RUST_LOG", "warn")
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .spawn()
            .unwrap();
        let daemon = Daemon {
            scratch,
            rundir,
            child,
        };
        wait_for("the daemon to answer", Duration::from_secs(20), || {
            control::request_in(&daemon.rundir, &ControlRequest::Status).is_ok()
        });
        daemon
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Sends a control request.
    pub fn ask(&self, request: ControlRequest) -> ControlReply {
        control::request_in(&self.rundir, &request).expect("daemon reachable")
    }

    /// Sends a control request that must succeed.
    pub fn ok(&self, request: ControlRequest) -> ControlOk {
        let shown = format!("{request:?}");
        self.ask(request)
            .unwrap_or_else(|e| panic!("{shown} refused: {e}"))
    }

    pub fn status(&self) -> StatusReport {
        match self.ok(ControlRequest::Status) {
            ControlOk::Status(s) => *s,
            other => panic!("status answered {other:?}"),
        }
    }

    /// Creates session `name` writing to a fresh output dir, with one channel per
    /// `(channel, buffers)` each enabling `demo:*`, and starts it unless told not to.
    pub fn session(&self, name: &str, channels: &[(&str, Buffering)], start: bool) -> PathBuf {
        let output = self.scratch.path(&format!("out-{name}"));
        self.ok(ControlRequest::Create {
            name: name.into(),
            output: Some(output.display().to_string()),
            url: None,
            live_timer_us: None,
        });
        for (channel, buffers) in channels {
            self.ok(ControlRequest::EnableChannel {
                session: Some(name.into()),
                channel: ChannelRequest {
                    name: channel.to_string(),
                    buffers: Some(*buffers),
                    ..ChannelRequest::default()
                },
            });
            self.ok(ControlRequest::EnableEvent {
                session: Some(name.into()),
                channel: Some(channel.to_string()),
                pattern: "demo:*".into(),
                exclude: Vec::new(),
                loglevel: Default::default(),
                filter: None,
            });
        }
        if start {
            self.ok(ControlRequest::Start {
                session: Some(name.into()),
            });
        }
        output
    }

    pub fn stop(&self, name: &str) {
        self.ok(ControlRequest::Stop {
            session: Some(name.into()),
        });
    }

    /// An app command with this daemon's runtime dir, waiting up to
    /// [`APP_REGISTER_TIMEOUT_MS`] for its registration.
    pub fn app(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new(bin(
            "ustrace-demo",
            option_env!("CARGO_BIN_EXE_ustrace-demo"),
        ));
        cmd.args(args);
        self.app_env(&mut cmd);
        cmd
    }

    /// Points an app at this daemon and gives it [`APP_REGISTER_TIMEOUT_MS`].
    fn app_env(&self, cmd: &mut Command) {
        cmd.env("USTRACE_RUNDIR", &self.rundir)
            .env("USTRACE_REGISTER_TIMEOUT_MS", APP_REGISTER_TIMEOUT_MS);
    }

    /// An app that emitted `events` events and now waits for a line on stdin
    /// ([`poke`]) before it exits: a process with committed events, still alive.
    pub fn app_that_emitted(&self, events: u32) -> Running {
        let mut app = Running(
            self.app(&["--events", &events.to_string(), "--wait"])
                .stdin(Stdio::piped())
                .stdout(Stdio::piped())
                .spawn()
                .unwrap(),
        );
        let mut line = String::new();
        std::io::BufRead::read_line(
            &mut std::io::BufReader::new(app.0.stdout.as_mut().unwrap()),
            &mut line,
        )
        .unwrap();
        assert_eq!(line.trim(), "emitted");
        app
    }

    /// An app emitting one event every `us` microseconds until poked ([`poke`]),
    /// which then prints `emitted COUNT ...` and exits.
    pub fn paced_app(&self, us: u32) -> Running {
        Running(
            self.app(&["--paced-us", &us.to_string()])
                .stdin(Stdio::piped())
                .stdout(Stdio::piped())
                .spawn()
                .unwrap(),
        )
    }

    /// Runs `ustrace-demo` pinned to CPU 0, emitting `events`: every such app writes
    /// the same stream of a per-UID channel, so a test can aim at one writer.
    pub fn run_pinned_app(&self, events: u32) {
        self.run_app_on_cpu(0, events);
    }

    /// Runs `ustrace-demo` pinned to `cpu`, emitting `events` into that CPU's ring.
    pub fn run_app_on_cpu(&self, cpu: usize, events: u32) {
        let out = self.app_on_cpu(cpu, events).output().unwrap();
        assert!(out.status.success(), "{out:?}");
    }

    /// The command of a `ustrace-demo` pinned to `cpu` (taskset), emitting `events`.
    pub fn app_on_cpu(&self, cpu: usize, events: u32) -> Command {
        self.pinned_app(cpu, &["--events", &events.to_string()])
    }

    /// The command of a `ustrace-demo` with `args`, pinned to `cpu` (taskset).
    pub fn pinned_app(&self, cpu: usize, args: &[&str]) -> Command {
        let mut cmd = Command::new("taskset");
        cmd.args(["-c", &cpu.to_string()])
            .arg(bin(
                "ustrace-demo",
                option_env!("CARGO_BIN_EXE_ustrace-demo"),
            ))
            .args(args);
        self.app_env(&mut cmd);
        cmd
    }

    /// Runs an app to completion and checks it exited cleanly.
    pub fn run_app(&self, args: &[&str]) -> Output {
        let out = self.app(args).output().unwrap();
        assert!(out.status.success(), "app failed: {out:?}");
        out
    }

    /// Runs `count` apps with `args`, `batch` at a time, each to a clean exit.
    pub fn run_apps(&self, count: usize, batch: usize, args: &[&str]) {
        let mut running: Vec<Running> = Vec::new();
        for _ in 0..count {
            running.push(Running(self.app(args).spawn().unwrap()));
            if running.len() == batch {
                for mut app in running.drain(..) {
                    assert!(app.0.wait().unwrap().success());
                }
            }
        }
        for mut app in running {
            assert!(app.0.wait().unwrap().success());
        }
    }

    /// What each open fd of the daemon names (`/proc/<pid>/fd` links), sorted: a
    /// leak check reports the extra ones, not only how many there are.
    pub fn fds(&self) -> Vec<String> {
        let mut fds: Vec<String> = std::fs::read_dir(format!("/proc/{}/fd", self.pid()))
            .unwrap()
            .filter_map(|e| std::fs::read_link(e.ok()?.path()).ok())
            .map(|target| target.display().to_string())
            .collect();
        fds.sort();
        fds
    }

    /// Number of memory mappings of the daemon.
    pub fn map_count(&self) -> usize {
        std::fs::read_to_string(format!("/proc/{}/maps", self.pid()))
            .unwrap()
            .lines()
            .count()
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A running process killed on drop.
pub struct Running(pub Child);

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

impl Running {
    /// Stops a [`Daemon::paced_app`]: pokes it, reads its `emitted COUNT` line and
    /// waits for its clean exit; returns its pid and COUNT.
    pub fn finish_paced(mut self) -> (u32, i64) {
        poke(&mut self.0);
        let mut line = String::new();
        std::io::BufRead::read_line(
            &mut std::io::BufReader::new(self.0.stdout.as_mut().unwrap()),
            &mut line,
        )
        .unwrap();
        assert!(self.0.wait().unwrap().success());
        let emitted = line
            .split_whitespace()
            .nth(1)
            .and_then(|n| n.parse().ok())
            .unwrap_or_else(|| panic!("app said {line:?}"));
        (self.0.id(), emitted)
    }
}

/// Writes a line to a child's stdin.
pub fn poke(child: &mut Child) {
    let stdin = child.stdin.as_mut().unwrap();
    let _ = writeln!(stdin);
}

/// Bytes of the stream files below `dir` (metadata, index and hidden files left
/// out): what the trace recorded so far.
pub fn stream_bytes(dir: &Path) -> u64 {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return 0;
    };
    entries
        .flatten()
        .map(|e| {
            let path = e.path();
            let name = e.file_name().to_string_lossy().into_owned();
            match path.is_dir() {
                true if name == "index" => 0,
                true => stream_bytes(&path),
                false if name == "metadata" || name.starts_with('.') => 0,
                false => e.metadata().map_or(0, |m| m.len()),
            }
        })
        .sum()
}

/// `babeltrace2 DIR` output lines; panics if babeltrace2 fails.
pub fn babeltrace2(dir: &Path) -> Vec<String> {
    let out = Command::new("babeltrace2")
        .arg(dir)
        .output()
        .expect("babeltrace2 installed (scripts/test.sh installs it)");
    assert!(
        out.status.success(),
        "babeltrace2 failed on {}: {}",
        dir.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(str::to_string)
        .collect()
}

/// Directories holding a `metadata` file under `dir`, relative to it.
pub fn sub_traces(dir: &Path) -> Vec<String> {
    let mut found = Vec::new();
    fn walk(root: &Path, dir: &Path, found: &mut Vec<String>) {
        let Ok(entries) = std::fs::read_dir(dir) else {
            return;
        };
        for entry in entries.flatten() {
            let path = entry.path();
            if path.is_dir() {
                walk(root, &path, found);
            } else if entry.file_name() == "metadata" {
                found.push(dir.strip_prefix(root).unwrap().display().to_string());
            }
        }
    }
    walk(dir, dir, &mut found);
    found.sort();
    found
}

/// Every (stream file, its index file) of the trace.
pub fn streams(output: &Path) -> Vec<(PathBuf, PathBuf)> {
    let mut found = Vec::new();
    for trace in sub_traces(output) {
        let dir = output.join(trace);
        for entry in std::fs::read_dir(&dir).unwrap().flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            if entry.file_type().unwrap().is_file() && name != "metadata" {
                let idx = dir.join("index").join(format!("{name}.idx"));
                found.push((entry.path(), idx));
            }
        }
    }
    found.sort();
    found
}

impl Daemon {
    /// Creates session `name` writing to `<scratch>/<output>`, with full channel
    /// requests (geometry, mode) each enabling `demo:*`, and starts it unless told not
    /// to.
    pub fn session_with(
        &self,
        name: &str,
        output: &str,
        channels: &[ChannelRequest],
        start: bool,
    ) -> PathBuf {
        let output = self.scratch.path(output);
        self.ok(ControlRequest::Create {
            name: name.into(),
            output: Some(output.display().to_string()),
            url: None,
            live_timer_us: None,
        });
        for channel in channels {
            self.ok(ControlRequest::EnableChannel {
                session: Some(name.into()),
                channel: channel.clone(),
            });
            self.ok(ControlRequest::EnableEvent {
                session: Some(name.into()),
                channel: Some(channel.name.clone()),
                pattern: "demo:*".into(),
                exclude: Vec::new(),
                loglevel: Default::default(),
                filter: None,
            });
        }
        if start {
            self.ok(ControlRequest::Start {
                session: Some(name.into()),
            });
        }
        output
    }

    /// Runs the `ustrace` CLI against this daemon.
    pub fn cli(&self, args: &[&str]) -> Output {
        Command::new(bin("ustrace", option_env!("CARGO_BIN_EXE_ustrace")))
            .args(args)
            .env("USTRACE_RUNDIR", &self.rundir)
            .output()
            .unwrap()
    }

    /// Runs `ustrace ARGS`, which must succeed: its standard output.
    pub fn cli_ok(&self, args: &[&str]) -> String {
        let out = self.cli(args);
        assert!(
            out.status.success(),
            "ustrace {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    }

    /// A session with `rules` (each the arguments of one `enable-event`), started
    /// before an app run with `app` registers, stopped and destroyed after it exits:
    /// its output directory.
    pub fn record_run(&self, session: &str, rules: &[&[&str]], app: &[&str]) -> PathBuf {
        let output = self.scratch.path(&format!("out-{session}"));
        self.cli_ok(&["create", session, "-o", output.to_str().unwrap()]);
        for rule in rules {
            let mut args = vec!["enable-event", "-s", session];
            args.extend_from_slice(rule);
            self.cli_ok(&args);
        }
        self.cli_ok(&["start", session]);
        self.run_app(app);
        self.cli_ok(&["stop", session]);
        self.cli_ok(&["destroy", session]);
        output
    }
}

/// Runs `babeltrace2 ARGS DIR` and returns its whole output, whatever its status.
pub fn babeltrace2_raw(args: &[&str], dir: &Path) -> Output {
    Command::new("babeltrace2")
        .args(args)
        .arg(dir)
        .output()
        .expect("babeltrace2 installed (scripts/test.sh installs it)")
}

/// The `(expected, recorded)` of `ustrace bench churn`'s `events:` line.
pub fn churn_events(stdout: &str) -> (u64, u64) {
    let line = stdout
        .lines()
        .find_map(|l| l.trim().strip_prefix("events: expected "))
        .unwrap_or_else(|| panic!("no events line in {stdout}"));
    let (expected, rest) = line.split_once(", recorded ").expect("recorded");
    let recorded = rest.split([',', ' ']).next().expect("count");
    (expected.parse().unwrap(), recorded.parse().unwrap())
}

/// The entries of `now` beyond those of `before`, as multisets (fd links).
pub fn extra<'a>(before: &[String], now: &'a [String]) -> Vec<&'a String> {
    let mut left: Vec<&String> = before.iter().collect();
    now.iter()
        .filter(|x| match left.iter().position(|b| b == x) {
            Some(i) => {
                left.swap_remove(i);
                false
            }
            None => true,
        })
        .collect()
}

/// Bytes of a `demo:ev {i: i64, s: "hello"}` payload.
pub const DEMO_PAYLOAD_LEN: usize = 8 + 6;

/// Events in one whole packet of `demo:ev` events of a stream without contexts (what
/// the demo app records), its headers walked as a reader does: most are compact, a
/// few extended.
pub fn demo_events_in(packet: &[u8]) -> u64 {
    use ustrace::ctf::packet::{PACKET_HEADER_SIZE, PacketHeader, read_event_header};
    let header = PacketHeader::read(packet).expect("a packet header");
    let end = header.close.content_size as usize;
    let (mut at, mut previous, mut events) = (PACKET_HEADER_SIZE, header.open.timestamp_begin, 0);
    while at < end {
        let event = read_event_header(&packet[at..end], previous).expect("an event header");
        previous = event.timestamp;
        at += event.len + DEMO_PAYLOAD_LEN;
        events += 1;
    }
    assert_eq!(at, end, "demo events end at the packet's content size");
    events
}
