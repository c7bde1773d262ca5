//! Writing a trace directory: the metadata file and packets appended to stream files.
//!
//! The daemon's writers and the tests use these; a packet is written as it is (a
//! sub-buffer is already a whole CTF packet).

use std::fs::{self, DirBuilder, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::Path;

use crate::ctf::layout::{METADATA_FILE, stream_file_name};
use crate::ctf::registry::Registry;

/// Mode of trace directories: a trace holds what every traced user's apps
/// recorded, so it is for the daemon's user and group, not for every local user.
pub const TRACE_DIR_MODE: u32 = 0o750;

/// Mode of trace files, for the same reason.
pub const TRACE_FILE_MODE: u32 = 0o640;

/// Creates `dir` and its missing parents with [`TRACE_DIR_MODE`].
pub fn create_trace_dir(dir: &Path) -> io::Result<()> {
    DirBuilder::new()
        .recursive(true)
        .mode(TRACE_DIR_MODE)
        .create(dir)
}

/// Options that open a trace file for writing, created with [`TRACE_FILE_MODE`].
pub fn trace_file() -> OpenOptions {
    let mut options = OpenOptions::new();
    options.write(true).mode(TRACE_FILE_MODE);
    options
}

/// Writes `registry`'s metadata to `dir/metadata` (see [`store_metadata`]).
pub fn write_metadata(dir: &Path, registry: &Registry) -> io::Result<()> {
    store_metadata(dir, "tmp", &registry.metadata())
}

/// Writes `tsdl`, whole, to `dir/metadata`, creating `dir` if needed.
///
/// A trace's first metadata is written to an unnamed file and then linked as
/// `metadata` (see `create_complete`): it is visible only once complete, and one
/// file is created instead of two plus a rename, which matters when thousands of
/// short-lived per-PID apps each get a trace (inode allocation is the costly part
/// of their teardown on ext4). A metadata that exists already is replaced
/// atomically, so a reader never sees half of a newer version: through
/// `.metadata.<tag>`, a name no other writer of the same trace uses at the same
/// time.
pub fn store_metadata(dir: &Path, tag: &str, tsdl: &str) -> io::Result<()> {
    let path = dir.join(METADATA_FILE);
    let create = || create_complete(dir, &path, tsdl.as_bytes());
    let created = match create() {
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            create_trace_dir(dir)?;
            create()
        }
        other => other,
    };
    match created {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
            let tmp = dir.join(format!(".{METADATA_FILE}.{tag}"));
            trace_file()
                .create(true)
                .truncate(true)
                .open(&tmp)?
                .write_all(tsdl.as_bytes())?;
            fs::rename(&tmp, path)
        }
        Err(e) => Err(e),
    }
}

/// Creates `path` (in `dir`) holding `bytes`, complete before it has a name: the
/// bytes go to an unnamed `O_TMPFILE` inode that is then linked as `path`, so a
/// crash or a full disk never leaves a visible, partial or empty file (babeltrace2
/// rejects a trace whose metadata is torn). `AlreadyExists` when `path` exists, as
/// with `O_EXCL`. Where `O_TMPFILE` is not supported, the file is created with
/// `O_EXCL` and removed again if its write fails.
fn create_complete(dir: &Path, path: &Path, bytes: &[u8]) -> io::Result<()> {
    use std::os::fd::AsRawFd;
    let unnamed = trace_file().custom_flags(libc::O_TMPFILE).open(dir);
    let mut file = match unnamed {
        Err(e) if matches!(e.raw_os_error(), Some(libc::EOPNOTSUPP | libc::EISDIR)) => {
            let mut file = trace_file().create_new(true).open(path)?;
            return file.write_all(bytes).inspect_err(|_| {
                let _ = fs::remove_file(path);
            });
        }
        other => other?,
    };
    file.write_all(bytes)?;
    let from = std::ffi::CString::new(format!("/proc/self/fd/{}", file.as_raw_fd()))
        .expect("no NUL in a number");
    let to = std::ffi::CString::new(path.as_os_str().as_encoded_bytes())
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "NUL in a trace path"))?;
    // SAFETY: both arguments are NUL-terminated strings that outlive the call.
    let linked = unsafe {
        libc::linkat(
            libc::AT_FDCWD,
            from.as_ptr(),
            libc::AT_FDCWD,
            to.as_ptr(),
            libc::AT_SYMLINK_FOLLOW,
        )
    };
    if linked == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// Appends one packet to the stream file of `channel` on `cpu` in `dir`.
pub fn append_packet(dir: &Path, channel: &str, cpu: u32, packet: &[u8]) -> io::Result<()> {
    create_trace_dir(dir)?;
    trace_file()
        .create(true)
        .append(true)
        .open(dir.join(stream_file_name(channel, cpu)))?
        .write_all(packet)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The names in `dir`, sorted.
    fn names(dir: &Path) -> Vec<String> {
        let mut names: Vec<String> = fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        names
    }

    #[test]
    fn the_first_metadata_is_created_in_place_and_later_ones_replace_it() {
        let root = tempfile::tempdir().unwrap();
        let dir = root.path().join("ust/pid/app-1-20261127-104600");
        store_metadata(&dir, "chan_0", "/* CTF 1.8 */ v1").unwrap();
        assert_eq!(
            fs::read_to_string(dir.join(METADATA_FILE)).unwrap(),
            "/* CTF 1.8 */ v1"
        );
        store_metadata(&dir, "chan_0", "/* CTF 1.8 */ v2, longer").unwrap();
        assert_eq!(
            fs::read_to_string(dir.join(METADATA_FILE)).unwrap(),
            "/* CTF 1.8 */ v2, longer"
        );
        assert_eq!(
            names(&dir),
            [METADATA_FILE],
            "no temporary file left behind"
        );
    }

    #[test]
    fn a_metadata_that_cannot_be_stored_is_an_error() {
        let root = tempfile::tempdir().unwrap();
        let not_a_dir = root.path().join("file");
        fs::write(&not_a_dir, "x").unwrap();
        assert!(store_metadata(&not_a_dir.join("trace"), "t", "tsdl").is_err());
        assert!(store_metadata(&not_a_dir, "t", "tsdl").is_err());
    }
}
