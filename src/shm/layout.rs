//! The bytes of a ring file and the only code that turns them into Rust references.
//!
//! ```text
//! 0    magic u64 | version u32 | subbuf_size u32 | num_subbuf u32 | mode u32
//! 24   cpu_id u32 | stream_id u32 | uuid [16]                  (written once, then read-only)
//! 48   clock_mult u64 | clock_offset i64   the ring's trace clock (`TraceClock`, read-only)
//! 64   write     AtomicU64   free-running byte position          (own cache line)
//! 72   time      AtomicU64   timestamp of the reservation or flush that last moved
//!                            `write`; the two are one 16-byte pair, changed by one CAS
//! 128  consumed  AtomicU64   free-running, multiple of subbuf_size
//! 192  discarded_full, too_big, overwritten_packets, lost_dead_producer   AtomicU64 each
//! 224  unrecorded  AtomicU64  reservations made without a holder record (table full)
//! 232  abandoned   AtomicU64  reservations dropped uncommitted, filled with a lost event
//! 256  commit[i] AtomicU64   per sub-buffer: low 32 bits bytes committed (mod 2^32),
//!                            high 32 bits events committed
//! records_offset (64-aligned): RECORDS holder records of RECORD_SIZE bytes, each
//!      owner (pid << 32 | tid) | at | len | timestamp   AtomicU64 each, own cache line
//! data_offset (page aligned): num_subbuf sub-buffers of subbuf_size bytes
//! ```
//!
//! Shared memory is only ever reached by offset from this process's own mapping.

use std::sync::atomic::{AtomicU32, AtomicU64};

use memmap2::MmapRaw;
use portable_atomic::AtomicU128;

use super::ShmError;
use crate::ctf::packet::PACKET_HEADER_SIZE;

/// First eight bytes of every ring file: "USTRING1" read little-endian.
pub(crate) const MAGIC: u64 = u64::from_le_bytes(*b"USTRING1");
/// Layout version; bump on any change to this file's table. 2: `consumed` lost its
/// READING bit (the consumer copies packets out optimistically). 3: holder records
/// (who is inside a reservation) after the commit words, and the `unrecorded` counter.
/// 4: the trace clock's two words (TSC multiplier and offset, or zero: CLOCK_MONOTONIC).
/// 5: `time` beside `write`, moved with it by a 16-byte CAS.
pub(crate) const VERSION: u32 = 5;

// Byte offsets of the header fields, as in the table above.
pub(crate) const MAGIC_AT: usize = 0;
pub(crate) const VERSION_AT: usize = 8;
pub(crate) const SUBBUF_SIZE_AT: usize = 12;
pub(crate) const NUM_SUBBUF_AT: usize = 16;
pub(crate) const MODE_AT: usize = 20;
pub(crate) const CPU_ID_AT: usize = 24;
pub(crate) const STREAM_ID_AT: usize = 28;
pub(crate) const UUID_AT: usize = 32;
pub(crate) const CLOCK_MULT_AT: usize = 48;
pub(crate) const CLOCK_OFFSET_AT: usize = 56;
pub(crate) const WRITE_AT: usize = 64;
pub(crate) const TIME_AT: usize = 72;
pub(crate) const CONSUMED_AT: usize = 128;
pub(crate) const DISCARDED_FULL_AT: usize = 192;
pub(crate) const TOO_BIG_AT: usize = 200;
pub(crate) const OVERWRITTEN_AT: usize = 208;
pub(crate) const LOST_DEAD_AT: usize = 216;
pub(crate) const UNRECORDED_AT: usize = 224;
/// Added inside layout 3's header without a version bump: the word was zero padding
/// before, and a ring always has both sides from the same build.
pub(crate) const ABANDONED_AT: usize = 232;
pub(crate) const COMMIT_AT: usize = 256;

/// Holder records per ring: producer threads of all processes that may be inside a
/// reservation of this ring at once; a thread that finds none free reserves without
/// one (counted in `unrecorded`).
pub(crate) const RECORDS: usize = 64;
/// Bytes per holder record: one cache line, so that producer threads never share one.
pub(crate) const RECORD_SIZE: usize = 64;
// Offsets of a holder record's words inside it.
/// `pid << 32 | tid` of the thread that claimed the record; 0 = free.
pub(crate) const RECORD_OWNER: usize = 0;
/// The write position the holder's CAS expects; after a packet switch, the position
/// of its event.
pub(crate) const RECORD_AT: usize = 8;
/// Length of the reservation held; 0 = none.
pub(crate) const RECORD_LEN: usize = 16;
/// The holder's clock read for that reservation (the lost event's timestamp).
pub(crate) const RECORD_TIMESTAMP: usize = 24;

const PAGE: u64 = 4096;
/// Smallest sub-buffer: one page, which holds a packet header and events.
pub const MIN_SUBBUF: u64 = 4096;
/// Largest sub-buffer: keeps a generation's byte count unambiguous in the 32-bit
/// commit field.
pub const MAX_SUBBUF: u64 = 1 << 30;
/// Fewest sub-buffers per ring: one being filled while another is drained.
pub const MIN_NUM_SUBBUF: u64 = 2;
/// Most sub-buffers per ring: bounds the commit counters in the ring header.
pub const MAX_NUM_SUBBUF: u64 = 1 << 16;

/// Why `size` cannot be a sub-buffer size, if it cannot: the one rule the config
/// file, the CLI and the daemon's control path all apply.
pub fn check_subbuf_size(size: u64) -> Result<(), &'static str> {
    if !size.is_power_of_two() || !(MIN_SUBBUF..=MAX_SUBBUF).contains(&size) {
        return Err("sub-buffer size must be a power of two from 4 KiB to 1 GiB");
    }
    Ok(())
}

/// Why `count` cannot be a ring's number of sub-buffers, if it cannot (same users as
/// [`check_subbuf_size`]).
pub fn check_num_subbuf(count: u64) -> Result<(), &'static str> {
    if !count.is_power_of_two() || !(MIN_NUM_SUBBUF..=MAX_NUM_SUBBUF).contains(&count) {
        return Err("sub-buffer count must be a power of two from 2 to 65536");
    }
    Ok(())
}

/// What to do when a producer finds the ring full (`mode = "discard" | "overwrite"`
/// in the config file).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub enum Mode {
    /// Drop the new event and count it: the trace keeps its oldest data.
    #[serde(rename = "discard")]
    Discard = 0,
    /// Reuse the oldest complete packet (flight recorder): the trace keeps its newest.
    #[serde(rename = "overwrite")]
    Overwrite = 1,
}

impl Mode {
    /// Decodes the header's mode word.
    pub(crate) fn from_word(word: u32) -> Result<Mode, ShmError> {
        match word {
            0 => Ok(Mode::Discard),
            1 => Ok(Mode::Overwrite),
            other => Err(ShmError::BadMode(other)),
        }
    }
}

/// Sub-buffer size and count of a ring; the sub-buffer is the CTF packet size.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Geometry {
    /// Bytes per sub-buffer: a power of two, at least 4 KiB, at most 1 GiB
    /// ([`check_subbuf_size`]).
    pub subbuf_size: u64,
    /// Sub-buffers per ring: a power of two from 2 to 65536 ([`check_num_subbuf`]).
    pub num_subbuf: u64,
}

/// The default channel geometry: 128 KiB x 4 keeps up with 1M events/s while the
/// daemon drains on wake-ups, at 512 KiB per CPU.
pub const DEFAULT_GEOMETRY: Geometry = Geometry {
    subbuf_size: 128 * 1024,
    num_subbuf: 4,
};

impl Geometry {
    /// Checks the rules of the layout ([`check_subbuf_size`], [`check_num_subbuf`]).
    pub fn validate(&self) -> Result<(), ShmError> {
        let bad = |reason| ShmError::BadGeometry {
            subbuf_size: self.subbuf_size,
            num_subbuf: self.num_subbuf,
            reason,
        };
        check_subbuf_size(self.subbuf_size).map_err(bad)?;
        check_num_subbuf(self.num_subbuf).map_err(bad)
    }

    /// Offset of the first holder record: after the commit counters, cache-line
    /// aligned.
    pub(crate) fn records_offset(&self) -> u64 {
        (COMMIT_AT as u64 + 8 * self.num_subbuf).next_multiple_of(RECORD_SIZE as u64)
    }

    /// Offset of the first sub-buffer: the header, commit counters and holder records,
    /// page aligned. Public for tools and tests that map a ring file themselves.
    pub fn data_offset(&self) -> u64 {
        (self.records_offset() + (RECORDS * RECORD_SIZE) as u64).div_ceil(PAGE) * PAGE
    }

    /// Size of the whole ring file.
    pub(crate) fn file_size(&self) -> u64 {
        self.data_offset() + self.subbuf_size * self.num_subbuf
    }

    /// Largest event (header and payload) a sub-buffer takes: after the packet header
    /// and never ending exactly on the sub-buffer's end (that position means "closed").
    #[inline]
    pub fn max_event_len(&self) -> u64 {
        self.subbuf_size - PACKET_HEADER_SIZE as u64 - 1
    }
}

/// Everything a new ring is created with.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RingConfig {
    /// Sub-buffer size and count.
    pub geometry: Geometry,
    /// Behaviour when full.
    pub mode: Mode,
    /// Stream class id written into every packet header (the channel's index).
    pub stream_id: u32,
    /// Trace uuid written into every packet header.
    pub uuid: [u8; 16],
    /// Bytes of event context after every event header of the stream (the channel's
    /// contexts, `ContextSet::encoded_len`): a lost event fills them too. Kept by this
    /// process, never written into or read from the shared memory.
    pub context_len: usize,
}

/// A shared read-write mapping of a ring file, seen only through the accessors below.
pub(crate) struct Mapping {
    /// The mapping; its address differs in every process, so nothing stores pointers.
    map: MmapRaw,
}

/// One piece of a [`Mapping::write_out`]: bytes of the writer's own, or a range of
/// the mapping the kernel reads in place.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Part<'a> {
    /// A local buffer.
    Own(&'a [u8]),
    /// The mapping's bytes `at..at + len`.
    Mapped {
        /// Offset in the mapping.
        at: usize,
        /// Bytes.
        len: usize,
    },
}

impl Mapping {
    /// Maps `len` bytes of `fd` shared and read-write.
    pub(crate) fn new(fd: &impl std::os::fd::AsRawFd, len: u64) -> Result<Mapping, ShmError> {
        let len = usize::try_from(len)
            .map_err(|_| ShmError::Map(std::io::ErrorKind::InvalidInput.into()))?;
        let map = memmap2::MmapOptions::new()
            .len(len)
            .map_raw(fd.as_raw_fd())
            .map_err(ShmError::Map)?;
        Ok(Mapping { map })
    }

    /// The 8-byte word at `at` as an atomic.
    #[inline]
    pub(crate) fn u64_at(&self, at: usize) -> &AtomicU64 {
        assert!(
            at.is_multiple_of(8) && at + 8 <= self.map.len(),
            "u64 view out of the ring"
        );
        // SAFETY: the mapping is page aligned, so `at % 8 == 0` makes the address 8-byte
        // aligned as AtomicU64 requires, and the assert keeps it inside the mapping,
        // which lives as long as `&self`. AtomicU64 has the layout of u64 and is
        // sound to share between threads and processes; every access to shared words
        // goes through such atomic views, never through plain references.
        unsafe { &*self.map.as_mut_ptr().add(at).cast::<AtomicU64>() }
    }

    /// The 16 bytes at `at` as one atomic pair of words (low word first): what a
    /// 16-byte CAS changes at once. Only for [`Mapping::pair_is_lock_free`] hosts.
    #[inline]
    pub(crate) fn pair_at(&self, at: usize) -> &AtomicU128 {
        assert!(
            at.is_multiple_of(16) && at + 16 <= self.map.len(),
            "pair view out of the ring"
        );
        // SAFETY: as in `u64_at`, with 16-byte alignment (page-aligned mapping, `at %
        // 16 == 0`) and AtomicU128, which has the layout of u128; lock-free is checked
        // before any ring is built (`pair_is_lock_free`), since a lock-based fallback
        // would not be shared with other processes. The pair's halves are also read
        // with the 8-byte loads of `u64_at` (the consumer's bounds, the producers'
        // guess before their CAS): accesses of mixed sizes, which Rust's model does
        // not define between threads, but which never reach the compiler as a race it
        // could exploit (the 16-byte CAS is portable_atomic's inline assembly, and
        // other processes are outside any compiler's view). The hardware makes each
        // aligned 8-byte load single-copy atomic, reading a half as some CAS left it
        // (AArch64 guarantees it; on x86-64 it is common practice, though the SDM
        // recommends same-size accesses); a producer's guess is then checked by its
        // CAS, and the consumer bounds every value it reads.
        unsafe { &*self.map.as_mut_ptr().add(at).cast::<AtomicU128>() }
    }

    /// Whether this CPU changes 16 bytes at once without a lock (`cmpxchg16b` on
    /// x86-64): a ring's `write` and `time` need it, in every process that maps it.
    pub(crate) fn pair_is_lock_free() -> bool {
        AtomicU128::is_lock_free()
    }

    /// The 4-byte word at `at` as an atomic.
    #[inline]
    pub(crate) fn u32_at(&self, at: usize) -> &AtomicU32 {
        assert!(
            at.is_multiple_of(4) && at + 4 <= self.map.len(),
            "u32 view out of the ring"
        );
        // SAFETY: as in `u64_at`, with 4-byte alignment and AtomicU32.
        unsafe { &*self.map.as_mut_ptr().add(at).cast::<AtomicU32>() }
    }

    /// Copies `bytes` into the mapping at `at`.
    ///
    /// # Safety
    /// The caller owns `at..at + bytes.len()` exclusively (it reserved it, or it is a
    /// header range only it writes) and no one uses what it reads there until a
    /// Release commit (the consumer's racy copy of an overwritten slot is discarded).
    #[inline]
    pub(crate) unsafe fn write(&self, at: usize, bytes: &[u8]) {
        assert!(at + bytes.len() <= self.map.len(), "write out of the ring");
        // SAFETY: in bounds by the assert; exclusive by the caller's contract; source is
        // a local buffer, so the ranges do not overlap.
        unsafe {
            std::ptr::copy_nonoverlapping(
                bytes.as_ptr(),
                self.map.as_mut_ptr().add(at),
                bytes.len(),
            )
        }
    }

    /// The bytes `at..at + len` for writing.
    ///
    /// # Safety
    /// Same contract as [`Mapping::write`], for as long as the slice lives.
    #[inline]
    #[allow(clippy::mut_from_ref)]
    pub(crate) unsafe fn slice_mut(&self, at: usize, len: usize) -> &mut [u8] {
        assert!(at + len <= self.map.len(), "slice out of the ring");
        // SAFETY: in bounds by the assert; no other reference to these bytes exists in
        // any process while the caller holds its reservation.
        unsafe { std::slice::from_raw_parts_mut(self.map.as_mut_ptr().add(at), len) }
    }

    /// Writes `parts` in order to `fd` with `writev(2)`, retrying short writes and
    /// `EINTR`, so that the kernel reads a [`Part::Mapped`] range straight from the
    /// shared mapping: no copy into the daemon's heap. Producers may write such a
    /// range meanwhile (only a hostile app does, in discard mode: it spoils its own
    /// packet); the kernel then stores whatever bytes it read, and nothing outside
    /// the ranges named is ever read.
    pub(crate) fn write_out(
        &self,
        fd: std::os::fd::BorrowedFd<'_>,
        parts: &[Part<'_>],
    ) -> std::io::Result<()> {
        use std::os::fd::AsRawFd;
        let iov: Vec<libc::iovec> = parts
            .iter()
            .map(|part| match *part {
                Part::Own(bytes) => libc::iovec {
                    iov_base: bytes.as_ptr().cast_mut().cast(),
                    iov_len: bytes.len(),
                },
                Part::Mapped { at, len } => {
                    assert!(
                        at.checked_add(len).is_some_and(|end| end <= self.map.len()),
                        "write out of the ring"
                    );
                    libc::iovec {
                        iov_base: self.map.as_ptr().wrapping_add(at).cast_mut().cast(),
                        iov_len: len,
                    }
                }
            })
            .collect();
        let mut first = 0;
        let mut skip = 0;
        while first < iov.len() {
            let mut rest = iov[first..].to_vec();
            rest[0].iov_base = rest[0].iov_base.wrapping_add(skip);
            rest[0].iov_len -= skip;
            // SAFETY: every iovec names live memory the kernel only reads: an `Own`
            // part borrows the caller's buffer, a `Mapped` one lies inside the mapping
            // (the assert above; advancing past written bytes only shrinks it towards
            // its end), which `&self` keeps mapped during the call. No Rust reference
            // to the racing ring bytes is formed.
            let n = unsafe { libc::writev(fd.as_raw_fd(), rest.as_ptr(), rest.len() as i32) };
            if n < 0 {
                let e = std::io::Error::last_os_error();
                if e.kind() == std::io::ErrorKind::Interrupted {
                    continue;
                }
                return Err(e);
            }
            if n == 0 && rest.iter().any(|v| v.iov_len > 0) {
                return Err(std::io::ErrorKind::WriteZero.into());
            }
            let mut n = n as usize;
            while first < iov.len() && n >= iov[first].iov_len - skip {
                n -= iov[first].iov_len - skip;
                first += 1;
                skip = 0;
            }
            skip += n;
        }
        Ok(())
    }

    /// Fills `out` with a copy of `at..at + out.len()`, as [`Mapping::copy_racy`].
    ///
    /// # Safety
    /// Writers of the range may run concurrently only as the ring protocol allows:
    /// overwrite mode reusing a slot (the caller then discards the copy unless it
    /// proves that no producer wrote it meanwhile, as [`Mapping::copy_racy`]), or a
    /// hostile app rewriting a leased slot of its own (the copy then holds some of
    /// its bytes, which only it reads in its trace).
    pub(crate) unsafe fn copy_racy_into(&self, at: usize, out: &mut [u8]) {
        assert!(
            at.is_multiple_of(8) && out.len().is_multiple_of(8) && at + out.len() <= self.map.len(),
            "copy out of the ring"
        );
        let src = self.map.as_ptr().wrapping_add(at).cast::<u64>();
        for (i, chunk) in out.chunks_exact_mut(8).enumerate() {
            // SAFETY: in bounds and 8-byte aligned (page-aligned mapping, `at % 8 == 0`)
            // by the assert. Volatile loads of a plain integer form no reference to the
            // racing bytes and every bit pattern is a valid u64, so a load that races a
            // producer's store yields some bytes (a torn copy the caller discards), and
            // the compiler cannot assume the memory stable or elide the loads.
            let word = unsafe { std::ptr::read_volatile(src.add(i)) };
            chunk.copy_from_slice(&word.to_ne_bytes());
        }
    }

    /// Appends to `out` a copy of `at..at + len`, read word by word with volatile
    /// loads, while producers may be writing those bytes.
    ///
    /// # Safety
    /// Writers of the range may run concurrently only as the ring protocol allows
    /// (overwrite mode reusing a slot), and the caller then discards the copy: it
    /// proves afterwards (its `consumed` CAS) that no producer wrote the range during
    /// the copy before using it.
    pub(crate) unsafe fn copy_racy(&self, at: usize, len: usize, out: &mut Vec<u8>) {
        let start = out.len();
        out.resize(start + len, 0);
        // SAFETY: forwarded contract.
        unsafe { self.copy_racy_into(at, &mut out[start..]) }
    }
}
