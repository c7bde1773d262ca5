//! One rule for ring geometry (`shm::check_subbuf_size`, `shm::check_num_subbuf`):
//! the CLI and a raw control request refuse the same out-of-range values as the
//! config file does (tests/config_file.rs), each saying what was wrong.

#![cfg(feature = "daemon")]

mod common;

use common::*;
use ustrace::protocol::messages::{ChannelRequest, ControlRequest};

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
        listed(&daemon).contains("channel c: per-UID buffers, 2 x 1073741824 bytes"),
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
        url: None,
        live_timer_us: None,
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
