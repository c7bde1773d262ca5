//! Who may use `control.sock`: root, the daemon's own user, and the members of the
//! control group (`tracing` by default, as LTTng's).
//!
//! Two checks agree. The file system's: the socket is 0660 owner:group (0600 with no
//! group), so `connect()` of anyone else fails with EACCES, which the CLI explains
//! ([`crate::control`]). And the daemon's, at accept: the peer's uid and gid come
//! from SO_PEERCRED; its supplementary groups from the `Groups:` line of
//! `/proc/<pid>/status`, read only after checking that the same file still shows
//! the peer's uid (a pid reused by another user's process is refused, never
//! trusted). These are the groups the kernel checked at `connect()`: a user added
//! to the group needs a new login, as for any group. A refused peer gets an error
//! reply saying why.

use nix::unistd::{Gid, Group, Uid};
use std::io;

/// Mode of `control.sock` without a control group: the daemon's user only.
pub const PRIVATE_MODE: u32 = 0o600;

/// Mode of `control.sock` with a control group.
pub const GROUP_MODE: u32 = 0o660;

/// Why the control group cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum AccessError {
    /// `--group NAME` names no group.
    #[error("--group {0}: no such group (create it with `groupadd --system {0}`)")]
    NoSuchGroup(String),
    /// The group database could not be read.
    #[error("looking up group {name}: {source}")]
    Lookup {
        /// The group.
        name: String,
        /// The cause.
        source: io::Error,
    },
}

/// A group allowed to control the daemon.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ControlGroup {
    /// Its name, for messages.
    pub name: String,
    /// Its id, set on `control.sock` and checked at accept.
    pub gid: Gid,
}

/// Who may control the daemon.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ControlAccess {
    /// The control group, if any.
    pub group: Option<ControlGroup>,
}

impl ControlAccess {
    /// From `--group`: a name must exist; an empty one means no group; without the
    /// flag, [`super::DEFAULT_GROUP`] when the daemon runs as root and the group
    /// exists (a user's own daemon serves that user only).
    pub fn resolve(flag: Option<&str>) -> Result<ControlAccess, AccessError> {
        let lookup = |name: &str| {
            Group::from_name(name).map_err(|e| AccessError::Lookup {
                name: name.to_owned(),
                source: e.into(),
            })
        };
        let group = match flag {
            Some("") => None,
            Some(name) => Some(
                lookup(name)?
                    .map(|g| g.gid)
                    .ok_or_else(|| AccessError::NoSuchGroup(name.to_owned()))
                    .map(|gid| (name, gid))?,
            ),
            None if Uid::effective().is_root() => {
                lookup(super::DEFAULT_GROUP)?.map(|g| (super::DEFAULT_GROUP, g.gid))
            }
            None => None,
        };
        Ok(ControlAccess {
            group: group.map(|(name, gid)| ControlGroup {
                name: name.to_owned(),
                gid,
            }),
        })
    }

    /// The mode `control.sock` is created with.
    pub fn socket_mode(&self) -> u32 {
        if self.group.is_some() {
            GROUP_MODE
        } else {
            PRIVATE_MODE
        }
    }

    /// Whether the peer `uid`/`gid` (from SO_PEERCRED) of process `pid` may send
    /// control requests; `Err` says why not, for its reply and the log.
    pub fn check(&self, uid: u32, gid: u32, pid: Option<i32>) -> Result<(), String> {
        let me = Uid::effective().as_raw();
        if uid == 0 || uid == me {
            return Ok(());
        }
        let Some(group) = &self.group else {
            return Err(format!(
                "uid {uid} may not control this daemon: only root and uid {me} may (it was started without a control group)"
            ));
        };
        let g = group.gid.as_raw();
        if gid == g || pid.is_some_and(|pid| supplementary_groups(pid, uid).contains(&g)) {
            return Ok(());
        }
        Err(format!(
            "uid {uid} is not a member of group {} (gid {g}): only root, uid {me} and its members may control this daemon (add the user with `usermod -aG {} USER`, then log in again)",
            group.name, group.name
        ))
    }
}

/// The supplementary groups of process `pid` as `/proc/<pid>/status` lists them,
/// or none if that file does not show `uid` as the process's real and effective
/// uid (the pid was reused, or the process changed users since it connected).
pub fn supplementary_groups(pid: i32, uid: u32) -> Vec<u32> {
    let Ok(status) = std::fs::read_to_string(format!("/proc/{pid}/status")) else {
        return Vec::new();
    };
    let field = |key: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(key))
            .map(|rest| {
                rest.split_whitespace()
                    .filter_map(|n| n.parse::<u32>().ok())
                    .collect::<Vec<_>>()
            })
            .unwrap_or_default()
    };
    let uids = field("Uid:");
    if uids.len() < 2 || uids[0] != uid || uids[1] != uid {
        return Vec::new();
    }
    field("Groups:")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn this_process_groups_are_read_and_another_uid_gets_none() {
        let me = std::process::id() as i32;
        let uid = Uid::current().as_raw();
        let groups: Vec<u32> = nix::unistd::getgroups()
            .unwrap()
            .iter()
            .map(|g| g.as_raw())
            .collect();
        assert_eq!(supplementary_groups(me, uid), groups);
        assert!(supplementary_groups(me, uid + 1).is_empty());
    }

    #[test]
    fn without_a_group_only_root_and_the_daemon_user_pass() {
        let access = ControlAccess::default();
        assert_eq!(access.socket_mode(), PRIVATE_MODE);
        assert!(access.check(0, 0, None).is_ok());
        assert!(access.check(Uid::effective().as_raw(), 0, None).is_ok());
        let e = access.check(4242, 4242, None).unwrap_err();
        assert!(e.contains("uid 4242"), "{e}");
    }

    #[test]
    fn a_primary_gid_of_the_group_passes_and_a_stranger_is_told_the_group() {
        let access = ControlAccess {
            group: Some(ControlGroup {
                name: "tracing".into(),
                gid: Gid::from_raw(4300),
            }),
        };
        assert_eq!(access.socket_mode(), GROUP_MODE);
        assert!(access.check(4242, 4300, None).is_ok());
        let e = access.check(4242, 4242, None).unwrap_err();
        assert!(
            e.contains("not a member of group tracing (gid 4300)"),
            "{e}"
        );
    }

    #[test]
    fn an_unknown_group_is_an_error_and_an_empty_name_means_none() {
        let e = ControlAccess::resolve(Some("no-such-group-ustrace")).unwrap_err();
        assert!(e.to_string().contains("no-such-group-ustrace"), "{e}");
        assert_eq!(
            ControlAccess::resolve(Some("")).unwrap(),
            ControlAccess::default()
        );
    }
}
