//! The fast path's clock and CPU number, and their fallbacks, through the real
//! daemon: TSC and CLOCK_MONOTONIC timestamps (forced with `USTRACE_CLOCK`), the CPU
//! from glibc's rseq area or from `sched_getcpu` (forced with
//! `GLIBC_TUNABLES=glibc.pthread.rseq=0`).

mod common;

use std::process::Command;
use std::time::{SystemTime, UNIX_EPOCH};

use common::{Daemon, Scratch, babeltrace2, bin};
use ustrace::protocol::messages::Buffering;
use ustrace::shm::{CpuSource, current_cpu_from};
use ustrace::trace::reader::{Reader, RecordKind};

/// The environment that makes glibc register no rseq area.
const NO_RSEQ: (&str, &str) = ("GLIBC_TUNABLES", "glibc.pthread.rseq=0");

fn unix_ns() -> i128 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_nanos() as i128
}

/// Runs `apps` demo apps at once, all pinned to `cpu`, `events` each, with `env`.
fn run_apps_on_cpu(daemon: &Daemon, apps: usize, cpu: usize, events: u32, env: &[(&str, &str)]) {
    let children: Vec<_> = (0..apps)
        .map(|_| {
            daemon
                .app_on_cpu(cpu, events)
                .envs(env.iter().copied())
                .spawn()
                .unwrap()
        })
        .collect();
    for mut child in children {
        assert!(child.wait().unwrap().success());
    }
}

/// Starts `ustraced` with `USTRACE_CLOCK=clock` in a runtime dir of its own, expects
/// it to refuse to start, and returns what it said.
fn refused_start(clock: &str) -> String {
    let scratch = Scratch::new("clock");
    let out = Command::new(bin("ustraced", option_env!("CARGO_BIN_EXE_ustraced")))
        .env("USTRACE_CLOCK", clock)
        .env("USTRACE_RUNDIR", scratch.path("run"))
        .output()
        .unwrap();
    assert!(
        !out.status.success(),
        "ustraced started with USTRACE_CLOCK={clock}"
    );
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// Reads the whole trace with our reader (which refuses a stream whose timestamps go
/// back) and returns each `demo:ev` event's (wall-clock ns, cpu).
fn demo_events(dir: &std::path::Path) -> Vec<(i128, u32)> {
    let mut reader = Reader::open(dir).unwrap();
    let mut events = Vec::new();
    while let Some(record) = reader.next_record().unwrap() {
        if let RecordKind::Event(e) = record.kind
            && e.name == "demo:ev"
        {
            events.push((record.wall_ns, e.cpu_id));
        }
    }
    events
}

/// Records 4 apps x 2000 events into one shared per-UID ring with the daemon's clock
/// forced by `USTRACE_CLOCK=clock`, then checks what every reader sees: all events,
/// each stream in time order (our reader checks it), dated inside the run.
fn record_with_clock(clock: &str) -> Daemon {
    let daemon = Daemon::with_config_env("", &[("USTRACE_CLOCK", clock)]);
    assert_eq!(daemon.status().clock, clock);
    let out = daemon.session("s", &[("c", Buffering::PerUid)], true);
    let before = unix_ns();
    run_apps_on_cpu(&daemon, 4, 0, 2000, &[]);
    let after = unix_ns();
    daemon.stop("s");
    let events = demo_events(&out);
    assert_eq!(events.len(), 8000);
    // The clock's offset makes real dates: inside the run, give or take a second
    // for the offset measured at session creation.
    for (wall, _) in &events {
        assert!(
            (before - 1_000_000_000..=after + 1_000_000_000).contains(wall),
            "event dated {wall}, run was {before}..{after}"
        );
    }
    let lines = babeltrace2(&out);
    assert_eq!(lines.iter().filter(|l| l.contains("demo:ev")).count(), 8000);
    daemon
}

#[test]
fn a_tsc_daemon_records_ordered_and_dated_events_from_apps_sharing_a_ring() {
    if !tsc_usable() {
        // No invariant TSC here: forcing it is refused, with the reason.
        assert!(refused_start("tsc").contains("TSC"));
        return;
    }
    let daemon = record_with_clock("tsc");
    assert!(daemon.status().clock_tsc_hz > 0);
    let status = daemon.cli(&["status"]);
    let text = String::from_utf8_lossy(&status.stdout);
    assert!(
        text.contains("trace clock:") && text.contains("tsc ("),
        "{text}"
    );
}

#[test]
fn a_monotonic_daemon_records_ordered_and_dated_events_from_apps_sharing_a_ring() {
    let daemon = record_with_clock("monotonic");
    assert_eq!(daemon.status().clock_tsc_hz, 0);
    let out = daemon.cli(&["--json", "status"]);
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(json["status"]["clock"], "monotonic", "{json}");
}

#[test]
fn an_unknown_clock_choice_stops_the_daemon_naming_it() {
    let err = refused_start("sundial");
    assert!(err.contains("USTRACE_CLOCK=\"sundial\""), "{err}");
}

/// Whether the TSC can be forced here: the CPU keeps it invariant.
fn tsc_usable() -> bool {
    let flags = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    ["constant_tsc", "nonstop_tsc"]
        .iter()
        .all(|f| flags.split_whitespace().any(|w| w == *f))
}

/// Events of apps pinned to CPU 1 land in CPU 1's ring, whether the CPU number
/// comes from rseq or from `sched_getcpu`.
fn events_land_in_the_pinned_cpus_ring(env: &[(&str, &str)]) {
    let cpus = std::thread::available_parallelism().unwrap().get();
    let cpu = if cpus > 1 { 1 } else { 0 };
    let daemon = Daemon::start();
    let out = daemon.session("s", &[("c", Buffering::PerUid)], true);
    run_apps_on_cpu(&daemon, 2, cpu, 500, env);
    daemon.stop("s");
    let events = demo_events(&out);
    assert_eq!(events.len(), 1000);
    assert!(events.iter().all(|&(_, c)| c as usize == cpu));
}

#[test]
fn apps_with_rseq_record_into_the_ring_of_their_cpu() {
    events_land_in_the_pinned_cpus_ring(&[]);
}

#[test]
fn apps_without_rseq_record_into_the_ring_of_their_cpu() {
    events_land_in_the_pinned_cpus_ring(&[NO_RSEQ]);
}

/// Run by the two tests below in a child process (glibc reads its tunables at
/// start-up): on every CPU it can be pinned to, the CPU number read is that CPU,
/// from the source `EXPECT_CPU_SOURCE` names.
#[test]
#[ignore = "run in a child process by the cpu_source tests"]
fn cpu_source_child() {
    let Ok(expected) = std::env::var("EXPECT_CPU_SOURCE") else {
        return;
    };
    let expected = match expected.as_str() {
        "rseq" => CpuSource::Rseq,
        _ => CpuSource::SchedGetcpu,
    };
    let cpus = std::thread::available_parallelism().unwrap().get();
    for cpu in 0..cpus {
        let mut set = nix::sched::CpuSet::new();
        set.set(cpu).unwrap();
        nix::sched::sched_setaffinity(nix::unistd::Pid::from_raw(0), &set).unwrap();
        assert_eq!(current_cpu_from(), (cpu, expected));
    }
}

fn run_cpu_source_child(expect: &str, env: &[(&str, &str)]) {
    let out = Command::new(std::env::current_exe().unwrap())
        .args([
            "cpu_source_child",
            "--exact",
            "--ignored",
            "--test-threads",
            "1",
        ])
        .env("EXPECT_CPU_SOURCE", expect)
        .envs(env.iter().copied())
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("1 passed"), "{stdout}");
}

#[test]
fn the_cpu_comes_from_rseq_where_glibc_registers_it() {
    run_cpu_source_child("rseq", &[]);
}

#[test]
fn the_cpu_comes_from_sched_getcpu_without_rseq() {
    run_cpu_source_child("getcpu", &[NO_RSEQ]);
}

#[test]
fn a_daemon_left_to_choose_says_which_clock_it_uses() {
    let daemon = Daemon::start();
    let source =
        std::fs::read_to_string("/sys/devices/system/clocksource/clocksource0/current_clocksource")
            .unwrap_or_default();
    let expected = if source.trim() == "tsc" && tsc_usable() {
        "tsc"
    } else {
        "monotonic"
    };
    assert_eq!(daemon.status().clock, expected);
}
