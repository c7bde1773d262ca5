//! Where the files of a trace go, LTTng's layout so that tools and habits carry over:
//!
//! ```text
//! <output>/ust/uid/<uid>/64-bit/<channel>_<cpu>                         + metadata
//! <output>/ust/pid/<name>-<pid>-<YYYYMMDD-HHMMSS>-<connection>/<channel>_<cpu> + metadata
//! ```
//!
//! Each place is given as its components below the output ([`Below`]), which
//! [`crate::trace::writer::TraceDir`] makes one at a time, and as a path for
//! readers and messages.

use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use crate::ctf::names;
use crate::trace::owner::Owner;

/// Name of the TSDL file in every sub-trace directory.
pub const METADATA_FILE: &str = "metadata";

/// Which clock the date in a per-PID directory name is written in.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DirClock {
    /// The machine's local time zone, as LTTng does.
    Local,
    /// Coordinated universal time.
    Utc,
}

/// Default output directory of a session created at `created` without one:
/// `<parent>/<name>-<YYYYMMDD-HHMMSS>` (local time, as LTTng names them).
pub fn session_dir(parent: &Path, name: &str, created: SystemTime) -> PathBuf {
    parent.join(format!(
        "{name}-{}",
        dir_timestamp(created, DirClock::Local)
    ))
}

/// The components of a path below an output directory, each one file name.
pub type Below = Vec<String>;

/// `output` joined with `below`.
fn join(output: &Path, below: Below) -> PathBuf {
    below
        .iter()
        .fold(output.to_path_buf(), |path, c| path.join(c))
}

/// Where the per-UID trace of `uid` lies below the output.
pub fn uid_trace_below(uid: u32) -> Below {
    ["ust", "uid", &uid.to_string(), "64-bit"]
        .map(String::from)
        .to_vec()
}

/// Directory of the per-UID trace of `uid`.
pub fn uid_trace_dir(output: &Path, uid: u32) -> PathBuf {
    join(output, uid_trace_below(uid))
}

/// Where the directory holding every per-PID sub-trace lies below the output.
pub fn pid_traces_below() -> Below {
    ["ust", "pid"].map(String::from).to_vec()
}

/// Directory holding every per-PID sub-trace of a session.
pub fn pid_traces_dir(output: &Path) -> PathBuf {
    join(output, pid_traces_below())
}

/// Where the per-PID trace of process `name` (`pid`) registered at `time` lies
/// below the output: `name` goes through [`names::procname`], so whatever an app
/// calls itself makes one safe directory name.
pub fn pid_trace_below(name: &str, pid: u32, time: SystemTime, clock: DirClock) -> Below {
    let mut below = pid_traces_below();
    below.push(format!(
        "{}-{pid}-{}",
        names::procname(name),
        dir_timestamp(time, clock)
    ));
    below
}

/// Directory of the per-PID trace of process `name` (`pid`) registered at `time`.
pub fn pid_trace_dir(
    output: &Path,
    name: &str,
    pid: u32,
    time: SystemTime,
    clock: DirClock,
) -> PathBuf {
    join(output, pid_trace_below(name, pid, time, clock))
}

/// Where the trace of `owner` lies below the output. A per-PID directory name is
/// the process's name, pid and registration time, and ends with the connection id:
/// a pid is reused, and a connection can outlive its process, so two apps can share
/// a pid (and a name, and a second); they never share a connection, so a reused pid
/// never meets a dead app's directory.
pub fn trace_below(owner: &Owner, clock: DirClock) -> Below {
    match owner {
        Owner::Uid(uid) => uid_trace_below(*uid),
        Owner::Pid {
            connection,
            process,
        } => {
            let mut below =
                pid_trace_below(&process.procname, process.pid, process.registered, clock);
            if let Some(last) = below.last_mut() {
                last.push_str(&format!("-{connection}"));
            }
            below
        }
    }
}

/// File name of the stream of `channel` on `cpu`.
pub fn stream_file_name(channel: &str, cpu: u32) -> String {
    format!("{channel}_{cpu}")
}

/// `YYYYMMDD-HHMMSS` for `time` in the given clock.
pub fn dir_timestamp(time: SystemTime, clock: DirClock) -> String {
    let secs = match time.duration_since(UNIX_EPOCH) {
        Ok(d) => d.as_secs() as i64,
        Err(e) => -(e.duration().as_secs() as i64),
    };
    let secs = match clock {
        DirClock::Utc => secs,
        DirClock::Local => secs + local_utc_offset(secs),
    };
    let c = Civil::from_unix(secs);
    format!(
        "{:04}{:02}{:02}-{:02}{:02}{:02}",
        c.year, c.month, c.day, c.hour, c.minute, c.second
    )
}

/// `YYYYMMDDTHHMMSS+hhmm` for `time` in local time: ISO 8601 basic, the form LTTng
/// writes in the metadata's `trace_creation_datetime` and `vpid_datetime`.
pub fn iso8601_basic(time: SystemTime) -> String {
    let secs = match time.duration_since(UNIX_EPOCH) {
        Ok(d) => d.as_secs() as i64,
        Err(e) => -(e.duration().as_secs() as i64),
    };
    let offset = local_utc_offset(secs);
    let c = Civil::from_unix(secs + offset);
    let sign = if offset < 0 { '-' } else { '+' };
    let minutes = offset.abs() / 60;
    format!(
        "{:04}{:02}{:02}T{:02}{:02}{:02}{sign}{:02}{:02}",
        c.year,
        c.month,
        c.day,
        c.hour,
        c.minute,
        c.second,
        minutes / 60,
        minutes % 60
    )
}

/// Seconds east of UTC of the local time zone at `secs` (0 if unknown).
fn local_utc_offset(secs: i64) -> i64 {
    let t: libc::time_t = secs;
    let mut tm = std::mem::MaybeUninit::<libc::tm>::zeroed();
    // SAFETY: `t` and `tm` are valid for the duration of the call; localtime_r is the
    // reentrant variant and writes only into `tm`, which is zero-initialised (a valid
    // `libc::tm`) so reading it afterwards is sound even if the call fails.
    let ok = unsafe { !libc::localtime_r(&t, tm.as_mut_ptr()).is_null() };
    // SAFETY: zero-initialised above, and possibly filled in by localtime_r.
    let tm = unsafe { tm.assume_init() };
    if ok { tm.tm_gmtoff } else { 0 }
}

/// A UTC calendar date and time of day, for directory names and printed timestamps.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Civil {
    /// Year, e.g. 2026.
    pub year: i64,
    /// Month, 1..=12.
    pub month: u32,
    /// Day of the month, 1..=31.
    pub day: u32,
    /// Hour, 0..=23.
    pub hour: u32,
    /// Minute, 0..=59.
    pub minute: u32,
    /// Second, 0..=59.
    pub second: u32,
}

impl Civil {
    /// The calendar form of `secs` seconds since the Unix epoch (proleptic Gregorian).
    pub fn from_unix(secs: i64) -> Civil {
        let days = secs.div_euclid(86_400);
        let rem = secs.rem_euclid(86_400) as u32;
        // Howard Hinnant's civil_from_days.
        let z = days + 719_468;
        let era = z.div_euclid(146_097);
        let doe = z.rem_euclid(146_097);
        let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
        let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
        let mp = (5 * doy + 2) / 153;
        let day = (doy - (153 * mp + 2) / 5 + 1) as u32;
        let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
        let year = yoe + era * 400 + i64::from(month <= 2);
        Civil {
            year,
            month,
            day,
            hour: rem / 3600,
            minute: rem / 60 % 60,
            second: rem % 60,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::actors::app_connection::ConnectionId;
    use crate::trace::owner::Process;
    use std::time::Duration;

    #[test]
    fn a_session_without_output_is_named_after_itself_and_its_creation() {
        let t = UNIX_EPOCH + std::time::Duration::from_secs(1_795_775_025);
        assert_eq!(
            session_dir(Path::new("/traces"), "web", t),
            PathBuf::from(format!("/traces/web-{}", dir_timestamp(t, DirClock::Local)))
        );
        assert_eq!(dir_timestamp(t, DirClock::Utc), "20261127-102345");
    }

    #[test]
    fn paths_follow_the_lttng_layout() {
        let out = Path::new("/o");
        assert_eq!(
            uid_trace_dir(out, 1000),
            Path::new("/o/ust/uid/1000/64-bit")
        );
        let t = UNIX_EPOCH + Duration::from_secs(1_795_768_496); // 2026-11-27 08:34:56 UTC
        assert_eq!(
            pid_trace_dir(out, "app", 42, t, DirClock::Utc),
            Path::new("/o/ust/pid/app-42-20261127-083456")
        );
        assert_eq!(
            join(
                out,
                trace_below(
                    &Owner::Pid {
                        connection: ConnectionId(7),
                        process: Process {
                            procname: "app".into(),
                            pid: 42,
                            registered: t,
                        },
                    },
                    DirClock::Utc
                )
            ),
            Path::new("/o/ust/pid/app-42-20261127-083456-7")
        );
        assert_eq!(stream_file_name("chan", 3), "chan_3");
        assert_eq!(
            pid_trace_dir(out, "../../x", 42, t, DirClock::Utc),
            Path::new("/o/ust/pid/_._.._x-42-20261127-083456")
        );
    }

    #[test]
    fn civil_dates_handle_leap_years_and_the_epoch() {
        assert_eq!(Civil::from_unix(0).year, 1970);
        let c = Civil::from_unix(951_782_400); // 2000-02-29 00:00:00
        assert_eq!((c.year, c.month, c.day), (2000, 2, 29));
    }
}
