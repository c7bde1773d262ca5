//! The C library (issue #12): C and C++ programs built with the real `cc`/`c++`
//! through pkg-config against a prefix installed by `scripts/install-c.sh`, traced
//! by a real daemon, read back by the real babeltrace2.

mod common;

use common::{Daemon, Scratch, babeltrace2, extra, poll_until, sub_traces, wait_for};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::OnceLock;
use std::time::Duration;
use ustrace::protocol::messages::{Buffering, ControlRequest};

const WAIT: Duration = Duration::from_secs(60);

/// The prefix the C library is installed under, once per test binary. The library
/// is built in its own target directory: this test's cargo holds the main one.
fn prefix() -> &'static Path {
    static PREFIX: OnceLock<PathBuf> = OnceLock::new();
    PREFIX.get_or_init(|| {
        let root = Path::new(env!("CARGO_MANIFEST_DIR"));
        // Kept in the target directory (one per profile), reinstalled by each run.
        let profile = if cfg!(debug_assertions) {
            "debug"
        } else {
            "release"
        };
        let prefix = root.join("target/c-api").join(format!("prefix-{profile}"));
        let out = Command::new(root.join("scripts/install-c.sh"))
            .arg(&prefix)
            .arg("--debug")
            .env("CARGO_TARGET_DIR", root.join("target/c-api"))
            .output()
            .unwrap();
        assert!(out.status.success(), "install-c.sh failed: {out:?}");
        prefix
    })
}

/// `pkg-config --cflags --libs ustrace` against the installed prefix.
fn pkg_config() -> Vec<String> {
    let out = Command::new("pkg-config")
        .args(["--cflags", "--libs", "ustrace"])
        .env("PKG_CONFIG_PATH", prefix().join("lib/pkgconfig"))
        .output()
        .unwrap();
    assert!(out.status.success(), "pkg-config: {out:?}");
    String::from_utf8(out.stdout)
        .unwrap()
        .split_whitespace()
        .map(str::to_string)
        .collect()
}

/// Which compiler builds a test program.
#[derive(Clone, Copy, Debug)]
enum Lang {
    C,
    Cxx,
}

/// Compiles `tests/c/<source>` (plus `extra` arguments) into `<dir>/<out>`, with
/// every warning an error.
fn build(lang: Lang, source: &str, dir: &Path, out: &str, extra: &[&str]) -> PathBuf {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let binary = dir.join(out);
    let mut cmd = match lang {
        Lang::C => {
            let mut c = Command::new("cc");
            c.args(["-std=c99"]);
            c
        }
        Lang::Cxx => {
            let mut c = Command::new("c++");
            c.args(["-std=c++17", "-x", "c++"]);
            c
        }
    };
    cmd.args(["-Wall", "-Wextra", "-Werror", "-O2", "-o"])
        .arg(&binary)
        .arg(root.join("tests/c").join(source))
        .args(extra)
        .args(pkg_config());
    let built = cmd.output().unwrap();
    assert!(
        built.status.success(),
        "{lang:?} build of {source} failed: {built:?}"
    );
    binary
}

/// Runs a built program against `daemon`, to a clean exit.
fn run(daemon: &Daemon, binary: &Path, args: &[&str]) -> Output {
    run_with(daemon, Command::new(binary).args(args))
}

/// Runs a built program pinned to CPU 0 (every event in one stream, in order), to
/// a clean exit with nothing on stderr (no warning of libustrace's).
fn run_quietly(daemon: &Daemon, binary: &Path, args: &[&str]) {
    let out = run_with(
        daemon,
        Command::new("taskset")
            .args(["-c", "0"])
            .arg(binary)
            .args(args),
    );
    assert!(
        out.stderr.is_empty(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Runs `command` against `daemon` and the installed library, to a clean exit.
fn run_with(daemon: &Daemon, command: &mut Command) -> Output {
    let out = command
        .env("USTRACE_RUNDIR", &daemon.rundir)
        .env("LD_LIBRARY_PATH", prefix().join("lib"))
        .output()
        .unwrap();
    assert!(out.status.success(), "{command:?} failed: {out:?}");
    out
}

/// A started session `s` with one channel of each kind enabling `demo:*` and
/// `ustrace:*`.
fn session(daemon: &Daemon) -> PathBuf {
    let output = daemon.session(
        "s",
        &[("u", Buffering::PerUid), ("p", Buffering::PerPid)],
        false,
    );
    for channel in ["u", "p"] {
        daemon.ok(ControlRequest::EnableEvent {
            session: Some("s".into()),
            channel: Some(channel.into()),
            pattern: "ustrace:*".into(),
            exclude: Vec::new(),
            loglevel: Default::default(),
            filter: None,
        });
    }
    daemon.ok(ControlRequest::Start {
        session: Some("s".into()),
    });
    output
}

/// The event lines of one sub-trace, from the event name on (timestamps and the
/// vpid/vtid contexts cut).
fn events(output: &Path, trace: &str) -> Vec<String> {
    babeltrace2(&output.join(trace))
        .into_iter()
        .filter_map(|l| {
            let at = l.find(" demo:").or_else(|| l.find(" ustrace:"))?;
            let mut line = l[at + 1..].to_string();
            // The per-UID channels' default contexts (vpid, vtid) vary by run.
            if let Some(from) = line.find(", { vpid = ") {
                let to = from + line[from..].find('}').unwrap() + 1;
                line.replace_range(from..to, "");
            }
            Some(line)
        })
        .collect()
}

const FIELDS: [&str; 4] = [
    "demo:first: { cpu_id = 0 }, { n = 1 }",
    "demo:all: { cpu_id = 0 }, { a = -128, b = -32768, c = -2147483648, d = -9223372036854775808, e = 255, f = 65535, g = 4294967295, h = 18446744073709551615, fl = 1.5, db = -0.25, ok = 1, s = \"h\u{e9}llo\", _raw_length = 3, raw = [ [0] = 1, [1] = 2, [2] = 255 ], col = ( \"blue\" : container = 7 ) }",
    "demo:all: { cpu_id = 0 }, { a = 127, b = 32767, c = 2147483647, d = 9223372036854775807, e = 0, f = 0, g = 0, h = 0, fl = -2, db = 1e+100, ok = 0, s = \"(null)\", _raw_length = 0, raw = [ ], col = ( \"green\" : container = 1 ) }",
    "ustrace:tracef: { cpu_id = 0 }, { msg = \"tracef 42 done\" }",
];

#[test]
fn every_field_type_of_a_c_and_a_cxx_program_is_read_back_exactly_per_uid_and_per_pid() {
    let scratch = Scratch::new("c-fields");
    let c = build(Lang::C, "fields.c", &scratch.0, "fields_c", &[]);
    let cxx = build(Lang::Cxx, "fields.c", &scratch.0, "fields_cxx", &[]);
    let daemon = Daemon::start();
    let output = session(&daemon);
    for binary in [&c, &cxx] {
        run_quietly(&daemon, binary, &[]);
    }
    wait_for("the apps to be gone", WAIT, || daemon.status().apps == 0);
    daemon.stop("s");
    let traces = sub_traces(&output);
    assert_eq!(
        traces.len(),
        3,
        "one per-UID, two per-PID sub-traces: {traces:?}"
    );
    for trace in &traces {
        let lines = events(&output, trace);
        let expected: Vec<String> = if trace.contains("uid") {
            FIELDS
                .iter()
                .chain(FIELDS.iter())
                .map(|s| s.to_string())
                .collect()
        } else {
            assert!(trace.contains("fields_c"), "{trace}");
            FIELDS.iter().map(|s| s.to_string()).collect()
        };
        assert_eq!(lines, expected, "{trace}");
    }
}

#[test]
fn filters_select_c_events_on_every_field_type() {
    let scratch = Scratch::new("c-filter");
    let c = build(Lang::C, "fields.c", &scratch.0, "fields_c", &[]);
    let daemon = Daemon::start();
    // (expression, which `demo:all` emissions are recorded, by their `a`)
    let table: &[(&str, &[i64])] = &[
        ("a == -128", &[-128]),
        ("b > 0", &[127]),
        ("c < 0 && d < 0", &[-128]),
        ("d == 9223372036854775807", &[127]),
        ("e == 255 && f >= 65535", &[-128]),
        ("g == 0xffffffff", &[-128]),
        ("h == 18446744073709551615", &[-128]),
        ("h == 0", &[127]),
        ("fl == 1.5", &[-128]),
        ("fl < 0", &[127]),
        ("db > 1e99", &[127]),
        ("ok == 1", &[-128]),
        ("!ok", &[127]),
        ("s == \"h*llo\"", &[-128]),
        ("s == \"(null)\"", &[127]),
        ("col == 7", &[-128]),
        ("raw == 1", &[]),
        (
            "$ctx.procname == \"fields_c\" && $ctx.vpid > 0",
            &[-128, 127],
        ),
    ];
    for (n, (expr, expected)) in table.iter().enumerate() {
        let name = format!("f{n}");
        let output = scratch.0.join(&name);
        daemon.ok(ControlRequest::Create {
            name: name.clone(),
            output: Some(output.display().to_string()),
            url: None,
            live_timer_us: None,
        });
        daemon.ok(ControlRequest::EnableEvent {
            session: Some(name.clone()),
            channel: None,
            pattern: "demo:all".into(),
            exclude: Vec::new(),
            loglevel: Default::default(),
            filter: Some(expr.to_string()),
        });
        daemon.ok(ControlRequest::Start {
            session: Some(name.clone()),
        });
        run_quietly(&daemon, &c, &[]);
        daemon.stop(&name);
        let recorded: Vec<i64> = if sub_traces(&output).is_empty() {
            Vec::new()
        } else {
            babeltrace2(&output)
                .iter()
                .map(|l| {
                    let a = l.split("{ a = ").nth(1).expect("a demo:all line");
                    a.split(',').next().unwrap().parse().unwrap()
                })
                .collect()
        };
        assert_eq!(recorded, *expected, "{expr}");
    }
}

#[test]
fn a_library_dlopened_after_main_started_registers_its_events_and_records_the_first() {
    let scratch = Scratch::new("c-dlopen");
    let plugin = build(
        Lang::C,
        "plugin.c",
        &scratch.0,
        "libplugin.so",
        &["-shared", "-fPIC"],
    );
    let host = build(Lang::C, "host.c", &scratch.0, "host", &["-ldl"]);
    let daemon = Daemon::start();
    let output = session(&daemon);
    run_quietly(&daemon, &host, &[plugin.to_str().unwrap()]);
    wait_for("the app to be gone", WAIT, || daemon.status().apps == 0);
    daemon.stop("s");
    let expected = [
        "demo:host: { cpu_id = 0 }, { step = 1 }",
        "demo:plugin: { cpu_id = 0 }, { x = 7, from = \"plugin\" }",
        "demo:host: { cpu_id = 0 }, { step = 2 }",
    ];
    let traces = sub_traces(&output);
    assert_eq!(traces.len(), 2, "{traces:?}");
    for trace in &traces {
        assert_eq!(events(&output, trace), expected, "{trace}");
    }
}

/// `demo:who` events of a sub-trace as `role i` words.
fn whos(output: &Path, trace: &str) -> Vec<String> {
    events(output, trace)
        .iter()
        .map(|l| {
            let role = l
                .split("role = \"")
                .nth(1)
                .unwrap()
                .split('"')
                .next()
                .unwrap();
            let i = l.split("i = ").nth(1).unwrap().trim_end_matches(" }");
            format!("{role} {i}")
        })
        .collect()
}

/// forker.c built, and a daemon with a started session `s` of `channels`.
struct Forker {
    /// Holds the binary.
    _scratch: Scratch,
    binary: PathBuf,
    daemon: Daemon,
    output: PathBuf,
}

impl Forker {
    fn start(tag: &str, channels: &[(&str, Buffering)]) -> Forker {
        let scratch = Scratch::new(tag);
        let binary = build(Lang::C, "forker.c", &scratch.0, "forker", &[]);
        let daemon = Daemon::start();
        let output = daemon.session("s", channels, true);
        Forker {
            _scratch: scratch,
            binary,
            daemon,
            output,
        }
    }

    fn run(&self, args: &[&str]) -> Output {
        run(&self.daemon, &self.binary, args)
    }

    /// The `demo:who` words of each sub-trace, sorted.
    fn each_sub_trace(&self) -> Vec<Vec<String>> {
        let mut seen: Vec<Vec<String>> = sub_traces(&self.output)
            .iter()
            .map(|t| whos(&self.output, t))
            .collect();
        seen.sort();
        seen
    }
}

#[test]
fn a_forked_child_registers_as_its_own_process_and_both_sub_traces_are_complete() {
    let f = Forker::start(
        "c-fork",
        &[("p", Buffering::PerPid), ("u", Buffering::PerUid)],
    );
    let (daemon, output) = (&f.daemon, f.output.as_path());
    let out = f.run(&["fork", "1"]);
    assert!(
        out.stderr.is_empty(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    wait_for("the apps to be gone", WAIT, || daemon.status().apps == 0);
    daemon.stop("s");
    let traces = sub_traces(output);
    let pid: Vec<&String> = traces.iter().filter(|t| t.contains("pid")).collect();
    assert_eq!(pid.len(), 2, "parent and child sub-traces: {traces:?}");
    let child: Vec<String> = (0..10).map(|i| format!("child {i}")).collect();
    let mut seen: Vec<Vec<String>> = pid.iter().map(|t| whos(output, t)).collect();
    seen.sort();
    assert_eq!(
        seen,
        [child.clone(), vec!["parent 0".into(), "parent 1".into()]]
    );
    // The per-UID trace has both, each process's events in its order.
    let uid = traces.iter().find(|t| t.contains("uid")).unwrap();
    let all = whos(output, uid);
    assert_eq!(all.len(), 12, "{all:?}");
    let children: Vec<&String> = all.iter().filter(|w| w.starts_with("child")).collect();
    assert_eq!(children, child.iter().collect::<Vec<_>>());
}

#[test]
fn a_hundred_forked_children_leave_nothing_in_the_daemon() {
    let f = Forker::start("c-fork-loop", &[("p", Buffering::PerPid)]);
    let (daemon, output) = (&f.daemon, f.output.as_path());
    // The per-PID ring pool refills in the background: its warm sets' fds are part
    // of the level, so it is measured (and checked) with the pool full.
    let pool_full = || {
        let s = daemon.status();
        s.pid_sets_wanted > 0 && s.pid_sets_ready == s.pid_sets_wanted
    };
    wait_for("the ring pool to be full", WAIT, pool_full);
    let before = daemon.status();
    let fds = daemon.fds();
    f.run(&["fork", "100"]);
    wait_for("the apps to be gone", WAIT, || daemon.status().apps == 0);
    wait_for("their buffers to be torn down", WAIT, || {
        let now = daemon.status();
        now.buffer_sets == before.buffer_sets && now.writers == before.writers
    });
    let after = daemon.status();
    assert_eq!(
        after.apps_total, 101,
        "the parent and its 100 children registered"
    );
    assert_eq!(after.events_discarded, 0);
    let mut now = Vec::new();
    let back = poll_until(WAIT, || {
        now = daemon.fds();
        pool_full() && now.len() <= fds.len()
    });
    assert!(
        back,
        "the daemon's fds are not back: {} before, {} now, extra {:?}; {:?}",
        fds.len(),
        now.len(),
        extra(&fds, &now),
        daemon.status()
    );
    daemon.stop("s");
    let traces = sub_traces(output);
    assert_eq!(traces.len(), 101, "one per-PID sub-trace each");
    let complete = traces
        .iter()
        .filter(|t| whos(output, t).len() == 10)
        .count();
    assert_eq!(complete, 100, "every child's 10 events");
}

#[test]
fn the_child_of_daemon_is_traced_as_its_own_process() {
    let f = Forker::start("c-daemon", &[("p", Buffering::PerPid)]);
    let daemon = &f.daemon;
    f.run(&["daemon"]);
    wait_for("the daemonized child to register and exit", WAIT, || {
        let now = daemon.status();
        now.apps_total == 2 && now.apps == 0
    });
    daemon.stop("s");
    let seen = f.each_sub_trace();
    let daemonized: Vec<String> = (0..10).map(|i| format!("daemon {i}")).collect();
    assert_eq!(seen, [daemonized, vec!["parent 0".to_string()]]);
}

#[test]
fn an_execd_child_inherits_no_descriptor_and_registers_afresh() {
    let f = Forker::start("c-exec", &[("p", Buffering::PerPid)]);
    let daemon = &f.daemon;
    let out = f.run(&["exec"]);
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        "0",
        "descriptors without FD_CLOEXEC in a registered app"
    );
    wait_for("both to be gone", WAIT, || daemon.status().apps == 0);
    daemon.stop("s");
    let seen = f.each_sub_trace();
    // The forked child registered as itself, then exec'd: its new program
    // registered afresh (a third process, by connection) and recorded its events.
    let execd = vec!["parent 0".to_string(), "parent 1".to_string()];
    assert!(seen.contains(&execd), "{seen:?}");
    assert!(seen.contains(&vec!["parent 0".to_string()]), "{seen:?}");
}

#[test]
fn bench_churn_runs_the_c_example_app_per_pid_and_per_uid() {
    let scratch = Scratch::new("c-churn");
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let app = scratch.path("app");
    let libdir = prefix().join("lib");
    let built = Command::new("cc")
        .args(["-std=c99", "-Wall", "-Wextra", "-Werror", "-O2", "-o"])
        .arg(&app)
        .arg(root.join("examples/c/app.c"))
        .args(pkg_config())
        .arg(format!("-Wl,-rpath,{}", libdir.display()))
        .output()
        .unwrap();
    assert!(built.status.success(), "{built:?}");
    for mode in ["pid", "uid"] {
        let out = Command::new(env!("CARGO_BIN_EXE_ustrace"))
            .args(["bench", "churn", "--app", "c", "--c-app"])
            .arg(&app)
            .args([
                "--apps", "20", "--par", "4", "--events", "3", "--mode", mode,
            ])
            .output()
            .unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
        assert!(
            out.status.success(),
            "{stdout}{}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert_eq!(common::churn_events(&stdout), (60, 60), "{mode}: {stdout}");
        assert!(
            stdout.contains("registration latency (connect -> RegistrationDone, 20 apps)"),
            "{mode}: {stdout}"
        );
    }
}

#[test]
fn the_threads_example_records_every_event_of_every_thread() {
    let scratch = Scratch::new("c-threads");
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let binary = scratch.0.join("threads");
    let built = Command::new("cc")
        .args([
            "-std=c99",
            "-Wall",
            "-Wextra",
            "-Werror",
            "-O2",
            "-DUSTRACE",
            "-o",
        ])
        .arg(&binary)
        .arg(root.join("examples/c/threads.c"))
        .arg("-pthread")
        .args(pkg_config())
        .output()
        .unwrap();
    assert!(built.status.success(), "{built:?}");
    let daemon = Daemon::start();
    let output = daemon.session("s", &[("u", Buffering::PerUid)], false);
    daemon.ok(ControlRequest::EnableEvent {
        session: Some("s".into()),
        channel: Some("u".into()),
        pattern: "bench:*".into(),
        exclude: Vec::new(),
        loglevel: Default::default(),
        filter: None,
    });
    daemon.ok(ControlRequest::Start {
        session: Some("s".into()),
    });
    let out = run(&daemon, &binary, &["4", "4000"]);
    let report = String::from_utf8_lossy(&out.stdout);
    assert!(report.starts_with("4 threads 4000 events "), "{report}");
    wait_for("the app to be gone", WAIT, || daemon.status().apps == 0);
    daemon.stop("s");
    // Each of the 4 threads emitted i = 0..1000 once: every value four times.
    let mut seen = std::collections::BTreeMap::<i64, usize>::new();
    for line in babeltrace2(&output) {
        if !line.contains(" bench:ev: ") {
            continue;
        }
        let at = line.find("{ i = ").expect("i field") + "{ i = ".len();
        let i: i64 = line[at..].split(',').next().unwrap().parse().unwrap();
        *seen.entry(i).or_default() += 1;
    }
    assert_eq!(seen.len(), 1000, "values seen: {}", seen.len());
    assert!(seen.values().all(|&n| n == 4), "{seen:?}");
}

#[test]
fn bench_drain_records_the_contexts_asked_for_both_tracers() {
    // Ours only (LTTng's headers are not installed here): the same paced C program
    // with each tracer's default contexts (ours: vpid and vtid in a per-UID
    // channel), with none, and with vpid and vtid named; every event stored.
    let per_event = |contexts: Option<&str>| -> f64 {
        let mut command = Command::new(env!("CARGO_BIN_EXE_ustrace"));
        command
            .args(["bench", "drain", "--no-lttng", "--ustrace-prefix"])
            .arg(prefix())
            .args(["--producers", "2", "--rates", "50000", "--seconds", "1"]);
        if let Some(contexts) = contexts {
            command.args(["--contexts", contexts]);
        }
        let out = command.output().unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
        assert!(
            out.status.success(),
            "{stdout}{}",
            String::from_utf8_lossy(&out.stderr)
        );
        // The device's O_DIRECT figures, or why there are none, before the steps.
        let device = stdout
            .lines()
            .find(|l| l.starts_with("device under "))
            .unwrap_or_else(|| panic!("no device line in {stdout}"));
        assert!(
            device.contains(" MB/s, slowest ") || device.contains("refuses O_DIRECT"),
            "{device}"
        );
        let step = stdout
            .lines()
            .find(|l| l.trim_start().starts_with("ours "))
            .unwrap_or_else(|| panic!("no step line in {stdout}"));
        assert!(
            step.contains("emitted    100000, discarded        0,"),
            "{stdout}"
        );
        let bytes = step
            .split(" B/event)")
            .next()
            .and_then(|s| s.rsplit('(').next())
            .unwrap_or_else(|| panic!("no B/event in {step}"));
        bytes.parse().unwrap_or_else(|e| panic!("{bytes}: {e}"))
    };
    let default = per_event(None);
    let none = per_event(Some("none"));
    let named = per_event(Some("vpid,vtid"));
    // vpid and vtid are 4 bytes each; packet headers, metadata and the padding of
    // the packets the flush timer closes (a page each with O_DIRECT, their number
    // up to the timer's phase) are spread over 100,000 events: 0.04 B per packet.
    assert!((named - default).abs() < 0.5, "{default} {named}");
    assert!((7.5..8.5).contains(&(named - none)), "{none} {named}");

    let out = Command::new(env!("CARGO_BIN_EXE_ustrace"))
        .args(["bench", "drain", "--contexts", "vpid,bogus"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("unknown context type \"bogus\""),
        "{stderr}"
    );
}
