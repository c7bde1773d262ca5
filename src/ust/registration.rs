//! The app's side of registration: connect, register, map the buffers, return.
//!
//! [`init`] blocks the caller (normally `main`) until the daemon's
//! RegistrationDone, so that the first event after it is recorded; LTTng-UST makes
//! the same promise. It never hangs and never fails the app: without a daemon, or
//! without an answer within the registration timeout (`USTRACE_REGISTER_TIMEOUT_MS`,
//! default 3000), it prints one warning and the app runs untraced.
//!
//! After registration one listener thread keeps the connection open for the app's
//! whole life. It applies what the daemon pushes (channels of a session started
//! later, events enabled later, channels disabled by `stop`); the connection's EOF is
//! how the daemon learns the app is gone. The fast path never waits on this thread.

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
pub enum Registration {
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

/// The registration of this process; `init` runs it once.
static REGISTRATION: OnceLock<Registration> = OnceLock::new();

/// Registers this process as `name` with its `events`. Call once, early in `main`;
/// later calls return the first outcome.
pub fn init(name: &str, events: &[&'static Tracepoint]) -> &'static Registration {
    REGISTRATION.get_or_init(|| {
        let outcome = register(name, events.to_vec()).unwrap_or_else(Registration::Untraced);
        if let Registration::Untraced(reason) = &outcome {
            eprintln!("ustrace: {name} runs untraced: {reason}");
        }
        outcome
    })
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

/// Connects, registers and applies everything up to RegistrationDone.
fn register(name: &str, events: Vec<&'static Tracepoint>) -> Result<Registration, String> {
    let timeout = timeout()?;
    let start = Instant::now();
    let deadline = start + timeout;
    let path = protocol::rundir()
        .map_err(|e| e.to_string())?
        .join(APPS_SOCKET);
    let sock = UnixStream::connect(&path)
        .map_err(|e| format!("no session daemon at {}: {e}", path.display()))?;
    let io = |e: std::io::Error| e.to_string();
    sock.set_write_timeout(Some(timeout)).map_err(io)?;
    let register = AppRegister {
        name: name.to_string(),
        bitness: (usize::BITS) as u8,
        events: events.iter().map(|e| e.desc()).collect(),
    };
    if let Err(e) = frame::send_hello(&sock).and_then(|()| frame::send(&sock, &register, &[])) {
        return Err(refusal(&sock, timeout).unwrap_or_else(|| e.to_string()));
    }

    let mut listener = Listener {
        events,
        slots: HashMap::new(),
    };
    let mut channels = 0;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(format!(
                "no answer from the session daemon within {timeout:?}"
            ));
        }
        sock.set_read_timeout(Some(left)).map_err(io)?;
        let (command, fds) = match frame::recv::<AppCommand>(&sock, frame::MAX_FRAME) {
            Ok(Some(message)) => message,
            Ok(None) => return Err("the session daemon closed the connection".to_string()),
            Err(ProtocolError::Io { source, .. }) if is_timeout(&source) => {
                return Err(format!(
                    "no answer from the session daemon within {timeout:?}"
                ));
            }
            Err(e) => return Err(e.to_string()),
        };
        match command {
            AppCommand::RegistrationDone => break,
            AppCommand::Refused { reason } => {
                return Err(format!("refused by the session daemon: {reason}"));
            }
            AppCommand::Channel { .. } => {
                listener.apply(command, fds)?;
                channels += 1;
            }
            other => listener.apply(other, fds)?,
        }
    }
    let latency = start.elapsed();
    untrace_forked_children()?;
    sock.set_read_timeout(None).map_err(io)?;
    std::thread::Builder::new()
        .name("ustrace-listener".to_string())
        .spawn(move || listener.serve(sock))
        .map_err(io)?;
    Ok(Registration::Done { channels, latency })
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
    /// Applies pushed commands until the daemon goes away.
    fn serve(mut self, sock: UnixStream) {
        loop {
            match frame::recv::<AppCommand>(&sock, frame::MAX_FRAME) {
                Ok(Some((command, fds))) => {
                    if let Err(e) = self.apply(command, fds) {
                        eprintln!("ustrace: ignoring a daemon command: {e}");
                    }
                }
                Ok(None) => {
                    self.disable_all();
                    return;
                }
                Err(e) => {
                    eprintln!("ustrace: connection to the session daemon lost: {e}; tracing stops");
                    self.disable_all();
                    return;
                }
            }
        }
    }

    /// Applies one command.
    fn apply(&mut self, command: AppCommand, mut fds: Vec<OwnedFd>) -> Result<(), String> {
        match command {
            AppCommand::Channel { key, streams } => {
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
                let slot = channel::install(buffers).map_err(|e| format!("channel {key}: {e}"))?;
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

    /// Stops recording everywhere: nobody drains the rings any more.
    fn disable_all(&self) {
        for slot in self.slots.values() {
            channel::disable_slot(*slot);
        }
    }
}
