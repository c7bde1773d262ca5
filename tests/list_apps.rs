//! `ustrace list --apps`: every connected app with what the daemon knows of it.

mod common;

use common::{Daemon, poke};
use ustrace::protocol::messages::{AppInfo, Buffering};

#[test]
fn list_apps_shows_each_connected_app_its_channels_and_events_in_text_and_json() {
    let daemon = Daemon::start();
    let empty = daemon.cli(&["list", "--apps"]);
    assert!(empty.status.success(), "{empty:?}");
    assert_eq!(
        String::from_utf8_lossy(&empty.stdout).trim(),
        "no app connected"
    );
    daemon.session(
        "apps",
        &[("shared", Buffering::PerUid), ("own", Buffering::PerPid)],
        true,
    );
    let mut first = daemon.app_that_emitted(1);
    let mut second = daemon.app_that_emitted(1);
    let pids = [first.0.id() as i32, second.0.id() as i32];

    let json = daemon.cli(&["list", "--apps", "--json"]);
    assert!(json.status.success(), "{json:?}");
    let text = String::from_utf8(json.stdout).unwrap();
    let answer: serde_json::Value =
        serde_json::from_str(&text).unwrap_or_else(|e| panic!("{text}: {e}"));
    let apps: Vec<AppInfo> = serde_json::from_value(answer["apps"].clone()).unwrap();
    assert_eq!(apps.iter().map(|a| a.pid).collect::<Vec<_>>(), pids);
    let uid = nix::unistd::getuid().as_raw();
    for app in &apps {
        assert_eq!(app.uid, uid);
        assert_eq!(app.procname, "ustrace-demo");
        assert_eq!(app.events, ["demo:ev"]);
        let now_ms = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_millis() as u64;
        assert!(app.registered_unix_ms <= now_ms && app.registered_unix_ms + 60_000 > now_ms);
        let mut channels: Vec<(String, String, Buffering, Vec<String>)> = app
            .channels
            .iter()
            .map(|c| {
                (
                    c.session.clone(),
                    c.channel.clone(),
                    c.buffers,
                    c.enabled.clone(),
                )
            })
            .collect();
        channels.sort_by(|a, b| a.1.cmp(&b.1));
        assert_eq!(
            channels,
            [
                (
                    "apps".into(),
                    "own".into(),
                    Buffering::PerPid,
                    vec!["demo:ev".into()]
                ),
                (
                    "apps".into(),
                    "shared".into(),
                    Buffering::PerUid,
                    vec!["demo:ev".into()]
                ),
            ]
        );
    }

    let text = daemon.cli(&["list", "--apps"]);
    assert!(text.status.success(), "{text:?}");
    let text = String::from_utf8(text.stdout).unwrap();
    for pid in pids {
        assert!(
            text.contains(&format!("pid {pid} uid {uid} ustrace-demo registered ")),
            "{text}"
        );
    }
    assert!(
        text.contains("  apps/shared (per-UID buffers): demo:ev"),
        "{text}"
    );
    assert!(text.contains("  events: demo:ev"), "{text}");

    // A gone app leaves the list.
    poke(&mut first.0);
    assert!(first.0.wait().unwrap().success());
    assert!(common::poll_until(
        std::time::Duration::from_secs(20),
        || {
            let out = daemon.cli(&["list", "--apps", "--json"]);
            let answer: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
            answer["apps"].as_array().map(Vec::len) == Some(1)
        }
    ));
    poke(&mut second.0);
    assert!(second.0.wait().unwrap().success());
    let refused = daemon.cli(&["list", "some-session", "--apps"]);
    assert!(!refused.status.success(), "a session and --apps conflict");
}
