//! The two cheap questions of the fast path: what time is it, which CPU am I on.
//!
//! **Time.** Every event and packet timestamp of a ring comes from its [`TraceClock`],
//! which the daemon writes into the ring's header and every writer (each app, and the
//! daemon when it flushes) reads from there, so every writer of a per-UID ring maps
//! ticks the same way; the ring's pair CAS keeps each stream monotonic whatever order
//! the reads ran in (`Ring::reserve`). Timestamps are
//! nanoseconds on CLOCK_MONOTONIC's scale either way (the metadata's clock keeps
//! `freq = 1000000000` and its measured offset, so readers print the same dates):
//! - `tsc`: the invariant TSC (plain `rdtsc`, ~12 ns in this VM against ~30 ns for
//!   `clock_gettime`), scaled by a multiplier the daemon calibrated once against
//!   CLOCK_MONOTONIC when it first needed a clock ([`host_clock`]);
//! - `monotonic`: CLOCK_MONOTONIC through the vDSO, wherever the kernel does not use
//!   the TSC as its own clocksource or the CPU does not keep it invariant.
//!
//! `USTRACE_CLOCK` (`auto`, the default, `tsc` or `monotonic`) in the daemon's
//! environment forces a choice; `status` says which one the daemon's sessions use.
//!
//! **CPU.** [`current_cpu`] reads `cpu_id` from the rseq area glibc (2.35 and later)
//! registers for each thread, at `__rseq_offset` from the thread pointer: a load, no
//! call. Where glibc registered none (older glibc, `GLIBC_TUNABLES=glibc.pthread.rseq=0`,
//! a kernel without rseq) it calls `sched_getcpu`.

use std::sync::OnceLock;

/// CLOCK_MONOTONIC in nanoseconds, read through the vDSO (no system call).
///
/// The clock of rings whose [`TraceClock`] is `monotonic`, the reference the TSC is
/// calibrated against, and what the daemon's own timers read. It calls libc directly:
/// `nix::time::clock_gettime` measured ~10 ns slower per call here (27 vs 37 ns).
#[inline]
pub fn now_ns() -> u64 {
    let mut t = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `t` is a valid, writable timespec for the duration of the call, and
    // CLOCK_MONOTONIC is a valid clock id; the call writes only `t`.
    // It cannot fail for CLOCK_MONOTONIC on Linux; on failure `t` stays 0.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut t) };
    t.tv_sec as u64 * 1_000_000_000 + t.tv_nsec as u64
}

/// How the writers of one ring read the time: the mapping from TSC ticks to
/// CLOCK_MONOTONIC nanoseconds, or CLOCK_MONOTONIC itself. Two words in the ring
/// header ([`TraceClock::words`]); a `Copy` value in each process's `Ring`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TraceClock {
    /// Nanoseconds per TSC tick times 2^32; 0 means CLOCK_MONOTONIC.
    tsc_mult: u64,
    /// Added to `tsc * tsc_mult >> 32`: CLOCK_MONOTONIC at the calibration minus the
    /// scaled TSC then.
    tsc_offset: i64,
}

/// Why the trace clock asked for cannot be used.
#[derive(Clone, Debug, thiserror::Error, PartialEq, Eq)]
pub enum ClockError {
    /// `USTRACE_CLOCK` holds something else than the three choices.
    #[error("USTRACE_CLOCK={0:?}: expected auto, tsc or monotonic")]
    BadChoice(String),
    /// `USTRACE_CLOCK=tsc` (or a ring header) asks for the TSC where it cannot serve.
    #[error("the TSC cannot be the trace clock here: {0}")]
    TscUnusable(String),
}

impl TraceClock {
    /// CLOCK_MONOTONIC: the fallback, and what `USTRACE_CLOCK=monotonic` forces.
    pub const MONOTONIC: TraceClock = TraceClock {
        tsc_mult: 0,
        tsc_offset: 0,
    };

    /// The current time in trace-clock nanoseconds.
    ///
    /// Not ordered with the loads around it, nor across CPUs to the nanosecond: the
    /// ring's pair CAS makes timestamps monotonic along positions (`Ring::reserve`).
    #[inline]
    pub fn now(&self) -> u64 {
        if self.tsc_mult == 0 {
            return now_ns();
        }
        self.scale(tsc())
    }

    /// `ticks` in trace-clock nanoseconds.
    #[inline]
    fn scale(&self, ticks: u64) -> u64 {
        let ns = (u128::from(ticks) * u128::from(self.tsc_mult)) >> 32;
        (ns as u64).wrapping_add_signed(self.tsc_offset)
    }

    /// `"tsc"` or `"monotonic"`, as `status` and `USTRACE_CLOCK` spell it.
    pub fn name(&self) -> &'static str {
        if self.tsc_mult == 0 {
            "monotonic"
        } else {
            "tsc"
        }
    }

    /// TSC ticks per second, if this is the TSC clock (for `status`).
    pub fn tsc_hz(&self) -> Option<u64> {
        (self.tsc_mult != 0).then(|| ((1_000_000_000u128 << 32) / u128::from(self.tsc_mult)) as u64)
    }

    /// The two header words (multiplier, offset) that carry this clock to apps.
    pub(crate) fn words(&self) -> (u64, u64) {
        (self.tsc_mult, self.tsc_offset as u64)
    }

    /// The clock a ring header's words name; refuses a TSC clock where this process
    /// has no TSC to read (another architecture than the daemon's checked).
    pub(crate) fn from_words(mult: u64, offset: u64) -> Result<TraceClock, ClockError> {
        if mult != 0 && !HAS_TSC {
            return Err(ClockError::TscUnusable(
                "this architecture has no TSC".into(),
            ));
        }
        Ok(TraceClock {
            tsc_mult: mult,
            tsc_offset: offset as i64,
        })
    }

    /// A TSC clock calibrated against CLOCK_MONOTONIC over `span`: a bracketed
    /// (monotonic, tsc) pair at each end gives the ticks per nanosecond.
    fn calibrate(span: std::time::Duration) -> Result<TraceClock, ClockError> {
        let (t0, n0) = paired_sample();
        std::thread::sleep(span);
        let (t1, n1) = paired_sample();
        if t1 <= t0 || n1 <= n0 {
            return Err(ClockError::TscUnusable(format!(
                "calibration went backwards (tsc {t0} -> {t1}, monotonic {n0} -> {n1})"
            )));
        }
        let mult = ((u128::from(n1 - n0) << 32) / u128::from(t1 - t0)) as u64;
        let clock = TraceClock {
            tsc_mult: mult,
            tsc_offset: 0,
        };
        let hz = clock.tsc_hz().unwrap_or(0);
        if !(100_000_000..=20_000_000_000).contains(&hz) {
            return Err(ClockError::TscUnusable(format!(
                "calibration measured {hz} Hz"
            )));
        }
        Ok(TraceClock {
            tsc_offset: n1 as i64 - clock.scale(t1) as i64,
            ..clock
        })
    }
}

/// A TSC read and the CLOCK_MONOTONIC instant it stands for: the middle of the
/// tightest of a few monotonic reads around it.
fn paired_sample() -> (u64, u64) {
    let mut best = (u64::MAX, 0, 0);
    for _ in 0..16 {
        let before = now_ns();
        let ticks = tsc();
        let after = now_ns();
        let width = after.saturating_sub(before);
        if width < best.0 {
            best = (width, ticks, before + width / 2);
        }
    }
    (best.1, best.2)
}

/// The TSC, read with plain `rdtsc`: unordered, so it may run before an earlier load
/// completes. A ring's time order does not depend on it (its pair CAS, see
/// `Ring::reserve`); across rings an event may be dated up to that load's latency
/// early (docs/shm.md "Trace clock"; `monotonic` has no such window). `rdtscp` or
/// `lfence; rdtsc` cost ~15 ns more per event in this VM (scripts/reserve-loop.c:
/// 27-32 ns against 14-17 with the 16-byte CAS).
#[cfg(target_arch = "x86_64")]
#[inline]
fn tsc() -> u64 {
    // SAFETY: `rdtsc` exists on every x86_64 CPU and reads only the counter.
    unsafe { core::arch::x86_64::_rdtsc() }
}

/// No TSC off x86_64: never reached, [`HAS_TSC`] is false there.
#[cfg(not(target_arch = "x86_64"))]
#[inline]
fn tsc() -> u64 {
    now_ns()
}

/// Whether this architecture has the TSC [`tsc`] reads.
const HAS_TSC: bool = cfg!(target_arch = "x86_64");

/// Why the TSC cannot serve on this host, if it cannot: the CPU must keep it
/// invariant (`constant_tsc` and `nonstop_tsc` in /proc/cpuinfo).
/// With `need_clocksource`, the kernel must also use it as its own clocksource
/// (which it does only once it has found the TSC synchronized across CPUs).
fn tsc_unusable(need_clocksource: bool) -> Option<String> {
    if !HAS_TSC {
        return Some("this architecture has no TSC".into());
    }
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let flags = cpuinfo
        .lines()
        .find(|l| l.starts_with("flags"))
        .unwrap_or_default();
    for flag in ["constant_tsc", "nonstop_tsc"] {
        if !flags.split_whitespace().any(|f| f == flag) {
            return Some(format!("/proc/cpuinfo lacks the {flag} flag"));
        }
    }
    if need_clocksource {
        let path = "/sys/devices/system/clocksource/clocksource0/current_clocksource";
        let source = std::fs::read_to_string(path).unwrap_or_default();
        if source.trim() != "tsc" {
            return Some(format!("the kernel's clocksource is {:?}", source.trim()));
        }
    }
    None
}

/// The clock for rings this process creates (the daemon's), chosen and calibrated
/// once per process so that every ring of every session shares it: `USTRACE_CLOCK`
/// if set, else the TSC where [`tsc_unusable`] finds nothing against it, else
/// CLOCK_MONOTONIC. Calibration sleeps 20 ms, once.
pub fn host_clock() -> Result<TraceClock, ClockError> {
    static CLOCK: OnceLock<Result<TraceClock, ClockError>> = OnceLock::new();
    CLOCK
        .get_or_init(|| {
            let choice = std::env::var("USTRACE_CLOCK").unwrap_or_default();
            let calibrate = || TraceClock::calibrate(std::time::Duration::from_millis(20));
            match choice.as_str() {
                "monotonic" => Ok(TraceClock::MONOTONIC),
                "tsc" => match tsc_unusable(false) {
                    Some(why) => Err(ClockError::TscUnusable(why)),
                    None => calibrate(),
                },
                "" | "auto" => Ok(match tsc_unusable(true) {
                    Some(why) => {
                        log::info!("trace clock: CLOCK_MONOTONIC ({why})");
                        TraceClock::MONOTONIC
                    }
                    None => calibrate().unwrap_or_else(|e| {
                        log::warn!("trace clock: CLOCK_MONOTONIC ({e})");
                        TraceClock::MONOTONIC
                    }),
                }),
                other => Err(ClockError::BadChoice(other.into())),
            }
        })
        .clone()
}

/// Where this CPU number came from, for tests and benchmarks.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CpuSource {
    /// `cpu_id` in the thread's rseq area, kept by the kernel.
    Rseq,
    /// A `sched_getcpu` call: glibc registered no rseq area.
    SchedGetcpu,
}

/// Byte offset of the rseq area's `cpu_id` from the thread pointer, if glibc
/// registered an rseq area for its threads (`__rseq_size` nonzero); looked up once.
/// Inline, as the fast path's CPU read: the lookup is out of line.
#[inline]
fn rseq_cpu_offset() -> Option<isize> {
    static OFFSET: OnceLock<Option<isize>> = OnceLock::new();
    *OFFSET.get_or_init(look_up_rseq_cpu_offset)
}

/// The lookup behind [`rseq_cpu_offset`], once per process.
#[cold]
fn look_up_rseq_cpu_offset() -> Option<isize> {
    if !cfg!(any(target_arch = "x86_64", target_arch = "aarch64")) {
        return None;
    }
    // SAFETY: dlsym with RTLD_DEFAULT and NUL-terminated names only looks
    // symbols up; the glibc ABI (2.35+) gives `__rseq_size` the type unsigned
    // int and `__rseq_offset` ptrdiff_t, and both are set before main and never
    // written again, so reading them through the returned pointers is sound.
    unsafe {
        let size = libc::dlsym(libc::RTLD_DEFAULT, c"__rseq_size".as_ptr()) as *const u32;
        let offset = libc::dlsym(libc::RTLD_DEFAULT, c"__rseq_offset".as_ptr()) as *const isize;
        // cpu_id is the second u32 of struct rseq.
        (!size.is_null() && !offset.is_null() && *size >= 8).then(|| *offset + 4)
    }
}

/// The thread pointer, from which glibc's rseq area lies at `__rseq_offset`.
#[inline]
fn thread_pointer() -> *const u8 {
    let tp: *const u8;
    #[cfg(target_arch = "x86_64")]
    // SAFETY: reads the TCB's self pointer at %fs:0, which glibc sets for every
    // thread; no memory is written, the stack is untouched.
    unsafe {
        core::arch::asm!("mov {}, fs:0", out(reg) tp, options(nostack, readonly, preserves_flags))
    };
    #[cfg(target_arch = "aarch64")]
    // SAFETY: reads the thread pointer register, no memory access.
    unsafe {
        core::arch::asm!("mrs {}, tpidr_el0", out(reg) tp, options(nomem, nostack, preserves_flags))
    };
    #[cfg(not(any(target_arch = "x86_64", target_arch = "aarch64")))]
    {
        tp = std::ptr::null();
    }
    tp
}

/// The CPU this thread runs on and where that came from.
#[inline]
pub fn current_cpu_from() -> (usize, CpuSource) {
    if let Some(offset) = rseq_cpu_offset() {
        // SAFETY: glibc registered this thread's rseq area at thread pointer +
        // `__rseq_offset` (nonzero `__rseq_size`), aligned, alive as long as the
        // thread; the kernel rewrites `cpu_id` on preemption, so read it volatile.
        let cpu = unsafe {
            thread_pointer()
                .offset(offset)
                .cast::<i32>()
                .read_volatile()
        };
        // Negative: registration failed for this thread (RSEQ_CPU_ID_*).
        if let Ok(cpu) = usize::try_from(cpu) {
            return (cpu, CpuSource::Rseq);
        }
    }
    let cpu = nix::sched::sched_getcpu().unwrap_or(0);
    (cpu, CpuSource::SchedGetcpu)
}

/// The CPU this thread runs on, which selects its ring.
///
/// The thread may migrate right after: that is harmless, rings are multi-producer.
#[inline]
pub fn current_cpu() -> usize {
    current_cpu_from().0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_cpu_read_is_the_cpu_the_thread_is_pinned_to() {
        let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
        for cpu in 0..cpus {
            let mut set = nix::sched::CpuSet::new();
            set.set(cpu).unwrap();
            if nix::sched::sched_setaffinity(nix::unistd::Pid::from_raw(0), &set).is_err() {
                continue;
            }
            let (found, _) = current_cpu_from();
            assert_eq!(found, cpu);
            assert_eq!(nix::sched::sched_getcpu().unwrap(), cpu);
        }
    }

    #[test]
    fn a_tsc_clock_tracks_clock_monotonic() {
        if tsc_unusable(false).is_some() {
            return;
        }
        // Not checked here: that reads never go back. Plain `rdtsc` does not promise
        // it; rings do, by their pair CAS (tests/shm_ring.rs, under contention).
        let clock = TraceClock::calibrate(std::time::Duration::from_millis(20)).unwrap();
        // Bracketed by two CLOCK_MONOTONIC reads, within a millisecond of them: a
        // wrong multiplier or offset is off by far more (a preemption between the
        // reads only widens the bracket).
        let before = now_ns();
        let t = clock.now();
        let after = now_ns();
        assert!(
            t + 1_000_000 >= before && t <= after + 1_000_000,
            "tsc clock {t} outside monotonic {before}..{after}"
        );
        let (mult, offset) = clock.words();
        assert_eq!(TraceClock::from_words(mult, offset), Ok(clock));
        assert_eq!(clock.name(), "tsc");
    }

    #[test]
    fn the_monotonic_clock_is_clock_monotonic() {
        let clock = TraceClock::MONOTONIC;
        let before = now_ns();
        let t = clock.now();
        assert!(t >= before && t <= now_ns());
        assert_eq!(clock.name(), "monotonic");
        assert_eq!(clock.tsc_hz(), None);
    }
}
