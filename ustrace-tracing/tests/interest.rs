//! `tracing`'s interest cache follows the daemon's enable pushes: a callsite no
//! session records is "never" after its first use (`tracing` then dispatches
//! nothing for it: an inner layer counts what reaches it), an enable push makes it
//! "always" again without any new callsite, and the first event of a callsite a
//! session records is in the trace. One process-wide subscriber, so its own
//! harness-less binary (`main` sets the runtime dir before any other thread runs).

#[path = "../../tests/common/mod.rs"]
mod common;

use common::{Daemon, babeltrace2, poll_until};
use std::sync::atomic::{AtomicUsize, Ordering::Relaxed};
use std::time::Duration;
use tracing_core::{Event, Subscriber};
use tracing_subscriber::layer::{Context, Layer, SubscriberExt};
use ustrace::protocol::messages::{Buffering, ControlRequest, LogLevelRule};
use ustrace_tracing::UstraceLayer;

static WANTED: AtomicUsize = AtomicUsize::new(0);
static UNWANTED: AtomicUsize = AtomicUsize::new(0);

/// Counts the events `tracing` dispatches, by target.
struct Counting;

impl<S: Subscriber> Layer<S> for Counting {
    fn on_event(&self, event: &Event<'_>, _: Context<'_, S>) {
        match event.metadata().target() {
            "wanted" => WANTED.fetch_add(1, Relaxed),
            "unwanted" => UNWANTED.fetch_add(1, Relaxed),
            _ => 0,
        };
    }
}

fn main() {
    let daemon = Daemon::start();
    let output = daemon.session("s", &[("ch", Buffering::PerPid)], false);
    for request in [
        ControlRequest::EnableEvent {
            session: Some("s".into()),
            channel: Some("ch".into()),
            pattern: "wanted:*".into(),
            exclude: Vec::new(),
            loglevel: LogLevelRule::All,
            filter: None,
        },
        // A filter still applies to an event encoded in place (numbers only)
        // and to one encoded through the per-thread buffer (a string field).
        ControlRequest::EnableEvent {
            session: Some("s".into()),
            channel: Some("ch".into()),
            pattern: "filtered:*".into(),
            exclude: Vec::new(),
            loglevel: LogLevelRule::All,
            filter: Some("i >= 2".into()),
        },
        ControlRequest::EnableEvent {
            session: Some("s".into()),
            channel: Some("ch".into()),
            pattern: "filtered_text:*".into(),
            exclude: Vec::new(),
            loglevel: LogLevelRule::All,
            filter: Some("s == \"b*\"".into()),
        },
        ControlRequest::Start {
            session: Some("s".into()),
        },
    ] {
        daemon.ok(request);
    }
    // SAFETY: no other thread of this process exists yet that could read the
    // environment (the daemon is a child process).
    unsafe { std::env::set_var("USTRACE_RUNDIR", &daemon.rundir) };
    let subscriber = tracing_subscriber::registry()
        .with(Counting)
        .with(UstraceLayer);
    tracing_core::dispatcher::set_global_default(subscriber.into()).unwrap();
    ustrace_tracing::register("interest");

    for i in 0..3u64 {
        tracing::info!(target: "unwanted", i);
        tracing::info!(target: "wanted", i);
    }
    for (i, s) in (0..4u64).zip(["a", "b1", "c", "b2"]) {
        tracing::info!(target: "filtered", i);
        tracing::info!(target: "filtered_text", s);
    }
    assert_eq!(UNWANTED.load(Relaxed), 1, "dispatched after its first use");
    assert_eq!(WANTED.load(Relaxed), 3);

    daemon.ok(ControlRequest::EnableEvent {
        session: Some("s".into()),
        channel: Some("ch".into()),
        pattern: "unwanted:*".into(),
        exclude: Vec::new(),
        loglevel: LogLevelRule::All,
        filter: None,
    });
    let pushed = poll_until(Duration::from_secs(20), || {
        tracing::info!(target: "unwanted", i = 100u64);
        UNWANTED.load(Relaxed) > 1
    });
    assert!(
        pushed,
        "the enable push did not reach tracing's interest cache"
    );

    daemon.stop("s");
    let trace = babeltrace2(&output);
    let values = |provider: &str| -> Vec<String> {
        trace
            .iter()
            .filter(|l| l.contains(&format!(" {provider}:")))
            .map(|l| {
                l.rsplit("i = ")
                    .next()
                    .unwrap()
                    .trim_end_matches(" }")
                    .to_string()
            })
            .collect()
    };
    assert_eq!(values("wanted"), ["0", "1", "2"], "{trace:#?}");
    assert_eq!(values("filtered"), ["2", "3"], "{trace:#?}");
    let texts: Vec<&String> = trace
        .iter()
        .filter(|l| l.contains(" filtered_text:"))
        .collect();
    assert_eq!(texts.len(), 2, "{trace:#?}");
    assert!(texts[0].contains("s = \"b1\"") && texts[1].contains("s = \"b2\""));
    let unwanted = values("unwanted");
    assert!(
        !unwanted.is_empty() && unwanted.iter().all(|v| v == "100"),
        "{trace:#?}"
    );
    println!("interest: 1 passed, 0 failed");
}
