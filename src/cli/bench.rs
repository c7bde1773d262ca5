//! `ustrace bench churn`: many short-lived apps against a private daemon.
//!
//! The workload of LTTng's anchor `churn.sh`: N apps, PAR workers each launching
//! apps one after the other, every app emitting a few events and exiting. It
//! prints the wall time, apps/s, the registration latency the apps measured
//! themselves (connect -> RegistrationDone, from `ustrace-demo --report`), events
//! expected against events read back from the trace, and the daemon's footprint
//! (RSS, peak RSS, fds, mappings) before and after the apps. `none` runs the
//! daemon with no session, the untraced baseline: the same launcher and the same
//! apps, so traced/untraced is a ratio of like with like.
//!
//! With `--compare-lttng` the anchor script `churn.sh` runs the same N, PAR and mode
//! (and `none`) in the same sitting; `--sweep` runs PAR 1..32 for every mode and
//! writes a CSV and, if gnuplot is installed, a PNG.

use crate::cli::demo::{Spawned, ask, sibling, start_daemon, start_session};
use crate::config::Config;
use crate::ctf::reader::{Reader, RecordKind};
use crate::protocol::messages::{Buffers, ControlOk, ControlRequest, StatusReport};
use clap::{Args, Subcommand, ValueEnum};
use std::fmt::Write as _;
use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// `ustrace bench` options.
#[derive(Args, Debug)]
pub struct BenchArgs {
    /// Which benchmark.
    #[command(subcommand)]
    command: BenchCommand,
}

/// The benchmarks.
#[derive(Subcommand, Debug)]
enum BenchCommand {
    /// N short-lived apps, PAR at a time, against a private daemon.
    Churn(ChurnArgs),
}

/// How the apps are traced.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum ChurnMode {
    /// Daemon running, no session: the untraced baseline.
    None,
    /// One per-UID channel: the apps share one ring set.
    Uid,
    /// One per-PID channel: every app gets its own ring set.
    Pid,
}

impl ChurnMode {
    /// The name `churn.sh` and the output use.
    fn name(self) -> &'static str {
        match self {
            ChurnMode::None => "none",
            ChurnMode::Uid => "uid",
            ChurnMode::Pid => "pid",
        }
    }
}

/// The program `ustrace bench churn` launches.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum ChurnApp {
    /// `ustrace-demo` (events `demo:ev`).
    Rust,
    /// `--c-app`, the C program of examples/c/app.c (events `bench:ev`).
    C,
}

/// `ustrace bench churn` options.
#[derive(Args, Debug)]
struct ChurnArgs {
    /// Apps to run in all.
    #[arg(long, default_value_t = 200)]
    apps: u32,
    /// Workers launching apps one after the other (apps running at once).
    #[arg(long, default_value_t = 4)]
    par: u32,
    /// Buffering scheme; `none` runs the daemon with no session.
    #[arg(long, value_enum, default_value_t = ChurnMode::Pid)]
    mode: ChurnMode,
    /// Events each app emits.
    #[arg(long, default_value_t = 1)]
    events: u32,
    /// Fraction of apps SIGKILLed right after they print `emitted` (0..=1).
    #[arg(long, default_value_t = 0.0)]
    kill_fraction: f64,
    /// Seed of the choice of apps to kill.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Also run `none` with the same apps and print traced/untraced.
    #[arg(long)]
    baseline: bool,
    /// Also run LTTng's `churn.sh` (same N, PAR, mode, and `none`) and print ratios.
    #[arg(long)]
    compare_lttng: bool,
    /// Directory of LTTng's anchor scripts (default: ../shared/anchors/lttng from
    /// the repository root).
    #[arg(long)]
    anchor_dir: Option<PathBuf>,
    /// Also count the trace's events with babeltrace2 (always done with
    /// --kill-fraction).
    #[arg(long)]
    babeltrace: bool,
    /// Run PAR 1, 2, 4, 8, 16, 32 for none, uid and pid (and LTTng with
    /// --compare-lttng) and print a table.
    #[arg(long)]
    sweep: bool,
    /// Apps per LTTng per-PID run in a sweep (LTTng registers a per-PID app in
    /// ~200 ms, so full-size runs would take minutes).
    #[arg(long, default_value_t = 40)]
    lttng_pid_apps: u32,
    /// Where the sweep writes its CSV (default: the plot's path with .csv, else
    /// churn.csv).
    #[arg(long)]
    csv: Option<PathBuf>,
    /// Where the sweep writes its PNG (needs gnuplot).
    #[arg(long)]
    plot: Option<PathBuf>,
    /// Runs (with --baseline: untraced and traced pairs, alternating) to repeat;
    /// prints each and the median, and compares the median one with LTTng.
    #[arg(long, default_value_t = 1)]
    repeat: u32,
    /// Which app to churn: the Rust `ustrace-demo`, or the C program of
    /// examples/c/app.c (given with `--c-app`; events `bench:ev`, as LTTng's anchor).
    #[arg(long, value_enum, default_value_t = ChurnApp::Rust)]
    app: ChurnApp,
    /// The built examples/c/app.c, for `--app c` (see docs/c-api.md).
    #[arg(long)]
    c_app: Option<PathBuf>,
    /// Config file for the benchmark's own ustraced (e.g. `warm_pid_buffer_sets = 0`
    /// to compare); its `runtime_dir` must be empty. Default: built-in defaults.
    #[arg(long)]
    daemon_config: Option<PathBuf>,
}

/// Runs `ustrace bench`.
pub fn run(args: &BenchArgs) -> ExitCode {
    let BenchCommand::Churn(churn) = &args.command;
    let outcome = check_daemon_config(churn).and_then(|()| {
        if churn.sweep {
            sweep(churn)
        } else {
            single(churn)
        }
    });
    match outcome {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("Error: {e}");
            ExitCode::FAILURE
        }
    }
}

/// Refuses a `--daemon-config` that does not load, or that would move the
/// daemon's sockets away from the private runtime directory the benchmark uses.
fn check_daemon_config(args: &ChurnArgs) -> Result<(), String> {
    let Some(path) = &args.daemon_config else {
        return Ok(());
    };
    let config = Config::load(path).map_err(|e| format!("--daemon-config: {e}"))?;
    if config.daemon.runtime_dir.is_some() {
        return Err(format!(
            "--daemon-config {}: daemon.runtime_dir must be empty (the benchmark gives its daemon a private one)",
            path.display()
        ));
    }
    Ok(())
}

/// Registration latencies summarised, in microseconds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Latency {
    /// Median.
    p50: u64,
    /// 99th percentile.
    p99: u64,
    /// Worst.
    max: u64,
}

/// The nearest-rank percentile `p` (0..=100) of sorted, non-empty `sorted`.
fn percentile(sorted: &[u64], p: f64) -> u64 {
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

/// p50, p99 and max of `values`, or `None` if there are none.
fn summarize(mut values: Vec<u64>) -> Option<Latency> {
    values.sort_unstable();
    let max = *values.last()?;
    Some(Latency {
        p50: percentile(&values, 50.0),
        p99: percentile(&values, 99.0),
        max,
    })
}

/// The `registration X us` line of `ustrace-demo --report`.
fn parse_registration_us(stderr: &str) -> Option<u64> {
    stderr.lines().find_map(|line| {
        line.strip_prefix("registration ")?
            .strip_suffix(" us")?
            .parse()
            .ok()
    })
}

/// A daemon's memory, descriptor counts and CPU time per thread, from /proc.
#[derive(Clone, Debug)]
struct Footprint {
    /// Resident set (VmRSS), kB.
    rss_kb: u64,
    /// Peak resident set since start (VmHWM), kB.
    hwm_kb: u64,
    /// Open file descriptors.
    fds: usize,
    /// Memory mappings (lines of /proc/PID/maps).
    maps: usize,
    /// CPU time (user + system, ms) used so far by each thread, by thread name.
    cpu_ms: Vec<(String, u64)>,
}

impl Footprint {
    /// Reads the footprint of process `pid`.
    fn of(pid: u32) -> Result<Footprint, String> {
        let proc = PathBuf::from(format!("/proc/{pid}"));
        let read = |name: &str| {
            std::fs::read_to_string(proc.join(name))
                .map_err(|e| format!("reading /proc/{pid}/{name}: {e}"))
        };
        let status = read("status")?;
        let kb = |key: &str| {
            status
                .lines()
                .find_map(|l| {
                    l.strip_prefix(key)?
                        .trim()
                        .strip_suffix(" kB")?
                        .parse()
                        .ok()
                })
                .ok_or_else(|| format!("no {key} in /proc/{pid}/status"))
        };
        let fds = std::fs::read_dir(proc.join("fd"))
            .map_err(|e| format!("reading /proc/{pid}/fd: {e}"))?
            .count();
        Ok(Footprint {
            rss_kb: kb("VmRSS:")?,
            hwm_kb: kb("VmHWM:")?,
            fds,
            maps: read("maps")?.lines().count(),
            cpu_ms: threads_cpu_ms(pid)?,
        })
    }

    /// CPU ms each thread used since `before` (threads born meanwhile count from 0).
    fn cpu_since(&self, before: &Footprint) -> Vec<(String, u64)> {
        self.cpu_ms
            .iter()
            .map(|(name, ms)| {
                let earlier = before.cpu_ms.iter().find(|(n, _)| n == name);
                (name.clone(), ms - earlier.map_or(0, |(_, e)| (*e).min(*ms)))
            })
            .collect()
    }
}

/// User + system CPU ms of each thread of `pid`, summed by thread name.
fn threads_cpu_ms(pid: u32) -> Result<Vec<(String, u64)>, String> {
    let tasks = format!("/proc/{pid}/task");
    let mut by_name: Vec<(String, u64)> = Vec::new();
    for task in std::fs::read_dir(&tasks).map_err(|e| format!("reading {tasks}: {e}"))? {
        let Ok(task) = task else { continue };
        // A thread that ended since read_dir has no stat any more: it is skipped.
        let Ok(stat) = std::fs::read_to_string(task.path().join("stat")) else {
            continue;
        };
        let Some((name, ticks)) = parse_task_stat(&stat) else {
            return Err(format!("unexpected {}/stat: {stat}", task.path().display()));
        };
        let ms = ticks * 1000 / clock_ticks_per_second();
        match by_name.iter_mut().find(|(n, _)| *n == name) {
            Some((_, total)) => *total += ms,
            None => by_name.push((name, ms)),
        }
    }
    by_name.sort();
    Ok(by_name)
}

/// The thread name and utime + stime (clock ticks) of a /proc/PID/task/TID/stat line.
fn parse_task_stat(stat: &str) -> Option<(String, u64)> {
    let open = stat.find('(')?;
    let close = stat.rfind(')')?;
    let name = stat.get(open + 1..close)?.to_string();
    // Fields after the name start with the state (field 3); utime and stime are
    // fields 14 and 15.
    let mut fields = stat.get(close + 1..)?.split_whitespace().skip(11);
    let utime: u64 = fields.next()?.parse().ok()?;
    let stime: u64 = fields.next()?.parse().ok()?;
    Some((name, utime + stime))
}

/// The kernel's clock tick rate, in which /proc reports CPU time.
fn clock_ticks_per_second() -> u64 {
    // SAFETY: sysconf only reads a configuration value; it has no memory effects.
    let ticks = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    u64::try_from(ticks).ok().filter(|&t| t > 0).unwrap_or(100)
}

/// Samples a daemon's fd and mapping counts while the apps run, keeping the peaks:
/// per-PID buffers live until their writers are done, so the peak shows a backlog
/// that the counts after the run no longer do.
struct PeakSampler {
    /// Set to end the sampling.
    stop: Arc<AtomicBool>,
    /// The sampling thread; yields (peak fds, peak mappings).
    thread: JoinHandle<(usize, usize)>,
}

impl PeakSampler {
    /// How often the counts are read; /proc/PID/fd of a busy daemon is long.
    const PERIOD: Duration = Duration::from_millis(100);

    /// Starts sampling process `pid`.
    fn start(pid: u32) -> PeakSampler {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = Arc::clone(&stop);
        let thread = std::thread::spawn(move || {
            let (mut fds, mut maps) = (0, 0);
            while !flag.load(Ordering::Relaxed) {
                if let Ok(dir) = std::fs::read_dir(format!("/proc/{pid}/fd")) {
                    fds = fds.max(dir.count());
                }
                if let Ok(text) = std::fs::read_to_string(format!("/proc/{pid}/maps")) {
                    maps = maps.max(text.lines().count());
                }
                std::thread::sleep(Self::PERIOD);
            }
            (fds, maps)
        });
        PeakSampler { stop, thread }
    }

    /// Stops sampling and gives (peak fds, peak mappings).
    fn finish(self) -> (usize, usize) {
        self.stop.store(true, Ordering::Relaxed);
        self.thread.join().unwrap_or_default()
    }
}

/// What the apps of one run reported.
#[derive(Debug, Default)]
struct Launched {
    /// Registration latencies, µs, of the apps that registered.
    latencies_us: Vec<u64>,
    /// Apps that ran untraced (no `registration` line).
    untraced: u32,
    /// Apps SIGKILLed after `emitted`.
    killed: u32,
}

/// Whether app `index` is one of the `fraction` to kill (splitmix64 of seed and index).
fn chosen_to_kill(seed: u64, index: u32, fraction: f64) -> bool {
    let mut z = seed
        .wrapping_add(u64::from(index).wrapping_mul(0x9E37_79B9_7F4A_7C15))
        .wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^= z >> 31;
    ((z >> 11) as f64 / (1u64 << 53) as f64) < fraction
}

/// Runs one app to its end (or kills it after `emitted`); gives its latency.
fn run_app(args: &ChurnArgs, rundir: &Path, kill: bool) -> Result<Option<u64>, String> {
    let events = args.events.to_string();
    let (app, mut command) = match (args.app, &args.c_app) {
        (ChurnApp::Rust, _) => {
            let app = sibling("ustrace-demo")?;
            let mut command = Command::new(&app);
            command.args(["--events", &events, "--report"]);
            (app, command)
        }
        (ChurnApp::C, Some(app)) => {
            let mut command = Command::new(app);
            // libustrace prints `registration N us` as `--report` does.
            command.arg(&events).env("USTRACE_REPORT_REGISTRATION", "1");
            (app.clone(), command)
        }
        (ChurnApp::C, None) => return Err("--app c needs --c-app PATH".to_string()),
    };
    command.env("USTRACE_RUNDIR", rundir).stderr(Stdio::piped());
    if kill {
        command
            .arg("--wait")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped());
    } else {
        command.stdin(Stdio::null()).stdout(Stdio::null());
    }
    let mut child = Spawned(
        command
            .spawn()
            .map_err(|e| format!("cannot start {}: {e}", app.display()))?,
    );
    if kill {
        let stdout = child.0.stdout.take().ok_or("no stdout pipe")?;
        let mut line = String::new();
        BufReader::new(stdout)
            .read_line(&mut line)
            .map_err(|e| format!("reading ustrace-demo's stdout: {e}"))?;
        if line.trim() != "emitted" {
            return Err(format!("ustrace-demo printed {line:?} instead of emitted"));
        }
        child
            .0
            .kill()
            .map_err(|e| format!("killing ustrace-demo: {e}"))?;
    }
    let mut stderr = String::new();
    child
        .0
        .stderr
        .take()
        .ok_or("no stderr pipe")?
        .read_to_string(&mut stderr)
        .map_err(|e| format!("reading ustrace-demo's stderr: {e}"))?;
    let status = child.0.wait().map_err(|e| e.to_string())?;
    if !kill && !status.success() {
        return Err(format!("ustrace-demo exited with {status}: {stderr}"));
    }
    Ok(parse_registration_us(&stderr))
}

/// Runs `apps` apps with `par` workers launching one after the other.
fn launch(rundir: &Path, args: &ChurnArgs, apps: u32, par: u32) -> Result<Launched, String> {
    let next = AtomicU32::new(0);
    let result = Mutex::new(Ok(Launched::default()));
    std::thread::scope(|scope| {
        for _ in 0..par.max(1) {
            scope.spawn(|| {
                loop {
                    let index = next.fetch_add(1, Ordering::Relaxed);
                    if index >= apps {
                        return;
                    }
                    let kill = chosen_to_kill(args.seed, index, args.kill_fraction);
                    let outcome = run_app(args, rundir, kill);
                    let mut guard = result.lock().unwrap_or_else(|p| p.into_inner());
                    let Ok(launched) = guard.as_mut() else {
                        return;
                    };
                    match outcome {
                        Ok(Some(us)) => launched.latencies_us.push(us),
                        Ok(None) => launched.untraced += 1,
                        Err(e) => {
                            *guard = Err(e);
                            next.store(apps, Ordering::Relaxed);
                            return;
                        }
                    }
                    launched.killed += u32::from(kill);
                }
            });
        }
    });
    result.into_inner().unwrap_or_else(|p| p.into_inner())
}

/// One run of ours.
#[derive(Debug)]
struct OursRun {
    /// Buffering scheme.
    mode: ChurnMode,
    /// Apps run.
    apps: u32,
    /// Workers.
    par: u32,
    /// From the first launch to the last exit.
    wall: Duration,
    /// What the apps reported.
    launched: Launched,
    /// Events the apps committed (0 without a session).
    expected: u64,
    /// Events our reader read back.
    recorded: u64,
    /// Events babeltrace2 printed (or why it failed), when asked.
    babeltrace: Option<Result<u64, String>>,
    /// The daemon before the apps (session started).
    before: Footprint,
    /// The daemon once every app is gone and its buffers are torn down.
    after: Footprint,
    /// Highest (fds, mappings) seen while the apps ran.
    peak: (usize, usize),
    /// Time to read the trace back: our reader, then babeltrace2 if run.
    read_time: (Duration, Option<Duration>),
    /// The daemon's own registration service time (accept -> RegistrationDone),
    /// p50 and p99, as power-of-two upper bounds in microseconds.
    service_us: Option<(u64, u64)>,
}

impl OursRun {
    /// Apps per second.
    fn rate(&self) -> f64 {
        f64::from(self.apps) / self.wall.as_secs_f64()
    }
}

/// Starts a daemon, runs the apps in `mode`, reads the trace back, stops everything.
fn run_ours(args: &ChurnArgs, mode: ChurnMode, apps: u32, par: u32) -> Result<OursRun, String> {
    let scratch = Scratch::new(mode)?;
    let rundir = scratch.0.join("run");
    let output = scratch.0.join("trace");
    std::fs::create_dir_all(&rundir).map_err(|e| format!("{}: {e}", rundir.display()))?;
    let daemon = start_daemon(&rundir, args.daemon_config.as_deref())?;
    let session = Some("churn".to_string());
    let buffers = match mode {
        ChurnMode::None => None,
        ChurnMode::Uid => Some(Buffers::PerUid),
        ChurnMode::Pid => Some(Buffers::PerPid),
    };
    if let Some(buffers) = buffers {
        let pattern = match args.app {
            ChurnApp::Rust => "demo:*",
            ChurnApp::C => "bench:*",
        };
        start_session(&rundir, "churn", &output, &[("ch", buffers)], pattern)?;
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
fn status(rundir: &Path) -> Result<StatusReport, String> {
    match ask(rundir, ControlRequest::Status)? {
        ControlOk::Status(status) => Ok(status),
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
    let traces = crate::ctf::reader::find_traces(dir).map_err(|e| e.to_string())?;
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

/// One run of LTTng's `churn.sh`.
#[derive(Debug, PartialEq)]
struct LttngRun {
    /// `wall_s=`.
    wall_s: f64,
    /// `recorded:` (absent for `none`).
    recorded: Option<u64>,
}

/// Reads `wall_s=` and `recorded:` from churn.sh's output.
fn parse_churn_sh(stdout: &str) -> Option<LttngRun> {
    let wall_s = stdout
        .split_whitespace()
        .find_map(|w| w.strip_prefix("wall_s="))?
        .parse()
        .ok()?;
    let recorded = stdout
        .lines()
        .find_map(|l| l.strip_prefix("recorded:")?.trim().parse().ok());
    Some(LttngRun { wall_s, recorded })
}

/// The anchor directory: the option, else ../shared/anchors/lttng beside the repo.
fn anchor_dir(args: &ChurnArgs) -> PathBuf {
    args.anchor_dir
        .clone()
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/anchors/lttng"))
}

/// Why LTTng cannot be compared here, if it cannot.
fn lttng_missing(anchor: &Path) -> Option<String> {
    let installed = Command::new("lttng")
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !installed {
        Some("lttng is not installed".into())
    } else if !anchor.join("churn.sh").is_file() {
        Some(format!(
            "no churn.sh in {} (see --anchor-dir)",
            anchor.display()
        ))
    } else {
        None
    }
}

/// Runs `churn.sh apps par mode`.
fn run_lttng(anchor: &Path, apps: u32, par: u32, mode: ChurnMode) -> Result<LttngRun, String> {
    let out = Command::new("bash")
        .arg(anchor.join("churn.sh"))
        .args([apps.to_string(), par.to_string(), mode.name().to_string()])
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("cannot run churn.sh: {e}"))?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    if !out.status.success() {
        return Err(format!(
            "churn.sh {apps} {par} {} failed ({}): {}",
            mode.name(),
            out.status,
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    parse_churn_sh(&stdout).ok_or_else(|| format!("no wall_s= in churn.sh's output: {stdout}"))
}

/// Prints one run of ours.
fn print_ours(run: &OursRun) {
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
fn check(run: &OursRun) -> Result<(), String> {
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

/// `ustrace bench churn` without `--sweep`.
fn single(args: &ChurnArgs) -> Result<(), String> {
    if args.app == ChurnApp::C && args.kill_fraction > 0.0 {
        return Err("--kill-fraction needs --app rust (the C app has no --wait)".to_string());
    }
    if !(0.0..=1.0).contains(&args.kill_fraction) {
        return Err(format!(
            "--kill-fraction {} is not in 0..=1",
            args.kill_fraction
        ));
    }
    let traced = args.mode != ChurnMode::None;
    let with_baseline = traced && (args.baseline || args.compare_lttng);
    // (ratio to the untraced run just before, if any; the traced run)
    let mut pairs: Vec<(Option<f64>, OursRun)> = Vec::new();
    for _ in 0..args.repeat.max(1) {
        let baseline = if with_baseline {
            let run = run_ours(args, ChurnMode::None, args.apps, args.par)?;
            print_ours(&run);
            Some(run.wall)
        } else {
            None
        };
        let ours = run_ours(args, args.mode, args.apps, args.par)?;
        print_ours(&ours);
        let ratio = baseline.map(|base| ours.wall.as_secs_f64() / base.as_secs_f64());
        if let Some(ratio) = ratio {
            println!("ours traced/untraced wall: {ratio:.2}");
        }
        check(&ours)?;
        pairs.push((ratio, ours));
    }
    sort_pairs(&mut pairs);
    let median = &pairs[(pairs.len() - 1) / 2];
    if pairs.len() > 1 {
        let ratios: Vec<String> = pairs
            .iter()
            .filter_map(|(r, _)| r.map(|r| format!("{r:.2}")))
            .collect();
        let walls: Vec<String> = pairs
            .iter()
            .map(|(_, run)| format!("{:.3}", run.wall.as_secs_f64()))
            .collect();
        match median.0 {
            Some(ratio) => println!(
                "ours traced/untraced wall, median of {} alternating pairs: {ratio:.2} (sorted: {})",
                pairs.len(),
                ratios.join(", ")
            ),
            None => println!(
                "ours wall, median of {} runs: {:.3} s (sorted: {})",
                pairs.len(),
                median.1.wall.as_secs_f64(),
                walls.join(", ")
            ),
        }
    }
    if args.compare_lttng {
        let anchor = anchor_dir(args);
        match lttng_missing(&anchor) {
            Some(why) => println!("LTTng comparison skipped: {why}"),
            None => compare_lttng(&anchor, &median.1, median.0)?,
        }
    }
    Ok(())
}

/// Sorts `pairs` by ratio (by wall when there is none), so that the middle one
/// (the lower middle one of an even count) is the median.
fn sort_pairs(pairs: &mut [(Option<f64>, OursRun)]) {
    let key = |p: &(Option<f64>, OursRun)| p.0.unwrap_or(p.1.wall.as_secs_f64());
    pairs.sort_by(|a, b| key(a).total_cmp(&key(b)));
}

/// Runs churn.sh for the mode of `ours` and, given ours' traced/untraced `ratio`,
/// `none` too; prints both and the ratios.
fn compare_lttng(anchor: &Path, ours: &OursRun, ratio: Option<f64>) -> Result<(), String> {
    let lttng = run_lttng(anchor, ours.apps, ours.par, ours.mode)?;
    let recorded = lttng
        .recorded
        .map_or(String::new(), |r| format!(", recorded {r}"));
    println!(
        "lttng {}: {} apps, par {}: wall {:.3} s, {:.1} apps/s{recorded}",
        ours.mode.name(),
        ours.apps,
        ours.par,
        lttng.wall_s,
        f64::from(ours.apps) / lttng.wall_s
    );
    println!(
        "ours/lttng wall: {:.3}",
        ours.wall.as_secs_f64() / lttng.wall_s
    );
    if let Some(ratio) = ratio {
        let untraced = run_lttng(anchor, ours.apps, ours.par, ChurnMode::None)?;
        println!(
            "lttng none: wall {:.3} s; traced/untraced wall: ours {ratio:.2}, lttng {:.2}",
            untraced.wall_s,
            lttng.wall_s / untraced.wall_s
        );
    }
    Ok(())
}

/// One point of the sweep.
struct SweepRow {
    /// `ours` or `lttng`.
    system: &'static str,
    /// Buffering scheme.
    mode: ChurnMode,
    /// Workers.
    par: u32,
    /// Apps run.
    apps: u32,
    /// Wall time, s.
    wall_s: f64,
    /// Registration latency (ours only: LTTng's apps do not report it).
    latency: Option<Latency>,
    /// Events expected.
    expected: Option<u64>,
    /// Events recorded.
    recorded: Option<u64>,
}

/// Apps per `xargs -n` batch in churn.sh: it runs at most ceil(N / 25) workers.
const CHURN_SH_BATCH: u32 = 25;

/// The PAR values of a sweep.
const SWEEP_PAR: [u32; 6] = [1, 2, 4, 8, 16, 32];

/// `ustrace bench churn --sweep`.
fn sweep(args: &ChurnArgs) -> Result<(), String> {
    let modes = [ChurnMode::None, ChurnMode::Uid, ChurnMode::Pid];
    let mut rows = Vec::new();
    for mode in modes {
        for par in SWEEP_PAR {
            let run = run_ours(args, mode, args.apps, par)?;
            print_ours(&run);
            check(&run)?;
            rows.push(SweepRow {
                system: "ours",
                mode,
                par,
                apps: args.apps,
                wall_s: run.wall.as_secs_f64(),
                latency: summarize(run.launched.latencies_us.clone()),
                expected: (mode != ChurnMode::None).then_some(run.expected),
                recorded: (mode != ChurnMode::None).then_some(run.recorded),
            });
        }
    }
    if args.compare_lttng {
        let anchor = anchor_dir(args);
        match lttng_missing(&anchor) {
            Some(why) => println!("LTTng sweep skipped: {why}"),
            None => {
                for mode in modes {
                    let apps = if mode == ChurnMode::Pid {
                        println!(
                            "lttng pid: {} apps per run instead of {} (~200 ms per app)",
                            args.lttng_pid_apps, args.apps
                        );
                        args.lttng_pid_apps
                    } else {
                        args.apps
                    };
                    for par in SWEEP_PAR {
                        let run = run_lttng(&anchor, apps, par, mode)?;
                        println!(
                            "lttng {}: {apps} apps, par {par} (at most {} at once: churn.sh gives each worker {CHURN_SH_BATCH} apps): wall {:.3} s, {:.1} apps/s",
                            mode.name(),
                            par.min(apps.div_ceil(CHURN_SH_BATCH)),
                            run.wall_s,
                            f64::from(apps) / run.wall_s
                        );
                        rows.push(SweepRow {
                            system: "lttng",
                            mode,
                            par,
                            apps,
                            wall_s: run.wall_s,
                            latency: None,
                            expected: (mode != ChurnMode::None).then_some(u64::from(apps)),
                            recorded: run.recorded,
                        });
                    }
                }
            }
        }
    }
    let csv_path = args.csv.clone().unwrap_or_else(|| {
        args.plot
            .as_ref()
            .map_or_else(|| PathBuf::from("churn.csv"), |p| p.with_extension("csv"))
    });
    let table = csv(&rows);
    print!("{table}");
    std::fs::write(&csv_path, &table).map_err(|e| format!("{}: {e}", csv_path.display()))?;
    println!("table written to {}", csv_path.display());
    if let Some(png) = &args.plot {
        plot(&rows, png)?;
    }
    Ok(())
}

/// The sweep as CSV, with a header line.
fn csv(rows: &[SweepRow]) -> String {
    let opt = |v: Option<u64>| v.map_or(String::new(), |v| v.to_string());
    let mut out = String::from(
        "system,mode,par,apps,wall_s,apps_per_s,p50_us,p99_us,max_us,expected,recorded\n",
    );
    for r in rows {
        let _ = writeln!(
            out,
            "{},{},{},{},{:.4},{:.1},{},{},{},{},{}",
            r.system,
            r.mode.name(),
            r.par,
            r.apps,
            r.wall_s,
            f64::from(r.apps) / r.wall_s,
            opt(r.latency.map(|l| l.p50)),
            opt(r.latency.map(|l| l.p99)),
            opt(r.latency.map(|l| l.max)),
            opt(r.expected),
            opt(r.recorded)
        );
    }
    out
}

/// Plots apps/s and p99 registration latency against PAR with gnuplot.
fn plot(rows: &[SweepRow], png: &Path) -> Result<(), String> {
    let gnuplot = Command::new("gnuplot")
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status();
    if !gnuplot.is_ok_and(|s| s.success()) {
        println!(
            "gnuplot is missing (Debian: apt-get install gnuplot-nox): no plot written; the table above and the CSV have the figures"
        );
        return Ok(());
    }
    let mut script = String::new();
    // (datablock name, title, line style, is ours): one colour per mode, solid
    // lines for ours and dashed ones for LTTng, the same in both panels.
    let mut series = Vec::new();
    for system in ["ours", "lttng"] {
        for mode in [ChurnMode::None, ChurnMode::Uid, ChurnMode::Pid] {
            let points: Vec<&SweepRow> = rows
                .iter()
                .filter(|r| r.system == system && r.mode == mode)
                .collect();
            let Some(first) = points.first() else {
                continue;
            };
            let name = format!("{system}_{}", mode.name());
            let _ = writeln!(script, "${name} << EOD");
            for r in &points {
                let p99 = r.latency.map_or("NaN".to_string(), |l| l.p99.to_string());
                let _ = writeln!(
                    script,
                    "{} {:.1} {p99}",
                    r.par,
                    f64::from(r.apps) / r.wall_s
                );
            }
            let _ = writeln!(script, "EOD");
            let colour = match mode {
                ChurnMode::None => "#555555",
                ChurnMode::Uid => "#1f77b4",
                ChurnMode::Pid => "#d62728",
            };
            let (dash, point) = if system == "ours" { (1, 7) } else { (2, 6) };
            series.push((
                name,
                format!("{system} {} ({} apps)", mode.name(), first.apps),
                format!("lw 2 lc rgb '{colour}' dt {dash} pt {point}"),
                system == "ours",
            ));
        }
    }
    let _ = writeln!(
        script,
        "set terminal pngcairo size 1200,520 noenhanced\nset output '{}'\nset multiplot layout 1,2 title 'ustrace bench churn: short-lived apps, 2-core machine'\nset logscale x 2\nset xlabel 'PAR (apps launched at once)'\nset key below\nset grid\nset ylabel 'apps/s'\nset logscale y 10",
        png.display()
    );
    let throughput: Vec<String> = series
        .iter()
        .map(|(name, title, style, _)| {
            format!("${name} using 1:2 with linespoints {style} title '{title}'")
        })
        .collect();
    let _ = writeln!(script, "plot {}", throughput.join(", "));
    let latency: Vec<String> = series
        .iter()
        .filter(|(_, _, _, ours)| *ours)
        .map(|(name, title, style, _)| {
            format!("${name} using 1:3 with linespoints {style} title '{title}'")
        })
        .collect();
    let _ = writeln!(
        script,
        "set ylabel 'p99 registration latency, app-measured (us)'\nplot {}\nunset multiplot",
        latency.join(", ")
    );
    let script_path = png.with_extension("gp");
    std::fs::write(&script_path, &script).map_err(|e| format!("{}: {e}", script_path.display()))?;
    let out = Command::new("gnuplot")
        .arg(&script_path)
        .output()
        .map_err(|e| format!("cannot run gnuplot: {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "gnuplot failed on {}: {}",
            script_path.display(),
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    println!(
        "plot written to {} (script {})",
        png.display(),
        script_path.display()
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_use_the_nearest_rank() {
        let values: Vec<u64> = (1..=100).rev().collect();
        let l = summarize(values).expect("non-empty");
        assert_eq!((l.p50, l.p99, l.max), (50, 99, 100));
        let one = summarize(vec![7]).expect("non-empty");
        assert_eq!((one.p50, one.p99, one.max), (7, 7, 7));
        assert_eq!(percentile(&[1, 2, 3], 99.0), 3);
        assert_eq!(percentile(&[1, 2, 3], 0.0), 1);
        assert!(summarize(Vec::new()).is_none());
    }

    #[test]
    fn registration_latency_is_read_from_the_app_report() {
        let stderr = "1 events 812.0 ns/event\nregistration 345 us\n";
        assert_eq!(parse_registration_us(stderr), Some(345));
        assert_eq!(
            parse_registration_us("ustrace: x runs untraced: no daemon\n"),
            None
        );
    }

    #[test]
    fn thread_cpu_is_read_from_proc_stat() {
        let stat = "4242 (actix-rt|system:0|arbiter:1) S 1 4242 4242 0 -1 4194368 \
                    120 0 0 0 37 5 0 0 20 0 3 0 512 1000 200 18446744073709551615";
        assert_eq!(
            parse_task_stat(stat),
            Some(("actix-rt|system:0|arbiter:1".to_string(), 42))
        );
        assert_eq!(parse_task_stat("7 (a) b) S 1"), None);
        let own = threads_cpu_ms(std::process::id()).expect("own threads");
        assert!(!own.is_empty());
    }

    #[test]
    fn churn_sh_output_is_parsed() {
        let out = "mode=pid apps=200 par=4 wall_s=37.61 apps_per_s=5.317\nrecorded: 200\n";
        assert_eq!(
            parse_churn_sh(out),
            Some(LttngRun {
                wall_s: 37.61,
                recorded: Some(200)
            })
        );
        let none = "mode=none apps=10 par=4 wall_s=.0312 apps_per_s=320.5\n";
        assert_eq!(
            parse_churn_sh(none),
            Some(LttngRun {
                wall_s: 0.0312,
                recorded: None
            })
        );
        assert_eq!(parse_churn_sh("nothing"), None);
    }

    #[test]
    fn kill_choice_follows_the_fraction() {
        let chosen = (0..10_000).filter(|&i| chosen_to_kill(42, i, 0.2)).count();
        assert!((1_800..2_200).contains(&chosen), "{chosen} of 10000 chosen");
        assert!(!(0..1000).any(|i| chosen_to_kill(42, i, 0.0)));
        assert!((0..1000).all(|i| chosen_to_kill(42, i, 1.0)));
    }
}
