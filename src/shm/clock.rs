//! The two cheap questions of the fast path: what time is it, which CPU am I on.

use nix::time::{ClockId, clock_gettime};

/// CLOCK_MONOTONIC in nanoseconds, read through the vDSO (no system call).
///
/// Every event and packet timestamp comes from here so that one trace has one clock.
#[inline]
pub fn now_ns() -> u64 {
    // CLOCK_MONOTONIC cannot fail on Linux; 0 would only make the event look early.
    clock_gettime(ClockId::CLOCK_MONOTONIC)
        .map(|t| t.tv_sec() as u64 * 1_000_000_000 + t.tv_nsec() as u64)
        .unwrap_or(0)
}

/// The CPU this thread runs on (vDSO/rseq backed), which selects its ring.
///
/// The thread may migrate right after: that is harmless, rings are multi-producer.
#[inline]
pub fn current_cpu() -> usize {
    nix::sched::sched_getcpu().unwrap_or(0)
}
