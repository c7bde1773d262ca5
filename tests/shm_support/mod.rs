//! Helpers shared by the shm test files: test events, packet parsing, fd handling.
//! Each test file uses a different subset, hence the dead_code allowance.
#![allow(dead_code)]

use std::io::Read;
use std::os::fd::{AsFd, AsRawFd, FromRawFd, OwnedFd};
use std::time::{Duration, Instant};

use ustrace::ctf::packet::{
    COMPACT_HEADER_SIZE, EVENT_HEADER_SIZE, LOST_EVENT_ID, LOST_EVENT_PADDED_ID,
    PACKET_HEADER_SIZE, PacketHeader, read_event_header,
};
use ustrace::shm::{ChannelBuffers, Geometry, LeasedPacket, Mode, Ring, RingConfig};

/// A ring config for tests.
pub fn config(subbuf_size: u64, num_subbuf: u64, mode: Mode) -> RingConfig {
    RingConfig {
        geometry: Geometry {
            subbuf_size,
            num_subbuf,
        },
        mode,
        stream_id: 7,
        uuid: *b"ustrace-shm-test",
        context_len: 0,
    }
}

/// One test event as read back.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TestEvent {
    /// Event id: the producer (process) number.
    pub id: u32,
    /// Event timestamp.
    pub ts: u64,
    /// Producer thread number.
    pub thread: u32,
    /// Sequence number within the producer thread.
    pub seq: u64,
    /// Payload length in bytes.
    pub len: usize,
}

/// Payload bytes of a test event: u32 payload length, u32 thread, u64 seq, then fill
/// bytes derived from seq so that a torn or misplaced payload is detected.
pub fn payload_len(extra: usize) -> usize {
    16 + extra
}

/// How many test events of `payload` bytes the first packet of a fresh ring of
/// `subbuf_size`-byte sub-buffers holds before the next one switches packets: the
/// ring's first event is extended (nothing before it to complete a compact
/// timestamp from), the next ones compact.
pub fn first_packet_holds(subbuf_size: u64, payload: usize) -> u64 {
    let first = (EVENT_HEADER_SIZE + payload) as u64;
    let next = (COMPACT_HEADER_SIZE + payload) as u64;
    // A switch happens when an event would reach the sub-buffer's end.
    1 + (subbuf_size - 1 - PACKET_HEADER_SIZE as u64 - first) / next
}

/// How many test events of `payload` bytes a later packet of the ring holds (all
/// compact) before the next one switches packets.
pub fn later_packet_holds(subbuf_size: u64, payload: usize) -> u64 {
    (subbuf_size - 1 - PACKET_HEADER_SIZE as u64) / (COMPACT_HEADER_SIZE + payload) as u64
}

/// Writes a test event's payload into `out` (exactly `out.len()` bytes).
pub fn encode(out: &mut [u8], thread: u32, seq: u64) {
    let len = out.len() as u32;
    out[..4].copy_from_slice(&len.to_le_bytes());
    out[4..8].copy_from_slice(&thread.to_le_bytes());
    out[8..16].copy_from_slice(&seq.to_le_bytes());
    for (i, b) in out[16..].iter_mut().enumerate() {
        *b = fill(seq, i);
    }
}

fn fill(seq: u64, i: usize) -> u8 {
    (seq as u8).wrapping_mul(31).wrapping_add(i as u8)
}

/// Records a test event through the real write path.
pub fn write(ring: &Ring, id: u32, thread: u32, seq: u64, extra: usize) -> bool {
    ring.write_event(id, payload_len(extra), |out| encode(out, thread, seq))
}

/// The `thread` of a lost event (a dead producer's reservation the daemon filled).
pub const LOST: u32 = u32::MAX;

/// Parses a packet of test events, checking its header and every payload's fill.
/// A lost event is returned with `thread == LOST` and its whole length as `len`.
pub fn parse(packet: &[u8]) -> (PacketHeader, Vec<TestEvent>) {
    let header = PacketHeader::read(packet).expect("valid packet header");
    // The consumer copies the content (rounded up to 8 bytes), not the padding.
    assert_eq!(
        packet.len() as u64,
        header.close.content_size.next_multiple_of(8)
    );
    let end = header.close.content_size as usize;
    let mut at = PACKET_HEADER_SIZE;
    let mut events = Vec::new();
    let mut previous = header.open.timestamp_begin;
    while at < end {
        let event = read_event_header(&packet[at..end], previous).expect("whole event header");
        let (id, ts) = (event.id, event.timestamp);
        previous = ts;
        let p = at + event.len;
        if id == LOST_EVENT_ID || id == LOST_EVENT_PADDED_ID {
            let len = match id {
                LOST_EVENT_ID => event.len,
                _ => {
                    let nul = packet[p..end].iter().position(|&b| b == 0).expect("NUL");
                    assert!(packet[p..p + nul].iter().all(|&b| b == b'-'), "filler");
                    event.len + nul + 1
                }
            };
            events.push(TestEvent {
                id,
                ts,
                thread: LOST,
                seq: u64::MAX,
                len,
            });
            at += len;
            continue;
        }
        let len = u32::from_le_bytes(packet[p..p + 4].try_into().unwrap()) as usize;
        let payload = &packet[p..p + len];
        let thread = u32::from_le_bytes(payload[4..8].try_into().unwrap());
        let seq = u64::from_le_bytes(payload[8..16].try_into().unwrap());
        for (i, &b) in payload[16..].iter().enumerate() {
            assert_eq!(b, fill(seq, i), "payload of seq {seq} torn at byte {i}");
        }
        events.push(TestEvent {
            id,
            ts,
            thread,
            seq,
            len,
        });
        at = p + len;
    }
    assert_eq!(at, end, "events end exactly at content_size");
    (header, events)
}

/// Polls `cond` until it holds or `timeout` passes; returns whether it held.
pub fn wait_until(timeout: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        if cond() {
            return true;
        }
        if Instant::now() > deadline {
            return false;
        }
        std::thread::yield_now();
    }
}

/// The whole content of a file descriptor (a ring's memfd).
pub fn read_all(fd: impl AsFd) -> Vec<u8> {
    let mut file = std::fs::File::from(nix::unistd::dup(fd).expect("dup"));
    let mut bytes = Vec::new();
    file.read_to_end(&mut bytes).expect("read memfd");
    bytes
}

/// What `lease` stores: written with [`LeasedPacket::write_to`] into a fresh memfd
/// (as the CTF writer does into its stream file) and read back.
pub fn store_lease(lease: &LeasedPacket) -> Vec<u8> {
    use std::io::Seek;
    let fd = memfd_with(&[], false);
    lease.write_to(fd.as_fd()).expect("write the leased packet");
    let mut file = std::fs::File::from(fd);
    file.rewind().expect("rewind memfd");
    let mut bytes = Vec::new();
    file.read_to_end(&mut bytes).expect("read memfd");
    bytes
}

/// A new memfd holding `bytes`, sealed against shrinking if `seal`.
pub fn memfd_with(bytes: &[u8], seal: bool) -> OwnedFd {
    use nix::fcntl::{FcntlArg, SealFlag, fcntl};
    use nix::sys::memfd::{MFdFlags, memfd_create};
    use std::io::Write;
    let fd = memfd_create(
        "ustrace-test",
        MFdFlags::MFD_CLOEXEC | MFdFlags::MFD_ALLOW_SEALING,
    )
    .expect("memfd_create");
    let mut file = std::fs::File::from(fd);
    file.write_all(bytes).expect("write memfd");
    let fd = OwnedFd::from(file);
    if seal {
        fcntl(
            &fd,
            FcntlArg::F_ADD_SEALS(SealFlag::F_SEAL_SHRINK | SealFlag::F_SEAL_GROW),
        )
        .expect("seal");
    }
    fd
}

/// Environment variable carrying inherited ring fds: ring fds in CPU order, then the
/// eventfd, comma separated.
const FDS_ENV: &str = "USTRACE_SHM_FDS";

/// Spawns `cmd` so that its process inherits `buffers`: the fds are dup'ed (dups are
/// not close-on-exec) for the spawn and their numbers passed in the environment.
pub fn spawn_sharing(
    cmd: &mut std::process::Command,
    buffers: &ChannelBuffers,
) -> std::process::Child {
    let mut dups: Vec<OwnedFd> = buffers
        .rings()
        .iter()
        .map(|r| nix::unistd::dup(r.as_fd()).expect("dup ring fd"))
        .collect();
    dups.push(nix::unistd::dup(buffers.wakeup().as_fd()).expect("dup eventfd"));
    let fds: Vec<String> = dups.iter().map(|fd| fd.as_raw_fd().to_string()).collect();
    let child = cmd
        .env(FDS_ENV, fds.join(","))
        .spawn()
        .expect("spawn child");
    // The child has its copies now.
    drop(dups);
    child
}

/// In a child started by [`spawn_sharing`]: maps the buffers its parent shared.
pub fn inherited_buffers() -> ChannelBuffers {
    let mut fds: Vec<OwnedFd> = std::env::var(FDS_ENV)
        .expect("inherited fds")
        .split(',')
        .map(|n| {
            let raw = n.parse().expect("fd number");
            // SAFETY: the parent dup'ed these descriptors for this process and passed
            // their numbers; nothing else in this fresh process owns them.
            unsafe { OwnedFd::from_raw_fd(raw) }
        })
        .collect();
    let wakeup = fds.pop().expect("eventfd");
    ChannelBuffers::from_fds(fds, wakeup, 0).expect("map inherited rings")
}

/// Byte offsets of the ring header words an app can write (docs/shm.md, Layout).
pub mod at {
    /// Free-running write position.
    pub const WRITE: usize = 64;
    /// Time of the reservation or flush that last moved `write` (the pair's high half).
    pub const TIME: usize = 72;
    /// Free-running consumed position.
    pub const CONSUMED: usize = 128;
    /// The four loss counters: discarded_full, too_big, overwritten_packets,
    /// lost_dead_producer.
    pub const COUNTERS: [usize; 4] = [192, 200, 208, 216];
    /// Commit word of sub-buffer 0; sub-buffer `i` is `8 * i` further.
    pub const COMMIT: usize = 256;
    /// Trace uuid in the ring header.
    pub const UUID: usize = 32;
    /// Packet header fields, from the start of a sub-buffer (`ctf::packet`).
    pub const PACKET_MAGIC: usize = 0;
    /// Stream class id in a packet header.
    pub const PACKET_STREAM_ID: usize = 20;
    /// content_size (bits) in a packet header.
    pub const PACKET_CONTENT_SIZE: usize = 40;
    /// packet_size (bits) in a packet header.
    pub const PACKET_SIZE: usize = 48;
    /// packet_seq_num in a packet header.
    pub const PACKET_SEQ_NUM: usize = 56;
    /// events_discarded in a packet header.
    pub const PACKET_EVENTS_DISCARDED: usize = 64;
    /// cpu_id (u32) in a packet header.
    pub const PACKET_CPU_ID: usize = 72;
}

/// A hostile app's own writable mapping of a ring's memfd: it writes any word of the
/// header, commit counters or packets, as any process holding the fd can.
pub struct Scribbler {
    /// The whole ring file, mapped shared.
    map: memmap2::MmapRaw,
    /// Offset of sub-buffer 0.
    data_at: usize,
    /// Sub-buffer size.
    subbuf_size: usize,
    /// Sub-buffer count.
    num_subbuf: usize,
}

impl Scribbler {
    /// Maps the ring file behind `fd`, whose geometry is `geometry`.
    pub fn new(fd: impl AsFd, geometry: Geometry) -> Scribbler {
        let fd = nix::unistd::dup(fd).expect("dup ring fd");
        let map = memmap2::MmapOptions::new()
            .map_raw(fd.as_raw_fd())
            .expect("map ring");
        let data_at = geometry.data_offset() as usize;
        assert_eq!(
            map.len(),
            data_at + (geometry.subbuf_size * geometry.num_subbuf) as usize
        );
        Scribbler {
            map,
            data_at,
            subbuf_size: geometry.subbuf_size as usize,
            num_subbuf: geometry.num_subbuf as usize,
        }
    }

    /// The 8-byte word at `offset` of the file, as an atomic.
    pub fn word(&self, offset: usize) -> &std::sync::atomic::AtomicU64 {
        assert!(offset.is_multiple_of(8) && offset + 8 <= self.map.len());
        // SAFETY: in bounds and 8-byte aligned (page-aligned mapping) by the assert;
        // the mapping lives as long as `self`; every process reaches shared ring words
        // only through atomics, so this view races no plain access.
        unsafe { &*self.map.as_mut_ptr().add(offset).cast() }
    }

    /// Sets the header or commit word at `offset`.
    pub fn set(&self, offset: usize, value: u64) {
        self.word(offset)
            .store(value, std::sync::atomic::Ordering::SeqCst);
    }

    /// Reads the header or commit word at `offset`.
    pub fn get(&self, offset: usize) -> u64 {
        self.word(offset).load(std::sync::atomic::Ordering::SeqCst)
    }

    /// Sets the commit word of sub-buffer `slot`.
    pub fn set_commit(&self, slot: usize, value: u64) {
        self.set(at::COMMIT + 8 * (slot % self.num_subbuf), value);
    }

    /// Writes `bytes` at `offset` into sub-buffer `slot`'s packet.
    pub fn write_packet(&self, slot: usize, offset: usize, bytes: &[u8]) {
        let start = self.data_at + (slot % self.num_subbuf) * self.subbuf_size + offset;
        assert!(offset + bytes.len() <= self.subbuf_size);
        for (i, b) in bytes.iter().enumerate() {
            // SAFETY: in bounds of the mapping by the assert; a volatile byte store
            // forms no reference to memory the consumer may be copying meanwhile
            // (that race is what the consumer must survive).
            unsafe { std::ptr::write_volatile(self.map.as_mut_ptr().add(start + i), *b) };
        }
    }

    /// Crafts by hand a complete packet in sub-buffer 0 of a fresh ring (write and
    /// consumed 0) with the header an honest producer writes (identity from the
    /// ring's own header), then lets `edit` change it, then publishes it: `write` one
    /// sub-buffer on, the commit word complete.
    pub fn forge_first_packet(&self, stream_id: u32, cpu_id: u32, edit: impl FnOnce(&Scribbler)) {
        let sb = self.subbuf_size as u64;
        let mut uuid = [0u8; 16];
        uuid[..8].copy_from_slice(&self.get(at::UUID).to_le_bytes());
        uuid[8..].copy_from_slice(&self.get(at::UUID + 8).to_le_bytes());
        self.write_packet(0, at::PACKET_MAGIC, &0xC1FC_1FC1u32.to_le_bytes());
        self.write_packet(0, 4, &uuid);
        self.write_packet(0, at::PACKET_STREAM_ID, &stream_id.to_le_bytes());
        self.write_packet(
            0,
            at::PACKET_CONTENT_SIZE,
            &(PACKET_HEADER_SIZE as u64 * 8).to_le_bytes(),
        );
        self.write_packet(0, at::PACKET_SIZE, &(sb * 8).to_le_bytes());
        self.write_packet(0, at::PACKET_SEQ_NUM, &0u64.to_le_bytes());
        self.write_packet(0, at::PACKET_EVENTS_DISCARDED, &0u64.to_le_bytes());
        self.write_packet(0, at::PACKET_CPU_ID, &cpu_id.to_le_bytes());
        edit(self);
        self.set(at::WRITE, sb);
        self.set_commit(0, sb);
    }
}
