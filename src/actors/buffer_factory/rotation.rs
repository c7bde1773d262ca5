//! Rotation (`ustrace rotate`, `enable-rotation --timer/--size`) and `clear`: the
//! trace a session wrote so far is closed as one trace chunk while tracing goes on
//! into the next, LTTng's session rotation.
//!
//! In order, all in this actor's one handler, so no registration comes between:
//! 1. every sub-trace directory of the session is made (a trace with no packet yet
//!    too), so each of its streams writes through a directory fd from now on;
//! 2. the session's `ust/` tree is renamed into `archives/<begin>-<end>-<n>/`
//!    (`clear`: into `.cleared-<n>/`), atomically: writers still storing packets of
//!    the chunk go on writing through their fds into it, wherever it now is;
//! 3. every trace gets its next chunk's [`TraceDir`] (same place, nothing made), and
//!    every set of the session is told [`Rotate`]: it closes each ring's partly
//!    filled packet, takes every packet before that point into its old writers,
//!    syncs them, and sends the next packets to writers in the new directory. Each
//!    packet goes to exactly one chunk; producers never wait.
//!
//! The answer waits for every set and for the teardowns in flight of the session's
//! dead apps, so the archive is complete (its own metadata per sub-trace, written by
//! its writers with its packets) when its path is printed. `clear` then deletes the
//! chunk (and empties a snapshot session's rings instead, which write nothing).
//! Sub-trace directories made in step 1 that got no packet are removed, so each
//! archive holds only readable traces.

use super::BufferFactory;
use crate::actors::buffer_set::{EmptyRings, FlushError, Rotate, all_ok};
use crate::protocol::messages::{RotationInfo, SessionRotation};
use crate::trace::layout::iso8601_basic;
use crate::trace::writer::{TraceDir, TraceDirError, move_into, remove_entry};
use actix::prelude::*;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

/// Name of the directory below a session's output that holds its archives.
pub const ARCHIVES_DIR: &str = "archives";

/// The tree of a trace chunk below the session's output (and below an archive).
const CHUNK_TREE: &str = "ust";

/// How often the factory checks the sessions' rotation schedules.
pub(super) const SCHEDULE_TICK: Duration = Duration::from_millis(250);

/// Close the session's current trace chunk: archive it (`rotate`) or delete it
/// (`clear`). Answers the archive's path (`None`: nothing was recorded, or cleared).
#[derive(Message)]
#[rtype(result = "Result<Option<PathBuf>, RotateError>")]
pub struct RotateSession {
    /// The session.
    pub session: String,
    /// `clear`: delete the chunk instead of archiving it.
    pub clear: bool,
}

/// Why a rotation or a clear was refused or did not complete.
#[derive(Debug, thiserror::Error)]
pub enum RotateError {
    /// The factory does not know the session (destroyed meanwhile).
    #[error("no session named {0:?}")]
    NoSession(String),
    /// A snapshot session writes no trace to rotate.
    #[error(
        "session {0} is a snapshot session: it writes no trace to rotate (use `snapshot record`)"
    )]
    Snapshot(String),
    /// A channel's writer does not store in the local trace directories (a
    /// streaming session): nothing here to move.
    #[error(
        "session {session}: channel {channel} uses writer {writer:?}, which stores no local trace; only local traces rotate"
    )]
    NotLocal {
        /// The session.
        session: String,
        /// The channel.
        channel: String,
        /// Its writer.
        writer: String,
    },
    /// Another rotation of the session has not finished yet.
    #[error("session {0}: a rotation or clear is in progress; try again once it answered")]
    InProgress(String),
    /// A directory of the chunk could not be made or moved.
    #[error(transparent)]
    TraceDir(#[from] TraceDirError),
    /// A set or writer did not store everything of the chunk.
    #[error("the trace chunk is incomplete: {0}")]
    Flush(#[from] FlushError),
    /// The cleared chunk could not be deleted.
    #[error("{path}: could not delete the cleared trace chunk: {source}")]
    Delete {
        /// The chunk.
        path: PathBuf,
        /// The kernel's error.
        source: std::io::Error,
    },
}

/// One session's trace chunks, as far as rotation goes.
#[derive(Debug)]
pub(super) struct Chunks {
    /// When the current chunk began: the session's first start, or the last rotation.
    begun: SystemTime,
    /// Chunks closed so far (archived or cleared): numbers the next one.
    closed: u64,
    /// The latest archive, for `list`/`status`.
    last_archive: Option<PathBuf>,
    /// A rotation is in progress: another waits for its answer.
    rotating: bool,
}

impl Chunks {
    /// A session's first chunk, begun at `begun`.
    pub(super) fn new(begun: SystemTime) -> Chunks {
        Chunks {
            begun,
            closed: 0,
            last_archive: None,
            rotating: false,
        }
    }
}

impl BufferFactory {
    /// Starts closing `session`'s current trace chunk (steps 1 to 3 of the module
    /// doc); the future answers once the chunk is complete (or deleted).
    fn rotate(
        &mut self,
        session: &str,
        clear: bool,
        ctx: &mut Context<Self>,
    ) -> Result<ResponseActFuture<Self, Result<Option<PathBuf>, RotateError>>, RotateError> {
        let def = self
            .sessions
            .iter()
            .find(|s| s.name == session)
            .ok_or_else(|| RotateError::NoSession(session.to_string()))?
            .clone();
        if def.snapshot {
            if !clear {
                return Err(RotateError::Snapshot(def.name));
            }
            for (_, set) in self.sets.iter().filter(|(k, _)| k.session == session) {
                set.addr.do_send(EmptyRings);
            }
            // The dead apps' rings kept for the next snapshot are gone too.
            self.release_kept(|k| k.session == session, ctx);
            return Ok(Box::pin(fut::ready(Ok(None))));
        }
        for channel in &def.channels {
            if !self
                .writers
                .get(&channel.spec.writer)
                .is_some_and(|w| w.uses_trace_dir())
            {
                return Err(RotateError::NotLocal {
                    session: def.name.clone(),
                    channel: channel.spec.name.clone(),
                    writer: channel.spec.writer.clone(),
                });
            }
        }
        let chunks = self
            .chunks
            .entry(def.name.clone())
            .or_insert_with(|| Chunks::new(def.created));
        if chunks.rotating {
            return Err(RotateError::InProgress(def.name));
        }
        let now = SystemTime::now();
        let n = chunks.closed;
        let below = match clear {
            true => vec![format!(".cleared-{n}")],
            false => vec![
                ARCHIVES_DIR.to_string(),
                format!("{}-{}-{n}", iso8601_basic(chunks.begun), iso8601_basic(now)),
            ],
        };
        // 1. Every sub-trace directory made: each stream then writes through an fd.
        let mut made = Vec::new();
        for ((s, _), trace) in self.traces.iter().filter(|((s, _), _)| s == session) {
            trace.dir.ensure().map_err(|e| TraceDirError::Io {
                path: trace.dir.path().to_path_buf(),
                source: e,
            })?;
            made.push((s.clone(), trace.dir.below().to_vec()));
        }
        // 2. The chunk's tree moves, at once.
        let chunk = TraceDir::new(&def.output, below)?;
        let moved = move_into(&def.output, CHUNK_TREE, &chunk)?;
        // The per-UID traces moved keep their readers' ACLs; the chunk's own
        // directories let those readers through to them.
        let readers: std::collections::BTreeSet<u32> = self
            .traces
            .iter()
            .filter(|((s, _), _)| s == session)
            .filter_map(|(_, trace)| trace.dir.reader())
            .collect();
        for uid in readers {
            if let Err(e) = chunk.let_through(uid) {
                log::warn!(
                    "{}: cannot let uid {uid} through to its traces ({e}); the chunk stays readable by the daemon's user and group only",
                    chunk.path().display()
                );
            }
        }
        let chunks = self.chunks.get_mut(session).expect("inserted above");
        chunks.begun = now;
        chunks.closed += 1;
        chunks.rotating = true;
        // 3. Every trace's next chunk, and every set of the session to it.
        let mut rotations = Vec::new();
        for ((_, owner), trace) in self.traces.iter_mut().filter(|((s, _), _)| s == session) {
            trace.dir = trace.dir.next_chunk();
            for (_, set) in self
                .sets
                .iter()
                .filter(|(k, _)| k.session == session && k.owner == *owner)
            {
                rotations.push(set.addr.send(Rotate {
                    next: trace.dir.clone(),
                }));
            }
        }
        let finished = self.teardowns_finished(session);
        let output = def.output.clone();
        let session = def.name.clone();
        let closing = async move {
            let stored = all_ok(rotations).await;
            finished.await;
            stored?;
            let path = chunk.path().to_path_buf();
            let name = chunk.below().to_vec();
            actix_rt::task::spawn_blocking(move || match clear {
                true => remove_entry(&output, &name[0])
                    .map(|()| None)
                    .map_err(|source| RotateError::Delete { path, source }),
                false => {
                    let below: Vec<Vec<String>> = made.into_iter().map(|(_, b)| b).collect();
                    remove_unwritten(&path, &below);
                    // Nothing recorded in the chunk: no archive.
                    let empty = std::fs::remove_dir(&path).is_ok();
                    Ok((moved && !empty).then_some(path))
                }
            })
            .await
            .unwrap_or_else(|e| {
                Err(RotateError::Delete {
                    path: PathBuf::new(),
                    source: std::io::Error::other(e.to_string()),
                })
            })
        };
        Ok(Box::pin(closing.into_actor(self).map(
            move |result, act, _| {
                if let Some(chunks) = act.chunks.get_mut(&session) {
                    chunks.rotating = false;
                    if let Ok(Some(path)) = &result {
                        chunks.last_archive = Some(path.clone());
                    }
                }
                act.publish_rotations();
                result
            },
        )))
    }

    /// Rotates every started session whose schedule says so: its timer elapsed
    /// since its chunk began, or its chunk holds its size bound.
    pub(super) fn rotate_on_schedule(&mut self, ctx: &mut Context<Self>) {
        let now = SystemTime::now();
        let due: Vec<String> = self
            .sessions
            .iter()
            .filter(|s| s.started && !s.snapshot)
            .filter(|s| s.rotation.timer_us.is_some() || s.rotation.size.is_some())
            .filter(|s| {
                let chunks = self.chunks.get(&s.name);
                if chunks.is_some_and(|c| c.rotating) {
                    return false;
                }
                let begun = chunks.map_or(s.created, |c| c.begun);
                let timer = s.rotation.timer_us.is_some_and(|ms| {
                    now.duration_since(begun)
                        .is_ok_and(|elapsed| elapsed >= Duration::from_micros(ms))
                });
                let size = s.rotation.size.is_some_and(|size| {
                    let written: u64 = self
                        .traces
                        .iter()
                        .filter(|((session, _), _)| *session == s.name)
                        .map(|(_, t)| t.dir.written())
                        .sum();
                    written >= size
                });
                timer || size
            })
            .map(|s| s.name.clone())
            .collect();
        for session in due {
            match self.rotate(&session, false, ctx) {
                Ok(rotation) => {
                    ctx.spawn(rotation.map(move |result, _, _| match result {
                        Ok(Some(path)) => {
                            log::info!("session {session}: archived {}", path.display())
                        }
                        Ok(None) => {}
                        Err(e) => log::warn!("session {session}: scheduled rotation: {e}"),
                    }));
                }
                Err(e) => log::warn!("session {session}: scheduled rotation: {e}"),
            }
        }
    }

    /// Writes every session's rotation settings and last archive where `status`
    /// reads them: the sessions with a schedule or a closed chunk.
    pub(super) fn publish_rotations(&self) {
        let rotations = self
            .sessions
            .iter()
            .filter_map(|s| {
                let chunks = self.chunks.get(&s.name);
                let info = RotationInfo {
                    archives: chunks.map_or(0, |c| c.closed),
                    last_archive: chunks
                        .and_then(|c| c.last_archive.as_ref())
                        .map(|p| p.display().to_string()),
                };
                let scheduled = s.rotation.timer_us.is_some() || s.rotation.size.is_some();
                (scheduled || info.archives > 0).then(|| {
                    let rotation = SessionRotation {
                        session: s.name.clone(),
                        schedule: s.rotation,
                        info,
                    };
                    (s.name.clone(), rotation)
                })
            })
            .collect();
        if let Ok(mut published) = self.stats.rotations.lock() {
            *published = rotations;
        }
    }
}

/// Removes the sub-trace directories of an archive that got no packet (made by
/// step 1 for traces with nothing recorded in the chunk), and the levels above
/// them left empty: `rmdir` removes only empty directories.
fn remove_unwritten(archive: &Path, traces: &[Vec<String>]) {
    for below in traces {
        let mut path = below.iter().fold(archive.to_path_buf(), |p, c| p.join(c));
        for _ in 0..below.len() {
            if std::fs::remove_dir(&path).is_err() {
                break;
            }
            path.pop();
        }
    }
}

impl Handler<RotateSession> for BufferFactory {
    type Result = ResponseActFuture<Self, Result<Option<PathBuf>, RotateError>>;

    fn handle(&mut self, msg: RotateSession, ctx: &mut Context<Self>) -> Self::Result {
        match self.rotate(&msg.session, msg.clear, ctx) {
            Ok(rotation) => rotation,
            Err(e) => Box::pin(fut::ready(Err(e))),
        }
    }
}
