//! Spreading the per-PID sub-trace directories over the file system.
//!
//! Thousands of short-lived per-PID apps each get a directory under
//! `<output>/ust/pid/`. ext4's Orlov allocator puts every new subdirectory near
//! its parent, so they all compete for the inodes of one block group; and when
//! that group holds many recently deleted inodes (an earlier trace removed,
//! ext4 without a journal skips them for up to five minutes), each new inode
//! first walks past all of them: milliseconds per app, measured. Marking the
//! parent a "top of directory hierarchies" (`chattr +T`, `FS_TOPDIR_FL`) makes
//! ext4 place each subdirectory in the least used group instead, as it does for
//! directories under `/`. That choice scans every group's counters, about 60 us
//! per directory on a 250 GB disk, against up to 1.7 ms per app for the walk it
//! avoids (docs/performance.md). File systems without the flag ignore the hint.

use std::io;
use std::os::fd::AsRawFd;

use crate::trace::layout::pid_traces_below;
use crate::trace::writer::{OutputDir, open_below};

/// `FS_TOPDIR_FL` from `<linux/fs.h>`.
const FS_TOPDIR_FL: libc::c_int = 0x0002_0000;

// `FS_IOC_GETFLAGS` / `FS_IOC_SETFLAGS` are numbered as taking a `long` but the
// kernel reads and writes an `int` through the pointer (linux/fs.h says so), hence
// the "bad" forms: the request code of a `long`, an `int` argument.
nix::ioctl_read_bad!(
    /// `FS_IOC_GETFLAGS`: reads a directory's inode flags.
    get_flags,
    nix::request_code_read!(b'f', 1, std::mem::size_of::<libc::c_long>()),
    libc::c_int
);
nix::ioctl_write_ptr_bad!(
    /// `FS_IOC_SETFLAGS`: sets them (here, to add [`FS_TOPDIR_FL`]).
    set_flags,
    nix::request_code_write!(b'f', 2, std::mem::size_of::<libc::c_long>()),
    libc::c_int
);

/// Creates `<output>/ust/pid` (as [`open_below`] does: never through a link, never
/// in a tree the daemon did not make) and asks the file system to spread its
/// subdirectories; `Ok(false)` when it does not take the hint, an error only when
/// the directory cannot be made or opened.
pub fn create_spread_dir(output: &OutputDir) -> io::Result<bool> {
    let dir = open_below(output, &pid_traces_below(), &mut false)?;
    let fd = dir.as_raw_fd();
    let mut flags: libc::c_int = 0;
    // SAFETY: `fd` is the open directory `dir`, alive for both calls; the two
    // ioctls read or write one int through the pointer, which points at `flags`, a
    // live, aligned c_int.
    let result = unsafe { get_flags(fd, &mut flags) }.and_then(|_| {
        if flags & FS_TOPDIR_FL != 0 {
            return Ok(0);
        }
        flags |= FS_TOPDIR_FL;
        // SAFETY: as above.
        unsafe { set_flags(fd, &flags) }
    });
    // The hint is best effort: a file system without flags (ENOTTY), without this
    // one (EOPNOTSUPP, EINVAL) or refusing it (EPERM on some overlays) just does
    // without.
    Ok(result.is_ok())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::trace::layout::pid_traces_dir;
    use std::fs::{self, File};

    #[test]
    fn the_directory_is_created_and_marked_where_the_file_system_can() {
        let root = tempfile::tempdir().unwrap();
        let dir = pid_traces_dir(root.path());
        let output = OutputDir::new(root.path().to_path_buf());
        let marked = create_spread_dir(&output).unwrap();
        assert!(dir.is_dir());
        let again = create_spread_dir(&output).unwrap();
        assert_eq!(marked, again, "marking twice gives the same answer");
        if marked {
            let mut flags: libc::c_int = 0;
            let file = File::open(&dir).unwrap();
            // SAFETY: as in `create_spread_dir`.
            unsafe { get_flags(file.as_raw_fd(), &mut flags) }.unwrap();
            assert_ne!(flags & FS_TOPDIR_FL, 0);
        }
    }

    #[test]
    fn a_directory_that_cannot_be_created_is_an_error() {
        let root = tempfile::tempdir().unwrap();
        let file = root.path().join("file");
        fs::write(&file, "x").unwrap();
        assert!(create_spread_dir(&OutputDir::new(file.clone())).is_err());
        assert!(create_spread_dir(&OutputDir::new(file.join("out"))).is_err());
    }
}
