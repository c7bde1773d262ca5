//! A warm pool of per-PID ring sets.
//!
//! Each per-PID app needs a new ring set: a memfd per CPU (create, size, seal,
//! map) and an eventfd, about 40 us of system calls on the BufferFactory's thread,
//! which every registration waits behind. The pool makes them ahead: while a
//! started session has per-PID channels, one background thread per channel
//! geometry keeps `size` sets of it ready; registration takes one and only writes
//! its headers ([`BlankSet::init`]). When none is ready (a burst faster than the
//! thread) the set is made at once, as without a pool. `ustrace status` shows the
//! sets ready against those wanted: a steady, bounded footprint (a memfd per CPU
//! and an eventfd each, one page per ring touched) while tracing, none after.

use crate::actors::stats::Stats;
use crate::shm::{BlankSet, Geometry, ShmError};
use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::sync::mpsc::{Receiver, sync_channel};
use std::thread;
use std::time::Duration;

/// Name of pooled memfds (`/proc/<pid>/fd`): a pooled set is made before its owner
/// is known.
const POOLED_NAME: &str = "ustrace per-PID ring";

/// Pause of a filler after a failed creation (out of fds or memory) before it
/// tries again; registration meanwhile makes its sets itself and reports errors.
const RETRY_AFTER: Duration = Duration::from_millis(500);

/// A set waiting in the pool, counted in `Stats::pid_sets_ready` while it waits.
struct Ready {
    /// The set, until taken.
    set: Option<BlankSet>,
    /// Where it is counted.
    stats: Arc<Stats>,
}

impl Drop for Ready {
    fn drop(&mut self) {
        Stats::sub(&self.stats.pid_sets_ready);
    }
}

/// Ready per-PID ring sets by geometry.
pub struct RingPool {
    /// Sets kept ready per geometry; 0 disables the pool.
    size: usize,
    /// Rings per set.
    cpus: usize,
    /// The ready sets of each geometry kept, each filled by its own thread.
    ready: HashMap<Geometry, Receiver<Ready>>,
    /// Daemon counters.
    stats: Arc<Stats>,
}

impl RingPool {
    /// A pool keeping `size` sets of `cpus` rings ready per geometry it is asked to
    /// keep; none yet.
    pub fn new(size: usize, cpus: usize, stats: Arc<Stats>) -> RingPool {
        RingPool {
            size,
            cpus,
            ready: HashMap::new(),
            stats,
        }
    }

    /// Keeps sets of exactly the geometries in `needed` ready: starts a thread for
    /// each new one; the others' threads end and their sets are freed.
    pub fn keep_ready(&mut self, needed: &[Geometry]) {
        if self.size == 0 {
            return;
        }
        self.ready.retain(|geometry, _| needed.contains(geometry));
        for &geometry in needed {
            if !self.ready.contains_key(&geometry) {
                let ready = fill(geometry, self.cpus, self.size, self.stats.clone());
                self.ready.insert(geometry, ready);
            }
        }
        let wanted = (self.size * self.ready.len()) as u64;
        self.stats.pid_sets_wanted.store(wanted, Ordering::Relaxed);
    }

    /// A set of `geometry`: a ready one, else one made now.
    pub fn take(&mut self, geometry: Geometry) -> Result<BlankSet, ShmError> {
        let ready = self.ready.get(&geometry).and_then(|r| r.try_recv().ok());
        match ready.and_then(|mut r| r.set.take()) {
            Some(set) => Ok(set),
            None => BlankSet::create(POOLED_NAME, geometry, self.cpus),
        }
    }
}

/// Starts the thread that keeps `size` sets of `geometry` ready; it ends when the
/// receiver is dropped.
fn fill(geometry: Geometry, cpus: usize, size: usize, stats: Arc<Stats>) -> Receiver<Ready> {
    // The filler holds one more set, blocked in `send`, than the channel does.
    let (tx, rx) = sync_channel(size - 1);
    let spawned = thread::Builder::new()
        .name("ustraced-rings".to_string())
        .spawn(move || {
            loop {
                match BlankSet::create(POOLED_NAME, geometry, cpus) {
                    Ok(set) => {
                        Stats::add(&stats.pid_sets_ready, 1);
                        let ready = Ready {
                            set: Some(set),
                            stats: stats.clone(),
                        };
                        if tx.send(ready).is_err() {
                            return;
                        }
                    }
                    Err(e) => {
                        log::warn!("ring pool {geometry:?}: {e}; retrying");
                        thread::sleep(RETRY_AFTER);
                    }
                }
            }
        });
    if let Err(e) = spawned {
        log::warn!("ring pool {geometry:?}: no filler thread ({e}); sets made at registration");
    }
    rx
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ctf::packet::PacketHeader;
    use crate::shm::{ChannelBuffers, Mode, RingConfig};
    use std::os::fd::AsFd;
    use std::time::Instant;

    const SMALL: Geometry = Geometry {
        subbuf_size: 4096,
        num_subbuf: 2,
    };

    fn config(geometry: Geometry) -> RingConfig {
        RingConfig {
            geometry,
            mode: Mode::Discard,
            stream_id: 3,
            uuid: [7; 16],
        }
    }

    /// Waits, within a deadline, until `pool` has `n` sets ready.
    fn wait_ready(pool: &RingPool, n: u64) {
        let deadline = Instant::now() + Duration::from_secs(10);
        while pool.stats.pid_sets_ready.load(Ordering::Relaxed) != n {
            assert!(Instant::now() < deadline, "not {n} sets ready");
            thread::yield_now();
        }
    }

    #[test]
    fn a_pooled_set_becomes_rings_an_app_can_map() {
        let mut pool = RingPool::new(2, 3, Arc::default());
        pool.keep_ready(&[SMALL]);
        wait_ready(&pool, 2);
        let pooled = pool.take(SMALL).unwrap();
        assert_eq!(pooled.geometry(), SMALL);
        wait_ready(&pool, 2);
        let buffers = pooled.init(&config(SMALL)).unwrap();
        assert_eq!(buffers.rings().len(), 3);
        let fds = buffers
            .rings()
            .iter()
            .map(|r| r.as_fd().try_clone_to_owned().unwrap())
            .collect();
        let wakeup = buffers.wakeup().as_fd().try_clone_to_owned().unwrap();
        let mapped = ChannelBuffers::from_fds(fds, wakeup).unwrap();
        let mut reservation = mapped.rings()[2].reserve(8).expect("room in a new ring");
        reservation.buf().copy_from_slice(&[1; 8]);
        reservation.commit();
        let mut consumer = buffers.consumers().remove(2);
        assert!(consumer.flush());
        let mut packet = Vec::new();
        consumer
            .take_packet(&mut packet)
            .expect("the flushed packet");
        let header = PacketHeader::read(&packet).unwrap();
        assert_eq!(
            (header.open.uuid, header.open.stream_id, header.open.cpu_id),
            ([7; 16], 3, 2)
        );
    }

    #[test]
    fn a_set_of_another_geometry_is_refused() {
        let mut pool = RingPool::new(0, 1, Arc::default());
        let set = pool.take(SMALL).unwrap();
        let other = Geometry {
            subbuf_size: 8192,
            num_subbuf: 2,
        };
        assert!(set.init(&config(other)).is_err());
    }

    #[test]
    fn sets_of_geometries_no_longer_needed_are_freed() {
        let mut pool = RingPool::new(3, 1, Arc::default());
        let other = Geometry {
            subbuf_size: 8192,
            num_subbuf: 2,
        };
        pool.keep_ready(&[SMALL, other]);
        wait_ready(&pool, 6);
        assert_eq!(pool.stats.pid_sets_wanted.load(Ordering::Relaxed), 6);
        pool.keep_ready(&[other]);
        wait_ready(&pool, 3);
        assert_eq!(pool.stats.pid_sets_wanted.load(Ordering::Relaxed), 3);
        pool.keep_ready(&[]);
        wait_ready(&pool, 0);
        assert_eq!(pool.stats.pid_sets_wanted.load(Ordering::Relaxed), 0);
    }

    #[test]
    fn without_a_ready_set_one_is_made_at_once() {
        let mut pool = RingPool::new(0, 2, Arc::default());
        pool.keep_ready(&[SMALL]);
        assert_eq!(pool.take(SMALL).unwrap().geometry(), SMALL);
        assert_eq!(pool.stats.pid_sets_ready.load(Ordering::Relaxed), 0);
    }
}
