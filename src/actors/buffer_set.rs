//! BufferSet: the rings of one (session, channel, owner) and the drain into writers.
//!
//! Owner is a uid (per-UID: shared by all that uid's apps, lives as long as the
//! session) or a pid (per-PID: lives as long as the app). The actor drains complete
//! sub-buffers when a producer signals the wake-up eventfd (once per sub-buffer) and on
//! a timer, and hands each packet, padding trimmed, to the stream's Writer. Packets
//! are copied out before the sub-buffer is given back, so a slow disk never holds a
//! producer. The writer's queue is bounded: past `limits.max_writer_backlog_bytes`
//! not yet stored, the set leaves that stream's packets in its ring, whose producers
//! then discard new events (counted, `events discarded` in status) until the writer
//! catches up; a slow or failed writer never grows the daemon's heap. The writer's
//! side tells the set ([`BacklogRoom`]) when the backlog falls back under the
//! limit, and the set drains at once (a full ring sends no wake-up).
//!
//! What happens when an app dies: per-PID, [`Teardown`] flushes every ring (partial
//! sub-buffers too), gives up the packet a producer died inside (its events counted
//! lost), drains, syncs the writers and stops; dropping the last reference unmaps and
//! closes the memfds. Per-UID, [`ProducerDied`] makes the timer look for sub-buffers
//! that a dead producer left incomplete, so that the ring never stalls for the live
//! apps that share it.

use crate::actors::stats::Stats;
use crate::actors::writer::{BacklogRoom, Metadata, StreamWriters, SyncWriter, Writer};
use crate::ctf::packet;
use crate::shm::{ChannelBuffers, Consumer, RingCounters};
use actix::WeakAddr;
use actix::prelude::*;
use std::os::fd::{AsFd, OwnedFd};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::io::Interest;
use tokio::io::unix::AsyncFd;

/// How long a sub-buffer must stay incomplete, with no commit, after a producer of
/// its ring died before it is given up. Far above any live producer's
/// reserve-to-commit time, so only the dead one's packet is given up.
const STUCK_AFTER: Duration = Duration::from_secs(1);

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
    /// Ring counters already added to the daemon stats, per ring.
    counted: Vec<RingCounters>,
    /// Set once a producer of this set died: the timer then recovers stuck packets.
    producer_died: bool,
    /// Drain period for partly filled sub-buffers.
    flush_interval: Duration,
    /// Daemon counters.
    stats: Arc<Stats>,
}

/// Drain complete sub-buffers now (sent by the wake-up watcher).
#[derive(Message)]
#[rtype(result = "()")]
struct Drain;

/// Switch out partial sub-buffers, drain, and answer once the writers stored it all.
#[derive(Message)]
#[rtype(result = "Result<(), String>")]
pub struct Flush;

/// A process that wrote into this set has died.
#[derive(Message)]
#[rtype(result = "()")]
pub struct ProducerDied;

/// The last producer is gone (per-PID) or the session is destroyed: flush, recover
/// what a dead producer left, store everything, stop.
#[derive(Message)]
#[rtype(result = "Result<(), String>")]
pub struct Teardown;

impl BufferSet {
    /// A set over `buffers` draining into `writers` (one per ring).
    pub fn new(
        label: String,
        buffers: Arc<ChannelBuffers>,
        writers: StreamWriters,
        metadata: Arc<Mutex<Metadata>>,
        flush_interval: Duration,
        stats: Arc<Stats>,
    ) -> BufferSet {
        let counted = vec![RingCounters::default(); buffers.rings().len()];
        // Counted from creation to drop, so `status` never misses a set not yet started.
        Stats::add(&stats.buffer_sets, 1);
        BufferSet {
            label,
            consumers: buffers.consumers(),
            buffers,
            writers,
            metadata,
            counted,
            producer_died: false,
            flush_interval,
            stats,
        }
    }

    /// Copies complete packets out of every ring to its writer: while the
    /// writer's backlog is under its limit when `bounded` (the drains while
    /// tracing), every one otherwise (flush and teardown, which must leave the
    /// rings empty, and add at most one ring's worth to the backlog).
    fn drain(&mut self, bounded: bool) {
        let metadata = match self.metadata.lock() {
            Ok(m) => m.clone(),
            Err(_) => return,
        };
        let mut bytes = Vec::new();
        for (index, consumer) in self.consumers.iter_mut().enumerate() {
            while (!bounded || self.writers.accepts(index))
                && consumer.take_packet(&mut bytes).is_some()
            {
                match packet::trim(&mut bytes) {
                    Ok(()) => {
                        self.writers
                            .send(index, metadata.clone(), std::mem::take(&mut bytes))
                    }
                    Err(e) => log::error!("{}: dropping a bad packet: {e}", self.label),
                }
            }
        }
        self.count();
    }

    /// Adds what the rings counted since the last call to the daemon stats.
    fn count(&mut self) {
        for (ring, seen) in self.buffers.rings().iter().zip(self.counted.iter_mut()) {
            let now = ring.counters();
            let s = &self.stats;
            let discarded = |c: &RingCounters| c.discarded_full + c.too_big;
            Stats::add(&s.events_discarded, discarded(&now) - discarded(seen));
            Stats::add(
                &s.packets_overwritten,
                now.overwritten_packets - seen.overwritten_packets,
            );
            Stats::add(
                &s.events_lost_dead_producer,
                now.lost_dead_producer - seen.lost_dead_producer,
            );
            *seen = now;
        }
    }

    /// Gives up sub-buffers that stayed incomplete with no commit since the previous
    /// call: after a producer death, only the dead producer's.
    fn recover(&mut self) {
        for consumer in &mut self.consumers {
            consumer.give_up_stuck();
        }
    }

    /// Switches out every partial sub-buffer and drains; then the answer waits for
    /// every writer to confirm.
    fn flush_all(&mut self) -> impl Future<Output = Result<(), String>> + 'static {
        for consumer in &self.consumers {
            consumer.flush();
        }
        self.drain(false);
        let syncs: Vec<_> = self.writers.started().map(|w| w.send(SyncWriter)).collect();
        all_ok(syncs)
    }
}

/// Waits for every request (a flush, a writer sync) and keeps the first error.
pub async fn all_ok<F>(requests: Vec<F>) -> Result<(), String>
where
    F: Future<Output = Result<Result<(), String>, MailboxError>>,
{
    let mut result = Ok(());
    for request in requests {
        let outcome = request.await.unwrap_or_else(|e| Err(e.to_string()));
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
        ctx.run_interval(self.flush_interval, |act, _| act.drain(true));
        ctx.run_interval(STUCK_AFTER, |act, _| {
            if act.producer_died {
                act.recover();
                act.drain(true);
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

    fn handle(&mut self, _: Drain, _: &mut Context<Self>) {
        self.drain(true);
    }
}

impl Handler<BacklogRoom> for BufferSet {
    type Result = ();

    fn handle(&mut self, _: BacklogRoom, _: &mut Context<Self>) {
        self.drain(true);
    }
}

impl Handler<Flush> for BufferSet {
    type Result = ResponseFuture<Result<(), String>>;

    fn handle(&mut self, _: Flush, _: &mut Context<Self>) -> Self::Result {
        Box::pin(self.flush_all())
    }
}

impl Handler<ProducerDied> for BufferSet {
    type Result = ();

    fn handle(&mut self, _: ProducerDied, _: &mut Context<Self>) {
        self.producer_died = true;
    }
}

impl Handler<Teardown> for BufferSet {
    type Result = ResponseFuture<Result<(), String>>;

    fn handle(&mut self, _: Teardown, ctx: &mut Context<Self>) -> Self::Result {
        // No producer is left: whatever is still incomplete never will be. The
        // first call notes incomplete packets, the second gives up those that did
        // not move, which none can any more.
        for consumer in &mut self.consumers {
            consumer.flush();
            consumer.give_up_stuck();
            consumer.give_up_stuck();
        }
        // Every packet is now copied into the writers' queues: stop at once, so the
        // rings (memfds, mappings, eventfd) are freed now and not when a busy disk
        // has caught up. The writers stay addressable, hence restartable, until
        // they confirm.
        let synced = self.flush_all();
        let writers: Vec<Addr<Writer>> = self.writers.started().cloned().collect();
        ctx.stop();
        Box::pin(async move {
            let result = synced.await;
            drop(writers);
            result
        })
    }
}
