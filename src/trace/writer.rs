//! Writing a trace directory: the metadata file and packets appended to stream files.
//!
//! The daemon runs as root and writes below output directories that other users may
//! be able to write (see /work/shared/design/THREATS.md, "names → file system"), so
//! it never resolves a path below an output directory by name alone. A
//! [`TraceDir`] walks from the output directory one component at a time with
//! `mkdirat`/`openat(O_NOFOLLOW)`: every directory below the output is made by the
//! daemon, or, for the shared levels (`ust`, `ust/uid`, `ust/uid/<uid>`, `ust/pid`),
//! reused only if it is a real directory of the daemon's user that no one else
//! may write; the trace directory itself must be new. Files are then opened
//! relative to that directory's fd with `O_NOFOLLOW`, and created with `O_EXCL`:
//! a name that exists already is reopened only if this trace made it. A
//! pre-planted tree, a symbolic link or a file of another user is refused with a
//! [`TraceDirError`] naming it.
//!
//! [`write_metadata`] and [`append_packet`] write a trace by path into a directory
//! the caller owns (tests and tools); they share the file handling.

use std::collections::HashSet;
use std::fs::{DirBuilder, File};
use std::io::{self, Write};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use nix::errno::Errno;
use nix::fcntl::{AT_FDCWD, AtFlags, OFlag, openat, renameat};
use nix::sys::stat::{Mode, fstat, fstatat, mkdirat};
use nix::unistd::{UnlinkatFlags, geteuid, linkat, unlinkat};

use crate::ctf::names::{self, NameError};
use crate::trace::acl;
use crate::trace::index;
use crate::trace::layout::{METADATA_FILE, stream_file_name};
use crate::trace::registry::EventRegistry;

/// Mode of trace directories: a trace holds what every traced user's apps
/// recorded, so it is for the daemon's user and group, not for every local user.
pub const TRACE_DIR_MODE: u32 = 0o750;

/// Mode of trace files, for the same reason.
pub const TRACE_FILE_MODE: u32 = 0o640;

/// Why the daemon refuses to write a trace where it was asked to.
#[derive(Debug, thiserror::Error)]
pub enum TraceDirError {
    /// A component of the layout is not one file name.
    #[error("bad trace path component: {0}")]
    Name(#[from] NameError),
    /// A directory or file that must be new exists already.
    #[error(
        "{path} exists already and was not made by the daemon for this trace: refusing to write a trace into it (each session needs an output of its own)"
    )]
    Exists {
        /// What exists.
        path: PathBuf,
    },
    /// A symbolic link where the layout has a directory or a trace file.
    #[error("{path} is a symbolic link: the daemon never follows one below an output directory")]
    Link {
        /// The link.
        path: PathBuf,
    },
    /// Something other than a directory where the layout has one.
    #[error("{path} is not a directory")]
    NotDirectory {
        /// What is there.
        path: PathBuf,
    },
    /// A pre-existing directory of another user.
    #[error(
        "{path} belongs to uid {owner}, not to the daemon's uid {euid}: refusing to write a trace into it"
    )]
    Owner {
        /// The directory.
        path: PathBuf,
        /// Its owner.
        owner: u32,
        /// The daemon's effective uid.
        euid: u32,
    },
    /// A pre-existing directory that other users may write into.
    #[error(
        "{path} can be written by group or others (mode {mode:03o}): refusing to write a trace into it"
    )]
    Writable {
        /// The directory.
        path: PathBuf,
        /// Its permission bits.
        mode: u32,
    },
    /// Any other failure of a system call on `path`.
    #[error("{path}: {source}")]
    Io {
        /// Where.
        path: PathBuf,
        /// What the kernel said.
        source: io::Error,
    },
}

/// An I/O failure stays the kernel's error (its errno, e.g. ENOSPC, is what the
/// writer's recovery looks at); a refusal becomes an error of its own kind.
impl From<TraceDirError> for io::Error {
    fn from(e: TraceDirError) -> io::Error {
        let kind = match e {
            TraceDirError::Io { source, .. } => return source,
            TraceDirError::Exists { .. } => io::ErrorKind::AlreadyExists,
            TraceDirError::Name(_) => io::ErrorKind::InvalidInput,
            _ => io::ErrorKind::PermissionDenied,
        };
        io::Error::new(kind, e)
    }
}

/// Turns an errno from a call on `path` into a [`TraceDirError`].
fn failed(path: &Path, errno: Errno) -> TraceDirError {
    match errno {
        Errno::ELOOP => TraceDirError::Link { path: path.into() },
        Errno::EEXIST => TraceDirError::Exists { path: path.into() },
        Errno::ENOTDIR => TraceDirError::NotDirectory { path: path.into() },
        errno => TraceDirError::Io {
            path: path.into(),
            source: errno.into(),
        },
    }
}

/// Whether the directory `fd` was removed (it has no name left); a directory that
/// cannot even be examined counts as removed, so that it is made again.
fn is_removed(fd: &OwnedFd) -> bool {
    fstat(fd).map_or(true, |st| st.st_nlink == 0)
}

/// `O_CLOEXEC | O_NOFOLLOW` and `extra`: how everything below an output is opened.
fn flags(extra: OFlag) -> OFlag {
    OFlag::O_CLOEXEC | OFlag::O_NOFOLLOW | extra
}

/// Opens directory `name` in `parent` (at `path`, for messages) without following
/// a link in its last component.
fn open_dir(parent: BorrowedFd, name: &Path, path: &Path) -> Result<OwnedFd, TraceDirError> {
    openat(
        parent,
        name,
        flags(OFlag::O_RDONLY | OFlag::O_DIRECTORY),
        Mode::empty(),
    )
    .map_err(|e| {
        // With O_DIRECTORY a link fails as "not a directory": say what it is.
        let link = fstatat(parent, name, AtFlags::AT_SYMLINK_NOFOLLOW)
            .is_ok_and(|st| st.st_mode & libc::S_IFMT == libc::S_IFLNK);
        failed(path, if link { Errno::ELOOP } else { e })
    })
}

/// Opens directory `name` in `parent` (at `path`, for messages) without following
/// a link, and checks that it belongs to the daemon's user and that no one else
/// may write into it.
fn open_own_dir(parent: BorrowedFd, name: &str, path: &Path) -> Result<OwnedFd, TraceDirError> {
    let fd = open_dir(parent, Path::new(name), path)?;
    let stat = fstat(&fd).map_err(|e| failed(path, e))?;
    let euid = geteuid().as_raw();
    if stat.st_uid != euid {
        return Err(TraceDirError::Owner {
            path: path.into(),
            owner: stat.st_uid,
            euid,
        });
    }
    let mode = stat.st_mode & 0o7777;
    if mode & 0o022 != 0 {
        return Err(TraceDirError::Writable {
            path: path.into(),
            mode,
        });
    }
    Ok(fd)
}

/// Opens directory `dir`, creating it (and its missing parents, [`TRACE_DIR_MODE`])
/// if needed; its last component must not be a link. A session's output is the
/// operator's choice, so it may pre-exist and belong to anyone, and its parents are
/// resolved like any path: only what lies below it is distrusted. Also how a test
/// or tool opens a directory of its own.
fn open_output(dir: &Path) -> Result<OwnedFd, TraceDirError> {
    DirBuilder::new()
        .recursive(true)
        .mode(TRACE_DIR_MODE)
        .create(dir)
        .map_err(|source| TraceDirError::Io {
            path: dir.into(),
            source,
        })?;
    open_dir(AT_FDCWD, dir, dir)
}

/// A session's output directory, opened (and created if missing) once, at its
/// first use: every trace of the session is then made below that same directory,
/// whatever later happens to its path (a user who owns it and swaps it for a link
/// to `/etc` redirects nothing). Clones share it.
#[derive(Clone)]
pub struct OutputDir {
    /// What all clones share.
    shared: Arc<OutputShared>,
}

/// The state of an [`OutputDir`].
struct OutputShared {
    /// The path the operator gave.
    path: PathBuf,
    /// The directory, once opened; a failure is not kept, the next use tries again.
    fd: Mutex<Option<Arc<OwnedFd>>>,
}

impl OutputDir {
    /// The output directory at `path`; nothing is opened or made until it is used.
    pub fn new(path: PathBuf) -> OutputDir {
        OutputDir {
            shared: Arc::new(OutputShared {
                path,
                fd: Mutex::new(None),
            }),
        }
    }

    /// The path the operator gave.
    pub fn path(&self) -> &Path {
        &self.shared.path
    }

    /// The directory, opened (and made if missing) now if this is its first use,
    /// or again if it was removed (`rm -rf` of the output: traces are recreated).
    fn fd(&self) -> Result<Arc<OwnedFd>, TraceDirError> {
        let mut fd = self.shared.fd.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(fd) = fd.as_ref().filter(|fd| !is_removed(fd)) {
            return Ok(fd.clone());
        }
        let opened = Arc::new(open_output(self.path())?);
        *fd = Some(opened.clone());
        Ok(opened)
    }
}

impl std::fmt::Debug for OutputDir {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_tuple("OutputDir").field(&self.shared.path).finish()
    }
}

impl PartialEq for OutputDir {
    fn eq(&self, other: &OutputDir) -> bool {
        self.shared.path == other.shared.path
    }
}

impl Eq for OutputDir {}

/// Opens `output/below[0]/below[1]/...`, making each missing directory with
/// `mkdirat` ([`TRACE_DIR_MODE`]). A directory that exists already is reused only
/// if it passes [`open_own_dir`], and the last one only if `fresh_leaf` is false:
/// a trace directory must be made for its trace. Once it is made, `fresh_leaf`
/// becomes false, so that a try that failed after that point (its checks, or out
/// of fds) leaves a directory the next try may open.
pub fn open_below(
    output: &OutputDir,
    below: &[String],
    fresh_leaf: &mut bool,
) -> Result<OwnedFd, TraceDirError> {
    let output_fd = output.fd()?;
    let mut dir: Option<OwnedFd> = None;
    let mut path = output.path().to_path_buf();
    for (i, name) in below.iter().enumerate() {
        names::check_component(name)?;
        path.push(name);
        let parent = dir.as_ref().map_or(output_fd.as_fd(), |d| d.as_fd());
        match mkdirat(
            parent,
            name.as_str(),
            Mode::from_bits_truncate(TRACE_DIR_MODE),
        ) {
            Ok(()) if i + 1 == below.len() => *fresh_leaf = false,
            Ok(()) => {}
            Err(Errno::EEXIST) if !(*fresh_leaf && i + 1 == below.len()) => {}
            Err(e) => return Err(failed(&path, e)),
        }
        // Checked even when just made: someone able to write the parent could
        // have replaced it in between.
        dir = Some(open_own_dir(parent, name, &path)?);
    }
    match dir {
        Some(dir) => Ok(dir),
        None => output_fd
            .try_clone()
            .map_err(|source| TraceDirError::Io { path, source }),
    }
}

/// A stream or index file opened for appending, with its length then: a writer
/// goes on after its last byte. A file just created is known empty, so opening
/// one of a new trace costs no `fstat`.
#[derive(Debug)]
pub struct Appending {
    /// The file, `O_APPEND`.
    pub file: File,
    /// Its length when opened.
    pub len: u64,
}

/// Opens stream file `name` in `dir` for appending: created with `O_EXCL`, or
/// reopened (never through a link) if `ours` says this trace made it.
fn open_stream_in(
    dir: BorrowedFd,
    path: &Path,
    name: &str,
    ours: bool,
) -> Result<Appending, TraceDirError> {
    let path = path.join(name);
    let mode = Mode::from_bits_truncate(TRACE_FILE_MODE);
    let append = OFlag::O_WRONLY | OFlag::O_APPEND;
    match openat(
        dir,
        name,
        flags(append | OFlag::O_CREAT | OFlag::O_EXCL),
        mode,
    ) {
        Ok(fd) => Ok(Appending {
            file: fd.into(),
            len: 0,
        }),
        Err(Errno::EEXIST) if ours => {
            let fd = openat(dir, name, flags(append), mode).map_err(|e| failed(&path, e))?;
            let len = fstat(&fd).map_err(|e| failed(&path, e))?.st_size as u64;
            Ok(Appending {
                file: fd.into(),
                len,
            })
        }
        Err(e) => Err(failed(&path, e)),
    }
}

/// Creates `name` in `dir` (at `path`, for messages) holding `bytes`, complete
/// before it has a name: the bytes go to an unnamed `O_TMPFILE` inode that is then
/// linked as `name`, so a crash or a full disk never leaves a visible, partial or
/// empty file (babeltrace2 rejects a trace whose metadata is torn).
/// [`TraceDirError::Exists`] when `name` exists, as with `O_EXCL`; nothing is ever
/// written through a link. Where `O_TMPFILE` is not supported, the file is created
/// with `O_EXCL | O_NOFOLLOW` and removed again if its write fails.
fn create_complete(
    dir: BorrowedFd,
    path: &Path,
    name: &str,
    bytes: &[u8],
) -> Result<(), TraceDirError> {
    let target = path.join(name);
    let mode = Mode::from_bits_truncate(TRACE_FILE_MODE);
    let io = |source| TraceDirError::Io {
        path: target.clone(),
        source,
    };
    let unnamed = openat(
        dir,
        ".",
        OFlag::O_CLOEXEC | OFlag::O_WRONLY | OFlag::O_TMPFILE,
        mode,
    );
    let fd = match unnamed {
        Err(Errno::EOPNOTSUPP | Errno::EISDIR) => {
            let create = flags(OFlag::O_WRONLY | OFlag::O_CREAT | OFlag::O_EXCL);
            let fd = openat(dir, name, create, mode).map_err(|e| failed(&target, e))?;
            return File::from(fd).write_all(bytes).map_err(|e| {
                let _ = unlinkat(dir, name, UnlinkatFlags::NoRemoveDir);
                io(e)
            });
        }
        other => other.map_err(|e| failed(path, e))?,
    };
    let mut file = File::from(fd);
    file.write_all(bytes).map_err(io)?;
    let unnamed = format!("/proc/self/fd/{}", file.as_raw_fd());
    linkat(
        AT_FDCWD,
        unnamed.as_str(),
        dir,
        name,
        AtFlags::AT_SYMLINK_FOLLOW,
    )
    .map_err(|e| failed(&target, e))
}

/// Writes `tsdl`, whole, as the metadata file of `dir`.
///
/// A trace's first metadata is made complete, then named ([`create_complete`]):
/// no stream file refers to it yet, and one file created instead of two plus a
/// rename matters when thousands of short-lived per-PID apps each get a trace
/// (inode allocation is the costly part of their teardown on ext4); `ours` becomes
/// true once it exists. A metadata that exists already is replaced, if `ours` says
/// this trace made it, atomically so that a reader never sees half of a newer
/// version: through `.metadata.<tag>`, a name no other writer of the same trace
/// uses at the same time, made anew with `O_EXCL` (a stale one is unlinked, never
/// followed; a failed write removes it), then renamed.
fn store_metadata_in(
    dir: BorrowedFd,
    path: &Path,
    tag: &str,
    tsdl: &str,
    ours: &mut bool,
) -> Result<(), TraceDirError> {
    let target = path.join(METADATA_FILE);
    match create_complete(dir, path, METADATA_FILE, tsdl.as_bytes()) {
        Ok(()) => {
            *ours = true;
            Ok(())
        }
        Err(TraceDirError::Exists { .. }) if *ours => {
            let tmp_name = format!(".{METADATA_FILE}.{tag}");
            names::check_component(&tmp_name)?;
            let tmp = path.join(&tmp_name);
            match unlinkat(dir, tmp_name.as_str(), UnlinkatFlags::NoRemoveDir) {
                Ok(()) | Err(Errno::ENOENT) => {}
                Err(e) => return Err(failed(&tmp, e)),
            }
            let create = flags(OFlag::O_WRONLY | OFlag::O_CREAT | OFlag::O_EXCL);
            let mode = Mode::from_bits_truncate(TRACE_FILE_MODE);
            let fd = openat(dir, tmp_name.as_str(), create, mode).map_err(|e| failed(&tmp, e))?;
            if let Err(source) = File::from(fd).write_all(tsdl.as_bytes()) {
                let _ = unlinkat(dir, tmp_name.as_str(), UnlinkatFlags::NoRemoveDir);
                return Err(TraceDirError::Io { path: tmp, source });
            }
            renameat(dir, tmp_name.as_str(), dir, METADATA_FILE).map_err(|e| failed(&target, e))
        }
        Err(e) => Err(e),
    }
}

/// One sub-trace directory as the daemon writes it: made on first use below its
/// session's output directory, then reached only through its fd. Clones share the
/// directory and what was made in it, so every stream of a trace (on whichever I/O
/// thread, before and after a writer restart) writes into the same directory.
#[derive(Clone)]
pub struct TraceDir {
    /// What all clones share.
    shared: Arc<Shared>,
}

/// The state of a [`TraceDir`].
struct Shared {
    /// The session's output directory.
    output: OutputDir,
    /// The layout below it (`ust`, `uid`, `1000`, `64-bit`), each one file name.
    below: Vec<String>,
    /// `output` joined with `below`, for messages and for custom writers.
    path: PathBuf,
    /// The directory, once made. A lock, not a once-cell: a failed attempt is not
    /// kept, the writer's next try makes its own.
    dir: Mutex<DirState>,
    /// Files this trace created in it: the only names it may open again.
    made: Mutex<HashSet<String>>,
    /// The user (other than the daemon's) who may read the trace: see
    /// [`TraceDir::readable_by`].
    reader: Option<u32>,
    /// Highest metadata version stored in this directory, plus one (0: none yet),
    /// shared by every stream of the trace so that the metadata file is written once
    /// per version, not once per stream: file creation is most of a short-lived
    /// app's trace cost. Per directory, not per trace: after a rotation the next
    /// chunk's directory has none yet.
    metadata_stored: AtomicU64,
    /// Bytes of packets written into this directory: a session's `--size` rotation
    /// compares their sum over its traces with its bound.
    written: AtomicU64,
}

/// How far making a [`TraceDir`]'s directory got.
struct DirState {
    /// The directory, once made and opened.
    fd: Option<Arc<OwnedFd>>,
    /// Whether it must still be made (see [`open_below`]).
    fresh: bool,
}

impl std::fmt::Debug for TraceDir {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_tuple("TraceDir").field(&self.shared.path).finish()
    }
}

impl PartialEq for TraceDir {
    fn eq(&self, other: &TraceDir) -> bool {
        self.shared.path == other.shared.path
    }
}

impl Eq for TraceDir {}

impl TraceDir {
    /// The trace directory `output/below...`; nothing is made until it is used.
    /// Refused if a component of `below` is not one file name.
    pub fn new(output: &OutputDir, below: Vec<String>) -> Result<TraceDir, TraceDirError> {
        TraceDir::make(output, below, None)
    }

    /// As [`TraceDir::new`], for a trace user `uid` may read (a per-UID trace of
    /// its apps): whenever the daemon makes the directory, it adds `uid` to the
    /// access lists (POSIX ACLs, see [`crate::trace::acl`]) of the output and of each
    /// level below it (search only), of the trace directory (read and search) and
    /// of every file made in it (read, inherited). Nothing else changes: other
    /// users get nothing, and where the file system has no ACLs the trace stays
    /// the daemon's user's and group's only (logged).
    pub fn readable_by(
        output: &OutputDir,
        below: Vec<String>,
        uid: u32,
    ) -> Result<TraceDir, TraceDirError> {
        let reader = (uid != geteuid().as_raw()).then_some(uid);
        TraceDir::make(output, below, reader)
    }

    /// The trace directory `output/below...` that `reader` may read.
    fn make(
        output: &OutputDir,
        below: Vec<String>,
        reader: Option<u32>,
    ) -> Result<TraceDir, TraceDirError> {
        for name in &below {
            names::check_component(name)?;
        }
        let path = below
            .iter()
            .fold(output.path().to_path_buf(), |p, c| p.join(c));
        Ok(TraceDir {
            shared: Arc::new(Shared {
                output: output.clone(),
                below,
                path,
                dir: Mutex::new(DirState {
                    fd: None,
                    fresh: true,
                }),
                made: Mutex::new(HashSet::new()),
                reader,
                metadata_stored: AtomicU64::new(0),
                written: AtomicU64::new(0),
            }),
        })
    }

    /// The same place for the next trace chunk (a rotation): the same output,
    /// layout and reader, nothing made yet, so its first use makes the directory
    /// anew where the previous chunk's was before it moved into `archives/`.
    pub fn next_chunk(&self) -> TraceDir {
        TraceDir {
            shared: Arc::new(Shared {
                output: self.shared.output.clone(),
                below: self.shared.below.clone(),
                path: self.shared.path.clone(),
                dir: Mutex::new(DirState {
                    fd: None,
                    fresh: true,
                }),
                made: Mutex::new(HashSet::new()),
                reader: self.shared.reader,
                metadata_stored: AtomicU64::new(0),
                written: AtomicU64::new(0),
            }),
        }
    }

    /// Whether metadata version `version` (or a newer one) is stored here already.
    pub fn has_metadata(&self, version: u64) -> bool {
        self.shared.metadata_stored.load(Ordering::Acquire) > version
    }

    /// Notes that metadata version `version` is stored here.
    pub fn metadata_stored(&self, version: u64) {
        self.shared
            .metadata_stored
            .fetch_max(version + 1, Ordering::Release);
    }

    /// Counts `bytes` of packets written here.
    pub fn count_written(&self, bytes: u64) {
        self.shared.written.fetch_add(bytes, Ordering::Relaxed);
    }

    /// Bytes of packets written here so far.
    pub fn written(&self) -> u64 {
        self.shared.written.load(Ordering::Relaxed)
    }

    /// Where the directory is.
    pub fn path(&self) -> &Path {
        &self.shared.path
    }

    /// Its components below the session output (`ust`, `uid`, `1000`, `64-bit`):
    /// the part of its path a relayd keeps, and the place a snapshot puts the
    /// sub-trace below its own directory.
    pub fn below(&self) -> &[String] {
        &self.shared.below
    }

    /// Makes the directory now if it does not exist yet (the same safe `mkdirat`
    /// walk as for the trace's own files), so that a custom writer may create
    /// files in [`path`](Self::path) from its `create` on.
    pub fn ensure(&self) -> io::Result<()> {
        self.dir().map(drop).map_err(io::Error::from)
    }

    /// The directory, made now if this is its first use, or made anew (with
    /// nothing in it counted as this trace's: no file it made, no metadata stored)
    /// if it was removed.
    fn dir(&self) -> Result<Arc<OwnedFd>, TraceDirError> {
        let mut dir = self.shared.dir.lock().unwrap_or_else(|e| e.into_inner());
        match dir.fd.as_ref() {
            Some(fd) if !is_removed(fd) => return Ok(fd.clone()),
            Some(_) => {
                dir.fresh = true;
                self.shared
                    .made
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .clear();
                self.shared.metadata_stored.store(0, Ordering::Release);
            }
            None => {}
        }
        let opened = open_below(&self.shared.output, &self.shared.below, &mut dir.fresh)?;
        if let Some(uid) = self.shared.reader
            && let Err(e) = self.grant_reader(&opened, uid)
        {
            log::warn!(
                "{}: cannot let uid {uid} read its trace ({e}); it stays readable by the daemon's user and group only",
                self.path().display()
            );
        }
        let fd = Arc::new(opened);
        dir.fd = Some(fd.clone());
        Ok(fd)
    }

    /// The user (not the daemon's) who may read this trace, if any.
    pub fn reader(&self) -> Option<u32> {
        self.shared.reader
    }

    /// Lets `uid` pass through this directory (search permission on it, the
    /// output and every level between), making it if needed: a trace chunk's
    /// directory (`archives/<chunk>/`) above the per-UID traces it holds.
    pub fn let_through(&self, uid: u32) -> Result<(), TraceDirError> {
        let leaf = self.dir()?;
        self.grant_path(&leaf, uid, acl::EXECUTE, None)
    }

    /// Lets `uid` reach the trace directory `leaf` (search permission on the
    /// output and every level between) and read it and every file made in it.
    fn grant_reader(&self, leaf: &OwnedFd, uid: u32) -> Result<(), TraceDirError> {
        // Inherited with search too, for the directories made in it (`index/`); a
        // file's mask (its 0640 mode's group bits) leaves the user read only.
        let read = acl::READ | acl::EXECUTE;
        self.grant_path(leaf, uid, read, Some(read))
    }

    /// Search permission for `uid` on the output and every level down to `leaf`,
    /// and `perm` (and `inherited` for what is made in it) on `leaf`.
    fn grant_path(
        &self,
        leaf: &OwnedFd,
        uid: u32,
        perm: u16,
        inherited: Option<u16>,
    ) -> Result<(), TraceDirError> {
        let output = self.shared.output.fd()?;
        let mut path = self.shared.output.path().to_path_buf();
        let io_err = |path: &Path, source| TraceDirError::Io {
            path: path.into(),
            source,
        };
        acl::grant_user(output.as_fd(), uid, acl::EXECUTE, None).map_err(|e| io_err(&path, e))?;
        let levels = self.shared.below.len().saturating_sub(1);
        let mut parent: Option<OwnedFd> = None;
        for name in &self.shared.below[..levels] {
            path.push(name);
            let at = parent.as_ref().map_or(output.as_fd(), |p| p.as_fd());
            let level = open_dir(at, Path::new(name), &path)?;
            acl::grant_user(level.as_fd(), uid, acl::EXECUTE, None)
                .map_err(|e| io_err(&path, e))?;
            parent = Some(level);
        }
        acl::grant_user(leaf.as_fd(), uid, perm, inherited).map_err(|e| io_err(self.path(), e))
    }

    /// Runs `open` on the directory with whether this trace made the file `name`
    /// (which `open` sets once it made it), and records that it did when `open`
    /// made it or succeeded. The list stays locked meanwhile: two streams storing
    /// the trace's first metadata at once must not both find it made by "someone
    /// else".
    fn open_in<T>(
        &self,
        name: &str,
        open: impl FnOnce(BorrowedFd, &mut bool) -> Result<T, TraceDirError>,
    ) -> io::Result<T> {
        names::check_component(name).map_err(TraceDirError::from)?;
        let dir = self.dir()?;
        let mut made = self.shared.made.lock().unwrap_or_else(|e| e.into_inner());
        let mut ours = made.contains(name);
        let opened = open(dir.as_fd(), &mut ours);
        if ours || opened.is_ok() {
            made.insert(name.to_string());
        }
        Ok(opened?)
    }

    /// Writes `tsdl`, whole, as the trace's metadata; `tag` names the temporary
    /// file of a replacement (see [`store_metadata_in`]).
    pub fn store_metadata(&self, tag: &str, tsdl: &str) -> io::Result<()> {
        self.open_in(METADATA_FILE, |dir, ours| {
            store_metadata_in(dir, self.path(), tag, tsdl, ours)
        })
    }

    /// Opens the index file of stream `stream` (`index/<stream>.idx`, see
    /// [`crate::trace::index`]) for appending, like [`TraceDir::open_stream`], making
    /// the `index` directory (never through a link) if needed.
    pub fn open_index(&self, stream: &str) -> io::Result<Appending> {
        let name = index::index_file_name(stream);
        // Its entry in the list of files this trace made: no stream file name ends
        // in `.idx` (they end in `_<cpu>`).
        let key = format!("{}-{name}", index::INDEX_DIR);
        self.open_in(&key, |dir, ours| {
            let path = self.path().join(index::INDEX_DIR);
            match mkdirat(
                dir,
                index::INDEX_DIR,
                Mode::from_bits_truncate(TRACE_DIR_MODE),
            ) {
                Ok(()) | Err(Errno::EEXIST) => {}
                Err(e) => return Err(failed(&path, e)),
            }
            let index_dir = open_own_dir(dir, index::INDEX_DIR, &path)?;
            open_stream_in(index_dir.as_fd(), &path, &name, *ours)
        })
    }

    /// Deletes stream file `name` and its index file, if this trace made them (a
    /// name it did not make is left alone), relative to the directory's fd: the
    /// oldest file of a stream bounded by `--tracefile-count`.
    pub fn remove_stream(&self, name: &str) -> io::Result<()> {
        names::check_component(name).map_err(TraceDirError::from)?;
        let dir = self.dir()?;
        let mut made = self.shared.made.lock().unwrap_or_else(|e| e.into_inner());
        if made.remove(name) {
            unlinkat(dir.as_fd(), name, UnlinkatFlags::NoRemoveDir)
                .map_err(|e| io::Error::from(failed(&self.path().join(name), e)))?;
        }
        let index = index::index_file_name(name);
        if made.remove(&format!("{}-{index}", index::INDEX_DIR)) {
            let index_dir = open_own_dir(
                dir.as_fd(),
                index::INDEX_DIR,
                &self.path().join(index::INDEX_DIR),
            )?;
            unlinkat(
                index_dir.as_fd(),
                index.as_str(),
                UnlinkatFlags::NoRemoveDir,
            )
            .map_err(|e| {
                io::Error::from(failed(&self.path().join(index::INDEX_DIR).join(&index), e))
            })?;
        }
        Ok(())
    }

    /// Opens the stream file `name` for appending: made now, or reopened if this
    /// trace made it (a writer restarted).
    pub fn open_stream(&self, name: &str) -> io::Result<Appending> {
        self.open_in(name, |dir, ours| {
            open_stream_in(dir, self.path(), name, *ours)
        })
    }
}

/// Moves `name` (one entry of `output`, the `ust` tree of a trace chunk) into
/// `into` (made now if needed), relative to both directories' fds and without
/// replacing anything there. Streams still writing through fds opened below it go
/// on writing into it where it now is. `Ok(false)` if `output` has no `name`.
pub fn move_into(output: &OutputDir, name: &str, into: &TraceDir) -> Result<bool, TraceDirError> {
    names::check_component(name)?;
    let from = output.fd()?;
    let to = into.dir()?;
    let target = into.path().join(name);
    match nix::fcntl::renameat2(
        from.as_fd(),
        name,
        to.as_fd(),
        name,
        nix::fcntl::RenameFlags::RENAME_NOREPLACE,
    ) {
        Ok(()) => Ok(true),
        Err(Errno::ENOENT) => Ok(false),
        Err(e) => Err(failed(&target, e)),
    }
}

/// Deletes `name` (one entry of `output`) and everything below it: the trace chunk
/// a `clear` moved aside. Reached through the output's fd (its `/proc/self/fd`
/// link), never through the output's path, which its owner may have swapped for
/// a link meanwhile; below it nothing is followed (`remove_dir_all` unlinks links).
pub fn remove_entry(output: &OutputDir, name: &str) -> io::Result<()> {
    names::check_component(name).map_err(TraceDirError::from)?;
    let fd = output.fd()?;
    let path = PathBuf::from(format!("/proc/self/fd/{}", fd.as_raw_fd())).join(name);
    std::fs::remove_dir_all(path)
}

/// Writes `tsdl`, whole, to `dir/metadata`, creating `dir` if needed or replacing
/// an existing metadata (through `.metadata.<tag>`): for tests and tools writing a
/// trace into a directory of their own (the daemon uses [`TraceDir`]).
pub fn store_metadata(dir: &Path, tag: &str, tsdl: &str) -> io::Result<()> {
    let fd = open_output(dir)?;
    Ok(store_metadata_in(fd.as_fd(), dir, tag, tsdl, &mut true)?)
}

/// Writes `registry`'s metadata to `dir/metadata` (see [`store_metadata`]).
pub fn write_metadata(dir: &Path, registry: &EventRegistry) -> io::Result<()> {
    store_metadata(dir, "tmp", registry.metadata())
}

/// Appends one packet to the stream file of `channel` on `cpu` in `dir`, creating
/// both if needed: like [`write_metadata`], for a directory of the caller's own.
pub fn append_packet(dir: &Path, channel: &str, cpu: u32, packet: &[u8]) -> io::Result<()> {
    let fd = open_output(dir)?;
    open_stream_in(fd.as_fd(), dir, &stream_file_name(channel, cpu), true)?
        .file
        .write_all(packet)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;
    use std::os::unix::fs::PermissionsExt;

    /// The names in `dir`, sorted.
    fn names(dir: &Path) -> Vec<String> {
        let mut names: Vec<String> = fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        names
    }

    fn out(path: &Path) -> OutputDir {
        OutputDir::new(path.to_path_buf())
    }

    fn below(path: &str) -> Vec<String> {
        path.split('/').map(str::to_string).collect()
    }

    #[test]
    fn the_first_metadata_is_created_in_place_and_later_ones_replace_it() {
        let root = tempfile::tempdir().unwrap();
        let trace =
            TraceDir::new(&out(root.path()), below("ust/pid/app-1-20261127-104600")).unwrap();
        trace.store_metadata("chan_0", "/* CTF 1.8 */ v1").unwrap();
        let dir = trace.path();
        assert_eq!(
            fs::read_to_string(dir.join(METADATA_FILE)).unwrap(),
            "/* CTF 1.8 */ v1"
        );
        trace
            .store_metadata("chan_0", "/* CTF 1.8 */ v2, longer")
            .unwrap();
        assert_eq!(
            fs::read_to_string(dir.join(METADATA_FILE)).unwrap(),
            "/* CTF 1.8 */ v2, longer"
        );
        assert_eq!(names(dir), [METADATA_FILE], "no temporary file left behind");
        for d in [root.path().join("ust"), dir.to_path_buf()] {
            assert_eq!(fs::metadata(d).unwrap().permissions().mode() & 0o027, 0);
        }
    }

    #[test]
    fn a_metadata_that_cannot_be_stored_is_an_error() {
        let root = tempfile::tempdir().unwrap();
        let not_a_dir = root.path().join("file");
        fs::write(&not_a_dir, "x").unwrap();
        let under_file = TraceDir::new(&out(&not_a_dir), below("trace")).unwrap();
        assert!(under_file.store_metadata("t", "tsdl").is_err());
        let at_file = TraceDir::new(&out(root.path()), below("file")).unwrap();
        assert!(at_file.store_metadata("t", "tsdl").is_err());
    }

    #[test]
    fn a_stream_file_is_made_once_and_reopened_only_by_its_trace() {
        let root = tempfile::tempdir().unwrap();
        let trace = TraceDir::new(&out(root.path()), below("ust/uid/0/64-bit")).unwrap();
        let mut made = trace.open_stream("chan_0").unwrap();
        assert_eq!(made.len, 0);
        made.file.write_all(b"ab").unwrap();
        // A restarted writer of the same trace (a clone) reopens and appends.
        let mut reopened = trace.clone().open_stream("chan_0").unwrap();
        assert_eq!(reopened.len, 2, "a reopened file's length is its own");
        reopened.file.write_all(b"cd").unwrap();
        assert_eq!(fs::read(trace.path().join("chan_0")).unwrap(), b"abcd");
        // Another trace for the same directory finds it made already.
        let other = TraceDir::new(&out(root.path()), below("ust/uid/0/64-bit")).unwrap();
        let e = other.open_stream("chan_0").unwrap_err().to_string();
        assert!(e.contains("exists already"), "{e}");
    }

    #[test]
    fn links_and_files_planted_in_a_trace_directory_are_never_followed() {
        let root = tempfile::tempdir().unwrap();
        let victim = root.path().join("victim");
        fs::write(&victim, "precious").unwrap();
        let trace =
            TraceDir::new(&out(&root.path().join("out")), below("ust/uid/0/64-bit")).unwrap();
        trace.store_metadata("chan_0", "v1").unwrap();
        let dir = trace.path().to_path_buf();
        std::os::unix::fs::symlink(&victim, dir.join("chan_1")).unwrap();
        std::os::unix::fs::symlink(&victim, dir.join(".metadata.chan_0")).unwrap();
        let e = trace.open_stream("chan_1").unwrap_err().to_string();
        assert!(e.contains("chan_1") && e.contains("exists already"), "{e}");
        trace.store_metadata("chan_0", "v2").unwrap();
        assert_eq!(fs::read_to_string(dir.join(METADATA_FILE)).unwrap(), "v2");
        fs::remove_file(dir.join(METADATA_FILE)).unwrap();
        std::os::unix::fs::symlink(&victim, dir.join(METADATA_FILE)).unwrap();
        assert!(
            trace.store_metadata("chan_0", "v3").is_ok(),
            "replaces the link"
        );
        assert!(!dir.join(METADATA_FILE).is_symlink());
        assert_eq!(fs::read_to_string(&victim).unwrap(), "precious");
    }

    #[test]
    fn pre_planted_directories_below_the_output_are_refused() {
        let root = tempfile::tempdir().unwrap();
        let output = root.path().join("out");
        // A trace directory that exists already.
        fs::create_dir_all(output.join("ust/uid/0/64-bit")).unwrap();
        fs::set_permissions(output.join("ust"), fs::Permissions::from_mode(0o750)).unwrap();
        let trace = TraceDir::new(&out(&output), below("ust/uid/0/64-bit")).unwrap();
        let e = trace.store_metadata("t", "x").unwrap_err().to_string();
        assert!(e.contains("64-bit") && e.contains("exists already"), "{e}");
        // A level that others may write.
        fs::set_permissions(output.join("ust"), fs::Permissions::from_mode(0o777)).unwrap();
        let trace = TraceDir::new(&out(&output), below("ust/uid/1/64-bit")).unwrap();
        let e = trace.store_metadata("t", "x").unwrap_err().to_string();
        assert!(e.contains("mode 777"), "{e}");
        // A link instead of a level.
        let link_out = root.path().join("link-out");
        fs::create_dir(&link_out).unwrap();
        std::os::unix::fs::symlink(root.path(), link_out.join("ust")).unwrap();
        let trace = TraceDir::new(&out(&link_out), below("ust/uid/0/64-bit")).unwrap();
        let e = trace.store_metadata("t", "x").unwrap_err().to_string();
        assert!(e.contains("symbolic link"), "{e}");
        assert!(!root.path().join("uid").exists());
        // An output that is itself a link.
        let link = root.path().join("output-link");
        std::os::unix::fs::symlink(&link_out, &link).unwrap();
        let trace = TraceDir::new(&out(&link), below("ust/uid/0/64-bit")).unwrap();
        let e = trace.store_metadata("t", "x").unwrap_err().to_string();
        assert!(e.contains("output-link is a symbolic link"), "{e}");
    }

    #[test]
    fn a_removed_output_is_made_again_with_its_trace() {
        let root = tempfile::tempdir().unwrap();
        let path = root.path().join("out");
        let trace = TraceDir::new(&out(&path), below("ust/uid/0/64-bit")).unwrap();
        trace.store_metadata("c_0", "v1").unwrap();
        trace.open_stream("c_0").unwrap();
        fs::remove_dir_all(&path).unwrap();
        trace.store_metadata("c_0", "v2").unwrap();
        trace
            .open_stream("c_0")
            .unwrap()
            .file
            .write_all(b"p")
            .unwrap();
        assert_eq!(
            fs::read_to_string(trace.path().join(METADATA_FILE)).unwrap(),
            "v2"
        );
        assert_eq!(fs::read(trace.path().join("c_0")).unwrap(), b"p");
    }

    #[test]
    fn an_output_swapped_after_its_first_use_redirects_nothing() {
        let root = tempfile::tempdir().unwrap();
        let path = root.path().join("out");
        let output = out(&path);
        TraceDir::new(&output, below("ust/pid/a-1-20261127-104600"))
            .unwrap()
            .store_metadata("t", "a")
            .unwrap();
        fs::rename(&path, root.path().join("moved")).unwrap();
        let elsewhere = root.path().join("elsewhere");
        fs::create_dir(&elsewhere).unwrap();
        std::os::unix::fs::symlink(&elsewhere, &path).unwrap();
        TraceDir::new(&output, below("ust/pid/b-2-20261127-104600"))
            .unwrap()
            .store_metadata("t", "b")
            .unwrap();
        assert!(fs::read_dir(&elsewhere).unwrap().next().is_none());
        let moved = root.path().join("moved/ust/pid");
        assert_eq!(
            names(&moved),
            ["a-1-20261127-104600", "b-2-20261127-104600"]
        );
    }

    #[test]
    fn a_component_that_is_not_one_file_name_is_refused() {
        let root = tempfile::tempdir().unwrap();
        for bad in ["..", "a/b", "", "."] {
            assert!(TraceDir::new(&out(root.path()), vec!["ust".into(), bad.into()]).is_err());
        }
    }
}
