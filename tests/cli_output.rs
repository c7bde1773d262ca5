//! The CLI's output through the real binary and a real daemon: `--json` answers
//! (one object, the keys docs/cli.md lists), words instead of debug names, a closed
//! pipe ending quietly, and `save` loaded back by a new daemon unchanged.

mod common;

use common::{Daemon, wait_for};
use serde_json::Value;
use std::os::fd::OwnedFd;
use std::process::{Command, Output, Stdio};
use std::time::Duration;
use ustrace::protocol::messages::{ControlOk, ControlRequest, SessionInfo};

/// Runs the CLI with `--json` and parses its one line of output.
fn json(daemon: &Daemon, args: &[&str]) -> (Value, Output) {
    let mut all = vec!["--json"];
    all.extend_from_slice(args);
    let out = daemon.cli(&all);
    let text = String::from_utf8(out.stdout.clone()).unwrap();
    assert_eq!(text.lines().count(), 1, "one line for {args:?}: {text:?}");
    let value: Value = serde_json::from_str(&text).unwrap_or_else(|e| panic!("{text}: {e}"));
    assert_eq!(value["command"], args[0], "{value}");
    (value, out)
}

#[test]
fn every_answer_is_one_json_object_with_the_documented_keys() {
    let daemon = Daemon::start();
    let output = daemon.scratch.path("out");
    let output = output.to_str().unwrap();
    let steps: [&[&str]; 9] = [
        &["create", "s", "-o", output],
        &["enable-channel", "c", "--buffers-pid", "--overwrite"],
        &["enable-event", "demo:*", "-c", "c"],
        &["add-context", "-t", "procname"],
        &["start"],
        &["disable-event", "demo:*", "-c", "c"],
        &["enable-event", "demo:ev", "-c", "c"],
        &["enable-event", "other:*", "-c", "c"],
        &["disable-event", "-a", "-c", "c"],
    ];
    for args in steps {
        let (value, out) = json(&daemon, args);
        assert!(out.status.success(), "{args:?}: {value}");
        assert_eq!(value["ok"], true);
        assert!(value["message"].is_string(), "{value}");
    }
    let (list, _) = json(&daemon, &["list"]);
    let session = &list["sessions"][0];
    assert_eq!(session["name"], "s");
    assert_eq!(session["output"], output);
    assert_eq!(session["active"], true);
    let channel = &session["channels"][0];
    assert_eq!(channel["name"], "c");
    assert_eq!(channel["buffers"], "pid");
    assert_eq!(channel["mode"], "overwrite");
    assert_eq!(channel["enabled"], true);
    assert_eq!(channel["writer"], "ctf");
    assert!(channel["subbuf_size"].is_u64() && channel["num_subbuf"].is_u64());
    assert_eq!(channel["events"], serde_json::json!([]));
    assert!(
        channel["contexts"]
            .as_array()
            .unwrap()
            .contains(&serde_json::json!("procname")),
        "{channel}"
    );

    let (status, _) = json(&daemon, &["status"]);
    for key in [
        "apps",
        "apps_total",
        "buffer_sets",
        "writers",
        "events_discarded",
    ] {
        assert!(status["status"][key].is_u64(), "{key}: {status}");
    }
    assert!(status["status"]["refusals"].is_array());

    let (refused, out) = json(&daemon, &["disable-channel", "nope"]);
    assert!(!out.status.success());
    assert_eq!(refused["ok"], false);
    assert!(
        refused["error"].as_str().unwrap().contains("nope"),
        "{refused}"
    );
}

#[test]
fn human_output_uses_words_not_debug_names() {
    let daemon = Daemon::start();
    daemon.session(
        "s",
        &[("u", ustrace::protocol::messages::Buffering::PerUid)],
        false,
    );
    let out = daemon.cli(&["list"]);
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(text.contains("per-UID buffers"), "{text}");
    assert!(text.contains(", discard,"), "{text}");
    assert!(
        !text.contains("PerUid") && !text.contains("Discard"),
        "{text}"
    );
    let out = daemon.cli(&["disable-channel", "u"]);
    assert!(out.status.success(), "{out:?}");
    let text = String::from_utf8(daemon.cli(&["list"]).stdout).unwrap();
    assert!(text.contains("channel u [disabled]"), "{text}");
}

/// A pipe whose reader is already gone: every write to it fails with EPIPE.
fn closed_pipe() -> Stdio {
    let (reader, writer): (OwnedFd, OwnedFd) = nix::unistd::pipe().unwrap();
    drop(reader);
    Stdio::from(writer)
}

#[test]
fn writing_into_a_closed_pipe_ends_quietly() {
    let daemon = Daemon::start();
    let output = daemon.session(
        "s",
        &[("c", ustrace::protocol::messages::Buffering::PerUid)],
        true,
    );
    daemon.run_app(&["--events", "2000"]);
    daemon.stop("s");
    let dir = output.to_str().unwrap();
    for args in [
        &["status"][..],
        &["--json", "status"],
        &["list"],
        &["view", dir],
        &["view", "--json", dir],
    ] {
        let out = Command::new(env!("CARGO_BIN_EXE_ustrace"))
            .args(args)
            .env("USTRACE_RUNDIR", &daemon.rundir)
            .stdout(closed_pipe())
            .stderr(Stdio::piped())
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(0), "{args:?}: {out:?}");
        assert!(out.stderr.is_empty(), "{args:?}: {out:?}");
    }
}

fn sessions(daemon: &Daemon) -> Vec<SessionInfo> {
    match daemon.ok(ControlRequest::List { session: None }) {
        ControlOk::Sessions(s) => s,
        other => panic!("{other:?}"),
    }
}

#[test]
fn a_saved_session_is_loaded_back_unchanged_by_a_new_daemon() {
    let kept = common::Scratch::new("saved");
    let first = Daemon::start();
    let output = kept.path("out");
    let output = output.to_str().unwrap();
    let snapshots = kept.path("snapshots");
    let snapshots = snapshots.to_str().unwrap().to_owned();
    for args in [
        &["create", "kept", "-o", output][..],
        &[
            "enable-channel",
            "u",
            "--buffers-uid",
            "--subbuf-size",
            "8K",
            "--tracefile-size",
            "64K",
            "--tracefile-count",
            "3",
        ],
        &["enable-event", "demo:*", "-c", "u"],
        &["enable-event", "other:ev", "-c", "u"],
        &[
            "enable-event",
            "net:*",
            "-c",
            "u",
            "--exclude",
            "net:poll*,net:idle",
            "--loglevel",
            "WARNING",
        ],
        &[
            "enable-event",
            "db:*",
            "-c",
            "u",
            "--loglevel-only",
            "DEBUG_LINE",
        ],
        &[
            "enable-channel",
            "p",
            "--buffers-pid",
            "--overwrite",
            "--num-subbuf",
            "8",
        ],
        &["enable-event", "demo:ev", "-c", "p"],
        &[
            "enable-event",
            "net:recv",
            "-c",
            "p",
            "--filter",
            "bytes > 1000 && peer == \"10.*\"",
        ],
        &["start"],
        &["disable-channel", "p"],
        // A snapshot session, its channel in overwrite mode by being in it.
        &["create", "flight", "--snapshot", "-o", &snapshots],
        &[
            "enable-channel",
            "f",
            "--buffers-pid",
            "--subbuf-size",
            "16K",
        ],
        &["enable-event", "demo:*", "-c", "f"],
    ] {
        let out = first.cli(args);
        assert!(out.status.success(), "{args:?}: {out:?}");
    }
    let mut saved = String::new();
    for session in ["kept", "flight"] {
        let file = kept.path(&format!("{session}.toml"));
        let out = first.cli(&["save", session, file.to_str().unwrap()]);
        assert!(out.status.success(), "{out:?}");
        let (stdout, _) = json(&first, &["save", session]);
        let text = std::fs::read_to_string(&file).unwrap();
        assert_eq!(stdout["toml"].as_str().unwrap(), text);
        saved.push_str(&text);
    }
    let before = sessions(&first);
    assert!(before[1].snapshot, "{before:?}");
    drop(first);

    // The files as written, after channel defaults that differ in every key: the
    // new daemon's defaults do not matter, every setting is in them (an unbounded
    // channel says so, `tracefile_size = 0`).
    let defaults = "[channel_defaults]\nsubbuf_size = \"256K\"\nnum_subbuf = 2\n\
        mode = \"overwrite\"\nbuffers = \"pid\"\ntracefile_size = \"1M\"\n\
        tracefile_count = 2\n\n";
    let second = Daemon::with_config(&format!("{defaults}{saved}"));
    wait_for("the saved sessions", Duration::from_secs(20), || {
        sessions(&second).len() == 2
    });
    assert_eq!(sessions(&second), before);
    let limited = &before[0].channels[0].0;
    assert_eq!(
        (limited.tracefile.size, limited.tracefile.count),
        (64 << 10, 3)
    );
    let rules = &before[0].channels[0].1;
    assert!(
        rules.contains(&"net:* exclude net:poll*,net:idle loglevel <= WARNING".to_string())
            && rules.contains(&"db:* loglevel == DEBUG_LINE".to_string()),
        "{rules:?}"
    );
    let rules = &before[0].channels[1].1;
    assert!(
        rules.contains(&"net:recv filter bytes > 1000 && peer == \"10.*\"".to_string()),
        "{rules:?}"
    );
}
