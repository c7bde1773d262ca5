//! Traces built from real packets (packet.rs + field.rs) read by the real babeltrace2
//! and by our `view`, field by field.

mod ctf_support;

use std::path::Path;
use std::time::SystemTime;

use ctf_support::*;
use ustrace::actors::app_connection::ConnectionId;
use ustrace::ctf::field::{FieldType, Hex};
use ustrace::trace::layout::{DirClock, pid_trace_dir, uid_trace_dir};
use ustrace::trace::owner::{Owner, Process};
use ustrace::trace::registry::{EventRegistry, monotonic_ns};
use ustrace::trace::writer::{append_packet, write_metadata};

fn int(bits: u8, signed: bool) -> FieldType {
    FieldType::Integer {
        bits,
        signed,
        hex: false,
    }
}

fn hex(bits: u8) -> FieldType {
    FieldType::Integer {
        bits,
        signed: false,
        hex: true,
    }
}

fn pid(name: &str, pid: u32) -> Owner {
    Owner::Pid {
        connection: ConnectionId(u64::from(pid)),
        process: Process {
            procname: name.into(),
            pid,
            registered: SystemTime::now(),
        },
    }
}

/// One field of every type, plus a field named like a TSDL keyword.
fn all_types(r: &mut EventRegistry) -> u32 {
    let color = FieldType::Enum {
        bits: 16,
        signed: true,
        labels: vec![
            ("RED".into(), -1),
            ("GREEN".into(), 0),
            ("BLUE".into(), 300),
        ],
    };
    r.register_event(&desc(
        "prov",
        "all",
        vec![
            field("a_i8", int(8, true)),
            field("a_i16", int(16, true)),
            field("a_i32", int(32, true)),
            field("a_i64", int(64, true)),
            field("a_u8", int(8, false)),
            field("a_u16", int(16, false)),
            field("a_u32", int(32, false)),
            field("a_u64", int(64, false)),
            field("h8", hex(8)),
            field("h16", hex(16)),
            field("h32", hex(32)),
            field("h64", hex(64)),
            field("f", FieldType::F32),
            field("d", FieldType::F64),
            field("flag", FieldType::Bool),
            field("string", FieldType::String),
            field("blob", FieldType::Bytes),
            field("color", color),
        ],
    ))
    .unwrap()
    .0
}

#[test]
fn every_field_type_reads_the_same_in_babeltrace2_and_view() {
    let tmp = tempfile::tempdir().unwrap();
    let mut r = registry(1, pid("app", 42));
    r.add_channel("chan", &[]);
    let id = all_types(&mut r);
    let dir = pid_trace_dir(tmp.path(), "app", 42, SystemTime::now(), DirClock::Local);
    write_metadata(&dir, &r).unwrap();
    let mut p = PacketBuilder::new(r.uuid(), 0, 0, 0, 100, 4096);
    p.event(
        id,
        150,
        &[
            &i8::MIN,
            &i16::MIN,
            &i32::MIN,
            &i64::MIN,
            &u8::MAX,
            &u16::MAX,
            &u32::MAX,
            &u64::MAX,
            &Hex(0xABu8),
            &Hex(0xBEEFu16),
            &Hex(0xDEAD_BEEFu32),
            &Hex(u64::MAX),
            &1.5f32,
            &-2.25f64,
            &true,
            &"héllo ✓",
            &&[0u8, 7, 255][..],
            &300i16,
        ],
    );
    p.event(
        id,
        151,
        &[
            &1i8,
            &-2i16,
            &3i32,
            &-4i64,
            &0u8,
            &1u16,
            &2u32,
            &3u64,
            &Hex(0u8),
            &Hex(1u16),
            &Hex(2u32),
            &Hex(3u64),
            &0.0f32,
            &1e100f64,
            &false,
            &"",
            &&[][..],
            &-1i16,
        ],
    );
    append_packet(&dir, "chan", 0, &p.finish(0, false)).unwrap();

    let bt = bt_events(tmp.path());
    assert_eq!(bt.len(), 2);
    assert_eq!(bt[0].0, "1795737600.000000150");
    assert_eq!(bt[0].1, "testhost:app:(42)");
    assert_eq!(bt[0].2, "prov:all");
    assert_eq!(
        bt[0].3,
        "{ a_i8 = -128, a_i16 = -32768, a_i32 = -2147483648, a_i64 = -9223372036854775808, \
         a_u8 = 255, a_u16 = 65535, a_u32 = 4294967295, a_u64 = 18446744073709551615, \
         h8 = 0xAB, h16 = 0xBEEF, h32 = 0xDEADBEEF, h64 = 0xFFFFFFFFFFFFFFFF, f = 1.5, \
         d = -2.25, flag = 1, string = \"héllo ✓\", _blob_length = 3, \
         blob = [ [0] = 0, [1] = 7, [2] = 255 ], color = ( \"BLUE\" : container = 300 ) }"
    );
    assert_eq!(
        bt[1].3,
        "{ a_i8 = 1, a_i16 = -2, a_i32 = 3, a_i64 = -4, a_u8 = 0, a_u16 = 1, a_u32 = 2, \
         a_u64 = 3, h8 = 0x0, h16 = 0x1, h32 = 0x2, h64 = 0x3, f = 0, d = 1e+100, flag = 0, \
         string = \"\", _blob_length = 0, blob = [ ], color = ( \"RED\" : container = -1 ) }"
    );

    let view = view_events(tmp.path());
    assert_eq!(view.len(), 2);
    assert_eq!(view[0].0, "2026-11-27 00:00:00.000000150");
    // The trace, then who emitted the event (no contexts: the per-PID trace's own).
    assert_eq!(view[0].1, "app/42 app/42/-");
    assert_eq!(view[0].2, "prov:all");
    assert_eq!(
        view[0].3,
        "{ a_i8 = -128, a_i16 = -32768, a_i32 = -2147483648, a_i64 = -9223372036854775808, \
         a_u8 = 255, a_u16 = 65535, a_u32 = 4294967295, a_u64 = 18446744073709551615, \
         h8 = 0xAB, h16 = 0xBEEF, h32 = 0xDEADBEEF, h64 = 0xFFFFFFFFFFFFFFFF, f = 1.5, \
         d = -2.25, flag = true, string = \"héllo ✓\", blob = [ 0, 7, 255 ], \
         color = ( \"BLUE\" : 300 ) }"
    );
    assert_eq!(
        view[1].3,
        "{ a_i8 = 1, a_i16 = -2, a_i32 = 3, a_i64 = -4, a_u8 = 0, a_u16 = 1, a_u32 = 2, \
         a_u64 = 3, h8 = 0x0, h16 = 0x1, h32 = 0x2, h64 = 0x3, f = 0.0, d = 1e100, \
         flag = false, string = \"\", blob = [ ], color = ( \"RED\" : -1 ) }"
    );
}

/// Writes `packets` of (channel, cpu, seq_num, discarded, trim, [(timestamp, seq field)])
/// for event `id` with one u32 field into `dir`.
#[allow(clippy::type_complexity)]
fn write_seq_packets(
    dir: &Path,
    r: &EventRegistry,
    id: u32,
    packets: &[(&str, u32, u64, u64, bool, &[(u64, u32)])],
) {
    for &(channel, cpu, seq_num, discarded, trim, events) in packets {
        let stream_id = r.channels().iter().position(|c| c == channel).unwrap() as u32;
        let mut p = PacketBuilder::new(r.uuid(), stream_id, cpu, seq_num, events[0].0, 1024);
        for &(ts, seq) in events {
            p.event(id, ts, &[&seq]);
        }
        append_packet(dir, channel, cpu, &p.finish(discarded, trim)).unwrap();
    }
}

fn seq_event(r: &mut EventRegistry) -> u32 {
    r.register_event(&desc("prov", "tick", vec![field("seq", int(32, false))]))
        .unwrap()
        .0
}

#[test]
fn streams_of_several_cpus_and_channels_merge_by_time() {
    let tmp = tempfile::tempdir().unwrap();
    let mut r = registry(2, pid("app", 7));
    r.add_channel("chan", &[]);
    r.add_channel("other", &[]);
    let id = seq_event(&mut r);
    let dir = pid_trace_dir(tmp.path(), "app", 7, SystemTime::now(), DirClock::Utc);
    write_metadata(&dir, &r).unwrap();
    write_seq_packets(
        &dir,
        &r,
        id,
        &[
            ("chan", 0, 0, 0, false, &[(10, 0), (13, 3)]),
            ("chan", 0, 1, 0, false, &[(20, 6), (30, 9)]),
            ("chan", 1, 0, 0, true, &[(11, 1), (21, 7)]),
            ("other", 0, 0, 0, false, &[(12, 2), (14, 4)]),
            ("other", 1, 0, 0, true, &[(15, 5), (25, 8)]),
        ],
    );
    let expected: Vec<String> = (0..10).map(|i| format!("{{ seq = {i} }}")).collect();
    let bt: Vec<String> = bt_events(tmp.path()).into_iter().map(|e| e.3).collect();
    assert_eq!(bt, expected);
    let view: Vec<String> = view_events(tmp.path()).into_iter().map(|e| e.3).collect();
    assert_eq!(view, expected);
    let cpus = babeltrace(tmp.path(), &[]);
    assert!(
        cpus.lines()
            .nth(1)
            .unwrap()
            .contains("{ cpu_id = 1 }, { seq = 1 }"),
        "{cpus}"
    );
}

#[test]
fn discarded_events_are_reported_by_babeltrace2_and_view() {
    let tmp = tempfile::tempdir().unwrap();
    let mut r = registry(3, Owner::Uid(1000));
    r.add_channel("chan", &[]);
    let id = seq_event(&mut r);
    let dir = uid_trace_dir(tmp.path(), 1000);
    write_metadata(&dir, &r).unwrap();
    write_seq_packets(
        &dir,
        &r,
        id,
        &[
            ("chan", 0, 0, 0, false, &[(10, 0)]),
            ("chan", 0, 1, 5, false, &[(20, 1)]),
            ("chan", 0, 2, 5, true, &[(30, 2)]),
            ("chan", 0, 3, 12, true, &[(40, 3)]),
        ],
    );
    let (_, stderr) = babeltrace_output(tmp.path(), &[]);
    assert!(stderr.contains("Tracer discarded 5 events"), "{stderr}");
    assert!(stderr.contains("Tracer discarded 7 events"), "{stderr}");
    assert_eq!(stderr.matches("Tracer discarded").count(), 2, "{stderr}");
    let (events, text) = view_text(tmp.path());
    assert_eq!(events, 4);
    let warnings: Vec<&str> = text.lines().filter(|l| l.contains("WARNING")).collect();
    assert_eq!(warnings.len(), 2, "{text}");
    assert!(
        warnings[0].contains("uid 1000 WARNING: 5 events discarded in"),
        "{text}"
    );
    assert!(
        warnings[0].starts_with("[2026-11-27 00:00:00.000000020]"),
        "{text}"
    );
    assert!(
        warnings[1].contains("WARNING: 7 events discarded in"),
        "{text}"
    );
}

/// Compact headers carry only a timestamp's low 27 bits: babeltrace2 and `view`
/// complete them alike across wraps of those bits, and a gap of 2^27 ns or more is
/// written (and read) with an extended header.
#[test]
fn compact_timestamps_read_whole_across_wraps_and_long_gaps() {
    let tmp = tempfile::tempdir().unwrap();
    let mut r = registry(6, pid("app", 11));
    r.add_channel("chan", &[]);
    let id = seq_event(&mut r);
    let dir = pid_trace_dir(tmp.path(), "app", 11, SystemTime::UNIX_EPOCH, DirClock::Utc);
    write_metadata(&dir, &r).unwrap();
    let wrap = 1u64 << 27;
    let start = 7 * wrap - 5;
    // Across a wrap by 5 ns, then 100 ms steps (each wraps or not), a gap of exactly
    // 2^27 and one of 3 * 2^27 + 1, then small steps again.
    let mut stamps = vec![start, start + 4, start + 5, start + 6];
    for _ in 0..4 {
        stamps.push(stamps.last().unwrap() + 100_000_000);
    }
    stamps.push(stamps.last().unwrap() + wrap);
    stamps.push(stamps.last().unwrap() + 3 * wrap + 1);
    stamps.push(stamps.last().unwrap() + wrap - 1);
    stamps.push(stamps.last().unwrap() + 1);
    let events: Vec<(u64, u32)> = stamps.iter().zip(0..).map(|(&ts, i)| (ts, i)).collect();
    let (first, second) = events.split_at(6);
    write_seq_packets(
        &dir,
        &r,
        id,
        &[
            ("chan", 0, 0, 0, false, first),
            ("chan", 0, 1, 0, true, second),
        ],
    );
    let cycles: Vec<u64> = babeltrace(tmp.path(), &["--clock-cycles", "--no-delta"])
        .lines()
        .map(|l| l[1..l.find(']').unwrap()].parse().unwrap())
        .collect();
    assert_eq!(cycles, stamps);
    let mut out = Vec::new();
    ustrace::trace::view::view(tmp.path(), true, &mut out).expect("view");
    let view: Vec<u64> = String::from_utf8(out)
        .unwrap()
        .lines()
        .map(|l| {
            let json: serde_json::Value = serde_json::from_str(l).unwrap();
            let wall = json["timestamp_ns"].as_i64().expect("a timestamp");
            (wall - OFFSET_NS) as u64
        })
        .collect();
    assert_eq!(view, stamps);
}

#[test]
fn trimmed_packets_read_like_padded_ones() {
    let tmp = tempfile::tempdir().unwrap();
    let mut out = Vec::new();
    for trim in [false, true] {
        let root = tmp.path().join(trim.to_string());
        let mut r = registry(4, pid("app", 9));
        r.add_channel("chan", &[]);
        let id = seq_event(&mut r);
        let dir = pid_trace_dir(&root, "app", 9, SystemTime::UNIX_EPOCH, DirClock::Utc);
        write_metadata(&dir, &r).unwrap();
        write_seq_packets(
            &dir,
            &r,
            id,
            &[
                ("chan", 0, 0, 0, trim, &[(10, 0), (11, 1)]),
                ("chan", 0, 1, 0, trim, &[(12, 2)]),
            ],
        );
        let size = std::fs::metadata(dir.join("chan_0")).unwrap().len();
        // Three compact headers (4 bytes) with a u32 each.
        assert_eq!(size, if trim { 2 * 76 + 3 * 8 } else { 2048 });
        out.push((babeltrace(&root, &[]), view_text(&root)));
    }
    assert_eq!(out[0], out[1]);
    assert_eq!(out[0].1.0, 3);
}

#[test]
fn a_session_of_per_pid_and_per_uid_traces_reads_as_one_time_ordered_trace() {
    let tmp = tempfile::tempdir().unwrap();
    let session = tmp.path();
    let traces = [
        (registry(5, pid("alpha", 100)), [1u64, 4, 7]),
        (registry(6, pid("beta", 200)), [2, 5, 8]),
        (registry(7, Owner::Uid(1000)), [3, 6, 9]),
    ];
    for (mut r, times) in traces {
        r.add_channel("chan", &[]);
        let id = seq_event(&mut r);
        let dir = match &r.env().ownership {
            Owner::Uid(uid) => uid_trace_dir(session, *uid),
            Owner::Pid { process, .. } => pid_trace_dir(
                session,
                &process.procname,
                process.pid,
                SystemTime::now(),
                DirClock::Local,
            ),
        };
        write_metadata(&dir, &r).unwrap();
        let events: Vec<(u64, u32)> = times.iter().map(|&t| (t, t as u32)).collect();
        write_seq_packets(&dir, &r, id, &[("chan", 0, 0, 0, false, &events)]);
    }
    let bt = bt_events(session);
    let bt: Vec<(String, String)> = bt.into_iter().map(|e| (e.1, e.3)).collect();
    let origins = ["alpha", "beta", "uid"];
    let expected_bt: Vec<(String, String)> = (1..=9)
        .map(|i| {
            let origin = match origins[(i - 1) % 3] {
                "alpha" => "testhost:alpha:(100)",
                "beta" => "testhost:beta:(200)",
                _ => "testhost",
            };
            (origin.to_string(), format!("{{ seq = {i} }}"))
        })
        .collect();
    assert_eq!(bt, expected_bt);
    let view: Vec<(String, String)> = view_events(session)
        .into_iter()
        .map(|e| (e.1, e.3))
        .collect();
    let expected_view: Vec<(String, String)> = (1..=9)
        .map(|i| {
            let origin = match origins[(i - 1) % 3] {
                "alpha" => "alpha/100 alpha/100/-",
                "beta" => "beta/200 beta/200/-",
                _ => "uid 1000 -/-/-",
            };
            (origin.to_string(), format!("{{ seq = {i} }}"))
        })
        .collect();
    assert_eq!(view, expected_view);
}

#[test]
fn timestamps_print_as_the_real_wall_clock_date() {
    let tmp = tempfile::tempdir().unwrap();
    let mut r = EventRegistry::for_this_host(pid("app", 1), "s", SystemTime::now()).unwrap();
    r.add_channel("chan", &[]);
    let id = seq_event(&mut r);
    let dir = pid_trace_dir(tmp.path(), "app", 1, SystemTime::now(), DirClock::Local);
    write_metadata(&dir, &r).unwrap();
    let day = |t| {
        let d = ustrace::trace::layout::dir_timestamp(t, DirClock::Utc);
        format!("{}-{}-{}", &d[0..4], &d[4..6], &d[6..8])
    };
    let day_before = day(SystemTime::now());
    let now = monotonic_ns();
    write_seq_packets(&dir, &r, id, &[("chan", 0, 0, 0, false, &[(now, 1)])]);
    let bt = babeltrace(tmp.path(), &["--clock-date", "--clock-gmt", "--no-delta"]);
    let bt_time = &bt[1..bt.find(']').unwrap()];
    let view = view_events(tmp.path());
    assert_eq!(view[0].0, bt_time);
    let day_after = day(SystemTime::now());
    assert!(
        bt_time.starts_with(&day_before) || bt_time.starts_with(&day_after),
        "{bt_time} is not today ({day_after})"
    );
}

#[test]
fn a_gap_in_packet_sequence_numbers_is_reported_as_lost_packets() {
    let tmp = tempfile::tempdir().unwrap();
    let mut r = registry(8, pid("app", 5));
    r.add_channel("chan", &[]);
    let id = seq_event(&mut r);
    let dir = pid_trace_dir(tmp.path(), "app", 5, SystemTime::UNIX_EPOCH, DirClock::Utc);
    write_metadata(&dir, &r).unwrap();
    write_seq_packets(
        &dir,
        &r,
        id,
        &[
            ("chan", 0, 0, 0, false, &[(10, 0)]),
            ("chan", 0, 3, 0, true, &[(40, 1)]),
        ],
    );
    let (_, stderr) = babeltrace_output(tmp.path(), &[]);
    assert!(stderr.contains("Tracer discarded 2 packets"), "{stderr}");
    let (events, text) = view_text(tmp.path());
    assert_eq!(events, 2);
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 3, "{text}");
    assert!(
        lines[1].contains("app/5 WARNING: 2 packets lost in"),
        "{text}"
    );
}

#[test]
fn json_output_has_one_object_per_event_with_typed_fields() {
    let tmp = tempfile::tempdir().unwrap();
    let mut r = registry(9, pid("app", 6));
    r.add_channel("chan", &[]);
    let id = all_types(&mut r);
    let dir = pid_trace_dir(tmp.path(), "app", 6, SystemTime::UNIX_EPOCH, DirClock::Utc);
    write_metadata(&dir, &r).unwrap();
    let mut p = PacketBuilder::new(r.uuid(), 0, 2, 0, 100, 1024);
    p.event(
        id,
        150,
        &[
            &-1i8,
            &2i16,
            &-3i32,
            &4i64,
            &5u8,
            &6u16,
            &7u32,
            &u64::MAX,
            &Hex(0xABu8),
            &Hex(1u16),
            &Hex(2u32),
            &Hex(3u64),
            &1.5f32,
            &-2.25f64,
            &true,
            &"a \"q\"",
            &&[1u8, 2][..],
            &0i16,
        ],
    );
    append_packet(&dir, "chan", 2, &p.finish(0, false)).unwrap();
    let mut out = Vec::new();
    assert_eq!(
        ustrace::trace::view::view(tmp.path(), true, &mut out).unwrap(),
        1
    );
    let text = String::from_utf8(out).unwrap();
    assert_eq!(text.lines().count(), 1);
    let v: serde_json::Value = serde_json::from_str(text.trim_end()).unwrap();
    assert_eq!(
        v["timestamp_ns"],
        serde_json::json!(1_795_737_600_000_000_150i64)
    );
    assert_eq!(v["time"], "2026-11-27 00:00:00.000000150");
    assert_eq!(v["origin"], "app/6");
    assert_eq!(v["cpu_id"], 2);
    assert_eq!(v["event"], "prov:all");
    let f = &v["fields"];
    assert_eq!(f["a_i8"], -1);
    assert_eq!(f["a_u64"], serde_json::json!(u64::MAX));
    assert_eq!(f["h8"], "0xab");
    assert_eq!(f["f"], 1.5);
    assert_eq!(f["d"], -2.25);
    assert_eq!(f["flag"], true);
    assert_eq!(f["string"], "a \"q\"");
    assert_eq!(f["blob"], serde_json::json!([1, 2]));
    assert_eq!(
        f["color"],
        serde_json::json!({ "value": 0, "label": "GREEN" })
    );
}
