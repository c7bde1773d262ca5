//! SessionManager: sessions, channels and event rules, driven by the CLI and the
//! config file.
//!
//! It takes domain requests ([`CreateSession`], [`EnableChannel`], [`EnableEvent`],
//! [`DisableEvent`], [`DisableChannel`], [`StartSession`], [`StopSession`],
//! [`DestroySession`], [`ListSessions`]): the
//! control socket's edge (`actors::control`) translates the CLI's wire requests into
//! them, and the daemon declares the config file's sessions with them. Each answers
//! a [`SessionError`]; text is made only at that edge. It validates each request,
//! keeps the definitions, and tells the BufferFactory (`SessionsChanged`) whenever what apps should record changes, so
//! that apps registered before a `start` or an `enable-event` receive their buffers and
//! enablement over their open connection, and apps recording what a
//! `disable-event` or `disable-channel` removed stop at once. `stop` answers only once the factory has
//! flushed every ring of the session to disk.

use crate::actors::buffer_factory::{self as factory, BufferFactory, SessionsChanged};
use crate::actors::buffer_set::FlushError;
use crate::actors::stats::Stats;
use crate::actors::writer::release_freed_heap;
use crate::config::check_name;
use crate::ctf::context::{ContextSet, ContextType};
use crate::ctf::field::EventDesc;
use crate::filter::Program;
use crate::protocol::messages::{
    AppInfo, Buffering, ChannelRequest, ChannelSpec, RotationSchedule, SessionInfo,
    TracefileProblem,
};
use crate::relayd::{RELAYD_WRITER, RelaydWriterFactory, StreamTarget, UrlError};
use crate::rule::EventRule;
use crate::shm::{Mode, ShmError};
use crate::trace::writer::OutputDir;
use crate::trace::{layout, spread};
use actix::prelude::*;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::SystemTime;

/// Most bytes of filter text the rules of one channel hold together: what bounds
/// the program an app receives for one event (every matching rule's filter, joined)
/// within `filter::program::MAX_OPS` and one frame.
pub const MAX_CHANNEL_FILTER_BYTES: usize = 4096;

/// A channel of a session and the event rules enabled in it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ChannelDef {
    /// Geometry, mode, buffering and writer.
    pub spec: ChannelSpec,
    /// The `enable-event` rules, each once.
    pub rules: Vec<EventRule>,
    /// False after `disable-channel`: the channel records nothing, its rules kept.
    pub enabled: bool,
}

impl ChannelDef {
    /// A new, enabled channel without event rules.
    pub fn new(spec: ChannelSpec) -> Self {
        ChannelDef {
            spec,
            rules: Vec::new(),
            enabled: true,
        }
    }

    /// Whether `event` is recorded in this channel: the channel is enabled and some
    /// rule matches it (an event two rules match is enabled once all the same).
    pub fn matches(&self, event: &EventDesc) -> bool {
        self.enabled && self.rules.iter().any(|r| r.matches(event))
    }

    /// The filter apps run for `event`, which this channel enables: none when a rule
    /// without filter matches it, else the filters of the rules matching it joined by
    /// `Or` (an event two rules match is recorded once if either passes it).
    pub fn filter_for(&self, event: &EventDesc) -> Option<Program> {
        let mut joined: Option<Program> = None;
        for rule in self.rules.iter().filter(|r| r.matches(event)) {
            let program = rule.filter.as_ref()?.compile(event);
            joined = Some(match joined {
                None => program,
                Some(before) => before.or(program),
            });
        }
        joined
    }
}

/// A tracing session.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SessionDef {
    /// Unique name.
    pub name: String,
    /// Output directory of the whole session, opened once for all its traces.
    pub output: OutputDir,
    /// When it was created: its traces' `trace_creation_datetime`.
    pub created: SystemTime,
    /// Whether it records now.
    pub started: bool,
    /// Whether it was ever started: channels can be added only before.
    pub ever_started: bool,
    /// Channels in stream-id order.
    pub channels: Vec<ChannelDef>,
    /// A snapshot (flight-recorder) session: nothing is written while it runs,
    /// `snapshot record` writes what its overwrite-mode rings hold.
    pub snapshot: bool,
    /// The lttng-relayd it streams to, if it does.
    pub stream: Option<StreamTarget>,
    /// Its automatic rotations (`enable-rotation`), applied by the factory.
    pub rotation: RotationSchedule,
}

impl SessionDef {
    /// `spec` as this session stores it: a streaming session's channels use the
    /// relayd writer unless they name another.
    fn channel(&self, mut spec: ChannelSpec, writer_given: bool) -> ChannelSpec {
        if self.stream.is_some() && !writer_given {
            spec.writer = RELAYD_WRITER.to_owned();
        }
        spec
    }
}

/// What the SessionManager needs to know about the deployment.
#[derive(Clone, Debug)]
pub struct SessionSettings {
    /// Parent of default session output directories.
    pub output_dir: PathBuf,
    /// `[channel_defaults]`, named `channel0`: what `enable-channel` leaves unset,
    /// and the channel `enable-event` creates in a session that has none.
    pub default_channel: ChannelSpec,
    /// Names of the registered writers.
    pub writers: Vec<String>,
    /// The streaming writer, told which sessions stream where.
    pub relayd: Arc<RelaydWriterFactory>,
}

/// The actor.
pub struct SessionManager {
    /// Deployment settings.
    settings: SessionSettings,
    /// Sessions in creation order.
    sessions: Vec<SessionDef>,
    /// The factory, told of every change.
    factory: Addr<BufferFactory>,
    /// Daemon counters: `stop` reports the session's failed writers from them.
    stats: Arc<Stats>,
}

/// Why a session request was refused, or did not fully succeed. The control
/// socket's edge turns it into the CLI's answer; the daemon into a start-up error.
#[derive(Debug, thiserror::Error)]
pub enum SessionError {
    /// A session or channel name that cannot name a file.
    #[error("{what}: {problem}")]
    InvalidName {
        /// `session` or `channel`.
        what: &'static str,
        /// What is wrong with it.
        problem: String,
    },
    /// `create` of a name in use.
    #[error("session {0:?} already exists")]
    Exists(String),
    /// `--set-url` / `url =` that is not a relayd URL.
    #[error(transparent)]
    Url(#[from] UrlError),
    /// `--live` without `--set-url`.
    #[error("--live needs --set-url net://HOST: a live session streams to an lttng-relayd")]
    LiveWithoutUrl,
    /// A live timer of 0.
    #[error("--live period must be at least 1 microsecond")]
    LiveTimer,
    /// A request named a session that does not exist.
    #[error("no session named {0:?}")]
    NoSuchSession(String),
    /// A filter that would take a channel's filters over their bound.
    #[error(
        "channel {channel}: its filters would total {bytes} bytes, at most \
         {MAX_CHANNEL_FILTER_BYTES} (disable-event some of them first)"
    )]
    FilterBudget {
        /// The channel.
        channel: String,
        /// What its filters would total.
        bytes: usize,
    },
    /// A request named no session and none exists.
    #[error("no session: create one first (ustrace create NAME)")]
    NoSession,
    /// A channel geometry outside the ring's bounds.
    #[error("channel {channel}: {source}")]
    Geometry {
        /// The channel.
        channel: String,
        /// The bound it breaks.
        source: ShmError,
    },
    /// Tracefile bounds that cannot hold a stream.
    #[error("channel {channel}: {problem}")]
    Tracefile {
        /// The channel.
        channel: String,
        /// What is wrong with them.
        problem: String,
    },
    /// A channel picked a writer nobody registered.
    #[error("no writer named {writer:?} (registered: {})", registered.join(", "))]
    NoSuchWriter {
        /// The name asked for.
        writer: String,
        /// The names there are.
        registered: Vec<String>,
    },
    /// A channel added to a session that was started once.
    #[error("session {0} was started: channels are added before the first start")]
    ChannelAfterStart(String),
    /// A channel name in use in the session.
    #[error("channel {channel} already exists in session {session}")]
    ChannelExists {
        /// The channel.
        channel: String,
        /// The session.
        session: String,
    },
    /// `enable-channel` of a disabled channel with settings other than its own.
    #[error(
        "channel {channel} of session {session} exists with other settings: enable it again by its name alone"
    )]
    ChannelSettingsDiffer {
        /// The channel.
        channel: String,
        /// The session.
        session: String,
    },
    /// `disable-channel` of a channel already disabled.
    #[error("channel {channel} of session {session} is already disabled")]
    ChannelAlreadyDisabled {
        /// The channel.
        channel: String,
        /// The session.
        session: String,
    },
    /// `disable-event` of a pattern no rule of the channel has.
    #[error("no event rule {pattern:?} in {session}/{channel} (rules: {})", rules.join(", "))]
    NoSuchRule {
        /// The pattern asked for.
        pattern: String,
        /// The session.
        session: String,
        /// The channel.
        channel: String,
        /// The rules there are.
        rules: Vec<String>,
    },
    /// `enable-event -c` of a channel the session lacks.
    #[error("no channel {channel:?} in session {session}")]
    NoSuchChannel {
        /// The channel.
        channel: String,
        /// The session.
        session: String,
    },
    /// `enable-event` without `-c` in a session of several channels.
    #[error("session {session} has {channels} channels: name one with -c")]
    WhichChannel {
        /// The session.
        session: String,
        /// How many it has.
        channels: usize,
    },
    /// `start` of a started session.
    #[error("session {0} is already started")]
    AlreadyStarted(String),
    /// `start` of a session with nothing to record.
    #[error("session {0} has no channel and no event enabled")]
    NothingEnabled(String),
    /// A discard-mode channel asked for in a snapshot session: nothing drains its
    /// rings, so they would keep the oldest events and drop every newer one.
    #[error("session {session} is a snapshot session: channel {channel} must be in overwrite mode")]
    DiscardInSnapshot {
        /// The session.
        session: String,
        /// The channel.
        channel: String,
    },
    /// `snapshot record` of a session created without `--snapshot`.
    #[error("session {0} is not a snapshot session (create it with --snapshot)")]
    NotSnapshot(String),
    /// A snapshot could not be written.
    #[error("session {session}: snapshot not recorded: {source}")]
    Snapshot {
        /// The session.
        session: String,
        /// Why.
        source: factory::SnapshotError,
    },
    /// A rotation or clear was refused or did not complete.
    #[error("session {session}: {source}")]
    Rotate {
        /// The session.
        session: String,
        /// Why (boxed: it is the largest error, and rare).
        source: Box<factory::RotateError>,
    },
    /// `enable-rotation` of a snapshot session, or with a zero bound.
    #[error("session {session}: {problem}")]
    BadRotation {
        /// The session.
        session: String,
        /// What is wrong.
        problem: &'static str,
    },
    /// `stop` of a session that is not started.
    #[error("session {0} is not started")]
    NotStarted(String),
    /// The session stopped but not everything it recorded is stored.
    #[error("session {session} stopped, but: {source}")]
    StopIncomplete {
        /// The session.
        session: String,
        /// What was not stored.
        source: FlushError,
    },
    /// The session stopped and its writers failed: `failed` names each with its loss.
    #[error("session {session} stopped, but data was lost: {failed}")]
    DataLost {
        /// The session.
        session: String,
        /// Each failed writer of the session, from `status`'s list.
        failed: String,
    },
    /// The session is destroyed but not everything it recorded is stored.
    #[error("session {session} destroyed, but: {source}")]
    DestroyIncomplete {
        /// The session.
        session: String,
        /// What was not stored.
        source: FlushError,
    },
    /// `add-context` with no context type.
    #[error("add-context needs at least one context type (-t)")]
    NoContextType,
    /// `add-context` to a session that was started once.
    #[error("session {0} was started: contexts are added before the first start")]
    ContextAfterStart(String),
    /// `add-context` without `-c` to a session with no channel.
    #[error("session {0} has no channel: enable one before adding contexts")]
    NoChannel(String),
    /// The factory could not list the apps (the daemon is shutting down).
    #[error("listing apps: {0}")]
    ListApps(MailboxError),
    /// The factory stopped before it applied a change (the daemon is shutting down).
    #[error(transparent)]
    Unapplied(MailboxError),
    /// The factory stopped before it answered (the daemon is shutting down).
    #[error("session {session}: {source}")]
    Factory {
        /// The session.
        session: String,
        /// The mailbox's error.
        source: MailboxError,
    },
}

/// What a request that changes the sessions answers: the CLI's confirmation.
pub type Done = Result<String, SessionError>;

/// Create a session writing under `output` (a dated directory under the daemon's
/// output directory if `None`).
#[derive(Message)]
#[rtype(result = "Done")]
pub struct CreateSession {
    /// Its name.
    pub name: String,
    /// Its output directory.
    pub output: Option<PathBuf>,
    /// The lttng-relayd it streams to (`net://...`), if any.
    pub url: Option<String>,
    /// Live timer in microseconds (needs `url`).
    pub live_timer_us: Option<u32>,
    /// A snapshot session (`create --snapshot`).
    pub snapshot: bool,
}

/// Add a channel to a session (`None`: the most recent one) before its first start.
#[derive(Message)]
#[rtype(result = "Done")]
pub struct EnableChannel {
    /// The session.
    pub session: Option<String>,
    /// The channel; unset settings take `[channel_defaults]`.
    pub channel: ChannelRequest,
}

/// Enable the events matching `rule` in a channel of a session.
#[derive(Message)]
#[rtype(result = "Done")]
pub struct EnableEvent {
    /// The session (`None`: the most recent one).
    pub session: Option<String>,
    /// The channel (`None`: the session's only one, or a default one made now).
    pub channel: Option<String>,
    /// The events.
    pub rule: EventRule,
}

/// Remove event rules from a channel (`disable-event`).
#[derive(Message)]
#[rtype(result = "Done")]
pub struct DisableEvent {
    /// The session (`None`: the most recent one).
    pub session: Option<String>,
    /// The channel (`None`: the session's only one).
    pub channel: Option<String>,
    /// The rule's pattern as enabled; `None`: every rule of the channel.
    pub pattern: Option<String>,
}

/// Stop recording into a channel until `enable-channel` enables it again.
#[derive(Message)]
#[rtype(result = "Done")]
pub struct DisableChannel {
    /// The session (`None`: the most recent one).
    pub session: Option<String>,
    /// The channel.
    pub channel: String,
}

/// Start recording a session.
#[derive(Message)]
#[rtype(result = "Done")]
pub struct StartSession {
    /// The session (`None`: the most recent one).
    pub session: Option<String>,
}

/// Stop recording a session; answers once what it recorded is stored.
#[derive(Message)]
#[rtype(result = "Done")]
pub struct StopSession {
    /// The session (`None`: the most recent one).
    pub session: Option<String>,
}

/// Stop a session and free everything of it.
#[derive(Message)]
#[rtype(result = "Done")]
pub struct DestroySession {
    /// The session (`None`: the most recent one).
    pub session: Option<String>,
}

/// Write what a snapshot session's rings hold as a new trace (`snapshot record`).
#[derive(Message)]
#[rtype(result = "Done")]
pub struct RecordSnapshot {
    /// The session (`None`: the most recent one).
    pub session: Option<String>,
    /// Where the `snapshot-<n>-<date>` directory goes (default: the session's output).
    pub output: Option<PathBuf>,
    /// Most bytes the snapshot holds (its streams share it equally).
    pub max_size: Option<u64>,
}

/// Archive a session's current trace chunk (`rotate`), or delete it (`clear`).
#[derive(Message)]
#[rtype(result = "Done")]
pub struct RotateSession {
    /// The session (`None`: the most recent one).
    pub session: Option<String>,
    /// `clear`: delete what it recorded since its last rotation instead.
    pub clear: bool,
}

/// Set a session's automatic rotations (`enable-rotation`): each bound given
/// replaces the one there was.
#[derive(Message)]
#[rtype(result = "Done")]
pub struct EnableRotation {
    /// The session (`None`: the most recent one).
    pub session: Option<String>,
    /// The bounds given.
    pub schedule: RotationSchedule,
}

/// Remove a session's automatic rotations (`disable-rotation`).
#[derive(Message)]
#[rtype(result = "Done")]
pub struct DisableRotation {
    /// The session (`None`: the most recent one).
    pub session: Option<String>,
    /// Remove the timer (with `size` false too: both).
    pub timer: bool,
    /// Remove the size bound.
    pub size: bool,
}

/// Describe one session, or every one.
#[derive(Message)]
#[rtype(result = "Result<Vec<SessionInfo>, SessionError>")]
pub struct ListSessions {
    /// The session, or all.
    pub session: Option<String>,
}

impl SessionManager {
    /// A manager with no session.
    pub fn new(settings: SessionSettings, factory: Addr<BufferFactory>, stats: Arc<Stats>) -> Self {
        SessionManager {
            settings,
            sessions: Vec::new(),
            factory,
            stats,
        }
    }

    /// The session called `name`, or the most recent one.
    fn session(&mut self, name: &Option<String>) -> Result<&mut SessionDef, SessionError> {
        match name {
            Some(name) => self
                .sessions
                .iter_mut()
                .find(|s| &s.name == name)
                .ok_or_else(|| SessionError::NoSuchSession(name.clone())),
            None => self.sessions.last_mut().ok_or(SessionError::NoSession),
        }
    }

    /// Answers `result` once the factory applied the current definitions (pushed
    /// buffers to the registered apps); an error needs no publishing.
    fn publish(&self, result: Done) -> ResponseFuture<Done> {
        let Ok(message) = result else {
            return Box::pin(fut::ready(result));
        };
        let publish = self.factory.send(SessionsChanged(self.sessions.clone()));
        Box::pin(async move {
            publish.await.map_err(SessionError::Unapplied)?;
            Ok(message)
        })
    }

    /// Creates a session.
    fn create(&mut self, msg: CreateSession) -> Done {
        let CreateSession {
            name,
            output,
            url,
            live_timer_us,
            snapshot,
        } = msg;
        check_name(&name).map_err(|problem| SessionError::InvalidName {
            what: "session",
            problem,
        })?;
        if self.sessions.iter().any(|s| s.name == name) {
            return Err(SessionError::Exists(name));
        }
        let created = SystemTime::now();
        let output = output
            .unwrap_or_else(|| layout::session_dir(&self.settings.output_dir, &name, created));
        let stream = match (url, live_timer_us) {
            (Some(url), live) => Some(StreamTarget {
                url: url.parse().map_err(SessionError::Url)?,
                live_timer_us: match live {
                    Some(0) => return Err(SessionError::LiveTimer),
                    Some(us) => us,
                    None => 0,
                },
            }),
            (None, Some(_)) => return Err(SessionError::LiveWithoutUrl),
            (None, None) => None,
        };
        let message = match &stream {
            Some(target) => {
                self.settings.relayd.open(&name, target);
                let live = match target.live_timer_us {
                    0 => String::new(),
                    us => format!(" live every {us} us"),
                };
                format!("session {name} created, streaming to {}{live}", target.url)
            }
            None if snapshot => format!(
                "snapshot session {name} created, snapshots go to {}",
                output.display()
            ),
            None => format!("session {name} created, writing to {}", output.display()),
        };
        self.sessions.push(SessionDef {
            name,
            output: OutputDir::new(output),
            created,
            started: false,
            ever_started: false,
            channels: Vec::new(),
            stream,
            snapshot,
            rotation: RotationSchedule::default(),
        });
        Ok(message)
    }

    /// Adds a channel, or enables again one that `disable-channel` disabled.
    fn enable_channel(&mut self, session: &Option<String>, request: &ChannelRequest) -> Done {
        let channel = request.resolve(&self.settings.default_channel);
        check_name(&channel.name).map_err(|problem| SessionError::InvalidName {
            what: "channel",
            problem,
        })?;
        check_geometry(&channel)?;
        check_tracefile(&channel)?;
        let writers = self.settings.writers.clone();
        let s = self.session(session)?;
        let mut channel = s.channel(channel, request.writer.is_some());
        if !writers.contains(&channel.writer) {
            return Err(SessionError::NoSuchWriter {
                writer: channel.writer,
                registered: writers,
            });
        }
        let message = format!("channel {} enabled in session {}", channel.name, s.name);
        if let Some(existing) = s.channels.iter_mut().find(|c| c.spec.name == channel.name) {
            return reenable_channel(existing, request, &s.name).map(|()| message);
        }
        if s.ever_started {
            return Err(SessionError::ChannelAfterStart(s.name.clone()));
        }
        if s.snapshot {
            match request.mode {
                None => channel.mode = Mode::Overwrite,
                Some(Mode::Overwrite) => {}
                Some(Mode::Discard) => {
                    return Err(SessionError::DiscardInSnapshot {
                        session: s.name.clone(),
                        channel: channel.name,
                    });
                }
            }
        }
        s.channels.push(ChannelDef::new(channel));
        Ok(message)
    }

    /// Enables a rule in a channel; the same rule again changes nothing.
    fn enable_event(&mut self, request: EnableEvent) -> Done {
        let EnableEvent {
            session,
            channel,
            rule,
        } = request;
        let default_channel = self.settings.default_channel.clone();
        let s = self.session(&session)?;
        if channel.is_none() && s.channels.is_empty() && !s.ever_started {
            let mut spec = s.channel(default_channel, false);
            if s.snapshot {
                spec.mode = Mode::Overwrite;
            }
            s.channels.push(ChannelDef::new(spec));
        }
        let index = channel_index(s, channel)?;
        let ch = &mut s.channels[index];
        let message = format!("event {rule} enabled in {}/{}", s.name, ch.spec.name);
        let filter_bytes = |r: &EventRule| r.filter.as_ref().map_or(0, |f| f.as_str().len());
        let bytes = ch.rules.iter().map(filter_bytes).sum::<usize>() + filter_bytes(&rule);
        if bytes > MAX_CHANNEL_FILTER_BYTES && !ch.rules.contains(&rule) {
            return Err(SessionError::FilterBudget {
                channel: ch.spec.name.clone(),
                bytes,
            });
        }
        if !ch.rules.contains(&rule) {
            ch.rules.push(rule);
        }
        Ok(message)
    }

    /// Removes the rules whose pattern text is exactly `pattern` (whatever their
    /// exclusions and level), or every rule of a channel.
    fn disable_event(&mut self, request: DisableEvent) -> Done {
        let s = self.session(&request.session)?;
        let index = channel_index(s, request.channel)?;
        let ch = &mut s.channels[index];
        let what = match request.pattern {
            None => {
                ch.rules.clear();
                "every event".to_owned()
            }
            Some(pattern) => {
                let before = ch.rules.len();
                ch.rules.retain(|r| r.pattern.as_str() != pattern);
                if ch.rules.len() == before {
                    return Err(SessionError::NoSuchRule {
                        pattern,
                        session: s.name.clone(),
                        channel: ch.spec.name.clone(),
                        rules: ch.rules.iter().map(EventRule::to_string).collect(),
                    });
                }
                format!("event {pattern}")
            }
        };
        Ok(format!("{what} disabled in {}/{}", s.name, ch.spec.name))
    }

    /// Disables a channel.
    fn disable_channel(&mut self, session: &Option<String>, channel: String) -> Done {
        let s = self.session(session)?;
        let index = channel_index(s, Some(channel))?;
        let ch = &mut s.channels[index];
        if !ch.enabled {
            return Err(SessionError::ChannelAlreadyDisabled {
                channel: ch.spec.name.clone(),
                session: s.name.clone(),
            });
        }
        ch.enabled = false;
        Ok(format!(
            "channel {} disabled in session {}",
            ch.spec.name, s.name
        ))
    }

    /// Starts a session.
    fn start(&mut self, session: &Option<String>) -> Done {
        let s = self.session(session)?;
        if s.started {
            return Err(SessionError::AlreadyStarted(s.name.clone()));
        }
        if s.channels.is_empty() {
            return Err(SessionError::NothingEnabled(s.name.clone()));
        }
        s.started = true;
        s.ever_started = true;
        // A streaming session makes no local directory; a snapshot session
        // writes nothing until `snapshot record`.
        if s.stream.is_none()
            && !s.snapshot
            && s.channels
                .iter()
                .any(|c| c.spec.buffers == Buffering::PerPid)
        {
            let dir = layout::pid_traces_dir(s.output.path());
            if let Err(e) = spread::create_spread_dir(&s.output) {
                log::warn!("session {}: cannot prepare {}: {e}", s.name, dir.display());
            }
        }
        Ok(format!("tracing started for session {}", s.name))
    }
}

/// The channel of `session` called `name`, or its only one.
fn channel_index(session: &SessionDef, name: Option<String>) -> Result<usize, SessionError> {
    match name {
        Some(c) => session
            .channels
            .iter()
            .position(|ch| ch.spec.name == c)
            .ok_or_else(|| SessionError::NoSuchChannel {
                channel: c,
                session: session.name.clone(),
            }),
        None if session.channels.len() == 1 => Ok(0),
        None => Err(SessionError::WhichChannel {
            session: session.name.clone(),
            channels: session.channels.len(),
        }),
    }
}

/// `enable-channel` of a channel that exists: enables it again if `disable-channel`
/// disabled it and the request sets nothing but its name or the settings it has.
fn reenable_channel(
    existing: &mut ChannelDef,
    request: &ChannelRequest,
    session: &str,
) -> Result<(), SessionError> {
    let spec = &existing.spec;
    let error =
        |make: fn(String, String) -> SessionError| Err(make(spec.name.clone(), session.to_owned()));
    if existing.enabled {
        return error(|channel, session| SessionError::ChannelExists { channel, session });
    }
    if request.resolve(spec) != *spec {
        return error(|channel, session| SessionError::ChannelSettingsDiffer { channel, session });
    }
    existing.enabled = true;
    Ok(())
}

/// Checks a channel's tracefile bounds
/// ([`TracefileLimits::check`](crate::protocol::messages::TracefileLimits::check)), in
/// the CLI's words.
fn check_tracefile(spec: &ChannelSpec) -> Result<(), SessionError> {
    let problem = match spec.tracefile.check(spec.subbuf_size) {
        Ok(()) => return Ok(()),
        Err(TracefileProblem::SmallerThanSubbuf { size, subbuf_size }) => {
            format!("--tracefile-size {size} is smaller than a sub-buffer ({subbuf_size} bytes)")
        }
        Err(TracefileProblem::CountWithoutSize) => {
            "--tracefile-count needs --tracefile-size".to_string()
        }
    };
    Err(SessionError::Tracefile {
        channel: spec.name.clone(),
        problem,
    })
}

/// Checks a channel's geometry the same way the config file does.
fn check_geometry(spec: &ChannelSpec) -> Result<(), SessionError> {
    spec.geometry()
        .validate()
        .map_err(|source| SessionError::Geometry {
            channel: spec.name.clone(),
            source,
        })
}

impl Actor for SessionManager {
    type Context = Context<Self>;
}

impl Handler<CreateSession> for SessionManager {
    type Result = ResponseFuture<Done>;

    fn handle(&mut self, msg: CreateSession, _: &mut Context<Self>) -> Self::Result {
        let result = self.create(msg);
        self.publish(result)
    }
}

impl Handler<EnableChannel> for SessionManager {
    type Result = ResponseFuture<Done>;

    fn handle(&mut self, msg: EnableChannel, _: &mut Context<Self>) -> Self::Result {
        let result = self.enable_channel(&msg.session, &msg.channel);
        self.publish(result)
    }
}

impl Handler<EnableEvent> for SessionManager {
    type Result = ResponseFuture<Done>;

    fn handle(&mut self, msg: EnableEvent, _: &mut Context<Self>) -> Self::Result {
        let result = self.enable_event(msg);
        self.publish(result)
    }
}

impl Handler<DisableEvent> for SessionManager {
    type Result = ResponseFuture<Done>;

    fn handle(&mut self, msg: DisableEvent, _: &mut Context<Self>) -> Self::Result {
        let result = self.disable_event(msg);
        self.publish(result)
    }
}

impl Handler<DisableChannel> for SessionManager {
    type Result = ResponseFuture<Done>;

    fn handle(&mut self, msg: DisableChannel, _: &mut Context<Self>) -> Self::Result {
        let result = self.disable_channel(&msg.session, msg.channel);
        self.publish(result)
    }
}

impl Handler<StartSession> for SessionManager {
    type Result = ResponseFuture<Done>;

    fn handle(&mut self, msg: StartSession, _: &mut Context<Self>) -> Self::Result {
        let result = self.start(&msg.session);
        self.publish(result)
    }
}

impl Handler<StopSession> for SessionManager {
    type Result = ResponseFuture<Done>;

    fn handle(&mut self, msg: StopSession, _: &mut Context<Self>) -> Self::Result {
        let session = match self.session(&msg.session) {
            Ok(s) if s.started => {
                s.started = false;
                s.name.clone()
            }
            Ok(s) => return ready(Err(SessionError::NotStarted(s.name.clone()))),
            Err(e) => return ready(Err(e)),
        };
        let stop = self.factory.send(factory::StopSession(session.clone()));
        let stats = self.stats.clone();
        Box::pin(async move {
            let flushed = stop.await.map_err(FlushError::from).and_then(|r| r);
            release_freed_heap();
            match (flushed, failed_streams(&stats, &session)) {
                (Ok(()), None) => Ok(format!(
                    "tracing stopped for session {session}; trace flushed"
                )),
                (Err(source), _) => Err(SessionError::StopIncomplete { session, source }),
                (Ok(()), Some(failed)) => Err(SessionError::DataLost { session, failed }),
            }
        })
    }
}

impl Handler<DestroySession> for SessionManager {
    type Result = ResponseFuture<Done>;

    fn handle(&mut self, msg: DestroySession, _: &mut Context<Self>) -> Self::Result {
        let session = match self.session(&msg.session) {
            Ok(s) => s.name.clone(),
            Err(e) => return ready(Err(e)),
        };
        self.sessions.retain(|s| s.name != session);
        let relayd = self.settings.relayd.clone();
        let destroy = self.factory.send(factory::DestroySession(session.clone()));
        Box::pin(async move {
            let destroyed = destroy.await;
            // After the sets: their streams are closed on the relayd first.
            relayd.close(&session);
            match destroyed {
                Ok(Ok(())) => Ok(format!("session {session} destroyed")),
                Ok(Err(source)) => Err(SessionError::DestroyIncomplete { session, source }),
                Err(source) => Err(SessionError::Factory { session, source }),
            }
        })
    }
}

impl Handler<RecordSnapshot> for SessionManager {
    type Result = ResponseFuture<Done>;

    fn handle(&mut self, msg: RecordSnapshot, _: &mut Context<Self>) -> Self::Result {
        let session = match self.session(&msg.session) {
            Ok(s) if s.snapshot => s.name.clone(),
            Ok(s) => return ready(Err(SessionError::NotSnapshot(s.name.clone()))),
            Err(e) => return ready(Err(e)),
        };
        let record = self.factory.send(factory::RecordSnapshot {
            session: session.clone(),
            output: msg.output,
            max_size: msg.max_size,
        });
        Box::pin(async move {
            match record.await {
                Ok(Ok(message)) => Ok(message),
                Ok(Err(source)) => Err(SessionError::Snapshot { session, source }),
                Err(source) => Err(SessionError::Factory { session, source }),
            }
        })
    }
}

impl Handler<RotateSession> for SessionManager {
    type Result = ResponseFuture<Done>;

    fn handle(&mut self, msg: RotateSession, _: &mut Context<Self>) -> Self::Result {
        let session = match self.session(&msg.session) {
            Ok(s) => s.name.clone(),
            Err(e) => return ready(Err(e)),
        };
        let clear = msg.clear;
        let rotate = self.factory.send(factory::RotateSession {
            session: session.clone(),
            clear,
        });
        Box::pin(async move {
            match rotate.await {
                Ok(Ok(Some(archive))) => Ok(format!(
                    "session {session}: trace chunk archived to {}",
                    archive.display()
                )),
                Ok(Ok(None)) if clear => Ok(format!("session {session} cleared")),
                Ok(Ok(None)) => Ok(format!(
                    "session {session}: nothing recorded since the last rotation, no archive made"
                )),
                Ok(Err(source)) => Err(SessionError::Rotate {
                    session,
                    source: Box::new(source),
                }),
                Err(source) => Err(SessionError::Factory { session, source }),
            }
        })
    }
}

/// `timer 10000 ms, size 67108864 bytes`: a schedule in words.
fn schedule_words(schedule: &RotationSchedule) -> String {
    let mut words = Vec::new();
    if let Some(ms) = schedule.timer_us {
        words.push(format!("every {}", crate::config::TimeSpan(ms)));
    }
    if let Some(size) = schedule.size {
        words.push(format!("every {size} bytes"));
    }
    match words.is_empty() {
        true => "none".to_string(),
        false => words.join(" or "),
    }
}

impl Handler<EnableRotation> for SessionManager {
    type Result = ResponseFuture<Done>;

    fn handle(&mut self, msg: EnableRotation, _: &mut Context<Self>) -> Self::Result {
        let result = self.session(&msg.session).and_then(|s| {
            let bad = |problem| SessionError::BadRotation {
                session: s.name.clone(),
                problem,
            };
            if s.snapshot {
                return Err(bad("a snapshot session writes no trace to rotate"));
            }
            if s.stream.is_some() {
                return Err(bad("a streaming session stores no local trace to rotate"));
            }
            if msg.schedule.timer_us == Some(0) || msg.schedule.size == Some(0) {
                return Err(bad("--timer and --size must be more than 0"));
            }
            if msg.schedule.timer_us.is_none() && msg.schedule.size.is_none() {
                return Err(bad("enable-rotation needs --timer TIME or --size SIZE"));
            }
            s.rotation.timer_us = msg.schedule.timer_us.or(s.rotation.timer_us);
            s.rotation.size = msg.schedule.size.or(s.rotation.size);
            Ok(format!(
                "session {}: rotation {}",
                s.name,
                schedule_words(&s.rotation)
            ))
        });
        self.publish(result)
    }
}

impl Handler<DisableRotation> for SessionManager {
    type Result = ResponseFuture<Done>;

    fn handle(&mut self, msg: DisableRotation, _: &mut Context<Self>) -> Self::Result {
        let result = self.session(&msg.session).map(|s| {
            let both = !msg.timer && !msg.size;
            if msg.timer || both {
                s.rotation.timer_us = None;
            }
            if msg.size || both {
                s.rotation.size = None;
            }
            format!(
                "session {}: rotation {}",
                s.name,
                schedule_words(&s.rotation)
            )
        });
        self.publish(result)
    }
}

impl Handler<ListSessions> for SessionManager {
    type Result = Result<Vec<SessionInfo>, SessionError>;

    fn handle(&mut self, msg: ListSessions, _: &mut Context<Self>) -> Self::Result {
        let sessions: Vec<&SessionDef> = match msg.session {
            Some(_) => vec![&*self.session(&msg.session)?],
            None => self.sessions.iter().collect(),
        };
        Ok(sessions
            .into_iter()
            .map(|s| SessionInfo {
                name: s.name.clone(),
                output: match &s.stream {
                    Some(target) => target.url.to_string(),
                    None => s.output.path().display().to_string(),
                },
                started: s.started,
                snapshot: s.snapshot,
                rotation: s.rotation,
                channels: s
                    .channels
                    .iter()
                    .map(|c| {
                        let rules = c.rules.iter().map(EventRule::to_string);
                        (c.spec.clone(), rules.collect())
                    })
                    .collect(),
                disabled_channels: s
                    .channels
                    .iter()
                    .filter(|c| !c.enabled)
                    .map(|c| c.spec.name.clone())
                    .collect(),
                url: s.stream.as_ref().map(|t| t.url.to_string()),
                live_timer_us: s.stream.as_ref().map_or(0, |t| t.live_timer_us),
            })
            .collect())
    }
}

/// The failed writers of `session`, for the answer to `stop`.
fn failed_streams(stats: &Stats, session: &str) -> Option<String> {
    let failures = stats.failed_writers.lock().ok()?;
    let prefix = format!("{session}/");
    let lines: Vec<String> = failures
        .iter()
        .filter(|f| f.stream.starts_with(&prefix))
        .map(|f| {
            format!(
                "writer {} failed ({}), {} packets lost",
                f.stream, f.error, f.packets_lost
            )
        })
        .collect();
    (!lines.is_empty()).then(|| lines.join("; "))
}

/// Record `contexts` with every event of a channel (every channel of the session
/// when `channel` is `None`), before the session's first start.
#[derive(Message)]
#[rtype(result = "Done")]
pub struct AddContext {
    /// Session name; `None`: the most recently created.
    pub session: Option<String>,
    /// Channel name; `None`: every channel of the session.
    pub channel: Option<String>,
    /// The context types to add.
    pub contexts: Vec<ContextType>,
}

impl Handler<AddContext> for SessionManager {
    type Result = Done;

    fn handle(&mut self, msg: AddContext, _: &mut Context<Self>) -> Self::Result {
        if msg.contexts.is_empty() {
            return Err(SessionError::NoContextType);
        }
        let s = self.session(&msg.session)?;
        if s.ever_started {
            return Err(SessionError::ContextAfterStart(s.name.clone()));
        }
        let chosen: Vec<&mut ChannelDef> = match &msg.channel {
            Some(c) => {
                let found = s.channels.iter_mut().find(|ch| &ch.spec.name == c);
                match found {
                    Some(ch) => vec![ch],
                    None => {
                        return Err(SessionError::NoSuchChannel {
                            channel: c.clone(),
                            session: s.name.clone(),
                        });
                    }
                }
            }
            None => s.channels.iter_mut().collect(),
        };
        if chosen.is_empty() {
            return Err(SessionError::NoChannel(s.name.clone()));
        }
        let mut names = Vec::new();
        for ch in chosen {
            let mut all = ch.spec.contexts();
            all.extend_from_slice(&msg.contexts);
            ch.spec.contexts = Some(ContextSet::of(&all).to_vec());
            names.push(ch.spec.name.clone());
        }
        let added: Vec<&str> = msg.contexts.iter().map(|c| c.name()).collect();
        Ok(format!(
            "context {} added to {}/{}",
            added.join(", "),
            s.name,
            names.join(", ")
        ))
    }
}

/// Every connected app, as the BufferFactory knows them (`list --apps`).
#[derive(Message)]
#[rtype(result = "Result<Vec<AppInfo>, SessionError>")]
pub struct ListApps;

impl Handler<ListApps> for SessionManager {
    type Result = ResponseFuture<Result<Vec<AppInfo>, SessionError>>;

    fn handle(&mut self, _: ListApps, _: &mut Context<Self>) -> Self::Result {
        let list = self.factory.send(factory::ListApps);
        Box::pin(async move { list.await.map_err(SessionError::ListApps) })
    }
}

/// An immediate answer.
fn ready(result: Done) -> ResponseFuture<Done> {
    Box::pin(fut::ready(result))
}
