//! Complete packets stored with `O_DIRECT` (`daemon.direct_io`, on by default): the
//! daemon's fd on each stream file has the flag, every packet is padded with zeros
//! to a whole number of pages, and babeltrace2 reads every event. With the setting
//! off, and on a file system that refuses `O_DIRECT` (ramfs), packets go through
//! the page cache trimmed to their content, and the trace is the same.

mod common;

use common::{Daemon, babeltrace2, stream_bytes, streams, wait_for};
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;
use ustrace::protocol::messages::{Buffering, ChannelRequest};
use ustrace::trace::index;

/// Events each test's app emits: about 40 packets of 16 KiB, all of which fit in
/// the rings at once, so that none is discarded however late the daemon drains.
const EVENTS: u32 = 20_000;

/// Bytes an `O_DIRECT` packet is padded to a multiple of.
const PAGE: u64 = 4096;

/// A started session with one per-UID channel of 16 KiB x 64 packets, writing to
/// `<scratch>/<output>`, after an app emitted [`EVENTS`] from two threads.
fn traced(daemon: &Daemon, output: &str) -> PathBuf {
    let channel = ChannelRequest {
        name: "u".into(),
        buffers: Some(Buffering::PerUid),
        subbuf_size: Some(16 * 1024),
        num_subbuf: Some(64),
        ..ChannelRequest::default()
    };
    let output = daemon.session_with("dio", output, &[channel], true);
    daemon.run_app(&["--events", &EVENTS.to_string(), "--threads", "2"]);
    output
}

/// The `flags` (octal in `/proc/PID/fdinfo`) of each fd of the daemon open on a
/// stream file under `output`.
fn stream_fd_flags(daemon: &Daemon, output: &Path) -> Vec<u32> {
    let streams: Vec<PathBuf> = streams(output).into_iter().map(|(s, _)| s).collect();
    let mut flags = Vec::new();
    for fd in fs::read_dir(format!("/proc/{}/fd", daemon.pid()))
        .unwrap()
        .flatten()
    {
        let Ok(target) = fs::read_link(fd.path()) else {
            continue;
        };
        if !streams.contains(&target) {
            continue;
        }
        let info = format!(
            "/proc/{}/fdinfo/{}",
            daemon.pid(),
            fd.file_name().to_string_lossy()
        );
        let Ok(info) = fs::read_to_string(info) else {
            continue;
        };
        let octal = info
            .lines()
            .find_map(|l| l.strip_prefix("flags:"))
            .expect("fdinfo has flags");
        flags.push(u32::from_str_radix(octal.trim(), 8).unwrap());
    }
    flags
}

/// Whether a flags word has `O_DIRECT`.
fn direct(flags: u32) -> bool {
    flags & libc::O_DIRECT as u32 != 0
}

/// Checks every packet of the trace under `output` (`padded`: to whole pages, with
/// zeros after the content; else trimmed to the content) and that babeltrace2
/// reads every event.
fn check_trace(output: &Path, padded: bool) {
    let mut packets = 0;
    for (stream, _) in streams(output) {
        let bytes = fs::read(&stream).unwrap();
        for entry in index::stream_entries(&stream).unwrap() {
            let (size, content) = (entry.packet_size / 8, entry.content_size / 8);
            let at = entry.offset as usize;
            if padded {
                assert!(
                    size.is_multiple_of(PAGE) && content <= size,
                    "{}: packet at {at} of {size} bytes, {content} of content",
                    stream.display()
                );
                let padding = &bytes[at + content as usize..at + size as usize];
                assert!(padding.iter().all(|&b| b == 0), "padding is zeros");
            } else {
                assert_eq!(
                    size,
                    content,
                    "{}: packet at {at} trimmed",
                    stream.display()
                );
            }
            packets += 1;
        }
    }
    assert!(packets >= 20, "{packets} packets: several per stream");
    let events = babeltrace2(output)
        .iter()
        .filter(|l| l.contains("demo:ev"))
        .count();
    assert_eq!(events, EVENTS as usize);
}

#[test]
fn packets_go_out_with_o_direct_padded_to_pages_and_read_whole() {
    let daemon = Daemon::start();
    let output = traced(&daemon, "out");
    wait_for("a stream fd with O_DIRECT", Duration::from_secs(20), || {
        stream_fd_flags(&daemon, &output).into_iter().any(direct)
    });
    daemon.stop("dio");
    check_trace(&output, true);
}

#[test]
fn with_direct_io_off_packets_go_through_the_page_cache_trimmed() {
    let daemon = Daemon::with_config("[daemon]\ndirect_io = false\n");
    let output = traced(&daemon, "out");
    wait_for("stream files written", Duration::from_secs(20), || {
        stream_bytes(&output) > 0
    });
    let flags = stream_fd_flags(&daemon, &output);
    assert!(!flags.is_empty() && !flags.into_iter().any(direct));
    daemon.stop("dio");
    check_trace(&output, false);
}

/// A ramfs mounted for the test, detached on drop (lazily: the daemon may still
/// hold files there).
struct Ramfs(PathBuf);

impl Drop for Ramfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

#[test]
fn where_the_file_system_refuses_o_direct_packets_go_through_the_page_cache() {
    if !nix::unistd::geteuid().is_root() {
        eprintln!("not root: no ramfs can be mounted, the refusal is not checked");
        return;
    }
    let daemon = Daemon::start();
    let mount = daemon.scratch.path("ram");
    fs::create_dir_all(&mount).unwrap();
    let status = Command::new("mount")
        .args(["-t", "ramfs", "none"])
        .arg(&mount)
        .status()
        .unwrap();
    assert!(status.success(), "mount -t ramfs");
    let _ramfs = Ramfs(mount);
    let output = traced(&daemon, "ram/out");
    wait_for("stream files written", Duration::from_secs(20), || {
        stream_bytes(&output) > 0
    });
    assert!(!stream_fd_flags(&daemon, &output).into_iter().any(direct));
    daemon.stop("dio");
    check_trace(&output, false);
}
