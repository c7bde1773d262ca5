//! One stream's ring: creation ([`BlankRing`], [`Ring::create`], [`Ring::init`]),
//! validation of a ring received from the daemon ([`Ring::from_fd`]), and the views of
//! its shared words that the producer (`super::producer`, `super::slow_path`) and the
//! consumer (`super::consumer`) work on. No algorithm lives here.

use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering::*};

use nix::fcntl::{FcntlArg, SealFlag, fcntl};
use nix::sys::memfd::{MFdFlags, memfd_create};

use super::ShmError;
use super::channel::Wakeup;
use super::clock::{TraceClock, host_clock};
use super::layout::*;

/// A stream's ring buffer, mapped in this process; shared by all its producer threads.
pub struct Ring {
    /// The shared memory; shared with the producer threads' claimed-record lists.
    pub(super) map: Arc<Mapping>,
    /// The memfd, kept to hand to other processes.
    fd: OwnedFd,
    /// Geometry as validated at map time; never re-read from shared memory, so a
    /// corrupted header cannot send us out of bounds.
    pub(super) geometry: Geometry,
    /// log2(subbuf_size).
    pub(super) subbuf_shift: u32,
    /// log2(subbuf_size * num_subbuf).
    pub(super) ring_shift: u32,
    /// Offset of sub-buffer 0 in the mapping.
    pub(super) data_at: usize,
    /// Offset of the first holder record in the mapping.
    pub(super) records_at: usize,
    /// Behaviour when full.
    pub(super) mode: Mode,
    /// Packet header fields fixed for the ring's life.
    pub(super) cpu_id: u32,
    /// Stream class id for packet headers.
    pub(super) stream_id: u32,
    /// Trace uuid for packet headers.
    pub(super) uuid: [u8; 16],
    /// Bytes of event context after each event header, from the channel this process
    /// made or was sent (never from shared memory): the lost-event filler zeroes them.
    pub(super) context_len: usize,
    /// Signalled once per completed sub-buffer.
    pub(super) wakeup: Arc<Wakeup>,
    /// The clock every writer of this ring reads, as the header gave it at map time
    /// (the daemon's copy is its own, never re-read from shared memory).
    pub(super) clock: TraceClock,
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
    /// Reservations a live producer dropped without committing (a panic in a field
    /// encoder): each became one lost event in its packet.
    pub abandoned_reservations: u64,
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
        let (mult, offset) = host_clock()?.words();
        map.u64_at(CLOCK_MULT_AT).store(mult, Relaxed);
        map.u64_at(CLOCK_OFFSET_AT).store(offset, Relaxed);
        Ring::from_mapping(map, blank.fd, g.file_size(), wakeup, config.context_len)
    }

    /// Maps a ring received from the daemon, refusing anything that is not a whole,
    /// sealed ring of this layout version. Its events carry `context_len` bytes of
    /// event context (the channel's contexts, as the daemon sent them).
    pub fn from_fd(fd: OwnedFd, wakeup: Arc<Wakeup>, context_len: usize) -> Result<Ring, ShmError> {
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
        Ring::from_mapping(map, fd, len, wakeup, context_len)
    }

    /// Validates the header of a mapping of `len` bytes and builds the ring.
    fn from_mapping(
        map: Arc<Mapping>,
        fd: OwnedFd,
        len: u64,
        wakeup: Arc<Wakeup>,
        context_len: usize,
    ) -> Result<Ring, ShmError> {
        if !Mapping::pair_is_lock_free() {
            return Err(ShmError::NoPairCas);
        }
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
        let clock = TraceClock::from_words(
            map.u64_at(CLOCK_MULT_AT).load(Relaxed),
            map.u64_at(CLOCK_OFFSET_AT).load(Relaxed),
        )?;
        Ok(Ring {
            clock,
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
            context_len,
            wakeup,
        })
    }

    /// The clock this ring's timestamps are read from.
    pub fn clock(&self) -> TraceClock {
        self.clock
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
    #[inline]
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
            abandoned_reservations: self.map.u64_at(ABANDONED_AT).load(Relaxed),
        }
    }

    /// Offset in the mapping of word `field` of holder record `index`.
    pub(super) fn record_offset(&self, index: usize, field: usize) -> usize {
        self.records_at + index * RECORD_SIZE + field
    }

    /// Word `field` (`RECORD_*`) of holder record `index` (< [`RECORDS`]).
    #[inline]
    pub(crate) fn record_word(&self, index: usize, field: usize) -> &AtomicU64 {
        self.map.u64_at(self.record_offset(index, field))
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

    /// Low half of the commit word when the packet holding `pos` is complete.
    #[inline]
    pub(crate) fn complete_bytes(&self, pos: u64) -> u32 {
        (((pos >> self.ring_shift) + 1) * self.geometry.subbuf_size) as u32
    }

    /// The commit word of the slot holding position `pos`.
    #[inline]
    pub(crate) fn commit_word(&self, pos: u64) -> &AtomicU64 {
        let slot = (pos >> self.subbuf_shift) & (self.geometry.num_subbuf - 1);
        self.map.u64_at(COMMIT_AT + 8 * slot as usize)
    }

    /// The free-running write position (the low half of the pair
    /// [`Ring::cas_write_time`] moves).
    #[inline]
    pub(crate) fn write_word(&self) -> &AtomicU64 {
        self.map.u64_at(WRITE_AT)
    }

    /// Moves `(write, time)` from `old` to `new` in one 16-byte CAS, or gives the pair
    /// as it is: a reservation or a flush moves the position and sets the time it
    /// happened at together, so that timestamps never go back along positions
    /// whatever order the writers' clocks were read in. AcqRel: the Release half
    /// publishes the caller's holder-record stores with the position they name, the
    /// Acquire half orders its writes into the reservation after the CAS it follows.
    #[inline]
    pub(crate) fn cas_write_time(
        &self,
        old: (u64, u64),
        new: (u64, u64),
    ) -> Result<(), (u64, u64)> {
        let pack = |(write, time): (u64, u64)| u128::from(write) | u128::from(time) << 64;
        self.map
            .pair_at(WRITE_AT)
            .compare_exchange(pack(old), pack(new), AcqRel, Acquire)
            .map(drop)
            .map_err(|pair| (pair as u64, (pair >> 64) as u64))
    }

    /// `write` (Acquire) and `time`, as two loads: a guess for the pair CAS, which
    /// fails and returns the pair as it is if the two were torn apart.
    #[inline]
    pub(crate) fn write_and_time(&self) -> (u64, u64) {
        let write = self.write_word().load(Acquire);
        (write, self.map.u64_at(TIME_AT).load(Relaxed))
    }

    /// The free-running consumed position.
    pub(crate) fn consumed_word(&self) -> &AtomicU64 {
        self.map.u64_at(CONSUMED_AT)
    }

    /// Events lost with given-up packets.
    pub(crate) fn lost_dead_word(&self) -> &AtomicU64 {
        self.map.u64_at(LOST_DEAD_AT)
    }

    /// Index in the mapping of stream position `pos`.
    #[inline]
    pub(super) fn data_index(&self, pos: u64) -> usize {
        self.data_at + (pos & ((1 << self.ring_shift) - 1)) as usize
    }
}
