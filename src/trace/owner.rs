//! Who a trace and its buffers belong to: one [`Owner`] names both.
//!
//! The BufferFactory keys its BufferSets and sub-traces by owner (with the session
//! and channel), and the trace says who it belongs to in its metadata `env` and its
//! directory name. Both come from the same value: a uid for per-UID buffers, or an
//! app connection with the facts its trace records about the process for per-PID
//! ones. The key is the uid or the [connection](Owner::connection); the facts
//! follow from the connection (it registers once, as one process), so two owners
//! of one connection are always equal.

use crate::actors::app_connection::ConnectionId;
use crate::ctf::names;
use crate::protocol::messages::Buffering;
use std::time::SystemTime;

/// Who a trace and its buffers belong to.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Owner {
    /// Per-UID buffers, shared by every app of this user.
    Uid(u32),
    /// Per-PID buffers of one app connection (its process, for as long as it lives;
    /// a later process with the same pid is another connection).
    Pid {
        /// The app's connection: what tells this owner from a later process that
        /// reuses its pid, name and second.
        connection: ConnectionId,
        /// What the trace says about the process.
        process: Process,
    },
}

/// What a per-PID trace records about its process (metadata `env`, directory).
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Process {
    /// The process name (`comm`), one safe file-name component.
    pub procname: String,
    /// The process id.
    pub pid: u32,
    /// When the process registered (the metadata's `vpid_datetime`).
    pub registered: SystemTime,
}

impl Process {
    /// The facts of an app that calls itself `name`: the name is made one safe
    /// file-name component, since it names the trace's directory.
    pub fn of(name: &str, pid: i32, registered: SystemTime) -> Process {
        Process {
            procname: names::procname(name),
            pid: pid as u32,
            registered,
        }
    }
}

impl Owner {
    /// The owner of the buffers an app of `uid` on `connection` uses in a channel
    /// of `buffers` mode: its uid's shared set, or its connection's own (then
    /// `process` says what its trace records).
    pub fn of(
        buffers: Buffering,
        uid: u32,
        connection: ConnectionId,
        process: impl FnOnce() -> Process,
    ) -> Owner {
        match buffers {
            Buffering::PerUid => Owner::Uid(uid),
            Buffering::PerPid => Owner::Pid {
                connection,
                process: process(),
            },
        }
    }

    /// The connection of a per-PID owner: its sets are counted against the
    /// per-PID caps and torn down when it goes.
    pub fn connection(&self) -> Option<ConnectionId> {
        match self {
            Owner::Uid(_) => None,
            Owner::Pid { connection, .. } => Some(*connection),
        }
    }

    /// Whether the owner is one connection.
    pub fn is_pid(&self) -> bool {
        self.connection().is_some()
    }

    /// The buffering mode of the owner's channels.
    pub fn buffering(&self) -> Buffering {
        match self {
            Owner::Uid(_) => Buffering::PerUid,
            Owner::Pid { .. } => Buffering::PerPid,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::UNIX_EPOCH;

    #[test]
    fn per_uid_channels_are_owned_by_the_uid_and_per_pid_ones_by_the_connection() {
        let c = ConnectionId(7);
        let app = || Process::of("app", 42, UNIX_EPOCH);
        assert_eq!(Owner::of(Buffering::PerUid, 1000, c, app), Owner::Uid(1000));
        let pid = Owner::of(Buffering::PerPid, 1000, c, app);
        assert_eq!(
            pid,
            Owner::Pid {
                connection: c,
                process: Process {
                    procname: "app".into(),
                    pid: 42,
                    registered: UNIX_EPOCH,
                },
            }
        );
        assert_eq!(pid.connection(), Some(c));
        assert!(pid.is_pid());
        assert_eq!(pid.buffering(), Buffering::PerPid);
        assert!(!Owner::Uid(1000).is_pid());
        assert_eq!(Owner::Uid(1000).buffering(), Buffering::PerUid);
    }

    #[test]
    fn a_per_pid_owner_names_its_process_in_one_file_name_component() {
        let process = Process::of("../x/y", 42, UNIX_EPOCH);
        assert!(!process.procname.contains('/'), "{}", process.procname);
    }
}
