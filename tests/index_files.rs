//! CTF index files (`index/<channel>_<cpu>.idx`, format 1.1) beside every stream
//! file of a real daemon's trace, in step with the stream's packets, through a
//! crash's recovery, and checked by `ustrace view`.

mod common;

use common::{Daemon, streams};
use std::fs::{self, OpenOptions};
use std::io::Write;
use std::path::PathBuf;
use ustrace::protocol::messages::{Buffering, ChannelRequest};
use ustrace::trace::index::{self, INDEX_ENTRY_LEN, INDEX_HEADER_LEN};
use ustrace::trace::recover::recover;

/// A session with a per-UID and a per-PID channel of 4 KiB packets, after one app
/// wrote `events` events; returns the output.
fn small_trace(daemon: &Daemon, events: u32) -> PathBuf {
    let channel = |name: &str, buffers| ChannelRequest {
        name: name.into(),
        buffers: Some(buffers),
        subbuf_size: Some(4096),
        num_subbuf: Some(16),
        ..ChannelRequest::default()
    };
    let output = daemon.session_with(
        "idx",
        "out",
        &[
            channel("u", Buffering::PerUid),
            channel("p", Buffering::PerPid),
        ],
        true,
    );
    daemon.run_app(&["--events", &events.to_string(), "--threads", "2"]);
    daemon.stop("idx");
    output
}

fn be64(b: &[u8], at: usize) -> u64 {
    u64::from_be_bytes(b[at..at + 8].try_into().unwrap())
}

#[test]
fn every_stream_has_an_lttng_index_whose_entries_are_its_packets() {
    let daemon = Daemon::start();
    let output = small_trace(&daemon, 6000);
    let streams = streams(&output);
    assert!(streams.len() >= 2, "{streams:?}");
    let mut packets = 0;
    for (stream, idx) in &streams {
        let bytes = fs::read(idx).unwrap_or_else(|e| panic!("{}: {e}", idx.display()));
        // The header, byte for byte: magic, 1.1, 72-byte entries, big-endian.
        assert_eq!(
            &bytes[..INDEX_HEADER_LEN],
            &[0xC1, 0xF1, 0xDC, 0xC1, 0, 0, 0, 1, 0, 0, 0, 1, 0, 0, 0, 72]
        );
        assert_eq!((bytes.len() - INDEX_HEADER_LEN) % INDEX_ENTRY_LEN, 0);
        let stream_len = fs::metadata(stream).unwrap().len();
        let cpu: u64 = stream
            .to_string_lossy()
            .rsplit('_')
            .next()
            .unwrap()
            .parse()
            .unwrap();
        let mut expected_offset = 0;
        let mut last_seq = None;
        for (i, e) in bytes[INDEX_HEADER_LEN..]
            .chunks(INDEX_ENTRY_LEN)
            .enumerate()
        {
            let (offset, size, content) = (be64(e, 0), be64(e, 8), be64(e, 16));
            assert_eq!(offset, expected_offset, "entry {i} of {}", idx.display());
            assert!(content <= size && size % 8 == 0, "sizes in bits");
            let (begin, end) = (be64(e, 24), be64(e, 32));
            assert!(begin <= end && begin > 0);
            assert_eq!(be64(e, 56), cpu, "stream_instance_id is the CPU");
            let seq = be64(e, 64);
            assert!(last_seq.is_none_or(|l| seq > l), "sequence numbers grow");
            last_seq = Some(seq);
            // The packet header at that offset says the same.
            let file = fs::read(stream).unwrap();
            let header =
                ustrace::ctf::packet::PacketHeader::read(&file[offset as usize..]).unwrap();
            assert_eq!(header.open.packet_size * 8, size);
            assert_eq!(header.open.seq_num, seq);
            assert_eq!(u64::from(header.open.stream_id), be64(e, 48));
            assert_eq!(header.close.events_discarded, be64(e, 40));
            expected_offset += size / 8;
            packets += 1;
        }
        assert_eq!(
            expected_offset, stream_len,
            "the index covers the whole stream"
        );
        assert_eq!(
            index::parse(&bytes).unwrap(),
            index::stream_entries(stream).unwrap()
        );
    }
    assert!(packets > streams.len(), "several packets per stream");
    let view = daemon.cli(&["view", output.to_str().unwrap()]);
    assert!(view.status.success(), "{view:?}");
}

#[test]
fn recovery_puts_an_index_back_in_step_and_view_refuses_one_that_lies() {
    let daemon = Daemon::start();
    let output = small_trace(&daemon, 4000);
    let streams = streams(&output);
    let (stream, idx) = streams
        .iter()
        .find(|(s, _)| index::stream_entries(s).unwrap().len() >= 2)
        .expect("a stream of two packets");
    // A daemon killed after a packet and before its entry: the index lacks it.
    let whole = fs::read(idx).unwrap();
    let file = OpenOptions::new().write(true).open(idx).unwrap();
    file.set_len((whole.len() - INDEX_ENTRY_LEN) as u64)
        .unwrap();
    // Another stream was cut in the middle of its last packet, its index not.
    let (other, other_idx) = streams.iter().find(|(s, _)| s != stream).unwrap();
    let other_len = fs::metadata(other).unwrap().len();
    let mut torn = OpenOptions::new().append(true).open(other).unwrap();
    torn.write_all(&fs::read(other).unwrap()[..100]).unwrap();
    let extra_entry = fs::read(other_idx).unwrap()[INDEX_HEADER_LEN..][..INDEX_ENTRY_LEN].to_vec();
    OpenOptions::new()
        .append(true)
        .open(other_idx)
        .unwrap()
        .write_all(&extra_entry)
        .unwrap();
    let before = daemon.cli(&["view", output.to_str().unwrap()]);
    assert!(!before.status.success(), "torn: {before:?}");

    let recovery = recover(&output);
    assert!(recovery.errors.is_empty(), "{:?}", recovery.errors);
    assert_eq!(fs::read(idx).unwrap(), whole, "the missing entry is back");
    assert_eq!(fs::metadata(other).unwrap().len(), other_len);
    assert_eq!(
        index::parse(&fs::read(other_idx).unwrap()).unwrap(),
        index::stream_entries(other).unwrap()
    );
    let after = daemon.cli(&["view", output.to_str().unwrap()]);
    assert!(after.status.success(), "{after:?}");

    // An entry that names another offset is refused, naming the index file.
    let mut lying = fs::read(idx).unwrap();
    lying[INDEX_HEADER_LEN + 7] ^= 8;
    fs::write(idx, &lying).unwrap();
    let refused = daemon.cli(&["view", output.to_str().unwrap()]);
    assert!(!refused.status.success());
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(
        stderr.contains(&idx.display().to_string()) && stderr.contains("index entry 0"),
        "{stderr}"
    );
}

/// What a reader of a live trace meets while the writer is at work: an index file
/// just created (its header not written yet) and one ending in part of an entry
/// (being appended). `view` reads such a trace whole, as `view --follow` must; an
/// index whose header is not CTF index 1.1 is still refused.
#[test]
fn an_index_being_written_does_not_stop_view() {
    let daemon = Daemon::start();
    let output = small_trace(&daemon, 4000);
    let whole = daemon.cli(&["view", output.to_str().unwrap()]);
    assert!(whole.status.success(), "{whole:?}");
    let streams = streams(&output);
    let ((_, fresh), (_, appending)) = (&streams[0], &streams[1]);
    let header = fs::read(fresh).unwrap()[..INDEX_HEADER_LEN].to_vec();
    fs::write(fresh, &header[..7]).unwrap();
    OpenOptions::new()
        .append(true)
        .open(appending)
        .unwrap()
        .write_all(&[0; INDEX_ENTRY_LEN / 2])
        .unwrap();
    let during = daemon.cli(&["view", output.to_str().unwrap()]);
    assert!(during.status.success(), "{during:?}");
    assert_eq!(during.stdout, whole.stdout);

    fs::write(fresh, [0u8; INDEX_HEADER_LEN]).unwrap();
    let refused = daemon.cli(&["view", output.to_str().unwrap()]);
    assert!(!refused.status.success());
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(stderr.contains("not a CTF index 1.1"), "{stderr}");
}
