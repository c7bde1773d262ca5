//! Disk full: a writer that ran out of space and failed tries again after its
//! restart window; once space is back the same session records again, the loss is
//! counted and reported by `stop` once, then `stop` succeeds again. The output is a
//! real, small tmpfs.

mod common;

use common::{Daemon, Scratch, babeltrace2, poll_until};
use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;
use ustrace::protocol::messages::{Buffering, ChannelRequest, ControlOk, ControlRequest};

/// A tmpfs mounted for the test, unmounted on drop.
struct Tmpfs(PathBuf);

impl Tmpfs {
    /// Mounts a tmpfs of `size` (mount(8) syntax) on `dir`; `None` if this machine
    /// does not let the test mount one.
    fn mount(dir: &Path, size: &str) -> Option<Tmpfs> {
        fs::create_dir_all(dir).unwrap();
        let status = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size},mode=0755")])
            .arg("ustrace-test")
            .arg(dir)
            .status();
        match status {
            Ok(s) if s.success() => Some(Tmpfs(dir.to_path_buf())),
            other => {
                eprintln!(
                    "SKIPPED: cannot mount a tmpfs on {} ({other:?})",
                    dir.display()
                );
                None
            }
        }
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

/// Fills the file system of `dir` with `dir/filler` until a write fails.
fn fill(dir: &Path) -> PathBuf {
    let path = dir.join("filler");
    let mut file = fs::File::create(&path).unwrap();
    let chunk = [0u8; 4096];
    while file.write_all(&chunk).is_ok() {}
    path
}

/// Events of the `demo:ev` kind that babeltrace2 prints for `dir`.
fn events_on_disk(dir: &Path) -> usize {
    babeltrace2(dir)
        .iter()
        .filter(|l| l.contains("demo:ev"))
        .count()
}

/// A started session on `output` with one per-UID channel of small packets.
fn start_session(daemon: &Daemon, output: &Path) -> PathBuf {
    let channel = ChannelRequest {
        name: "chan".into(),
        buffers: Some(Buffering::PerUid),
        subbuf_size: Some(4096),
        num_subbuf: Some(64),
        // No contexts: an event is its header and the demo payload.
        contexts: Some(vec![]),
        ..ChannelRequest::default()
    };
    daemon.session_with("s", output.to_str().expect("UTF-8 path"), &[channel], true)
}

#[test]
fn a_writer_failed_on_a_full_disk_recovers_when_space_is_back_and_the_loss_is_reported() {
    let scratch = Scratch::new("disk-full");
    let Some(disk) = Tmpfs::mount(&scratch.path("disk"), "512k") else {
        return;
    };
    let daemon =
        Daemon::with_config("[supervision]\nmax_restarts = 1\nwithin_secs = 1\nbackoff_ms = 10\n");
    let output = start_session(&daemon, &disk.0.join("out"));

    let filler = fill(&disk.0);
    daemon.run_pinned_app(1000);
    common::wait_for("the writer to fail", Duration::from_secs(20), || {
        !daemon.status().failed_writers.is_empty()
    });
    let status = daemon.status();
    assert!(status.packets_lost_writer > 0, "{status:?}");
    assert!(
        status.failed_writers[0].error.contains("No space left"),
        "{status:?}"
    );

    // Space comes back: apps of the same session are recorded again once the
    // failed writer's window has passed, without recreating anything.
    fs::remove_file(filler).unwrap();
    let recovered = poll_until(Duration::from_secs(20), || {
        daemon.run_pinned_app(1000);
        daemon.status().failed_writers.is_empty()
    });
    assert!(
        recovered,
        "the writer never recovered: {:?}",
        daemon.status()
    );
    daemon.run_pinned_app(1000);

    let answer = daemon.ask(ControlRequest::Stop { session: None });
    let error = answer.expect_err("stop reports the packets lost to the full disk");
    assert!(
        error.contains("packets") && error.contains("No space left") && error.contains("recovered"),
        "{error}"
    );
    let status = daemon.status();
    assert!(status.failed_writers.is_empty(), "{status:?}");
    assert!(
        status.packets_lost_writer > 0,
        "the loss stays counted: {status:?}"
    );
    let on_disk = events_on_disk(&output);
    assert!(on_disk >= 1000, "{on_disk} events on disk");

    // Reported once: the next stop is a success.
    daemon.ok(ControlRequest::Start { session: None });
    daemon.run_pinned_app(1000);
    match daemon.ok(ControlRequest::Stop { session: None }) {
        ControlOk::Done(message) => assert!(message.contains("trace flushed"), "{message}"),
        other => panic!("{other:?}"),
    }
    assert_eq!(events_on_disk(&output), on_disk + 1000);
    drop(daemon);
}

#[test]
fn a_full_disk_never_leaves_a_partial_or_empty_metadata() {
    let scratch = Scratch::new("disk-full-metadata");
    let Some(disk) = Tmpfs::mount(&scratch.path("disk"), "64k") else {
        return;
    };
    let trace = disk.0.join("ust/uid/0/64-bit");
    fs::create_dir_all(&trace).unwrap();
    let _filler = fill(&disk.0);
    let tsdl = format!("/* CTF 1.8 */\n{}", "x".repeat(64 * 1024));
    let stored = ustrace::trace::writer::store_metadata(&trace, "chan_0", &tsdl);
    let error = stored.expect_err("no space for the metadata");
    assert_eq!(error.raw_os_error(), Some(libc::ENOSPC), "{error}");
    let names: Vec<_> = fs::read_dir(&trace)
        .unwrap()
        .flatten()
        .map(|e| e.file_name())
        .collect();
    assert!(names.is_empty(), "left behind: {names:?}");
}

#[test]
fn packets_stored_before_the_disk_filled_stay_whole_and_readable() {
    let scratch = Scratch::new("disk-full-before");
    let Some(disk) = Tmpfs::mount(&scratch.path("disk"), "512k") else {
        return;
    };
    let daemon =
        Daemon::with_config("[supervision]\nmax_restarts = 2\nwithin_secs = 60\nbackoff_ms = 10\n");
    let output = start_session(&daemon, &disk.0.join("out"));
    daemon.run_pinned_app(1000);
    let stream = output.join("ust/uid/0/64-bit/chan_0");
    // All of them: the drain hands a ring's packets to the writer a ring's worth at
    // a time (each sub-buffer back once stored), so the first packets on disk are
    // not yet all.
    common::wait_for(
        "the first app's events on disk",
        Duration::from_secs(20),
        || fs::metadata(&stream).is_ok() && stored_events(&stream) == 1000,
    );
    let stored = fs::metadata(&stream).unwrap().len();

    let _filler = fill(&disk.0);
    daemon.run_pinned_app(1000);
    common::wait_for("the writer to fail", Duration::from_secs(20), || {
        !daemon.status().failed_writers.is_empty()
    });
    // Every restart made a new writer, and each failed write was cut back to the
    // whole packets already in the file, not to nothing.
    assert!(daemon.status().writer_restarts >= 2);
    assert_eq!(fs::metadata(&stream).unwrap().len(), stored);
    assert!(daemon.ask(ControlRequest::Stop { session: None }).is_err());
    assert_eq!(events_on_disk(&output) as u64, stored_events(&stream));
}

/// Events in the stream file's whole packets, from their content sizes (a packet
/// still being appended is not counted).
fn stored_events(stream: &Path) -> u64 {
    use ustrace::ctf::packet::PacketHeader;
    let bytes = fs::read(stream).unwrap();
    let mut offset = 0;
    let mut events = 0;
    while offset < bytes.len() {
        let Ok(header) = PacketHeader::read(&bytes[offset..]) else {
            break;
        };
        if offset + header.open.packet_size as usize > bytes.len() {
            break;
        }
        let size = header.open.packet_size as usize;
        events += common::demo_events_in(&bytes[offset..offset + size]);
        offset += header.open.packet_size as usize;
    }
    events
}
