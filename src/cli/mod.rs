//! The `ustrace` command line, modelled on `lttng`.

pub mod demo;
pub mod output;
pub mod recover;
pub mod save;

use crate::bench;
use crate::control;
use crate::ctf::context::ContextType;
use crate::ctf::field::LogLevel;
use crate::protocol::messages::{
    Buffering, ChannelRequest, ControlRequest, LogLevelRule, RotationSchedule, TracefileLimits,
};
use crate::shm::Mode;
use crate::trace::view::ViewError;
use clap::{Args, Parser, Subcommand};
use std::path::PathBuf;
use std::process::ExitCode;

/// ustrace: control the session daemon and read traces.
#[derive(Parser, Debug)]
#[command(name = "ustrace", version, about)]
pub struct Cli {
    /// Print each answer as one JSON object (docs/cli.md lists its keys); `view`
    /// prints one JSON object per event.
    #[arg(long, global = true)]
    json: bool,
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
        #[arg(long, short, conflicts_with = "set_url")]
        output: Option<PathBuf>,
        /// Stream to an lttng-relayd instead: net://HOST[:CONTROL_PORT[:DATA_PORT]]
        /// (ports 5342 and 5343 by default).
        #[arg(long, short = 'U', value_name = "URL")]
        set_url: Option<String>,
        /// Live session: flushed and beaconed every PERIOD microseconds (default
        /// 1000000), for `babeltrace2 --input-format=lttng-live`; needs --set-url.
        #[arg(long, value_name = "PERIOD", num_args = 0..=1, default_missing_value = "1000000")]
        live: Option<u32>,
        /// Snapshot (flight-recorder) session: channels overwrite, nothing is
        /// written while it runs, `snapshot record` writes what the rings hold.
        #[arg(long, conflicts_with = "set_url")]
        snapshot: bool,
    },
    /// Snapshots of a snapshot session.
    #[command(subcommand)]
    Snapshot(Snapshot),
    /// Archive the session's current trace chunk into
    /// `<output>/archives/<begin>-<end>-<n>/` (a trace babeltrace2 reads on its own)
    /// while tracing goes on into the next; prints the archive's path.
    Rotate {
        /// Session (default: the most recently created).
        session: Option<String>,
    },
    /// Rotate automatically: whenever the current chunk is TIME old or holds SIZE
    /// bytes (each given replaces the one there was).
    EnableRotation {
        /// Session (default: the most recently created).
        #[arg(long, short)]
        session: Option<String>,
        /// Chunk age: a number with us, ms, s, m or h (default unit us), e.g. 10s.
        #[arg(long, value_parser = parse_time, required_unless_present = "size")]
        timer: Option<u64>,
        /// Chunk size: bytes, or with a K, M or G suffix, e.g. 64M.
        #[arg(long, value_parser = parse_size)]
        size: Option<u64>,
    },
    /// Stop rotating automatically (only the timer or the size with --timer/--size).
    DisableRotation {
        /// Session (default: the most recently created).
        #[arg(long, short)]
        session: Option<String>,
        /// Remove the timer.
        #[arg(long)]
        timer: bool,
        /// Remove the size bound.
        #[arg(long)]
        size: bool,
    },
    /// Delete what the session recorded since its last rotation, on disk and in its
    /// rings, while it goes on tracing (a snapshot session: its rings).
    Clear {
        /// Session (default: the most recently created).
        session: Option<String>,
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
    },
    /// Apps, buffer sets, writers and lost-data counters of the daemon.
    Status,
    /// Remove event rules from a channel: registered apps stop recording what no
    /// rule matches any more (what they recorded is kept).
    DisableEvent {
        /// The rule's pattern, exactly as enabled.
        #[arg(required_unless_present = "all", conflicts_with = "all")]
        pattern: Option<String>,
        /// Every rule of the channel.
        #[arg(long, short)]
        all: bool,
        /// Session (default: the most recently created).
        #[arg(long, short)]
        session: Option<String>,
        /// Channel (default: the session's only channel).
        #[arg(long, short)]
        channel: Option<String>,
    },
    /// Stop recording into a channel; `enable-channel NAME` enables it again.
    DisableChannel {
        /// Channel name.
        name: String,
        /// Session (default: the most recently created).
        #[arg(long, short)]
        session: Option<String>,
    },
    /// Write a session as the `[[session]]` TOML that `ustraced --config` loads.
    Save {
        /// Session.
        session: String,
        /// File to write (default: standard output).
        file: Option<PathBuf>,
    },
    /// Print a trace: one line per event, merged by time (with --json, one JSON
    /// object per event).
    View {
        /// Trace directory (a session output or any sub-trace).
        dir: PathBuf,
        /// Go on printing events as they reach the disk (new per-PID sub-traces
        /// too) until interrupted.
        #[arg(long, short)]
        follow: bool,
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
    /// Only emissions whose values pass EXPR, in LTTng's filter language:
    /// comparisons (== != < <= > >=) of fields and `$ctx.vpid`, `$ctx.vtid`,
    /// `$ctx.procname` with integers, floats and strings (`*` globs), combined with
    /// &&, || and !, e.g. 'bytes > 1000 && peer == "10.*"'.
    #[arg(long, short = 'f', value_name = "EXPR")]
    filter: Option<String>,
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

/// `snapshot` subcommands.
#[derive(Subcommand, Debug)]
enum Snapshot {
    /// Write what the session's rings hold now (partly filled sub-buffers too)
    /// into a new `snapshot-<n>-<date>` trace directory, without stopping tracing.
    Record {
        /// Session (default: the most recently created).
        #[arg(long, short)]
        session: Option<String>,
        /// Parent of the snapshot directory (default: the session's output).
        #[arg(long, short)]
        output: Option<PathBuf>,
        /// Most bytes the snapshot holds (with a K, M or G suffix), shared by its
        /// streams: each keeps its newest packets that fit.
        #[arg(long, value_parser = parse_size)]
        max_size: Option<u64>,
    },
}

/// `--timer`: microseconds, or with a unit, as the config file writes times.
fn parse_time(text: &str) -> Result<u64, String> {
    let time: crate::config::TimeSpan = text.parse().map_err(|e| format!("{e}"))?;
    Ok(time.0)
}

/// `--max-size`: bytes, or with a K, M or G suffix, as the config file writes sizes.
fn parse_size(text: &str) -> Result<u64, String> {
    let size: crate::config::ByteSize = text.parse().map_err(|e| format!("{e}"))?;
    Ok(size.0)
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
    /// Most bytes of each stream file (K, M or G suffix; at least a sub-buffer):
    /// streams are written as `<channel>_<cpu>_<k>` files.
    #[arg(long, value_parser = parse_size)]
    tracefile_size: Option<u64>,
    /// Most files per stream, the oldest deleted (with --tracefile-size).
    #[arg(long, requires = "tracefile_size")]
    tracefile_count: Option<u32>,
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
        let json = self.json;
        let name = self.command.name();
        let request = match self.command {
            Command::View { dir, follow } => return view(&dir, json, follow),
            Command::Save { session, file } => return save::run(&session, file.as_deref(), json),
            Command::Recover { dir } => return recover::run(&dir),
            Command::Demo(args) => return demo::run(&args),
            Command::Bench(args) => return bench::run(&args),
            Command::Man { dir } => return man(&dir),
            Command::Completions { shell, program } => {
                crate::service::manual::completions(shell, program, &mut std::io::stdout());
                return ExitCode::SUCCESS;
            }
            Command::Create {
                name,
                output,
                set_url,
                live,
                snapshot,
            } => {
                let output = output.map(|o| absolute(&o).display().to_string());
                match snapshot {
                    false => ControlRequest::Create {
                        name,
                        output,
                        url: set_url,
                        live_timer_us: live,
                    },
                    true => ControlRequest::CreateSnapshot { name, output },
                }
            }
            Command::Snapshot(Snapshot::Record {
                session,
                output,
                max_size,
            }) => ControlRequest::SnapshotRecord {
                session,
                output: output.map(|o| absolute(&o).display().to_string()),
                max_size,
            },
            Command::Rotate { session } => ControlRequest::Rotate { session },
            Command::Clear { session } => ControlRequest::Clear { session },
            Command::EnableRotation {
                session,
                timer,
                size,
            } => ControlRequest::EnableRotation {
                session,
                schedule: RotationSchedule {
                    timer_us: timer,
                    size,
                },
            },
            Command::DisableRotation {
                session,
                timer,
                size,
            } => ControlRequest::DisableRotation {
                session,
                timer,
                size,
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
                    tracefile: c.tracefile_size.map(|size| TracefileLimits {
                        size,
                        count: c.tracefile_count.unwrap_or(0),
                    }),
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
            Command::EnableEvent(e) => return enable_event(e, json),
            Command::Start { session } => ControlRequest::Start { session },
            Command::Stop { session } => ControlRequest::Stop { session },
            Command::Destroy { session } => ControlRequest::Destroy { session },
            Command::List { apps: true, .. } => ControlRequest::ListApps,
            Command::List { session, .. } => ControlRequest::List { session },
            Command::Status => ControlRequest::Status,
            Command::DisableEvent {
                pattern,
                all: _,
                session,
                channel,
            } => ControlRequest::DisableEvent {
                session,
                channel,
                pattern,
            },
            Command::DisableChannel { name, session } => ControlRequest::DisableChannel {
                session,
                channel: name,
            },
        };
        send(name, &request, json)
    }
}

impl Command {
    /// The subcommand as typed: the `command` key of a JSON answer.
    fn name(&self) -> &'static str {
        match self {
            Command::Create { .. } => "create",
            Command::EnableChannel(_) => "enable-channel",
            Command::EnableEvent { .. } => "enable-event",
            Command::Start { .. } => "start",
            Command::Stop { .. } => "stop",
            Command::Destroy { .. } => "destroy",
            Command::List { .. } => "list",
            Command::Status => "status",
            Command::DisableEvent { .. } => "disable-event",
            Command::DisableChannel { .. } => "disable-channel",
            Command::Save { .. } => "save",
            Command::Snapshot(_) => "snapshot record",
            Command::Rotate { .. } => "rotate",
            Command::Clear { .. } => "clear",
            Command::EnableRotation { .. } => "enable-rotation",
            Command::DisableRotation { .. } => "disable-rotation",
            Command::View { .. } => "view",
            Command::Recover { .. } => "recover",
            Command::Demo(_) => "demo",
            Command::Bench(_) => "bench",
            Command::AddContext { .. } => "add-context",
            Command::Man { .. } => "man",
            Command::Completions { .. } => "completions",
        }
    }
}

/// Sends one request and prints its answer to `command` (a failure to reach the
/// daemon is a refusal too).
fn send(command: &str, request: &ControlRequest, json: bool) -> ExitCode {
    let answer = control::request(request)
        .map_err(|e| e.to_string())
        .and_then(|reply| reply);
    output::answer(command, &answer, json)
}

/// `enable-event`: one request per pattern, in order; stops at the first refusal.
fn enable_event(e: EnableEvent, json: bool) -> ExitCode {
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
            filter: e.filter.clone(),
        };
        let code = send("enable-event", &request, json);
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

/// How often `view --follow` looks for what reached the disk.
const FOLLOW_POLL: std::time::Duration = std::time::Duration::from_millis(100);

/// `ustrace view [--follow]`: a reader that closes the pipe early (`| head`) ends it
/// quietly.
fn view(dir: &std::path::Path, json: bool, follow: bool) -> ExitCode {
    let stdout = std::io::stdout();
    let mut out = std::io::BufWriter::new(stdout.lock());
    let result = match follow {
        false => crate::trace::view::view(dir, json, &mut out).map(drop),
        true => Err(crate::trace::view::follow(dir, json, FOLLOW_POLL, &mut out)),
    }
    .and_then(|()| std::io::Write::flush(&mut out).map_err(ViewError::Output));
    drop(out);
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(ViewError::Output(e)) if output::closed_pipe(&e) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("Error: {e}");
            ExitCode::FAILURE
        }
    }
}
