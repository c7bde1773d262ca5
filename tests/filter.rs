//! `enable-event --filter` through the CLI, the real daemon and real apps: a table of
//! filter rules x the catalog app's events and values -> what babeltrace2 reads
//! back, on every field type and on contexts; malformed expressions refused with
//! their column; a filter pushed to apps already running.
//!
//! `ustrace-demo --catalog --events 3` emits `demo:ev {i: i64 = 0, 1, 2, s: "hello"}`,
//! `demo:warn {code: u32 = 4}`, `demo:crit {code = 2}`, `demo:debug_line {line = 13}`,
//! `demo:debug {line = 14}`, `net:recv {bytes: u64 = 1500, peer: "10.0.0.1",
//! ratio: f64 = 0.5}` and `net:send_failed {errno: i32 = -32}`, once each but
//! `demo:ev`.

mod common;

use common::{Daemon, babeltrace2, sub_traces, wait_for};
use std::collections::BTreeMap;
use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

/// Every line babeltrace2 prints for the trace under `dir` (none without a trace).
fn lines(dir: &Path) -> Vec<String> {
    if sub_traces(dir).is_empty() {
        return Vec::new();
    }
    babeltrace2(dir)
}

/// Event name (with its `i` for `demo:ev`, as `demo:ev#1`) -> count.
fn recorded(dir: &Path) -> BTreeMap<String, usize> {
    let mut counts = BTreeMap::new();
    for line in lines(dir) {
        let name = line
            .split_whitespace()
            .find_map(|t| t.strip_suffix(':').filter(|n| n.contains(':')))
            .unwrap_or_else(|| panic!("no event name in {line}"));
        let key = match line.split_once("i = ") {
            Some((_, rest)) if name == "demo:ev" => {
                format!("{name}#{}", rest.split([',', ' ']).next().unwrap())
            }
            _ => name.to_string(),
        };
        *counts.entry(key).or_insert(0) += 1;
    }
    counts
}

/// Each named event recorded once.
fn once(names: &[&str]) -> BTreeMap<String, usize> {
    names.iter().map(|n| (n.to_string(), 1)).collect()
}

/// What the catalog app recorded in a session with `rules` (each the arguments of
/// one `enable-event`).
fn record_with(daemon: &Daemon, session: &str, rules: &[&[&str]]) -> BTreeMap<String, usize> {
    recorded(&daemon.record_run(session, rules, &["--catalog", "--events", "3"]))
}

const EVERY: [&str; 9] = [
    "demo:ev#0",
    "demo:ev#1",
    "demo:ev#2",
    "demo:warn",
    "demo:crit",
    "demo:debug_line",
    "demo:debug",
    "net:recv",
    "net:send_failed",
];

#[test]
fn filters_record_what_lttng_would() {
    let daemon = Daemon::start();
    let f = |pattern: &'static str, expr: &'static str| -> Vec<&'static str> {
        vec![pattern, "--filter", expr]
    };
    let table: Vec<(Vec<Vec<&str>>, Vec<&str>)> = vec![
        // Signed integers.
        (vec![f("demo:ev", "i >= 1")], vec!["demo:ev#1", "demo:ev#2"]),
        (
            vec![f("demo:ev", "i == 1 || i == 2")],
            vec!["demo:ev#1", "demo:ev#2"],
        ),
        (vec![f("demo:ev", "!(i != 0)")], vec!["demo:ev#0"]),
        (vec![f("demo:ev", "i < -1")], vec![]),
        (vec![f("demo:ev", "i")], vec!["demo:ev#1", "demo:ev#2"]),
        (
            vec![f("net:send_failed", "errno == -32")],
            vec!["net:send_failed"],
        ),
        (vec![f("net:send_failed", "errno > -0x20")], vec![]),
        // Unsigned integers, and integer vs float.
        (vec![f("demo:warn", "code == 4")], vec!["demo:warn"]),
        (
            vec![f("net:recv", "bytes > 1000 && bytes <= 1500")],
            vec!["net:recv"],
        ),
        (vec![f("net:recv", "bytes == 1500.0")], vec!["net:recv"]),
        (vec![f("net:recv", "bytes < 1e3")], vec![]),
        // Floats.
        (vec![f("net:recv", "ratio == 0.5")], vec!["net:recv"]),
        (vec![f("net:recv", "ratio > 0.5")], vec![]),
        (vec![f("net:recv", "ratio < 1")], vec!["net:recv"]),
        // Strings and globs.
        (
            vec![f("demo:ev", "s == \"hello\"")],
            vec!["demo:ev#0", "demo:ev#1", "demo:ev#2"],
        ),
        (vec![f("demo:ev", "s != \"hello\"")], vec![]),
        (
            vec![f("demo:ev", "s == \"hel*\" && i == 2")],
            vec!["demo:ev#2"],
        ),
        (vec![f("net:recv", "peer == \"10.*.1\"")], vec!["net:recv"]),
        (vec![f("net:recv", "peer == \"192.*\"")], vec![]),
        (vec![f("net:recv", "peer < \"11\"")], vec!["net:recv"]),
        // Contexts, whatever the channel records.
        (
            vec![f("*", "$ctx.procname == \"ustrace-demo\"")],
            EVERY.to_vec(),
        ),
        (
            vec![f(
                "*",
                "$ctx.procname == \"ustrace*\" && $ctx.vpid > 0 && $ctx.vtid > 0",
            )],
            EVERY.to_vec(),
        ),
        (vec![f("*", "$ctx.procname == \"other*\"")], vec![]),
        // A field an event lacks, or a type clash, makes the filter false for it.
        (vec![f("*", "i == 2")], vec!["demo:ev#2"]),
        (vec![f("*", "code == 4 || line == 14")], vec![]),
        (
            vec![f("*", "code == 4"), f("*", "line == 14")],
            vec!["demo:warn", "demo:debug"],
        ),
        (vec![f("demo:ev", "s == 1")], vec![]),
        (vec![f("demo:ev", "nope == 1 || i == 0")], vec![]),
        // Overlapping rules: recorded once if any passes; a rule without filter
        // takes every emission.
        (
            vec![f("demo:ev", "i == 0"), f("demo:ev", "i <= 1")],
            vec!["demo:ev#0", "demo:ev#1"],
        ),
        (
            vec![f("demo:ev", "i == 0"), f("*ev", "i == 2")],
            vec!["demo:ev#0", "demo:ev#2"],
        ),
        (
            vec![f("demo:ev", "i == 0"), vec!["demo:ev"]],
            vec!["demo:ev#0", "demo:ev#1", "demo:ev#2"],
        ),
        (
            vec![f("net:*", "bytes > 0"), f("*", "errno == -32")],
            vec!["net:recv", "net:send_failed"],
        ),
        // With log levels and exclusions.
        (
            vec![vec![
                "*",
                "--loglevel",
                "WARNING",
                "--exclude",
                "demo:crit",
                "--filter",
                "code > 0",
            ]],
            vec!["demo:warn"],
        ),
    ];
    for (n, (rules, expected)) in table.iter().enumerate() {
        let rules: Vec<&[&str]> = rules.iter().map(Vec::as_slice).collect();
        assert_eq!(
            record_with(&daemon, &format!("f{n}"), &rules),
            once(expected),
            "rules {rules:?}"
        );
    }
}

#[test]
fn malformed_filters_are_refused_with_the_column_and_the_daemon_keeps_serving() {
    let daemon = Daemon::start();
    daemon.cli_ok(&[
        "create",
        "bad",
        "-o",
        daemon.scratch.path("out").to_str().unwrap(),
    ]);
    for (expr, message) in [
        (
            "i == ",
            "filter: unexpected end of expression, expected a field, a context or a literal at column 6",
        ),
        (
            "(i == 1))",
            "filter: unexpected `)`, expected `&&`, `||` or the end at column 9",
        ),
        (
            "i == 1 & 2",
            "filter: operator `&` is not supported (only comparisons, `&&`, `||`, `!`) at column 8",
        ),
        (
            "s < \"a*\"",
            "filter: a string with `*` is a glob and takes only `==` or `!=`, not `<` at column 5",
        ),
        (
            "$ctx.cpu == 1",
            "filter: unknown context `$ctx.cpu` (expected vpid, vtid or procname) at column 1",
        ),
    ] {
        let out = daemon.cli(&["enable-event", "demo:ev", "--filter", expr]);
        assert!(!out.status.success(), "{expr:?} accepted");
        let stderr = String::from_utf8(out.stderr).unwrap();
        assert!(stderr.contains(message), "{expr:?}: {stderr}");
    }
    let long = format!("i == 1{}", " || i == 1".repeat(110));
    let out = daemon.cli(&["enable-event", "demo:ev", "--filter", &long]);
    assert!(
        String::from_utf8(out.stderr)
            .unwrap()
            .contains("at most 1024")
    );
    // Nothing of the refused rules was kept, and a good one is still taken.
    daemon.cli_ok(&["enable-event", "demo:ev", "--filter", "i == 1"]);
    let list = daemon.cli_ok(&["list", "bad"]);
    assert!(list.contains("demo:ev filter i == 1"), "{list}");
    assert_eq!(list.matches("filter").count(), 1, "{list}");
}

#[test]
fn a_channels_filters_are_bounded_together() {
    let daemon = Daemon::start();
    daemon.cli_ok(&[
        "create",
        "big",
        "-o",
        daemon.scratch.path("out").to_str().unwrap(),
    ]);
    let expr = format!("i == 1{}", " || i == 1".repeat(100));
    for k in 0..4 {
        daemon.cli_ok(&["enable-event", &format!("demo:e{k}"), "--filter", &expr]);
    }
    let out = daemon.cli(&["enable-event", "demo:e4", "--filter", &expr]);
    let stderr = String::from_utf8(out.stderr).unwrap();
    assert!(stderr.contains("at most 4096"), "{stderr}");
}

#[test]
fn a_filter_enabled_on_a_running_session_reaches_registered_apps() {
    let daemon = Daemon::start();
    let output = daemon.scratch.path("out-live");
    daemon.cli_ok(&["create", "live", "-o", output.to_str().unwrap()]);
    daemon.cli_ok(&["enable-event", "demo:warn"]);
    daemon.cli_ok(&["start"]);
    // Two apps registered and waiting for demo:ev to be enabled.
    let spawn = || {
        daemon
            .app(&["--events", "3", "--await-enabled-ms", "20000"])
            .stdout(Stdio::null())
            .spawn()
            .unwrap()
    };
    let (mut first, mut second) = (spawn(), spawn());
    wait_for("both apps registered", Duration::from_secs(20), || {
        daemon.status().apps == 2
    });
    let only = format!("$ctx.vpid == {} && i >= 1", first.id());
    daemon.cli_ok(&["enable-event", "demo:ev", "--filter", &only]);
    // Both see demo:ev enabled and emit; only the first one's pass.
    assert!(first.wait().unwrap().success());
    assert!(second.wait().unwrap().success());
    daemon.cli_ok(&["stop"]);
    let lines = lines(&output);
    let of = |pid: u32| {
        lines
            .iter()
            .filter(|l| l.contains(&format!("vpid = {pid}")))
            .count()
    };
    assert_eq!(of(first.id()), 2, "{lines:#?}");
    assert_eq!(of(second.id()), 0, "{lines:#?}");
    assert_eq!(lines.iter().filter(|l| l.contains("demo:ev:")).count(), 2);
}

#[test]
fn an_app_refuses_hostile_filter_programs_and_keeps_running() {
    use std::os::fd::AsFd;
    use std::os::unix::net::UnixListener;
    use ustrace::filter::Program;
    use ustrace::filter::program::{CmpOp, Op};
    use ustrace::protocol::frame;
    use ustrace::protocol::messages::{AppCommand, AppRegister};
    use ustrace::shm::{ChannelBuffers, DEFAULT_GEOMETRY, Mode, RingConfig};

    // A fake daemon: it registers the app, then pushes programs no daemon compiles.
    let scratch = common::Scratch::new("hostile-filter");
    let listener = UnixListener::bind(scratch.path("apps.sock")).unwrap();
    let app = std::process::Command::new(env!("CARGO_BIN_EXE_ustrace-demo"))
        .args(["--events", "3", "--await-enabled-ms", "20000"])
        .env("USTRACE_RUNDIR", &scratch.0)
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let (sock, _) = listener.accept().unwrap();
    frame::expect_hello(&sock).unwrap();
    let (register, _) = frame::recv::<AppRegister>(&sock, frame::MAX_FRAME)
        .unwrap()
        .unwrap();
    assert_eq!(register.events[0].name, "ev");
    let config = RingConfig {
        geometry: DEFAULT_GEOMETRY,
        mode: Mode::Discard,
        stream_id: 0,
        uuid: [0; 16],
        context_len: 0,
    };
    let buffers = ChannelBuffers::create("hostile-filter", &config, 1).unwrap();
    let channel = AppCommand::Channel {
        key: 1,
        streams: 1,
        contexts: Vec::new(),
    };
    let fds = [buffers.wakeup().as_fd(), buffers.rings()[0].as_fd()];
    frame::send(&sock, &channel, &fds).unwrap();
    frame::send(&sock, &AppCommand::RegistrationDone, &[]).unwrap();
    let hostile = [
        Program(vec![Op::Not]),
        Program(vec![Op::Field(9), Op::Int(1), Op::Compare(CmpOp::Eq)]),
        Program(vec![Op::False; 100]),
        Program(vec![Op::Str(vec![b'x'; 5000])]),
    ];
    for program in hostile {
        let enable = AppCommand::Enable {
            key: 1,
            events: vec![(0, 1)],
            filters: vec![(0, program)],
        };
        frame::send(&sock, &enable, &[]).unwrap();
    }
    // An id with the app's "filtered" bit, then a sound enable it records with.
    let enable = |id| AppCommand::Enable {
        key: 1,
        events: vec![(0, id)],
        filters: Vec::new(),
    };
    frame::send(&sock, &enable(1 << 31), &[]).unwrap();
    frame::send(&sock, &enable(1), &[]).unwrap();
    let out = app.wait_with_output().unwrap();
    assert!(out.status.success(), "{out:?}");
    let stderr = String::from_utf8(out.stderr).unwrap();
    for refusal in [
        "filter of event index 0: operation 0 lacks its operands",
        "filter of event index 0: field index 9 of an event with 2 fields",
        "filter of event index 0: needs a stack deeper than 64",
        "filter of event index 0: a literal of 5000 bytes, at most 1024",
        "event id 2147483648 out of range",
    ] {
        assert!(stderr.contains(refusal), "{refusal}: {stderr}");
    }
    // The sound enable recorded into the fake daemon's ring.
    let mut consumer = buffers.consumers().remove(0);
    consumer.flush();
    let mut packet = Vec::new();
    assert!(consumer.take_packet(&mut packet).is_some());
}
