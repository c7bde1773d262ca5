//! BufferSet: the rings of one (session, channel, owner) and the drain into writers.
//!
//! Owner is a uid (per-UID: shared by all that uid's apps, lives as long as the
//! session) or a pid (per-PID: lives as long as the app). The actor drains complete
//! sub-buffers when a producer signals the wake-up eventfd (once per sub-buffer) and on
//! a timer, which first closes partly filled sub-buffers (LTTng's switch timer) so that
//! live apps' events reach the disk while the session runs, and hands each packet to the stream's Writer. On a wake-up a lone complete packet
//! waits for the next one (`waits_for_the_next`), so that the writer stores two or
//! more in one write; the timer's drain takes it whatever. In discard mode a
//! packet is leased, not copied: the writer stores it straight from the shared
//! mapping and the sub-buffer goes back to producers once it is stored (the
//! writer's drop of the lease sends [`BacklogRoom`]); a slow disk then makes the
//! producers discard, counted, as a full ring does. In overwrite mode packets are
//! copied out before the sub-buffer is given back, so producers may reuse any
//! complete slot at any time; a per-PID teardown copies too, so that its rings are
//! freed at once. The writer's queue is bounded: past `limits.max_writer_backlog_bytes`
//! not yet stored, the set leaves that stream's packets in its ring, whose producers
//! then discard new events (counted, `events discarded` in status) until the writer
//! catches up; a slow or failed writer never grows the daemon's heap. The writer's
//! side tells the set ([`BacklogRoom`]) when the backlog falls back under the
//! limit, and the set drains at once (a full ring sends no wake-up).
//!
//! What happens when an app dies: per-PID, [`Teardown`] flushes every ring (partial
//! sub-buffers too), fills the reservation a producer died inside with a lost event
//! (one counted), drains, syncs the writers and stops; dropping the last reference
//! unmaps and closes the memfds. Per-UID, [`ProducerDied`] (sent at the dead app's
//! EOF, with the uid's connections still open) fills at once every reservation whose
//! holder record names a process that is not one of them: the packet completes with
//! all its other events and the ring moves on. A live holder, even one stopped for
//! minutes, is never given up: it delays only its own sub-buffer. Only a reservation
//! the records do not explain (table full, death inside a packet switch) falls back,
//! on a slow timer, to giving its packet up.
//!
//! Snapshot sessions (`create --snapshot`, [`BufferSet::for_snapshots`]): the set
//! drains nothing and writes nothing while tracing; its overwrite-mode rings keep
//! the newest data, and [`TakeSnapshot`] copies what they hold out (without taking
//! it, without blocking producers) for the factory to write as a snapshot trace.
//!
//! What happens when an app lies in its rings' shared memory: the ring's [`Consumer`]
//! finds the value out of bounds and marks the ring corrupt; this actor logs it once
//! (naming the owner), counts its unread sub-buffers lost with reason "corrupt ring",
//! and reads nothing more from that ring. Its other rings, and every other set, go
//! on. Ring counters reach the daemon's totals only as checked deltas, summed per
//! owning uid ([`Stats::count_ring_losses`]).

use crate::actors::stats::Stats;
use crate::actors::writer::{
    BacklogRoom, DrainedPacket, Metadata, StreamWriters, SyncError, SyncWriter, Writer,
};
use crate::ctf::packet;
use crate::protocol::messages::UidLosses;
use crate::shm::{ChannelBuffers, Consumer, Mode};
use crate::trace::writer::TraceDir;
use actix::WeakAddr;
use actix::prelude::*;
use std::collections::HashSet;
use std::os::fd::{AsFd, OwnedFd};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::io::Interest;
use tokio::io::unix::AsyncFd;

/// How long a sub-buffer must stay incomplete, with no commit and no live holder
/// record in it, after a producer of its ring died before it is given up: the
/// fallback for reservations the holder records do not explain (a thread that found
/// the table full is live or dead, nobody can tell).
const STUCK_AFTER: Duration = Duration::from_secs(1);

/// How often a rotation looks again for the packets of its chunk that a producer is
/// still committing into.
const CHUNK_POLL: Duration = Duration::from_millis(1);

/// How long a rotation waits for them: a producer stopped inside a reservation must
/// not hold the rotation, its packet then goes to the next chunk.
const CHUNK_WAIT: Duration = Duration::from_millis(200);

/// The actor.
pub struct BufferSet {
    /// `session/channel/owner`, for logs.
    label: String,
    /// The rings, one per CPU, and their wake-up eventfd.
    buffers: Arc<ChannelBuffers>,
    /// The consumer side of each ring, same index.
    consumers: Vec<Consumer>,
    /// One writer per ring, same index, started at its first packet.
    writers: StreamWriters,
    /// The trace's metadata, updated by the BufferFactory when events are added.
    metadata: Arc<Mutex<Metadata>>,
    /// The uid whose apps write into these rings: their losses are counted to it.
    owner_uid: u32,
    /// Per ring, whether its corruption was already logged and counted.
    corruption_counted: Vec<bool>,
    /// Set once a producer of this set died: the timer then recovers stuck packets.
    producer_died: bool,
    /// Who may hold a reservation (per-UID sets, from [`ProducerDied`]).
    holders: Holders,
    /// Dead reservations the last pass could not fill yet: retried every drain tick.
    dead_pending: bool,
    /// Period of the switch timer: partly filled sub-buffers are closed and drained.
    flush_interval: Duration,
    /// A snapshot session's set: nothing is drained to writers, [`TakeSnapshot`]
    /// copies the rings out.
    snapshot: bool,
    /// Packets the rings counted overwritten since the set was made.
    overwritten: u64,
    /// Daemon counters.
    stats: Arc<Stats>,
}

/// Drain complete sub-buffers now (sent by the wake-up watcher).
#[derive(Message)]
#[rtype(result = "()")]
struct Drain;

/// Switch out partial sub-buffers, drain, and answer once the writers stored it all.
#[derive(Message)]
#[rtype(result = "Result<(), FlushError>")]
pub struct Flush;

/// Why a flush or a teardown did not store everything: the answer to [`Flush`],
/// [`Teardown`], and, collected over a session's sets, to stopping or destroying
/// it. Text is made only where the CLI's answer is built.
#[derive(Debug, thiserror::Error)]
pub enum FlushError {
    /// A writer of the set did not store everything.
    #[error(transparent)]
    Writer(#[from] SyncError),
    /// An actor (a set, a writer) stopped before it answered.
    #[error(transparent)]
    Stopped(#[from] MailboxError),
}

/// A process that wrote into this (per-UID) set has died: its connection closed.
#[derive(Message)]
#[rtype(result = "()")]
pub struct ProducerDied {
    /// Its pid, as SO_PEERCRED gave it.
    pub pid: i32,
    /// The uid that owns the set.
    pub uid: u32,
    /// Pids of that uid's registered connections still open: the only holders the
    /// daemon knows alive.
    pub live: Vec<i32>,
}

/// What the set knows of the processes that may hold reservations in its rings.
#[derive(Default)]
struct Holders {
    /// The uid owning the set; `None` until a producer died (nobody is dead yet).
    uid: Option<u32>,
    /// The uid's connections open at the last death.
    live: HashSet<i32>,
    /// Producers whose connection closed, while their reservations are unresolved: an
    /// exiting process may still show in /proc.
    dead: HashSet<i32>,
}

impl Holders {
    /// Whether a holder record naming `pid` belongs to a live producer: one of the
    /// uid's open connections, or (a hint, for apps registered since the last death)
    /// a running process of the set's uid that has not closed its connection.
    fn alive(&self, pid: i32) -> bool {
        let Some(uid) = self.uid else {
            return true;
        };
        self.live.contains(&pid) || (!self.dead.contains(&pid) && process_runs_as(pid, uid))
    }
}

/// Whether process `pid` exists, is not a zombie, and has effective uid `uid` (the
/// one SO_PEERCRED reports), from /proc/PID/status. A hint only: the pid may have
/// been reused.
fn process_runs_as(pid: i32, uid: u32) -> bool {
    let Ok(status) = std::fs::read_to_string(format!("/proc/{pid}/status")) else {
        return false;
    };
    // The `nth` value of a line `Name:\tv0\tv1...`.
    let field = |name: &str, nth: usize| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.split_whitespace().nth(nth).map(str::to_owned))
    };
    let running = field("State:", 0).is_some_and(|s| s != "Z" && s != "X");
    running && field("Uid:", 1).and_then(|u| u.parse::<u32>().ok()) == Some(uid)
}

/// The last producer is gone (per-PID) or the session is destroyed: flush, recover
/// what a dead producer left, store everything, stop.
#[derive(Message)]
#[rtype(result = "Result<(), FlushError>")]
pub struct Teardown;

/// Copy what every ring holds, the partly filled sub-buffers included (each ring is
/// flushed first), without taking it: the set's part of `snapshot record`.
#[derive(Message)]
#[rtype(result = "SetSnapshot")]
pub struct TakeSnapshot {
    /// Most bytes kept per stream: its newest packets that fit (all if `None`).
    pub max_stream_bytes: Option<u64>,
    /// The set's producer is gone (a dead app's per-PID set kept for this snapshot):
    /// a reservation it died inside becomes a lost event, so its packet is included.
    pub owner_gone: bool,
}

/// What [`TakeSnapshot`] copied.
#[derive(Debug, Default)]
pub struct SetSnapshot {
    /// Per ring (CPU), its packets oldest first, each one exact CTF packet.
    pub streams: Vec<Vec<Vec<u8>>>,
    /// Packets the rings counted overwritten since the set was made.
    pub overwritten: u64,
    /// Packets left out: overwritten during their copy, or past `max_stream_bytes`.
    pub left_out: u64,
}

impl BufferSet {
    /// A set over `buffers`, written by apps of `owner_uid`, draining into `writers`
    /// (one per ring).
    pub fn new(
        label: String,
        owner_uid: u32,
        buffers: Arc<ChannelBuffers>,
        writers: StreamWriters,
        metadata: Arc<Mutex<Metadata>>,
        flush_interval: Duration,
        stats: Arc<Stats>,
    ) -> BufferSet {
        let corruption_counted = vec![false; buffers.rings().len()];
        // Counted from creation to drop, so `status` never misses a set not yet started.
        Stats::add(&stats.buffer_sets, 1);
        BufferSet {
            label,
            consumers: buffers.consumers(),
            buffers,
            writers,
            metadata,
            owner_uid,
            corruption_counted,
            producer_died: false,
            holders: Holders::default(),
            dead_pending: false,
            flush_interval,
            snapshot: false,
            overwritten: 0,
            stats,
        }
    }

    /// The set of a snapshot session: it never drains to its writers (they stay
    /// unstarted, so no file is made); only [`TakeSnapshot`] reads its rings.
    pub fn for_snapshots(mut self) -> BufferSet {
        self.snapshot = true;
        self
    }

    /// Hands complete packets of every ring to its writer (see [`take`]; copied
    /// when the pass frees the rings, so that a teardown frees its rings at once):
    /// while the writer's backlog is under its limit in a pass while tracing, every
    /// one otherwise (flush and teardown, which must leave the rings empty, and add
    /// at most one ring's worth to the backlog). Either way at most a ring's worth of
    /// sub-buffers from each ring per call (all a ring holds at once), so that
    /// producers refilling a ring as fast as it drains (or an app forging complete
    /// packets) never keep this actor's thread. Returns whether a ring still had
    /// packets at that bound: a caller that drains while tracing drains again after
    /// the other actors of its thread had their turn.
    fn drain(&mut self, pass: Pass) -> bool {
        if self.snapshot {
            self.count();
            return false;
        }
        let metadata = match self.metadata.lock() {
            Ok(m) => m.clone(),
            Err(_) => return false,
        };
        let (bounded, free_rings) = match pass {
            Pass::WakeUp | Pass::Tick => (true, false),
            Pass::Flush { free_rings } => (false, free_rings),
        };
        let mut more = false;
        for (index, consumer) in self.consumers.iter_mut().enumerate() {
            // Stored leases go back even when the writer takes nothing more.
            consumer.release_stored();
            if pass == Pass::WakeUp && waits_for_the_next(consumer) {
                continue;
            }
            let budget = consumer.ring().geometry().num_subbuf;
            let mut taken = 0;
            while taken < budget && (!bounded || self.writers.accepts(index)) {
                let Some(packet) = take(consumer, free_rings, &self.label) else {
                    break;
                };
                taken += 1;
                self.writers.send(index, metadata.clone(), packet);
            }
            more |= taken == budget;
        }
        self.count();
        more
    }

    /// Drains (`pass`: a wake-up or a tick), and goes on in a later message while
    /// packets remain.
    fn drain_on(&mut self, pass: Pass, ctx: &mut Context<Self>) {
        if self.drain(pass) {
            ctx.notify(Drain);
        }
    }

    /// Adds what the rings counted since the last call (checked by their consumers)
    /// to the daemon's and the owner's totals; logs and counts a ring newly found
    /// corrupt, once.
    fn count(&mut self) {
        let mut losses = UidLosses::default();
        let mut unrecorded = 0u64;
        for (cpu, consumer) in self.consumers.iter_mut().enumerate() {
            let deltas = consumer.counter_deltas();
            unrecorded = unrecorded.saturating_add(deltas.unrecorded_reservations);
            let sum = |a: &mut u64, b: u64| *a = a.saturating_add(b);
            sum(
                &mut losses.events_discarded,
                deltas.discarded_full.saturating_add(deltas.too_big),
            );
            sum(&mut losses.packets_overwritten, deltas.overwritten_packets);
            sum(&mut self.overwritten, deltas.overwritten_packets);
            sum(
                &mut losses.events_lost_dead_producer,
                deltas.lost_dead_producer,
            );
            if let Some(corruption) = consumer.corruption()
                && !self.corruption_counted[cpu]
            {
                self.corruption_counted[cpu] = true;
                log::error!(
                    "{} ring {cpu} (owner uid {}): corrupt ring, {} unread packets dropped and \
                     nothing more read from it: {}",
                    self.label,
                    self.owner_uid,
                    corruption.packets_dropped,
                    corruption.reason
                );
                losses.corrupt_rings += 1;
                sum(
                    &mut losses.packets_lost_corrupt_ring,
                    corruption.packets_dropped,
                );
            }
        }
        self.stats.count_ring_losses(self.owner_uid, &losses);
        Stats::add(&self.stats.unrecorded_reservations, unrecorded);
    }

    /// Fills the reservations of dead holders with lost events; remembers whether
    /// some could not be resolved yet.
    fn release_dead_holders(&mut self) {
        let alive = |pid| self.holders.alive(pid);
        let mut pending = 0;
        for consumer in &mut self.consumers {
            pending += consumer.release_dead_holders(&alive).pending;
        }
        self.dead_pending = pending > 0;
        if !self.dead_pending {
            self.holders.dead.clear();
        }
    }

    /// The fallback: gives up sub-buffers that stayed incomplete with no commit since
    /// the previous call and no live holder inside.
    fn give_up_stuck(&mut self) {
        let alive = |pid| self.holders.alive(pid);
        for consumer in &mut self.consumers {
            consumer.give_up_stuck(&alive);
        }
    }

    /// LTTng's switch timer: closes the partly filled packet of every ring whose
    /// writer takes packets, so that a live app's events reach the disk within two
    /// flush intervals. A packet is open only once an event reserved in it, so a ring
    /// idle since the last switch is left alone (nothing to close). Racing producers
    /// are safe: the switch is a CAS of `write` to the next sub-buffer, the packet is
    /// complete only once every reservation in it committed, and its end time is read
    /// before the CAS (docs/shm.md, "Periodic flush"). A stream over its backlog limit
    /// is skipped: its packets would stay in the ring anyway. A snapshot session's
    /// rings are not switched (each switch would cut the flight recorder's capacity
    /// with a short packet): `snapshot record` switches them itself.
    fn switch_partial(&mut self) {
        if self.snapshot {
            return;
        }
        for (index, consumer) in self.consumers.iter_mut().enumerate() {
            if self.writers.accepts(index) {
                consumer.flush();
            }
        }
    }

    /// Switches out every partial sub-buffer and drains (copying when `free_rings`,
    /// see [`take`]); then the answer waits for every writer to confirm.
    fn flush_all(
        &mut self,
        free_rings: bool,
    ) -> impl Future<Output = Result<(), FlushError>> + 'static {
        for consumer in &mut self.consumers {
            consumer.flush();
        }
        self.drain(Pass::Flush { free_rings });
        sync_writers(self.writers.started().cloned().collect())
    }
}

/// What a drain is for.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Pass {
    /// A producer completed a packet, or the writer made room: bounded by the
    /// writer's backlog, and a lone complete packet may wait for the next one
    /// ([`waits_for_the_next`]).
    WakeUp,
    /// The switch timer, the stuck-packet timer or a producer's death: bounded,
    /// every complete packet (the timer's drain bounds how late a packet waits).
    Tick,
    /// A flush, a rotation's chunk or a teardown: every packet, copied when
    /// `free_rings` (see [`take`]).
    Flush {
        /// The rings are freed once drained.
        free_rings: bool,
    },
}

/// Whether a wake-up drain leaves the ring's one complete packet for the next one
/// to join it, so that the writer stores both in one write (one request to the
/// device per two sub-buffers: the daemon's CPU per MB stored falls by about a
/// third, docs/performance.md "Drain"). Only in discard mode, with at least four
/// sub-buffers and none leased: producers still have two free ones and the one
/// they fill, and the next completion (its wake-up) or the switch timer's drain,
/// within `flush_interval_ms`, takes it.
fn waits_for_the_next(consumer: &Consumer) -> bool {
    consumer.ring().mode() == Mode::Discard
        && consumer.ring().geometry().num_subbuf >= 4
        && consumer.leases_out() == 0
        && consumer.complete_waiting(2) == 1
}

/// The oldest complete packet of `consumer`'s ring for its writer: leased in place
/// in discard mode (stored from the mapping; no producer touches the slot until it
/// is given back), copied out in overwrite mode (a producer may reuse the slot at
/// any time), and copied too when `free_rings` (a teardown: its rings are freed as
/// soon as their packets are queued, so that dead apps waiting for a busy disk
/// hold no memfds nor mappings; a short-lived app's packet is its few bytes of
/// content) unless leases are out already (packets after them wait for them).
/// `label` names the set in the log of a bad packet, which is dropped.
fn take(consumer: &mut Consumer, free_rings: bool, label: &str) -> Option<DrainedPacket> {
    let copy = free_rings && consumer.leases_out() == 0;
    match consumer.ring().mode() {
        Mode::Discard if !copy => consumer.lease_packet().map(DrainedPacket::Leased),
        _ => loop {
            let mut bytes = Vec::new();
            consumer.take_packet(&mut bytes)?;
            match packet::trim(&mut bytes) {
                Ok(()) => return Some(DrainedPacket::Copied(bytes)),
                Err(e) => log::error!("{label}: dropping a bad packet: {e}"),
            }
        },
    }
}

/// Ends the trace chunk the set writes (a rotation, `ustrace rotate` or `clear`):
/// every ring's partly filled packet is closed, every packet before that point is
/// taken into the writers of the chunk (waiting, at most [`CHUNK_WAIT`], for
/// producers still committing into one), those writers are synced and let go, and
/// the next packets go to writers in `next`. Each packet thus goes to exactly one
/// chunk, and producers never wait. Answers once the chunk's writers stored all.
#[derive(Message)]
#[rtype(result = "Result<(), FlushError>")]
pub struct Rotate {
    /// The directory of the next chunk of the set's trace.
    pub next: TraceDir,
}

/// Drops everything the rings hold (`clear` of a snapshot session): every packet,
/// the partly filled ones closed first.
#[derive(Message)]
#[rtype(result = "()")]
pub struct EmptyRings;

impl BufferSet {
    /// Drains; says whether every packet before `boundaries` (one per ring, from
    /// [`Consumer::close_chunk`]) left the rings.
    fn chunk_taken(&mut self, boundaries: &[Option<u64>]) -> bool {
        self.drain(Pass::Flush { free_rings: false });
        self.consumers
            .iter_mut()
            .zip(boundaries)
            .all(|(consumer, b)| b.is_none_or(|b| consumer.taken_to(b)))
    }

    /// Moves the streams to `next` and syncs the writers of the chunk that ends.
    fn switch_chunk(&mut self, next: &TraceDir) -> ResponseActFuture<Self, Result<(), FlushError>> {
        Box::pin(fut::wrap_future(sync_writers(
            self.writers.next_chunk(next),
        )))
    }

    /// Polls until the chunk's packets are all taken (or [`CHUNK_WAIT`] passed),
    /// then switches.
    fn rotate_when_taken(
        boundaries: Vec<Option<u64>>,
        next: TraceDir,
        deadline: Instant,
    ) -> ResponseActFuture<Self, Result<(), FlushError>> {
        Box::pin(
            fut::wrap_future::<_, Self>(actix::clock::sleep(CHUNK_POLL)).then(move |(), act, _| {
                if act.chunk_taken(&boundaries) {
                    return act.switch_chunk(&next);
                }
                if Instant::now() >= deadline {
                    log::warn!(
                        "{}: a producer is still inside a reservation after {} ms; its \
                             packet goes to the next trace chunk",
                        act.label,
                        CHUNK_WAIT.as_millis()
                    );
                    return act.switch_chunk(&next);
                }
                BufferSet::rotate_when_taken(boundaries, next, deadline)
            }),
        )
    }
}

impl Handler<Rotate> for BufferSet {
    type Result = ResponseActFuture<Self, Result<(), FlushError>>;

    fn handle(&mut self, msg: Rotate, _: &mut Context<Self>) -> Self::Result {
        let boundaries: Vec<Option<u64>> = self
            .consumers
            .iter_mut()
            .map(Consumer::close_chunk)
            .collect();
        if self.chunk_taken(&boundaries) {
            return self.switch_chunk(&msg.next);
        }
        BufferSet::rotate_when_taken(boundaries, msg.next, Instant::now() + CHUNK_WAIT)
    }
}

impl Handler<EmptyRings> for BufferSet {
    type Result = ();

    fn handle(&mut self, _: EmptyRings, _: &mut Context<Self>) {
        let mut bytes = Vec::new();
        for consumer in &mut self.consumers {
            consumer.flush();
            let budget = consumer.ring().geometry().num_subbuf;
            for _ in 0..budget {
                if consumer.take_packet(&mut bytes).is_none() {
                    break;
                }
            }
        }
        self.count();
    }
}

/// Syncs `writers`, holding their addresses until every one answered: actix stops
/// an actor whose mailbox has no sender left once it is idle, and one idle between
/// two of its own notifications may then stop with the sync still queued (a chunk's
/// writers are let go as they are synced, a torn-down set's with the set).
async fn sync_writers(writers: Vec<Addr<Writer>>) -> Result<(), FlushError> {
    let syncs: Vec<_> = writers.iter().map(|w| w.send(SyncWriter)).collect();
    let result = all_ok(syncs).await;
    drop(writers);
    result
}

/// Waits for every request (a flush, a writer sync) and keeps the first error.
pub async fn all_ok<F, E>(requests: Vec<F>) -> Result<(), FlushError>
where
    F: Future<Output = Result<Result<(), E>, MailboxError>>,
    E: Into<FlushError>,
{
    let mut result = Ok(());
    for request in requests {
        let outcome = match request.await {
            Ok(answer) => answer.map_err(Into::into),
            Err(e) => Err(FlushError::from(e)),
        };
        if result.is_ok() {
            result = outcome;
        }
    }
    result
}

/// Watches the wake-up eventfd and asks the actor to drain on each signal.
async fn watch_wakeups(eventfd: OwnedFd, addr: WeakAddr<BufferSet>) {
    // SAFETY: the AsyncFd owns the OwnedFd, so the descriptor stays open and names
    // the same eventfd until the AsyncFd is dropped, as `register` requires.
    let Ok(fd) = (unsafe { AsyncFd::register_with_interest(eventfd, Interest::READABLE) }) else {
        return;
    };
    loop {
        let Ok(mut guard) = fd.readable().await else {
            return;
        };
        let mut counter = [0u8; 8];
        // Reading resets the eventfd counter; EAGAIN means another wake-up raced us.
        let _ = nix::unistd::read(fd.get_ref().as_fd(), &mut counter);
        guard.clear_ready();
        match addr.upgrade() {
            Some(addr) => addr.do_send(Drain),
            None => return,
        }
    }
}

impl Actor for BufferSet {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        match self.buffers.wakeup().as_fd().try_clone_to_owned() {
            Ok(fd) => {
                ctx.spawn(watch_wakeups(fd, ctx.address().downgrade()).into_actor(self));
            }
            Err(e) => log::warn!("{}: no wake-ups ({e}); draining on the timer", self.label),
        }
        self.writers
            .notify_room(ctx.address().downgrade().recipient());
        ctx.run_interval(self.flush_interval, |act, ctx| {
            if act.dead_pending {
                act.release_dead_holders();
            }
            act.switch_partial();
            act.drain_on(Pass::Tick, ctx);
        });
        ctx.run_interval(STUCK_AFTER, |act, ctx| {
            if act.producer_died {
                act.release_dead_holders();
                act.give_up_stuck();
                act.drain_on(Pass::Tick, ctx);
            }
        });
    }
}

impl Drop for BufferSet {
    fn drop(&mut self) {
        Stats::sub(&self.stats.buffer_sets);
    }
}

impl Handler<Drain> for BufferSet {
    type Result = ();

    fn handle(&mut self, _: Drain, ctx: &mut Context<Self>) {
        self.drain_on(Pass::WakeUp, ctx);
    }
}

impl Handler<BacklogRoom> for BufferSet {
    type Result = ();

    fn handle(&mut self, _: BacklogRoom, ctx: &mut Context<Self>) {
        self.drain_on(Pass::WakeUp, ctx);
    }
}

impl Handler<Flush> for BufferSet {
    type Result = ResponseFuture<Result<(), FlushError>>;

    fn handle(&mut self, _: Flush, _: &mut Context<Self>) -> Self::Result {
        Box::pin(self.flush_all(false))
    }
}

impl Handler<TakeSnapshot> for BufferSet {
    type Result = MessageResult<TakeSnapshot>;

    fn handle(&mut self, msg: TakeSnapshot, _: &mut Context<Self>) -> Self::Result {
        let dead = |_| false;
        let mut snapshot = SetSnapshot::default();
        for consumer in &mut self.consumers {
            consumer.flush();
            if msg.owner_gone {
                consumer.release_dead_holders(&dead);
            }
            let mut packets = Vec::new();
            snapshot.left_out += consumer.snapshot(&mut packets);
            packets.retain_mut(|p| match packet::trim(p) {
                Ok(()) => true,
                Err(e) => {
                    log::error!("{}: snapshot leaves out a bad packet: {e}", self.label);
                    false
                }
            });
            if let Some(max) = msg.max_stream_bytes {
                let kept = newest_within(&packets, max);
                snapshot.left_out += (packets.len() - kept) as u64;
                packets.drain(..packets.len() - kept);
            }
            snapshot.streams.push(packets);
        }
        self.count();
        snapshot.overwritten = self.overwritten;
        MessageResult(snapshot)
    }
}

/// How many of the newest `packets` fit in `max` bytes together.
fn newest_within(packets: &[Vec<u8>], max: u64) -> usize {
    let mut total = 0u64;
    packets
        .iter()
        .rev()
        .take_while(|p| {
            total = total.saturating_add(p.len() as u64);
            total <= max
        })
        .count()
}

impl Handler<ProducerDied> for BufferSet {
    type Result = ();

    fn handle(&mut self, msg: ProducerDied, _: &mut Context<Self>) {
        self.producer_died = true;
        self.holders.uid = Some(msg.uid);
        self.holders.live = msg.live.into_iter().collect();
        self.holders.dead.insert(msg.pid);
        let live = &self.holders.live;
        self.holders.dead.retain(|pid| !live.contains(pid));
        // At once: the dead app's reservations complete their packets now, so the
        // live apps sharing the rings lose nothing.
        self.release_dead_holders();
        self.drain(Pass::Tick);
    }
}

impl Handler<Teardown> for BufferSet {
    type Result = ResponseFuture<Result<(), FlushError>>;

    fn handle(&mut self, _: Teardown, ctx: &mut Context<Self>) -> Self::Result {
        // No producer is left: every holder is dead. Their reservations become lost
        // events; whatever is still incomplete never will be: the first call notes
        // incomplete packets, the second gives up those that did not move, which
        // none can any more.
        let dead = |_| false;
        for consumer in &mut self.consumers {
            consumer.flush();
            consumer.release_dead_holders(&dead);
            consumer.give_up_stuck(&dead);
            consumer.give_up_stuck(&dead);
        }
        // Every packet is now copied into the writers' queues (but those behind a
        // lease still out, which keeps its ring mapped until it is stored): stop at
        // once, so the rings (memfds, mappings, eventfd) are freed now and not when
        // a busy disk has caught up. The writers stay addressable, hence
        // restartable, until they confirm.
        let synced = self.flush_all(true);
        let writers: Vec<Addr<Writer>> = self.writers.started().cloned().collect();
        ctx.stop();
        Box::pin(async move {
            let result = synced.await;
            drop(writers);
            result
        })
    }
}
