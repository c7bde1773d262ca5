//! The producer's fast path: [`Ring::reserve`], [`Reservation::commit`] and
//! [`Ring::write_event`], everything an event costs when its packet has room. What a
//! packet switch, a full ring, a too-big event, a new thread or a dropped reservation
//! costs is in `super::slow_path` (`#[cold]`), so that this file reads in a minute.
//!
//! Every producer thread holds a record in the ring's holder table (claimed once per
//! ring, by a CAS of its `pid << 32 | tid` into a free owner word; released when the
//! thread exits) and, around each reservation, stores there the write position its
//! CAS expects, the length and the clock value, then clears the length after the
//! commit: plain stores, no system call, no lock. The daemon reads the table to
//! learn who is inside a reservation (see [`super::Consumer::release_dead_holders`]).
//!
//! Linearization points (marked `LP` below and in `super::slow_path`; the sub-buffer
//! states they move between are in the `shm` module doc):
//! - the reservation CAS on `(write, time)` (a reservation exists, its bytes are its own);
//! - the packet-open commit (the header's open half is published);
//! - each event commit (the event is published);
//! - the close commit (the packet's padding and close half are published);
//! - on the consumer side, its take (`consumed` CAS, `super::Consumer::take_packet`).
//!
//! Tests stop a producer exactly after the CAS, before the packet-open commit and
//! before the close commit through [`super::hooks`] (cargo feature
//! `linearization-hooks`; without it the hook calls compile to nothing).

use std::cell::Cell;
use std::mem::ManuallyDrop;
use std::sync::atomic::Ordering::*;

use super::hooks::{self, Point};
use super::layout::*;
use super::ring::Ring;
use super::slow_path::{NoRoom, Switch};
use crate::ctf::packet::{
    COMPACT_HEADER_SIZE, COMPACT_ID_LIMIT, COMPACT_TIMESTAMP_BITS, EVENT_HEADER_SIZE,
    PACKET_HEADER_SIZE, write_compact_header, write_event_header,
};

/// One added to the high half of a commit word: one more event committed.
pub(super) const ONE_EVENT: u64 = 1 << 32;

/// How long after the previous event an event may still have a compact header: what
/// its 27 timestamp bits span.
const COMPACT_SPAN: u64 = 1 << COMPACT_TIMESTAMP_BITS;

thread_local! {
    /// This thread's owner word in holder records, `pid << 32 | tid`; 0 until the
    /// thread first reserves (and again in a forked child, see
    /// [`forget_thread_identity`]).
    pub(super) static IDENTITY: Cell<u64> = const { Cell::new(0) };
}

/// This thread's owner word, computed on its first reservation.
#[inline]
fn identity() -> u64 {
    let me = IDENTITY.with(Cell::get);
    if me != 0 {
        return me;
    }
    let me = (nix::unistd::getpid().as_raw() as u64) << 32
        | u64::from(nix::unistd::gettid().as_raw() as u32);
    IDENTITY.with(|c| c.set(me));
    me
}

/// Makes the calling thread (a forked child's only thread) compute its owner word
/// again: the inherited one is the parent thread's, whose records are not the child's.
/// One thread-local store, so it is safe in a `pthread_atfork` child handler.
pub(crate) fn forget_thread_identity() {
    IDENTITY.with(|c| c.set(0));
}

/// Space reserved for one event; [`Reservation::commit`] publishes it.
///
/// Dropped without a commit (a panic inside a field encoder), it fills its bytes
/// with one lost event, commits that and counts it in the ring's
/// `abandoned_reservations`: a live process never leaves a packet open. Not
/// committing because the process dies here stalls the packet until the daemon sees
/// the holder dead and fills the reservation the same way, see
/// [`super::Consumer::release_dead_holders`].
#[must_use = "a reservation dropped without commit becomes a lost event"]
pub struct Reservation<'a> {
    /// The ring reserved in.
    pub(super) ring: &'a Ring,
    /// Byte position of the event.
    pub(super) pos: u64,
    /// Length reserved.
    pub(super) len: u64,
    /// Clock read inside the reserve loop: later positions never have earlier times.
    pub(super) timestamp: u64,
    /// This thread's holder record, cleared at commit; `None` if the table was full.
    pub(super) record: Option<usize>,
}

impl Reservation<'_> {
    /// The timestamp to record: taken with the reservation so that it orders with it.
    #[inline]
    pub fn timestamp(&self) -> u64 {
        self.timestamp
    }

    /// Byte position in the stream (free-running), for tests and diagnostics.
    pub fn position(&self) -> u64 {
        self.pos
    }

    /// The reserved bytes.
    #[inline]
    pub fn buf(&mut self) -> &mut [u8] {
        let at = self.ring.data_index(self.pos);
        // SAFETY: the successful CAS in `reserve` gave this reservation `pos..pos+len`
        // alone; no consumer reads it before the packet is complete, which needs our
        // commit; it never crosses a sub-buffer end (len <= max_event_len).
        unsafe { self.ring.map.slice_mut(at, self.len as usize) }
    }

    /// Publishes the event; wakes the consumer if it completes the packet.
    #[inline]
    pub fn commit(self) {
        // Committed here, so the drop's lost-event fill must not run.
        let this = ManuallyDrop::new(self);
        // LP: the event commit. The event is published to the consumer once its
        // packet's word reads complete.
        this.ring.commit(this.pos, this.len + ONE_EVENT);
        this.clear_record();
    }

    /// Marks the holder record free for the thread's next reservation.
    #[inline]
    pub(super) fn clear_record(&self) {
        if let Some(record) = self.record {
            // Relaxed: only a dead holder's record is acted on, and a death orders
            // all its stores before the daemon hears of it (see docs/shm.md).
            self.ring.record_word(record, RECORD_LEN).store(0, Relaxed);
        }
    }
}

impl Drop for Reservation<'_> {
    /// Not committed: a counted lost event takes the reservation's place.
    fn drop(&mut self) {
        self.abandon();
    }
}

impl Ring {
    /// Records one event: header (id, timestamp) then `payload_len` bytes written by
    /// `encode`. Returns false if the event was dropped (and counted). A panic in
    /// `encode` leaves a lost event in its place (see [`Reservation`]).
    ///
    /// The header is compact (4 bytes instead of 13, see [`crate::ctf::packet`]) when
    /// the id allows it and the timestamp is less than 2^27 ns after the previous
    /// event's (the ring's `time` word).
    #[inline]
    pub fn write_event(&self, id: u32, payload_len: usize, encode: impl FnOnce(&mut [u8])) -> bool {
        let compact = (id < COMPACT_ID_LIMIT).then_some(COMPACT_HEADER_SIZE + payload_len);
        let Some(mut r) = self.reserve_with(EVENT_HEADER_SIZE + payload_len, compact) else {
            return false;
        };
        let ts = r.timestamp();
        let header_len = r.len as usize - payload_len;
        let buf = r.buf();
        if header_len == COMPACT_HEADER_SIZE {
            write_compact_header(buf, id, ts);
        } else {
            write_event_header(buf, id, ts);
        }
        encode(&mut buf[header_len..]);
        r.commit();
        true
    }

    /// Reserves `len` bytes for one event, switching packets when needed; `None` when
    /// the event is dropped (counted as too big or discarded). For a caller that
    /// writes the event's (extended) header itself: it should reserve at least
    /// [`EVENT_HEADER_SIZE`] and the stream's event context, as every event of
    /// [`Ring::write_event`] does. A shorter reservation left uncommitted is filled
    /// with a compact lost event, whose timestamp is right only if it comes less than
    /// 2^27 ns after the previous event's.
    #[inline]
    pub fn reserve(&self, len: usize) -> Option<Reservation<'_>> {
        self.reserve_with(len, None)
    }

    /// [`Ring::reserve`] of `len` bytes, or of `compact` bytes when the clock read
    /// inside the loop is close enough to the previous event's for a compact header.
    /// The bound is checked on `len`, the longer.
    ///
    /// Time order is position order by construction: the CAS moves `write` and sets
    /// `time` together (a 16-byte pair), and the timestamp it sets is the clock read
    /// or the pair's `time`, whichever is later. So a clock read early (`rdtsc` may
    /// run before the load of `write` completes) or on a CPU whose TSC lags by a few
    /// ns costs order nothing, and the time since the previous event is exact.
    #[inline]
    fn reserve_with(&self, len: usize, compact: Option<usize>) -> Option<Reservation<'_>> {
        let full = len as u64;
        if full > self.geometry.max_event_len() {
            self.count_too_big();
            return None;
        }
        let sb = self.geometry.subbuf_size;
        let record = self.record();
        let (mut old, mut last) = self.write_and_time();
        loop {
            let timestamp = self.clock.now().max(last);
            let len = match compact {
                Some(c) if timestamp - last < COMPACT_SPAN => c as u64,
                _ => full,
            };
            let off = old & (sb - 1);
            let (pos, switch) = if off == 0 {
                (old + PACKET_HEADER_SIZE as u64, Switch::Open(old))
            } else if off + len >= sb {
                let next = old - off + sb;
                (
                    next + PACKET_HEADER_SIZE as u64,
                    Switch::CloseOpen(old, next),
                )
            } else {
                (old, Switch::None)
            };
            if let Switch::Open(p) | Switch::CloseOpen(_, p) = switch {
                match self.make_room(p) {
                    Ok(()) => {}
                    Err(NoRoom::Retry) => {
                        (old, last) = self.write_and_time();
                        continue;
                    }
                    Err(NoRoom::Full) => {
                        self.count_full(record);
                        return None;
                    }
                }
            }
            if let Some(record) = record {
                // What the daemon needs should we die from here to the commit. Relaxed:
                // the CAS below (Release) publishes them with the position they name.
                self.record_word(record, RECORD_TIMESTAMP)
                    .store(timestamp, Relaxed);
                self.record_word(record, RECORD_AT).store(old, Relaxed);
                self.record_word(record, RECORD_LEN).store(len, Relaxed);
            }
            // LP: the reservation CAS. From here `pos..pos + len` is this producer's
            // alone, and the packet it is in cannot complete without its commit.
            match self.cas_write_time((old, last), (pos + len, timestamp)) {
                Ok(_) => {
                    hooks::reached(Point::AfterCas);
                    if !matches!(switch, Switch::None) {
                        self.switch_packets(switch, timestamp, pos, record);
                    }
                    return Some(Reservation {
                        ring: self,
                        pos,
                        len,
                        timestamp,
                        record,
                    });
                }
                Err(current) => (old, last) = current,
            }
        }
    }

    /// This thread's holder record in this ring, free for a new reservation: two
    /// loads and compares once claimed.
    #[inline]
    fn record(&self) -> Option<usize> {
        let me = identity();
        let home = (me as u32 as usize) % RECORDS;
        if self.record_word(home, RECORD_OWNER).load(Relaxed) == me {
            return self.unless_nested(home);
        }
        self.claim_record(me)
    }

    /// `Some(index)`, unless the record holds a reservation already: this one is
    /// nested in it (an event emitted by a signal handler), and the outer one keeps
    /// the record; the nested one goes unrecorded (counted).
    #[inline]
    pub(super) fn unless_nested(&self, index: usize) -> Option<usize> {
        if self.record_word(index, RECORD_LEN).load(Relaxed) == 0 {
            return Some(index);
        }
        self.count_unrecorded();
        None
    }

    /// Adds `amount` (bytes in the low half, events in the high half) to the commit
    /// word of the packet holding `pos`; signals the consumer if that completes it.
    #[inline]
    pub(super) fn commit(&self, pos: u64, amount: u64) {
        let word = self.commit_word(pos);
        // Release: our writes to the packet happen before the consumer's Acquire load
        // that sees the packet complete (a chain of RMWs continues release sequences).
        let after = word.fetch_add(amount, Release).wrapping_add(amount);
        if after as u32 == self.complete_bytes(pos) {
            self.wakeup.signal();
        }
    }
}
