//! CTF index files, as LTTng writes them: `index/<channel>_<cpu>.idx` beside each
//! stream file, one entry per packet, so that live readers and relay streaming find
//! packets without reading the stream (CTF index format 1.1, big-endian).
//!
//! ```text
//! header: magic 0xC1F1DCC1 u32, index_major 1 u32, index_minor 1 u32,
//!         packet_index_len 72 u32
//! entry:  offset (bytes), packet_size (bits), content_size (bits), timestamp_begin,
//!         timestamp_end, events_discarded, stream_id, stream_instance_id (the CPU),
//!         packet_seq_num: u64 each
//! ```
//!
//! The writer appends an entry after its packet is whole in the stream file, and cuts
//! both back when either write fails; recovery (`trace::recover`) rewrites an index
//! that is out of step with the whole packets its stream keeps (a daemon killed
//! between the two writes, a stream cut back); `ustrace view` checks every entry
//! against the stream's packets.

use std::fs::OpenOptions;
use std::io;
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::Path;

use crate::ctf::packet::{PACKET_HEADER_SIZE, PacketHeader};

/// The index directory's name inside a sub-trace directory.
pub const INDEX_DIR: &str = "index";
/// First word of an index file.
pub const INDEX_MAGIC: u32 = 0xC1F1_DCC1;
/// Bytes of the file header.
pub const INDEX_HEADER_LEN: usize = 16;
/// Bytes of one entry (format 1.1).
pub const INDEX_ENTRY_LEN: usize = 72;

/// The index file name of stream file `stream`.
pub fn index_file_name(stream: &str) -> String {
    format!("{stream}.idx")
}

/// The file header.
pub fn header() -> [u8; INDEX_HEADER_LEN] {
    let mut out = [0u8; INDEX_HEADER_LEN];
    for (i, word) in [INDEX_MAGIC, 1, 1, INDEX_ENTRY_LEN as u32]
        .into_iter()
        .enumerate()
    {
        out[4 * i..4 * i + 4].copy_from_slice(&word.to_be_bytes());
    }
    out
}

/// One packet as its index entry describes it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct IndexEntry {
    /// Where the packet starts in the stream file, in bytes.
    pub offset: u64,
    /// `packet_size`, in bits.
    pub packet_size: u64,
    /// `content_size`, in bits.
    pub content_size: u64,
    /// `timestamp_begin`.
    pub timestamp_begin: u64,
    /// `timestamp_end`.
    pub timestamp_end: u64,
    /// `events_discarded`.
    pub events_discarded: u64,
    /// Stream class id.
    pub stream_id: u64,
    /// The stream within its class: its CPU.
    pub stream_instance_id: u64,
    /// `packet_seq_num`.
    pub packet_seq_num: u64,
}

impl IndexEntry {
    /// The entry of `packet`, stored at `offset` of its stream file.
    pub fn of(offset: u64, packet: &PacketHeader) -> IndexEntry {
        IndexEntry {
            offset,
            packet_size: packet.open.packet_size * 8,
            content_size: packet.close.content_size * 8,
            timestamp_begin: packet.open.timestamp_begin,
            timestamp_end: packet.close.timestamp_end,
            events_discarded: packet.close.events_discarded,
            stream_id: u64::from(packet.open.stream_id),
            stream_instance_id: u64::from(packet.open.cpu_id),
            packet_seq_num: packet.open.seq_num,
        }
    }

    /// Its bytes.
    pub fn encode(&self) -> [u8; INDEX_ENTRY_LEN] {
        let mut out = [0u8; INDEX_ENTRY_LEN];
        let words = [
            self.offset,
            self.packet_size,
            self.content_size,
            self.timestamp_begin,
            self.timestamp_end,
            self.events_discarded,
            self.stream_id,
            self.stream_instance_id,
            self.packet_seq_num,
        ];
        for (i, word) in words.into_iter().enumerate() {
            out[8 * i..8 * i + 8].copy_from_slice(&word.to_be_bytes());
        }
        out
    }

    /// The entry in `bytes` (`INDEX_ENTRY_LEN` of them).
    fn decode(bytes: &[u8]) -> IndexEntry {
        let word = |i: usize| {
            let mut w = [0u8; 8];
            w.copy_from_slice(&bytes[8 * i..8 * i + 8]);
            u64::from_be_bytes(w)
        };
        IndexEntry {
            offset: word(0),
            packet_size: word(1),
            content_size: word(2),
            timestamp_begin: word(3),
            timestamp_end: word(4),
            events_discarded: word(5),
            stream_id: word(6),
            stream_instance_id: word(7),
            packet_seq_num: word(8),
        }
    }
}

/// Why an index file could not be read.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum IndexError {
    /// Shorter than its header, or a header that is not CTF index 1.1.
    #[error("not a CTF index 1.1 file: {0}")]
    BadHeader(String),
}

/// The entries of an index file's bytes. Bytes after the last whole entry are left
/// out: the writer appends each entry after its packet, so a live trace's index may
/// end in part of one.
pub fn parse(bytes: &[u8]) -> Result<Vec<IndexEntry>, IndexError> {
    if bytes.len() < INDEX_HEADER_LEN {
        return Err(IndexError::BadHeader(format!(
            "{} bytes, the header needs {INDEX_HEADER_LEN}",
            bytes.len()
        )));
    }
    if bytes[..INDEX_HEADER_LEN] != header() {
        return Err(IndexError::BadHeader(format!(
            "header {:02x?}",
            &bytes[..INDEX_HEADER_LEN]
        )));
    }
    Ok(bytes[INDEX_HEADER_LEN..]
        .chunks_exact(INDEX_ENTRY_LEN)
        .map(IndexEntry::decode)
        .collect())
}

/// The index entries of the whole packets at the start of stream file `path`
/// (walking their headers: what the writer's index says when in step), and where
/// the last one ends. A symbolic link is not followed.
pub fn stream_entries(path: &Path) -> io::Result<Vec<IndexEntry>> {
    let file = OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW)
        .open(path)?;
    let len = file.metadata()?.len();
    let mut entries = Vec::new();
    let mut offset = 0u64;
    let mut header = [0u8; PACKET_HEADER_SIZE];
    while offset + PACKET_HEADER_SIZE as u64 <= len {
        file.read_exact_at(&mut header, offset)?;
        let Ok(packet) = PacketHeader::read(&header) else {
            break;
        };
        let end = offset.saturating_add(packet.open.packet_size);
        if packet.open.packet_size == 0 || end > len {
            break;
        }
        entries.push(IndexEntry::of(offset, &packet));
        offset = end;
    }
    Ok(entries)
}

/// The bytes of an index file holding `entries`.
pub fn encode_file(entries: &[IndexEntry]) -> Vec<u8> {
    let mut out = header().to_vec();
    for entry in entries {
        out.extend_from_slice(&entry.encode());
    }
    out
}
