//! `snapshot record`: what a snapshot session's rings hold, written as a new trace.
//!
//! A snapshot session's sets write nothing while tracing (`BufferSet::for_snapshots`).
//! [`RecordSnapshot`] asks each of the session's sets for a copy of its rings
//! ([`TakeSnapshot`]: every ring flushed, so the partly filled sub-buffers are in it,
//! then copied without being taken and without stopping producers), then writes the
//! copies on a blocking thread into `snapshot-<n>-<date>/` below the session's
//! output (or the `--output` given), each sub-trace at its usual place
//! (`ust/uid/<uid>/64-bit`, `ust/pid/<name>-<pid>-<date>-<conn>`) with its metadata,
//! through the same safe directory walk as every trace ([`TraceDir`]).
//!
//! Dead apps: the per-PID sets of an app that died are, in a snapshot session, not
//! torn down at its death but kept (their rings, their trace's metadata) for the next
//! snapshot, which includes them and then tears them down. At most
//! `daemon.snapshot_kept_dead_apps` dead apps are kept; past that the oldest is torn
//! down (its rings are lost, as LTTng's are).

use super::{BufferFactory, Owner, SetKey};
use crate::actors::app_connection::ConnectionId;
use crate::actors::buffer_set::{SetSnapshot, TakeSnapshot};
use crate::trace::layout::{DirClock, dir_timestamp, stream_file_name};
use crate::trace::writer::{OutputDir, TraceDir, TraceDirError};
use actix::prelude::*;
use std::collections::BTreeMap;
use std::io::Write;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::SystemTime;

/// Write the current contents of `session`'s rings as a snapshot trace; answers
/// what was written.
#[derive(Message)]
#[rtype(result = "Result<String, SnapshotError>")]
pub struct RecordSnapshot {
    /// The session (a snapshot session: the SessionManager checked).
    pub session: String,
    /// Parent of the snapshot directory (default: the session's output).
    pub output: Option<PathBuf>,
    /// Most bytes of packets the snapshot holds, shared equally by its streams.
    pub max_size: Option<u64>,
}

/// Why a snapshot was not (wholly) written.
#[derive(Debug, thiserror::Error)]
pub enum SnapshotError {
    /// The factory does not know the session (destroyed meanwhile).
    #[error("no session named {0:?}")]
    NoSession(String),
    /// `--max-size` leaves a stream less than one sub-buffer.
    #[error(
        "--max-size {max_size} is too small: {streams} streams need at least one \
         {subbuf_size}-byte sub-buffer each ({needed} bytes)"
    )]
    MaxSizeTooSmall {
        /// What was asked.
        max_size: u64,
        /// Streams of the session.
        streams: u64,
        /// The largest sub-buffer size of its channels.
        subbuf_size: u64,
        /// The smallest size that holds one packet of every stream.
        needed: u64,
    },
    /// The snapshot directory exists already.
    #[error("{0} exists already")]
    Exists(PathBuf),
    /// A directory of the snapshot was refused or could not be made.
    #[error(transparent)]
    TraceDir(#[from] TraceDirError),
    /// A file of the snapshot could not be written.
    #[error("{path}: {source}")]
    Write {
        /// The file.
        path: PathBuf,
        /// The kernel's error.
        source: std::io::Error,
    },
    /// A set stopped before it answered (the daemon is shutting down).
    #[error(transparent)]
    Stopped(#[from] MailboxError),
    /// The writing thread panicked.
    #[error("snapshot writer: {0}")]
    Panicked(String),
}

/// One set's copy, with where it goes.
struct Part {
    /// The sub-trace's place below the snapshot directory.
    below: Vec<String>,
    /// The sub-trace's metadata.
    tsdl: Arc<str>,
    /// The channel: its streams' file prefix.
    channel: String,
    /// What the set copied.
    copy: SetSnapshot,
}

/// What a snapshot wrote.
#[derive(Default)]
struct Written {
    /// Sub-traces.
    traces: usize,
    /// Stream files.
    files: usize,
    /// Packets.
    packets: u64,
    /// Bytes of packets.
    bytes: u64,
}

impl BufferFactory {
    /// Whether `session` is a snapshot session.
    fn is_snapshot_session(&self, session: &str) -> bool {
        self.sessions
            .iter()
            .any(|s| s.name == session && s.snapshot)
    }

    /// Whether `owner` is an app connection that is gone (its sets kept for a
    /// snapshot).
    fn owner_gone(&self, owner: &Owner) -> bool {
        owner
            .connection()
            .is_some_and(|c| !self.apps.contains_key(&c))
    }

    /// Forgets a dead app's per-PID sets and traces, except those of snapshot
    /// sessions, which are kept for the next snapshot (the oldest dead app's
    /// dropped past `snapshot_kept_dead_apps`).
    pub(super) fn forget_pid_sets(&mut self, connection: ConnectionId, ctx: &mut Context<Self>) {
        let owned = |o: &Owner| o.connection() == Some(connection);
        let keep = self.settings.snapshot_kept_dead_apps > 0
            && self
                .sets
                .keys()
                .any(|k| owned(&k.owner) && self.is_snapshot_session(&k.session));
        if !keep {
            self.traces.retain(|(_, o), _| !owned(o));
            self.tear_down(|k| owned(&k.owner), ctx);
            return;
        }
        let kept: Vec<String> = self
            .sessions
            .iter()
            .filter(|s| s.snapshot)
            .map(|s| s.name.clone())
            .collect();
        self.traces
            .retain(|(s, o), _| !owned(o) || kept.contains(s));
        self.tear_down(|k| owned(&k.owner) && !kept.contains(&k.session), ctx);
        self.kept_dead.push_back(connection);
        while self.kept_dead.len() > self.settings.snapshot_kept_dead_apps {
            if let Some(oldest) = self.kept_dead.pop_front() {
                log::info!("app connection {oldest}: dead app's rings dropped before a snapshot");
                self.release_kept(|k| k.owner.connection() == Some(oldest), ctx);
            }
        }
    }

    /// Tears down the kept dead apps' sets matching `pred` and their traces.
    pub(super) fn release_kept(&mut self, pred: impl Fn(&SetKey) -> bool, ctx: &mut Context<Self>) {
        let gone: Vec<SetKey> = self
            .sets
            .keys()
            .filter(|k| self.owner_gone(&k.owner))
            .filter(|k| pred(k))
            .cloned()
            .collect();
        for key in &gone {
            self.traces
                .remove(&(key.session.clone(), key.owner.clone()));
        }
        self.tear_down(|k| gone.contains(k), ctx);
        let sets = &self.sets;
        self.kept_dead
            .retain(|c| sets.keys().any(|k| k.owner.connection() == Some(*c)));
    }
}

impl Handler<RecordSnapshot> for BufferFactory {
    type Result = ResponseActFuture<Self, Result<String, SnapshotError>>;

    fn handle(&mut self, msg: RecordSnapshot, _: &mut Context<Self>) -> Self::Result {
        let Some(session) = self.sessions.iter().find(|s| s.name == msg.session) else {
            return Box::pin(fut::ready(Err(SnapshotError::NoSession(msg.session))));
        };
        let base = msg
            .output
            .unwrap_or_else(|| session.output.path().to_path_buf());
        let sets: Vec<&SetKey> = self
            .sets
            .keys()
            .filter(|k| k.session == msg.session)
            .collect();
        let streams = (sets.len() * self.cpus) as u64;
        let subbuf_size = session
            .channels
            .iter()
            .map(|c| u64::from(c.spec.subbuf_size))
            .max()
            .unwrap_or(0);
        let max_stream_bytes = match msg.max_size {
            Some(max_size) if streams > 0 && max_size / streams < subbuf_size => {
                return Box::pin(fut::ready(Err(SnapshotError::MaxSizeTooSmall {
                    max_size,
                    streams,
                    subbuf_size,
                    needed: streams.saturating_mul(subbuf_size),
                })));
            }
            Some(max_size) => Some(max_size / streams.max(1)),
            None => None,
        };
        let n = self.snapshots_taken.entry(msg.session.clone()).or_insert(0);
        *n += 1;
        let dir = base.join(format!(
            "snapshot-{n}-{}",
            dir_timestamp(SystemTime::now(), DirClock::Local)
        ));
        let mut requests = Vec::new();
        let mut dead_included = Vec::new();
        for key in sets {
            let Some(trace) = self.traces.get(&(key.session.clone(), key.owner.clone())) else {
                continue;
            };
            let Ok(tsdl) = trace.metadata.lock().map(|m| m.tsdl.clone()) else {
                continue;
            };
            let owner_gone = self.owner_gone(&key.owner);
            if owner_gone {
                dead_included.push(key.clone());
            }
            let copy = self.sets[key].addr.send(TakeSnapshot {
                max_stream_bytes,
                owner_gone,
            });
            let below = trace.dir.below().to_vec();
            let channel = key.channel.clone();
            requests.push(async move {
                copy.await.map(|copy| Part {
                    below,
                    tsdl,
                    channel,
                    copy,
                })
            });
        }
        let session = msg.session;
        let taken = async move {
            let mut parts = Vec::new();
            for request in requests {
                parts.push(request.await?);
            }
            let writing = dir.clone();
            let written = actix_rt::task::spawn_blocking(move || write_snapshot(&writing, parts))
                .await
                .map_err(|e| SnapshotError::Panicked(e.to_string()))??;
            Ok::<_, SnapshotError>((dir, written))
        };
        Box::pin(taken.into_actor(self).map(move |result, act, ctx| {
            let (dir, (w, overwritten, left_out)) = result?;
            // The dead apps kept for this snapshot are in it: their rings go.
            act.release_kept(|k| dead_included.contains(k), ctx);
            let counts = format!(
                "packets left out: {left_out}; packets overwritten since the session \
                 started: {overwritten}"
            );
            Ok(match w.packets {
                0 => format!(
                    "snapshot of session {session}: nothing to record, its rings hold no \
                     complete packet ({} not made); {counts}",
                    dir.display()
                ),
                _ => format!(
                    "snapshot of session {session} written to {}: {} packets ({} bytes) in \
                     {} stream files of {} traces; {counts}",
                    dir.display(),
                    w.packets,
                    w.bytes,
                    w.files,
                    w.traces
                ),
            })
        }))
    }
}

/// Writes the copies into `dir` (which must not exist), one sub-trace per place;
/// returns what was written, the rings' overwritten packets and the packets left out.
fn write_snapshot(
    dir: &std::path::Path,
    parts: Vec<Part>,
) -> Result<(Written, u64, u64), SnapshotError> {
    if std::fs::symlink_metadata(dir).is_ok() {
        return Err(SnapshotError::Exists(dir.to_path_buf()));
    }
    let overwritten = parts.iter().map(|p| p.copy.overwritten).sum();
    let left_out = parts.iter().map(|p| p.copy.left_out).sum();
    let mut traces: BTreeMap<Vec<String>, (Arc<str>, Vec<Part>)> = BTreeMap::new();
    for part in parts {
        if part.copy.streams.iter().all(Vec::is_empty) {
            continue;
        }
        traces
            .entry(part.below.clone())
            .or_insert_with(|| (part.tsdl.clone(), Vec::new()))
            .1
            .push(part);
    }
    let output = OutputDir::new(dir.to_path_buf());
    let mut written = Written::default();
    for (below, (tsdl, parts)) in traces {
        let trace = TraceDir::new(&output, below)?;
        let failed = |name: &str| {
            let path = trace.path().join(name);
            move |source| SnapshotError::Write { path, source }
        };
        trace
            .store_metadata("snapshot", &tsdl)
            .map_err(failed("metadata"))?;
        written.traces += 1;
        for part in parts {
            for (cpu, packets) in part.copy.streams.iter().enumerate() {
                if packets.is_empty() {
                    continue;
                }
                let name = stream_file_name(&part.channel, cpu as u32);
                let mut file = trace.open_stream(&name).map_err(failed(&name))?.file;
                for packet in packets {
                    file.write_all(packet).map_err(failed(&name))?;
                    written.packets += 1;
                    written.bytes += packet.len() as u64;
                }
                file.sync_data().map_err(failed(&name))?;
                written.files += 1;
            }
        }
    }
    Ok((written, overwritten, left_out))
}
