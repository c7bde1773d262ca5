//! Late registration (issue #12 item 1, issue #11 item 2) over the real protocol:
//! hand-written app connections register events after their registration, the
//! daemon merges them into their traces, and babeltrace2 reads what was written
//! into the real rings. Hostile batches are refused with a reason while the
//! connection, and every other app, stays served.

mod common;

use common::{Daemon, babeltrace2, sub_traces, wait_for};
use std::collections::HashMap;
use std::io::{Read, Write};
use std::os::fd::OwnedFd;
use std::os::unix::net::UnixStream;
use std::time::Duration;
use ustrace::ctf::context::ContextSet;
use ustrace::ctf::field::{EventDesc, FieldDesc, FieldType, LogLevel};
use ustrace::protocol::messages::{AppCommand, AppRegister, AppRequest, Buffering};
use ustrace::protocol::{APPS_SOCKET, frame};
use ustrace::shm::ChannelBuffers;

const WAIT: Duration = Duration::from_secs(30);

fn event(name: &str) -> EventDesc {
    EventDesc {
        model_emf_uri: None,
        provider: "demo".into(),
        name: name.into(),
        loglevel: LogLevel::Info,
        fields: vec![FieldDesc {
            name: "x".into(),
            ty: FieldType::Integer {
                bits: 32,
                signed: false,
                hex: false,
            },
        }],
    }
}

/// A hand-written app connection.
struct RawApp {
    sock: UnixStream,
    /// The rings of each channel key and the bytes of event context its events carry.
    channels: HashMap<u64, (ChannelBuffers, usize)>,
    /// `(channel key, event id)` of each enabled event index.
    enabled: HashMap<u32, Vec<(u64, u32)>>,
}

/// How the daemon ended a batch of commands.
#[derive(Debug, PartialEq)]
enum End {
    Done,
    Registered { first: u32, count: u32 },
    Refused(String),
}

impl RawApp {
    fn connect(daemon: &Daemon, events: Vec<EventDesc>) -> RawApp {
        let sock = UnixStream::connect(daemon.rundir.join(APPS_SOCKET)).unwrap();
        sock.set_read_timeout(Some(WAIT)).unwrap();
        frame::send_hello(&sock).unwrap();
        let register = AppRegister {
            name: "late".into(),
            bitness: 64,
            events,
        };
        frame::send(&sock, &register, &[]).unwrap();
        let mut app = RawApp {
            sock,
            channels: HashMap::new(),
            enabled: HashMap::new(),
        };
        assert_eq!(app.read_until_end(), End::Done);
        app
    }

    /// Applies commands up to the end of a registration or a late registration.
    fn read_until_end(&mut self) -> End {
        loop {
            let (command, mut fds) = frame::recv::<AppCommand>(&self.sock, frame::MAX_FRAME)
                .unwrap()
                .expect("an answer before the daemon closes");
            match command {
                AppCommand::RegistrationDone => return End::Done,
                AppCommand::EventsRegistered { first, count } => {
                    return End::Registered { first, count };
                }
                AppCommand::EventsRefused { reason } => return End::Refused(reason),
                AppCommand::Refused { reason } => panic!("refused: {reason}"),
                AppCommand::Channel { key, contexts, .. } => {
                    let rings: Vec<OwnedFd> = fds.split_off(1);
                    let wakeup = fds.pop().unwrap();
                    let context_len = ContextSet::of(&contexts).encoded_len();
                    let buffers = ChannelBuffers::from_fds(rings, wakeup, context_len).unwrap();
                    self.channels.insert(key, (buffers, context_len));
                }
                AppCommand::Enable { key, events, .. } => {
                    for (index, id) in events {
                        self.enabled.entry(index).or_default().push((key, id));
                    }
                }
                AppCommand::Disable { .. } | AppCommand::DisableEvents { .. } => {}
            }
        }
    }

    fn register_late(&mut self, events: Vec<EventDesc>) -> End {
        frame::send(&self.sock, &AppRequest::RegisterEvents { events }, &[]).unwrap();
        self.read_until_end()
    }

    /// Records event index `index` with payload `x` in every channel it is enabled in.
    fn record(&self, index: u32, x: u32) -> usize {
        let sites = self.enabled.get(&index).cloned().unwrap_or_default();
        for &(key, id) in &sites {
            // The channel's event context (zeroed: this app names no process), then x.
            let (buffers, context_len) = &self.channels[&key];
            assert!(buffers.current().write_event(id, context_len + 4, |out| {
                out[..*context_len].fill(0);
                out[*context_len..].copy_from_slice(&x.to_le_bytes());
            }));
        }
        sites.len()
    }
}

#[test]
fn late_events_are_enabled_before_their_answer_and_recorded_per_uid_and_per_pid() {
    let daemon = Daemon::start();
    let output = daemon.session(
        "s",
        &[("u", Buffering::PerUid), ("p", Buffering::PerPid)],
        true,
    );
    let mut app = RawApp::connect(&daemon, vec![event("early")]);
    assert_eq!(app.record(0, 1), 2);

    let answer = app.register_late(vec![event("late_a"), event("late_b")]);
    assert_eq!(answer, End::Registered { first: 1, count: 2 });
    // The answer came after the grants: the first emission is recorded.
    assert_eq!(app.record(1, 2), 2);
    assert_eq!(app.record(2, 3), 2);
    let again = app.register_late(vec![event("later")]);
    assert_eq!(again, End::Registered { first: 3, count: 1 });
    assert_eq!(app.record(3, 4), 2);

    drop(app);
    wait_for("the app to be gone", WAIT, || daemon.status().apps == 0);
    daemon.stop("s");
    let traces = sub_traces(&output);
    assert_eq!(
        traces.len(),
        2,
        "one per-UID and one per-PID sub-trace: {traces:?}"
    );
    for trace in traces {
        let lines = babeltrace2(&output.join(&trace));
        let seen: Vec<String> = lines
            .iter()
            .filter_map(|l| l.split(" demo:").nth(1))
            .map(|rest| {
                rest.split_whitespace().next().unwrap().to_string()
                    + rest.rsplit("x = ").next().unwrap()
            })
            .collect();
        assert_eq!(
            seen,
            ["early:1 }", "late_a:2 }", "late_b:3 }", "later:4 }"],
            "{trace}: {lines:?}"
        );
    }
}

#[test]
fn late_events_past_a_limit_or_badly_named_are_refused_and_the_app_stays_registered() {
    let daemon = Daemon::with_config("[limits]\nmax_events_per_app = 3\n");
    let output = daemon.session("s", &[("u", Buffering::PerUid)], true);
    let mut app = RawApp::connect(&daemon, vec![event("a"), event("b")]);

    match app.register_late(vec![event("c"), event("d")]) {
        End::Refused(reason) => assert!(reason.contains("limits.max_events_per_app"), "{reason}"),
        other => panic!("two more events past the limit of 3: {other:?}"),
    }
    match app.register_late(vec![event("bad name")]) {
        End::Refused(reason) => assert!(reason.contains("bad name"), "{reason}"),
        other => panic!("a name that is no identifier: {other:?}"),
    }
    // Nothing of the refused batches was indexed: the next event is index 2.
    assert_eq!(
        app.register_late(vec![event("c")]),
        End::Registered { first: 2, count: 1 }
    );
    assert_eq!(app.record(2, 7), 1);
    let refusals = daemon.status().refusals;
    assert!(
        refusals
            .iter()
            .any(|(cause, n)| cause == "limits.max_events_per_app" && *n == 1),
        "{refusals:?}"
    );

    // Another app is served all along.
    let other = RawApp::connect(&daemon, vec![event("other")]);
    assert_eq!(other.record(0, 8), 1);
    drop((app, other));
    wait_for("the apps to be gone", WAIT, || daemon.status().apps == 0);
    daemon.stop("s");
    let lines = babeltrace2(&output.join(&sub_traces(&output)[0]));
    let names: Vec<&str> = lines
        .iter()
        .filter_map(|l| l.split(" demo:").nth(1))
        .filter_map(|rest| rest.split(':').next())
        .collect();
    assert_eq!(names, ["c", "other"], "{lines:?}");
}

/// A registered app that starts a late frame and never finishes it is closed
/// after the registration timeout; one that announces more than
/// `MAX_LATE_FRAME` is closed at once. Neither is waited for by anyone else.
#[test]
fn partial_or_oversized_late_frames_close_only_their_connection() {
    let daemon = Daemon::with_config("[daemon]\nregistration_timeout_ms = 500\n");
    daemon.session("s", &[("u", Buffering::PerUid)], true);
    let closed = |sock: &mut UnixStream| {
        let mut byte = [0u8; 1];
        matches!(sock.read(&mut byte), Ok(0))
            || matches!(sock.read(&mut byte), Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset)
    };

    let mut partial = RawApp::connect(&daemon, vec![event("a")]);
    let mut bytes = 1000u32.to_le_bytes().to_vec();
    bytes.extend([0u8; 100]);
    partial.sock.write_all(&bytes).unwrap();

    let mut oversized = RawApp::connect(&daemon, vec![event("a")]);
    oversized
        .sock
        .write_all(&(1u32 << 20).to_le_bytes())
        .unwrap();

    let served = RawApp::connect(&daemon, vec![event("b")]);
    assert_eq!(served.record(0, 1), 1);
    assert!(
        closed(&mut oversized.sock),
        "an oversized late frame keeps its connection"
    );
    assert!(
        closed(&mut partial.sock),
        "a partial late frame keeps its connection"
    );
    drop((partial, oversized, served));
    wait_for("the apps to be gone", WAIT, || daemon.status().apps == 0);
}
