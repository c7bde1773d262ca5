//! Renders the metadata text: [`preamble`], then a [`stream_class`] per channel and
//! an [`event_class`] per event, each appended as the trace gains them.

use std::fmt::Write as _;

use super::BOOL_ALIAS;
use crate::ctf::context::ContextType;
use crate::ctf::field::{EventDesc, FieldDesc, FieldType};
use crate::ctf::packet::{LOST_EVENT_ID, LOST_EVENT_NAME, LOST_EVENT_PADDED_ID};
use crate::trace::layout::iso8601_basic;
use crate::trace::owner::{Owner, Process};
use crate::trace::registry::{ClockOffset, TraceEnv};

/// The 8-4-4-4-12 text form of a uuid.
pub fn uuid_string(uuid: &[u8; 16]) -> String {
    let mut s = String::with_capacity(36);
    for (i, b) in uuid.iter().enumerate() {
        if matches!(i, 4 | 6 | 8 | 10) {
            s.push('-');
        }
        let _ = write!(s, "{b:02x}");
    }
    s
}

/// A TSDL string literal for `s`.
fn quoted(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

fn integer(bits: u8, signed: bool, base: u32) -> String {
    format!(
        "integer {{ size = {bits}; align = 8; signed = {signed}; encoding = none; base = {base}; byte_order = le; }}"
    )
}

/// Appends the declaration of one payload field.
fn declare_field(out: &mut String, field: &FieldDesc) {
    let name = &field.name;
    let decl = match &field.ty {
        FieldType::Integer { bits, signed, hex } => {
            format!(
                "{} _{name};",
                integer(*bits, *signed, if *hex { 16 } else { 10 })
            )
        }
        FieldType::F32 => format!(
            "floating_point {{ exp_dig = 8; mant_dig = 24; align = 8; byte_order = le; }} _{name};"
        ),
        FieldType::F64 => format!(
            "floating_point {{ exp_dig = 11; mant_dig = 53; align = 8; byte_order = le; }} _{name};"
        ),
        FieldType::Bool => format!("{BOOL_ALIAS} _{name};"),
        FieldType::String => format!("string {{ encoding = UTF8; }} _{name};"),
        FieldType::Bytes => format!(
            "{} __{name}_length;\n\t\t{} _{name}[__{name}_length];",
            integer(32, false, 10),
            integer(8, false, 10)
        ),
        FieldType::Enum {
            bits,
            signed,
            labels,
        } => {
            let labels: Vec<String> = labels
                .iter()
                .map(|(label, value)| format!("{} = {value}", quoted(label)))
                .collect();
            format!(
                "enum : {} {{ {} }} _{name};",
                integer(*bits, *signed, 10),
                labels.join(", ")
            )
        }
    };
    let _ = writeln!(out, "\t\t{decl}");
}

/// The start of every trace's metadata: type aliases, the trace, env and clock
/// blocks. Stream and event classes are appended to it ([`stream_class`],
/// [`event_class`]) as the trace gains channels and events, so that the text grows
/// by what changed instead of being rendered again whole.
pub fn preamble(uuid: &[u8; 16], env: &TraceEnv, clock: ClockOffset) -> String {
    let uuid = uuid_string(uuid);
    let mut out = String::from("/* CTF 1.8 */\n\n");
    out.push_str(
        "typealias integer { size = 8; align = 8; signed = false; byte_order = le; } := uint8_t;\n\
         typealias integer { size = 32; align = 8; signed = false; byte_order = le; } := uint32_t;\n\
         typealias integer { size = 64; align = 8; signed = false; byte_order = le; } := uint64_t;\n",
    );
    let _ = writeln!(
        out,
        "typealias integer {{ size = 8; align = 8; signed = false; byte_order = le; }} := {BOOL_ALIAS};\n"
    );
    let _ = writeln!(
        out,
        "trace {{\n\tmajor = 1;\n\tminor = 8;\n\tuuid = \"{uuid}\";\n\tbyte_order = le;\n\
         \tpacket.header := struct {{\n\t\tuint32_t magic;\n\t\tuint8_t uuid[16];\n\t\tuint32_t stream_id;\n\t}} align(8);\n}};\n"
    );
    let (major, minor, patch) = (
        env!("CARGO_PKG_VERSION_MAJOR"),
        env!("CARGO_PKG_VERSION_MINOR"),
        env!("CARGO_PKG_VERSION_PATCH"),
    );
    let _ = writeln!(out, "env {{");
    let _ = writeln!(out, "\thostname = {};", quoted(&env.hostname));
    let _ = writeln!(out, "\tdomain = \"ust\";");
    let _ = writeln!(out, "\ttracer_name = \"ustrace\";");
    let _ = writeln!(out, "\ttracer_major = {major};");
    let _ = writeln!(out, "\ttracer_minor = {minor};");
    let _ = writeln!(out, "\ttracer_patch = {patch};");
    // LTTng's name for the patch level, which its viewers read.
    let _ = writeln!(out, "\ttracer_patchlevel = {patch};");
    let _ = writeln!(out, "\ttrace_name = {};", quoted(&env.trace_name));
    let _ = writeln!(
        out,
        "\ttrace_creation_datetime = \"{}\";",
        iso8601_basic(env.created)
    );
    let _ = writeln!(out, "\tarchitecture_bit_width = {};", usize::BITS);
    match &env.ownership {
        Owner::Uid(uid) => {
            let _ = writeln!(out, "\ttracer_buffering_scheme = \"uid\";");
            let _ = writeln!(out, "\ttracer_buffering_id = {uid};");
            let _ = writeln!(out, "\tuid = {uid};");
        }
        Owner::Pid {
            process:
                Process {
                    procname,
                    pid,
                    registered,
                },
            ..
        } => {
            let _ = writeln!(out, "\ttracer_buffering_scheme = \"pid\";");
            let _ = writeln!(out, "\ttracer_buffering_id = {pid};");
            let _ = writeln!(out, "\tprocname = {};", quoted(procname));
            let _ = writeln!(out, "\tvpid = {pid};");
            let _ = writeln!(out, "\tvpid_datetime = \"{}\";", iso8601_basic(*registered));
        }
    }
    let _ = writeln!(out, "}};\n");
    let offset = clock.offset_ns;
    let _ = writeln!(
        out,
        "clock {{\n\tname = \"monotonic\";\n\tdescription = \"Monotonic Clock\";\n\tfreq = 1000000000;\n\
         \tprecision = 1;\n\toffset_s = {};\n\toffset = {};\n\tabsolute = TRUE;\n}};\n",
        offset.div_euclid(1_000_000_000),
        offset.rem_euclid(1_000_000_000)
    );
    out.push_str(
        "typealias integer { size = 64; align = 8; signed = false; byte_order = le; map = clock.monotonic.value; } := uint64_clock_monotonic_t;\n\n",
    );
    out
}

/// Appends the stream class `stream_id` of channel `channel`, whose events carry
/// `contexts` (in encoding order) as the stream's `event.context`.
pub fn stream_class(out: &mut String, stream_id: u32, channel: &str, contexts: &[ContextType]) {
    let mut context = String::new();
    if !contexts.is_empty() {
        context.push_str("\tevent.context := struct {\n");
        for c in contexts {
            let _ = writeln!(context, "\t\t{}", c.tsdl());
        }
        context.push_str("\t} align(8);\n");
    }
    let _ = writeln!(
        out,
        "/* channel {} */\nstream {{\n\tid = {stream_id};\n\
         \tevent.header := struct {{\n\
         \t\tenum : integer {{ size = 5; align = 1; signed = false; byte_order = le; }} {{ compact = 0 ... 30, extended = 31 }} id;\n\
         \t\tvariant <id> {{\n\
         \t\t\tstruct {{\n\
         \t\t\t\tinteger {{ size = 27; align = 1; signed = false; byte_order = le; map = clock.monotonic.value; }} timestamp;\n\
         \t\t\t}} compact;\n\
         \t\t\tstruct {{\n\t\t\t\tuint32_t id;\n\t\t\t\tuint64_clock_monotonic_t timestamp;\n\t\t\t}} extended;\n\
         \t\t}} v;\n\
         \t}} align(8);\n\
         {context}\tpacket.context := struct {{\n\t\tuint64_clock_monotonic_t timestamp_begin;\n\
         \t\tuint64_clock_monotonic_t timestamp_end;\n\t\tuint64_t content_size;\n\
         \t\tuint64_t packet_size;\n\t\tuint64_t packet_seq_num;\n\
         \t\tuint64_t events_discarded;\n\t\tuint32_t cpu_id;\n\t}} align(8);\n}};\n",
        channel.replace("*/", "* /")
    );
    // Where a producer died inside a reservation (or dropped it) one of these fills it:
    // header, the stream's event.context zeroed, then `_filler` if the hole is longer.
    let _ = writeln!(
        out,
        "event {{\n\tname = \"{LOST_EVENT_NAME}\";\n\tid = {LOST_EVENT_ID};\n\tstream_id = {stream_id};\n\
         \tfields := struct {{\n\t}} align(8);\n}};\n\n\
         event {{\n\tname = \"{LOST_EVENT_NAME}\";\n\tid = {LOST_EVENT_PADDED_ID};\n\tstream_id = {stream_id};\n\
         \tfields := struct {{\n\t\tstring _filler;\n\t}} align(8);\n}};\n"
    );
}

/// Appends the declaration of event `id` (`event`) in stream class `stream_id`.
pub fn event_class(out: &mut String, id: u32, stream_id: u32, event: &EventDesc) {
    let _ = writeln!(
        out,
        "event {{\n\tname = {};\n\tid = {id};\n\tstream_id = {stream_id};\n\tloglevel = {};",
        quoted(&event.full_name()),
        event.loglevel as u8
    );
    if let Some(uri) = &event.model_emf_uri {
        let _ = writeln!(out, "\tmodel.emf.uri = {};", quoted(uri));
    }
    out.push_str("\tfields := struct {\n");
    for field in &event.fields {
        declare_field(out, field);
    }
    out.push_str("\t} align(8);\n};\n\n");
}
