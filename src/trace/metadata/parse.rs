//! Parses the metadata text [`super::render`] produces back into what a reader needs.

use std::collections::HashMap;

use super::BOOL_ALIAS;
use crate::ctf::context::{ContextSet, ContextType, PROCNAME_LEN};
use crate::ctf::field::{FieldDesc, FieldType};

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

/// Parses metadata text produced by [`preamble`](super::preamble), [`stream_class`](super::stream_class)
/// and [`event_class`](super::event_class).
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
    /// Punctuation: one of `{}[]()<>;=:,.` or `:=`.
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
            let p = [
                "{", "}", "[", "]", "(", ")", "<", ">", ";", "=", ":", ",", ".",
            ]
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
                            "event.header" => p.event_header()?,
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

    /// Steps over a stream's `event.header`, whose layout is fixed (`ctf::packet`): it
    /// must be the compact/extended variant, so that a trace of the older layout (a
    /// plain struct of u32 id and u64 timestamp) is refused instead of misread.
    fn event_header(&mut self) -> PResult<()> {
        let (start, offset) = (self.pos, self.offset());
        self.skip_balanced()?;
        let variant = Tok::Ident("variant".into());
        if self.tokens[start..self.pos]
            .iter()
            .any(|(_, t)| *t == variant)
        {
            return Ok(());
        }
        Err(MetadataError {
            offset,
            message: "event.header is not the compact/extended variant this reader decodes \
                      (a trace from a ustrace before compact event headers?)"
                .into(),
        })
    }

    /// Steps over a declaration up to the `;` that ends it (not taken), checking only
    /// that its brackets pair up and nest no deeper than [`MAX_TYPE_DEPTH`].
    fn skip_balanced(&mut self) -> PResult<()> {
        let mut open: Vec<&'static str> = Vec::new();
        loop {
            match self.peek() {
                None => return self.fail("unexpected end of metadata"),
                Some(Tok::Punct(";")) if open.is_empty() => return Ok(()),
                Some(Tok::Punct(p @ ("{" | "[" | "(" | "<"))) => {
                    if open.len() >= MAX_TYPE_DEPTH {
                        return self.fail("types nested too deeply");
                    }
                    open.push(match *p {
                        "{" => "}",
                        "[" => "]",
                        "(" => ")",
                        _ => ">",
                    });
                }
                Some(Tok::Punct(p @ ("}" | "]" | ")" | ">"))) => {
                    if open.pop() != Some(*p) {
                        return self.fail(format!("unbalanced `{p}`"));
                    }
                }
                Some(_) => {}
            }
            self.pos += 1;
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
