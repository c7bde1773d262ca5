//! A ring whose app lies: every word it can write in the ring's shared memory
//! (positions, commit words, counters, packet headers) set to anything, at any time,
//! while the consumer takes, flushes, gives up and counts. The consumer never panics,
//! never allocates beyond the geometry, never loops beyond it, marks the ring corrupt
//! and from then on takes and counts nothing from it; an honest ring is never marked.

mod shm_support;

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use proptest::prelude::*;
use proptest::test_runner::RngSeed;
use shm_support::*;
use ustrace::ctf::packet::PACKET_HEADER_SIZE;
use ustrace::shm::{Consumer, Mode, Ring, RingCorruption, RingCounters, Wakeup};

/// Counts the largest allocation made while [`MEASURING`] is set on this thread.
struct Measured;

thread_local! {
    /// Set around the consumer calls under test.
    static MEASURING: Cell<bool> = const { Cell::new(false) };
}

/// Largest single allocation (bytes) seen while measuring.
static LARGEST: AtomicUsize = AtomicUsize::new(0);

fn note(size: usize) {
    if MEASURING.try_with(Cell::get).unwrap_or(false) {
        LARGEST.fetch_max(size, Ordering::Relaxed);
    }
}

// SAFETY: every call forwards to the system allocator with the caller's arguments,
// unchanged; `note` only reads a const-initialised thread-local and updates an
// atomic, neither of which allocates.
unsafe impl GlobalAlloc for Measured {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        note(layout.size());
        // SAFETY: forwarded contract of `GlobalAlloc::alloc`.
        unsafe { System.alloc(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: forwarded contract of `GlobalAlloc::dealloc`.
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        note(new_size);
        // SAFETY: forwarded contract of `GlobalAlloc::realloc`.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static ALLOCATOR: Measured = Measured;

/// Runs `f` (one consumer call), checking that it returns promptly and allocates no
/// block larger than two sub-buffers.
fn bounded<T>(subbuf_size: u64, f: impl FnOnce() -> T) -> T {
    LARGEST.store(0, Ordering::Relaxed);
    MEASURING.with(|m| m.set(true));
    let start = Instant::now();
    let result = f();
    let took = start.elapsed();
    MEASURING.with(|m| m.set(false));
    let largest = LARGEST.load(Ordering::Relaxed) as u64;
    assert!(
        largest <= 2 * subbuf_size,
        "allocated {largest} bytes at once"
    );
    assert!(
        took < Duration::from_secs(1),
        "a consumer call took {took:?}"
    );
    result
}

fn ring(subbuf_size: u64, num_subbuf: u64, mode: Mode) -> Arc<Ring> {
    let wakeup = Arc::new(Wakeup::new().expect("eventfd"));
    Arc::new(Ring::create("test", &config(subbuf_size, num_subbuf, mode), 0, wakeup).expect("ring"))
}

/// A word the app may write.
#[derive(Clone, Debug)]
enum Word {
    Write,
    Consumed,
    Commit(usize),
    Counter(usize),
    /// A packet header field (offset in the sub-buffer) of a slot.
    Header(usize, usize),
}

/// What to write there.
#[derive(Clone, Debug)]
enum Value {
    Exactly(u64),
    /// The current value plus this (wrapping).
    Plus(i64),
}

#[derive(Clone, Debug)]
enum Op {
    /// An honest event with this many payload fill bytes.
    Event(usize),
    Take,
    /// Lease the oldest packet (discard mode) and keep it out.
    Lease,
    /// Store (write out and drop) the oldest lease still out.
    Store,
    Flush,
    GiveUp,
    Count,
    Scribble(Word, Value),
}

fn word() -> impl Strategy<Value = Word> {
    let header = prop_oneof![
        Just(at::PACKET_MAGIC),
        Just(at::PACKET_STREAM_ID - 4),
        Just(at::PACKET_CONTENT_SIZE),
        Just(at::PACKET_SIZE),
        Just(at::PACKET_SEQ_NUM),
        Just(at::PACKET_EVENTS_DISCARDED),
        Just(at::PACKET_CPU_ID),
    ];
    prop_oneof![
        Just(Word::Write),
        Just(Word::Consumed),
        (0usize..4).prop_map(Word::Commit),
        (0usize..4).prop_map(Word::Counter),
        ((0usize..4), header).prop_map(|(slot, at)| Word::Header(slot, at)),
    ]
}

fn value() -> impl Strategy<Value = Value> {
    prop_oneof![
        any::<u64>().prop_map(Value::Exactly),
        Just(Value::Exactly(u64::MAX)),
        Just(Value::Exactly(1 << 62)),
        (0u64..1 << 16).prop_map(Value::Exactly),
        (-8192i64..8192).prop_map(Value::Plus),
        prop_oneof![Just(4096i64), Just(-4096), Just(1 << 32), Just(-(1 << 32))]
            .prop_map(Value::Plus),
    ]
}

fn op(scribbles: bool) -> impl Strategy<Value = Op> {
    let honest = prop_oneof![
        6 => (0usize..600).prop_map(Op::Event),
        2 => Just(Op::Take),
        1 => Just(Op::Lease),
        1 => Just(Op::Store),
        1 => Just(Op::Flush),
        1 => Just(Op::GiveUp),
        1 => Just(Op::Count),
    ];
    let weight = u32::from(scribbles);
    prop_oneof![
        10 => honest,
        weight => (word(), value()).prop_map(|(w, v)| Op::Scribble(w, v)),
    ]
}

/// Sums counter deltas, failing on overflow.
fn add(total: &mut RingCounters, d: RingCounters) {
    let sum = |a: u64, b: u64| a.checked_add(b).expect("counter totals overflow");
    total.discarded_full = sum(total.discarded_full, d.discarded_full);
    total.too_big = sum(total.too_big, d.too_big);
    total.overwritten_packets = sum(total.overwritten_packets, d.overwritten_packets);
    total.lost_dead_producer = sum(total.lost_dead_producer, d.lost_dead_producer);
}

/// Keeps quiet the panics of the producer path on a lied-to ring (caught in
/// [`play`]); every other panic is reported as usual.
fn quiet_producer_panics() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        let report = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            if !info
                .location()
                .is_some_and(|l| l.file().ends_with("src/shm/ring.rs"))
            {
                report(info);
            }
        }));
    });
}

/// Plays `ops` on a fresh ring; returns whether the consumer ended corrupt.
fn play(num_subbuf: u64, mode: Mode, ops: Vec<Op>) -> bool {
    quiet_producer_panics();
    const SB: u64 = 4096;
    let ring = ring(SB, num_subbuf, mode);
    let scribbler = Scribbler::new(ring.as_fd(), ring.geometry());
    let mut consumer = Consumer::new(ring.clone());
    let mut packet = Vec::new();
    let mut leases = std::collections::VecDeque::new();
    let mut totals = RingCounters::default();
    // Events given up and not yet reported by `counter_deltas`.
    let mut lost_pending = 0;
    let mut seq = 0;
    for op in ops {
        let was_corrupt = consumer.corruption().is_some();
        match op {
            Op::Event(extra) => {
                seq += 1;
                // The producer path is the app's own: on a ring it lied to, its
                // position arithmetic may overflow (a debug-build panic in the app,
                // never in the daemon); only the consumer is under test here.
                let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                    write(&ring, 1, 0, seq, extra)
                }));
            }
            Op::Take => {
                let taken = bounded(SB, || consumer.take_packet(&mut packet));
                assert!(packet.len() as u64 <= SB);
                if taken.is_none() {
                    assert!(packet.is_empty());
                }
                if was_corrupt {
                    assert!(taken.is_none(), "took from a corrupt ring");
                }
            }
            Op::Lease => {
                let lease = bounded(SB, || consumer.lease_packet());
                if let Some(lease) = lease {
                    assert!(!was_corrupt, "leased from a corrupt ring");
                    assert_eq!(mode, Mode::Discard, "leased in overwrite mode");
                    assert!(lease.len() as u64 <= SB && lease.len() >= PACKET_HEADER_SIZE);
                    leases.push_back(lease);
                }
                assert!(consumer.leases_out() as u64 <= num_subbuf);
            }
            Op::Store => {
                if let Some(lease) = leases.pop_front() {
                    // Whatever the app wrote meanwhile, the daemon writes the
                    // checked length, inside the sub-buffer.
                    assert_eq!(store_lease(&lease).len(), lease.len());
                }
            }
            Op::Flush => {
                let flushed = bounded(SB, || consumer.flush());
                assert!(!(was_corrupt && flushed), "flushed a corrupt ring");
            }
            Op::GiveUp => {
                let lost = bounded(SB, || consumer.give_up_stuck(&|_| false));
                assert!(lost <= num_subbuf * SB, "{lost} events lost from one ring");
                assert!(!was_corrupt || lost == 0, "gave up in a corrupt ring");
                lost_pending += lost;
            }
            Op::Count => {
                let deltas = bounded(SB, || consumer.counter_deltas());
                assert_eq!(deltas.lost_dead_producer, lost_pending);
                lost_pending = 0;
                if was_corrupt {
                    assert_eq!(
                        deltas,
                        RingCounters {
                            lost_dead_producer: deltas.lost_dead_producer,
                            ..RingCounters::default()
                        },
                        "counted a corrupt ring"
                    );
                }
                add(&mut totals, deltas);
            }
            Op::Scribble(word, value) => {
                let offset = match word {
                    Word::Write => at::WRITE,
                    Word::Consumed => at::CONSUMED,
                    Word::Commit(i) => at::COMMIT + 8 * (i % num_subbuf as usize),
                    Word::Counter(i) => at::COUNTERS[i],
                    Word::Header(slot, field) => {
                        let data_at = ring.geometry().data_offset() as usize;
                        data_at + (slot % num_subbuf as usize) * SB as usize + field
                    }
                };
                let new = match value {
                    Value::Exactly(v) => v,
                    Value::Plus(d) => scribbler.get(offset).wrapping_add_signed(d),
                };
                scribbler.set(offset, new);
            }
        }
    }
    consumer.corruption().is_some()
}

fn modes() -> impl Strategy<Value = (u64, Mode)> {
    (
        prop_oneof![Just(2u64), Just(4)],
        prop_oneof![Just(Mode::Discard), Just(Mode::Overwrite)],
    )
}

proptest! {
    // A fixed seed: every run checks the same cases; change it to explore others.
    #![proptest_config(ProptestConfig { cases: 256, rng_seed: RngSeed::Fixed(0x5eed_0015), ..ProptestConfig::default() })]

    /// Random words written into every header field, commit word, counter and packet
    /// header between honest events and consumer calls: no panic, no allocation beyond
    /// two sub-buffers, no call that does not return at once, and a corrupt ring gives
    /// nothing more.
    #[test]
    fn random_words_in_every_field_never_panic_allocate_or_loop(
        (num_subbuf, mode) in modes(),
        ops in proptest::collection::vec(op(true), 1..300),
    ) {
        play(num_subbuf, mode, ops);
    }

    /// The same consumer calls on an honest ring never mark it corrupt.
    #[test]
    fn an_honest_ring_is_never_marked_corrupt(
        (num_subbuf, mode) in modes(),
        ops in proptest::collection::vec(op(false), 1..300),
    ) {
        prop_assert!(!play(num_subbuf, mode, ops));
    }
}

/// A discard-mode 4 KiB x 4 ring, its consumer and the app's own mapping of it.
fn lying_ring() -> (Arc<Ring>, Consumer, Scribbler) {
    let ring = ring(4096, 4, Mode::Discard);
    let scribbler = Scribbler::new(ring.as_fd(), ring.geometry());
    (ring.clone(), Consumer::new(ring), scribbler)
}

#[test]
fn a_write_position_far_ahead_is_refused_before_give_up_walks_it() {
    let (_ring, mut consumer, scribbler) = lying_ring();
    scribbler.set(at::WRITE, 1 << 62);
    let started = Instant::now();
    assert_eq!(consumer.give_up_stuck(&|_| false), 0);
    assert_eq!(consumer.give_up_stuck(&|_| false), 0);
    assert!(started.elapsed() < Duration::from_secs(1));
    let corruption = consumer.corruption().expect("corrupt");
    assert!(
        matches!(
            corruption.reason,
            RingCorruption::PositionTooLarge { word: "write", .. }
        ),
        "{}",
        corruption.reason
    );
    assert_eq!(corruption.packets_dropped, 4, "all of an untrusted ring");
    assert!(consumer.take_packet(&mut Vec::new()).is_none());
}

#[test]
fn a_write_position_past_the_ring_is_refused() {
    let (_ring, mut consumer, scribbler) = lying_ring();
    // consumed 0: a write position is at most 4 sub-buffers and one more.
    scribbler.set(at::WRITE, 5 * 4096 + 100);
    assert!(!consumer.flush());
    let reason = &consumer.corruption().expect("corrupt").reason;
    assert_eq!(
        *reason,
        RingCorruption::WriteOutOfBounds {
            write: 5 * 4096 + 100,
            consumed: 0,
            limit: 5 * 4096
        }
    );
}

#[test]
fn consumed_moved_back_in_a_discard_ring_is_refused() {
    let (ring, mut consumer, scribbler) = lying_ring();
    for seq in 0..200 {
        assert!(write(&ring, 1, 0, seq, 40));
    }
    let mut packet = Vec::new();
    let mut taken = 0;
    while consumer.take_packet(&mut packet).is_some() {
        taken += 1;
    }
    assert!(taken >= 2, "{taken} packets");
    assert_eq!(scribbler.get(at::CONSUMED), taken * 4096);
    scribbler.set(at::CONSUMED, 0);
    assert!(consumer.take_packet(&mut packet).is_none());
    assert_eq!(
        consumer.corruption().expect("corrupt").reason,
        RingCorruption::ConsumedMoved {
            expected: taken * 4096,
            found: 0
        }
    );
}

#[test]
fn a_commit_word_outside_its_generation_is_refused() {
    let (_ring, mut consumer, scribbler) = lying_ring();
    scribbler.set_commit(0, 0x1234_5678_9abc_def0);
    assert!(consumer.take_packet(&mut Vec::new()).is_none());
    assert!(matches!(
        consumer.corruption().expect("corrupt").reason,
        RingCorruption::CommitOutOfGeneration {
            slot: 0,
            generation: 0,
            ..
        }
    ));
}

#[test]
fn forged_counters_count_nothing_and_mark_the_ring() {
    let (ring, mut consumer, scribbler) = lying_ring();
    assert!(ring.reserve(1 << 20).is_none(), "one honest too-big event");
    assert_eq!(consumer.counter_deltas().too_big, 1);
    for counter in at::COUNTERS {
        scribbler.set(counter, u64::MAX);
    }
    assert_eq!(consumer.counter_deltas(), RingCounters::default());
    assert!(matches!(
        consumer.corruption().expect("corrupt").reason,
        RingCorruption::CounterImplausible {
            counter: "discarded_full",
            ..
        }
    ));
    assert_eq!(consumer.counter_deltas(), RingCounters::default());
}

#[test]
fn a_counter_going_back_marks_the_ring() {
    let (ring, mut consumer, scribbler) = lying_ring();
    assert!(ring.reserve(1 << 20).is_none());
    assert_eq!(consumer.counter_deltas().too_big, 1);
    scribbler.set(at::COUNTERS[1], 0);
    assert_eq!(consumer.counter_deltas(), RingCounters::default());
    assert_eq!(
        consumer.corruption().expect("corrupt").reason,
        RingCorruption::CounterBackwards {
            counter: "too_big",
            was: 1,
            found: 0
        }
    );
}

#[test]
fn a_forged_packet_passes_only_with_the_header_an_honest_producer_writes() {
    let (ring, mut consumer, scribbler) = lying_ring();
    scribbler.forge_first_packet(ring.stream_id(), ring.cpu_id(), |_| {});
    let mut packet = Vec::new();
    let info = consumer
        .take_packet(&mut packet)
        .expect("a well-formed packet");
    assert_eq!(
        (info.seq_num, packet.len()),
        (0, PACKET_HEADER_SIZE.next_multiple_of(8))
    );
    assert!(consumer.corruption().is_none());
}

#[test]
fn content_size_beyond_the_sub_buffer_is_refused() {
    let (ring, mut consumer, scribbler) = lying_ring();
    scribbler.forge_first_packet(ring.stream_id(), ring.cpu_id(), |s| {
        s.write_packet(0, at::PACKET_CONTENT_SIZE, &(8 * 8192u64).to_le_bytes());
    });
    let mut packet = Vec::new();
    assert!(consumer.take_packet(&mut packet).is_none());
    assert!(packet.is_empty());
    assert!(matches!(
        consumer.corruption().expect("corrupt").reason,
        RingCorruption::BadPacket { seq_num: 0, .. }
    ));
}

#[test]
fn packet_header_fields_that_do_not_match_the_ring_are_refused() {
    for (offset, value, field) in [
        (at::PACKET_SIZE, 8 * 8192, "packet_size"),
        (at::PACKET_SEQ_NUM, 7, "packet_seq_num"),
        (at::PACKET_EVENTS_DISCARDED, u64::MAX, "events_discarded"),
    ] {
        let (ring, mut consumer, scribbler) = lying_ring();
        scribbler.forge_first_packet(ring.stream_id(), ring.cpu_id(), |s| {
            s.write_packet(0, offset, &value.to_le_bytes());
        });
        assert!(consumer.take_packet(&mut Vec::new()).is_none(), "{field}");
        match &consumer.corruption().expect("corrupt").reason {
            RingCorruption::PacketField { field: f, .. } => assert_eq!(f, &field),
            other => panic!("{field}: {other}"),
        }
    }
}

#[test]
fn a_lying_header_is_refused_before_anything_is_leased() {
    for (offset, value) in [
        (at::PACKET_CONTENT_SIZE, 8 * 8192u64),
        (at::PACKET_SIZE, 8 * 8192),
        (at::PACKET_SEQ_NUM, 7),
    ] {
        let (ring, mut consumer, scribbler) = lying_ring();
        scribbler.forge_first_packet(ring.stream_id(), ring.cpu_id(), |s| {
            s.write_packet(0, offset, &value.to_le_bytes());
        });
        assert!(consumer.lease_packet().is_none(), "offset {offset}");
        assert!(consumer.corruption().is_some(), "offset {offset}");
        assert_eq!(consumer.leases_out(), 0);
    }
}

#[test]
fn a_header_rewritten_after_its_lease_cannot_make_the_daemon_write_more() {
    let (ring, mut consumer, scribbler) = lying_ring();
    scribbler.forge_first_packet(ring.stream_id(), ring.cpu_id(), |s| {
        let content = (PACKET_HEADER_SIZE as u64 + 16) * 8;
        s.write_packet(0, at::PACKET_CONTENT_SIZE, &content.to_le_bytes());
    });
    let lease = consumer.lease_packet().expect("a well-formed packet");
    let checked = lease.header().to_vec();
    // The app now claims the packet runs far past its sub-buffer.
    scribbler.write_packet(0, at::PACKET_CONTENT_SIZE, &(1u64 << 40).to_le_bytes());
    scribbler.write_packet(0, at::PACKET_SIZE, &(1u64 << 40).to_le_bytes());
    let stored = store_lease(&lease);
    assert_eq!(stored.len(), PACKET_HEADER_SIZE + 16);
    assert_eq!(
        &stored[..PACKET_HEADER_SIZE],
        &checked[..],
        "the checked header"
    );
    assert_eq!(lease.to_vec(), stored);
}

#[test]
fn consumed_moved_while_a_lease_is_out_marks_the_ring_at_its_release() {
    let (ring, mut consumer, scribbler) = lying_ring();
    scribbler.forge_first_packet(ring.stream_id(), ring.cpu_id(), |_| {});
    let lease = consumer.lease_packet().expect("a well-formed packet");
    scribbler.set(at::CONSUMED, 4096);
    drop(lease);
    assert_eq!(consumer.release_stored(), 0);
    assert!(matches!(
        consumer.corruption().expect("corrupt").reason,
        RingCorruption::ConsumedMoved { .. }
    ));
    assert!(consumer.lease_packet().is_none());
}
