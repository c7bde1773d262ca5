//! Corrupt and truncated traces: `view` returns an error naming the file and the byte
//! offset, or (for harmless mutations) reads the trace; it never panics.

mod ctf_support;

use std::fs;
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use ctf_support::*;
use proptest::prelude::*;
use proptest::test_runner::RngSeed;
use ustrace::actors::app_connection::ConnectionId;
use ustrace::ctf::field::{FieldType, Hex};
use ustrace::trace::layout::{DirClock, pid_trace_dir, uid_trace_dir};
use ustrace::trace::owner::{Owner, Process};
use ustrace::trace::reader::ReadError;
use ustrace::trace::view::{ViewError, view};
use ustrace::trace::writer::{append_packet, write_metadata};

/// Writes a small real session (one per-PID and one per-UID trace, every field type)
/// under `root` and returns its files: metadata first, then stream files.
fn real_session(root: &Path) -> Vec<PathBuf> {
    let mut files = Vec::new();
    for (n, ownership) in [
        Owner::Pid {
            connection: ConnectionId(1),
            process: Process {
                procname: "app".into(),
                pid: 3,
                registered: std::time::UNIX_EPOCH,
            },
        },
        Owner::Uid(1000),
    ]
    .into_iter()
    .enumerate()
    {
        let mut r = registry(n as u8 + 1, ownership.clone());
        r.add_channel("chan", &[]);
        let labels = vec![("A".into(), 0), ("B".into(), 1)];
        let (id, _) = r
            .register_event(&desc(
                "prov",
                "ev",
                vec![
                    field(
                        "i",
                        FieldType::Integer {
                            bits: 16,
                            signed: true,
                            hex: false,
                        },
                    ),
                    field(
                        "h",
                        FieldType::Integer {
                            bits: 64,
                            signed: false,
                            hex: true,
                        },
                    ),
                    field("f", FieldType::F32),
                    field("d", FieldType::F64),
                    field("b", FieldType::Bool),
                    field("s", FieldType::String),
                    field("y", FieldType::Bytes),
                    field(
                        "e",
                        FieldType::Enum {
                            bits: 8,
                            signed: false,
                            labels,
                        },
                    ),
                ],
            ))
            .unwrap();
        let dir = match ownership {
            Owner::Pid { .. } => {
                pid_trace_dir(root, "app", 3, SystemTime::UNIX_EPOCH, DirClock::Utc)
            }
            Owner::Uid(uid) => uid_trace_dir(root, uid),
        };
        write_metadata(&dir, &r).unwrap();
        for seq in 0..2u64 {
            let mut p = PacketBuilder::new(r.uuid(), 0, 0, seq, 10 * seq, 256);
            for t in 0..3u64 {
                let s = format!("s{t}");
                p.event(
                    id,
                    10 * seq + t,
                    &[
                        &-3i16,
                        &Hex(t),
                        &1.5f32,
                        &2.5f64,
                        &true,
                        &s.as_str(),
                        &&[1u8, 2, 3][..],
                        &1u8,
                    ],
                );
            }
            append_packet(&dir, "chan", 0, &p.finish(seq, seq == 1)).unwrap();
        }
        files.push(dir.join("metadata"));
        files.push(dir.join("chan_0"));
    }
    files
}

/// A reading error must name the damaged file and a byte offset in it.
fn assert_names_file_and_offset(err: &ViewError, file: &Path) {
    assert_names_offset_in(err, &format!("{}: byte ", file.display()));
}

/// A reading error must be a metadata or stream error whose message starts with
/// `prefix` (a file, or a sub-trace directory) and names a byte offset.
fn assert_names_offset_in(err: &ViewError, prefix: &str) {
    let msg = err.to_string();
    let ViewError::Read(read) = err else {
        panic!("unexpected error kind: {msg}");
    };
    assert!(
        matches!(read, ReadError::Metadata { .. } | ReadError::Stream { .. }),
        "{msg}"
    );
    assert!(msg.starts_with(prefix) && msg.contains(": byte "), "{msg}");
}

#[test]
fn the_unmodified_session_reads_completely() {
    let tmp = tempfile::tempdir().unwrap();
    real_session(tmp.path());
    assert_eq!(view(tmp.path(), false, &mut Vec::new()).unwrap(), 12);
    assert_eq!(bt_events(tmp.path()).len(), 12);
}

#[test]
fn a_stream_cut_inside_a_packet_names_the_file_and_the_packet_offset() {
    let tmp = tempfile::tempdir().unwrap();
    let files = real_session(tmp.path());
    let stream = &files[1];
    let len = fs::metadata(stream).unwrap().len();
    fs::OpenOptions::new()
        .write(true)
        .open(stream)
        .unwrap()
        .set_len(len - 5)
        .unwrap();
    let err = view(tmp.path(), false, &mut Vec::new()).unwrap_err();
    assert_names_file_and_offset(&err, stream);
    assert!(
        err.to_string().contains(": byte 304: packet truncated"),
        "{err}"
    );
}

#[test]
fn a_bad_magic_in_the_second_packet_is_reported_at_its_offset() {
    let tmp = tempfile::tempdir().unwrap();
    let files = real_session(tmp.path());
    let mut bytes = fs::read(&files[3]).unwrap();
    bytes[256] ^= 0xFF;
    fs::write(&files[3], &bytes).unwrap();
    let err = view(tmp.path(), false, &mut Vec::new()).unwrap_err();
    assert_names_file_and_offset(&err, &files[3]);
    assert!(
        err.to_string()
            .contains(": byte 256: bad packet: bad packet magic"),
        "{err}"
    );
}

#[test]
fn a_metadata_syntax_error_is_reported_at_its_offset() {
    let tmp = tempfile::tempdir().unwrap();
    let files = real_session(tmp.path());
    let text = fs::read_to_string(&files[0]).unwrap();
    let at = text.find("stream {").unwrap();
    fs::write(&files[0], text.replacen("stream {", "stream }", 1)).unwrap();
    let err = view(tmp.path(), false, &mut Vec::new()).unwrap_err();
    assert_names_file_and_offset(&err, &files[0]);
    assert!(
        err.to_string()
            .contains(&format!(": byte {}: expected `{{`", at + 7)),
        "{err}"
    );
}

#[test]
fn a_packet_that_begins_before_the_previous_one_ended_is_refused_like_babeltrace2_does() {
    let tmp = tempfile::tempdir().unwrap();
    let files = real_session(tmp.path());
    let mut bytes = fs::read(&files[1]).unwrap();
    bytes[256 + 24..256 + 32].copy_from_slice(&1u64.to_le_bytes());
    fs::write(&files[1], &bytes).unwrap();
    let err = view(tmp.path(), false, &mut Vec::new()).unwrap_err();
    assert_names_file_and_offset(&err, &files[1]);
    assert!(
        err.to_string()
            .contains(": byte 280: packet begins at 1 before the previous one ended"),
        "{err}"
    );
    let bt = std::process::Command::new("/usr/bin/babeltrace2")
        .arg(tmp.path())
        .output()
        .unwrap();
    assert!(!bt.status.success(), "babeltrace2 accepted time going back");
}

/// A way to damage one file.
#[derive(Clone, Debug)]
enum Mutation {
    /// XOR the byte at (position modulo length) with a non-zero mask.
    Flip(usize, u8),
    /// Cut the file at (position modulo length).
    Truncate(usize),
    /// Insert bytes at (position modulo length).
    Insert(usize, Vec<u8>),
}

fn mutation() -> impl Strategy<Value = Mutation> {
    prop_oneof![
        (any::<usize>(), 1..=255u8).prop_map(|(at, mask)| Mutation::Flip(at, mask)),
        any::<usize>().prop_map(Mutation::Truncate),
        (any::<usize>(), prop::collection::vec(any::<u8>(), 1..8))
            .prop_map(|(at, b)| Mutation::Insert(at, b)),
    ]
}

proptest! {
    // A fixed seed: every run checks the same cases; change it to explore others.
    #![proptest_config(ProptestConfig { cases: 300, rng_seed: RngSeed::Fixed(0x5eed_0003), ..ProptestConfig::default() })]

    #[test]
    fn every_mutation_reads_or_fails_cleanly(file in 0..4usize, mutations in prop::collection::vec(mutation(), 1..4)) {
        let tmp = tempfile::tempdir().unwrap();
        let files = real_session(tmp.path());
        let path = &files[file];
        let mut bytes = fs::read(path).unwrap();
        for m in mutations {
            let len = bytes.len().max(1);
            match m {
                Mutation::Flip(at, mask) => {
                    if !bytes.is_empty() {
                        bytes[at % len] ^= mask;
                    }
                }
                Mutation::Truncate(at) => bytes.truncate(at % len),
                Mutation::Insert(at, b) => {
                    let at = at % len;
                    bytes.splice(at..at, b);
                }
            }
        }
        fs::write(path, &bytes).unwrap();
        // A damaged metadata file can still parse (cut at a block boundary, say)
        // and declare less than the streams use: the error then names the stream
        // file of the same sub-trace that needs the missing declaration.
        let sub_trace = format!("{}/", path.parent().unwrap().display());
        for json in [false, true] {
            if let Err(err) = view(tmp.path(), json, &mut Vec::new()) {
                assert_names_offset_in(&err, &sub_trace);
            }
        }
    }
}
