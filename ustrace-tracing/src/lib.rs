//! Records what a program tells the `tracing` crate (and the `log` crate) into
//! ustrace's shared-memory rings, as CTF events the session daemon writes.
//!
//! ```no_run
//! ustrace_tracing::init("my-app");
//! tracing::info!(user = 7, ok = true, "logged in");
//! ```
//!
//! - Each callsite is one ustrace event, made at its first use (its first event, or
//!   its first span) and registered late with the daemon
//!   ([`ustrace::ust::register_events`]): that call waits for the daemon's answer,
//!   bounded by the registration timeout, so the callsite's first event is
//!   recorded when a session enables it. Its name is `<target>:<name>` made CTF
//!   identifiers (see [`site::ctf_name`]), its level a log level
//!   ([`site::loglevel`]), its fields typed by the values of that first use
//!   ([`encode::Kind`]).
//! - Interest: a callsite is "always" until it is registered, then "always" while
//!   some session records it and "never" otherwise; every enable or disable the
//!   daemon pushes rebuilds `tracing`'s interest cache, so a callsite no session
//!   records costs only `tracing`'s own disabled check.
//! - Spans: a span's callsite is an event with `span_id` and `parent` (0: none)
//!   before its fields, recorded when the span is made (and an event's first
//!   field, `span`, is the span it happened in, 0 for none); `tracing_span:enter`,
//!   `tracing_span:exit` and `tracing_span:close` carry the `span_id` of each
//!   enter, exit and close, on whatever thread they happen. Ids are the registry's
//!   (reused after a close, as `tracing` documents). A value recorded into a span
//!   after its creation (`Span::record`) is a `tracing_span:record` event (the
//!   span's id, the field's name, the value's text), and `Span::follows_from` a
//!   `tracing_span:follows_from` event (`span_id` follows `follows`).
//! - A callsite's module, file and line are its event's `model.emf.uri` in the
//!   metadata (see [`site::source_uri`]).

pub mod encode;
pub mod site;

use std::cell::Cell;
use std::fmt::{self, Write};
use tracing_core::field::{Field, Visit};
use tracing_core::span::{Attributes, Id, Record};
use tracing_core::{Event, Interest, Metadata, Subscriber};
use tracing_subscriber::Layer;
use tracing_subscriber::layer::{Context, SubscriberExt};
use tracing_subscriber::registry::Registry;

ustrace::event!(
    /// A span was entered (on the thread that recorded it).
    pub static SPAN_ENTER: tracing_span:enter(span_id: u64), loglevel = Debug
);
ustrace::event!(
    /// A span was exited.
    pub static SPAN_EXIT: tracing_span:exit(span_id: u64), loglevel = Debug
);
ustrace::event!(
    /// A span was closed (its last handle dropped).
    pub static SPAN_CLOSE: tracing_span:close(span_id: u64), loglevel = Debug
);
ustrace::event!(
    /// A value was recorded into a span after its creation (`Span::record`): one
    /// event per field, its value as text (cut to [`RECORD_TEXT_MAX`] bytes).
    pub static SPAN_RECORD: tracing_span:record(span_id: u64, field: &str, value: &str),
        loglevel = Debug
);
ustrace::event!(
    /// `Span::follows_from`: span `span_id` is caused by span `follows` (which
    /// need not be its parent, nor still open).
    pub static SPAN_FOLLOWS_FROM: tracing_span:follows_from(span_id: u64, follows: u64),
        loglevel = Debug
);

/// The most bytes of a value's text a `tracing_span:record` event carries (it is
/// written into a buffer on the stack, without allocation).
pub const RECORD_TEXT_MAX: usize = 512;

/// The span events the layer records (the callsites' own events are registered
/// at their first use).
static SPAN_EVENTS: [&ustrace::ust::Tracepoint; 5] = [
    &SPAN_ENTER.0,
    &SPAN_EXIT.0,
    &SPAN_CLOSE.0,
    &SPAN_RECORD.0,
    &SPAN_FOLLOWS_FROM.0,
];

thread_local! {
    /// How many spans this thread has entered (through any `UstraceLayer`) and not
    /// exited: while it is 0 an event is in no span, and the registry's span stack
    /// is not looked at. An over-count (a span exited on another thread than it was
    /// entered on) only costs that look-up.
    static ENTERED: Cell<u32> = const { Cell::new(0) };
}

/// The layer that records `tracing` events and spans into ustrace.
#[derive(Clone, Copy, Debug, Default)]
pub struct UstraceLayer;

/// Why [`init`] could not install the layer.
#[derive(Debug, thiserror::Error)]
pub enum InitError {
    /// Another `tracing` subscriber is the global default already.
    #[error("a global tracing subscriber is set already: {0}")]
    Subscriber(#[from] tracing_core::dispatcher::SetGlobalDefaultError),
    /// Another `log` logger is installed already.
    #[error("a log logger is set already: {0}")]
    Log(#[from] tracing_log::log_tracer::SetLoggerError),
}

/// Registers this process with the session daemon as `procname` (see
/// [`ustrace::ust::client::init`]; a program with no daemon runs untraced and is
/// traced when one starts), and installs [`UstraceLayer`] on a registry as the
/// global `tracing` subscriber, with `log` records forwarded to it.
pub fn init(procname: &str) -> Result<(), InitError> {
    register(procname);
    tracing_core::dispatcher::set_global_default(Registry::default().with(UstraceLayer).into())?;
    tracing_log::LogTracer::init()?;
    Ok(())
}

/// Registers the process with the span events, and has every enablement change
/// rebuild `tracing`'s interest cache. For a program that builds its own
/// subscriber with [`UstraceLayer`] in it; [`init`] calls it.
pub fn register(procname: &str) {
    ustrace::ust::on_enablement_change(tracing_core::callsite::rebuild_interest_cache);
    ustrace::ust::client::init(procname, &SPAN_EVENTS);
}

impl<S: Subscriber> Layer<S> for UstraceLayer {
    fn register_callsite(&self, meta: &'static Metadata<'static>) -> Interest {
        match site::lookup(meta) {
            // Not met yet: its first use registers it.
            None => Interest::always(),
            Some(site) if site.tracepoint.is_some_and(|t| t.is_enabled()) => Interest::always(),
            Some(site) if site.span => Interest::sometimes(),
            Some(_) => Interest::never(),
        }
    }

    fn enabled(&self, meta: &Metadata<'_>, _: Context<'_, S>) -> bool {
        // Reached by spans whose own event no session records (they are still
        // made while their enter, exit or close is recorded) and by `log` records
        // (whose callsites have no interest cache: `on_event` checks them).
        !meta.is_span() || SPAN_EVENTS.iter().any(|t| t.is_enabled())
    }

    fn on_new_span(&self, attrs: &Attributes<'_>, id: &Id, ctx: Context<'_, S>) {
        trace(attrs.metadata(), true, &|v| attrs.record(v), || {
            let parent = match attrs.parent() {
                Some(parent) => parent.into_u64(),
                None if attrs.is_contextual() => ctx.current_span().id().map_or(0, Id::into_u64),
                None => 0,
            };
            [id.into_u64(), parent]
        });
    }

    fn on_record(&self, id: &Id, values: &Record<'_>, _: Context<'_, S>) {
        if SPAN_RECORD.is_enabled() {
            values.record(&mut Recorded(id.into_u64()));
        }
    }

    fn on_follows_from(&self, id: &Id, follows: &Id, _: Context<'_, S>) {
        SPAN_FOLLOWS_FROM.emit(id.into_u64(), follows.into_u64());
    }

    fn on_event(&self, event: &Event<'_>, ctx: Context<'_, S>) {
        trace(
            event.metadata(),
            false,
            &|v| event.record(v),
            || match event.parent() {
                Some(parent) => [parent.into_u64()],
                None if event.is_contextual() && ENTERED.get() > 0 => {
                    [ctx.current_span().id().map_or(0, Id::into_u64)]
                }
                None => [0],
            },
        );
    }

    fn on_enter(&self, id: &Id, _: Context<'_, S>) {
        ENTERED.set(ENTERED.get().saturating_add(1));
        SPAN_ENTER.emit(id.into_u64());
    }

    fn on_exit(&self, id: &Id, _: Context<'_, S>) {
        ENTERED.set(ENTERED.get().saturating_sub(1));
        SPAN_EXIT.emit(id.into_u64());
    }

    fn on_close(&self, id: Id, _: Context<'_, S>) {
        SPAN_CLOSE.emit(id.into_u64());
    }
}

/// Emits one `tracing_span:record` event per value a `Span::record` visits.
struct Recorded(u64);

impl Recorded {
    fn emit(&self, field: &Field, write: impl FnOnce(&mut encode::Bounded<'_>)) {
        let mut buf = [0u8; RECORD_TEXT_MAX];
        let mut text = encode::Bounded::new(&mut buf);
        write(&mut text);
        SPAN_RECORD.emit(self.0, field.name(), text.as_str());
    }
}

impl Visit for Recorded {
    fn record_str(&mut self, field: &Field, value: &str) {
        self.emit(field, |out| {
            let _ = out.write_str(value);
        })
    }

    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        self.emit(field, |out| {
            let _ = write!(out, "{value:?}");
        })
    }
}

/// Records one use of `meta`'s callsite (a span made or an event), whose values
/// `values` visits, with the ids `prefix` gives before them, if a session records
/// it; the callsite's first use registers it.
fn trace<const N: usize>(
    meta: &'static Metadata<'static>,
    span: bool,
    values: &dyn Fn(&mut dyn Visit),
    prefix: impl FnOnce() -> [u64; N],
) {
    let Some(site) = site::get_or_make(meta, span, |kinds| values(kinds)) else {
        return;
    };
    let Some(tracepoint) = site.tracepoint.filter(|t| t.is_enabled()) else {
        return;
    };
    let prefix = prefix();
    match site.fixed_len {
        // Numbers and bools only: straight into the reservation, no copy.
        Some(len) => tracepoint.record(len, |out| {
            encode::encode_into(&site.kinds, &site.rest, &prefix, out, |e| values(e));
        }),
        None => encode::encode(
            &site.kinds,
            &site.rest,
            &prefix,
            |encoder| values(encoder),
            |payload| tracepoint.record(payload.len(), |out| out.copy_from_slice(payload)),
        ),
    }
}
