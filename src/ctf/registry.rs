//! The per-trace registry: event ids, channels (stream classes) and the metadata text.
//!
//! There is one [`Registry`] per trace: per (session, uid) for per-UID buffers, per
//! app for per-PID buffers. Apps register [`EventDesc`]s; the registry gives each
//! distinct description one id, so that the same `provider:name` with the same fields
//! from many apps of one uid shares an id, while the same name with other fields gets
//! its own id (its payload decodes with its own layout, never a corrupted trace).
//! Ids are unique in the whole trace, and every event is declared in every stream
//! class, so an app may record any of its events into any channel.

use std::collections::{HashMap, HashSet};
use std::sync::OnceLock;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::ctf::field::{EventDesc, FieldType};
use crate::ctf::metadata;
use crate::ctf::names::{self, NameError};

/// Why an app's event description was refused (it would make the metadata invalid).
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
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
}

/// Checks that `desc` can be declared in TSDL as [`crate::ctf::metadata`] writes it:
/// the daemon refuses a registration that holds a description failing this, and
/// [`Registry::register_event`] never declares one.
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

/// Who owns the buffers of a trace, which decides its environment and directory.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Ownership {
    /// Buffers shared by every app of one user.
    PerUid {
        /// The user id.
        uid: u32,
    },
    /// Buffers private to one process.
    PerPid {
        /// The process name (`comm`).
        procname: String,
        /// The process id.
        pid: u32,
    },
}

/// What the metadata's `env` block says about where the trace comes from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TraceEnv {
    /// Host the trace was recorded on.
    pub hostname: String,
    /// Per-UID or per-PID, with the uid or the process identity.
    pub ownership: Ownership,
}

/// How to turn the trace clock (CLOCK_MONOTONIC, ns) into wall-clock time.
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

/// A fresh random (version 4) uuid for a new trace. `/dev/urandom` stays open: a
/// per-PID trace is made for every short-lived app, so this is on the registration
/// path.
pub fn random_uuid() -> std::io::Result<[u8; 16]> {
    use std::io::Read;
    static URANDOM: OnceLock<std::fs::File> = OnceLock::new();
    let file = match URANDOM.get() {
        Some(file) => file,
        None => {
            let opened = std::fs::File::open("/dev/urandom")?;
            URANDOM.get_or_init(|| opened)
        }
    };
    let mut uuid = [0u8; 16];
    (&*file).read_exact(&mut uuid)?;
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
pub struct Registry {
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
}

impl Registry {
    /// A registry with no channel and no event yet.
    pub fn new(uuid: [u8; 16], clock: ClockOffset, env: TraceEnv) -> Registry {
        Registry {
            uuid,
            clock,
            env,
            channels: Vec::new(),
            events: Vec::new(),
            ids: HashMap::new(),
        }
    }

    /// A registry for this host now: random uuid, measured clock offset, host name.
    pub fn for_this_host(ownership: Ownership) -> std::io::Result<Registry> {
        Ok(Registry::new(
            random_uuid()?,
            ClockOffset::measure(),
            TraceEnv {
                hostname: hostname(),
                ownership,
            },
        ))
    }

    /// Adds a channel (if new) and returns its stream class id.
    pub fn add_channel(&mut self, name: &str) -> u32 {
        match self.channels.iter().position(|c| c == name) {
            Some(i) => i as u32,
            None => {
                self.channels.push(name.to_string());
                (self.channels.len() - 1) as u32
            }
        }
    }

    /// Returns the id of `desc`, registering it if new; the flag says whether it was
    /// new, i.e. whether the metadata changed and must be rewritten. A description
    /// that TSDL cannot declare is refused and changes nothing.
    pub fn register_event(&mut self, desc: &EventDesc) -> Result<(u32, bool), RegistryError> {
        if let Some(&id) = self.ids.get(desc) {
            return Ok((id, false));
        }
        validate(desc)?;
        let id = self.events.len() as u32;
        self.events.push(desc.clone());
        self.ids.insert(desc.clone(), id);
        Ok((id, true))
    }

    /// The description registered under `id`.
    pub fn event(&self, id: u32) -> Option<&EventDesc> {
        self.events.get(id as usize)
    }

    /// Every registered description, in id order.
    pub fn events(&self) -> &[EventDesc] {
        &self.events
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
    pub fn metadata(&self) -> String {
        metadata::render(self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ctf::field::{FieldDesc, FieldType, LogLevel};

    fn registry() -> Registry {
        Registry::new(
            [1; 16],
            ClockOffset { offset_ns: 0 },
            TraceEnv {
                hostname: "h".into(),
                ownership: Ownership::PerUid { uid: 1 },
            },
        )
    }

    fn desc(fields: Vec<FieldDesc>) -> EventDesc {
        EventDesc {
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
        assert_eq!(r.add_channel("c0"), 0);
        assert_eq!(r.add_channel("c1"), 1);
        assert_eq!(r.add_channel("c0"), 0);
    }
}
