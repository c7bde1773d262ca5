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
}

impl ShmError {
    /// Wraps a failed system call, naming the operation.
    pub(crate) fn sys(what: &'static str) -> impl FnOnce(nix::Error) -> ShmError {
        move |source| ShmError::Sys { what, source }
    }
}
