//! Recovery of the traces a crashed daemon left: cut every torn tail so that the
//! trace reads up to its last complete packet.
//!
//! A daemon killed while it appended a packet can leave part of it at the end of a
//! stream file, and babeltrace2 then rejects the whole trace. What a crash can
//! leave, and what [`recover`] does about it, trace directory by trace directory
//! (a directory holding `metadata` or a `.metadata.*` temporary):
//!
//! - a stream file whose last packet is incomplete (fewer bytes than its header's
//!   `packet_size`, a header cut short, or zeros where a file system extended the
//!   file before the crash): the file is cut back to the end of its last whole
//!   packet ([`Repair::Trimmed`]). Bytes that are no prefix of a packet of the trace
//!   (bad magic or sizes followed by data, another trace's uuid) are no torn tail:
//!   the file is left as it is and reported ([`RecoverError::NotATornTail`]), so
//!   that recovery never cuts away whole packets;
//! - a `.metadata.<tag>` temporary of a replacement that never got renamed: removed
//!   ([`Repair::RemovedTemporary`]); the `metadata` beside it is the version every
//!   packet on disk was written with, since a packet is written only once its
//!   metadata is in place;
//! - a `metadata` that does not parse (torn by a daemon of an older version, which
//!   wrote the first one in place): replaced with the newest complete temporary
//!   beside it if there is one ([`Repair::MetadataRestored`]), else, if no stream
//!   holds a byte (it was torn before the first packet, e.g. on a full disk),
//!   removed with the empty stream files ([`Repair::RemovedEmptyTrace`]); with
//!   packets and no complete metadata the trace cannot be read and that is an error.
//!
//! - an index file (`index/<stream>.idx`) with entries past its stream's whole
//!   packets (the stream was cut, or the daemon died between the two writes): cut
//!   back to the entries of the packets its stream keeps ([`Repair::Trimmed`]).
//!
//! Nothing else is touched: a packet's events are not decoded (a whole packet is
//! what the writer wrote). Symbolic links are never followed, so a root daemon
//! recovering an output directory cannot be made to truncate another file.
//! `ustrace recover DIR` runs it, and the daemon runs it at start-up on the output
//! directories it finds (see `daemon::recover_outputs`).

use std::fmt;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Read};
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use crate::ctf::packet::{PACKET_HEADER_SIZE, PacketHeader};
use crate::trace::index;
use crate::trace::layout::METADATA_FILE;
use crate::trace::metadata;

/// One change [`recover`] made.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Repair {
    /// A stream file cut back to its last whole packet.
    Trimmed {
        /// The stream file.
        path: PathBuf,
        /// Its length before, in bytes.
        from: u64,
        /// Its length now: the end of its last whole packet.
        to: u64,
        /// Why the bytes after `to` are no whole packet.
        reason: String,
    },
    /// The temporary of a metadata replacement that never completed, removed.
    RemovedTemporary {
        /// The file removed.
        path: PathBuf,
    },
    /// A torn `metadata` replaced with the newest complete version beside it.
    MetadataRestored {
        /// The metadata file.
        path: PathBuf,
        /// The temporary it was restored from.
        from: PathBuf,
    },
    /// A trace whose metadata never became complete and whose streams hold no
    /// byte: its metadata and empty stream files removed.
    RemovedEmptyTrace {
        /// The trace directory.
        dir: PathBuf,
        /// Why its metadata was unreadable.
        reason: String,
    },
}

impl fmt::Display for Repair {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Repair::Trimmed {
                path,
                from,
                to,
                reason,
            } => write!(
                f,
                "{}: trimmed {} bytes ({from} -> {to}): {reason}",
                path.display(),
                from - to
            ),
            Repair::RemovedTemporary { path } => {
                write!(
                    f,
                    "{}: removed an unfinished metadata version",
                    path.display()
                )
            }
            Repair::MetadataRestored { path, from } => write!(
                f,
                "{}: torn, restored from {}",
                path.display(),
                from.display()
            ),
            Repair::RemovedEmptyTrace { dir, reason } => write!(
                f,
                "{}: removed a metadata that never became complete ({reason}); the trace \
                 held no packet",
                dir.display()
            ),
        }
    }
}

/// Why a trace could not be recovered.
#[derive(Debug, thiserror::Error)]
pub enum RecoverError {
    /// A file or directory could not be read, cut or removed.
    #[error("{path}: {source}")]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// The cause.
        source: io::Error,
    },
    /// A stream file holds bytes that are no torn packet of its trace (another
    /// trace's packets, garbage): not what a crash leaves, so it is left alone.
    #[error("{path}: byte {offset}: {reason}; not a torn tail, left as it is")]
    NotATornTail {
        /// The stream file.
        path: PathBuf,
        /// Where the bytes start.
        offset: u64,
        /// What they are.
        reason: String,
    },
    /// The metadata is torn, no complete version is left, and streams hold packets
    /// that only it could describe.
    #[error("{path}: torn metadata ({reason}) and no complete version left beside it")]
    TornMetadata {
        /// The metadata file.
        path: PathBuf,
        /// Why it does not parse.
        reason: String,
    },
}

/// Attaches `path` to an I/O error.
fn at(path: &Path) -> impl FnOnce(io::Error) -> RecoverError + '_ {
    move |source| RecoverError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// What [`recover`] did to a directory.
#[derive(Debug, Default)]
pub struct Recovery {
    /// The changes, trace by trace; none when every trace was whole already.
    pub repairs: Vec<Repair>,
    /// The traces (or directories) it could not recover; the others are recovered
    /// all the same.
    pub errors: Vec<RecoverError>,
}

/// Recovers every trace under `dir` (itself included).
pub fn recover(dir: &Path) -> Recovery {
    let mut recovery = Recovery::default();
    let mut dirs = vec![dir.to_path_buf()];
    while let Some(dir) = dirs.pop() {
        match list(&dir, &mut dirs) {
            Ok(mut files) if files.iter().any(|f| f == METADATA_FILE || is_temporary(f)) => {
                files.sort();
                if let Err(e) = recover_trace(&dir, &files, &mut recovery.repairs) {
                    recovery.errors.push(e);
                }
            }
            Ok(_) => {}
            Err(e) => recovery.errors.push(e),
        }
    }
    recovery
}

/// The names of the regular files in `dir`; its sub-directories go to `dirs`.
/// Symbolic links are neither.
fn list(dir: &Path, dirs: &mut Vec<PathBuf>) -> Result<Vec<String>, RecoverError> {
    let mut files = Vec::new();
    for entry in fs::read_dir(dir).map_err(at(dir))? {
        let entry = entry.map_err(at(dir))?;
        let kind = entry.file_type().map_err(at(&entry.path()))?;
        if kind.is_dir() {
            dirs.push(entry.path());
        } else if kind.is_file() {
            files.push(entry.file_name().to_string_lossy().into_owned());
        }
    }
    Ok(files)
}

/// `.metadata.<tag>`: the temporary a metadata replacement writes before its rename.
fn is_temporary(name: &str) -> bool {
    name.starts_with(&format!(".{METADATA_FILE}."))
}

/// The uuid of the metadata at `path`, or why it cannot be read as one (a
/// symbolic link is not followed).
fn metadata_uuid(path: &Path) -> Result<[u8; 16], String> {
    let mut bytes = Vec::new();
    OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW)
        .open(path)
        .and_then(|mut file| file.read_to_end(&mut bytes))
        .map_err(|e| e.to_string())?;
    let text = std::str::from_utf8(&bytes).map_err(|e| e.to_string())?;
    metadata::parse(text)
        .map(|m| m.uuid)
        .map_err(|e| e.to_string())
}

/// Recovers the trace in `dir`, whose regular files are `files` (sorted).
fn recover_trace(
    dir: &Path,
    files: &[String],
    repairs: &mut Vec<Repair>,
) -> Result<(), RecoverError> {
    let path = dir.join(METADATA_FILE);
    let mut uuid = metadata_uuid(&path);
    let temporaries: Vec<PathBuf> = files
        .iter()
        .filter(|f| is_temporary(f))
        .map(|f| dir.join(f))
        .collect();
    if uuid.is_err() {
        // The newest: the one a reader would have seen had its rename happened.
        let mut complete: Vec<(std::time::SystemTime, &PathBuf)> = temporaries
            .iter()
            .filter(|t| metadata_uuid(t).is_ok())
            .filter_map(|t| Some((fs::metadata(t).ok()?.modified().ok()?, t)))
            .collect();
        complete.sort();
        if let Some((_, from)) = complete.last() {
            fs::rename(from, &path).map_err(at(from))?;
            repairs.push(Repair::MetadataRestored {
                path: path.clone(),
                from: from.to_path_buf(),
            });
            uuid = metadata_uuid(&path);
        }
    }
    for temporary in &temporaries {
        match fs::remove_file(temporary) {
            Ok(()) => repairs.push(Repair::RemovedTemporary {
                path: temporary.clone(),
            }),
            // The one restored above.
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(at(temporary)(e)),
        }
    }
    let streams: Vec<PathBuf> = files
        .iter()
        .filter(|f| *f != METADATA_FILE && !f.starts_with('.'))
        .map(|f| dir.join(f))
        .collect();
    let uuid = match uuid {
        Ok(uuid) => uuid,
        Err(reason) => return remove_empty_trace(dir, &path, &streams, reason, repairs),
    };
    for stream in &streams {
        if let Some(repair) = trim_stream(stream, &uuid)? {
            repairs.push(repair);
        }
        if let Some(repair) = trim_index(dir, stream)? {
            repairs.push(repair);
        }
    }
    Ok(())
}

/// Rewrites the index file of `stream` (in `dir/index`, if there is one) when it
/// is not exactly the entries of the whole packets the stream keeps: an index stays
/// in step with its stream.
fn trim_index(dir: &Path, stream: &Path) -> Result<Option<Repair>, RecoverError> {
    let Some(name) = stream.file_name() else {
        return Ok(None);
    };
    let path = dir
        .join(index::INDEX_DIR)
        .join(index::index_file_name(&name.to_string_lossy()));
    let mut file = match OpenOptions::new()
        .read(true)
        .write(true)
        .custom_flags(libc::O_NOFOLLOW)
        .open(&path)
    {
        Ok(file) => file,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(at(&path)(e)),
    };
    let mut bytes = Vec::new();
    file.read_to_end(&mut bytes).map_err(at(&path))?;
    let entries = index::stream_entries(stream).map_err(at(stream))?;
    let expected = index::encode_file(&entries);
    if bytes == expected {
        return Ok(None);
    }
    file.set_len(0).map_err(at(&path))?;
    file.write_all_at(&expected, 0).map_err(at(&path))?;
    Ok(Some(Repair::Trimmed {
        path,
        from: bytes.len() as u64,
        to: expected.len() as u64,
        reason: format!(
            "index out of step with its stream: rewritten for its {} whole packets",
            entries.len()
        ),
    }))
}

/// Removes the unreadable `metadata` of a trace whose `streams` are all empty;
/// refuses when one holds a byte.
fn remove_empty_trace(
    dir: &Path,
    metadata: &Path,
    streams: &[PathBuf],
    reason: String,
    repairs: &mut Vec<Repair>,
) -> Result<(), RecoverError> {
    for stream in streams {
        if fs::symlink_metadata(stream).map_err(at(stream))?.len() > 0 {
            return Err(RecoverError::TornMetadata {
                path: metadata.to_path_buf(),
                reason,
            });
        }
    }
    for file in streams.iter().map(PathBuf::as_path).chain([metadata]) {
        match fs::remove_file(file) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(at(file)(e)),
            _ => {}
        }
    }
    repairs.push(Repair::RemovedEmptyTrace {
        dir: dir.to_path_buf(),
        reason,
    });
    Ok(())
}

/// Cuts the stream file at `path` after its last whole packet of trace `uuid`;
/// `None` if it ends with one already.
fn trim_stream(path: &Path, uuid: &[u8; 16]) -> Result<Option<Repair>, RecoverError> {
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .custom_flags(libc::O_NOFOLLOW)
        .open(path)
        .map_err(at(path))?;
    let len = file.metadata().map_err(at(path))?.len();
    match tail(&file, len, uuid).map_err(at(path))? {
        Tail::Whole => Ok(None),
        Tail::Torn { end, reason } => {
            file.set_len(end).map_err(at(path))?;
            Ok(Some(Repair::Trimmed {
                path: path.to_path_buf(),
                from: len,
                to: end,
                reason,
            }))
        }
        Tail::Foreign { offset, reason } => Err(RecoverError::NotATornTail {
            path: path.to_path_buf(),
            offset,
            reason,
        }),
    }
}

/// How a stream file ends.
enum Tail {
    /// With a whole packet.
    Whole,
    /// With what a crash leaves: a prefix of a packet (or zeros, where the file
    /// system extended the file before a crash), from `end` on.
    Torn {
        /// The end of the last whole packet.
        end: u64,
        /// What follows it.
        reason: String,
    },
    /// With bytes that are no prefix of a packet of this trace: not what a crash
    /// leaves, so left alone rather than cut with every packet after them.
    Foreign {
        /// Where they start.
        offset: u64,
        /// What they are.
        reason: String,
    },
}

/// Walks the packet headers of a stream file of `len` bytes.
fn tail(file: &File, len: u64, uuid: &[u8; 16]) -> io::Result<Tail> {
    let mut header = [0u8; PACKET_HEADER_SIZE];
    let mut offset = 0;
    while offset < len {
        let left = len - offset;
        if left < PACKET_HEADER_SIZE as u64 {
            return Ok(Tail::Torn {
                end: offset,
                reason: format!("a packet header cut short at {left} bytes"),
            });
        }
        file.read_exact_at(&mut header, offset)?;
        let packet = match PacketHeader::read(&header) {
            Ok(packet) if packet.open.uuid == *uuid => packet,
            Ok(_) => {
                return Ok(Tail::Foreign {
                    offset,
                    reason: "a packet of another trace".to_string(),
                });
            }
            Err(_) if zeros_from(file, offset, len)? => {
                return Ok(Tail::Torn {
                    end: offset,
                    reason: format!("{left} zero bytes"),
                });
            }
            Err(e) => {
                return Ok(Tail::Foreign {
                    offset,
                    reason: e.to_string(),
                });
            }
        };
        let size = packet.open.packet_size;
        if size > left {
            return Ok(Tail::Torn {
                end: offset,
                reason: format!("a packet of {size} bytes cut short at {left}"),
            });
        }
        offset += size;
    }
    Ok(Tail::Whole)
}

/// Whether every byte of `file` from `offset` to `len` is zero.
fn zeros_from(file: &File, mut offset: u64, len: u64) -> io::Result<bool> {
    let mut chunk = vec![0u8; 64 * 1024];
    while offset < len {
        let n = chunk.len().min((len - offset) as usize);
        file.read_exact_at(&mut chunk[..n], offset)?;
        if chunk[..n].iter().any(|&b| b != 0) {
            return Ok(false);
        }
        offset += n as u64;
    }
    Ok(true)
}
