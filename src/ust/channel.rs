//! The process-global table of installed channel buffers, indexed by slot.
//!
//! A slot's buffers are leaked on install and never unmapped while the process lives,
//! so emitters can use them with no reference counting or RCU: a disabled slot is
//! simply skipped.
//!
//! A slot whose daemon connection is gone is [`release`]d and may be installed again
//! with the buffers of the next daemon, so that re-registering after daemon restarts
//! never runs out of the [`MAX_SLOTS`] slots. Each installation has its own
//! generation: an event's id in a slot is tagged with the generation it was enabled
//! for, and an emitter writes only when the buffers it loaded carry that same
//! generation. An emitter that raced a reinstallation therefore never writes one
//! daemon's event id into the other daemon's rings; at worst it writes into the
//! dead daemon's rings, which are still mapped and which nobody reads. Those old
//! buffers stay mapped until the process exits (their memory is the dead daemon's
//! memfds): one leftover ring set per channel per daemon restart.

use std::sync::atomic::{AtomicPtr, AtomicU32, AtomicU64, Ordering::*};

use crate::ctf::context::ContextSet;
use crate::shm::ChannelBuffers;

/// Channel slots a process can hold (bits of a tracepoint's mask).
pub const MAX_SLOTS: usize = 64;

/// One installation of a channel's buffers in a slot.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct SlotId {
    /// Index in the slot table, `0..MAX_SLOTS`.
    index: u8,
    /// Tells this installation from earlier and later ones of the same index.
    generation: u32,
}

impl SlotId {
    /// The slot's index, `0..MAX_SLOTS`.
    pub fn index(self) -> usize {
        usize::from(self.index)
    }

    /// This slot's bit in tracepoint and active masks.
    pub(crate) fn bit(self) -> u64 {
        1 << self.index
    }

    /// `id` tagged with this installation's generation, as tracepoints store it.
    pub(crate) fn tag(self, id: u32) -> u64 {
        (u64::from(self.generation) << 32) | u64::from(id)
    }
}

/// Why buffers could not be installed.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ChannelError {
    /// Every slot is in use by a live daemon connection.
    #[error("all {MAX_SLOTS} channel slots of this process are in use")]
    NoFreeSlot,
}

/// Buffers as installed in a slot, with the generation of that installation.
pub(crate) struct Installed {
    /// Matches the generation of the ids enabled for these buffers.
    generation: u32,
    /// The rings.
    buffers: ChannelBuffers,
    /// What every event written into them carries after its header.
    contexts: ContextSet,
}

/// Installed buffers; null = never used. Each installation stores a new leaked Box
/// with Release; an earlier one is leaked for good (an emitter may still use it).
static SLOTS: [AtomicPtr<Installed>; MAX_SLOTS] =
    [const { AtomicPtr::new(std::ptr::null_mut()) }; MAX_SLOTS];
/// Bit per slot that is installed and not disabled.
static ACTIVE: AtomicU64 = AtomicU64::new(0);
/// Bit per installed slot whose daemon connection is gone: free to install again.
static RELEASED: AtomicU64 = AtomicU64::new(0);
/// Generation of the next installation; 0 is never used, so a never-enabled id
/// (0) matches no installation.
static NEXT_GENERATION: AtomicU32 = AtomicU32::new(1);

/// Installs a channel's buffers, whose events carry `contexts`, in a released slot or
/// else in a never-used one.
pub fn install(buffers: ChannelBuffers, contexts: ContextSet) -> Result<SlotId, ChannelError> {
    super::context::prepare();
    let generation = NEXT_GENERATION.fetch_add(1, Relaxed);
    let ptr = Box::into_raw(Box::new(Installed {
        generation,
        buffers,
        contexts,
    }));
    let mut released = RELEASED.load(Acquire);
    while released != 0 {
        let i = released.trailing_zeros() as usize;
        let bit = 1u64 << i;
        // Whoever clears the bit owns the slot; the old Box stays leaked. Release
        // publishes the fully built buffers to emitters' Acquire load.
        if RELEASED.fetch_and(!bit, AcqRel) & bit != 0 {
            SLOTS[i].store(ptr, Release);
            return Ok(activate(i, generation));
        }
        released = RELEASED.load(Acquire);
    }
    for (i, slot) in SLOTS.iter().enumerate() {
        if slot
            .compare_exchange(std::ptr::null_mut(), ptr, AcqRel, Relaxed)
            .is_ok()
        {
            return Ok(activate(i, generation));
        }
    }
    // SAFETY: `ptr` came from Box::into_raw above and was published nowhere (no
    // released slot was taken and every CAS failed), so this is its only owner.
    drop(unsafe { Box::from_raw(ptr) });
    Err(ChannelError::NoFreeSlot)
}

/// Marks slot `i`, installed with `generation`, active.
fn activate(i: usize, generation: u32) -> SlotId {
    let id = SlotId {
        index: i as u8,
        generation,
    };
    ACTIVE.fetch_or(id.bit(), Release);
    id
}

/// Stops every event from writing to `slot` (session stopped or destroyed). Its
/// buffers stay mapped: an emitter may still be finishing an event there.
pub fn disable_slot(slot: SlotId) {
    ACTIVE.fetch_and(!slot.bit(), Release);
}

/// Disables `slot` and makes it free for the next installation: its daemon is gone.
/// Callers disable every tracepoint in it first.
pub fn release(slot: SlotId) {
    disable_slot(slot);
    RELEASED.fetch_or(slot.bit(), Release);
}

/// Stops every event from writing anywhere and frees every installed slot for the
/// next installation: in a forked child, whose inherited rings are its parent's
/// (per-PID ones are the parent's own trace) and whose connection is its parent's.
/// Atomic stores and loads only, as a `pthread_atfork` child handler needs.
pub(crate) fn release_inherited_slots() {
    ACTIVE.store(0, Release);
    let installed = SLOTS
        .iter()
        .enumerate()
        .filter(|(_, slot)| !slot.load(Acquire).is_null())
        .fold(0u64, |mask, (i, _)| mask | 1 << i);
    RELEASED.fetch_or(installed, Release);
}

/// Mask of slots that are installed and enabled.
#[inline]
pub(crate) fn active_mask() -> u64 {
    ACTIVE.load(Acquire)
}

/// The buffers installed in slot `i` and their events' contexts, if any, if they are
/// the installation that `tagged` (an id as [`SlotId::tag`] made it) was enabled for.
#[inline]
pub(crate) fn buffers(i: usize, tagged: u64) -> Option<(&'static ChannelBuffers, ContextSet)> {
    let ptr = SLOTS[i].load(Acquire);
    // SAFETY: a non-null pointer was stored by `install` from a leaked Box after the
    // buffers were built (Release/Acquire) and is never freed (a later installation
    // leaks it), so it is valid and shared-only for the rest of the process.
    let installed: &'static Installed = unsafe { ptr.as_ref() }?;
    (u64::from(installed.generation) == tagged >> 32)
        .then_some((&installed.buffers, installed.contexts))
}
