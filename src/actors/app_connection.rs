//! AppConnection: one actor per app connection, for the app's whole life.
//!
//! It reads the app's Hello and registration, asks the BufferFactory for buffers
//! (CreateBuffers), sends them (Channel frames with fds over SCM_RIGHTS, Enable), and
//! only then RegistrationDone: the app's init returns once its first event can be
//! recorded. Later pushes (a session started, an event enabled, a session stopped)
//! come from the factory as [`Push`] and go out in order over the same connection.
//!
//! What happens when an app dies: its connection reaches EOF (exit, crash, SIGKILL
//! alike: the kernel closes the socket), the reader task ends, this actor tells the
//! factory `AppGone` and stops. The factory tears the app's per-PID buffers down in
//! their own actors, so a slow teardown never delays anyone's registration.
//!
//! Identity: the app is its connection, named by the [`ConnectionId`] the Registrar
//! gave it, never by its pid. A socket outlives the process that connected it (a
//! child connects and exits, its parent keeps the fd and registers), and pids are
//! reused, so two connections may carry the same SO_PEERCRED pid; they never share
//! an id, and per-PID buffers and traces belong to the id. The credentials are read
//! again when the AppRegister arrives and must equal those seen at accept.
//!
//! What a peer may hold: before registering, its frames are bounded by
//! `daemon.max_frame_bytes` and by `daemon.registration_timeout_ms` (memory grows
//! with the bytes that actually arrive, not with the length a header announces).
//! After registering, an app sends only late registrations ([`AppRequest`]), one
//! at a time: each frame is bounded by [`MAX_LATE_FRAME`] and must arrive whole
//! within the registration timeout of its first byte, and the next is read only
//! once the previous one was answered, so a registered peer holds at most one such
//! frame in the daemon.
//!
//! Late registration: the events are checked as at registration (names,
//! `limits.max_events_per_app` counting the app's earlier events, fields, the
//! traces' limits), merged by the factory ([`AddEvents`]), and answered with the
//! grants they need then `EventsRegistered`, or `EventsRefused` with the reason;
//! the app stays registered either way.
//!
//! Anything malformed (an oversized length, garbage, a wrong version, a second
//! registration, a partial frame after it) is logged and closes this connection only. A
//! registration with an event description the metadata cannot declare
//! (`registry::validate`: names that are not identifiers, a NUL, bad enum
//! labels...) is refused with `Refused`, whose reason names the event, and never
//! reaches the factory.

use crate::actors::buffer_factory::{AddEvents, AppGone, BufferFactory, CreateBuffers};
use crate::actors::framed;
use crate::actors::registrar::UidSlot;
use crate::actors::stats::Stats;
use crate::ctf::context::ContextType;
use crate::ctf::field::EventDesc;
use crate::filter::Program;
use crate::protocol::frame;
use crate::protocol::messages::{AppCommand, AppRegister, AppRequest, MAX_LATE_FRAME};
use crate::protocol::peer::{self, PeerCredentials};
use crate::shm::ChannelBuffers;
use crate::trace::registry::{self, RegistryError};
use actix::prelude::*;
use std::collections::HashMap;
use std::os::fd::{AsFd, BorrowedFd};
use std::sync::Arc;
use tokio::net::UnixStream;
use tokio::net::unix::{OwnedReadHalf, OwnedWriteHalf};
use tokio::sync::mpsc;

/// The daemon's name for one app connection, assigned at accept from a counter and
/// never reused while the daemon runs. Apps, per-PID buffer sets and per-PID traces
/// are keyed by it, never by pid: a pid can be reused, and a connection can outlive
/// its process, so two live connections may share a pid but never an id.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ConnectionId(pub u64);

impl std::fmt::Display for ConnectionId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.0)
    }
}

/// Why the daemon will not trace an app: sent to it as `Refused { reason }` (the
/// app prints it in its one warning line) and counted in `ustrace status` under
/// [`Refusal::cause`].
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    /// As many apps are connected as the daemon serves.
    #[error("limits.max_apps ({max}) reached: the daemon traces at most {max} apps at once")]
    MaxApps {
        /// The limit.
        max: u64,
    },
    /// The app's uid has as many apps connected as one uid may.
    #[error("limits.max_apps_per_uid ({max}) reached: uid {uid} has {max} apps connected already")]
    MaxAppsPerUid {
        /// The app's uid (SO_PEERCRED).
        uid: u32,
        /// The limit.
        max: u64,
    },
    /// Per-PID buffers of all apps together hold as much memory as allowed.
    #[error(
        "limits.max_pid_buffer_bytes ({max} bytes) reached: no memory left for per-PID buffers"
    )]
    PidBufferBytes {
        /// The limit.
        max: u64,
    },
    /// Per-PID buffers of the app's uid hold as much memory as one uid may.
    #[error(
        "limits.max_pid_buffer_bytes_per_uid ({max} bytes) reached by the per-PID buffers of uid {uid}"
    )]
    PidBufferBytesPerUid {
        /// The app's uid (SO_PEERCRED).
        uid: u32,
        /// The limit.
        max: u64,
    },
    /// The factory did not answer in time.
    #[error("no buffers within daemon.registration_timeout_ms ({ms} ms)")]
    Timeout {
        /// The timeout.
        ms: u128,
    },
    /// The factory actor is gone (the daemon is stopping).
    #[error("buffer factory unavailable: {0}")]
    FactoryUnavailable(String),
    /// The app's events pass a limit of `[limits]` (events, fields, metadata).
    #[error(transparent)]
    Events(RegistryError),
}

impl Refusal {
    /// The limit (its config key) or cause, under which `status` counts it.
    pub fn cause(&self) -> &'static str {
        match self {
            Refusal::MaxApps { .. } => "limits.max_apps",
            Refusal::MaxAppsPerUid { .. } => "limits.max_apps_per_uid",
            Refusal::PidBufferBytes { .. } => "limits.max_pid_buffer_bytes",
            Refusal::PidBufferBytesPerUid { .. } => "limits.max_pid_buffer_bytes_per_uid",
            Refusal::Timeout { .. } => "daemon.registration_timeout_ms",
            Refusal::FactoryUnavailable(_) => "buffer factory unavailable",
            Refusal::Events(e) => e.limit().unwrap_or("event description"),
        }
    }
}

/// Buffers for one channel of an app: what it is missing, as the factory computed.
pub struct Grant {
    /// The channel's key for this app.
    pub key: u64,
    /// The rings, if the app does not have this channel yet: their fds are sent.
    pub buffers: Option<Arc<ChannelBuffers>>,
    /// The contexts the channel's events carry, sent with the rings.
    pub contexts: Vec<ContextType>,
    /// `(event index, event id)` pairs to enable (again, for a changed filter).
    pub enables: Vec<(u32, u32)>,
    /// The filter of each of `enables` recorded only when its values pass one.
    pub filters: HashMap<u32, Program>,
}

/// What the daemon allows one app connection.
#[derive(Clone, Copy, Debug)]
pub struct AppLimits {
    /// Largest frame accepted from the app (`daemon.max_frame_bytes`).
    pub max_frame: usize,
    /// Apps connected at once beyond which new ones are refused (`limits.max_apps`).
    pub max_apps: u64,
    /// Apps of one uid connected at once beyond which its new ones are refused
    /// (`limits.max_apps_per_uid`).
    pub max_apps_per_uid: u64,
    /// Longest the daemon takes to hand an app its buffers before refusing it
    /// (`daemon.registration_timeout_ms`).
    pub registration_timeout: std::time::Duration,
}

/// Something the factory pushes to a registered app.
#[derive(Message)]
#[rtype(result = "()")]
pub enum Push {
    /// New channels or events.
    Grants(Vec<Grant>),
    /// Stop writing into a channel.
    Disable(u64),
    /// Stop writing these events (indices into the app's events) into channel `key`.
    Revoke {
        /// The app's channel key.
        key: u64,
        /// The events.
        events: Vec<u32>,
    },
}

/// One frame to send, with the rings whose fds (eventfd first) it carries.
type Outgoing = (Vec<u8>, Option<Arc<ChannelBuffers>>);

/// The actor.
pub struct AppConnection {
    /// The daemon's name for this connection: what the factory knows the app by.
    connection: ConnectionId,
    /// From SO_PEERCRED at accept (pid for logs and directory names, uid for
    /// per-UID buffers and per-uid limits).
    credentials: PeerCredentials,
    /// Its place under `limits.max_apps_per_uid` (none for the daemon's own uid),
    /// given back when this actor drops.
    _slot: Option<UidSlot>,
    /// Frame size, app count and registration time limits.
    limits: AppLimits,
    /// The factory.
    factory: Addr<BufferFactory>,
    /// Frames to send, in order, by the sender task.
    outbox: mpsc::UnboundedSender<Outgoing>,
    /// The read half until `started` hands it to the reader task.
    reader: Option<OwnedReadHalf>,
    /// Whether the app registered already.
    registered: bool,
    /// When its connection was accepted, for the service-time histogram.
    accepted: std::time::Instant,
    /// Daemon counters.
    stats: Arc<Stats>,
}

/// A frame read from the app, or the end of the connection.
#[derive(Message)]
#[rtype(result = "()")]
enum Inbound {
    /// The registration.
    Register(AppRegister),
    /// A late registration, answered before the next frame is read (`done`).
    Late(AppRequest, tokio::sync::oneshot::Sender<()>),
    /// EOF or a protocol error: the connection is over.
    Closed(Option<ConnectionError>),
}

/// Why the daemon closes an app's connection: what the peer did wrong. Logged with
/// the app's pid, uid and connection.
#[derive(Debug, thiserror::Error)]
pub enum ConnectionError {
    /// A frame was bad, or reading failed.
    #[error(transparent)]
    Frame(#[from] framed::FrameError),
    /// The peer closed after its hello, before registering.
    #[error("closed before registering")]
    NoRegistration,
    /// The peer did not register in time.
    #[error("no registration within daemon.registration_timeout_ms ({} ms)", .0.as_millis())]
    Timeout(std::time::Duration),
    /// SO_PEERCRED could not be read again.
    #[error(transparent)]
    Credentials(#[from] crate::protocol::ProtocolError),
    /// Another process holds the socket now than the one that connected.
    #[error("peer credentials changed between connect ({accepted:?}) and registration ({now:?})")]
    CredentialsChanged {
        /// At accept.
        accepted: PeerCredentials,
        /// At registration.
        now: PeerCredentials,
    },
    /// A late registration frame did not arrive whole in time after its first byte.
    #[error(
        "a late registration frame not whole within daemon.registration_timeout_ms ({} ms)",
        .0.as_millis()
    )]
    LateFrameTimeout(std::time::Duration),
}

impl AppConnection {
    /// Starts the actor for a freshly accepted connection `connection`, whose
    /// `credentials` came from SO_PEERCRED and whose uid holds `slot`.
    pub fn start(
        stream: UnixStream,
        connection: ConnectionId,
        credentials: PeerCredentials,
        slot: Option<UidSlot>,
        limits: AppLimits,
        factory: Addr<BufferFactory>,
        stats: Arc<Stats>,
    ) -> Addr<AppConnection> {
        // Counted from creation to drop: the app limit sees connections not yet started.
        Stats::add(&stats.apps, 1);
        let (reader, writer) = stream.into_split();
        let (outbox, queue) = mpsc::unbounded_channel();
        actix_rt::spawn(send_frames(writer, queue, connection));
        AppConnection {
            connection,
            credentials,
            _slot: slot,
            limits,
            factory,
            outbox,
            reader: Some(reader),
            registered: false,
            accepted: std::time::Instant::now(),
            stats,
        }
        .start()
    }

    /// Queues a command for the app.
    fn send(&self, command: &AppCommand, buffers: Option<Arc<ChannelBuffers>>) {
        match frame::encode(command) {
            Ok(bytes) => {
                let _ = self.outbox.send((bytes, buffers));
            }
            Err(e) => log::error!(
                "app {} (connection {}): cannot encode {command:?}: {e}",
                self.credentials.pid,
                self.connection
            ),
        }
    }

    /// Sends grants: each new channel's fds first, then its enables.
    fn send_grants(&self, grants: Vec<Grant>) {
        for grant in grants {
            if let Some(buffers) = grant.buffers {
                let streams = buffers.rings().len() as u32;
                self.send(
                    &AppCommand::Channel {
                        key: grant.key,
                        streams,
                        contexts: grant.contexts.clone(),
                    },
                    Some(buffers),
                );
            }
            // Unfiltered events in one frame, each filtered one in its own: a frame
            // stays bounded by one program's size whatever the number of events.
            let (filtered, plain): (Vec<_>, Vec<_>) = grant
                .enables
                .into_iter()
                .partition(|(index, _)| grant.filters.contains_key(index));
            if !plain.is_empty() {
                self.send(
                    &AppCommand::Enable {
                        key: grant.key,
                        events: plain,
                        filters: Vec::new(),
                    },
                    None,
                );
            }
            for (index, id) in filtered {
                let program = grant.filters[&index].clone();
                self.send(
                    &AppCommand::Enable {
                        key: grant.key,
                        events: vec![(index, id)],
                        filters: vec![(index, program)],
                    },
                    None,
                );
            }
        }
    }
}

/// Reads the Hello and the registration, then late registrations until EOF.
///
/// A peer gets `limits.registration_timeout` to say hello and register: one that
/// connects and says nothing (or sends part of a frame) would otherwise hold a
/// connection, a place under `max_apps` and its bytes for ever. The peer's
/// credentials are read again once the registration arrived and must be those of
/// `accepted`. After it, one late registration at a time, each bounded by
/// [`MAX_LATE_FRAME`] and by the registration timeout from its first byte.
async fn read_frames(
    mut reader: OwnedReadHalf,
    limits: AppLimits,
    accepted: PeerCredentials,
    addr: Addr<AppConnection>,
) {
    let max = limits.max_frame;
    let outcome = async {
        let first = async {
            framed::read_hello(&mut reader).await?;
            framed::read_frame::<AppRegister>(&mut reader, max)
                .await?
                .ok_or(ConnectionError::NoRegistration)
        };
        let register = tokio::time::timeout(limits.registration_timeout, first)
            .await
            .map_err(|_| ConnectionError::Timeout(limits.registration_timeout))??;
        let now = peer::credentials(reader.as_ref())?;
        if now != accepted {
            return Err(ConnectionError::CredentialsChanged { accepted, now });
        }
        addr.do_send(Inbound::Register(register));
        let max = MAX_LATE_FRAME.min(max);
        loop {
            // Idle for as long as the app likes; once a frame starts (its first
            // byte is here, not merely a readiness left set by the last read), it
            // must be whole within the registration timeout.
            framed::wait_for_bytes(&reader)
                .await
                .map_err(framed::FrameError::Io)?;
            let request = tokio::time::timeout(
                limits.registration_timeout,
                framed::read_frame::<AppRequest>(&mut reader, max),
            )
            .await
            .map_err(|_| ConnectionError::LateFrameTimeout(limits.registration_timeout))??;
            let Some(request) = request else {
                return Ok(());
            };
            let (done, answered) = tokio::sync::oneshot::channel();
            addr.do_send(Inbound::Late(request, done));
            if answered.await.is_err() {
                return Ok(());
            }
        }
    }
    .await;
    addr.do_send(Inbound::Closed(outcome.err()));
}

/// Sends queued frames in order; fds ride on the first bytes of their frame.
///
/// Frames queued together (a registration's channels, enables and
/// RegistrationDone) go out in one `sendmsg` up to the next frame that carries
/// fds, which starts the next one: the app then finds them all in one wake-up.
async fn send_frames(
    writer: OwnedWriteHalf,
    mut queue: mpsc::UnboundedReceiver<Outgoing>,
    connection: ConnectionId,
) {
    let mut next = None;
    loop {
        let (mut bytes, buffers) = match next.take() {
            Some(frame) => frame,
            None => match queue.recv().await {
                Some(frame) => frame,
                None => return,
            },
        };
        while let Ok(frame) = queue.try_recv() {
            if frame.1.is_some() {
                next = Some(frame);
                break;
            }
            bytes.extend_from_slice(&frame.0);
        }
        let borrowed: Vec<BorrowedFd> = match &buffers {
            Some(b) => std::iter::once(b.wakeup().as_fd())
                .chain(b.rings().iter().map(|r| r.as_fd()))
                .collect(),
            None => Vec::new(),
        };
        if let Err(e) = framed::write_bytes(&writer, &bytes, &borrowed).await {
            log::warn!("app connection {connection}: send failed: {e}");
            return;
        }
    }
}

impl Actor for AppConnection {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        if let Some(reader) = self.reader.take() {
            actix_rt::spawn(read_frames(
                reader,
                self.limits,
                self.credentials,
                ctx.address(),
            ));
        }
    }
}

impl Drop for AppConnection {
    fn drop(&mut self) {
        Stats::sub(&self.stats.apps);
    }
}

impl Handler<Inbound> for AppConnection {
    type Result = ();

    fn handle(&mut self, msg: Inbound, ctx: &mut Context<Self>) {
        match msg {
            Inbound::Register(register) if !self.registered => {
                if let Err(refusal) = check_events(&register.events) {
                    log::warn!(
                        "app {} (uid {}): {refusal}",
                        self.credentials.pid,
                        self.credentials.uid
                    );
                    self.send(&AppCommand::Refused { reason: refusal }, None);
                    ctx.stop();
                    return;
                }
                self.registered = true;
                Stats::add(&self.stats.apps_total, 1);
                let request = self.factory.send(CreateBuffers {
                    connection: self.connection,
                    pid: self.credentials.pid.as_raw(),
                    uid: self.credentials.uid.as_raw(),
                    name: register.name,
                    events: register.events,
                    app: ctx.address(),
                });
                // The daemon's own bound on registration: past it the app is told to
                // run untraced rather than left waiting for its own timeout.
                let timeout = self.limits.registration_timeout;
                let request = tokio::time::timeout(timeout, request);
                // `wait`: pushes that arrive meanwhile go out after these grants.
                ctx.wait(request.into_actor(self).map(move |grants, act, ctx| {
                    let refusal = match grants {
                        Ok(Ok(Ok(grants))) => {
                            act.send_grants(grants);
                            act.send(&AppCommand::RegistrationDone, None);
                            act.stats.registration_served(act.accepted.elapsed());
                            return;
                        }
                        Ok(Ok(Err(refusal))) => refusal,
                        Ok(Err(e)) => Refusal::FactoryUnavailable(e.to_string()),
                        Err(_) => Refusal::Timeout {
                            ms: timeout.as_millis(),
                        },
                    };
                    log::warn!(
                        "app {} (uid {}, connection {}) refused: {refusal}",
                        act.credentials.pid,
                        act.credentials.uid,
                        act.connection
                    );
                    act.stats.refused(&refusal);
                    act.send(
                        &AppCommand::Refused {
                            reason: refusal.to_string(),
                        },
                        None,
                    );
                    act.factory.do_send(AppGone {
                        connection: act.connection,
                    });
                    ctx.stop();
                }));
            }
            Inbound::Register(_) => {}
            Inbound::Late(AppRequest::RegisterEvents { events }, done) => {
                self.register_late(events, done, ctx)
            }
            Inbound::Closed(error) => {
                if let Some(e) = error {
                    log::warn!(
                        "app {} (uid {}, connection {}): {e}; closing its connection",
                        self.credentials.pid,
                        self.credentials.uid,
                        self.connection
                    );
                }
                if self.registered {
                    self.factory.do_send(AppGone {
                        connection: self.connection,
                    });
                }
                ctx.stop();
            }
        }
    }
}

impl AppConnection {
    /// Answers a late registration: the grants its events need then
    /// `EventsRegistered`, or `EventsRefused`. `done` tells the reader it may read
    /// the next frame.
    fn register_late(
        &mut self,
        events: Vec<EventDesc>,
        done: tokio::sync::oneshot::Sender<()>,
        ctx: &mut Context<Self>,
    ) {
        let count = events.len() as u32;
        if let Err(reason) = check_events(&events) {
            self.refuse_late(reason);
            let _ = done.send(());
            return;
        }
        let request = self.factory.send(AddEvents {
            connection: self.connection,
            events,
        });
        let timeout = self.limits.registration_timeout;
        let request = tokio::time::timeout(timeout, request);
        // `wait`: the answer goes out before any push that arrives meanwhile.
        ctx.wait(request.into_actor(self).map(move |answer, act, _| {
            let refusal = match answer {
                Ok(Ok(Ok((first, grants)))) => {
                    act.send_grants(grants);
                    act.send(&AppCommand::EventsRegistered { first, count }, None);
                    let _ = done.send(());
                    return;
                }
                Ok(Ok(Err(refusal))) => refusal,
                Ok(Err(e)) => Refusal::FactoryUnavailable(e.to_string()),
                Err(_) => Refusal::Timeout {
                    ms: timeout.as_millis(),
                },
            };
            act.stats.refused(&refusal);
            act.refuse_late(refusal.to_string());
            let _ = done.send(());
        }));
    }

    /// Tells the app its late events were refused, and logs why.
    fn refuse_late(&self, reason: String) {
        log::warn!(
            "app {} (uid {}, connection {}): late events refused: {reason}",
            self.credentials.pid,
            self.credentials.uid,
            self.connection
        );
        self.send(&AppCommand::EventsRefused { reason }, None);
    }
}

/// Refuses a registration holding an event description that the metadata could
/// not declare (a name that is not an identifier, a NUL, a label with control
/// characters...): written into TSDL it would make babeltrace2 reject the whole
/// session, every other app's events with it. The reason names the event.
fn check_events(events: &[EventDesc]) -> Result<(), String> {
    for (index, event) in events.iter().enumerate() {
        registry::validate(event).map_err(|e| format!("event {index}: {e}"))?;
    }
    Ok(())
}

impl Handler<Push> for AppConnection {
    type Result = ();

    fn handle(&mut self, push: Push, _: &mut Context<Self>) {
        match push {
            Push::Grants(grants) => self.send_grants(grants),
            Push::Disable(key) => self.send(&AppCommand::Disable { key }, None),
            Push::Revoke { key, events } => {
                self.send(&AppCommand::DisableEvents { key, events }, None)
            }
        }
    }
}

/// Refuses an app before it gets an actor (an app limit is reached), counting it.
pub async fn refuse(stream: UnixStream, refusal: Refusal, stats: Arc<Stats>) {
    stats.refused(&refusal);
    let (_, writer) = stream.into_split();
    let reason = refusal.to_string();
    let _ = framed::write_frame(&writer, &AppCommand::Refused { reason }, &[]).await;
}
