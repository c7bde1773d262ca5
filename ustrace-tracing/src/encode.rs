//! `tracing` values as ustrace field bytes: the types a callsite's first use shows
//! ([`Kinds`]), and the encoding of every later use into a bounded per-thread
//! buffer ([`encode`]), without allocation.

use std::cell::RefCell;
use std::fmt::{self, Write};
use tracing_core::field::{Field, Visit};
use ustrace::ctf::field::{FieldType, FieldValue};

/// Bytes one event's payload may take; a longer string or `Debug` text is cut.
pub const MAX_PAYLOAD: usize = 4096;

/// Room used when the thread's buffer is taken (a `Debug` impl that emits an event
/// while its own event is encoded) or gone (a thread-local destructor that emits).
const NESTED_PAYLOAD: usize = 256;

/// The CTF type a callsite's field is registered with, from the `record_*` method
/// its first use called. `i128`/`u128`, errors and `Debug` values are strings.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// `record_i64`: a signed 64-bit integer.
    I64,
    /// `record_u64`: an unsigned 64-bit integer.
    U64,
    /// `record_f64`.
    F64,
    /// `record_bool`.
    Bool,
    /// Everything else, and a field the first use left out.
    Str,
}

impl Kind {
    /// What the metadata declares.
    pub fn field_type(self) -> FieldType {
        match self {
            Kind::I64 => i64::field_type(),
            Kind::U64 => u64::field_type(),
            Kind::F64 => f64::field_type(),
            Kind::Bool => bool::field_type(),
            Kind::Str => <&str>::field_type(),
        }
    }

    /// The fewest bytes a value of this kind takes (a string's NUL).
    pub fn min_len(self) -> usize {
        match self {
            Kind::I64 | Kind::U64 | Kind::F64 => 8,
            Kind::Bool | Kind::Str => 1,
        }
    }
}

/// Learns a callsite's field kinds from the values of its first use.
pub struct Kinds(Vec<Kind>);

impl Kinds {
    /// `fields` fields, strings until a value says otherwise.
    pub fn new(fields: usize) -> Kinds {
        Kinds(vec![Kind::Str; fields])
    }

    /// The kinds, by field index.
    pub fn into_kinds(self) -> Vec<Kind> {
        self.0
    }

    fn set(&mut self, field: &Field, kind: Kind) {
        if let Some(k) = self.0.get_mut(field.index()) {
            *k = kind;
        }
    }
}

impl Visit for Kinds {
    fn record_i64(&mut self, field: &Field, _: i64) {
        self.set(field, Kind::I64)
    }
    fn record_u64(&mut self, field: &Field, _: u64) {
        self.set(field, Kind::U64)
    }
    fn record_f64(&mut self, field: &Field, _: f64) {
        self.set(field, Kind::F64)
    }
    fn record_bool(&mut self, field: &Field, _: bool) {
        self.set(field, Kind::Bool)
    }
    fn record_debug(&mut self, field: &Field, _: &dyn fmt::Debug) {
        self.set(field, Kind::Str)
    }
}

thread_local! {
    /// Each thread's payload buffer.
    static BUFFER: RefCell<[u8; MAX_PAYLOAD]> = const { RefCell::new([0; MAX_PAYLOAD]) };
}

/// The exact payload length of every use of a callsite whose fields are all
/// numbers or bools (after `prefix` u64 ids), or `None` when a field is a string
/// (its length is known only once its value is visited). Every value of such a
/// callsite is written in its registered, fixed size (see [`encode`]), so the
/// payload can be encoded straight into the ring's reservation ([`encode_into`]).
pub fn fixed_len(kinds: &[Kind], prefix: usize) -> Option<usize> {
    kinds
        .iter()
        .try_fold(8 * prefix, |len, kind| match kind {
            Kind::Str => None,
            kind => Some(len + kind.min_len()),
        })
        .filter(|&len| len <= MAX_PAYLOAD)
}

/// Encodes the values `record` visits as `kinds` (after `prefix`, already encoded
/// u64s: a span's id and parent) and hands the payload to `emit`. A value of
/// another kind than registered is converted (a number cast, anything as its text
/// where a string is declared, 0/false otherwise); a missing one is 0, false or
/// empty.
pub fn encode(
    kinds: &[Kind],
    rest: &[usize],
    prefix: &[u64],
    record: impl FnOnce(&mut Encoder<'_>),
    emit: impl FnOnce(&[u8]),
) {
    let mut parts = Some((record, emit));
    let mut run = |buf: &mut [u8]| {
        let Some((record, emit)) = parts.take() else {
            return;
        };
        if let Some(len) = encode_into(kinds, rest, prefix, buf, record) {
            emit(&buf[..len]);
        }
    };
    let done = BUFFER.try_with(|buffer| match buffer.try_borrow_mut() {
        Ok(mut buf) => {
            run(&mut buf[..]);
            true
        }
        Err(_) => false,
    });
    if done != Ok(true) {
        run(&mut [0u8; NESTED_PAYLOAD]);
    }
}

/// Encodes as [`encode`] does, into `buf`: the length written, or `None` (and a
/// warning, once) when the fields' least sizes alone do not fit. For a callsite
/// with a [`fixed_len`], `buf` is the ring's reservation of exactly that length.
#[inline]
pub fn encode_into(
    kinds: &[Kind],
    rest: &[usize],
    prefix: &[u64],
    buf: &mut [u8],
    record: impl FnOnce(&mut Encoder<'_>),
) -> Option<usize> {
    let mut at = 0;
    for value in prefix {
        at += value.encode(&mut buf[at..]);
    }
    let mut encoder = Encoder {
        kinds,
        rest,
        buf,
        at,
        next: 0,
        overflow: false,
    };
    record(&mut encoder);
    encoder.fill_to(kinds.len());
    if encoder.overflow {
        warn_overflow();
        None
    } else {
        Some(encoder.at)
    }
}

/// Writes visited values in field order into a bounded buffer.
pub struct Encoder<'a> {
    kinds: &'a [Kind],
    rest: &'a [usize],
    buf: &'a mut [u8],
    at: usize,
    /// The index of the next field to write.
    next: usize,
    /// Set when the fields' least sizes alone exceed the buffer.
    overflow: bool,
}

/// Says once that an event was dropped because its fields cannot fit.
fn warn_overflow() {
    static WARNED: std::sync::Once = std::sync::Once::new();
    WARNED.call_once(|| {
        eprintln!(
            "ustrace-tracing: an event with more fields than {MAX_PAYLOAD} bytes hold was dropped (and any later such)"
        )
    });
}

impl Encoder<'_> {
    /// Writes defaults for the fields before `index` that were not visited.
    fn fill_to(&mut self, index: usize) {
        while self.next < index.min(self.kinds.len()) {
            match self.kinds[self.next] {
                Kind::Str => self.put(&[0]),
                Kind::Bool => self.put(&[0]),
                _ => self.put(&[0; 8]),
            }
            self.next += 1;
        }
    }

    fn put(&mut self, bytes: &[u8]) {
        match self.buf.get_mut(self.at..self.at + bytes.len()) {
            Some(out) if !self.overflow => {
                out.copy_from_slice(bytes);
                self.at += bytes.len();
            }
            _ => self.overflow = true,
        }
    }

    /// Starts field `field` if it is the next one (or a later one, after defaults
    /// for those skipped); its kind, or `None` to ignore the value (a repeat, an
    /// unknown field).
    fn start(&mut self, field: &Field) -> Option<Kind> {
        let index = field.index();
        let kind = *self.kinds.get(index)?;
        if index != self.next {
            if index < self.next {
                return None;
            }
            self.fill_to(index);
        }
        self.next = index + 1;
        Some(kind)
    }

    /// Writes a number or bool value as `kind`.
    fn number(&mut self, kind: Kind, i: i128, f: f64) {
        match kind {
            Kind::I64 => self.put(&(i as i64).to_le_bytes()),
            Kind::U64 => self.put(&(i as u64).to_le_bytes()),
            Kind::F64 => self.put(&f.to_le_bytes()),
            Kind::Bool => self.put(&[u8::from(i != 0)]),
            Kind::Str => unreachable!("strings are written by text"),
        }
    }

    /// Writes the text `write` gives as a string cut to the room left (what the
    /// fields after it need stays free) and at its first NUL.
    fn text(&mut self, index: usize, write: impl FnOnce(&mut Bounded<'_>)) {
        let end = self.buf.len().saturating_sub(self.rest[index] + 1);
        let mut out = Bounded {
            buf: &mut self.buf[..end],
            at: self.at,
            cut: false,
        };
        write(&mut out);
        self.at = out.at;
        self.put(&[0]);
    }

    /// Writes a value that is a number as registered, or its text where a string
    /// is: `shown` writes the text (a `&str` directly, anything else through
    /// `fmt`, only then).
    fn value(&mut self, field: &Field, i: i128, f: f64, shown: impl FnOnce(&mut Bounded<'_>)) {
        match self.start(field) {
            Some(Kind::Str) => self.text(field.index(), shown),
            Some(kind) => self.number(kind, i, f),
            None => {}
        }
    }
}

/// `value`'s `Display` text into `out`.
fn display(value: impl fmt::Display) -> impl FnOnce(&mut Bounded<'_>) {
    move |out| {
        let _ = write!(out, "{value}");
    }
}

impl Visit for Encoder<'_> {
    fn record_i64(&mut self, field: &Field, value: i64) {
        self.value(field, value.into(), value as f64, display(value))
    }
    fn record_u64(&mut self, field: &Field, value: u64) {
        self.value(field, value.into(), value as f64, display(value))
    }
    fn record_f64(&mut self, field: &Field, value: f64) {
        self.value(field, value as i128, value, display(value))
    }
    fn record_bool(&mut self, field: &Field, value: bool) {
        let n = i128::from(value);
        self.value(field, n, n as f64, display(value))
    }
    fn record_str(&mut self, field: &Field, value: &str) {
        // No `fmt` machinery for the most common string: copied as it is.
        self.value(field, 0, 0.0, |out| {
            let _ = out.write_str(value);
        })
    }
    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        self.value(field, 0, 0.0, |out| {
            let _ = write!(out, "{value:?}");
        })
    }
}

/// A `fmt::Write` into a fixed slice that drops what does not fit and everything
/// from the first NUL on (a CTF string ends there).
pub(crate) struct Bounded<'a> {
    buf: &'a mut [u8],
    at: usize,
    cut: bool,
}

impl<'a> Bounded<'a> {
    /// Writes into `buf` from its start.
    pub(crate) fn new(buf: &'a mut [u8]) -> Bounded<'a> {
        Bounded {
            buf,
            at: 0,
            cut: false,
        }
    }

    /// What was written: whole characters, as `write_str` cuts at a boundary.
    pub(crate) fn as_str(&self) -> &str {
        std::str::from_utf8(&self.buf[..self.at]).unwrap_or_default()
    }
}

impl Write for Bounded<'_> {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        if self.cut {
            return Ok(());
        }
        let room = self.buf.len().saturating_sub(self.at);
        // A short value that fits (most of them): one byte loop both looks for a
        // NUL and copies, where `memchr` and `memcpy` cost more in set-up than
        // in work.
        // A short value that fits (most of them): copied whole, then looked at
        // for a NUL eight bytes at a time, where `memchr` costs more in set-up
        // than in work.
        if s.len() < 32 && s.len() <= room {
            let bytes = s.as_bytes();
            self.buf[self.at..self.at + bytes.len()].copy_from_slice(bytes);
            match first_nul(bytes) {
                Some(nul) => {
                    self.cut = true;
                    self.at += nul;
                }
                None => self.at += bytes.len(),
            }
            return Ok(());
        }
        let s = match s.find('\0') {
            Some(nul) => {
                self.cut = true;
                &s[..nul]
            }
            None => s,
        };
        let mut take = s.len().min(room);
        while !s.is_char_boundary(take) {
            take -= 1;
        }
        if take < s.len() {
            self.cut = true;
        }
        if take == 0 {
            return Ok(());
        }
        self.buf[self.at..self.at + take].copy_from_slice(&s.as_bytes()[..take]);
        self.at += take;
        Ok(())
    }
}

/// The index of the first NUL of a short `bytes`: a byte loop under eight bytes,
/// else eight bytes a word (the last word overlapping the one before it).
fn first_nul(bytes: &[u8]) -> Option<usize> {
    if bytes.len() < 8 {
        return bytes.iter().position(|&b| b == 0);
    }
    const LOW: u64 = 0x0101_0101_0101_0101;
    // The lowest set bit is in the first zero byte (a borrow only sets bits above).
    let zero_at = |at: usize| {
        let word = u64::from_le_bytes(bytes[at..at + 8].try_into().expect("8 bytes"));
        let zeros = word.wrapping_sub(LOW) & !word & (LOW << 7);
        (zeros != 0).then(|| at + zeros.trailing_zeros() as usize / 8)
    };
    let mut at = 0;
    while at + 8 <= bytes.len() {
        if let Some(nul) = zero_at(at) {
            return Some(nul);
        }
        at += 8;
    }
    if at < bytes.len() {
        zero_at(bytes.len() - 8)
    } else {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A callsite with fields a, b, c (field objects come from real metadata).
    struct Cs;
    static CS: Cs = Cs;
    static FIELDS: &[&str] = &["a", "b", "c"];
    static META: tracing_core::Metadata<'static> = tracing_core::metadata! {
        name: "t",
        target: "t",
        level: tracing_core::Level::INFO,
        fields: FIELDS,
        callsite: &CS,
        kind: tracing_core::metadata::Kind::EVENT,
    };
    impl tracing_core::Callsite for Cs {
        fn set_interest(&self, _: tracing_core::Interest) {}
        fn metadata(&self) -> &tracing_core::Metadata<'_> {
            &META
        }
    }

    fn field(name: &str) -> Field {
        META.fields().field(name).unwrap()
    }

    fn encoded(kinds: &[Kind], visit: impl FnOnce(&mut Encoder<'_>)) -> Vec<u8> {
        let mut rest = vec![0; kinds.len()];
        for i in (0..kinds.len().saturating_sub(1)).rev() {
            rest[i] = rest[i + 1] + kinds[i + 1].min_len();
        }
        let mut out = Vec::new();
        encode(kinds, &rest, &[7], visit, |bytes| out = bytes.to_vec());
        out
    }

    #[test]
    fn values_are_written_in_field_order_with_defaults_and_conversions() {
        let out = encoded(&[Kind::I64, Kind::Str, Kind::Bool], |e| {
            e.record_debug(&field("b"), &Some(1));
            e.record_u64(&field("a"), 5); // before b: ignored, a got its default
        });
        let mut want = 7u64.to_le_bytes().to_vec();
        want.extend(0i64.to_le_bytes());
        want.extend(b"Some(1)\0");
        want.push(0);
        assert_eq!(out, want);

        let out = encoded(&[Kind::F64, Kind::Str], |e| {
            e.record_i64(&field("a"), -2);
            e.record_i64(&field("b"), -3);
        });
        let mut want = 7u64.to_le_bytes().to_vec();
        want.extend((-2f64).to_le_bytes());
        want.extend(b"-3\0");
        assert_eq!(out, want);
    }

    #[test]
    fn a_long_or_nul_holding_value_is_cut_and_later_fields_keep_their_room() {
        let long = "é".repeat(MAX_PAYLOAD);
        let out = encoded(&[Kind::Str, Kind::U64], |e| {
            e.record_str(&field("a"), &long);
            e.record_u64(&field("b"), 9);
        });
        assert_eq!(
            out.len(),
            MAX_PAYLOAD - 1,
            "the 2-byte chars cut at a boundary"
        );
        assert_eq!(&out[out.len() - 8..], &9u64.to_le_bytes());
        let text = &out[8..out.len() - 9];
        assert!(std::str::from_utf8(text).is_ok());
        assert_eq!(out[out.len() - 9], 0);

        let out = encoded(&[Kind::Str], |e| e.record_str(&field("a"), "ab\0cd"));
        assert_eq!(&out[8..], b"ab\0");
    }

    #[test]
    fn the_first_nul_is_found_at_every_length_and_place() {
        for len in 0..40usize {
            for nul in (0..len).map(Some).chain([None]) {
                for second in [None, len.checked_sub(1)] {
                    let mut bytes: Vec<u8> = (0..len).map(|i| 0x80 | i as u8).collect();
                    for at in [nul, second].into_iter().flatten() {
                        bytes[at] = 0;
                    }
                    let want = bytes.iter().position(|&b| b == 0);
                    assert_eq!(first_nul(&bytes), want, "{bytes:?}");
                }
            }
        }
        // Bytes 0x01 and 0x80 around a NUL (the borrow of the word trick).
        assert_eq!(first_nul(&[1, 0x80, 1, 0, 1, 0x80, 1, 1, 1]), Some(3));
        assert_eq!(first_nul(&[1, 1, 1, 1, 1, 1, 1, 1, 0]), Some(8));
    }

    #[test]
    fn a_callsite_of_numbers_has_a_fixed_length_and_is_encoded_in_place() {
        let kinds = [Kind::U64, Kind::Bool, Kind::F64];
        assert_eq!(fixed_len(&kinds, 1), Some(8 + 8 + 1 + 8));
        assert_eq!(fixed_len(&[Kind::I64, Kind::Str], 1), None);
        let rest = [9, 8, 0];
        let mut buf = [0xAAu8; 25];
        // A string for a number, and a missing field: still the fixed length.
        let len = encode_into(&kinds, &rest, &[7], &mut buf, |e| {
            e.record_str(&field("a"), "x");
            e.record_bool(&field("b"), true);
        });
        assert_eq!(len, Some(25));
        let mut want = 7u64.to_le_bytes().to_vec();
        want.extend(0u64.to_le_bytes());
        want.push(1);
        want.extend(0f64.to_le_bytes());
        assert_eq!(&buf[..], &want[..]);
    }

    #[test]
    fn an_event_encoded_inside_another_uses_a_smaller_buffer() {
        struct Nested;
        impl fmt::Debug for Nested {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                let inner = encoded(&[Kind::Str], |e| {
                    e.record_str(&field("a"), &"x".repeat(1000))
                });
                assert_eq!(inner.len(), NESTED_PAYLOAD);
                f.write_str("outer")
            }
        }
        let out = encoded(&[Kind::Str], |e| e.record_debug(&field("a"), &Nested));
        assert_eq!(&out[8..], b"outer\0");
    }
}
