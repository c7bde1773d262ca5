//! The messages of both sockets.
//!
//! `apps.sock`: an app sends a [`crate::protocol::Hello`] then one [`AppRegister`];
//! the daemon answers with any number of [`AppCommand::Channel`] and
//! [`AppCommand::Enable`], then [`AppCommand::RegistrationDone`]. The connection stays
//! open for the app's life: later commands are pushed over it, and its EOF is how the
//! daemon learns that the app is gone. A registered app may send [`AppRequest`]s
//! (events registered late: a library loaded later, a callsite met for the first
//! time), each answered in order.
//!
//! `control.sock`: the CLI sends a Hello then one [`ControlRequest`] and reads one
//! [`ControlReply`]; each command is its own connection.

use crate::ctf::context::{ContextType, default_contexts};
use crate::ctf::field::{EventDesc, LogLevel};
use crate::filter::Program;
use crate::shm::{Geometry, Mode};
use serde::{Deserialize, Serialize};

/// What an app says about itself. Its pid and uid are not here on purpose: the daemon
/// takes them from SO_PEERCRED.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct AppRegister {
    /// Program name, used in per-PID sub-trace directory names.
    pub name: String,
    /// Pointer width of the app (64 for every app this crate builds).
    pub bitness: u8,
    /// Every event the app can record, in the order the app indexes them.
    pub events: Vec<EventDesc>,
}

/// Largest frame a registered app may send (an [`AppRequest`]), whatever
/// `daemon.max_frame_bytes` allows before registration: what a registered peer can
/// make the daemon hold. The app splits a larger batch of events into several
/// requests.
pub const MAX_LATE_FRAME: usize = 64 * 1024;

/// What a registered app sends after its [`AppRegister`]; each is answered, in
/// order, before the next is read.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum AppRequest {
    /// More events, indexed after those registered so far on this connection: the
    /// daemon answers with any [`AppCommand::Channel`] and [`AppCommand::Enable`] they
    /// need, then [`AppCommand::EventsRegistered`], or with
    /// [`AppCommand::EventsRefused`] (none of them is indexed then).
    RegisterEvents {
        /// The new events, checked like those of [`AppRegister`].
        events: Vec<EventDesc>,
    },
}

/// The daemon's messages to an app.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum AppCommand {
    /// The daemon will not trace this app (for example its app limit is reached).
    Refused {
        /// Why, for the app's one warning.
        reason: String,
    },
    /// A channel's ring set. The frame carries `streams + 1` fds: the wake-up eventfd,
    /// then one ring memfd per stream.
    Channel {
        /// Names this channel in later commands to this app.
        key: u64,
        /// Number of ring fds that follow the eventfd.
        streams: u32,
        /// What every event in these rings carries after its header, in encoding
        /// order (docs/trace-layout.md, "Contexts").
        contexts: Vec<ContextType>,
    },
    /// Record these events into channel `key`, each with its id in that trace. An
    /// event enabled already is enabled again with the filter given now (or none).
    Enable {
        /// The channel, as sent in [`AppCommand::Channel`].
        key: u64,
        /// `(index into AppRegister::events, event id)` pairs.
        events: Vec<(u32, u32)>,
        /// `(index, filter)` of those of `events` recorded only when their values
        /// pass a filter (`enable-event --filter`); the others record every emission.
        filters: Vec<(u32, Program)>,
    },
    /// Stop recording into channel `key` (session stopped or destroyed).
    Disable {
        /// The channel, as sent in [`AppCommand::Channel`].
        key: u64,
    },
    /// Every buffer the app needs now is in its hands: its init may return.
    RegistrationDone,
    /// The events of an [`AppRequest::RegisterEvents`] have indices
    /// `first..first + count`, and every grant they need was sent before this.
    EventsRegistered {
        /// Index of the first of them.
        first: u32,
        /// How many.
        count: u32,
    },
    /// The events of an [`AppRequest::RegisterEvents`] were refused and have no
    /// index; the connection stays registered with its earlier events.
    EventsRefused {
        /// Why (a limit's config key or the bad description), for the app's warning.
        reason: String,
    },
    /// Stop recording these events into channel `key` (`disable-event`,
    /// `disable-channel`); the app's other events in it keep recording.
    DisableEvents {
        /// The channel, as sent in [`AppCommand::Channel`].
        key: u64,
        /// Indices into `AppRegister::events`.
        events: Vec<u32>,
    },
}

/// Where a channel's rings live (`buffers = "uid" | "pid"` in the config file).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Buffering {
    /// One ring set per user id, shared by all its apps.
    #[serde(rename = "uid")]
    PerUid,
    /// One ring set per process, created at registration and torn down at exit.
    #[serde(rename = "pid")]
    PerPid,
}

/// A channel as the CLI or the config file asks for it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChannelSpec {
    /// Channel name: the stream file prefix (`<name>_<cpu>`).
    pub name: String,
    /// Per-UID or per-PID ring sets.
    pub buffers: Buffering,
    /// Sub-buffer (packet) size in bytes; power of two, at least 4 KiB.
    pub subbuf_size: u32,
    /// Sub-buffers per ring; power of two, at least 2.
    pub num_subbuf: u32,
    /// Discard or overwrite when full.
    pub mode: Mode,
    /// Name of the registered writer that stores this channel's packets.
    pub writer: String,
    /// Contexts its events carry; `None`: the default of its buffering scheme
    /// ([`default_contexts`]: vpid and vtid per-UID, none per-PID).
    pub contexts: Option<Vec<ContextType>>,
    /// Bounds on each stream's files (LTTng's `--tracefile-size/-count`).
    pub tracefile: TracefileLimits,
}

/// How much disk each stream of a channel may take: at most `count` files of at most
/// `size` bytes (`<channel>_<cpu>_<k>`), the oldest deleted. Zero means no bound.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TracefileLimits {
    /// Most bytes of one stream file (whole packets); 0: one unbounded file.
    pub size: u64,
    /// Most files per stream, the oldest deleted; 0: keep every file.
    pub count: u32,
}

/// Why tracefile bounds cannot hold a stream: one check, [`TracefileLimits::check`],
/// for `enable-channel` and the config file, which each word it for their keys.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TracefileProblem {
    /// A file would be smaller than one sub-buffer (a packet never spans files).
    SmallerThanSubbuf {
        /// The file size asked for.
        size: u64,
        /// The channel's sub-buffer size.
        subbuf_size: u32,
    },
    /// A file count without a file size: an unbounded file never rotates.
    CountWithoutSize,
}

impl TracefileLimits {
    /// Checks that the bounds can hold a stream of `subbuf_size` packets: a file
    /// holds at least one sub-buffer (as LTTng requires), and a count bounds files
    /// of a bounded size only.
    pub fn check(&self, subbuf_size: u32) -> Result<(), TracefileProblem> {
        if self.size > 0 && self.size < u64::from(subbuf_size) {
            Err(TracefileProblem::SmallerThanSubbuf {
                size: self.size,
                subbuf_size,
            })
        } else if self.size == 0 && self.count > 0 {
            Err(TracefileProblem::CountWithoutSize)
        } else {
            Ok(())
        }
    }
}

impl ChannelSpec {
    /// The contexts its events carry, in encoding order.
    pub fn contexts(&self) -> Vec<ContextType> {
        let asked = match &self.contexts {
            Some(c) => c.clone(),
            None => default_contexts(self.buffers == Buffering::PerUid),
        };
        crate::ctf::context::ContextSet::of(&asked).to_vec()
    }

    /// The ring geometry of the channel.
    pub fn geometry(&self) -> Geometry {
        Geometry {
            subbuf_size: u64::from(self.subbuf_size),
            num_subbuf: u64::from(self.num_subbuf),
        }
    }
}

/// A channel as `enable-channel` asks for it: what is not given comes from the
/// daemon's `[channel_defaults]`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChannelRequest {
    /// Channel name.
    pub name: String,
    /// Per-UID or per-PID ring sets.
    pub buffers: Option<Buffering>,
    /// Sub-buffer size in bytes.
    pub subbuf_size: Option<u32>,
    /// Sub-buffers per ring.
    pub num_subbuf: Option<u32>,
    /// Discard or overwrite.
    pub mode: Option<Mode>,
    /// Writer name.
    pub writer: Option<String>,
    /// Contexts its events carry.
    pub contexts: Option<Vec<ContextType>>,
    /// Bounds on each stream's files; `None`: unbounded.
    pub tracefile: Option<TracefileLimits>,
}

impl ChannelRequest {
    /// The full channel, taking what is unset from `defaults`.
    pub fn resolve(&self, defaults: &ChannelSpec) -> ChannelSpec {
        ChannelSpec {
            name: self.name.clone(),
            buffers: self.buffers.unwrap_or(defaults.buffers),
            subbuf_size: self.subbuf_size.unwrap_or(defaults.subbuf_size),
            num_subbuf: self.num_subbuf.unwrap_or(defaults.num_subbuf),
            mode: self.mode.unwrap_or(defaults.mode),
            writer: self
                .writer
                .clone()
                .unwrap_or_else(|| defaults.writer.clone()),
            contexts: self.contexts.clone().or_else(|| defaults.contexts.clone()),
            tracefile: self.tracefile.unwrap_or(defaults.tracefile),
        }
    }
}

/// A command from the CLI.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum ControlRequest {
    /// Create a session writing under `output` (the daemon picks a default if absent).
    Create {
        /// Session name.
        name: String,
        /// Output directory.
        output: Option<String>,
        /// `net://HOST[:CTRL[:DATA]]`: stream to an lttng-relayd instead of writing
        /// files (docs/streaming.md).
        #[serde(default)]
        url: Option<String>,
        /// `--live`: live timer in microseconds (needs `url`).
        #[serde(default)]
        live_timer_us: Option<u32>,
    },
    /// Add a channel to a session.
    EnableChannel {
        /// Session name; `None` means the most recently created session.
        session: Option<String>,
        /// The channel; unset settings take the daemon's `[channel_defaults]`.
        channel: ChannelRequest,
    },
    /// Enable the events matching a rule: `pattern` (LTTng globbing: `*` anywhere,
    /// `\*` a literal star), less the names matching an `exclude` pattern, at the
    /// levels `loglevel` takes.
    EnableEvent {
        /// Session name; `None` means the most recently created session.
        session: Option<String>,
        /// Channel name; `None` means the session's only channel, or a default one.
        channel: Option<String>,
        /// The event pattern.
        pattern: String,
        /// Patterns of names taken back out (`--exclude`); only with a `*` pattern.
        exclude: Vec<String>,
        /// Which log levels the rule takes.
        loglevel: LogLevelRule,
        /// Which emissions the rule takes (`--filter`, LTTng's filter language);
        /// parsed by the daemon, at most `filter::parse::MAX_FILTER_LEN` bytes.
        filter: Option<String>,
    },
    /// Start tracing.
    Start {
        /// Session name; `None` means the most recently created session.
        session: Option<String>,
    },
    /// Stop tracing; returns once everything recorded so far is on disk.
    Stop {
        /// Session name; `None` means the most recently created session.
        session: Option<String>,
    },
    /// Stop (if started) and free everything of a session.
    Destroy {
        /// Session name; `None` means the most recently created session.
        session: Option<String>,
    },
    /// Describe one session, or list them all.
    List {
        /// Session name, or all.
        session: Option<String>,
    },
    /// Counters of the whole daemon.
    Status,
    /// Record `contexts` with every event of a channel (LTTng's `add-context`), from
    /// the session's first start on.
    AddContext {
        /// Session name; `None` means the most recently created session.
        session: Option<String>,
        /// Channel name; `None` means every channel of the session.
        channel: Option<String>,
        /// The contexts to add to those the channel records already.
        contexts: Vec<ContextType>,
    },
    /// Every connected, registered app (LTTng's `lttng list -u`).
    ListApps,
    /// Remove event rules from a channel of a session, started or not: every
    /// registered app stops recording the events no rule of the channel matches any
    /// more. What they already recorded is kept.
    DisableEvent {
        /// Session name; `None` means the most recently created session.
        session: Option<String>,
        /// Channel name; `None` means the session's only channel.
        channel: Option<String>,
        /// The rule's pattern exactly as enabled; `None` removes every rule.
        pattern: Option<String>,
    },
    /// Stop recording into a channel of a session until `EnableChannel` of the same
    /// name enables it again (its rules are kept).
    DisableChannel {
        /// Session name; `None` means the most recently created session.
        session: Option<String>,
        /// Channel name.
        channel: String,
    },
    /// Create a snapshot (flight-recorder) session: its channels are in overwrite
    /// mode and nothing is written while it runs; `SnapshotRecord` writes what its
    /// rings hold.
    CreateSnapshot {
        /// Session name.
        name: String,
        /// Where snapshots go (the daemon picks a default if absent).
        output: Option<String>,
    },
    /// Archive the session's current trace chunk into `archives/<begin>-<end>-<n>/`
    /// while it goes on tracing into the next (LTTng's `rotate`).
    Rotate {
        /// Session name; `None` means the most recently created session.
        session: Option<String>,
    },
    /// Delete what the session recorded since its last rotation, on disk and in its
    /// rings, while it goes on tracing (LTTng's `clear`).
    Clear {
        /// Session name; `None` means the most recently created session.
        session: Option<String>,
    },
    /// Set the session's automatic rotations (LTTng's `enable-rotation`): each given
    /// bound replaces the one there was.
    EnableRotation {
        /// Session name; `None` means the most recently created session.
        session: Option<String>,
        /// The bounds given.
        schedule: RotationSchedule,
    },
    /// Remove the session's automatic rotations (LTTng's `disable-rotation`): both
    /// when neither `timer` nor `size` is set.
    DisableRotation {
        /// Session name; `None` means the most recently created session.
        session: Option<String>,
        /// Remove the timer.
        timer: bool,
        /// Remove the size bound.
        size: bool,
    },
    /// Write the current contents of a snapshot session's rings into a new
    /// `snapshot-<n>-<date>` directory, without stopping tracing.
    SnapshotRecord {
        /// Session name; `None` means the most recently created session.
        session: Option<String>,
        /// Parent directory of the snapshot (default: the session's output).
        output: Option<String>,
        /// Most bytes of packets the snapshot holds, shared by its streams.
        max_size: Option<u64>,
    },
}

/// The log-level condition of an event rule, LTTng's `--loglevel` /
/// `--loglevel-only` (numbers as [`LogLevel`]: `EMERG` 0 ... `DEBUG` 14).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum LogLevelRule {
    /// Any level.
    #[default]
    All,
    /// This level and more severe ones (the same number or lower).
    AtLeast(LogLevel),
    /// Exactly this level.
    Only(LogLevel),
}

/// One session as `list` shows it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SessionInfo {
    /// Session name.
    pub name: String,
    /// Where its trace goes.
    pub output: String,
    /// Whether it is recording.
    pub started: bool,
    /// Its channels with their event rules (pattern, exclusions, level condition).
    pub channels: Vec<(ChannelSpec, Vec<String>)>,
    /// Names of its channels that `disable-channel` disabled.
    pub disabled_channels: Vec<String>,
    /// The lttng-relayd it streams to (`net://...`), if it streams (then `output`
    /// shows the same URL).
    pub url: Option<String>,
    /// Its live timer in microseconds, 0 if it is not a live session.
    pub live_timer_us: u32,
    /// A snapshot session (`create --snapshot`): `output` is where its snapshots go.
    pub snapshot: bool,
    /// Its automatic rotations.
    #[serde(default)]
    pub rotation: RotationSchedule,
}

/// One writer (stream) that is not healthy, for `status`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct WriterFailure {
    /// `session/channel_cpu` and the owner.
    pub stream: String,
    /// The last error.
    pub error: String,
    /// Packets given up.
    pub packets_lost: u64,
}

/// The daemon's counters, for `status` and for tests that check teardown.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct StatusReport {
    /// Apps connected now.
    pub apps: u64,
    /// Apps that registered since the daemon started.
    pub apps_total: u64,
    /// Live BufferSet actors.
    pub buffer_sets: u64,
    /// Live Writer actors.
    pub writers: u64,
    /// Per-PID ring sets made ahead and waiting for apps.
    pub pid_sets_ready: u64,
    /// How many the daemon keeps ready (`warm_pid_buffer_sets` per geometry in use).
    pub pid_sets_wanted: u64,
    /// Writers restarted after a failure, in total.
    pub writer_restarts: u64,
    /// Events dropped because a ring was full.
    pub events_discarded: u64,
    /// Packets overwritten in flight-recorder channels.
    pub packets_overwritten: u64,
    /// Events lost because their producer died between reserve and commit.
    pub events_lost_dead_producer: u64,
    /// Reservations made by a producer thread that found its ring's holder table full
    /// (or nested in another of its reservations): should it die inside one, its
    /// packet is given up after a delay instead of losing that one event.
    pub unrecorded_reservations: u64,
    /// Packets that a failed writer could not store.
    pub packets_lost_writer: u64,
    /// Rings found lying (a value in their shared memory that no honest producer
    /// writes) and no longer read.
    pub corrupt_rings: u64,
    /// Sub-buffers dropped unread with corrupt rings.
    pub packets_lost_corrupt_ring: u64,
    /// The losses above by the uid owning the rings, ascending uid: what one user's
    /// apps (or their lies) cost is never counted against another.
    pub per_uid: Vec<UidLosses>,
    /// Writers past their restart limits.
    pub failed_writers: Vec<WriterFailure>,
    /// Registrations by the daemon's own service time, accept to RegistrationDone:
    /// entry `b` counts those that took less than `2^(b+1)` microseconds (and at
    /// least `2^b`, but for entry 0). Apps measure their latency with their own clock,
    /// run queue included; this is the daemon's part alone.
    pub registration_service_us: Vec<u64>,
    /// Apps refused since the daemon started, by the limit (its config key) or
    /// cause that refused them, e.g. `("limits.max_apps_per_uid", 3)`.
    pub refusals: Vec<(String, u64)>,
    /// Connections made to lttng-relayds by streaming sessions (docs/streaming.md):
    /// above the number of streaming sessions, the difference is reconnections.
    #[serde(default)]
    pub relayd_connects: u64,
    /// The trace clock of every session's rings (`tsc` or `monotonic`, see
    /// `USTRACE_CLOCK`), and the TSC frequency the daemon calibrated, if any.
    #[serde(default)]
    pub clock: String,
    /// TSC ticks per second measured against CLOCK_MONOTONIC; 0 for `monotonic`.
    #[serde(default)]
    pub clock_tsc_hz: u64,
    /// Packets that could not be sent to a relayd (retried after the back-off, or
    /// counted in `packets_lost_writer` once their writer gave up).
    #[serde(default)]
    pub relayd_send_failures: u64,
    /// The rotation of every session that has a schedule or archived a chunk, by
    /// session name.
    #[serde(default)]
    pub rotations: Vec<SessionRotation>,
}

/// A session's automatic rotations (`enable-rotation --timer/--size`, the config's
/// `rotate_timer`/`rotate_size`), LTTng's rotation schedules; none by default.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RotationSchedule {
    /// Rotate once the current chunk is this many microseconds old.
    pub timer_us: Option<u64>,
    /// Rotate once the current chunk holds this many bytes of packets.
    pub size: Option<u64>,
}

/// How far a session's rotations got, for `status`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RotationInfo {
    /// Chunks closed so far (archived or cleared).
    pub archives: u64,
    /// The latest archive's path.
    pub last_archive: Option<String>,
}

/// One session's rotation settings and state, for `status`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SessionRotation {
    /// The session.
    pub session: String,
    /// Its schedule.
    pub schedule: RotationSchedule,
    /// Its chunks so far.
    pub info: RotationInfo,
}

/// The ring losses of one uid's buffers (per-UID, and per-PID of its apps), for
/// `status`: each ring's counters are checked for plausibility and summed per owner.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct UidLosses {
    /// The owner.
    pub uid: u32,
    /// Events its producers dropped because a ring was full or the event too big.
    pub events_discarded: u64,
    /// Packets overwritten in its flight-recorder channels.
    pub packets_overwritten: u64,
    /// Events lost because one of its producers died between reserve and commit.
    pub events_lost_dead_producer: u64,
    /// Its rings found corrupt.
    pub corrupt_rings: u64,
    /// Sub-buffers dropped unread with them.
    pub packets_lost_corrupt_ring: u64,
}

impl StatusReport {
    /// The `p`-th percentile (0..=1) of the service times counted in `now` and not
    /// in `before`, as the upper bound of its power-of-two bucket, in microseconds.
    pub fn service_percentile(now: &[u64], before: &[u64], p: f64) -> Option<u64> {
        let counts: Vec<u64> = now
            .iter()
            .enumerate()
            .map(|(b, n)| n.saturating_sub(before.get(b).copied().unwrap_or(0)))
            .collect();
        let total: u64 = counts.iter().sum();
        let rank = ((p * total as f64).ceil() as u64).max(1);
        let mut seen = 0;
        for (b, n) in counts.iter().enumerate() {
            seen += n;
            if seen >= rank && total > 0 {
                return Some(1 << (b + 1));
            }
        }
        None
    }
}

/// A successful answer to a [`ControlRequest`].
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum ControlOk {
    /// A human-readable confirmation.
    Done(String),
    /// The answer to `list`.
    Sessions(Vec<SessionInfo>),
    /// The answer to `status`.
    Status(Box<StatusReport>),
    /// The answer to `list --apps`, by registration time.
    Apps(Vec<AppInfo>),
}

/// One connected app, for `list --apps`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AppInfo {
    /// From SO_PEERCRED at its connection.
    pub pid: i32,
    /// From SO_PEERCRED at its connection.
    pub uid: u32,
    /// The name it registered, as its per-PID directories spell it.
    pub procname: String,
    /// When it registered, milliseconds since the Unix epoch.
    pub registered_unix_ms: u64,
    /// `provider:name` of every event it registered, in its order.
    pub events: Vec<String>,
    /// The channels it records into now or did in this session's life.
    pub channels: Vec<AppChannelInfo>,
}

/// A channel an app was given, for `list --apps`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AppChannelInfo {
    /// Session name.
    pub session: String,
    /// Channel name.
    pub channel: String,
    /// Shared per-UID rings or the app's own.
    pub buffers: Buffering,
    /// `provider:name` of its events enabled in that channel, sorted.
    pub enabled: Vec<String>,
}

/// The answer to a [`ControlRequest`]; the error is a message for the user.
pub type ControlReply = Result<ControlOk, String>;
