//! The path from rings to writers is bounded: under a flood of apps a stalled
//! writer makes the ring discard (counted), the daemon's heap stays bounded, its
//! memory returns after `stop`, and written = recorded + discarded; a stalled
//! stream holds none of the other streams of its set.
//!
//! The daemon runs in this process (a custom writer needs it), so its resident size
//! is this process's; the apps are other processes.

mod common;

use common::{Running, Scratch};
use std::io;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;
use ustrace::actors::writer::{Metadata, StreamInfo, StreamWriter, WriterFactory};
use ustrace::config::{ByteSize, Config};
use ustrace::control;
use ustrace::ctf::packet::{COMPACT_HEADER_SIZE, PACKET_HEADER_SIZE, PacketHeader};
use ustrace::daemon::Daemon;
use ustrace::protocol::messages::{Buffering, ChannelRequest, ControlOk, ControlRequest};

/// Apps in the flood, and events each emits.
const APPS: u64 = 8;
const EVENTS: u64 = 2_000_000;

/// Stores nothing, and (if `gated`) not before the test opens its gate: a disk
/// that stalls for the whole flood.
struct Stalled {
    /// Whether its writes wait for the gate.
    gated: bool,
    /// Open once the flood is over.
    gate: Arc<(Mutex<bool>, Condvar)>,
    /// Times a write found the gate closed.
    held: Arc<AtomicU64>,
    /// Events in the packets it was given.
    recorded: Arc<AtomicU64>,
}

impl StreamWriter for Stalled {
    fn write_packet(&mut self, _: &Metadata, packet: &[u8]) -> io::Result<()> {
        if self.gated {
            let (open, opened) = &*self.gate;
            let closed = opened.wait_while(open.lock().unwrap(), |open| {
                if !*open {
                    self.held.fetch_add(1, Ordering::Relaxed);
                }
                !*open
            });
            drop(closed.unwrap());
        }
        PacketHeader::read(packet).map_err(io::Error::other)?;
        let events = common::demo_events_in(packet);
        self.recorded.fetch_add(events, Ordering::Relaxed);
        Ok(())
    }

    fn sync(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// Makes [`Stalled`] writers that share one gate and one counter: gated for every
/// stream, or only for the stream of CPU `only_cpu`.
#[derive(Clone, Default)]
struct StalledFactory {
    only_cpu: Option<u32>,
    gate: Arc<(Mutex<bool>, Condvar)>,
    held: Arc<AtomicU64>,
    recorded: Arc<AtomicU64>,
}

impl StalledFactory {
    fn open(&self) {
        *self.gate.0.lock().unwrap() = true;
        self.gate.1.notify_all();
    }
}

impl WriterFactory for StalledFactory {
    fn create(&self, stream: &StreamInfo) -> io::Result<Box<dyn StreamWriter>> {
        Ok(Box::new(Stalled {
            gated: self.only_cpu.is_none_or(|cpu| cpu == stream.cpu),
            gate: self.gate.clone(),
            held: self.held.clone(),
            recorded: self.recorded.clone(),
        }))
    }
}

/// This process's resident size in bytes: all of it (`VmRSS`), or its anonymous
/// memory only (`RssAnon`: the heap, without the mapped rings).
fn rss(field: &str) -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let line = status.lines().find(|l| l.starts_with(field)).unwrap();
    let kb: u64 = line.split_whitespace().nth(1).unwrap().parse().unwrap();
    kb * 1024
}

fn ask(rundir: &std::path::Path, request: ControlRequest) -> ControlOk {
    let shown = format!("{request:?}");
    control::request_in(rundir, &request)
        .unwrap()
        .unwrap_or_else(|e| panic!("{shown}: {e}"))
}

/// The tests of this file measure or stall the whole process: one at a time.
static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());

/// A daemon in this process whose channel `c` (per-UID, `demo:*`) is written by
/// a [`Stalled`] writer, in a started session.
struct InProcess {
    rundir: std::path::PathBuf,
    writers: StalledFactory,
    stop: tokio::sync::oneshot::Sender<()>,
    thread: std::thread::JoinHandle<()>,
}

impl InProcess {
    fn start(scratch: &Scratch, config: Config, channel: ChannelRequest) -> InProcess {
        InProcess::start_with(scratch, config, channel, StalledFactory::default())
    }

    /// [`InProcess::start`] with the writers of `writers`.
    fn start_with(
        scratch: &Scratch,
        mut config: Config,
        channel: ChannelRequest,
        writers: StalledFactory,
    ) -> InProcess {
        let rundir = scratch.path("run");
        config.daemon.runtime_dir = Some(rundir.clone());
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let factory = Arc::new(writers.clone());
        let thread = std::thread::spawn(move || {
            Daemon::new(config)
                .writer("stalled", factory)
                .run_until(async {
                    let _ = stopped.await;
                })
                .unwrap();
        });
        common::wait_for("the daemon", Duration::from_secs(20), || {
            control::request_in(&rundir, &ControlRequest::Status).is_ok()
        });
        ask(
            &rundir,
            ControlRequest::Create {
                name: "flood".into(),
                output: Some(scratch.path("out").display().to_string()),
                url: None,
                live_timer_us: None,
            },
        );
        ask(
            &rundir,
            ControlRequest::EnableChannel {
                session: None,
                channel: ChannelRequest {
                    name: "c".into(),
                    buffers: Some(Buffering::PerUid),
                    writer: Some("stalled".into()),
                    ..channel
                },
            },
        );
        ask(
            &rundir,
            ControlRequest::EnableEvent {
                session: None,
                channel: None,
                pattern: "demo:*".into(),
                exclude: Vec::new(),
                loglevel: Default::default(),
                filter: None,
            },
        );
        ask(&rundir, ControlRequest::Start { session: None });
        InProcess {
            rundir,
            writers,
            stop,
            thread,
        }
    }

    fn status(&self) -> ustrace::protocol::messages::StatusReport {
        match ask(&self.rundir, ControlRequest::Status) {
            ControlOk::Status(s) => *s,
            other => panic!("{other:?}"),
        }
    }

    fn shut_down(self) {
        self.writers.open();
        let _ = self.stop.send(());
        self.thread.join().unwrap();
    }
}

#[test]
fn a_slow_writer_under_a_flood_makes_rings_discard_and_memory_stays_bounded() {
    const MIB: u64 = 1 << 20;
    let _alone = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let scratch = Scratch::new("backlog");
    let mut config = Config::default();
    config.limits.max_writer_backlog_bytes = ByteSize(MIB);
    let daemon = InProcess::start(
        &scratch,
        config,
        ChannelRequest {
            num_subbuf: Some(16),
            // No contexts: `common::demo_events_in` walks the packets.
            contexts: Some(vec![]),
            ..ChannelRequest::default()
        },
    );
    let rundir = daemon.rundir.clone();
    let writers = daemon.writers.clone();

    let before = rss("VmRSS:");
    let before_heap = rss("RssAnon:");
    // The heap's peak is sampled every 10 ms while the flood runs, until the test
    // (once the apps exited) says stop: the wait for that word is the period. The
    // kernel keeps no high-water mark of anonymous memory alone (VmHWM counts the
    // mapped rings too); a growth shorter than a period may go unseen, which
    // weakens the bound but cannot fail it spuriously.
    let (stop_sampling, stopped) = std::sync::mpsc::channel::<()>();
    let sampler = std::thread::spawn(move || {
        let mut peak = 0;
        loop {
            peak = peak.max(rss("RssAnon:"));
            match stopped.recv_timeout(Duration::from_millis(10)) {
                Err(std::sync::mpsc::RecvTimeoutError::Timeout) => continue,
                _ => return peak,
            }
        }
    });
    let apps: Vec<Running> = (0..APPS)
        .map(|_| {
            Running(
                std::process::Command::new(env!("CARGO_BIN_EXE_ustrace-demo"))
                    .args(["--events", &EVENTS.to_string()])
                    .env("USTRACE_RUNDIR", &rundir)
                    .spawn()
                    .unwrap(),
            )
        })
        .collect();
    for mut app in apps {
        assert!(app.0.wait().unwrap().success());
    }
    let _ = stop_sampling.send(());
    let peak_heap = sampler.join().unwrap();
    writers.open();
    ask(&rundir, ControlRequest::Stop { session: None });
    let status = daemon.status();
    let after_stop = rss("VmRSS:");
    ask(&rundir, ControlRequest::Destroy { session: None });
    let after = rss("VmRSS:");
    daemon.shut_down();

    let recorded = writers.recorded.load(Ordering::Relaxed);
    eprintln!(
        "heap before {} MiB, peak {} MiB; rss before {} MiB, after stop {} MiB, after \
         destroy {} MiB; recorded {recorded}, discarded {}",
        before_heap / MIB,
        peak_heap / MIB,
        before / MIB,
        after_stop / MIB,
        after / MIB,
        status.events_discarded
    );
    assert_eq!(
        recorded + status.events_discarded,
        APPS * EVENTS,
        "written = recorded + discarded: {status:?}"
    );
    assert!(
        status.events_discarded > 0,
        "the stalled writer made rings discard"
    );
    assert!(
        peak_heap < before_heap + 10 * MIB,
        "the heap grew from {} to {} MiB under the flood",
        before_heap / MIB,
        peak_heap / MIB
    );
    // The rings (2 MiB per CPU, touched by the flood) stay mapped until destroy.
    assert!(
        after_stop < before + 8 * MIB + 2 * MIB * ustrace::shm::cpu_count() as u64,
        "resident size {} MiB after stop, {} MiB before the flood",
        after_stop / MIB,
        before / MIB
    );
    assert!(
        after < before + 8 * MIB,
        "resident size {} MiB after destroy, {} MiB before the flood",
        after / MIB,
        before / MIB
    );
}

#[test]
fn a_writer_that_catches_up_gets_the_packets_left_in_its_ring_at_once() {
    let _alone = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let scratch = Scratch::new("backlog-room");
    let mut config = Config::default();
    // One packet of backlog, and a drain timer that never fires in this test:
    // only the writer's "room again" can bring the packets left in the ring.
    config.limits.max_writer_backlog_bytes = ByteSize(1);
    config.daemon.flush_interval_ms = 3_600_000;
    let daemon = InProcess::start(
        &scratch,
        config,
        ChannelRequest {
            subbuf_size: Some(4096),
            num_subbuf: Some(16),
            // No contexts: `common::demo_events_in` walks the packets.
            contexts: Some(vec![]),
            ..ChannelRequest::default()
        },
    );
    // 10,000 events on CPU 0 make about 65 packets: the stalled writer holds one,
    // the ring keeps 16, the rest is discarded. The app stays alive: the death of
    // a producer would make the set look for stuck packets, and drain, every second.
    let mut app = Running(
        std::process::Command::new("taskset")
            .args(["-c", "0"])
            .arg(env!("CARGO_BIN_EXE_ustrace-demo"))
            .args(["--events", "10000", "--wait"])
            .env("USTRACE_RUNDIR", &daemon.rundir)
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .spawn()
            .unwrap(),
    );
    let mut line = String::new();
    std::io::BufRead::read_line(
        &mut std::io::BufReader::new(app.0.stdout.as_mut().unwrap()),
        &mut line,
    )
    .unwrap();
    assert_eq!(line.trim(), "emitted");
    assert_eq!(daemon.writers.recorded.load(Ordering::Relaxed), 0);
    daemon.writers.open();
    let per_packet =
        ((4096 - PACKET_HEADER_SIZE) / (COMPACT_HEADER_SIZE + common::DEMO_PAYLOAD_LEN)) as u64;
    common::wait_for(
        "the packets left in the ring",
        Duration::from_secs(20),
        || daemon.writers.recorded.load(Ordering::Relaxed) >= 12 * per_packet,
    );
    common::poke(&mut app.0);
    daemon.shut_down();
}

#[test]
fn a_stream_whose_writer_stalls_does_not_hold_the_other_streams_of_its_set() {
    let _alone = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    if ustrace::shm::cpu_count() < 2 {
        eprintln!("one CPU: one ring per set, nothing to hold");
        return;
    }
    let scratch = Scratch::new("backlog-streams");
    let writers = StalledFactory {
        only_cpu: Some(0),
        ..StalledFactory::default()
    };
    let daemon = InProcess::start_with(
        &scratch,
        Config::default(),
        ChannelRequest {
            subbuf_size: Some(4096),
            num_subbuf: Some(16),
            // No contexts: `common::demo_events_in` walks the packets.
            contexts: Some(vec![]),
            ..ChannelRequest::default()
        },
        writers.clone(),
    );
    // CPU 0's stream: its writer's first write waits at the gate, as one waiting
    // for a stalled disk does.
    let run_on = |cpu: &str, events: u64| {
        let out = std::process::Command::new("taskset")
            .args(["-c", cpu])
            .arg(env!("CARGO_BIN_EXE_ustrace-demo"))
            .args(["--events", &events.to_string()])
            .env("USTRACE_RUNDIR", &daemon.rundir)
            .output()
            .unwrap();
        assert!(out.status.success(), "{out:?}");
    };
    run_on("0", 10_000);
    common::wait_for(
        "CPU 0's writer at the gate",
        Duration::from_secs(20),
        || writers.held.load(Ordering::Relaxed) > 0,
    );
    // CPU 1's stream of the same set is stored meanwhile.
    run_on("1", 1_000);
    common::wait_for(
        "CPU 1's packets stored while CPU 0's writer waits",
        Duration::from_secs(20),
        || writers.recorded.load(Ordering::Relaxed) == 1_000,
    );
    writers.open();
    ask(&daemon.rundir, ControlRequest::Stop { session: None });
    let status = daemon.status();
    daemon.shut_down();
    assert_eq!(
        writers.recorded.load(Ordering::Relaxed) + status.events_discarded,
        11_000,
        "written = recorded + discarded: {status:?}"
    );
}
