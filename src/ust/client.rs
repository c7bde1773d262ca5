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
//! A forked child inherits no thread: it never re-registers and runs untraced.

use crate::ctf::context::ContextSet;
use crate::protocol::messages::{AppCommand, AppRegister};
use crate::protocol::{self, APPS_SOCKET, ProtocolError, frame};
use crate::shm::ChannelBuffers;
use crate::ust::channel::{self, SlotId};
use crate::ust::tracepoint::Tracepoint;
use std::collections::HashMap;
use std::os::fd::OwnedFd;
use std::os::unix::net::UnixStream;
use std::sync::OnceLock;
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

/// Registers this process as `name` with its `events`. Call once, early in `main`;
/// later calls return the first outcome. The listener thread it starts makes the
/// first attempt, reports its outcome here, and registers again after every loss.
pub fn init(name: &str, events: &[&'static Tracepoint]) -> &'static RegistrationOutcome {
    REGISTRATION.get_or_init(|| {
        let outcome = start_listener(name, events).unwrap_or_else(RegistrationOutcome::Untraced);
        if let RegistrationOutcome::Untraced(reason) = &outcome {
            eprintln!("ustrace: {name} runs untraced: {reason}");
        }
        outcome
    })
}

/// Starts the listener thread and waits for the outcome of its first registration.
fn start_listener(
    name: &str,
    events: &[&'static Tracepoint],
) -> Result<RegistrationOutcome, String> {
    untrace_forked_children()?;
    let client = Client {
        name: name.to_string(),
        events: events.to_vec(),
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
    /// The app's events, in the order it registers them.
    events: Vec<&'static Tracepoint>,
}

impl Client {
    /// The listener thread: registers, serves the connection until it ends, and
    /// registers again, with back-off, for the rest of the process's life. The first
    /// outcome goes to `first` (`init` waits for it).
    fn run(self, first: std::sync::mpsc::SyncSender<RegistrationOutcome>) {
        let mut first = Some(first);
        let mut pause = FIRST_RETRY;
        loop {
            match self.register() {
                Ok(connection) => {
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
                    connection.listener.serve(connection.sock);
                    pause = FIRST_RETRY;
                }
                Err(failure) => {
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
        let mut listener = Listener {
            events: self.events.clone(),
            slots: HashMap::new(),
        };
        match listener.register(&sock, &self.name, start, timeout) {
            Ok(channels) => Ok(Connection {
                sock,
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

/// Makes a child forked from now on run untraced (see `channel::disable_all_slots`).
fn untrace_forked_children() -> Result<(), String> {
    extern "C" fn in_child() {
        channel::disable_all_slots();
        crate::shm::forget_thread_identity();
    }
    // SAFETY: `in_child` is a plain `extern "C"` function that only performs one
    // atomic store and one store to a const-initialised thread-local `Cell` (no lazy
    // initialisation, no destructor), both async-signal-safe as a fork child handler
    // must be; the prepare and parent handlers are absent. `init` runs this once per
    // process.
    let rc = unsafe { libc::pthread_atfork(None, None, Some(in_child)) };
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
    /// The app's events, in the order it registered them.
    events: Vec<&'static Tracepoint>,
    /// Channel key (the daemon's) to slot (ours).
    slots: HashMap<u64, SlotId>,
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
            events: self.events.iter().map(|e| e.desc()).collect(),
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

    /// Applies pushed commands until the connection ends, then releases this
    /// connection's slots: nobody drains their rings any more.
    fn serve(mut self, sock: UnixStream) {
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
                let buffers = ChannelBuffers::from_fds(rings, wakeup)
                    .map_err(|e| format!("channel {key}: {e}"))?;
                let slot = channel::install(buffers, ContextSet::of(&contexts))
                    .map_err(|e| format!("channel {key}: {e}"))?;
                self.slots.insert(key, slot);
            }
            AppCommand::Enable { key, events } => {
                let slot = self.slot(key)?;
                for (index, id) in events {
                    let event = self
                        .events
                        .get(index as usize)
                        .ok_or_else(|| format!("enable of unknown event index {index}"))?;
                    event.enable(slot, id);
                }
            }
            AppCommand::Disable { key } => {
                let slot = self.slot(key)?;
                for event in &self.events {
                    event.disable(slot);
                }
            }
            AppCommand::RegistrationDone | AppCommand::Refused { .. } => {}
        }
        Ok(())
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
        for (_, slot) in self.slots.drain() {
            for event in &self.events {
                event.disable(slot);
            }
            channel::release(slot);
        }
    }
}
