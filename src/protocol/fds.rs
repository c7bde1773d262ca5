//! Moving bytes and file descriptors over a Unix stream socket.
//!
//! Contract:
//! - Descriptors travel as one `SCM_RIGHTS` control message attached to the first
//!   byte of a frame. The kernel hands them to the read that consumes that byte, and
//!   the framing code never reads past the frame it is in, so they come with the
//!   read of their own frame's first byte.
//! - The receiver owns what arrives: descriptors come back as [`OwnedFd`], opened with
//!   `MSG_CMSG_CLOEXEC` so that no exec'd child inherits a ring buffer. On every error
//!   path (too many, truncated control message, connection cut) the descriptors that
//!   did arrive are dropped, hence closed: a hostile peer cannot make us leak.
//! - Calls block until done. Interrupted calls (`EINTR`) are retried and partial
//!   reads and writes continue where they stopped. On a non-blocking socket a call
//!   waits with `poll` for readiness, so the same functions serve the app's blocking
//!   sockets and sockets the daemon drives from a blocking thread.
//! - Sends use `MSG_NOSIGNAL`: a daemon that went away is an error, never a SIGPIPE
//!   that kills the traced app.

use std::io::IoSlice;
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};

use nix::errno::Errno;
use nix::fcntl::OFlag;
use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
use nix::sys::socket::{ControlMessage, MsgFlags, cmsg_space, sendmsg};

use super::ProtocolError;

/// The most descriptors one frame may carry. A registration passes a few descriptors
/// per CPU (ring memfds, wake-up fds); 64 leaves room while keeping a bound on what a
/// peer can make us hold.
pub const MAX_FDS: usize = 64;

/// Linux's `SCM_MAX_FD`: the most descriptors one `sendmsg` can carry. The receive
/// buffer has room for that many so that an over-limit peer shows up as
/// [`ProtocolError::TooManyFds`] with an exact count rather than as a truncation.
const SCM_MAX_FD: usize = 253;

/// Size of the receive control buffer in `u64` words (`u64` gives the alignment
/// `cmsghdr` needs).
const CONTROL_WORDS: usize = cmsg_space::<[RawFd; SCM_MAX_FD]>().div_ceil(8);

/// What one [`recv_exact`] call gathered.
pub(crate) struct Received {
    /// Bytes placed at the start of the buffer; less than its length only at end of
    /// file.
    pub(crate) len: usize,
    /// Descriptors that came with the first byte (empty unless asked for).
    pub(crate) fds: Vec<OwnedFd>,
}

/// Sends all of `bytes`, with `fds` attached to the first byte.
pub(crate) fn send_all(
    sock: BorrowedFd<'_>,
    bytes: &[u8],
    fds: &[BorrowedFd<'_>],
) -> Result<(), ProtocolError> {
    if fds.len() > MAX_FDS {
        return Err(ProtocolError::TooManyFds {
            count: fds.len(),
            max: MAX_FDS,
        });
    }
    let mut sent = 0;
    while sent < bytes.len() {
        // Only the first successful sendmsg carries the descriptors: a failed or
        // interrupted call sent nothing, a partial one sent them with its bytes.
        let attach = if sent == 0 { fds } else { &[] };
        match send_some(sock, &bytes[sent..], attach) {
            Ok(0) => {
                return Err(io_error("sendmsg", std::io::ErrorKind::WriteZero.into()));
            }
            Ok(n) => sent += n,
            Err(Errno::EINTR) => {}
            Err(Errno::EAGAIN) if is_blocking(sock) => {
                return Err(io_error("sendmsg", std::io::ErrorKind::TimedOut.into()));
            }
            Err(Errno::EAGAIN) => wait_ready(sock, PollFlags::POLLOUT)?,
            Err(e) => return Err(io_error("sendmsg", e.into())),
        }
    }
    Ok(())
}

/// One `sendmsg` of as much of `bytes` as the socket takes now, with `fds` (at most
/// [`MAX_FDS`]) attached; pass them with a frame's first byte only. A non-blocking
/// socket that is full gives `EAGAIN`: the daemon waits for readiness and retries.
/// `MSG_NOSIGNAL`: a vanished peer is an error, not a SIGPIPE.
pub fn send_some(
    sock: BorrowedFd<'_>,
    bytes: &[u8],
    fds: &[BorrowedFd<'_>],
) -> Result<usize, Errno> {
    let raw: Vec<RawFd> = fds.iter().map(AsRawFd::as_raw_fd).collect();
    let rights = [ControlMessage::ScmRights(&raw)];
    let cmsgs: &[ControlMessage<'_>] = if raw.is_empty() { &[] } else { &rights };
    let iov = [IoSlice::new(bytes)];
    sendmsg::<()>(sock.as_raw_fd(), &iov, cmsgs, MsgFlags::MSG_NOSIGNAL, None)
}

/// Fills `buf` from the socket until it is full or the peer closes. With
/// `accept_fds`, descriptors attached to the first byte read are returned; without,
/// any descriptor that arrives is a framing violation.
pub(crate) fn recv_exact(
    sock: BorrowedFd<'_>,
    buf: &mut [u8],
    accept_fds: bool,
) -> Result<Received, ProtocolError> {
    let mut received = Received {
        len: 0,
        fds: Vec::new(),
    };
    while received.len < buf.len() {
        let first_read = received.len == 0;
        let chunk = match recv_chunk(sock, &mut buf[received.len..], accept_fds && first_read) {
            Ok(chunk) => chunk,
            Err(Errno::EINTR) => continue,
            Err(Errno::EAGAIN) if is_blocking(sock) => {
                return Err(io_error("recvmsg", std::io::ErrorKind::TimedOut.into()));
            }
            Err(Errno::EAGAIN) => {
                wait_ready(sock, PollFlags::POLLIN)?;
                continue;
            }
            Err(e) => return Err(io_error("recvmsg", e.into())),
        };
        if chunk.control_truncated {
            // Without a control buffer the kernel closes what was attached and sets
            // MSG_CTRUNC; with one, some descriptors did not fit.
            return Err(if accept_fds && first_read {
                ProtocolError::ControlTruncated {
                    arrived: chunk.fds.len(),
                }
            } else {
                ProtocolError::MisplacedFds
            });
        }
        if chunk.fds.len() > MAX_FDS {
            return Err(ProtocolError::TooManyFds {
                count: chunk.fds.len(),
                max: MAX_FDS,
            });
        }
        if first_read {
            received.fds = chunk.fds;
        }
        if chunk.len == 0 {
            break;
        }
        received.len += chunk.len;
    }
    Ok(received)
}

/// One `recvmsg` call's outcome.
struct Chunk {
    /// Bytes read; 0 means end of file.
    len: usize,
    /// Descriptors received, already owned.
    fds: Vec<OwnedFd>,
    /// The kernel set `MSG_CTRUNC`.
    control_truncated: bool,
}

/// One `recvmsg(MSG_CMSG_CLOEXEC)` into `buf`, with room for `SCM_MAX_FD` descriptors
/// when `want_fds`. Calls libc directly because nix refuses to walk the control
/// messages once `MSG_CTRUNC` is set, which would leak the descriptors that arrived.
fn recv_chunk(sock: BorrowedFd<'_>, buf: &mut [u8], want_fds: bool) -> Result<Chunk, Errno> {
    let mut control = [0u64; CONTROL_WORDS];
    let mut iov = libc::iovec {
        iov_base: buf.as_mut_ptr().cast(),
        iov_len: buf.len(),
    };
    // SAFETY: msghdr is a plain C struct (integers and raw pointers) for which all
    // zero bytes is a valid value: no name, no iovec, no control buffer.
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_iov = &mut iov;
    msg.msg_iovlen = 1;
    if want_fds {
        msg.msg_control = control.as_mut_ptr().cast();
        msg.msg_controllen = std::mem::size_of_val(&control);
    }
    // SAFETY: `msg` points to `iov`, which describes `buf` (exclusively borrowed,
    // valid for `buf.len()` bytes), and, if set, to `control` (valid for
    // `msg_controllen` bytes); all outlive the call and the kernel writes only within
    // those lengths.
    let ret = unsafe { libc::recvmsg(sock.as_raw_fd(), &mut msg, libc::MSG_CMSG_CLOEXEC) };
    let len = usize::try_from(Errno::result(ret)?).map_err(|_| Errno::EINVAL)?;
    let fds = if want_fds {
        // SAFETY: `msg` is exactly as recvmsg left it, describing `control`, which is
        // still alive and unmodified since.
        unsafe { take_rights(&msg) }
    } else {
        Vec::new()
    };
    Ok(Chunk {
        len,
        fds,
        control_truncated: msg.msg_flags & libc::MSG_CTRUNC != 0,
    })
}

/// Takes ownership of every descriptor in the `SCM_RIGHTS` messages of `msg`, including
/// after `MSG_CTRUNC` (the kernel then reports only the control bytes it wrote).
///
/// # Safety
/// `msg` must have been filled by a successful `recvmsg` and its control buffer must
/// still be alive and untouched; the descriptors in it must not be owned elsewhere.
unsafe fn take_rights(msg: &libc::msghdr) -> Vec<OwnedFd> {
    let mut fds = Vec::new();
    // SAFETY: (whole loop) CMSG_FIRSTHDR/CMSG_NXTHDR only return headers lying fully
    // inside msg_control[..msg_controllen], the bytes the kernel wrote (caller's
    // contract). An SCM_RIGHTS payload is cmsg_len - CMSG_LEN(0) bytes of c_int,
    // read unaligned because CMSG_DATA promises no alignment. Each descriptor was
    // installed in our table by this recvmsg and nothing else refers to it, so
    // OwnedFd may own and eventually close it.
    unsafe {
        let mut cmsg = libc::CMSG_FIRSTHDR(msg);
        while !cmsg.is_null() {
            let header = &*cmsg;
            if header.cmsg_level == libc::SOL_SOCKET && header.cmsg_type == libc::SCM_RIGHTS {
                let payload = header.cmsg_len as usize - libc::CMSG_LEN(0) as usize;
                let data = libc::CMSG_DATA(cmsg).cast::<RawFd>();
                for i in 0..payload / std::mem::size_of::<RawFd>() {
                    fds.push(OwnedFd::from_raw_fd(data.add(i).read_unaligned()));
                }
            }
            cmsg = libc::CMSG_NXTHDR(msg, cmsg);
        }
    }
    fds
}

/// Whether `sock` is in blocking mode: then EAGAIN means its SO_RCVTIMEO or
/// SO_SNDTIMEO expired (the app's registration deadline), not "try again".
fn is_blocking(sock: BorrowedFd<'_>) -> bool {
    nix::fcntl::fcntl(sock, nix::fcntl::FcntlArg::F_GETFL)
        .map(|flags| !OFlag::from_bits_truncate(flags).contains(OFlag::O_NONBLOCK))
        .unwrap_or(false)
}

/// Blocks until a non-blocking socket is ready for `events`.
fn wait_ready(sock: BorrowedFd<'_>, events: PollFlags) -> Result<(), ProtocolError> {
    loop {
        match poll(&mut [PollFd::new(sock, events)], PollTimeout::NONE) {
            Ok(_) => return Ok(()),
            Err(Errno::EINTR) => {}
            Err(e) => return Err(io_error("poll", e.into())),
        }
    }
}

/// Wraps a system call failure with the name of the call.
pub(crate) fn io_error(op: &'static str, source: std::io::Error) -> ProtocolError {
    ProtocolError::Io { op, source }
}
