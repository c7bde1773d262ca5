//! Shared by the tests/ctf_*.rs files: builds real packets with packet.rs + field.rs,
//! writes real trace directories, and runs the real babeltrace2.

// Each test binary compiles this module and uses only part of it.
#![allow(dead_code)]

use std::path::Path;
use std::process::Command;

use ustrace::ctf::field::{EventDesc, FieldDesc, FieldType, FieldValue, LogLevel};
use ustrace::ctf::packet::{
    COMPACT_HEADER_SIZE, COMPACT_ID_LIMIT, COMPACT_TIMESTAMP_BITS, EVENT_HEADER_SIZE,
    PACKET_HEADER_SIZE, PacketClose, PacketOpen, write_compact_header, write_event_header,
};
use ustrace::trace::owner::Owner;
use ustrace::trace::registry::{ClockOffset, EventRegistry, TraceEnv};

/// A packet being filled the way a producer fills a sub-buffer.
pub struct PacketBuilder {
    buf: Vec<u8>,
    open: PacketOpen,
    used: usize,
    last_ts: u64,
}

impl PacketBuilder {
    pub fn new(
        uuid: [u8; 16],
        stream_id: u32,
        cpu_id: u32,
        seq_num: u64,
        ts: u64,
        size: usize,
    ) -> Self {
        let open = PacketOpen {
            uuid,
            stream_id,
            timestamp_begin: ts,
            packet_size: size as u64,
            seq_num,
            cpu_id,
        };
        let mut buf = vec![0u8; size];
        open.write(&mut buf);
        PacketBuilder {
            buf,
            open,
            used: PACKET_HEADER_SIZE,
            last_ts: ts,
        }
    }

    /// Appends an event, its header compact whenever a reader can complete its
    /// timestamp from the previous one (less than 2^27 after it), as a producer does.
    pub fn event(&mut self, id: u32, ts: u64, fields: &[&dyn FieldValue]) -> &mut Self {
        let compact = id < COMPACT_ID_LIMIT
            && ts >= self.last_ts
            && ts - self.last_ts < 1 << COMPACT_TIMESTAMP_BITS;
        let header = if compact {
            COMPACT_HEADER_SIZE
        } else {
            EVENT_HEADER_SIZE
        };
        let len: usize = header + fields.iter().map(|f| f.encoded_len()).sum::<usize>();
        assert!(self.used + len <= self.buf.len(), "test packet too small");
        if compact {
            write_compact_header(&mut self.buf[self.used..], id, ts);
        } else {
            write_event_header(&mut self.buf[self.used..], id, ts);
        }
        let mut at = self.used + header;
        for f in fields {
            at += f.encode(&mut self.buf[at..]);
        }
        self.used = at;
        self.last_ts = ts;
        self
    }

    /// Closes the packet; `trim` drops the padding (packet_size == content_size).
    pub fn finish(&mut self, events_discarded: u64, trim: bool) -> Vec<u8> {
        let mut buf = self.buf.clone();
        if trim {
            buf.truncate(self.used);
            let open = PacketOpen {
                packet_size: self.used as u64,
                ..self.open
            };
            open.write(&mut buf);
        }
        PacketClose {
            timestamp_end: self.last_ts + 1,
            content_size: self.used as u64,
            events_discarded,
        }
        .write(&mut buf);
        buf
    }
}

pub fn field(name: &str, ty: FieldType) -> FieldDesc {
    FieldDesc {
        name: name.into(),
        ty,
    }
}

pub fn desc(provider: &str, name: &str, fields: Vec<FieldDesc>) -> EventDesc {
    EventDesc {
        model_emf_uri: None,
        provider: provider.into(),
        name: name.into(),
        loglevel: LogLevel::Info,
        fields,
    }
}

/// A registry with a fixed clock offset (2026-11-27 00:00:00 UTC) so dates are known.
pub const OFFSET_NS: i64 = 1_795_737_600_000_000_000;

pub fn registry(uuid_byte: u8, ownership: Owner) -> EventRegistry {
    let mut uuid = [uuid_byte; 16];
    uuid[6] = 0x40 | (uuid_byte & 0x0F);
    EventRegistry::new(
        uuid,
        ClockOffset {
            offset_ns: OFFSET_NS,
        },
        TraceEnv {
            hostname: "testhost".into(),
            ownership,
            trace_name: "test".into(),
            created: std::time::UNIX_EPOCH,
        },
    )
}

/// (stdout, stderr) of `babeltrace2 args... DIR`, panicking with its stderr if it fails.
pub fn babeltrace_output(dir: &Path, extra: &[&str]) -> (String, String) {
    let out = Command::new("/usr/bin/babeltrace2")
        .args(extra)
        .arg(dir)
        .output()
        .expect("run babeltrace2");
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(out.status.success(), "babeltrace2 failed: {stderr}");
    (String::from_utf8(out.stdout).expect("utf-8 output"), stderr)
}

/// Stdout of `babeltrace2 args... DIR`.
pub fn babeltrace(dir: &Path, extra: &[&str]) -> String {
    babeltrace_output(dir, extra).0
}

/// `view` text output, panicking on error.
pub fn view_text(dir: &Path) -> (u64, String) {
    let mut out = Vec::new();
    let n = ustrace::trace::view::view(dir, false, &mut out).expect("view");
    (n, String::from_utf8(out).expect("utf-8 output"))
}

/// `babeltrace2 --clock-seconds --no-delta` event lines split into
/// (seconds timestamp, origin, event name, payload `{ ... }`).
pub fn bt_events(dir: &Path) -> Vec<(String, String, String, String)> {
    babeltrace(dir, &["--clock-seconds", "--no-delta"])
        .lines()
        .map(|line| {
            let (ts, rest) = line[1..].split_once("] ").expect("timestamp");
            let (origin, rest) = rest.split_once(' ').expect("origin");
            let (name, rest) = rest.split_once(": ").expect("name");
            let (_context, payload) = rest.split_once("}, ").expect("context");
            (
                ts.to_string(),
                origin.to_string(),
                name.to_string(),
                payload.to_string(),
            )
        })
        .collect()
}

/// `view` event lines split into (time, origin, event name, payload `{ ... }`).
pub fn view_events(dir: &Path) -> Vec<(String, String, String, String)> {
    view_text(dir)
        .1
        .lines()
        .filter(|l| !l.contains(" WARNING: "))
        .map(|line| {
            let (ts, rest) = line[1..].split_once("] ").expect("timestamp");
            let (payload_start, _) = rest.match_indices(" {").next().expect("payload");
            let (head, payload) = rest.split_at(payload_start);
            let (origin, name) = head.rsplit_once(' ').expect("origin and name");
            (
                ts.to_string(),
                origin.to_string(),
                name.to_string(),
                payload[1..].to_string(),
            )
        })
        .collect()
}
