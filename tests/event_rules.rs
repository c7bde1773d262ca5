//! Event rules through the CLI, the real daemon and real apps: LTTng's globbing,
//! exclusions and log levels, as a table of `enable-event` commands x the
//! catalog app's events -> what babeltrace2 reads back.
//!
//! `ustrace-demo --catalog --events 2` declares and emits `demo:ev` (INFO, twice),
//! `demo:warn` (WARNING), `demo:crit` (CRIT), `demo:debug_line` (DEBUG_LINE),
//! `demo:debug` (DEBUG), `net:recv` (NOTICE) and `net:send_failed` (ERR).

mod common;

use common::{Daemon, Scratch, babeltrace2, sub_traces};
use std::collections::BTreeMap;
use std::path::Path;
use ustrace::protocol::messages::{ControlOk, ControlRequest, LogLevelRule};

/// Every event of the catalog app and how often one run emits it.
const ALL: [(&str, usize); 7] = [
    ("demo:ev", 2),
    ("demo:warn", 1),
    ("demo:crit", 1),
    ("demo:debug_line", 1),
    ("demo:debug", 1),
    ("net:recv", 1),
    ("net:send_failed", 1),
];

/// Counts of the named events (each at the count one run emits).
fn expect(names: &[&str]) -> BTreeMap<String, usize> {
    names
        .iter()
        .map(|n| {
            let count = ALL.iter().find(|(e, _)| e == n).expect("catalog event").1;
            (n.to_string(), count)
        })
        .collect()
}

/// Event name -> count in the trace under `dir` (none when nothing was recorded).
fn recorded(dir: &Path) -> BTreeMap<String, usize> {
    let mut counts = BTreeMap::new();
    if sub_traces(dir).is_empty() {
        return counts;
    }
    for line in babeltrace2(dir) {
        let name = line
            .split_whitespace()
            .find_map(|t| t.strip_suffix(':').filter(|n| n.contains(':')))
            .unwrap_or_else(|| panic!("no event name in {line}"));
        *counts.entry(name.to_string()).or_insert(0) += 1;
    }
    counts
}

/// Runs `ustrace ARGS`, which must fail, and gives its stderr.
fn cli_err(daemon: &Daemon, args: &[&str]) -> String {
    let out = daemon.cli(args);
    assert!(!out.status.success(), "ustrace {args:?} was accepted");
    String::from_utf8(out.stderr).unwrap()
}

/// What the catalog app recorded in a session with `rules` (each the arguments of
/// one `enable-event`).
fn record_with(daemon: &Daemon, session: &str, rules: &[&[&str]]) -> BTreeMap<String, usize> {
    recorded(&daemon.record_run(session, rules, &["--catalog", "--events", "2"]))
}

#[test]
fn rules_record_what_lttng_would() {
    let daemon = Daemon::start();
    let demo = [
        "demo:ev",
        "demo:warn",
        "demo:crit",
        "demo:debug_line",
        "demo:debug",
    ];
    let every: Vec<&str> = ALL.iter().map(|(n, _)| *n).collect();
    let table: &[(&[&[&str]], Vec<&str>)] = &[
        // Globbing.
        (&[&["demo:*"]], demo.to_vec()),
        (&[&["demo:ev"]], vec!["demo:ev"]),
        (&[&["*ev"]], vec!["demo:ev"]),
        (&[&["demo*ev"]], vec!["demo:ev"]),
        (&[&["*:*"]], every.clone()),
        (&[&["*"]], every.clone()),
        (&[&["-u", "-a"]], every.clone()),
        (&[&["*e*_*"]], vec!["demo:debug_line", "net:send_failed"]),
        (&[&["net:*"]], vec!["net:recv", "net:send_failed"]),
        (&[&["demo:warn,net:recv"]], vec!["demo:warn", "net:recv"]),
        // Accepted although nothing matches: `demo` has no `:`, `\*` is literal.
        (&[&["demo"]], vec![]),
        (&[&["demo:\\*"]], vec![]),
        // Exclusions.
        (
            &[&["*", "--exclude", "demo:*"]],
            vec!["net:recv", "net:send_failed"],
        ),
        (
            &[&["*", "-x", "demo:d*,net:recv"]],
            vec!["demo:ev", "demo:warn", "demo:crit", "net:send_failed"],
        ),
        // Log levels: this level and more severe, or exactly it.
        (
            &[&["*", "--loglevel", "WARNING"]],
            vec!["demo:warn", "demo:crit", "net:send_failed"],
        ),
        (&[&["*", "--loglevel", "TRACE_CRIT"]], vec!["demo:crit"]),
        (
            &[&["*", "--loglevel-only", "TRACE_DEBUG_LINE"]],
            vec!["demo:debug_line"],
        ),
        (
            &[&["*", "--loglevel", "DEBUG_LINE"]],
            every
                .iter()
                .copied()
                .filter(|n| *n != "demo:debug")
                .collect(),
        ),
        (&[&["*", "--loglevel", "0"]], vec![]),
        (&[&["demo:*", "--loglevel-only", "notice"]], vec![]),
        // Overlapping rules: recorded once, whatever matches it how often.
        (&[&["demo:*"], &["*ev"], &["demo:ev"]], demo.to_vec()),
        (
            &[
                &["net:*", "--loglevel", "ERR"],
                &["net:*", "--loglevel-only", "NOTICE"],
            ],
            vec!["net:recv", "net:send_failed"],
        ),
        (
            &[&["*", "-x", "net:*"], &["net:recv"]],
            demo.iter().copied().chain(["net:recv"]).collect(),
        ),
    ];
    for (i, (rules, names)) in table.iter().enumerate() {
        let got = record_with(&daemon, &format!("case{i}"), rules);
        assert_eq!(got, expect(names), "rules {rules:?}");
    }
}

#[test]
fn list_shows_each_rule_once_with_its_conditions() {
    let daemon = Daemon::start();
    let output = daemon.scratch.path("out-s");
    daemon.cli_ok(&["create", "s", "-o", output.to_str().unwrap()]);
    let rule = [
        "enable-event",
        "*",
        "-x",
        "net:*,lib:a",
        "--loglevel",
        "WARNING",
    ];
    // The same rule twice is kept once.
    daemon.cli_ok(&rule);
    daemon.cli_ok(&rule);
    let answer = daemon.cli_ok(&["enable-event", "demo:ev", "--loglevel-only", "TRACE_INFO"]);
    assert!(answer.contains("demo:ev loglevel == INFO"), "{answer}");
    let list = daemon.cli_ok(&["list", "s"]);
    let rules: Vec<&str> = list
        .lines()
        .filter_map(|l| l.trim().strip_prefix("event "))
        .collect();
    assert_eq!(
        rules,
        [
            "* exclude net:*,lib:a loglevel <= WARNING",
            "demo:ev loglevel == INFO"
        ],
        "{list}"
    );
}

#[test]
fn bad_rules_are_refused_with_what_is_wrong() {
    let daemon = Daemon::start();
    let output = daemon.scratch.path("out-s");
    daemon.cli_ok(&["create", "s", "-o", output.to_str().unwrap()]);
    for (args, says) in [
        (
            &["demo:ev-1"][..],
            "invalid event pattern \"demo:ev-1\": unexpected character '-'",
        ),
        (&["demo\\x"], "`\\` must be followed by `*` or `\\`"),
        (
            &["demo:ev", "-x", "demo:ev"],
            "--exclude needs a pattern with `*`",
        ),
        (
            &["demo:*", "-x", "de mo"],
            "invalid event pattern \"de mo\"",
        ),
        (&["*", "--loglevel", "LOUD"], "unknown log level \"LOUD\""),
        (&["*", "--loglevel", "15"], "unknown log level \"15\""),
        (
            &["*", "--loglevel", "INFO", "--loglevel-only", "INFO"],
            "cannot be used with",
        ),
    ] {
        let mut cmd = vec!["enable-event"];
        cmd.extend_from_slice(args);
        let err = cli_err(&daemon, &cmd);
        assert!(err.contains(says), "{args:?}: {err}");
    }
    // A hostile client's over-long pattern or exclusion list gets an answer, and
    // the daemon goes on serving.
    let long = "a".repeat(256);
    let many = vec!["a:*".to_string(); 65];
    for (pattern, exclude, says) in [
        (long.clone(), vec![], "longer than 255 bytes"),
        ("*".to_string(), vec![long], "longer than 255 bytes"),
        ("*".to_string(), many, "65 exclusions, at most 64"),
    ] {
        let reply = daemon.ask(ControlRequest::EnableEvent {
            session: Some("s".into()),
            channel: None,
            pattern,
            exclude,
            loglevel: LogLevelRule::All,
            filter: None,
        });
        let err = reply.expect_err("refused");
        assert!(err.contains(says), "{err}");
    }
    match daemon.ok(ControlRequest::List { session: None }) {
        ControlOk::Sessions(s) => assert!(s[0].channels.iter().all(|(_, r)| r.is_empty())),
        other => panic!("list answered {other:?}"),
    }
}

#[test]
fn config_declared_rules_record_what_the_same_cli_rules_would() {
    let out = Scratch::new("rules-config");
    let output = out.path("trace");
    let daemon = Daemon::with_config(&format!(
        "[[session]]\nname = \"cfg\"\noutput = {:?}\n[[session.channel]]\nname = \"c\"\n\
         events = [\"demo:ev\", {{ pattern = \"*\", exclude = [\"demo:*\"], loglevel = \"ERR\" }}, \
         {{ pattern = \"demo:*\", loglevel_only = \"TRACE_DEBUG_LINE\" }}]\n",
        output.display().to_string()
    ));
    daemon.run_app(&["--catalog", "--events", "2"]);
    daemon.cli_ok(&["stop", "cfg"]);
    assert_eq!(
        recorded(&output),
        expect(&["demo:ev", "net:send_failed", "demo:debug_line"])
    );
}
