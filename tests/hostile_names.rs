//! Names and trees from untrusted users (issue #15, items 2, 3 and 6): hand-written
//! protocol clients with hostile names, a user of uid 4242 who pre-plants the output
//! tree, real daemon, real rings, real babeltrace2.

mod common;

use common::{Daemon, Scratch, babeltrace2, sub_traces, wait_for};
use std::collections::HashMap;
use std::os::fd::OwnedFd;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::UnixStream;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;
use ustrace::ctf::field::{EventDesc, FieldDesc, FieldType, LogLevel};
use ustrace::protocol::messages::{
    AppCommand, AppRegister, Buffering, ChannelRequest, ControlRequest,
};
use ustrace::protocol::{APPS_SOCKET, frame};
use ustrace::shm::ChannelBuffers;

const WAIT: Duration = Duration::from_secs(30);

/// The unprivileged user the hostile side runs as.
const MALLORY: u32 = 4242;

fn demo_events(lines: &[String]) -> usize {
    lines.iter().filter(|l| l.contains("demo:")).count()
}

fn event(name: &str, fields: Vec<FieldDesc>) -> EventDesc {
    EventDesc {
        model_emf_uri: None,
        provider: "demo".into(),
        name: name.into(),
        loglevel: LogLevel::Info,
        fields,
    }
}

/// A hand-written app connection after its registration.
struct RawApp {
    /// The connection: dropping it is the app's exit.
    _sock: UnixStream,
    /// The rings of each channel key.
    channels: HashMap<u64, ChannelBuffers>,
    /// `(channel key, event id)` of each enabled event.
    enabled: Vec<(u64, u32)>,
}

impl RawApp {
    /// Records `count` events (no payload) of every enabled event, by hand.
    fn record(&self, count: usize) {
        for &(key, id) in &self.enabled {
            for _ in 0..count {
                assert!(self.channels[&key].current().write_event(id, 0, |_| {}));
            }
        }
    }
}

/// Registers as `name` with `events` over the real protocol; `Err` is the reason
/// of a refusal.
fn register(daemon: &Daemon, name: &str, events: Vec<EventDesc>) -> Result<RawApp, String> {
    let sock = UnixStream::connect(daemon.rundir.join(APPS_SOCKET)).unwrap();
    sock.set_read_timeout(Some(WAIT)).unwrap();
    frame::send_hello(&sock).unwrap();
    let register = AppRegister {
        name: name.into(),
        bitness: 64,
        events,
    };
    frame::send(&sock, &register, &[]).unwrap();
    let mut app = RawApp {
        channels: HashMap::new(),
        enabled: Vec::new(),
        _sock: sock,
    };
    loop {
        let (command, mut fds) = frame::recv::<AppCommand>(&app._sock, frame::MAX_FRAME)
            .unwrap()
            .expect("an answer before the daemon closes");
        match command {
            AppCommand::Refused { reason } => return Err(reason),
            AppCommand::RegistrationDone => return Ok(app),
            AppCommand::Channel { key, .. } => {
                let rings: Vec<OwnedFd> = fds.split_off(1);
                let wakeup = fds.pop().unwrap();
                let buffers = ChannelBuffers::from_fds(rings, wakeup, 0).unwrap();
                app.channels.insert(key, buffers);
            }
            AppCommand::Enable { key, events, .. } => {
                app.enabled
                    .extend(events.into_iter().map(|(_, id)| (key, id)));
            }
            AppCommand::Disable { .. }
            | AppCommand::DisableEvents { .. }
            | AppCommand::EventsRegistered { .. }
            | AppCommand::EventsRefused { .. } => {}
        }
    }
}

/// Every path under `dir`, relative to it, sorted.
fn tree(dir: &Path) -> Vec<String> {
    fn walk(root: &Path, dir: &Path, found: &mut Vec<String>) {
        for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
            let path = entry.path();
            found.push(path.strip_prefix(root).unwrap().display().to_string());
            if entry.file_type().unwrap().is_dir() {
                walk(root, &path, found);
            }
        }
    }
    let mut found = Vec::new();
    walk(dir, dir, &mut found);
    found.sort();
    found
}

/// Names in the system temp dir that `../../../../x` from an output would make.
fn temp_names() -> Vec<String> {
    let prefix = format!("x-{}-", std::process::id());
    let mut names: Vec<String> = std::fs::read_dir(std::env::temp_dir())
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with(&prefix))
        .collect();
    names.sort();
    names
}

#[test]
fn hostile_procnames_each_make_one_safe_directory_inside_the_output() {
    let daemon = Daemon::start();
    let output = daemon.session("s", &[("p", Buffering::PerPid)], true);
    let before = temp_names();
    let long = "n".repeat(300);
    let names = [
        "../../../../x",
        "/abs/x",
        "a/b",
        "a\0b",
        "..",
        ".",
        "",
        r#"q"uo\te"#,
        &long,
    ];
    for name in names {
        let app = register(&daemon, name, vec![event("raw", Vec::new())])
            .unwrap_or_else(|e| panic!("{name:?} refused: {e}"));
        app.record(3);
        drop(app);
        // The daemon knows apps by pid and these share the test's: one at a time.
        wait_for("the app's teardown", WAIT, || {
            let s = daemon.status();
            s.apps == 0 && s.buffer_sets == 0
        });
    }
    daemon.stop("s");
    let traces = sub_traces(&output);
    assert_eq!(traces.len(), names.len(), "{traces:#?}");
    let pid = std::process::id();
    for trace in &traces {
        let dir = trace.strip_prefix("ust/pid/").expect("under ust/pid");
        assert!(!dir.contains('/'), "one component: {trace}");
        // The daemon's connection id ends the name: a reused pid never meets it.
        let (dir, connection) = dir.rsplit_once('-').expect("-<connection>");
        assert!(connection.parse::<u64>().is_ok(), "{trace}");
        let name = dir
            .strip_suffix(&format!("-{pid}-{}", &dir[dir.len() - 15..]))
            .unwrap_or_else(|| panic!("<name>-<pid>-<date>: {dir}"));
        assert!(!name.is_empty() && name.len() <= 15, "{dir}");
        assert!(!name.starts_with('.'), "{dir}");
        assert!(!name.chars().any(char::is_control), "{dir:?}");
        // The metadata's procname is that same safe name.
        let metadata = std::fs::read_to_string(output.join(trace).join("metadata")).unwrap();
        assert!(
            metadata.contains(&format!(
                "\tprocname = \"{}\";\n",
                name.replace('\\', r"\\").replace('"', r#"\""#)
            )),
            "{name:?} in {metadata}"
        );
    }
    assert!(!Path::new("/abs").exists(), "nothing made at /abs");
    assert_eq!(temp_names(), before, "nothing made beside the scratch dir");
    assert_eq!(
        tree(&daemon.scratch.0)
            .iter()
            .filter(|p| !p.starts_with("out-s") && !p.starts_with("run"))
            .collect::<Vec<_>>(),
        ["ustraced.toml"],
        "nothing made beside the output"
    );
    let lines = babeltrace2(&output);
    assert_eq!(demo_events(&lines), 3 * names.len(), "{lines:#?}");
}

#[test]
fn session_and_channel_names_are_one_safe_component() {
    let daemon = Daemon::start();
    for bad in ["../x", "/abs", "a/b", "..", ".", "", "a\0b"] {
        let create = daemon.ask(ControlRequest::Create {
            name: bad.into(),
            output: None,
            url: None,
            live_timer_us: None,
        });
        let error = create.expect_err(bad);
        assert!(
            error.contains("session") && error.contains("invalid name"),
            "{error}"
        );
    }
    daemon.session("s", &[], false);
    for bad in ["../x", "a/b", "..", "a\0b"] {
        let enable = daemon.ask(ControlRequest::EnableChannel {
            session: Some("s".into()),
            channel: ChannelRequest {
                name: bad.into(),
                ..Default::default()
            },
        });
        let error = enable.expect_err(bad);
        assert!(
            error.contains("channel") && error.contains("invalid name"),
            "{error}"
        );
    }
}

/// Runs `script` with `sh -c` as [`MALLORY`]; panics if it fails.
fn as_mallory(script: &str) {
    let out = Command::new("sh")
        .arg("-c")
        .arg(script)
        .uid(MALLORY)
        .gid(MALLORY)
        .output()
        .unwrap();
    assert!(out.status.success(), "{script}: {out:?}");
}

/// A file only root may read, with known contents.
fn root_only_file(scratch: &Scratch, name: &str) -> PathBuf {
    let path = scratch.path(name);
    std::fs::write(&path, "root only").unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
    path
}

#[test]
fn a_tree_pre_planted_by_another_user_is_refused_and_root_events_stay_private() {
    let daemon = Daemon::with_config("[supervision]\nmax_restarts = 1\nbackoff_ms = 10\n");
    let output = daemon.scratch.path("shared-out");
    std::fs::create_dir(&output).unwrap();
    std::os::unix::fs::chown(&output, Some(MALLORY), Some(MALLORY)).unwrap();
    let victim = root_only_file(&daemon.scratch, "victim");
    let victim_meta = root_only_file(&daemon.scratch, "victim-meta");
    // Mallory plants uid 0's trace directory with stream files of hers (which root
    // would append its events to) and links at the metadata names (which root would
    // write through).
    let planted = output.join("ust/uid/0/64-bit");
    let mut script = format!(
        "mkdir -p {p} && chmod -R 777 {o}/ust && ln -s {v} {p}/metadata",
        p = planted.display(),
        o = output.display(),
        v = victim_meta.display()
    );
    for cpu in 0..ustrace::shm::cpu_count() {
        script += &format!(
            " && touch {p}/c_{cpu} && chmod 666 {p}/c_{cpu} && ln -s {v} {p}/.metadata.c_{cpu}",
            p = planted.display(),
            v = victim.display()
        );
    }
    as_mallory(&script);
    let planted_before = tree(&output);

    let channel = ChannelRequest {
        name: "c".into(),
        buffers: Some(Buffering::PerUid),
        ..Default::default()
    };
    daemon.session_with("s", "shared-out", &[channel], true);
    daemon.run_app(&["--events", "200"]);
    let stop = daemon.ask(ControlRequest::Stop {
        session: Some("s".into()),
    });
    let error = stop.expect_err("a refused trace directory is reported by stop");
    assert!(
        error.contains("belongs to uid 4242") && error.contains("refusing"),
        "{error}"
    );
    let failed = daemon.status().failed_writers;
    assert!(
        failed
            .iter()
            .any(|f| f.error.contains("belongs to uid 4242")),
        "{failed:?}"
    );
    // Nothing of root's reached Mallory's files, nothing was written through her
    // links, nothing was added to her tree.
    for cpu in 0..ustrace::shm::cpu_count() {
        assert_eq!(
            std::fs::metadata(planted.join(format!("c_{cpu}")))
                .unwrap()
                .len(),
            0
        );
    }
    assert_eq!(std::fs::read_to_string(&victim).unwrap(), "root only");
    assert_eq!(std::fs::read_to_string(&victim_meta).unwrap(), "root only");
    assert_eq!(tree(&output), planted_before);
}

#[test]
fn a_link_planted_in_place_of_the_trace_tree_is_never_followed() {
    let daemon = Daemon::with_config("[supervision]\nmax_restarts = 1\nbackoff_ms = 10\n");
    let output = daemon.scratch.path("shared-out");
    std::fs::create_dir(&output).unwrap();
    std::os::unix::fs::chown(&output, Some(MALLORY), Some(MALLORY)).unwrap();
    let elsewhere = daemon.scratch.path("elsewhere");
    std::fs::create_dir(&elsewhere).unwrap();
    std::os::unix::fs::chown(&elsewhere, Some(MALLORY), Some(MALLORY)).unwrap();
    as_mallory(&format!(
        "ln -s {} {}/ust",
        elsewhere.display(),
        output.display()
    ));
    let channels = [Buffering::PerUid, Buffering::PerPid].map(|buffers| ChannelRequest {
        name: format!("{buffers:?}"),
        buffers: Some(buffers),
        ..Default::default()
    });
    daemon.session_with("s", "shared-out", &channels, true);
    daemon.run_app(&["--events", "20"]);
    let error = daemon
        .ask(ControlRequest::Stop {
            session: Some("s".into()),
        })
        .expect_err("a link is reported by stop");
    assert!(error.contains("symbolic link"), "{error}");
    assert!(tree(&elsewhere).is_empty(), "{:?}", tree(&elsewhere));
}

#[test]
fn events_with_names_tsdl_cannot_declare_are_refused_and_others_still_recorded() {
    let daemon = Daemon::start();
    let output = daemon.session("s", &[("u", Buffering::PerUid)], true);
    let field = |name: &str| FieldDesc {
        name: name.into(),
        ty: FieldType::Bool,
    };
    let long = "e".repeat(10_000);
    let label = FieldDesc {
        name: "color".into(),
        ty: FieldType::Enum {
            bits: 8,
            signed: false,
            labels: vec![("RED\0\"".into(), 1)],
        },
    };
    let with_uri = |uri: String| EventDesc {
        model_emf_uri: Some(uri),
        ..event("located", Vec::new())
    };
    let hostile = [
        (event("a\0b", Vec::new()), r#""a\0b""#),
        (with_uri("line=1\n\0".into()), "model.emf.uri"),
        (with_uri("u".repeat(5000)), "5000 bytes"),
        (event("ev", vec![field("a b")]), r#""a b""#),
        (event(&long, Vec::new()), "10000 bytes"),
        (event("ev", vec![label]), r#""RED\0\"""#),
    ];
    // Each refused with a reason naming the bad name, while an honest event of the
    // same registration is not enough to get it in.
    for (bad, shown) in hostile {
        let events = vec![event("fine", Vec::new()), bad];
        let reason = match register(&daemon, "hostile", events) {
            Ok(_) => panic!("registered despite {shown}"),
            Err(reason) => reason,
        };
        assert!(
            reason.contains("event 1") && reason.contains(shown),
            "{reason}"
        );
        assert!(reason.len() < 400, "a bounded reason: {reason}");
    }
    // A hostile app that the daemon would have let in, still connected.
    let _still_connected = register(&daemon, "hostile", vec![event("a\0b", Vec::new())]);
    let out = daemon.run_app(&["--events", "50"]);
    assert!(
        out.stderr.is_empty(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    daemon.stop("s");
    assert_eq!(sub_traces(&output), ["ust/uid/0/64-bit"]);
    let lines = babeltrace2(&output);
    assert_eq!(demo_events(&lines), 50, "{lines:#?}");
}

#[test]
fn an_output_swapped_for_a_link_by_its_owner_redirects_nothing() {
    let daemon = Daemon::start();
    let home = daemon.scratch.path("mallory");
    std::fs::create_dir(&home).unwrap();
    std::os::unix::fs::chown(&home, Some(MALLORY), Some(MALLORY)).unwrap();
    as_mallory(&format!("mkdir {}/out", home.display()));
    let root_dir = daemon.scratch.path("root-dir");
    std::fs::create_dir(&root_dir).unwrap();
    let channel = ChannelRequest {
        name: "p".into(),
        buffers: Some(Buffering::PerPid),
        ..Default::default()
    };
    daemon.session_with("s", "mallory/out", &[channel], true);
    daemon.run_app(&["--events", "10"]);
    as_mallory(&format!(
        "mv {h}/out {h}/old && ln -s {r} {h}/out",
        h = home.display(),
        r = root_dir.display()
    ));
    daemon.run_app(&["--events", "10"]);
    daemon.stop("s");
    assert!(tree(&root_dir).is_empty(), "{:?}", tree(&root_dir));
    let old = home.join("old");
    assert_eq!(sub_traces(&old).len(), 2, "{:?}", tree(&old));
    assert_eq!(demo_events(&babeltrace2(&old)), 20);
}
