//! Whole-system checks on real daemon traces: lost-data accounting, flight-recorder
//! mode, concurrent registration, the `[limits]`, and session life cycles.

mod common;

use common::{Daemon, Running, babeltrace2, babeltrace2_raw, poke, sub_traces, wait_for};
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::time::Duration;
use ustrace::ctf::packet::PacketHeader;
use ustrace::protocol::messages::{Buffering, ChannelRequest, ControlRequest};
use ustrace::shm::Mode;

const WAIT: Duration = Duration::from_secs(30);

/// A channel of the smallest geometry: 2 sub-buffers of 4 KiB.
fn tiny(name: &str, buffers: Buffering, mode: Mode) -> ChannelRequest {
    ChannelRequest {
        name: name.into(),
        buffers: Some(buffers),
        subbuf_size: Some(4096),
        num_subbuf: Some(2),
        mode: Some(mode),
        ..ChannelRequest::default()
    }
}

/// Values of `i` of the `demo:ev` lines of `babeltrace2` output.
fn indexes(lines: &[String]) -> Vec<i64> {
    lines
        .iter()
        .filter_map(|l| l.split_once("{ i = "))
        .map(|(_, rest)| rest.split_once(',').expect("i then s").0.parse().unwrap())
        .collect()
}

fn demo_events(dir: &Path) -> usize {
    babeltrace2(dir)
        .iter()
        .filter(|l| l.contains("demo:ev"))
        .count()
}

/// Sub-traces of `output` whose relative path starts with `prefix`.
fn traces_under(output: &Path, prefix: &str) -> Vec<String> {
    sub_traces(output)
        .into_iter()
        .filter(|t| t.starts_with(prefix))
        .collect()
}

/// The number after `label` in `ustrace status` output.
fn status_figure(status: &str, label: &str) -> u64 {
    let line = status
        .lines()
        .find(|l| l.starts_with(label))
        .unwrap_or_else(|| panic!("no {label:?} in {status}"));
    line[label.len()..].trim().parse().expect("a count")
}

#[test]
fn discarded_events_are_counted_and_recorded_plus_discarded_is_emitted() {
    let daemon = Daemon::start();
    let output = daemon.session_with(
        "s",
        "out",
        &[
            tiny("p", Buffering::PerPid, Mode::Discard),
            tiny("u", Buffering::PerUid, Mode::Discard),
        ],
        true,
    );
    let emitted = 200_000;
    daemon.run_app(&["--events", &emitted.to_string()]);
    daemon.stop("s");

    let status = daemon.cli(&["status"]);
    assert!(status.status.success(), "{status:?}");
    let status = String::from_utf8(status.stdout).unwrap();
    let counted = status_figure(&status, "events discarded:");
    assert!(counted > 0, "{status}");

    let traces = sub_traces(&output);
    assert_eq!(traces.len(), 2, "{traces:?}");
    let mut discarded_total = 0;
    for trace in &traces {
        let bt = babeltrace2_raw(&[], &output.join(trace));
        assert!(bt.status.success(), "{bt:?}");
        let recorded = String::from_utf8_lossy(&bt.stdout)
            .lines()
            .filter(|l| l.contains("demo:ev"))
            .count() as u64;
        let discarded: u64 = String::from_utf8_lossy(&bt.stderr)
            .lines()
            .filter_map(|l| l.split_once("Tracer discarded "))
            .map(|(_, rest)| rest.split_once(' ').unwrap().0.parse::<u64>().unwrap())
            .sum();
        assert!(
            discarded > 0,
            "{trace}: babeltrace2 reports no discarded event"
        );
        assert_eq!(recorded + discarded, emitted, "{trace}");
        discarded_total += discarded;
    }
    assert_eq!(counted, discarded_total, "{status}");

    // `ustrace view` says the same.
    let view = std::process::Command::new(env!("CARGO_BIN_EXE_ustrace"))
        .args(["view", "--json"])
        .arg(&output)
        .output()
        .unwrap();
    assert!(view.status.success(), "{view:?}");
    let (mut recorded, mut discarded) = (0, 0);
    for line in String::from_utf8(view.stdout).unwrap().lines() {
        let j: serde_json::Value = serde_json::from_str(line).unwrap();
        match j["discarded"].as_u64() {
            Some(n) => discarded += n,
            None => recorded += 1,
        }
    }
    assert_eq!((recorded + discarded, discarded), (2 * emitted, counted));
}

/// Per stream file: (events discarded, packets lost).
type Losses = std::collections::BTreeMap<String, (u64, u64)>;

/// What babeltrace2's warnings say was lost, from its stderr.
fn babeltrace2_losses(stderr: &str) -> Losses {
    let mut losses = Losses::new();
    for line in stderr.lines() {
        let Some((_, rest)) = line.split_once("Tracer discarded ") else {
            continue;
        };
        let (count, rest) = rest.split_once(' ').unwrap();
        let count: u64 = count.parse().unwrap();
        let stream = rest
            .split_once("within stream \"")
            .unwrap()
            .1
            .split_once('"')
            .unwrap()
            .0;
        let entry = losses.entry(stream.to_string()).or_default();
        if rest.starts_with("packet") {
            entry.1 += count;
        } else {
            assert!(rest.starts_with("event"), "{line}");
            entry.0 += count;
        }
    }
    losses
}

/// What `ustrace view --json` says was lost.
fn view_losses(output: &Path) -> Losses {
    let view = std::process::Command::new(env!("CARGO_BIN_EXE_ustrace"))
        .args(["view", "--json"])
        .arg(output)
        .output()
        .unwrap();
    assert!(view.status.success(), "{view:?}");
    let mut losses = Losses::new();
    for line in String::from_utf8(view.stdout).unwrap().lines() {
        let j: serde_json::Value = serde_json::from_str(line).unwrap();
        let Some(stream) = j["stream"].as_str() else {
            continue;
        };
        let entry = losses.entry(stream.to_string()).or_default();
        entry.0 += j["discarded"].as_u64().unwrap_or(0);
        entry.1 += j["lost_packets"].as_u64().unwrap_or(0);
    }
    losses
}

/// Losses per stream file of `output` as its packet headers tell them: (the last
/// packet's cumulative events_discarded, packets missing from the seq_num sequence
/// since 0), and each stream's first seq_num.
fn header_losses(output: &Path) -> (Losses, Vec<(String, u64)>) {
    let mut losses = Losses::new();
    let mut first_seqs = Vec::new();
    for trace in sub_traces(output) {
        for entry in std::fs::read_dir(output.join(trace)).unwrap().flatten() {
            // Stream files only: not the metadata, not the index directory.
            if entry.file_name() == "metadata" || entry.path().is_dir() {
                continue;
            }
            let bytes = std::fs::read(entry.path()).unwrap();
            let (mut at, mut packets) = (0, 0);
            let mut seqs = Vec::new();
            let mut discarded = 0;
            while at < bytes.len() {
                let header = PacketHeader::read(&bytes[at..]).expect("an intact packet");
                seqs.push(header.open.seq_num);
                discarded = header.close.events_discarded;
                packets += 1;
                at += header.open.packet_size as usize;
            }
            let stream = entry.path().display().to_string();
            if let (Some(&first), Some(&last)) = (seqs.first(), seqs.last()) {
                losses.insert(stream.clone(), (discarded, last + 1 - packets));
                first_seqs.push((stream, first));
            }
        }
    }
    (losses, first_seqs)
}

const OVERWRITE_EMITTED: i64 = 50_000;

/// Records [`OVERWRITE_EMITTED`] events of one thread into a per-PID and a per-UID
/// flight-recorder channel of the smallest geometry; checks that each sub-trace
/// reads cleanly in babeltrace2 and `ustrace view`, and returns the event indexes
/// each holds.
fn overwrite_trace() -> Vec<(String, Vec<i64>)> {
    let daemon = Daemon::start();
    let output = daemon.session_with(
        "s",
        "out",
        &[
            tiny("p", Buffering::PerPid, Mode::Overwrite),
            tiny("u", Buffering::PerUid, Mode::Overwrite),
        ],
        true,
    );
    daemon.run_app(&["--events", &OVERWRITE_EMITTED.to_string()]);
    daemon.stop("s");
    assert!(daemon.status().packets_overwritten > 0);
    let view = std::process::Command::new(env!("CARGO_BIN_EXE_ustrace"))
        .arg("view")
        .arg(&output)
        .output()
        .unwrap();
    assert!(view.status.success(), "{view:?}");
    let bt = babeltrace2_raw(&[], &output);
    assert!(bt.status.success(), "{bt:?}");
    // What the packet headers say: view reports every missing packet, babeltrace2
    // only the gaps after a stream's first packet.
    let (mut expected, first_seqs) = header_losses(&output);
    expected.retain(|_, lost| *lost != (0, 0));
    assert_eq!(view_losses(&output), expected, "view");
    for (stream, first_seq) in first_seqs {
        if let Some(lost) = expected.get_mut(&stream) {
            lost.1 -= first_seq;
        }
    }
    expected.retain(|_, lost| *lost != (0, 0));
    assert_eq!(
        babeltrace2_losses(&String::from_utf8_lossy(&bt.stderr)),
        expected,
        "babeltrace2"
    );

    let traces = sub_traces(&output);
    assert_eq!(traces.len(), 2, "{traces:?}");
    traces
        .into_iter()
        .map(|trace| {
            let bt = babeltrace2_raw(&[], &output.join(&trace));
            assert!(bt.status.success(), "{trace}: {bt:?}");
            let stderr = String::from_utf8_lossy(&bt.stderr);
            assert!(!stderr.contains("ERROR"), "{trace}: {stderr}");
            let lines: Vec<String> = String::from_utf8(bt.stdout)
                .unwrap()
                .lines()
                .map(str::to_string)
                .collect();
            (trace, indexes(&lines))
        })
        .collect()
}

#[test]
fn overwrite_mode_reads_cleanly_no_event_twice_and_losses_match_the_headers() {
    for (trace, kept) in overwrite_trace() {
        assert!(
            !kept.is_empty() && kept.len() < OVERWRITE_EMITTED as usize,
            "{trace}: {} events",
            kept.len()
        );
        // An overwritten sub-buffer is never also read.
        let mut unique = kept.clone();
        unique.sort_unstable();
        unique.dedup();
        assert_eq!(unique.len(), kept.len(), "{trace}: duplicated events");
    }
}

/// The flight recorder keeps the newest event: the daemon drains while the app laps
/// the ring, and its copies never make a producer drop (docs/shm.md, Consumer).
#[test]
fn overwrite_mode_keeps_the_newest_event() {
    for (trace, kept) in overwrite_trace() {
        assert!(
            kept.contains(&(OVERWRITE_EMITTED - 1)),
            "{trace}: newest event lost; last kept {:?}",
            kept.iter().max()
        );
    }
}

#[test]
fn sixteen_apps_of_one_uid_registering_at_once_share_one_per_uid_trace() {
    let daemon = Daemon::start();
    let output = daemon.session("s", &[("u", Buffering::PerUid)], true);
    let apps: Vec<Running> = (0..16)
        .map(|_| {
            Running(
                daemon
                    .app(&["--events", "50"])
                    .uid(4300)
                    .gid(4300)
                    .spawn()
                    .unwrap(),
            )
        })
        .collect();
    for mut app in apps {
        assert!(app.0.wait().unwrap().success());
    }
    let status = daemon.status();
    assert_eq!(
        (status.apps_total, status.buffer_sets),
        (16, 1),
        "{status:?}"
    );
    daemon.stop("s");
    assert_eq!(sub_traces(&output), ["ust/uid/4300/64-bit"]);
    let mut kept = indexes(&babeltrace2(&output));
    kept.sort_unstable();
    let expected: Vec<i64> = (0..50).flat_map(|i| [i; 16]).collect();
    assert_eq!(kept, expected);
}

#[test]
fn past_max_apps_an_app_is_refused_once_runs_untraced_and_later_apps_are_traced() {
    let daemon = Daemon::with_config("[limits]\nmax_apps = 2\n");
    let output = daemon.session("s", &[("p", Buffering::PerPid)], true);
    let mut waiting: Vec<Running> = (0..2).map(|_| daemon.app_that_emitted(3)).collect();
    assert_eq!(daemon.status().apps, 2);

    // Several times: the refusal races with the app sending its registration.
    for _ in 0..5 {
        let refused = daemon.run_app(&["--events", "100"]);
        let stderr = String::from_utf8_lossy(&refused.stderr);
        assert_eq!(stderr.lines().count(), 1, "{stderr}");
        assert_eq!(stderr.matches("runs untraced").count(), 1, "{stderr}");
        assert!(stderr.contains("at most 2 apps at once"), "{stderr}");
    }

    for app in &mut waiting {
        poke(&mut app.0);
        assert!(app.0.wait().unwrap().success());
    }
    wait_for("the first two apps to be gone", WAIT, || {
        daemon.status().apps == 0
    });
    let fourth = daemon.run_app(&["--events", "7"]);
    assert!(fourth.stderr.is_empty(), "{fourth:?}");
    daemon.stop("s");
    assert_eq!(traces_under(&output, "ust/pid/").len(), 3);
    assert_eq!(demo_events(&output), 3 + 3 + 7);
}

#[test]
fn past_max_pid_buffer_bytes_apps_lose_only_their_per_pid_channel() {
    // Room for exactly one app's per-PID rings: 128K x 4 per CPU.
    let per_app = 128 * 1024 * 4 * ustrace::shm::cpu_count() as u64;
    let daemon = Daemon::with_config(&format!("[limits]\nmax_pid_buffer_bytes = {per_app}\n"));
    let output = daemon.session_with(
        "s",
        "out",
        &[
            ChannelRequest {
                name: "p".into(),
                buffers: Some(Buffering::PerPid),
                subbuf_size: Some(128 * 1024),
                num_subbuf: Some(4),
                ..ChannelRequest::default()
            },
            ChannelRequest {
                name: "u".into(),
                buffers: Some(Buffering::PerUid),
                ..ChannelRequest::default()
            },
        ],
        true,
    );
    let mut holder = daemon.app_that_emitted(3);
    // Over the cap: traced in the per-UID channel only, and nothing breaks.
    for _ in 0..3 {
        daemon.run_app(&["--events", "5"]);
    }
    poke(&mut holder.0);
    assert!(holder.0.wait().unwrap().success());
    wait_for("the holder's per-PID rings to be freed", WAIT, || {
        let s = daemon.status();
        s.apps == 0 && s.buffer_sets == 1
    });
    // The memory is back: a later app gets its per-PID rings.
    daemon.run_app(&["--events", "7"]);
    daemon.stop("s");

    let count = |trace: &str| demo_events(&output.join(trace));
    let uid = traces_under(&output, "ust/uid/");
    assert_eq!(uid.len(), 1);
    assert_eq!(count(&uid[0]), 3 + 3 * 5 + 7);
    let mut per_pid: Vec<usize> = traces_under(&output, "ust/pid/")
        .iter()
        .map(|t| count(t))
        .collect();
    per_pid.sort_unstable();
    // Refused apps leave no per-PID sub-trace behind.
    assert_eq!(per_pid, [3, 7]);
    assert_eq!(demo_events(&output), 3 + 3 * 5 + 7 + 3 + 7);
    assert!(daemon.status().failed_writers.is_empty());
}

#[test]
fn a_restarted_session_keeps_recording_and_a_destroyed_name_can_be_reused() {
    let daemon = Daemon::start();
    let channels = [
        ChannelRequest {
            name: "p".into(),
            buffers: Some(Buffering::PerPid),
            ..ChannelRequest::default()
        },
        ChannelRequest {
            name: "u".into(),
            buffers: Some(Buffering::PerUid),
            ..ChannelRequest::default()
        },
    ];
    let first = daemon.session_with("s", "first", &channels, true);
    daemon.run_app(&["--events", "5"]);
    daemon.stop("s");
    assert_eq!(demo_events(&first), 2 * 5);
    daemon.ok(ControlRequest::Start {
        session: Some("s".into()),
    });
    daemon.run_app(&["--events", "7"]);
    daemon.stop("s");
    let lines = babeltrace2(&first);
    let mut kept = indexes(&lines);
    kept.sort_unstable();
    // Both periods, in both channels: 0..5 and 0..7, twice each.
    let mut expected: Vec<i64> = (0..5).chain(0..7).chain(0..5).chain(0..7).collect();
    expected.sort_unstable();
    assert_eq!(kept, expected);

    daemon.ok(ControlRequest::Destroy {
        session: Some("s".into()),
    });
    let second = daemon.session_with("s", "second", &channels, true);
    daemon.run_app(&["--events", "3"]);
    daemon.stop("s");
    assert_eq!(demo_events(&second), 2 * 3);
    // The first session's trace is untouched.
    assert_eq!(demo_events(&first), 2 * (5 + 7));
}

/// babeltrace 1 (the reader that older tools embed) reads what babeltrace2 reads,
/// per-UID and per-PID. It sizes a table by a stream's largest event id, so the
/// lost-event classes every stream declares must have small ids (u32::MAX made it
/// crash).
#[test]
fn babeltrace_1_reads_every_event_babeltrace2_reads() {
    let daemon = Daemon::start();
    let output = daemon.session(
        "s",
        &[("u", Buffering::PerUid), ("p", Buffering::PerPid)],
        true,
    );
    daemon.run_app(&["--events", "50"]);
    daemon.stop("s");
    let count = |lines: &[String]| lines.iter().filter(|l| l.contains("demo:ev")).count();
    let bt2 = count(&babeltrace2(&output));
    let out = std::process::Command::new("babeltrace")
        .arg(&output)
        .output()
        .expect("babeltrace (1) installed (scripts/test.sh installs it)");
    assert!(
        out.status.success(),
        "babeltrace failed ({}): {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout);
    let bt1 = count(&text.lines().map(str::to_string).collect::<Vec<_>>());
    assert_eq!((bt1, bt2), (100, 100));
}
