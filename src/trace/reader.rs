//! Our own CTF reader for the traces ustrace writes.
//!
//! [`find_traces`] finds every sub-trace (a directory holding a `metadata` file) under
//! a session directory and parses its metadata with [`crate::trace::metadata::parse()`];
//! [`Reader`] decodes the packets of every stream file and merges all streams of all
//! sub-traces into one sequence of [`Record`]s ordered by wall-clock time. Every
//! stream is ordered by time on its own (the reader checks it), so the merge is a
//! k-way merge with one decoded record of look-ahead per stream.
//!
//! Input is untrusted: every length and offset is checked against the bytes, and any
//! inconsistency becomes a [`ReadError`] naming the file and the byte offset.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::fs;
use std::io::{self, Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};

use crate::ctf::context::ContextType;
use crate::ctf::field::FieldType;
use crate::ctf::packet::{PACKET_HEADER_SIZE, PacketHeader, read_event_header};
use crate::trace::index;
use crate::trace::layout::METADATA_FILE;
use crate::trace::metadata::{self, EnvValue, TraceMetadata};

/// Why a trace could not be read.
#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    /// A file or directory could not be read.
    #[error("{path}: {source}")]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// The system error.
        source: io::Error,
    },
    /// A metadata file is not what ustrace writes.
    #[error("{path}: byte {offset}: {message}")]
    Metadata {
        /// The metadata file.
        path: PathBuf,
        /// Byte offset of the problem in the file.
        offset: usize,
        /// What is wrong.
        message: String,
    },
    /// A stream file holds a corrupt or truncated packet or event.
    #[error("{path}: byte {offset}: {message}")]
    Stream {
        /// The stream file.
        path: PathBuf,
        /// Byte offset of the problem in the file.
        offset: u64,
        /// What is wrong.
        message: String,
    },
    /// The directory holds no sub-trace at all.
    #[error("no trace under {0}: no directory there holds a `metadata` file")]
    NoTrace(PathBuf),
}

/// One sub-trace: a directory with its metadata and its stream files.
#[derive(Clone, Debug)]
pub struct SubTrace {
    /// The directory.
    pub dir: PathBuf,
    /// Its parsed metadata.
    pub metadata: TraceMetadata,
    /// Its stream files, sorted by name.
    pub streams: Vec<PathBuf>,
}

impl SubTrace {
    /// Who recorded this trace: `procname/vpid` (per-PID) or `uid N` (per-UID).
    pub fn origin(&self) -> String {
        let meta = &self.metadata;
        match (meta.env("procname"), meta.env("vpid"), meta.env("uid")) {
            (Some(EnvValue::Str(name)), Some(EnvValue::Int(pid)), _) => format!("{name}/{pid}"),
            (_, _, Some(EnvValue::Int(uid))) => format!("uid {uid}"),
            _ => "-".to_string(),
        }
    }
}

/// Finds and parses every sub-trace under `dir` (itself included), sorted by path.
pub fn find_traces(dir: &Path) -> Result<Vec<SubTrace>, ReadError> {
    let mut dirs = Vec::new();
    collect_trace_dirs(dir, &mut dirs)?;
    if dirs.is_empty() {
        return Err(ReadError::NoTrace(dir.to_path_buf()));
    }
    dirs.sort();
    dirs.into_iter().map(|d| load_trace(&d)).collect()
}

fn io_error(path: &Path) -> impl FnOnce(io::Error) -> ReadError + '_ {
    move |source| ReadError::Io {
        path: path.to_path_buf(),
        source,
    }
}

fn collect_trace_dirs(dir: &Path, out: &mut Vec<PathBuf>) -> Result<(), ReadError> {
    let mut subdirs = Vec::new();
    for entry in fs::read_dir(dir).map_err(io_error(dir))? {
        let entry = entry.map_err(io_error(dir))?;
        let kind = entry.file_type().map_err(io_error(&entry.path()))?;
        if kind.is_dir() {
            subdirs.push(entry.path());
        } else if entry.file_name() == METADATA_FILE {
            out.push(dir.to_path_buf());
        }
    }
    for sub in subdirs {
        collect_trace_dirs(&sub, out)?;
    }
    Ok(())
}

fn load_trace(dir: &Path) -> Result<SubTrace, ReadError> {
    let path = dir.join(METADATA_FILE);
    let bytes = fs::read(&path).map_err(io_error(&path))?;
    let text = std::str::from_utf8(&bytes).map_err(|e| ReadError::Metadata {
        path: path.clone(),
        offset: e.valid_up_to(),
        message: "not UTF-8".into(),
    })?;
    let metadata = metadata::parse(text).map_err(|e| ReadError::Metadata {
        path: path.clone(),
        offset: e.offset,
        message: e.message,
    })?;
    let mut streams = Vec::new();
    for entry in fs::read_dir(dir).map_err(io_error(dir))? {
        let entry = entry.map_err(io_error(dir))?;
        let name = entry.file_name();
        let hidden = name.to_string_lossy().starts_with('.');
        if entry
            .file_type()
            .map_err(io_error(&entry.path()))?
            .is_file()
            && name != METADATA_FILE
            && !hidden
        {
            streams.push(entry.path());
        }
    }
    streams.sort();
    for stream in &streams {
        check_index(dir, stream)?;
    }
    Ok(SubTrace {
        dir: dir.to_path_buf(),
        metadata,
        streams,
    })
}

/// Checks the index file of `stream`, if there is one (`index/<stream>.idx`): it
/// must be CTF index 1.1 and its entries those of the stream's packets, in order.
/// It may lack the last ones (a live trace: the writer appends the entry after its
/// packet, and creates the file before writing its header, so a file shorter than
/// its header holds none yet), never hold one the stream does not.
fn check_index(dir: &Path, stream: &Path) -> Result<(), ReadError> {
    let Some(name) = stream.file_name() else {
        return Ok(());
    };
    let path = dir
        .join(index::INDEX_DIR)
        .join(index::index_file_name(&name.to_string_lossy()));
    let bytes = match fs::read(&path) {
        Ok(bytes) => bytes,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(io_error(&path)(e)),
    };
    if bytes.len() < index::INDEX_HEADER_LEN {
        return Ok(());
    }
    let fail = |offset: usize, message: String| ReadError::Stream {
        path: path.clone(),
        offset: offset as u64,
        message,
    };
    let entries = index::parse(&bytes).map_err(|e| fail(0, e.to_string()))?;
    let packets = index::stream_entries(stream).map_err(io_error(stream))?;
    for (i, entry) in entries.iter().enumerate() {
        let at = index::INDEX_HEADER_LEN + i * index::INDEX_ENTRY_LEN;
        match packets.get(i) {
            Some(packet) if packet == entry => {}
            Some(packet) => {
                return Err(fail(
                    at,
                    format!("index entry {i} is {entry:?}, the stream's packet {i} is {packet:?}"),
                ));
            }
            None => {
                // The stream lost what its index says it held: a stream error.
                return Err(ReadError::Stream {
                    path: stream.to_path_buf(),
                    offset: entry.offset,
                    message: format!(
                        "no whole packet here, but its index ({}) entry {i} says one of {} \
                         bytes starts here: the stream was cut",
                        path.display(),
                        entry.packet_size / 8
                    ),
                });
            }
        }
    }
    Ok(())
}

/// A decoded field value.
#[derive(Clone, Debug, PartialEq)]
pub enum Value {
    /// A signed integer.
    Signed(i64),
    /// An unsigned integer shown in decimal.
    Unsigned(u64),
    /// An unsigned integer shown in hexadecimal.
    Hex(u64),
    /// A binary32 float.
    F32(f32),
    /// A binary64 float.
    F64(f64),
    /// A bool.
    Bool(bool),
    /// A string (invalid UTF-8 replaced).
    Str(String),
    /// A byte sequence.
    Bytes(Vec<u8>),
    /// An enumeration value with its label, if one matches.
    Enum {
        /// The container value.
        value: i128,
        /// The label declared for it.
        label: Option<String>,
    },
}

/// One decoded event.
#[derive(Clone, Debug, PartialEq)]
pub struct Event {
    /// Trace clock timestamp (monotonic ns).
    pub timestamp: u64,
    /// `provider:name`.
    pub name: String,
    /// Its stream's context fields (who emitted it), in encoding order.
    pub context: Vec<(ContextType, Value)>,
    /// Payload fields in order.
    pub fields: Vec<(String, Value)>,
    /// CPU of the packet it was in.
    pub cpu_id: u32,
}

/// What the reader yields.
#[derive(Clone, Debug, PartialEq)]
pub enum RecordKind {
    /// An event.
    Event(Event),
    /// The tracer discarded this many events before the packet starting here.
    Discarded {
        /// Events lost since the previous packet of the stream.
        count: u64,
        /// The stream file.
        stream: PathBuf,
    },
    /// Whole packets are missing before the packet starting here (packet_seq_num
    /// jumped), e.g. given up because their producer died mid-event.
    LostPackets {
        /// Packets missing.
        count: u64,
        /// The stream file.
        stream: PathBuf,
    },
}

/// One item of the merged sequence.
#[derive(Clone, Debug, PartialEq)]
pub struct Record {
    /// Index of the sub-trace in [`Reader::traces`].
    pub trace: usize,
    /// Nanoseconds since the Unix epoch.
    pub wall_ns: i128,
    /// The event or discard notice.
    pub kind: RecordKind,
}

/// Decoding state of one stream file.
struct StreamCursor {
    /// Sub-trace index.
    trace: usize,
    /// The stream file; opened for each packet, so that a session of many streams
    /// holds no file descriptors and only one packet per stream in memory.
    path: PathBuf,
    /// Length of the file when the reader opened it.
    file_len: u64,
    /// The current packet, whole.
    packet: Vec<u8>,
    /// File offset of the current packet, to report absolute offsets.
    packet_at: u64,
    /// Next byte to decode in `packet`.
    pos: usize,
    /// End of the events in `packet` (content_size).
    content_end: usize,
    /// File offset of the next packet.
    next_packet: u64,
    /// Stream class of the current packet.
    stream_id: u32,
    /// CPU of the current packet.
    cpu_id: u32,
    /// events_discarded of the previous packet.
    discarded: u64,
    /// Earliest timestamp the next event may have: the previous event's, or the
    /// current packet's timestamp_begin.
    min_ts: u64,
    /// timestamp_end of the current packet: no event may be later, and the next
    /// packet may not begin earlier (babeltrace2 refuses that too).
    packet_end: u64,
    /// packet_seq_num the next packet should have.
    next_seq: u64,
    /// Notices about the current packet (discards, lost packets) not yet returned.
    notices: Vec<(u64, RecordKind)>,
}

impl StreamCursor {
    /// An error at byte `rel` of the current packet.
    fn fail<T>(&self, rel: usize, message: impl Into<String>) -> Result<T, ReadError> {
        Err(ReadError::Stream {
            path: self.path.clone(),
            offset: self.packet_at + rel as u64,
            message: message.into(),
        })
    }

    /// Reads the packet at `next_packet` into `packet` and returns its header.
    fn load_packet(&mut self) -> Result<PacketHeader, ReadError> {
        self.packet_at = self.next_packet;
        let left = self.file_len - self.packet_at;
        let mut file = fs::File::open(&self.path).map_err(io_error(&self.path))?;
        file.seek(SeekFrom::Start(self.packet_at))
            .map_err(io_error(&self.path))?;
        let mut head = [0u8; PACKET_HEADER_SIZE];
        let head_len = PACKET_HEADER_SIZE.min(left as usize);
        file.read_exact(&mut head[..head_len])
            .map_err(io_error(&self.path))?;
        let header = match PacketHeader::read(&head[..head_len]) {
            Ok(h) => h,
            Err(e) => return self.fail(0, format!("bad packet: {e}")),
        };
        if header.open.packet_size > left {
            return self.fail(
                48,
                format!(
                    "packet truncated: packet_size {} bytes, {left} left in the file",
                    header.open.packet_size
                ),
            );
        }
        // packet_size <= what is left of a file we could open, so it fits in memory.
        let content_size = header.close.content_size as usize;
        self.packet.clear();
        self.packet.extend_from_slice(&head);
        self.packet.resize(content_size, 0);
        file.read_exact(&mut self.packet[PACKET_HEADER_SIZE..])
            .map_err(io_error(&self.path))?;
        self.next_packet = self.packet_at + header.open.packet_size;
        self.content_end = content_size;
        self.pos = PACKET_HEADER_SIZE;
        Ok(header)
    }

    /// The next record of this stream: (trace clock timestamp, record), or None at end.
    fn next(&mut self, meta: &TraceMetadata) -> Result<Option<(u64, RecordKind)>, ReadError> {
        loop {
            if !self.notices.is_empty() {
                return Ok(Some(self.notices.remove(0)));
            }
            if self.pos < self.content_end {
                return self.event(meta).map(Some);
            }
            if self.next_packet >= self.file_len {
                return Ok(None);
            }
            self.packet(meta)?;
        }
    }

    /// Opens the next packet, queueing notices for lost packets and discards.
    fn packet(&mut self, meta: &TraceMetadata) -> Result<(), ReadError> {
        let header = self.load_packet()?;
        if header.open.uuid != meta.uuid {
            return self.fail(4, "packet uuid differs from the metadata's");
        }
        if !meta.stream_ids.contains(&header.open.stream_id) {
            return self.fail(
                20,
                format!("undeclared stream id {}", header.open.stream_id),
            );
        }
        if header.close.timestamp_end < header.open.timestamp_begin {
            return self.fail(32, "timestamp_end before timestamp_begin");
        }
        if header.open.timestamp_begin < self.packet_end {
            return self.fail(
                24,
                format!(
                    "packet begins at {} before the previous one ended at {}",
                    header.open.timestamp_begin, self.packet_end
                ),
            );
        }
        self.min_ts = header.open.timestamp_begin;
        self.packet_end = header.close.timestamp_end;
        self.stream_id = header.open.stream_id;
        self.cpu_id = header.open.cpu_id;
        let discarded = header.close.events_discarded;
        if discarded < self.discarded {
            return self.fail(
                64,
                format!(
                    "events_discarded went down from {} to {discarded}",
                    self.discarded
                ),
            );
        }
        let begin = header.open.timestamp_begin;
        let seq = header.open.seq_num;
        if seq < self.next_seq {
            return self.fail(56, format!("packet_seq_num {seq} repeats or goes back"));
        }
        if seq > self.next_seq {
            let lost = RecordKind::LostPackets {
                count: seq - self.next_seq,
                stream: self.path.clone(),
            };
            self.notices.push((begin, lost));
        }
        self.next_seq = seq.saturating_add(1);
        let grew = discarded - self.discarded;
        self.discarded = discarded;
        if grew > 0 {
            let discard = RecordKind::Discarded {
                count: grew,
                stream: self.path.clone(),
            };
            self.notices.push((begin, discard));
        }
        Ok(())
    }

    fn event(&mut self, meta: &TraceMetadata) -> Result<(u64, RecordKind), ReadError> {
        let at = self.pos;
        let Some(header) = read_event_header(&self.packet[at..self.content_end], self.min_ts)
        else {
            return self.fail(at, "event header runs past the packet content");
        };
        let (id, ts) = (header.id, header.timestamp);
        let Some(class) = meta.events.get(&(self.stream_id, id)) else {
            return self.fail(
                at,
                format!("unknown event id {id} in stream class {}", self.stream_id),
            );
        };
        if ts < self.min_ts || ts > self.packet_end {
            return self.fail(
                at,
                format!(
                    "event timestamp {ts} not in [{}, {}] (previous event or packet begin, packet end)",
                    self.min_ts, self.packet_end
                ),
            );
        }
        self.min_ts = ts;
        let mut pos = at + header.len;
        let declared = meta
            .contexts
            .get(&self.stream_id)
            .map_or(&[][..], Vec::as_slice);
        let mut context = Vec::with_capacity(declared.len());
        for &c in declared {
            let Some(value) = self.packet[pos..self.content_end]
                .get(..c.size())
                .map(|bytes| decode_context(c, bytes))
            else {
                return self.fail(
                    pos,
                    format!(
                        "context `{}` of {} runs past the packet content",
                        c.name(),
                        class.name
                    ),
                );
            };
            pos += c.size();
            context.push((c, value));
        }
        let mut fields = Vec::with_capacity(class.fields.len());
        for field in &class.fields {
            let (value, len) = match decode(&field.ty, &self.packet[pos..self.content_end]) {
                Some(v) => v,
                None => {
                    return self.fail(
                        pos,
                        format!(
                            "field `{}` of {} runs past the packet content",
                            field.name, class.name
                        ),
                    );
                }
            };
            pos += len;
            fields.push((field.name.clone(), value));
        }
        self.pos = pos;
        Ok((
            ts,
            RecordKind::Event(Event {
                timestamp: ts,
                name: class.name.clone(),
                context,
                fields,
                cpu_id: self.cpu_id,
            }),
        ))
    }
}

/// The value of context `c` from its `c.size()` bytes.
fn decode_context(c: ContextType, bytes: &[u8]) -> Value {
    let mut le = [0u8; 8];
    match c {
        ContextType::Procname => {
            let end = bytes.iter().position(|&b| b == 0).unwrap_or(bytes.len());
            Value::Str(String::from_utf8_lossy(&bytes[..end]).into_owned())
        }
        ContextType::PthreadId | ContextType::Ip => {
            le.copy_from_slice(bytes);
            Value::Hex(u64::from_le_bytes(le))
        }
        ContextType::Vpid | ContextType::Vtid | ContextType::CpuId => {
            le[..4].copy_from_slice(bytes);
            Value::Signed(i64::from(i32::from_le_bytes([le[0], le[1], le[2], le[3]])))
        }
    }
}

/// Decodes one value of type `ty` at the start of `buf`: the value and its length, or
/// None if `buf` is too short.
fn decode(ty: &FieldType, buf: &[u8]) -> Option<(Value, usize)> {
    fn raw(buf: &[u8], bytes: usize) -> Option<u64> {
        let mut le = [0u8; 8];
        le[..bytes].copy_from_slice(buf.get(..bytes)?);
        Some(u64::from_le_bytes(le))
    }
    fn sign_extend(v: u64, bits: u8) -> i64 {
        let shift = 64 - u32::from(bits);
        ((v << shift) as i64) >> shift
    }
    Some(match ty {
        FieldType::Integer { bits, signed, hex } => {
            let n = usize::from(*bits / 8);
            let v = raw(buf, n)?;
            let value = match (signed, hex) {
                (true, _) => Value::Signed(sign_extend(v, *bits)),
                (false, true) => Value::Hex(v),
                (false, false) => Value::Unsigned(v),
            };
            (value, n)
        }
        FieldType::Enum {
            bits,
            signed,
            labels,
        } => {
            let n = usize::from(*bits / 8);
            let v = raw(buf, n)?;
            let value = if *signed {
                i128::from(sign_extend(v, *bits))
            } else {
                i128::from(v)
            };
            let label = labels
                .iter()
                .find(|(_, l)| i128::from(*l) == value)
                .map(|(name, _)| name.clone());
            (Value::Enum { value, label }, n)
        }
        FieldType::F32 => (Value::F32(f32::from_bits(raw(buf, 4)? as u32)), 4),
        FieldType::F64 => (Value::F64(f64::from_bits(raw(buf, 8)?)), 8),
        FieldType::Bool => (Value::Bool(*buf.first()? != 0), 1),
        FieldType::String => {
            let nul = buf.iter().position(|&b| b == 0)?;
            (
                Value::Str(String::from_utf8_lossy(&buf[..nul]).into_owned()),
                nul + 1,
            )
        }
        FieldType::Bytes => {
            let len = usize::try_from(raw(buf, 4)?).ok()?;
            let bytes = buf.get(4..4usize.checked_add(len)?)?;
            (Value::Bytes(bytes.to_vec()), 4 + len)
        }
    })
}

/// Merges the records of every stream of every sub-trace by wall-clock time.
pub struct Reader {
    /// The sub-traces, as found by [`find_traces`].
    traces: Vec<SubTrace>,
    /// One cursor per stream file.
    cursors: Vec<StreamCursor>,
    /// Next record of each stream, keyed by (wall time, cursor index) for the merge.
    heap: BinaryHeap<Reverse<(i128, usize)>>,
    /// The record of each cursor waiting in `heap`.
    pending: Vec<Option<Record>>,
}

/// The length of the whole packets at the start of stream file `path`, walking the
/// packet headers on from `from` (a length already known whole): what a reader of a
/// file still being appended to may read without meeting a packet half-written.
fn whole_packets_len(path: &Path, from: u64) -> Result<u64, ReadError> {
    let len = fs::metadata(path).map_err(io_error(path))?.len();
    let mut file = fs::File::open(path).map_err(io_error(path))?;
    let mut at = from;
    let mut head = [0u8; PACKET_HEADER_SIZE];
    while len - at >= PACKET_HEADER_SIZE as u64 {
        file.seek(SeekFrom::Start(at)).map_err(io_error(path))?;
        file.read_exact(&mut head).map_err(io_error(path))?;
        // A header that does not parse is left to the cursor, which names it.
        let size = match PacketHeader::read(&head) {
            Ok(h) if h.open.packet_size > 0 => h.open.packet_size,
            _ => return Ok(len),
        };
        if size > len - at {
            break;
        }
        at += size;
    }
    Ok(at)
}

impl Reader {
    /// Opens every sub-trace under `dir` and reads the first record of each stream.
    pub fn open(dir: &Path) -> Result<Reader, ReadError> {
        Reader::with_traces(find_traces(dir)?, false)
    }

    /// Opens `dir` to follow it while it is written ([`Reader::refresh`]): each
    /// stream is read up to its last whole packet, and a directory that holds no
    /// sub-trace yet is no error.
    pub fn open_following(dir: &Path) -> Result<Reader, ReadError> {
        let traces = match find_traces(dir) {
            Err(ReadError::NoTrace(_)) => Vec::new(),
            found => found?,
        };
        Reader::with_traces(traces, true)
    }

    /// A reader of `traces`, every stream up to its whole packets if `whole`, else
    /// to its length (where a torn packet is an error).
    fn with_traces(traces: Vec<SubTrace>, whole: bool) -> Result<Reader, ReadError> {
        let mut reader = Reader {
            traces: Vec::new(),
            pending: Vec::new(),
            cursors: Vec::new(),
            heap: BinaryHeap::new(),
        };
        for trace in traces {
            reader.add_trace(trace, whole)?;
        }
        Ok(reader)
    }

    /// Adds a sub-trace and reads the first record of each of its streams.
    fn add_trace(&mut self, trace: SubTrace, whole: bool) -> Result<(), ReadError> {
        let streams = trace.streams.clone();
        self.traces.push(trace);
        for path in streams {
            self.add_stream(self.traces.len() - 1, path, whole)?;
        }
        Ok(())
    }

    /// Follow mode: takes in what was written since the last call. New sub-traces
    /// (a per-PID app registered) and new stream files are added, metadata is read
    /// again (events registered since), and every stream that was read to its end
    /// goes on to its new whole packets. Their records come next from
    /// [`Reader::next_record`].
    pub fn refresh(&mut self, dir: &Path) -> Result<(), ReadError> {
        let found = match find_traces(dir) {
            Err(ReadError::NoTrace(_)) => Vec::new(),
            found => found?,
        };
        for trace in found {
            let Some(t) = self.traces.iter().position(|known| known.dir == trace.dir) else {
                self.add_trace(trace, true)?;
                continue;
            };
            self.traces[t].metadata = trace.metadata;
            for path in trace.streams {
                if !self.traces[t].streams.contains(&path) {
                    self.traces[t].streams.push(path.clone());
                    self.add_stream(t, path, true)?;
                }
            }
        }
        for i in 0..self.cursors.len() {
            let cursor = &mut self.cursors[i];
            let grown = whole_packets_len(&cursor.path, cursor.file_len)?;
            if grown > cursor.file_len {
                cursor.file_len = grown;
                if self.pending[i].is_none() {
                    self.advance(i)?;
                }
            }
        }
        Ok(())
    }

    /// Adds a cursor over stream `path` of sub-trace `t` and reads its first record.
    fn add_stream(&mut self, t: usize, path: PathBuf, whole: bool) -> Result<(), ReadError> {
        let file_len = match whole {
            true => whole_packets_len(&path, 0)?,
            false => fs::metadata(&path).map_err(io_error(&path))?.len(),
        };
        self.cursors.push(StreamCursor {
            trace: t,
            file_len,
            packet: Vec::new(),
            packet_at: 0,
            path: path.clone(),
            pos: 0,
            content_end: 0,
            next_packet: 0,
            stream_id: 0,
            cpu_id: 0,
            discarded: 0,
            min_ts: 0,
            packet_end: 0,
            next_seq: 0,
            notices: Vec::new(),
        });
        self.pending.push(None);
        self.advance(self.cursors.len() - 1)
    }

    /// The sub-traces being read; [`Record::trace`] indexes this.
    pub fn traces(&self) -> &[SubTrace] {
        &self.traces
    }

    /// Decodes the next record of cursor `i` into the merge.
    fn advance(&mut self, i: usize) -> Result<(), ReadError> {
        let cursor = &mut self.cursors[i];
        let meta = &self.traces[cursor.trace].metadata;
        if let Some((ts, kind)) = cursor.next(meta)? {
            let wall_ns = i128::from(meta.clock_offset_ns) + i128::from(ts);
            self.pending[i] = Some(Record {
                trace: cursor.trace,
                wall_ns,
                kind,
            });
            self.heap.push(Reverse((wall_ns, i)));
        }
        Ok(())
    }

    /// The next record in time order, None at the end of every stream.
    pub fn next_record(&mut self) -> Result<Option<Record>, ReadError> {
        let Some(Reverse((_, i))) = self.heap.pop() else {
            return Ok(None);
        };
        let record = self.pending[i].take();
        self.advance(i)?;
        Ok(record)
    }
}
