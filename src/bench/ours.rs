//! One run against our own daemon: start it, run the apps, read the trace back,
//! print what was measured.

use super::apps::{Launched, launch};
use super::footprint::{Footprint, PeakSampler};
use super::latency::summarize;
use super::{ChurnArgs, ChurnMode};
use crate::cli::demo::{ask, start_daemon, start_session};
use crate::protocol::messages::{Buffering, ControlOk, ControlRequest, StatusReport};
use crate::trace::reader::{Reader, RecordKind, find_traces};
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

/// One run of ours.
#[derive(Debug)]
pub(super) struct OursRun {
    /// Buffering scheme.
    pub(super) mode: ChurnMode,
    /// Apps run.
    pub(super) apps: u32,
    /// Workers.
    pub(super) par: u32,
    /// From the first launch to the last exit.
    pub(super) wall: Duration,
    /// What the apps reported.
    pub(super) launched: Launched,
    /// Events the apps committed (0 without a session).
    pub(super) expected: u64,
    /// Events our reader read back.
    pub(super) recorded: u64,
    /// Events babeltrace2 printed (or why it failed), when asked.
    pub(super) babeltrace: Option<Result<u64, String>>,
    /// The daemon before the apps (session started).
    pub(super) before: Footprint,
    /// The daemon once every app is gone and its buffers are torn down.
    pub(super) after: Footprint,
    /// Highest (fds, mappings) seen while the apps ran.
    pub(super) peak: (usize, usize),
    /// Time to read the trace back: our reader, then babeltrace2 if run.
    pub(super) read_time: (Duration, Option<Duration>),
    /// The daemon's own registration service time (accept -> RegistrationDone),
    /// p50 and p99, as power-of-two upper bounds in microseconds.
    pub(super) service_us: Option<(u64, u64)>,
}

impl OursRun {
    /// Apps per second.
    pub(super) fn rate(&self) -> f64 {
        f64::from(self.apps) / self.wall.as_secs_f64()
    }
}

/// Starts a daemon, runs the apps in `mode`, reads the trace back, stops everything.
pub(super) fn run_ours(
    args: &ChurnArgs,
    mode: ChurnMode,
    apps: u32,
    par: u32,
) -> Result<OursRun, String> {
    let scratch = Scratch::new(mode)?;
    let rundir = scratch.0.join("run");
    let output = scratch.0.join("trace");
    std::fs::create_dir_all(&rundir).map_err(|e| format!("{}: {e}", rundir.display()))?;
    let daemon = start_daemon(&rundir, args.daemon_config.as_deref())?;
    let session = Some("churn".to_string());
    let buffers = match mode {
        ChurnMode::None => None,
        ChurnMode::Uid => Some(Buffering::PerUid),
        ChurnMode::Pid => Some(Buffering::PerPid),
    };
    if let Some(buffers) = buffers {
        start_session(
            &rundir,
            "churn",
            &output,
            &[("ch", buffers)],
            args.app.pattern(),
        )?;
    }
    let before_status = pool_full(&rundir)?;
    let before = Footprint::of(daemon.0.id())?;
    let sampler = PeakSampler::start(daemon.0.id());
    let started = Instant::now();
    let launched = launch(&rundir, args, apps, par);
    let wall = started.elapsed();
    let settled = launched.and_then(|l| settle(&rundir, mode, &before_status).map(|()| l));
    let peak = sampler.finish();
    let launched = settled?;
    let after = Footprint::of(daemon.0.id())?;
    let (now, then) = (
        status(&rundir)?.registration_service_us,
        before_status.registration_service_us,
    );
    let service_us = StatusReport::service_percentile(&now, &then, 0.5)
        .zip(StatusReport::service_percentile(&now, &then, 0.99));
    let (mut recorded, mut babeltrace, mut read_time) = (0, None, (Duration::ZERO, None));
    if buffers.is_some() {
        ask(&rundir, ControlRequest::Stop { session })?;
        let reading = Instant::now();
        recorded = count_events(&output)?;
        read_time.0 = reading.elapsed();
        if args.babeltrace || args.kill_fraction > 0.0 {
            let reading = Instant::now();
            babeltrace = Some(babeltrace_count(&output));
            read_time.1 = Some(reading.elapsed());
        }
    }
    drop(daemon);
    Ok(OursRun {
        mode,
        apps,
        par,
        wall,
        expected: if buffers.is_some() {
            u64::from(apps) * u64::from(args.events)
        } else {
            0
        },
        launched,
        recorded,
        babeltrace,
        before,
        after,
        peak,
        read_time,
        service_us,
    })
}

/// A fresh directory for one run, removed on drop.
struct Scratch(PathBuf);

impl Scratch {
    /// Creates `ustrace-bench-<pid>-<mode>-<n>` under the temp dir.
    fn new(mode: ChurnMode) -> Result<Scratch, String> {
        static NEXT: AtomicU32 = AtomicU32::new(0);
        let dir = std::env::temp_dir().join(format!(
            "ustrace-bench-{}-{}-{}",
            std::process::id(),
            mode.name(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
        Ok(Scratch(dir))
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// The daemon's status.
pub(super) fn status(rundir: &Path) -> Result<StatusReport, String> {
    match ask(rundir, ControlRequest::Status)? {
        ControlOk::Status(status) => Ok(*status),
        other => Err(format!("status answered {other:?}")),
    }
}

/// Waits, up to 30 s, for a daemon status that satisfies `done`; `what` names it
/// in the error.
fn wait_status(
    rundir: &Path,
    what: &str,
    done: impl Fn(&StatusReport) -> bool,
) -> Result<StatusReport, String> {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let now = status(rundir)?;
        if done(&now) {
            return Ok(now);
        }
        if Instant::now() > deadline {
            return Err(format!("30 s without {what}: {now:?}"));
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// Waits until the per-PID ring pool is full, so that footprints compare.
fn pool_full(rundir: &Path) -> Result<StatusReport, String> {
    wait_status(rundir, "a full per-PID ring pool", |s| {
        s.pid_sets_ready >= s.pid_sets_wanted
    })
}

/// Waits until the daemon has seen every app go and (per-PID) torn down its
/// buffers, and its ring pool is full again.
fn settle(rundir: &Path, mode: ChurnMode, before: &StatusReport) -> Result<(), String> {
    wait_status(rundir, "every app gone and torn down", |now| {
        now.apps == 0 && (mode != ChurnMode::Pid || now.buffer_sets <= before.buffer_sets)
    })?;
    pool_full(rundir).map(drop)
}

/// Events in the trace under `dir`, read with our reader.
fn count_events(dir: &Path) -> Result<u64, String> {
    let mut reader = Reader::open(dir).map_err(|e| e.to_string())?;
    let mut events = 0;
    while let Some(record) = reader.next_record().map_err(|e| e.to_string())? {
        events += u64::from(matches!(record.kind, RecordKind::Event(_)));
    }
    Ok(events)
}

/// Sub-traces per babeltrace2 run: babeltrace2 keeps every stream file of the
/// traces it reads open (at a 20,000-descriptor limit it fails after ~6,000 per-PID
/// traces), so large traces are counted in batches, which the sum does not change.
const BABELTRACE_BATCH: usize = 1000;

/// Events babeltrace2 prints for the trace under `dir`; fails if it reports an error.
fn babeltrace_count(dir: &Path) -> Result<u64, String> {
    let traces = find_traces(dir).map_err(|e| e.to_string())?;
    let dirs: Vec<&Path> = traces.iter().map(|t| t.dir.as_path()).collect();
    let mut events = 0;
    for batch in dirs.chunks(BABELTRACE_BATCH) {
        let out = Command::new("babeltrace2")
            .args(batch)
            .stdin(Stdio::null())
            .output()
            .map_err(|e| format!("cannot run babeltrace2: {e}"))?;
        if !out.status.success() {
            let stderr = String::from_utf8_lossy(&out.stderr);
            let first: Vec<&str> = stderr.lines().take(3).collect();
            return Err(format!(
                "babeltrace2 failed ({}): {}",
                out.status,
                first.join(" / ")
            ));
        }
        events += out
            .stdout
            .split(|b| *b == b'\n')
            .filter(|l| !l.is_empty())
            .count() as u64;
    }
    Ok(events)
}

/// Prints one run of ours.
pub(super) fn print_ours(run: &OursRun) {
    println!(
        "ours {}: {} apps, par {}: wall {:.3} s, {:.1} apps/s",
        run.mode.name(),
        run.apps,
        run.par,
        run.wall.as_secs_f64(),
        run.rate()
    );
    match summarize(run.launched.latencies_us.clone()) {
        Some(l) => println!(
            "  registration latency (connect -> RegistrationDone, {} apps): p50 {} us, p99 {} us, max {} us",
            run.launched.latencies_us.len(),
            l.p50,
            l.p99,
            l.max
        ),
        None => println!("  registration latency: no app registered"),
    }
    if let Some((p50, p99)) = run.service_us {
        println!(
            "  daemon service time (accept -> RegistrationDone, its own clock): p50 < {p50} us, p99 < {p99} us"
        );
    }
    if run.launched.untraced > 0 {
        println!("  {} apps ran untraced", run.launched.untraced);
    }
    if run.mode != ChurnMode::None {
        let mut line = format!(
            "  events: expected {}, recorded {}",
            run.expected, run.recorded
        );
        match &run.babeltrace {
            Some(Ok(b)) => {
                let _ = write!(line, ", babeltrace2 reads {b}");
            }
            Some(Err(e)) => {
                let _ = write!(line, ", {e}");
            }
            None => {}
        }
        if run.launched.killed > 0 {
            let _ = write!(
                line,
                " ({} apps SIGKILLed after emitting)",
                run.launched.killed
            );
        }
        println!("{line}");
        let babeltrace = run.read_time.1.map_or(String::new(), |t| {
            format!(", babeltrace2 {:.2} s", t.as_secs_f64())
        });
        println!(
            "  read back: ustrace reader {:.2} s{babeltrace}",
            run.read_time.0.as_secs_f64()
        );
    }
    let (b, a) = (&run.before, &run.after);
    println!(
        "  daemon before: rss {} kB, fds {}, maps {}; after: rss {} kB, fds {}, maps {}; peak: rss (VmHWM) {} kB, fds {}, maps {}",
        b.rss_kb, b.fds, b.maps, a.rss_kb, a.fds, a.maps, a.hwm_kb, run.peak.0, run.peak.1
    );
    let threads = a.cpu_since(b);
    let total: u64 = threads.iter().map(|(_, ms)| ms).sum();
    let each: Vec<String> = threads
        .iter()
        .map(|(name, ms)| format!("{name} {ms} ms"))
        .collect();
    println!(
        "  daemon CPU during the apps: {total} ms ({:.0} us/app): {}",
        total as f64 * 1000.0 / f64::from(run.apps.max(1)),
        each.join(", ")
    );
}

/// Checks what a run must satisfy: every event recorded, babeltrace2 agrees.
pub(super) fn check(run: &OursRun) -> Result<(), String> {
    if run.recorded != run.expected {
        return Err(format!(
            "{}: {} events recorded, {} expected",
            run.mode.name(),
            run.recorded,
            run.expected
        ));
    }
    match &run.babeltrace {
        Some(Ok(b)) if *b != run.expected => Err(format!(
            "{}: babeltrace2 read {b} events, {} expected",
            run.mode.name(),
            run.expected
        )),
        Some(Err(e)) => Err(e.clone()),
        _ => Ok(()),
    }
}
