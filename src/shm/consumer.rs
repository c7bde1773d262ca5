//! The daemon's side of a ring: takes complete packets in order, flushes, reads the
//! loss counters, and finishes what a dead producer left: its reservations, read from
//! the ring's holder records, are filled with lost events
//! ([`Consumer::release_dead_holders`]); a packet whose holder is unknown is given up
//! ([`Consumer::give_up_stuck`]).
//!
//! Everything in the ring's shared memory is input: any app mapping it can write any
//! word at any time. So every value read from it (positions, commit words, counters,
//! holder records, the header of each copied packet) is checked against the ring's
//! geometry and the consumer's own bookkeeping before it is used, no loop runs or
//! allocation grows by a value read from it, and a ring that lies is marked corrupt:
//! from then on the consumer takes nothing from it ([`Consumer::corruption`]).

use std::collections::VecDeque;
use std::io;
use std::os::fd::BorrowedFd;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::sync::atomic::Ordering::*;
use std::time::Instant;

use super::hooks::{self, Point};
use super::layout::{Part, RECORD_AT, RECORD_LEN, RECORD_OWNER, RECORD_TIMESTAMP, RECORDS};
use super::{Mode, Ring, RingCorruption, RingCounters};
use crate::ctf::packet::{self, COMPACT_HEADER_SIZE, PACKET_HEADER_SIZE, PacketHeader};

/// Alignment of file offsets, lengths and memory for `O_DIRECT` writes of leased
/// packets: the page, a multiple of every block size a Linux file system asks for
/// (the sub-buffer, at least 4 KiB and a power of two, is a multiple of it).
pub const DIRECT_ALIGN: usize = 4096;

/// Largest position a stream plausibly reaches: 2^60 bytes (an exbibyte, 30 years at
/// 1 GB/s). Positions stay far from overflowing `u64` arithmetic.
const MAX_POSITION: u64 = 1 << 60;

/// Overwritten packets a reading may count beyond the `consumed` moves it saw: pushes
/// whose counter increment had not landed at the previous reading (one per producer
/// thread between its push and its increment).
const OVERWRITE_SLACK: u64 = 1024;

/// Discarded events a reading may count beyond one per nanosecond since the previous
/// one (a drop is a clock read or at least an atomic add: tens of nanoseconds).
const DISCARD_SLACK: u64 = 1 << 20;

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
    /// Where `consumed` is, as far as the consumer knows: its own last CAS, or in
    /// overwrite mode the last producer push it checked. The shared word must never
    /// differ from it in discard mode, nor go below it in overwrite mode.
    consumed: u64,
    /// Set once the ring lied: nothing more is taken, flushed or given up.
    corrupt: Option<Corruption>,
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
    /// Events counted lost with given-up packets, by this consumer: the daemon's own
    /// tally, unlike the ring's `lost_dead_producer` word, which an app can write.
    lost_dead: u64,
    /// The counters and `consumed` at the previous [`Consumer::counter_deltas`], and
    /// when: the bounds of what the next reading may add.
    counted: Reading,
    /// Packets handed out by [`Consumer::lease_packet`] and not given back yet, in
    /// ring order from `consumed` on: their slots stay the daemon's until each is
    /// stored, then [`Consumer::release_stored`] moves `consumed` past them.
    leases: VecDeque<Lease>,
}

/// One sub-buffer leased to a writer.
struct Lease {
    /// Its position.
    pos: u64,
    /// Its commit word when leased, remembered at release (see `released_words`).
    word: u64,
    /// Set by the [`LeasedPacket`]'s drop: stored (or given up by its writer).
    stored: Arc<AtomicBool>,
}

/// A complete packet left in its sub-buffer for a writer to store from the shared
/// mapping (discard mode: no producer writes a complete, unconsumed slot), so that
/// draining costs no copy of its content. Its header was copied and checked when it
/// was leased, its length comes from that copy and lies inside the sub-buffer: a
/// header the app rewrites afterwards changes nothing the daemon writes but the
/// app's own bytes. The slot goes back to producers only after the lease is dropped
/// and the consumer's next [`Consumer::release_stored`]; the lease keeps the ring
/// mapped until then.
pub struct LeasedPacket {
    /// The ring holding it.
    ring: Arc<Ring>,
    /// Its header as checked, `packet_size` set to the content (padding trimmed).
    header: Vec<u8>,
    /// Offset of its sub-buffer in the mapping.
    at: usize,
    /// Bytes of the trimmed packet: its `content_size`.
    len: usize,
    /// Told on drop.
    stored: Arc<AtomicBool>,
}

impl LeasedPacket {
    /// Bytes of the packet as stored (header and content, no padding).
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether it has no bytes (never: a packet has at least its header).
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The packet's header as checked, `packet_size` already trimmed: what
    /// `PacketHeader::read` of the stored packet gives.
    pub fn header(&self) -> &[u8] {
        &self.header
    }

    /// Writes the packet to `fd`: its checked header from the copy, the rest
    /// straight from the ring's mapping (`writev`, no copy).
    pub fn write_to(&self, fd: BorrowedFd<'_>) -> io::Result<()> {
        let head = self.header.len();
        self.ring.map.write_out(
            fd,
            &[
                Part::Own(&self.header),
                Part::Mapped {
                    at: self.at + head,
                    len: self.len - head,
                },
            ],
        )
    }

    /// Bytes of the packet as [`LeasedPacket::write_padded`] stores it: its content
    /// rounded up to [`DIRECT_ALIGN`], never past its sub-buffer (a multiple of it).
    pub fn padded_len(&self) -> usize {
        self.len.next_multiple_of(DIRECT_ALIGN)
    }

    /// The header as [`LeasedPacket::write_padded`] stores it: `packet_size` set
    /// to [`LeasedPacket::padded_len`], `content_size` unchanged.
    pub fn padded_header(&self) -> Vec<u8> {
        let mut header = self.header.clone();
        packet::set_packet_size(&mut header, self.padded_len() as u64);
        header
    }

    /// Writes the packets of `run` (consecutive packets of one ring, in order) in one
    /// `writev`, each padded with zeros to [`LeasedPacket::padded_len`], every piece
    /// aligned for `O_DIRECT` (on a file whose length is a multiple of
    /// [`DIRECT_ALIGN`]): each packet's first and last blocks are copied into its two
    /// blocks of `bounce` (`2 * DIRECT_ALIGN` bytes per packet at an aligned address),
    /// the header of the first replaced by [`LeasedPacket::padded_header`]; the
    /// blocks between go straight from the mapping (the sub-buffer is page aligned).
    /// The zeros keep whatever the slot held past the content out of the trace. One
    /// write of several packets costs the kernel one request to the device instead of
    /// one per packet.
    pub fn write_padded(
        fd: BorrowedFd<'_>,
        run: &[&LeasedPacket],
        bounce: &mut [u8],
    ) -> io::Result<()> {
        let Some(ring) = run.first().map(|p| &p.ring) else {
            return Ok(());
        };
        assert!(
            run.iter().all(|p| Arc::ptr_eq(&p.ring, ring)),
            "a run is packets of one ring"
        );
        assert!(
            bounce.len() >= 2 * DIRECT_ALIGN * run.len(),
            "bounce buffer of two blocks per packet"
        );
        let mut parts = Vec::with_capacity(3 * run.len());
        for (packet, blocks) in run.iter().zip(bounce.chunks_exact_mut(2 * DIRECT_ALIGN)) {
            let (first, last_block) = blocks.split_at_mut(DIRECT_ALIGN);
            let last = packet.padded_len() - DIRECT_ALIGN;
            // SAFETY: both blocks lie inside the leased sub-buffer (`padded_len` <= its
            // size), which no honest producer writes while leased; a hostile one only
            // tears its own bytes, and the header part of the copy is replaced by the
            // checked one.
            unsafe { ring.map.copy_racy_into(packet.at, first) };
            first[..packet.header.len()].copy_from_slice(&packet.padded_header());
            if last == 0 {
                first[packet.len..].fill(0);
                parts.push(Part::Own(first));
                continue;
            }
            // SAFETY: as above.
            unsafe { ring.map.copy_racy_into(packet.at + last, last_block) };
            last_block[packet.len - last..].fill(0);
            parts.push(Part::Own(first));
            parts.push(Part::Mapped {
                at: packet.at + DIRECT_ALIGN,
                len: last - DIRECT_ALIGN,
            });
            parts.push(Part::Own(last_block));
        }
        ring.map.write_out(fd, &parts)
    }

    /// A copy of the packet in the daemon's heap, for writers that want bytes.
    pub fn to_vec(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.len.next_multiple_of(8));
        // SAFETY: the range lies inside the leased sub-buffer (`len` rounded up to 8
        // stays within it: the sub-buffer size is a multiple of 8), which no honest
        // producer writes while leased; a hostile one only tears its own bytes.
        unsafe {
            self.ring
                .map
                .copy_racy(self.at, self.len.next_multiple_of(8), &mut out)
        };
        out.truncate(self.len);
        out[..self.header.len()].copy_from_slice(&self.header);
        out
    }
}

impl Drop for LeasedPacket {
    fn drop(&mut self) {
        // Release pairs with the Acquire load in `release_stored`: the write that
        // read the slot is done before a producer may reuse it.
        self.stored.store(true, Release);
    }
}

/// Why a ring was marked corrupt and what its data cost.
#[derive(Debug, PartialEq, Eq)]
pub struct Corruption {
    /// The value that no honest producer writes.
    pub reason: RingCorruption,
    /// Sub-buffers the ring held unread when it was found lying (at most its count):
    /// their data is dropped.
    pub packets_dropped: u64,
}

/// One reading of the loss counters.
struct Reading {
    /// Raw counter values read.
    counters: RingCounters,
    /// `consumed` read just after them.
    consumed: u64,
    /// Events lost with given-up packets, as reported by that reading.
    lost_dead: u64,
    /// When.
    at: Instant,
}

/// What [`Consumer::take_packet`] copied out, besides the bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PacketInfo {
    /// Sequence number of the packet in its stream (its position / sub-buffer size).
    pub seq_num: u64,
}

/// `write` and `consumed` read together and checked against each other.
#[derive(Clone, Copy, Debug)]
struct Positions {
    /// Write position, read before `consumed`.
    write: u64,
    /// Consumed position.
    consumed: u64,
}

impl Consumer {
    /// Becomes the consumer of `ring`; there must be only one per ring.
    pub fn new(ring: Arc<Ring>) -> Consumer {
        let slots = ring.geometry().num_subbuf as usize;
        let consumed = ring.consumed_word().load(Acquire);
        Consumer {
            counted: Reading {
                counters: RingCounters::default(),
                consumed,
                lost_dead: 0,
                at: Instant::now(),
            },
            ring,
            consumed,
            corrupt: None,
            given_up: Vec::new(),
            probes: Vec::new(),
            released_words: vec![0; slots],
            copies_discarded: 0,
            lost_dead: 0,
            leases: VecDeque::new(),
        }
    }

    /// The ring drained.
    pub fn ring(&self) -> &Arc<Ring> {
        &self.ring
    }

    /// Why the ring was marked corrupt, if it was: a value read from it broke its
    /// geometry or the consumer's bookkeeping. The consumer then takes, flushes and
    /// gives up nothing more, and its counters add nothing.
    pub fn corruption(&self) -> Option<&Corruption> {
        self.corrupt.as_ref()
    }

    /// Copies the oldest unread packet, if it is complete, into `out` and hands its
    /// slot back to producers; skips given-up packets. `out` then holds the packet's
    /// header and content, rounded up to 8 bytes, without the padding after it; its
    /// `packet_size` still names the whole sub-buffer (`ctf::packet::trim` makes the
    /// bytes one exact CTF packet). `None` when no packet is complete, when the ring
    /// is (or is now found) corrupt, or when producers lapped it on every attempt of
    /// this call; `out` is then empty. `None` too while packets leased by
    /// [`Consumer::lease_packet`] are out: a consumer uses one way or the other.
    ///
    /// Optimistic (seqlock-style): the copy is made without excluding producers, then
    /// `consumed` is CASed past the packet. A failed CAS means an overwrite-mode
    /// producer pushed `consumed` past it and may have written the slot during the
    /// copy: the copy is discarded (that producer counted the packet overwritten) and
    /// the new oldest packet is tried. So producers never wait for, nor drop because
    /// of, the reader. In discard mode no producer moves `consumed`: the CAS succeeds.
    ///
    /// Every attempt checks what it read (positions, the commit word, the copied
    /// header: see [`RingCorruption`]); the attempts are bounded by the geometry.
    pub fn take_packet(&mut self, out: &mut Vec<u8>) -> Option<PacketInfo> {
        out.clear();
        if !self.leases.is_empty() {
            // The oldest packet is leased: taking it again would store it twice.
            return None;
        }
        let sb = self.ring.geometry().subbuf_size;
        let mut pos = self.positions()?.consumed;
        // Each attempt after the first follows a move of `consumed`, by at least one
        // sub-buffer, or skips a given-up packet: more than a lap of the ring and the
        // producers are faster than the copy; the next call tries again.
        for _ in 0..=2 * self.ring.geometry().num_subbuf {
            // Acquire pairs with every Release commit: the packet's bytes are visible.
            let word = self.ring.commit_word(pos).load(Acquire);
            if word as u32 != self.ring.complete_bytes(pos) {
                // Incomplete, or already reused by a producer that lapped us: only the
                // first means "nothing to take", and then the word is in pos's
                // generation (a producer pushes `consumed` before it reuses a slot).
                let now = self.positions()?.consumed;
                if now == pos {
                    if let Err(lie) = self.check_commit(pos, word) {
                        self.mark_corrupt(lie, None);
                    }
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
                hooks::reached(Point::AfterCopy);
            }
            // Success: no producer pushed `consumed` during the copy, and producers
            // write a slot only after their own push or after seeing `consumed` past
            // it. Release orders the copy before any such write: the producer's
            // Acquire load (or CAS) of `consumed` reads this value or a later one.
            // LP: the consumer's take (Complete -> Free). Its success hands the copy
            // out and the slot back to producers.
            match self.give_back(pos, word) {
                Ok(()) => {
                    match given_up {
                        None => {
                            // The copy is ours now: checking it is final, whatever the
                            // app writes into the slot from here on.
                            if let Err(lie) = self.check_header(pos, out) {
                                out.clear();
                                self.mark_corrupt(lie, None);
                                return None;
                            }
                            return Some(PacketInfo { seq_num: pos / sb });
                        }
                        Some(i) => {
                            self.given_up.swap_remove(i);
                            pos += sb;
                        }
                    }
                }
                Err(now) => {
                    self.copies_discarded += u64::from(given_up.is_none());
                    out.clear();
                    if let Err(lie) = self.check_consumed(now) {
                        self.mark_corrupt(lie, None);
                        return None;
                    }
                    self.consumed = now;
                    pos = now;
                }
            }
        }
        out.clear();
        None
    }

    /// Copies every closed, complete packet the ring holds into `out`, oldest first,
    /// without taking any: a flight-recorder snapshot. The caller flushes first
    /// ([`Consumer::flush`]) so that the packet being filled is closed and included.
    /// A packet still holding an uncommitted reservation is skipped. Returns how many
    /// copies were thrown away because a producer overwrote their packet meanwhile.
    ///
    /// As optimistic as [`Consumer::take_packet`], and producers never wait: each
    /// copy is validated by a compare-and-swap of `consumed` with the value read
    /// before the copy, onto itself. Its success puts the copy before, in
    /// `consumed`'s modification order, any producer push that could let that
    /// producer reuse the slot (a producer pushes `consumed` past a packet, with a
    /// CAS, before it writes into its slot). A failure means a push happened: the
    /// copy is discarded and the packets from the new `consumed` on are tried.
    /// Every value read is checked as `take_packet` checks it; the attempts are
    /// bounded by the geometry.
    pub fn snapshot(&mut self, out: &mut Vec<Vec<u8>>) -> u64 {
        let sb = self.ring.geometry().subbuf_size;
        let Some(at) = self.positions() else {
            return 0;
        };
        let mut discarded = 0;
        let mut pos = at.consumed;
        let mut copy = Vec::new();
        for _ in 0..4 * (self.ring.geometry().num_subbuf + 1) {
            if pos.saturating_add(sb) > at.write {
                break;
            }
            let consumed = self.ring.consumed_word().load(Acquire);
            if let Err(lie) = self.check_consumed(consumed) {
                self.mark_corrupt(lie, None);
                return discarded;
            }
            self.consumed = consumed;
            if consumed > pos {
                pos = consumed;
                continue;
            }
            // Acquire pairs with every Release commit: the packet's bytes are visible.
            let word = self.ring.commit_word(pos).load(Acquire);
            if word as u32 != self.ring.complete_bytes(pos) {
                pos += sb;
                continue;
            }
            // SAFETY: the copy is used only if the CAS below succeeds, which proves
            // no producer pushed `consumed` (hence none reused the slot) during it.
            unsafe { self.ring.copy_packet(pos, &mut copy) };
            hooks::reached(Point::AfterCopy);
            match self
                .ring
                .consumed_word()
                .compare_exchange(consumed, consumed, AcqRel, Acquire)
            {
                Ok(_) => {
                    if let Err(lie) = self.check_header(pos, &copy) {
                        self.mark_corrupt(lie, None);
                        return discarded;
                    }
                    out.push(std::mem::take(&mut copy));
                    pos += sb;
                }
                Err(_) => discarded += 1,
            }
        }
        discarded
    }

    /// Leases the oldest complete packet not leased yet, if any, without copying its
    /// content: discard mode only, where no producer writes a complete packet before
    /// `consumed` passes it (in overwrite mode, and once a ring is corrupt, `None`;
    /// overwrite mode copies with [`Consumer::take_packet`]). Gives back first the
    /// slots whose leases were stored ([`Consumer::release_stored`]); skips given-up
    /// packets. At most a ring's worth of leases are out at once.
    ///
    /// Before anything is handed out, the packet is checked as `take_packet` checks
    /// its copy: its commit word complete (an incomplete one within its generation),
    /// and its header (copied,
    /// the only bytes the daemon interprets) right for this position and ring. The
    /// stored length is the header's `content_size`, at most the sub-buffer.
    pub fn lease_packet(&mut self) -> Option<LeasedPacket> {
        if self.ring.mode() != Mode::Discard {
            return None;
        }
        self.release_stored();
        let g = self.ring.geometry();
        let sb = g.subbuf_size;
        let at = self.positions()?;
        // Each turn leases a packet or skips a given-up one: bounded by the ring.
        while (self.leases.len() as u64) < g.num_subbuf {
            let pos = at.consumed + self.leases.len() as u64 * sb;
            // As in `take_packet`, the commit word alone says whether the packet is
            // there: a complete word that `write` has not passed is a lie the next
            // reading of the positions finds, once `consumed` moved past it.
            // Acquire pairs with every Release commit: the packet's bytes are visible.
            let word = self.ring.commit_word(pos).load(Acquire);
            if word as u32 != self.ring.complete_bytes(pos) {
                if let Err(lie) = self.check_commit(pos, word) {
                    self.mark_corrupt(lie, Some(at));
                }
                return None;
            }
            let stored = Arc::new(AtomicBool::new(false));
            self.leases.push_back(Lease {
                pos,
                word,
                stored: stored.clone(),
            });
            self.given_up.retain(|&p| p >= at.consumed);
            if let Some(i) = self.given_up.iter().position(|&p| p == pos) {
                self.given_up.swap_remove(i);
                stored.store(true, Relaxed);
                continue;
            }
            let start = self.ring.data_index(pos);
            let mut header = Vec::with_capacity(PACKET_HEADER_SIZE.next_multiple_of(8));
            // SAFETY: in discard mode no producer writes a complete slot before
            // `consumed` passes it; only a hostile app does, and then this copy is
            // checked below: whatever it holds, nothing is read outside the header.
            unsafe {
                self.ring
                    .map
                    .copy_racy(start, PACKET_HEADER_SIZE.next_multiple_of(8), &mut header)
            };
            if let Err(lie) = self.check_header(pos, &header) {
                self.leases.pop_back();
                self.mark_corrupt(lie, Some(at));
                return None;
            }
            // Checked: `content_size` lies in PACKET_HEADER_SIZE..=packet_size == sb.
            let len = PacketHeader::read(&header)
                .map(|h| h.close.content_size as usize)
                .unwrap_or(PACKET_HEADER_SIZE);
            header.truncate(PACKET_HEADER_SIZE);
            packet::set_packet_size(&mut header, len as u64);
            return Some(LeasedPacket {
                ring: self.ring.clone(),
                header,
                at: start,
                len,
                stored,
            });
        }
        None
    }

    /// Gives back to producers, in order, the slots of leased packets that were
    /// stored: `consumed` moves past each (the daemon's CAS; in discard mode nobody
    /// else moves it, so a failed CAS is a lie and marks the ring corrupt). Stops at
    /// the first lease still out. Returns how many slots it gave back.
    pub fn release_stored(&mut self) -> usize {
        let mut released = 0;
        // Acquire pairs with the lease's Release drop: its write is done.
        while let Some(lease) = self.leases.front().filter(|l| l.stored.load(Acquire)) {
            if self.corrupt.is_some() {
                return released;
            }
            let (pos, word) = (lease.pos, lease.word);
            // LP: the consumer's take (Complete -> Free) of a leased packet.
            match self.give_back(pos, word) {
                Ok(()) => {
                    self.leases.pop_front();
                    released += 1;
                }
                Err(now) => {
                    let lie =
                        self.check_consumed(now)
                            .err()
                            .unwrap_or(RingCorruption::ConsumedMoved {
                                expected: pos,
                                found: now,
                            });
                    self.mark_corrupt(lie, None);
                    return released;
                }
            }
        }
        released
    }

    /// Complete packets after the leased ones, counted up to `most`: what the next
    /// [`Consumer::lease_packet`] calls would find, as far as the commit words say
    /// (app-writable: a drain may use it only to decide when to lease, never what).
    pub fn complete_waiting(&self, most: u64) -> u64 {
        let g = self.ring.geometry();
        let first = self.consumed + self.leases.len() as u64 * g.subbuf_size;
        let unleased = g.num_subbuf - self.leases.len() as u64;
        (0..most.min(unleased))
            .map(|i| first + i * g.subbuf_size)
            .take_while(|&pos| {
                // Acquire as in `lease_packet`; only the count is used.
                self.ring.commit_word(pos).load(Acquire) as u32 == self.ring.complete_bytes(pos)
            })
            .count() as u64
    }

    /// Packets leased and not given back yet.
    pub fn leases_out(&self) -> usize {
        self.leases.len()
    }

    /// How many copies `take_packet` discarded because a producer overwrote the packet
    /// during the copy: a diagnostic of how often the reader lost that race (tests use
    /// it to show the race was exercised).
    pub fn copies_discarded(&self) -> u64 {
        self.copies_discarded
    }

    /// CASes `consumed` from `pos` past its packet (commit word `word`), handing the
    /// slot back to producers; on success the consumer's own bookkeeping follows.
    /// `Err` carries the `consumed` found instead.
    fn give_back(&mut self, pos: u64, word: u64) -> Result<(), u64> {
        let sb = self.ring.geometry().subbuf_size;
        self.ring
            .consumed_word()
            .compare_exchange(pos, pos + sb, AcqRel, Acquire)?;
        self.consumed = pos + sb;
        self.note_released(pos, word);
        Ok(())
    }

    /// Remembers the commit word a slot had when its packet left the ring.
    fn note_released(&mut self, pos: u64, word: u64) {
        let slot = (pos / self.ring.geometry().subbuf_size) % self.ring.geometry().num_subbuf;
        self.released_words[slot as usize] = word;
    }

    /// Closes the partly filled packet (stop, app exit) so that `take_packet` returns
    /// it once its last reservations commit. Returns whether there was one; never on
    /// a corrupt ring (and a `write` it finds out of bounds marks the ring corrupt).
    pub fn flush(&mut self) -> bool {
        let Some(at) = self.positions() else {
            return false;
        };
        match self
            .ring
            .flush_ring(at.write, self.write_limit(at.consumed))
        {
            Ok(flushed) => flushed,
            Err(FlushBounds { was, found }) => {
                let lie = if found < was {
                    RingCorruption::WriteBackwards { was, found }
                } else {
                    self.write_out_of_bounds(found, at.consumed)
                };
                self.mark_corrupt(lie, Some(at));
                false
            }
        }
    }

    /// Closes the partly filled packet, as [`Consumer::flush`], and returns where
    /// the ring's packets closed so far end (a sub-buffer boundary): every event
    /// reserved before this call lies before it, every later one after it. A
    /// rotation puts the packets before it in the chunk it closes. `None` on a
    /// corrupt ring.
    pub fn close_chunk(&mut self) -> Option<u64> {
        self.flush();
        let at = self.positions()?;
        let sb = self.ring.geometry().subbuf_size;
        Some(at.write - at.write % sb)
    }

    /// Whether every packet before `boundary` (from [`Consumer::close_chunk`]) has
    /// left the ring (taken, leased to a writer, overwritten or given up); true on a
    /// corrupt ring, which gives nothing more.
    pub fn taken_to(&mut self, boundary: u64) -> bool {
        let leased = self.leases.len() as u64 * self.ring.geometry().subbuf_size;
        self.positions()
            .is_none_or(|at| at.consumed + leased >= boundary)
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
            && hold.len >= COMPACT_HEADER_SIZE as u64
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
        // Checked positions (shared memory is input): a lying ring fills nothing.
        let Some(Positions { write, consumed }) = self.positions() else {
            return DeadHolders::default();
        };
        let (live, mut dead) = self.holds(alive);
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
                    // SAFETY: the packet's counts prove `hole` a reservation inside it
                    // (`plain_packet`) that nobody committed, and its holder is dead:
                    // no one else writes those bytes.
                    unsafe {
                        self.ring
                            .fill_with_lost_event(hole.at, hole.len, hole.timestamp)
                    };
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
        self.lost_dead += outcome.filled;
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
    /// discard mode, an upper bound in overwrite mode). Nothing on a corrupt ring, or
    /// when the positions it reads are found to lie.
    pub fn give_up_stuck(&mut self, alive: &dyn Fn(i32) -> bool) -> u64 {
        let sb = self.ring.geometry().subbuf_size;
        // Checked positions bound the walk below to one ring and a sub-buffer.
        let Some(Positions {
            write,
            consumed: first,
        }) = self.positions()
        else {
            return 0;
        };
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
        let closed_end = write & !(sb - 1);
        let most_events = (sb - PACKET_HEADER_SIZE as u64) / COMPACT_HEADER_SIZE as u64;
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
                        .compare_exchange(word, word.wrapping_add(missing), AcqRel, Acquire)
                        .is_ok()
                    {
                        let slot = ((p / sb) % self.ring.geometry().num_subbuf) as usize;
                        let base = (self.released_words[slot] >> 32) as u32;
                        // The high half counts events mod 2^32; no packet holds more
                        // than `most_events`, whatever the word says.
                        let events = ((word >> 32) as u32).wrapping_sub(base);
                        lost += u64::from(events).min(most_events) + 1;
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
        self.lost_dead += lost;
        lost
    }

    /// What the ring's loss counters added since the previous call (the first: since
    /// the consumer was made), each checked to be plausible for this ring: counters
    /// only grow; `overwritten_packets` by no more packets than `consumed` moved
    /// (none in discard mode); `discarded_full` and `too_big` by no more than one
    /// event per nanosecond. A counter that breaks this marks the ring corrupt and
    /// adds nothing. `lost_dead_producer` is this consumer's own tally of
    /// [`Consumer::give_up_stuck`], never the ring's word.
    pub fn counter_deltas(&mut self) -> RingCounters {
        let lost_dead_producer = self.lost_dead - self.counted.lost_dead;
        self.counted.lost_dead = self.lost_dead;
        let mut deltas = RingCounters {
            lost_dead_producer,
            ..RingCounters::default()
        };
        // Read before `consumed`: an overwrite is counted after its push, so the
        // pushes behind these values are all in the `consumed` read next.
        let now = self.ring.counters();
        let Some(at) = self.positions() else {
            return deltas;
        };
        let was = &self.counted;
        let elapsed = u64::try_from(was.at.elapsed().as_nanos()).unwrap_or(u64::MAX);
        let events = elapsed.saturating_add(DISCARD_SLACK);
        let packets = match self.ring.mode() {
            Mode::Discard => 0,
            Mode::Overwrite => {
                at.consumed.saturating_sub(was.consumed) / self.ring.geometry().subbuf_size
                    + OVERWRITE_SLACK
            }
        };
        let checked = [
            (
                "discarded_full",
                was.counters.discarded_full,
                now.discarded_full,
                events,
            ),
            ("too_big", was.counters.too_big, now.too_big, events),
            (
                "overwritten_packets",
                was.counters.overwritten_packets,
                now.overwritten_packets,
                packets,
            ),
            (
                "unrecorded_reservations",
                was.counters.unrecorded_reservations,
                now.unrecorded_reservations,
                events,
            ),
            (
                "abandoned_reservations",
                was.counters.abandoned_reservations,
                now.abandoned_reservations,
                events,
            ),
        ];
        let mut grown = [0; 5];
        for (i, (counter, was, found, bound)) in checked.into_iter().enumerate() {
            let lie = if found < was {
                RingCorruption::CounterBackwards {
                    counter,
                    was,
                    found,
                }
            } else if found - was > bound {
                RingCorruption::CounterImplausible {
                    counter,
                    delta: found - was,
                    bound,
                }
            } else {
                grown[i] = found - was;
                continue;
            };
            self.mark_corrupt(lie, Some(at));
            return deltas;
        }
        [
            deltas.discarded_full,
            deltas.too_big,
            deltas.overwritten_packets,
            deltas.unrecorded_reservations,
            deltas.abandoned_reservations,
        ] = grown;
        self.counted.counters = now;
        self.counted.consumed = at.consumed;
        self.counted.at = Instant::now();
        deltas
    }

    /// Reads `write` then `consumed` and checks both; marks the ring corrupt (and
    /// returns `None`) if either lies, and returns `None` on a ring already corrupt.
    /// The one validation every consumer path goes through before it uses a position.
    fn positions(&mut self) -> Option<Positions> {
        if self.corrupt.is_some() {
            return None;
        }
        // `write` first: in overwrite mode `consumed` may move on meanwhile, and a
        // later `consumed` only widens the bound on an earlier `write`.
        let write = self.ring.write_word().load(Acquire);
        let consumed = self.ring.consumed_word().load(Acquire);
        let checked = self.check_consumed(consumed).and_then(|()| {
            if write > MAX_POSITION {
                Err(RingCorruption::PositionTooLarge {
                    word: "write",
                    found: write,
                    max: MAX_POSITION,
                })
            } else if write > self.write_limit(consumed) {
                Err(self.write_out_of_bounds(write, consumed))
            } else {
                Ok(())
            }
        });
        if let Err(lie) = checked {
            self.mark_corrupt(lie, None);
            return None;
        }
        self.consumed = consumed;
        Some(Positions { write, consumed })
    }

    /// Checks a `consumed` value read from the ring: on a sub-buffer boundary, where
    /// this consumer left it (discard mode) or not behind it (overwrite mode), and
    /// not past `write` (read after it: producers push `consumed` only up to `write`).
    fn check_consumed(&self, found: u64) -> Result<(), RingCorruption> {
        let sb = self.ring.geometry().subbuf_size;
        if found > MAX_POSITION {
            return Err(RingCorruption::PositionTooLarge {
                word: "consumed",
                found,
                max: MAX_POSITION,
            });
        }
        if !found.is_multiple_of(sb) {
            return Err(RingCorruption::ConsumedMisaligned {
                found,
                subbuf_size: sb,
            });
        }
        match self.ring.mode() {
            Mode::Discard if found != self.consumed => {
                return Err(RingCorruption::ConsumedMoved {
                    expected: self.consumed,
                    found,
                });
            }
            Mode::Overwrite if found < self.consumed => {
                return Err(RingCorruption::ConsumedBackwards {
                    was: self.consumed,
                    found,
                });
            }
            _ => {}
        }
        let write = self.ring.write_word().load(Acquire);
        if write < found {
            return Err(RingCorruption::WriteOutOfBounds {
                write,
                consumed: found,
                limit: self.write_limit(found),
            });
        }
        Ok(())
    }

    /// The furthest `write` can be with `consumed` at `consumed`: a packet opens only
    /// in a slot whose previous generation was consumed, and ends within its
    /// sub-buffer.
    fn write_limit(&self, consumed: u64) -> u64 {
        let g = self.ring.geometry();
        consumed + g.subbuf_size * (g.num_subbuf + 1)
    }

    /// The error for a `write` past [`Consumer::write_limit`].
    fn write_out_of_bounds(&self, write: u64, consumed: u64) -> RingCorruption {
        RingCorruption::WriteOutOfBounds {
            write,
            consumed,
            limit: self.write_limit(consumed),
        }
    }

    /// Checks that the commit word `word` of the (incomplete) packet at `pos`, read
    /// while `consumed` stayed at `pos`, counts bytes of `pos`'s generation: between
    /// the previous generation's completion and this one's.
    fn check_commit(&self, pos: u64, word: u64) -> Result<(), RingCorruption> {
        let g = self.ring.geometry();
        let end = self.ring.complete_bytes(pos);
        let start = end.wrapping_sub(g.subbuf_size as u32);
        if u64::from((word as u32).wrapping_sub(start)) <= g.subbuf_size {
            return Ok(());
        }
        Err(RingCorruption::CommitOutOfGeneration {
            slot: (pos / g.subbuf_size) % g.num_subbuf,
            word,
            generation: pos / (g.subbuf_size * g.num_subbuf),
            start,
            end,
        })
    }

    /// Checks the header of the packet copied from `pos` against what the ring's
    /// producers write there: the CTF magic and consistent sizes, the whole
    /// sub-buffer as `packet_size`, this position's sequence number, the ring's
    /// stream, CPU and trace uuid, and no more `events_discarded` than the ring has
    /// counted (read after the copy: the closer read them before it).
    fn check_header(&self, pos: u64, packet: &[u8]) -> Result<(), RingCorruption> {
        let sb = self.ring.geometry().subbuf_size;
        let seq_num = pos / sb;
        let header = PacketHeader::read(packet)
            .map_err(|source| RingCorruption::BadPacket { seq_num, source })?;
        let discarded = self.ring.events_discarded();
        let fields = [
            ("packet_size", header.open.packet_size, sb),
            ("packet_seq_num", header.open.seq_num, seq_num),
            (
                "stream_id",
                header.open.stream_id.into(),
                self.ring.stream_id().into(),
            ),
            (
                "cpu_id",
                header.open.cpu_id.into(),
                self.ring.cpu_id().into(),
            ),
            ("uuid", u64::from(header.open.uuid != self.ring.uuid()), 0),
        ];
        if let Some((field, found, expected)) = fields.into_iter().find(|(_, f, e)| f != e) {
            return Err(RingCorruption::PacketField {
                seq_num,
                field,
                found,
                expected,
            });
        }
        if header.close.events_discarded > discarded {
            return Err(RingCorruption::PacketField {
                seq_num,
                field: "events_discarded",
                found: header.close.events_discarded,
                expected: discarded,
            });
        }
        Ok(())
    }

    /// Marks the ring corrupt for `reason`, counting as dropped the sub-buffers it
    /// holds unread: those between `consumed` and `write` when `at` gives checked
    /// positions, else all of them.
    fn mark_corrupt(&mut self, reason: RingCorruption, at: Option<Positions>) {
        let g = self.ring.geometry();
        let packets_dropped = at.map_or(g.num_subbuf, |at| {
            at.write
                .saturating_sub(at.consumed)
                .div_ceil(g.subbuf_size)
                .min(g.num_subbuf)
        });
        self.corrupt = Some(Corruption {
            reason,
            packets_dropped,
        });
    }
}

/// CAS attempts `Ring::flush_ring` makes before leaving the packet to its producers: a
/// bound on the consumer's loop whatever an app does to `write`.
const FLUSH_ATTEMPTS: usize = 1024;

/// A `write` value `Ring::flush_ring` refused: before the first value it read, or past
/// the consumer's limit.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct FlushBounds {
    /// The previous value read (or the lower bound).
    was: u64,
    /// The value read.
    found: u64,
}

/// The consumer's own operations on the ring's shared memory: the forced close of a
/// partly filled packet and the optimistic copy of a packet out.
impl Ring {
    /// Forces a switch of a partly filled packet so that the consumer can take it.
    /// Returns whether a packet was closed. Consumer side: every `write` value it
    /// reads must lie in `first..=limit` (the consumer's bounds for this ring) and
    /// never go back, else `Err(FlushBounds)` names it and nothing is written; after
    /// `FLUSH_ATTEMPTS` lost races it gives up (`Ok(false)`): producers that busy
    /// close their packets themselves.
    fn flush_ring(&self, first: u64, limit: u64) -> Result<bool, FlushBounds> {
        let sb = self.geometry.subbuf_size;
        let (mut old, mut last) = self.write_and_time();
        let mut was = first;
        for _ in 0..FLUSH_ATTEMPTS {
            if old < was || old > limit {
                return Err(FlushBounds { was, found: old });
            }
            let off = old & (sb - 1);
            if off == 0 {
                return Ok(false);
            }
            // Not before the packet's last event, as producers do (see
            // `Ring::reserve`); a `time` an app set far ahead dates only its own
            // ring's packet end, and `max` cannot overflow.
            let timestamp = self.clock.now().max(last);
            match self.cas_write_time((old, last), (old - off + sb, timestamp)) {
                Ok(_) => {
                    // LP: the flush CAS closed the packet; the close commit follows.
                    self.close_packet(old, timestamp);
                    return Ok(true);
                }
                Err(current) => {
                    was = old;
                    (old, last) = current;
                }
            }
        }
        Ok(false)
    }

    /// Replaces `out` with a copy of the packet in the sub-buffer holding position
    /// `p`, which producers may be overwriting (overwrite mode): its header, then its
    /// content as the header gives it (rounded up to 8 bytes), not the padding. A
    /// short-lived app's packet is mostly padding. A torn header (a racing overwrite,
    /// which the caller's CAS then detects) makes it copy the whole sub-buffer.
    ///
    /// # Safety
    /// As `Mapping::copy_racy`: the caller uses the copy only once it has proved that
    /// no producer wrote the slot during the copy.
    unsafe fn copy_packet(&self, p: u64, out: &mut Vec<u8>) {
        let sb = self.geometry.subbuf_size as usize;
        let at = self.data_index(p & !(self.geometry.subbuf_size - 1));
        let head = PACKET_HEADER_SIZE.next_multiple_of(8);
        out.clear();
        // SAFETY: forwarded contract of `Mapping::copy_racy`.
        unsafe { self.map.copy_racy(at, head, out) };
        let len = match PacketHeader::read(out) {
            Ok(h) => (h.close.content_size as usize)
                .next_multiple_of(8)
                .clamp(head, sb),
            Err(_) => sb,
        };
        // SAFETY: as above; `head..len` lies inside the sub-buffer.
        unsafe { self.map.copy_racy(at + head, len - head, out) };
    }
}
