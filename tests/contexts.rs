//! Event contexts on a real daemon: every event says which process and thread
//! emitted it, in babeltrace2's output (LTTng's field names) and in `ustrace view`.

mod common;

use common::{Daemon, Running, babeltrace2, sub_traces};
use std::collections::{HashMap, HashSet};
use std::io::BufRead;
use std::process::Stdio;
use ustrace::protocol::messages::{Buffering, ChannelRequest, ControlRequest};

/// `name = value` of a babeltrace2 line, the value up to `,` or ` }`.
fn value<'a>(line: &'a str, name: &str) -> Option<&'a str> {
    let (_, rest) = line.split_once(&format!(" {name} = "))?;
    let end = rest.find([',', ' ']).unwrap_or(rest.len());
    Some(&rest[..end])
}

/// Runs `ustrace-demo` with `threads` threads that print their tids; returns its
/// pid and, per thread index, the tid.
fn spawn_reporting(daemon: &Daemon, threads: u32, events: u32) -> (Running, u32) {
    let child = daemon
        .app(&[
            "--threads",
            &threads.to_string(),
            "--events",
            &events.to_string(),
            "--print-tids",
        ])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let pid = child.id();
    (Running(child), pid)
}

/// Reads the `thread T tid N` lines of a finished app.
fn tids(app: &mut Running) -> HashMap<i64, i64> {
    let out = std::io::BufReader::new(app.0.stdout.take().unwrap());
    out.lines()
        .map(Result::unwrap)
        .filter_map(|l| {
            let rest = l.strip_prefix("thread ")?;
            let (t, tid) = rest.split_once(" tid ")?;
            Some((t.parse().unwrap(), tid.parse().unwrap()))
        })
        .collect()
}

#[test]
fn in_a_shared_per_uid_channel_every_event_names_the_process_and_thread_that_wrote_it() {
    let daemon = Daemon::start();
    let output = daemon.scratch.path("out");
    let create = daemon.cli(&["create", "ctx", "-o", output.to_str().unwrap()]);
    assert!(create.status.success(), "{create:?}");
    let enable = daemon.cli(&["enable-channel", "shared", "-s", "ctx", "--buffers-uid"]);
    assert!(enable.status.success(), "{enable:?}");
    let add = daemon.cli(&[
        "add-context",
        "-u",
        "-s",
        "ctx",
        "-c",
        "shared",
        "-t",
        "vpid",
        "-t",
        "vtid",
        "-t",
        "procname",
    ]);
    assert!(add.status.success(), "{add:?}");
    let event = daemon.cli(&["enable-event", "demo:*", "-s", "ctx", "-c", "shared"]);
    assert!(event.status.success(), "{event:?}");
    let start = daemon.cli(&["start", "ctx"]);
    assert!(start.status.success(), "{start:?}");
    let bad = daemon.cli(&["add-context", "-s", "ctx", "-t", "vpid"]);
    assert!(!bad.status.success(), "contexts are fixed once started");
    assert!(
        String::from_utf8_lossy(&bad.stderr).contains("was started"),
        "{bad:?}"
    );

    // Two apps of this uid at once, four threads each, into the same rings.
    let (threads, events) = (4u32, 4_000u32);
    let mut apps: Vec<(Running, u32)> = (0..2)
        .map(|_| spawn_reporting(&daemon, threads, events))
        .collect();
    let mut writers: HashMap<(i64, i64), i64> = HashMap::new();
    for (app, pid) in &mut apps {
        assert!(app.0.wait().unwrap().success());
        for (t, tid) in tids(app) {
            writers.insert((i64::from(*pid), t), tid);
        }
    }
    assert_eq!(writers.len(), 2 * threads as usize);
    daemon.stop("ctx");

    let lines: Vec<String> = babeltrace2(&output)
        .into_iter()
        .filter(|l| l.contains("demo:ev"))
        .collect();
    assert_eq!(lines.len(), 2 * events as usize, "nothing lost");
    let mut seen_threads = HashSet::new();
    for line in &lines {
        let vpid: i64 = value(line, "vpid").expect("a vpid").parse().unwrap();
        let vtid: i64 = value(line, "vtid").expect("a vtid").parse().unwrap();
        let procname = value(line, "procname").expect("a procname");
        let i: i64 = value(line, "i").expect("i").parse().unwrap();
        let thread = i >> 40;
        assert_eq!(
            writers.get(&(vpid, thread)),
            Some(&vtid),
            "event {i} of thread {thread} says vpid {vpid} vtid {vtid}: {line}"
        );
        assert_eq!(procname, "\"ustrace-demo\"", "{line}");
        seen_threads.insert(vtid);
    }
    assert_eq!(seen_threads.len(), 2 * threads as usize);

    // `ustrace view` says the same, in text and JSON.
    let text = daemon.cli(&["view", output.to_str().unwrap()]);
    assert!(text.status.success(), "{text:?}");
    let json = daemon.cli(&["view", "--json", output.to_str().unwrap()]);
    assert!(json.status.success(), "{json:?}");
    let text = String::from_utf8(text.stdout).unwrap();
    let json = String::from_utf8(json.stdout).unwrap();
    assert_eq!(json.lines().count(), 2 * events as usize);
    for (text_line, json_line) in text.lines().zip(json.lines()) {
        let j: serde_json::Value = serde_json::from_str(json_line).unwrap();
        let (vpid, vtid) = (j["vpid"].as_i64().unwrap(), j["vtid"].as_i64().unwrap());
        let i = j["fields"]["i"].as_i64().unwrap();
        assert_eq!(writers.get(&(vpid, i >> 40)), Some(&vtid), "{json_line}");
        assert_eq!(j["procname"], "ustrace-demo");
        assert_eq!(j["context"]["vtid"], vtid);
        assert!(
            text_line.contains(&format!(" ustrace-demo/{vpid}/{vtid} demo:ev ")),
            "{text_line} / {json_line}"
        );
    }
}

#[test]
fn every_context_type_reads_in_babeltrace2_and_per_uid_defaults_to_vpid_and_vtid() {
    let daemon = Daemon::start();
    let output = daemon.session_with(
        "all",
        "out-all",
        &[
            ChannelRequest {
                name: "plain".into(),
                buffers: Some(Buffering::PerUid),
                ..ChannelRequest::default()
            },
            ChannelRequest {
                name: "every".into(),
                buffers: Some(Buffering::PerPid),
                contexts: Some(vec![]),
                ..ChannelRequest::default()
            },
        ],
        false,
    );
    daemon.ok(ControlRequest::AddContext {
        session: Some("all".into()),
        channel: Some("every".into()),
        contexts: ustrace::ctf::context::ContextType::ALL.to_vec(),
    });
    let refused = daemon.ask(ControlRequest::AddContext {
        session: Some("all".into()),
        channel: Some("nope".into()),
        contexts: vec![ustrace::ctf::context::ContextType::Vpid],
    });
    assert!(refused.unwrap_err().contains("nope"));
    daemon.ok(ControlRequest::Start {
        session: Some("all".into()),
    });
    let app = daemon.run_app(&["--events", "5"]);
    assert!(app.status.success());
    daemon.stop("all");
    let traces = sub_traces(&output);
    assert_eq!(traces.len(), 2);
    for trace in traces {
        let lines: Vec<String> = babeltrace2(&output.join(&trace))
            .into_iter()
            .filter(|l| l.contains("demo:ev"))
            .collect();
        assert_eq!(lines.len(), 5, "{trace}");
        for line in &lines {
            let vpid: u32 = value(line, "vpid").expect("vpid").parse().unwrap();
            assert!(value(line, "vtid").is_some(), "{line}");
            if trace.contains("/uid/") {
                assert!(value(line, "procname").is_none(), "only vpid, vtid: {line}");
            } else {
                assert!(trace.contains(&format!("-{vpid}-")), "{trace}: {line}");
                assert_eq!(value(line, "procname"), Some("\"ustrace-demo\""));
                for hex in ["pthread_id", "ip"] {
                    let v = value(line, hex).unwrap_or_else(|| panic!("{hex}: {line}"));
                    assert!(v.starts_with("0x") && v != "0x0", "{hex} = {v}");
                }
                let cpu: u32 = value(line, "cpu_id").expect("cpu_id").parse().unwrap();
                assert!(cpu < 1024);
            }
        }
    }
}

#[test]
fn a_forked_childs_events_carry_the_childs_own_vpid_and_vtid() {
    use ustrace::ctf::context::ContextType;
    let daemon = Daemon::start();
    let channel = |name: &str, buffers, contexts| ChannelRequest {
        name: name.into(),
        buffers: Some(buffers),
        contexts,
        ..ChannelRequest::default()
    };
    let output = daemon.session_with(
        "s",
        "out",
        &[
            // Per-UID: vpid and vtid by default; per-PID: asked for.
            channel("u", Buffering::PerUid, None),
            channel(
                "p",
                Buffering::PerPid,
                Some(vec![ContextType::Vpid, ContextType::Vtid]),
            ),
        ],
        true,
    );
    // The parent forks from its main thread before its emitting thread starts; the
    // child emits its 5 events (s = "child") from its only thread and _exits.
    let app = daemon
        .app(&["--events", "3", "--fork-child-events", "5"])
        .spawn()
        .unwrap();
    let parent = i64::from(app.id());
    let mut app = Running(app);
    assert!(app.0.wait().unwrap().success());
    common::wait_for("both apps gone", std::time::Duration::from_secs(10), || {
        daemon.status().apps == 0
    });
    daemon.stop("s");
    let mut lines = Vec::new();
    for t in sub_traces(&output) {
        lines.extend(babeltrace2(&output.join(t)));
    }
    let ids = |child: bool| -> Vec<(i64, i64)> {
        lines
            .iter()
            .filter(|l| l.contains(" demo:ev: ") && l.contains("\"child\"") == child)
            .map(|l| {
                let id = |name| value(l, name).unwrap_or_else(|| panic!("{name} in {l}"));
                (id("vpid").parse().unwrap(), id("vtid").parse().unwrap())
            })
            .collect()
    };
    let (parents, children) = (ids(false), ids(true));
    assert_eq!(parents.len(), 6, "3 parent events in each channel");
    assert_eq!(children.len(), 10, "5 child events in each channel");
    assert!(
        parents.iter().all(|&(vpid, _)| vpid == parent),
        "the parent's events name it: {parents:?}"
    );
    let (child, _) = children[0];
    assert_ne!(
        child, parent,
        "the child's events name the child, not its parent"
    );
    assert!(
        children.iter().all(|&ids| ids == (child, child)),
        "every child event names the child and its one thread: {children:?}"
    );
}
