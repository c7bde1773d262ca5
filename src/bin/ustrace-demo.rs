//! `ustrace-demo`: an instrumented program.
//!
//! Registers with the session daemon, emits `demo:ev {i: i64, s: "hello"}` N times
//! from T threads, and exits (or aborts, for crash tests). With `--catalog` it also
//! declares and emits once each of six more events (`demo:warn`, `demo:crit`,
//! `demo:debug_line`, `demo:debug`, `net:recv`, `net:send_failed`: other names,
//! providers, levels and field types), for tests of event rules.

use clap::Parser;
use std::io::Write;
use std::time::Instant;
use ustrace::ctf::field::FieldValue;
use ustrace::ust::client::{self, RegistrationOutcome};

ustrace::event!(
    /// The demo's one event.
    static DEMO_EV: demo:ev(i: i64, s: &str), loglevel = Info
);

ustrace::event!(
    /// An event without fields, registered only with `--park-payload-free`.
    static DEMO_BARE: demo:bare(), loglevel = Info
);
ustrace::event!(
    /// A warning.
    static DEMO_WARN: demo:warn(code: u32), loglevel = Warning
);
ustrace::event!(
    /// A critical condition.
    static DEMO_CRIT: demo:crit(code: u32), loglevel = Crit
);
ustrace::event!(
    /// Line-level debug output.
    static DEMO_DEBUG_LINE: demo:debug_line(line: u32), loglevel = DebugLine
);
ustrace::event!(
    /// Debug output of the default level.
    static DEMO_DEBUG: demo:debug(line: u32), loglevel = Debug
);
ustrace::event!(
    /// Another provider's event with integer, string and float fields.
    static NET_RECV: net:recv(bytes: u64, peer: &str, ratio: f64), loglevel = Notice
);
ustrace::event!(
    /// Another provider's error.
    static NET_SEND_FAILED: net:send_failed(errno: i32), loglevel = Err
);

/// Emits each catalog event once.
fn emit_catalog() {
    DEMO_WARN.emit(4);
    DEMO_CRIT.emit(2);
    DEMO_DEBUG_LINE.emit(13);
    DEMO_DEBUG.emit(14);
    NET_RECV.emit(1500, "10.0.0.1", 0.5);
    NET_SEND_FAILED.emit(-32);
}

/// An instrumented program for demos, tests and benchmarks.
#[derive(Parser)]
#[command(name = "ustrace-demo", version, about)]
struct Args {
    /// Events to emit (in all).
    #[arg(long, default_value_t = 1)]
    events: u64,
    /// Threads sharing the events.
    #[arg(long, default_value_t = 1)]
    threads: u64,
    /// Print `N events X ns/event` and the registration latency on stderr.
    #[arg(long)]
    report: bool,
    /// End with abort() instead of exit, as a crashing program would.
    #[arg(long)]
    abort: bool,
    /// Fork a child that emits this many events of its own before the parent emits.
    #[arg(long)]
    fork_child_events: Option<u64>,
    /// After emitting, print `emitted` on stdout and wait for a line on stdin (lets
    /// tests kill it at a known point).
    #[arg(long)]
    wait: bool,
    /// Before emitting, wait up to this many milliseconds for the event to be enabled
    /// (for apps that register before their session starts).
    #[arg(long)]
    await_enabled_ms: Option<u64>,
    /// After the others, emit one more event (`i = -7, s = "parked"`) and park inside its
    /// reservation, between reserve and commit: `stop` stops the process (SIGSTOP to
    /// itself) and commits once continued; `wait` prints `parked` on stdout and waits
    /// to be killed. Lets tests freeze or kill a producer at that point.
    #[arg(long, value_enum)]
    park_in_event: Option<Park>,
    /// With `--park-in-event`: register `demo:bare`, an event without fields, and park
    /// in it instead, so that the reservation is exactly its header and the channel's
    /// contexts long.
    #[arg(long, requires = "park_in_event")]
    park_payload_free: bool,
    /// Each emitting thread prints `thread T tid N` on stdout before it emits (lets
    /// tests check the vtid context of its events; thread T's `i` start at T << 40).
    #[arg(long)]
    print_tids: bool,
    /// Instead of `--events`: emit one event every N microseconds until a line
    /// arrives on stdin, then print `emitted COUNT` on stdout.
    #[arg(long)]
    paced_us: Option<u64>,
    /// With `--paced-us`: print `paced: COUNT emitted` on stderr every 100 events
    /// (lets tests check that emitting goes on, whatever the daemon does).
    #[arg(long, requires = "paced_us")]
    progress: bool,
    /// Also declare the catalog's six events and emit each once after `demo:ev`.
    #[arg(long)]
    catalog: bool,
}

/// Where `--park-in-event` leaves the process.
#[derive(Clone, Copy, clap::ValueEnum)]
enum Park {
    /// Stopped by its own SIGSTOP; commits when continued.
    Stop,
    /// Running, blocked until killed; never commits.
    Wait,
}

/// Emits one event (`demo:bare` if `payload_free`) and parks inside its reservation
/// (see `--park-in-event`).
fn emit_parked(park: Park, payload_free: bool) {
    let (i, s) = (-7i64, "parked");
    let (event, len) = if payload_free {
        (&*DEMO_BARE, 0)
    } else {
        (&*DEMO_EV, i.encoded_len() + s.encoded_len())
    };
    event.record(len, |out| {
        match park {
            Park::Stop => {
                let _ = nix::sys::signal::raise(nix::sys::signal::Signal::SIGSTOP);
            }
            Park::Wait => {
                println!("parked");
                let _ = std::io::stdout().flush();
                loop {
                    std::thread::park();
                }
            }
        }
        if !payload_free {
            let at = i.encode(out);
            s.encode(&mut out[at..]);
        }
    });
}

fn main() {
    let args = Args::parse();
    let mut events = vec![&*DEMO_EV];
    if args.catalog {
        events.extend([
            &*DEMO_WARN,
            &*DEMO_CRIT,
            &*DEMO_DEBUG_LINE,
            &*DEMO_DEBUG,
            &*NET_RECV,
            &*NET_SEND_FAILED,
        ]);
    }
    if args.park_payload_free {
        events.push(&*DEMO_BARE);
    }
    let registration = client::init("ustrace-demo", &events);
    if let Some(ms) = args.await_enabled_ms {
        let deadline = Instant::now() + std::time::Duration::from_millis(ms);
        let enabled =
            || DEMO_EV.is_enabled() && (!args.park_payload_free || DEMO_BARE.is_enabled());
        while !enabled() && Instant::now() < deadline {
            std::thread::sleep(std::time::Duration::from_millis(1));
        }
    }
    if let Some(events) = args.fork_child_events {
        fork_child(events);
    }
    if let Some(interval) = args.paced_us {
        emit_paced(std::time::Duration::from_micros(interval), args.progress);
        return;
    }
    let threads = args.threads.max(1);
    let start = Instant::now();
    std::thread::scope(|scope| {
        for t in 0..threads {
            let share = args.events / threads + u64::from(t < args.events % threads);
            let print_tids = args.print_tids;
            scope.spawn(move || {
                if print_tids {
                    println!("thread {t} tid {}", nix::unistd::gettid());
                }
                for i in 0..share {
                    DEMO_EV.emit((t * (1 << 40) + i) as i64, "hello");
                }
            });
        }
    });
    let elapsed = start.elapsed();
    if args.catalog {
        emit_catalog();
    }
    if let Some(park) = args.park_in_event {
        emit_parked(park, args.park_payload_free);
    }
    if args.report {
        let per_event = elapsed.as_nanos() as f64 / args.events.max(1) as f64;
        eprintln!("{} events {per_event:.1} ns/event", args.events);
        if let RegistrationOutcome::Done { latency, .. } = registration {
            eprintln!("registration {} us", latency.as_micros());
        }
    }
    if args.wait {
        println!("emitted");
        let mut line = String::new();
        let _ = std::io::stdin().read_line(&mut line);
    }
    if args.abort {
        std::process::abort();
    }
}

/// Emits one event every `interval` until a line arrives on stdin (saying how many
/// so far every 100 with `progress`); reports how many.
fn emit_paced(interval: std::time::Duration, progress: bool) {
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let stopper = stop.clone();
    std::thread::spawn(move || {
        let mut line = String::new();
        let _ = std::io::stdin().read_line(&mut line);
        stopper.store(true, std::sync::atomic::Ordering::Relaxed);
    });
    let mut count = 0u64;
    while !stop.load(std::sync::atomic::Ordering::Relaxed) {
        DEMO_EV.emit(count as i64, "paced");
        count += 1;
        if progress && count.is_multiple_of(100) {
            eprintln!("paced: {count} emitted");
        }
        std::thread::sleep(interval);
    }
    println!("emitted {count}");
}

/// Forks a child that emits `events` events (recorded as its own process's) and
/// exits; waits for it.
fn fork_child(events: u64) {
    // SAFETY: the process has only this thread and the registration's listener
    // thread; the registration's fork handlers (ust::client) take its locks
    // around the fork and register the child as its own process before fork()
    // returns in it. The child then only emits events and leaves with `_exit`.
    match unsafe { nix::unistd::fork() } {
        Ok(nix::unistd::ForkResult::Child) => {
            for i in 0..events {
                DEMO_EV.emit(-1 - i as i64, "child");
            }
            // SAFETY: `_exit` ends the child at once, running no atexit handler that
            // the parent owns.
            unsafe { libc::_exit(0) };
        }
        Ok(nix::unistd::ForkResult::Parent { child }) => {
            let _ = nix::sys::wait::waitpid(child, None);
        }
        Err(e) => eprintln!("fork: {e}"),
    }
}
