//! A static event declaration and its per-slot enablement.

use std::sync::atomic::{AtomicU64, Ordering::*};

use super::channel::{self, MAX_SLOTS, SlotId};
use super::context;
use crate::ctf::field::{EventDesc, FieldDesc, LogLevel};

/// One event site: what it records (for registration) and where it is enabled.
pub struct Tracepoint {
    /// Provider half of `provider:name`.
    provider: &'static str,
    /// Name half of `provider:name`.
    name: &'static str,
    /// Severity declared in metadata.
    loglevel: LogLevel,
    /// The field list (built on demand at registration for a static event).
    fields: Fields,
    /// The metadata's `model.emf.uri` of the event, if it has one.
    model_emf_uri: Option<&'static str>,
    /// Bit per slot this event is enabled in; the fast path's only load when 0.
    mask: AtomicU64,
    /// Event id in each slot's trace, tagged with the generation of the slot's
    /// installation it was enabled for ([`SlotId::tag`]); valid while the slot's mask
    /// bit is set and the generation matches the installed buffers'.
    ids: [AtomicU64; MAX_SLOTS],
    /// A copy of `mask` kept where a foreign fast path loads it (the C header's
    /// `struct ustrace_event.state`): updated by every enable and disable.
    mirror: Option<&'static AtomicU64>,
}

/// Where a tracepoint's field list comes from.
enum Fields {
    /// Built by a function of the `event!` macro (a `static` cannot hold a `Vec`).
    Static(fn() -> Vec<FieldDesc>),
    /// Given at run time (the C library's descriptors).
    Owned(Vec<FieldDesc>),
}

impl Tracepoint {
    /// A disabled tracepoint; used by [`crate::event!`].
    pub const fn new(
        provider: &'static str,
        name: &'static str,
        loglevel: LogLevel,
        fields: fn() -> Vec<FieldDesc>,
    ) -> Tracepoint {
        Tracepoint {
            provider,
            name,
            loglevel,
            fields: Fields::Static(fields),
            model_emf_uri: None,
            mask: AtomicU64::new(0),
            ids: [const { AtomicU64::new(0) }; MAX_SLOTS],
            mirror: None,
        }
    }

    /// A tracepoint described at run time, living for the rest of the process (as a
    /// static one does: registration keeps `&'static` references). Its mask is
    /// copied into `mirror`, if given, for a fast path outside Rust.
    pub fn leak(desc: EventDesc, mirror: Option<&'static AtomicU64>) -> &'static Tracepoint {
        let provider: &'static str = Box::leak(desc.provider.into_boxed_str());
        let name: &'static str = Box::leak(desc.name.into_boxed_str());
        Box::leak(Box::new(Tracepoint {
            provider,
            name,
            loglevel: desc.loglevel,
            fields: Fields::Owned(desc.fields),
            model_emf_uri: desc
                .model_emf_uri
                .map(|uri| &*Box::leak(uri.into_boxed_str())),
            mask: AtomicU64::new(0),
            ids: [const { AtomicU64::new(0) }; MAX_SLOTS],
            mirror,
        }))
    }

    /// What the app registers about this event.
    pub fn desc(&self) -> EventDesc {
        EventDesc {
            model_emf_uri: self.model_emf_uri.map(str::to_string),
            provider: self.provider.to_string(),
            name: self.name.to_string(),
            loglevel: self.loglevel,
            fields: match &self.fields {
                Fields::Static(build) => build(),
                Fields::Owned(fields) => fields.clone(),
            },
        }
    }

    /// Records this event into `slot` with event id `id` from now on.
    pub fn enable(&self, slot: SlotId, id: u32) {
        self.ids[slot.index()].store(slot.tag(id), Relaxed);
        // Release publishes the id to emitters that see the bit.
        self.mask.fetch_or(slot.bit(), Release);
        if let Some(mirror) = self.mirror {
            mirror.fetch_or(slot.bit(), Relaxed);
        }
    }

    /// Stops recording this event into `slot`.
    pub fn disable(&self, slot: SlotId) {
        self.mask.fetch_and(!slot.bit(), Relaxed);
        if let Some(mirror) = self.mirror {
            mirror.fetch_and(!slot.bit(), Relaxed);
        }
    }

    /// Stops recording this event into any slot (a forked child's inherited ones).
    pub(crate) fn disable_everywhere(&self) {
        self.mask.store(0, Relaxed);
        if let Some(mirror) = self.mirror {
            mirror.store(0, Relaxed);
        }
    }

    /// The disabled check: one relaxed load.
    #[inline(always)]
    pub fn is_enabled(&self) -> bool {
        self.mask.load(Relaxed) != 0
    }

    /// Writes the event (the channel's contexts, then a payload of `payload_len` bytes
    /// produced by `encode`) into the current CPU's ring of every active slot it is
    /// enabled in.
    /// If `encode` panics, the reservation it was writing becomes one counted lost
    /// event as it unwinds (see `shm::Reservation`): no packet is left open.
    #[inline]
    pub fn record(&self, payload_len: usize, encode: impl Fn(&mut [u8])) {
        // Acquire pairs with `enable`'s Release: the slot's id is visible.
        let mut mask = self.mask.load(Acquire) & channel::active_mask();
        while mask != 0 {
            let slot = mask.trailing_zeros() as usize;
            mask &= mask - 1;
            let tagged = self.ids[slot].load(Relaxed);
            // Buffers of another installation than the id's (a slot reinstalled
            // after a daemon restart, raced by this emitter) are skipped.
            if let Some((buffers, contexts)) = channel::buffers(slot, tagged) {
                let ring = buffers.current();
                let len = contexts.encoded_len() + payload_len;
                ring.write_event(tagged as u32, len, |out| {
                    let at = context::encode(contexts, ring.cpu_id(), out);
                    encode(&mut out[at..]);
                });
            }
        }
    }
}

/// Declares a static event with a typed `emit`.
///
/// ```
/// ustrace::event!(pub static DEMO_EV: demo:ev(i: i64, s: &str), loglevel = Info);
/// DEMO_EV.emit(42, "hello");
/// ```
///
/// Field types are any [`crate::ctf::field::FieldValue`]; `loglevel` is required and
/// names a [`crate::ctf::field::LogLevel`] variant. The static derefs to its
/// [`Tracepoint`] (for `desc`, `enable`, `disable`). A module of the same name holds
/// the event's type.
#[macro_export]
macro_rules! event {
    (
        $(#[$attr:meta])*
        $vis:vis static $ident:ident : $provider:ident : $name:ident
            ( $($field:ident : $ty:ty),* $(,)? ), loglevel = $level:ident $(,)?
    ) => {
        #[allow(non_snake_case)]
        #[doc(hidden)]
        $vis mod $ident {
            #[allow(unused_imports)]
            use super::*;

            /// The typed event: `emit` records it.
            pub struct Event(pub $crate::ust::Tracepoint);

            impl Event {
                /// Records the event if it is enabled anywhere.
                #[inline]
                #[allow(clippy::too_many_arguments)]
                pub fn emit(&self, $($field: $ty),*) {
                    if !self.0.is_enabled() {
                        return;
                    }
                    let len = 0usize $(+ $crate::ctf::field::FieldValue::encoded_len(&$field))*;
                    self.0.record(len, |_out: &mut [u8]| {
                        #[allow(unused_mut, unused_variables)]
                        let mut at = 0usize;
                        $(at += $crate::ctf::field::FieldValue::encode(&$field, &mut _out[at..]);)*
                    });
                }
            }

            impl ::core::ops::Deref for Event {
                type Target = $crate::ust::Tracepoint;
                fn deref(&self) -> &$crate::ust::Tracepoint {
                    &self.0
                }
            }

            /// The event's fields in encoding order.
            pub fn fields() -> ::std::vec::Vec<$crate::ctf::field::FieldDesc> {
                ::std::vec![$($crate::ctf::field::FieldDesc {
                    name: ::std::string::ToString::to_string(stringify!($field)),
                    ty: <$ty as $crate::ctf::field::FieldValue>::field_type(),
                }),*]
            }
        }

        $(#[$attr])*
        $vis static $ident: $ident::Event = $ident::Event($crate::ust::Tracepoint::new(
            stringify!($provider),
            stringify!($name),
            $crate::ctf::field::LogLevel::$level,
            $ident::fields,
        ));
    };
}
