//! Writers: where a stream's packets go, and the supervised actor that drives them.
//!
//! A [`StreamWriter`] stores one stream's packets (the built-in [`CtfFileWriter`]
//! appends them to `<trace dir>/<channel>_<cpu>` beside the `metadata` file); a
//! [`WriterFactory`] makes one per stream and is registered by name in a
//! [`WriterCatalog`]; the config picks a name per channel. Developers add their own
//! (see docs/extending.md).
//!
//! The [`Writer`] actor owns one stream's writer under an actix `Supervisor`. A write
//! that fails, or a writer that panics, stops the actor; the supervisor restarts the
//! same actor value, which drops the broken writer (`restarting`), waits the back-off,
//! makes a new writer and retries the packets it still holds: nothing is lost to a
//! restart. Past the restart budget the stream is marked failed, its packets are
//! counted lost, and `ustrace status` names it; no other stream is affected. A
//! whole restart window later, its next packet is tried again (a full disk may have
//! space again): a stream recovers without its session being recreated, and the
//! next sync reports the loss once.
//!
//! What reaches a writer is bounded ([`StreamWriters::accepts`]): a stream takes no
//! packet from its ring while `limits.max_writer_backlog_bytes` wait for its writer,
//! so a slow writer costs discarded (counted) events, never the daemon's heap.
//!
//! The CTF writer checks before each packet that its stream file still has a name
//! (`st_nlink`); an output removed while tracing is recreated, and `sync` reports
//! what went with it, so `stop` never claims data that is not on disk.
//!
//! Layout: this file is the writer API a custom writer uses ([`StreamWriter`],
//! [`WriterFactory`], [`StreamInfo`], [`Metadata`], [`WriterCatalog`]); `ctf_file`
//! is the built-in CTF file writer; `actor` is the supervised [`Writer`] actor and
//! the per-set [`StreamWriters`] that start and bound them. Their public items are
//! re-exported here, so `ustrace::actors::writer::...` is the one path to use.

mod actor;
mod ctf_file;

pub use actor::{
    BacklogRoom, StreamWriters, SyncError, SyncWriter, WritePacket, Writer, WriterFault,
    release_freed_heap,
};
pub use ctf_file::{CtfFileWriter, StreamRemoved};
// `LeasedPacket` is part of the writer API (`StreamWriter::write_leased`).
pub use crate::shm::LeasedPacket;

use crate::protocol::messages::TracefileLimits;
use crate::trace::layout::stream_file_name;
use crate::trace::writer::TraceDir;
use ctf_file::CtfFileWriterFactory;
use std::collections::HashMap;
use std::io;
use std::sync::Arc;

/// What a writer is told about the stream it serves.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StreamInfo {
    /// Session the stream belongs to.
    pub session: String,
    /// Channel name.
    pub channel: String,
    /// CPU of the stream's ring.
    pub cpu: u32,
    /// Sub-trace directory (`<output>/ust/uid/<uid>/64-bit` or `.../pid/<name>-<pid>-<date>`),
    /// shared by every stream of the trace; `trace_dir.path()` is where it lies, made
    /// before [`WriterFactory::create`] is called.
    pub trace_dir: TraceDir,
    /// The channel's bounds on the stream's files (`enable-channel
    /// --tracefile-size/--tracefile-count`): the built-in writer splits the stream
    /// into `<channel>_<cpu>_<k>` files; a custom writer may honour them too.
    pub tracefile: TracefileLimits,
}

impl StreamInfo {
    /// `<channel>_<cpu>`: the stream's file name in its sub-trace.
    pub fn file_name(&self) -> String {
        stream_file_name(&self.channel, self.cpu)
    }

    /// The name of the stream's file number `k`: `<channel>_<cpu>_<k>` when its
    /// files are bounded in size, else the one `<channel>_<cpu>`.
    pub fn file_name_at(&self, k: u64) -> String {
        match self.tracefile.size {
            0 => self.file_name(),
            _ => format!("{}_{k}", self.file_name()),
        }
    }
}

/// The trace metadata as of a packet: writers store it before the packet.
#[derive(Clone, Debug)]
pub struct Metadata {
    /// Grows by one each time the trace gains an event or a channel.
    pub version: u64,
    /// The whole TSDL text.
    pub tsdl: Arc<str>,
}

/// A packet as the drain hands it to its stream's writer: copied out of its ring
/// (overwrite mode, whose producers may reuse the slot at any time), or leased in
/// place (discard mode: stored straight from the shared mapping, its slot given
/// back once the writer drops it). Either way one exact CTF packet, padding
/// trimmed.
pub enum DrainedPacket {
    /// The packet's bytes in the daemon's heap.
    Copied(Vec<u8>),
    /// The packet still in its sub-buffer.
    Leased(LeasedPacket),
}

impl DrainedPacket {
    /// Bytes the packet stores.
    pub fn len(&self) -> usize {
        match self {
            DrainedPacket::Copied(bytes) => bytes.len(),
            DrainedPacket::Leased(lease) => lease.len(),
        }
    }

    /// Whether it has no bytes (never: a packet has at least its header).
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Stores the packets of one stream.
pub trait StreamWriter: Send {
    /// Stores one complete CTF packet. `metadata` describes every event in it.
    fn write_packet(&mut self, metadata: &Metadata, packet: &[u8]) -> io::Result<()>;
    /// Stores one complete CTF packet that still lies in its ring's shared memory
    /// (discard mode), whose sub-buffer goes back to the producers once this
    /// returns. By default a copy of it goes to [`StreamWriter::write_packet`]; a
    /// writer that can store from the mapping (the built-in one writes it with
    /// `writev`) saves that copy.
    fn write_leased(&mut self, metadata: &Metadata, packet: &LeasedPacket) -> io::Result<()> {
        self.write_packet(metadata, &packet.to_vec())
    }
    /// Stores the first packets of `run`, consecutive packets of the stream's ring
    /// in order, all described by `metadata`: at least the first one, all of them if
    /// it can (the built-in writer puts them in one write: one request to the device
    /// instead of one per packet); returns how many. An error means none was stored.
    /// `run` is never empty.
    /// By default the first one goes to [`StreamWriter::write_leased`].
    fn write_leased_run(
        &mut self,
        metadata: &Metadata,
        run: &[&LeasedPacket],
    ) -> io::Result<usize> {
        self.write_leased(metadata, run[0]).map(|()| 1)
    }
    /// Makes everything written so far visible at its destination: `stop` answers the
    /// user once every writer of the session synced.
    fn sync(&mut self) -> io::Result<()>;
    /// Takes a loss this writer saw and has not reported through `sync` yet (the
    /// built-in writer's stream file removed under it). Asked when a failed writer is
    /// dropped for a restart, so that the next `sync` still reports the loss instead
    /// of the restart forgetting it.
    fn take_unreported(&mut self) -> Option<io::Error> {
        None
    }
}

/// Makes the writer of each new stream of the channels that name it.
pub trait WriterFactory: Send + Sync {
    /// A writer for `stream`. Called again after each restart.
    fn create(&self, stream: &StreamInfo) -> io::Result<Box<dyn StreamWriter>>;

    /// Whether its writers store under `stream.trace_dir` (made before `create` when
    /// so); a writer that sends elsewhere (the relayd one) says no and nothing is
    /// made on the local disk.
    fn uses_trace_dir(&self) -> bool {
        true
    }
}

/// Writer factories by the name a config or `enable-channel` uses.
#[derive(Clone)]
pub struct WriterCatalog {
    /// Factory of each name.
    factories: HashMap<String, Arc<dyn WriterFactory>>,
}

impl Default for WriterCatalog {
    /// The built-in writers as `daemon.direct_io`'s default (on) has them.
    fn default() -> Self {
        WriterCatalog::builtin(true)
    }
}

/// Name of the built-in writer.
pub const CTF_WRITER: &str = "ctf";

impl WriterCatalog {
    /// The built-in writers, the `ctf` one storing leased packets with `O_DIRECT`
    /// where the file system takes it if `direct_io` (`daemon.direct_io`).
    pub fn builtin(direct_io: bool) -> WriterCatalog {
        let mut registry = WriterCatalog {
            factories: HashMap::new(),
        };
        registry.register(CTF_WRITER, Arc::new(CtfFileWriterFactory { direct_io }));
        registry
    }

    /// Adds (or replaces) the factory called `name`.
    pub fn register(&mut self, name: &str, factory: Arc<dyn WriterFactory>) {
        self.factories.insert(name.to_string(), factory);
    }

    /// The factory called `name`.
    pub fn get(&self, name: &str) -> Option<Arc<dyn WriterFactory>> {
        self.factories.get(name).cloned()
    }

    /// Every registered name, sorted, for error messages.
    pub fn names(&self) -> Vec<String> {
        let mut names: Vec<String> = self.factories.keys().cloned().collect();
        names.sort();
        names
    }
}
