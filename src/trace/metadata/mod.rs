//! The CTF 1.8 metadata (TSDL) that ustrace writes, and a parser for that same text.
//!
//! [`preamble`], [`stream_class`] and [`event_class`] declare exactly the bytes of
//! [`crate::ctf::packet`] and [`crate::ctf::field`]: little-endian, every type `align = 8`, timestamps mapped to
//! the `monotonic` clock (1 GHz, offset to the Unix epoch so readers print dates).
//! Field names are written with a leading `_` (as LTTng does, so that a field may be
//! called like a TSDL keyword); CTF readers strip it. A byte sequence `x` is declared
//! as a `u32` field `__x_length` followed by `uint8 _x[__x_length]`. A bool is a
//! byte declared through the alias `ustrace_bool_t`, which our reader recognises.
//! Every stream also declares the two classes of [`LOST_EVENT_NAME`](crate::ctf::packet::LOST_EVENT_NAME), which the
//! daemon writes where a producer died inside a reservation (after the stream's
//! `event.context`, zeroed, like every event of the stream).
//!
//! The registry ([`crate::trace::registry::EventRegistry`]) keeps a trace's text and
//! appends to it: each new channel adds its stream class and each new event its
//! classes, so registering costs what it adds, never the size of the whole trace.
//!
//! [`parse()`] is a small TSDL parser for what these produce (it handles the TSDL
//! constructs we emit, in any order and spacing, not all of TSDL) and rebuilds the
//! event descriptions from the declarations themselves: no side channel.
//!
//! [`render`] writes the text, [`parse`](mod@parse) reads it back; the round trip is
//! tested here.

pub mod parse;
pub mod render;

pub use parse::{EnvValue, EventClass, MetadataError, TraceMetadata, parse, parse_uuid};
pub use render::{event_class, preamble, stream_class, uuid_string};

/// Name of the type alias that declares a bool.
const BOOL_ALIAS: &str = "ustrace_bool_t";

#[cfg(test)]
mod tests {
    use super::*;
    use crate::actors::app_connection::ConnectionId;
    use crate::ctf::field::{EventDesc, FieldDesc, FieldType, LogLevel};
    use crate::trace::owner::{Owner, Process};
    use crate::trace::registry::{ClockOffset, EventRegistry, TraceEnv};

    fn registry() -> EventRegistry {
        let mut r = EventRegistry::new(
            [0xAB; 16],
            ClockOffset {
                offset_ns: -1_500_000_001,
            },
            TraceEnv {
                hostname: "h\"x".into(),
                ownership: Owner::Pid {
                    connection: ConnectionId(1),
                    process: Process {
                        procname: "app".into(),
                        pid: 12,
                        registered: std::time::UNIX_EPOCH,
                    },
                },
                trace_name: "s\"1".into(),
                created: std::time::UNIX_EPOCH,
            },
        );
        r.add_channel("a", &[]);
        r.add_channel("b", &[]);
        let ty = |name: &str, ty| FieldDesc {
            name: name.into(),
            ty,
        };
        let fields = vec![
            ty(
                "i",
                FieldType::Integer {
                    bits: 64,
                    signed: true,
                    hex: false,
                },
            ),
            ty(
                "h",
                FieldType::Integer {
                    bits: 8,
                    signed: false,
                    hex: true,
                },
            ),
            ty("f", FieldType::F32),
            ty("d", FieldType::F64),
            ty("b", FieldType::Bool),
            ty("string", FieldType::String),
            ty("y", FieldType::Bytes),
            ty(
                "e",
                FieldType::Enum {
                    bits: 32,
                    signed: true,
                    labels: vec![("A \"q\" \\".into(), -5), ("B".into(), 7)],
                },
            ),
        ];
        r.register_event(&EventDesc {
            model_emf_uri: Some("module=a::b file=\"q\\x.rs\" line=3".into()),
            provider: "p".into(),
            name: "e".into(),
            loglevel: LogLevel::Warning,
            fields,
        })
        .expect("valid description");
        r
    }

    #[test]
    fn a_trace_of_the_layout_before_compact_headers_is_refused_not_misread() {
        let r = registry();
        let text = r.metadata();
        let start = text
            .find("event.header := ")
            .expect("a stream's event header");
        let end = start + text[start..].find("align(8);").unwrap() + "align(8);".len();
        let old = format!(
            "{}event.header := struct {{ uint32_t id; uint64_clock_monotonic_t timestamp; }} align(8);{}",
            &text[..start],
            &text[end..]
        );
        let error = parse(&old).expect_err("the old header layout");
        assert!(error.message.contains("compact/extended"), "{error:?}");
        assert_eq!(error.offset, start + "event.header := ".len());
    }

    #[test]
    fn parse_reads_back_what_render_writes() {
        let r = registry();
        let text = r.metadata();
        assert!(text.starts_with("/* CTF 1.8 */"));
        let meta = parse(text).expect("our own metadata parses");
        assert_eq!(meta.uuid, r.uuid());
        assert_eq!(meta.clock_offset_ns, -1_500_000_001);
        assert_eq!(meta.env("hostname"), Some(&EnvValue::Str("h\"x".into())));
        assert_eq!(meta.env("procname"), Some(&EnvValue::Str("app".into())));
        assert_eq!(meta.env("vpid"), Some(&EnvValue::Int(12)));
        assert_eq!(meta.env("trace_name"), Some(&EnvValue::Str("s\"1".into())));
        assert_eq!(
            meta.env("tracer_buffering_scheme"),
            Some(&EnvValue::Str("pid".into()))
        );
        assert_eq!(meta.env("tracer_buffering_id"), Some(&EnvValue::Int(12)));
        let epoch = EnvValue::Str(crate::trace::layout::iso8601_basic(std::time::UNIX_EPOCH));
        assert_eq!(meta.env("vpid_datetime"), Some(&epoch));
        assert_eq!(meta.env("trace_creation_datetime"), Some(&epoch));
        assert_eq!(meta.stream_ids, vec![0, 1]);
        for stream in [0, 1] {
            let class = &meta.events[&(stream, 0)];
            assert_eq!(class.name, "p:e");
            assert!(
                text.contains("\tmodel.emf.uri = \"module=a::b file=\\\"q\\\\x.rs\\\" line=3\";"),
                "{text}"
            );
            assert_eq!(class.fields, r.events()[0].fields);
        }
    }

    #[test]
    fn parse_errors_give_the_byte_offset() {
        let text = registry().metadata().replacen("size = 64", "size = 63", 1);
        let at = text.find("size = 63").unwrap();
        let err = parse(&text).unwrap_err();
        assert!(
            err.offset <= at && err.offset + 10 > at,
            "{err} (size at {at})"
        );
        assert!(err.message.contains("integer size"), "{err}");
    }

    #[test]
    fn deeply_nested_types_are_refused_without_overflowing_the_stack() {
        let text = format!(
            "/* CTF 1.8 */ typealias {} := t;",
            "struct { ".repeat(100_000)
        );
        let err = parse(&text).unwrap_err();
        assert!(err.message.contains("nested too deeply"), "{err}");
    }
}
