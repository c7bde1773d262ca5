//! The supervised [`Writer`] actor that drives one stream's [`StreamWriter`], and
//! [`StreamWriters`], the writers of one BufferSet's streams with their bounded
//! backlogs (see the parent module's doc for the restart and failure rules).

use super::{DrainedPacket, LeasedPacket, Metadata, StreamInfo, StreamWriter, WriterFactory};
use crate::actors::stats::Stats;
use crate::actors::supervision::{RestartBudget, RestartPolicy, Verdict};
use crate::protocol::messages::WriterFailure;
use actix::WeakRecipient;
use actix::prelude::*;
use std::collections::VecDeque;
use std::io;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Instant;

/// One packet for a writer, with the metadata that describes it. Its bytes count
/// in its stream's backlog from the drain that took it until it is dropped: stored,
/// counted lost, or lost with a mailbox, whatever the path.
#[derive(Message)]
#[rtype(result = "()")]
pub struct WritePacket {
    /// Metadata as of this packet.
    metadata: Metadata,
    /// The packet, padding trimmed.
    bytes: DrainedPacket,
    /// The backlog of the stream it is queued for (see [`StreamWriters::accepts`]).
    backlog: Arc<Backlog>,
}

impl Drop for WritePacket {
    fn drop(&mut self) {
        let len = self.bytes.len() as u64;
        // The lease goes first: its slot is given back by the drain this may ask for.
        let leased = matches!(
            std::mem::replace(&mut self.bytes, DrainedPacket::Copied(Vec::new())),
            DrainedPacket::Leased(_)
        );
        self.backlog.remove(len, leased);
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

    /// Counts `bytes` less; says so to the BufferSet if that makes room, or if
    /// `slot_freed` (a leased sub-buffer was stored: the set gives it back).
    fn remove(&self, bytes: u64, slot_freed: bool) {
        let before = self.bytes.fetch_sub(bytes, Ordering::Relaxed);
        if (slot_freed || before >= self.limit && before - bytes < self.limit)
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

/// A stream's writer backlog fell back under its limit, or a leased sub-buffer was
/// stored: give the stored slots back to producers and drain again.
#[derive(Message)]
#[rtype(result = "()")]
pub struct BacklogRoom;

/// Answers once every packet sent before it is stored (or counted lost). The
/// answer is an error while the stream is failed, and once after it lost packets
/// and recovered: `stop` never claims data it does not have.
#[derive(Message)]
#[rtype(result = "Result<(), SyncError>")]
pub struct SyncWriter;

/// Why a stream's packets are not all stored: the answer to [`SyncWriter`], and
/// through flushes and teardowns the reason `stop` gives.
#[derive(Debug, thiserror::Error)]
pub enum SyncError {
    /// The stream spent its restart budget and is failed now.
    #[error("writer {stream} failed ({error}), {lost} packets lost")]
    Failed {
        /// The stream (`session/channel_cpu (trace dir)`).
        stream: String,
        /// The error that spent the budget, as `status` shows it.
        error: String,
        /// Packets lost since the last sync.
        lost: u64,
    },
    /// The stream was failed and recorded again since the last sync.
    #[error("writer {stream} lost {lost} packets ({error}), then recovered")]
    Recovered {
        /// The stream.
        stream: String,
        /// Packets lost meanwhile.
        lost: u64,
        /// The latest error they were lost to.
        error: String,
    },
    /// The writer's own `sync` failed.
    #[error("writer {stream}: {fault}")]
    Sync {
        /// The stream.
        stream: String,
        /// What the writer did.
        fault: WriterFault,
    },
    /// The writer's actor stopped before it answered.
    #[error("writer stopped")]
    Stopped,
}

/// How a [`StreamWriter`] call failed: an error it returned, or a panic caught
/// around it (a custom writer must not take the daemon down).
#[derive(Debug, thiserror::Error)]
pub enum WriterFault {
    /// It returned an error.
    #[error(transparent)]
    Io(#[from] io::Error),
    /// It panicked with this message.
    #[error("writer panicked: {0}")]
    Panicked(String),
    /// It panicked with a payload that is no string.
    #[error("writer panicked")]
    PanickedSilently,
}

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
    /// A loss a failed writer had seen and not reported when it was dropped for a
    /// restart (see [`StreamWriter::take_unreported`]); the next healthy sync
    /// answer reports it.
    inherited: Option<WriterFault>,
    /// Whether `stats.failed_writers` lists this stream (from its failure to its
    /// recovery).
    listed: bool,
    /// Daemon counters.
    stats: Arc<Stats>,
}

/// The writers of one BufferSet's streams, each started at its stream's first
/// packet: registration never waits for an actor to start, and a stream that
/// records nothing (a short-lived app touches one or two CPUs) costs none. Stream
/// `i` runs on the `i`-th I/O thread in turn, so that one stream's write waiting
/// for the disk (an `O_DIRECT` write returns when the device has the data) does
/// not hold the set's other streams, whose rings keep filling meanwhile.
pub struct StreamWriters {
    /// The I/O threads they run on, stream `i` on `arbiters[i % len]`.
    arbiters: Vec<ArbiterHandle>,
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
    /// Writers for `streams` (in ring order), to run on `arbiters` in turn (at least
    /// one); none started yet. Each may hold up to about `backlog_limit` bytes of
    /// packets not stored yet.
    pub fn new(
        arbiters: Vec<ArbiterHandle>,
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
        assert!(!arbiters.is_empty(), "stream writers need an I/O thread");
        StreamWriters {
            arbiters,
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
    pub fn send(&mut self, index: usize, metadata: Metadata, bytes: DrainedPacket) {
        let backlog = self.backlogs[index].clone();
        backlog.add(bytes.len() as u64);
        let arbiter = &self.arbiters[index % self.arbiters.len()];
        let writer = self.started[index].get_or_insert_with(|| {
            Writer::start(
                arbiter,
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

    /// Sends the next packets of every stream into `dir` (a rotation's next trace
    /// chunk): the writers started so far are handed back, to be synced and let go
    /// (they store what they hold in the chunk they write); the next packet of each
    /// stream starts a writer in `dir`.
    pub fn next_chunk(&mut self, dir: &crate::trace::writer::TraceDir) -> Vec<Addr<Writer>> {
        for stream in &mut self.streams {
            stream.trace_dir = dir.clone();
        }
        self.started.iter_mut().filter_map(Option::take).collect()
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
            inherited: None,
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
        while let Some(first) = self.pending.front() {
            let result = catch_unwind(AssertUnwindSafe(|| {
                if self.sink.is_none() {
                    if self.factory.uses_trace_dir() {
                        self.stream.trace_dir.ensure()?;
                    }
                    self.sink = Some(self.factory.create(&self.stream)?);
                }
                let sink = self.sink.as_mut().expect("created above");
                match &first.bytes {
                    DrainedPacket::Copied(bytes) => {
                        sink.write_packet(&first.metadata, bytes).map(|()| (1, 1))
                    }
                    DrainedPacket::Leased(_) => {
                        let run = leased_run(&self.pending);
                        let stored = sink.write_leased_run(&first.metadata, &run)?;
                        Ok((stored, run.len()))
                    }
                }
            }));
            match flatten(result) {
                Ok((stored, offered)) => {
                    // At least the first, at most what was offered (a custom writer
                    // may answer anything).
                    let stored = stored.clamp(1, offered);
                    self.pending.drain(..stored);
                    self.unlist();
                }
                Err(fault) => {
                    self.fail(fault.to_string(), ctx);
                    return false;
                }
            }
        }
        true
    }

    /// Handles a failed create, write or sync.
    fn fail(&mut self, error: String, ctx: &mut Context<Self>) {
        self.drop_sink();
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

    /// Drops the current writer, keeping what it had not reported yet: a restart
    /// must not forget a loss.
    fn drop_sink(&mut self) {
        let Some(mut sink) = self.sink.take() else {
            return;
        };
        let unreported = catch_unwind(AssertUnwindSafe(|| sink.take_unreported()));
        if let Ok(Some(loss)) = unreported {
            self.inherited = Some(WriterFault::Io(loss));
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
    fn sync_result(&mut self) -> Result<(), SyncError> {
        let stream = self.name();
        let lost = self.unreported.take();
        match (&self.failed, lost, self.sink.as_mut()) {
            (Some(failure), lost, _) => Err(SyncError::Failed {
                stream,
                error: failure.error.clone(),
                lost: lost.map_or(0, |l| l.packets),
            }),
            (None, Some(lost), _) => Err(SyncError::Recovered {
                stream,
                lost: lost.packets,
                error: lost.error,
            }),
            (None, None, sink) => {
                let synced = sink.map_or(Ok(()), |sink| {
                    flatten(catch_unwind(AssertUnwindSafe(|| sink.sync())))
                });
                let Some(fault) = self.inherited.take() else {
                    return synced.map_err(|fault| SyncError::Sync { stream, fault });
                };
                // One error per answer: the removal is what `stop` reports.
                if let Err(also) = synced {
                    log::warn!("writer {stream}: sync: {also}");
                }
                Err(SyncError::Sync { stream, fault })
            }
        }
    }
}

/// Most packets one [`StreamWriter::write_leased_run`] is offered: 8 sub-buffers
/// (4 MiB of 512 KiB ones) per write amortize its cost, and the writer's bounce
/// buffer stays small (two pages per packet).
const MOST_PER_RUN: usize = 8;

/// The leased packets at the front of `pending` that one write may store together:
/// consecutive, described by the same metadata, at most [`MOST_PER_RUN`].
fn leased_run(pending: &VecDeque<WritePacket>) -> Vec<&LeasedPacket> {
    let version = pending.front().map(|p| p.metadata.version);
    pending
        .iter()
        .take(MOST_PER_RUN)
        .take_while(|p| Some(p.metadata.version) == version)
        .map_while(|p| match &p.bytes {
            DrainedPacket::Leased(lease) => Some(lease),
            DrainedPacket::Copied(_) => None,
        })
        .collect()
}

/// Turns what a writer call returned, or its panic, into a [`WriterFault`].
fn flatten<T>(result: std::thread::Result<io::Result<T>>) -> Result<T, WriterFault> {
    match result {
        Ok(result) => Ok(result?),
        Err(panic) => Err(match panic.downcast_ref::<&str>() {
            Some(s) => WriterFault::Panicked((*s).to_owned()),
            None => match panic.downcast_ref::<String>() {
                Some(s) => WriterFault::Panicked(s.clone()),
                None => WriterFault::PanickedSilently,
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
        self.drop_sink();
        Stats::add(&self.stats.writer_restarts, 1);
    }
}

impl Handler<WritePacket> for Writer {
    type Result = ();

    /// Queued, and stored once the mailbox is empty: packets that arrived together
    /// (a drain that found several complete) go out in one write.
    fn handle(&mut self, packet: WritePacket, ctx: &mut Context<Self>) {
        self.pending.push_back(packet);
        ctx.notify(StorePending);
    }
}

/// Stores what is pending: sent by a writer to itself after each packet, handled
/// once every message already in its mailbox was (actix runs notifications after
/// the mailbox), so that the packets queued meanwhile form one run.
#[derive(Message)]
#[rtype(result = "()")]
struct StorePending;

impl Handler<StorePending> for Writer {
    type Result = ();

    fn handle(&mut self, _: StorePending, ctx: &mut Context<Self>) {
        self.store_pending(ctx);
    }
}

impl Handler<SyncWriter> for Writer {
    type Result = ResponseFuture<Result<(), SyncError>>;

    fn handle(&mut self, _: SyncWriter, ctx: &mut Context<Self>) -> Self::Result {
        if !self.store_pending(ctx) {
            // Restarting: ask again; the mailbox outlives the restart.
            let addr = ctx.address();
            return Box::pin(async move {
                addr.send(SyncWriter)
                    .await
                    .unwrap_or(Err(SyncError::Stopped))
            });
        }
        let result = self.sync_result();
        Box::pin(async move { result })
    }
}
