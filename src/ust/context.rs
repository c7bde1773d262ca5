//! The values of event contexts (`ctf::context`), cached so that the fast path
//! adds a few loads and stores per event, never a system call.
//!
//! - vpid: a process-wide atomic, read once with `getpid` when the first channel is
//!   installed ([`prepare`]) and again in the child after a fork.
//! - vtid and procname: per thread, read (`gettid`, `prctl(PR_GET_NAME)`) at the
//!   thread's first event with contexts, and again after a fork (the child's thread
//!   has another tid): each thread's cache carries the fork generation it was read in.
//! - pthread_id: `pthread_self()` (a register read); cpu_id: the ring's CPU; ip: the
//!   address of the emitting code (the caller's, once `Tracepoint::record` is
//!   inlined into it).

use std::cell::Cell;
use std::sync::Once;
use std::sync::atomic::{AtomicI32, AtomicU32, Ordering::Relaxed};

use crate::ctf::context::{ContextSet, ContextType, PROCNAME_LEN};
use crate::filter::ContextValues;

/// The process id, cached; 0 until [`prepare`].
static VPID: AtomicI32 = AtomicI32::new(0);
/// Bumped in the child at each fork: thread caches of another generation are stale.
static FORK_GENERATION: AtomicU32 = AtomicU32::new(1);

/// What a thread caches about itself.
#[derive(Clone, Copy)]
struct ThreadIds {
    /// The fork generation it was read in; 0 = never read.
    generation: u32,
    /// `gettid()`.
    vtid: i32,
    /// `prctl(PR_GET_NAME)`, NUL-padded.
    procname: [u8; PROCNAME_LEN],
}

thread_local! {
    /// This thread's cache.
    static THREAD: Cell<ThreadIds> = const {
        Cell::new(ThreadIds { generation: 0, vtid: 0, procname: [0; PROCNAME_LEN] })
    };
}

/// Caches the pid and arranges for the caches to be refreshed in a forked child;
/// called when a channel is installed, before any event is written into it.
pub(crate) fn prepare() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        VPID.store(std::process::id() as i32, Relaxed);
        // SAFETY: `after_fork_in_child` is an `extern "C" fn()` that only does atomic
        // stores and a getpid system call, both async-signal-safe, as a child handler
        // must be.
        unsafe { libc::pthread_atfork(None, None, Some(after_fork_in_child)) };
    });
}

/// The child's pid, and every thread cache made stale.
extern "C" fn after_fork_in_child() {
    // SAFETY: getpid has no preconditions and cannot fail.
    VPID.store(unsafe { libc::getpid() }, Relaxed);
    FORK_GENERATION.fetch_add(1, Relaxed);
}

/// This thread's ids, read on its first use and after a fork.
#[inline]
fn thread_ids() -> ThreadIds {
    let generation = FORK_GENERATION.load(Relaxed);
    let ids = THREAD.with(Cell::get);
    if ids.generation == generation {
        return ids;
    }
    refresh(generation)
}

/// Reads this thread's tid and name into its cache.
#[cold]
fn refresh(generation: u32) -> ThreadIds {
    let mut procname = [0u8; PROCNAME_LEN];
    // SAFETY: PR_GET_NAME writes at most 16 bytes (NUL included) into the buffer,
    // which holds 17.
    unsafe { libc::prctl(libc::PR_GET_NAME, procname.as_mut_ptr()) };
    let ids = ThreadIds {
        generation,
        // SAFETY: gettid has no preconditions and cannot fail.
        vtid: unsafe { libc::gettid() },
        procname,
    };
    THREAD.with(|t| t.set(ids));
    ids
}

/// An address in the code that called it (inlined there).
#[inline(always)]
fn code_address() -> u64 {
    let ip: u64;
    #[cfg(target_arch = "x86_64")]
    // SAFETY: `lea` of the instruction pointer reads no memory, writes only the output
    // register and leaves flags and stack alone.
    unsafe {
        std::arch::asm!("lea {}, [rip]", out(reg) ip, options(nomem, nostack, preserves_flags))
    };
    #[cfg(target_arch = "aarch64")]
    // SAFETY: `adr` of the current instruction reads no memory and writes only the
    // output register.
    unsafe {
        std::arch::asm!("adr {}, .", out(reg) ip, options(nomem, nostack, preserves_flags))
    };
    #[cfg(not(any(target_arch = "x86_64", target_arch = "aarch64")))]
    {
        ip = 0;
    }
    ip
}

/// Writes the fields of `set` (`set.encoded_len()` bytes) at the start of `out`, for
/// an event going to the ring of CPU `cpu`; returns how many bytes it wrote.
#[inline(always)]
pub(crate) fn encode(set: ContextSet, cpu: u32, out: &mut [u8]) -> usize {
    if set.is_empty() {
        return 0;
    }
    let mut at = 0;
    let mut put = |bytes: &[u8]| {
        out[at..at + bytes.len()].copy_from_slice(bytes);
        at += bytes.len();
    };
    if set.contains(ContextType::Vpid) {
        put(&VPID.load(Relaxed).to_le_bytes());
    }
    if set.contains(ContextType::Vtid) || set.contains(ContextType::Procname) {
        let ids = thread_ids();
        if set.contains(ContextType::Vtid) {
            put(&ids.vtid.to_le_bytes());
        }
        if set.contains(ContextType::Procname) {
            put(&ids.procname);
        }
    }
    if set.contains(ContextType::PthreadId) {
        // SAFETY: pthread_self has no preconditions.
        put(&(unsafe { libc::pthread_self() } as u64).to_le_bytes());
    }
    if set.contains(ContextType::CpuId) {
        put(&(cpu as i32).to_le_bytes());
    }
    if set.contains(ContextType::Ip) {
        put(&code_address().to_le_bytes());
    }
    at
}

/// This thread's context values as a filter reads them (`$ctx.vpid`, `$ctx.vtid`,
/// `$ctx.procname`), whatever contexts the channel records.
pub(crate) struct FilterContext {
    /// The process id.
    vpid: i32,
    /// The thread's cache.
    ids: ThreadIds,
}

impl FilterContext {
    /// The values, borrowed for one evaluation.
    pub(crate) fn values(&self) -> ContextValues<'_> {
        let name = &self.ids.procname;
        let len = name.iter().position(|b| *b == 0).unwrap_or(name.len());
        ContextValues {
            vpid: self.vpid,
            vtid: self.ids.vtid,
            procname: &name[..len],
        }
    }
}

/// Reads [`FilterContext`] from the caches (filling this thread's if needed).
pub(crate) fn filter_values() -> FilterContext {
    FilterContext {
        vpid: VPID.load(Relaxed),
        ids: thread_ids(),
    }
}
