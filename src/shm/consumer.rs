//! The daemon's side of a ring: takes complete packets in order, flushes, and gives
//! up packets that a dead producer will never complete.

use std::sync::Arc;
use std::sync::atomic::Ordering::*;

use super::Ring;

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

    /// Gives up closed packets that stayed incomplete with no commit since the
    /// previous call: a producer died between reserve and commit. Call it when a
    /// producer is known dead, or periodically with a period much longer than any
    /// live producer's reserve-to-commit time (a live producer committing into a
    /// given-up packet would corrupt its slot's next generation).
    ///
    /// The packet's committed events are lost with it; returns how many events were
    /// counted lost (its committed events plus one for the dead reservation; exact in
    /// discard mode, an upper bound in overwrite mode).
    pub fn give_up_stuck(&mut self) -> u64 {
        let sb = self.ring.geometry().subbuf_size;
        let write = self.ring.write_word().load(Acquire);
        let first = self.ring.consumed_word().load(Acquire);
        let closed_end = write & !(sb - 1);
        let mut probes = Vec::new();
        let mut lost = 0;
        let mut p = first;
        while p < closed_end {
            let word_ref = self.ring.commit_word(p);
            let word = word_ref.load(Acquire);
            let complete = self.ring.complete_bytes(p);
            if word as u32 != complete {
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
