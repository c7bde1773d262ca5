//! One ustrace event per `tracing` callsite: its CTF name and field types, made at
//! the callsite's first event (or span), registered late with the session daemon,
//! and found again by the callsite's metadata address without a lock.

use crate::encode::{Kind, Kinds};
use std::collections::HashSet;
use std::sync::Mutex;
use std::sync::atomic::{AtomicPtr, Ordering::*};
use tracing_core::{Level, Metadata};
use ustrace::ctf::field::{EventDesc, FieldDesc, LogLevel};
use ustrace::ctf::names::{NAME_MAX, URI_MAX};
use ustrace::ust::{self, LateRegistration, Tracepoint};

/// What the layer knows of one callsite.
pub struct Site {
    /// The callsite's metadata (its address is the key).
    meta: &'static Metadata<'static>,
    /// The registered event; `None` when the daemon refused it (it stays untraced).
    pub tracepoint: Option<&'static Tracepoint>,
    /// Type of each of the callsite's fields, by field index.
    pub kinds: Box<[Kind]>,
    /// For each field index, the least number of bytes the fields after it take:
    /// what a string must leave room for in the bounded buffer.
    pub rest: Box<[usize]>,
    /// The payload length of every use when it is known up front (no string
    /// field): then the payload is encoded straight into the ring's reservation.
    pub fixed_len: Option<usize>,
    /// Whether this is a span's callsite (its event starts with `span_id, parent`;
    /// an event's with `span`).
    pub span: bool,
}

/// Callsites the table holds; a callsite met after it is full runs untraced (with
/// one warning).
pub const MAX_SITES: usize = 8192;

/// Open-addressing table of sites keyed by metadata address; entries are only ever
/// added (callsites are `'static`), so a reader needs one acquire load per probe.
static TABLE: [AtomicPtr<Site>; MAX_SITES] =
    [const { AtomicPtr::new(std::ptr::null_mut()) }; MAX_SITES];

/// Held while a site is made and registered: one at a time, and the CTF names
/// given so far (no two events share one).
static MAKING: Mutex<Option<HashSet<String>>> = Mutex::new(None);

/// Where the probe for `meta` starts.
fn home(meta: &'static Metadata<'static>) -> usize {
    let addr = std::ptr::from_ref(meta) as usize;
    // Fibonacci hashing onto the table's 2^13 entries.
    ((addr >> 3) as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15) as usize >> (usize::BITS - 13)
}

/// The site of `meta`, if it was made.
#[inline]
pub fn lookup(meta: &'static Metadata<'static>) -> Option<&'static Site> {
    let start = home(meta);
    for i in 0..MAX_SITES {
        let entry = TABLE[(start + i) % MAX_SITES].load(Acquire);
        if entry.is_null() {
            return None;
        }
        // SAFETY: entries are leaked `Box<Site>`s, never freed nor changed.
        let site = unsafe { &*entry };
        if std::ptr::eq(site.meta, meta) {
            return Some(site);
        }
    }
    None
}

/// The site of `meta`, made and registered now if it is new: `record` visits the
/// callsite's values once to learn their types. Blocks for the daemon's answer
/// (bounded by the registration timeout), so the event that called this is
/// recorded if a session wants it. `None` when the table is full.
pub fn get_or_make(
    meta: &'static Metadata<'static>,
    span: bool,
    record: impl FnOnce(&mut Kinds),
) -> Option<&'static Site> {
    if let Some(site) = lookup(meta) {
        return Some(site);
    }
    let mut making = MAKING.lock().unwrap_or_else(|p| p.into_inner());
    if let Some(site) = lookup(meta) {
        return Some(site);
    }
    let Some(free) = free_entry(meta) else {
        warn_full();
        return None;
    };
    let mut kinds = Kinds::new(meta.fields().len());
    record(&mut kinds);
    let kinds = kinds.into_kinds();
    let names = making.get_or_insert_with(HashSet::new);
    let desc = describe(meta, &kinds, span, names);
    let full = desc.full_name();
    let tracepoint = Tracepoint::leak(desc, None);
    let tracepoint = match ust::register_events(&[tracepoint]) {
        LateRegistration::Refused(reason) => {
            eprintln!("ustrace-tracing: {full} runs untraced: {reason}");
            None
        }
        _ => Some(tracepoint),
    };
    let mut rest = vec![0; kinds.len()];
    for i in (0..kinds.len().saturating_sub(1)).rev() {
        rest[i] = rest[i + 1] + kinds[i + 1].min_len();
    }
    let fixed_len = crate::encode::fixed_len(&kinds, if span { 2 } else { 1 });
    let site = Box::leak(Box::new(Site {
        meta,
        tracepoint,
        fixed_len,
        kinds: kinds.into_boxed_slice(),
        rest: rest.into_boxed_slice(),
        span,
    }));
    TABLE[free].store(site, Release);
    drop(making);
    // Its interest was "always" until now, to meet its first use.
    tracing_core::callsite::rebuild_interest_cache();
    Some(site)
}

/// The first free entry of `meta`'s probe sequence (called with [`MAKING`] held).
fn free_entry(meta: &'static Metadata<'static>) -> Option<usize> {
    let start = home(meta);
    (0..MAX_SITES)
        .map(|i| (start + i) % MAX_SITES)
        .find(|&i| TABLE[i].load(Acquire).is_null())
}

/// Says once that the table is full.
fn warn_full() {
    static WARNED: std::sync::Once = std::sync::Once::new();
    WARNED.call_once(|| {
        eprintln!("ustrace-tracing: more than {MAX_SITES} callsites: the later ones run untraced")
    });
}

/// The CTF event of a callsite (see [`ctf_name`]); a span's starts with its id and
/// its parent's, an event's with the id of the span it is in (0: none).
fn describe(
    meta: &'static Metadata<'static>,
    kinds: &[Kind],
    span: bool,
    names: &mut HashSet<String>,
) -> EventDesc {
    let (provider, mut name) = ctf_name(meta);
    if names.contains(&format!("{provider}:{name}")) {
        let stem = name.clone();
        name = (2..)
            .map(|n| suffixed(&stem, n))
            .find(|n| !names.contains(&format!("{provider}:{n}")))
            .expect("an unused suffix");
    }
    names.insert(format!("{provider}:{name}"));
    let mut fields = Vec::with_capacity(kinds.len() + 2);
    let ids: &[&str] = if span {
        &["span_id", "parent"]
    } else {
        &["span"]
    };
    for id in ids {
        fields.push(FieldDesc {
            name: id.to_string(),
            ty: Kind::U64.field_type(),
        });
    }
    for (field, kind) in meta.fields().iter().zip(kinds) {
        let mut name = identifier(field.name());
        if fields.iter().any(|f| f.name == name) {
            let stem = name.clone();
            name = (2..)
                .map(|n| suffixed(&stem, n))
                .find(|n| !fields.iter().any(|f| &f.name == n))
                .expect("an unused suffix");
        }
        fields.push(FieldDesc {
            name,
            ty: kind.field_type(),
        });
    }
    EventDesc {
        model_emf_uri: source_uri(meta),
        provider,
        name,
        loglevel: loglevel(*meta.level()),
        fields,
    }
}

/// `stem` with `_n` appended, cut so that the whole stays an identifier of at most
/// [`NAME_MAX`] bytes.
fn suffixed(stem: &str, n: u32) -> String {
    let suffix = format!("_{n}");
    format!(
        "{}{suffix}",
        &stem[..stem.len().min(NAME_MAX - suffix.len())]
    )
}

/// The `provider:name` of a callsite: the provider is its target, the name its
/// name (a `log` record's is its level), each made an identifier by
/// [`identifier`]. `my_app::db` / `event src/db.rs:12` becomes
/// `my_app__db:event_src_db_rs_12`.
pub fn ctf_name(meta: &Metadata<'_>) -> (String, String) {
    let provider = identifier(meta.target());
    let name = if meta.target() == "log" && meta.name() == "log event" {
        meta.level().as_str().to_ascii_lowercase()
    } else {
        identifier(meta.name())
    };
    (provider, name)
}

/// `raw` as a C identifier of at most [`NAME_MAX`] bytes: `::` becomes `__`, every
/// other byte that is not an ASCII letter, digit or `_` becomes `_`, a leading
/// digit (or nothing) gets a `_` before it, and the result is cut to the limit.
pub fn identifier(raw: &str) -> String {
    let mut out = String::with_capacity(raw.len() + 1);
    if !raw.starts_with(|c: char| c.is_ascii_alphabetic() || c == '_') {
        out.push('_');
    }
    for c in raw.chars() {
        out.push(if c.is_ascii_alphanumeric() { c } else { '_' });
    }
    out.truncate(NAME_MAX);
    out
}

/// Where a callsite is, as its event's `model.emf.uri`:
/// `module=my_app::db file=src/db.rs line=12`, each part the callsite's metadata
/// gives (`None` if it gives none). A control character becomes `?` and the whole
/// is cut to [`URI_MAX`] bytes at a character boundary, as the daemon accepts.
pub fn source_uri(meta: &Metadata<'_>) -> Option<String> {
    let mut parts = Vec::with_capacity(3);
    if let Some(module) = meta.module_path() {
        parts.push(format!("module={module}"));
    }
    if let Some(file) = meta.file() {
        parts.push(format!("file={file}"));
    }
    if let Some(line) = meta.line() {
        parts.push(format!("line={line}"));
    }
    if parts.is_empty() {
        return None;
    }
    let mut uri = String::with_capacity(URI_MAX);
    for c in parts.join(" ").chars() {
        let c = if c.is_control() { '?' } else { c };
        if uri.len() + c.len_utf8() > URI_MAX {
            break;
        }
        uri.push(c);
    }
    Some(uri)
}

/// `tracing` levels as LTTng log levels: ERROR is `Err`, WARN `Warning`, INFO
/// `Info`, DEBUG `DebugLine`, TRACE `Debug`.
pub fn loglevel(level: Level) -> LogLevel {
    match level {
        Level::ERROR => LogLevel::Err,
        Level::WARN => LogLevel::Warning,
        Level::INFO => LogLevel::Info,
        Level::DEBUG => LogLevel::DebugLine,
        _ => LogLevel::Debug,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ustrace::ctf::names::is_identifier;

    #[test]
    fn targets_and_names_become_identifiers() {
        for (raw, id) in [
            ("my_app::db", "my_app__db"),
            ("event src/main.rs:12", "event_src_main_rs_12"),
            ("9lives", "_9lives"),
            ("", "_"),
            ("log.target", "log_target"),
            ("é", "__"),
        ] {
            assert_eq!(identifier(raw), id, "{raw:?}");
            assert!(is_identifier(&identifier(raw)));
        }
        let long = identifier(&"x".repeat(1000));
        assert_eq!(long.len(), NAME_MAX);
        let suffixed = suffixed(&long, 12);
        assert!(suffixed.len() <= NAME_MAX && suffixed.ends_with("_12"));
    }

    #[test]
    fn a_source_uri_names_module_file_and_line_within_the_daemons_bounds() {
        struct Cs;
        impl tracing_core::Callsite for Cs {
            fn set_interest(&self, _: tracing_core::Interest) {}
            fn metadata(&self) -> &Metadata<'_> {
                unreachable!("not registered")
            }
        }
        let meta = |module, file: &'static str, line| {
            Metadata::new(
                "n",
                "t",
                Level::INFO,
                Some(file),
                line,
                module,
                tracing_core::field::FieldSet::new(&[], tracing_core::identify_callsite!(&Cs)),
                tracing_core::metadata::Kind::EVENT,
            )
        };
        assert_eq!(
            source_uri(&meta(Some("my_app::db"), "src/db.rs", Some(12))).as_deref(),
            Some("module=my_app::db file=src/db.rs line=12")
        );
        assert_eq!(
            source_uri(&meta(None, "a\nb.rs", None)).as_deref(),
            Some("file=a?b.rs")
        );
        let long: &'static str = "é".repeat(URI_MAX).leak();
        let uri = source_uri(&meta(None, long, Some(1))).unwrap();
        assert!(uri.len() <= URI_MAX && uri.starts_with("file=é"));
        ustrace::ctf::names::check_uri("t:n", &uri).expect("the daemon accepts it");
    }
}
