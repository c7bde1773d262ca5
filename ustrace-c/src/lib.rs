//! The C ABI of ustrace, behind `include/ustrace/ustrace.h`.
//!
//! A C or C++ program declares its events with `USTRACE_EVENT`: each is a
//! `struct ustrace_event` in the program (or shared library), with a pointer to it
//! in the ELF section `ustrace_events` of its DSO. A constructor emitted by the
//! header in every translation unit hands its DSO's section to
//! [`ustrace_register_events`] before `main` (or when `dlopen` loads the library):
//! the first call registers the process with the session daemon (`ust::init`,
//! which returns once the buffers are mapped), later ones register their events
//! late (`ust::register_events`), so the first event of each is recorded.
//!
//! Fast path: the header tests `state` (a copy of the tracepoint's mask that the
//! Rust side keeps up to date) with one relaxed load inline in the caller, and only
//! an enabled event calls [`ustrace_record`] with its encoded arguments.

#![warn(missing_docs)]
#![warn(clippy::undocumented_unsafe_blocks)]

use std::ffi::{CStr, c_char};
use std::sync::atomic::{AtomicPtr, AtomicU64, Ordering::*};
use std::sync::{Mutex, OnceLock};
use ustrace::ctf::field::{EventDesc, FieldDesc, FieldType, LogLevel};
use ustrace::ust::{self, Tracepoint};

/// One label of an enumeration field (`struct ustrace_enum_label`).
#[repr(C)]
pub struct Label {
    /// NUL-terminated label.
    label: *const c_char,
    /// Its value.
    value: i64,
}

/// One field of an event (`struct ustrace_field`).
#[repr(C)]
pub struct Field {
    /// NUL-terminated field name.
    name: *const c_char,
    /// A `USTRACE_TYPE_*` code.
    ty: u32,
    /// Labels of an enumeration (`USTRACE_TYPE_ENUM`), else 0.
    nlabels: u32,
    /// The labels, or null.
    labels: *const Label,
}

/// One event as the header declares it (`struct ustrace_event`).
#[repr(C)]
pub struct Event {
    /// Non-zero while the event is enabled somewhere: the header's inline check.
    state: AtomicU64,
    /// NUL-terminated provider.
    provider: *const c_char,
    /// NUL-terminated name.
    name: *const c_char,
    /// A `USTRACE_*` log level (LTTng's numbering).
    loglevel: i32,
    /// Number of fields.
    nfields: u32,
    /// The fields, in argument order.
    fields: *const Field,
    /// The registered tracepoint; null until registration.
    handle: AtomicPtr<Tracepoint>,
}

/// One encoded argument of [`ustrace_record`] (`struct ustrace_arg`): `len` bytes
/// at `data`, copied into the event in order.
#[repr(C)]
pub struct Arg {
    /// The bytes.
    data: *const u8,
    /// How many.
    len: usize,
}

/// The `USTRACE_TYPE_*` codes of the header, in order from 1.
fn field_type(field: &Field) -> Result<FieldType, String> {
    let int = |bits, signed| FieldType::Integer {
        bits,
        signed,
        hex: false,
    };
    Ok(match field.ty {
        1 => int(8, true),
        2 => int(16, true),
        3 => int(32, true),
        4 => int(64, true),
        5 => int(8, false),
        6 => int(16, false),
        7 => int(32, false),
        8 => int(64, false),
        9 => FieldType::F32,
        10 => FieldType::F64,
        11 => FieldType::Bool,
        12 => FieldType::String,
        13 => FieldType::Bytes,
        14 => {
            let mut labels = Vec::with_capacity(field.nlabels as usize);
            for i in 0..field.nlabels as usize {
                // SAFETY: the header's `ustrace_enum` points `labels` at an array of
                // exactly `nlabels` entries (sizeof of the array).
                let label = unsafe { &*field.labels.add(i) };
                labels.push((text(label.label)?, label.value));
            }
            FieldType::Enum {
                bits: 32,
                signed: true,
                labels,
            }
        }
        other => return Err(format!("unknown field type code {other}")),
    })
}

/// A C string of a descriptor as UTF-8.
fn text(s: *const c_char) -> Result<String, String> {
    if s.is_null() {
        return Err("a null name".to_string());
    }
    // SAFETY: descriptors hold string literals of the header's macros (or
    // NUL-terminated strings the caller keeps alive, as documented).
    let s = unsafe { CStr::from_ptr(s) };
    s.to_str()
        .map(str::to_string)
        .map_err(|_| format!("{s:?} is not UTF-8"))
}

/// The log level of an LTTng-numbered level; out of range is `Debug`.
fn loglevel(level: i32) -> LogLevel {
    use LogLevel::*;
    const LEVELS: [LogLevel; 15] = [
        Emerg,
        Alert,
        Crit,
        Err,
        Warning,
        Notice,
        Info,
        DebugSystem,
        DebugProgram,
        DebugProcess,
        DebugModule,
        DebugUnit,
        DebugFunction,
        DebugLine,
        Debug,
    ];
    usize::try_from(level)
        .ok()
        .and_then(|l| LEVELS.get(l).copied())
        .unwrap_or(Debug)
}

/// What `event` declares.
fn describe(event: &Event) -> Result<EventDesc, String> {
    let mut fields = Vec::with_capacity(event.nfields as usize);
    for i in 0..event.nfields as usize {
        // SAFETY: the header's `USTRACE_EVENT` points `fields` at an array of exactly
        // `nfields` entries.
        let field = unsafe { &*event.fields.add(i) };
        fields.push(FieldDesc {
            name: text(field.name)?,
            ty: field_type(field)?,
        });
    }
    Ok(EventDesc {
        model_emf_uri: None,
        provider: text(event.provider)?,
        name: text(event.name)?,
        loglevel: loglevel(event.loglevel),
        fields,
    })
}

/// `ustrace_tracef`'s inline check: the mask of the `ustrace:tracef` event.
#[unsafe(no_mangle)]
pub static ustrace_tracef_state: AtomicU64 = AtomicU64::new(0);

/// The `ustrace:tracef` event (one string field `msg`), registered with the
/// process.
fn tracef_event() -> &'static Tracepoint {
    static TRACEF: OnceLock<&'static Tracepoint> = OnceLock::new();
    TRACEF.get_or_init(|| {
        Tracepoint::leak(
            EventDesc {
                model_emf_uri: None,
                provider: "ustrace".to_string(),
                name: "tracef".to_string(),
                loglevel: LogLevel::Debug,
                fields: vec![FieldDesc {
                    name: "msg".to_string(),
                    ty: FieldType::String,
                }],
            },
            Some(&ustrace_tracef_state),
        )
    })
}

/// The process's name for its per-PID traces: its program's file name.
fn program_name() -> String {
    std::env::args_os()
        .next()
        .and_then(|a| {
            std::path::Path::new(&a)
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
        })
        .unwrap_or_else(|| "c-app".to_string())
}

/// Registers `count` events of one DSO (its `ustrace_events` section): the first
/// call registers the process, later calls register their new events late. Events
/// registered before are skipped; a malformed descriptor is reported and skipped.
/// Returns once the daemon answered (bounded by the registration timeout).
///
/// # Safety
/// `events` points at `count` pointers, each null or to a `struct ustrace_event`
/// that lives (with its strings and fields) for the rest of the process: a library
/// with events is never unloaded.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn ustrace_register_events(events: *const *mut Event, count: usize) {
    static INIT: Mutex<bool> = Mutex::new(false);
    if events.is_null() {
        return;
    }
    let mut tracepoints = Vec::new();
    for i in 0..count {
        // SAFETY: `events` has `count` entries (the caller's contract).
        let event = unsafe { *events.add(i) };
        // SAFETY: each entry is null or a live descriptor for the rest of the process.
        let Some(event) = (unsafe { event.as_ref::<'static>() }) else {
            continue;
        };
        let known = event.handle.load(Acquire);
        if !known.is_null() {
            // SAFETY: a handle is a leaked tracepoint, never freed.
            tracepoints.push(unsafe { &*known });
            continue;
        }
        match describe(event) {
            Ok(desc) => {
                let tracepoint = Tracepoint::leak(desc, Some(&event.state));
                event
                    .handle
                    .store(std::ptr::from_ref(tracepoint).cast_mut(), Release);
                tracepoints.push(tracepoint);
            }
            Err(e) => eprintln!("ustrace: event {i} of a library not registered: {e}"),
        }
    }
    let mut initialised = INIT.lock().unwrap_or_else(|p| p.into_inner());
    if *initialised {
        ust::register_events(&tracepoints);
    } else {
        tracepoints.push(tracef_event());
        *initialised = true;
        let outcome = ust::client::init(&program_name(), &tracepoints);
        // What `ustrace-demo --report` prints, for `ustrace bench churn --app c`.
        if let ust::client::RegistrationOutcome::Done { latency, .. } = outcome
            && std::env::var_os("USTRACE_REPORT_REGISTRATION").is_some()
        {
            eprintln!("registration {} us", latency.as_micros());
        }
    }
}

/// Records an enabled event: its arguments' bytes, in order, are its payload.
///
/// # Safety
/// `event` is a registered descriptor, `args` points at `count` arguments each of
/// `len` readable bytes.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn ustrace_record(event: *const Event, args: *const Arg, count: u32) {
    // SAFETY: the caller passes a live descriptor (the header's own static).
    let Some(event) = (unsafe { event.as_ref() }) else {
        return;
    };
    let handle = event.handle.load(Acquire);
    if handle.is_null() || (args.is_null() && count > 0) {
        return;
    }
    // SAFETY: a handle is a leaked tracepoint, never freed.
    let tracepoint = unsafe { &*handle };
    let args: &[Arg] = if count == 0 {
        &[]
    } else {
        // SAFETY: `args` has `count` entries (the caller's contract).
        unsafe { std::slice::from_raw_parts(args, count as usize) }
    };
    let len = args.iter().map(|a| a.len).sum();
    tracepoint.record(len, |out| {
        let mut at = 0;
        for arg in args {
            if arg.len > 0 {
                // SAFETY: `data` has `len` readable bytes (the caller's contract), and
                // `out` has room for the sum of the lengths.
                let bytes = unsafe { std::slice::from_raw_parts(arg.data, arg.len) };
                out[at..at + arg.len].copy_from_slice(bytes);
            }
            at += arg.len;
        }
    });
}

/// Records a `ustrace:tracef` event with `message` (what `ustrace_tracef`
/// formatted).
///
/// # Safety
/// `message` is null or NUL-terminated.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn ustrace_tracef_record(message: *const c_char) {
    if message.is_null() {
        return;
    }
    // SAFETY: NUL-terminated (the caller's contract).
    let bytes = unsafe { CStr::from_ptr(message) }.to_bytes_with_nul();
    tracef_event().record(bytes.len(), |out| out.copy_from_slice(bytes));
}
