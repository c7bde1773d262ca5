//! The per-trace registry: event ids, channels (stream classes) and the metadata text.
//!
//! There is one [`Registry`] per trace: per (session, uid) for per-UID buffers, per
//! app for per-PID buffers. Apps register [`EventDesc`]s; the registry gives each
//! distinct description one id, so that the same `provider:name` with the same fields
//! from many apps of one uid shares an id, while the same name with other fields gets
//! its own id (its payload decodes with its own layout, never a corrupted trace).
//! Ids are unique in the whole trace, and every event is declared in every stream
//! class, so an app may record any of its events into any channel.

use std::collections::HashMap;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::ctf::field::EventDesc;
use crate::ctf::metadata;

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

/// A fresh random (version 4) uuid for a new trace.
pub fn random_uuid() -> std::io::Result<[u8; 16]> {
    use std::io::Read;
    let mut uuid = [0u8; 16];
    std::fs::File::open("/dev/urandom")?.read_exact(&mut uuid)?;
    uuid[6] = (uuid[6] & 0x0F) | 0x40;
    uuid[8] = (uuid[8] & 0x3F) | 0x80;
    Ok(uuid)
}

/// The host name as the kernel knows it, for the metadata `env` block.
pub fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|s| s.trim().to_string())
        .unwrap_or_else(|_| "unknown".to_string())
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
    /// new, i.e. whether the metadata changed and must be rewritten.
    pub fn register_event(&mut self, desc: &EventDesc) -> (u32, bool) {
        if let Some(&id) = self.ids.get(desc) {
            return (id, false);
        }
        let id = self.events.len() as u32;
        self.events.push(desc.clone());
        self.ids.insert(desc.clone(), id);
        (id, true)
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

    fn desc(fields: Vec<FieldDesc>) -> EventDesc {
        EventDesc {
            provider: "p".into(),
            name: "e".into(),
            loglevel: LogLevel::Info,
            fields,
        }
    }

    #[test]
    fn same_description_gets_the_same_id_and_other_fields_a_new_one() {
        let mut r = Registry::new(
            [1; 16],
            ClockOffset { offset_ns: 0 },
            TraceEnv {
                hostname: "h".into(),
                ownership: Ownership::PerUid { uid: 1 },
            },
        );
        let a = desc(vec![]);
        let b = desc(vec![FieldDesc {
            name: "x".into(),
            ty: FieldType::Bool,
        }]);
        assert_eq!(r.register_event(&a), (0, true));
        assert_eq!(r.register_event(&b), (1, true));
        assert_eq!(r.register_event(&a.clone()), (0, false));
        assert_eq!(r.add_channel("c0"), 0);
        assert_eq!(r.add_channel("c1"), 1);
        assert_eq!(r.add_channel("c0"), 0);
    }
}
