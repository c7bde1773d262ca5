//! Framing over real Unix socket pairs: round trips, boundaries, every way a frame can
//! be wrong, and the hello handshake.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::io::Write;
use std::os::unix::net::UnixStream;
use std::thread;

use serde::{Deserialize, Serialize};
use ustrace::protocol::{
    self, HELLO_MAGIC, Hello, MAX_FRAME, PROTOCOL_VERSION, ProtocolError, expect_hello, recv, send,
    send_hello,
};

/// Records the largest single allocation made by each thread, so that a test can
/// prove the receiver never allocated the length a peer announced.
struct LargestAllocation;

thread_local! {
    static LARGEST: Cell<usize> = const { Cell::new(0) };
}

fn note(size: usize) {
    // try_with: allocations during thread teardown must not panic.
    let _ = LARGEST.try_with(|largest| largest.set(largest.get().max(size)));
}

// SAFETY: every method forwards to the system allocator with the caller's arguments
// unchanged; recording a size in a const-initialised thread-local does not allocate.
unsafe impl GlobalAlloc for LargestAllocation {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        note(layout.size());
        // SAFETY: same contract as ours, forwarded.
        unsafe { System.alloc(layout) }
    }
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        note(layout.size());
        // SAFETY: same contract as ours, forwarded.
        unsafe { System.alloc_zeroed(layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        note(new_size);
        // SAFETY: same contract as ours, forwarded.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: same contract as ours, forwarded.
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static ALLOCATOR: LargestAllocation = LargestAllocation;

#[derive(Serialize, Deserialize, Debug, PartialEq, Clone)]
enum Message {
    Register { name: String, events: Vec<String> },
    Blob(Vec<u8>),
    Done,
}

fn pair() -> (UnixStream, UnixStream) {
    UnixStream::pair().expect("socketpair")
}

fn recv_message(sock: &UnixStream) -> Result<Option<Message>, ProtocolError> {
    Ok(recv::<Message>(sock, MAX_FRAME)?.map(|(msg, fds)| {
        assert!(fds.is_empty(), "no descriptors were sent");
        msg
    }))
}

#[test]
fn message_round_trips_without_fds() {
    let (a, b) = pair();
    let msg = Message::Register {
        name: "demo-app".into(),
        events: vec!["demo:*".into(), "other:ev".into()],
    };
    send(&a, &msg, &[]).unwrap();
    assert_eq!(recv_message(&b).unwrap(), Some(msg));
}

#[test]
fn wire_format_is_a_le_length_then_bincode() {
    let (a, mut b) = pair();
    send(&a, &Message::Done, &[]).unwrap();
    drop(a);
    let mut bytes = Vec::new();
    std::io::Read::read_to_end(&mut b, &mut bytes).unwrap();
    // Enum variant index 2 as a fixed-width little-endian u32.
    assert_eq!(bytes, [4, 0, 0, 0, 2, 0, 0, 0]);
}

#[test]
fn frames_keep_their_boundaries_across_partial_reads_and_writes() {
    // Larger than the socket buffer: the sender's writes and the receiver's reads
    // both come back short and must resume.
    let (a, b) = pair();
    let frames: Vec<Message> = (0..6u8)
        .map(|i| Message::Blob(vec![i; 300_000 + usize::from(i)]))
        .chain([Message::Done])
        .collect();
    let expected = frames.clone();
    let sender = thread::spawn(move || {
        for frame in &frames {
            send(&a, frame, &[]).unwrap();
        }
    });
    for want in expected {
        assert_eq!(recv_message(&b).unwrap(), Some(want));
    }
    sender.join().unwrap();
    assert_eq!(recv_message(&b).unwrap(), None);
}

#[test]
fn recv_waits_for_data_on_a_non_blocking_socket() {
    let (a, b) = pair();
    b.set_nonblocking(true).unwrap();
    let sender = thread::spawn(move || {
        send(&a, &Message::Blob(vec![7; 500_000]), &[]).unwrap();
    });
    assert_eq!(
        recv_message(&b).unwrap(),
        Some(Message::Blob(vec![7; 500_000]))
    );
    sender.join().unwrap();
}

#[test]
fn clean_eof_between_frames_is_none() {
    let (a, b) = pair();
    send(&a, &Message::Done, &[]).unwrap();
    drop(a);
    assert_eq!(recv_message(&b).unwrap(), Some(Message::Done));
    assert_eq!(recv_message(&b).unwrap(), None);
}

#[test]
fn eof_inside_the_length_header_is_truncated() {
    let (mut a, b) = pair();
    a.write_all(&[5, 0]).unwrap();
    drop(a);
    let err = recv_message(&b).unwrap_err();
    assert!(
        matches!(
            err,
            ProtocolError::Truncated {
                part: "length header",
                expected: 4,
                received: 2
            }
        ),
        "{err:?}"
    );
}

#[test]
fn eof_inside_the_payload_is_truncated() {
    let (mut a, b) = pair();
    a.write_all(&[100, 0, 0, 0, 1, 2, 3]).unwrap();
    drop(a);
    let err = recv_message(&b).unwrap_err();
    assert!(
        matches!(
            err,
            ProtocolError::Truncated {
                part: "payload",
                expected: 100,
                received: 3
            }
        ),
        "{err:?}"
    );
    assert!(err.to_string().contains("got 3 of 100 bytes"), "{err}");
}

#[test]
fn oversized_length_is_refused_before_allocating() {
    let (mut a, b) = pair();
    let announced: u32 = 0x7fff_fff0;
    a.write_all(&announced.to_le_bytes()).unwrap();
    LARGEST.with(|largest| largest.set(0));
    let err = recv_message(&b).unwrap_err();
    let largest = LARGEST.with(Cell::get);
    assert!(
        matches!(err, ProtocolError::FrameTooLarge { len, max }
            if len == u64::from(announced) && max == MAX_FRAME as u64),
        "{err:?}"
    );
    assert!(
        largest < 64 * 1024,
        "receiver allocated {largest} bytes for a refused frame"
    );
}

#[test]
fn the_limit_is_chosen_per_call() {
    let (a, b) = pair();
    let blob = Message::Blob(vec![1; 2000]);
    send(&a, &blob, &[]).unwrap();
    let err = recv::<Message>(&b, 1000).unwrap_err();
    assert!(
        matches!(err, ProtocolError::FrameTooLarge { max: 1000, .. }),
        "{err:?}"
    );

    let (a, b) = pair();
    send(&a, &blob, &[]).unwrap();
    let (got, _) = recv::<Message>(&b, 4096).unwrap().unwrap();
    assert_eq!(got, blob);
}

#[test]
fn garbage_payload_is_a_decode_error_naming_the_type() {
    let (mut a, b) = pair();
    // Variant index 99 does not exist.
    a.write_all(&[4, 0, 0, 0, 99, 0, 0, 0]).unwrap();
    let err = recv_message(&b).unwrap_err();
    assert!(
        matches!(err, ProtocolError::Decode { len: 4, .. }),
        "{err:?}"
    );
    assert!(err.to_string().contains("Message"), "{err}");
}

#[test]
fn string_length_beyond_the_payload_is_a_decode_error() {
    let (mut a, b) = pair();
    // Register { name: <length u64::MAX / 2> ... }: must fail without allocating it.
    let mut frame = vec![0u8; 4];
    frame.extend_from_slice(&0u32.to_le_bytes());
    frame.extend_from_slice(&(u64::MAX / 2).to_le_bytes());
    let len = (frame.len() - 4) as u32;
    frame[..4].copy_from_slice(&len.to_le_bytes());
    a.write_all(&frame).unwrap();
    let err = recv_message(&b).unwrap_err();
    assert!(matches!(err, ProtocolError::Decode { .. }), "{err:?}");
}

#[test]
fn trailing_bytes_after_the_message_are_refused() {
    let (mut a, b) = pair();
    a.write_all(&[5, 0, 0, 0, 2, 0, 0, 0, 0xff]).unwrap();
    let err = recv_message(&b).unwrap_err();
    assert!(
        matches!(err, ProtocolError::Decode { len: 5, .. }),
        "{err:?}"
    );
}

#[test]
fn hello_handshake_succeeds_between_same_builds() {
    let (a, b) = pair();
    send_hello(&a).unwrap();
    send_hello(&b).unwrap();
    assert_eq!(expect_hello(&b).unwrap(), Hello::CURRENT);
    assert_eq!(expect_hello(&a).unwrap(), Hello::CURRENT);
    // The handshake consumed exactly one frame: the next message is intact.
    send(&a, &Message::Done, &[]).unwrap();
    assert_eq!(recv_message(&b).unwrap(), Some(Message::Done));
}

#[test]
fn wrong_version_is_refused_naming_both_versions() {
    let (a, b) = pair();
    let future = Hello {
        magic: HELLO_MAGIC,
        version: PROTOCOL_VERSION + 1,
    };
    send(&a, &future, &[]).unwrap();
    let err = expect_hello(&b).unwrap_err();
    assert!(
        matches!(err, ProtocolError::VersionMismatch { theirs, ours }
            if theirs == PROTOCOL_VERSION + 1 && ours == PROTOCOL_VERSION),
        "{err:?}"
    );
    let text = err.to_string();
    assert!(
        text.contains(&format!("version {}", PROTOCOL_VERSION + 1))
            && text.contains(&format!("version {PROTOCOL_VERSION}")),
        "{text}"
    );
}

#[test]
fn wrong_magic_is_refused() {
    let (a, b) = pair();
    send(
        &a,
        &Hello {
            magic: 0xdead_beef,
            version: PROTOCOL_VERSION,
        },
        &[],
    )
    .unwrap();
    let err = expect_hello(&b).unwrap_err();
    assert!(
        matches!(err, ProtocolError::BadMagic { found: 0xdead_beef, expected } if expected == HELLO_MAGIC),
        "{err:?}"
    );
}

#[test]
fn a_non_ustrace_peer_is_refused_at_hello() {
    let (mut a, b) = pair();
    a.write_all(b"GET / HTTP/1.1\r\n\r\n").unwrap();
    let err = expect_hello(&b).unwrap_err();
    assert!(
        matches!(err, ProtocolError::FrameTooLarge { max: 8, .. }),
        "{err:?}"
    );
}

#[test]
fn eof_before_hello_is_an_error() {
    let (a, b) = pair();
    drop(a);
    let err = expect_hello(&b).unwrap_err();
    assert!(matches!(err, ProtocolError::ClosedBeforeHello), "{err:?}");
}

#[test]
fn functions_work_on_borrowed_raw_descriptors() {
    // The daemon calls them on descriptors it owns rather than on UnixStreams.
    use std::os::fd::AsFd;
    let (a, b) = pair();
    protocol::send(a.as_fd(), &Message::Done, &[]).unwrap();
    let (got, _) = protocol::recv::<Message>(b.as_fd(), MAX_FRAME)
        .unwrap()
        .unwrap();
    assert_eq!(got, Message::Done);
}
