//! An app that lies in its rings' shared memory, against a real daemon: a
//! hand-written client of uid 4242 registers through the real protocol, receives its
//! per-UID and per-PID ring fds, maps them writable and scribbles on them. The daemon
//! stays up with its memory bounded, marks those rings corrupt and counts them for
//! uid 4242 only, another uid's app in the same session records every event, and
//! babeltrace2 reads the session.

mod common;
mod shm_support;

use common::{Daemon, Running, babeltrace2, poke, wait_for};
use shm_support::{Scribbler, at};
use std::io::{BufRead, BufReader, Write};
use std::os::fd::OwnedFd;
use std::os::unix::net::UnixStream;
use std::os::unix::process::CommandExt;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::Duration;
use ustrace::ctf::field::FieldValue;
use ustrace::protocol::frame;
use ustrace::protocol::messages::{AppCommand, AppRegister, Buffering, ChannelRequest};
use ustrace::protocol::{APPS_SOCKET, rundir};
use ustrace::shm::{Ring, Wakeup};

ustrace::event!(
    /// The event the hostile app declares: the demo app's, so that both share the
    /// session's enabled pattern and metadata.
    static DEMO_EV: demo:ev(i: i64, s: &str), loglevel = Info
);

/// Names the lie the child plays; unset in the test process itself.
const LIE_ENV: &str = "USTRACE_TEST_RING_LIE";
/// The hostile app's uid, and the honest one's.
const HOSTILE: u32 = 4242;
const HONEST: u32 = 4243;
/// Events the honest app records.
const HONEST_EVENTS: usize = 500;
const WAIT: Duration = Duration::from_secs(30);

/// The hostile app (run as a child of the tests below, with [`LIE_ENV`] set):
/// registers, receives its channels, scribbles on every ring, prints `scribbled N`
/// and waits for a line on stdin before it exits.
#[test]
fn hostile_app() {
    let Ok(lie) = std::env::var(LIE_ENV) else {
        return;
    };
    let sock = UnixStream::connect(rundir().unwrap().join(APPS_SOCKET)).unwrap();
    frame::send_hello(&sock).unwrap();
    let register = AppRegister {
        name: "hostile".into(),
        bitness: 64,
        events: vec![DEMO_EV.desc()],
    };
    frame::send(&sock, &register, &[]).unwrap();
    let mut channels: Vec<(u64, Vec<OwnedFd>)> = Vec::new();
    let mut ids = Vec::new();
    loop {
        let (command, fds) = frame::recv::<AppCommand>(&sock, frame::MAX_FRAME)
            .unwrap()
            .expect("registration");
        match command {
            AppCommand::Channel { key, .. } => channels.push((key, fds)),
            AppCommand::Enable { key, events, .. } => ids.push((key, events[0].1)),
            AppCommand::RegistrationDone => break,
            other => panic!("unexpected {other:?}"),
        }
    }
    let mut rings = 0;
    for (key, mut fds) in channels {
        let id = ids.iter().find(|(k, _)| *k == key).expect("enabled").1;
        let wakeup = Arc::new(Wakeup::from_fd(fds.remove(0)));
        for fd in fds {
            let ring = Ring::from_fd(fd, wakeup.clone(), 0).expect("a valid ring");
            lie_to(&lie, &ring, id);
            rings += 1;
        }
    }
    // libtest has printed "test hostile_app ... " without a newline.
    println!("\nscribbled {rings}");
    std::io::stdout().flush().unwrap();
    let mut line = String::new();
    std::io::stdin().read_line(&mut line).unwrap();
    drop(sock);
}

/// Writes `lie` into `ring`'s shared memory.
fn lie_to(lie: &str, ring: &Ring, id: u32) {
    let g = ring.geometry();
    let scribbler = Scribbler::new(ring.as_fd(), g);
    match lie {
        "write" => scribbler.set(at::WRITE, 1 << 62),
        "consumed" => {
            // Real events over three packets; once the daemon took some, move
            // `consumed` back a packet, as if to be read again.
            let len = (-7i64).encoded_len() + "hostile".encoded_len();
            let per_packet = g.subbuf_size as usize / (12 + len);
            for _ in 0..3 * per_packet {
                ring.write_event(id, len, |out| {
                    let at = (-7i64).encode(out);
                    "hostile".encode(&mut out[at..]);
                });
            }
            wait_for("the daemon to take two packets", WAIT, || {
                scribbler.get(at::CONSUMED) >= 2 * g.subbuf_size
            });
            let consumed = scribbler.get(at::CONSUMED);
            scribbler.set(at::CONSUMED, consumed - g.subbuf_size);
        }
        "commit" => {
            let mut x = 0x9e37_79b9_7f4a_7c15u64;
            for slot in 0..g.num_subbuf as usize {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                scribbler.set_commit(slot, x);
            }
        }
        "counters" => {
            for counter in at::COUNTERS {
                scribbler.set(counter, u64::MAX);
            }
        }
        "content_size" => {
            scribbler.forge_first_packet(ring.stream_id(), ring.cpu_id(), |s| {
                let bits = 2 * g.subbuf_size * 8;
                s.write_packet(0, at::PACKET_CONTENT_SIZE, &bits.to_le_bytes());
            });
        }
        other => panic!("no lie {other:?}"),
    }
}

/// Resident memory of process `pid`, in KiB.
fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let line = status
        .lines()
        .find(|l| l.starts_with("VmRSS:"))
        .expect("VmRSS");
    line.split_whitespace().nth(1).unwrap().parse().unwrap()
}

/// The whole scenario for one lie: the hostile app lies in every ring it got (one
/// per-UID and one per-PID set), an honest app of another uid records into the same
/// session, the hostile app exits (teardown of its per-PID set, dead-producer
/// recovery of its per-UID set), the session stops and is read back.
fn a_lying_app_costs_only_its_own_uid(lie: &str) {
    let daemon = Daemon::start();
    let small = |name: &str, buffers| ChannelRequest {
        name: name.into(),
        buffers: Some(buffers),
        subbuf_size: Some(4096),
        num_subbuf: Some(4),
        // The hand-written app writes bare events: no contexts.
        contexts: Some(vec![]),
        ..ChannelRequest::default()
    };
    let output = daemon.session_with(
        "s",
        "out",
        &[small("u", Buffering::PerUid), small("p", Buffering::PerPid)],
        true,
    );
    let mut hostile = Running(
        Command::new(std::env::current_exe().unwrap())
            .args([
                "hostile_app",
                "--exact",
                "--nocapture",
                "--test-threads",
                "1",
            ])
            .env(LIE_ENV, lie)
            .env("USTRACE_RUNDIR", &daemon.rundir)
            .uid(HOSTILE)
            .gid(HOSTILE)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .unwrap(),
    );
    // Kept open until the app exits: libtest still writes to it.
    let mut stdout = BufReader::new(hostile.0.stdout.take().unwrap());
    let rings: u64 = (&mut stdout)
        .lines()
        .map(|l| l.unwrap())
        .find_map(|l| {
            l.split_once("scribbled ")
                .map(|(_, n)| n.trim().parse().unwrap())
        })
        .expect("the hostile app scribbled");
    assert!(rings >= 2, "{rings} rings");

    let uid_losses = |uid| {
        daemon
            .status()
            .per_uid
            .into_iter()
            .find(|u| u.uid == uid)
            .unwrap_or_default()
    };
    wait_for("every lying ring marked corrupt", WAIT, || {
        uid_losses(HOSTILE).corrupt_rings == rings
    });

    let honest = daemon
        .app(&["--events", &HONEST_EVENTS.to_string()])
        .uid(HONEST)
        .gid(HONEST)
        .output()
        .unwrap();
    assert!(honest.status.success(), "{honest:?}");

    poke(&mut hostile.0);
    std::io::copy(&mut stdout, &mut std::io::sink()).unwrap();
    assert!(hostile.0.wait().unwrap().success());
    // Its per-PID set torn down (flush and give-up on the corrupt rings), the
    // per-UID sets of both uids left.
    wait_for("the per-PID sets torn down", WAIT, || {
        let s = daemon.status();
        s.apps == 0 && s.buffer_sets == 2
    });
    let rss = rss_kib(daemon.pid());
    assert!(rss < 256 * 1024, "daemon RSS {rss} KiB");
    daemon.stop("s");

    let lines = babeltrace2(&output);
    let honest_events = lines
        .iter()
        .filter(|l| l.contains("demo:ev") && !l.contains("hostile"))
        .count();
    assert_eq!(
        honest_events,
        2 * HONEST_EVENTS,
        "both channels, every event"
    );

    let status = daemon.status();
    let hostile_losses = uid_losses(HOSTILE);
    assert_eq!(
        (hostile_losses.corrupt_rings, status.corrupt_rings),
        (rings, rings),
        "{status:?}"
    );
    assert!(hostile_losses.packets_lost_corrupt_ring <= rings * 4);
    assert_eq!(
        status.packets_lost_corrupt_ring,
        hostile_losses.packets_lost_corrupt_ring
    );
    assert_eq!(
        (
            hostile_losses.events_discarded,
            hostile_losses.packets_overwritten
        ),
        (0, 0),
        "a lying ring's counters are not taken"
    );
    let honest_losses = uid_losses(HONEST);
    assert_eq!(
        (honest_losses.corrupt_rings, honest_losses.events_discarded),
        (0, 0)
    );
    assert_eq!(status.events_discarded, 0, "{status:?}");
    let shown = String::from_utf8(daemon.cli(&["status"]).stdout).unwrap();
    assert!(
        shown.contains(&format!("rings found corrupt:       {rings}"))
            && shown.contains(&format!("uid {HOSTILE}: 0 discarded")),
        "{shown}"
    );
}

#[test]
fn a_write_position_of_2_pow_62_is_refused_and_the_daemon_stays_up() {
    a_lying_app_costs_only_its_own_uid("write");
}

#[test]
fn a_consumed_position_moved_back_is_refused() {
    a_lying_app_costs_only_its_own_uid("consumed");
}

#[test]
fn random_commit_words_are_refused() {
    a_lying_app_costs_only_its_own_uid("commit");
}

#[test]
fn counters_forged_to_u64_max_count_nothing() {
    a_lying_app_costs_only_its_own_uid("counters");
}

#[test]
fn a_content_size_beyond_the_sub_buffer_is_refused() {
    a_lying_app_costs_only_its_own_uid("content_size");
}
