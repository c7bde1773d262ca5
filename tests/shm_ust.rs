//! The app's fast path: the event! macro, slots, enable/disable, exact payload bytes.

use ustrace::ctf::field::{EventDesc, FieldDesc, FieldType, FieldValue, Hex, LogLevel};
use ustrace::ctf::packet::{PACKET_HEADER_SIZE, PacketHeader, read_event_header};
use ustrace::shm::{ChannelBuffers, Geometry, Mode, RingConfig};
use ustrace::ust::{SlotId, channel};

ustrace::event!(pub static DEMO_EV: demo:ev(i: i64, s: &str), loglevel = Info);
ustrace::event!(static QUIET_EV: demo:quiet(i: i64), loglevel = Debug);
ustrace::event!(static SLOT_EV: demo:slot(i: u32), loglevel = Debug);
ustrace::event!(
    static ALL_TYPES: demo:all(
        a: i8, b: i16, c: i32, d: u8, e: u16, f: u32, g: u64, h: f32, k: f64, l: bool,
        m: &[u8], n: Hex<u64>, o: &str
    ),
    loglevel = Warning
);

/// Installs a one-ring channel (so the current CPU always maps to it).
fn install() -> (SlotId, ustrace::shm::Consumer) {
    let config = RingConfig {
        geometry: Geometry {
            subbuf_size: 4096,
            num_subbuf: 2,
        },
        mode: Mode::Discard,
        stream_id: 0,
        uuid: [1; 16],
        context_len: 0,
    };
    let buffers = ChannelBuffers::create("ust-test", &config, 1).expect("buffers");
    let consumer = buffers.consumers().pop().expect("one ring");
    (
        channel::install(buffers, Default::default()).expect("free slot"),
        consumer,
    )
}

/// Flushes and returns every (id, payload) recorded.
fn recorded(consumer: &mut ustrace::shm::Consumer, payload_len: usize) -> Vec<(u32, Vec<u8>)> {
    consumer.flush();
    let mut out = Vec::new();
    let mut bytes = Vec::new();
    while consumer.take_packet(&mut bytes).is_some() {
        let end = PacketHeader::read(&bytes)
            .expect("header")
            .close
            .content_size as usize;
        let mut at = PACKET_HEADER_SIZE;
        while at < end {
            let event = read_event_header(&bytes[at..], 0).expect("event header");
            let (id, p) = (event.id, at + event.len);
            out.push((id, bytes[p..p + payload_len].to_vec()));
            at = p + payload_len;
        }
    }
    out
}

#[test]
fn declared_event_describes_itself() {
    let string = FieldType::String;
    assert_eq!(
        DEMO_EV.desc(),
        EventDesc {
            model_emf_uri: None,
            provider: "demo".into(),
            name: "ev".into(),
            loglevel: LogLevel::Info,
            fields: vec![
                FieldDesc {
                    name: "i".into(),
                    ty: i64::field_type()
                },
                FieldDesc {
                    name: "s".into(),
                    ty: string
                },
            ],
        }
    );
    assert_eq!(ALL_TYPES.desc().fields.len(), 13);
    assert_eq!(ALL_TYPES.desc().fields[11].ty, Hex::<u64>::field_type());
}

#[test]
fn enabled_event_records_header_and_exact_payload() {
    let (slot, mut consumer) = install();
    DEMO_EV.enable(slot, 5);
    DEMO_EV.emit(42, "hello");
    let mut expected = 42i64.to_le_bytes().to_vec();
    expected.extend_from_slice(b"hello\0");
    assert_eq!(recorded(&mut consumer, expected.len()), vec![(5, expected)]);
    DEMO_EV.disable(slot);
    DEMO_EV.emit(43, "world");
    assert_eq!(recorded(&mut consumer, 14), vec![]);
}

#[test]
fn disabled_event_records_nothing() {
    let (_slot, mut consumer) = install();
    assert!(!QUIET_EV.is_enabled());
    QUIET_EV.emit(1);
    assert_eq!(recorded(&mut consumer, 8), vec![]);
}

#[test]
fn disabled_slot_stops_every_event() {
    let (slot, mut consumer) = install();
    SLOT_EV.enable(slot, 9);
    SLOT_EV.emit(1);
    channel::disable_slot(slot);
    SLOT_EV.emit(2);
    assert_eq!(
        recorded(&mut consumer, 4),
        vec![(9, 1u32.to_le_bytes().to_vec())]
    );
}

#[test]
fn every_field_type_is_encoded_as_field_value_says() {
    let (slot, mut consumer) = install();
    ALL_TYPES.enable(slot, 3);
    let bytes: &[u8] = &[1, 2, 3];
    ALL_TYPES.emit(
        -1,
        -2,
        -3,
        4,
        5,
        6,
        7,
        8.5,
        9.25,
        true,
        bytes,
        Hex(0xABCD),
        "x",
    );
    let mut expected = Vec::new();
    let mut push = |v: &dyn Fn(&mut [u8]) -> usize| {
        let mut buf = [0u8; 16];
        let n = v(&mut buf);
        expected.extend_from_slice(&buf[..n]);
    };
    push(&|o| (-1i8).encode(o));
    push(&|o| (-2i16).encode(o));
    push(&|o| (-3i32).encode(o));
    push(&|o| 4u8.encode(o));
    push(&|o| 5u16.encode(o));
    push(&|o| 6u32.encode(o));
    push(&|o| 7u64.encode(o));
    push(&|o| 8.5f32.encode(o));
    push(&|o| 9.25f64.encode(o));
    push(&|o| true.encode(o));
    push(&|o| bytes.encode(o));
    push(&|o| Hex(0xABCDu64).encode(o));
    push(&|o| "x".encode(o));
    let len = expected.len();
    assert_eq!(recorded(&mut consumer, len), vec![(3, expected)]);
}

ustrace::event!(static MARK_EV: demo:mark(), loglevel = Notice);

#[test]
fn event_without_fields_records_its_header_only() {
    let (slot, mut consumer) = install();
    MARK_EV.enable(slot, 11);
    MARK_EV.emit();
    assert_eq!(recorded(&mut consumer, 0), vec![(11, Vec::new())]);
    assert!(MARK_EV.desc().fields.is_empty());
}

ustrace::event!(static REUSE_EV: demo:reuse(i: u32), loglevel = Debug);

#[test]
fn released_slots_are_reused_and_an_old_installation_s_id_never_reaches_the_new_one() {
    let (old, mut old_consumer) = install();
    REUSE_EV.enable(old, 5);
    // Released with the event still enabled in it: what an emitter that raced the
    // release of a dead daemon's slot would see.
    channel::release(old);
    // Released slots are taken first: this is `old`'s index unless a test running
    // alongside took it, which the checks below do not mind.
    let (new, mut new_consumer) = install();
    REUSE_EV.emit(1);
    assert_eq!(recorded(&mut new_consumer, 4), vec![], "old id, new rings");
    assert_eq!(recorded(&mut old_consumer, 4), vec![], "released rings");
    REUSE_EV.enable(new, 6);
    REUSE_EV.emit(2);
    assert_eq!(
        recorded(&mut new_consumer, 4),
        vec![(6, 2u32.to_le_bytes().to_vec())]
    );
    // Many more registrations than slots, each after its daemon went away.
    let mut slot = new;
    for _ in 0..3 * ustrace::ust::MAX_SLOTS {
        REUSE_EV.disable(slot);
        channel::release(slot);
        slot = install().0;
    }
}
