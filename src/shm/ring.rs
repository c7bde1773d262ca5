//! One stream's ring: creation, validation, and the producer's reserve/commit path.
//!
//! Every producer thread holds a record in the ring's holder table (claimed once per
//! ring, by a CAS of its `pid << 32 | tid` into a free owner word; released when the
//! thread exits) and, around each reservation, stores there the write position its
//! CAS expects, the length and the clock value, then clears the length after the
//! commit: plain stores, no system call, no lock. The daemon reads the table to
//! learn who is inside a reservation (see [`super::Consumer::release_dead_holders`]).

use std::cell::{Cell, RefCell};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering::*};

use nix::fcntl::{FcntlArg, SealFlag, fcntl};
use nix::sys::memfd::{MFdFlags, memfd_create};

use super::ShmError;
use super::channel::Wakeup;
use super::clock::now_ns;
use super::layout::*;
use crate::ctf::packet::{
    CLOSE_RANGES, EVENT_HEADER_SIZE, OPEN_RANGES, PACKET_HEADER_SIZE, PacketClose, PacketHeader,
    PacketOpen, write_event_header,
};

/// One added to the high half of a commit word: one more event committed.
const ONE_EVENT: u64 = 1 << 32;

thread_local! {
    /// This thread's owner word in holder records, `pid << 32 | tid`; 0 until the
    /// thread first reserves (and again in a forked child, see
    /// [`forget_thread_identity`]).
    static IDENTITY: Cell<u64> = const { Cell::new(0) };
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

/// A stream's ring buffer, mapped in this process; shared by all its producer threads.
pub struct Ring {
    /// The shared memory; shared with the producer threads' claimed-record lists.
    map: Arc<Mapping>,
    /// The memfd, kept to hand to other processes.
    fd: OwnedFd,
    /// Geometry as validated at map time; never re-read from shared memory, so a
    /// corrupted header cannot send us out of bounds.
    geometry: Geometry,
    /// log2(subbuf_size).
    subbuf_shift: u32,
    /// log2(subbuf_size * num_subbuf).
    ring_shift: u32,
    /// Offset of sub-buffer 0 in the mapping.
    data_at: usize,
    /// Offset of the first holder record in the mapping.
    records_at: usize,
    /// Behaviour when full.
    mode: Mode,
    /// Packet header fields fixed for the ring's life.
    cpu_id: u32,
    /// Stream class id for packet headers.
    stream_id: u32,
    /// Trace uuid for packet headers.
    uuid: [u8; 16],
    /// Signalled once per completed sub-buffer.
    wakeup: Arc<Wakeup>,
}

/// The loss counters of a ring, as read at one moment.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RingCounters {
    /// Events dropped because the ring was full (or, in overwrite mode, its next slot
    /// still incomplete).
    pub discarded_full: u64,
    /// Events dropped because they exceed a sub-buffer.
    pub too_big: u64,
    /// Packets reused before the consumer read them (overwrite mode).
    pub overwritten_packets: u64,
    /// Events lost to a dead producer: one per reservation it never committed
    /// (filled with a lost event), or a given-up packet's events when its holder was
    /// unknown.
    pub lost_dead_producer: u64,
    /// Reservations made without a holder record (the table was full, or the
    /// reservation was nested in another of its thread's): a death inside one falls
    /// back to giving up its packet after a delay.
    pub unrecorded_reservations: u64,
}

/// CAS attempts [`Ring::flush`] makes before leaving the packet to its producers: a
/// bound on the consumer's loop whatever an app does to `write`.
const FLUSH_ATTEMPTS: usize = 1024;

/// A `write` value [`Ring::flush`] refused: before the first value it read, or past
/// the consumer's limit.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct FlushBounds {
    /// The previous value read (or the lower bound).
    pub(crate) was: u64,
    /// The value read.
    pub(crate) found: u64,
}

/// Space reserved for one event; [`Reservation::commit`] publishes it.
///
/// Not committing (e.g. the process dies here) stalls the packet until the daemon
/// sees the holder dead and fills the reservation with a lost event, see
/// [`super::Consumer::release_dead_holders`].
#[must_use = "an uncommitted reservation stalls its packet"]
pub struct Reservation<'a> {
    /// The ring reserved in.
    ring: &'a Ring,
    /// Byte position of the event.
    pos: u64,
    /// Length reserved.
    len: u64,
    /// Clock read inside the reserve loop: later positions never have earlier times.
    timestamp: u64,
    /// This thread's holder record, cleared at commit; `None` if the table was full.
    record: Option<usize>,
}

impl Reservation<'_> {
    /// The timestamp to record: taken with the reservation so that it orders with it.
    pub fn timestamp(&self) -> u64 {
        self.timestamp
    }

    /// Byte position in the stream (free-running), for tests and diagnostics.
    pub fn position(&self) -> u64 {
        self.pos
    }

    /// The reserved bytes.
    pub fn buf(&mut self) -> &mut [u8] {
        let at = self.ring.data_index(self.pos);
        // SAFETY: the successful CAS in `reserve` gave this reservation `pos..pos+len`
        // alone; no consumer reads it before the packet is complete, which needs our
        // commit; it never crosses a sub-buffer end (len <= max_event_len).
        unsafe { self.ring.map.slice_mut(at, self.len as usize) }
    }

    /// Publishes the event; wakes the consumer if it completes the packet.
    pub fn commit(self) {
        self.ring.commit(self.pos, self.len + ONE_EVENT);
        if let Some(record) = self.record {
            // Relaxed: only a dead holder's record is acted on, and a death orders
            // all its stores before the daemon hears of it (see docs/shm.md).
            self.ring.record_word(record, RECORD_LEN).store(0, Relaxed);
        }
    }
}

/// Whether a reservation also switches packets.
enum Switch {
    /// Stays inside the open packet.
    None,
    /// Opens the packet at this position (the write position was on a boundary).
    Open(u64),
    /// Closes the packet that `old` is in and opens the next one.
    CloseOpen(u64, u64),
}

/// Why the next packet cannot be opened yet.
enum NoRoom {
    /// The ring is full (or its oldest packet incomplete): drop.
    Full,
    /// `consumed` moved under us: load again.
    Retry,
}

/// The memory of a ring made ahead of need: a sealed memfd of its geometry's size,
/// mapped, its header not written yet (so no process accepts it as a ring).
/// [`Ring::init`] finishes it with a few stores.
pub struct BlankRing {
    /// The shared memory.
    map: Arc<Mapping>,
    /// The memfd.
    fd: OwnedFd,
    /// The geometry it is sized for.
    geometry: Geometry,
}

impl BlankRing {
    /// A new sealed memfd named `name` (visible in /proc/*/fd), sized and mapped
    /// for `geometry`.
    pub fn create(name: &str, geometry: Geometry) -> Result<BlankRing, ShmError> {
        geometry.validate()?;
        let fd = memfd_create(name, MFdFlags::MFD_CLOEXEC | MFdFlags::MFD_ALLOW_SEALING)
            .map_err(ShmError::sys("memfd_create"))?;
        let size = geometry.file_size();
        nix::unistd::ftruncate(&fd, size as i64).map_err(ShmError::sys("ftruncate"))?;
        let seals = SealFlag::F_SEAL_SHRINK | SealFlag::F_SEAL_GROW | SealFlag::F_SEAL_SEAL;
        fcntl(&fd, FcntlArg::F_ADD_SEALS(seals)).map_err(ShmError::sys("sealing the memfd"))?;
        let map = Arc::new(Mapping::new(&fd, size)?);
        // The geometry is known now: writing it faults the header page in here
        // (off the registration path when a pool makes the ring). The magic stays
        // zero until `Ring::init`, so no peer accepts a blank ring.
        map.u32_at(SUBBUF_SIZE_AT)
            .store(geometry.subbuf_size as u32, Relaxed);
        map.u32_at(NUM_SUBBUF_AT)
            .store(geometry.num_subbuf as u32, Relaxed);
        Ok(BlankRing { map, fd, geometry })
    }
}

impl Ring {
    /// Creates a ring in a new sealed memfd named `name` (visible in /proc/*/fd).
    pub fn create(
        name: &str,
        config: &RingConfig,
        cpu_id: u32,
        wakeup: Arc<Wakeup>,
    ) -> Result<Ring, ShmError> {
        Ring::init(
            BlankRing::create(name, config.geometry)?,
            config,
            cpu_id,
            wakeup,
        )
    }

    /// Writes the header of `blank` for `config` and CPU `cpu_id`: the ring is then
    /// ready to hand to apps.
    pub fn init(
        blank: BlankRing,
        config: &RingConfig,
        cpu_id: u32,
        wakeup: Arc<Wakeup>,
    ) -> Result<Ring, ShmError> {
        let g = config.geometry;
        if blank.geometry != g {
            return Err(ShmError::SizeMismatch {
                expected: g.file_size(),
                len: blank.geometry.file_size(),
            });
        }
        let map = blank.map;
        // The file is private to us until its fd is sent, so Relaxed stores suffice:
        // passing the fd (a system call) orders them before any peer's read.
        map.u64_at(MAGIC_AT).store(MAGIC, Relaxed);
        map.u32_at(VERSION_AT).store(VERSION, Relaxed);
        map.u32_at(MODE_AT).store(config.mode as u32, Relaxed);
        map.u32_at(CPU_ID_AT).store(cpu_id, Relaxed);
        map.u32_at(STREAM_ID_AT).store(config.stream_id, Relaxed);
        let uuid = u128::from_le_bytes(config.uuid);
        map.u64_at(UUID_AT).store(uuid as u64, Relaxed);
        map.u64_at(UUID_AT + 8).store((uuid >> 64) as u64, Relaxed);
        Ring::from_mapping(map, blank.fd, g.file_size(), wakeup)
    }

    /// Maps a ring received from the daemon, refusing anything that is not a whole,
    /// sealed ring of this layout version.
    pub fn from_fd(fd: OwnedFd, wakeup: Arc<Wakeup>) -> Result<Ring, ShmError> {
        let seals = fcntl(&fd, FcntlArg::F_GET_SEALS).map_err(ShmError::sys("reading seals"))?;
        if SealFlag::from_bits_truncate(seals) & SealFlag::F_SEAL_SHRINK != SealFlag::F_SEAL_SHRINK
        {
            return Err(ShmError::NotSealed);
        }
        let len = nix::sys::stat::fstat(&fd)
            .map_err(ShmError::sys("fstat of the ring"))?
            .st_size as u64;
        if len < COMMIT_AT as u64 {
            return Err(ShmError::Truncated {
                len,
                need: COMMIT_AT as u64,
            });
        }
        let map = Arc::new(Mapping::new(&fd, len)?);
        Ring::from_mapping(map, fd, len, wakeup)
    }

    /// Validates the header of a mapping of `len` bytes and builds the ring.
    fn from_mapping(
        map: Arc<Mapping>,
        fd: OwnedFd,
        len: u64,
        wakeup: Arc<Wakeup>,
    ) -> Result<Ring, ShmError> {
        let magic = map.u64_at(MAGIC_AT).load(Relaxed);
        if magic != MAGIC {
            return Err(ShmError::BadMagic {
                found: magic,
                expected: MAGIC,
            });
        }
        let version = map.u32_at(VERSION_AT).load(Relaxed);
        if version != VERSION {
            return Err(ShmError::BadVersion {
                found: version,
                expected: VERSION,
            });
        }
        let geometry = Geometry {
            subbuf_size: map.u32_at(SUBBUF_SIZE_AT).load(Relaxed).into(),
            num_subbuf: map.u32_at(NUM_SUBBUF_AT).load(Relaxed).into(),
        };
        geometry.validate()?;
        if geometry.file_size() != len {
            return Err(ShmError::SizeMismatch {
                expected: geometry.file_size(),
                len,
            });
        }
        let mode = Mode::from_word(map.u32_at(MODE_AT).load(Relaxed))?;
        let uuid = u128::from(map.u64_at(UUID_AT).load(Relaxed))
            | u128::from(map.u64_at(UUID_AT + 8).load(Relaxed)) << 64;
        Ok(Ring {
            cpu_id: map.u32_at(CPU_ID_AT).load(Relaxed),
            stream_id: map.u32_at(STREAM_ID_AT).load(Relaxed),
            map,
            fd,
            subbuf_shift: geometry.subbuf_size.trailing_zeros(),
            ring_shift: (geometry.subbuf_size * geometry.num_subbuf).trailing_zeros(),
            data_at: geometry.data_offset() as usize,
            records_at: geometry.records_offset() as usize,
            geometry,
            mode,
            uuid: uuid.to_le_bytes(),
            wakeup,
        })
    }

    /// The memfd, to send to an app.
    pub fn as_fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }

    /// Sub-buffer size and count.
    pub fn geometry(&self) -> Geometry {
        self.geometry
    }

    /// Discard or overwrite.
    pub fn mode(&self) -> Mode {
        self.mode
    }

    /// CPU this ring belongs to.
    pub fn cpu_id(&self) -> u32 {
        self.cpu_id
    }

    /// Stream class id every packet header of this ring carries.
    pub fn stream_id(&self) -> u32 {
        self.stream_id
    }

    /// Trace uuid every packet header of this ring carries.
    pub fn uuid(&self) -> [u8; 16] {
        self.uuid
    }

    /// The loss counters now.
    pub fn counters(&self) -> RingCounters {
        RingCounters {
            discarded_full: self.map.u64_at(DISCARDED_FULL_AT).load(Relaxed),
            too_big: self.map.u64_at(TOO_BIG_AT).load(Relaxed),
            overwritten_packets: self.map.u64_at(OVERWRITTEN_AT).load(Relaxed),
            lost_dead_producer: self.map.u64_at(LOST_DEAD_AT).load(Relaxed),
            unrecorded_reservations: self.map.u64_at(UNRECORDED_AT).load(Relaxed),
        }
    }

    /// Records one event: header (id, timestamp) then `payload_len` bytes written by
    /// `encode`. Returns false if the event was dropped (and counted).
    #[inline]
    pub fn write_event(&self, id: u32, payload_len: usize, encode: impl FnOnce(&mut [u8])) -> bool {
        let Some(mut r) = self.reserve(EVENT_HEADER_SIZE + payload_len) else {
            return false;
        };
        let ts = r.timestamp();
        let buf = r.buf();
        write_event_header(buf, id, ts);
        encode(&mut buf[EVENT_HEADER_SIZE..]);
        r.commit();
        true
    }

    /// Reserves `len` bytes for one event, switching packets when needed; `None` when
    /// the event is dropped (counted as too big or discarded).
    #[inline]
    pub fn reserve(&self, len: usize) -> Option<Reservation<'_>> {
        let len = len as u64;
        if len > self.geometry.max_event_len() {
            self.map.u64_at(TOO_BIG_AT).fetch_add(1, Relaxed);
            return None;
        }
        let sb = self.geometry.subbuf_size;
        let record = self.record();
        let write = self.write_word();
        // Acquire pairs with the Release half of other producers' CAS: their clock
        // reads happen before ours, so a later position never has an earlier time.
        let mut old = write.load(Acquire);
        loop {
            let timestamp = now_ns();
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
                        old = write.load(Acquire);
                        continue;
                    }
                    Err(NoRoom::Full) => {
                        if let Some(record) = record {
                            self.record_word(record, RECORD_LEN).store(0, Relaxed);
                        }
                        self.map.u64_at(DISCARDED_FULL_AT).fetch_add(1, Relaxed);
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
            // The linearization point of a reservation.
            match write.compare_exchange_weak(old, pos + len, AcqRel, Acquire) {
                Ok(_) => {
                    match switch {
                        Switch::None => {}
                        Switch::Open(p) => self.open_packet(p, timestamp),
                        Switch::CloseOpen(o, p) => {
                            self.close_packet(o, timestamp);
                            self.open_packet(p, timestamp);
                        }
                    }
                    if let (Some(record), Switch::Open(_) | Switch::CloseOpen(..)) =
                        (record, switch)
                    {
                        // The switch is done: from now on the record reads as a plain
                        // reservation at `pos` (inside its packet, not at a boundary).
                        self.record_word(record, RECORD_AT).store(pos, Relaxed);
                    }
                    return Some(Reservation {
                        ring: self,
                        pos,
                        len,
                        timestamp,
                        record,
                    });
                }
                Err(current) => old = current,
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
    fn unless_nested(&self, index: usize) -> Option<usize> {
        if self.record_word(index, RECORD_LEN).load(Relaxed) == 0 {
            return Some(index);
        }
        self.map.u64_at(UNRECORDED_AT).fetch_add(1, Relaxed);
        None
    }

    /// Finds this thread's record away from its home slot, or claims a free one (CAS
    /// 0 -> `me`) and lists it for release at thread exit. `None` (counted) when all
    /// are taken: the thread then reserves without a record.
    #[cold]
    fn claim_record(&self, me: u64) -> Option<usize> {
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
        self.map.u64_at(UNRECORDED_AT).fetch_add(1, Relaxed);
        None
    }

    /// Offset in the mapping of word `field` of holder record `index`.
    fn record_offset(&self, index: usize, field: usize) -> usize {
        self.records_at + index * RECORD_SIZE + field
    }

    /// Word `field` (`RECORD_*`) of holder record `index` (< [`RECORDS`]).
    #[inline]
    pub(crate) fn record_word(&self, index: usize, field: usize) -> &AtomicU64 {
        self.map.u64_at(self.record_offset(index, field))
    }

    /// Checks that the packet at `p` may be opened: its slot's previous generation is
    /// complete and consumed; in overwrite mode, takes it from the consumer.
    fn make_room(&self, p: u64) -> Result<(), NoRoom> {
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
        self.commit(p, PACKET_HEADER_SIZE as u64);
    }

    /// Closes the packet that position `old` is in: writes the close half of its
    /// header (content ends at `old`) and commits the padding after `old`.
    pub(crate) fn close_packet(&self, old: u64, timestamp: u64) {
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
        self.commit(old, sb - off);
    }

    /// Events the ring's producers counted discarded (full or too big), as a packet
    /// header's `events_discarded` gives them; saturating, since the counters are
    /// shared memory an app may have set to anything.
    pub(crate) fn events_discarded(&self) -> u64 {
        self.map
            .u64_at(DISCARDED_FULL_AT)
            .load(Relaxed)
            .saturating_add(self.map.u64_at(TOO_BIG_AT).load(Relaxed))
    }

    /// Forces a switch of a partly filled packet so that the consumer can take it.
    /// Returns whether a packet was closed. Consumer side: every `write` value it
    /// reads must lie in `first..=limit` (the consumer's bounds for this ring) and
    /// never go back, else `Err(FlushBounds)` names it and nothing is written; after
    /// `FLUSH_ATTEMPTS` lost races it gives up (`Ok(false)`): producers that busy
    /// close their packets themselves.
    pub(crate) fn flush(&self, first: u64, limit: u64) -> Result<bool, FlushBounds> {
        let sb = self.geometry.subbuf_size;
        let write = self.write_word();
        let mut old = write.load(Acquire);
        let mut was = first;
        for _ in 0..FLUSH_ATTEMPTS {
            if old < was || old > limit {
                return Err(FlushBounds { was, found: old });
            }
            let off = old & (sb - 1);
            if off == 0 {
                return Ok(false);
            }
            let timestamp = now_ns();
            match write.compare_exchange_weak(old, old - off + sb, AcqRel, Acquire) {
                Ok(_) => {
                    self.close_packet(old, timestamp);
                    return Ok(true);
                }
                Err(current) => {
                    was = old;
                    old = current;
                }
            }
        }
        Ok(false)
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

    /// Adds `amount` (bytes in the low half, events in the high half) to the commit
    /// word of the packet holding `pos`; signals the consumer if that completes it.
    #[inline]
    fn commit(&self, pos: u64, amount: u64) {
        let word = self.commit_word(pos);
        // Release: our writes to the packet happen before the consumer's Acquire load
        // that sees the packet complete (a chain of RMWs continues release sequences).
        let after = word.fetch_add(amount, Release).wrapping_add(amount);
        if after as u32 == self.complete_bytes(pos) {
            self.wakeup.signal();
        }
    }

    /// Low half of the commit word when the packet holding `pos` is complete.
    pub(crate) fn complete_bytes(&self, pos: u64) -> u32 {
        (((pos >> self.ring_shift) + 1) * self.geometry.subbuf_size) as u32
    }

    /// The commit word of the slot holding position `pos`.
    pub(crate) fn commit_word(&self, pos: u64) -> &AtomicU64 {
        let slot = (pos >> self.subbuf_shift) & (self.geometry.num_subbuf - 1);
        self.map.u64_at(COMMIT_AT + 8 * slot as usize)
    }

    /// The free-running write position.
    pub(crate) fn write_word(&self) -> &AtomicU64 {
        self.map.u64_at(WRITE_AT)
    }

    /// The free-running consumed position.
    pub(crate) fn consumed_word(&self) -> &AtomicU64 {
        self.map.u64_at(CONSUMED_AT)
    }

    /// Events lost with given-up packets.
    pub(crate) fn lost_dead_word(&self) -> &AtomicU64 {
        self.map.u64_at(LOST_DEAD_AT)
    }

    /// Writes a lost event over the dead reservation `pos..pos + len` (inside one
    /// packet, at least an event header long) and commits it as one event: the packet
    /// stays parseable and keeps its other events.
    pub(crate) fn fill_dead_reservation(&self, pos: u64, len: u64, timestamp: u64) {
        // SAFETY: the caller proved `pos..pos + len` a reservation, inside one packet,
        // whose holder is dead and that nobody committed: no one else writes it, and
        // the consumer reads it only after the commit below completes the packet.
        let event = unsafe { self.map.slice_mut(self.data_index(pos), len as usize) };
        crate::ctf::packet::write_lost_event(event, timestamp);
        self.commit(pos, len + ONE_EVENT);
    }

    /// Index in the mapping of stream position `pos`.
    #[inline]
    fn data_index(&self, pos: u64) -> usize {
        self.data_at + (pos & ((1 << self.ring_shift) - 1)) as usize
    }

    /// Replaces `out` with a copy of the packet in the sub-buffer holding position
    /// `p`, which producers may be overwriting (overwrite mode): its header, then its
    /// content as the header gives it (rounded up to 8 bytes), not the padding. A
    /// short-lived app's packet is mostly padding. A torn header (a racing overwrite,
    /// which the caller's CAS then detects) makes it copy the whole sub-buffer.
    ///
    /// # Safety
    /// As [`Mapping::copy_racy`]: the caller uses the copy only once it has proved that
    /// no producer wrote the slot during the copy.
    pub(crate) unsafe fn copy_packet(&self, p: u64, out: &mut Vec<u8>) {
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
