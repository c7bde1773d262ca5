//! A warm pool of per-PID ring sets.
//!
//! Each per-PID app needs a new ring set: a memfd per CPU (create, size, seal,
//! map) and an eventfd, about 40 us of system calls on the BufferFactory's thread,
//! which every registration waits behind. The pool makes them ahead on one
//! background thread per channel geometry in use, at most `size` ready at a time;
//! registration takes a ready one and only writes its headers
//! ([`BlankSet::init`]). When none is ready (the first app of a geometry, or a
//! burst faster than the thread) the set is made at once, as without a pool.

use crate::shm::{BlankSet, Geometry, ShmError};
use std::collections::HashMap;
use std::sync::mpsc::{Receiver, TryRecvError, sync_channel};
use std::thread;
use std::time::Duration;

/// Name of pooled memfds (`/proc/<pid>/fd`): a pooled set is made before its owner
/// is known.
const POOLED_NAME: &str = "ustrace per-PID ring";

/// Pause of a filler after a failed creation (out of fds or memory) before it
/// tries again; registration meanwhile makes its sets itself and reports errors.
const RETRY_AFTER: Duration = Duration::from_millis(500);

/// Ready per-PID ring sets by geometry.
pub struct RingPool {
    /// Sets kept ready per geometry; 0 disables the pool.
    size: usize,
    /// Rings per set.
    cpus: usize,
    /// The ready sets of each geometry in use, each filled by its own thread.
    ready: HashMap<Geometry, Receiver<BlankSet>>,
}

impl RingPool {
    /// A pool keeping `size` sets of `cpus` rings ready per geometry asked for.
    pub fn new(size: usize, cpus: usize) -> RingPool {
        RingPool {
            size,
            cpus,
            ready: HashMap::new(),
        }
    }

    /// A set of `geometry`: a ready one, else one made now. The first call for a
    /// geometry starts keeping sets of it ready.
    pub fn take(&mut self, geometry: Geometry) -> Result<BlankSet, ShmError> {
        if self.size == 0 {
            return BlankSet::create(POOLED_NAME, geometry, self.cpus);
        }
        let (size, cpus) = (self.size, self.cpus);
        let ready = self
            .ready
            .entry(geometry)
            .or_insert_with(|| fill(geometry, cpus, size));
        match ready.try_recv() {
            Ok(set) => return Ok(set),
            Err(TryRecvError::Empty) => {}
            Err(TryRecvError::Disconnected) => {
                self.ready.remove(&geometry);
            }
        }
        BlankSet::create(POOLED_NAME, geometry, cpus)
    }

    /// Stops keeping sets ready for the geometries `needed` rejects (their
    /// threads end, their sets are freed).
    pub fn retain(&mut self, needed: impl Fn(&Geometry) -> bool) {
        self.ready.retain(|geometry, _| needed(geometry));
    }
}

/// Starts the thread that keeps `size` sets of `geometry` ready; it ends when the
/// receiver is dropped.
fn fill(geometry: Geometry, cpus: usize, size: usize) -> Receiver<BlankSet> {
    // The filler holds one more set, blocked in `send`, than the channel does.
    let (tx, rx) = sync_channel(size - 1);
    let spawned = thread::Builder::new()
        .name("ustraced-rings".to_string())
        .spawn(move || {
            loop {
                match BlankSet::create(POOLED_NAME, geometry, cpus) {
                    Ok(set) => {
                        if tx.send(set).is_err() {
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

    /// Takes sets until one comes from the filler (a hit is instant, a miss is
    /// made inline), within a deadline.
    fn take_ready(pool: &mut RingPool, geometry: Geometry) -> BlankSet {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Some(set) = pool.ready.get(&geometry).and_then(|r| r.try_recv().ok()) {
                return set;
            }
            assert!(Instant::now() < deadline, "the filler made no set");
            thread::yield_now();
        }
    }

    #[test]
    fn a_pooled_set_becomes_rings_an_app_can_map() {
        let mut pool = RingPool::new(2, 3);
        let first = pool.take(SMALL).unwrap();
        assert_eq!(first.geometry(), SMALL);
        let pooled = take_ready(&mut pool, SMALL);
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
        let mut pool = RingPool::new(0, 1);
        let set = pool.take(SMALL).unwrap();
        let other = Geometry {
            subbuf_size: 8192,
            num_subbuf: 2,
        };
        assert!(set.init(&config(other)).is_err());
    }

    #[test]
    fn geometries_no_longer_needed_are_dropped() {
        let mut pool = RingPool::new(1, 1);
        pool.take(SMALL).unwrap();
        assert!(pool.ready.contains_key(&SMALL));
        pool.retain(|_| false);
        assert!(pool.ready.is_empty());
    }
}
