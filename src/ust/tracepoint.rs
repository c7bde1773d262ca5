//! A static event declaration and its per-slot enablement.

use std::cell::RefCell;
use std::sync::Mutex;
use std::sync::atomic::{AtomicPtr, AtomicU64, Ordering::*};

use super::channel::{self, MAX_SLOTS, SlotId};
use super::context;
use crate::ctf::field::{EventDesc, FieldDesc, LogLevel};
use crate::filter::{Checked, ContextValues};

/// The bit of a tagged event id (see [`Tracepoint::ids`]) saying that the event is
/// filtered in that slot: event ids stay below it (the daemon's limits on events
/// per trace are far lower, and the app refuses an id that reaches it).
pub const FILTERED: u32 = 1 << 31;

/// Every filter program ever installed, each once: a program is never freed (an
/// emitter may be running it while a newer one is installed), so equal programs
/// share one allocation and memory is bounded by the distinct filters received.
static PROGRAMS: Mutex<Vec<&'static Checked>> = Mutex::new(Vec::new());

thread_local! {
    /// Where a filtered event's payload is encoded before its filter runs.
    static SCRATCH: RefCell<Vec<u8>> = const { RefCell::new(Vec::new()) };
}

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
    /// bit is set and the generation matches the installed buffers'. Its
    /// [`FILTERED`] bit says that `filters` holds the slot's filter: an unfiltered
    /// event pays no load for the feature.
    ids: [AtomicU64; MAX_SLOTS],
    /// The filter of each slot whose id has [`FILTERED`]; never reset to null once
    /// set (a later unfiltered enable clears the bit instead).
    filters: [AtomicPtr<Checked>; MAX_SLOTS],
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
            filters: [const { AtomicPtr::new(std::ptr::null_mut()) }; MAX_SLOTS],
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
            filters: [const { AtomicPtr::new(std::ptr::null_mut()) }; MAX_SLOTS],
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

    /// Records every emission of this event into `slot` with event id `id` from now
    /// on (and drops a filter it had there).
    pub fn enable(&self, slot: SlotId, id: u32) {
        self.enable_filtered(slot, id, None);
    }

    /// Records this event into `slot` with event id `id` (below [`FILTERED`]) from now
    /// on: every emission if `filter` is `None`, else those whose values it passes.
    /// Enabling an enabled event replaces its filter.
    pub fn enable_filtered(&self, slot: SlotId, id: u32, filter: Option<Checked>) {
        let mut tagged = slot.tag(id & !FILTERED);
        if let Some(filter) = filter {
            let program = intern(filter);
            // Release pairs with the emitter's Acquire load of the pointer.
            self.filters[slot.index()].store(std::ptr::from_ref(program).cast_mut(), Release);
            tagged |= u64::from(FILTERED);
        }
        // Release: an emitter that sees FILTERED here sees the pointer stored above.
        self.ids[slot.index()].store(tagged, Release);
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
            if tagged as u32 & FILTERED != 0 && !self.passes(slot, payload_len, &encode) {
                continue;
            }
            // Buffers of another installation than the id's (a slot reinstalled
            // after a daemon restart, raced by this emitter) are skipped.
            if let Some((buffers, contexts)) = channel::buffers(slot, tagged) {
                let ring = buffers.current();
                let len = contexts.encoded_len() + payload_len;
                ring.write_event(tagged as u32 & !FILTERED, len, |out| {
                    let at = context::encode(contexts, ring.cpu_id(), out);
                    encode(&mut out[at..]);
                });
            }
        }
    }
}

impl Tracepoint {
    /// Whether the payload `encode` writes passes the filter of `slot`: encoded into
    /// this thread's scratch buffer first, so nothing is reserved for an event the
    /// filter rejects. Apart from `record` so that its fast path stays small.
    #[inline(never)]
    fn passes(&self, slot: usize, payload_len: usize, encode: &impl Fn(&mut [u8])) -> bool {
        // Acquire pairs with `enable`'s Release store of the pointer; the FILTERED bit
        // was seen, and the pointer is never reset, but a racing first enable may not
        // be visible yet: the event is then rejected, as before its enable.
        let ptr = self.filters[slot].load(Acquire);
        // SAFETY: a non-null pointer comes from `intern`, which leaks every program
        // for the rest of the process and never hands out a mutable reference.
        let Some(filter) = (unsafe { ptr.as_ref() }) else {
            return false;
        };
        // Contexts are read only for a filter that uses them.
        let context = filter.reads_context().then(context::filter_values);
        let run = |scratch: &mut Vec<u8>| {
            scratch.clear();
            scratch.resize(payload_len, 0);
            encode(scratch);
            match &context {
                Some(context) => filter.passes(scratch, &context.values()),
                None => filter.passes(scratch, &ContextValues::NONE),
            }
        };
        SCRATCH.with(|cell| match cell.try_borrow_mut() {
            Ok(mut scratch) => run(&mut scratch),
            // `encode` itself emitted an event: it gets its own buffer.
            Err(_) => run(&mut Vec::new()),
        })
    }
}

/// The one shared copy of `program`.
fn intern(program: Checked) -> &'static Checked {
    let mut programs = PROGRAMS.lock().unwrap_or_else(|p| p.into_inner());
    if let Some(same) = programs.iter().find(|p| ***p == program) {
        return same;
    }
    let leaked: &'static Checked = Box::leak(Box::new(program));
    programs.push(leaked);
    leaked
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
