//! Frames: how one message travels on a Unix stream socket.
//!
//! A frame is `[u32 little-endian payload length][bincode 1.3 payload]`, with any
//! file descriptors attached to its first byte (see [`super::fds`]). The payload is
//! encoded with bincode's fixed-width little-endian integers, and a payload with
//! bytes left over after the message is refused, so a frame means one thing only.
//!
//! The receiver checks the announced length against a limit before allocating: the
//! length comes from the peer, which may be buggy or hostile. After any error the
//! stream position is unknown and the connection must be closed.
//!
//! A connection starts with a [`Hello`] from the connecting side, so that a stray client or a
//! daemon from another build is refused with a clear message instead of a decode
//! error on the first real message.

use std::any::type_name;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};

use bincode::Options;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use super::{ProtocolError, fds};

/// Default limit on a frame's payload (1 MiB): far above any control message, low
/// enough that a bogus length cannot make the daemon allocate much. Callers may pass
/// another limit to [`recv`] (the daemon takes it from its configuration).
pub const MAX_FRAME: usize = 1 << 20;

/// Version of the message set; bumped on every incompatible change. Both sides send
/// it in their [`Hello`] and refuse a peer with another one.
pub const PROTOCOL_VERSION: u32 = 2;

/// First four payload bytes of every hello: "USTR" read as a little-endian `u32`.
pub const HELLO_MAGIC: u32 = u32::from_le_bytes(*b"USTR");

/// Bytes in the length header.
pub const HEADER_LEN: usize = 4;

/// Encoded size of a [`Hello`]: its frame is read with exactly this limit.
pub const HELLO_LEN: usize = 8;

/// The first frame on every connection, in both directions. Its layout is frozen
/// forever (two `u32`) so that any two versions can tell each other apart.
#[derive(Serialize, Deserialize, Debug, Clone, Copy, PartialEq, Eq)]
pub struct Hello {
    /// Always [`HELLO_MAGIC`]; anything else is not a ustrace peer.
    pub magic: u32,
    /// The sender's [`PROTOCOL_VERSION`].
    pub version: u32,
}

impl Hello {
    /// The hello this build sends.
    pub const CURRENT: Hello = Hello {
        magic: HELLO_MAGIC,
        version: PROTOCOL_VERSION,
    };
}

/// The bincode configuration of every payload, shared by both directions.
fn codec() -> impl Options {
    bincode::DefaultOptions::new()
        .with_fixint_encoding()
        .with_little_endian()
        .reject_trailing_bytes()
}

/// Encodes `msg` as one frame: length header then payload.
pub fn encode<T: Serialize>(msg: &T) -> Result<Vec<u8>, ProtocolError> {
    let mut frame = vec![0u8; HEADER_LEN];
    codec()
        .serialize_into(&mut frame, msg)
        .map_err(|source| ProtocolError::Encode {
            type_name: type_name::<T>(),
            source,
        })?;
    let len = frame.len() - HEADER_LEN;
    let len = u32::try_from(len).map_err(|_| ProtocolError::FrameTooLarge {
        len: len as u64,
        max: u64::from(u32::MAX),
    })?;
    frame[..HEADER_LEN].copy_from_slice(&len.to_le_bytes());
    Ok(frame)
}

/// The payload length a frame header announces, refused above `max` before anything
/// is allocated for it.
pub fn payload_len(header: [u8; HEADER_LEN], max: usize) -> Result<usize, ProtocolError> {
    let len = u32::from_le_bytes(header);
    if u64::from(len) > max as u64 {
        return Err(ProtocolError::FrameTooLarge {
            len: u64::from(len),
            max: max as u64,
        });
    }
    Ok(len as usize)
}

/// Decodes a whole payload as one `T`; trailing bytes are an error.
pub fn decode<T: DeserializeOwned>(payload: &[u8]) -> Result<T, ProtocolError> {
    codec()
        .with_limit(payload.len() as u64)
        .deserialize(payload)
        .map_err(|source| ProtocolError::Decode {
            type_name: type_name::<T>(),
            len: payload.len(),
            source,
        })
}

/// Sends `msg` as one frame with `fds` attached (at most [`super::MAX_FDS`]). The
/// descriptors stay owned by the caller; the peer receives duplicates.
pub fn send<T: Serialize>(
    sock: impl AsFd,
    msg: &T,
    fds: &[BorrowedFd<'_>],
) -> Result<(), ProtocolError> {
    fds::send_all(sock.as_fd(), &encode(msg)?, fds)
}

/// Receives one frame whose payload is at most `max` bytes (usually [`MAX_FRAME`]).
///
/// Returns `Ok(None)` when the peer closed the connection cleanly between frames, and
/// the message with the descriptors that came with it otherwise. End of file inside
/// a frame is [`ProtocolError::Truncated`].
pub fn recv<T: DeserializeOwned>(
    sock: impl AsFd,
    max: usize,
) -> Result<Option<(T, Vec<OwnedFd>)>, ProtocolError> {
    let sock = sock.as_fd();
    let mut header = [0u8; HEADER_LEN];
    let head = fds::recv_exact(sock, &mut header, true)?;
    if head.len == 0 {
        return Ok(None);
    }
    if head.len < HEADER_LEN {
        return Err(ProtocolError::Truncated {
            part: "length header",
            expected: HEADER_LEN,
            received: head.len,
        });
    }
    let len = payload_len(header, max)?;
    let mut payload = vec![0u8; len];
    let body = fds::recv_exact(sock, &mut payload, false)?;
    if body.len < len {
        return Err(ProtocolError::Truncated {
            part: "payload",
            expected: len,
            received: body.len,
        });
    }
    Ok(Some((decode(&payload)?, head.fds)))
}

/// Sends this build's [`Hello`]: the first frame of every connection, from the side
/// that connects.
pub fn send_hello(sock: impl AsFd) -> Result<(), ProtocolError> {
    send(sock, &Hello::CURRENT, &[])
}

/// Reads the peer's first frame and checks that it is a [`Hello`] with our magic and
/// version. Returns the hello so that a future version may accept older peers.
pub fn expect_hello(sock: impl AsFd) -> Result<Hello, ProtocolError> {
    let (hello, fds) = recv::<Hello>(sock, HELLO_LEN)?.ok_or(ProtocolError::ClosedBeforeHello)?;
    if !fds.is_empty() {
        return Err(ProtocolError::FdsWithHello { count: fds.len() });
    }
    hello.check()?;
    Ok(hello)
}

impl Hello {
    /// Refuses a peer that is not ustrace or speaks another protocol version.
    pub fn check(&self) -> Result<(), ProtocolError> {
        if self.magic != HELLO_MAGIC {
            return Err(ProtocolError::BadMagic {
                found: self.magic,
                expected: HELLO_MAGIC,
            });
        }
        if self.version != PROTOCOL_VERSION {
            return Err(ProtocolError::VersionMismatch {
                theirs: self.version,
                ours: PROTOCOL_VERSION,
            });
        }
        Ok(())
    }
}
