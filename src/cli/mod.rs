//! The `ustrace` command line, modelled on `lttng`.

pub mod demo;
pub mod recover;

use crate::bench;
use crate::control;
use crate::ctf::field::LogLevel;
use crate::protocol::messages::{
    Buffering, ChannelRequest, ControlOk, ControlRequest, LogLevelRule, SessionInfo, StatusReport,
};
use crate::shm::Mode;
use clap::{Args, Parser, Subcommand};
use std::path::PathBuf;
use std::process::ExitCode;

/// ustrace: control the session daemon and read traces.
#[derive(Parser, Debug)]
#[command(name = "ustrace", version, about)]
pub struct Cli {
    /// What to do.
    #[command(subcommand)]
    command: Command,
}

/// The subcommands.
#[derive(Subcommand, Debug)]
enum Command {
    /// Create a tracing session.
    Create {
        /// Session name.
        name: String,
        /// Output directory (default: <daemon output_dir>/<name>-<date>).
        #[arg(long, short)]
        output: Option<PathBuf>,
    },
    /// Add a channel to a session.
    EnableChannel(EnableChannel),
    /// Enable events in a channel: one rule per pattern (LTTng globbing: `*`
    /// anywhere, `\*` a literal star; `provider:name`, `demo*ev`, `*`).
    EnableEvent(EnableEvent),
    /// Start tracing.
    Start {
        /// Session (default: the most recently created).
        session: Option<String>,
    },
    /// Stop tracing; returns once the trace is on disk.
    Stop {
        /// Session (default: the most recently created).
        session: Option<String>,
    },
    /// Stop and free a session.
    Destroy {
        /// Session (default: the most recently created).
        session: Option<String>,
    },
    /// List sessions, or describe one.
    List {
        /// Session.
        session: Option<String>,
    },
    /// Apps, buffer sets, writers and lost-data counters of the daemon.
    Status,
    /// Print a trace: one line per event, merged by time.
    View {
        /// Trace directory (a session output or any sub-trace).
        dir: PathBuf,
        /// One JSON object per line.
        #[arg(long)]
        json: bool,
    },
    /// Repair a trace a crash left: cut torn tails back to the last complete
    /// packet, remove unfinished metadata versions; prints each change.
    Recover {
        /// Trace directory (a session output or any sub-trace).
        dir: PathBuf,
    },
    /// Run the whole system once: a private daemon, a burst of short-lived apps
    /// traced per-PID and per-UID, and the resulting trace.
    Demo(demo::DemoArgs),
    /// Benchmarks against the system's own untraced runs and against LTTng.
    Bench(bench::BenchArgs),
}

/// `enable-event` options, LTTng's names.
#[derive(Args, Debug)]
struct EnableEvent {
    /// Event patterns, comma-separated (`demo:*,net:recv`): one rule each.
    #[arg(value_delimiter = ',', required = true)]
    patterns: Vec<String>,
    /// Session (default: the most recently created).
    #[arg(long, short)]
    session: Option<String>,
    /// Channel (default: the session's only channel, or channel0).
    #[arg(long, short)]
    channel: Option<String>,
    /// Names not to record although a pattern matches them, comma-separated, with
    /// `*` globs; the patterns must have a `*`.
    #[arg(long, short = 'x', value_delimiter = ',')]
    exclude: Vec<String>,
    /// Only events of this level and more severe: EMERG, ALERT, CRIT, ERR,
    /// WARNING, NOTICE, INFO, DEBUG_SYSTEM, DEBUG_PROGRAM, DEBUG_PROCESS,
    /// DEBUG_MODULE, DEBUG_UNIT, DEBUG_FUNCTION, DEBUG_LINE, DEBUG (TRACE_ prefix
    /// optional), or 0 to 14.
    #[arg(long, value_parser = parse_loglevel, conflicts_with = "loglevel_only")]
    loglevel: Option<LogLevel>,
    /// Only events of exactly this level (names as for --loglevel).
    #[arg(long, value_parser = parse_loglevel)]
    loglevel_only: Option<LogLevel>,
}

impl EnableEvent {
    /// The rule's level condition.
    fn loglevel(&self) -> LogLevelRule {
        match (self.loglevel, self.loglevel_only) {
            (Some(level), _) => LogLevelRule::AtLeast(level),
            (_, Some(level)) => LogLevelRule::Only(level),
            _ => LogLevelRule::All,
        }
    }
}

/// `--loglevel`: one of LTTng-UST's level names or numbers.
fn parse_loglevel(text: &str) -> Result<LogLevel, String> {
    crate::rule::parse_loglevel(text).map_err(|e| e.to_string())
}

/// `enable-channel` options.
#[derive(Args, Debug)]
struct EnableChannel {
    /// Channel name.
    name: String,
    /// Session (default: the most recently created).
    #[arg(long, short)]
    session: Option<String>,
    /// One ring set per user id, shared by its apps.
    #[arg(long, conflicts_with = "buffers_pid")]
    buffers_uid: bool,
    /// One ring set per process.
    #[arg(long)]
    buffers_pid: bool,
    /// Sub-buffer size: bytes, or with a K or M suffix (power of two, 4K to 1G).
    #[arg(long, value_parser = parse_subbuf_size)]
    subbuf_size: Option<u32>,
    /// Sub-buffers per ring (power of two, 2 to 65536).
    #[arg(long, value_parser = parse_num_subbuf)]
    num_subbuf: Option<u32>,
    /// Overwrite the oldest data when full (flight recorder) instead of discarding.
    #[arg(long)]
    overwrite: bool,
    /// Writer that stores the channel (default: the daemon's, usually `ctf`).
    #[arg(long)]
    writer: Option<String>,
}

/// Parses `4096`, `64K`, `1M`, as the config file does.
/// `--subbuf-size`: a size the ring layout accepts ([`crate::shm::check_subbuf_size`]).
fn parse_subbuf_size(text: &str) -> Result<u32, String> {
    let size: crate::config::ByteSize = text.parse().map_err(|e| format!("{e}"))?;
    crate::shm::check_subbuf_size(size.0)?;
    u32::try_from(size.0).map_err(|_| format!("{text} is too large"))
}

/// `--num-subbuf`: a count the ring layout accepts ([`crate::shm::check_num_subbuf`]).
fn parse_num_subbuf(text: &str) -> Result<u32, String> {
    let count: u32 = text
        .parse()
        .map_err(|e| format!("{text:?} is not a count: {e}"))?;
    crate::shm::check_num_subbuf(count.into())?;
    Ok(count)
}

impl Cli {
    /// Runs the command and gives the process exit code.
    pub fn run(self) -> ExitCode {
        let request = match self.command {
            Command::View { dir, json } => return view(&dir, json),
            Command::Recover { dir } => return recover::run(&dir),
            Command::Demo(args) => return demo::run(&args),
            Command::Bench(args) => return bench::run(&args),
            Command::Create { name, output } => ControlRequest::Create {
                name,
                output: output.map(|o| absolute(&o).display().to_string()),
            },
            Command::EnableChannel(c) => ControlRequest::EnableChannel {
                session: c.session,
                channel: ChannelRequest {
                    name: c.name,
                    buffers: match (c.buffers_uid, c.buffers_pid) {
                        (true, _) => Some(Buffering::PerUid),
                        (_, true) => Some(Buffering::PerPid),
                        _ => None,
                    },
                    subbuf_size: c.subbuf_size,
                    num_subbuf: c.num_subbuf,
                    mode: c.overwrite.then_some(Mode::Overwrite),
                    writer: c.writer,
                },
            },
            Command::EnableEvent(e) => return enable_event(e),
            Command::Start { session } => ControlRequest::Start { session },
            Command::Stop { session } => ControlRequest::Stop { session },
            Command::Destroy { session } => ControlRequest::Destroy { session },
            Command::List { session } => ControlRequest::List { session },
            Command::Status => ControlRequest::Status,
        };
        send(&request)
    }
}

/// Sends one request and prints its answer, or the error on stderr.
fn send(request: &ControlRequest) -> ExitCode {
    match control::request(request) {
        Ok(Ok(answer)) => {
            print_answer(&answer);
            ExitCode::SUCCESS
        }
        Ok(Err(message)) => {
            eprintln!("Error: {message}");
            ExitCode::FAILURE
        }
        Err(e) => {
            eprintln!("Error: {e}");
            ExitCode::FAILURE
        }
    }
}

/// `enable-event`: one request per pattern, in order; stops at the first refusal.
fn enable_event(e: EnableEvent) -> ExitCode {
    let loglevel = e.loglevel();
    for pattern in &e.patterns {
        let request = ControlRequest::EnableEvent {
            session: e.session.clone(),
            channel: e.channel.clone(),
            pattern: pattern.clone(),
            exclude: e.exclude.clone(),
            loglevel,
        };
        let code = send(&request);
        if code != ExitCode::SUCCESS {
            return code;
        }
    }
    ExitCode::SUCCESS
}

/// Relative output paths are the CLI's, not the daemon's working directory.
fn absolute(path: &std::path::Path) -> PathBuf {
    std::path::absolute(path).unwrap_or_else(|_| path.to_path_buf())
}

/// `ustrace view`.
fn view(dir: &std::path::Path, json: bool) -> ExitCode {
    let stdout = std::io::stdout();
    let mut out = std::io::BufWriter::new(stdout.lock());
    match crate::trace::view::view(dir, json, &mut out) {
        Ok(_) => ExitCode::SUCCESS,
        Err(e) => {
            drop(out);
            eprintln!("Error: {e}");
            ExitCode::FAILURE
        }
    }
}

/// Prints a successful answer the way `lttng` would.
fn print_answer(answer: &ControlOk) {
    match answer {
        ControlOk::Done(message) => println!("{message}"),
        ControlOk::Sessions(sessions) if sessions.is_empty() => println!("no session"),
        ControlOk::Sessions(sessions) => sessions.iter().for_each(print_session),
        ControlOk::Status(status) => print_status(status),
    }
}

fn print_session(s: &SessionInfo) {
    let state = if s.started { "active" } else { "inactive" };
    println!("{} [{state}] -> {}", s.name, s.output);
    for (channel, patterns) in &s.channels {
        println!(
            "  channel {}: {:?} buffers, {} x {} bytes, {:?}, writer {}",
            channel.name,
            channel.buffers,
            channel.num_subbuf,
            channel.subbuf_size,
            channel.mode,
            channel.writer
        );
        for p in patterns {
            println!("    event {p}");
        }
    }
}

fn print_status(s: &StatusReport) {
    println!("apps connected:            {}", s.apps);
    println!("apps registered in total:  {}", s.apps_total);
    println!("buffer sets:               {}", s.buffer_sets);
    println!("writers:                   {}", s.writers);
    println!(
        "per-PID ring sets ready:   {} of {}",
        s.pid_sets_ready, s.pid_sets_wanted
    );
    println!("writer restarts:           {}", s.writer_restarts);
    println!("events discarded:          {}", s.events_discarded);
    println!("packets overwritten:       {}", s.packets_overwritten);
    println!("events lost (dead app):    {}", s.events_lost_dead_producer);
    println!("unrecorded reservations:   {}", s.unrecorded_reservations);
    println!("packets lost (writer):     {}", s.packets_lost_writer);
    println!("rings found corrupt:       {}", s.corrupt_rings);
    println!(
        "packets lost (corrupt ring): {}",
        s.packets_lost_corrupt_ring
    );
    for u in &s.per_uid {
        println!(
            "  uid {}: {} discarded, {} overwritten, {} lost (dead app), {} corrupt rings, {} packets lost (corrupt ring)",
            u.uid,
            u.events_discarded,
            u.packets_overwritten,
            u.events_lost_dead_producer,
            u.corrupt_rings,
            u.packets_lost_corrupt_ring
        );
    }
    let none = vec![0; s.registration_service_us.len()];
    let service = |p| StatusReport::service_percentile(&s.registration_service_us, &none, p);
    if let (Some(p50), Some(p99)) = (service(0.5), service(0.99)) {
        println!("registration service time: p50 < {p50} us, p99 < {p99} us");
    }
    for (cause, count) in &s.refusals {
        println!("apps refused ({cause}): {count}");
    }
    for f in &s.failed_writers {
        println!(
            "FAILED writer {}: {} ({} packets lost)",
            f.stream, f.error, f.packets_lost
        );
    }
}
