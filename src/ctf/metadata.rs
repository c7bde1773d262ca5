//! The CTF 1.8 metadata (TSDL) that ustrace writes, and a parser for that same text.
//!
//! [`preamble`], [`stream_class`] and [`event_class`] declare exactly the bytes of
//! [`crate::ctf::packet`] and [`crate::ctf::field`]: little-endian, every type `align = 8`, timestamps mapped to
//! the `monotonic` clock (1 GHz, offset to the Unix epoch so readers print dates).
//! Field names are written with a leading `_` (as LTTng does, so that a field may be
//! called like a TSDL keyword); CTF readers strip it. A byte sequence `x` is declared
//! as a `u32` field `__x_length` followed by `uint8 _x[__x_length]`. A bool is a
//! byte declared through the alias `ustrace_bool_t`, which our reader recognises.
//! Every stream also declares the two classes of [`LOST_EVENT_NAME`], which the
//! daemon writes where a producer died inside a reservation.
//!
//! The registry ([`crate::ctf::registry::EventRegistry`]) keeps a trace's text and
//! appends to it: each new channel adds its stream class and each new event its
//! classes, so registering costs what it adds, never the size of the whole trace.
//!
//! [`parse`] is a small TSDL parser for what these produce (it handles the TSDL
//! constructs we emit, in any order and spacing, not all of TSDL) and rebuilds the
//! event descriptions from the declarations themselves: no side channel.

use std::collections::HashMap;
use std::fmt::Write as _;

use crate::ctf::context::{ContextSet, ContextType, PROCNAME_LEN};
use crate::ctf::field::{EventDesc, FieldDesc, FieldType};
use crate::ctf::layout::iso8601_basic;
use crate::ctf::packet::{LOST_EVENT_ID, LOST_EVENT_NAME, LOST_EVENT_PADDED_ID};
use crate::ctf::registry::{ClockOffset, TraceEnv, TraceOwner};

/// Name of the type alias that declares a bool.
const BOOL_ALIAS: &str = "ustrace_bool_t";

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
        TraceOwner::PerUid { uid } => {
            let _ = writeln!(out, "\ttracer_buffering_scheme = \"uid\";");
            let _ = writeln!(out, "\ttracer_buffering_id = {uid};");
            let _ = writeln!(out, "\tuid = {uid};");
        }
        TraceOwner::PerPid {
            procname,
            pid,
            registered,
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
         \tevent.header := struct {{\n\t\tuint32_t id;\n\t\tuint64_clock_monotonic_t timestamp;\n\t}} align(8);\n\
         {context}\tpacket.context := struct {{\n\t\tuint64_clock_monotonic_t timestamp_begin;\n\
         \t\tuint64_clock_monotonic_t timestamp_end;\n\t\tuint64_t content_size;\n\
         \t\tuint64_t packet_size;\n\t\tuint64_t packet_seq_num;\n\
         \t\tuint64_t events_discarded;\n\t\tuint32_t cpu_id;\n\t}} align(8);\n}};\n",
        channel.replace("*/", "* /")
    );
    // Where a producer died inside a reservation the daemon writes one of these.
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
        "event {{\n\tname = {};\n\tid = {id};\n\tstream_id = {stream_id};\n\tloglevel = {};\n\tfields := struct {{",
        quoted(&event.full_name()),
        event.loglevel as u8
    );
    for field in &event.fields {
        declare_field(out, field);
    }
    out.push_str("\t} align(8);\n};\n\n");
}

/// Why a metadata text could not be understood.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("metadata byte {offset}: {message}")]
pub struct MetadataError {
    /// Byte offset in the text where the problem was found.
    pub offset: usize,
    /// What was wrong there.
    pub message: String,
}

/// A value of an `env` entry.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum EnvValue {
    /// A string entry such as `procname`.
    Str(String),
    /// An integer entry such as `vpid`.
    Int(i64),
}

/// One event class as declared in the metadata.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EventClass {
    /// `provider:name`.
    pub name: String,
    /// Payload fields in encoding order.
    pub fields: Vec<FieldDesc>,
}

/// What a reader needs from a metadata file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TraceMetadata {
    /// The trace uuid that every packet header must carry.
    pub uuid: [u8; 16],
    /// Nanoseconds from the trace clock to the Unix epoch.
    pub clock_offset_ns: i64,
    /// The `env` block, in order.
    pub env: Vec<(String, EnvValue)>,
    /// Declared stream class ids.
    pub stream_ids: Vec<u32>,
    /// The `event.context` of each stream class that declares one, in encoding order.
    pub contexts: HashMap<u32, Vec<ContextType>>,
    /// Event classes by (stream class id, event id).
    pub events: HashMap<(u32, u32), EventClass>,
}

impl TraceMetadata {
    /// The `env` entry called `key`.
    pub fn env(&self, key: &str) -> Option<&EnvValue> {
        self.env.iter().find(|(k, _)| k == key).map(|(_, v)| v)
    }
}

/// Parses metadata text produced by [`preamble`], [`stream_class`] and [`event_class`].
pub fn parse(text: &str) -> Result<TraceMetadata, MetadataError> {
    if !text.starts_with("/* CTF 1.8") {
        return Err(MetadataError {
            offset: 0,
            message: "does not start with `/* CTF 1.8 */`".into(),
        });
    }
    let tokens = tokenize(text)?;
    Parser {
        tokens,
        pos: 0,
        end: text.len(),
        aliases: HashMap::new(),
        depth: 0,
    }
    .metadata()
}

/// One lexical token and where it starts.
#[derive(Clone, Debug, PartialEq)]
enum Tok {
    /// An identifier or keyword.
    Ident(String),
    /// An integer literal.
    Int(i64),
    /// A string literal, unescaped.
    Str(String),
    /// Punctuation: one of `{}[]();=:,.` or `:=`.
    Punct(&'static str),
}

fn tokenize(text: &str) -> Result<Vec<(usize, Tok)>, MetadataError> {
    let bytes = text.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    let err = |offset, message: &str| MetadataError {
        offset,
        message: message.to_string(),
    };
    while i < bytes.len() {
        let c = bytes[i];
        let start = i;
        if c.is_ascii_whitespace() {
            i += 1;
        } else if text[i..].starts_with("/*") {
            let end = text[i + 2..]
                .find("*/")
                .ok_or_else(|| err(i, "unterminated comment"))?;
            i += end + 4;
        } else if text[i..].starts_with("//") {
            i += text[i..].find('\n').unwrap_or(text.len() - i);
        } else if c.is_ascii_alphabetic() || c == b'_' {
            while i < bytes.len() && (bytes[i].is_ascii_alphanumeric() || bytes[i] == b'_') {
                i += 1;
            }
            out.push((start, Tok::Ident(text[start..i].to_string())));
        } else if c.is_ascii_digit()
            || (c == b'-' && bytes.get(i + 1).is_some_and(u8::is_ascii_digit))
        {
            i += 1;
            while i < bytes.len() && bytes[i].is_ascii_alphanumeric() {
                i += 1;
            }
            let lit = &text[start..i];
            let (neg, digits) = match lit.strip_prefix('-') {
                Some(d) => (true, d),
                None => (false, lit),
            };
            let value = match digits
                .strip_prefix("0x")
                .or_else(|| digits.strip_prefix("0X"))
            {
                Some(hex) => i128::from_str_radix(hex, 16),
                None => digits.parse::<i128>(),
            }
            .ok()
            .map(|v| if neg { -v } else { v })
            .and_then(|v| i64::try_from(v).ok())
            .ok_or_else(|| err(start, &format!("bad integer literal `{lit}`")))?;
            out.push((start, Tok::Int(value)));
        } else if c == b'"' {
            let mut s = String::new();
            let mut chars = text[i + 1..].char_indices();
            loop {
                match chars.next() {
                    None => return Err(err(start, "unterminated string")),
                    Some((n, '"')) => {
                        i += n + 2;
                        break;
                    }
                    Some((_, '\\')) => match chars.next() {
                        Some((_, 'n')) => s.push('\n'),
                        Some((_, 't')) => s.push('\t'),
                        Some((_, c)) => s.push(c),
                        None => return Err(err(start, "unterminated string")),
                    },
                    Some((_, c)) => s.push(c),
                }
            }
            out.push((start, Tok::Str(s)));
        } else if text[i..].starts_with(":=") {
            out.push((start, Tok::Punct(":=")));
            i += 2;
        } else {
            let p = ["{", "}", "[", "]", "(", ")", ";", "=", ":", ",", "."]
                .into_iter()
                .find(|p| p.as_bytes()[0] == c)
                .ok_or_else(|| {
                    err(
                        i,
                        &format!("unexpected character {:?}", text[i..].chars().next()),
                    )
                })?;
            out.push((start, Tok::Punct(p)));
            i += 1;
        }
    }
    Ok(out)
}

/// A type as declared, before it becomes a [`FieldType`].
#[derive(Clone, Debug, PartialEq)]
enum Decl {
    /// `integer { ... }`.
    Integer {
        /// `size`.
        bits: u8,
        /// `signed`.
        signed: bool,
        /// `base = 16`.
        hex: bool,
    },
    /// `floating_point { ... }`.
    Float {
        /// `exp_dig`.
        exp: i64,
        /// `mant_dig`.
        mant: i64,
    },
    /// `string`.
    String,
    /// An integer declared through [`BOOL_ALIAS`].
    Bool,
    /// `enum : <integer> { labels }`.
    Enum {
        /// Container `size`.
        bits: u8,
        /// Container `signed`.
        signed: bool,
        /// `"label" = value` pairs in order.
        labels: Vec<(String, i64)>,
    },
    /// `struct { ... }`: its fields (only read for event payloads).
    Struct(Vec<FieldDesc>),
}

/// Recursive-descent parser over the token list.
struct Parser {
    /// Every token with its byte offset in the text.
    tokens: Vec<(usize, Tok)>,
    /// Index of the next token.
    pos: usize,
    /// Length of the text, the offset reported at end of input.
    end: usize,
    /// Type aliases declared so far.
    aliases: HashMap<String, Decl>,
    /// Nesting of the type being parsed, bounded so hostile input cannot overflow
    /// the stack.
    depth: usize,
}

/// Deepest type nesting accepted; ours is 2 (an enum's container inside a struct).
const MAX_TYPE_DEPTH: usize = 8;

type PResult<T> = Result<T, MetadataError>;

impl Parser {
    fn offset(&self) -> usize {
        self.tokens.get(self.pos).map_or(self.end, |(o, _)| *o)
    }

    fn fail<T>(&self, message: impl Into<String>) -> PResult<T> {
        Err(MetadataError {
            offset: self.offset(),
            message: message.into(),
        })
    }

    fn peek(&self) -> Option<&Tok> {
        self.tokens.get(self.pos).map(|(_, t)| t)
    }

    fn next(&mut self) -> PResult<Tok> {
        match self.tokens.get(self.pos) {
            Some((_, t)) => {
                self.pos += 1;
                Ok(t.clone())
            }
            None => self.fail("unexpected end of metadata"),
        }
    }

    fn eat(&mut self, p: &'static str) -> bool {
        if self.peek() == Some(&Tok::Punct(p)) {
            self.pos += 1;
            true
        } else {
            false
        }
    }

    fn expect(&mut self, p: &'static str) -> PResult<()> {
        if self.eat(p) {
            Ok(())
        } else {
            self.fail(format!("expected `{p}`"))
        }
    }

    fn ident(&mut self) -> PResult<String> {
        match self.next()? {
            Tok::Ident(s) => Ok(s),
            _ => {
                self.pos -= 1;
                self.fail("expected an identifier")
            }
        }
    }

    fn int(&mut self) -> PResult<i64> {
        match self.next()? {
            Tok::Int(v) => Ok(v),
            _ => {
                self.pos -= 1;
                self.fail("expected an integer")
            }
        }
    }

    fn metadata(mut self) -> PResult<TraceMetadata> {
        let mut meta = TraceMetadata {
            uuid: [0; 16],
            clock_offset_ns: 0,
            env: Vec::new(),
            stream_ids: Vec::new(),
            contexts: HashMap::new(),
            events: HashMap::new(),
        };
        let mut has_trace = false;
        while self.peek().is_some() {
            let at = self.offset();
            match self.ident()?.as_str() {
                "typealias" => {
                    let decl = self.type_decl()?;
                    self.expect(":=")?;
                    let name = self.ident()?;
                    self.expect(";")?;
                    let decl = match (name.as_str(), decl) {
                        (BOOL_ALIAS, Decl::Integer { bits: 8, .. }) => Decl::Bool,
                        (BOOL_ALIAS, _) => return self.fail("bool alias is not an 8-bit integer"),
                        (_, decl) => decl,
                    };
                    self.aliases.insert(name, decl);
                }
                "trace" => {
                    has_trace = true;
                    self.block(|p, key| match key {
                        "uuid" => {
                            let text = p.string()?;
                            meta.uuid = parse_uuid(&text).map_or_else(|| p.fail("bad uuid"), Ok)?;
                            Ok(())
                        }
                        "byte_order" => match p.ident()?.as_str() {
                            "le" => Ok(()),
                            _ => p.fail("only byte_order = le is supported"),
                        },
                        _ => p.skip_value(),
                    })?;
                }
                "env" => {
                    self.block(|p, key| {
                        let value = match p.next()? {
                            Tok::Str(s) => EnvValue::Str(s),
                            Tok::Int(i) => EnvValue::Int(i),
                            _ => return p.fail("env values are strings or integers"),
                        };
                        meta.env.push((key.to_string(), value));
                        Ok(())
                    })?;
                }
                "clock" => {
                    let (mut secs, mut cycles, mut freq) = (0i64, 0i64, 1_000_000_000i64);
                    self.block(|p, key| {
                        match key {
                            "offset_s" => secs = p.int()?,
                            "offset" => cycles = p.int()?,
                            "freq" => freq = p.int()?,
                            _ => p.skip_value()?,
                        }
                        Ok(())
                    })?;
                    if freq != 1_000_000_000 {
                        return Err(MetadataError {
                            offset: at,
                            message: format!("clock frequency {freq} Hz, expected 1 GHz"),
                        });
                    }
                    meta.clock_offset_ns = secs
                        .checked_mul(1_000_000_000)
                        .and_then(|ns| ns.checked_add(cycles))
                        .ok_or(MetadataError {
                            offset: at,
                            message: "clock offset out of range".into(),
                        })?;
                }
                "stream" => {
                    let (mut id, mut contexts) = (None, Vec::new());
                    self.block(|p, key| {
                        match key {
                            "id" => id = Some(p.u32()?),
                            "event.context" => contexts = p.context_struct()?,
                            _ => p.skip_value()?,
                        }
                        Ok(())
                    })?;
                    match id {
                        Some(id) => {
                            meta.stream_ids.push(id);
                            if !contexts.is_empty() {
                                meta.contexts.insert(id, contexts);
                            }
                        }
                        None => {
                            return Err(MetadataError {
                                offset: at,
                                message: "stream without id".into(),
                            });
                        }
                    }
                }
                "event" => {
                    let (mut name, mut id, mut stream_id, mut fields) = (None, None, 0, Vec::new());
                    self.block(|p, key| {
                        match key {
                            "name" => name = Some(p.string()?),
                            "id" => id = Some(p.u32()?),
                            "stream_id" => stream_id = p.u32()?,
                            "fields" => match p.type_decl()? {
                                Decl::Struct(f) => fields = f,
                                _ => return p.fail("event fields must be a struct"),
                            },
                            _ => p.skip_value()?,
                        }
                        Ok(())
                    })?;
                    let (Some(name), Some(id)) = (name, id) else {
                        return Err(MetadataError {
                            offset: at,
                            message: "event without name or id".into(),
                        });
                    };
                    if meta
                        .events
                        .insert((stream_id, id), EventClass { name, fields })
                        .is_some()
                    {
                        return Err(MetadataError {
                            offset: at,
                            message: format!("event id {id} declared twice in stream {stream_id}"),
                        });
                    }
                }
                other => {
                    return Err(MetadataError {
                        offset: at,
                        message: format!("unexpected top-level `{other}`"),
                    });
                }
            }
        }
        if !has_trace {
            return self.fail("no trace block");
        }
        if let Some(((stream, id), _)) = meta
            .events
            .iter()
            .find(|((s, _), _)| !meta.stream_ids.contains(s))
        {
            return self.fail(format!("event {id} belongs to undeclared stream {stream}"));
        }
        Ok(meta)
    }

    fn u32(&mut self) -> PResult<u32> {
        let v = self.int()?;
        u32::try_from(v).or_else(|_| {
            self.pos -= 1;
            self.fail(format!("{v} is not a 32-bit unsigned integer"))
        })
    }

    fn string(&mut self) -> PResult<String> {
        match self.next()? {
            Tok::Str(s) => Ok(s),
            _ => {
                self.pos -= 1;
                self.fail("expected a string")
            }
        }
    }

    /// Parses `{ key = value; key.sub := type; ... };`, handing each key to `entry`,
    /// which consumes the value.
    fn block(&mut self, mut entry: impl FnMut(&mut Self, &str) -> PResult<()>) -> PResult<()> {
        self.expect("{")?;
        while !self.eat("}") {
            let mut key = self.ident()?;
            while self.eat(".") {
                key.push('.');
                key.push_str(&self.ident()?);
            }
            if !self.eat("=") {
                self.expect(":=")?;
            }
            entry(self, &key)?;
            self.expect(";")?;
        }
        self.expect(";")
    }

    /// Parses a stream's `event.context := struct { ... }`: only the context fields
    /// of [`Context`], each declared as [`ContextType::tsdl`] says, in encoding order.
    fn context_struct(&mut self) -> PResult<Vec<ContextType>> {
        let start = self.offset();
        if self.ident()? != "struct" {
            return self.fail("event.context must be a struct");
        }
        self.expect("{")?;
        let mut contexts = Vec::new();
        while !self.eat("}") {
            let decl = self.type_decl()?;
            let field = self.ident()?;
            let array = if self.eat("[") {
                let n = self.int()?;
                self.expect("]")?;
                Some(n)
            } else {
                None
            };
            self.expect(";")?;
            let context = field
                .strip_prefix('_')
                .and_then(|name| ContextType::from_name(name).ok())
                .ok_or_else(|| MetadataError {
                    offset: start,
                    message: format!("unsupported context field `{field}`"),
                })?;
            let expected = match context {
                ContextType::Procname => (
                    Decl::Integer {
                        bits: 8,
                        signed: false,
                        hex: false,
                    },
                    Some(PROCNAME_LEN as i64),
                ),
                ContextType::PthreadId | ContextType::Ip => (
                    Decl::Integer {
                        bits: 64,
                        signed: false,
                        hex: true,
                    },
                    None,
                ),
                _ => (
                    Decl::Integer {
                        bits: 32,
                        signed: true,
                        hex: false,
                    },
                    None,
                ),
            };
            if (decl, array) != expected {
                return self.fail(format!(
                    "context field `{field}` is not declared as {}",
                    context.tsdl()
                ));
            }
            contexts.push(context);
        }
        if self.peek() == Some(&Tok::Ident("align".into())) {
            self.pos += 1;
            self.expect("(")?;
            self.int()?;
            self.expect(")")?;
        }
        if contexts != ContextSet::of(&contexts).to_vec() {
            return self.fail("context fields out of encoding order or repeated");
        }
        Ok(contexts)
    }

    /// Skips a value we do not need: a literal, an identifier or a type.
    fn skip_value(&mut self) -> PResult<()> {
        match self.peek() {
            Some(Tok::Int(_) | Tok::Str(_)) => {
                self.pos += 1;
                Ok(())
            }
            Some(Tok::Ident(s)) if !is_type_keyword(s) && !self.aliases.contains_key(s) => {
                self.pos += 1;
                while self.eat(".") {
                    self.ident()?;
                }
                Ok(())
            }
            _ => self.type_decl().map(drop),
        }
    }

    /// Parses `{ attr = value; ... }` of an integer or floating point type.
    fn attributes(&mut self) -> PResult<HashMap<String, Tok>> {
        let mut attrs = HashMap::new();
        self.expect("{")?;
        while !self.eat("}") {
            let key = self.ident()?;
            self.expect("=")?;
            let mut value = self.next()?;
            if let Tok::Ident(first) = &value {
                let mut dotted = first.clone();
                while self.eat(".") {
                    dotted.push('.');
                    dotted.push_str(&self.ident()?);
                }
                value = Tok::Ident(dotted);
            }
            attrs.insert(key, value);
            self.expect(";")?;
        }
        Ok(attrs)
    }

    fn integer_decl(&mut self) -> PResult<Decl> {
        let start = self.offset();
        let attrs = self.attributes()?;
        let bits = match attrs.get("size") {
            Some(Tok::Int(b @ (8 | 16 | 32 | 64))) => *b as u8,
            _ => {
                return Err(MetadataError {
                    offset: start,
                    message: "integer size must be 8, 16, 32 or 64".into(),
                });
            }
        };
        let signed = matches!(attrs.get("signed"), Some(Tok::Ident(s)) if s == "true" || s == "TRUE")
            || matches!(attrs.get("signed"), Some(Tok::Int(1)));
        let hex = matches!(attrs.get("base"), Some(Tok::Int(16)));
        Ok(Decl::Integer { bits, signed, hex })
    }

    fn type_decl(&mut self) -> PResult<Decl> {
        if self.depth >= MAX_TYPE_DEPTH {
            return self.fail("types nested too deeply");
        }
        self.depth += 1;
        let decl = self.type_decl_inner();
        self.depth -= 1;
        decl
    }

    fn type_decl_inner(&mut self) -> PResult<Decl> {
        let name = self.ident()?;
        match name.as_str() {
            "integer" => self.integer_decl(),
            "floating_point" => {
                let attrs = self.attributes()?;
                match (attrs.get("exp_dig"), attrs.get("mant_dig")) {
                    (Some(Tok::Int(exp)), Some(Tok::Int(mant))) => Ok(Decl::Float {
                        exp: *exp,
                        mant: *mant,
                    }),
                    _ => self.fail("floating_point needs exp_dig and mant_dig"),
                }
            }
            "string" => {
                if self.peek() == Some(&Tok::Punct("{")) {
                    self.attributes()?;
                }
                Ok(Decl::String)
            }
            "enum" => {
                self.expect(":")?;
                let (bits, signed) = match self.type_decl()? {
                    Decl::Integer { bits, signed, .. } => (bits, signed),
                    _ => return self.fail("enum container must be an integer"),
                };
                self.expect("{")?;
                let mut labels = Vec::new();
                while !self.eat("}") {
                    let label = self.string()?;
                    self.expect("=")?;
                    labels.push((label, self.int()?));
                    if !self.eat(",") {
                        self.expect("}")?;
                        break;
                    }
                }
                Ok(Decl::Enum {
                    bits,
                    signed,
                    labels,
                })
            }
            "struct" => {
                self.expect("{")?;
                let mut fields: Vec<FieldDesc> = Vec::new();
                while !self.eat("}") {
                    let decl = self.type_decl()?;
                    let name = self.ident()?;
                    let name = name.strip_prefix('_').unwrap_or(&name).to_string();
                    if self.eat("[") {
                        let length = self.next()?;
                        self.expect("]")?;
                        match (length, &decl) {
                            (Tok::Int(_), _) => {} // a fixed array, only in headers
                            (
                                Tok::Ident(len),
                                Decl::Integer {
                                    bits: 8,
                                    signed: false,
                                    ..
                                },
                            ) => {
                                let len = len.strip_prefix('_').unwrap_or(&len);
                                match fields.pop() {
                                    Some(FieldDesc {
                                        name: prev,
                                        ty:
                                            FieldType::Integer {
                                                bits: 32,
                                                signed: false,
                                                ..
                                            },
                                    }) if prev == len && len == format!("_{name}_length") => {}
                                    _ => {
                                        return self.fail(format!(
                                            "sequence `{name}` must follow its u32 length field"
                                        ));
                                    }
                                }
                                fields.push(FieldDesc {
                                    name,
                                    ty: FieldType::Bytes,
                                });
                            }
                            _ => return self.fail("only byte sequences are supported"),
                        }
                    } else {
                        let ty = match decl {
                            Decl::Integer { bits, signed, hex } => {
                                FieldType::Integer { bits, signed, hex }
                            }
                            Decl::Float { exp: 8, mant: 24 } => FieldType::F32,
                            Decl::Float { exp: 11, mant: 53 } => FieldType::F64,
                            Decl::Float { .. } => {
                                return self.fail("only 32- and 64-bit floats are supported");
                            }
                            Decl::String => FieldType::String,
                            Decl::Bool => FieldType::Bool,
                            Decl::Enum {
                                bits,
                                signed,
                                labels,
                            } => FieldType::Enum {
                                bits,
                                signed,
                                labels,
                            },
                            Decl::Struct(_) => {
                                return self.fail("nested structs are not supported");
                            }
                        };
                        fields.push(FieldDesc { name, ty });
                    }
                    self.expect(";")?;
                }
                if self.peek() == Some(&Tok::Ident("align".into())) {
                    self.pos += 1;
                    self.expect("(")?;
                    self.int()?;
                    self.expect(")")?;
                }
                Ok(Decl::Struct(fields))
            }
            alias => match self.aliases.get(alias) {
                Some(decl) => Ok(decl.clone()),
                None => {
                    self.pos -= 1;
                    self.fail(format!("unknown type `{alias}`"))
                }
            },
        }
    }
}

fn is_type_keyword(s: &str) -> bool {
    matches!(
        s,
        "integer" | "floating_point" | "string" | "enum" | "struct"
    )
}

/// Parses the 8-4-4-4-12 text form of a uuid.
pub fn parse_uuid(text: &str) -> Option<[u8; 16]> {
    let hex: String = text.chars().filter(|&c| c != '-').collect();
    if hex.len() != 32 || text.len() != 36 {
        return None;
    }
    let mut uuid = [0u8; 16];
    for (i, byte) in uuid.iter_mut().enumerate() {
        *byte = u8::from_str_radix(hex.get(2 * i..2 * i + 2)?, 16).ok()?;
    }
    Some(uuid)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ctf::field::{EventDesc, LogLevel};
    use crate::ctf::registry::EventRegistry;

    fn registry() -> EventRegistry {
        let mut r = EventRegistry::new(
            [0xAB; 16],
            ClockOffset {
                offset_ns: -1_500_000_001,
            },
            TraceEnv {
                hostname: "h\"x".into(),
                ownership: TraceOwner::PerPid {
                    procname: "app".into(),
                    pid: 12,
                    registered: std::time::UNIX_EPOCH,
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
            provider: "p".into(),
            name: "e".into(),
            loglevel: LogLevel::Warning,
            fields,
        })
        .expect("valid description");
        r
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
        let epoch = EnvValue::Str(iso8601_basic(std::time::UNIX_EPOCH));
        assert_eq!(meta.env("vpid_datetime"), Some(&epoch));
        assert_eq!(meta.env("trace_creation_datetime"), Some(&epoch));
        assert_eq!(meta.stream_ids, vec![0, 1]);
        for stream in [0, 1] {
            let class = &meta.events[&(stream, 0)];
            assert_eq!(class.name, "p:e");
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
