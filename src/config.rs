//! The daemon's configuration file (`ustraced.toml`).
//!
//! Every key is optional: a missing key takes the default that `config/ustraced.toml`
//! documents, and [`Config::default`] equals that file. An unknown key or a bad value
//! is an error naming the file, the line and column, and the dotted key
//! (`session[0].channel[1].subbuf_size`), so a typo is never silently ignored.
//!
//! Loading has two steps: serde checks names and types (`deny_unknown_fields`
//! everywhere, sizes and patterns parsed by their own types), then
//! [`Config::validate`] checks what spans fields (powers of two, minimums, unique
//! names). Both report through [`ConfigError::Invalid`].
//!
//! The daemon reads settings through the resolved accessors
//! ([`Config::effective_runtime_dir`], [`Config::effective_output_dir`],
//! [`Config::channel_spec`]) so that the
//! defaulting rules live here only.

use std::fmt;
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::de::{self, Deserializer, Visitor};
use serde::{Deserialize, Serialize, Serializer};
use toml::Spanned;
use toml::de::{DeTable, DeValue};

use crate::ctf::context::ContextType;
use crate::protocol::messages::{
    Buffering, ChannelRequest, ChannelSpec, SessionInfo, TracefileLimits, TracefileProblem,
};
use crate::protocol::{self, ProtocolError};
use crate::rule::{ConfigRule, EventRule, InvalidRule};
use crate::shm::{self, Mode};
use crate::trace::registry::EventLimits;

/// The whole file.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// `[daemon]`: sockets, output, timers.
    pub daemon: DaemonConfig,
    /// `[channel_defaults]`: what a channel gets for every setting it leaves out.
    pub channel_defaults: ChannelDefaults,
    /// `[supervision]`: restart policy of writer actors.
    pub supervision: SupervisionConfig,
    /// `[limits]`: bounds on what apps can make the daemon hold.
    pub limits: LimitsConfig,
    /// `[[session]]`: sessions created (and maybe started) when the daemon starts.
    #[serde(rename = "session")]
    pub sessions: Vec<SessionConfig>,
}

/// `[daemon]`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DaemonConfig {
    /// Where the sockets go; `None` (empty in the file) follows
    /// [`protocol::rundir`]. Read it through [`Config::effective_runtime_dir`].
    #[serde(deserialize_with = "empty_path_as_none")]
    pub runtime_dir: Option<PathBuf>,
    /// Parent of session outputs; `None` means `$HOME/ustrace-traces`. Read it
    /// through [`Config::effective_output_dir`].
    #[serde(deserialize_with = "empty_path_as_none")]
    pub output_dir: Option<PathBuf>,
    /// Longest the daemon takes to hand an app its buffers before refusing it (the
    /// app then runs untraced). Apps bound their own wait with
    /// `USTRACE_REGISTER_TIMEOUT_MS`.
    pub registration_timeout_ms: u64,
    /// Largest frame accepted on either socket (see [`protocol::MAX_FRAME`]).
    pub max_frame_bytes: ByteSize,
    /// Period of the drain timer that flushes partially filled sub-buffers.
    pub flush_interval_ms: u64,
    /// Per-PID ring sets kept ready for each geometry in use, made ahead by a
    /// background thread so that registering an app only writes their headers;
    /// 0 makes every set at registration.
    pub warm_pid_buffer_sets: u32,
    /// Dead apps whose per-PID rings a snapshot session keeps for its next
    /// `snapshot record` (the oldest dropped past it); 0 keeps none.
    pub snapshot_kept_dead_apps: u32,
    /// Whether the `ctf` writer stores complete packets with `O_DIRECT` (no copy
    /// into the page cache) where the file system takes it.
    pub direct_io: bool,
}

impl Default for DaemonConfig {
    fn default() -> Self {
        DaemonConfig {
            runtime_dir: None,
            output_dir: None,
            registration_timeout_ms: 3000,
            max_frame_bytes: ByteSize(protocol::MAX_FRAME as u64),
            flush_interval_ms: 200,
            warm_pid_buffer_sets: 8,
            snapshot_kept_dead_apps: 16,
            direct_io: true,
        }
    }
}

impl DaemonConfig {
    /// [`Self::registration_timeout_ms`] as a duration.
    pub fn registration_timeout(&self) -> Duration {
        Duration::from_millis(self.registration_timeout_ms)
    }

    /// [`Self::flush_interval_ms`] as a duration.
    pub fn flush_interval(&self) -> Duration {
        Duration::from_millis(self.flush_interval_ms)
    }

    /// [`Self::max_frame_bytes`] as the limit [`protocol::recv`] takes (validated to
    /// fit in a `u32`).
    pub fn max_frame(&self) -> usize {
        usize::try_from(self.max_frame_bytes.0).unwrap_or(usize::MAX)
    }
}

/// `[channel_defaults]`: a complete set of channel settings.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ChannelDefaults {
    /// Bytes per sub-buffer (one CTF packet); a power of two, at least 4 KiB.
    pub subbuf_size: ByteSize,
    /// Sub-buffers per ring; a power of two, at least 2.
    pub num_subbuf: u32,
    /// What a producer does when the ring is full.
    pub mode: Mode,
    /// Whether processes of one user share buffers or each gets its own.
    pub buffers: Buffering,
    /// Name of the registered writer that turns packets into files.
    pub writer: String,
    /// Contexts every event carries (`["vpid", "vtid", "procname", "pthread_id",
    /// "cpu_id", "ip"]`); unset: vpid and vtid in per-UID channels, none per-PID.
    pub contexts: Option<Vec<ContextType>>,
    /// Most bytes of one stream file (`--tracefile-size`); 0: one unbounded file.
    pub tracefile_size: ByteSize,
    /// Most files per stream, the oldest deleted (`--tracefile-count`); 0: keep
    /// every file. Needs a `tracefile_size`.
    pub tracefile_count: u32,
}

impl Default for ChannelDefaults {
    fn default() -> Self {
        ChannelDefaults {
            subbuf_size: ByteSize(128 * 1024),
            num_subbuf: 4,
            mode: Mode::Discard,
            buffers: Buffering::PerUid,
            writer: "ctf".to_owned(),
            contexts: None,
            tracefile_size: ByteSize(0),
            tracefile_count: 0,
        }
    }
}

/// `[supervision]`: how writer actors are restarted.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SupervisionConfig {
    /// Restarts allowed within [`Self::within_secs`] before the writer is failed.
    pub max_restarts: u32,
    /// Length of the window in which restarts are counted; above 0.
    pub within_secs: u64,
    /// Pause before a restart.
    pub backoff_ms: u64,
}

impl Default for SupervisionConfig {
    fn default() -> Self {
        SupervisionConfig {
            max_restarts: 3,
            within_secs: 10,
            backoff_ms: 100,
        }
    }
}

impl SupervisionConfig {
    /// [`Self::within_secs`] as a duration.
    pub fn within(&self) -> Duration {
        Duration::from_secs(self.within_secs)
    }

    /// [`Self::backoff_ms`] as a duration.
    pub fn backoff(&self) -> Duration {
        Duration::from_millis(self.backoff_ms)
    }
}

/// `[limits]`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LimitsConfig {
    /// Most app connections served at once; above 0.
    pub max_apps: u32,
    /// Most shared memory held by per-PID buffers, all apps together; above 0.
    pub max_pid_buffer_bytes: ByteSize,
    /// Most events one app may register; an app with more is refused; above 0.
    pub max_events_per_app: u32,
    /// Most fields in one event; an app with a wider event is refused; above 0.
    pub max_fields_per_event: u32,
    /// Most distinct events in one trace (a per-UID trace gathers its user's apps);
    /// an app whose events would pass it is refused; above 0.
    pub max_events_per_trace: u32,
    /// Largest metadata text of one trace; an app whose events would pass it is
    /// refused; at least [`MIN_METADATA_BYTES`].
    pub max_metadata_bytes: ByteSize,
    /// Most app connections of one uid served at once, so that one user's idle
    /// connections never shut out another's apps (the daemon's own uid is bounded
    /// by `max_apps` only); 1 ..= `max_apps`. `None` (absent):
    /// a quarter of `max_apps`. Read it through [`LimitsConfig::apps_per_uid`].
    pub max_apps_per_uid: Option<u32>,
    /// Most per-PID buffer memory of one uid's apps together, so that one user
    /// cannot take the memory another's per-PID apps need (the daemon's own uid is
    /// bounded by `max_pid_buffer_bytes` only); 1 ..=
    /// `max_pid_buffer_bytes`. `None` (absent): a quarter of `max_pid_buffer_bytes`.
    /// Read it through [`LimitsConfig::pid_buffer_bytes_per_uid`].
    pub max_pid_buffer_bytes_per_uid: Option<ByteSize>,
    /// Most packet bytes queued for one stream's writer and not stored yet; past
    /// it the stream's ring keeps its packets (and its producers discard), so a
    /// slow or failed writer cannot grow the daemon's heap; above 0.
    pub max_writer_backlog_bytes: ByteSize,
}

impl Default for LimitsConfig {
    fn default() -> Self {
        let events = EventLimits::default();
        LimitsConfig {
            max_apps: 4096,
            max_pid_buffer_bytes: ByteSize(1 << 30),
            max_events_per_app: events.max_events_per_app,
            max_fields_per_event: events.max_fields_per_event,
            max_events_per_trace: events.max_events_per_trace,
            max_metadata_bytes: ByteSize(events.max_metadata_bytes),
            max_apps_per_uid: None,
            max_pid_buffer_bytes_per_uid: None,
            max_writer_backlog_bytes: ByteSize(2 << 20),
        }
    }
}

impl LimitsConfig {
    /// The event and metadata limits, as registries and the factory apply them.
    pub fn events(&self) -> EventLimits {
        EventLimits {
            max_events_per_app: self.max_events_per_app,
            max_fields_per_event: self.max_fields_per_event,
            max_events_per_trace: self.max_events_per_trace,
            max_metadata_bytes: self.max_metadata_bytes.0,
        }
    }

    /// The effective `max_apps_per_uid`: as set, else a quarter of `max_apps` (at
    /// least 1).
    pub fn apps_per_uid(&self) -> u32 {
        self.max_apps_per_uid.unwrap_or((self.max_apps / 4).max(1))
    }

    /// The effective `max_pid_buffer_bytes_per_uid`: as set, else a quarter of
    /// `max_pid_buffer_bytes` (at least 1).
    pub fn pid_buffer_bytes_per_uid(&self) -> u64 {
        self.max_pid_buffer_bytes_per_uid
            .map(|b| b.0)
            .unwrap_or((self.max_pid_buffer_bytes.0 / 4).max(1))
    }
}

/// Smallest `limits.max_metadata_bytes`: room for a trace's fixed declarations
/// and a few channels and events.
pub const MIN_METADATA_BYTES: u64 = 16 * 1024;

/// `[[session]]`: a session the daemon creates at start-up. `ustrace save` writes
/// one (see [`SessionConfig::saved`]).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct SessionConfig {
    /// Unique name, used in the output directory name.
    pub name: String,
    /// Output directory; `None` (empty or absent) means
    /// `<output_dir>/<name>-<YYYYMMDD-HHMMSS>` (see [`Config::session_output_dir`]).
    #[serde(
        default,
        deserialize_with = "empty_path_as_none",
        skip_serializing_if = "Option::is_none"
    )]
    pub output: Option<PathBuf>,
    /// `net://HOST[:CTRL[:DATA]]`: stream the session to an lttng-relayd
    /// (docs/streaming.md) instead of writing it under `output`.
    #[serde(default)]
    pub url: Option<String>,
    /// Live timer in microseconds: the session is live (needs `url`).
    #[serde(default)]
    pub live_timer_us: Option<u32>,
    /// Start tracing as soon as the daemon runs.
    #[serde(default = "default_autostart")]
    pub autostart: bool,
    /// Rotate the session's trace into `archives/` whenever its current chunk is
    /// this old (`enable-rotation --timer`, docs/trace-layout.md "Rotation").
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rotate_timer: Option<TimeSpan>,
    /// Rotate whenever its current chunk holds this many bytes (`--size`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rotate_size: Option<ByteSize>,
    /// A snapshot (flight-recorder) session, as `create --snapshot` makes: nothing
    /// is written while it runs, `snapshot record` writes what its overwrite-mode
    /// rings hold under `output`. Not with `url`.
    #[serde(default, skip_serializing_if = "is_false")]
    pub snapshot: bool,
    /// `[[session.channel]]`: the session's channels.
    #[serde(default, rename = "channel")]
    pub channels: Vec<ChannelConfig>,
}

fn default_autostart() -> bool {
    true
}

/// `[[session.channel]]`: a channel, overriding [`ChannelDefaults`] where it says so.
/// The CLI builds the same value for `enable-channel`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ChannelConfig {
    /// Name, unique in its session; streams are files named `<name>_<cpu>`.
    pub name: String,
    /// Overrides [`ChannelDefaults::buffers`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub buffers: Option<Buffering>,
    /// Overrides [`ChannelDefaults::subbuf_size`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subbuf_size: Option<ByteSize>,
    /// Overrides [`ChannelDefaults::num_subbuf`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub num_subbuf: Option<u32>,
    /// Overrides [`ChannelDefaults::mode`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mode: Option<Mode>,
    /// Overrides [`ChannelDefaults::writer`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub writer: Option<String>,
    /// Overrides [`ChannelDefaults::contexts`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub contexts: Option<Vec<ContextType>>,
    /// Overrides [`ChannelDefaults::tracefile_size`] (0: unbounded).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tracefile_size: Option<ByteSize>,
    /// Overrides [`ChannelDefaults::tracefile_count`] (0: every file kept).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tracefile_count: Option<u32>,
    /// Event rules enabled in this channel: a pattern string, or a table with
    /// `pattern`, `exclude`, `loglevel` / `loglevel_only`.
    #[serde(default)]
    pub events: Vec<ConfigRule>,
    /// `false`: declared disabled, as `disable-channel` leaves it (its events are
    /// kept and `enable-channel NAME` enables it).
    #[serde(default = "default_enabled", skip_serializing_if = "is_true")]
    pub enabled: bool,
}

fn default_enabled() -> bool {
    true
}

fn is_true(value: &bool) -> bool {
    *value
}

fn is_false(value: &bool) -> bool {
    !*value
}

/// The `[[session]]` tables `ustrace save` writes: what [`Config`] reads back.
#[derive(Debug, Serialize)]
pub struct SavedSessions<'a> {
    /// The sessions.
    #[serde(rename = "session")]
    pub sessions: &'a [SessionConfig],
}

impl SessionConfig {
    /// The session `list` describes, every setting written out: loaded by
    /// `ustraced --config` it is declared the same (started if it was). The rules
    /// are read back from `list`'s text of them ([`EventRule`]'s `FromStr`); fails on
    /// a rule this version would not accept in a config file.
    pub fn saved(info: &SessionInfo) -> Result<SessionConfig, InvalidRule> {
        let channels = info
            .channels
            .iter()
            .map(|(spec, events)| {
                Ok(ChannelConfig {
                    name: spec.name.clone(),
                    buffers: Some(spec.buffers),
                    subbuf_size: Some(ByteSize(spec.subbuf_size.into())),
                    num_subbuf: Some(spec.num_subbuf),
                    mode: Some(spec.mode),
                    writer: Some(spec.writer.clone()),
                    contexts: spec.contexts.clone(),
                    // Written even when unbounded (0), so that the daemon's
                    // `[channel_defaults]` cannot bound it on loading.
                    tracefile_size: Some(ByteSize(spec.tracefile.size)),
                    tracefile_count: Some(spec.tracefile.count),
                    events: events
                        .iter()
                        .map(|e| e.parse::<EventRule>().map(ConfigRule))
                        .collect::<Result<_, _>>()?,
                    enabled: !info.disabled_channels.contains(&spec.name),
                })
            })
            .collect::<Result<_, InvalidRule>>()?;
        Ok(SessionConfig {
            name: info.name.clone(),
            output: match info.url {
                Some(_) => None,
                None => Some(PathBuf::from(&info.output)),
            },
            url: info.url.clone(),
            live_timer_us: (info.live_timer_us > 0).then_some(info.live_timer_us),
            autostart: info.started,
            rotate_timer: info.rotation.timer_us.map(TimeSpan),
            rotate_size: info.rotation.size.map(ByteSize),
            snapshot: info.snapshot,
            channels,
        })
    }
}

/// A time span in microseconds, written with a unit as LTTng's `--timer` takes it
/// (`"500us"`, `"250ms"`, `"10s"`, `"5m"`, `"1h"`; a bare number is microseconds).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct TimeSpan(pub u64);

/// A time span that is not a number with an optional us, ms, s, m or h unit.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid time {text:?}: {reason}")]
pub struct InvalidTime {
    /// The text as written.
    pub text: String,
    /// What is wrong with it.
    pub reason: &'static str,
}

/// Units of a [`TimeSpan`], largest first, in microseconds.
const TIME_UNITS: [(&str, u64); 5] = [
    ("h", 3_600_000_000),
    ("m", 60_000_000),
    ("s", 1_000_000),
    ("ms", 1_000),
    ("us", 1),
];

impl std::str::FromStr for TimeSpan {
    type Err = InvalidTime;

    fn from_str(text: &str) -> Result<Self, InvalidTime> {
        let bad = |reason| InvalidTime {
            text: text.to_owned(),
            reason,
        };
        let split = text
            .find(|c: char| !c.is_ascii_digit())
            .unwrap_or(text.len());
        let (digits, unit) = text.split_at(split);
        let scale = match unit {
            "" => 1,
            _ => TIME_UNITS
                .iter()
                .find(|(name, _)| *name == unit)
                .map(|(_, scale)| *scale)
                .ok_or_else(|| bad("expected a number with us, ms, s, m or h"))?,
        };
        if digits.is_empty() {
            return Err(bad("expected a number with us, ms, s, m or h"));
        }
        digits
            .parse::<u64>()
            .ok()
            .and_then(|value| value.checked_mul(scale))
            .map(TimeSpan)
            .ok_or_else(|| bad("does not fit in 64 bits of microseconds"))
    }
}

impl fmt::Display for TimeSpan {
    /// In the largest unit that divides it exactly: `10s`, `1500ms`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (unit, scale) = TIME_UNITS
            .iter()
            .find(|(_, scale)| self.0 > 0 && self.0.is_multiple_of(*scale))
            .copied()
            .unwrap_or(("us", 1));
        write!(f, "{}{unit}", self.0 / scale)
    }
}

impl Serialize for TimeSpan {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&self.to_string())
    }
}

impl<'de> Deserialize<'de> for TimeSpan {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        String::deserialize(deserializer)?
            .parse()
            .map_err(de::Error::custom)
    }
}

/// A byte count written either as an integer or as a string with a binary suffix
/// (`"4096"`, `"128K"`, `"4M"`, `"1G"`; K = 1024).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct ByteSize(pub u64);

/// A size that is not an integer with an optional K, M or G suffix.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid size {text:?}: {reason}")]
pub struct InvalidSize {
    /// The text as written.
    pub text: String,
    /// What is wrong with it.
    pub reason: &'static str,
}

impl std::str::FromStr for ByteSize {
    type Err = InvalidSize;

    fn from_str(text: &str) -> Result<Self, InvalidSize> {
        let bad = |reason| InvalidSize {
            text: text.to_owned(),
            reason,
        };
        let (digits, shift) = match text.as_bytes().last() {
            Some(b'K' | b'k') => (&text[..text.len() - 1], 10),
            Some(b'M' | b'm') => (&text[..text.len() - 1], 20),
            Some(b'G' | b'g') => (&text[..text.len() - 1], 30),
            _ => (text, 0),
        };
        if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
            return Err(bad("expected bytes, or a number with K, M or G"));
        }
        digits
            .parse::<u64>()
            .ok()
            .and_then(|value| value.checked_mul(1 << shift))
            .map(ByteSize)
            .ok_or_else(|| bad("does not fit in 64 bits"))
    }
}

impl Serialize for ByteSize {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_u64(self.0)
    }
}

impl<'de> Deserialize<'de> for ByteSize {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        /// Accepts a TOML integer or string.
        struct ByteSizeVisitor;

        impl Visitor<'_> for ByteSizeVisitor {
            type Value = ByteSize;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(
                    "a size in bytes: an integer, or a string like \"128K\", \"4M\", \"1G\"",
                )
            }

            fn visit_i64<E: de::Error>(self, v: i64) -> Result<ByteSize, E> {
                u64::try_from(v)
                    .map(ByteSize)
                    .map_err(|_| E::custom(format!("size {v} is negative")))
            }

            fn visit_u64<E: de::Error>(self, v: u64) -> Result<ByteSize, E> {
                Ok(ByteSize(v))
            }

            fn visit_str<E: de::Error>(self, v: &str) -> Result<ByteSize, E> {
                v.parse().map_err(E::custom)
            }
        }

        deserializer.deserialize_any(ByteSizeVisitor)
    }
}

/// Where in which file a problem is: `file:line:column`, or `file` alone when the
/// position is unknown.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Location {
    /// The configuration file.
    pub file: PathBuf,
    /// 1-based line and column (in characters), when known.
    pub line_col: Option<(usize, usize)>,
}

impl fmt::Display for Location {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.file.display())?;
        if let Some((line, col)) = self.line_col {
            write!(f, ":{line}:{col}")?;
        }
        Ok(())
    }
}

/// Why a configuration could not be loaded or resolved.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read configuration file {}: {source}", .path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// What the system said.
        #[source]
        source: std::io::Error,
    },
    /// The file is not valid TOML.
    #[error("{location}: invalid TOML: {message}")]
    Syntax {
        /// Where the parser stopped.
        location: Location,
        /// The parser's message.
        message: String,
    },
    /// A key is unknown, has the wrong type, or a bad value.
    #[error("{location}: {key}: {message}")]
    Invalid {
        /// Where the key or value is.
        location: Location,
        /// Dotted path of the key, e.g. `session[0].channel[1].subbuf_size`.
        key: String,
        /// What is wrong and what is expected.
        message: String,
    },
    /// `daemon.output_dir` is empty and `HOME` is not set.
    #[error("no output directory: set daemon.output_dir in the configuration, or HOME")]
    NoOutputDir,
    /// `daemon.runtime_dir` is empty and the environment gives none.
    #[error(transparent)]
    RuntimeDir(#[from] ProtocolError),
}

/// One step of a key path: a table key or an array index.
#[derive(Debug, Clone, Copy)]
enum Step<'a> {
    /// `.key`
    Key(&'a str),
    /// `[index]`
    Index(usize),
}

/// Renders `daemon.output_dir`, `session[0].channel[1].name`.
fn render_path(path: &[Step<'_>]) -> String {
    let mut out = String::new();
    for step in path {
        match step {
            Step::Key(key) => {
                if !out.is_empty() {
                    out.push('.');
                }
                out.push_str(key);
            }
            Step::Index(i) => out.push_str(&format!("[{i}]")),
        }
    }
    out
}

/// A validation failure before it is placed in the file.
struct Problem {
    /// Path of the offending key.
    path: Vec<Step<'static>>,
    /// What is wrong.
    message: String,
}

impl Config {
    /// Reads and checks a configuration file.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_owned(),
            source,
        })?;
        Config::parse(&text, path)
    }

    /// Parses and checks configuration text; `file` is only used in error messages.
    pub fn parse(text: &str, file: &Path) -> Result<Config, ConfigError> {
        let locate = |span: Option<Range<usize>>| Location {
            file: file.to_owned(),
            line_col: span.map(|s| line_col(text, s.start)),
        };
        let document = DeTable::parse(text).map_err(|e| ConfigError::Syntax {
            location: locate(e.span()),
            message: e.message().to_owned(),
        })?;
        let config: Config = toml::from_str(text).map_err(|e| {
            let key = e
                .span()
                .map(|span| render_path(&path_at(document.get_ref(), span.start)))
                .unwrap_or_default();
            ConfigError::Invalid {
                location: locate(e.span()),
                key,
                message: e.message().to_owned(),
            }
        })?;
        config.validate().map_err(|problem| ConfigError::Invalid {
            location: locate(span_of(document.get_ref(), &problem.path)),
            key: render_path(&problem.path),
            message: problem.message,
        })?;
        Ok(config)
    }

    /// Checks the rules serde cannot: powers of two, minimums, positive timers,
    /// unique and file-name-safe session and channel names.
    fn validate(&self) -> Result<(), Problem> {
        let at = |path: Vec<Step<'static>>, message: String| Problem { path, message };
        let key =
            |section: &'static str, key: &'static str| vec![Step::Key(section), Step::Key(key)];
        let d = &self.daemon;
        positive(d.registration_timeout_ms)
            .map_err(|m| at(key("daemon", "registration_timeout_ms"), m))?;
        positive(d.flush_interval_ms).map_err(|m| at(key("daemon", "flush_interval_ms"), m))?;
        if !(4096..=u64::from(u32::MAX)).contains(&d.max_frame_bytes.0) {
            return Err(at(
                key("daemon", "max_frame_bytes"),
                format!(
                    "{} is out of range: between 4096 and {} bytes",
                    d.max_frame_bytes.0,
                    u32::MAX
                ),
            ));
        }
        let bounded = [
            (
                "warm_pid_buffer_sets",
                d.warm_pid_buffer_sets,
                MAX_WARM_SETS,
            ),
            (
                "snapshot_kept_dead_apps",
                d.snapshot_kept_dead_apps,
                MAX_KEPT_DEAD_APPS,
            ),
        ];
        for (name, value, max) in bounded {
            if value > max {
                return Err(at(
                    key("daemon", name),
                    format!("{value} is out of range: at most {max}"),
                ));
            }
        }
        let c = &self.channel_defaults;
        subbuf_size(c.subbuf_size).map_err(|m| at(key("channel_defaults", "subbuf_size"), m))?;
        num_subbuf(c.num_subbuf).map_err(|m| at(key("channel_defaults", "num_subbuf"), m))?;
        check_name(&c.writer).map_err(|m| at(key("channel_defaults", "writer"), m))?;
        self.default_tracefile()
            .check(size_u32(c.subbuf_size))
            .map_err(|p| {
                let name = tracefile_key(p);
                at(key("channel_defaults", name), tracefile_message(p))
            })?;
        positive(self.supervision.within_secs)
            .map_err(|m| at(key("supervision", "within_secs"), m))?;
        positive(u64::from(self.limits.max_apps)).map_err(|m| at(key("limits", "max_apps"), m))?;
        positive(self.limits.max_pid_buffer_bytes.0)
            .map_err(|m| at(key("limits", "max_pid_buffer_bytes"), m))?;
        for (name, value) in [
            ("max_events_per_app", self.limits.max_events_per_app),
            ("max_fields_per_event", self.limits.max_fields_per_event),
            ("max_events_per_trace", self.limits.max_events_per_trace),
        ] {
            positive(u64::from(value)).map_err(|m| at(key("limits", name), m))?;
        }
        if self.limits.max_metadata_bytes.0 < MIN_METADATA_BYTES {
            return Err(at(
                key("limits", "max_metadata_bytes"),
                format!(
                    "{} bytes: must be at least {MIN_METADATA_BYTES} (16K)",
                    self.limits.max_metadata_bytes.0
                ),
            ));
        }
        if let Some(per_uid) = self.limits.max_apps_per_uid {
            within_global(
                u64::from(per_uid),
                u64::from(self.limits.max_apps),
                "max_apps",
            )
            .map_err(|m| at(key("limits", "max_apps_per_uid"), m))?;
        }
        if let Some(per_uid) = self.limits.max_pid_buffer_bytes_per_uid {
            within_global(
                per_uid.0,
                self.limits.max_pid_buffer_bytes.0,
                "max_pid_buffer_bytes",
            )
            .map_err(|m| at(key("limits", "max_pid_buffer_bytes_per_uid"), m))?;
        }
        positive(self.limits.max_writer_backlog_bytes.0)
            .map_err(|m| at(key("limits", "max_writer_backlog_bytes"), m))?;

        for (s, session) in self.sessions.iter().enumerate() {
            let in_session =
                |key: &'static str| vec![Step::Key("session"), Step::Index(s), Step::Key(key)];
            check_name(&session.name).map_err(|m| at(in_session("name"), m))?;
            if session.snapshot && session.url.is_some() {
                return Err(at(
                    in_session("snapshot"),
                    "a snapshot session writes its snapshots locally: not with url".to_owned(),
                ));
            }
            if self.sessions[..s]
                .iter()
                .any(|other| other.name == session.name)
            {
                return Err(at(
                    in_session("name"),
                    format!("session {:?} is declared twice", session.name),
                ));
            }
            for (c, channel) in session.channels.iter().enumerate() {
                let in_channel = |key: &'static str| {
                    vec![
                        Step::Key("session"),
                        Step::Index(s),
                        Step::Key("channel"),
                        Step::Index(c),
                        Step::Key(key),
                    ]
                };
                check_name(&channel.name).map_err(|m| at(in_channel("name"), m))?;
                if session.channels[..c]
                    .iter()
                    .any(|other| other.name == channel.name)
                {
                    return Err(at(
                        in_channel("name"),
                        format!(
                            "channel {:?} is declared twice in session {:?}",
                            channel.name, session.name
                        ),
                    ));
                }
                if let Some(size) = channel.subbuf_size {
                    subbuf_size(size).map_err(|m| at(in_channel("subbuf_size"), m))?;
                }
                if let Some(count) = channel.num_subbuf {
                    num_subbuf(count).map_err(|m| at(in_channel("num_subbuf"), m))?;
                }
                if let Some(writer) = &channel.writer {
                    check_name(writer).map_err(|m| at(in_channel("writer"), m))?;
                }
                let spec = self.channel_spec(channel);
                spec.tracefile.check(spec.subbuf_size).map_err(|p| {
                    let name = tracefile_key(p);
                    // Blame the channel's key if it sets it, else the default's.
                    let set = match p {
                        TracefileProblem::SmallerThanSubbuf { .. } => {
                            channel.tracefile_size.is_some()
                        }
                        TracefileProblem::CountWithoutSize => channel.tracefile_count.is_some(),
                    };
                    let path = match set {
                        true => in_channel(name),
                        false => key("channel_defaults", name),
                    };
                    at(path, tracefile_message(p))
                })?;
            }
        }
        Ok(())
    }

    /// The directory for the sockets: `daemon.runtime_dir`, else
    /// [`protocol::rundir`].
    pub fn effective_runtime_dir(&self) -> Result<PathBuf, ConfigError> {
        match &self.daemon.runtime_dir {
            Some(dir) => Ok(dir.clone()),
            None => Ok(protocol::rundir()?),
        }
    }

    /// The parent of session outputs: `daemon.output_dir`, else
    /// `$HOME/ustrace-traces`.
    pub fn effective_output_dir(&self) -> Result<PathBuf, ConfigError> {
        match &self.daemon.output_dir {
            Some(dir) => Ok(dir.clone()),
            None => std::env::var_os("HOME")
                .filter(|home| !home.is_empty())
                .map(|home| PathBuf::from(home).join("ustrace-traces"))
                .ok_or(ConfigError::NoOutputDir),
        }
    }

    /// A channel with [`Config::channel_defaults`] filling what it leaves out.
    pub fn channel_spec(&self, channel: &ChannelConfig) -> ChannelSpec {
        self.channel_request(channel)
            .resolve(&self.default_channel_spec(&channel.name))
    }

    /// `[channel_defaults]` as a channel called `name`: what `enable-channel` leaves
    /// unset, and the channel `enable-event` creates in a session without one.
    pub fn default_channel_spec(&self, name: &str) -> ChannelSpec {
        let d = &self.channel_defaults;
        ChannelSpec {
            name: name.to_owned(),
            buffers: d.buffers,
            subbuf_size: size_u32(d.subbuf_size),
            num_subbuf: d.num_subbuf,
            mode: d.mode,
            writer: d.writer.clone(),
            contexts: d.contexts.clone(),
            tracefile: self.default_tracefile(),
        }
    }

    /// `[channel_defaults]`' tracefile bounds.
    fn default_tracefile(&self) -> TracefileLimits {
        TracefileLimits {
            size: self.channel_defaults.tracefile_size.0,
            count: self.channel_defaults.tracefile_count,
        }
    }

    /// A `[[session.channel]]` as the `enable-channel` request it stands for: the
    /// daemon declares it with the same checks as the CLI's.
    pub fn channel_request(&self, channel: &ChannelConfig) -> ChannelRequest {
        ChannelRequest {
            name: channel.name.clone(),
            buffers: channel.buffers,
            subbuf_size: channel.subbuf_size.map(size_u32),
            num_subbuf: channel.num_subbuf,
            mode: channel.mode,
            writer: channel.writer.clone(),
            contexts: channel.contexts.clone(),
            // Either key set: the bounds as a whole, the other from the defaults.
            tracefile: (channel.tracefile_size.is_some() || channel.tracefile_count.is_some())
                .then(|| {
                    let defaults = self.default_tracefile();
                    TracefileLimits {
                        size: channel.tracefile_size.map_or(defaults.size, |s| s.0),
                        count: channel.tracefile_count.unwrap_or(defaults.count),
                    }
                }),
        }
    }
}

/// The key a tracefile problem is about.
fn tracefile_key(problem: TracefileProblem) -> &'static str {
    match problem {
        TracefileProblem::SmallerThanSubbuf { .. } => "tracefile_size",
        TracefileProblem::CountWithoutSize => "tracefile_count",
    }
}

/// A tracefile problem in the config file's words.
fn tracefile_message(problem: TracefileProblem) -> String {
    match problem {
        TracefileProblem::SmallerThanSubbuf { size, subbuf_size } => format!(
            "{size} bytes is smaller than a sub-buffer ({subbuf_size} bytes): a file holds at least one"
        ),
        TracefileProblem::CountWithoutSize => {
            "a file count needs tracefile_size (0: one unbounded file, never rotated)".to_owned()
        }
    }
}

/// A validated sub-buffer size (a power of two of at most 1 GiB) as the u32 the
/// protocol carries.
fn size_u32(size: ByteSize) -> u32 {
    u32::try_from(size.0).unwrap_or(u32::MAX)
}

/// Empty strings mean "automatic" for path keys.
fn empty_path_as_none<'de, D: Deserializer<'de>>(
    deserializer: D,
) -> Result<Option<PathBuf>, D::Error> {
    let text = String::deserialize(deserializer)?;
    Ok((!text.is_empty()).then(|| PathBuf::from(text)))
}

/// Most per-PID ring sets kept ready per geometry: each holds a memfd per CPU and
/// an eventfd open.
const MAX_WARM_SETS: u32 = 256;

/// Most dead apps `daemon.snapshot_kept_dead_apps` may keep: each holds its rings'
/// shared memory until the next snapshot.
const MAX_KEPT_DEAD_APPS: u32 = 1024;

/// A per-uid limit: above 0 and at most its global limit `global` (named `name`).
fn within_global(value: u64, global: u64, name: &str) -> Result<(), String> {
    positive(value)?;
    if value > global {
        return Err(format!(
            "{value} is out of range: at most limits.{name} ({global})"
        ));
    }
    Ok(())
}

fn positive(value: u64) -> Result<(), String> {
    if value == 0 {
        return Err("must be greater than 0".to_owned());
    }
    Ok(())
}

/// A `subbuf_size` key, checked by the ring layout's own rule.
fn subbuf_size(size: ByteSize) -> Result<(), String> {
    shm::check_subbuf_size(size.0).map_err(|reason| format!("{} bytes: {reason}", size.0))
}

/// A `num_subbuf` key, checked by the ring layout's own rule.
fn num_subbuf(count: u32) -> Result<(), String> {
    shm::check_num_subbuf(count.into()).map_err(|reason| format!("{count}: {reason}"))
}

/// Names become parts of file names: 1 to 64 of `A-Z a-z 0-9 _ - .`, not starting
/// with `.` or `-`.
pub fn check_name(name: &str) -> Result<(), String> {
    let allowed = |c: char| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.');
    if name.is_empty()
        || name.len() > 64
        || !name.chars().all(allowed)
        || name.starts_with(['.', '-'])
    {
        return Err(format!(
            "invalid name {name:?}: use 1 to 64 letters, digits, `_`, `-` or `.`, not starting with `.` or `-`"
        ));
    }
    Ok(())
}

/// 1-based line and column (in characters) of a byte offset.
fn line_col(text: &str, offset: usize) -> (usize, usize) {
    let before = &text[..offset.min(text.len())];
    let line_start = before.rfind('\n').map_or(0, |i| i + 1);
    (
        before.matches('\n').count() + 1,
        before[line_start..].chars().count() + 1,
    )
}

/// The key path of the innermost key or value containing byte `offset`.
fn path_at<'a>(table: &'a DeTable<'_>, offset: usize) -> Vec<Step<'a>> {
    for (key, value) in table {
        if key.span().contains(&offset) {
            return vec![Step::Key(key.get_ref())];
        }
        if let Some(mut inner) = path_in_value(value, offset) {
            inner.insert(0, Step::Key(key.get_ref()));
            return inner;
        }
    }
    Vec::new()
}

/// [`path_at`] inside one value; `None` when the value does not contain `offset`.
fn path_in_value<'a>(value: &'a Spanned<DeValue<'_>>, offset: usize) -> Option<Vec<Step<'a>>> {
    let inner = match value.get_ref() {
        DeValue::Table(table) => Some(path_at(table, offset)).filter(|p| !p.is_empty()),
        DeValue::Array(items) => items.iter().enumerate().find_map(|(i, item)| {
            path_in_value(item, offset).map(|mut p| {
                p.insert(0, Step::Index(i));
                p
            })
        }),
        _ => None,
    };
    inner.or_else(|| value.span().contains(&offset).then(Vec::new))
}

/// The span of the value at `path` (or of the deepest part of it that exists).
fn span_of(table: &DeTable<'_>, path: &[Step<'_>]) -> Option<Range<usize>> {
    let (Step::Key(first), rest) = path.split_first()? else {
        return None;
    };
    let (key, value) = table.get_key_value(*first)?;
    let mut value = value;
    let mut span = value.span();
    for step in rest {
        let next = match (step, value.get_ref()) {
            (Step::Key(k), DeValue::Table(t)) => t.get(*k),
            (Step::Index(i), DeValue::Array(items)) => items.get(*i),
            _ => None,
        };
        match next {
            Some(next) => {
                value = next;
                span = value.span();
            }
            None => break,
        }
    }
    Some(if span.is_empty() { key.span() } else { span })
}
