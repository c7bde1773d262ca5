//! BufferFactory: decides which buffers each app gets, and makes them.
//!
//! One actor, so every decision is serialised: two apps of one uid registering at the
//! same moment meet here one after the other and the second finds the first one's
//! per-UID BufferSet. It owns
//! - the started sessions' definitions (pushed by the SessionManager),
//! - one trace per (session, owner): its directory and its event-id registry,
//! - one BufferSet per (session, channel, owner),
//! - what each app has been given, so that a session started, or a channel or event
//!   enabled, after an app registered reaches that app as a delta over its connection.
//!
//! Identity and fair shares: an app is known by its [`ConnectionId`], never by its
//! pid, so a per-PID set and its trace belong to exactly one connection (and so one
//! uid); a connection that outlives its process can never hand a later process of
//! the same pid its rings. Per-PID buffer memory is bounded for all apps together
//! (`limits.max_pid_buffer_bytes`) and for each uid (`..._per_uid`), so one user
//! cannot take the memory another's apps need (the daemon's own uid is bounded by
//! the global cap only). A channel refused for a limit is counted in `status`; an
//! app that a limit leaves with nothing at registration is refused and told why.
//!
//! Registration cost matters (thousands of short-lived per-PID apps): creating a
//! BufferSet is a few memfds and two actors, nothing touches the disk until the first
//! packet is written, and an app that matches no enabled event gets no buffer at all.
//!
//! Layout: the decisions (which set, which events a grant enables, the per-PID
//! budget, when a refusal is counted) are plain functions in `plan`, unit-tested
//! without memfds or actors; [`teardown`] holds what happens when an app dies (and
//! when a session's sets are torn down); this file sequences them with the making.

use crate::actors::app_connection::{AppConnection, ConnectionId, Grant, Push, Refusal};
use crate::actors::buffer_set::{BufferSet, Flush, FlushError, all_ok};
use crate::actors::ring_pool::RingPool;
use crate::actors::session::{ChannelDef, SessionDef};
use crate::actors::stats::Stats;
use crate::actors::supervision::RestartPolicy;
use crate::actors::writer::{Metadata, StreamInfo, StreamWriters, WriterCatalog};
use crate::ctf::context::ContextSet;
use crate::ctf::field::EventDesc;
use crate::ctf::names;
use crate::filter::Program;
use crate::protocol::messages::{AppChannelInfo, AppInfo, Buffering, ChannelSpec};
use crate::trace::layout::{self, DirClock};
use crate::trace::owner::{Owner, Process};
use crate::trace::registry::{EventLimits, EventRegistry, RegistryError};
use crate::trace::writer::{TraceDir, TraceDirError};
use plan::{BudgetVerdict, PidBudget, SetKey};
pub use teardown::AppGone;

use crate::shm::{BlankSet, ChannelBuffers, Geometry, RingConfig, ShmError, cpu_count};
use actix::prelude::*;
use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

mod plan;
pub mod rotation;
pub mod snapshot;
pub mod teardown;
pub use rotation::{ARCHIVES_DIR, RotateError, RotateSession};
pub use snapshot::{RecordSnapshot, SnapshotError};

/// The settings the factory applies to everything it creates.
#[derive(Clone, Debug)]
pub struct FactorySettings {
    /// Drain period of partial sub-buffers.
    pub flush_interval: Duration,
    /// Writer restart limits.
    pub restart_policy: RestartPolicy,
    /// Cap on the shared memory of all per-PID buffers together.
    pub max_pid_buffer_bytes: u64,
    /// Cap on the shared memory of the per-PID buffers of one uid.
    pub max_pid_buffer_bytes_per_uid: u64,
    /// Per-PID ring sets kept ready per geometry (see [`RingPool`]).
    pub warm_pid_buffer_sets: usize,
    /// Bounds on events per app and per trace and on metadata size: what one
    /// registration may cost this actor, which serves every uid.
    pub event_limits: EventLimits,
    /// Most bytes of packets each stream's writer may have queued (see
    /// [`StreamWriters::accepts`]).
    pub max_writer_backlog_bytes: u64,
    /// Dead apps whose per-PID sets of snapshot sessions are kept for the next
    /// snapshot (see [`snapshot`]).
    pub snapshot_kept_dead_apps: usize,
}

/// One app as the factory knows it.
struct App {
    /// From SO_PEERCRED: names its per-PID sub-traces, as users expect.
    pid: i32,
    /// From SO_PEERCRED.
    uid: u32,
    /// Program name.
    name: String,
    /// When it registered: names its per-PID sub-traces.
    registered_at: SystemTime,
    /// Its events, indexed as the app indexes them.
    events: Vec<EventDesc>,
    /// Where pushes go.
    addr: Addr<AppConnection>,
    /// Channels given to it: set key -> (channel key for the app, enabled event indices).
    channels: BTreeMap<SetKey, AppChannel>,
    /// Per-PID sets a limit refused it: each refusal is counted once, however often
    /// a later session change tries the set again.
    refused: BTreeSet<SetKey>,
}

/// A channel given to an app.
struct AppChannel {
    /// The key the app knows the channel by.
    key: u64,
    /// Indices (into `App::events`) already enabled in it.
    enabled: HashSet<u32>,
    /// The filter sent with each of `enabled` that has one: a rule added later that
    /// changes it enables the event again with the new one.
    filters: HashMap<u32, Program>,
}

/// One live BufferSet.
struct Set {
    /// The actor.
    addr: Addr<BufferSet>,
    /// Its rings, to hand their fds to apps.
    buffers: Arc<ChannelBuffers>,
    /// Shared-memory bytes, counted against the per-PID caps.
    bytes: u64,
    /// The uid of its owner: whose per-uid share a per-PID set counts against.
    uid: u32,
}

/// Why an app gets no buffers for one channel.
#[derive(Debug, thiserror::Error)]
enum GrantError {
    /// A limit: the app is refused (at registration) and the refusal counted.
    #[error(transparent)]
    Refused(#[from] Refusal),
    /// The channel names a writer nobody registered (a session created before a
    /// daemon restart with fewer writers cannot: the SessionManager checks).
    #[error("no writer named {writer:?} (registered: {})", registered.join(", "))]
    NoWriter {
        /// The name asked for.
        writer: String,
        /// The names there are.
        registered: Vec<String>,
    },
    /// The trace's directory could not be made.
    #[error(transparent)]
    TraceDir(#[from] TraceDirError),
    /// The trace's uuid could not be drawn.
    #[error("trace uuid: {0}")]
    Uuid(std::io::Error),
    /// The rings could not be made (shared memory, fds).
    #[error(transparent)]
    Rings(#[from] ShmError),
    /// The channel's buffering scheme is not the trace's (a bug: sub-traces declare
    /// the channels of their own scheme).
    #[error("channel {0} has no stream class in its trace")]
    NoStreamClass(String),
}

/// What an app should be given now.
struct Delta {
    /// The grants that could be made.
    grants: Vec<Grant>,
    /// The limit that refused one of its channels, if any.
    refused: Option<Refusal>,
    /// The first event limit of `[limits]` one of its traces met, if any: at
    /// registration the app is refused whole.
    limit: Option<RegistryError>,
}

/// One sub-trace: a directory with a metadata file and stream files.
struct Trace {
    /// Event ids and metadata text.
    registry: EventRegistry,
    /// Grows with every event registered, so writers know to rewrite the metadata.
    version: u64,
    /// Directory of the sub-trace.
    dir: TraceDir,
    /// The metadata snapshot the BufferSets attach to packets.
    metadata: Arc<Mutex<Metadata>>,
}

/// The actor.
pub struct BufferFactory {
    /// Settings from the config.
    settings: FactorySettings,
    /// Writer factories by name.
    writers: WriterCatalog,
    /// The threads that run writers, so that disk I/O never delays registration;
    /// each set's first stream goes to the next one in turn (its other streams to
    /// the ones after it), so one slow file creation or write does not queue every
    /// other stream behind it.
    io: Vec<ArbiterHandle>,
    /// Sets created so far: picks the I/O thread of the next one.
    sets_created: usize,
    /// Daemon counters.
    stats: Arc<Stats>,
    /// Rings per set: the machine's possible CPUs, read once.
    cpus: usize,
    /// Per-PID ring sets made ahead.
    pool: RingPool,
    /// Every session, started or not.
    sessions: Vec<SessionDef>,
    /// Sub-traces by (session, owner).
    traces: HashMap<(String, Owner), Trace>,
    /// BufferSets.
    sets: HashMap<SetKey, Set>,
    /// Registered apps by connection (never by pid: see the module doc).
    apps: HashMap<ConnectionId, App>,
    /// Next channel key handed to an app.
    next_key: u64,
    /// Shared memory held by per-PID sets, against its caps (the daemon's own
    /// uid's apps are the operator's, bounded by the global cap only).
    pid_budget: PidBudget,
    /// Teardowns in flight per session, and who waits for them: `stop` and `destroy`
    /// answer only once the session's dead apps are on disk too.
    teardowns: HashMap<String, teardown::Teardowns>,
    /// Dead apps whose snapshot sessions' per-PID sets are kept, oldest first.
    kept_dead: VecDeque<ConnectionId>,
    /// Snapshots recorded per session: numbers the next one's directory.
    snapshots_taken: HashMap<String, u64>,
    /// Trace chunks per session that rotated (see [`rotation`]).
    chunks: HashMap<String, rotation::Chunks>,
}

impl BufferFactory {
    /// A factory with no session and no app.
    pub fn new(
        settings: FactorySettings,
        writers: WriterCatalog,
        io: Vec<ArbiterHandle>,
        stats: Arc<Stats>,
    ) -> BufferFactory {
        let cpus = cpu_count();
        BufferFactory {
            pool: RingPool::new(settings.warm_pid_buffer_sets, cpus, stats.clone()),
            cpus,
            pid_budget: PidBudget::new(
                settings.max_pid_buffer_bytes,
                settings.max_pid_buffer_bytes_per_uid,
                nix::unistd::geteuid().as_raw(),
            ),
            settings,
            writers,
            io,
            sets_created: 0,
            stats,
            sessions: Vec::new(),
            traces: HashMap::new(),
            sets: HashMap::new(),
            apps: HashMap::new(),
            next_key: 1,
            teardowns: HashMap::new(),
            kept_dead: VecDeque::new(),
            snapshots_taken: HashMap::new(),
            chunks: HashMap::new(),
        }
    }

    /// Keeps per-PID ring sets ready for the geometries of started sessions only.
    fn keep_pool_ready(&mut self) {
        let geometries: Vec<Geometry> = self
            .sessions
            .iter()
            .filter(|s| s.started)
            .flat_map(|s| &s.channels)
            .filter(|c| c.spec.buffers == Buffering::PerPid)
            .map(|c| c.spec.geometry())
            .collect();
        self.pool.keep_ready(&geometries);
    }

    /// Everything app `connection` should have and does not have yet.
    fn delta(&mut self, connection: ConnectionId) -> Delta {
        let mut grants = Vec::new();
        let mut refused = None;
        let mut limit = None;
        let sessions: Vec<SessionDef> = self
            .sessions
            .iter()
            .filter(|s| s.started)
            .cloned()
            .collect();
        for session in &sessions {
            for channel in &session.channels {
                if limit.is_some() {
                    return Delta {
                        grants,
                        refused,
                        limit,
                    };
                }
                match self.grant(connection, session, channel, &mut limit) {
                    Ok(Some(grant)) => grants.push(grant),
                    Ok(None) => {}
                    Err(GrantError::Refused(refusal)) => refused = Some(refusal),
                    Err(e) => log::warn!(
                        "app connection {connection}: no buffers for {}/{}: {e}",
                        session.name,
                        channel.spec.name
                    ),
                }
            }
        }
        Delta {
            grants,
            refused,
            limit,
        }
    }

    /// The events app `connection` records in a started session's channel that the
    /// channel no longer enables (`disable-event`, `disable-channel`), by the app's
    /// channel key; forgotten as given, so that enabling them again grants them.
    fn revocations(&mut self, connection: ConnectionId) -> Vec<(u64, Vec<u32>)> {
        let Some(app) = self.apps.get_mut(&connection) else {
            return Vec::new();
        };
        let mut revoked = Vec::new();
        for (set_key, given) in &mut app.channels {
            let channel = self
                .sessions
                .iter()
                .filter(|s| s.started && s.name == set_key.session)
                .flat_map(|s| &s.channels)
                .find(|c| c.spec.name == set_key.channel);
            let Some(channel) = channel else {
                continue;
            };
            let matching = plan::matching_events(&app.events, channel);
            let gone = plan::to_disable(&matching, &given.enabled);
            if !gone.is_empty() {
                for index in &gone {
                    given.enabled.remove(index);
                    given.filters.remove(index);
                }
                revoked.push((given.key, gone));
            }
        }
        revoked
    }

    /// What app `connection` is missing of one channel, creating its buffers if
    /// needed. An event past a trace's limits stops the enabling there and is
    /// reported in `limit`; what was granted before it is returned all the same (it
    /// is recorded as given).
    fn grant(
        &mut self,
        connection: ConnectionId,
        session: &SessionDef,
        channel: &ChannelDef,
        limit: &mut Option<RegistryError>,
    ) -> Result<Option<Grant>, GrantError> {
        let Some(app) = self.apps.get(&connection) else {
            return Ok(None);
        };
        let matching = plan::matching_events(&app.events, channel);
        if matching.is_empty() {
            return Ok(None);
        }
        let owner = Owner::of(channel.spec.buffers, app.uid, connection, || {
            Process::of(&app.name, app.pid, app.registered_at)
        });
        let set_key = SetKey {
            session: session.name.clone(),
            channel: channel.spec.name.clone(),
            owner,
        };
        let trace_key = (session.name.clone(), set_key.owner.clone());
        let uid = app.uid;
        if set_key.owner.is_pid() && !self.sets.contains_key(&set_key) {
            let budget = self
                .pid_budget
                .check(uid, plan::set_bytes(&channel.spec, self.cpus));
            let app = self.apps.get_mut(&connection).expect("checked above");
            match plan::budget_verdict(&mut app.refused, &set_key, budget) {
                BudgetVerdict::Grant => {}
                BudgetVerdict::Refuse(refusal) => return Err(refusal.into()),
                BudgetVerdict::AlreadyRefused => return Ok(None),
            }
        }
        let new_trace = self.ensure_trace(session, &set_key.owner)?;
        let stream_id = self.traces[&trace_key]
            .registry
            .stream_id(&channel.spec.name)
            .ok_or_else(|| GrantError::NoStreamClass(channel.spec.name.clone()))?;
        self.ensure_set(&set_key, session, stream_id, &channel.spec, uid)?;

        let app = self.apps.get_mut(&connection).expect("checked above");
        let trace = self.traces.get_mut(&trace_key).expect("ensured above");
        let mut buffers = None;
        if !app.channels.contains_key(&set_key) {
            buffers = Some(self.sets[&set_key].buffers.clone());
            app.channels.insert(
                set_key.clone(),
                AppChannel {
                    key: self.next_key,
                    enabled: HashSet::new(),
                    filters: HashMap::new(),
                },
            );
            self.next_key += 1;
        }
        let given = app.channels.get_mut(&set_key).expect("inserted above");
        let mut enables = Vec::new();
        let mut filters = HashMap::new();
        let mut changed = false;
        let wanted: HashMap<u32, Program> = matching
            .iter()
            .filter_map(|i| Some((*i, channel.filter_for(&app.events[*i as usize])?)))
            .collect();
        let missing: Vec<u32> = plan::to_enable(&matching, &given.enabled)
            .chain(plan::refiltered(
                &matching,
                &given.enabled,
                &given.filters,
                &wanted,
            ))
            .collect();
        for index in missing {
            let event = &app.events[index as usize];
            warn_missing_fields(connection, channel, event);
            match trace.registry.register_event(event) {
                Ok((id, new)) => {
                    changed |= new;
                    given.enabled.insert(index);
                    match wanted.get(&index) {
                        Some(program) => {
                            given.filters.insert(index, program.clone());
                            filters.insert(index, program.clone());
                        }
                        None => {
                            given.filters.remove(&index);
                        }
                    }
                    enables.push((index, id));
                }
                // The trace is full: none of the app's later events fit either.
                Err(e) if e.is_limit() => {
                    *limit = Some(e);
                    break;
                }
                Err(e) => log::warn!(
                    "app connection {connection}: event {} not enabled: {e}",
                    event.full_name()
                ),
            }
        }
        if changed {
            trace.version += 1;
        }
        if changed || new_trace {
            publish_metadata(trace);
        }
        if buffers.is_none() && enables.is_empty() {
            return Ok(None);
        }
        Ok(Some(Grant {
            key: given.key,
            buffers,
            contexts: channel.spec.contexts(),
            enables,
            filters,
        }))
    }

    /// Creates the sub-trace of (session, owner) if it does not exist yet; says
    /// whether it did. A new trace's metadata snapshot is empty until the caller
    /// publishes it, once, with the events it registers.
    fn ensure_trace(&mut self, session: &SessionDef, owner: &Owner) -> Result<bool, GrantError> {
        let key = (session.name.clone(), owner.clone());
        if self.traces.contains_key(&key) {
            return Ok(false);
        }
        let below = layout::trace_below(owner, DirClock::Local);
        // A per-UID trace is its user's to read too (a per-PID one is named after
        // its process, which a user would have to find among everyone's).
        let dir = match owner {
            Owner::Uid(uid) => TraceDir::readable_by(&session.output, below, *uid),
            Owner::Pid { .. } => TraceDir::new(&session.output, below),
        }?;
        let mut registry =
            EventRegistry::for_this_host(owner.clone(), &session.name, session.created)
                .map_err(GrantError::Uuid)?
                .with_limits(self.settings.event_limits);
        // A sub-trace declares only the channels whose buffers it holds.
        let buffers = owner.buffering();
        for channel in session
            .channels
            .iter()
            .filter(|c| c.spec.buffers == buffers)
        {
            registry.add_channel(&channel.spec.name, &channel.spec.contexts());
        }
        let metadata = Arc::new(Mutex::new(Metadata {
            version: 0,
            tsdl: Arc::from(""),
        }));
        self.traces.insert(
            key,
            Trace {
                registry,
                version: 0,
                dir,
                metadata,
            },
        );
        Ok(true)
    }

    /// Creates the BufferSet `key`, owned by `uid`, if it does not exist yet (the
    /// caller checked the per-PID budget).
    fn ensure_set(
        &mut self,
        key: &SetKey,
        session: &SessionDef,
        stream_id: u32,
        spec: &ChannelSpec,
        uid: u32,
    ) -> Result<(), GrantError> {
        if self.sets.contains_key(key) {
            return Ok(());
        }
        let bytes = plan::set_bytes(spec, self.cpus);
        let trace = &self.traces[&(session.name.clone(), key.owner.clone())];
        let cpus = self.cpus;
        let factory = self
            .writers
            .get(&spec.writer)
            .ok_or_else(|| GrantError::NoWriter {
                writer: spec.writer.clone(),
                registered: self.writers.names(),
            })?;
        let config = RingConfig {
            geometry: spec.geometry(),
            mode: spec.mode,
            uuid: trace.registry.uuid(),
            stream_id,
            context_len: ContextSet::of(&spec.contexts()).encoded_len(),
        };
        let label = format!("{}/{}/{:?}", key.session, key.channel, key.owner);
        let blank = match key.owner {
            Owner::Pid { .. } => self.pool.take(config.geometry),
            Owner::Uid(_) => BlankSet::create(&format!("ustrace {label}"), config.geometry, cpus),
        };
        let buffers = Arc::new(blank.and_then(|b| b.init(&config))?);
        // Each set's first stream on the next I/O thread, its others after it.
        let mut io = self.io.clone();
        let first = self.sets_created % io.len();
        io.rotate_left(first);
        self.sets_created += 1;
        let streams = (0..cpus as u32)
            .map(|cpu| StreamInfo {
                session: session.name.clone(),
                channel: spec.name.clone(),
                cpu,
                trace_dir: trace.dir.clone(),
                tracefile: spec.tracefile,
            })
            .collect();
        let writers = StreamWriters::new(
            io,
            streams,
            factory,
            self.settings.restart_policy,
            self.stats.clone(),
            self.settings.max_writer_backlog_bytes,
        );
        let set = BufferSet::new(
            label,
            uid,
            buffers.clone(),
            writers,
            trace.metadata.clone(),
            self.settings.flush_interval,
            self.stats.clone(),
        );
        let addr = match session.snapshot {
            true => set.for_snapshots().start(),
            false => set.start(),
        };
        if key.owner.is_pid() {
            self.pid_budget.take(uid, bytes);
        }
        self.sets.insert(
            key.clone(),
            Set {
                addr,
                buffers,
                bytes,
                uid,
            },
        );
        Ok(())
    }

    /// Flushes (or tears down) the session's sets; resolves when they and every
    /// teardown in flight are done.
    fn settle(
        &mut self,
        session: &str,
        requests: Vec<Request<BufferSet, Flush>>,
    ) -> impl Future<Output = Result<(), FlushError>> + 'static {
        let finished = self.teardowns_finished(session);
        async move {
            let result = all_ok(requests).await;
            finished.await;
            result
        }
    }
}

/// Replaces a trace's metadata snapshot after its registry changed.
fn publish_metadata(trace: &Trace) {
    if let Ok(mut m) = trace.metadata.lock() {
        m.version = trace.version;
        m.tsdl = trace.registry.metadata().into();
    }
}

impl Actor for BufferFactory {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        ctx.run_interval(rotation::SCHEDULE_TICK, |act, ctx| {
            act.rotate_on_schedule(ctx)
        });
    }
}

/// An app registered: give it every buffer it needs for the started sessions, or,
/// when a limit leaves it nothing, the refusal (the registration then sends
/// [`AppGone`]). A limit that refuses some channels only is counted, and the app
/// keeps the others.
#[derive(Message)]
#[rtype(result = "Result<Vec<Grant>, Refusal>")]
pub struct CreateBuffers {
    /// The app's connection: what the factory knows it by.
    pub connection: ConnectionId,
    /// From SO_PEERCRED.
    pub pid: i32,
    /// From SO_PEERCRED.
    pub uid: u32,
    /// Program name.
    pub name: String,
    /// Its events.
    pub events: Vec<EventDesc>,
    /// Where later pushes go.
    pub app: Addr<AppConnection>,
}

impl Handler<CreateBuffers> for BufferFactory {
    type Result = MessageResult<CreateBuffers>;

    fn handle(&mut self, msg: CreateBuffers, ctx: &mut Context<Self>) -> Self::Result {
        // Per-app limits first: an oversized registration is refused before any of
        // its events is looked at, so it costs no uid anything.
        if let Err(e) = self.settings.event_limits.check_app(&msg.events) {
            return MessageResult(Err(Refusal::Events(e)));
        }
        self.apps.insert(
            msg.connection,
            App {
                pid: msg.pid,
                uid: msg.uid,
                name: msg.name,
                registered_at: SystemTime::now(),
                events: msg.events,
                addr: msg.app,
                channels: BTreeMap::new(),
                refused: BTreeSet::new(),
            },
        );
        let delta = self.delta(msg.connection);
        if let Some(limit) = delta.limit {
            // What was made for it goes as if it had exited: its per-PID sets are
            // torn down; events it added to a shared trace stay declared. It never
            // received the rings, so no producer of theirs died.
            if let Some(app) = self.apps.get_mut(&msg.connection) {
                app.channels.clear();
            }
            self.forget_app(msg.connection, ctx);
            return MessageResult(Err(Refusal::Events(limit)));
        }
        MessageResult(match delta.refused {
            Some(refusal) if delta.grants.is_empty() => Err(refusal),
            Some(refusal) => {
                log::warn!(
                    "app {} (uid {}, connection {}): a channel refused: {refusal}",
                    msg.pid,
                    msg.uid,
                    msg.connection
                );
                self.stats.refused(&refusal);
                Ok(delta.grants)
            }
            None => Ok(delta.grants),
        })
    }
}

/// A registered app registers more events (late registration): they are checked
/// against the per-app limits with the app's earlier events, indexed after them,
/// and given what the started sessions enable of them. Answers the index of the
/// first and the grants; a limit refuses the whole batch and leaves the app as it
/// was (events a shared trace declared before the limit stay declared, as at
/// registration).
#[derive(Message)]
#[rtype(result = "Result<(u32, Vec<Grant>), Refusal>")]
pub struct AddEvents {
    /// The app's connection.
    pub connection: ConnectionId,
    /// The new events.
    pub events: Vec<EventDesc>,
}

impl Handler<AddEvents> for BufferFactory {
    type Result = MessageResult<AddEvents>;

    fn handle(&mut self, msg: AddEvents, _: &mut Context<Self>) -> Self::Result {
        let Some(app) = self.apps.get_mut(&msg.connection) else {
            return MessageResult(Err(Refusal::FactoryUnavailable(
                "the app is not registered".to_string(),
            )));
        };
        let first = app.events.len();
        let mut all = std::mem::take(&mut app.events);
        all.extend(msg.events);
        let checked = self.settings.event_limits.check_app(&all);
        app.events = all;
        if let Err(e) = checked {
            app.events.truncate(first);
            return MessageResult(Err(Refusal::Events(e)));
        }
        let delta = self.delta(msg.connection);
        let app = self.apps.get_mut(&msg.connection).expect("checked above");
        if let Some(limit) = delta.limit {
            // Undo what the batch was given: its indices, and the channels the
            // grants would have opened (their rings were never sent).
            let opened: HashSet<u64> = delta
                .grants
                .iter()
                .filter(|g| g.buffers.is_some())
                .map(|g| g.key)
                .collect();
            app.events.truncate(first);
            app.channels
                .retain(|_, channel| !opened.contains(&channel.key));
            for channel in app.channels.values_mut() {
                channel.enabled.retain(|&index| (index as usize) < first);
            }
            return MessageResult(Err(Refusal::Events(limit)));
        }
        if let Some(refusal) = delta.refused {
            log::warn!(
                "app {} (uid {}, connection {}): a channel refused: {refusal}",
                app.pid,
                app.uid,
                msg.connection
            );
            self.stats.refused(&refusal);
        }
        MessageResult(Ok((first as u32, delta.grants)))
    }
}

/// The SessionManager's sessions changed (created, channel or event enabled or
/// disabled, started): every app stops recording what is no longer enabled, then
/// gets what it now misses.
#[derive(Message)]
#[rtype(result = "()")]
pub struct SessionsChanged(pub Vec<SessionDef>);

impl Handler<SessionsChanged> for BufferFactory {
    type Result = ();

    fn handle(&mut self, msg: SessionsChanged, _: &mut Context<Self>) {
        self.sessions = msg.0;
        self.keep_pool_ready();
        self.publish_rotations();
        let connections: Vec<ConnectionId> = self.apps.keys().copied().collect();
        for connection in connections {
            for (key, events) in self.revocations(connection) {
                self.apps[&connection]
                    .addr
                    .do_send(Push::Revoke { key, events });
            }
            let delta = self.delta(connection);
            if let Some(refusal) = delta.refused {
                // A registered app cannot be refused any more: it keeps what it has,
                // misses this channel, and the operator sees the count.
                log::warn!("app connection {connection}: a channel refused: {refusal}");
                self.stats.refused(&refusal);
            }
            if let Some(e) = delta.limit {
                log::warn!("app connection {connection}: not every matching event enabled: {e}");
            }
            if !delta.grants.is_empty() {
                self.apps[&connection]
                    .addr
                    .do_send(Push::Grants(delta.grants));
            }
        }
    }
}

/// New writer restart limits (a config reload): the writers of every buffer set
/// made from now on get them; those running keep the limits they started with.
#[derive(Message)]
#[rtype(result = "()")]
pub struct SetRestartPolicy(pub RestartPolicy);

impl Handler<SetRestartPolicy> for BufferFactory {
    type Result = ();

    fn handle(&mut self, msg: SetRestartPolicy, _: &mut Context<Self>) {
        self.settings.restart_policy = msg.0;
    }
}

/// Stop recording a session and store everything it recorded; answers when on disk.
#[derive(Message)]
#[rtype(result = "Result<(), FlushError>")]
pub struct StopSession(pub String);

/// Stop a session and free everything of it.
#[derive(Message)]
#[rtype(result = "Result<(), FlushError>")]
pub struct DestroySession(pub String);

impl BufferFactory {
    /// Tells every app to stop writing into `session`'s channels; with `forget`,
    /// drops them from what the apps were given.
    fn disable_apps(&mut self, session: &str, forget: bool) {
        for app in self.apps.values_mut() {
            let keys: Vec<SetKey> = app
                .channels
                .keys()
                .filter(|k| k.session == session)
                .cloned()
                .collect();
            for k in keys {
                let key = app.channels[&k].key;
                app.addr.do_send(Push::Disable(key));
                if forget {
                    app.channels.remove(&k);
                } else if let Some(c) = app.channels.get_mut(&k) {
                    c.enabled.clear();
                }
            }
        }
    }
}

impl Handler<StopSession> for BufferFactory {
    type Result = ResponseFuture<Result<(), FlushError>>;

    fn handle(&mut self, msg: StopSession, _: &mut Context<Self>) -> Self::Result {
        if let Some(s) = self.sessions.iter_mut().find(|s| s.name == msg.0) {
            s.started = false;
        }
        self.keep_pool_ready();
        self.disable_apps(&msg.0, false);
        let flushes: Vec<_> = self
            .sets
            .iter()
            .filter(|(k, _)| k.session == msg.0)
            .map(|(_, set)| set.addr.send(Flush))
            .collect();
        Box::pin(self.settle(&msg.0, flushes))
    }
}

/// Every registered app, for `list --apps`.
#[derive(Message)]
#[rtype(result = "Vec<AppInfo>")]
pub struct ListApps;

impl Handler<ListApps> for BufferFactory {
    type Result = MessageResult<ListApps>;

    fn handle(&mut self, _: ListApps, _: &mut Context<Self>) -> Self::Result {
        let mut apps: Vec<AppInfo> = self
            .apps
            .values()
            .map(|app| {
                let name = |i: &u32| app.events.get(*i as usize).map(EventDesc::full_name);
                let channels = app
                    .channels
                    .iter()
                    .map(|(set, given)| {
                        let mut enabled: Vec<String> =
                            given.enabled.iter().filter_map(name).collect();
                        enabled.sort();
                        AppChannelInfo {
                            session: set.session.clone(),
                            channel: set.channel.clone(),
                            buffers: set.owner.buffering(),
                            enabled,
                        }
                    })
                    .collect();
                AppInfo {
                    pid: app.pid,
                    uid: app.uid,
                    procname: names::procname(&app.name),
                    registered_unix_ms: app
                        .registered_at
                        .duration_since(std::time::UNIX_EPOCH)
                        .map_or(0, |d| d.as_millis() as u64),
                    events: app.events.iter().map(EventDesc::full_name).collect(),
                    channels,
                }
            })
            .collect();
        apps.sort_by_key(|a| (a.registered_unix_ms, a.pid));
        MessageResult(apps)
    }
}

impl Handler<DestroySession> for BufferFactory {
    type Result = ResponseFuture<Result<(), FlushError>>;

    fn handle(&mut self, msg: DestroySession, ctx: &mut Context<Self>) -> Self::Result {
        self.sessions.retain(|s| s.name != msg.0);
        self.keep_pool_ready();
        self.disable_apps(&msg.0, true);
        self.traces.retain(|(session, _), _| *session != msg.0);
        self.snapshots_taken.remove(&msg.0);
        self.chunks.remove(&msg.0);
        self.publish_rotations();
        self.tear_down(|k| k.session == msg.0, ctx);
        Box::pin(self.settle(&msg.0, Vec::new()))
    }
}

/// Logs, for each rule of `channel` matching `event` whose filter names fields the
/// event does not have, that the rule records nothing of it (LTTng's semantics).
fn warn_missing_fields(connection: ConnectionId, channel: &ChannelDef, event: &EventDesc) {
    for rule in channel.rules.iter().filter(|r| r.matches(event)) {
        let Some(filter) = &rule.filter else { continue };
        let missing = filter.missing_fields(event);
        if !missing.is_empty() {
            let fields: Vec<&str> = event.fields.iter().map(|f| f.name.as_str()).collect();
            log::warn!(
                "app connection {connection}: event {} has no field {} (its fields: {}): \
                 the rule `{rule}` records none of it",
                event.full_name(),
                missing.join(", "),
                fields.join(", ")
            );
        }
    }
}
