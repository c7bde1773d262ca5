//! The daemon's footprint from /proc: memory, descriptors, mappings, CPU per thread.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::Duration;

/// A daemon's memory, descriptor counts and CPU time per thread, from /proc.
#[derive(Clone, Debug)]
pub(super) struct Footprint {
    /// Resident set (VmRSS), kB.
    pub(super) rss_kb: u64,
    /// Peak resident set since start (VmHWM), kB.
    pub(super) hwm_kb: u64,
    /// Open file descriptors.
    pub(super) fds: usize,
    /// Memory mappings (lines of /proc/PID/maps).
    pub(super) maps: usize,
    /// CPU time (user + system, ms) used so far by each thread, by thread name.
    pub(super) cpu_ms: Vec<(String, u64)>,
}

impl Footprint {
    /// Reads the footprint of process `pid`.
    pub(super) fn of(pid: u32) -> Result<Footprint, String> {
        let proc = PathBuf::from(format!("/proc/{pid}"));
        let read = |name: &str| {
            std::fs::read_to_string(proc.join(name))
                .map_err(|e| format!("reading /proc/{pid}/{name}: {e}"))
        };
        let status = read("status")?;
        let kb = |key: &str| {
            status
                .lines()
                .find_map(|l| {
                    l.strip_prefix(key)?
                        .trim()
                        .strip_suffix(" kB")?
                        .parse()
                        .ok()
                })
                .ok_or_else(|| format!("no {key} in /proc/{pid}/status"))
        };
        let fds = std::fs::read_dir(proc.join("fd"))
            .map_err(|e| format!("reading /proc/{pid}/fd: {e}"))?
            .count();
        Ok(Footprint {
            rss_kb: kb("VmRSS:")?,
            hwm_kb: kb("VmHWM:")?,
            fds,
            maps: read("maps")?.lines().count(),
            cpu_ms: threads_cpu_ms(pid)?,
        })
    }

    /// CPU ms each thread used since `before` (threads born meanwhile count from 0).
    pub(super) fn cpu_since(&self, before: &Footprint) -> Vec<(String, u64)> {
        self.cpu_ms
            .iter()
            .map(|(name, ms)| {
                let earlier = before.cpu_ms.iter().find(|(n, _)| n == name);
                (name.clone(), ms - earlier.map_or(0, |(_, e)| (*e).min(*ms)))
            })
            .collect()
    }
}

/// User + system CPU ms of each thread of `pid`, summed by thread name.
fn threads_cpu_ms(pid: u32) -> Result<Vec<(String, u64)>, String> {
    let tasks = format!("/proc/{pid}/task");
    let mut by_name: Vec<(String, u64)> = Vec::new();
    for task in std::fs::read_dir(&tasks).map_err(|e| format!("reading {tasks}: {e}"))? {
        let Ok(task) = task else { continue };
        // A thread that ended since read_dir has no stat any more: it is skipped.
        let Ok(stat) = std::fs::read_to_string(task.path().join("stat")) else {
            continue;
        };
        let Some((name, ticks)) = parse_task_stat(&stat) else {
            return Err(format!("unexpected {}/stat: {stat}", task.path().display()));
        };
        let ms = ticks * 1000 / clock_ticks_per_second();
        match by_name.iter_mut().find(|(n, _)| *n == name) {
            Some((_, total)) => *total += ms,
            None => by_name.push((name, ms)),
        }
    }
    by_name.sort();
    Ok(by_name)
}

/// User + system CPU ms of process `pid`, all its threads (ended ones included),
/// from /proc/PID/stat.
pub(super) fn process_cpu_ms(pid: u32) -> Result<u64, String> {
    let path = format!("/proc/{pid}/stat");
    let stat = std::fs::read_to_string(&path).map_err(|e| format!("reading {path}: {e}"))?;
    let (_, ticks) = parse_task_stat(&stat).ok_or_else(|| format!("unexpected {path}: {stat}"))?;
    Ok(ticks * 1000 / clock_ticks_per_second())
}

/// The thread name and utime + stime (clock ticks) of a /proc/PID/task/TID/stat line
/// (or of a /proc/PID/stat line: the same fields, for the whole process).
fn parse_task_stat(stat: &str) -> Option<(String, u64)> {
    let open = stat.find('(')?;
    let close = stat.rfind(')')?;
    let name = stat.get(open + 1..close)?.to_string();
    // Fields after the name start with the state (field 3); utime and stime are
    // fields 14 and 15.
    let mut fields = stat.get(close + 1..)?.split_whitespace().skip(11);
    let utime: u64 = fields.next()?.parse().ok()?;
    let stime: u64 = fields.next()?.parse().ok()?;
    Some((name, utime + stime))
}

/// The kernel's clock tick rate, in which /proc reports CPU time.
fn clock_ticks_per_second() -> u64 {
    // SAFETY: sysconf only reads a configuration value; it has no memory effects.
    let ticks = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    u64::try_from(ticks).ok().filter(|&t| t > 0).unwrap_or(100)
}

/// Samples a daemon's fd and mapping counts while the apps run, keeping the peaks:
/// per-PID buffers live until their writers are done, so the peak shows a backlog
/// that the counts after the run no longer do.
pub(super) struct PeakSampler {
    /// Set to end the sampling.
    pub(super) stop: Arc<AtomicBool>,
    /// The sampling thread; yields (peak fds, peak mappings).
    pub(super) thread: JoinHandle<(usize, usize)>,
}

impl PeakSampler {
    /// How often the counts are read; /proc/PID/fd of a busy daemon is long.
    pub(super) const PERIOD: Duration = Duration::from_millis(100);

    /// Starts sampling process `pid`.
    pub(super) fn start(pid: u32) -> PeakSampler {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = Arc::clone(&stop);
        let thread = std::thread::spawn(move || {
            let (mut fds, mut maps) = (0, 0);
            while !flag.load(Ordering::Relaxed) {
                if let Ok(dir) = std::fs::read_dir(format!("/proc/{pid}/fd")) {
                    fds = fds.max(dir.count());
                }
                if let Ok(text) = std::fs::read_to_string(format!("/proc/{pid}/maps")) {
                    maps = maps.max(text.lines().count());
                }
                std::thread::sleep(Self::PERIOD);
            }
            (fds, maps)
        });
        PeakSampler { stop, thread }
    }

    /// Stops sampling and gives (peak fds, peak mappings).
    pub(super) fn finish(self) -> (usize, usize) {
        self.stop.store(true, Ordering::Relaxed);
        self.thread.join().unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn thread_cpu_is_read_from_proc_stat() {
        let stat = "4242 (actix-rt|system:0|arbiter:1) S 1 4242 4242 0 -1 4194368 \
                    120 0 0 0 37 5 0 0 20 0 3 0 512 1000 200 18446744073709551615";
        assert_eq!(
            parse_task_stat(stat),
            Some(("actix-rt|system:0|arbiter:1".to_string(), 42))
        );
        assert_eq!(parse_task_stat("7 (a) b) S 1"), None);
        let own = threads_cpu_ms(std::process::id()).expect("own threads");
        assert!(!own.is_empty());
    }
}
