//! The `relayd` writer: each stream's packets go to its session's [`Link`].

use super::link::{Handle, Link};
use super::url::RelaydUrl;
use super::wire::Index;
use crate::actors::stats::Stats;
use crate::actors::writer::{Metadata, StreamInfo, StreamWriter, WriterFactory};
use crate::ctf::packet::PacketHeader;
use crate::trace::index::IndexEntry;
use std::collections::HashMap;
use std::io;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

/// Name of the streaming writer: the channels of a session with a URL use it.
pub const RELAYD_WRITER: &str = "relayd";

/// Where a session streams: what `create --set-url [--live]` gives the factory.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StreamTarget {
    /// The relayd.
    pub url: RelaydUrl,
    /// Live timer in microseconds; 0 for a session that is not live.
    pub live_timer_us: u32,
}

/// Makes the stream writers of every streaming session, one [`Link`] per session.
/// The session manager opens a session's link on `create` and closes it on `destroy`.
pub struct RelaydWriterFactory {
    /// The links of the sessions that stream.
    links: Mutex<HashMap<String, Arc<Link>>>,
    /// Least time between a broken link and the next connection attempt.
    backoff: Duration,
    /// The daemon's periodic flush: how stale an idle ring's data may be.
    flush_interval: Duration,
    /// The daemon's counters, which the links count into.
    stats: Arc<Stats>,
}

impl RelaydWriterFactory {
    /// A factory whose links wait `backoff` before reconnecting, send beacons that
    /// allow for the daemon's `flush_interval`, and count into `stats`.
    pub fn new(
        backoff: Duration,
        flush_interval: Duration,
        stats: Arc<Stats>,
    ) -> RelaydWriterFactory {
        RelaydWriterFactory {
            links: Mutex::new(HashMap::new()),
            backoff,
            flush_interval,
            stats,
        }
    }

    fn links(&self) -> MutexGuard<'_, HashMap<String, Arc<Link>>> {
        self.links.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Session `session` streams to `target` from now on (nothing connects before
    /// its first packet).
    pub fn open(&self, session: &str, target: &StreamTarget) {
        let link = Link::new(
            session,
            target.url.clone(),
            target.live_timer_us,
            self.backoff,
            self.flush_interval,
            self.stats.clone(),
        );
        if let Some(old) = self.links().insert(session.to_owned(), link) {
            old.close();
        }
    }

    /// Session `session` is gone: its link closes once its last writer drops it.
    pub fn close(&self, session: &str) {
        if let Some(link) = self.links().remove(session) {
            link.close();
        }
    }

    /// The link of `session`, for `status`.
    pub fn link(&self, session: &str) -> Option<Arc<Link>> {
        self.links().get(session).cloned()
    }
}

impl std::fmt::Debug for RelaydWriterFactory {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut sessions: Vec<String> = self.links().keys().cloned().collect();
        sessions.sort();
        f.debug_struct("RelaydWriterFactory")
            .field("sessions", &sessions)
            .finish()
    }
}

impl WriterFactory for RelaydWriterFactory {
    fn create(&self, stream: &StreamInfo) -> io::Result<Box<dyn StreamWriter>> {
        let link = self.link(&stream.session).ok_or_else(|| {
            io::Error::other(format!(
                "session {} has no relayd URL: the relayd writer needs create --set-url",
                stream.session
            ))
        })?;
        Ok(Box::new(RelaydStream {
            link,
            trace: stream.trace_dir.below().join("/"),
            name: stream.file_name(),
            handle: None,
            sent: 0,
        }))
    }

    fn uses_trace_dir(&self) -> bool {
        false
    }
}

/// One stream sent to the relayd.
struct RelaydStream {
    /// Its session's link.
    link: Arc<Link>,
    /// The sub-trace path below the session directory (`ust/uid/1000/64-bit`).
    trace: String,
    /// `<channel>_<cpu>`.
    name: String,
    /// Its handle on the current connection, once added.
    handle: Option<Handle>,
    /// Packets sent on that handle: the next packet's net_seq_num.
    sent: u64,
}

impl StreamWriter for RelaydStream {
    fn write_packet(&mut self, metadata: &Metadata, packet: &[u8]) -> io::Result<()> {
        let header = PacketHeader::read(packet).map_err(io::Error::other)?;
        let index = Index {
            relay_stream: 0,
            net_seq_num: 0,
            entry: IndexEntry::of(0, &header),
        };
        self.link.send_packet(
            &self.trace,
            &self.name,
            &mut self.handle,
            &mut self.sent,
            (metadata.version, &metadata.tsdl),
            packet,
            index,
        )?;
        Ok(())
    }

    fn sync(&mut self) -> io::Result<()> {
        // Every packet was acknowledged (its index reply) before write_packet returned.
        Ok(())
    }
}

impl Drop for RelaydStream {
    fn drop(&mut self) {
        if let Some(handle) = self.handle {
            self.link.close_stream(&self.trace, handle, self.sent);
        }
    }
}
