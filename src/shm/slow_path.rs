//! The producer's slow path, out of line (`#[cold]`) so that `super::producer` stays
//! the whole fast path: the packet switch (a packet's close and the next one's open,
//! with the close and open commits), making room for a new packet (the Free check,
//! overwrite mode's push of `consumed`), a thread's first reservation in a ring
//! (claiming a holder record), the drop counters, and the lost event that fills a
//! reservation nobody will commit (dropped by a live producer, or left by a dead one:
//! one encoding, [`Ring::fill_with_lost_event`]).

use std::cell::{Cell, RefCell};
use std::sync::Arc;
use std::sync::atomic::Ordering::*;

use super::hooks::{self, Point};
use super::layout::*;
use super::producer::{IDENTITY, ONE_EVENT, Reservation};
use super::ring::Ring;
use crate::ctf::packet::{
    CLOSE_RANGES, COMPACT_HEADER_SIZE, OPEN_RANGES, PACKET_HEADER_SIZE, PacketClose, PacketOpen,
};

thread_local! {
    /// The records this thread claimed, released when it exits.
    static CLAIMED: RefCell<ClaimedRecords> = const { RefCell::new(ClaimedRecords(Vec::new())) };
}

/// A thread's claimed holder records: the mapping (kept alive so that the release at
/// thread exit never touches an unmapped ring) and the owner word's offset in it.
struct ClaimedRecords(Vec<(Arc<Mapping>, usize)>);

impl Drop for ClaimedRecords {
    fn drop(&mut self) {
        // The identity, not one stored at claim time: in a forked child it differs
        // from the parent's, so the child never frees records its parent's threads use.
        let me = IDENTITY.try_with(Cell::get).unwrap_or(0);
        for (map, owner_at) in &self.0 {
            let _ = map
                .u64_at(*owner_at)
                .compare_exchange(me, 0, Relaxed, Relaxed);
        }
    }
}

/// Whether a reservation also switches packets.
#[derive(Clone, Copy)]
pub(super) enum Switch {
    /// Stays inside the open packet.
    None,
    /// Opens the packet at this position (the write position was on a boundary).
    Open(u64),
    /// Closes the packet that `old` is in and opens the next one.
    CloseOpen(u64, u64),
}

/// Why the next packet cannot be opened yet.
pub(super) enum NoRoom {
    /// The ring is full (or its oldest packet incomplete): drop.
    Full,
    /// `consumed` moved under us: load again.
    Retry,
}

impl Ring {
    /// Finishes the packet switch of a reservation at `pos` whose CAS succeeded:
    /// closes the old packet (Open -> Closed) and opens the new one (Free -> Open),
    /// then tells the holder record the switch is done.
    #[cold]
    pub(super) fn switch_packets(
        &self,
        switch: Switch,
        timestamp: u64,
        pos: u64,
        record: Option<usize>,
    ) {
        match switch {
            Switch::None => return,
            Switch::Open(p) => self.open_packet(p, timestamp),
            Switch::CloseOpen(o, p) => {
                self.close_packet(o, timestamp);
                self.open_packet(p, timestamp);
            }
        }
        if let Some(record) = record {
            // The switch is done: from now on the record reads as a plain
            // reservation at `pos` (inside its packet, not at a boundary).
            self.record_word(record, RECORD_AT).store(pos, Relaxed);
        }
    }

    /// Finds this thread's record away from its home slot, or claims a free one (CAS
    /// 0 -> `me`) and lists it for release at thread exit. `None` (counted) when all
    /// are taken: the thread then reserves without a record.
    #[cold]
    pub(super) fn claim_record(&self, me: u64) -> Option<usize> {
        let home = (me as u32 as usize) % RECORDS;
        let slots = (0..RECORDS).map(|k| (home + k) % RECORDS);
        if let Some(i) = slots
            .clone()
            .find(|&i| self.record_word(i, RECORD_OWNER).load(Relaxed) == me)
        {
            return self.unless_nested(i);
        }
        for i in slots {
            let owner = self.record_word(i, RECORD_OWNER);
            if owner.compare_exchange(0, me, Relaxed, Relaxed).is_ok() {
                self.record_word(i, RECORD_LEN).store(0, Relaxed);
                let at = self.record_offset(i, RECORD_OWNER);
                let listed = CLAIMED.try_with(|c| c.borrow_mut().0.push((self.map.clone(), at)));
                if listed.is_err() {
                    // The thread is exiting: give the record back at once.
                    owner.store(0, Relaxed);
                    break;
                }
                return Some(i);
            }
        }
        self.count_unrecorded();
        None
    }

    /// Counts a reservation made without a holder record.
    #[cold]
    pub(super) fn count_unrecorded(&self) {
        self.map.u64_at(UNRECORDED_AT).fetch_add(1, Relaxed);
    }

    /// Counts an event dropped for exceeding a sub-buffer.
    #[cold]
    pub(super) fn count_too_big(&self) {
        self.map.u64_at(TOO_BIG_AT).fetch_add(1, Relaxed);
    }

    /// Counts an event dropped because the ring is full, and frees the holder record
    /// the attempt had stored into.
    #[cold]
    pub(super) fn count_full(&self, record: Option<usize>) {
        if let Some(record) = record {
            self.record_word(record, RECORD_LEN).store(0, Relaxed);
        }
        self.map.u64_at(DISCARDED_FULL_AT).fetch_add(1, Relaxed);
    }

    /// Checks that the packet at `p` may be opened, i.e. that its slot is Free: its
    /// previous generation is complete and consumed; in overwrite mode, takes a
    /// Complete packet back from the consumer (Complete -> Free, counted overwritten).
    #[cold]
    pub(super) fn make_room(&self, p: u64) -> Result<(), NoRoom> {
        let sb = self.geometry.subbuf_size;
        let ring_len = sb * self.geometry.num_subbuf;
        // Acquire pairs with the previous generation's Release commits: its writers are
        // done before we write the slot again.
        let word = self.commit_word(p).load(Acquire);
        if word as u32 != ((p >> self.ring_shift) * sb) as u32 {
            return Err(NoRoom::Full);
        }
        // Acquire pairs with the Release half of the consumer's CAS: its copy of the
        // slot is done before we overwrite it.
        let consumed = self.consumed_word().load(Acquire);
        if p < consumed + ring_len {
            return Ok(());
        }
        if self.mode == Mode::Discard {
            return Err(NoRoom::Full);
        }
        // Pushing `consumed` past the oldest packet makes a consumer copying it fail its
        // CAS and discard the copy, so we never wait for the reader.
        match self
            .consumed_word()
            .compare_exchange(consumed, consumed + sb, AcqRel, Acquire)
        {
            Ok(_) => {
                self.map.u64_at(OVERWRITTEN_AT).fetch_add(1, Relaxed);
                Ok(())
            }
            Err(_) => Err(NoRoom::Retry),
        }
    }

    /// Writes the open half of the packet header at `p` and commits its bytes.
    fn open_packet(&self, p: u64, timestamp: u64) {
        let open = PacketOpen {
            uuid: self.uuid,
            stream_id: self.stream_id,
            timestamp_begin: timestamp,
            packet_size: self.geometry.subbuf_size,
            seq_num: p >> self.subbuf_shift,
            cpu_id: self.cpu_id,
        };
        let mut header = [0u8; PACKET_HEADER_SIZE];
        open.write(&mut header);
        self.write_header_ranges(p, &header, &OPEN_RANGES);
        hooks::reached(Point::BeforeOpenCommit);
        // LP: the packet-open commit. The header's open half is published with the
        // header's bytes counted in the packet's word.
        self.commit(p, PACKET_HEADER_SIZE as u64);
    }

    /// Closes the packet that position `old` is in: writes the close half of its
    /// header (content ends at `old`) and commits the padding after `old`. The
    /// producer that switches packets calls it, and so does the consumer's flush.
    pub(super) fn close_packet(&self, old: u64, timestamp: u64) {
        let sb = self.geometry.subbuf_size;
        let off = old & (sb - 1);
        let close = PacketClose {
            timestamp_end: timestamp,
            content_size: off,
            events_discarded: self.events_discarded(),
        };
        let mut header = [0u8; PACKET_HEADER_SIZE];
        close.write(&mut header);
        self.write_header_ranges(old - off, &header, &CLOSE_RANGES);
        hooks::reached(Point::BeforeCloseCommit);
        // LP: the close commit. The padding and the close half are published; the
        // packet is Complete once every reservation in it has committed too.
        self.commit(old, sb - off);
    }

    /// Copies the `ranges` of a locally built packet header into the packet at `p`.
    fn write_header_ranges(&self, p: u64, header: &[u8], ranges: &[std::ops::Range<usize>]) {
        let at = self.data_index(p);
        for r in ranges {
            // SAFETY: the opener alone writes OPEN_RANGES and the closer alone writes
            // CLOSE_RANGES of this packet (disjoint bytes), both before their commit,
            // and the consumer reads only after the last commit.
            unsafe { self.map.write(at + r.start, &header[r.clone()]) };
        }
    }

    /// Writes a lost event over the reservation `pos..pos + len` that its holder will
    /// never commit (inside one packet) and commits it as one event: the packet stays
    /// parseable and keeps its other events. The event context (the ring's
    /// `context_len`, known to this process) is zeroed, not left to stale bytes.
    ///
    /// # Safety
    /// `pos..pos + len` is a reservation inside one packet that nobody committed and
    /// nobody else writes: the holder's own (it drops it) or a dead holder's.
    pub(super) unsafe fn fill_with_lost_event(&self, pos: u64, len: u64, timestamp: u64) {
        // SAFETY: by the caller's contract nobody else writes these bytes, and the
        // consumer reads them only after the commit below completes the packet.
        let event = unsafe { self.map.slice_mut(self.data_index(pos), len as usize) };
        if event.len() >= COMPACT_HEADER_SIZE + self.context_len {
            crate::ctf::packet::write_lost_event(event, self.context_len, timestamp);
        } else {
            // Shorter than any event of this stream (only a raw `reserve` makes one):
            // no encoding fits; zeros at least leave no stale bytes.
            event.fill(0);
        }
        self.commit(pos, len + ONE_EVENT);
    }
}

impl Reservation<'_> {
    /// The drop of an uncommitted reservation: a lost event takes its place, is
    /// committed (so the packet completes) and counted in `abandoned_reservations`.
    #[cold]
    pub(super) fn abandon(&mut self) {
        // SAFETY: this reservation's CAS gave it `pos..pos + len` alone, inside one
        // packet (`len <= max_event_len`), and it was not committed: dropping it is
        // the last use of those bytes by their holder.
        unsafe {
            self.ring
                .fill_with_lost_event(self.pos, self.len, self.timestamp)
        };
        self.clear_record();
        self.ring.map.u64_at(ABANDONED_AT).fetch_add(1, Relaxed);
    }
}
