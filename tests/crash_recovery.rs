//! A daemon killed during a flood leaves torn tails; `ustrace recover` and a daemon
//! restarted on the output make the trace read up to its last complete packet, and
//! babeltrace2 then reads every complete packet.

mod common;

use common::{Daemon, Scratch, babeltrace2, babeltrace2_raw, wait_for};
use std::fs::{self, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Duration;
use ustrace::ctf::packet::PacketHeader;
use ustrace::protocol::messages::{Buffering, ChannelRequest, ControlOk, ControlRequest};

/// A per-UID channel of 4 KiB packets: a flood makes many of them.
fn small_packets() -> ChannelRequest {
    ChannelRequest {
        name: "chan".into(),
        buffers: Some(Buffering::PerUid),
        subbuf_size: Some(4096),
        num_subbuf: Some(16),
        // No contexts: `common::demo_events_in` walks the packets.
        contexts: Some(vec![]),
        ..ChannelRequest::default()
    }
}

/// Stream files (`chan_<cpu>`) under `dir`.
fn stream_files(dir: &Path) -> Vec<PathBuf> {
    let mut found = Vec::new();
    let mut dirs = vec![dir.to_path_buf()];
    while let Some(dir) = dirs.pop() {
        for entry in fs::read_dir(&dir).unwrap().flatten() {
            let path = entry.path();
            if path.is_dir() && entry.file_name() != "index" {
                dirs.push(path);
            } else if path.is_file() && entry.file_name().to_string_lossy().starts_with("chan_") {
                found.push(path);
            }
        }
    }
    found.sort();
    found
}

/// Whole packets at the start of a stream file: (offset of each, its events), and
/// the end of the last one.
fn whole_packets(path: &Path) -> (Vec<(u64, u64)>, u64) {
    let bytes = fs::read(path).unwrap();
    let mut packets = Vec::new();
    let mut offset = 0u64;
    while let Ok(header) = PacketHeader::read(&bytes[offset as usize..]) {
        let size = header.open.packet_size;
        if offset + size > bytes.len() as u64 {
            break;
        }
        let events = common::demo_events_in(&bytes[offset as usize..(offset + size) as usize]);
        packets.push((offset, events));
        offset += size;
    }
    (packets, offset)
}

/// Events in the whole packets of every stream file under `dir`.
fn events_in_whole_packets(dir: &Path) -> u64 {
    stream_files(dir)
        .iter()
        .map(|f| whole_packets(f).0.iter().map(|p| p.1).sum::<u64>())
        .sum()
}

/// Events babeltrace2 prints for `dir`.
fn babeltrace2_events(dir: &Path) -> u64 {
    babeltrace2(dir)
        .iter()
        .filter(|l| l.contains("demo:ev"))
        .count() as u64
}

/// Appends the first half of the file's first packet: what a daemon killed in the
/// middle of its `write` leaves. Says whether it could: a file the kill left with
/// no whole packet (empty, or torn in its first) has none to copy.
fn append_half_a_packet(path: &Path) -> bool {
    let bytes = fs::read(path).unwrap();
    if whole_packets(path).0.is_empty() {
        return false;
    }
    let size = PacketHeader::read(&bytes).unwrap().open.packet_size as usize;
    let mut file = OpenOptions::new().append(true).open(path).unwrap();
    file.write_all(&bytes[..size / 2]).unwrap();
    true
}

#[test]
fn recover_cuts_torn_tails_and_babeltrace2_reads_every_complete_packet() {
    let daemon = Daemon::start();
    let output = daemon.session_with("s", "out", &[small_packets()], true);
    daemon.run_app(&["--events", "20000"]);
    daemon.stop("s");
    let streams = stream_files(&output);
    assert!(!streams.is_empty());
    let whole = events_in_whole_packets(&output);
    assert_eq!(babeltrace2_events(&output), whole);

    // The first stream loses the second half of its last packet; every other one
    // gets half a packet more; a replacement of the metadata was interrupted.
    let (packets, _) = whole_packets(&streams[0]);
    let &(last, last_events) = packets.last().unwrap();
    let cut = OpenOptions::new().write(true).open(&streams[0]).unwrap();
    cut.set_len(last + 100).unwrap();
    for stream in &streams[1..] {
        assert!(
            append_half_a_packet(stream),
            "{stream:?} holds a whole packet"
        );
    }
    let trace_dir = streams[0].parent().unwrap();
    let tsdl = fs::read_to_string(trace_dir.join("metadata")).unwrap();
    fs::write(trace_dir.join(".metadata.chan_1"), &tsdl[..tsdl.len() / 2]).unwrap();
    assert!(
        !babeltrace2_raw(&[], &output).status.success(),
        "babeltrace2 rejects a torn trace"
    );

    let out = daemon.cli(&["recover", output.to_str().unwrap()]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "recover failed: {stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.contains(&format!(
            "{}: trimmed 100 bytes ({} -> {last})",
            streams[0].display(),
            last + 100
        )),
        "{stdout}"
    );
    for stream in &streams[1..] {
        assert!(
            stdout.contains(&format!("{}: trimmed", stream.display())),
            "{stdout}"
        );
    }
    assert!(
        stdout.contains("removed an unfinished metadata version"),
        "{stdout}"
    );
    assert!(!trace_dir.join(".metadata.chan_1").exists());
    assert_eq!(babeltrace2_events(&output), whole - last_events);

    let again = daemon.cli(&["recover", output.to_str().unwrap()]);
    assert!(again.status.success());
    assert!(
        String::from_utf8_lossy(&again.stdout).contains("nothing to repair"),
        "{again:?}"
    );
}

#[test]
fn recover_restores_a_torn_metadata_from_the_complete_version_beside_it() {
    let daemon = Daemon::start();
    let output = daemon.session_with("s", "out", &[small_packets()], true);
    daemon.run_app(&["--events", "2000"]);
    daemon.stop("s");
    let whole = events_in_whole_packets(&output);
    let trace_dir = stream_files(&output)[0].parent().unwrap().to_path_buf();
    let metadata = trace_dir.join("metadata");
    let tsdl = fs::read_to_string(&metadata).unwrap();
    fs::write(trace_dir.join(".metadata.chan_0"), &tsdl).unwrap();
    fs::write(&metadata, &tsdl[..tsdl.len() / 3]).unwrap();
    assert!(!babeltrace2_raw(&[], &output).status.success());

    let out = daemon.cli(&["recover", output.to_str().unwrap()]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{out:?}");
    assert!(stdout.contains("torn, restored from"), "{stdout}");
    assert_eq!(fs::read_to_string(&metadata).unwrap(), tsdl);
    assert_eq!(babeltrace2_events(&output), whole);
}

#[test]
fn recover_fails_on_a_trace_it_cannot_make_readable() {
    let scratch = Scratch::new("unrecoverable");
    let dir = scratch.path("ust/uid/0/64-bit");
    fs::create_dir_all(&dir).unwrap();
    fs::write(dir.join("metadata"), "/* CTF 1.8 */ trace { maj").unwrap();
    fs::write(dir.join("chan_0"), [0xC1u8; 200]).unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_ustrace"))
        .args(["recover", scratch.0.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("torn metadata") && stderr.contains("no complete version left"),
        "{stderr}"
    );
}

#[test]
fn recover_leaves_bytes_that_are_no_torn_packet_alone_but_cuts_a_zero_tail() {
    let daemon = Daemon::start();
    let output = daemon.session_with("s", "out", &[small_packets()], true);
    daemon.run_app(&["--events", "2000"]);
    daemon.stop("s");
    let stream = &stream_files(&output)[0];
    let mut file = OpenOptions::new().append(true).open(stream).unwrap();
    file.write_all(&[0xAB; 300]).unwrap();
    let len = fs::metadata(stream).unwrap().len();
    let out = daemon.cli(&["recover", output.to_str().unwrap()]);
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("bad packet magic") && stderr.contains("not a torn tail"),
        "{stderr}"
    );
    assert_eq!(fs::metadata(stream).unwrap().len(), len, "left as it is");

    // Zeros, though, are what a file system extended the file with before a
    // crash: cut.
    file.set_len(len - 300).unwrap();
    file.write_all(&[0; 300]).unwrap();
    let out = daemon.cli(&["recover", output.to_str().unwrap()]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{out:?}");
    assert!(
        stdout.contains("trimmed 300 bytes") && stdout.contains("300 zero bytes"),
        "{stdout}"
    );
    assert_eq!(fs::metadata(stream).unwrap().len(), len - 300);
}

#[test]
fn a_daemon_restarted_after_a_sigkill_during_a_flood_recovers_its_output_dir() {
    let outputs = Scratch::new("crash-outputs");
    let config = format!(
        "[daemon]\noutput_dir = {:?}\n",
        outputs.0.display().to_string()
    );
    let mut daemon = Daemon::with_config(&config);
    daemon.ok(ControlRequest::Create {
        name: "flood".into(),
        output: None,
        url: None,
        live_timer_us: None,
    });
    daemon.ok(ControlRequest::EnableChannel {
        session: None,
        channel: small_packets(),
    });
    daemon.ok(ControlRequest::EnableEvent {
        session: None,
        channel: None,
        pattern: "demo:*".into(),
        exclude: Vec::new(),
        loglevel: Default::default(),
        filter: None,
    });
    daemon.ok(ControlRequest::Start { session: None });
    let output = match daemon.ok(ControlRequest::List { session: None }) {
        ControlOk::Sessions(s) => PathBuf::from(&s[0].output),
        other => panic!("{other:?}"),
    };
    let flood = common::Running(
        daemon
            .app(&["--events", "50000000", "--threads", "2"])
            .spawn()
            .unwrap(),
    );
    wait_for("packets on disk", Duration::from_secs(30), || {
        output.is_dir() && events_in_whole_packets(&output) > 10_000
    });
    daemon.child.kill().unwrap();
    daemon.child.wait().unwrap();
    drop(flood);

    // Whatever the kill left, every stream with a whole packet now ends with half
    // a packet more, and a per-PID trace's first metadata is empty, as a full disk
    // left it before.
    let whole = events_in_whole_packets(&output);
    let streams = stream_files(&output);
    let torn = streams.iter().filter(|s| append_half_a_packet(s)).count();
    assert!(torn > 0, "the flood left no whole packet: {streams:?}");
    let empty = output.join("ust/pid/app-1-20261201-000000");
    fs::create_dir_all(&empty).unwrap();
    fs::write(empty.join("metadata"), "").unwrap();
    fs::write(empty.join("chan_0"), "").unwrap();
    assert!(!babeltrace2_raw(&[], &output).status.success());

    let _restarted = Daemon::with_config(&config);
    for stream in &streams {
        assert_eq!(whole_packets(stream).1, fs::metadata(stream).unwrap().len());
    }
    assert!(!empty.join("metadata").exists(), "no empty metadata left");
    assert_eq!(babeltrace2_events(&output), whole);
}
