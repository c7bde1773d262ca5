//! A warm pool of per-PID ring sets.
//!
//! Each per-PID app needs a new ring set: a memfd per CPU (create, size, seal,
//! map, header page faulted in) and an eventfd, about 40 us of system calls on the
//! BufferFactory's thread, which every registration waits behind. The pool makes
//! them ahead: while a started session has per-PID channels, one background thread
//! per channel geometry keeps up to `size` sets of it on a shelf; registration
//! takes one and only writes its headers ([`BlankSet::init`]). When the shelf is
//! empty (a burst faster than the thread) the set is made at once, as without a
//! pool.
//!
//! The thread refills as soon as the shelf is down to half, else once no set was
//! taken for a moment, and runs as `SCHED_BATCH`, so that waking it neither
//! happens on every registration nor preempts the registering thread.
//! `ustrace status` shows the sets ready against those wanted: a steady, bounded
//! footprint (a memfd per CPU and an eventfd each, one page per ring touched)
//! while tracing, none after.

use crate::actors::stats::Stats;
use crate::shm::{BlankSet, Geometry, ShmError};
use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread;
use std::time::Duration;

/// Name of pooled memfds (`/proc/<pid>/fd`): a pooled set is made before its owner
/// is known.
const POOLED_NAME: &str = "ustrace per-PID ring";

/// Pause of a filler after a failed creation (out of fds or memory) before it
/// tries again; registration meanwhile makes its sets itself and reports errors.
const RETRY_AFTER: Duration = Duration::from_millis(500);

/// How long a shelf above half but not full waits for registrations to slow down
/// before it is topped up: at rest every shelf is full, so the daemon's footprint
/// between bursts is the same every time.
const TOP_UP_AFTER: Duration = Duration::from_millis(100);

/// The ready sets of one geometry, shared by the pool and its filler thread.
#[derive(Default)]
struct Shelf {
    /// The sets, and whether the pool still wants them.
    state: Mutex<ShelfState>,
    /// Wakes the filler: the shelf is no longer full, down to half, or closed.
    low: Condvar,
}

/// What a [`Shelf`] guards.
#[derive(Default)]
struct ShelfState {
    /// Sets ready to take, each counted in `Stats::pid_sets_ready`.
    sets: Vec<BlankSet>,
    /// Set when the geometry is no longer wanted: the filler ends.
    closed: bool,
}

impl Shelf {
    /// The state; a filler that panicked cannot leave it inconsistent (pushes and
    /// pops only), so a poisoned lock is used as it is.
    fn lock(&self) -> MutexGuard<'_, ShelfState> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Frees the sets, uncounting them from `stats`, and ends the filler.
    fn close(&self, stats: &Stats) {
        let sets = {
            let mut state = self.lock();
            state.closed = true;
            std::mem::take(&mut state.sets)
        };
        self.low.notify_one();
        stats
            .pid_sets_ready
            .fetch_sub(sets.len() as u64, Ordering::Relaxed);
    }
}

/// Ready per-PID ring sets by geometry.
pub struct RingPool {
    /// Sets kept ready per geometry; 0 disables the pool.
    size: usize,
    /// Rings per set.
    cpus: usize,
    /// The shelf of each geometry kept, each filled by its own thread.
    shelves: HashMap<Geometry, Arc<Shelf>>,
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
            shelves: HashMap::new(),
            stats,
        }
    }

    /// Keeps sets of exactly the geometries in `needed` ready: starts a thread for
    /// each new one; the others' threads end and their sets are freed.
    pub fn keep_ready(&mut self, needed: &[Geometry]) {
        if self.size == 0 {
            return;
        }
        let stats = &self.stats;
        self.shelves.retain(|geometry, shelf| {
            let keep = needed.contains(geometry);
            if !keep {
                shelf.close(stats);
            }
            keep
        });
        for &geometry in needed {
            if !self.shelves.contains_key(&geometry) {
                let shelf = Arc::new(Shelf::default());
                fill(
                    shelf.clone(),
                    geometry,
                    self.cpus,
                    self.size,
                    self.stats.clone(),
                );
                self.shelves.insert(geometry, shelf);
            }
        }
        let wanted = (self.size * self.shelves.len()) as u64;
        self.stats.pid_sets_wanted.store(wanted, Ordering::Relaxed);
    }

    /// A set of `geometry`: a ready one, else one made now.
    pub fn take(&mut self, geometry: Geometry) -> Result<BlankSet, ShmError> {
        let ready = self.shelves.get(&geometry).and_then(|shelf| {
            let mut state = shelf.lock();
            let set = state.sets.pop()?;
            Stats::sub(&self.stats.pid_sets_ready);
            // Leaving full starts the filler's top-up timer; down to half, a refill.
            let left = state.sets.len();
            if left + 1 == self.size || left == self.size / 2 {
                shelf.low.notify_one();
            }
            Some(set)
        });
        match ready {
            Some(set) => Ok(set),
            None => BlankSet::create(POOLED_NAME, geometry, self.cpus),
        }
    }
}

impl Drop for RingPool {
    fn drop(&mut self) {
        for shelf in self.shelves.values() {
            shelf.close(&self.stats);
        }
    }
}

/// Starts the thread that refills `shelf` with sets of `geometry` up to `size`
/// when it is down to half, or not full and left alone for [`TOP_UP_AFTER`]; it
/// ends when the shelf is closed.
fn fill(shelf: Arc<Shelf>, geometry: Geometry, cpus: usize, size: usize, stats: Arc<Stats>) {
    let spawned = thread::Builder::new()
        .name("ustraced-rings".to_string())
        .spawn(move || {
            yield_to_others();
            // Set while creation fails, so that a lasting failure is logged once.
            let mut failing = false;
            loop {
                {
                    let mut state = shelf.lock();
                    while !state.closed && state.sets.len() > size / 2 {
                        if state.sets.len() == size {
                            state = shelf.low.wait(state).unwrap_or_else(|e| e.into_inner());
                            continue;
                        }
                        let (next, waited) = shelf
                            .low
                            .wait_timeout(state, TOP_UP_AFTER)
                            .unwrap_or_else(|e| e.into_inner());
                        state = next;
                        if waited.timed_out() && state.sets.len() < size {
                            break;
                        }
                    }
                    if state.closed {
                        return;
                    }
                }
                loop {
                    let set = match BlankSet::create(POOLED_NAME, geometry, cpus) {
                        Ok(set) => set,
                        Err(e) => {
                            if !failing {
                                log::warn!("ring pool {geometry:?}: {e}; retrying until it works");
                            }
                            failing = true;
                            thread::sleep(RETRY_AFTER);
                            break;
                        }
                    };
                    if failing {
                        log::info!("ring pool {geometry:?}: making sets again");
                        failing = false;
                    }
                    let mut state = shelf.lock();
                    if state.closed {
                        return;
                    }
                    state.sets.push(set);
                    Stats::add(&stats.pid_sets_ready, 1);
                    if state.sets.len() >= size {
                        break;
                    }
                }
            }
        });
    if let Err(e) = spawned {
        log::warn!("ring pool {geometry:?}: no filler thread ({e}); sets made at registration");
    }
}

/// Makes the calling thread `SCHED_BATCH`: waking it does not preempt the thread
/// that woke it (registration), it runs in that thread's gaps instead.
fn yield_to_others() {
    let param = libc::sched_param { sched_priority: 0 };
    // SAFETY: `param` is a valid sched_param for the call's duration; pid 0 names
    // the calling thread; the call changes only its scheduling policy.
    let rc = unsafe { libc::sched_setscheduler(0, libc::SCHED_BATCH, &param) };
    if rc != 0 {
        log::debug!(
            "ring pool filler stays SCHED_OTHER: {}",
            std::io::Error::last_os_error()
        );
    }
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
            context_len: 0,
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
        let mapped = ChannelBuffers::from_fds(fds, wakeup, 0).unwrap();
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
    fn the_shelf_is_refilled_when_down_to_half_and_topped_up_at_rest() {
        let mut pool = RingPool::new(4, 1, Arc::default());
        pool.keep_ready(&[SMALL]);
        wait_ready(&pool, 4);
        pool.take(SMALL).unwrap();
        // Above half, the filler tops up only after a pause; down to half, at once.
        wait_ready(&pool, 4);
        pool.take(SMALL).unwrap();
        pool.take(SMALL).unwrap();
        wait_ready(&pool, 4);
    }

    #[test]
    fn without_a_ready_set_one_is_made_at_once() {
        let mut pool = RingPool::new(0, 2, Arc::default());
        pool.keep_ready(&[SMALL]);
        assert_eq!(pool.take(SMALL).unwrap().geometry(), SMALL);
        assert_eq!(pool.stats.pid_sets_ready.load(Ordering::Relaxed), 0);
    }
}
