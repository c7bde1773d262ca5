//! Why a ring could not be created or mapped.

/// Errors creating, mapping or validating a shared-memory ring.
#[derive(Debug, thiserror::Error)]
pub enum ShmError {
    /// The requested geometry breaks a rule of the layout.
    #[error("bad ring geometry {subbuf_size} B x {num_subbuf}: {reason}")]
    BadGeometry {
        /// Sub-buffer size asked for or found in the header.
        subbuf_size: u64,
        /// Sub-buffer count asked for or found in the header.
        num_subbuf: u64,
        /// Which rule it breaks.
        reason: &'static str,
    },
    /// The file is smaller than a ring header.
    #[error("ring file truncated: {len} bytes, the header alone needs {need}")]
    Truncated {
        /// Size of the file.
        len: u64,
        /// Bytes needed.
        need: u64,
    },
    /// The file does not start with the ring magic: it is not a ustrace ring.
    #[error("bad ring magic {found:#018x}, expected {expected:#018x}")]
    BadMagic {
        /// Magic found in the file.
        found: u64,
        /// Magic of this layout.
        expected: u64,
    },
    /// The file was written by another version of the layout.
    #[error("ring layout version {found}, this build reads version {expected}")]
    BadVersion {
        /// Version found in the file.
        found: u32,
        /// Version of this build.
        expected: u32,
    },
    /// This CPU has no lock-free 16-byte compare-and-swap, which every writer of a
    /// ring needs for its position and time (a lock would not be shared with peers).
    #[error(
        "this CPU has no lock-free 16-byte compare-and-swap (cmpxchg16b), which ring writers need"
    )]
    NoPairCas,
    /// The mode word is neither discard nor overwrite.
    #[error("bad ring mode {0}, expected 0 (discard) or 1 (overwrite)")]
    BadMode(u32),
    /// The header's geometry does not match the size of the file.
    #[error("ring geometry needs a {expected}-byte file, the file has {len} bytes")]
    SizeMismatch {
        /// Size the header's geometry implies.
        expected: u64,
        /// Size of the file.
        len: u64,
    },
    /// The file can still be shrunk by another process, which would fault our mapping.
    #[error("ring file is not sealed against shrinking")]
    NotSealed,
    /// A channel needs at least one ring.
    #[error("a channel needs at least one ring, got none")]
    NoRings,
    /// A system call failed.
    #[error("{what} failed: {source}")]
    Sys {
        /// The operation that failed.
        what: &'static str,
        /// The system's reason.
        source: nix::Error,
    },
    /// Mapping the file failed.
    #[error("mmap of the ring failed: {0}")]
    Map(#[source] std::io::Error),
    /// The ring's trace clock cannot be read here (or the daemon's choice is invalid).
    #[error("ring clock: {0}")]
    Clock(#[from] super::ClockError),
}

impl ShmError {
    /// Wraps a failed system call, naming the operation.
    pub(crate) fn sys(what: &'static str) -> impl FnOnce(nix::Error) -> ShmError {
        move |source| ShmError::Sys { what, source }
    }
}

/// A value read from a ring's shared memory that no honest producer can have written:
/// the app mapping the ring scribbled on it. The consumer then marks the ring corrupt
/// and takes nothing more from it (see [`super::Consumer::corruption`]).
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum RingCorruption {
    /// A position beyond what any stream reaches (over an exbibyte written).
    #[error("{word} position {found} is past {max}, more than any stream writes")]
    PositionTooLarge {
        /// `write` or `consumed`.
        word: &'static str,
        /// Value read.
        found: u64,
        /// Largest plausible position.
        max: u64,
    },
    /// `consumed` is not on a sub-buffer boundary.
    #[error("consumed position {found} is not a multiple of the sub-buffer size {subbuf_size}")]
    ConsumedMisaligned {
        /// Value read.
        found: u64,
        /// Sub-buffer size of the ring.
        subbuf_size: u64,
    },
    /// `consumed` moved in a discard-mode ring, where only the consumer moves it.
    #[error("consumed position moved from {expected} to {found} in a discard-mode ring")]
    ConsumedMoved {
        /// Where the consumer left it.
        expected: u64,
        /// Value read.
        found: u64,
    },
    /// `consumed` went backwards in an overwrite-mode ring.
    #[error("consumed position went back from {was} to {found}")]
    ConsumedBackwards {
        /// Last value the consumer saw.
        was: u64,
        /// Value read.
        found: u64,
    },
    /// `write` is behind `consumed`, or further ahead than the ring holds.
    #[error(
        "write position {write} outside consumed {consumed} ..= {limit} (consumed + ring + one sub-buffer)"
    )]
    WriteOutOfBounds {
        /// Value read.
        write: u64,
        /// The consumed position it was checked against.
        consumed: u64,
        /// Largest write position the geometry allows at that consumed position.
        limit: u64,
    },
    /// `write` went backwards while the consumer flushed.
    #[error("write position went back from {was} to {found}")]
    WriteBackwards {
        /// Value read first.
        was: u64,
        /// Value read next.
        found: u64,
    },
    /// A commit word whose byte count lies outside its generation.
    #[error(
        "commit word {word:#018x} of sub-buffer {slot} is outside generation {generation} (bytes {start}..={end} mod 2^32)"
    )]
    CommitOutOfGeneration {
        /// Sub-buffer index.
        slot: u64,
        /// Value read.
        word: u64,
        /// Generation the consumer expects in that slot.
        generation: u64,
        /// Byte count when the generation starts (mod 2^32).
        start: u32,
        /// Byte count when it is complete (mod 2^32).
        end: u32,
    },
    /// A complete packet whose header does not parse.
    #[error("packet {seq_num}: {source}")]
    BadPacket {
        /// Sequence number the packet should have.
        seq_num: u64,
        /// What the parser refused.
        source: crate::ctf::packet::PacketError,
    },
    /// A packet header field that differs from what the ring's geometry and identity
    /// dictate.
    #[error("packet {seq_num}: {field} is {found}, expected {expected}")]
    PacketField {
        /// Sequence number the packet should have.
        seq_num: u64,
        /// Which field.
        field: &'static str,
        /// Value read.
        found: u64,
        /// Value expected (for `events_discarded`, the most it may be).
        expected: u64,
    },
    /// A loss counter that decreased: they only ever grow.
    #[error("counter {counter} went back from {was} to {found}")]
    CounterBackwards {
        /// Which counter.
        counter: &'static str,
        /// Last value read.
        was: u64,
        /// Value read now.
        found: u64,
    },
    /// A loss counter that grew more than the ring could have counted since the
    /// previous reading.
    #[error(
        "counter {counter} grew by {delta} since the last reading, at most {bound} is plausible"
    )]
    CounterImplausible {
        /// Which counter.
        counter: &'static str,
        /// Its growth.
        delta: u64,
        /// The most it could have grown.
        bound: u64,
    },
}
