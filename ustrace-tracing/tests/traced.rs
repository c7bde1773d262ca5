//! The tokio example (examples/tokio_spans.rs), a `tracing` program with spans
//! that hop worker threads and a `log` record, traced by the real daemon into a
//! per-PID and a per-UID session at once and read back by babeltrace2.

#[path = "../../tests/common/mod.rs"]
mod common;

use common::{Daemon, babeltrace2};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use ustrace::protocol::messages::{Buffering, ControlRequest, LogLevelRule};

/// The example, built by cargo next to this test's directory (`cargo test -p
/// ustrace-tracing` builds it; `--test traced` alone does not rebuild it).
fn example() -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    let path = exe
        .parent()
        .unwrap()
        .parent()
        .unwrap()
        .join("examples/tokio_spans");
    assert!(path.exists(), "{} not built", path.display());
    path
}

/// Creates session `name` with one channel of `buffers` enabling every event,
/// started.
fn session(daemon: &Daemon, name: &str, buffers: Buffering) -> PathBuf {
    let output = daemon.session(name, &[("ch", buffers)], false);
    daemon.ok(ControlRequest::EnableEvent {
        session: Some(name.into()),
        channel: Some("ch".into()),
        pattern: "*".into(),
        exclude: Vec::new(),
        loglevel: LogLevelRule::All,
        filter: None,
    });
    daemon.ok(ControlRequest::Start {
        session: Some(name.into()),
    });
    output
}

/// `name = value` of a babeltrace2 line's payload.
fn field<'a>(line: &'a str, name: &str) -> Option<&'a str> {
    let at = line.find(&format!(" {name} = "))? + name.len() + 4;
    let rest = &line[at..];
    let end = rest.find([',', ' ']).unwrap_or(rest.len());
    Some(&rest[..end])
}

/// The lines of event `event`.
fn lines<'a>(trace: &'a [String], event: &str) -> Vec<&'a str> {
    let needle = format!(" {event}: ");
    trace
        .iter()
        .filter(|l| l.contains(&needle))
        .map(String::as_str)
        .collect()
}

/// Checks one session's trace of a run with `tasks` tasks.
fn check(trace: &[String], tasks: usize) {
    let step = "tokio_spans:event_ustrace_tracing_examples_tokio_spans_rs_27";
    let starts = "tokio_spans:event_ustrace_tracing_examples_tokio_spans_rs_35";
    let warns = "tokio_spans:event_ustrace_tracing_examples_tokio_spans_rs_48";
    // Named after their lines in the example (the `tracing` name "event FILE:LINE").
    // Every use of every callsite, its first included (each registered at it).
    assert_eq!(lines(trace, step).len(), tasks * 3, "{trace:#?}");
    assert_eq!(lines(trace, warns).len(), 1, "{trace:#?}");
    let starts = lines(trace, starts);
    assert_eq!(starts.len(), tasks);
    for line in &starts {
        assert!(line.contains("message = \"job starts\""), "{line}");
        assert!(
            line.contains("tags: [\\\"a\\\", \\\"b\\\"]"),
            "Debug text: {line}"
        );
        assert_eq!(field(line, "ratio"), Some("0.5"), "{line}");
        assert_eq!(field(line, "tag"), Some("\"a\""), "{line}");
    }
    let logs = lines(trace, "log:info");
    assert_eq!(logs.len(), 1, "{trace:#?}");
    assert!(logs[0].contains(&format!("message = \"all {tasks} tasks done\"")));
    assert_eq!(field(logs[0], "log_target"), Some("\"tokio_spans\""));

    // Spans: each job a root, each step a child of a job; every span entered as
    // often as exited, and closed once.
    let jobs: Vec<&str> = lines(trace, "tokio_spans:job")
        .iter()
        .map(|l| {
            assert_eq!(field(l, "parent"), Some("0"), "{l}");
            field(l, "span_id").unwrap()
        })
        .collect();
    assert_eq!(jobs.len(), tasks);
    let steps = lines(trace, "tokio_spans:step");
    assert_eq!(steps.len(), tasks * 3);
    for l in &steps {
        assert!(jobs.contains(&field(l, "parent").unwrap()), "{l}");
    }
    // A span of numbers only is encoded straight into the reservation: its
    // fields read back whole (each job's steps 0, 1, 2).
    let mut ns: Vec<&str> = steps.iter().map(|l| field(l, "n").unwrap()).collect();
    ns.sort_unstable();
    let want: Vec<&str> = ["0", "1", "2"]
        .iter()
        .flat_map(|n| std::iter::repeat_n(*n, tasks))
        .collect();
    assert_eq!(ns, want, "{steps:#?}");
    let mut balance: HashMap<&str, (i64, u32)> = HashMap::new();
    for (event, delta) in [("enter", 1), ("exit", -1), ("close", 0)] {
        for l in lines(trace, &format!("tracing_span:{event}")) {
            let entry = balance.entry(field(l, "span_id").unwrap()).or_default();
            entry.0 += delta;
            entry.1 += u32::from(event == "close");
        }
    }
    // The batch span: made once, never entered, closed once.
    let batch = lines(trace, "tokio_spans:batch");
    assert_eq!(batch.len(), 1, "{trace:#?}");
    let batch = field(batch[0], "span_id").unwrap();
    assert_eq!(balance.len(), tasks * 4 + 1, "{balance:?}");
    for (span, (open, closed)) in balance {
        assert_eq!((open, closed), (0, 1), "span {span}");
    }

    // `Span::record` and `Span::follows_from`, keyed by the job's span id.
    let records = lines(trace, "tracing_span:record");
    assert_eq!(records.len(), tasks, "{trace:#?}");
    for l in &records {
        assert!(jobs.contains(&field(l, "span_id").unwrap()), "{l}");
        assert_eq!(field(l, "field"), Some("\"outcome\""), "{l}");
        assert_eq!(field(l, "value"), Some("\"done\""), "{l}");
    }
    let follows = lines(trace, "tracing_span:follows_from");
    assert_eq!(follows.len(), tasks, "{trace:#?}");
    for l in &follows {
        assert!(jobs.contains(&field(l, "span_id").unwrap()), "{l}");
        assert_eq!(field(l, "follows"), Some(batch), "{l}");
    }
}

/// Each callsite's event declares its module, file and line as its
/// `model.emf.uri` in every sub-trace's metadata (which babeltrace2 reads, and
/// whose details sink shows).
fn check_source_uris(dir: &Path) {
    let subs = common::sub_traces(dir);
    assert!(!subs.is_empty(), "no sub-trace in {}", dir.display());
    for sub in subs {
        let metadata = std::fs::read_to_string(dir.join(&sub).join("metadata")).unwrap();
        let step = "\tname = \"tokio_spans:event_ustrace_tracing_examples_tokio_spans_rs_27\";";
        let at = metadata.find(step).unwrap_or_else(|| panic!("{metadata}"));
        let declaration = &metadata[at..at + metadata[at..].find("};").unwrap()];
        assert!(
            declaration.contains(
                "\tmodel.emf.uri = \"module=tokio_spans file=ustrace-tracing/examples/tokio_spans.rs line=27\";"
            ),
            "{declaration}"
        );
        assert!(metadata.contains("file=ustrace-tracing/examples/tokio_spans.rs line=35\";"));
    }
    let details = common::babeltrace2_raw(&["-c", "sink.text.details"], dir);
    assert!(details.status.success(), "{details:?}");
    let details = String::from_utf8_lossy(&details.stdout);
    assert!(
        details.contains(
            "EMF URI: module=tokio_spans file=ustrace-tracing/examples/tokio_spans.rs line=48"
        ),
        "{details}"
    );
}

#[test]
fn the_tokio_example_is_traced_per_pid_and_per_uid() {
    let daemon = Daemon::start();
    let per_pid = session(&daemon, "pid", Buffering::PerPid);
    let per_uid = session(&daemon, "uid", Buffering::PerUid);
    let tasks = 5;
    let out = Command::new(example())
        .arg(tasks.to_string())
        .env("USTRACE_RUNDIR", &daemon.rundir)
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    assert!(
        out.stderr.is_empty(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    daemon.stop("pid");
    daemon.stop("uid");
    check(&babeltrace2(&per_pid), tasks);
    check(&babeltrace2(&per_uid), tasks);
    check_source_uris(&per_pid);
    check_source_uris(&per_uid);

    // `ustrace view` shows where each event happened in the span tree.
    let view = daemon.cli(&["view", per_pid.to_str().unwrap()]);
    assert!(view.status.success(), "{view:?}");
    let text = String::from_utf8_lossy(&view.stdout);
    let with =
        |needle: &str| -> Vec<&str> { text.lines().filter(|l| l.contains(needle)).collect() };
    let steps = with("message = \"step done\"");
    assert_eq!(steps.len(), tasks * 3, "{text}");
    assert!(
        steps.iter().all(|l| l.ends_with("} in job > step")),
        "{text}"
    );
    let starts = with("message = \"job starts\"");
    assert!(starts.iter().all(|l| l.ends_with("} in job")), "{text}");
    let enters = with("tracing_span:enter");
    assert!(
        enters
            .iter()
            .all(|l| l.ends_with("} in job") || l.ends_with("} in job > step"))
    );
    assert!(
        with("log:info").iter().all(|l| l.ends_with('}')),
        "outside any span"
    );
    let records = with("tracing_span:record");
    assert_eq!(records.len(), tasks, "{text}");
    assert!(records.iter().all(|l| l.ends_with("} in job")), "{text}");
    let follows = with("tracing_span:follows_from");
    assert_eq!(follows.len(), tasks, "{text}");
    assert!(
        follows
            .iter()
            .all(|l| l.ends_with("} in job follows batch")),
        "{text}"
    );
}
