//! Event descriptions and the byte encoding of event fields.
//!
//! This is the contract between the three places that touch an event: the app's fast
//! path encodes values with [`FieldValue`], the daemon turns [`EventDesc`]s into CTF
//! metadata, and readers decode payloads from the same [`FieldType`]s. All encodings
//! are little-endian and byte-packed (every CTF type is declared with `align = 8`), so
//! an event is the concatenation of its fields with no padding:
//!
//! | type | bytes |
//! |---|---|
//! | `I8`..`I64`, `U8`..`U64` | 1, 2, 4 or 8 bytes, two's complement / unsigned |
//! | `F32`, `F64` | IEEE 754, 4 or 8 bytes |
//! | `Bool` | 1 byte, 0 or 1 |
//! | `String` | UTF-8 bytes then one NUL; a value is cut at its first interior NUL |
//! | `Bytes` | `u32` length, then that many bytes (a CTF sequence) |
//! | `Enum` | its container integer |

use serde::{Deserialize, Serialize};

/// The type of one event field, as registered by an app and declared in metadata.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum FieldType {
    /// A signed or unsigned integer of 8, 16, 32 or 64 bits.
    Integer {
        /// Width in bits: 8, 16, 32 or 64.
        bits: u8,
        /// Whether the value is two's complement.
        signed: bool,
        /// Whether readers should print it in hexadecimal.
        hex: bool,
    },
    /// IEEE 754 binary32.
    F32,
    /// IEEE 754 binary64.
    F64,
    /// A boolean stored as one byte.
    Bool,
    /// A NUL-terminated UTF-8 string.
    String,
    /// A byte sequence with a 32-bit length prefix.
    Bytes,
    /// An enumeration over an integer container, with labelled values.
    Enum {
        /// Width of the container integer in bits.
        bits: u8,
        /// Whether the container is signed.
        signed: bool,
        /// Label of each value (a value may appear once).
        labels: Vec<(String, i64)>,
    },
}

impl FieldType {
    /// Size of a value of this type when it does not depend on the value.
    pub fn fixed_size(&self) -> Option<usize> {
        match self {
            FieldType::Integer { bits, .. } | FieldType::Enum { bits, .. } => {
                Some(usize::from(*bits) / 8)
            }
            FieldType::F32 => Some(4),
            FieldType::F64 => Some(8),
            FieldType::Bool => Some(1),
            FieldType::String | FieldType::Bytes => None,
        }
    }
}

/// One named field of an event.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct FieldDesc {
    /// Field name as readers show it; a valid TSDL identifier.
    pub name: String,
    /// How the field is encoded and declared.
    pub ty: FieldType,
}

/// Severity of an event, with LTTng's numbering so that filters read the same.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum LogLevel {
    /// System is unusable.
    Emerg = 0,
    /// Action must be taken immediately.
    Alert = 1,
    /// Critical conditions.
    Crit = 2,
    /// Error conditions.
    Err = 3,
    /// Warning conditions.
    Warning = 4,
    /// Normal but significant condition.
    Notice = 5,
    /// Informational message.
    Info = 6,
    /// Debug information with system-level scope.
    DebugSystem = 7,
    /// Debug information with program-level scope.
    DebugProgram = 8,
    /// Debug information with process-level scope.
    DebugProcess = 9,
    /// Debug information with module-level scope.
    DebugModule = 10,
    /// Debug information with compilation-unit-level scope.
    DebugUnit = 11,
    /// Debug information with function-level scope.
    DebugFunction = 12,
    /// Debug information with line-level scope.
    DebugLine = 13,
    /// The default: debug output of unspecified scope.
    Debug = 14,
}

/// What an app declares about one of its events when it registers.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct EventDesc {
    /// Provider half of `provider:name`.
    pub provider: String,
    /// Name half of `provider:name`.
    pub name: String,
    /// Severity, written to metadata.
    pub loglevel: LogLevel,
    /// Payload fields in encoding order.
    pub fields: Vec<FieldDesc>,
    /// Where the event comes from, declared as the event's `model.emf.uri`
    /// attribute (CTF 1.8, as lttng-ust's `TRACEPOINT_MODEL_EMF_URI`): for a
    /// `tracing` callsite its module, file and line. At most
    /// [`crate::ctf::names::URI_MAX`] bytes, no control character.
    pub model_emf_uri: Option<String>,
}

impl EventDesc {
    /// The `provider:name` form that users see and match with patterns.
    pub fn full_name(&self) -> String {
        format!("{}:{}", self.provider, self.name)
    }
}

/// A value that an app can record as an event field.
///
/// `encode` writes exactly `encoded_len` bytes; the fast path reserves the sum of the
/// lengths first, so neither may allocate.
pub trait FieldValue {
    /// The type this value is declared as in metadata.
    fn field_type() -> FieldType
    where
        Self: Sized;
    /// Number of bytes `encode` writes.
    fn encoded_len(&self) -> usize;
    /// Writes the value at the start of `out` and returns the number of bytes written.
    fn encode(&self, out: &mut [u8]) -> usize;
}

/// Implements [`FieldValue`] for a number type by its little-endian bytes.
macro_rules! number_field {
    ($($t:ty => $ty:expr;)*) => {$(
        impl FieldValue for $t {
            fn field_type() -> FieldType {
                $ty
            }
            #[inline]
            fn encoded_len(&self) -> usize {
                std::mem::size_of::<$t>()
            }
            #[inline]
            fn encode(&self, out: &mut [u8]) -> usize {
                out[..std::mem::size_of::<$t>()].copy_from_slice(&self.to_le_bytes());
                std::mem::size_of::<$t>()
            }
        }
    )*};
}

const fn int(bits: u8, signed: bool) -> FieldType {
    FieldType::Integer {
        bits,
        signed,
        hex: false,
    }
}

number_field! {
    i8 => int(8, true); i16 => int(16, true); i32 => int(32, true); i64 => int(64, true);
    u8 => int(8, false); u16 => int(16, false); u32 => int(32, false); u64 => int(64, false);
    f32 => FieldType::F32; f64 => FieldType::F64;
}

/// An unsigned integer that readers print in hexadecimal (addresses, flags).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Hex<T>(pub T);

macro_rules! hex_field {
    ($($t:ty => $bits:expr;)*) => {$(
        impl FieldValue for Hex<$t> {
            fn field_type() -> FieldType {
                FieldType::Integer { bits: $bits, signed: false, hex: true }
            }
            #[inline]
            fn encoded_len(&self) -> usize {
                self.0.encoded_len()
            }
            #[inline]
            fn encode(&self, out: &mut [u8]) -> usize {
                self.0.encode(out)
            }
        }
    )*};
}

hex_field! { u8 => 8; u16 => 16; u32 => 32; u64 => 64; }

impl FieldValue for bool {
    fn field_type() -> FieldType {
        FieldType::Bool
    }
    #[inline]
    fn encoded_len(&self) -> usize {
        1
    }
    #[inline]
    fn encode(&self, out: &mut [u8]) -> usize {
        out[0] = u8::from(*self);
        1
    }
}

impl FieldValue for &str {
    fn field_type() -> FieldType {
        FieldType::String
    }
    #[inline]
    fn encoded_len(&self) -> usize {
        string_prefix(self).len() + 1
    }
    #[inline]
    fn encode(&self, out: &mut [u8]) -> usize {
        let bytes = string_prefix(self);
        out[..bytes.len()].copy_from_slice(bytes);
        out[bytes.len()] = 0;
        bytes.len() + 1
    }
}

/// The part of a string that a CTF string can carry: up to its first NUL.
#[inline]
fn string_prefix(s: &str) -> &[u8] {
    let bytes = s.as_bytes();
    match bytes.iter().position(|&b| b == 0) {
        Some(nul) => &bytes[..nul],
        None => bytes,
    }
}

impl FieldValue for &[u8] {
    fn field_type() -> FieldType {
        FieldType::Bytes
    }
    #[inline]
    fn encoded_len(&self) -> usize {
        4 + self.len()
    }
    #[inline]
    fn encode(&self, out: &mut [u8]) -> usize {
        let len = u32::try_from(self.len()).unwrap_or(u32::MAX) as usize;
        out[..4].copy_from_slice(&(len as u32).to_le_bytes());
        out[4..4 + len].copy_from_slice(&self[..len]);
        4 + len
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn encoded<V: FieldValue>(v: V) -> Vec<u8> {
        let mut out = vec![0xAA; v.encoded_len() + 4];
        let n = v.encode(&mut out);
        assert_eq!(n, v.encoded_len());
        out.truncate(n);
        out
    }

    #[test]
    fn integers_are_little_endian_and_packed() {
        assert_eq!(encoded(-2i16), vec![0xFE, 0xFF]);
        assert_eq!(encoded(0x0102_0304u32), vec![4, 3, 2, 1]);
        assert_eq!(encoded(Hex(0xABu8)), vec![0xAB]);
        assert_eq!(encoded(1.5f32), 1.5f32.to_le_bytes().to_vec());
    }

    #[test]
    fn strings_end_with_one_nul_and_stop_at_an_interior_one() {
        assert_eq!(encoded("hi"), b"hi\0".to_vec());
        assert_eq!(encoded("a\0b"), b"a\0".to_vec());
    }

    #[test]
    fn byte_sequences_carry_a_u32_length() {
        assert_eq!(encoded(&[7u8, 8][..]), vec![2, 0, 0, 0, 7, 8]);
        assert_eq!(encoded(true), vec![1]);
    }
}
