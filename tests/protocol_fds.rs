//! Descriptor passing over real socket pairs: a memfd crosses and stays readable,
//! descriptors arrive with their own frame, and every refused descriptor is closed.
//!
//! Leak checks use a pipe: the descriptors sent are copies of its write end, so once
//! the test drops its own copy, a read on the read end returns end of file exactly
//! when no copy is left open anywhere in the process.

use std::fs::File;
use std::io::{IoSlice, Read, Seek, SeekFrom, Write};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd, RawFd};
use std::os::unix::net::{UnixListener, UnixStream};
use std::thread;

use nix::errno::Errno;
use nix::fcntl::{FcntlArg, FdFlag, OFlag, fcntl};
use nix::sys::memfd::{MFdFlags, memfd_create};
use nix::sys::socket::{ControlMessage, MsgFlags, sendmsg, setsockopt, sockopt};
use nix::unistd::pipe2;
use serde::{Deserialize, Serialize};
use ustrace::protocol::{
    APPS_SOCKET, MAX_FDS, MAX_FRAME, ProtocolError, expect_hello, recv, rundir_from, send,
    send_hello,
};

#[derive(Serialize, Deserialize, Debug, PartialEq)]
enum Message {
    Stream { cpu: u32 },
    Nothing,
}

fn pair() -> (UnixStream, UnixStream) {
    UnixStream::pair().expect("socketpair")
}

/// A non-blocking pipe: (read end, write end).
fn pipe() -> (OwnedFd, OwnedFd) {
    pipe2(OFlag::O_NONBLOCK | OFlag::O_CLOEXEC).expect("pipe2")
}

/// True when every copy of the pipe's write end is closed.
fn write_end_fully_closed(read_end: &OwnedFd) -> bool {
    let mut byte = [0u8; 1];
    match nix::unistd::read(read_end, &mut byte) {
        Ok(0) => true,
        Err(Errno::EAGAIN) => false,
        other => panic!("unexpected pipe read result {other:?}"),
    }
}

/// Sends raw bytes with `count` copies of `fd` attached, bypassing `send`'s checks,
/// as a buggy or hostile peer would.
fn send_raw_with_copies(sock: &UnixStream, bytes: &[u8], fd: BorrowedFd<'_>, count: usize) {
    let raw: Vec<RawFd> = vec![fd.as_raw_fd(); count];
    let sent = sendmsg::<()>(
        sock.as_raw_fd(),
        &[IoSlice::new(bytes)],
        &[ControlMessage::ScmRights(&raw)],
        MsgFlags::empty(),
        None,
    )
    .expect("sendmsg");
    assert_eq!(sent, bytes.len());
}

/// The encoding of `Message::Nothing` as one frame.
const NOTHING_FRAME: [u8; 8] = [4, 0, 0, 0, 1, 0, 0, 0];

#[test]
fn memfd_passed_with_a_frame_is_readable_on_the_other_side() {
    let (a, b) = pair();
    let memfd = memfd_create(c"ustrace-test-ring", MFdFlags::MFD_CLOEXEC).unwrap();
    let mut file = File::from(memfd);
    file.write_all(b"sub-buffer 0 content").unwrap();

    send(&a, &Message::Stream { cpu: 3 }, &[file.as_fd()]).unwrap();
    drop(file);

    let (msg, mut fds) = recv::<Message>(&b, MAX_FRAME).unwrap().unwrap();
    assert_eq!(msg, Message::Stream { cpu: 3 });
    assert_eq!(fds.len(), 1);
    let mut received = File::from(fds.remove(0));
    received.seek(SeekFrom::Start(0)).unwrap();
    let mut content = String::new();
    received.read_to_string(&mut content).unwrap();
    assert_eq!(content, "sub-buffer 0 content");
}

#[test]
fn received_descriptors_are_close_on_exec() {
    let (a, b) = pair();
    let (_read_end, write_end) = pipe();
    // Clear FD_CLOEXEC on the sent copy: the flag must come from the receiver.
    fcntl(&write_end, FcntlArg::F_SETFD(FdFlag::empty())).unwrap();
    send(&a, &Message::Nothing, &[write_end.as_fd()]).unwrap();
    let (_, fds) = recv::<Message>(&b, MAX_FRAME).unwrap().unwrap();
    let flags = fcntl(&fds[0], FcntlArg::F_GETFD).unwrap();
    assert!(FdFlag::from_bits_truncate(flags).contains(FdFlag::FD_CLOEXEC));
}

#[test]
fn descriptors_arrive_with_their_own_frame() {
    let (a, b) = pair();
    let (read_end, write_end) = pipe();
    send(&a, &Message::Nothing, &[]).unwrap();
    send(
        &a,
        &Message::Stream { cpu: 0 },
        &[write_end.as_fd(), write_end.as_fd()],
    )
    .unwrap();
    send(&a, &Message::Nothing, &[]).unwrap();
    drop(write_end);

    let (first, fds) = recv::<Message>(&b, MAX_FRAME).unwrap().unwrap();
    assert_eq!((first, fds.len()), (Message::Nothing, 0));
    let (second, fds) = recv::<Message>(&b, MAX_FRAME).unwrap().unwrap();
    assert_eq!((second, fds.len()), (Message::Stream { cpu: 0 }, 2));
    let (third, more) = recv::<Message>(&b, MAX_FRAME).unwrap().unwrap();
    assert_eq!((third, more.len()), (Message::Nothing, 0));

    assert!(!write_end_fully_closed(&read_end));
    drop(fds);
    assert!(write_end_fully_closed(&read_end));
}

#[test]
fn sending_more_than_max_fds_is_refused_before_sending() {
    let (a, b) = pair();
    let (_read_end, write_end) = pipe();
    let many = vec![write_end.as_fd(); MAX_FDS + 1];
    let err = send(&a, &Message::Nothing, &many).unwrap_err();
    assert!(
        matches!(err, ProtocolError::TooManyFds { count, max } if count == MAX_FDS + 1 && max == MAX_FDS),
        "{err:?}"
    );
    // Nothing went out: the peer sees a clean end of file.
    drop(a);
    assert!(recv::<Message>(&b, MAX_FRAME).unwrap().is_none());
}

#[test]
fn exactly_max_fds_are_accepted() {
    let (a, b) = pair();
    let (_read_end, write_end) = pipe();
    let many = vec![write_end.as_fd(); MAX_FDS];
    send(&a, &Message::Nothing, &many).unwrap();
    let (_, fds) = recv::<Message>(&b, MAX_FRAME).unwrap().unwrap();
    assert_eq!(fds.len(), MAX_FDS);
}

#[test]
fn receiving_too_many_fds_is_refused_and_all_are_closed() {
    let (a, b) = pair();
    let (read_end, write_end) = pipe();
    send_raw_with_copies(&a, &NOTHING_FRAME, write_end.as_fd(), MAX_FDS + 1);
    drop(write_end);

    let err = recv::<Message>(&b, MAX_FRAME).unwrap_err();
    assert!(
        matches!(err, ProtocolError::TooManyFds { count, .. } if count == MAX_FDS + 1),
        "{err:?}"
    );
    assert!(
        write_end_fully_closed(&read_end),
        "a refused descriptor leaked"
    );
}

#[test]
fn truncated_control_message_is_refused_and_arrived_fds_are_closed() {
    let (a, b) = pair();
    // With SO_PASSCRED the kernel puts credentials first in the control buffer, so
    // the largest legal SCM_RIGHTS (253 descriptors) no longer fits: MSG_CTRUNC.
    setsockopt(&b, sockopt::PassCred, &true).unwrap();
    let (read_end, write_end) = pipe();
    send_raw_with_copies(&a, &NOTHING_FRAME, write_end.as_fd(), 253);
    drop(write_end);

    let err = recv::<Message>(&b, MAX_FRAME).unwrap_err();
    assert!(
        matches!(err, ProtocolError::ControlTruncated { arrived } if arrived > 0 && arrived < 253),
        "{err:?}"
    );
    assert!(
        write_end_fully_closed(&read_end),
        "an arrived descriptor leaked"
    );
}

#[test]
fn descriptors_in_the_middle_of_a_frame_are_refused_and_closed() {
    let (a, b) = pair();
    let (read_end, write_end) = pipe();
    (&a).write_all(&NOTHING_FRAME[..5]).unwrap();
    send_raw_with_copies(&a, &NOTHING_FRAME[5..], write_end.as_fd(), 1);
    drop(write_end);

    let err = recv::<Message>(&b, MAX_FRAME).unwrap_err();
    assert!(matches!(err, ProtocolError::MisplacedFds), "{err:?}");
    assert!(write_end_fully_closed(&read_end));
}

#[test]
fn descriptors_of_a_truncated_frame_are_closed() {
    let (a, b) = pair();
    let (read_end, write_end) = pipe();
    send_raw_with_copies(&a, &NOTHING_FRAME[..6], write_end.as_fd(), 3);
    drop(write_end);
    drop(a);

    let err = recv::<Message>(&b, MAX_FRAME).unwrap_err();
    assert!(
        matches!(
            err,
            ProtocolError::Truncated {
                part: "payload",
                ..
            }
        ),
        "{err:?}"
    );
    assert!(write_end_fully_closed(&read_end));
}

#[test]
fn descriptors_of_an_undecodable_frame_are_closed() {
    let (a, b) = pair();
    let (read_end, write_end) = pipe();
    send_raw_with_copies(&a, &[4, 0, 0, 0, 42, 0, 0, 0], write_end.as_fd(), 2);
    drop(write_end);

    let err = recv::<Message>(&b, MAX_FRAME).unwrap_err();
    assert!(matches!(err, ProtocolError::Decode { .. }), "{err:?}");
    assert!(write_end_fully_closed(&read_end));
}

#[test]
fn app_and_daemon_exchange_hello_and_a_ring_over_a_listening_socket() {
    let dir = tempfile::tempdir().unwrap();
    let rundir = rundir_from(Some(dir.path().into()), nix::unistd::getuid(), None).unwrap();
    let listener = UnixListener::bind(rundir.join(APPS_SOCKET)).unwrap();

    let daemon = thread::spawn(move || {
        let (conn, _) = listener.accept().unwrap();
        expect_hello(&conn).unwrap();
        send_hello(&conn).unwrap();
        let (request, fds) = recv::<Message>(&conn, MAX_FRAME).unwrap().unwrap();
        assert_eq!((request, fds.len()), (Message::Nothing, 0));
        let ring = memfd_create(c"ustrace-test-ring", MFdFlags::MFD_CLOEXEC).unwrap();
        let mut ring = File::from(ring);
        ring.write_all(b"packet").unwrap();
        send(&conn, &Message::Stream { cpu: 1 }, &[ring.as_fd()]).unwrap();
        // The app closing its connection is a clean end of file.
        assert!(recv::<Message>(&conn, MAX_FRAME).unwrap().is_none());
    });

    let app = UnixStream::connect(rundir.join(APPS_SOCKET)).unwrap();
    send_hello(&app).unwrap();
    expect_hello(&app).unwrap();
    send(&app, &Message::Nothing, &[]).unwrap();
    let (reply, mut fds) = recv::<Message>(&app, MAX_FRAME).unwrap().unwrap();
    assert_eq!(reply, Message::Stream { cpu: 1 });
    let mut ring = File::from(fds.remove(0));
    let mut content = String::new();
    ring.seek(SeekFrom::Start(0)).unwrap();
    ring.read_to_string(&mut content).unwrap();
    assert_eq!(content, "packet");
    drop(app);
    daemon.join().unwrap();
}
