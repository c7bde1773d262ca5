//! The per-trace registry: event ids, channels (stream classes) and the metadata text.
//!
//! There is one [`EventRegistry`] per trace: per (session, uid) for per-UID buffers, per
//! app for per-PID buffers. Apps register [`EventDesc`]s; the registry gives each
//! distinct description one id, so that the same `provider:name` with the same fields
//! from many apps of one uid shares an id, while the same name with other fields gets
//! its own id (its payload decodes with its own layout, never a corrupted trace).
//! Ids are unique in the whole trace, and every event is declared in every stream
//! class, so an app may record any of its events into any channel.

use std::collections::{HashMap, HashSet};
use std::sync::OnceLock;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::ctf::context::ContextType;
use crate::ctf::field::{EventDesc, FieldType};
use crate::ctf::names::{self, NameError};
use crate::trace::metadata;
use crate::trace::owner::Owner;

/// Why an app's event description was refused (it would make the metadata invalid).
#[derive(Clone, Debug, thiserror::Error, PartialEq, Eq)]
pub enum RegistryError {
    /// A provider, event or field name or an enum label TSDL cannot declare
    /// (see [`names::check_event`]).
    #[error(transparent)]
    BadName(#[from] NameError),
    /// Two fields (or a field and a byte sequence's length field) share a name.
    #[error(
        "event {event}: field {field:?} is declared twice (a byte sequence `x` also declares `_x_length`)"
    )]
    DuplicateField {
        /// `provider:name` of the event.
        event: String,
        /// The repeated name.
        field: String,
    },
    /// An integer or enum width other than 8, 16, 32 or 64 bits.
    #[error("event {event}: field {field:?} has {bits} bits, expected 8, 16, 32 or 64")]
    BadWidth {
        /// `provider:name` of the event.
        event: String,
        /// The field.
        field: String,
        /// The width given.
        bits: u8,
    },
    /// An enum with no label, or a label value its container cannot hold.
    #[error("event {event}: enum field {field:?}: {problem}")]
    BadEnum {
        /// `provider:name` of the event.
        event: String,
        /// The field.
        field: String,
        /// What is wrong with its labels.
        problem: String,
    },
    /// The app registers more events than `limits.max_events_per_app`.
    #[error("the app registers {count} events, more than limits.max_events_per_app ({max})")]
    TooManyEventsInApp {
        /// Events in the registration.
        count: usize,
        /// The limit.
        max: u32,
    },
    /// An event has more fields than `limits.max_fields_per_event`.
    #[error("event {event} has {count} fields, more than limits.max_fields_per_event ({max})")]
    TooManyFields {
        /// `provider:name` of the event.
        event: String,
        /// Its fields.
        count: usize,
        /// The limit.
        max: u32,
    },
    /// The trace holds `limits.max_events_per_trace` events already.
    #[error("event {event}: the trace holds limits.max_events_per_trace ({max}) events already")]
    TooManyEventsInTrace {
        /// `provider:name` of the event refused.
        event: String,
        /// The limit.
        max: u32,
    },
    /// Declaring the event would make the metadata larger than
    /// `limits.max_metadata_bytes`.
    #[error(
        "event {event}: the trace's metadata would reach {bytes} bytes, more than limits.max_metadata_bytes ({max})"
    )]
    MetadataTooLarge {
        /// `provider:name` of the event refused.
        event: String,
        /// Size the metadata would have.
        bytes: u64,
        /// The limit.
        max: u64,
    },
}

impl RegistryError {
    /// The key of the `[limits]` limit this is (the app is refused), or `None` for
    /// a description TSDL cannot declare.
    pub fn limit(&self) -> Option<&'static str> {
        match self {
            RegistryError::TooManyEventsInApp { .. } => Some("limits.max_events_per_app"),
            RegistryError::TooManyFields { .. } => Some("limits.max_fields_per_event"),
            RegistryError::TooManyEventsInTrace { .. } => Some("limits.max_events_per_trace"),
            RegistryError::MetadataTooLarge { .. } => Some("limits.max_metadata_bytes"),
            _ => None,
        }
    }

    /// Whether this is a limit of `[limits]` rather than one description TSDL
    /// cannot declare.
    pub fn is_limit(&self) -> bool {
        self.limit().is_some()
    }
}

/// Bounds on what registrations may make the daemon hold and render (`[limits]`
/// in the configuration). Each registration costs at most what these allow: an app
/// is checked against the first two before anything is merged, and a trace refuses
/// an event past the last two. Metadata grows by appending (see
/// [`crate::trace::metadata`]), so registering costs what it adds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct EventLimits {
    /// Most events one app may register (`limits.max_events_per_app`).
    pub max_events_per_app: u32,
    /// Most fields in one event (`limits.max_fields_per_event`).
    pub max_fields_per_event: u32,
    /// Most distinct events in one trace (`limits.max_events_per_trace`).
    pub max_events_per_trace: u32,
    /// Largest metadata text of one trace, in bytes (`limits.max_metadata_bytes`).
    pub max_metadata_bytes: u64,
}

impl Default for EventLimits {
    /// The defaults `config/ustraced.toml` documents.
    fn default() -> Self {
        EventLimits {
            max_events_per_app: 8192,
            max_fields_per_event: 128,
            max_events_per_trace: 65536,
            max_metadata_bytes: 32 << 20,
        }
    }
}

impl EventLimits {
    /// Checks an app's registration against the per-app limits: its event count
    /// first (O(1), before looking at any event), then each event's field count.
    pub fn check_app(&self, events: &[EventDesc]) -> Result<(), RegistryError> {
        if events.len() > self.max_events_per_app as usize {
            return Err(RegistryError::TooManyEventsInApp {
                count: events.len(),
                max: self.max_events_per_app,
            });
        }
        match events
            .iter()
            .find(|e| e.fields.len() > self.max_fields_per_event as usize)
        {
            Some(e) => Err(RegistryError::TooManyFields {
                event: e.full_name(),
                count: e.fields.len(),
                max: self.max_fields_per_event,
            }),
            None => Ok(()),
        }
    }
}

/// Checks that `desc` can be declared in TSDL as [`crate::trace::metadata`] writes it:
/// the daemon refuses a registration that holds a description failing this, and
/// [`EventRegistry::register_event`] never declares one.
pub fn validate(desc: &EventDesc) -> Result<(), RegistryError> {
    names::check_event(desc)?;
    let event = desc.full_name();
    let mut seen = HashSet::new();
    for f in &desc.fields {
        let field = f.name.clone();
        let mut declared = vec![f.name.clone()];
        if f.ty == FieldType::Bytes {
            declared.push(format!("_{}_length", f.name));
        }
        for name in declared {
            if !seen.insert(name.clone()) {
                return Err(RegistryError::DuplicateField { event, field: name });
            }
        }
        match &f.ty {
            FieldType::Integer { bits, .. } | FieldType::Enum { bits, .. }
                if !matches!(bits, 8 | 16 | 32 | 64) =>
            {
                return Err(RegistryError::BadWidth {
                    event,
                    field,
                    bits: *bits,
                });
            }
            FieldType::Enum {
                bits,
                signed,
                labels,
            } => {
                let (min, max) = match (signed, bits) {
                    (true, 64) => (i128::from(i64::MIN), i128::from(i64::MAX)),
                    (true, b) => (-(1i128 << (b - 1)), (1i128 << (b - 1)) - 1),
                    (false, b) => (0, (1i128 << b) - 1),
                };
                let problem = if labels.is_empty() {
                    Some("no labels".to_string())
                } else {
                    labels
                        .iter()
                        .find(|(_, v)| !(min..=max).contains(&i128::from(*v)))
                        .map(|(label, v)| {
                            format!("label {label:?} = {v} does not fit the container")
                        })
                };
                if let Some(problem) = problem {
                    return Err(RegistryError::BadEnum {
                        event,
                        field,
                        problem,
                    });
                }
            }
            _ => {}
        }
    }
    Ok(())
}

/// What the metadata's `env` block says about where the trace comes from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TraceEnv {
    /// Host the trace was recorded on.
    pub hostname: String,
    /// Per-UID or per-PID, with the uid or the process identity.
    pub ownership: Owner,
    /// The session's name (`trace_name`).
    pub trace_name: String,
    /// When the session was created (`trace_creation_datetime`).
    pub created: SystemTime,
}

/// How to turn the trace clock (CLOCK_MONOTONIC ns, read directly or from the scaled
/// TSC: `crate::shm::TraceClock`) into wall-clock time.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ClockOffset {
    /// Nanoseconds to add to a monotonic timestamp to get nanoseconds since the epoch.
    pub offset_ns: i64,
}

impl ClockOffset {
    /// Measures REALTIME - MONOTONIC now, so readers print real dates.
    pub fn measure() -> ClockOffset {
        let monotonic = monotonic_ns();
        let wall = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or(Duration::ZERO)
            .as_nanos() as i64;
        ClockOffset {
            offset_ns: wall - monotonic as i64,
        }
    }
}

/// The trace clock: CLOCK_MONOTONIC in nanoseconds, what event timestamps hold.
pub fn monotonic_ns() -> u64 {
    match nix::time::clock_gettime(nix::time::ClockId::CLOCK_MONOTONIC) {
        Ok(ts) => ts.tv_sec() as u64 * 1_000_000_000 + ts.tv_nsec() as u64,
        Err(_) => 0,
    }
}

/// A fresh random (version 4) uuid for a new trace, from getrandom(2): a per-PID
/// trace is made for every short-lived app, so this is on the registration path,
/// and it holds no descriptor (the daemon's fd level stays flat).
pub fn random_uuid() -> std::io::Result<[u8; 16]> {
    let mut uuid = [0u8; 16];
    let mut filled = 0;
    while filled < uuid.len() {
        let rest = &mut uuid[filled..];
        // SAFETY: `rest` is a live, writable buffer of `rest.len()` bytes for the
        // call's duration; getrandom writes at most that many bytes into it.
        let n = unsafe { libc::getrandom(rest.as_mut_ptr().cast(), rest.len(), 0) };
        if n < 0 {
            let e = std::io::Error::last_os_error();
            if e.kind() == std::io::ErrorKind::Interrupted {
                continue;
            }
            return Err(e);
        }
        filled += n as usize;
    }
    uuid[6] = (uuid[6] & 0x0F) | 0x40;
    uuid[8] = (uuid[8] & 0x3F) | 0x80;
    Ok(uuid)
}

/// The host name as the kernel knows it, for the metadata `env` block; read once.
pub fn hostname() -> String {
    static HOSTNAME: OnceLock<String> = OnceLock::new();
    HOSTNAME
        .get_or_init(|| {
            std::fs::read_to_string("/proc/sys/kernel/hostname")
                .map(|s| s.trim().to_string())
                .unwrap_or_else(|_| "unknown".to_string())
        })
        .clone()
}

/// Event ids, channels and identity of one trace; produces its metadata.
#[derive(Clone, Debug)]
pub struct EventRegistry {
    /// Trace uuid, written in every packet header and in the metadata.
    uuid: [u8; 16],
    /// Monotonic-to-wall-clock offset declared in the clock block.
    clock: ClockOffset,
    /// Environment written to the `env` block.
    env: TraceEnv,
    /// Channel names; a channel's stream class id is its index.
    channels: Vec<String>,
    /// Registered descriptions; an event's id is its index.
    events: Vec<EventDesc>,
    /// Id of each registered description, to give repeated registrations the same id.
    ids: HashMap<EventDesc, u32>,
    /// The metadata text so far, appended to as channels and events are added.
    tsdl: String,
    /// Bounds on events and metadata size.
    limits: EventLimits,
}

impl EventRegistry {
    /// A registry with no channel and no event yet, and the default limits.
    pub fn new(uuid: [u8; 16], clock: ClockOffset, env: TraceEnv) -> EventRegistry {
        EventRegistry {
            tsdl: metadata::preamble(&uuid, &env, clock),
            uuid,
            clock,
            env,
            channels: Vec::new(),
            events: Vec::new(),
            ids: HashMap::new(),
            limits: EventLimits::default(),
        }
    }

    /// This registry with `limits` instead of the defaults.
    pub fn with_limits(mut self, limits: EventLimits) -> EventRegistry {
        self.limits = limits;
        self
    }

    /// A registry for this host now: random uuid, measured clock offset, host name,
    /// for a trace of session `trace_name` created at `created`.
    pub fn for_this_host(
        ownership: Owner,
        trace_name: &str,
        created: SystemTime,
    ) -> std::io::Result<EventRegistry> {
        Ok(EventRegistry::new(
            random_uuid()?,
            ClockOffset::measure(),
            TraceEnv {
                hostname: hostname(),
                ownership,
                trace_name: trace_name.to_string(),
                created,
            },
        ))
    }

    /// Adds a channel (if new) and returns its stream class id; every event
    /// registered so far is declared in it too. Channels come from the session's
    /// definition (set before it starts), not from apps: no limit applies.
    pub fn add_channel(&mut self, name: &str, contexts: &[ContextType]) -> u32 {
        if let Some(i) = self.channels.iter().position(|c| c == name) {
            return i as u32;
        }
        let stream_id = self.channels.len() as u32;
        self.channels.push(name.to_string());
        metadata::stream_class(&mut self.tsdl, stream_id, name, contexts);
        for (index, event) in (0..).zip(&self.events) {
            let id = crate::ctf::packet::event_id(index).expect("registered under this id");
            metadata::event_class(&mut self.tsdl, id, stream_id, event);
        }
        stream_id
    }

    /// Returns the id of `desc`, registering it if new; the flag says whether it was
    /// new, i.e. whether the metadata changed and must be rewritten. A description
    /// that TSDL cannot declare, or one past `max_events_per_trace` or
    /// `max_metadata_bytes`, is refused and changes nothing. A new event costs the
    /// rendering of its own declarations only.
    pub fn register_event(&mut self, desc: &EventDesc) -> Result<(u32, bool), RegistryError> {
        if let Some(&id) = self.ids.get(desc) {
            return Ok((id, false));
        }
        validate(desc)?;
        if self.events.len() >= self.limits.max_events_per_trace as usize {
            return Err(RegistryError::TooManyEventsInTrace {
                event: desc.full_name(),
                max: self.limits.max_events_per_trace,
            });
        }
        let too_many = || RegistryError::TooManyEventsInTrace {
            event: desc.full_name(),
            max: self.limits.max_events_per_trace,
        };
        let index = u32::try_from(self.events.len()).map_err(|_| too_many())?;
        let id = crate::ctf::packet::event_id(index).ok_or_else(too_many)?;
        let mut declarations = String::new();
        for stream_id in 0..self.channels.len() as u32 {
            metadata::event_class(&mut declarations, id, stream_id, desc);
        }
        let bytes = (self.tsdl.len() + declarations.len()) as u64;
        if bytes > self.limits.max_metadata_bytes {
            return Err(RegistryError::MetadataTooLarge {
                event: desc.full_name(),
                bytes,
                max: self.limits.max_metadata_bytes,
            });
        }
        self.tsdl.push_str(&declarations);
        self.events.push(desc.clone());
        self.ids.insert(desc.clone(), id);
        Ok((id, true))
    }

    /// The description registered under `id`.
    pub fn event(&self, id: u32) -> Option<&EventDesc> {
        self.events
            .get(crate::ctf::packet::event_index(id)? as usize)
    }

    /// Every registered description, in id order (see [`crate::ctf::packet::event_id`]).
    pub fn events(&self) -> &[EventDesc] {
        &self.events
    }

    /// The stream class id of channel `name`, if the trace declares it.
    pub fn stream_id(&self, name: &str) -> Option<u32> {
        self.channels
            .iter()
            .position(|c| c == name)
            .map(|i| i as u32)
    }

    /// Channel names in stream class id order.
    pub fn channels(&self) -> &[String] {
        &self.channels
    }

    /// The trace uuid, for packet headers.
    pub fn uuid(&self) -> [u8; 16] {
        self.uuid
    }

    /// The clock offset declared in the metadata.
    pub fn clock(&self) -> ClockOffset {
        self.clock
    }

    /// The environment declared in the metadata.
    pub fn env(&self) -> &TraceEnv {
        &self.env
    }

    /// The whole CTF 1.8 metadata text (TSDL) for the current channels and events.
    pub fn metadata(&self) -> &str {
        &self.tsdl
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ctf::field::{FieldDesc, FieldType, LogLevel};

    fn registry() -> EventRegistry {
        EventRegistry::new(
            [1; 16],
            ClockOffset { offset_ns: 0 },
            TraceEnv {
                hostname: "h".into(),
                ownership: Owner::Uid(1),
                trace_name: "s".into(),
                created: UNIX_EPOCH,
            },
        )
    }

    fn desc(fields: Vec<FieldDesc>) -> EventDesc {
        EventDesc {
            model_emf_uri: None,
            provider: "p".into(),
            name: "e".into(),
            loglevel: LogLevel::Info,
            fields,
        }
    }

    #[test]
    fn descriptions_that_tsdl_cannot_declare_are_refused() {
        let mut r = registry();
        let f = |name: &str, ty| FieldDesc {
            name: name.into(),
            ty,
        };
        let bad_name = desc(vec![f("a b", FieldType::Bool)]);
        assert!(matches!(
            r.register_event(&bad_name),
            Err(RegistryError::BadName(NameError::NotIdentifier { .. }))
        ));
        let clash = desc(vec![
            f("x", FieldType::Bytes),
            f("_x_length", FieldType::Bool),
        ]);
        assert!(matches!(
            r.register_event(&clash),
            Err(RegistryError::DuplicateField { .. })
        ));
        let wide = desc(vec![f(
            "i",
            FieldType::Integer {
                bits: 12,
                signed: true,
                hex: false,
            },
        )]);
        assert!(matches!(
            r.register_event(&wide),
            Err(RegistryError::BadWidth { bits: 12, .. })
        ));
        let labels = vec![("BIG".to_string(), 256)];
        let overflow = desc(vec![f(
            "e",
            FieldType::Enum {
                bits: 8,
                signed: false,
                labels,
            },
        )]);
        assert!(matches!(
            r.register_event(&overflow),
            Err(RegistryError::BadEnum { .. })
        ));
        assert!(r.events().is_empty());
    }

    #[test]
    fn same_description_gets_the_same_id_and_other_fields_a_new_one() {
        let mut r = registry();
        let a = desc(vec![]);
        let b = desc(vec![FieldDesc {
            name: "x".into(),
            ty: FieldType::Bool,
        }]);
        assert_eq!(r.register_event(&a), Ok((0, true)));
        assert_eq!(r.register_event(&b), Ok((1, true)));
        assert_eq!(r.register_event(&a.clone()), Ok((0, false)));
        assert_eq!(r.add_channel("c0", &[]), 0);
        assert_eq!(r.add_channel("c1", &[]), 1);
        assert_eq!(r.add_channel("c0", &[]), 0);
    }

    fn named(name: &str) -> EventDesc {
        EventDesc {
            model_emf_uri: None,
            name: name.into(),
            ..desc(vec![])
        }
    }

    #[test]
    fn a_trace_refuses_events_past_max_events_per_trace_and_changes_nothing() {
        let limits = EventLimits {
            max_events_per_trace: 2,
            ..EventLimits::default()
        };
        let mut r = registry().with_limits(limits);
        r.add_channel("c", &[]);
        r.register_event(&named("a")).unwrap();
        r.register_event(&named("b")).unwrap();
        let before = r.metadata().to_string();
        let err = r.register_event(&named("c")).unwrap_err();
        assert!(err.is_limit());
        assert!(
            err.to_string().contains("limits.max_events_per_trace (2)"),
            "{err}"
        );
        assert_eq!(r.metadata(), before);
        assert_eq!(r.events().len(), 2);
        assert_eq!(
            r.register_event(&named("a")),
            Ok((0, false)),
            "known events still resolve"
        );
    }

    #[test]
    fn a_trace_refuses_an_event_that_would_pass_max_metadata_bytes() {
        let mut r = registry();
        r.add_channel("c", &[]);
        let max = (r.metadata().len() + 10) as u64;
        let mut r = r.with_limits(EventLimits {
            max_metadata_bytes: max,
            ..EventLimits::default()
        });
        let err = r.register_event(&named("a")).unwrap_err();
        assert!(matches!(err, RegistryError::MetadataTooLarge { max: m, .. } if m == max));
        assert!(
            err.to_string().contains("limits.max_metadata_bytes"),
            "{err}"
        );
        assert!(r.events().is_empty());
        assert!(r.metadata().len() as u64 <= max);
    }

    #[test]
    fn metadata_grows_by_appending_what_each_event_and_channel_adds() {
        let mut r = registry();
        r.add_channel("c0", &[]);
        r.register_event(&named("a")).unwrap();
        let before = r.metadata().to_string();
        r.register_event(&named("b")).unwrap();
        assert!(r.metadata().starts_with(&before));
        r.add_channel("c1", &[]);
        let meta = metadata::parse(r.metadata()).expect("parses");
        let declared = meta
            .events
            .values()
            .filter(|e| e.name != crate::ctf::packet::LOST_EVENT_NAME)
            .count();
        assert_eq!(declared, 4, "both events in both stream classes");
    }

    #[test]
    fn an_app_past_its_limits_is_refused_naming_them() {
        let limits = EventLimits {
            max_events_per_app: 2,
            max_fields_per_event: 1,
            ..EventLimits::default()
        };
        let three = vec![named("a"), named("b"), named("c")];
        let err = limits.check_app(&three).unwrap_err();
        assert_eq!(
            err.to_string(),
            "the app registers 3 events, more than limits.max_events_per_app (2)"
        );
        let f = |name: &str| FieldDesc {
            name: name.into(),
            ty: FieldType::Bool,
        };
        let wide = vec![desc(vec![f("x"), f("y")])];
        let err = limits.check_app(&wide).unwrap_err();
        assert!(
            err.to_string().contains("limits.max_fields_per_event (1)"),
            "{err}"
        );
        assert_eq!(limits.check_app(&three[..2]), Ok(()));
    }
}
