//! One rule for ring geometry (`shm::check_subbuf_size`, `shm::check_num_subbuf`):
//! the config file, the CLI and a raw control request all refuse the same
//! out-of-range values, each saying what was wrong.

#![cfg(feature = "daemon")]

mod common;

use common::*;
use std::path::{Path, PathBuf};
use ustrace::config::{Config, ConfigError};
use ustrace::protocol::messages::{ChannelRequest, ControlRequest};

/// The (line, column, message) of the refusal of `text`, which must name `key`.
fn refused(text: &str, key: &str) -> (Option<(usize, usize)>, String) {
    let file = Path::new("/etc/ustrace/limits.toml");
    match Config::parse(text, file).expect_err("configuration must be refused") {
        ConfigError::Invalid {
            location,
            key: got,
            message,
        } => {
            assert_eq!(got, key);
            assert_eq!(location.file, PathBuf::from(file));
            (location.line_col, message)
        }
        other => panic!("expected an invalid key error, got {other:?}"),
    }
}

#[test]
fn config_file_refuses_a_2g_sub_buffer_at_its_line_and_column() {
    let (position, message) = refused(
        "[channel_defaults]\nsubbuf_size = \"2G\"\n",
        "channel_defaults.subbuf_size",
    );
    assert_eq!(position, Some((2, 15)));
    assert!(message.contains("1 GiB"), "{message}");
    let text =
        "[[session]]\nname = \"s\"\n  [[session.channel]]\n  name = \"c\"\n  num_subbuf = 131072\n";
    let (position, message) = refused(text, "session[0].channel[0].num_subbuf");
    assert_eq!(position, Some((5, 16)));
    assert!(message.contains("65536"), "{message}");
    // The largest values the rule allows load.
    Config::parse(
        "[channel_defaults]\nsubbuf_size = \"1G\"\nnum_subbuf = 65536\n",
        Path::new("/etc/ustrace/limits.toml"),
    )
    .expect("1G x 65536 is within the limits");
}

#[test]
fn cli_refuses_out_of_range_geometry_before_asking_the_daemon() {
    let daemon = Daemon::start();
    let ok = daemon.cli(&["create", "s"]);
    assert!(ok.status.success(), "{ok:?}");
    for (flag, value, says) in [
        ("--subbuf-size", "2G", "1 GiB"),
        ("--subbuf-size", "2K", "4 KiB"),
        ("--num-subbuf", "131072", "65536"),
        ("--num-subbuf", "1", "65536"),
    ] {
        let out = daemon.cli(&["enable-channel", "c", flag, value]);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{flag} {value} was accepted");
        assert!(
            stderr.contains(flag) && stderr.contains(says),
            "{flag} {value}: {stderr}"
        );
    }
    let listed =
        |daemon: &Daemon| String::from_utf8_lossy(&daemon.cli(&["list", "s"]).stdout).into_owned();
    assert!(
        !listed(&daemon).contains("channel c:"),
        "{}",
        listed(&daemon)
    );
    let ok = daemon.cli(&[
        "enable-channel",
        "c",
        "--subbuf-size",
        "1G",
        "--num-subbuf",
        "2",
    ]);
    assert!(ok.status.success(), "{ok:?}");
    assert!(
        listed(&daemon).contains("channel c: PerUid buffers, 2 x 1073741824 bytes"),
        "{}",
        listed(&daemon)
    );
}

#[test]
fn control_request_with_out_of_range_geometry_is_refused_and_the_daemon_serves_on() {
    let daemon = Daemon::start();
    daemon.ok(ControlRequest::Create {
        name: "s".into(),
        output: None,
    });
    for (subbuf_size, num_subbuf, says) in [
        (Some(1 << 31), None, "1 GiB"),
        (Some(12288), None, "power of two"),
        (None, Some(1 << 17), "65536"),
    ] {
        let reply = daemon.ask(ControlRequest::EnableChannel {
            session: Some("s".into()),
            channel: ChannelRequest {
                name: "c".into(),
                subbuf_size,
                num_subbuf,
                ..ChannelRequest::default()
            },
        });
        let err = reply.expect_err("out-of-range geometry must be refused");
        assert!(err.contains("channel c") && err.contains(says), "{err}");
    }
    daemon.status();
}
