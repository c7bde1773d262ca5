//! One session's connections to lttng-relayd and what the relayd knows of it.

use super::url::RelaydUrl;
use super::wire::{self, Index, LTTNG_OK};
use crate::actors::stats::Stats;
use crate::trace::index::IndexEntry;
use std::collections::HashMap;
use std::io::{self, Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::time::{Duration, Instant, SystemTime};

/// How long a connect, a send or a reply may take before the link counts as broken:
/// a relayd that stops reading costs one writer at most this, never an app.
const NET_TIMEOUT: Duration = Duration::from_secs(2);

/// What went wrong talking to the relayd.
#[derive(Debug, thiserror::Error)]
pub enum LinkError {
    /// Connecting, sending or reading failed.
    #[error("relayd {url}: {source}")]
    Io {
        /// The relayd.
        url: String,
        /// Why.
        source: io::Error,
    },
    /// The relayd answered a command with an error code.
    #[error("relayd {url} refused {what} (code {code})")]
    Refused {
        /// The relayd.
        url: String,
        /// The command.
        what: &'static str,
        /// Its `lttng_error_code`.
        code: u32,
    },
    /// The relayd speaks a major version other than 2.
    #[error("relayd {url} speaks protocol {major}.{minor}, ustrace needs 2.x")]
    Version {
        /// The relayd.
        url: String,
        /// Its major version.
        major: u32,
        /// Its minor version.
        minor: u32,
    },
    /// The link broke recently; the next connect waits for the back-off.
    #[error("relayd {url} unreachable, next try in {wait_ms} ms")]
    BackingOff {
        /// The relayd.
        url: String,
        /// Until the next attempt.
        wait_ms: u64,
    },
    /// A stream path the relayd would refuse (it takes fewer than 255 bytes).
    #[error("relayd stream path {0:?} is too long for the relayd (254 bytes at most)")]
    PathTooLong(String),
}

impl From<LinkError> for io::Error {
    fn from(e: LinkError) -> io::Error {
        io::Error::other(e)
    }
}

/// The open connections.
struct Connection {
    /// Control port.
    control: TcpStream,
    /// Data port.
    data: TcpStream,
}

/// A sub-trace as the relayd knows it on the current connection.
struct TraceState {
    /// Handle of its `metadata` stream.
    metadata: u64,
    /// The metadata text sent so far, and its version.
    sent: (u64, Arc<str>),
    /// Data streams of the trace still open.
    streams: usize,
}

/// A data stream as the relayd knows it on the current connection.
struct StreamState {
    /// CTF stream class id.
    class: u64,
    /// CPU (stream instance).
    cpu: u64,
    /// When its last packet went, for beacons.
    last_packet: Instant,
    /// Its last packet's `timestamp_end`: a beacon never claims less.
    last_end: u64,
}

/// What the lock of a [`Link`] protects.
struct State {
    /// The connection, while it works.
    conn: Option<Connection>,
    /// Grows by one per connection: stream handles of an older one are void.
    generation: u64,
    /// When the last connect failed or the connection broke.
    broke_at: Option<Instant>,
    /// Sub-traces by relayd path, on this connection.
    traces: HashMap<String, TraceState>,
    /// Data streams by handle, on this connection.
    streams: HashMap<u64, StreamState>,
    /// `<session>-<date>` of the last connection: a reconnection gets its own.
    session_dir: String,
}

/// One session's link to its relayd.
pub struct Link {
    /// Session name.
    session: String,
    /// This host's name, the first path component on the relayd.
    hostname: String,
    /// The relayd.
    url: RelaydUrl,
    /// Live timer in microseconds (0: not a live session).
    live_timer_us: u32,
    /// Least time between a broken connection and the next attempt.
    backoff: Duration,
    /// How far behind the clock a beacon's timestamp stays (two flush intervals and
    /// a live period): the age of the oldest event that may not have been flushed.
    beacon_lag: Duration,
    /// The connection and what was sent on it.
    state: Mutex<State>,
    /// The daemon's counters (`relayd_connects`, `relayd_send_failures`).
    stats: Arc<Stats>,
    /// Set when the session is destroyed: the beacon thread ends.
    closed: AtomicBool,
}

/// A stream's handle on the relayd, valid for one connection.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Handle {
    /// The connection it belongs to.
    pub generation: u64,
    /// The relayd's stream id.
    pub id: u64,
}

impl Link {
    /// A link, not connected yet; live sessions get a thread sending beacons.
    pub fn new(
        session: &str,
        url: RelaydUrl,
        live_timer_us: u32,
        backoff: Duration,
        flush_interval: Duration,
        stats: Arc<Stats>,
    ) -> Arc<Link> {
        let period = Duration::from_micros(live_timer_us.into());
        let link = Arc::new(Link {
            session: session.to_owned(),
            hostname: hostname(),
            url,
            live_timer_us,
            backoff,
            beacon_lag: 2 * flush_interval + period,
            state: Mutex::new(State {
                conn: None,
                generation: 0,
                broke_at: None,
                traces: HashMap::new(),
                streams: HashMap::new(),
                session_dir: String::new(),
            }),
            stats,
            closed: AtomicBool::new(false),
        });
        if live_timer_us > 0 {
            let weak = Arc::downgrade(&link);
            let spawned = std::thread::Builder::new()
                .name(format!("ustrace-beacon-{session}"))
                .spawn(move || beacons(weak, period));
            if let Err(e) = spawned {
                log::warn!("session {session}: no beacon thread, live viewers may stall: {e}");
            }
        }
        link
    }

    /// Ends the beacon thread and the connection (the session is destroyed).
    pub fn close(&self) {
        self.closed.store(true, Ordering::Relaxed);
        self.lock().conn = None;
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn io(&self, source: io::Error) -> LinkError {
        LinkError::Io {
            url: self.url.to_string(),
            source,
        }
    }

    /// Sends one packet of the stream at relayd path `trace`/`name` (class `class`,
    /// `cpu`), adding the trace's metadata stream and the stream on first use or
    /// after a reconnection; `handle` is the caller's cache of its stream handle.
    /// The packet's index entry follows it.
    #[allow(clippy::too_many_arguments)]
    pub fn send_packet(
        &self,
        trace: &str,
        name: &str,
        handle: &mut Option<Handle>,
        net_seq: &mut u64,
        metadata: (u64, &Arc<str>),
        packet: &[u8],
        index: Index,
    ) -> Result<(), LinkError> {
        let mut state = self.lock();
        let result = self.send_locked(
            &mut state, trace, name, handle, net_seq, metadata, packet, index,
        );
        if let Err(e) = &result {
            self.stats
                .relayd_send_failures
                .fetch_add(1, Ordering::Relaxed);
            if !matches!(e, LinkError::BackingOff { .. } | LinkError::PathTooLong(_)) {
                self.broke(&mut state);
            }
        }
        result
    }

    #[allow(clippy::too_many_arguments)]
    fn send_locked(
        &self,
        state: &mut State,
        trace: &str,
        name: &str,
        handle: &mut Option<Handle>,
        net_seq: &mut u64,
        (version, tsdl): (u64, &Arc<str>),
        packet: &[u8],
        mut index: Index,
    ) -> Result<(), LinkError> {
        self.connect(state)?;
        let generation = state.generation;
        let path = format!("{}/{}/{trace}", self.hostname, state.session_dir);
        if path.len() > wire::PATH_MAX_USED {
            return Err(LinkError::PathTooLong(path));
        }
        let conn = state.conn.as_mut().expect("connected above");
        if !state.traces.contains_key(trace) {
            let metadata = add_stream(conn, &self.url, "metadata", &path)?;
            state.traces.insert(
                trace.to_owned(),
                TraceState {
                    metadata,
                    sent: (0, Arc::from("")),
                    streams: 0,
                },
            );
        }
        let t = state.traces.get_mut(trace).expect("inserted above");
        if t.sent.0 != version {
            match tsdl.strip_prefix(&*t.sent.1) {
                Some(rest) => send(
                    conn,
                    &self.url,
                    &wire::send_metadata(t.metadata, rest.as_bytes()),
                )?,
                None => {
                    command(
                        conn,
                        &self.url,
                        &wire::reset_metadata(t.metadata, version),
                        "RESET_METADATA",
                    )?;
                    send(
                        conn,
                        &self.url,
                        &wire::send_metadata(t.metadata, tsdl.as_bytes()),
                    )?;
                }
            }
            t.sent = (version, tsdl.clone());
        }
        let id = match handle {
            Some(h) if h.generation == generation => h.id,
            _ => {
                let id = add_stream(conn, &self.url, name, &path)?;
                command(conn, &self.url, &wire::streams_sent(), "STREAMS_SENT")?;
                t.streams += 1;
                *handle = Some(Handle { generation, id });
                *net_seq = 0;
                state.streams.insert(
                    id,
                    StreamState {
                        class: index.entry.stream_id,
                        cpu: index.entry.stream_instance_id,
                        last_packet: Instant::now(),
                        last_end: 0,
                    },
                );
                id
            }
        };
        let len = u32::try_from(packet.len())
            .map_err(|_| self.io(io::Error::other("packet over 4 GiB")))?;
        conn.data
            .write_all(&wire::data_header(id, *net_seq, len))
            .and_then(|()| conn.data.write_all(packet))
            .map_err(|e| self.io(e))?;
        index.relay_stream = id;
        index.net_seq_num = *net_seq;
        command(conn, &self.url, &wire::send_index(&index), "SEND_INDEX")?;
        *net_seq += 1;
        if let Some(s) = state.streams.get_mut(&id) {
            s.last_packet = Instant::now();
            s.last_end = s.last_end.max(index.entry.timestamp_end);
        }
        Ok(())
    }

    /// Closes the stream `handle` of trace `trace` after `sent` packets (a per-PID
    /// app ended, or its session was destroyed), and the trace's metadata stream
    /// with its last stream. Nothing to do if the connection it was opened on is gone.
    pub fn close_stream(&self, trace: &str, handle: Handle, sent: u64) {
        let mut state = self.lock();
        if state.generation != handle.generation || state.conn.is_none() {
            return;
        }
        state.streams.remove(&handle.id);
        let last = sent.wrapping_sub(1);
        let metadata = state.traces.get_mut(trace).and_then(|t| {
            t.streams = t.streams.saturating_sub(1);
            (t.streams == 0).then_some(t.metadata)
        });
        if metadata.is_some() {
            state.traces.remove(trace);
        }
        let conn = state.conn.as_mut().expect("checked above");
        let mut result = command(
            conn,
            &self.url,
            &wire::close_stream(handle.id, last),
            "CLOSE_STREAM",
        );
        if let (Ok(()), Some(m)) = (&result, metadata) {
            // Metadata goes on the control port, not as numbered packets: no last one.
            let metadata = wire::close_stream(m, u64::MAX);
            result = command(conn, &self.url, &metadata, "CLOSE_STREAM");
        }
        if let Err(e) = result {
            log::warn!("session {}: {e}", self.session);
            self.broke(&mut state);
        }
    }

    /// Forgets the connection: the next packet reconnects, after the back-off.
    fn broke(&self, state: &mut State) {
        state.conn = None;
        state.broke_at = Some(Instant::now());
        state.traces.clear();
        state.streams.clear();
    }

    /// Opens the connection unless it is open; refuses while backing off.
    fn connect(&self, state: &mut State) -> Result<(), LinkError> {
        if state.conn.is_some() {
            return Ok(());
        }
        if let Some(at) = state.broke_at {
            let since = at.elapsed();
            if since < self.backoff {
                return Err(LinkError::BackingOff {
                    url: self.url.to_string(),
                    wait_ms: (self.backoff - since).as_millis() as u64,
                });
            }
        }
        match self.open() {
            Ok(conn) => {
                state.conn = Some(conn);
                state.generation += 1;
                let mut dir = format!(
                    "{}-{}",
                    self.session,
                    crate::trace::layout::dir_timestamp(
                        SystemTime::now(),
                        crate::trace::layout::DirClock::Local
                    )
                );
                if dir <= state.session_dir {
                    dir = format!("{}-{}", state.session_dir, state.generation);
                }
                state.session_dir = dir;
                state.broke_at = None;
                self.stats.relayd_connects.fetch_add(1, Ordering::Relaxed);
                log::info!(
                    "session {}: streaming to {} as {}/{}",
                    self.session,
                    self.url,
                    self.hostname,
                    state.session_dir
                );
                Ok(())
            }
            Err(e) => {
                state.broke_at = Some(Instant::now());
                Err(e)
            }
        }
    }

    /// Connects both ports, negotiates the version and creates the session.
    fn open(&self) -> Result<Connection, LinkError> {
        let control = tcp(&self.url.host, self.url.control_port).map_err(|e| self.io(e))?;
        let data = tcp(&self.url.host, self.url.data_port).map_err(|e| self.io(e))?;
        let mut conn = Connection { control, data };
        send(&mut conn, &self.url, &wire::version())?;
        let version = reply(&mut conn, &self.url, 8)?;
        let (major, minor) = (wire::be_u32(&version, 0), wire::be_u32(&version, 4));
        if major != wire::VERSION.0 {
            return Err(LinkError::Version {
                url: self.url.to_string(),
                major,
                minor,
            });
        }
        let create = wire::create_session(&self.session, &self.hostname, self.live_timer_us);
        send(&mut conn, &self.url, &create)?;
        let reply = reply(&mut conn, &self.url, 12)?;
        check(&self.url, wire::be_u32(&reply, 8), "CREATE_SESSION")?;
        Ok(conn)
    }

    /// Sends a beacon on every stream idle for `period`, so live viewers move on.
    fn beacon(&self, period: Duration) {
        let mut guard = self.lock();
        let state = &mut *guard;
        let Some(conn) = state.conn.as_mut() else {
            return;
        };
        // Events up to `lag` old may still sit in a ring not flushed yet: a beacon
        // claims only the time before them, or a later packet would go back in time.
        let now = crate::shm::host_clock()
            .unwrap_or(crate::shm::TraceClock::MONOTONIC)
            .now();
        let quiet_until = now.saturating_sub(self.beacon_lag.as_nanos() as u64);
        let mut result = Ok(());
        for (id, s) in &state.streams {
            if s.last_packet.elapsed() < period {
                continue;
            }
            let now = quiet_until.max(s.last_end);
            let index = Index {
                relay_stream: *id,
                net_seq_num: u64::MAX,
                entry: IndexEntry {
                    offset: 0,
                    packet_size: 0,
                    content_size: 0,
                    timestamp_begin: now,
                    timestamp_end: now,
                    events_discarded: 0,
                    stream_id: s.class,
                    stream_instance_id: s.cpu,
                    packet_seq_num: 0,
                },
            };
            result = command(
                conn,
                &self.url,
                &wire::send_index(&index),
                "SEND_INDEX (beacon)",
            );
            if result.is_err() {
                break;
            }
        }
        if let Err(e) = result {
            log::warn!("session {}: {e}", self.session);
            self.broke(state);
        }
    }
}

/// The beacon thread of a live link: ends with the link.
fn beacons(link: Weak<Link>, period: Duration) {
    loop {
        std::thread::sleep(period);
        let Some(link) = link.upgrade() else { return };
        if link.closed.load(Ordering::Relaxed) {
            return;
        }
        link.beacon(period);
    }
}

/// A TCP connection with the link's timeouts.
fn tcp(host: &str, port: u16) -> io::Result<TcpStream> {
    let mut last = io::Error::new(io::ErrorKind::NotFound, format!("{host} has no address"));
    for addr in (host, port).to_socket_addrs()? {
        match TcpStream::connect_timeout(&addr, NET_TIMEOUT) {
            Ok(s) => {
                s.set_read_timeout(Some(NET_TIMEOUT))?;
                s.set_write_timeout(Some(NET_TIMEOUT))?;
                s.set_nodelay(true)?;
                return Ok(s);
            }
            Err(e) => last = e,
        }
    }
    Err(last)
}

fn send(conn: &mut Connection, url: &RelaydUrl, bytes: &[u8]) -> Result<(), LinkError> {
    conn.control
        .write_all(bytes)
        .map_err(|source| LinkError::Io {
            url: url.to_string(),
            source,
        })
}

fn reply(conn: &mut Connection, url: &RelaydUrl, len: usize) -> Result<Vec<u8>, LinkError> {
    let mut buf = vec![0u8; len];
    conn.control
        .read_exact(&mut buf)
        .map_err(|source| LinkError::Io {
            url: url.to_string(),
            source,
        })?;
    Ok(buf)
}

fn check(url: &RelaydUrl, code: u32, what: &'static str) -> Result<(), LinkError> {
    if code == LTTNG_OK {
        Ok(())
    } else {
        Err(LinkError::Refused {
            url: url.to_string(),
            what,
            code,
        })
    }
}

/// Sends a command whose reply is a bare `{u32 ret}`.
fn command(
    conn: &mut Connection,
    url: &RelaydUrl,
    bytes: &[u8],
    what: &'static str,
) -> Result<(), LinkError> {
    send(conn, url, bytes)?;
    let r = reply(conn, url, 4)?;
    check(url, wire::be_u32(&r, 0), what)
}

/// `ADD_STREAM`: the new stream's handle.
fn add_stream(
    conn: &mut Connection,
    url: &RelaydUrl,
    name: &str,
    path: &str,
) -> Result<u64, LinkError> {
    send(conn, url, &wire::add_stream(name, path))?;
    let r = reply(conn, url, 12)?;
    check(url, wire::be_u32(&r, 8), "ADD_STREAM")?;
    Ok(wire::be_u64(&r, 0))
}

/// This host's name (`/proc/sys/kernel/hostname`), cut to what the relayd takes.
fn hostname() -> String {
    let name = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap_or_default();
    let name: String = name
        .trim()
        .chars()
        .filter(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '.' | '_'))
        .take(wire::HOSTNAME_LEN - 1)
        .collect();
    if name.is_empty() {
        "localhost".to_owned()
    } else {
        name
    }
}
