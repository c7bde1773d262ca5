//! AppRegistration: one actor per app connection, for the app's whole life.
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
//! Anything malformed (an oversized length, garbage, a wrong version, a second
//! registration) is logged and closes this connection only. A registration with an
//! event description the metadata cannot declare (`registry::validate`: names that
//! are not identifiers, a NUL, bad enum labels...) is refused with `Refused`, whose
//! reason names the event, and never reaches the factory.

use crate::actors::buffer_factory::{AppGone, BufferFactory, CreateBuffers};
use crate::actors::framed;
use crate::actors::stats::Stats;
use crate::ctf::field::EventDesc;
use crate::ctf::registry;
use crate::protocol::frame;
use crate::protocol::messages::{AppCommand, AppRegister};
use crate::shm::ChannelBuffers;
use actix::prelude::*;
use std::os::fd::{AsFd, BorrowedFd};
use std::sync::Arc;
use tokio::net::UnixStream;
use tokio::net::unix::{OwnedReadHalf, OwnedWriteHalf};
use tokio::sync::mpsc;

/// Buffers for one channel of an app: what it is missing, as the factory computed.
pub struct Grant {
    /// The channel's key for this app.
    pub key: u64,
    /// The rings, if the app does not have this channel yet: their fds are sent.
    pub buffers: Option<Arc<ChannelBuffers>>,
    /// `(event index, event id)` pairs to enable.
    pub enables: Vec<(u32, u32)>,
}

/// What the daemon allows one app connection.
#[derive(Clone, Copy, Debug)]
pub struct AppLimits {
    /// Largest frame accepted from the app (`daemon.max_frame_bytes`).
    pub max_frame: usize,
    /// Apps connected at once beyond which new ones are refused (`limits.max_apps`).
    pub max_apps: u64,
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
}

/// One frame to send, with the rings whose fds (eventfd first) it carries.
type Outgoing = (Vec<u8>, Option<Arc<ChannelBuffers>>);

/// The actor.
pub struct AppRegistration {
    /// From SO_PEERCRED.
    pid: i32,
    /// From SO_PEERCRED.
    uid: u32,
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
    /// EOF or a protocol error: the connection is over.
    Closed(Option<String>),
}

impl AppRegistration {
    /// Starts the actor for a freshly accepted connection; credentials come from
    /// SO_PEERCRED.
    pub fn start(
        stream: UnixStream,
        pid: i32,
        uid: u32,
        limits: AppLimits,
        factory: Addr<BufferFactory>,
        stats: Arc<Stats>,
    ) -> Addr<AppRegistration> {
        // Counted from creation to drop: the app limit sees connections not yet started.
        Stats::add(&stats.apps, 1);
        let (reader, writer) = stream.into_split();
        let (outbox, queue) = mpsc::unbounded_channel();
        actix_rt::spawn(send_frames(writer, queue, pid));
        AppRegistration {
            pid,
            uid,
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
            Err(e) => log::error!("app {}: cannot encode {command:?}: {e}", self.pid),
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
                    },
                    Some(buffers),
                );
            }
            if !grant.enables.is_empty() {
                self.send(
                    &AppCommand::Enable {
                        key: grant.key,
                        events: grant.enables,
                    },
                    None,
                );
            }
        }
    }
}

/// Reads the Hello and the registration, then waits for EOF.
///
/// A peer gets `limits.registration_timeout` to say hello and register: one that
/// connects and says nothing would otherwise hold a connection, and a place under
/// `max_apps`, for ever.
async fn read_frames(mut reader: OwnedReadHalf, limits: AppLimits, addr: Addr<AppRegistration>) {
    let max = limits.max_frame;
    let outcome = async {
        let first = async {
            framed::read_hello(&mut reader).await?;
            framed::read_frame::<AppRegister>(&mut reader, max)
                .await?
                .ok_or_else(|| "closed before registering".to_string())
        };
        let register = tokio::time::timeout(limits.registration_timeout, first)
            .await
            .map_err(|_| {
                format!(
                    "no registration within daemon.registration_timeout_ms ({} ms)",
                    limits.registration_timeout.as_millis()
                )
            })??;
        addr.do_send(Inbound::Register(register));
        match framed::read_frame::<AppRegister>(&mut reader, max).await? {
            None => Ok(()),
            Some(_) => Err("unexpected frame after registration".to_string()),
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
    pid: i32,
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
            log::warn!("app {pid}: send failed: {e}");
            return;
        }
    }
}

impl Actor for AppRegistration {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        if let Some(reader) = self.reader.take() {
            actix_rt::spawn(read_frames(reader, self.limits, ctx.address()));
        }
    }
}

impl Drop for AppRegistration {
    fn drop(&mut self) {
        Stats::sub(&self.stats.apps);
    }
}

impl Handler<Inbound> for AppRegistration {
    type Result = ();

    fn handle(&mut self, msg: Inbound, ctx: &mut Context<Self>) {
        match msg {
            Inbound::Register(register) if !self.registered => {
                if let Err(refusal) = check_events(&register.events) {
                    log::warn!("app {} (uid {}): {refusal}", self.pid, self.uid);
                    self.send(&AppCommand::Refused { reason: refusal }, None);
                    ctx.stop();
                    return;
                }
                self.registered = true;
                Stats::add(&self.stats.apps_total, 1);
                let request = self.factory.send(CreateBuffers {
                    pid: self.pid,
                    uid: self.uid,
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
                        // Refused for a limit of `[limits]`: the app's doing, a warning.
                        Ok(Ok(Err(reason))) => {
                            log::warn!("app {} (uid {}) refused: {reason}", act.pid, act.uid);
                            act.send(&AppCommand::Refused { reason }, None);
                            ctx.stop();
                            return;
                        }
                        Ok(Ok(Ok(grants))) => {
                            act.send_grants(grants);
                            act.send(&AppCommand::RegistrationDone, None);
                            act.stats.registration_served(act.accepted.elapsed());
                            return;
                        }
                        Ok(Err(e)) => format!("buffer factory unavailable: {e}"),
                        Err(_) => format!(
                            "no buffers within daemon.registration_timeout_ms ({} ms)",
                            timeout.as_millis()
                        ),
                    };
                    log::error!("app {}: {refusal}", act.pid);
                    act.send(&AppCommand::Refused { reason: refusal }, None);
                    act.factory.do_send(AppGone { pid: act.pid });
                    ctx.stop();
                }));
            }
            Inbound::Register(_) => {}
            Inbound::Closed(error) => {
                if let Some(e) = error {
                    log::warn!(
                        "app {} (uid {}): {e}; closing its connection",
                        self.pid,
                        self.uid
                    );
                }
                if self.registered {
                    self.factory.do_send(AppGone { pid: self.pid });
                }
                ctx.stop();
            }
        }
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

impl Handler<Push> for AppRegistration {
    type Result = ();

    fn handle(&mut self, push: Push, _: &mut Context<Self>) {
        match push {
            Push::Grants(grants) => self.send_grants(grants),
            Push::Disable(key) => self.send(&AppCommand::Disable { key }, None),
        }
    }
}

/// Refuses an app before it gets an actor (the daemon's app limit is reached).
pub async fn refuse(stream: UnixStream, reason: String) {
    let (_, writer) = stream.into_split();
    let _ = framed::write_frame(&writer, &AppCommand::Refused { reason }, &[]).await;
}
