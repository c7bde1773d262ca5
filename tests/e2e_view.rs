//! `ustrace view` on real daemon traces: it prints what babeltrace2 prints, merged by
//! time, and refuses damaged traces with the file and byte offset.

mod common;

use common::{Daemon, Running, babeltrace2_raw, sub_traces};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use ustrace::ctf::packet::PacketHeader;
use ustrace::protocol::messages::{Buffering, ChannelRequest};

/// One event as both tools can show it: (wall time text, pid of a per-PID trace,
/// cpu, i, s).
type Key = (String, Option<u32>, u32, i64, String);

fn view(args: &[&str], dir: &Path) -> Output {
    Command::new(env!("CARGO_BIN_EXE_ustrace"))
        .arg("view")
        .args(args)
        .arg(dir)
        .output()
        .unwrap()
}

/// `{ i = 12, s = "hello" }` -> (12, "hello").
fn fields(text: &str) -> (i64, String) {
    let text = text
        .trim()
        .strip_prefix("{ i = ")
        .unwrap_or_else(|| panic!("fields of {text:?}"));
    let (i, rest) = text.split_once(", s = \"").expect("an s field");
    let s = rest.strip_suffix("\" }").expect("the end of the fields");
    (i.parse().expect("i is an integer"), s.to_string())
}

/// `[2026-11-27 09:25:01.532431623] vm:ustrace-demo:(31334) demo:ev: { cpu_id = 1 },
/// { i = 0, s = "hello" }` (babeltrace2 --clock-gmt --clock-date --no-delta).
fn babeltrace2_key(line: &str) -> Key {
    let (time, rest) = line[1..].split_once("] ").expect("a time");
    let (origin, rest) = rest.split_once(" demo:ev: { cpu_id = ").expect("demo:ev");
    let (cpu, rest) = rest.split_once(" }, ").expect("a cpu_id");
    // A per-UID channel's events carry the vpid and vtid contexts.
    let rest = match rest.strip_prefix("{ vpid = ") {
        Some(context) => context.split_once(" }, ").expect("the context's end").1,
        None => rest,
    };
    let pid = origin
        .split_once(":(")
        .map(|(_, pid)| pid.trim_end_matches(')').parse().expect("a vpid"));
    let (i, s) = fields(rest);
    (time.to_string(), pid, cpu.parse().unwrap(), i, s)
}

/// `ustrace-demo/31334` -> Some(31334); `uid 0` -> None.
fn view_pid(origin: &str) -> Option<u32> {
    origin
        .strip_prefix("ustrace-demo/")
        .map(|pid| pid.parse().expect("a pid"))
}

#[test]
fn view_prints_every_event_babeltrace2_prints_merged_by_time_in_text_and_json() {
    let daemon = Daemon::start();
    let output = daemon.session(
        "s",
        &[("u", Buffering::PerUid), ("p", Buffering::PerPid)],
        true,
    );
    // Several apps at once, two threads each, two uids: events of many streams of
    // many sub-traces interleave in time.
    let apps: Vec<Running> = [(0u32, 300u64), (0, 301), (4244, 200)]
        .into_iter()
        .map(|(uid, events)| {
            let mut cmd = daemon.app(&["--events", &events.to_string(), "--threads", "2"]);
            if uid != 0 {
                cmd.uid(uid).gid(uid);
            }
            Running(cmd.spawn().unwrap())
        })
        .collect();
    for mut app in apps {
        assert!(app.0.wait().unwrap().success());
    }
    daemon.stop("s");
    let emitted = 2 * (300 + 301 + 200);

    let bt = babeltrace2_raw(&["--clock-gmt", "--clock-date", "--no-delta"], &output);
    assert!(bt.status.success(), "{bt:?}");
    assert!(
        bt.stderr.is_empty(),
        "{}",
        String::from_utf8_lossy(&bt.stderr)
    );
    let mut expected: Vec<Key> = String::from_utf8(bt.stdout)
        .unwrap()
        .lines()
        .map(babeltrace2_key)
        .collect();
    assert_eq!(expected.len(), emitted);

    let text = view(&[], &output);
    assert!(text.status.success(), "{text:?}");
    assert!(text.stderr.is_empty(), "{text:?}");
    let json = view(&["--json"], &output);
    assert!(json.status.success(), "{json:?}");
    let text = String::from_utf8(text.stdout).unwrap();
    let json = String::from_utf8(json.stdout).unwrap();
    let (text, json): (Vec<&str>, Vec<&str>) = (text.lines().collect(), json.lines().collect());
    assert_eq!(text.len(), emitted, "{:?}", &text[..5.min(text.len())]);
    assert_eq!(json.len(), emitted);

    let mut seen = Vec::new();
    let mut uids = std::collections::BTreeSet::new();
    let mut last_ns = i128::MIN;
    for (text_line, json_line) in text.iter().zip(&json) {
        let j: serde_json::Value = serde_json::from_str(json_line)
            .unwrap_or_else(|e| panic!("{json_line:?} is not JSON: {e}"));
        let ns = i128::from(j["timestamp_ns"].as_i64().expect("timestamp_ns"));
        assert!(ns >= last_ns, "out of time order at {json_line}");
        last_ns = ns;
        let time = j["time"].as_str().expect("time");
        assert!(
            time.ends_with(&format!(".{:09}", ns.rem_euclid(1_000_000_000))),
            "{json_line}"
        );
        let origin = j["origin"].as_str().expect("origin");
        if origin.starts_with("uid ") {
            uids.insert(origin.to_string());
        }
        assert_eq!(j["event"], "demo:ev", "{json_line}");
        let i = j["fields"]["i"].as_i64().expect("i");
        let s = j["fields"]["s"].as_str().expect("s");
        // The text line says the same as the JSON line.
        let (head, rest) = text_line.split_once(" demo:ev ").expect("demo:ev");
        let dash = |v: &serde_json::Value| match v {
            serde_json::Value::Null => "-".to_string(),
            serde_json::Value::String(s) => s.clone(),
            other => other.to_string(),
        };
        let who = format!(
            "{}/{}/{}",
            dash(&j["procname"]),
            dash(&j["vpid"]),
            dash(&j["vtid"])
        );
        assert_eq!(
            head,
            format!("[{time}] {origin} {who}"),
            "{text_line} / {json_line}"
        );
        // Every event names its process: per-PID from the trace, per-UID from its
        // vpid context; per-UID events name their thread too.
        assert!(j["vpid"].is_i64(), "{json_line}");
        assert_eq!(
            j["vtid"].is_i64(),
            origin.starts_with("uid "),
            "{json_line}"
        );
        assert_eq!(fields(rest), (i, s.to_string()), "{text_line}");
        let cpu = j["cpu_id"].as_u64().expect("cpu_id") as u32;
        seen.push((time.to_string(), view_pid(origin), cpu, i, s.to_string()));
    }
    assert_eq!(
        uids.into_iter().collect::<Vec<_>>(),
        ["uid 0", "uid 4244"],
        "per-UID origins"
    );
    expected.sort();
    seen.sort();
    assert_eq!(seen, expected);

    // Any sub-trace alone reads the same in both tools.
    for trace in sub_traces(&output) {
        let dir = output.join(&trace);
        let bt = babeltrace2_raw(&["--clock-gmt", "--clock-date", "--no-delta"], &dir);
        assert!(bt.status.success(), "{bt:?}");
        let mut expected: Vec<(String, i64)> = String::from_utf8(bt.stdout)
            .unwrap()
            .lines()
            .map(|l| {
                let (time, _, _, i, _) = babeltrace2_key(l);
                (time, i)
            })
            .collect();
        let out = view(&[], &dir);
        assert!(out.status.success(), "{out:?}");
        let mut seen: Vec<(String, i64)> = String::from_utf8(out.stdout)
            .unwrap()
            .lines()
            .map(|l| {
                let (time, rest) = l[1..].split_once("] ").expect("a time");
                let (_, fields_text) = rest.split_once(" demo:ev ").expect("demo:ev");
                (time.to_string(), fields(fields_text).0)
            })
            .collect();
        assert!(!expected.is_empty(), "{trace}");
        expected.sort();
        seen.sort();
        assert_eq!(seen, expected, "{trace}");
    }
}

/// Copies the file tree `from` to `to`.
fn copy_tree(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap().flatten() {
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_tree(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), target).unwrap();
        }
    }
}

/// Byte offsets of the packets of a stream file.
fn packet_starts(bytes: &[u8]) -> Vec<usize> {
    let mut starts = Vec::new();
    let mut at = 0;
    while at < bytes.len() {
        starts.push(at);
        let header = PacketHeader::read(&bytes[at..]).expect("an intact packet");
        at += header.open.packet_size as usize;
    }
    starts
}

/// Checks that `view` (text and JSON) refuses `dir`: non-zero exit, no panic, and a
/// message naming `file` and a byte offset accepted by `offset_ok`.
fn assert_refused(dir: &Path, file: &Path, offset_ok: impl Fn(u64) -> bool) {
    for args in [&[][..], &["--json"][..]] {
        let out = view(args, dir);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            !out.status.success(),
            "{args:?} accepted {}",
            file.display()
        );
        assert_eq!(out.status.code(), Some(1), "{stderr}");
        assert!(!stderr.contains("panicked"), "{stderr}");
        let named = format!("{}: byte ", file.display());
        let at = stderr
            .find(&named)
            .unwrap_or_else(|| panic!("{stderr:?} does not name {named:?}"));
        let offset: String = stderr[at + named.len()..]
            .chars()
            .take_while(char::is_ascii_digit)
            .collect();
        let offset: u64 = offset.parse().expect("a byte offset");
        assert!(offset_ok(offset), "offset {offset} in {stderr}");
    }
}

/// A real per-PID trace of several packets; returns (output, its largest stream).
fn multi_packet_trace(daemon: &Daemon) -> (PathBuf, PathBuf) {
    let output = daemon.session_with(
        "s",
        "out",
        &[ChannelRequest {
            name: "p".into(),
            buffers: Some(Buffering::PerPid),
            subbuf_size: Some(4096),
            num_subbuf: Some(16),
            ..ChannelRequest::default()
        }],
        true,
    );
    daemon.run_app(&["--events", "1500"]);
    daemon.stop("s");
    let traces = sub_traces(&output);
    assert_eq!(traces.len(), 1, "{traces:?}");
    let trace = output.join(&traces[0]);
    let stream = std::fs::read_dir(&trace)
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.file_name().unwrap() != "metadata")
        .max_by_key(|p| std::fs::metadata(p).unwrap().len())
        .expect("a stream file");
    let packets = packet_starts(&std::fs::read(&stream).unwrap());
    assert!(packets.len() >= 3, "{} packets", packets.len());
    (output, stream)
}

#[test]
fn view_refuses_truncated_corrupted_and_garbage_traces_naming_file_and_offset() {
    let daemon = Daemon::start();
    let (output, stream) = multi_packet_trace(&daemon);
    assert!(view(&[], &output).status.success());
    let relative = stream.strip_prefix(&output).unwrap().to_path_buf();
    let bytes = std::fs::read(&stream).unwrap();
    let packets = packet_starts(&bytes);
    let second = packets[1];
    let second_end = packets[2];
    let mut case = 0;
    let mut copy = || {
        case += 1;
        let dir = daemon.scratch.path(&format!("copy{case}"));
        copy_tree(&output, &dir);
        let file = dir.join(&relative);
        (dir, file)
    };

    // Cut in the middle of the second packet's events.
    let (dir, file) = copy();
    let cut = (second + second_end) / 2;
    std::fs::write(&file, &bytes[..cut]).unwrap();
    assert_refused(&dir, &file, |at| (second as u64..=cut as u64).contains(&at));

    // Cut inside the second packet's header.
    let (dir, file) = copy();
    std::fs::write(&file, &bytes[..second + 30]).unwrap();
    assert_refused(&dir, &file, |at| {
        (second as u64..=second as u64 + 30).contains(&at)
    });

    // Flipped magic of the second packet.
    let (dir, file) = copy();
    let mut bad = bytes.clone();
    bad[second..second + 4].iter_mut().for_each(|b| *b ^= 0xFF);
    std::fs::write(&file, &bad).unwrap();
    assert_refused(&dir, &file, |at| at == second as u64);

    // A packet_size (header bytes 48..56) far past the end of the file.
    let (dir, file) = copy();
    let mut bad = bytes.clone();
    bad[second + 48..second + 56].copy_from_slice(&(u64::MAX - 7).to_le_bytes());
    std::fs::write(&file, &bad).unwrap();
    assert_refused(&dir, &file, |at| {
        (second as u64..second_end as u64).contains(&at)
    });

    // A content_size (header bytes 40..48) larger than the packet.
    let (dir, file) = copy();
    let mut bad = bytes.clone();
    let content = u64::try_from(second_end - second + 1).unwrap() * 8;
    bad[second + 40..second + 48].copy_from_slice(&content.to_le_bytes());
    std::fs::write(&file, &bad).unwrap();
    assert_refused(&dir, &file, |at| {
        (second as u64..second_end as u64).contains(&at)
    });

    // An event id no metadata declares, in the first event of the second packet.
    let (dir, file) = copy();
    let mut bad = bytes.clone();
    let event = second + ustrace::ctf::packet::PACKET_HEADER_SIZE;
    bad[event..event + 4].copy_from_slice(&0xDEAD_u32.to_le_bytes());
    std::fs::write(&file, &bad).unwrap();
    assert_refused(&dir, &file, |at| at == event as u64);

    // Garbage metadata: binary, then TSDL that stops in the middle.
    let metadata = stream.with_file_name("metadata");
    let text = std::fs::read_to_string(&metadata).unwrap();
    let garbage: [Vec<u8>; 3] = [
        (0..=255u8).cycle().take(4000).collect(),
        text.as_bytes()[..text.len() / 2].to_vec(),
        text.replacen("struct", "strukt", 1).into_bytes(),
    ];
    for garbage in garbage {
        let (dir, file) = copy();
        let file = file.with_file_name("metadata");
        let len = garbage.len() as u64;
        std::fs::write(&file, garbage).unwrap();
        assert_refused(&dir, &file, |at| at <= len);
    }
}
