//! Who holds a reservation decides what the daemon gives up: a stopped producer
//! delays only its own packet, a dead one costs only its own event. Real daemon, real
//! per-UID apps parked between reserve and commit (`ustrace-demo --park-in-event`),
//! all pinned to CPU 0 so that they share one ring and one open packet.

mod common;

use common::*;
use nix::sched::{CpuSet, sched_setaffinity};
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use std::io::BufRead;
use std::process::Stdio;
use std::time::Duration;
use ustrace::protocol::messages::Buffering;

/// Pins the calling test thread, hence the apps it spawns, to CPU 0.
fn pin_to_cpu0() {
    let mut cpus = CpuSet::new();
    cpus.set(0).unwrap();
    sched_setaffinity(Pid::from_raw(0), &cpus).unwrap();
}

/// The scheduler state letter of process `pid` (`T` when stopped).
fn state(pid: u32) -> char {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    stat.rsplit_once(')')
        .and_then(|(_, rest)| rest.trim_start().chars().next())
        .unwrap_or('?')
}

/// Lines of the trace that are events named `name`.
fn count(lines: &[String], name: &str) -> usize {
    lines
        .iter()
        .filter(|l| l.contains(&format!(" {name}: ")))
        .count()
}

#[test]
fn a_stopped_holder_delays_only_its_own_packet_and_resumes_with_nothing_lost() {
    pin_to_cpu0();
    let d = Daemon::start();
    let out = d.session("s", &[("ch", Buffering::PerUid)], true);
    let mut a = Running(
        d.app(&[
            "--await-enabled-ms",
            "5000",
            "--park-in-event",
            "stop",
            "--events",
            "10",
        ])
        .spawn()
        .unwrap(),
    );
    let a_pid = a.0.id();
    wait_for(
        "A stopped inside its reservation",
        Duration::from_secs(10),
        || state(a_pid) == 'T',
    );
    // B, of the same uid, fills A's packet past its end (the packet is closed but
    // incomplete) and exits: a producer died. 10,000 events (26 bytes each) fit the
    // 4 x 128 KiB ring.
    d.run_app(&["--events", "10000"]);
    // Longer than the old guess (two probes a second apart): nothing is given up.
    assert!(
        !poll_until(Duration::from_millis(2500), || d
            .status()
            .events_lost_dead_producer
            > 0),
        "a live holder's packet was given up"
    );
    kill(Pid::from_raw(a_pid as i32), Signal::SIGCONT).unwrap();
    assert!(a.0.wait().unwrap().success());
    d.stop("s");
    let lines = babeltrace2(&out);
    assert_eq!(
        count(&lines, "demo:ev"),
        10_000 + 1 + 10,
        "every event of A and B"
    );
    let status = d.status();
    assert_eq!(status.events_lost_dead_producer, 0);
    assert_eq!(status.events_discarded, 0);
    assert_eq!(
        status.unrecorded_reservations, 0,
        "every holder had a record"
    );
}

#[test]
fn a_per_pid_app_killed_inside_a_reservation_keeps_its_committed_events() {
    pin_to_cpu0();
    let d = Daemon::start();
    let out = d.session("s", &[("ch", Buffering::PerPid)], true);
    let mut app = Running(
        d.app(&[
            "--await-enabled-ms",
            "5000",
            "--events",
            "100",
            "--park-in-event",
            "wait",
        ])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap(),
    );
    let mut line = String::new();
    std::io::BufReader::new(app.0.stdout.as_mut().unwrap())
        .read_line(&mut line)
        .unwrap();
    assert_eq!(line.trim(), "parked");
    app.0.kill().unwrap();
    app.0.wait().unwrap();
    wait_for(
        "the dead reservation counted as one lost event",
        Duration::from_secs(10),
        || d.status().events_lost_dead_producer == 1,
    );
    d.stop("s");
    let lines = babeltrace2(&out);
    assert_eq!(
        count(&lines, "demo:ev"),
        100,
        "its committed events are kept"
    );
    assert_eq!(count(&lines, "ustrace:lost_event"), 1);
    assert_eq!(d.status().events_lost_dead_producer, 1);
}

#[test]
fn producers_killed_inside_reservations_cost_only_their_own_event() {
    const DEAD: usize = 3;
    pin_to_cpu0();
    let d = Daemon::start();
    let out = d.session("s", &[("ch", Buffering::PerUid)], true);
    let parked: Vec<Running> = (0..DEAD).map(|_| parked_app(&d, false)).collect();
    kill_around_live_events(&d, parked, 2500);
    let lines = babeltrace2(&out);
    assert_eq!(count(&lines, "demo:ev"), 5000, "the live apps lose nothing");
    assert_eq!(count(&lines, "ustrace:lost_event"), DEAD);
    let status = d.status();
    assert_eq!(status.events_lost_dead_producer, DEAD as u64);
    assert_eq!(status.events_discarded, 0);
    assert_eq!(
        status.unrecorded_reservations, 0,
        "every holder had a record"
    );
}

/// Spawns a per-UID app that parks inside one reservation (`demo:bare`, without fields,
/// if `payload_free`) and returns once it says so.
fn parked_app(d: &Daemon, payload_free: bool) -> Running {
    let mut args = vec![
        "--await-enabled-ms",
        "5000",
        "--events",
        "0",
        "--park-in-event",
        "wait",
    ];
    if payload_free {
        args.push("--park-payload-free");
    }
    let mut p = Running(d.app(&args).stdout(Stdio::piped()).spawn().unwrap());
    let mut line = String::new();
    std::io::BufReader::new(p.0.stdout.as_mut().unwrap())
        .read_line(&mut line)
        .unwrap();
    assert_eq!(line.trim(), "parked");
    p
}

/// Kills the `parked` apps of session `s` while a live app has written `events` into
/// the packet their reservations are in, waits for each to count as one lost event,
/// has another app write `events` more and stops the session.
fn kill_around_live_events(d: &Daemon, parked: Vec<Running>, events: u32) {
    let dead = parked.len() as u64;
    let mut live = d.app_that_emitted(events);
    for mut p in parked {
        p.0.kill().unwrap();
        p.0.wait().unwrap();
    }
    wait_for(
        "each dead reservation counted as one lost event",
        Duration::from_secs(10),
        || d.status().events_lost_dead_producer == dead,
    );
    d.run_app(&["--events", &events.to_string()]);
    poke(&mut live.0);
    assert!(live.0.wait().unwrap().success());
    d.stop("s");
}

#[test]
fn dead_reservations_in_a_channel_with_contexts_read_to_the_end_in_babeltrace2() {
    use ustrace::ctf::context::ContextType;
    use ustrace::protocol::messages::ChannelRequest;
    pin_to_cpu0();
    let d = Daemon::start();
    let out = d.session_with(
        "s",
        "out-s",
        &[ChannelRequest {
            name: "ch".into(),
            buffers: Some(Buffering::PerUid),
            contexts: Some(vec![
                ContextType::Vpid,
                ContextType::Vtid,
                ContextType::Procname,
            ]),
            ..ChannelRequest::default()
        }],
        true,
    );
    // One reservation exactly header + contexts long, one with a payload after them.
    let parked = vec![parked_app(&d, true), parked_app(&d, false)];
    kill_around_live_events(&d, parked, 300);
    let lines = babeltrace2(&out);
    assert_eq!(count(&lines, "demo:ev"), 600, "every committed event reads");
    let lost: Vec<&String> = lines
        .iter()
        .filter(|l| l.contains(" ustrace:lost_event: "))
        .collect();
    assert_eq!(lost.len(), 2, "{lost:#?}");
    for l in &lost {
        assert!(
            l.contains("{ vpid = 0, vtid = 0, procname = \"\" }"),
            "a lost event's contexts are zeroed: {l}"
        );
    }
    assert_eq!(
        lost.iter().filter(|l| l.contains("filler = ")).count(),
        1,
        "only the payload event's reservation is padded: {lost:#?}"
    );
    assert_eq!(d.status().events_lost_dead_producer, 2);
}
