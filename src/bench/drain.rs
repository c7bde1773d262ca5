//! `ustrace bench drain`: how fast each tracer's daemon stores what paced producers
//! emit, and what that costs it.
//!
//! The same C program (examples/c/paced.c, one event `bench:ev(int, string)`) is
//! built against libustrace and against liblttng-ust (LTTng's anchor `tp.h`/`tp.c`);
//! N copies run at once, each at a fixed rate for a few seconds, into one per-UID
//! channel at each tracer's default geometry (or the one given) and with its default
//! contexts (ours vpid and vtid, LTTng's none), or with `--contexts` the same ones
//! for both, so that both store the same information per event. Each rate step runs
//! ours, then LTTng, in the same sitting, each with a fresh session and once the
//! previous step's data is written back (`syncfs`). It first prints what the
//! scratch directory's device does with `O_DIRECT` writes (throughput, slowest
//! write), which bounds our drain and moves between sittings. Per step and system
//! it prints the rate the producers reached, the events the tracer counted
//! discarded, the bytes stored, and the daemon's CPU time (utime + stime from
//! /proc/PID/stat, from before the producers start to `stop` returning; LTTng:
//! lttng-sessiond plus every lttng-consumerd) per MB stored; then, for each, the
//! highest reached rate with nothing discarded, and the ratios.

use super::footprint::process_cpu_ms;
use super::ours::status;
use crate::cli::demo::{Spawned, ask, start_daemon};
use crate::ctf::context::ContextType;
use crate::protocol::messages::{Buffering, ChannelRequest, ControlRequest};
use clap::Args;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// `ustrace bench drain` options.
#[derive(Args, Debug)]
pub(super) struct DrainArgs {
    /// Producers running at once.
    #[arg(long, default_value_t = 4)]
    producers: u32,
    /// Rates to step through, events per second per producer, comma separated.
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "50000,100000,200000,400000,800000,1600000"
    )]
    rates: Vec<u64>,
    /// Seconds each producer emits at each step.
    #[arg(long, default_value_t = 3.0)]
    seconds: f64,
    /// Where `scripts/install-c.sh PREFIX` installed libustrace.
    #[arg(long, default_value = "/tmp/ust")]
    ustrace_prefix: PathBuf,
    /// Directory of LTTng's anchor (tp.h, tp.c; default: ../shared/anchors/lttng
    /// from the repository root).
    #[arg(long)]
    anchor_dir: Option<PathBuf>,
    /// Sub-buffer size for both tracers (default: each its own default).
    #[arg(long)]
    subbuf_size: Option<u32>,
    /// Sub-buffers per ring for both tracers (default: each its own default).
    #[arg(long)]
    num_subbuf: Option<u32>,
    /// Contexts both tracers' channels record, comma separated (`vpid,vtid`), or
    /// `none`, so that both store the same information per event (default: each
    /// its own: ours records vpid and vtid in a per-UID channel, LTTng nothing).
    #[arg(long, value_parser = parse_contexts)]
    contexts: Option<BothContexts>,
    /// Run ours only.
    #[arg(long)]
    no_lttng: bool,
    /// Config file for our ustraced (e.g. `direct_io = false` to compare the page
    /// cache); its `runtime_dir` must be empty. Default: built-in defaults.
    #[arg(long)]
    pub(super) daemon_config: Option<PathBuf>,
}

/// `--contexts`: the contexts of both tracers' channels, in the order given.
#[derive(Clone, Debug)]
pub(super) struct BothContexts(Vec<ContextType>);

/// Parses `--contexts`: `none`, or context names separated by commas.
fn parse_contexts(text: &str) -> Result<BothContexts, String> {
    if text == "none" {
        return Ok(BothContexts(Vec::new()));
    }
    text.split(',')
        .map(|name| ContextType::from_name(name).map_err(|e| e.to_string()))
        .collect::<Result<_, _>>()
        .map(BothContexts)
}

/// What one step of one tracer measured.
#[derive(Clone, Copy, Debug, Default)]
struct Step {
    /// Events the producers emitted.
    emitted: u64,
    /// Events per second they reached together (each producer's count over its own
    /// time, summed).
    reached: f64,
    /// Events the tracer counted discarded.
    discarded: u64,
    /// Bytes of trace stored (every file under the output).
    stored: u64,
    /// Daemon CPU time, ms.
    cpu_ms: u64,
}

impl Step {
    /// Bytes stored per event stored, i.e. emitted and not discarded (files,
    /// metadata and packet headers included), as text; `?` when the discarded
    /// count is more than was emitted (LTTng's `lttng list` prints 2^63 + N now
    /// and then), so that no figure is made up.
    fn bytes_per_event(&self) -> String {
        match self.emitted.checked_sub(self.discarded) {
            Some(kept) if kept > 0 => format!("{:.1}", self.stored as f64 / kept as f64),
            _ => "?".to_string(),
        }
    }

    /// Daemon CPU ms per MB (10^6 bytes) stored.
    fn ms_per_mb(&self) -> f64 {
        self.cpu_ms as f64 / (self.stored.max(1) as f64 / 1e6)
    }

    /// Daemon CPU ms per million events emitted (the tracers' events differ in
    /// size: this is the cost of the same work).
    fn ms_per_mevent(&self) -> f64 {
        self.cpu_ms as f64 / (self.emitted.max(1) as f64 / 1e6)
    }
}

/// The scratch directory of the run, removed on drop.
struct Scratch(PathBuf);

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Runs the benchmark.
pub(super) fn drain(args: &DrainArgs) -> Result<(), String> {
    if args.rates.is_empty() || args.producers == 0 || args.seconds <= 0.0 {
        return Err("--rates, --producers and --seconds must be non-empty and positive".into());
    }
    let scratch =
        Scratch(std::env::temp_dir().join(format!("ustrace-bench-drain-{}", std::process::id())));
    std::fs::create_dir_all(&scratch.0).map_err(|e| format!("{}: {e}", scratch.0.display()))?;
    let ours_app = build_ours(&scratch.0, &args.ustrace_prefix)?;
    let anchor = args
        .anchor_dir
        .clone()
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/anchors/lttng"));
    let lttng = if args.no_lttng {
        None
    } else {
        Some(Lttng::up(build_lttng(&scratch.0, &anchor)?)?)
    };
    let geometry = match (args.subbuf_size, args.num_subbuf) {
        (None, None) => "each tracer's default geometry".to_string(),
        (s, n) => format!("sub-buffers {s:?} x {n:?} for both"),
    };
    let contexts = match &args.contexts {
        None => "each tracer's default contexts".to_string(),
        Some(BothContexts(c)) if c.is_empty() => "no contexts for both".to_string(),
        Some(BothContexts(c)) => {
            let names: Vec<&str> = c.iter().map(|c| c.name()).collect();
            format!("contexts {} for both", names.join(","))
        }
    };
    println!(
        "{} producers, {} s per step, one per-UID channel, {geometry}, {contexts}",
        args.producers, args.seconds
    );
    println!("{}", probe_device(&scratch.0));
    let mut results = Vec::new();
    for (i, &rate) in args.rates.iter().enumerate() {
        settle(&scratch.0)?;
        let ours = run_ours(args, &scratch.0.join(format!("ours-{i}")), &ours_app, rate)?;
        print_step("ours ", rate, &ours);
        check_stored("ours", &ours)?;
        let theirs = match &lttng {
            Some(lttng) => {
                settle(&scratch.0)?;
                let step = lttng.run(args, &scratch.0.join(format!("lttng-{i}")), rate)?;
                print_step("lttng", rate, &step);
                check_stored("lttng", &step)?;
                Some(step)
            }
            None => None,
        };
        results.push((ours, theirs));
    }
    summarize(&results);
    Ok(())
}

/// Writes back what the previous step left dirty on the scratch directory's file
/// system, so that no step drains while the last one's page cache is still going to
/// the disk: LTTng's consumer writes through the page cache, our daemon mostly with
/// `O_DIRECT`, so without this our steps would share the disk with LTTng's
/// writeback and LTTng's never with ours.
fn settle(scratch: &Path) -> Result<(), String> {
    let dir = std::fs::File::open(scratch).map_err(|e| format!("{}: {e}", scratch.display()))?;
    nix::unistd::syncfs(&dir).map_err(|e| format!("syncfs {}: {e}", scratch.display()))
}

/// Writes of the device probe: 128 MiB in all, a fraction of a second.
const PROBE_WRITES: u32 = 256;
/// Size of each: LTTng's default sub-buffer, the least our daemon's `O_DIRECT`
/// writer stores per write at that geometry.
const PROBE_BLOCK: usize = 512 << 10;

/// What the device under `dir` does with `O_DIRECT` writes, as a line: its
/// throughput and its slowest single write. The `O_DIRECT` drain's 0-discard rate
/// is bounded by that slowest write (the ring must hold the events meanwhile), and
/// the device differs from one sitting to the next, so the figures are printed
/// beside the steps they explain.
fn probe_device(dir: &Path) -> String {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let path = dir.join("device-probe");
    let probe = || -> std::io::Result<(f64, Duration)> {
        let mut file = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .custom_flags(libc::O_DIRECT)
            .open(&path)?;
        // Page-aligned, as O_DIRECT wants it.
        let block = memmap2::MmapMut::map_anon(PROBE_BLOCK)?;
        let start = Instant::now();
        let mut slowest = Duration::ZERO;
        for _ in 0..PROBE_WRITES {
            let write = Instant::now();
            file.write_all(&block)?;
            slowest = slowest.max(write.elapsed());
        }
        let bytes = f64::from(PROBE_WRITES) * PROBE_BLOCK as f64;
        Ok((bytes / start.elapsed().as_secs_f64() / 1e6, slowest))
    };
    let measured = probe();
    let _ = std::fs::remove_file(&path);
    match measured {
        Ok((mb_per_s, slowest)) => format!(
            "device under {}: O_DIRECT writes of {} KiB: {mb_per_s:.0} MB/s, slowest {:.1} ms of {PROBE_WRITES}",
            dir.display(),
            PROBE_BLOCK >> 10,
            slowest.as_secs_f64() * 1e3
        ),
        Err(e) if e.raw_os_error() == Some(libc::EINVAL) => format!(
            "device under {}: the file system refuses O_DIRECT (our daemon writes through the page cache there)",
            dir.display()
        ),
        Err(e) => format!("device under {}: no O_DIRECT probe: {e}", dir.display()),
    }
}

/// Prints one step.
fn print_step(who: &str, rate: u64, step: &Step) {
    println!(
        "  {who} {rate:>8}/s each: reached {:>9.0} ev/s, emitted {:>9}, discarded {:>8}, stored {:>7.1} MB ({} B/event), daemon CPU {:>5} ms ({:.2} ms/MB, {:.1} ms/M events)",
        step.reached,
        step.emitted,
        step.discarded,
        step.stored as f64 / 1e6,
        step.bytes_per_event(),
        step.cpu_ms,
        step.ms_per_mb(),
        step.ms_per_mevent()
    );
}

/// Prints the highest rate each reached with nothing discarded, its CPU per MB
/// there and over every step, and the ratios.
fn summarize(results: &[(Step, Option<Step>)]) {
    let best = |steps: &mut dyn Iterator<Item = Step>| {
        steps
            .filter(|s| s.discarded == 0)
            .max_by(|a, b| a.reached.total_cmp(&b.reached))
    };
    let total = |steps: &mut dyn Iterator<Item = Step>| {
        steps.fold(Step::default(), |all, s| Step {
            emitted: all.emitted + s.emitted,
            cpu_ms: all.cpu_ms + s.cpu_ms,
            stored: all.stored + s.stored,
            ..all
        })
    };
    let ours_best = best(&mut results.iter().map(|r| r.0));
    let ours_all = total(&mut results.iter().map(|r| r.0));
    let show = |who: &str, best: Option<Step>, all: Step| match best {
        Some(b) => println!(
            "{who}: highest rate with 0 discarded {:.0} ev/s; all steps: daemon CPU {:.2} ms per MB stored, {:.1} ms per M events",
            b.reached,
            all.ms_per_mb(),
            all.ms_per_mevent()
        ),
        None => println!(
            "{who}: discarded at every step; all steps: daemon CPU {:.2} ms per MB stored, {:.1} ms per M events",
            all.ms_per_mb(),
            all.ms_per_mevent()
        ),
    };
    show("ours ", ours_best, ours_all);
    if results.iter().all(|r| r.1.is_some()) {
        let theirs_best = best(&mut results.iter().filter_map(|r| r.1));
        let theirs_all = total(&mut results.iter().filter_map(|r| r.1));
        show("lttng", theirs_best, theirs_all);
        if let (Some(o), Some(t)) = (ours_best, theirs_best) {
            println!(
                "ratio ours/lttng: 0-discard rate {:.2} (goal > 1); over all steps CPU per MB {:.2} (goal <= 0.5), CPU per M events {:.2}",
                o.reached / t.reached,
                ours_all.ms_per_mb() / theirs_all.ms_per_mb(),
                ours_all.ms_per_mevent() / theirs_all.ms_per_mevent()
            );
        }
    }
}

/// Runs `program ARGS` (in `dir` if given), returning its stdout; a failure names
/// the command and carries its stderr.
fn run(program: &str, args: &[&str], dir: Option<&Path>) -> Result<String, String> {
    let mut command = Command::new(program);
    if let Some(dir) = dir {
        command.current_dir(dir);
    }
    let out = command
        .args(args)
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("cannot run {program}: {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "{program} {} failed: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Runs `cc ARGS` in `dir`.
fn cc(dir: &Path, args: &[&str]) -> Result<(), String> {
    run("cc", args, Some(dir)).map(drop)
}

/// Runs `lttng ARGS`, returning its stdout.
fn lttng(args: &[&str]) -> Result<String, String> {
    run("lttng", args, None)
}

/// The paced producer's source, from examples/c.
const PACED_C: &str = include_str!("../../examples/c/paced.c");

/// Builds examples/c/paced.c against libustrace under `prefix`.
fn build_ours(dir: &Path, prefix: &Path) -> Result<PathBuf, String> {
    let lib = prefix.join("lib");
    if !lib.join("libustrace.so").is_file() {
        return Err(format!(
            "no libustrace.so under {} (run scripts/install-c.sh {} first)",
            lib.display(),
            prefix.display()
        ));
    }
    std::fs::write(dir.join("paced.c"), PACED_C).map_err(|e| e.to_string())?;
    let include = format!("-I{}", prefix.join("include").display());
    let link = format!("-L{}", lib.display());
    let rpath = format!("-Wl,-rpath,{}", lib.display());
    cc(
        dir,
        &[
            "-O2",
            "-DUSTRACE",
            &include,
            "-o",
            "paced-ust",
            "paced.c",
            &link,
            "-lustrace",
            &rpath,
        ],
    )?;
    Ok(dir.join("paced-ust"))
}

/// Builds examples/c/paced.c against liblttng-ust with the anchor's probe.
fn build_lttng(dir: &Path, anchor: &Path) -> Result<PathBuf, String> {
    for file in ["tp.h", "tp.c"] {
        std::fs::copy(anchor.join(file), dir.join(file))
            .map_err(|e| format!("{}: {e}", anchor.join(file).display()))?;
    }
    std::fs::write(dir.join("paced.c"), PACED_C).map_err(|e| e.to_string())?;
    cc(
        dir,
        &[
            "-O2",
            "-I.",
            "-o",
            "paced-lttng",
            "paced.c",
            "tp.c",
            "-llttng-ust",
            "-ldl",
        ],
    )
    .map_err(|e| {
        format!(
            "{e}(liblttng-ust-dev has LTTng's headers: run {}/setup.sh, or pass --no-lttng)",
            anchor.display()
        )
    })?;
    Ok(dir.join("paced-lttng"))
}

/// Starts `producers` copies of `app` at `rate` each for `seconds` (with `env`
/// set), waits for them all, and returns (events emitted, events per second
/// reached, summed over producers).
fn run_producers(
    app: &Path,
    producers: u32,
    rate: u64,
    seconds: f64,
    env: &[(&str, &Path)],
) -> Result<(u64, f64), String> {
    let children: Vec<_> = (0..producers)
        .map(|_| {
            let mut command = Command::new(app);
            command
                .args([rate.to_string(), seconds.to_string()])
                .stdin(Stdio::null())
                .stdout(Stdio::piped());
            for (key, value) in env {
                command.env(key, value);
            }
            command
                .spawn()
                .map_err(|e| format!("cannot start {}: {e}", app.display()))
        })
        .collect::<Result<_, _>>()?;
    let (mut emitted, mut reached) = (0, 0.0);
    for child in children {
        let out = child.wait_with_output().map_err(|e| e.to_string())?;
        let stdout = String::from_utf8_lossy(&out.stdout);
        let words: Vec<&str> = stdout.split_whitespace().collect();
        match (out.status.success(), words.as_slice()) {
            (true, ["emitted", n, "in", t, "s"]) => {
                let n: u64 = n.parse().map_err(|_| format!("bad count in {stdout:?}"))?;
                let t: f64 = t.parse().map_err(|_| format!("bad time in {stdout:?}"))?;
                emitted += n;
                reached += n as f64 / t;
            }
            _ => return Err(format!("{} failed: {out:?}", app.display())),
        }
    }
    Ok((emitted, reached))
}

/// Bytes of `bench:ev(int, string "hello")`'s payload: no tracer stores an event
/// in less.
const PAYLOAD_BYTES: u64 = 4 + 6;

/// Checks that `step` stored at least the payload of every event it did not count
/// discarded: producers that ran untraced (a libustrace of another ring layout, no
/// session daemon) store nothing and must not pass for a drain that lost nothing.
fn check_stored(who: &str, step: &Step) -> Result<(), String> {
    let kept = step.emitted.saturating_sub(step.discarded);
    if step.stored < kept.saturating_mul(PAYLOAD_BYTES) {
        return Err(format!(
            "{who}: {} bytes stored for {kept} events not discarded: the producers ran untraced (their stderr says why; for ours, rebuild libustrace with scripts/install-c.sh)",
            step.stored
        ));
    }
    Ok(())
}

/// Bytes of every file under `dir`.
fn bytes_under(dir: &Path) -> u64 {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return 0;
    };
    entries
        .flatten()
        .map(|e| match e.file_type() {
            Ok(t) if t.is_dir() => bytes_under(&e.path()),
            Ok(_) => e.metadata().map_or(0, |m| m.len()),
            Err(_) => 0,
        })
        .sum()
}

/// One step of ours: a fresh daemon and session, the producers, `stop`.
fn run_ours(args: &DrainArgs, dir: &Path, app: &Path, rate: u64) -> Result<Step, String> {
    let rundir = dir.join("run");
    let output = dir.join("trace");
    std::fs::create_dir_all(&rundir).map_err(|e| format!("{}: {e}", rundir.display()))?;
    let daemon = start_daemon(&rundir, args.daemon_config.as_deref())?;
    let session = Some("drain".to_string());
    ask(
        &rundir,
        ControlRequest::Create {
            name: "drain".into(),
            output: Some(output.display().to_string()),
            url: None,
            live_timer_us: None,
        },
    )?;
    ask(
        &rundir,
        ControlRequest::EnableChannel {
            session: session.clone(),
            channel: ChannelRequest {
                name: "ch".into(),
                buffers: Some(Buffering::PerUid),
                subbuf_size: args.subbuf_size,
                num_subbuf: args.num_subbuf,
                contexts: args.contexts.as_ref().map(|c| c.0.clone()),
                ..ChannelRequest::default()
            },
        },
    )?;
    ask(
        &rundir,
        ControlRequest::EnableEvent {
            session: session.clone(),
            channel: Some("ch".into()),
            pattern: "bench:*".into(),
            exclude: Vec::new(),
            loglevel: Default::default(),
            filter: None,
        },
    )?;
    ask(
        &rundir,
        ControlRequest::Start {
            session: session.clone(),
        },
    )?;
    let pid = daemon.0.id();
    let cpu_before = process_cpu_ms(pid)?;
    let (emitted, reached) = run_producers(
        app,
        args.producers,
        rate,
        args.seconds,
        &[("USTRACE_RUNDIR", &rundir)],
    )?;
    ask(&rundir, ControlRequest::Stop { session })?;
    let cpu_ms = process_cpu_ms(pid)? - cpu_before;
    let discarded = status(&rundir)?.events_discarded;
    let stored = bytes_under(&output);
    drop::<Spawned>(daemon);
    Ok(Step {
        emitted,
        reached,
        discarded,
        stored,
        cpu_ms,
    })
}

/// LTTng's daemons for the run: a root lttng-sessiond (started here if none runs,
/// and then stopped at the end) and its consumer daemons.
struct Lttng {
    /// The paced producer built against liblttng-ust.
    app: PathBuf,
    /// The sessiond this benchmark started, if it did.
    started: Option<u32>,
}

impl Lttng {
    /// Makes sure a sessiond runs.
    fn up(app: PathBuf) -> Result<Lttng, String> {
        let mut started = None;
        if pids_of("lttng-sessiond").is_empty() {
            let status = Command::new("lttng-sessiond")
                .args(["--daemonize", "--no-kernel"])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status()
                .map_err(|e| format!("cannot start lttng-sessiond: {e}"))?;
            if !status.success() {
                return Err(format!("lttng-sessiond --daemonize failed: {status}"));
            }
            started = pids_of("lttng-sessiond").first().copied();
        }
        Ok(Lttng { app, started })
    }

    /// One step: a fresh session, the producers, `lttng stop` (which waits for the
    /// consumer to store everything), the discarded count, `destroy`.
    fn run(&self, args: &DrainArgs, dir: &Path, rate: u64) -> Result<Step, String> {
        let name = format!("drain{}", std::process::id());
        let output = dir.join("trace");
        lttng(&["create", &name, &format!("--output={}", output.display())])?;
        let mut channel = vec![
            "enable-channel".to_string(),
            "-u".into(),
            "ch".into(),
            "--buffers-uid".into(),
        ];
        if let Some(size) = args.subbuf_size {
            channel.push(format!("--subbuf-size={size}"));
        }
        if let Some(n) = args.num_subbuf {
            channel.push(format!("--num-subbuf={n}"));
        }
        let channel: Vec<&str> = channel.iter().map(String::as_str).collect();
        lttng(&channel)?;
        if let Some(BothContexts(contexts)) = &args.contexts
            && !contexts.is_empty()
        {
            let mut add = vec!["add-context", "-u", "-s", &name, "-c", "ch"];
            for c in contexts {
                add.extend(["-t", c.name()]);
            }
            lttng(&add)?;
        }
        lttng(&["enable-event", "-u", "-c", "ch", "bench:*"])?;
        lttng(&["start", &name])?;
        // The consumerd starts with the first session's channel.
        let daemons = [pids_of("lttng-sessiond"), pids_of("lttng-consumerd")].concat();
        let cpu =
            |pids: &[u32]| -> Result<u64, String> { pids.iter().map(|&p| process_cpu_ms(p)).sum() };
        let cpu_before = cpu(&daemons)?;
        let ran = run_producers(&self.app, args.producers, rate, args.seconds, &[]);
        let stopped = lttng(&["stop", &name]);
        let cpu_ms = cpu(&daemons)? - cpu_before;
        let listed = lttng(&["list", &name, "-c", "ch"]);
        lttng(&["destroy", &name])?;
        let (emitted, reached) = ran?;
        stopped?;
        let discarded = listed?
            .lines()
            .filter_map(|l| l.trim().strip_prefix("Discarded events:"))
            .filter_map(|n| n.trim().parse::<u64>().ok())
            .fold(0u64, u64::saturating_add);
        Ok(Step {
            emitted,
            reached,
            discarded,
            stored: bytes_under(&output),
            cpu_ms,
        })
    }
}

impl Drop for Lttng {
    /// Stops the sessiond this benchmark started and waits (10 s at most) until it
    /// is gone, so that a run right after this one finds none and starts its own,
    /// rather than finding this one dying and `lttng create` then spawning one that
    /// nobody stops.
    fn drop(&mut self) {
        if let Some(pid) = self.started {
            let _ = Command::new("kill").arg(pid.to_string()).status();
            let proc = PathBuf::from(format!("/proc/{pid}"));
            let deadline = Instant::now() + Duration::from_secs(10);
            while proc.exists() && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(10));
            }
        }
    }
}

/// Pids of processes named exactly `name` (`pgrep -x`).
fn pids_of(name: &str) -> Vec<u32> {
    Command::new("pgrep")
        .args(["-x", name])
        .output()
        .map(|out| {
            String::from_utf8_lossy(&out.stdout)
                .lines()
                .filter_map(|l| l.trim().parse().ok())
                .collect()
        })
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::Step;

    #[test]
    fn bytes_per_event_counts_the_events_stored_not_those_discarded() {
        let step = |emitted, discarded, stored| Step {
            emitted,
            discarded,
            stored,
            ..Step::default()
        };
        assert_eq!(step(1000, 0, 22_000).bytes_per_event(), "22.0");
        assert_eq!(step(1000, 500, 11_000).bytes_per_event(), "22.0");
        // LTTng's 2^63 + N, and everything discarded: no figure.
        assert_eq!(step(1000, (1 << 63) + 7, 9_000).bytes_per_event(), "?");
        assert_eq!(step(1000, 1000, 4_096).bytes_per_event(), "?");
    }
}
