//! Cost of one enabled event `{i: i64, s: "hello"}` through the real macro into real
//! per-CPU rings while a consumer drains them: one thread, two threads, two processes
//! sharing one ring set (per-UID style), one thread with a filter that passes every
//! event and with one that rejects every event, one and two threads again with the
//! contexts vpid, vtid and procname, and a paced 1M events/s run for discards.
//!
//! `cargo bench --bench event_cost` (add `-- N` to change the event count, and
//! `-- --lttng-geometry` for rings of 1 MiB x 8, the geometry of LTTng's
//! `event_cost.sh`, instead of our default 128 KiB x 4, whose drainer falls behind
//! the unpaced rounds).

use std::os::fd::AsFd;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use nix::poll::{PollFd, PollFlags, poll};
use ustrace::ctf::context::{ContextSet, ContextType};
use ustrace::filter::Filter;
use ustrace::shm::{ChannelBuffers, DEFAULT_GEOMETRY, Geometry, Mode, RingConfig, cpu_count};
use ustrace::ust::channel;

#[path = "../tests/shm_support/mod.rs"]
mod shm_support;
use shm_support::{inherited_buffers, spawn_sharing};

ustrace::event!(static BENCH_EV: bench:ev(i: i64, s: &str), loglevel = Info);

const ROLE: &str = "USTRACE_BENCH_CHILD";

fn main() {
    let events: u64 = std::env::args()
        .skip(1)
        .find_map(|a| a.parse().ok())
        .unwrap_or(1_000_000);
    if std::env::var(ROLE).is_ok() {
        child(events);
        return;
    }
    let geometry = if std::env::args().any(|a| a == "--lttng-geometry") {
        Geometry {
            subbuf_size: 1 << 20,
            num_subbuf: 8,
        }
    } else {
        DEFAULT_GEOMETRY
    };
    println!(
        "rings of {} KiB x {} per CPU",
        geometry.subbuf_size / 1024,
        geometry.num_subbuf
    );
    let config = RingConfig {
        geometry,
        mode: Mode::Discard,
        stream_id: 0,
        uuid: [0; 16],
        context_len: 0,
    };
    // The trace clock and CPU source are this run's: force the fallbacks with
    // USTRACE_CLOCK=monotonic and GLIBC_TUNABLES=glibc.pthread.rseq=0.
    let trace_clock = ustrace::shm::host_clock().expect("trace clock");
    let calibrated = Instant::now();
    let monotonic = per_call(events, ustrace::shm::now_ns);
    let clock = per_call(events, || trace_clock.now());
    let cpu = per_call(events, || ustrace::shm::current_cpu() as u64);
    let getcpu = per_call(events, || nix::sched::sched_getcpu().unwrap_or(0) as u64);
    println!(
        "building blocks: trace clock ({}) {clock:.1} ns, clock_gettime {monotonic:.1} ns, \
         cpu ({:?}) {cpu:.1} ns, sched_getcpu {getcpu:.1} ns",
        trace_clock.name(),
        ustrace::shm::current_cpu_from().1
    );
    let disabled = rounds(|| {
        let start = Instant::now();
        for i in 0..events as i64 {
            BENCH_EV.emit(i, "hello");
        }
        start.elapsed()
    });
    report("disabled, 1 thread", events, 1, disabled, 0);

    let buffers = ChannelBuffers::create("bench", &config, cpu_count()).expect("buffers");
    let drainer = Drainer::start(buffers.clone());
    let slot = channel::install(buffers.clone(), ContextSet::default()).expect("slot");
    BENCH_EV.enable(slot, 1);

    for threads in [1u64, 2] {
        let before = discarded(&buffers);
        let times = rounds(|| emit_threads(threads, events / threads));
        let lost = discarded(&buffers) - before;
        report(
            &format!("{threads} thread(s)"),
            events,
            threads,
            times,
            lost,
        );
    }

    // The same event with a filter (`enable-event --filter`): one that passes every
    // emission, one that rejects every emission (nothing is reserved then).
    for (what, expr) in [
        ("filtered in", "i >= 0 && s == \"hel*\""),
        ("filtered out", "i < 0 && s == \"hel*\""),
    ] {
        let program = Filter::parse(expr)
            .expect("filter")
            .compile(&BENCH_EV.desc());
        let checked = program.check(&BENCH_EV.desc().fields).expect("program");
        BENCH_EV.enable_filtered(slot, 1, Some(checked));
        let before = discarded(&buffers);
        let times = rounds(|| emit_threads(1, events));
        let lost = discarded(&buffers) - before;
        report(
            &format!("1 thread, {what} by `{expr}`"),
            events,
            1,
            times,
            lost,
        );
    }
    BENCH_EV.enable(slot, 1);

    // The same into a channel whose events carry vpid, vtid and procname.
    let with_context = ChannelBuffers::create("bench-ctx", &config, cpu_count()).expect("buffers");
    let context_drainer = Drainer::start(with_context.clone());
    let contexts = ContextSet::of(&[ContextType::Vpid, ContextType::Vtid, ContextType::Procname]);
    let context_slot = channel::install(with_context.clone(), contexts).expect("slot");
    BENCH_EV.disable(slot);
    BENCH_EV.enable(context_slot, 1);
    for threads in [1u64, 2] {
        let before = discarded(&with_context);
        let times = rounds(|| emit_threads(threads, events / threads));
        let lost = discarded(&with_context) - before;
        report(
            &format!("{threads} thread(s), contexts vpid,vtid,procname"),
            events,
            threads,
            times,
            lost,
        );
    }
    BENCH_EV.disable(context_slot);
    BENCH_EV.enable(slot, 1);
    context_drainer.stop();

    let before = discarded(&buffers);
    let times = rounds(|| {
        let children: Vec<_> = (0..2).map(|_| spawn_child(&buffers, events / 2)).collect();
        let mut slowest = Duration::ZERO;
        for child in children {
            let out = child.wait_with_output().expect("bench child");
            assert!(out.status.success(), "bench child failed");
            let text = String::from_utf8_lossy(&out.stdout);
            let nanos: u64 = text.trim().parse().expect("child time");
            slowest = slowest.max(Duration::from_nanos(nanos));
        }
        slowest
    });
    let lost = discarded(&buffers) - before;
    report("2 processes, shared ring set", events, 2, times, lost);

    let before = discarded(&buffers);
    let start = Instant::now();
    for i in 0..events as i64 {
        let due = start + Duration::from_nanos(i as u64 * 1_000);
        while Instant::now() < due {
            std::hint::spin_loop();
        }
        BENCH_EV.emit(i, "hello");
    }
    println!(
        "paced 1M events/s for {:.2?}: {} discarded ({} KiB x {})",
        start.elapsed(),
        discarded(&buffers) - before,
        geometry.subbuf_size / 1024,
        geometry.num_subbuf
    );
    drainer.stop();
    // How far the calibrated TSC has walked from CLOCK_MONOTONIC since the
    // calibration at the start of this run (the drift docs/shm.md speaks of).
    let (before, at, after) = (
        ustrace::shm::now_ns(),
        trace_clock.now(),
        ustrace::shm::now_ns(),
    );
    println!(
        "trace clock ({}) - CLOCK_MONOTONIC after {:.1} s: {} ns",
        trace_clock.name(),
        calibrated.elapsed().as_secs_f64(),
        at as i64 - (before / 2 + after / 2) as i64
    );
}

/// Mean cost of one call of `f` in nanoseconds.
fn per_call(calls: u64, f: impl Fn() -> u64) -> f64 {
    let start = Instant::now();
    for _ in 0..calls {
        std::hint::black_box(f());
    }
    start.elapsed().as_nanos() as f64 / calls as f64
}

/// Rounds per scenario: the machine is shared, so the best and median are shown.
const ROUNDS: usize = 5;

/// Runs `f` ROUNDS times; its durations sorted.
fn rounds(mut f: impl FnMut() -> Duration) -> Vec<Duration> {
    let mut times: Vec<Duration> = (0..ROUNDS).map(|_| f()).collect();
    times.sort();
    times
}

/// Prints per-event cost (wall time x threads / events) of the best and median round,
/// and the events discarded over all rounds.
fn report(what: &str, events: u64, threads: u64, times: Vec<Duration>, discarded: u64) {
    let per_event = |d: Duration| d.as_nanos() as f64 * threads as f64 / events as f64;
    println!(
        "{what}: {events} events {:.1} ns/event (median {:.1}; {discarded} discarded in {ROUNDS} rounds)",
        per_event(times[0]),
        per_event(times[ROUNDS / 2]),
    );
}

fn discarded(buffers: &ChannelBuffers) -> u64 {
    buffers
        .rings()
        .iter()
        .map(|r| r.counters().discarded_full)
        .sum()
}

fn emit_threads(threads: u64, per_thread: u64) -> Duration {
    let handles: Vec<_> = (0..threads)
        .map(|_| {
            std::thread::spawn(move || {
                let start = Instant::now();
                for i in 0..per_thread as i64 {
                    BENCH_EV.emit(i, "hello");
                }
                start.elapsed()
            })
        })
        .collect();
    handles
        .into_iter()
        .map(|h| h.join().expect("emitter"))
        .max()
        .unwrap_or_default()
}

/// The daemon's part, minimal: drain every ring on wake-ups or a 10 ms timer.
struct Drainer {
    stop: Arc<AtomicBool>,
    thread: std::thread::JoinHandle<()>,
}

impl Drainer {
    fn start(buffers: ChannelBuffers) -> Drainer {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let thread = std::thread::spawn(move || {
            let mut consumers = buffers.consumers();
            let mut packet = Vec::new();
            while !flag.load(Ordering::Relaxed) {
                let mut fds = [PollFd::new(buffers.wakeup().as_fd(), PollFlags::POLLIN)];
                let _ = poll(&mut fds, 10u16);
                let _ = buffers.wakeup().take();
                for consumer in &mut consumers {
                    while consumer.take_packet(&mut packet).is_some() {
                        std::hint::black_box(packet.len());
                    }
                }
            }
        });
        Drainer { stop, thread }
    }

    fn stop(self) {
        self.stop.store(true, Ordering::Relaxed);
        self.thread.join().expect("drainer");
    }
}

fn spawn_child(buffers: &ChannelBuffers, events: u64) -> std::process::Child {
    let mut cmd = Command::new(std::env::current_exe().expect("bench binary"));
    cmd.arg(events.to_string())
        .env(ROLE, "emitter")
        .stdout(Stdio::piped());
    spawn_sharing(&mut cmd, buffers)
}

fn child(events: u64) {
    let buffers = inherited_buffers();
    let slot = channel::install(buffers, ContextSet::default()).expect("slot");
    BENCH_EV.enable(slot, 1);
    let start = Instant::now();
    for i in 0..events as i64 {
        BENCH_EV.emit(i, "hello");
    }
    println!("{}", start.elapsed().as_nanos());
}
