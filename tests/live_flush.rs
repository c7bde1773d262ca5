//! The switch timer (`daemon.flush_interval_ms`): while a session runs, live apps'
//! events reach the trace on disk, and closing packets under producers that keep
//! writing loses, duplicates and reorders nothing.

mod common;

use common::{Daemon, babeltrace2, babeltrace2_raw, poke, poll_until, sub_traces};
use std::collections::HashMap;
use std::path::Path;
use std::time::Duration;
use ustrace::protocol::messages::Buffering;

const WAIT: Duration = Duration::from_secs(30);

/// Values of `i` of the `demo:ev` lines of babeltrace2's output, in its order.
fn indexes(lines: &[String]) -> Vec<i64> {
    lines
        .iter()
        .filter(|l| l.contains("demo:ev"))
        .filter_map(|l| l.split_once("i = "))
        .map(|(_, rest)| rest.split_once(',').expect("i then s").0.parse().unwrap())
        .collect()
}

/// `demo:ev` events babeltrace2 reads in `dir` now, or `None` while it cannot read it
/// (no metadata or stream file yet).
fn readable_events(dir: &Path) -> Option<usize> {
    let out = babeltrace2_raw(&[], dir);
    out.status.success().then(|| {
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter(|l| l.contains("demo:ev"))
            .count()
    })
}

#[test]
fn a_live_apps_events_are_on_disk_before_it_exits_and_before_stop() {
    let daemon = Daemon::with_config("[daemon]\nflush_interval_ms = 50\n");
    let output = daemon.session(
        "live",
        &[("shared", Buffering::PerUid), ("own", Buffering::PerPid)],
        true,
    );
    // 25 small events fill no sub-buffer: only the switch timer can close their packet.
    let mut app = daemon.app_that_emitted(25);
    let mut traces = Vec::new();
    assert!(
        poll_until(WAIT, || {
            traces = sub_traces(&output);
            traces.len() == 2
                && traces
                    .iter()
                    .all(|t| readable_events(&output.join(t)) == Some(25))
        }),
        "while the app runs, babeltrace2 reads its 25 events in both sub-traces {traces:?}"
    );
    assert!(
        app.0.try_wait().unwrap().is_none(),
        "the app is still running"
    );
    // More events from the same live process arrive as well.
    poke(&mut app.0);
    assert!(app.0.wait().unwrap().success());
    let mut second = daemon.app_that_emitted(7);
    assert!(
        poll_until(WAIT, || {
            let uid_trace = traces.iter().find(|t| t.contains("uid")).unwrap();
            readable_events(&output.join(uid_trace)) == Some(32)
        }),
        "the per-UID trace holds the second live app's events before stop"
    );
    poke(&mut second.0);
    assert!(second.0.wait().unwrap().success());
    daemon.stop("live");
}

#[test]
fn a_flood_with_a_1ms_flush_loses_duplicates_and_reorders_nothing() {
    let daemon = Daemon::with_config("[daemon]\nflush_interval_ms = 1\n");
    let output = daemon.session(
        "flood",
        &[("shared", Buffering::PerUid), ("own", Buffering::PerPid)],
        true,
    );
    let (threads, events) = (4u64, 200_000u64);
    daemon.run_app(&[
        "--threads",
        &threads.to_string(),
        "--events",
        &events.to_string(),
    ]);
    daemon.stop("flood");
    let mut read = 0;
    for trace in sub_traces(&output) {
        // Each thread's events are in the order it wrote them (`i` counts up per
        // thread, thread t's `i` starts at t << 40), none twice.
        let mut last: HashMap<i64, i64> = HashMap::new();
        let seen = indexes(&babeltrace2(&output.join(&trace)));
        for &i in &seen {
            let thread = i >> 40;
            if let Some(&before) = last.get(&thread) {
                assert!(
                    i > before,
                    "{trace}: thread {thread} event {i} after {before}"
                );
            }
            last.insert(thread, i);
        }
        read += seen.len() as u64;
    }
    let discarded = daemon.status().events_discarded;
    assert_eq!(
        read + discarded,
        2 * events,
        "both channels' events are read or counted discarded ({read} read, {discarded} \
         discarded)"
    );
}

#[test]
fn each_sub_trace_carries_lttngs_env_keys_and_declares_only_its_channels() {
    use ustrace::trace::metadata::{EnvValue, parse};
    let daemon = Daemon::start();
    let output = daemon.session(
        "envkeys",
        &[("shared", Buffering::PerUid), ("own", Buffering::PerPid)],
        true,
    );
    let app = daemon.run_app(&["--events", "3"]);
    assert!(app.status.success());
    daemon.stop("envkeys");
    let traces = sub_traces(&output);
    assert_eq!(traces.len(), 2, "{traces:?}");
    let uid = nix::unistd::getuid().as_raw();
    for trace in &traces {
        let text = std::fs::read_to_string(output.join(trace).join("metadata")).unwrap();
        let meta = parse(&text).unwrap();
        let str_of = |key: &str| match meta.env(key) {
            Some(EnvValue::Str(s)) => s.clone(),
            other => panic!("{trace}: env {key} is {other:?}"),
        };
        let int_of = |key: &str| match meta.env(key) {
            Some(EnvValue::Int(i)) => *i,
            other => panic!("{trace}: env {key} is {other:?}"),
        };
        assert_eq!(str_of("tracer_name"), "ustrace");
        assert_eq!(str_of("domain"), "ust");
        assert_eq!(str_of("trace_name"), "envkeys");
        let created = str_of("trace_creation_datetime");
        assert!(
            created.len() == 20 && created.as_bytes()[8] == b'T',
            "ISO 8601 basic: {created}"
        );
        assert_eq!(int_of("architecture_bit_width"), 64);
        assert!(int_of("tracer_patchlevel") >= 0);
        assert_eq!(
            meta.stream_ids.len(),
            1,
            "{trace} declares only its own channel"
        );
        if trace.contains("/uid/") {
            assert_eq!(str_of("tracer_buffering_scheme"), "uid");
            assert_eq!(int_of("tracer_buffering_id"), i64::from(uid));
            assert!(text.contains("/* channel shared */") && !text.contains("channel own"));
        } else {
            assert_eq!(str_of("tracer_buffering_scheme"), "pid");
            assert_eq!(str_of("procname"), "ustrace-demo");
            let vpid = int_of("vpid");
            assert_eq!(int_of("tracer_buffering_id"), vpid);
            assert!(
                trace.contains(&format!("-{vpid}-")),
                "{trace} names pid {vpid}"
            );
            let registered = str_of("vpid_datetime");
            assert!(
                registered.len() == 20 && registered >= created,
                "{registered}"
            );
            assert!(text.contains("/* channel own */") && !text.contains("channel shared"));
        }
        assert_eq!(
            indexes(&babeltrace2(&output.join(trace))).len(),
            3,
            "{trace} reads"
        );
    }
}
