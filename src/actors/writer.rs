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

use crate::actors::stats::Stats;
use crate::actors::supervision::{RestartBudget, RestartPolicy, Verdict};
use crate::ctf::index::{self, IndexEntry};
use crate::ctf::layout::stream_file_name;
use crate::ctf::packet::PacketHeader;
use crate::ctf::trace_writer::TraceDir;
use crate::protocol::messages::WriterFailure;
use actix::WeakRecipient;
use actix::prelude::*;
use std::collections::{HashMap, VecDeque};
use std::fs::File;
use std::io::{self, Write};
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
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
pub struct WriterCatalog {
    /// Factory of each name.
    factories: HashMap<String, Arc<dyn WriterFactory>>,
}

impl Default for WriterCatalog {
    fn default() -> Self {
        let mut registry = WriterCatalog {
            factories: HashMap::new(),
        };
        registry.register(CTF_WRITER, Arc::new(CtfFileWriterFactory));
        registry
    }
}

/// Name of the built-in writer.
pub const CTF_WRITER: &str = "ctf";

impl WriterCatalog {
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
    /// The stream's index file (`index/<stream>.idx`), opened with the stream file,
    /// and the length of its whole entries, one per packet in the stream file.
    index: Option<(File, u64)>,
    /// A removal of the stream file seen since the last `sync`, which reports it.
    removed: Option<StreamRemoved>,
}

/// The stream file of a [`CtfFileWriter`] was removed (`rm -rf` of the output)
/// while it was open: nothing written to it since is on disk.
#[derive(Debug, thiserror::Error)]
#[error(
    "stream file {path} was removed after {bytes} bytes were written to it: they are gone \
     (later packets go to a recreated trace)"
)]
pub struct StreamRemoved {
    /// The file, as it was named.
    pub path: PathBuf,
    /// What it held, gone with it.
    pub bytes: u64,
}

/// Whether `file` still has a name: `st_nlink == 0` once it was unlinked, and
/// writing to it then only fills an inode that disappears at close.
fn is_removed(file: &File) -> io::Result<bool> {
    use std::os::unix::fs::MetadataExt;
    Ok(file.metadata()?.nlink() == 0)
}

impl CtfFileWriter {
    /// A writer that creates nothing until its first packet.
    pub fn new(stream: StreamInfo) -> CtfFileWriter {
        CtfFileWriter {
            stream,
            file: None,
            good_len: 0,
            index: None,
            removed: None,
        }
    }

    /// Writes the metadata file if no stream of the trace stored this version yet,
    /// or whatever was stored when `again` (the trace is being recreated). A newer
    /// version replaces the old one atomically (see [`TraceDir::store_metadata`]).
    fn store_metadata(&mut self, metadata: &Metadata, again: bool) -> io::Result<()> {
        if !again && metadata.stored.load(Ordering::Acquire) > metadata.version {
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

    /// Opens the stream file for appending and notes the length of the whole
    /// packets in it.
    fn open(&mut self) -> io::Result<()> {
        let file = self
            .stream
            .trace_dir
            .open_stream(&self.stream.file_name())?;
        self.good_len = file.metadata()?.len();
        self.file = Some(file);
        let mut index = self.stream.trace_dir.open_index(&self.stream.file_name())?;
        let mut index_len = index.metadata()?.len();
        if index_len == 0 {
            index.write_all(&index::header())?;
            index_len = index::INDEX_HEADER_LEN as u64;
        }
        self.index = Some((index, index_len));
        Ok(())
    }

    /// Opens the stream file on first use. A trace directory removed before this
    /// stream's first packet is recreated with its metadata.
    fn ensure_open(&mut self, metadata: &Metadata) -> io::Result<()> {
        if self.file.is_some() {
            return Ok(());
        }
        match self.open() {
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                self.store_metadata(metadata, true)?;
                self.open()
            }
            other => other,
        }
    }

    /// Drops the stream file if it was removed (with its trace, by `rm -rf` of the
    /// output), so that the next packet recreates the trace directory, its metadata
    /// and the file. Says so with [`StreamRemoved`], once per removal; the caller (a
    /// write) goes on to recreate, `sync` reports it. Returns whether it was.
    fn forget_removed_file(&mut self) -> io::Result<bool> {
        let Some(file) = &self.file else {
            return Ok(false);
        };
        if !is_removed(file)? {
            return Ok(false);
        }
        self.file = None;
        self.index = None;
        let removed = StreamRemoved {
            path: self.stream.trace_dir.path().join(self.stream.file_name()),
            bytes: self.good_len,
        };
        self.good_len = 0;
        log::warn!("{removed}; recreating the trace");
        self.removed = Some(removed);
        Ok(true)
    }
}

impl StreamWriter for CtfFileWriter {
    fn write_packet(&mut self, metadata: &Metadata, packet: &[u8]) -> io::Result<()> {
        let recreate = self.forget_removed_file()?;
        self.store_metadata(metadata, recreate)?;
        self.ensure_open(metadata)?;
        let good_len = self.good_len;
        let file = self.file.as_mut().expect("opened above");
        let (index, index_len) = self.index.as_mut().expect("opened with the file");
        let entry = PacketHeader::read(packet)
            .map(|header| IndexEntry::of(good_len, &header).encode())
            .map_err(io::Error::other)?;
        if let Err(e) = file
            .write_all(packet)
            .and_then(|()| index.write_all(&entry))
        {
            // A torn packet would make the whole stream unreadable, an entry without
            // its packet would mislead a reader: cut both back.
            let _ = file.set_len(good_len);
            let _ = index.set_len(*index_len);
            return Err(e);
        }
        self.good_len += packet.len() as u64;
        *index_len += entry.len() as u64;
        Ok(())
    }

    /// Every packet went out with an unbuffered `write`, so every reader sees it
    /// already. No fsync: `stop` promises a complete, readable trace, not one that
    /// survives power loss, and an fsync per stream of every short-lived app would
    /// cost milliseconds each on a real disk. A stream file removed since the last
    /// sync is reported: what it held is not on disk, whatever was written.
    fn sync(&mut self) -> io::Result<()> {
        self.forget_removed_file()?;
        match self.removed.take() {
            Some(removed) => Err(io::Error::other(removed)),
            None => Ok(()),
        }
    }
}

/// One packet for a writer, with the metadata that describes it. Its bytes count
/// in its stream's backlog from the drain that took it until it is dropped: stored,
/// counted lost, or lost with a mailbox, whatever the path.
#[derive(Message)]
#[rtype(result = "()")]
pub struct WritePacket {
    /// Metadata as of this packet.
    metadata: Metadata,
    /// The packet, padding trimmed.
    bytes: Vec<u8>,
    /// The backlog of the stream it is queued for (see [`StreamWriters::accepts`]).
    backlog: Arc<Backlog>,
}

impl Drop for WritePacket {
    fn drop(&mut self) {
        self.backlog.remove(self.bytes.len() as u64);
    }
}

/// Bytes sent to one stream's writer and not dropped by it yet.
struct Backlog {
    /// The count.
    bytes: AtomicU64,
    /// Past it the stream takes no more packets from its ring.
    limit: u64,
    /// Told when the count falls back under the limit: the BufferSet, which then
    /// drains the packets it left in the ring at once instead of at its next
    /// timer tick (a full ring sends no wake-up).
    room: OnceLock<WeakRecipient<BacklogRoom>>,
}

impl Backlog {
    /// Counts `bytes` more.
    fn add(&self, bytes: u64) {
        self.bytes.fetch_add(bytes, Ordering::Relaxed);
    }

    /// Counts `bytes` less; says so to the BufferSet if that makes room.
    fn remove(&self, bytes: u64) {
        let before = self.bytes.fetch_sub(bytes, Ordering::Relaxed);
        if before >= self.limit
            && before - bytes < self.limit
            && let Some(set) = self.room.get().and_then(WeakRecipient::upgrade)
        {
            set.do_send(BacklogRoom);
        }
    }

    /// Whether another packet may be queued.
    fn has_room(&self) -> bool {
        self.bytes.load(Ordering::Relaxed) < self.limit
    }
}

/// A stream's writer backlog fell back under its limit: drain again.
#[derive(Message)]
#[rtype(result = "()")]
pub struct BacklogRoom;

/// Answers once every packet sent before it is stored (or counted lost). The
/// answer is an error while the stream is failed, and once after it lost packets
/// and recovered: `stop` never claims data it does not have.
#[derive(Message)]
#[rtype(result = "Result<(), String>")]
pub struct SyncWriter;

/// Why a stream is failed, and since when: it tries again once a whole restart
/// window has passed.
struct Failure {
    /// The error that spent the restart budget.
    error: String,
    /// When it did.
    at: Instant,
}

/// Packets a writer lost and has not reported to a `SyncWriter` yet.
struct Loss {
    /// The error they were lost to (the latest).
    error: String,
    /// How many.
    packets: u64,
}

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
    /// Set when the budget is spent, until the retry after the window succeeds.
    failed: Option<Failure>,
    /// Lost packets the next `SyncWriter` answer reports.
    unreported: Option<Loss>,
    /// Whether `stats.failed_writers` lists this stream (from its failure to its
    /// recovery).
    listed: bool,
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
    /// Bytes sent to each stream's writer and not dropped by it yet, each bounded
    /// by `limits.max_writer_backlog_bytes`.
    backlogs: Vec<Arc<Backlog>>,
}

impl StreamWriters {
    /// Writers for `streams` (in ring order), to run on `arbiter`; none started yet.
    /// Each may hold up to about `backlog_limit` bytes of packets not stored yet.
    pub fn new(
        arbiter: ArbiterHandle,
        streams: Vec<StreamInfo>,
        factory: Arc<dyn WriterFactory>,
        policy: RestartPolicy,
        stats: Arc<Stats>,
        backlog_limit: u64,
    ) -> StreamWriters {
        let started = vec![None; streams.len()];
        let backlogs = streams
            .iter()
            .map(|_| {
                Arc::new(Backlog {
                    bytes: AtomicU64::new(0),
                    limit: backlog_limit,
                    room: OnceLock::new(),
                })
            })
            .collect();
        StreamWriters {
            arbiter,
            streams,
            factory,
            policy,
            stats,
            started,
            backlogs,
        }
    }

    /// Tells `set` (the BufferSet that owns these streams) whenever a full
    /// backlog gets room again. Set once, when the BufferSet starts.
    pub fn notify_room(&self, set: WeakRecipient<BacklogRoom>) {
        for backlog in &self.backlogs {
            let _ = backlog.room.set(set.clone());
        }
    }

    /// Whether the writer of ring `index` takes another packet: its backlog is
    /// under the limit. A slow or restarting writer thus leaves packets in the
    /// ring, whose producers then discard (and count) new events, instead of
    /// growing the daemon's heap; one packet always fits, whatever the limit.
    pub fn accepts(&self, index: usize) -> bool {
        self.backlogs[index].has_room()
    }

    /// Queues `bytes` (one packet described by `metadata`) for the writer of ring
    /// `index`, started now if it is its first packet.
    pub fn send(&mut self, index: usize, metadata: Metadata, bytes: Vec<u8>) {
        let backlog = self.backlogs[index].clone();
        backlog.add(bytes.len() as u64);
        let writer = self.started[index].get_or_insert_with(|| {
            Writer::start(
                &self.arbiter,
                self.streams[index].clone(),
                self.factory.clone(),
                self.policy,
                self.stats.clone(),
            )
        });
        writer.do_send(WritePacket {
            metadata,
            bytes,
            backlog,
        });
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
            unreported: None,
            listed: false,
            stats,
        })
    }

    /// `session/channel_cpu (trace dir)`: the stream in logs, status and answers.
    fn name(&self) -> String {
        format!(
            "{}/{} ({})",
            self.stream.session,
            self.stream.file_name(),
            self.stream.trace_dir.path().display()
        )
    }

    /// Stores pending packets in order. On a failure it either stops the actor (the
    /// supervisor restarts it) or marks the stream failed; returns false then. A
    /// failed stream counts its packets lost until a whole restart window has
    /// passed; then it tries again with a fresh budget (the disk may have space
    /// again, the output may be back).
    fn store_pending(&mut self, ctx: &mut Context<Self>) -> bool {
        if let Some(failure) = &self.failed {
            // Only a packet is a reason to try: a sync alone must not make a stream
            // look recovered.
            if self.pending.is_empty()
                || !self.budget.retry_after_window(failure.at, Instant::now())
            {
                self.count_lost();
                return true;
            }
            log::info!(
                "writer {}: retrying after its restart window ({})",
                self.name(),
                failure.error
            );
            self.failed = None;
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
                    self.unlist();
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
                log::warn!("writer {}: {error}; restarting", self.name());
                ctx.stop();
            }
            Verdict::GiveUp => {
                log::error!(
                    "writer {}: {error}; restart limit reached, stream failed for {} s",
                    self.name(),
                    self.budget.policy().within.as_secs()
                );
                self.failed = Some(Failure {
                    error,
                    at: Instant::now(),
                });
                self.count_lost();
            }
        }
    }

    /// Drops every pending packet of a failed stream and records the loss.
    fn count_lost(&mut self) {
        let Some(failure) = &self.failed else { return };
        let lost = self.pending.len() as u64;
        self.pending.clear();
        Stats::add(&self.stats.packets_lost_writer, lost);
        let loss = self.unreported.get_or_insert(Loss {
            error: String::new(),
            packets: 0,
        });
        loss.error.clone_from(&failure.error);
        loss.packets += lost;
        let (name, error) = (self.name(), failure.error.clone());
        if let Ok(mut failures) = self.stats.failed_writers.lock() {
            match failures.iter_mut().find(|f| f.stream == name) {
                Some(f) => f.packets_lost += lost,
                None => failures.push(WriterFailure {
                    stream: name,
                    error,
                    packets_lost: lost,
                }),
            }
        }
        self.listed = true;
    }

    /// A stream that stored a packet again leaves `status`'s failed writers; its
    /// loss stays counted in `packets_lost_writer` and in the next sync's answer.
    fn unlist(&mut self) {
        if !self.listed {
            return;
        }
        self.listed = false;
        let name = self.name();
        log::info!("writer {name}: recovered");
        if let Ok(mut failures) = self.stats.failed_writers.lock() {
            failures.retain(|f| f.stream != name);
        }
    }

    /// The answer to a sync once every packet is stored or counted lost.
    fn sync_result(&mut self) -> Result<(), String> {
        let name = self.name();
        let lost = self.unreported.take();
        match (&self.failed, lost, self.sink.as_mut()) {
            (Some(failure), lost, _) => Err(format!(
                "writer {name} failed ({}), {} packets lost",
                failure.error,
                lost.map_or(0, |l| l.packets)
            )),
            (None, Some(lost), _) => Err(format!(
                "writer {name} lost {} packets ({}), then recovered",
                lost.packets, lost.error
            )),
            (None, None, Some(sink)) => flatten(catch_unwind(AssertUnwindSafe(|| sink.sync())))
                .map_err(|e| format!("writer {name}: {e}")),
            (None, None, None) => Ok(()),
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

/// Hands the heap that the writers' queues freed back to the system. glibc keeps
/// freed memory in its arenas (one per thread that allocated: packets are copied
/// on the actor thread and freed on I/O threads), so after a flood the daemon's
/// resident size would stay at its peak; `stop` calls this once its writers synced.
pub fn release_freed_heap() {
    #[cfg(target_env = "gnu")]
    // SAFETY: malloc_trim only walks and shrinks glibc's own arenas; it takes no
    // pointer and is safe to call from any thread at any time.
    unsafe {
        libc::malloc_trim(0);
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
        let result = self.sync_result();
        Box::pin(async move { result })
    }
}
