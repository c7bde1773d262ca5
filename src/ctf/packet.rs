//! The bytes of a CTF packet as ustrace lays them out.
//!
//! A shared-memory sub-buffer *is* a packet: its first [`PACKET_HEADER_SIZE`] bytes
//! are reserved for the packet header and context below, events follow, and the
//! consumer writes the sub-buffer to the stream file unchanged. Every field is
//! little-endian and byte-aligned; the metadata declares exactly this layout.
//!
//! | offset | field | type |
//! |---|---|---|
//! | 0 | magic `0xC1FC1FC1` | u32 |
//! | 4 | trace uuid | 16 bytes |
//! | 20 | stream_id | u32 |
//! | 24 | timestamp_begin | u64 |
//! | 32 | timestamp_end | u64 |
//! | 40 | content_size (bits) | u64 |
//! | 48 | packet_size (bits) | u64 |
//! | 56 | packet_seq_num | u64 |
//! | 64 | events_discarded | u64 |
//! | 72 | cpu_id | u32 |
//!
//! The header is written in two halves: [`PacketOpen`] when a producer opens the
//! sub-buffer, [`PacketClose`] when it is switched out.
//!
//! An event is a header followed by its payload (see [`crate::ctf::field`]). The
//! header has LTTng's two forms, told apart by the low 5 bits of its first byte:
//! - compact, [`COMPACT_HEADER_SIZE`] bytes: one little-endian u32 holding the id
//!   (below [`COMPACT_ID_LIMIT`]) in bits 0-4 and the low 27 bits of the timestamp
//!   in bits 5-31. A reader completes the timestamp from the previous one of the
//!   stream (the packet's `timestamp_begin` for its first event), adding 2^27 when
//!   the low bits went down; so a producer writes it only when the time since the
//!   previous event is known to be below 2^27 ns (134 ms).
//! - extended, [`EVENT_HEADER_SIZE`] bytes: 31 in the first byte, then the u32 id
//!   and the whole u64 timestamp.

/// CTF packet magic number.
pub const CTF_MAGIC: u32 = 0xC1FC_1FC1;
/// Bytes at the start of every packet for the packet header and context.
pub const PACKET_HEADER_SIZE: usize = 76;
/// Bytes of the extended event header: 31, event id (u32) and timestamp (u64).
pub const EVENT_HEADER_SIZE: usize = 13;
/// Bytes of the compact event header: id and the timestamp's low bits in one u32.
pub const COMPACT_HEADER_SIZE: usize = 4;
/// Event ids below this may be written compact; 31 marks the extended form.
pub const COMPACT_ID_LIMIT: u32 = 31;
/// Bits of the timestamp a compact header holds.
pub const COMPACT_TIMESTAMP_BITS: u32 = 27;

/// Header bytes that [`PacketOpen::write`] fills; a writer that shares the header with
/// a concurrent [`PacketClose`] writer copies only these.
pub const OPEN_RANGES: [std::ops::Range<usize>; 3] = [0..32, 48..64, 72..76];
/// Header bytes that [`PacketClose::write`] fills; disjoint from [`OPEN_RANGES`].
pub const CLOSE_RANGES: [std::ops::Range<usize>; 2] = [32..48, 64..72];

const MAGIC_AT: usize = 0;
const UUID_AT: usize = 4;
const STREAM_ID_AT: usize = 20;
const TIMESTAMP_BEGIN_AT: usize = 24;
const TIMESTAMP_END_AT: usize = 32;
const CONTENT_SIZE_AT: usize = 40;
const PACKET_SIZE_AT: usize = 48;
const SEQ_NUM_AT: usize = 56;
const EVENTS_DISCARDED_AT: usize = 64;
const CPU_ID_AT: usize = 72;

/// What is known when a producer opens a sub-buffer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PacketOpen {
    /// Uuid of the trace (one per metadata file).
    pub uuid: [u8; 16],
    /// Stream class id: the channel's index in its trace.
    pub stream_id: u32,
    /// Timestamp of the reservation that opened the packet.
    pub timestamp_begin: u64,
    /// Size of the whole packet (the sub-buffer) in bytes.
    pub packet_size: u64,
    /// Position of this packet in its stream, from 0, so readers see lost packets.
    pub seq_num: u64,
    /// CPU whose ring this packet comes from.
    pub cpu_id: u32,
}

/// What is known when a sub-buffer is switched out.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PacketClose {
    /// Timestamp of the switch; not before any event in the packet.
    pub timestamp_end: u64,
    /// Bytes of the packet that hold header and events; the rest is padding.
    pub content_size: u64,
    /// Events this stream has discarded since it was created.
    pub events_discarded: u64,
}

/// The whole decoded packet header and context.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PacketHeader {
    /// Fields written at open time.
    pub open: PacketOpen,
    /// Fields written at switch time.
    pub close: PacketClose,
}

/// Why bytes could not be read as a packet header.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum PacketError {
    /// Fewer bytes than a packet header.
    #[error("packet truncated: {0} bytes, a header needs {PACKET_HEADER_SIZE}")]
    Truncated(usize),
    /// The first four bytes are not the CTF magic.
    #[error("bad packet magic {0:#010x}, expected {CTF_MAGIC:#010x}")]
    BadMagic(u32),
    /// Sizes that contradict each other or the data.
    #[error("inconsistent packet sizes: content {content_bits} bits, packet {packet_bits} bits")]
    BadSizes {
        /// content_size as read.
        content_bits: u64,
        /// packet_size as read.
        packet_bits: u64,
    },
}

fn put_u32(buf: &mut [u8], at: usize, v: u32) {
    buf[at..at + 4].copy_from_slice(&v.to_le_bytes());
}

fn put_u64(buf: &mut [u8], at: usize, v: u64) {
    buf[at..at + 8].copy_from_slice(&v.to_le_bytes());
}

fn get_u32(buf: &[u8], at: usize) -> u32 {
    u32::from_le_bytes(buf[at..at + 4].try_into().expect("4 bytes"))
}

fn get_u64(buf: &[u8], at: usize) -> u64 {
    u64::from_le_bytes(buf[at..at + 8].try_into().expect("8 bytes"))
}

impl PacketOpen {
    /// Writes the open-time fields into the first [`PACKET_HEADER_SIZE`] bytes of `buf`.
    pub fn write(&self, buf: &mut [u8]) {
        put_u32(buf, MAGIC_AT, CTF_MAGIC);
        buf[UUID_AT..UUID_AT + 16].copy_from_slice(&self.uuid);
        put_u32(buf, STREAM_ID_AT, self.stream_id);
        put_u64(buf, TIMESTAMP_BEGIN_AT, self.timestamp_begin);
        put_u64(buf, PACKET_SIZE_AT, self.packet_size * 8);
        put_u64(buf, SEQ_NUM_AT, self.seq_num);
        put_u32(buf, CPU_ID_AT, self.cpu_id);
    }
}

impl PacketClose {
    /// Writes the switch-time fields into the first [`PACKET_HEADER_SIZE`] bytes of `buf`.
    pub fn write(&self, buf: &mut [u8]) {
        put_u64(buf, TIMESTAMP_END_AT, self.timestamp_end);
        put_u64(buf, CONTENT_SIZE_AT, self.content_size * 8);
        put_u64(buf, EVENTS_DISCARDED_AT, self.events_discarded);
    }
}

impl PacketHeader {
    /// Decodes and checks the header at the start of `buf` (a whole packet or more).
    pub fn read(buf: &[u8]) -> Result<PacketHeader, PacketError> {
        if buf.len() < PACKET_HEADER_SIZE {
            return Err(PacketError::Truncated(buf.len()));
        }
        let magic = get_u32(buf, MAGIC_AT);
        if magic != CTF_MAGIC {
            return Err(PacketError::BadMagic(magic));
        }
        let content_bits = get_u64(buf, CONTENT_SIZE_AT);
        let packet_bits = get_u64(buf, PACKET_SIZE_AT);
        if !content_bits.is_multiple_of(8)
            || !packet_bits.is_multiple_of(8)
            || content_bits > packet_bits
            || content_bits < (PACKET_HEADER_SIZE as u64) * 8
        {
            return Err(PacketError::BadSizes {
                content_bits,
                packet_bits,
            });
        }
        let mut uuid = [0; 16];
        uuid.copy_from_slice(&buf[UUID_AT..UUID_AT + 16]);
        Ok(PacketHeader {
            open: PacketOpen {
                uuid,
                stream_id: get_u32(buf, STREAM_ID_AT),
                timestamp_begin: get_u64(buf, TIMESTAMP_BEGIN_AT),
                packet_size: packet_bits / 8,
                seq_num: get_u64(buf, SEQ_NUM_AT),
                cpu_id: get_u32(buf, CPU_ID_AT),
            },
            close: PacketClose {
                timestamp_end: get_u64(buf, TIMESTAMP_END_AT),
                content_size: content_bits / 8,
                events_discarded: get_u64(buf, EVENTS_DISCARDED_AT),
            },
        })
    }
}

/// Drops the packet's padding in place: keeps `content_size` bytes and sets
/// `packet_size` to match. A valid CTF packet (readers skip nothing), and what a
/// short-lived app's nearly empty sub-buffer costs on disk is its content only.
pub fn trim(packet: &mut Vec<u8>) -> Result<(), PacketError> {
    let header = PacketHeader::read(packet)?;
    let content = header.close.content_size;
    if content > packet.len() as u64 {
        return Err(PacketError::BadSizes {
            content_bits: content * 8,
            packet_bits: packet.len() as u64 * 8,
        });
    }
    packet.truncate(content as usize);
    set_packet_size(packet, content);
    Ok(())
}

/// Sets the `packet_size` of the header at the start of `header` (at least
/// [`PACKET_HEADER_SIZE`] bytes) to `bytes`: what [`trim`] does to a whole copy,
/// for a header copied alone whose packet goes out trimmed straight from its ring.
pub fn set_packet_size(header: &mut [u8], bytes: u64) {
    put_u64(header, PACKET_SIZE_AT, bytes * 8);
}

/// Writes an extended event header (id, timestamp) at the start of `buf`.
#[inline]
pub fn write_event_header(buf: &mut [u8], id: u32, timestamp: u64) {
    buf[0] = COMPACT_ID_LIMIT as u8;
    buf[1..5].copy_from_slice(&id.to_le_bytes());
    buf[5..13].copy_from_slice(&timestamp.to_le_bytes());
}

/// Writes a compact event header at the start of `buf`: `id` must be below
/// [`COMPACT_ID_LIMIT`], and `timestamp` less than 2^27 after the previous event of
/// the stream (see the module doc).
#[inline]
pub fn write_compact_header(buf: &mut [u8], id: u32, timestamp: u64) {
    debug_assert!(id < COMPACT_ID_LIMIT);
    let word = id | (timestamp as u32) << 5;
    buf[..4].copy_from_slice(&word.to_le_bytes());
}

/// An event header as read back.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct EventHeader {
    /// The event's id.
    pub id: u32,
    /// Its whole timestamp (a compact one completed from the previous).
    pub timestamp: u64,
    /// Bytes of the header: where the event's context (or payload) starts.
    pub len: usize,
}

/// Event id of a lost event exactly as long as its header and its stream's event
/// context (zeroed): the filler of a reservation nobody will commit (dropped by a
/// panicking encoder, or left by a producer that died), so that the packet stays
/// parseable and keeps every other event. Declared in every stream. Below
/// [`COMPACT_ID_LIMIT`], so that a lost event fits any compact reservation, and small:
/// babeltrace 1 sizes a table by the largest id (u32::MAX made it crash).
pub const LOST_EVENT_ID: u32 = 29;
/// Event id of a lost event longer than its header and event context: a string field
/// of filler bytes covers the rest of the reservation. Declared in every stream.
pub const LOST_EVENT_PADDED_ID: u32 = 30;

/// The id of a trace's `index`-th registered event: the ids in order, without the two
/// lost-event ones. `None` past the id space.
pub fn event_id(index: u32) -> Option<u32> {
    if index < LOST_EVENT_ID {
        Some(index)
    } else {
        index.checked_add(2)
    }
}

/// Which registered event `id` is (the inverse of [`event_id`]); `None` for the
/// lost-event ids.
pub fn event_index(id: u32) -> Option<u32> {
    match id {
        LOST_EVENT_ID | LOST_EVENT_PADDED_ID => None,
        id if id < LOST_EVENT_ID => Some(id),
        id => Some(id - 2),
    }
}
/// Event name of both lost-event classes in the metadata.
pub const LOST_EVENT_NAME: &str = "ustrace:lost_event";

/// Fills `buf` (a whole uncommitted reservation, at least [`COMPACT_HEADER_SIZE`] +
/// `context_len` bytes) with one lost event at `timestamp` of a stream whose events
/// carry `context_len` bytes of event context: its header, the context zeroed (a reader
/// decodes the context of every event of the stream, this one included) and, if
/// longer, a string of `-` ending in NUL, so that a reader steps over exactly
/// `buf.len()` bytes. The header is extended when it fits, else compact: a
/// reservation shorter than an extended header and the context was a compact event's,
/// whose timestamp a compact header may carry.
pub fn write_lost_event(buf: &mut [u8], context_len: usize, timestamp: u64) {
    let header = if buf.len() >= EVENT_HEADER_SIZE + context_len {
        EVENT_HEADER_SIZE
    } else {
        COMPACT_HEADER_SIZE
    };
    let fields_at = header + context_len;
    let id = if buf.len() == fields_at {
        LOST_EVENT_ID
    } else {
        LOST_EVENT_PADDED_ID
    };
    if header == EVENT_HEADER_SIZE {
        write_event_header(buf, id, timestamp);
    } else {
        write_compact_header(buf, id, timestamp);
    }
    buf[header..fields_at].fill(0);
    if let Some((last, filler)) = buf[fields_at..].split_last_mut() {
        filler.fill(b'-');
        *last = 0;
    }
}

/// Reads the event header at the start of `buf`, if it is long enough; `previous`
/// is the stream's previous timestamp (its packet's `timestamp_begin` for the first
/// event), from which a compact header's timestamp is completed.
pub fn read_event_header(buf: &[u8], previous: u64) -> Option<EventHeader> {
    let first = *buf.first()?;
    if u32::from(first) & COMPACT_ID_LIMIT == COMPACT_ID_LIMIT {
        if buf.len() < EVENT_HEADER_SIZE {
            return None;
        }
        return Some(EventHeader {
            id: get_u32(buf, 1),
            timestamp: get_u64(buf, 5),
            len: EVENT_HEADER_SIZE,
        });
    }
    let word = get_u32(buf.get(..COMPACT_HEADER_SIZE)?, 0);
    let low_mask = (1u64 << COMPACT_TIMESTAMP_BITS) - 1;
    let low = u64::from(word >> 5);
    let mut timestamp = (previous & !low_mask) | low;
    if timestamp < previous {
        timestamp = timestamp.wrapping_add(1 << COMPACT_TIMESTAMP_BITS);
    }
    Some(EventHeader {
        id: word & COMPACT_ID_LIMIT,
        timestamp,
        len: COMPACT_HEADER_SIZE,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_round_trips_through_its_two_halves() {
        let open = PacketOpen {
            uuid: [7; 16],
            stream_id: 3,
            timestamp_begin: 100,
            packet_size: 4096,
            seq_num: 9,
            cpu_id: 1,
        };
        let close = PacketClose {
            timestamp_end: 200,
            content_size: 1000,
            events_discarded: 5,
        };
        let mut buf = vec![0u8; 4096];
        open.write(&mut buf);
        close.write(&mut buf);
        assert_eq!(PacketHeader::read(&buf), Ok(PacketHeader { open, close }));
    }

    #[test]
    fn open_and_close_ranges_are_exactly_what_each_half_writes() {
        let touched = |write: &dyn Fn(&mut [u8])| {
            let mut a = [0u8; PACKET_HEADER_SIZE];
            let mut b = [0xFFu8; PACKET_HEADER_SIZE];
            write(&mut a);
            write(&mut b);
            (0..PACKET_HEADER_SIZE)
                .filter(|&i| a[i] != 0 || b[i] != 0xFF)
                .collect::<Vec<_>>()
        };
        let open = PacketOpen {
            uuid: [1; 16],
            stream_id: 1,
            timestamp_begin: 1,
            packet_size: 4096,
            seq_num: 1,
            cpu_id: 1,
        };
        let close = PacketClose {
            timestamp_end: 1,
            content_size: 100,
            events_discarded: 1,
        };
        let spans = |ranges: &[std::ops::Range<usize>]| {
            ranges.iter().flat_map(|r| r.clone()).collect::<Vec<_>>()
        };
        assert_eq!(touched(&|b| open.write(b)), spans(&OPEN_RANGES));
        assert_eq!(touched(&|b| close.write(b)), spans(&CLOSE_RANGES));
    }

    #[test]
    fn trimming_keeps_the_content_and_says_so_in_packet_size() {
        let mut buf = vec![0xEEu8; 4096];
        PacketOpen {
            uuid: [1; 16],
            stream_id: 0,
            timestamp_begin: 1,
            packet_size: 4096,
            seq_num: 0,
            cpu_id: 0,
        }
        .write(&mut buf);
        PacketClose {
            timestamp_end: 2,
            content_size: 100,
            events_discarded: 0,
        }
        .write(&mut buf);
        let mut short = buf.clone();
        trim(&mut short).unwrap();
        assert_eq!(short.len(), 100);
        let header = PacketHeader::read(&short).unwrap();
        assert_eq!(header.open.packet_size, 100);
        assert_eq!(&short[76..], &buf[76..100]);
    }

    #[test]
    fn garbage_is_refused_with_the_reason() {
        assert_eq!(
            PacketHeader::read(&[0; 10]),
            Err(PacketError::Truncated(10))
        );
        assert_eq!(PacketHeader::read(&[0; 100]), Err(PacketError::BadMagic(0)));
    }

    #[test]
    fn a_lost_event_zeroes_the_event_context_and_pads_only_past_it() {
        let context = 4 + 4 + 17;
        let mut exact = vec![0xAA; EVENT_HEADER_SIZE + context];
        write_lost_event(&mut exact, context, 9);
        let header = |buf: &[u8]| read_event_header(buf, 0).map(|h| (h.id, h.timestamp));
        assert_eq!(header(&exact), Some((LOST_EVENT_ID, 9)));
        assert!(exact[EVENT_HEADER_SIZE..].iter().all(|&b| b == 0));

        let mut longer = vec![0xAA; EVENT_HEADER_SIZE + context + 5];
        write_lost_event(&mut longer, context, 9);
        assert_eq!(header(&longer), Some((LOST_EVENT_PADDED_ID, 9)));
        let (ctx, filler) = longer[EVENT_HEADER_SIZE..].split_at(context);
        assert!(ctx.iter().all(|&b| b == 0));
        assert_eq!(filler, b"----\0");

        let mut bare = vec![0xAA; EVENT_HEADER_SIZE];
        write_lost_event(&mut bare, 0, 1);
        assert_eq!(header(&bare), Some((LOST_EVENT_ID, 1)));
    }

    #[test]
    fn a_compact_timestamp_is_completed_from_the_previous_one_across_wraps() {
        let wrap = 1u64 << COMPACT_TIMESTAMP_BITS;
        let previous = 5 * wrap - 10;
        for timestamp in [previous, previous + 9, previous + 10, previous + wrap - 1] {
            let mut buf = [0u8; COMPACT_HEADER_SIZE];
            write_compact_header(&mut buf, 30, timestamp);
            let header = read_event_header(&buf, previous).unwrap();
            assert_eq!(
                (header.id, header.timestamp, header.len),
                (30, timestamp, 4)
            );
        }
        let mut buf = [0u8; EVENT_HEADER_SIZE];
        write_event_header(&mut buf, 7, previous + 3 * wrap);
        let header = read_event_header(&buf, previous).unwrap();
        assert_eq!(
            (header.id, header.timestamp, header.len),
            (7, previous + 3 * wrap, 13)
        );
        assert_eq!(
            read_event_header(&buf[..12], 0),
            None,
            "a cut extended header"
        );
        assert_eq!(
            read_event_header(&[3, 0, 0], 0),
            None,
            "a cut compact header"
        );
    }
}
