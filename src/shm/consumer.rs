//! The daemon's side of a ring: takes complete packets in order, flushes, and
//! finishes what a dead producer left: its reservations, read from the ring's holder
//! records, are filled with lost events ([`Consumer::release_dead_holders`]); a packet
//! whose holder is unknown is given up ([`Consumer::give_up_stuck`]).

use std::sync::Arc;
use std::sync::atomic::Ordering::*;

use super::Ring;
use super::layout::{RECORD_AT, RECORD_LEN, RECORD_OWNER, RECORD_TIMESTAMP, RECORDS};
use crate::ctf::packet::{EVENT_HEADER_SIZE, PACKET_HEADER_SIZE};

/// One holder record as read from the ring (app-writable: every use is checked).
#[derive(Clone, Copy)]
struct Hold {
    /// Index in the table.
    index: usize,
    /// Owner word as read (`pid << 32 | tid`), to release it only if unchanged.
    owner: u64,
    /// Expected write position, or the event's position once a switch is done.
    at: u64,
    /// Length held (non-zero).
    len: u64,
    /// The holder's clock for that reservation.
    timestamp: u64,
}

/// What [`Consumer::release_dead_holders`] did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct DeadHolders {
    /// Dead reservations filled with a lost event and committed (one lost event each).
    pub filled: u64,
    /// Dead reservations left for a later call: their packet's counts do not match the
    /// records yet (a live holder in the same packet is committing), or the holder died
    /// inside a packet switch (then [`Consumer::give_up_stuck`] takes over).
    pub pending: u64,
}

/// The single consumer of one ring. Not shared: its bookkeeping is local.
pub struct Consumer {
    /// The ring drained.
    ring: Arc<Ring>,
    /// Positions of packets given up and not yet skipped.
    given_up: Vec<u64>,
    /// Incomplete closed packets seen by the last `give_up_stuck` call, with their
    /// commit words: a packet whose word has not moved since is stuck.
    probes: Vec<(u64, u64)>,
    /// Per slot, the commit word when that slot was last released: the event count of
    /// a packet is its word's high half minus this one's.
    released_words: Vec<u64>,
    /// Copies thrown away because a producer overwrote their packet meanwhile.
    copies_discarded: u64,
}

/// What [`Consumer::take_packet`] copied out, besides the bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PacketInfo {
    /// Sequence number of the packet in its stream (its position / sub-buffer size).
    pub seq_num: u64,
}

impl Consumer {
    /// Becomes the consumer of `ring`; there must be only one per ring.
    pub fn new(ring: Arc<Ring>) -> Consumer {
        let slots = ring.geometry().num_subbuf as usize;
        Consumer {
            ring,
            given_up: Vec::new(),
            probes: Vec::new(),
            released_words: vec![0; slots],
            copies_discarded: 0,
        }
    }

    /// The ring drained.
    pub fn ring(&self) -> &Arc<Ring> {
        &self.ring
    }

    /// Copies the oldest unread packet, if it is complete, into `out` and hands its
    /// slot back to producers; skips given-up packets. `out` then holds the packet's
    /// header and content, rounded up to 8 bytes, without the padding after it; its
    /// `packet_size` still names the whole sub-buffer (`ctf::packet::trim` makes the
    /// bytes one exact CTF packet). `None` when no packet is complete; `out` is then
    /// empty.
    ///
    /// Optimistic (seqlock-style): the copy is made without excluding producers, then
    /// `consumed` is CASed past the packet. A failed CAS means an overwrite-mode
    /// producer pushed `consumed` past it and may have written the slot during the
    /// copy: the copy is discarded (that producer counted the packet overwritten) and
    /// the new oldest packet is tried. So producers never wait for, nor drop because
    /// of, the reader. In discard mode no producer moves `consumed`: the CAS succeeds.
    pub fn take_packet(&mut self, out: &mut Vec<u8>) -> Option<PacketInfo> {
        let sb = self.ring.geometry().subbuf_size;
        let mut pos = self.ring.consumed_word().load(Acquire);
        loop {
            // Acquire pairs with every Release commit: the packet's bytes are visible.
            let word = self.ring.commit_word(pos).load(Acquire);
            if word as u32 != self.ring.complete_bytes(pos) {
                // Incomplete, or already reused by a producer that lapped us: only the
                // first means "nothing to take".
                let now = self.ring.consumed_word().load(Acquire);
                if now == pos {
                    out.clear();
                    return None;
                }
                pos = now;
                continue;
            }
            self.given_up.retain(|&p| p >= pos);
            let given_up = self.given_up.iter().position(|&p| p == pos);
            if given_up.is_none() {
                // SAFETY: the copy is used only if the CAS below succeeds, which proves
                // no producer wrote the slot during it (see docs/shm.md, Consumer).
                unsafe { self.ring.copy_packet(pos, out) };
            }
            // Success: no producer pushed `consumed` during the copy, and producers
            // write a slot only after their own push or after seeing `consumed` past
            // it. Release orders the copy before any such write: the producer's
            // Acquire load (or CAS) of `consumed` reads this value or a later one.
            match self
                .ring
                .consumed_word()
                .compare_exchange(pos, pos + sb, AcqRel, Acquire)
            {
                Ok(_) => {
                    self.note_released(pos, word);
                    match given_up {
                        None => return Some(PacketInfo { seq_num: pos / sb }),
                        Some(i) => {
                            self.given_up.swap_remove(i);
                            pos += sb;
                        }
                    }
                }
                Err(now) => {
                    self.copies_discarded += u64::from(given_up.is_none());
                    pos = now;
                }
            }
        }
    }

    /// How many copies `take_packet` discarded because a producer overwrote the packet
    /// during the copy: a diagnostic of how often the reader lost that race (tests use
    /// it to show the race was exercised).
    pub fn copies_discarded(&self) -> u64 {
        self.copies_discarded
    }

    /// Remembers the commit word a slot had when its packet left the ring.
    fn note_released(&mut self, pos: u64, word: u64) {
        let slot = (pos / self.ring.geometry().subbuf_size) % self.ring.geometry().num_subbuf;
        self.released_words[slot as usize] = word;
    }

    /// Closes the partly filled packet (stop, app exit) so that `take_packet` returns
    /// it once its last reservations commit. Returns whether there was one.
    pub fn flush(&self) -> bool {
        self.ring.flush()
    }

    /// Reads the holder table: records of threads inside a reservation, split by
    /// whether `alive` says their process lives; frees dead processes' idle records.
    fn holds(&self, alive: &dyn Fn(i32) -> bool) -> (Vec<Hold>, Vec<Hold>) {
        let (mut live, mut dead) = (Vec::new(), Vec::new());
        for index in 0..RECORDS {
            let owner = self.ring.record_word(index, RECORD_OWNER).load(Relaxed);
            if owner == 0 {
                continue;
            }
            let hold = Hold {
                index,
                owner,
                at: self.ring.record_word(index, RECORD_AT).load(Relaxed),
                len: self.ring.record_word(index, RECORD_LEN).load(Relaxed),
                timestamp: self.ring.record_word(index, RECORD_TIMESTAMP).load(Relaxed),
            };
            match (alive((owner >> 32) as i32), hold.len) {
                (true, 0) => {}
                (true, _) => live.push(hold),
                (false, 0) => self.release(hold),
                (false, _) => dead.push(hold),
            }
        }
        (live, dead)
    }

    /// Frees a dead thread's record, unless someone claimed it meanwhile.
    fn release(&self, hold: Hold) {
        let _ = self
            .ring
            .record_word(hold.index, RECORD_OWNER)
            .compare_exchange(hold.owner, 0, Relaxed, Relaxed);
    }

    /// The packet of a record that names a plain reservation (inside one packet,
    /// after its header, an event long at least), or `None` (a holder that died
    /// inside a packet switch, or a lying record).
    fn plain_packet(&self, hold: &Hold) -> Option<u64> {
        let g = self.ring.geometry();
        let off = hold.at & (g.subbuf_size - 1);
        let plain = off >= PACKET_HEADER_SIZE as u64
            && hold.len >= EVENT_HEADER_SIZE as u64
            && hold.len <= g.max_event_len()
            && off + hold.len < g.subbuf_size;
        plain.then_some(hold.at - off)
    }

    /// Fills every reservation whose holder is dead (`alive(pid)` false: the daemon
    /// passes "a live registered connection of this ring's uid") with a lost event and
    /// commits it, so that the packet completes with all its other events, at once,
    /// open or closed. Counts one lost event per filled reservation.
    ///
    /// Records are app-writable, so a reservation is filled only when the packet's
    /// own counts agree: its bytes reserved and not committed equal exactly the
    /// lengths its dead and live holders claim. A record left from a reservation
    /// already committed, or one that never got its CAS, is freed instead; a
    /// mismatch is retried by the next call (a live holder is finishing).
    pub fn release_dead_holders(&mut self, alive: &dyn Fn(i32) -> bool) -> DeadHolders {
        let g = self.ring.geometry();
        let sb = g.subbuf_size;
        let ring_len = sb * g.num_subbuf;
        // Acquire: every record stored before a CAS that made `write` this value (or
        // an earlier one) is visible to the loads in `holds`.
        let write = self.ring.write_word().load(Acquire);
        let (live, mut dead) = self.holds(alive);
        let consumed = self.ring.consumed_word().load(Acquire);
        let mut outcome = DeadHolders::default();
        dead.sort_by_key(|h| h.at);
        let mut packets: Vec<u64> = dead.iter().filter_map(|h| self.plain_packet(h)).collect();
        packets.dedup();
        for hold in dead.iter().filter(|h| self.plain_packet(h).is_none()) {
            if hold.at < consumed || hold.at >= write {
                self.release(*hold);
            } else {
                outcome.pending += 1;
            }
        }
        for p in packets {
            let in_p = |h: &&Hold| self.plain_packet(h) == Some(p);
            let holes: Vec<Hold> = dead.iter().filter(in_p).copied().collect();
            let stale = p < consumed
                || holes.iter().any(|h| h.at.saturating_add(h.len) > write)
                || p.saturating_add(sb) > consumed.saturating_add(ring_len);
            if stale {
                holes.iter().for_each(|h| self.release(*h));
                continue;
            }
            // Acquire pairs with the Release commits: the count covers their bytes.
            let word = self.ring.commit_word(p).load(Acquire);
            if self.ring.write_word().load(Acquire) != write {
                // A reservation since: its commit may be in `word`. Next call.
                outcome.pending += holes.len() as u64;
                continue;
            }
            let base = self.ring.complete_bytes(p).wrapping_sub(sb as u32);
            let committed = u64::from((word as u32).wrapping_sub(base));
            let reserved = (write - p).min(sb);
            let claimed: u64 = holes.iter().map(|h| h.len).sum::<u64>()
                + live.iter().filter(in_p).map(|h| h.len).sum::<u64>();
            if committed >= reserved {
                // Everything reserved is committed: the records are left over.
                holes.iter().for_each(|h| self.release(*h));
            } else if reserved - committed == claimed {
                for hole in &holes {
                    self.ring
                        .fill_dead_reservation(hole.at, hole.len, hole.timestamp);
                    self.release(*hole);
                }
                outcome.filled += holes.len() as u64;
            } else {
                outcome.pending += holes.len() as u64;
            }
        }
        self.ring
            .lost_dead_word()
            .fetch_add(outcome.filled, Relaxed);
        outcome
    }

    /// Gives up closed packets that stayed incomplete with no commit since the
    /// previous call and that no live holder (by `alive`, as for
    /// [`Consumer::release_dead_holders`]) is inside: the fallback for a reservation
    /// the holder records do not explain (a thread that found the table full, a
    /// holder that died inside a packet switch). Call it after
    /// `release_dead_holders`, on a slow timer once a producer died: a live producer
    /// without a record committing into a given-up packet would corrupt its slot's
    /// next generation.
    ///
    /// The packet's committed events are lost with it; returns how many events were
    /// counted lost (its committed events plus one for the dead reservation; exact in
    /// discard mode, an upper bound in overwrite mode).
    pub fn give_up_stuck(&mut self, alive: &dyn Fn(i32) -> bool) -> u64 {
        let sb = self.ring.geometry().subbuf_size;
        // A live holder may be inside a switch: its record names the packet it closes.
        let held: Vec<u64> = self
            .holds(alive)
            .0
            .iter()
            .flat_map(|h| {
                let p = h.at & !(sb - 1);
                [p, p.saturating_add(sb)]
            })
            .collect();
        let write = self.ring.write_word().load(Acquire);
        let first = self.ring.consumed_word().load(Acquire);
        // Bounded by the ring whatever `write` says (shared memory is input).
        let ring_len = sb * self.ring.geometry().num_subbuf;
        let closed_end = (write & !(sb - 1)).min(first.saturating_add(ring_len));
        let mut probes = Vec::new();
        let mut lost = 0;
        let mut p = first;
        while p < closed_end {
            let word_ref = self.ring.commit_word(p);
            let word = word_ref.load(Acquire);
            let complete = self.ring.complete_bytes(p);
            if word as u32 != complete && !held.contains(&p) {
                if self.probes.contains(&(p, word)) {
                    let missing = u64::from(complete.wrapping_sub(word as u32));
                    if word_ref
                        .compare_exchange(word, word + missing, AcqRel, Acquire)
                        .is_ok()
                    {
                        let slot = ((p / sb) % self.ring.geometry().num_subbuf) as usize;
                        let base = self.released_words[slot] >> 32;
                        lost += (word >> 32).wrapping_sub(base) + 1;
                        self.given_up.push(p);
                    }
                } else {
                    probes.push((p, word));
                }
            }
            p += sb;
        }
        self.probes = probes;
        self.ring.lost_dead_word().fetch_add(lost, Relaxed);
        lost
    }
}
