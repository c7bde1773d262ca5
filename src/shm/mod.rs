//! Shared-memory per-CPU ring buffers: the data plane between apps and the daemon.
//!
//! Contract: one [`Ring`] per stream lives in a sealed memfd that the daemon creates
//! and apps map. Producers (any thread of any process mapping the ring) reserve,
//! write and commit events without locks or system calls; reserving is lock-free (a
//! CAS loop on the write position), committing is wait-free (one atomic add). A
//! producer never blocks: when there is no room the event is dropped and counted
//! ([`Mode::Discard`]) or the oldest complete packet is reused ([`Mode::Overwrite`]).
//! Each sub-buffer is exactly one CTF packet; the single consumer (the daemon, through
//! a [`Consumer`]) takes complete packets in order: in overwrite mode by copying them
//! out optimistically, so that producers never wait for it nor drop because of it;
//! in discard mode by leasing them in place ([`LeasedPacket`]), stored straight from
//! the mapping and given back once stored.
//! The byte layout and the memory-ordering argument are in `docs/shm.md`.
//!
//! Files: `producer` is the fast path (reserve, commit, write_event); `slow_path` the
//! packet switch, room-making, drop counting and lost-event fills; `ring` creation
//! and validation; `consumer` the daemon's side (take, flush, dead holders);
//! `layout` the bytes and the only raw-pointer code; `hooks` the test stops at
//! linearization points.
//!
//! # Sub-buffer life cycle
//!
//! Each generation of a sub-buffer (one CTF packet, at position `p`) goes through
//! these states; the only shared state is `write`, `consumed` and the slot's commit
//! word, and each transition is one atomic operation on them:
//!
//! | state | meaning (words) |
//! |---|---|
//! | Free | `write <= p`; the slot's previous generation is complete and consumed: its word at this generation's start, `p < consumed + ring size` |
//! | Open | `write` inside the packet: producers reserve in it and commit |
//! | Closed | `write` past the packet, its word not yet at the generation's end: reservations, the close commit or the open commit still pending |
//! | Complete | its word reads `complete_bytes(p)`: every byte committed, readable |
//! | Taken | the consumer copies it (consumer-local, no shared mark); ends in Free or, if an overwrite raced the copy, in a discarded copy |
//!
//! | transition | made by | operation |
//! |---|---|---|
//! | Free -> Open | the producer whose reservation CAS on `(write, time)` moves `write` into the packet (`Ring::reserve`, after `make_room` saw it Free); its open commit follows | CAS `(write, time)` |
//! | Open -> Closed | the producer whose event does not fit (CAS `write` to the next packet), or the consumer's flush (CAS `write` to the boundary), each moving `time` with it; the close commit of the padding follows | CAS `(write, time)` |
//! | Closed -> Complete | whichever commit brings the word to its end: a producer's event, open or close commit, the daemon's lost-event fill of a dead holder's reservation (`Consumer::release_dead_holders`), a live producer's fill of a dropped reservation (`Reservation`'s drop), or the daemon's give-up of a stuck packet (`Consumer::give_up_stuck`, counted lost) | `fetch_add` (give-up: CAS) on the commit word |
//! | Complete -> Taken -> Free | the consumer (`Consumer::take_packet`): copy, then CAS `consumed` past it; a given-up packet is skipped the same way, without a copy. Discard mode: leased (`Consumer::lease_packet`, header copied and checked), stored from the mapping, then `Consumer::release_stored` CASes `consumed` past it | CAS `consumed` |
//! | Complete -> Free | an overwrite-mode producer that needs the slot (`make_room`): pushes `consumed` past it, counted in `overwritten_packets`; a consumer copying it fails its CAS | CAS `consumed` |
//!
//! A packet never goes back: a Closed packet opens nothing, and only a Free slot is
//! written again. Nothing but the transitions above changes these words (the
//! consumer checks every value it reads against them: see `consumer`).

mod channel;
mod clock;
mod consumer;
mod error;
pub mod hooks;
mod layout;
mod producer;
mod ring;
mod slow_path;

pub use channel::{BlankSet, ChannelBuffers, Wakeup, cpu_count};
pub use clock::{
    ClockError, CpuSource, TraceClock, current_cpu, current_cpu_from, host_clock, now_ns,
};
pub use consumer::{Consumer, Corruption, DIRECT_ALIGN, DeadHolders, LeasedPacket, PacketInfo};
pub use error::{RingCorruption, ShmError};
pub use layout::{
    DEFAULT_GEOMETRY, Geometry, Mode, RingConfig, check_num_subbuf, check_subbuf_size,
};
pub use producer::Reservation;
pub(crate) use producer::forget_thread_identity;
pub use ring::{BlankRing, Ring, RingCounters};
