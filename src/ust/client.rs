//! The app's side of registration: connect, register, map the buffers, return; and
//! register again whenever a session daemon (re)appears.
//!
//! [`init`] blocks the caller (normally `main`) until the daemon's
//! RegistrationDone, so that the first event after it is recorded; LTTng-UST makes
//! the same promise. It never hangs and never fails the app: without a daemon, or
//! without an answer within the registration timeout (`USTRACE_REGISTER_TIMEOUT_MS`,
//! default 3000), it prints one warning and the app runs untraced until a daemon
//! registers it.
//!
//! After `init` one listener thread serves the daemon connection for the app's
//! whole life. It applies what the daemon pushes (channels of a session started
//! later, events enabled later, channels disabled by `stop`); the connection's EOF is
//! how the daemon learns the app is gone. When the connection ends (the daemon
//! stopped, crashed or was restarted), or when there was no daemon at `init`, the
//! thread first disables and releases every slot of that connection (nobody drains
//! those rings any more) and then tries to register again, [`FIRST_RETRY`] after
//! the loss and doubling up to [`LAST_RETRY`] between attempts (a refusal waits
//! [`LAST_RETRY`] at once): a daemon started or restarted later traces the app
//! again, with no busy loop. Released slots are reused by the next daemon's
//! channels (see `channel`), so restarts never exhaust them. The fast path never
//! waits on this thread: emitting threads only ever read atomics.
//!
//! Late registration: [`register_events`] adds events after `init` (a library
//! loaded later, the C library's constructors, a callsite met for the first time).
//! It sends them on the live connection and waits, bounded by the registration
//! timeout, for the daemon's answer, which the listener thread receives after the
//! grants the new events need: when it returns `Registered`, the new events'
//! first emission is recorded. Every event ever registered is kept, in order, and
//! sent whole by each later registration (a daemon restart), so late events are
//! traced again too. Registrations of all kinds run one at a time.
//!
//! fork(): the child inherits no thread, its parent's rings (per-PID ones are the
//! parent's own trace) and its parent's connection. `pthread_atfork` handlers take
//! the registration locks before the fork (so no other thread holds them in the
//! child), and in the child close the inherited connection, disable every slot and
//! event, and register the child as its own process before fork() returns in it,
//! as liblttng-ust does (LTTng needs liblttng-ust-fork.so preloaded for this):
//! its events go to its own per-PID sub-trace under its own pid. This runs more
//! than async-signal-safe code in the child (a thread, a socket, allocation), which
//! glibc supports after fork. `daemon()` forks through fork(), so its child
//! registers the same way; an exec'd program starts afresh (every descriptor of
//! ours is close-on-exec) and registers when it calls `init`.

use crate::ctf::context::ContextSet;
use crate::protocol::messages::{AppCommand, AppRegister, AppRequest, MAX_LATE_FRAME};
use crate::protocol::{self, APPS_SOCKET, ProtocolError, frame};
use crate::shm::ChannelBuffers;
use crate::ust::channel::{self, SlotId};
use crate::ust::tracepoint::{FILTERED, Tracepoint};
use std::collections::HashMap;
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::net::UnixStream;
use std::sync::mpsc::{Receiver, SyncSender};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};
use std::time::{Duration, Instant};

/// Registration timeout when `USTRACE_REGISTER_TIMEOUT_MS` is not set.
pub const DEFAULT_REGISTER_TIMEOUT: Duration = Duration::from_millis(3000);

/// How registration ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RegistrationOutcome {
    /// Registered: every buffer the active sessions need is mapped.
    Done {
        /// Channels received before RegistrationDone.
        channels: usize,
        /// Time from connect to RegistrationDone.
        latency: Duration,
    },
    /// Running untraced, for the reason given (also printed once on stderr).
    Untraced(String),
}

/// Pause before the first attempt to register again after a connection is lost
/// (or after `init` found no daemon); it doubles after each failed attempt.
pub const FIRST_RETRY: Duration = Duration::from_millis(100);

/// Longest pause between attempts to register, and the pause after a refusal.
pub const LAST_RETRY: Duration = Duration::from_secs(5);

/// The registration of this process; `init` runs it once.
static REGISTRATION: OnceLock<RegistrationOutcome> = OnceLock::new();

/// Every event of this process and the live connection, if any.
static KNOWN: Mutex<Known> = Mutex::new(Known {
    events: Vec::new(),
    link: None,
    next_link: 0,
});

/// Held by whoever registers (first, again, late): one registration at a time, so
/// a late batch is either in the events a registration sends or sent on its
/// connection afterwards, never lost between the two.
static SERIAL: Mutex<()> = Mutex::new(());

/// Locks `mutex`; what these mutexes guard stays consistent whatever panicked.
fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// What the process has registered and where.
struct Known {
    /// Every event, in the order registered (the order a new connection indexes them).
    events: Vec<&'static Tracepoint>,
    /// The live registered connection.
    link: Option<Link>,
    /// Names the next link.
    next_link: u64,
}

/// A registered connection, as late registrations use it.
struct Link {
    /// Tells this link from a later one.
    id: u64,
    /// A handle on the connection, to send late registrations on.
    sock: UnixStream,
    /// The events the daemon indexed on this connection (shared with its listener).
    events: Arc<Mutex<Vec<&'static Tracepoint>>>,
    /// The daemon's answers to late registrations, forwarded by the listener.
    answers: Arc<Mutex<Receiver<LateAnswer>>>,
}

/// The daemon's answer to one late registration.
#[derive(Debug)]
enum LateAnswer {
    /// Indexed from `first`.
    Registered(u32),
    /// Refused, with the daemon's reason.
    Refused(String),
}

/// How a late registration ([`register_events`]) ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum LateRegistration {
    /// The daemon indexed the events and sent every grant they need: their first
    /// emission from now on is recorded.
    Registered,
    /// No daemon connection now: the events go with the next registration (`init`
    /// or the next registration after a loss).
    Deferred,
    /// The daemon refused them (a limit or a bad description): they stay untraced.
    Refused(String),
    /// No answer within the registration timeout: the connection is given up and
    /// the events go with the next registration.
    NoAnswer(String),
}

/// Registers `events` after `init` (or before it: they then go with `init`'s
/// registration). Events registered already are skipped. Blocks, at most the
/// registration timeout per [`MAX_LATE_FRAME`] batch, until the daemon answered.
pub fn register_events(events: &[&'static Tracepoint]) -> LateRegistration {
    let _serial = lock(&SERIAL);
    let (fresh, link) = {
        let mut known = lock(&KNOWN);
        let fresh = add_known(&mut known, events);
        let link = known.link.as_ref().and_then(|l| {
            Some((
                l.sock.try_clone().ok()?,
                l.events.clone(),
                l.answers.clone(),
            ))
        });
        (fresh, link)
    };
    if fresh.is_empty() {
        return LateRegistration::Registered;
    }
    let Some((sock, indexed, answers)) = link else {
        return LateRegistration::Deferred;
    };
    let timeout = timeout().unwrap_or(DEFAULT_REGISTER_TIMEOUT);
    let mut outcome = LateRegistration::Registered;
    for batch in batches(&fresh) {
        let first = {
            let mut indexed = lock(&indexed);
            indexed.extend(batch);
            indexed.len() - batch.len()
        };
        let request = AppRequest::RegisterEvents {
            events: batch.iter().map(|e| e.desc()).collect(),
        };
        let answers = lock(&answers);
        let answer = sock
            .set_write_timeout(Some(timeout))
            .map_err(|e| e.to_string())
            .and_then(|()| frame::send(&sock, &request, &[]).map_err(|e| e.to_string()))
            .and_then(|()| {
                answers
                    .recv_timeout(timeout)
                    .map_err(|_| format!("no answer from the session daemon within {timeout:?}"))
            });
        match answer {
            Ok(LateAnswer::Registered(at)) if at as usize == first => {}
            Ok(LateAnswer::Registered(at)) => {
                let reason = format!("the daemon indexed late events from {at}, not {first}");
                return give_up(&sock, reason);
            }
            Ok(LateAnswer::Refused(reason)) => {
                lock(&indexed).truncate(first);
                let mut known = lock(&KNOWN);
                known
                    .events
                    .retain(|k| !batch.iter().any(|b| std::ptr::eq(*k, *b)));
                eprintln!(
                    "ustrace: {} late events run untraced: {reason}",
                    batch.len()
                );
                outcome = LateRegistration::Refused(reason);
            }
            Err(reason) => return give_up(&sock, reason),
        }
    }
    outcome
}

/// Ends a connection that failed a late registration: the listener then registers
/// again, with every known event.
fn give_up(sock: &UnixStream, reason: String) -> LateRegistration {
    eprintln!("ustrace: late registration failed: {reason}; registering again");
    let _ = sock.shutdown(std::net::Shutdown::Both);
    LateRegistration::NoAnswer(reason)
}

/// Adds the events not known yet, in order, and returns them.
fn add_known(known: &mut Known, events: &[&'static Tracepoint]) -> Vec<&'static Tracepoint> {
    let mut fresh: Vec<&'static Tracepoint> = Vec::new();
    for &event in events {
        let seen = |k: &&'static Tracepoint| std::ptr::eq(*k, event);
        if !known.events.iter().any(seen) && !fresh.iter().any(seen) {
            fresh.push(event);
        }
    }
    known.events.extend(&fresh);
    fresh
}

/// Splits events into batches whose request fits in [`MAX_LATE_FRAME`] (an event
/// too big for one alone goes alone, and the daemon refuses it).
fn batches<'a>(events: &'a [&'static Tracepoint]) -> Vec<&'a [&'static Tracepoint]> {
    // Room for the frame header, the enum tag and the vector's length.
    let room = MAX_LATE_FRAME - 64;
    let mut out = Vec::new();
    let (mut start, mut size) = (0, 0);
    for (i, event) in events.iter().enumerate() {
        let len = bincode::serialized_size(&event.desc()).map_or(room, |n| n as usize);
        if i > start && size + len > room {
            out.push(&events[start..i]);
            (start, size) = (i, 0);
        }
        size += len;
    }
    if start < events.len() {
        out.push(&events[start..]);
    }
    out
}

/// Registers this process as `name` with its `events` (and any registered before
/// with [`register_events`]). Call once, early in `main`; later calls return the
/// first outcome. The listener thread it starts makes the first attempt, reports
/// its outcome here, and registers again after every loss.
pub fn init(name: &str, events: &[&'static Tracepoint]) -> &'static RegistrationOutcome {
    add_known(&mut lock(&KNOWN), events);
    REGISTRATION.get_or_init(|| {
        if let Err(reason) = register_in_forked_children() {
            eprintln!("ustrace: {name}: forked children run untraced: {reason}");
        }
        let _ = NAME.set(name.to_string());
        let outcome = start_listener(name).unwrap_or_else(RegistrationOutcome::Untraced);
        if let RegistrationOutcome::Untraced(reason) = &outcome {
            eprintln!("ustrace: {name} runs untraced: {reason}");
        }
        outcome
    })
}

/// Starts the listener thread and waits for the outcome of its first registration.
fn start_listener(name: &str) -> Result<RegistrationOutcome, String> {
    let client = Client {
        name: name.to_string(),
    };
    let (first, outcome) = std::sync::mpsc::sync_channel(1);
    std::thread::Builder::new()
        .name("ustrace-listener".to_string())
        .spawn(move || client.run(first))
        .map_err(|e| format!("cannot start the listener thread: {e}"))?;
    // The first attempt is bounded by the registration timeout.
    outcome
        .recv()
        .map_err(|_| "the listener thread ended".to_string())
}

/// The timeout from the environment, or the default; a bad value is reported.
fn timeout() -> Result<Duration, String> {
    match std::env::var("USTRACE_REGISTER_TIMEOUT_MS") {
        Err(_) => Ok(DEFAULT_REGISTER_TIMEOUT),
        Ok(text) => text
            .trim()
            .parse::<u64>()
            .map(Duration::from_millis)
            .map_err(|_| {
                format!("USTRACE_REGISTER_TIMEOUT_MS={text:?} is not a number of milliseconds")
            }),
    }
}

/// Why one attempt to register failed.
enum Failure {
    /// The daemon said no (a limit): retried only after [`LAST_RETRY`].
    Refused(String),
    /// No daemon, no answer in time, or a broken connection.
    Unreachable(String),
}

impl Failure {
    /// The reason, for the app's one warning.
    fn reason(self) -> String {
        match self {
            Failure::Refused(reason) | Failure::Unreachable(reason) => reason,
        }
    }
}

/// A live registration: the connection and what was installed for it.
struct Connection {
    /// The daemon connection, blocking.
    sock: UnixStream,
    /// Where its listener forwards answers to late registrations.
    answers: Receiver<LateAnswer>,
    /// Applies the daemon's pushes to the slots of this connection.
    listener: Listener,
    /// Channels received before RegistrationDone.
    channels: usize,
    /// Time from connect to RegistrationDone.
    latency: Duration,
}

/// What the listener thread registers, again after each loss.
struct Client {
    /// Program name.
    name: String,
}

impl Client {
    /// The listener thread: registers, serves the connection until it ends, and
    /// registers again, with back-off, for the rest of the process's life. The first
    /// outcome goes to `first` (`init` waits for it).
    fn run(self, first: std::sync::mpsc::SyncSender<RegistrationOutcome>) {
        let mut first = Some(first);
        let mut pause = FIRST_RETRY;
        loop {
            let serial = lock(&SERIAL);
            match self.register() {
                Ok(connection) => {
                    let link = {
                        let mut known = lock(&KNOWN);
                        CONNECTION_FD.store(
                            connection.sock.as_raw_fd(),
                            std::sync::atomic::Ordering::Relaxed,
                        );
                        known.next_link += 1;
                        let id = known.next_link;
                        known.link = connection.sock.try_clone().ok().map(|sock| Link {
                            id,
                            sock,
                            events: connection.listener.events.clone(),
                            answers: Arc::new(Mutex::new(connection.answers)),
                        });
                        id
                    };
                    drop(serial);
                    match first.take() {
                        Some(first) => {
                            let _ = first.send(RegistrationOutcome::Done {
                                channels: connection.channels,
                                latency: connection.latency,
                            });
                        }
                        None => eprintln!(
                            "ustrace: {}: registered with the session daemon again",
                            self.name
                        ),
                    }
                    connection.listener.serve(connection.sock, link);
                    pause = FIRST_RETRY;
                }
                Err(failure) => {
                    drop(serial);
                    if matches!(failure, Failure::Refused(_)) {
                        pause = LAST_RETRY;
                    }
                    if let Some(first) = first.take() {
                        let _ = first.send(RegistrationOutcome::Untraced(failure.reason()));
                    }
                }
            }
            std::thread::sleep(pause);
            pause = (pause * 2).min(LAST_RETRY);
        }
    }

    /// One attempt: connects, registers and applies everything up to
    /// RegistrationDone. On failure, whatever it installed is released.
    fn register(&self) -> Result<Connection, Failure> {
        let unreachable = Failure::Unreachable;
        let timeout = timeout().map_err(unreachable)?;
        let start = Instant::now();
        let path = protocol::rundir()
            .map_err(|e| unreachable(e.to_string()))?
            .join(APPS_SOCKET);
        let sock = UnixStream::connect(&path)
            .map_err(|e| unreachable(format!("no session daemon at {}: {e}", path.display())))?;
        let (answer, answers) = std::sync::mpsc::sync_channel(4);
        let mut listener = Listener {
            events: Arc::new(Mutex::new(lock(&KNOWN).events.clone())),
            slots: HashMap::new(),
            answers: answer,
        };
        match listener.register(&sock, &self.name, start, timeout) {
            Ok(channels) => Ok(Connection {
                sock,
                answers,
                listener,
                channels,
                latency: start.elapsed(),
            }),
            Err(failure) => {
                listener.release_all();
                Err(failure)
            }
        }
    }
}

/// The reason of a refusal already sent by the daemon, if there is one. A daemon that
/// refuses (limits.max_apps) answers and closes without reading the registration,
/// so sending it may fail (EPIPE) while the refusal still waits in the socket.
fn refusal(sock: &UnixStream, timeout: Duration) -> Option<String> {
    sock.set_read_timeout(Some(timeout)).ok()?;
    match frame::recv::<AppCommand>(sock, frame::MAX_FRAME) {
        Ok(Some((AppCommand::Refused { reason }, _))) => {
            Some(format!("refused by the session daemon: {reason}"))
        }
        _ => None,
    }
}

/// The name `init` registered, for a forked child's registration.
static NAME: OnceLock<String> = OnceLock::new();

/// The descriptor of the live connection, which a forked child closes (the
/// listener thread that owns it does not exist there); -1 without one. Changed
/// only with [`KNOWN`] locked.
static CONNECTION_FD: std::sync::atomic::AtomicI32 = std::sync::atomic::AtomicI32::new(-1);

type Held = (MutexGuard<'static, ()>, MutexGuard<'static, Known>);

thread_local! {
    /// The registration locks, taken by the forking thread before fork() and given
    /// back after it, in the parent and in the child (whose only thread it is).
    static HELD: std::cell::RefCell<Option<Held>> = const { std::cell::RefCell::new(None) };
}

/// Makes every child forked from now on register as its own process.
fn register_in_forked_children() -> Result<(), String> {
    extern "C" fn prepare() {
        let serial = lock(&SERIAL);
        let known = lock(&KNOWN);
        HELD.with(|held| *held.borrow_mut() = Some((serial, known)));
    }
    extern "C" fn in_parent() {
        HELD.with(|held| held.borrow_mut().take());
    }
    extern "C" fn in_child() {
        channel::release_inherited_slots();
        crate::shm::forget_thread_identity();
        if let Some((serial, mut known)) = HELD.with(|held| held.borrow_mut().take()) {
            let fd = CONNECTION_FD.swap(-1, std::sync::atomic::Ordering::Relaxed);
            if fd >= 0 {
                // SAFETY: `fd` is the parent's connection, owned by a listener
                // thread that does not exist in this child: nothing else here closes
                // or uses it.
                unsafe { libc::close(fd) };
            }
            known.link = None;
            for event in &known.events {
                event.disable_everywhere();
            }
            drop(known);
            drop(serial);
        }
        if let Some(name) = NAME.get() {
            match start_listener(name) {
                Ok(RegistrationOutcome::Done { .. }) => {}
                Ok(RegistrationOutcome::Untraced(reason)) | Err(reason) => {
                    eprintln!("ustrace: {name} (forked child) runs untraced: {reason}")
                }
            }
        }
    }
    // SAFETY: the three handlers are plain `extern "C"` functions. `prepare` takes
    // the registration locks in their usual order (SERIAL, then KNOWN) and parks
    // the guards in this thread's local, `in_parent` drops them, and `in_child`
    // (in the child's only thread, a copy of this one) drops them after resetting
    // what the child inherited; its registration then starts a thread and
    // connects, which glibc allows after fork. `init` runs this once per process.
    let rc = unsafe { libc::pthread_atfork(Some(prepare), Some(in_parent), Some(in_child)) };
    if rc == 0 {
        Ok(())
    } else {
        Err(format!("pthread_atfork failed: error {rc}"))
    }
}

fn is_timeout(e: &std::io::Error) -> bool {
    matches!(
        e.kind(),
        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
    )
}

/// Applies the daemon's commands to this process's tracepoints and channel slots.
struct Listener {
    /// The events this connection indexes, in order (late ones appended by
    /// [`register_events`]).
    events: Arc<Mutex<Vec<&'static Tracepoint>>>,
    /// Channel key (the daemon's) to slot (ours).
    slots: HashMap<u64, SlotId>,
    /// Where answers to late registrations go.
    answers: SyncSender<LateAnswer>,
}

impl Listener {
    /// Sends the registration on `sock` and applies the daemon's answer up to
    /// RegistrationDone; returns the number of channels received.
    fn register(
        &mut self,
        sock: &UnixStream,
        name: &str,
        start: Instant,
        timeout: Duration,
    ) -> Result<usize, Failure> {
        let deadline = start + timeout;
        let io = |e: std::io::Error| Failure::Unreachable(e.to_string());
        sock.set_write_timeout(Some(timeout)).map_err(io)?;
        let register = AppRegister {
            name: name.to_string(),
            bitness: (usize::BITS) as u8,
            events: lock(&self.events).iter().map(|e| e.desc()).collect(),
        };
        if let Err(e) = frame::send_hello(sock).and_then(|()| frame::send(sock, &register, &[])) {
            return Err(match refusal(sock, timeout) {
                Some(reason) => Failure::Refused(reason),
                None => Failure::Unreachable(e.to_string()),
            });
        }
        let no_answer = || {
            Failure::Unreachable(format!(
                "no answer from the session daemon within {timeout:?}"
            ))
        };
        let mut channels = 0;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(no_answer());
            }
            sock.set_read_timeout(Some(left)).map_err(io)?;
            let (command, fds) = match frame::recv::<AppCommand>(sock, frame::MAX_FRAME) {
                Ok(Some(message)) => message,
                Ok(None) => {
                    return Err(Failure::Unreachable(
                        "the session daemon closed the connection".to_string(),
                    ));
                }
                Err(ProtocolError::Io { source, .. }) if is_timeout(&source) => {
                    return Err(no_answer());
                }
                Err(e) => return Err(Failure::Unreachable(e.to_string())),
            };
            match command {
                AppCommand::RegistrationDone => break,
                AppCommand::Refused { reason } => {
                    return Err(Failure::Refused(format!(
                        "refused by the session daemon: {reason}"
                    )));
                }
                AppCommand::Channel { .. } => {
                    self.apply(command, fds).map_err(Failure::Unreachable)?;
                    channels += 1;
                }
                other => self.apply(other, fds).map_err(Failure::Unreachable)?,
            }
        }
        sock.set_read_timeout(None).map_err(io)?;
        Ok(channels)
    }

    /// Applies pushed commands until the connection ends, then forgets the link
    /// `link` and releases this connection's slots: nobody drains their rings any
    /// more.
    fn serve(mut self, sock: UnixStream, link: u64) {
        loop {
            match frame::recv::<AppCommand>(&sock, frame::MAX_FRAME) {
                Ok(Some((command, fds))) => {
                    if let Err(e) = self.apply(command, fds) {
                        eprintln!("ustrace: ignoring a daemon command: {e}");
                    }
                }
                Ok(None) => break,
                Err(e) => {
                    eprintln!(
                        "ustrace: connection to the session daemon lost: {e}; tracing stops until it registers this app again"
                    );
                    break;
                }
            }
        }
        {
            let mut known = lock(&KNOWN);
            if known.link.as_ref().is_some_and(|l| l.id == link) {
                known.link = None;
                CONNECTION_FD.store(-1, std::sync::atomic::Ordering::Relaxed);
            }
        }
        self.release_all();
    }

    /// Applies one command.
    fn apply(&mut self, command: AppCommand, mut fds: Vec<OwnedFd>) -> Result<(), String> {
        match command {
            AppCommand::Channel {
                key,
                streams,
                contexts,
            } => {
                if fds.len() != streams as usize + 1 {
                    return Err(format!(
                        "channel {key}: expected {} fds, got {}",
                        streams + 1,
                        fds.len()
                    ));
                }
                let rings = fds.split_off(1);
                let wakeup = fds.pop().expect("one fd left");
                let contexts = ContextSet::of(&contexts);
                let buffers = ChannelBuffers::from_fds(rings, wakeup, contexts.encoded_len())
                    .map_err(|e| format!("channel {key}: {e}"))?;
                let slot = channel::install(buffers, contexts)
                    .map_err(|e| format!("channel {key}: {e}"))?;
                self.slots.insert(key, slot);
            }
            AppCommand::Enable {
                key,
                events,
                mut filters,
            } => {
                let slot = self.slot(key)?;
                let known = lock(&self.events);
                for (index, id) in events {
                    let event = known
                        .get(index as usize)
                        .ok_or_else(|| format!("enable of unknown event index {index}"))?;
                    if id >= FILTERED {
                        return Err(format!("event id {id} out of range"));
                    }
                    // A program the app cannot run safely is a malformed command.
                    let filter = match filters.iter().position(|(i, _)| *i == index) {
                        Some(at) => Some(
                            filters
                                .swap_remove(at)
                                .1
                                .check(&event.desc().fields)
                                .map_err(|e| format!("filter of event index {index}: {e}"))?,
                        ),
                        None => None,
                    };
                    event.enable_filtered(slot, id, filter);
                }
                if let Some((index, _)) = filters.first() {
                    return Err(format!("filter of event index {index}, not enabled"));
                }
                drop(known);
                enablement_changed();
            }
            AppCommand::Disable { key } => {
                let slot = self.slot(key)?;
                for event in lock(&self.events).iter() {
                    event.disable(slot);
                }
                enablement_changed();
            }
            AppCommand::EventsRegistered { first, .. } => {
                self.answer(LateAnswer::Registered(first))?;
            }
            AppCommand::EventsRefused { reason } => {
                self.answer(LateAnswer::Refused(reason))?;
            }
            AppCommand::DisableEvents { key, events } => {
                let slot = self.slot(key)?;
                let known = lock(&self.events);
                for index in events {
                    known
                        .get(index as usize)
                        .ok_or_else(|| format!("disable of unknown event index {index}"))?
                        .disable(slot);
                }
            }
            AppCommand::RegistrationDone | AppCommand::Refused { .. } => {}
        }
        Ok(())
    }

    /// Hands the answer to a late registration to [`register_events`].
    fn answer(&self, answer: LateAnswer) -> Result<(), String> {
        self.answers
            .try_send(answer)
            .map_err(|e| format!("an answer to no late registration: {e:?}"))
    }

    fn slot(&self, key: u64) -> Result<SlotId, String> {
        self.slots
            .get(&key)
            .copied()
            .ok_or_else(|| format!("unknown channel {key}"))
    }

    /// Disables every event in every slot of this connection and releases the
    /// slots for the next daemon's channels.
    fn release_all(&mut self) {
        let events = lock(&self.events);
        for (_, slot) in self.slots.drain() {
            for event in events.iter() {
                event.disable(slot);
            }
            channel::release(slot);
        }
        drop(events);
        enablement_changed();
    }
}

/// What [`on_enablement_change`] installed.
static ENABLEMENT_HOOK: OnceLock<fn()> = OnceLock::new();

/// Installs `hook`, called on the listener thread after every change of which
/// events are enabled (an enable or disable push, a lost connection): a layer that
/// caches whether its callsites are wanted (the `tracing` interest cache) rebuilds
/// that cache there. One hook per process; false if one was installed already. The
/// hook must not register events (the listener would wait on itself).
pub fn on_enablement_change(hook: fn()) -> bool {
    ENABLEMENT_HOOK.set(hook).is_ok()
}

/// Runs the hook of [`on_enablement_change`], if any.
fn enablement_changed() {
    if let Some(hook) = ENABLEMENT_HOOK.get() {
        hook();
    }
}
