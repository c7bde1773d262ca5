//! A producer stopped exactly at each linearization point of the ring protocol
//! (`ustrace::shm::hooks`, the `linearization-hooks` feature the crate's tests enable),
//! and what must hold there: the consumer's take, flush and dead-holder passes racing
//! the frozen producer neither tear nor lose its event, and a packet stays incomplete
//! exactly until the frozen commit happens. Also: a reservation dropped by a panicking
//! encoder becomes one counted lost event and its packet completes.

#[path = "shm_support/mod.rs"]
mod shm_support;

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::Arc;
use std::thread::ScopedJoinHandle;
use std::time::Duration;

use shm_support::*;
use ustrace::ctf::packet::{COMPACT_HEADER_SIZE, EVENT_HEADER_SIZE, PACKET_HEADER_SIZE};
use ustrace::shm::hooks::{Point, Stop};
use ustrace::shm::{ChannelBuffers, Consumer, Mode, Ring, Wakeup};

/// How long a test waits for a producer to reach its stop.
const PARK_DEADLINE: Duration = Duration::from_secs(10);

fn ring() -> Arc<Ring> {
    let wakeup = Arc::new(Wakeup::new().expect("eventfd"));
    Arc::new(Ring::create("stops", &config(4096, 2, Mode::Discard), 0, wakeup).expect("ring"))
}

/// Spawns a producer that writes test event `seq` (`extra` fill bytes) and stops at
/// `point` on the way; returns once it is parked there.
fn frozen_producer<'s>(
    s: &'s std::thread::Scope<'s, '_>,
    ring: &'s Ring,
    point: Point,
    seq: u64,
    extra: usize,
) -> (Stop, ScopedJoinHandle<'s, bool>) {
    let stop = Stop::new(point);
    let armed = stop.clone();
    let producer = s.spawn(move || {
        armed.arm();
        write(ring, 1, 7, seq, extra)
    });
    assert!(
        stop.wait_parked(PARK_DEADLINE),
        "producer reached {point:?}"
    );
    (stop, producer)
}

/// Every complete packet now, parsed (a torn payload fails in `parse`).
fn take_all(consumer: &mut Consumer) -> Vec<Vec<TestEvent>> {
    let mut packets = Vec::new();
    let mut packet = Vec::new();
    while let Some(info) = consumer.take_packet(&mut packet) {
        let (header, events) = parse(&packet);
        assert_eq!(header.open.seq_num, info.seq_num);
        assert!(header.open.timestamp_begin <= header.close.timestamp_end);
        assert!(
            events.iter().all(
                |e| (header.open.timestamp_begin..=header.close.timestamp_end).contains(&e.ts)
            ),
            "events inside their packet's time bounds"
        );
        packets.push(events);
    }
    assert!(
        consumer.corruption().is_none(),
        "honest ring marked corrupt"
    );
    packets
}

fn seqs(events: &[TestEvent]) -> Vec<u64> {
    events.iter().map(|e| e.seq).collect()
}

/// Writes test events `0..n` (thread 0) of `extra` fill bytes each.
fn fill(ring: &Ring, n: u64, extra: usize) {
    for seq in 0..n {
        assert!(write(ring, 1, 0, seq, extra));
    }
}

/// Fill bytes of the events that nearly fill packet 0.
const EXTRA: usize = 100;

/// Writes as many test events of [`EXTRA`] fill bytes as packet 0 takes, so that
/// the next one closes it and opens packet 1; returns how many.
fn nearly_fill_packet_0(ring: &Ring) -> u64 {
    let before = first_packet_holds(4096, payload_len(EXTRA));
    fill(ring, before, EXTRA);
    before
}

/// The dead-holder passes leave a live holder alone, whatever it is frozen in.
fn live_holder_is_left_alone(consumer: &mut Consumer) {
    let alive = |_| true;
    assert_eq!(consumer.release_dead_holders(&alive), Default::default());
    assert_eq!(consumer.give_up_stuck(&alive), 0);
    assert_eq!(consumer.give_up_stuck(&alive), 0, "nothing given up");
}

#[test]
fn a_take_and_a_flush_racing_a_producer_frozen_after_its_cas_lose_and_tear_nothing() {
    let ring = ring();
    let mut consumer = Consumer::new(ring.clone());
    fill(&ring, 3, 0);
    std::thread::scope(|s| {
        let (stop, producer) = frozen_producer(s, &ring, Point::AfterCas, 3, 40);
        // The reservation exists (the CAS moved `write`) and holds no bytes yet.
        assert!(consumer.flush(), "the flush closes the packet around it");
        assert!(take_all(&mut consumer).is_empty(), "incomplete: not taken");
        live_holder_is_left_alone(&mut consumer);
        assert!(take_all(&mut consumer).is_empty());
        stop.release();
        assert!(producer.join().expect("producer"), "its event written");
    });
    let packets = take_all(&mut consumer);
    assert_eq!(packets.len(), 1);
    assert_eq!(seqs(&packets[0]), vec![0, 1, 2, 3], "every event, in order");
    assert_eq!(packets[0][3].thread, 7);
    assert_eq!(ring.counters(), Default::default(), "nothing dropped");
}

#[test]
fn a_producer_frozen_after_the_cas_that_opens_a_packet_keeps_it_incomplete_through_a_flush() {
    let ring = ring();
    let mut consumer = Consumer::new(ring.clone());
    std::thread::scope(|s| {
        // The first event opens packet 0: frozen after its CAS, before the switch.
        let (stop, producer) = frozen_producer(s, &ring, Point::AfterCas, 0, 0);
        assert!(consumer.flush(), "the flush closes the unopened packet");
        assert!(
            take_all(&mut consumer).is_empty(),
            "no open commit yet: incomplete"
        );
        live_holder_is_left_alone(&mut consumer);
        stop.release();
        assert!(producer.join().expect("producer"));
    });
    // The opener's and the flusher's header halves are disjoint: both intact.
    let packets = take_all(&mut consumer);
    assert_eq!(packets.len(), 1);
    assert_eq!(seqs(&packets[0]), vec![0]);
    fill(&ring, 1, 0);
    consumer.flush();
    assert_eq!(take_all(&mut consumer).len(), 1, "the ring goes on");
}

#[test]
fn a_producer_frozen_before_its_open_commit_holds_back_only_the_packet_it_opens() {
    let ring = ring();
    let mut consumer = Consumer::new(ring.clone());
    let before = nearly_fill_packet_0(&ring);
    std::thread::scope(|s| {
        let (stop, producer) = frozen_producer(s, &ring, Point::BeforeOpenCommit, before, EXTRA);
        // The close commit came before the frozen open commit: packet 0 is complete.
        let packets = take_all(&mut consumer);
        assert_eq!(packets.len(), 1, "the closed packet is taken meanwhile");
        assert_eq!(seqs(&packets[0]), (0..before).collect::<Vec<_>>());
        assert!(consumer.flush(), "packet 1 is open: the flush closes it");
        assert!(take_all(&mut consumer).is_empty(), "packet 1 waits");
        live_holder_is_left_alone(&mut consumer);
        stop.release();
        assert!(producer.join().expect("producer"));
    });
    let packets = take_all(&mut consumer);
    assert_eq!(packets.len(), 1);
    assert_eq!(seqs(&packets[0]), vec![before]);
    assert_eq!(ring.counters(), Default::default(), "nothing dropped");
}

#[test]
fn a_producer_frozen_before_its_close_commit_leaves_the_packet_incomplete_until_it_resumes() {
    let ring = ring();
    let mut consumer = Consumer::new(ring.clone());
    let before = nearly_fill_packet_0(&ring);
    std::thread::scope(|s| {
        let (stop, producer) = frozen_producer(s, &ring, Point::BeforeCloseCommit, before, EXTRA);
        assert!(
            take_all(&mut consumer).is_empty(),
            "every event of packet 0 committed, its padding not: incomplete"
        );
        // `write` is inside packet 1 already (the CAS moved it there).
        assert!(consumer.flush(), "the flush closes packet 1");
        live_holder_is_left_alone(&mut consumer);
        assert!(take_all(&mut consumer).is_empty(), "still incomplete");
        stop.release();
        assert!(producer.join().expect("producer"));
    });
    let packets = take_all(&mut consumer);
    assert_eq!(packets.len(), 2, "both complete once it resumes");
    assert_eq!(seqs(&packets[0]), (0..before).collect::<Vec<_>>());
    assert_eq!(
        seqs(&packets[1]),
        vec![before],
        "the switching event in packet 1"
    );
}

#[test]
fn a_consumer_frozen_before_its_flush_close_commit_loses_no_event_of_producers_going_on() {
    let ring = ring();
    let mut consumer = Consumer::new(ring.clone());
    fill(&ring, 2, 0);
    let stop = Stop::new(Point::BeforeCloseCommit);
    let armed = stop.clone();
    let consumer = std::thread::scope(|s| {
        let flusher = s.spawn(move || {
            armed.arm();
            assert!(consumer.flush());
            consumer
        });
        assert!(stop.wait_parked(PARK_DEADLINE), "flusher parked");
        // `write` already moved to packet 1's boundary: producers open it meanwhile.
        for seq in 2..5 {
            assert!(write(&ring, 1, 0, seq, 0));
        }
        stop.release();
        flusher.join().expect("flusher")
    });
    let mut consumer = consumer;
    consumer.flush();
    let packets = take_all(&mut consumer);
    assert_eq!(packets.len(), 2);
    assert_eq!(seqs(&packets[0]), vec![0, 1]);
    assert_eq!(seqs(&packets[1]), vec![2, 3, 4]);
}

#[test]
fn a_reservation_dropped_by_a_panicking_encoder_becomes_one_counted_lost_event() {
    let ring = ring();
    let mut consumer = Consumer::new(ring.clone());
    fill(&ring, 2, 0);
    // A compact reservation: a lost event's extended header fits in it all the same.
    let len = COMPACT_HEADER_SIZE + payload_len(5);
    let panicked = catch_unwind(AssertUnwindSafe(|| {
        ring.write_event(1, payload_len(5), |out| {
            encode(&mut out[..payload_len(0)], 0, 2);
            panic!("a field encoder panics");
        })
    }));
    assert!(panicked.is_err());
    assert_eq!(ring.counters().abandoned_reservations, 1);
    assert!(write(&ring, 1, 0, 3, 0), "the ring goes on");
    assert!(consumer.flush());
    let packets = take_all(&mut consumer);
    assert_eq!(packets.len(), 1, "the packet completed: nothing left open");
    let events = &packets[0];
    assert_eq!(events.len(), 4);
    assert_eq!(events[2].thread, LOST, "a lost event in its place");
    assert_eq!(events[2].len, len, "covering the whole reservation");
    assert_eq!(seqs(&events[..2]), vec![0, 1]);
    assert_eq!(events[3].seq, 3);
    assert!(events.windows(2).all(|w| w[0].ts <= w[1].ts));
    assert_eq!(consumer.counter_deltas().abandoned_reservations, 1);
    assert_eq!(
        consumer.release_dead_holders(&|_| false),
        Default::default(),
        "the holder record was cleared: nothing for the daemon to fill"
    );
}

ustrace::event!(static PANICKY: stops:panicky(i: i64), loglevel = Info);

#[test]
fn a_tracepoint_whose_encoder_panics_leaves_a_lost_event_and_completes_its_packet() {
    let buffers =
        ChannelBuffers::create("stops", &config(4096, 2, Mode::Discard), 2).expect("buffers");
    let slot = ustrace::ust::channel::install(buffers.clone(), Default::default()).expect("slot");
    PANICKY.enable(slot, 1);
    PANICKY.emit(1);
    let panicked = catch_unwind(|| PANICKY.record(8, |_: &mut [u8]| panic!("encoder")));
    assert!(panicked.is_err());
    PANICKY.emit(3);
    PANICKY.disable(slot);
    let mut lost = 0;
    let mut events = 0;
    let mut packet = Vec::new();
    for mut consumer in buffers.consumers() {
        consumer.flush();
        while consumer.take_packet(&mut packet).is_some() {
            let read = parse_ids(&packet);
            lost += read
                .iter()
                .filter(|&&id| id == ustrace::ctf::packet::LOST_EVENT_PADDED_ID)
                .count();
            events += read.len();
        }
    }
    let abandoned: u64 = buffers
        .rings()
        .iter()
        .map(|r| r.counters().abandoned_reservations)
        .sum();
    assert_eq!(abandoned, 1);
    assert_eq!((lost, events), (1, 3), "emit, lost event, emit");
}

/// The event ids of a packet of `{i: i64}` events and padded lost events (20 bytes).
fn parse_ids(packet: &[u8]) -> Vec<u32> {
    let header = ustrace::ctf::packet::PacketHeader::read(packet).expect("header");
    let end = header.close.content_size as usize;
    let mut at = ustrace::ctf::packet::PACKET_HEADER_SIZE;
    let mut ids = Vec::new();
    while at < end {
        let event = ustrace::ctf::packet::read_event_header(&packet[at..end], 0).expect("event");
        ids.push(event.id);
        at += event.len + 8;
    }
    assert_eq!(at, end, "every event a header and 8 bytes");
    ids
}

ustrace::event!(static CTX_PANICKY: stops:ctx_panicky(i: i64), loglevel = Info);
ustrace::event!(static CTX_BARE: stops:ctx_bare(), loglevel = Info);

#[test]
fn encoders_panicking_in_a_channel_with_contexts_leave_lost_events_with_zeroed_contexts() {
    use ustrace::ctf::context::{ContextSet, ContextType};
    use ustrace::ctf::packet::{LOST_EVENT_ID, LOST_EVENT_PADDED_ID, read_event_header};
    let contexts = ContextSet::of(&[ContextType::Vpid, ContextType::Vtid, ContextType::Procname]);
    let ctx = contexts.encoded_len();
    let config = ustrace::shm::RingConfig {
        context_len: ctx,
        ..config(4096, 2, Mode::Discard)
    };
    // One ring: every event lands in the same packet, in order.
    let buffers = ChannelBuffers::create("stops-ctx", &config, 1).expect("buffers");
    let slot = ustrace::ust::channel::install(buffers.clone(), contexts).expect("slot");
    CTX_PANICKY.enable(slot, 1);
    CTX_BARE.enable(slot, 2);
    CTX_PANICKY.emit(1);
    // A payload-free reservation (exactly header + contexts) and a payload one.
    assert!(catch_unwind(|| CTX_BARE.record(0, |_: &mut [u8]| panic!("encoder"))).is_err());
    assert!(catch_unwind(|| CTX_PANICKY.record(8, |_: &mut [u8]| panic!("encoder"))).is_err());
    CTX_BARE.emit();
    CTX_PANICKY.emit(3);
    CTX_PANICKY.disable(slot);
    CTX_BARE.disable(slot);
    assert_eq!(buffers.rings()[0].counters().abandoned_reservations, 2);
    let mut consumer = buffers.consumers().remove(0);
    assert!(consumer.flush());
    let mut packet = Vec::new();
    consumer.take_packet(&mut packet).expect("one packet");
    let header = ustrace::ctf::packet::PacketHeader::read(&packet).expect("header");
    let end = header.close.content_size as usize;
    // Walk the packet as a reader of this stream would: header, contexts, payload.
    let mut at = PACKET_HEADER_SIZE;
    let mut read = Vec::new();
    while at < end {
        let event = read_event_header(&packet[at..end], 0).expect("an event header");
        let (id, header) = (event.id, event.len);
        let context = &packet[at + header..at + header + ctx];
        let fields_at = at + header + ctx;
        let payload = match id {
            1 => 8,
            2 | LOST_EVENT_ID => 0,
            LOST_EVENT_PADDED_ID => {
                let nul = packet[fields_at..end].iter().position(|&b| b == 0);
                nul.expect("the filler string ends inside the packet") + 1
            }
            other => panic!("unknown event id {other} at {at}"),
        };
        let lost = id == LOST_EVENT_ID || id == LOST_EVENT_PADDED_ID;
        assert_eq!(
            context.iter().all(|&b| b == 0),
            lost,
            "only a lost event's contexts are zero (event {id} at {at})"
        );
        read.push((id, header + ctx + payload));
        at = fields_at + payload;
    }
    assert_eq!(at, end, "the events end exactly at the packet's content");
    // The ring's first event is extended; the others, the dropped reservations'
    // lost events among them (too short for an extended one), compact.
    let (extended, compact) = (EVENT_HEADER_SIZE + ctx, COMPACT_HEADER_SIZE + ctx);
    assert_eq!(
        read,
        vec![
            (1, extended + 8),
            (LOST_EVENT_ID, compact),
            (LOST_EVENT_PADDED_ID, compact + 8),
            (2, compact),
            (1, compact + 8),
        ]
    );
}

#[test]
fn a_take_whose_copy_raced_an_overwrite_discards_it_and_returns_the_packet_after() {
    let wakeup = Arc::new(Wakeup::new().expect("eventfd"));
    let ring = Arc::new(
        Ring::create("stops", &config(4096, 2, Mode::Overwrite), 0, wakeup).expect("ring"),
    );
    let mut consumer = Consumer::new(ring.clone());
    // Packet 0 complete (seqs 0..k), packet 1 open with seq k; it holds m events.
    let k = nearly_fill_packet_0(&ring);
    let m = later_packet_holds(4096, payload_len(EXTRA));
    assert!(write(&ring, 1, 0, k, EXTRA));
    std::thread::scope(|s| {
        let stop = Stop::new(Point::AfterCopy);
        let armed = stop.clone();
        let consumer = &mut consumer;
        let taker = s.spawn(move || {
            armed.arm();
            let mut packet = Vec::new();
            let info = consumer.take_packet(&mut packet);
            (info, packet)
        });
        assert!(
            stop.wait_parked(PARK_DEADLINE),
            "the consumer copied packet 0"
        );
        // Packet 1 fills; the next event opens packet 2 in packet 0's slot, over it.
        for seq in k + 1..=k + m {
            assert!(write(&ring, 1, 0, seq, EXTRA));
        }
        stop.release();
        let (info, packet) = taker.join().expect("consumer");
        let info = info.expect("packet 1 taken after the raced copy");
        assert_eq!(
            info.seq_num, 1,
            "the raced copy of packet 0 is not returned"
        );
        let (header, events) = parse(&packet);
        assert_eq!(header.open.seq_num, 1);
        assert_eq!(seqs(&events), (k..k + m).collect::<Vec<_>>());
    });
    assert_eq!(consumer.copies_discarded(), 1);
    assert_eq!(ring.counters().overwritten_packets, 1);
}
