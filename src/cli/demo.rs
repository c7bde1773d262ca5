//! `ustrace demo`: the whole system once, on a private runtime directory.
//!
//! Starts a real `ustraced` (the binary beside this one) on a fresh runtime and
//! output directory, creates a session with a per-PID and a per-UID channel, runs a
//! burst of short-lived `ustrace-demo` apps, stops, and prints the trace layout, the
//! event counts and the first events. Everything it starts it stops, by pid.

use crate::control;
use crate::protocol::messages::{Buffering, ChannelRequest, ControlOk, ControlRequest};
use clap::Args;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitCode};
use std::time::{Duration, Instant};

/// `ustrace demo` options.
#[derive(Args, Debug)]
pub struct DemoArgs {
    /// Short-lived apps to run.
    #[arg(long, default_value_t = 40)]
    apps: u32,
    /// Apps running at once.
    #[arg(long, default_value_t = 4)]
    par: u32,
    /// Events per app.
    #[arg(long, default_value_t = 5)]
    events: u32,
    /// Keep the trace in this directory instead of a temporary one.
    #[arg(long)]
    output: Option<PathBuf>,
}

/// A process that is killed when dropped, whatever happened meanwhile.
pub struct Spawned(pub Child);

impl Drop for Spawned {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Path of a binary installed beside the running one (`cargo build` makes them all).
pub fn sibling(name: &str) -> Result<PathBuf, String> {
    let exe = std::env::current_exe().map_err(|e| format!("where is ustrace? {e}"))?;
    let path = exe.with_file_name(name);
    if path.is_file() {
        Ok(path)
    } else {
        Err(format!(
            "{} is missing: build every binary with `cargo build --release`",
            path.display()
        ))
    }
}

/// Starts `ustraced` on `rundir` and waits until it answers.
pub fn start_daemon(rundir: &Path, config: Option<&Path>) -> Result<Spawned, String> {
    let path = sibling("ustraced")?;
    let mut command = Command::new(&path);
    match config {
        Some(config) => command.env("USTRACE_CONFIG", config),
        None => command.env_remove("USTRACE_CONFIG"),
    };
    let child = command
        .env("USTRACE_RUNDIR", rundir)
        .env("RUST_LOG", "warn")
        .spawn()
        .map_err(|e| format!("cannot start {}: {e}", path.display()))?;
    let daemon = Spawned(child);
    let deadline = Instant::now() + Duration::from_secs(10);
    while Instant::now() < deadline {
        if control::request_in(rundir, &ControlRequest::Status).is_ok() {
            return Ok(daemon);
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    Err("ustraced did not answer within 10 s".to_string())
}

/// Sends a request and turns a refusal into an error.
pub(crate) fn ask(rundir: &Path, request: ControlRequest) -> Result<ControlOk, String> {
    control::request_in(rundir, &request)
        .map_err(|e| e.to_string())?
        .map_err(|e| format!("daemon: {e}"))
}

/// Creates session `name` writing to `output`, adds each `(channel, buffers)` with
/// `pattern` (e.g. `demo:*`) enabled, and starts it.
pub(crate) fn start_session(
    rundir: &Path,
    name: &str,
    output: &Path,
    channels: &[(&str, Buffering)],
    pattern: &str,
) -> Result<(), String> {
    let session = Some(name.to_string());
    ask(
        rundir,
        ControlRequest::Create {
            name: name.into(),
            output: Some(output.display().to_string()),
            url: None,
            live_timer_us: None,
        },
    )?;
    for (channel, buffers) in channels {
        ask(
            rundir,
            ControlRequest::EnableChannel {
                session: session.clone(),
                channel: ChannelRequest {
                    name: channel.to_string(),
                    buffers: Some(*buffers),
                    ..ChannelRequest::default()
                },
            },
        )?;
        ask(
            rundir,
            ControlRequest::EnableEvent {
                session: session.clone(),
                channel: Some(channel.to_string()),
                pattern: pattern.into(),
                exclude: Vec::new(),
                loglevel: Default::default(),
                filter: None,
            },
        )?;
    }
    ask(rundir, ControlRequest::Start { session })?;
    Ok(())
}

/// Runs the demo.
pub fn run(args: &DemoArgs) -> ExitCode {
    match demo(args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("Error: {e}");
            ExitCode::FAILURE
        }
    }
}

fn demo(args: &DemoArgs) -> Result<(), String> {
    let scratch = std::env::temp_dir().join(format!("ustrace-demo-{}", std::process::id()));
    let rundir = scratch.join("run");
    std::fs::create_dir_all(&rundir).map_err(|e| e.to_string())?;
    let output = args.output.clone().unwrap_or_else(|| scratch.join("trace"));
    let daemon = start_daemon(&rundir, None)?;
    println!("ustraced pid {} on {}", daemon.0.id(), rundir.display());

    let session = Some("demo".to_string());
    start_session(
        &rundir,
        "demo",
        &output,
        &[("perpid", Buffering::PerPid), ("peruid", Buffering::PerUid)],
        "demo:*",
    )?;

    let started = Instant::now();
    run_apps(&rundir, args)?;
    let wall = started.elapsed();
    ask(
        &rundir,
        ControlRequest::Stop {
            session: session.clone(),
        },
    )?;
    println!(
        "{} apps ({} at a time, {} events each) ran in {:.3} s",
        args.apps,
        args.par,
        args.events,
        wall.as_secs_f64()
    );

    print_layout(&output)?;
    let mut lines = Vec::new();
    let events = crate::trace::view::view(&output, false, &mut lines).map_err(|e| e.to_string())?;
    let expected = u64::from(args.apps) * u64::from(args.events) * 2;
    println!("events recorded: {events} (expected {expected}: every event in both channels)");
    match Command::new("babeltrace2").arg(&output).output() {
        Ok(out) if out.status.success() => println!(
            "babeltrace2 reads {} events",
            String::from_utf8_lossy(&out.stdout).lines().count()
        ),
        Ok(out) => println!(
            "babeltrace2 failed: {}",
            String::from_utf8_lossy(&out.stderr)
        ),
        Err(_) => println!("(babeltrace2 not installed: skipping its check)"),
    }
    println!("first events:");
    for line in String::from_utf8_lossy(&lines).lines().take(6) {
        println!("  {line}");
    }
    ask(&rundir, ControlRequest::Destroy { session })?;
    drop(daemon);
    println!(
        "trace kept in {} (read it with: babeltrace2 {0} or ustrace view {0})",
        output.display()
    );
    if events == expected {
        Ok(())
    } else {
        Err(format!("{events} events recorded, {expected} expected"))
    }
}

/// Runs the apps, `par` at a time, and checks that each exited cleanly.
fn run_apps(rundir: &Path, args: &DemoArgs) -> Result<(), String> {
    let app = sibling("ustrace-demo")?;
    let mut running: Vec<Spawned> = Vec::new();
    let mut launched = 0;
    while launched < args.apps || !running.is_empty() {
        while launched < args.apps && running.len() < args.par as usize {
            let child = Command::new(&app)
                .args(["--events", &args.events.to_string()])
                .env("USTRACE_RUNDIR", rundir)
                .spawn()
                .map_err(|e| format!("cannot start {}: {e}", app.display()))?;
            running.push(Spawned(child));
            launched += 1;
        }
        let mut first = running.remove(0);
        let status = first.0.wait().map_err(|e| e.to_string())?;
        if !status.success() {
            return Err(format!("ustrace-demo exited with {status}"));
        }
    }
    Ok(())
}

/// Prints every file under `dir` with its size.
fn print_layout(dir: &Path) -> Result<(), String> {
    println!("trace layout under {}:", dir.display());
    let mut files = Vec::new();
    collect_files(dir, &mut files).map_err(|e| e.to_string())?;
    files.sort();
    for (path, len) in files.iter().take(12) {
        println!(
            "  {} ({len} bytes)",
            path.strip_prefix(dir).unwrap_or(path).display()
        );
    }
    if files.len() > 12 {
        println!("  ... {} files in all", files.len());
    }
    Ok(())
}

fn collect_files(dir: &Path, out: &mut Vec<(PathBuf, u64)>) -> std::io::Result<()> {
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        let meta = entry.metadata()?;
        if meta.is_dir() {
            collect_files(&entry.path(), out)?;
        } else {
            out.push((entry.path(), meta.len()));
        }
    }
    Ok(())
}
