//! The app's fast path: event declarations and `emit`.
//!
//! An event is a static [`Tracepoint`] declared with [`crate::event!`]. Emitting a
//! disabled event costs one relaxed atomic load and a branch. An enabled one writes
//! its header and payload into the ring of the current CPU of every channel slot it
//! is enabled in: no allocation, no lock, no system call except the eventfd write of
//! the event that completes a sub-buffer. The registration client installs channel
//! buffers with [`channel::install`] and enables events per slot.

pub mod channel;
pub mod client;
pub(crate) mod context;
pub mod tracepoint;

pub use channel::{ChannelError, MAX_SLOTS, SlotId};
pub use client::{LateRegistration, register_events};
pub use tracepoint::Tracepoint;
