//! POSIX access control lists on trace directories, so that the user whose apps a
//! trace recorded can read it and no other user can (see `docs/trace-layout.md`,
//! "Who may read a trace").
//!
//! A trace stays the daemon's (mode 0750/0640): the traced user is added as a named
//! entry instead of becoming an owner, so that nothing the daemon writes into is
//! ever owned by a user (who could plant links or files there). The lists are the
//! kernel's xattr format (`system.posix_acl_access` / `_default`, as in
//! `linux/posix_acl_xattr.h`), written on the directory's fd: never through a path.

use std::io;
use std::os::fd::{AsRawFd, BorrowedFd};

use nix::sys::stat::fstat;

/// `ACL_USER_OBJ`: the owner.
const USER_OBJ: u16 = 0x01;
/// `ACL_USER`: a named user.
const USER: u16 = 0x02;
/// `ACL_GROUP_OBJ`: the owning group.
const GROUP_OBJ: u16 = 0x04;
/// `ACL_GROUP`: a named group.
const GROUP: u16 = 0x08;
/// `ACL_MASK`: the most any group-class entry grants.
const MASK: u16 = 0x10;
/// `ACL_OTHER`: everyone else.
const OTHER: u16 = 0x20;
/// The id of entries that name nobody.
const UNDEFINED_ID: u32 = u32::MAX;
/// `POSIX_ACL_XATTR_VERSION`.
const VERSION: u32 = 2;

/// Read permission.
pub const READ: u16 = 4;
/// Search (directories) permission.
pub const EXECUTE: u16 = 1;

/// The xattr of the access list.
const ACCESS: &std::ffi::CStr = c"system.posix_acl_access";
/// The xattr of the list new files in a directory inherit.
const DEFAULT: &std::ffi::CStr = c"system.posix_acl_default";

/// One entry: tag, permission bits, id.
type Entry = (u16, u16, u32);

/// Adds `perm` for user `uid` to the access list of `fd` (keeping every other
/// entry; the list is made from the mode if there is none). `inherited`, for a
/// directory, also gives `uid` `inherited` on every file and directory made in it
/// afterwards, within what each one's creation mode grants its group (a file
/// made 0640 gets read, however much is inherited).
pub fn grant_user(fd: BorrowedFd, uid: u32, perm: u16, inherited: Option<u16>) -> io::Result<()> {
    let mode = fstat(fd)?.st_mode;
    let access = match get(fd, ACCESS)? {
        Some(entries) => entries,
        None => from_mode(mode),
    };
    set(fd, ACCESS, &with_user(access, uid, perm))?;
    if let Some(perm) = inherited {
        set(fd, DEFAULT, &with_user(from_mode(mode), uid, perm))?;
    }
    Ok(())
}

/// The three entries a list without named entries has.
fn from_mode(mode: u32) -> Vec<Entry> {
    let bits = |shift: u32| ((mode >> shift) & 7) as u16;
    vec![
        (USER_OBJ, bits(6), UNDEFINED_ID),
        (GROUP_OBJ, bits(3), UNDEFINED_ID),
        (OTHER, bits(0), UNDEFINED_ID),
    ]
}

/// `entries` with `uid` granted `perm` (added to what it had) and the mask
/// recomputed as the union of the group-class entries, sorted as the kernel
/// requires.
fn with_user(mut entries: Vec<Entry>, uid: u32, perm: u16) -> Vec<Entry> {
    match entries.iter_mut().find(|e| e.0 == USER && e.2 == uid) {
        Some(entry) => entry.1 |= perm,
        None => entries.push((USER, perm, uid)),
    }
    entries.retain(|e| e.0 != MASK);
    let mask = entries
        .iter()
        .filter(|e| matches!(e.0, USER | GROUP_OBJ | GROUP))
        .fold(0, |m, e| m | e.1);
    entries.push((MASK, mask, UNDEFINED_ID));
    entries.sort_by_key(|e| (e.0, e.2));
    entries
}

/// The list in xattr `name` of `fd`, or `None` if it has none.
fn get(fd: BorrowedFd, name: &std::ffi::CStr) -> io::Result<Option<Vec<Entry>>> {
    let mut buf = [0u8; 4 + 8 * 64];
    // SAFETY: `name` is NUL-terminated, `buf` is writable for its whole length and
    // the kernel writes at most that many bytes.
    let len = unsafe {
        libc::fgetxattr(
            fd.as_raw_fd(),
            name.as_ptr(),
            buf.as_mut_ptr().cast(),
            buf.len(),
        )
    };
    if len < 0 {
        let e = io::Error::last_os_error();
        return match e.raw_os_error() {
            Some(libc::ENODATA) => Ok(None),
            _ => Err(e),
        };
    }
    let bytes = &buf[..len as usize];
    if bytes.len() < 4 || u32::from_le_bytes([bytes[0], bytes[1], bytes[2], bytes[3]]) != VERSION {
        return Err(io::Error::other("unknown ACL format"));
    }
    Ok(Some(
        bytes[4..]
            .chunks_exact(8)
            .map(|c| {
                (
                    u16::from_le_bytes([c[0], c[1]]),
                    u16::from_le_bytes([c[2], c[3]]),
                    u32::from_le_bytes([c[4], c[5], c[6], c[7]]),
                )
            })
            .collect(),
    ))
}

/// Writes `entries` as xattr `name` of `fd`.
fn set(fd: BorrowedFd, name: &std::ffi::CStr, entries: &[Entry]) -> io::Result<()> {
    let mut bytes = VERSION.to_le_bytes().to_vec();
    for (tag, perm, id) in entries {
        bytes.extend(tag.to_le_bytes());
        bytes.extend(perm.to_le_bytes());
        bytes.extend(id.to_le_bytes());
    }
    // SAFETY: `name` is NUL-terminated and `bytes` readable for its length.
    let done = unsafe {
        libc::fsetxattr(
            fd.as_raw_fd(),
            name.as_ptr(),
            bytes.as_ptr().cast(),
            bytes.len(),
            0,
        )
    };
    if done != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::fd::AsFd;
    use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};

    #[test]
    fn a_named_user_is_added_merged_and_masked_and_files_inherit_it() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o750)).unwrap();
        let fd = std::fs::File::open(dir.path()).unwrap();
        grant_user(fd.as_fd(), 4242, EXECUTE, None).unwrap();
        grant_user(fd.as_fd(), 4242, READ, Some(READ | EXECUTE)).unwrap();
        let access = get(fd.as_fd(), ACCESS).unwrap().unwrap();
        assert_eq!(
            access,
            vec![
                (USER_OBJ, 7, UNDEFINED_ID),
                (USER, 5, 4242),
                (GROUP_OBJ, 5, UNDEFINED_ID),
                (MASK, 5, UNDEFINED_ID),
                (OTHER, 0, UNDEFINED_ID),
            ]
        );
        // A 0640 file: the user may read it, nothing more (the mask).
        let file = dir.path().join("f");
        std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o640)
            .open(&file)
            .unwrap();
        let file = std::fs::File::open(&file).unwrap();
        let inherited = get(file.as_fd(), ACCESS).unwrap().unwrap();
        assert!(inherited.iter().any(|e| e.0 == USER && e.2 == 4242));
        assert!(inherited.contains(&(MASK, READ, UNDEFINED_ID)));
        assert!(inherited.iter().any(|e| e.0 == OTHER && e.1 == 0));
        // A subdirectory: the user may search and read it.
        let sub = dir.path().join("d");
        std::fs::DirBuilder::new().mode(0o750).create(&sub).unwrap();
        let sub = std::fs::File::open(&sub).unwrap();
        let inherited = get(sub.as_fd(), ACCESS).unwrap().unwrap();
        assert!(inherited.contains(&(USER, READ | EXECUTE, 4242)));
        assert!(inherited.contains(&(MASK, READ | EXECUTE, UNDEFINED_ID)));
    }
}
