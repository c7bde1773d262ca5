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
}

/// A complete packet lent to the consumer; released (its sub-buffer handed back to
/// producers) when dropped.
pub struct Packet<'a> {
    /// The consumer holding the READING mark.
    consumer: &'a mut Consumer,
    /// Stream position of the packet.
    pos: u64,
    /// Its commit word when taken.
    word: u64,
}

impl Packet<'_> {
    /// The whole sub-buffer: one CTF packet, to be written out unchanged.
    pub fn bytes(&self) -> &[u8] {
        // SAFETY: `next_packet` saw the packet complete and set READING on it; no
        // producer writes it until `drop` releases it.
        unsafe { self.consumer.ring.packet_bytes(self.pos) }
    }

    /// Sequence number of the packet in its stream.
    pub fn seq_num(&self) -> u64 {
        self.pos / self.consumer.ring.geometry().subbuf_size
    }
}

impl Drop for Packet<'_> {
    fn drop(&mut self) {
        self.consumer.release(self.pos, self.word);
    }
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
        }
    }

    /// The ring drained.
    pub fn ring(&self) -> &Arc<Ring> {
        &self.ring
    }

    /// Takes the oldest unread packet if it is complete; skips given-up ones.
    pub fn next_packet(&mut self) -> Option<Packet<'_>> {
        let sb = self.ring.geometry().subbuf_size;
        let ring = self.ring.clone();
        let consumed = ring.consumed_word();
        loop {
            let pos = consumed.load(Acquire) & !1;
            // Acquire pairs with every Release commit: the packet's bytes are visible.
            let word = self.ring.commit_word(pos).load(Acquire);
            if word as u32 != self.ring.complete_bytes(pos) {
                return None;
            }
            self.given_up.retain(|&p| p >= pos);
            if let Some(i) = self.given_up.iter().position(|&p| p == pos) {
                // A producer in overwrite mode may take it first; either way it is gone.
                if consumed
                    .compare_exchange(pos, pos + sb, AcqRel, Acquire)
                    .is_ok()
                {
                    self.given_up.swap_remove(i);
                    self.note_released(pos, word);
                }
                continue;
            }
            // Marking READING excludes overwrite-mode producers, whose CAS expects the
            // bit clear; failing means one took this packet: look again.
            if consumed
                .compare_exchange(pos, pos | 1, AcqRel, Acquire)
                .is_ok()
            {
                return Some(Packet {
                    consumer: self,
                    pos,
                    word,
                });
            }
        }
    }

    /// Hands the packet at `pos` back to producers.
    fn release(&mut self, pos: u64, word: u64) {
        self.note_released(pos, word);
        // Release pairs with producers' Acquire load of `consumed`: our reads of the
        // packet happen before they write the slot again.
        self.ring
            .consumed_word()
            .store(pos + self.ring.geometry().subbuf_size, Release);
    }

    /// Remembers the commit word a slot had when its packet left the ring.
    fn note_released(&mut self, pos: u64, word: u64) {
        let slot = (pos / self.ring.geometry().subbuf_size) % self.ring.geometry().num_subbuf;
        self.released_words[slot as usize] = word;
    }

    /// Closes the partly filled packet (stop, app exit) so that `next_packet` returns
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
        let first = self.ring.consumed_word().load(Acquire) & !1;
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
