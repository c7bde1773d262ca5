//! Event contexts: who emitted an event (process, thread, CPU, code address),
//! recorded between the event header and the payload of every event of a channel
//! that asks for them (`add-context`, `contexts = [...]`).
//!
//! The byte contract shared by the app (which writes them, `ust::context`), the
//! metadata (the stream's `event.context`, with LTTng's field names so that Trace
//! Compass and LTTng analyses find them) and our reader. A channel's contexts are a
//! [`ContextSet`]: always encoded in [`ContextType::ALL`] order, whatever order they were
//! asked in, little-endian, byte-aligned.

use serde::{Deserialize, Serialize};

/// One context field.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ContextType {
    /// Process id (in the app's pid namespace): `_vpid`, `i32`.
    Vpid,
    /// Thread id (in the app's pid namespace): `_vtid`, `i32`.
    Vtid,
    /// The emitting thread's name (`comm`, 16 bytes at most): `_procname`, 17 bytes,
    /// NUL-padded.
    Procname,
    /// `pthread_self()`: `_pthread_id`, `u64`, hex.
    PthreadId,
    /// CPU whose ring the event went to: `_cpu_id`, `i32`.
    CpuId,
    /// Address of the emitting code: `_ip`, `u64`, hex.
    Ip,
}

/// Bytes of the `_procname` array (LTTng's `LTTNG_UST_ABI_PROCNAME_LEN`).
pub const PROCNAME_LEN: usize = 17;

/// Why a context name was not understood.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("unknown context type {0:?} (known: vpid, vtid, procname, pthread_id, cpu_id, ip)")]
pub struct UnknownContext(pub String);

impl ContextType {
    /// Every context, in encoding order.
    pub const ALL: [ContextType; 6] = [
        ContextType::Vpid,
        ContextType::Vtid,
        ContextType::Procname,
        ContextType::PthreadId,
        ContextType::CpuId,
        ContextType::Ip,
    ];

    /// The name users give (`add-context -t NAME`, `contexts = ["NAME"]`).
    pub fn name(self) -> &'static str {
        match self {
            ContextType::Vpid => "vpid",
            ContextType::Vtid => "vtid",
            ContextType::Procname => "procname",
            ContextType::PthreadId => "pthread_id",
            ContextType::CpuId => "cpu_id",
            ContextType::Ip => "ip",
        }
    }

    /// The context called `name`.
    pub fn from_name(name: &str) -> Result<ContextType, UnknownContext> {
        ContextType::ALL
            .into_iter()
            .find(|c| c.name() == name)
            .ok_or_else(|| UnknownContext(name.to_string()))
    }

    /// Encoded size in bytes.
    pub const fn size(self) -> usize {
        match self {
            ContextType::Vpid | ContextType::Vtid | ContextType::CpuId => 4,
            ContextType::Procname => PROCNAME_LEN,
            ContextType::PthreadId | ContextType::Ip => 8,
        }
    }

    /// Its bit in a [`ContextSet`].
    const fn bit(self) -> u8 {
        1 << self as u8
    }

    /// Its TSDL declaration in a stream's `event.context`, LTTng's field name included.
    pub fn tsdl(self) -> &'static str {
        match self {
            ContextType::Vpid => {
                "integer { size = 32; align = 8; signed = 1; encoding = none; base = 10; byte_order = le; } _vpid;"
            }
            ContextType::Vtid => {
                "integer { size = 32; align = 8; signed = 1; encoding = none; base = 10; byte_order = le; } _vtid;"
            }
            ContextType::Procname => {
                "integer { size = 8; align = 8; signed = 0; encoding = UTF8; base = 10; byte_order = le; } _procname[17];"
            }
            ContextType::PthreadId => {
                "integer { size = 64; align = 8; signed = 0; encoding = none; base = 16; byte_order = le; } _pthread_id;"
            }
            ContextType::CpuId => {
                "integer { size = 32; align = 8; signed = 1; encoding = none; base = 10; byte_order = le; } _cpu_id;"
            }
            ContextType::Ip => {
                "integer { size = 64; align = 8; signed = 0; encoding = none; base = 16; byte_order = le; } _ip;"
            }
        }
    }
}

/// The contexts of one channel, as the app's fast path uses them: a bit per context
/// and their total size, so that an event with none costs one compare.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct ContextSet {
    /// Bit `c as u8` per context present.
    bits: u8,
    /// Sum of their sizes.
    len: u8,
}

impl ContextSet {
    /// The set of `contexts` (repeats count once).
    pub fn of(contexts: &[ContextType]) -> ContextSet {
        let bits = contexts.iter().fold(0, |bits, c| bits | c.bit());
        let len = ContextType::ALL
            .into_iter()
            .filter(|c| bits & c.bit() != 0)
            .map(|c| c.size() as u8)
            .sum();
        ContextSet { bits, len }
    }

    /// Whether `context` is in the set.
    #[inline(always)]
    pub fn contains(self, context: ContextType) -> bool {
        self.bits & context.bit() != 0
    }

    /// Whether the set is empty.
    #[inline(always)]
    pub fn is_empty(self) -> bool {
        self.bits == 0
    }

    /// Encoded size of the set's fields, in bytes.
    #[inline(always)]
    pub fn encoded_len(self) -> usize {
        usize::from(self.len)
    }

    /// The contexts, in encoding order.
    pub fn to_vec(self) -> Vec<ContextType> {
        ContextType::ALL
            .into_iter()
            .filter(|c| self.contains(*c))
            .collect()
    }
}

/// The default contexts of a channel that names none: a per-UID ring mixes the
/// events of every app of its user, so they say which process and thread wrote
/// them; a per-PID trace says its process in its metadata.
pub fn default_contexts(per_uid: bool) -> Vec<ContextType> {
    if per_uid {
        vec![ContextType::Vpid, ContextType::Vtid]
    } else {
        Vec::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_set_is_in_encoding_order_whatever_the_order_asked() {
        let set = ContextSet::of(&[ContextType::Procname, ContextType::Vpid, ContextType::Vpid]);
        assert_eq!(set.to_vec(), vec![ContextType::Vpid, ContextType::Procname]);
        assert_eq!(set.encoded_len(), 4 + PROCNAME_LEN);
        assert!(ContextSet::of(&[]).is_empty());
        let all = ContextSet::of(&ContextType::ALL);
        assert_eq!(all.encoded_len(), 4 + 4 + 17 + 8 + 4 + 8);
    }

    #[test]
    fn names_round_trip_and_unknown_ones_are_named() {
        for c in ContextType::ALL {
            assert_eq!(ContextType::from_name(c.name()), Ok(c));
            assert!(c.tsdl().contains(&format!("_{}", c.name())));
        }
        assert_eq!(
            ContextType::from_name("vtd").unwrap_err().to_string(),
            "unknown context type \"vtd\" (known: vpid, vtid, procname, pthread_id, cpu_id, ip)"
        );
    }
}
