//! Output removed while tracing (`rm -rf` of a per-UID output): later events reach
//! a recreated trace that babeltrace2 reads, and `stop` says that what was written
//! before is gone instead of claiming the trace flushed.

mod common;

use common::{Daemon, babeltrace2, wait_for};
use std::path::{Path, PathBuf};
use std::time::Duration;
use ustrace::protocol::messages::{Buffering, ChannelRequest, ControlRequest};

/// A per-UID channel of 4 KiB packets, so that a few thousand events make packets.
fn start_session(daemon: &Daemon) -> PathBuf {
    daemon.session_with(
        "s",
        "out",
        &[ChannelRequest {
            name: "chan".into(),
            buffers: Some(Buffering::PerUid),
            subbuf_size: Some(4096),
            num_subbuf: Some(64),
            ..ChannelRequest::default()
        }],
        true,
    )
}

/// Traces one app and waits until its packets are in the stream file; then
/// removes the whole output.
fn trace_then_remove(daemon: &Daemon, output: &Path) {
    daemon.run_pinned_app(5000);
    let stream = output.join("ust/uid/0/64-bit/chan_0");
    wait_for("packets on disk", Duration::from_secs(20), || {
        std::fs::metadata(&stream).is_ok_and(|m| m.len() > 0)
    });
    // The writer may still be storing the app's last packets (and so making a file
    // in a directory being emptied): remove until nothing is left.
    wait_for("the output removed", Duration::from_secs(20), || {
        std::fs::remove_dir_all(output).is_ok() || !output.exists()
    });
}

#[test]
fn events_after_the_output_was_removed_reach_a_recreated_trace() {
    let daemon = Daemon::start();
    let output = start_session(&daemon);
    trace_then_remove(&daemon, &output);
    daemon.run_pinned_app(5000);
    let stopped = daemon.ask(ControlRequest::Stop { session: None });
    let error = stopped.expect_err("stop says the first packets are gone");
    assert!(error.contains("was removed"), "{error}");
    let events = babeltrace2(&output)
        .iter()
        .filter(|l| l.contains("demo:ev"))
        .count();
    // Every event of the second app, and the first app's last, partial packet
    // (still in the ring at the removal); not the first app's stored packets.
    assert!((5000..10_000).contains(&events), "{events} events on disk");
}

#[test]
fn stop_after_the_output_was_removed_does_not_claim_the_trace_flushed() {
    let daemon = Daemon::start();
    let output = start_session(&daemon);
    trace_then_remove(&daemon, &output);
    let stopped = daemon.ask(ControlRequest::Stop { session: None });
    let error = stopped.expect_err("the packets written before are not on disk");
    assert!(
        error.contains("chan_0") && error.contains("was removed after"),
        "{error}"
    );
}

/// When the trace cannot be made again at once (a file stands where the output
/// was), the writer that saw the removal fails and is restarted; `stop` still
/// reports the removal once the output can be made again, and the packets kept
/// through the restarts reach the recreated trace. Restarts are allowed often
/// enough that the stream is not failed while the test waits.
#[test]
fn a_removal_seen_by_a_writer_that_then_failed_is_still_reported() {
    let daemon = Daemon::with_config(
        "[supervision]\nmax_restarts = 1000\nwithin_secs = 10\nbackoff_ms = 100\n",
    );
    let output = start_session(&daemon);
    trace_then_remove(&daemon, &output);
    std::fs::write(&output, "in the output's place").unwrap();
    daemon.run_pinned_app(5000);
    wait_for("a writer restart", Duration::from_secs(20), || {
        daemon.status().writer_restarts >= 1
    });
    std::fs::remove_file(&output).unwrap();
    let stopped = daemon.ask(ControlRequest::Stop { session: None });
    let error = stopped.expect_err("the packets written before are not on disk");
    assert!(
        error.contains("chan_0") && error.contains("was removed after"),
        "{error}"
    );
    let events = babeltrace2(&output)
        .iter()
        .filter(|l| l.contains("demo:ev"))
        .count();
    assert!((5000..10_000).contains(&events), "{events} events on disk");
}
