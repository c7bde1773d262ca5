//! Shared-memory per-CPU ring buffers: the data plane between apps and the daemon.
//!
//! Contract: one [`Ring`] per stream lives in a sealed memfd that the daemon creates
//! and apps map. Producers (any thread of any process mapping the ring) reserve,
//! write and commit events without locks or system calls; reserving is lock-free (a
//! CAS loop on the write position), committing is wait-free (one atomic add). A
//! producer never blocks: when there is no room the event is dropped and counted
//! ([`Mode::Discard`]) or the oldest complete packet is reused ([`Mode::Overwrite`]).
//! Each sub-buffer is exactly one CTF packet; the single consumer (the daemon, through
//! a [`Consumer`]) takes complete packets in order by copying them out optimistically,
//! so that producers never wait for it nor drop because of it.
//! The byte layout and the memory-ordering argument are in `docs/shm.md`.

mod channel;
mod clock;
mod consumer;
mod error;
mod layout;
mod ring;

pub use channel::{BlankSet, ChannelBuffers, Wakeup, cpu_count};
pub use clock::{current_cpu, now_ns};
pub use consumer::{Consumer, Corruption, DeadHolders, PacketInfo};
pub use error::{RingCorruption, ShmError};
pub use layout::{
    DEFAULT_GEOMETRY, Geometry, Mode, RingConfig, check_num_subbuf, check_subbuf_size,
};
pub(crate) use ring::forget_thread_identity;
pub use ring::{BlankRing, Reservation, Ring, RingCounters};
