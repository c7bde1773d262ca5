//! Writers: where a stream's packets go, and the supervised actor that drives them.
//!
//! A [`StreamWriter`] stores one stream's packets (the built-in [`CtfFileWriter`]
//! appends them to `<trace dir>/<channel>_<cpu>` beside the `metadata` file); a
//! [`WriterFactory`] makes one per stream and is registered by name in a
//! [`WriterRegistry`]; the config picks a name per channel. Developers add their own
//! (see docs/extending.md).
//!
//! The [`Writer`] actor owns one stream's writer under an actix `Supervisor`. A write
//! that fails, or a writer that panics, stops the actor; the supervisor restarts the
//! same actor value, which drops the broken writer (`restarting`), waits the back-off,
//! makes a new writer and retries the packets it still holds: nothing is lost to a
//! restart. Past the restart budget the stream is marked failed, its packets are
//! counted lost, and `ustrace status` names it; no other stream is affected.

use crate::actors::stats::Stats;
use crate::actors::supervision::{RestartBudget, RestartPolicy, Verdict};
use crate::ctf::layout::stream_file_name;
use crate::ctf::trace_writer::TraceDir;
use crate::protocol::messages::WriterFailure;
use actix::prelude::*;
use std::collections::{HashMap, VecDeque};
use std::fs::File;
use std::io::{self, Write};
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

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
    /// shared by every stream of the trace; `trace_dir.path()` is where it lies.
    pub trace_dir: TraceDir,
}

impl StreamInfo {
    /// `<channel>_<cpu>`: the stream's file name in its sub-trace.
    pub fn file_name(&self) -> String {
        stream_file_name(&self.channel, self.cpu)
    }
}

/// The trace metadata as of a packet: writers store it before the packet.
#[derive(Clone, Debug)]
pub struct Metadata {
    /// Grows by one each time the trace gains an event or a channel.
    pub version: u64,
    /// The whole TSDL text.
    pub tsdl: Arc<str>,
    /// Highest version stored by any writer of this trace (shared by all its
    /// streams), so that the metadata file is written once per version, not once
    /// per stream: file creation is most of a short-lived app's trace cost.
    pub stored: Arc<AtomicU64>,
}

/// Stores the packets of one stream.
pub trait StreamWriter: Send {
    /// Stores one complete CTF packet. `metadata` describes every event in it.
    fn write_packet(&mut self, metadata: &Metadata, packet: &[u8]) -> io::Result<()>;
    /// Makes everything written so far visible at its destination: `stop` answers the
    /// user once every writer of the session synced.
    fn sync(&mut self) -> io::Result<()>;
}

/// Makes the writer of each new stream of the channels that name it.
pub trait WriterFactory: Send + Sync {
    /// A writer for `stream`. Called again after each restart.
    fn create(&self, stream: &StreamInfo) -> io::Result<Box<dyn StreamWriter>>;
}

/// Writer factories by the name a config or `enable-channel` uses.
#[derive(Clone)]
pub struct WriterRegistry {
    /// Factory of each name.
    factories: HashMap<String, Arc<dyn WriterFactory>>,
}

impl Default for WriterRegistry {
    fn default() -> Self {
        let mut registry = WriterRegistry {
            factories: HashMap::new(),
        };
        registry.register(CTF_WRITER, Arc::new(CtfFileWriterFactory));
        registry
    }
}

/// Name of the built-in writer.
pub const CTF_WRITER: &str = "ctf";

impl WriterRegistry {
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

/// Makes [`CtfFileWriter`]s.
struct CtfFileWriterFactory;

impl WriterFactory for CtfFileWriterFactory {
    fn create(&self, stream: &StreamInfo) -> io::Result<Box<dyn StreamWriter>> {
        Ok(Box::new(CtfFileWriter::new(stream.clone())))
    }
}

/// The built-in writer: a CTF stream file beside its trace's `metadata` file.
pub struct CtfFileWriter {
    /// The stream it writes.
    stream: StreamInfo,
    /// The stream file, opened at the first packet so that a stream that never
    /// records anything leaves no file.
    file: Option<File>,
    /// Length of the file made of whole packets; a failed write is cut back to it.
    good_len: u64,
}

impl CtfFileWriter {
    /// A writer that creates nothing until its first packet.
    pub fn new(stream: StreamInfo) -> CtfFileWriter {
        CtfFileWriter {
            stream,
            file: None,
            good_len: 0,
        }
    }

    /// Writes the metadata file if no stream of the trace stored this version yet.
    /// A newer version replaces the old one atomically (see
    /// [`TraceDir::store_metadata`]).
    fn store_metadata(&mut self, metadata: &Metadata) -> io::Result<()> {
        if metadata.stored.load(Ordering::Acquire) > metadata.version {
            return Ok(());
        }
        self.stream
            .trace_dir
            .store_metadata(&self.stream.file_name(), &metadata.tsdl)?;
        // Stored as version + 1 so that 0 means "nothing stored yet".
        metadata
            .stored
            .fetch_max(metadata.version + 1, Ordering::Release);
        Ok(())
    }

    /// The stream file, opened for appending on first use, and the length of the
    /// whole packets in it.
    fn file(&mut self) -> io::Result<(&mut File, u64)> {
        if self.file.is_none() {
            let file = self
                .stream
                .trace_dir
                .open_stream(&self.stream.file_name())?;
            self.good_len = file.metadata()?.len();
            self.file = Some(file);
        }
        let file = self.file.as_mut().expect("opened above");
        Ok((file, self.good_len))
    }
}

impl StreamWriter for CtfFileWriter {
    fn write_packet(&mut self, metadata: &Metadata, packet: &[u8]) -> io::Result<()> {
        self.store_metadata(metadata)?;
        let (file, good_len) = self.file()?;
        if let Err(e) = file.write_all(packet) {
            // A torn packet would make the whole stream unreadable: cut it off.
            let _ = file.set_len(good_len);
            return Err(e);
        }
        self.good_len += packet.len() as u64;
        Ok(())
    }

    /// Every packet went out with an unbuffered `write`, so every reader sees it
    /// already. No fsync: `stop` promises a complete, readable trace, not one that
    /// survives power loss, and an fsync per stream of every short-lived app would
    /// cost milliseconds each on a real disk.
    fn sync(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// One packet for a writer, with the metadata that describes it.
#[derive(Message)]
#[rtype(result = "()")]
pub struct WritePacket {
    /// Metadata as of this packet.
    pub metadata: Metadata,
    /// The packet, padding trimmed.
    pub bytes: Vec<u8>,
}

/// Answers once every packet sent before it is stored (or counted lost).
#[derive(Message)]
#[rtype(result = "Result<(), String>")]
pub struct SyncWriter;

/// The supervised actor that drives one stream's [`StreamWriter`].
pub struct Writer {
    /// The stream it serves.
    stream: StreamInfo,
    /// Makes the writer, again after each restart.
    factory: Arc<dyn WriterFactory>,
    /// The current writer; `None` until first use and after each failure.
    sink: Option<Box<dyn StreamWriter>>,
    /// Packets received and not stored yet, oldest first; they survive restarts.
    pending: VecDeque<WritePacket>,
    /// Failures inside the restart window.
    budget: RestartBudget,
    /// Set when the budget is spent: the error that ended the stream.
    failed: Option<String>,
    /// Daemon counters.
    stats: Arc<Stats>,
}

/// The writers of one BufferSet's streams, each started at its stream's first
/// packet: registration never waits for an actor to start, and a stream that
/// records nothing (a short-lived app touches one or two CPUs) costs none.
pub struct StreamWriters {
    /// The I/O thread they run on.
    arbiter: ArbiterHandle,
    /// The stream of each ring, in ring order.
    streams: Vec<StreamInfo>,
    /// Makes their writers.
    factory: Arc<dyn WriterFactory>,
    /// Their restart limits.
    policy: RestartPolicy,
    /// Daemon counters.
    stats: Arc<Stats>,
    /// The writer of each stream, once started.
    started: Vec<Option<Addr<Writer>>>,
}

impl StreamWriters {
    /// Writers for `streams` (in ring order), to run on `arbiter`; none started yet.
    pub fn new(
        arbiter: ArbiterHandle,
        streams: Vec<StreamInfo>,
        factory: Arc<dyn WriterFactory>,
        policy: RestartPolicy,
        stats: Arc<Stats>,
    ) -> StreamWriters {
        let started = vec![None; streams.len()];
        StreamWriters {
            arbiter,
            streams,
            factory,
            policy,
            stats,
            started,
        }
    }

    /// The writer of ring `index`, started now if it is its first packet.
    pub fn get(&mut self, index: usize) -> &Addr<Writer> {
        self.started[index].get_or_insert_with(|| {
            Writer::start(
                &self.arbiter,
                self.streams[index].clone(),
                self.factory.clone(),
                self.policy,
                self.stats.clone(),
            )
        })
    }

    /// The writers started so far.
    pub fn started(&self) -> impl Iterator<Item = &Addr<Writer>> {
        self.started.iter().flatten()
    }
}

impl Writer {
    /// Starts a supervised writer for `stream` on `arbiter` (the I/O thread).
    fn start(
        arbiter: &ArbiterHandle,
        stream: StreamInfo,
        factory: Arc<dyn WriterFactory>,
        policy: RestartPolicy,
        stats: Arc<Stats>,
    ) -> Addr<Writer> {
        // Counted from creation to drop, not per start: a restart is the same writer.
        Stats::add(&stats.writers, 1);
        Supervisor::start_in_arbiter(arbiter, move |_| Writer {
            stream,
            factory,
            sink: None,
            pending: VecDeque::new(),
            budget: RestartBudget::new(policy),
            failed: None,
            stats,
        })
    }

    /// Stores pending packets in order. On a failure it either stops the actor (the
    /// supervisor restarts it) or marks the stream failed; returns false then.
    fn store_pending(&mut self, ctx: &mut Context<Self>) -> bool {
        if self.failed.is_some() {
            self.count_lost();
            return true;
        }
        while let Some(packet) = self.pending.front() {
            let result = catch_unwind(AssertUnwindSafe(|| {
                if self.sink.is_none() {
                    self.sink = Some(self.factory.create(&self.stream)?);
                }
                let sink = self.sink.as_mut().expect("created above");
                sink.write_packet(&packet.metadata, &packet.bytes)
            }));
            match flatten(result) {
                Ok(()) => {
                    self.pending.pop_front();
                }
                Err(error) => {
                    self.fail(error, ctx);
                    return false;
                }
            }
        }
        true
    }

    /// Handles a failed create, write or sync.
    fn fail(&mut self, error: String, ctx: &mut Context<Self>) {
        self.sink = None;
        match self.budget.failure(Instant::now()) {
            Verdict::Restart => {
                log::warn!(
                    "writer {}/{} in {}: {error}; restarting",
                    self.stream.session,
                    self.stream.file_name(),
                    self.stream.trace_dir.path().display()
                );
                ctx.stop();
            }
            Verdict::GiveUp => {
                log::error!(
                    "writer {}/{} in {}: {error}; restart limit reached, stream failed",
                    self.stream.session,
                    self.stream.file_name(),
                    self.stream.trace_dir.path().display()
                );
                self.failed = Some(error);
                self.count_lost();
            }
        }
    }

    /// Drops every pending packet of a failed stream and records the loss.
    fn count_lost(&mut self) {
        let lost = self.pending.len() as u64;
        self.pending.clear();
        Stats::add(&self.stats.packets_lost_writer, lost);
        let Some(error) = &self.failed else { return };
        let name = format!(
            "{}/{} ({})",
            self.stream.session,
            self.stream.file_name(),
            self.stream.trace_dir.path().display()
        );
        if let Ok(mut failures) = self.stats.failed_writers.lock() {
            match failures.iter_mut().find(|f| f.stream == name) {
                Some(f) => f.packets_lost += lost,
                None => failures.push(WriterFailure {
                    stream: name,
                    error: error.clone(),
                    packets_lost: lost,
                }),
            }
        }
    }
}

/// Turns a panic in a custom writer into an error message.
fn flatten(result: std::thread::Result<io::Result<()>>) -> Result<(), String> {
    match result {
        Ok(Ok(())) => Ok(()),
        Ok(Err(e)) => Err(e.to_string()),
        Err(panic) => Err(match panic.downcast_ref::<&str>() {
            Some(s) => format!("writer panicked: {s}"),
            None => match panic.downcast_ref::<String>() {
                Some(s) => format!("writer panicked: {s}"),
                None => "writer panicked".to_string(),
            },
        }),
    }
}

impl Actor for Writer {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        if !self.pending.is_empty() {
            // A restart: pause, then retry what the failed writer did not store.
            // `wait` holds back every other message until the retry is done, so a
            // SyncWriter sent meanwhile answers only after it.
            let backoff = self.budget.policy().backoff;
            ctx.wait(
                actix::clock::sleep(backoff)
                    .into_actor(self)
                    .map(|_, act, ctx| {
                        act.store_pending(ctx);
                    }),
            );
        }
    }
}

impl Drop for Writer {
    fn drop(&mut self) {
        Stats::sub(&self.stats.writers);
    }
}

impl Supervised for Writer {
    fn restarting(&mut self, _: &mut Context<Self>) {
        self.sink = None;
        Stats::add(&self.stats.writer_restarts, 1);
    }
}

impl Handler<WritePacket> for Writer {
    type Result = ();

    fn handle(&mut self, packet: WritePacket, ctx: &mut Context<Self>) {
        self.pending.push_back(packet);
        self.store_pending(ctx);
    }
}

impl Handler<SyncWriter> for Writer {
    type Result = ResponseFuture<Result<(), String>>;

    fn handle(&mut self, _: SyncWriter, ctx: &mut Context<Self>) -> Self::Result {
        if !self.store_pending(ctx) {
            // Restarting: ask again; the mailbox outlives the restart.
            let addr = ctx.address();
            return Box::pin(async move {
                addr.send(SyncWriter)
                    .await
                    .unwrap_or_else(|_| Err("writer stopped".to_string()))
            });
        }
        let result = match (&self.failed, self.sink.as_mut()) {
            (Some(error), _) => Err(error.clone()),
            (None, Some(sink)) => flatten(catch_unwind(AssertUnwindSafe(|| sink.sync()))),
            (None, None) => Ok(()),
        };
        Box::pin(async move { result })
    }
}
