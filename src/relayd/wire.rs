//! The bytes of lttng-relayd's consumer protocol, as lttng-tools 2.13 reads them
//! (`src/common/sessiond-comm/relayd.h`): every field big-endian, strings in fixed,
//! NUL-padded arrays. Only the 2.10 subset ustrace uses is here (docs/streaming.md).

use crate::trace::index::IndexEntry;

/// Command numbers (`enum lttcomm_relayd_command`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u32)]
pub enum Command {
    /// Add a stream to the session.
    AddStream = 1,
    /// Create the session.
    CreateSession = 2,
    /// Version negotiation, first on each connection.
    Version = 5,
    /// Metadata text for a metadata stream.
    SendMetadata = 6,
    /// No more packets on a stream.
    CloseStream = 7,
    /// An index entry (or a beacon) for a packet of a stream.
    SendIndex = 13,
    /// The streams added so far may be shown to live viewers.
    StreamsSent = 16,
    /// The metadata of a stream starts over, at a new version.
    ResetMetadata = 17,
}

/// Protocol version ustrace announces: 2.10, the last one without trace chunks.
pub const VERSION: (u32, u32) = (2, 10);
/// `LTTNG_OK`: the return code of a successful command.
pub const LTTNG_OK: u32 = 10;
/// `RELAYD_COMM_LTTNG_NAME_MAX_2_4`: size of the session name field.
pub const SESSION_NAME_LEN: usize = 255;
/// `RELAYD_COMM_LTTNG_HOST_NAME_MAX_2_4`: size of the hostname field.
pub const HOSTNAME_LEN: usize = 64;
/// `RELAYD_COMM_DEFAULT_STREAM_NAME_LEN`: size of the channel (stream) name field.
pub const STREAM_NAME_LEN: usize = 264;
/// `RELAYD_COMM_LTTNG_PATH_MAX`: size of the path field.
pub const PATH_LEN: usize = 4096;
/// The relayd refuses stream paths of `LTTNG_NAME_MAX` (255) bytes or more.
pub const PATH_MAX_USED: usize = 254;
/// Bytes of a control message header.
pub const HEADER_LEN: usize = 24;
/// Bytes of a data-port packet header.
pub const DATA_HEADER_LEN: usize = 32;

/// A control message: the 24-byte header then `payload`.
pub fn message(command: Command, payload: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(HEADER_LEN + payload.len());
    out.extend_from_slice(&0u64.to_be_bytes()); // circuit id, unused
    out.extend_from_slice(&(payload.len() as u64).to_be_bytes());
    out.extend_from_slice(&(command as u32).to_be_bytes());
    out.extend_from_slice(&0u32.to_be_bytes()); // command version
    out.extend_from_slice(payload);
    out
}

/// Appends `text` NUL-padded to `len` bytes (the caller checked it fits with its NUL).
fn put_str(out: &mut Vec<u8>, text: &str, len: usize) {
    let start = out.len();
    out.extend_from_slice(text.as_bytes());
    out.resize(start + len, 0);
}

/// `VERSION`: `{u32 major, u32 minor}`; the reply has the same shape.
pub fn version() -> Vec<u8> {
    let mut p = Vec::with_capacity(8);
    p.extend_from_slice(&VERSION.0.to_be_bytes());
    p.extend_from_slice(&VERSION.1.to_be_bytes());
    message(Command::Version, &p)
}

/// `CREATE_SESSION`, 2.4 layout: `{name[255], hostname[64], u32 live_timer_us,
/// u32 snapshot}`; reply `{u64 session_id, u32 ret}`.
pub fn create_session(name: &str, hostname: &str, live_timer_us: u32) -> Vec<u8> {
    let mut p = Vec::with_capacity(SESSION_NAME_LEN + HOSTNAME_LEN + 8);
    put_str(&mut p, name, SESSION_NAME_LEN);
    put_str(&mut p, hostname, HOSTNAME_LEN);
    p.extend_from_slice(&live_timer_us.to_be_bytes());
    p.extend_from_slice(&0u32.to_be_bytes());
    message(Command::CreateSession, &p)
}

/// `ADD_STREAM`, 2.2 layout: `{name[264], path[4096], u64 tracefile_size,
/// u64 tracefile_count}`; reply `{u64 handle, u32 ret}`.
pub fn add_stream(name: &str, path: &str) -> Vec<u8> {
    let mut p = Vec::with_capacity(STREAM_NAME_LEN + PATH_LEN + 16);
    put_str(&mut p, name, STREAM_NAME_LEN);
    put_str(&mut p, path, PATH_LEN);
    p.extend_from_slice(&0u64.to_be_bytes());
    p.extend_from_slice(&0u64.to_be_bytes());
    message(Command::AddStream, &p)
}

/// `STREAMS_SENT`: no payload; reply `{u32 ret}`.
pub fn streams_sent() -> Vec<u8> {
    message(Command::StreamsSent, &[])
}

/// `SEND_METADATA`: `{u64 stream, u32 padding, text}`; no reply.
pub fn send_metadata(stream: u64, text: &[u8]) -> Vec<u8> {
    let mut p = Vec::with_capacity(12 + text.len());
    p.extend_from_slice(&stream.to_be_bytes());
    p.extend_from_slice(&0u32.to_be_bytes());
    p.extend_from_slice(text);
    message(Command::SendMetadata, &p)
}

/// `RESET_METADATA`: `{u64 stream, u64 version}`; reply `{u32 ret}`.
pub fn reset_metadata(stream: u64, version: u64) -> Vec<u8> {
    let mut p = Vec::with_capacity(16);
    p.extend_from_slice(&stream.to_be_bytes());
    p.extend_from_slice(&version.to_be_bytes());
    message(Command::ResetMetadata, &p)
}

/// `CLOSE_STREAM`: `{u64 stream, u64 last_net_seq_num}`; reply `{u32 ret}`.
pub fn close_stream(stream: u64, last_net_seq_num: u64) -> Vec<u8> {
    let mut p = Vec::with_capacity(16);
    p.extend_from_slice(&stream.to_be_bytes());
    p.extend_from_slice(&last_net_seq_num.to_be_bytes());
    message(Command::CloseStream, &p)
}

/// One `SEND_INDEX` entry (`struct lttcomm_relayd_index`, 2.8+ fields): the packet's
/// local index entry (its `offset` is not sent: the relayd keeps its own) under the
/// relayd's stream handle and the packet's network sequence number.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Index {
    /// The relayd's handle of the stream.
    pub relay_stream: u64,
    /// The packet's network sequence number (matches its data header).
    pub net_seq_num: u64,
    /// Sizes (bits; 0 in a beacon), timestamps, discarded count, stream ids.
    pub entry: IndexEntry,
}

/// `SEND_INDEX`: handle, net_seq_num, then the entry's fields but its offset, in
/// index-file order; reply `{u32 ret}`.
pub fn send_index(index: &Index) -> Vec<u8> {
    let e = &index.entry;
    let words = [
        index.relay_stream,
        index.net_seq_num,
        e.packet_size,
        e.content_size,
        e.timestamp_begin,
        e.timestamp_end,
        e.events_discarded,
        e.stream_id,
        e.stream_instance_id,
        e.packet_seq_num,
    ];
    let p: Vec<u8> = words.iter().flat_map(|w| w.to_be_bytes()).collect();
    message(Command::SendIndex, &p)
}

/// The data-port header of a packet: `{u64 circuit, u64 stream, u64 net_seq_num,
/// u32 data_size, u32 padding}`.
pub fn data_header(stream: u64, net_seq_num: u64, len: u32) -> [u8; DATA_HEADER_LEN] {
    let mut out = [0u8; DATA_HEADER_LEN];
    out[8..16].copy_from_slice(&stream.to_be_bytes());
    out[16..24].copy_from_slice(&net_seq_num.to_be_bytes());
    out[24..28].copy_from_slice(&len.to_be_bytes());
    out
}

/// Reads a big-endian u64 at `at` of a reply the caller sized.
pub fn be_u64(bytes: &[u8], at: usize) -> u64 {
    let mut w = [0u8; 8];
    w.copy_from_slice(&bytes[at..at + 8]);
    u64::from_be_bytes(w)
}

/// Reads a big-endian u32 at `at` of a reply the caller sized.
pub fn be_u32(bytes: &[u8], at: usize) -> u32 {
    let mut w = [0u8; 4];
    w.copy_from_slice(&bytes[at..at + 4]);
    u32::from_be_bytes(w)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_is_big_endian_with_size_and_command() {
        let m = message(Command::SendIndex, &[1, 2, 3]);
        assert_eq!(m.len(), HEADER_LEN + 3);
        assert_eq!(be_u64(&m, 0), 0);
        assert_eq!(be_u64(&m, 8), 3);
        assert_eq!(be_u32(&m, 16), 13);
        assert_eq!(&m[HEADER_LEN..], &[1, 2, 3]);
    }

    #[test]
    fn fixed_layouts_have_the_relayd_sizes() {
        assert_eq!(create_session("s", "h", 1).len(), HEADER_LEN + 255 + 64 + 8);
        assert_eq!(add_stream("m", "p").len(), HEADER_LEN + 264 + 4096 + 16);
        let entry = IndexEntry {
            offset: 1,
            packet_size: 2,
            content_size: 3,
            timestamp_begin: 4,
            timestamp_end: 5,
            events_discarded: 6,
            stream_id: 7,
            stream_instance_id: 8,
            packet_seq_num: 9,
        };
        let index = send_index(&Index {
            relay_stream: 10,
            net_seq_num: 11,
            entry,
        });
        assert_eq!(index.len(), HEADER_LEN + 80);
        let words: Vec<u64> = (0..10)
            .map(|i| be_u64(&index, HEADER_LEN + 8 * i))
            .collect();
        assert_eq!(
            words,
            [10, 11, 2, 3, 4, 5, 6, 7, 8, 9],
            "no offset, handle first"
        );
        let d = data_header(7, 9, 4096);
        assert_eq!(be_u64(&d, 8), 7);
        assert_eq!(be_u64(&d, 16), 9);
        assert_eq!(be_u32(&d, 24), 4096);
    }
}
