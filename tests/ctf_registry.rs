//! Event ids from the registry, checked through real traces read by babeltrace2 and view.

mod ctf_support;

use ctf_support::*;
use ustrace::ctf::field::FieldType;
use ustrace::trace::layout::uid_trace_dir;
use ustrace::trace::owner::Owner;
use ustrace::trace::writer::{append_packet, write_metadata};

fn u32_field(name: &str) -> ustrace::ctf::field::FieldDesc {
    field(
        name,
        FieldType::Integer {
            bits: 32,
            signed: false,
            hex: false,
        },
    )
}

#[test]
fn same_description_from_two_apps_of_one_uid_shares_one_id() {
    let mut r = registry(1, Owner::Uid(1000));
    let app1 = desc("prov", "ev", vec![u32_field("x")]);
    let app2 = app1.clone();
    let (id1, new1) = r.register_event(&app1).unwrap();
    let (id2, new2) = r.register_event(&app2).unwrap();
    assert_eq!(id1, id2);
    assert!(new1 && !new2, "only the first registration is new");
    assert_eq!(r.events().len(), 1);
    assert_eq!(
        r.metadata().matches("name = \"prov:ev\"").count(),
        0,
        "no channel yet"
    );
    r.add_channel("chan", &[]);
    assert_eq!(r.metadata().matches("name = \"prov:ev\"").count(), 1);
}

#[test]
fn same_name_with_other_fields_gets_its_own_id_and_both_decode() {
    let tmp = tempfile::tempdir().unwrap();
    let mut r = registry(2, Owner::Uid(1000));
    r.add_channel("chan", &[]);
    let dir = uid_trace_dir(tmp.path(), 1000);
    let (old, _) = r
        .register_event(&desc("prov", "ev", vec![u32_field("x")]))
        .unwrap();
    write_metadata(&dir, &r).unwrap();
    // A second app registers the same name with a different payload, later: the
    // metadata is rewritten whole and the older packets still decode.
    let (new, added) = r
        .register_event(&desc("prov", "ev", vec![field("s", FieldType::String)]))
        .unwrap();
    assert!(added);
    assert_ne!(old, new);
    assert_eq!(
        r.register_event(&desc("prov", "ev", vec![u32_field("x")]))
            .unwrap(),
        (old, false)
    );
    let mut p = PacketBuilder::new(r.uuid(), 0, 0, 0, 10, 512);
    p.event(old, 10, &[&7u32])
        .event(new, 11, &[&"seven"])
        .event(old, 12, &[&8u32]);
    append_packet(&dir, "chan", 0, &p.finish(0, false)).unwrap();
    write_metadata(&dir, &r).unwrap();

    let bt: Vec<(String, String)> = bt_events(tmp.path())
        .into_iter()
        .map(|e| (e.2, e.3))
        .collect();
    let expected = |s: &str| -> Vec<(String, String)> {
        ["{ x = 7 }", s, "{ x = 8 }"]
            .iter()
            .map(|p| ("prov:ev".to_string(), p.to_string()))
            .collect()
    };
    assert_eq!(bt, expected("{ s = \"seven\" }"));
    let view: Vec<(String, String)> = view_events(tmp.path())
        .into_iter()
        .map(|e| (e.2, e.3))
        .collect();
    assert_eq!(view, expected("{ s = \"seven\" }"));
}

#[test]
fn every_event_is_declared_in_every_channel() {
    let tmp = tempfile::tempdir().unwrap();
    let mut r = registry(3, Owner::Uid(5));
    let (id, _) = r
        .register_event(&desc("prov", "ev", vec![u32_field("x")]))
        .unwrap();
    r.add_channel("a", &[]);
    r.add_channel("b", &[]);
    let dir = uid_trace_dir(tmp.path(), 5);
    write_metadata(&dir, &r).unwrap();
    for (stream_id, channel) in ["a", "b"].iter().enumerate() {
        let mut p = PacketBuilder::new(r.uuid(), stream_id as u32, 0, 0, 10, 256);
        p.event(id, 10 + stream_id as u64, &[&(stream_id as u32)]);
        append_packet(&dir, channel, 0, &p.finish(0, true)).unwrap();
    }
    let bt: Vec<String> = bt_events(tmp.path()).into_iter().map(|e| e.3).collect();
    assert_eq!(bt, ["{ x = 0 }", "{ x = 1 }"]);
    let view: Vec<String> = view_events(tmp.path()).into_iter().map(|e| e.3).collect();
    assert_eq!(view, bt);
}
