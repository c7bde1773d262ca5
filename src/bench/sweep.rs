//! `--sweep`: PAR 1..32 for every mode, written as CSV and plotted with gnuplot.

use super::latency::{Latency, summarize};
use super::lttng::{anchor_dir, lttng_missing, run_lttng};
use super::ours::{check, print_ours, run_ours};
use super::{ChurnArgs, ChurnMode};
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

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
pub(super) fn sweep(args: &ChurnArgs) -> Result<(), String> {
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
