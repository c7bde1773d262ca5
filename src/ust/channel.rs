//! The process-global table of installed channel buffers, indexed by slot.
//!
//! A slot's buffers are leaked on install and never unmapped while the process lives,
//! so emitters can use them with no reference counting or RCU: a disabled slot is
//! simply skipped.

use std::sync::atomic::{AtomicPtr, AtomicU64, Ordering::*};

use crate::shm::ChannelBuffers;

/// Channel slots a process can hold (bits of a tracepoint's mask).
pub const MAX_SLOTS: usize = 64;

/// Index of an installed channel's buffers in this process.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct SlotId(u8);

impl SlotId {
    /// The slot's index, `0..MAX_SLOTS`.
    pub fn index(self) -> usize {
        usize::from(self.0)
    }

    /// This slot's bit in tracepoint and active masks.
    pub(crate) fn bit(self) -> u64 {
        1 << self.0
    }
}

/// Why buffers could not be installed.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ChannelError {
    /// Every slot is taken; slots are never reused.
    #[error("all {MAX_SLOTS} channel slots of this process are in use")]
    NoFreeSlot,
}

/// Installed buffers; null = free. Written once per slot with Release.
static SLOTS: [AtomicPtr<ChannelBuffers>; MAX_SLOTS] =
    [const { AtomicPtr::new(std::ptr::null_mut()) }; MAX_SLOTS];
/// Bit per slot that is installed and not disabled.
static ACTIVE: AtomicU64 = AtomicU64::new(0);

/// Installs a channel's buffers for the rest of the process's life.
pub fn install(buffers: ChannelBuffers) -> Result<SlotId, ChannelError> {
    let ptr = Box::into_raw(Box::new(buffers));
    for (i, slot) in SLOTS.iter().enumerate() {
        // Release publishes the fully built buffers to emitters' Acquire load.
        if slot
            .compare_exchange(std::ptr::null_mut(), ptr, AcqRel, Relaxed)
            .is_ok()
        {
            let id = SlotId(i as u8);
            ACTIVE.fetch_or(id.bit(), Release);
            return Ok(id);
        }
    }
    // SAFETY: `ptr` came from Box::into_raw above and was published nowhere (every
    // CAS failed), so this is its only owner.
    drop(unsafe { Box::from_raw(ptr) });
    Err(ChannelError::NoFreeSlot)
}

/// Stops every event from writing to `slot` (session stopped or destroyed). Its
/// buffers stay mapped: an emitter may still be finishing an event there.
pub fn disable_slot(slot: SlotId) {
    ACTIVE.fetch_and(!slot.bit(), Release);
}

/// Stops every event from writing anywhere, for good: a forked child runs untraced.
/// Its parent's rings (per-PID ones are the parent's own trace) are not its to write,
/// and the child has no connection of its own to the daemon. One atomic store, so it
/// is safe in a `pthread_atfork` child handler.
pub(crate) fn disable_all_slots() {
    ACTIVE.store(0, Release);
}

/// Mask of slots that are installed and enabled.
#[inline]
pub(crate) fn active_mask() -> u64 {
    ACTIVE.load(Acquire)
}

/// The buffers installed in slot `i`, if any.
#[inline]
pub(crate) fn buffers(i: usize) -> Option<&'static ChannelBuffers> {
    let ptr = SLOTS[i].load(Acquire);
    // SAFETY: a non-null pointer was stored by `install` from a leaked Box after the
    // buffers were built (Release/Acquire) and is never freed or replaced, so it is
    // valid and shared-only for the rest of the process ('static).
    unsafe { ptr.as_ref() }
}
