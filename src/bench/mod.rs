//! `ustrace bench churn`: many short-lived apps against a private daemon;
//! `ustrace bench drain`: paced producers against both tracers' drains (`drain`).
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

mod apps;
mod drain;
mod footprint;
mod latency;
mod lttng;
mod ours;
mod sweep;

use crate::config::Config;
use clap::{Args, Subcommand, ValueEnum};
use lttng::{anchor_dir, compare_lttng, lttng_missing};
use ours::{OursRun, check, print_ours, run_ours};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use sweep::sweep;

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
    /// N producers at fixed rates: the highest rate stored with nothing discarded
    /// and the daemon's CPU per MB stored, ours and LTTng's.
    Drain(drain::DrainArgs),
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

impl ChurnApp {
    /// The events the churn session enables for this app.
    fn pattern(self) -> &'static str {
        match self {
            ChurnApp::Rust => "demo:*",
            ChurnApp::C => "bench:*",
        }
    }
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
    let outcome = match &args.command {
        BenchCommand::Churn(churn) => {
            check_daemon_config(churn.daemon_config.as_deref()).and_then(|()| {
                if churn.sweep {
                    sweep(churn)
                } else {
                    single(churn)
                }
            })
        }
        BenchCommand::Drain(args) => {
            check_daemon_config(args.daemon_config.as_deref()).and_then(|()| drain::drain(args))
        }
    };
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
fn check_daemon_config(path: Option<&Path>) -> Result<(), String> {
    let Some(path) = path else {
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
