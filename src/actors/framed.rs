//! The wire framing of `crate::protocol::frame` over the daemon's async sockets.
//!
//! Apps and the CLI use blocking sockets; the daemon must not block its actor thread
//! on any one peer, so it reads frames with tokio and sends them (fds included) with
//! a non-blocking `sendmsg` retried on readiness. The bytes are the same: the encoding
//! and the limits come from `protocol::frame`.

use crate::protocol::frame;
use crate::protocol::{Hello, ProtocolError, fds};
use nix::sys::socket::{self, MsgFlags};
use serde::Serialize;
use serde::de::DeserializeOwned;
use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd};
use tokio::io::{AsyncReadExt, Interest};
use tokio::net::UnixStream;
use tokio::net::unix::{OwnedReadHalf, OwnedWriteHalf};

/// What was wrong with what a peer sent (or did not send). The peer's connection
/// is closed; the text goes into the log and, on `control.sock`, into the answer.
#[derive(Debug, thiserror::Error)]
pub enum FrameError {
    /// The connection closed part way through a frame's header.
    #[error("connection closed inside a frame header")]
    ClosedInHeader,
    /// Reading failed.
    #[error(transparent)]
    Io(#[from] io::Error),
    /// Reading the payload failed.
    #[error("frame of {len} bytes: {source}")]
    Payload {
        /// The length its header announced.
        len: usize,
        /// The cause.
        source: io::Error,
    },
    /// The connection closed before the payload was complete.
    #[error("truncated frame: {got} of {len} bytes before the connection closed")]
    Truncated {
        /// Bytes received.
        got: usize,
        /// Bytes announced.
        len: usize,
    },
    /// The header or payload broke the protocol (length, encoding, hello).
    #[error(transparent)]
    Protocol(#[from] ProtocolError),
    /// The connection closed before its hello.
    #[error("closed before its hello")]
    NoHello,
    /// A control client closed before sending its request.
    #[error("closed before sending a request")]
    NoRequest,
    /// A control client sent no request in time.
    #[error("no request within {} s", .0.as_secs())]
    NoRequestInTime(std::time::Duration),
}

/// What a frame's payload buffer starts with (then doubles as bytes arrive).
const FIRST_CHUNK: usize = 64 * 1024;

/// Reads one frame; `None` at a clean EOF between frames. The error says what was
/// wrong with the frame.
pub async fn read_frame<T: DeserializeOwned>(
    reader: &mut OwnedReadHalf,
    max: usize,
) -> Result<Option<T>, FrameError> {
    let mut header = [0u8; frame::HEADER_LEN];
    let mut got = 0;
    while got < header.len() {
        match reader.read(&mut header[got..]).await {
            Ok(0) if got == 0 => return Ok(None),
            Ok(0) => return Err(FrameError::ClosedInHeader),
            Ok(n) => got += n,
            Err(e) => return Err(e.into()),
        }
    }
    let len = frame::payload_len(header, max)?;
    // The buffer grows with the bytes that arrive, not with the length announced: a
    // peer that announces `max` and sends a little holds only what it sent.
    let mut payload = Vec::with_capacity(len.min(FIRST_CHUNK));
    let got = (&mut *reader)
        .take(len as u64)
        .read_to_end(&mut payload)
        .await
        .map_err(|source| FrameError::Payload { len, source })?;
    if got < len {
        return Err(FrameError::Truncated { got, len });
    }
    Ok(Some(frame::decode(&payload)?))
}

/// Waits, for as long as it takes, until the peer has sent a byte or closed, so that
/// the next [`read_frame`] finds its frame started (or the EOF). Tokio's readiness
/// alone is not a byte: a read that took exactly what had arrived leaves it set, so
/// `readable()` returns at once although nothing is there. A peek says; one that
/// finds nothing clears the stale readiness (`try_io`) and waits again.
pub async fn wait_for_bytes(reader: &OwnedReadHalf) -> io::Result<()> {
    let stream: &UnixStream = reader.as_ref();
    let mut byte = [0u8; 1];
    loop {
        stream.readable().await?;
        match stream.try_io(Interest::READABLE, || {
            socket::recv(
                stream.as_raw_fd(),
                &mut byte,
                MsgFlags::MSG_PEEK | MsgFlags::MSG_DONTWAIT,
            )
            .map_err(io::Error::from)
        }) {
            // A byte, or 0 at EOF: either way the next read does not wait.
            Ok(_) => return Ok(()),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
            Err(e) => return Err(e),
        }
    }
}

/// Reads the first frame of a connection and checks it is our [`Hello`].
pub async fn read_hello(reader: &mut OwnedReadHalf) -> Result<(), FrameError> {
    let hello: Hello = read_frame(reader, frame::HELLO_LEN)
        .await?
        .ok_or(FrameError::NoHello)?;
    Ok(hello.check()?)
}

/// Encodes and sends one frame with `fds` attached to its first byte.
pub async fn write_frame<T: Serialize>(
    writer: &OwnedWriteHalf,
    msg: &T,
    fds: &[BorrowedFd<'_>],
) -> io::Result<()> {
    let bytes = frame::encode(msg).map_err(io::Error::other)?;
    write_bytes(writer, &bytes, fds).await
}

/// Sends encoded bytes, waiting for room without blocking the thread.
pub async fn write_bytes(
    writer: &OwnedWriteHalf,
    bytes: &[u8],
    fds: &[BorrowedFd<'_>],
) -> io::Result<()> {
    let stream: &UnixStream = writer.as_ref();
    let mut sent = 0;
    while sent < bytes.len() {
        stream.writable().await?;
        let attach: &[BorrowedFd] = if sent == 0 { fds } else { &[] };
        match stream.try_io(Interest::WRITABLE, || {
            fds::send_some(stream.as_fd(), &bytes[sent..], attach).map_err(io::Error::other)
        }) {
            Ok(n) => sent += n,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
            Err(e) => return Err(e),
        }
    }
    Ok(())
}
