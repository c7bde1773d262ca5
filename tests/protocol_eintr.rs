//! Signals interrupting blocked reads and writes: the frame still arrives whole.
//!
//! A handler is installed without SA_RESTART, so a signal delivered while a thread
//! sleeps in recvmsg/sendmsg makes the call fail with EINTR; the framing code must
//! resume. Each signal is sent only once the target thread is seen sleeping (state
//! `S` in /proc), and the test waits for the handler to have run. The two tests use
//! different signals so that they can run in parallel without counting each other's.

mod common;

use std::io::Write;
use std::os::unix::net::UnixStream;
use std::os::unix::thread::JoinHandleExt;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc;
use std::thread::{self, JoinHandle};
use std::time::Duration;

use nix::sys::signal::{SaFlags, SigAction, SigHandler, SigSet, Signal, sigaction};
use nix::unistd::{Pid, gettid};
use ustrace::protocol::{MAX_FRAME, recv, send};

/// SIGUSR1 deliveries (reader test).
static USR1: AtomicUsize = AtomicUsize::new(0);
/// SIGUSR2 deliveries (writer test).
static USR2: AtomicUsize = AtomicUsize::new(0);

/// The delivery counter of SIGUSR1 or SIGUSR2 (plain match: async-signal-safe).
fn counter(signal: libc::c_int) -> &'static AtomicUsize {
    if signal == libc::SIGUSR1 {
        &USR1
    } else {
        &USR2
    }
}

extern "C" fn count_signal(signal: libc::c_int) {
    counter(signal).fetch_add(1, Ordering::SeqCst);
}

fn install_handler(signal: Signal) {
    let action = SigAction::new(
        SigHandler::Handler(count_signal),
        SaFlags::empty(),
        SigSet::empty(),
    );
    // SAFETY: the handler only performs an atomic add, which is async-signal-safe.
    unsafe { sigaction(signal, &action) }.expect("sigaction");
}

fn wait_until(what: &str, condition: impl FnMut() -> bool) {
    common::wait_for(what, Duration::from_secs(10), condition);
}

fn sleeping(tid: Pid) -> bool {
    let stat = std::fs::read_to_string(format!("/proc/self/task/{tid}/stat")).unwrap();
    let after_name = &stat[stat.rfind(')').unwrap() + 2..];
    after_name.starts_with('S')
}

/// Waits for the thread to block, interrupts it once and waits for the handler.
fn interrupt_while_blocked<T>(thread: &JoinHandle<T>, tid: Pid, signal: Signal) {
    wait_until("the thread blocks", || sleeping(tid));
    let delivered = counter(signal as libc::c_int);
    let before = delivered.load(Ordering::SeqCst);
    // SAFETY: the thread has not been joined, so its pthread_t is valid.
    let rc = unsafe { libc::pthread_kill(thread.as_pthread_t(), signal as libc::c_int) };
    assert_eq!(rc, 0);
    wait_until("the handler ran", || {
        delivered.load(Ordering::SeqCst) > before
    });
}

#[test]
fn interrupted_reads_resume_in_header_and_payload() {
    install_handler(Signal::SIGUSR1);
    let (mut a, b) = UnixStream::pair().unwrap();
    let (tid_tx, tid_rx) = mpsc::channel();
    let receiver = thread::spawn(move || {
        tid_tx.send(gettid()).unwrap();
        recv::<Vec<u8>>(&b, MAX_FRAME)
    });
    let tid = tid_rx.recv().unwrap();

    interrupt_while_blocked(&receiver, tid, Signal::SIGUSR1);
    // Header and half the payload: the receiver blocks again inside the payload.
    let payload: Vec<u8> = (0..64).collect();
    let mut frame = ((8 + payload.len()) as u32).to_le_bytes().to_vec();
    frame.extend_from_slice(&(payload.len() as u64).to_le_bytes());
    frame.extend_from_slice(&payload);
    a.write_all(&frame[..20]).unwrap();
    interrupt_while_blocked(&receiver, tid, Signal::SIGUSR1);
    a.write_all(&frame[20..]).unwrap();

    let (got, fds) = receiver.join().unwrap().unwrap().unwrap();
    assert_eq!(got, payload);
    assert!(fds.is_empty());
}

#[test]
fn interrupted_writes_resume() {
    install_handler(Signal::SIGUSR2);
    let (a, b) = UnixStream::pair().unwrap();
    let message: Vec<u8> = (0..800_000u32).map(|i| i as u8).collect();
    let expected = message.clone();
    let (tid_tx, tid_rx) = mpsc::channel();
    let sender = thread::spawn(move || {
        tid_tx.send(gettid()).unwrap();
        send(&a, &message, &[])
    });
    let tid = tid_rx.recv().unwrap();

    // The socket buffer is far smaller than the frame: the sender blocks.
    interrupt_while_blocked(&sender, tid, Signal::SIGUSR2);
    interrupt_while_blocked(&sender, tid, Signal::SIGUSR2);
    let (got, _) = recv::<Vec<u8>>(&b, MAX_FRAME).unwrap().unwrap();
    sender.join().unwrap().unwrap();
    assert_eq!(got, expected);
}
