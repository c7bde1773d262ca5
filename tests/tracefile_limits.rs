//! `enable-channel --tracefile-size S --tracefile-count N` on a real daemon: while an
//! app emits, each stream keeps at most N files `<chan>_<cpu>_<k>` of at most S
//! bytes (their index files likewise), the oldest deleted, and the trace stays
//! readable by babeltrace2.

mod common;

use common::{Daemon, Running, babeltrace2, sub_traces, wait_for};
use std::path::Path;
use std::process::Stdio;
use std::time::Duration;
use ustrace::protocol::messages::{Buffering, ChannelRequest, ControlRequest, TracefileLimits};
use ustrace::shm::Mode;

const WAIT: Duration = Duration::from_secs(60);

/// Names and sizes of the files of `dir` whose name starts with `prefix`.
fn files(dir: &Path, prefix: &str) -> Vec<(String, u64)> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut found: Vec<(String, u64)> = entries
        .flatten()
        .filter_map(|e| {
            let name = e.file_name().to_string_lossy().into_owned();
            // A file deleted between the listing and its stat is gone: not counted.
            let len = e.metadata().ok()?.len();
            name.starts_with(prefix).then_some((name, len))
        })
        .collect();
    found.sort();
    found
}

#[test]
fn each_stream_keeps_at_most_count_files_of_at_most_size_during_a_flood() {
    let daemon = Daemon::start();
    let (size, count) = (8192u64, 3u32);
    let output = daemon.session_with(
        "tf",
        "out",
        &[ChannelRequest {
            name: "u".into(),
            buffers: Some(Buffering::PerUid),
            subbuf_size: Some(4096),
            num_subbuf: Some(4),
            mode: Some(Mode::Discard),
            tracefile: Some(TracefileLimits { size, count }),
            ..ChannelRequest::default()
        }],
        true,
    );
    // Paced rather than a burst: a burst can end before the daemon has drained more
    // than the ring holds, and then no file is ever rotated. The app goes on until
    // the stream has been rotated through its file count twice.
    let app = Running(
        daemon
            .pinned_app(0, &["--paced-us", "20"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .unwrap(),
    );
    let mut trace = None;
    let mut most_seen = 0u64;
    // Sampled all along the flood: the bound holds at every moment, not only at
    // the end.
    wait_for("the stream's files to be rotated twice over", WAIT, || {
        if trace.is_none() {
            trace = sub_traces(&output).into_iter().next();
        }
        if let Some(t) = &trace {
            let dir = output.join(t);
            let streams = files(&dir, "u_0_");
            let total: u64 = streams.iter().map(|(_, len)| len).sum();
            assert!(streams.len() <= count as usize, "{streams:?}");
            assert!(streams.iter().all(|(_, len)| *len <= size), "{streams:?}");
            assert!(total <= size * u64::from(count), "{streams:?}");
            let indexes = files(&dir.join("index"), "u_0_");
            assert!(indexes.len() <= count as usize, "{indexes:?}");
            for (name, _) in &streams {
                let k: u64 = name["u_0_".len()..].parse().expect("u_0_<k>");
                most_seen = most_seen.max(k);
            }
        }
        most_seen >= 2 * u64::from(count)
    });
    let (_, emitted) = app.finish_paced();
    daemon.stop("tf");

    let dir = output.join(trace.expect("a trace was made"));
    let streams = files(&dir, "u_0_");
    assert!(
        !streams.is_empty() && streams.len() <= count as usize,
        "{streams:?}"
    );
    let ks: Vec<u64> = streams
        .iter()
        .map(|(n, _)| n["u_0_".len()..].parse().unwrap())
        .collect();
    let newest = *ks.iter().max().unwrap();
    assert!(newest >= most_seen, "the newest file is kept: {ks:?}");
    assert!(
        ks.iter().all(|k| newest - k < u64::from(count)),
        "the newest files are kept: {ks:?}"
    );
    assert!(
        files(&dir, "u_0")
            .iter()
            .all(|(n, _)| n.starts_with("u_0_"))
    );
    let events = babeltrace2(&output)
        .iter()
        .filter(|l| l.contains("demo:ev"))
        .count();
    // The rotated-out files took their events with them.
    assert!(
        events > 0 && (events as i64) < emitted,
        "{events} of {emitted} events"
    );
}

#[test]
fn tracefile_bounds_that_cannot_hold_a_stream_are_refused() {
    let daemon = Daemon::start();
    daemon.ok(ControlRequest::Create {
        name: "s".into(),
        output: Some(daemon.scratch.path("s").display().to_string()),
        url: None,
        live_timer_us: None,
    });
    let error = daemon
        .ask(ControlRequest::EnableChannel {
            session: Some("s".into()),
            channel: ChannelRequest {
                name: "c".into(),
                subbuf_size: Some(8192),
                tracefile: Some(TracefileLimits {
                    size: 4096,
                    count: 2,
                }),
                ..ChannelRequest::default()
            },
        })
        .expect_err("a file smaller than a sub-buffer");
    assert!(
        error.contains("channel c: --tracefile-size 4096 is smaller than a sub-buffer"),
        "{error}"
    );
    let error = daemon
        .ask(ControlRequest::EnableChannel {
            session: Some("s".into()),
            channel: ChannelRequest {
                name: "c".into(),
                tracefile: Some(TracefileLimits { size: 0, count: 2 }),
                ..ChannelRequest::default()
            },
        })
        .expect_err("a count without a size");
    assert!(
        error.contains("--tracefile-count needs --tracefile-size"),
        "{error}"
    );
    let cli = daemon.cli(&["enable-channel", "d", "--tracefile-count", "2"]);
    assert!(!cli.status.success(), "clap requires the size: {cli:?}");
}
