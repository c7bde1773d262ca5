//! A custom writer under a real daemon (in this process) with real apps: it is
//! picked by name per channel, gets every packet, and a panicking one is restarted
//! without losing any.

mod common;

use common::Scratch;
use std::collections::HashMap;
use std::io;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use ustrace::actors::writer::{LeasedPacket, Metadata, StreamInfo, StreamWriter, WriterFactory};
use ustrace::config::Config;
use ustrace::control;
use ustrace::ctf::packet::PacketHeader;
use ustrace::daemon::Daemon;
use ustrace::protocol::messages::{Buffering, ChannelRequest, ControlRequest, StatusReport};

/// Packets each stream received, shared with the test.
type Collected = Arc<Mutex<HashMap<String, Vec<Vec<u8>>>>>;

/// Keeps packets in memory; the first writer it makes panics on its first packet.
struct Collect {
    packets: Collected,
    made: AtomicU32,
    panic_first: bool,
    overclaims: bool,
}

struct CollectWriter {
    stream: String,
    packets: Collected,
    panics: bool,
    /// Stores whole runs and answers with more than it was offered.
    overclaims: bool,
}

impl StreamWriter for CollectWriter {
    fn write_packet(&mut self, metadata: &Metadata, packet: &[u8]) -> io::Result<()> {
        assert!(metadata.tsdl.starts_with("/* CTF 1.8 */"));
        if self.panics {
            panic!("custom writer bug");
        }
        let mut packets = self.packets.lock().unwrap();
        packets
            .entry(self.stream.clone())
            .or_default()
            .push(packet.to_vec());
        Ok(())
    }

    /// Stores the first packet only, and says so, or (`overclaims`) stores the
    /// whole run and claims five more: the daemon must take it for the run, not
    /// for packets queued after it.
    fn write_leased_run(
        &mut self,
        metadata: &Metadata,
        run: &[&LeasedPacket],
    ) -> io::Result<usize> {
        if !self.overclaims {
            return self.write_leased(metadata, run[0]).map(|()| 1);
        }
        for packet in run {
            self.write_leased(metadata, packet)?;
        }
        Ok(run.len() + 5)
    }

    fn sync(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl WriterFactory for Collect {
    fn create(&self, stream: &StreamInfo) -> io::Result<Box<dyn StreamWriter>> {
        let first = self.made.fetch_add(1, Ordering::SeqCst) == 0;
        Ok(Box::new(CollectWriter {
            stream: format!("{}/{}", stream.session, stream.file_name()),
            packets: self.packets.clone(),
            panics: self.panic_first && first,
            overclaims: self.overclaims,
        }))
    }
}

/// Writes, from `create` on, one line per packet into `<trace_dir>/<stream>.packets`:
/// a custom writer that stores into its stream's own directory.
struct InTraceDir;

/// The file an [`InTraceDir`] writer appends to.
struct InTraceDirWriter(std::fs::File);

impl StreamWriter for InTraceDirWriter {
    fn write_packet(&mut self, _: &Metadata, packet: &[u8]) -> io::Result<()> {
        use std::io::Write as _;
        writeln!(self.0, "{}", packet.len())
    }

    fn sync(&mut self) -> io::Result<()> {
        self.0.sync_all()
    }
}

impl WriterFactory for InTraceDir {
    fn create(&self, stream: &StreamInfo) -> io::Result<Box<dyn StreamWriter>> {
        let path = stream
            .trace_dir
            .path()
            .join(format!("{}.packets", stream.file_name()));
        Ok(Box::new(InTraceDirWriter(
            std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(path)?,
        )))
    }
}

/// Starts the daemon with `factory` registered as `collect` in a thread; returns its
/// runtime dir and stopper.
fn daemon(
    scratch: &Scratch,
    factory: impl WriterFactory + 'static,
) -> (std::path::PathBuf, tokio::sync::oneshot::Sender<()>) {
    let rundir = scratch.path("run");
    let mut config = Config::default();
    config.daemon.runtime_dir = Some(rundir.clone());
    config.supervision.backoff_ms = 1;
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    std::thread::spawn(move || {
        Daemon::new(config)
            .writer("collect", Arc::new(factory))
            .run_until(async {
                let _ = stopped.await;
            })
            .unwrap();
    });
    common::wait_for("the daemon", Duration::from_secs(20), || {
        control::request_in(&rundir, &ControlRequest::Status).is_ok()
    });
    (rundir, stop)
}

fn ask(rundir: &std::path::Path, request: ControlRequest) {
    let shown = format!("{request:?}");
    control::request_in(rundir, &request)
        .unwrap()
        .unwrap_or_else(|e| panic!("{shown}: {e}"));
}

fn trace_with_collect(rundir: &std::path::Path, output: Option<String>, events: u32) {
    trace_into(rundir, output, per_pid(), events);
}

/// A per-PID channel of the default geometry.
fn per_pid() -> ChannelRequest {
    ChannelRequest {
        buffers: Some(Buffering::PerPid),
        ..ChannelRequest::default()
    }
}

/// Traces one app emitting `events` into `channel` (named `c` here, picking the
/// `collect` writer) of a new session `s`, then stops it.
fn trace_into(
    rundir: &std::path::Path,
    output: Option<String>,
    channel: ChannelRequest,
    events: u32,
) {
    ask(
        rundir,
        ControlRequest::Create {
            name: "s".into(),
            output,
            url: None,
            live_timer_us: None,
        },
    );
    ask(
        rundir,
        ControlRequest::EnableChannel {
            session: None,
            channel: ChannelRequest {
                name: "c".into(),
                writer: Some("collect".into()),
                ..channel
            },
        },
    );
    ask(
        rundir,
        ControlRequest::EnableEvent {
            session: None,
            channel: None,
            pattern: "demo:*".into(),
            exclude: Vec::new(),
            loglevel: Default::default(),
            filter: None,
        },
    );
    ask(rundir, ControlRequest::Start { session: None });
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_ustrace-demo"))
        .args(["--events", &events.to_string()])
        .env("USTRACE_RUNDIR", rundir)
        .output()
        .unwrap();
    assert!(out.status.success());
    ask(rundir, ControlRequest::Stop { session: None });
}

/// Events in the collected packets, from their content sizes.
fn events_in(packets: &Collected) -> usize {
    packets
        .lock()
        .unwrap()
        .values()
        .flatten()
        .map(|p| {
            let header = PacketHeader::read(p).unwrap();
            assert_eq!(header.open.packet_size, p.len() as u64, "padding trimmed");
            common::demo_events_in(p) as usize
        })
        .sum()
}

fn status(rundir: &std::path::Path) -> StatusReport {
    match control::request_in(rundir, &ControlRequest::Status).unwrap() {
        Ok(ustrace::protocol::messages::ControlOk::Status(s)) => *s,
        other => panic!("{other:?}"),
    }
}

/// Runs a daemon whose `collect` writer keeps packets in memory, traces one app
/// emitting `events` into a per-PID channel that picks it, and returns the packets
/// and the daemon's counters after `stop`.
fn collect_one_app(tag: &str, panic_first: bool, events: u32) -> (Collected, StatusReport) {
    collect_in(tag, (panic_first, false), per_pid(), events)
}

/// [`collect_one_app`] into `channel`, the writer panicking on its first packet
/// and claiming more of a run than offered as `(panic_first, overclaims)` say.
fn collect_in(
    tag: &str,
    (panic_first, overclaims): (bool, bool),
    channel: ChannelRequest,
    events: u32,
) -> (Collected, StatusReport) {
    let scratch = Scratch::new(tag);
    let packets = Collected::default();
    let (rundir, stop) = daemon(
        &scratch,
        Collect {
            packets: packets.clone(),
            made: AtomicU32::new(0),
            panic_first,
            overclaims,
        },
    );
    trace_into(&rundir, None, channel, events);
    let status = status(&rundir);
    let _ = stop.send(());
    (packets, status)
}

#[test]
fn a_channel_picks_a_custom_writer_by_name_and_it_gets_every_packet() {
    let (packets, _) = collect_one_app("custom", false, 40);
    assert_eq!(events_in(&packets), 40);
    let streams: Vec<String> = packets.lock().unwrap().keys().cloned().collect();
    assert!(streams.iter().all(|k| k.starts_with("s/c_")), "{streams:?}");
}

/// Runs of leased packets (a per-UID channel of small packets, filled faster than
/// they are stored) offered to a writer that stores each and claims more:
/// every packet still reaches it, once.
#[test]
fn a_writer_claiming_more_of_a_run_than_it_was_offered_loses_nothing() {
    let channel = ChannelRequest {
        buffers: Some(Buffering::PerUid),
        subbuf_size: Some(4096),
        num_subbuf: Some(64),
        // None, as the per-PID channels `events_in` counts in.
        contexts: Some(Vec::new()),
        ..ChannelRequest::default()
    };
    let (packets, _) = collect_in("overclaim", (false, true), channel, 5000);
    assert_eq!(events_in(&packets), 5000);
}

#[test]
fn a_panicking_custom_writer_is_restarted_and_loses_nothing() {
    let (packets, status) = collect_one_app("panicky", true, 25);
    assert_eq!(events_in(&packets), 25);
    assert_eq!(status.writer_restarts, 1, "{status:?}");
    assert!(status.failed_writers.is_empty(), "{status:?}");
}

#[test]
fn a_custom_writer_creates_files_in_its_stream_s_trace_dir() {
    let scratch = Scratch::new("in-trace-dir");
    let (rundir, stop) = daemon(&scratch, InTraceDir);
    let output = scratch.path("trace");
    trace_with_collect(&rundir, Some(output.display().to_string()), 30);
    let status = status(&rundir);
    let _ = stop.send(());
    assert_eq!(status.writer_restarts, 0, "{status:?}");
    assert!(status.failed_writers.is_empty(), "{status:?}");
    let mut found = Vec::new();
    let mut dirs = vec![output.clone()];
    while let Some(dir) = dirs.pop() {
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                dirs.push(path);
            } else if path.extension().is_some_and(|e| e == "packets") {
                found.push(path);
            }
        }
    }
    assert!(
        !found.is_empty(),
        "no .packets file below {}",
        output.display()
    );
    for file in &found {
        let lines = std::fs::read_to_string(file).unwrap();
        assert!(
            file.parent().unwrap().starts_with(output.join("ust/pid")),
            "{}",
            file.display()
        );
        assert!(lines.lines().count() > 0, "{} is empty", file.display());
    }
}
