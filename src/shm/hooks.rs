//! Stops a producer thread exactly at one of its linearization points, so that tests
//! can prove what holds there (a consumer racing a producer frozen after its CAS, a
//! packet left incomplete by a producer frozen before its close commit...).
//!
//! Only with the cargo feature `linearization-hooks` (the crate's tests enable it
//! through a dev-dependency on the crate itself): without it [`reached`] is an empty
//! inline function and the fast path carries nothing. With it, an unarmed process
//! pays one relaxed load of a static per point, on a `#[cold]` branch never taken.
//!
//! ```ignore
//! let stop = Stop::new(Point::AfterCas);
//! let s = stop.clone();
//! let producer = std::thread::spawn(move || { s.arm(); ring.write_event(1, 0, |_| {}) });
//! assert!(stop.wait_parked(Duration::from_secs(10)));
//! // ... the producer is frozen right after its reservation CAS ...
//! stop.release();
//! ```

/// A linearization point a producer can be stopped at.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Point {
    /// Right after the successful reservation CAS on `write`, before any packet
    /// switch it implies and before the event is written.
    AfterCas,
    /// Inside a packet switch, the new packet's open half written, before the
    /// packet-open commit.
    BeforeOpenCommit,
    /// Inside a packet switch (or a consumer's flush), the old packet's close half
    /// written, before the close commit of its padding.
    BeforeCloseCommit,
    /// A consumer's optimistic copy of a complete packet made (`take_packet`,
    /// `snapshot`), before the compare-and-swap of `consumed` that validates it.
    AfterCopy,
}

/// Called by the ring code at each point; parks the thread if a test armed it there.
#[inline(always)]
pub(crate) fn reached(point: Point) {
    #[cfg(feature = "linearization-hooks")]
    armed::reached(point);
    #[cfg(not(feature = "linearization-hooks"))]
    let _ = point;
}

#[cfg(feature = "linearization-hooks")]
pub use armed::Stop;

#[cfg(feature = "linearization-hooks")]
mod armed {
    use std::cell::RefCell;
    use std::sync::atomic::{AtomicUsize, Ordering::*};
    use std::sync::{Arc, Condvar, Mutex, MutexGuard};
    use std::time::{Duration, Instant};

    use super::Point;

    /// Threads armed and not yet parked, in the whole process: zero in every process
    /// but a test's, so `reached` costs one load.
    static ARMED: AtomicUsize = AtomicUsize::new(0);

    thread_local! {
        /// The stop this thread is armed with, if any.
        static MINE: RefCell<Option<Stop>> = const { RefCell::new(None) };
    }

    /// Where a stopped thread is.
    #[derive(Default)]
    struct State {
        /// The thread reached the point and waits.
        parked: bool,
        /// The test let it go on.
        released: bool,
    }

    /// A one-shot stop at a [`Point`]: the thread that [`Stop::arm`]s it parks the
    /// next time it reaches the point, until [`Stop::release`] or until any handle is
    /// dropped (so a failing test never leaves a thread parked). Cloned to hand one
    /// handle to the producer thread and keep one in the test.
    #[derive(Clone)]
    pub struct Stop {
        /// The point.
        point: Point,
        /// Shared by the handles.
        inner: Arc<(Mutex<State>, Condvar)>,
    }

    impl Stop {
        /// A stop at `point`, not armed yet.
        pub fn new(point: Point) -> Stop {
            Stop {
                point,
                inner: Arc::new((Mutex::new(State::default()), Condvar::new())),
            }
        }

        /// Arms the calling thread: it parks the next time it reaches the point.
        pub fn arm(&self) {
            let previous = MINE.with(|m| m.borrow_mut().replace(self.clone()));
            if previous.is_none() {
                ARMED.fetch_add(1, Relaxed);
            }
        }

        /// Waits until the armed thread parks at the point; false after `timeout`.
        pub fn wait_parked(&self, timeout: Duration) -> bool {
            let deadline = Instant::now() + timeout;
            let mut state = self.state();
            while !state.parked {
                let left = deadline.saturating_duration_since(Instant::now());
                if left.is_zero() {
                    return false;
                }
                state = match self.inner.1.wait_timeout(state, left) {
                    Ok((state, _)) => state,
                    Err(e) => e.into_inner().0,
                };
            }
            true
        }

        /// Lets the parked (or not yet parked) thread go on past the point.
        pub fn release(&self) {
            self.state().released = true;
            self.inner.1.notify_all();
        }

        /// The shared state; a test that panicked while holding it poisons nothing
        /// worth refusing.
        fn state(&self) -> MutexGuard<'_, State> {
            self.inner.0.lock().unwrap_or_else(|e| e.into_inner())
        }

        /// Parks the calling thread here until released.
        fn park(&self) {
            let mut state = self.state();
            state.parked = true;
            self.inner.1.notify_all();
            while !state.released {
                state = self.inner.1.wait(state).unwrap_or_else(|e| e.into_inner());
            }
        }
    }

    impl Drop for Stop {
        fn drop(&mut self) {
            self.release();
        }
    }

    /// The hook with the feature on: one load unless some thread is armed.
    #[inline(always)]
    pub(super) fn reached(point: Point) {
        if ARMED.load(Relaxed) != 0 {
            park_if_armed(point);
        }
    }

    /// Parks this thread if it is armed at `point` (disarming it first).
    #[cold]
    fn park_if_armed(point: Point) {
        let Ok(Some(stop)) = MINE.try_with(|m| {
            let mut mine = m.borrow_mut();
            if mine.as_ref().is_some_and(|s| s.point == point) {
                mine.take()
            } else {
                None
            }
        }) else {
            return;
        };
        ARMED.fetch_sub(1, Relaxed);
        stop.park();
    }
}
