//! `ustrace view DIR`: prints every event of a session directory in time order.
//!
//! Text output, one line per event:
//! `[2026-11-27 08:43:57.123456789] uid 1000 app/1234/1236 provider:name { i = 1, s = "hello" }`,
//! where `uid 1000` marks a per-UID trace and `app/1234` (procname/vpid) a per-PID
//! one, and `app/1234/1236` is who emitted the event: procname/vpid/vtid from its
//! contexts (docs/trace-layout.md, "Contexts"), else from its per-PID trace's
//! metadata, `-` for what neither says. Discarded events print as
//! `[time] origin WARNING: N events discarded in <stream file>` and missing packets
//! (a gap in packet_seq_num) as `[time] origin WARNING: N packets lost in <stream file>`,
//! both at the start of the packet that follows the loss. `--json` prints one JSON object per line instead.
//! `--follow` ([`follow`]) goes on printing what reaches the disk until interrupted.
//!
//! Span nesting (events of `ustrace-tracing`): an event whose first fields are
//! `span_id, parent` made a span, named by its event name's part after the `:`.
//! Every later event of the same sub-trace that names a span in its first field
//! (`span`, or `span_id` for `tracing_span:enter|exit|close`) prints its span path
//! after its fields, outermost first: `... { span = 7, ... } in job > step`
//! (`"span_path": "job > step"` in JSON). A `tracing_span:follows_from` event also
//! prints the path of the span it follows: `... in job follows request > parse`
//! (`"follows_path"` in JSON).

use std::collections::HashMap;
use std::io::{self, Write};
use std::path::Path;
use std::time::Duration;

use serde_json::{Map, Value as Json, json};

use crate::ctf::context::ContextType;
use crate::trace::layout::Civil;
use crate::trace::metadata::EnvValue;
use crate::trace::reader::{Event, ReadError, Reader, RecordKind, SubTrace, Value};

/// Why `view` stopped.
#[derive(Debug, thiserror::Error)]
pub enum ViewError {
    /// The trace could not be read; names the file and byte offset.
    #[error(transparent)]
    Read(#[from] ReadError),
    /// The output could not be written.
    #[error("writing the output: {0}")]
    Output(#[from] io::Error),
}

/// Prints every event under `dir` to `out` (text, or JSON lines if `json`) and returns
/// how many events were printed.
pub fn view(dir: &Path, json: bool, out: &mut dyn Write) -> Result<u64, ViewError> {
    let mut reader = Reader::open(dir)?;
    print_records(&mut reader, json, out)
}

/// `view --follow`: prints what is under `dir`, then, every `poll`, what reached the
/// disk since (new per-PID sub-traces and stream files included), each stream up to
/// its last whole packet, flushing `out` after each round. Returns only on an error
/// (a broken pipe included: the caller decides whether it is one); stopped by a
/// signal otherwise.
pub fn follow(dir: &Path, json: bool, poll: Duration, out: &mut dyn Write) -> ViewError {
    let mut reader = match Reader::open_following(dir) {
        Ok(reader) => reader,
        Err(e) => return e.into(),
    };
    loop {
        if let Err(e) = print_records(&mut reader, json, out) {
            return e;
        }
        if let Err(e) = out.flush() {
            return e.into();
        }
        std::thread::sleep(poll);
        if let Err(e) = reader.refresh(dir) {
            return e.into();
        }
    }
}

/// Prints the reader's records up to the end of what it has, returning how many
/// were events.
fn print_records(reader: &mut Reader, json: bool, out: &mut dyn Write) -> Result<u64, ViewError> {
    let mut events = 0;
    let mut spans = SpanPaths::default();
    while let Some(record) = reader.next_record()? {
        let trace = &reader.traces()[record.trace];
        let origin = trace.origin();
        let time = wall_time(record.wall_ns);
        match (&record.kind, json) {
            (RecordKind::Event(event), false) => {
                let who = Who::of(event, trace);
                let fields: Vec<String> = event
                    .fields
                    .iter()
                    .map(|(name, value)| format!("{name} = {}", text_value(value)))
                    .collect();
                let fields = if fields.is_empty() {
                    "{ }".to_string()
                } else {
                    format!("{{ {} }}", fields.join(", "))
                };
                let path = spans.path(record.trace, who.vpid, event);
                let mut path = path.map_or(String::new(), |p| format!(" in {p}"));
                if let Some(follows) = spans.follows(record.trace, who.vpid, event) {
                    path.push_str(&format!(" follows {follows}"));
                }
                writeln!(out, "[{time}] {origin} {who} {} {fields}{path}", event.name)?;
            }
            (RecordKind::Event(event), true) => {
                let who = Who::of(event, trace);
                let context: Map<String, Json> = event
                    .context
                    .iter()
                    .map(|(c, value)| (c.name().to_string(), json_value(value)))
                    .collect();
                let fields: Map<String, Json> = event
                    .fields
                    .iter()
                    .map(|(name, value)| (name.clone(), json_value(value)))
                    .collect();
                let mut line = json!({
                    "timestamp_ns": json_int(record.wall_ns),
                    "time": time,
                    "origin": origin,
                    "cpu_id": event.cpu_id,
                    "procname": who.procname,
                    "vpid": who.vpid,
                    "vtid": who.vtid,
                    "event": event.name,
                    "context": context,
                    "fields": fields,
                });
                if let Some(path) = spans.path(record.trace, who.vpid, event) {
                    line["span_path"] = json!(path);
                }
                if let Some(follows) = spans.follows(record.trace, who.vpid, event) {
                    line["follows_path"] = json!(follows);
                }
                writeln!(out, "{line}")?;
            }
            (RecordKind::Discarded { count, stream }, false) => {
                writeln!(
                    out,
                    "[{time}] {origin} WARNING: {count} events discarded in {}",
                    stream.display()
                )?;
            }
            (RecordKind::LostPackets { count, stream }, false) => {
                writeln!(
                    out,
                    "[{time}] {origin} WARNING: {count} packets lost in {}",
                    stream.display()
                )?;
            }
            (RecordKind::LostPackets { count, stream }, true)
            | (RecordKind::Discarded { count, stream }, true) => {
                let what = match record.kind {
                    RecordKind::LostPackets { .. } => "lost_packets",
                    _ => "discarded",
                };
                let mut line = json!({
                    "timestamp_ns": json_int(record.wall_ns),
                    "time": time,
                    "origin": origin,
                    "stream": stream.display().to_string(),
                });
                line[what] = json!(count);
                writeln!(out, "{line}")?;
            }
        }
        if matches!(record.kind, RecordKind::Event(_)) {
            events += 1;
        }
    }
    Ok(events)
}

/// Who emitted an event: from its contexts, else (procname, vpid) from its per-PID
/// trace's metadata.
struct Who {
    /// The thread's name (`procname` context) or the process's (per-PID `env`).
    procname: Option<String>,
    /// `vpid` context, or the per-PID trace's `vpid`.
    vpid: Option<i64>,
    /// `vtid` context.
    vtid: Option<i64>,
}

impl Who {
    /// What `event` of `trace` says of its emitter.
    fn of(event: &Event, trace: &SubTrace) -> Who {
        let context = |want: ContextType| {
            event
                .context
                .iter()
                .find(|(c, _)| *c == want)
                .map(|(_, v)| v)
        };
        let int = |v: Option<&Value>| match v {
            Some(Value::Signed(i)) => Some(*i),
            _ => None,
        };
        let env = &trace.metadata;
        Who {
            procname: match (context(ContextType::Procname), env.env("procname")) {
                (Some(Value::Str(s)), _) | (_, Some(EnvValue::Str(s))) => Some(s.clone()),
                _ => None,
            },
            vpid: int(context(ContextType::Vpid)).or(match env.env("vpid") {
                Some(EnvValue::Int(pid)) => Some(*pid),
                _ => None,
            }),
            vtid: int(context(ContextType::Vtid)),
        }
    }
}

impl std::fmt::Display for Who {
    /// `procname/vpid/vtid`, `-` for what is unknown.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let or_dash = |v: Option<String>| v.unwrap_or_else(|| "-".into());
        write!(
            f,
            "{}/{}/{}",
            or_dash(self.procname.clone()),
            or_dash(self.vpid.map(|v| v.to_string())),
            or_dash(self.vtid.map(|v| v.to_string()))
        )
    }
}

/// The spans seen so far, per sub-trace and process (a per-UID trace's events
/// name theirs with the vpid context, if recorded): `(trace, vpid, span id)` to
/// `(name, parent)`.
#[derive(Default)]
struct SpanPaths(HashMap<(usize, Option<i64>, u64), (String, u64)>);

/// How deep a span path goes (a parent loop in a hostile trace stops there).
const MAX_SPAN_DEPTH: usize = 64;

impl SpanPaths {
    /// Learns the span `event` makes, if any, and gives the path of the span it
    /// names, if any.
    fn path(&mut self, trace: usize, vpid: Option<i64>, event: &Event) -> Option<String> {
        let id = |i: usize, name: &str| match event.fields.get(i) {
            Some((n, Value::Unsigned(v))) if n == name => Some(*v),
            _ => None,
        };
        let span = match (id(0, "span_id"), id(1, "parent")) {
            (Some(span), Some(parent)) => {
                let name = event.name.split_once(':').map_or(&*event.name, |(_, n)| n);
                self.0
                    .insert((trace, vpid, span), (name.to_string(), parent));
                span
            }
            _ => id(0, "span").or_else(|| id(0, "span_id"))?,
        };
        self.walk(trace, vpid, span)
    }

    /// The path of the span a `tracing_span:follows_from` event says its span
    /// follows, if known.
    fn follows(&self, trace: usize, vpid: Option<i64>, event: &Event) -> Option<String> {
        if event.name != "tracing_span:follows_from" {
            return None;
        }
        match event.fields.get(1) {
            Some((n, Value::Unsigned(follows))) if n == "follows" => {
                self.walk(trace, vpid, *follows)
            }
            _ => None,
        }
    }

    /// The names of `span` and its known ancestors, outermost first.
    fn walk(&self, trace: usize, vpid: Option<i64>, span: u64) -> Option<String> {
        let mut names = Vec::new();
        let mut at = span;
        // A span made before the trace started is left out of the path.
        while let Some((name, parent)) = self.0.get(&(trace, vpid, at)) {
            if at == 0 || names.len() == MAX_SPAN_DEPTH {
                break;
            }
            names.push(name.as_str());
            at = *parent;
        }
        names.reverse();
        (!names.is_empty()).then(|| names.join(" > "))
    }
}

/// `YYYY-MM-DD HH:MM:SS.nnnnnnnnn` (UTC) for nanoseconds since the epoch.
fn wall_time(ns: i128) -> String {
    let secs = ns.div_euclid(1_000_000_000);
    let nanos = ns.rem_euclid(1_000_000_000);
    let c = Civil::from_unix(i64::try_from(secs).unwrap_or(i64::MAX));
    format!(
        "{:04}-{:02}-{:02} {:02}:{:02}:{:02}.{nanos:09}",
        c.year, c.month, c.day, c.hour, c.minute, c.second
    )
}

/// How a value prints in text output.
fn text_value(value: &Value) -> String {
    match value {
        Value::Signed(v) => v.to_string(),
        Value::Unsigned(v) => v.to_string(),
        Value::Hex(v) => format!("{v:#X}"),
        Value::F32(v) => format!("{v:?}"),
        Value::F64(v) => format!("{v:?}"),
        Value::Bool(v) => v.to_string(),
        Value::Str(s) => format!("{s:?}"),
        Value::Bytes(b) => {
            let items: Vec<String> = b.iter().map(u8::to_string).collect();
            if items.is_empty() {
                "[ ]".to_string()
            } else {
                format!("[ {} ]", items.join(", "))
            }
        }
        Value::Enum { value, label } => match label {
            Some(label) => format!("( {label:?} : {value} )"),
            None => format!("( <unknown> : {value} )"),
        },
    }
}

/// How a value prints in JSON output.
fn json_value(value: &Value) -> Json {
    match value {
        Value::Signed(v) => json!(v),
        Value::Unsigned(v) => json!(v),
        Value::Hex(v) => json!(format!("{v:#x}")),
        Value::F32(v) => json!(v),
        Value::F64(v) => json!(v),
        Value::Bool(v) => json!(v),
        Value::Str(s) => json!(s),
        Value::Bytes(b) => json!(b),
        Value::Enum { value, label } => json!({ "value": json_int(*value), "label": label }),
    }
}

/// A JSON number for `v`, or its decimal string if it does not fit in 64 bits.
fn json_int(v: i128) -> Json {
    match (i64::try_from(v), u64::try_from(v)) {
        (Ok(v), _) => json!(v),
        (_, Ok(v)) => json!(v),
        _ => json!(v.to_string()),
    }
}
