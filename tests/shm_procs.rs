//! Rings shared by real processes: the test binary re-executes itself with
//! `USTRACE_SHM_CHILD=<role>` and the ring fds inherited. No harness: `main` runs the
//! tests one after the other (no fork in a multithreaded harness).

mod shm_support;

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Write};
use std::os::fd::AsFd;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use nix::poll::{PollFd, PollFlags, poll};
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use shm_support::*;
use ustrace::ctf::packet::EVENT_HEADER_SIZE;
use ustrace::shm::{ChannelBuffers, Consumer, Mode};

const ROLE: &str = "USTRACE_SHM_CHILD";
const ID: &str = "USTRACE_SHM_ID";
const THREADS: usize = 2;
const EVENTS_PER_THREAD: u64 = 20_000;

fn main() {
    if let Ok(role) = std::env::var(ROLE) {
        child(&role);
        return;
    }
    run(
        "concurrent_processes_each_event_read_once_in_order",
        concurrent_processes,
    );
    run(
        "producer_killed_between_reserve_and_commit_does_not_stall_the_ring",
        dead_producer,
    );
}

fn run(name: &str, test: fn()) {
    let start = Instant::now();
    test();
    println!("test {name} ... ok ({:.2?})", start.elapsed());
}

/// A child process killed and reaped when dropped, even on a failed assertion.
struct Proc(Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Starts a child with `role`, sharing `buffers`.
fn spawn(role: &str, id: u32, buffers: &ChannelBuffers) -> Proc {
    let mut cmd = Command::new(std::env::current_exe().expect("test binary"));
    cmd.env(ROLE, role)
        .env(ID, id.to_string())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped());
    Proc(spawn_sharing(&mut cmd, buffers))
}

fn child(role: &str) {
    let buffers = inherited_buffers();
    let id: u32 = std::env::var(ID).expect("id").parse().expect("id number");
    let mut out = std::io::stdout();
    match role {
        "writer" => {
            let committed: Vec<u64> = std::thread::scope(|s| {
                let handles: Vec<_> = (0..THREADS as u32)
                    .map(|thread| {
                        let buffers = &buffers;
                        s.spawn(move || {
                            (0..EVENTS_PER_THREAD)
                                .map(|seq| {
                                    let extra = (seq % 7) as usize * 5;
                                    if seq % 16 == 0 {
                                        // Lets the consumer run on this 2-core machine.
                                        std::thread::yield_now();
                                    }
                                    u64::from(write(buffers.current(), id, thread, seq, extra))
                                })
                                .sum()
                        })
                    })
                    .collect();
                handles
                    .into_iter()
                    .map(|h| h.join().expect("writer thread"))
                    .collect()
            });
            for (thread, n) in committed.iter().enumerate() {
                writeln!(out, "committed {thread} {n}").expect("stdout");
            }
        }
        "freezer" => {
            let reservation = buffers.rings()[0]
                .reserve(EVENT_HEADER_SIZE + payload_len(0))
                .expect("room for the frozen event");
            writeln!(out, "reserved {}", reservation.position()).expect("stdout");
            out.flush().expect("stdout");
            // Frozen between reserve and commit until killed.
            let mut line = String::new();
            let _ = std::io::stdin().read_line(&mut line);
            reservation.commit();
        }
        "looper" => {
            let ring = &buffers.rings()[0];
            for seq in 0.. {
                write(ring, id, 0, seq, 0);
                std::thread::yield_now();
            }
        }
        other => panic!("unknown child role {other}"),
    }
}

/// Waits for a wake-up or 20 ms (the daemon's timer), then drains every ring.
fn drain_all(
    buffers: &ChannelBuffers,
    consumers: &mut [Consumer],
    read: &mut Vec<(usize, TestEvent)>,
) {
    let mut fds = [PollFd::new(buffers.wakeup().as_fd(), PollFlags::POLLIN)];
    let _ = poll(&mut fds, 20u16);
    buffers.wakeup().take().expect("eventfd");
    let mut packet = Vec::new();
    for (ring, consumer) in consumers.iter_mut().enumerate() {
        while consumer.take_packet(&mut packet).is_some() {
            read.extend(parse(&packet).1.into_iter().map(|e| (ring, e)));
        }
        // Positions, commit words, headers and counters written by 4 honest
        // processes are always within the consumer's bounds.
        consumer.counter_deltas();
        assert!(
            consumer.corruption().is_none(),
            "an honest ring marked corrupt: {:?}",
            consumer.corruption()
        );
    }
}

fn concurrent_processes() {
    const PROCS: u32 = 4;
    let buffers = ChannelBuffers::create(
        "stress",
        &config(64 * 1024, 8, Mode::Discard),
        ustrace::shm::cpu_count(),
    )
    .expect("buffers");
    let mut consumers = buffers.consumers();
    let mut children: Vec<(u32, Proc)> = (0..PROCS)
        .map(|id| (id, spawn("writer", id, &buffers)))
        .collect();
    let mut read = Vec::new();
    let mut committed = HashMap::new();
    let deadline = Instant::now() + Duration::from_secs(60);
    while !children.is_empty() {
        assert!(Instant::now() < deadline, "writers did not finish");
        drain_all(&buffers, &mut consumers, &mut read);
        let mut i = 0;
        while i < children.len() {
            if let Some(status) = children[i].1.0.try_wait().expect("try_wait") {
                assert!(status.success(), "writer failed: {status}");
                let id = children[i].0;
                let stdout = children[i].1.0.stdout.take().expect("stdout");
                for line in BufReader::new(stdout).lines() {
                    let line = line.expect("line");
                    let f: Vec<&str> = line.split_whitespace().collect();
                    committed.insert(
                        (id, f[1].parse::<u32>().unwrap()),
                        f[2].parse::<u64>().unwrap(),
                    );
                }
                children.swap_remove(i);
            } else {
                i += 1;
            }
        }
    }
    for consumer in &mut consumers {
        consumer.flush();
    }
    drain_all(&buffers, &mut consumers, &mut read);
    let mut last: HashMap<(usize, u32, u32), u64> = HashMap::new();
    let mut per_thread: HashMap<(u32, u32), u64> = HashMap::new();
    for (ring, e) in &read {
        if let Some(prev) = last.insert((*ring, e.id, e.thread), e.seq) {
            assert!(
                e.seq > prev,
                "ring {ring} producer {} thread {}: {} after {prev}",
                e.id,
                e.thread,
                e.seq
            );
        }
        *per_thread.entry((e.id, e.thread)).or_default() += 1;
    }
    let total_committed: u64 = committed.values().sum();
    assert_eq!(committed.len(), PROCS as usize * THREADS);
    assert_eq!(
        read.len() as u64,
        total_committed,
        "every committed event read exactly once"
    );
    for (producer, count) in &committed {
        let got = per_thread.get(producer).copied().unwrap_or(0);
        assert_eq!(got, *count, "producer (process, thread) {producer:?}");
    }
    let discarded: u64 = buffers
        .rings()
        .iter()
        .map(|r| r.counters().discarded_full)
        .sum();
    let attempts = u64::from(PROCS) * THREADS as u64 * EVENTS_PER_THREAD;
    assert_eq!(
        read.len() as u64 + discarded,
        attempts,
        "written = read + discarded"
    );
    println!("  {} events read, {discarded} discarded", read.len());
}

fn dead_producer() {
    let buffers =
        ChannelBuffers::create("dead", &config(4096, 2, Mode::Discard), 1).expect("buffers");
    let mut consumers = buffers.consumers();
    let mut freezer = spawn("freezer", 1, &buffers);
    let mut line = String::new();
    BufReader::new(freezer.0.stdout.as_mut().expect("stdout"))
        .read_line(&mut line)
        .expect("freezer reports");
    assert!(line.starts_with("reserved"), "freezer said {line:?}");
    kill(Pid::from_raw(freezer.0.id() as i32), Signal::SIGKILL).expect("SIGKILL");
    freezer.0.wait().expect("reap freezer");
    let _looper = spawn("looper", 2, &buffers);
    let mut read = Vec::new();
    let ring = buffers.rings()[0].clone();
    // Until the ring has stalled on the dead packet: others' events are dropped.
    let stalled = wait_until(Duration::from_secs(20), || {
        ring.counters().discarded_full > 0
    });
    assert!(stalled, "ring never filled behind the dead packet");
    drain_all(&buffers, &mut consumers, &mut read);
    assert!(read.is_empty(), "nothing readable behind the dead packet");
    // The daemon knows the freezer dead (its connection closed); the looper lives.
    let freezer_pid = freezer.0.id() as i32;
    let dead = consumers[0].release_dead_holders(&|pid| pid != freezer_pid);
    assert_eq!(dead.filled, 1, "the one dead reservation is filled");
    assert_eq!(dead.pending, 0);
    assert_eq!(
        ring.counters().lost_dead_producer,
        1,
        "one lost event, exactly"
    );
    let recovered = wait_until(Duration::from_secs(20), || {
        drain_all(&buffers, &mut consumers, &mut read);
        read.len() > 500
    });
    assert!(recovered, "no events after the fill: {} read", read.len());
    let lost: Vec<_> = read.iter().filter(|(_, e)| e.thread == LOST).collect();
    assert_eq!(
        lost.len(),
        1,
        "the dead reservation reads as one lost event"
    );
    assert_eq!(lost[0].1.len, EVENT_HEADER_SIZE + payload_len(0));
    let seqs: Vec<u64> = read
        .iter()
        .filter(|(_, e)| e.thread != LOST)
        .map(|(_, e)| e.seq)
        .collect();
    assert_eq!(
        seqs.first(),
        Some(&0),
        "the looper's events in the dead packet are kept"
    );
    assert!(
        seqs.windows(2).all(|w| w[0] < w[1]),
        "later events in order"
    );
    assert_eq!(ring.counters().lost_dead_producer, 1);
    println!(
        "  1 event lost with the dead reservation, {} read",
        seqs.len()
    );
}
