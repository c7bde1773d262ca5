//! Launching the short-lived apps: PAR workers, some apps SIGKILLed on purpose.

use super::latency::parse_registration_us;
use super::{ChurnApp, ChurnArgs};
use crate::cli::demo::{Spawned, sibling};
use std::io::{BufRead, BufReader, Read};
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::Mutex;
use std::sync::atomic::{AtomicU32, Ordering};

/// What the apps of one run reported.
#[derive(Debug, Default)]
pub(super) struct Launched {
    /// Registration latencies, µs, of the apps that registered.
    pub(super) latencies_us: Vec<u64>,
    /// Apps that ran untraced (no `registration` line).
    pub(super) untraced: u32,
    /// Apps SIGKILLed after `emitted`.
    pub(super) killed: u32,
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
pub(super) fn launch(
    rundir: &Path,
    args: &ChurnArgs,
    apps: u32,
    par: u32,
) -> Result<Launched, String> {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kill_choice_follows_the_fraction() {
        let chosen = (0..10_000).filter(|&i| chosen_to_kill(42, i, 0.2)).count();
        assert!((1_800..2_200).contains(&chosen), "{chosen} of 10000 chosen");
        assert!(!(0..1000).any(|i| chosen_to_kill(42, i, 0.0)));
        assert!((0..1000).all(|i| chosen_to_kill(42, i, 1.0)));
    }
}
