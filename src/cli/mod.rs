//! The `ustrace` command line, modelled on `lttng`.

pub mod demo;
pub mod recover;

use crate::bench;
use crate::control;
use crate::ctf::context::ContextType;
use crate::ctf::field::LogLevel;
use crate::protocol::messages::{
    AppInfo, Buffering, ChannelRequest, ControlOk, ControlRequest, LogLevelRule, SessionInfo,
    StatusReport,
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
    /// Record contexts (who emitted each event) with every event of a channel, or of
    /// every channel of the session; before the session's first start.
    AddContext {
        /// Session (default: the most recently created).
        #[arg(long, short)]
        session: Option<String>,
        /// Channel (default: every channel of the session).
        #[arg(long, short)]
        channel: Option<String>,
        /// Context type: vpid, vtid, procname, pthread_id, cpu_id, ip (repeatable).
        #[arg(long = "type", short = 't', required = true, value_parser = parse_context)]
        types: Vec<ContextType>,
        /// User-space domain (the only one; accepted as LTTng's `-u`).
        #[arg(long, short = 'u')]
        userspace: bool,
    },
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
    /// List sessions, or describe one; or (`--apps`) the connected apps.
    List {
        /// Session.
        #[arg(conflicts_with = "apps")]
        session: Option<String>,
        /// Every connected app: pid, uid, procname, registration time, the
        /// sessions/channels it records into and its events.
        #[arg(long)]
        apps: bool,
        /// With `--apps`: one JSON object per app and line.
        #[arg(long, requires = "apps")]
        json: bool,
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
    /// Write the man pages (ustrace(1) and one per subcommand, ustraced(8),
    /// ustraced.toml(5)) into a directory.
    Man {
        /// Directory to write them into (created if missing).
        dir: PathBuf,
    },
    /// Print a shell completion script.
    Completions {
        /// The shell.
        shell: clap_complete::Shell,
        /// The program to complete.
        #[arg(long, value_enum, default_value = "ustrace")]
        program: crate::service::manual::Program,
    },
}

/// `enable-event` options, LTTng's names.
#[derive(Args, Debug)]
struct EnableEvent {
    /// Event patterns, comma-separated (`demo:*,net:recv`): one rule each.
    #[arg(
        value_delimiter = ',',
        required_unless_present = "all",
        conflicts_with = "all"
    )]
    patterns: Vec<String>,
    /// Every event: the pattern `*` (LTTng's `-a`).
    #[arg(long, short)]
    all: bool,
    /// User-space domain (the only one; accepted as LTTng's `-u`).
    #[arg(long, short = 'u')]
    userspace: bool,
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

/// `ustrace man DIR`: writes the pages and lists them.
fn man(dir: &std::path::Path) -> ExitCode {
    let written =
        std::fs::create_dir_all(dir).and_then(|()| crate::service::manual::write_man_pages(dir));
    match written {
        Ok(pages) => {
            for page in pages {
                println!("{}", page.display());
            }
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("ustrace man: {}: {e}", dir.display());
            ExitCode::FAILURE
        }
    }
}

/// Parses a context type name (`vpid`, ...).
fn parse_context(text: &str) -> Result<ContextType, String> {
    ContextType::from_name(text).map_err(|e| e.to_string())
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
            Command::Man { dir } => return man(&dir),
            Command::Completions { shell, program } => {
                crate::service::manual::completions(shell, program, &mut std::io::stdout());
                return ExitCode::SUCCESS;
            }
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
                    contexts: None,
                },
            },
            Command::AddContext {
                session,
                channel,
                types,
                userspace: _,
            } => ControlRequest::AddContext {
                session,
                channel,
                contexts: types,
            },
            Command::EnableEvent(e) => return enable_event(e),
            Command::Start { session } => ControlRequest::Start { session },
            Command::Stop { session } => ControlRequest::Stop { session },
            Command::Destroy { session } => ControlRequest::Destroy { session },
            Command::List {
                apps: true, json, ..
            } => return list_apps(json),
            Command::List { session, .. } => ControlRequest::List { session },
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
    let patterns = if e.all {
        vec!["*".to_string()]
    } else {
        e.patterns.clone()
    };
    for pattern in &patterns {
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
        ControlOk::Apps(apps) => apps.iter().for_each(print_app),
    }
}

/// `ustrace list --apps [--json]`.
fn list_apps(json: bool) -> ExitCode {
    let apps = match control::request(&ControlRequest::ListApps) {
        Ok(Ok(ControlOk::Apps(apps))) => apps,
        Ok(Ok(other)) => {
            eprintln!("Error: the daemon answered list --apps with {other:?}");
            return ExitCode::FAILURE;
        }
        Ok(Err(message)) => {
            eprintln!("Error: {message}");
            return ExitCode::FAILURE;
        }
        Err(e) => {
            eprintln!("Error: {e}");
            return ExitCode::FAILURE;
        }
    };
    if json {
        for app in &apps {
            match serde_json::to_string(app) {
                Ok(line) => println!("{line}"),
                Err(e) => {
                    eprintln!("Error: {e}");
                    return ExitCode::FAILURE;
                }
            }
        }
    } else if apps.is_empty() {
        println!("no app connected");
    } else {
        apps.iter().for_each(print_app);
    }
    ExitCode::SUCCESS
}

fn print_app(app: &AppInfo) {
    let registered =
        std::time::UNIX_EPOCH + std::time::Duration::from_millis(app.registered_unix_ms);
    println!(
        "pid {} uid {} {} registered {}",
        app.pid,
        app.uid,
        app.procname,
        crate::trace::layout::iso8601_basic(registered)
    );
    for c in &app.channels {
        println!(
            "  {}/{} ({:?} buffers): {}",
            c.session,
            c.channel,
            c.buffers,
            c.enabled.join(", ")
        );
    }
    println!("  events: {}", app.events.join(", "));
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
