//! The path from rings to writers is bounded: under a flood of apps a stalled
//! writer makes the ring discard (counted), the daemon's heap stays bounded, its
//! memory returns after `stop`, and written = recorded + discarded.
//!
//! The daemon runs in this process (a custom writer needs it), so its resident size
//! is this process's; the apps are other processes.

mod common;

use common::{Running, Scratch};
use std::io;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;
use ustrace::actors::writer::{Metadata, StreamInfo, StreamWriter, WriterFactory};
use ustrace::config::{ByteSize, Config};
use ustrace::control;
use ustrace::ctf::packet::{EVENT_HEADER_SIZE, PACKET_HEADER_SIZE, PacketHeader};
use ustrace::daemon::Daemon;
use ustrace::protocol::messages::{Buffers, ChannelRequest, ControlOk, ControlRequest};

/// Bytes of one `demo:ev {i: i64, s: "hello"}`.
const DEMO_EVENT_LEN: u64 = (EVENT_HEADER_SIZE + 8 + 6) as u64;

/// Apps in the flood, and events each emits.
const APPS: u64 = 8;
const EVENTS: u64 = 2_000_000;

/// Stores nothing, and not before the test opens its gate: a disk that stalls for
/// the whole flood.
struct Stalled {
    /// Open once the flood is over.
    gate: Arc<(Mutex<bool>, Condvar)>,
    /// Events in the packets it was given.
    recorded: Arc<AtomicU64>,
}

impl StreamWriter for Stalled {
    fn write_packet(&mut self, _: &Metadata, packet: &[u8]) -> io::Result<()> {
        let (open, opened) = &*self.gate;
        let _open = opened
            .wait_while(open.lock().unwrap(), |open| !*open)
            .unwrap();
        let header = PacketHeader::read(packet).map_err(io::Error::other)?;
        let events = (header.close.content_size - PACKET_HEADER_SIZE as u64) / DEMO_EVENT_LEN;
        self.recorded.fetch_add(events, Ordering::Relaxed);
        Ok(())
    }

    fn sync(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// Makes [`Stalled`] writers that share one gate and one counter.
#[derive(Clone, Default)]
struct StalledFactory {
    gate: Arc<(Mutex<bool>, Condvar)>,
    recorded: Arc<AtomicU64>,
}

impl StalledFactory {
    fn open(&self) {
        *self.gate.0.lock().unwrap() = true;
        self.gate.1.notify_all();
    }
}

impl WriterFactory for StalledFactory {
    fn create(&self, _: &StreamInfo) -> io::Result<Box<dyn StreamWriter>> {
        Ok(Box::new(Stalled {
            gate: self.gate.clone(),
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

#[test]
fn a_slow_writer_under_a_flood_makes_rings_discard_and_memory_stays_bounded() {
    const MIB: u64 = 1 << 20;
    let scratch = Scratch::new("backlog");
    let rundir = scratch.path("run");
    let mut config = Config::default();
    config.daemon.runtime_dir = Some(rundir.clone());
    config.limits.max_writer_backlog_bytes = ByteSize(MIB);
    let writers = StalledFactory::default();
    let (stop_daemon, stopped) = tokio::sync::oneshot::channel::<()>();
    let factory = Arc::new(writers.clone());
    let daemon = std::thread::spawn(move || {
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
        },
    );
    ask(
        &rundir,
        ControlRequest::EnableChannel {
            session: None,
            channel: ChannelRequest {
                name: "c".into(),
                buffers: Some(Buffers::PerUid),
                num_subbuf: Some(16),
                writer: Some("stalled".into()),
                ..ChannelRequest::default()
            },
        },
    );
    ask(
        &rundir,
        ControlRequest::EnableEvent {
            session: None,
            channel: None,
            pattern: "demo:*".into(),
        },
    );
    ask(&rundir, ControlRequest::Start { session: None });

    let before = rss("VmRSS:");
    let before_heap = rss("RssAnon:");
    let sampling = Arc::new(AtomicBool::new(true));
    let sampler = {
        let sampling = sampling.clone();
        std::thread::spawn(move || {
            let mut peak = 0;
            while sampling.load(Ordering::Relaxed) {
                peak = peak.max(rss("RssAnon:"));
                std::thread::sleep(Duration::from_millis(10));
            }
            peak
        })
    };
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
    sampling.store(false, Ordering::Relaxed);
    let peak_heap = sampler.join().unwrap();
    writers.open();
    ask(&rundir, ControlRequest::Stop { session: None });
    let status = match ask(&rundir, ControlRequest::Status) {
        ControlOk::Status(s) => s,
        other => panic!("{other:?}"),
    };
    let after_stop = rss("VmRSS:");
    ask(&rundir, ControlRequest::Destroy { session: None });
    let after = rss("VmRSS:");
    let _ = stop_daemon.send(());
    daemon.join().unwrap();

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
