//! `disable-event`, `disable-channel` and `enable-channel` of a disabled channel on a
//! started session, while a real app emits without pause: the app stops recording
//! into that channel and starts again without a restart, and nothing else is lost.
//! The app numbers its events 0, 1, 2...; a reference session that is never touched
//! records every number, the toggled one every number but one gap.

mod common;

use common::{Daemon, babeltrace2, stream_bytes, wait_for};
use std::path::Path;
use std::time::Duration;
use ustrace::ctf::field::LogLevel;
use ustrace::protocol::messages::{
    Buffering, ControlOk, ControlReply, ControlRequest, LogLevelRule,
};

const WAIT: Duration = Duration::from_secs(60);

/// Waits until the streams under `dir` grew twice: at least one whole flush
/// period of the app's events reached the disk since the call.
fn two_flushes(dir: &Path) {
    for _ in 0..2 {
        let before = stream_bytes(dir);
        wait_for("the reference trace to grow", WAIT, || {
            stream_bytes(dir) > before
        });
    }
}

/// The `i` field of every `demo:ev` event of the trace under `dir`, ascending.
fn numbers(dir: &Path) -> Vec<i64> {
    let mut found: Vec<i64> = babeltrace2(dir)
        .iter()
        .filter(|l| l.contains("demo:ev"))
        .map(|l| {
            let at = l.find("i = ").expect("an i field") + 4;
            let end = l[at..].find(',').expect("a field after i") + at;
            l[at..end].trim().parse().expect("an integer")
        })
        .collect();
    found.sort_unstable();
    found
}

/// Runs the app through recording, `disable`, `enable`, and checks the counts. With
/// `second_rule`, the toggled channel also has that rule, which `disable` leaves:
/// nothing may be missed then.
fn toggle_while_flooding(
    buffers: Buffering,
    second_rule: Option<&str>,
    disable: ControlRequest,
    enable: ControlRequest,
) {
    let daemon = Daemon::with_config("[daemon]\nflush_interval_ms = 20\n");
    let toggled = daemon.session("toggled", &[("c", buffers)], false);
    if let Some(pattern) = second_rule {
        daemon.ok(ControlRequest::EnableEvent {
            session: Some("toggled".into()),
            channel: Some("c".into()),
            pattern: pattern.into(),
            exclude: Vec::new(),
            loglevel: LogLevelRule::All,
            filter: None,
        });
    }
    daemon.ok(ControlRequest::Start {
        session: Some("toggled".into()),
    });
    let reference = daemon.session("reference", &[("c", buffers)], true);
    let app = daemon.paced_app(20);
    wait_for("both sessions to record", WAIT, || {
        stream_bytes(&toggled) > 0 && stream_bytes(&reference) > 0
    });

    daemon.ok(disable);
    if second_rule.is_some() {
        let at = stream_bytes(&toggled);
        two_flushes(&reference);
        assert!(stream_bytes(&toggled) > at, "the other rule records");
    } else {
        // The app applies the disable on its listener thread, a little after the
        // answer, and the packets from before it still reach the disk: once the
        // channel did not grow over two reference flushes, it grows no more.
        let mut while_disabled = stream_bytes(&toggled);
        wait_for("the disabled channel to stop growing", WAIT, || {
            two_flushes(&reference);
            let now = stream_bytes(&toggled);
            std::mem::replace(&mut while_disabled, now) == now
        });
        two_flushes(&reference);
        assert_eq!(
            stream_bytes(&toggled),
            while_disabled,
            "the disabled channel grew a flush period after the disable"
        );
    }

    daemon.ok(enable);
    let enabled_at = stream_bytes(&toggled);
    wait_for("the enabled channel to record again", WAIT, || {
        stream_bytes(&toggled) > enabled_at
    });
    two_flushes(&reference);

    let (_, emitted) = app.finish_paced();
    daemon.stop("toggled");
    daemon.stop("reference");
    assert_eq!(daemon.status().events_discarded, 0, "rings never full here");

    let all = numbers(&reference);
    assert_eq!(all, (0..emitted).collect::<Vec<_>>(), "reference session");

    let recorded = numbers(&toggled);
    if second_rule.is_some() {
        assert_eq!(
            recorded, all,
            "an event another rule matches is never missed"
        );
        return;
    }
    let mut runs: Vec<(i64, i64)> = Vec::new();
    for &i in &recorded {
        match runs.last_mut() {
            Some((_, end)) if *end == i => *end = i + 1,
            _ => runs.push((i, i + 1)),
        }
    }
    let [(0, before), (after, end)] = runs[..] else {
        panic!("expected [0, a) and [b, {emitted}), recorded runs {runs:?}");
    };
    assert_eq!(end, emitted, "recorded up to the last event");
    let not_recorded = after - before;
    assert!(not_recorded > 0, "a gap while disabled");
    assert_eq!(
        recorded.len() as i64 + not_recorded,
        emitted,
        "written = recorded + not recorded while disabled"
    );
}

#[test]
fn disable_channel_then_enable_it_again_while_an_app_floods() {
    toggle_while_flooding(
        Buffering::PerPid,
        None,
        ControlRequest::DisableChannel {
            session: Some("toggled".into()),
            channel: "c".into(),
        },
        ControlRequest::EnableChannel {
            session: Some("toggled".into()),
            channel: ustrace::protocol::messages::ChannelRequest {
                name: "c".into(),
                ..Default::default()
            },
        },
    );
}

#[test]
fn disable_event_then_enable_it_again_while_an_app_floods() {
    toggle_rule_while_flooding(None);
}

#[test]
fn disabling_one_rule_keeps_the_events_another_rule_matches() {
    toggle_rule_while_flooding(Some("demo:ev"));
}

/// Removes the toggled channel's `demo:*` rule and enables it again (per-UID).
fn toggle_rule_while_flooding(second_rule: Option<&str>) {
    toggle_while_flooding(
        Buffering::PerUid,
        second_rule,
        ControlRequest::DisableEvent {
            session: Some("toggled".into()),
            channel: Some("c".into()),
            pattern: Some("demo:*".into()),
        },
        ControlRequest::EnableEvent {
            session: Some("toggled".into()),
            channel: Some("c".into()),
            pattern: "demo:*".into(),
            exclude: Vec::new(),
            loglevel: LogLevelRule::All,
            filter: None,
        },
    );
}

fn refused(reply: ControlReply) -> String {
    match reply {
        Err(message) => message,
        Ok(answer) => panic!("accepted: {answer:?}"),
    }
}

#[test]
fn disable_requests_name_what_is_wrong_and_list_shows_the_state() {
    let daemon = Daemon::start();
    daemon.session("s", &[("c", Buffering::PerUid)], false);
    let message = refused(daemon.ask(ControlRequest::DisableEvent {
        session: Some("s".into()),
        channel: Some("c".into()),
        pattern: Some("other:*".into()),
    }));
    assert!(
        message.contains("other:*") && message.contains("demo:*"),
        "{message}"
    );
    let message = refused(daemon.ask(ControlRequest::DisableChannel {
        session: Some("s".into()),
        channel: "nope".into(),
    }));
    assert!(message.contains("nope"), "{message}");
    daemon.ok(ControlRequest::DisableChannel {
        session: Some("s".into()),
        channel: "c".into(),
    });
    let message = refused(daemon.ask(ControlRequest::DisableChannel {
        session: Some("s".into()),
        channel: "c".into(),
    }));
    assert!(message.contains("already disabled"), "{message}");
    // Re-enabling with other settings is refused; by name alone it works.
    let message = refused(daemon.ask(ControlRequest::EnableChannel {
        session: Some("s".into()),
        channel: ustrace::protocol::messages::ChannelRequest {
            name: "c".into(),
            num_subbuf: Some(64),
            ..Default::default()
        },
    }));
    assert!(message.contains("other settings"), "{message}");
    let list = |daemon: &Daemon| match daemon.ok(ControlRequest::List {
        session: Some("s".into()),
    }) {
        ControlOk::Sessions(s) => s,
        other => panic!("{other:?}"),
    };
    assert_eq!(list(&daemon)[0].disabled_channels, vec!["c".to_string()]);
    daemon.ok(ControlRequest::EnableChannel {
        session: Some("s".into()),
        channel: ustrace::protocol::messages::ChannelRequest {
            name: "c".into(),
            ..Default::default()
        },
    });
    assert!(list(&daemon)[0].disabled_channels.is_empty());
    // An enabled channel is not enabled twice.
    let message = refused(daemon.ask(ControlRequest::EnableChannel {
        session: Some("s".into()),
        channel: ustrace::protocol::messages::ChannelRequest {
            name: "c".into(),
            ..Default::default()
        },
    }));
    assert!(message.contains("already exists"), "{message}");
    daemon.ok(ControlRequest::DisableEvent {
        session: Some("s".into()),
        channel: None,
        pattern: None,
    });
    assert!(list(&daemon)[0].channels[0].1.is_empty());
}

#[test]
fn disable_event_removes_the_rules_of_that_pattern_text_whatever_their_conditions() {
    let daemon = Daemon::start();
    daemon.session("s", &[("c", Buffering::PerUid)], false);
    let enable = |pattern: &str, exclude: &[&str], loglevel| {
        daemon.ok(ControlRequest::EnableEvent {
            session: Some("s".into()),
            channel: Some("c".into()),
            pattern: pattern.into(),
            exclude: exclude.iter().map(|x| x.to_string()).collect(),
            loglevel,
            filter: None,
        });
    };
    enable("net:*", &["net:poll*"], LogLevelRule::All);
    enable("net:*", &[], LogLevelRule::AtLeast(LogLevel::Warning));
    enable("db:*", &[], LogLevelRule::Only(LogLevel::Debug));
    let rules = |daemon: &Daemon| match daemon.ok(ControlRequest::List {
        session: Some("s".into()),
    }) {
        ControlOk::Sessions(s) => s[0].channels[0].1.clone(),
        other => panic!("{other:?}"),
    };
    // `list`'s whole text of a rule is not its pattern: refused, nothing removed.
    let before = rules(&daemon);
    let message = refused(daemon.ask(ControlRequest::DisableEvent {
        session: Some("s".into()),
        channel: Some("c".into()),
        pattern: Some("net:* exclude net:poll*".into()),
    }));
    assert!(message.contains("net:* exclude net:poll*"), "{message}");
    assert_eq!(rules(&daemon), before);
    daemon.ok(ControlRequest::DisableEvent {
        session: Some("s".into()),
        channel: Some("c".into()),
        pattern: Some("net:*".into()),
    });
    let after = rules(&daemon);
    assert!(
        after.len() == 2 && after[0] == "demo:*" && after[1] == "db:* loglevel == DEBUG",
        "{after:?}"
    );
}
