//! `json::to_vec` writes what `serde_json::to_vec` writes: on every event Perstack recorded,
//! on random JSON values and strings, and on each corner of serde's data model.

use std::collections::BTreeMap;

use proptest::prelude::*;
use serde::Serialize;
use serde_json::{Value, json};

use crate::schema::Event;

/// Both serializers' output, or their failure.
fn both<T: Serialize + ?Sized>(value: &T) -> (Result<String, String>, Result<String, String>) {
    let mut ours = Vec::new();
    let ours = super::to_vec(&mut ours, value)
        .map(|()| String::from_utf8(ours).unwrap())
        .map_err(|e| e.to_string());
    let theirs = serde_json::to_vec(value)
        .map(|v| String::from_utf8(v).unwrap())
        .map_err(|e| e.to_string());
    (ours, theirs)
}

fn same<T: Serialize + ?Sized>(value: &T) {
    let (ours, theirs) = both(value);
    assert_eq!(ours, theirs);
}

#[test]
fn every_recorded_event_is_written_as_serde_json_writes_it() {
    let traces =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/perstack-traces");
    let mut events = 0;
    for dir in std::fs::read_dir(traces).unwrap() {
        let path = dir.unwrap().path().join("events.jsonl");
        let Ok(text) = std::fs::read_to_string(&path) else {
            continue;
        };
        for line in text.lines().filter(|l| l.starts_with('{')) {
            let event: Event = serde_json::from_str(line).unwrap();
            same(&event);
            let value: Value = serde_json::from_str(line).unwrap();
            same(&value);
            events += 1;
        }
    }
    assert!(events > 100, "only {events} events read");
}

#[test]
fn every_byte_below_0x80_and_the_escapes_around_the_word_boundaries_in_values_and_keys() {
    let all: String = (0u8..0x80).map(char::from).collect();
    same(&all);
    same(&BTreeMap::from([(all, 0)]));
    for len in 0..20 {
        let plain = "a".repeat(len);
        same(&BTreeMap::from([(plain.clone(), 0)]));
        for at in 0..len {
            for special in [
                '"', '\\', '\n', '\u{1}', '\u{1f}', ' ', '\u{7f}', 'é', '€', '😀',
            ] {
                let mut s = plain.clone();
                s.replace_range(at..=at, special.encode_utf8(&mut [0; 4]));
                same(&s);
                // Keys are checked another way (whole words, see `string::write_key`).
                same(&BTreeMap::from([(s, 0)]));
            }
        }
    }
}

#[test]
fn numbers_as_serde_json_writes_them() {
    for f in [
        0.0,
        -0.0,
        1.0,
        0.1,
        -2.5e-7,
        1e21,
        1e300,
        f64::MAX,
        f64::MIN_POSITIVE,
        f64::NAN,
        f64::INFINITY,
        f64::NEG_INFINITY,
    ] {
        same(&f);
        same(&(f as f32));
    }
    same(&[i64::MIN, i64::MAX, 0]);
    same(&[u64::MAX, 0]);
    same(&(
        i128::MIN,
        u128::MAX,
        i8::MIN,
        u8::MAX,
        i16::MIN,
        u16::MAX,
        i32::MIN,
        u32::MAX,
    ));
    same(&json!({"n": 1, "f": 1.5, "big": u64::MAX, "neg": -3}));
}

#[derive(Serialize)]
enum Shapes {
    Unit,
    Newtype(u8),
    Tuple(u8, &'static str),
    EmptyTuple(),
    Struct { a: Option<u8>, b: Vec<u8> },
}

#[derive(Serialize)]
struct UnitStruct;

#[derive(Serialize, PartialEq, Eq, PartialOrd, Ord)]
struct Newtype(&'static str);

#[derive(Serialize)]
struct TupleStruct(u8, bool);

#[test]
fn every_shape_of_serdes_data_model() {
    same(&[
        Shapes::Unit,
        Shapes::Newtype(1),
        Shapes::Tuple(2, "x"),
        Shapes::EmptyTuple(),
    ]);
    same(&Shapes::Struct { a: None, b: vec![] });
    same(&Shapes::Struct {
        a: Some(3),
        b: vec![1, 2],
    });
    same(&(
        UnitStruct,
        Newtype("n\"q"),
        TupleStruct(7, false),
        (),
        'c',
        '"',
    ));
    same(&serde_bytes_like());
    same(&Vec::<u8>::new());
    same(&BTreeMap::<String, u8>::new());
    same(&Option::<u8>::None);
    same(&true);
}

/// `serialize_bytes`: serde_json writes a byte array.
fn serde_bytes_like() -> impl Serialize {
    struct Bytes;
    impl Serialize for Bytes {
        fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
            s.serialize_bytes(b"\x00\xffab")
        }
    }
    Bytes
}

#[test]
fn map_keys_as_serde_json_writes_or_refuses_them() {
    same(&BTreeMap::from([(1i32, "a"), (-2, "b")]));
    same(&BTreeMap::from([(u128::MAX, 0)]));
    same(&BTreeMap::from([(true, 1), (false, 0)]));
    same(&BTreeMap::from([('k', 1), ('"', 2)]));
    same(&BTreeMap::from([(Some("s"), 1)]));
    same(&BTreeMap::from([(Newtype("n"), 1)]));
    #[derive(Serialize, PartialEq, Eq, PartialOrd, Ord)]
    enum Key {
        A,
    }
    same(&BTreeMap::from([(Key::A, 1)]));
    // Floats: finite ones quoted, the others refused (as by serde_json).
    struct FloatKeys(f64);
    impl Serialize for FloatKeys {
        fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
            use serde::ser::SerializeMap;
            let mut m = s.serialize_map(Some(1))?;
            m.serialize_entry(&self.0, &1)?;
            m.end()
        }
    }
    same(&FloatKeys(1.5));
    let (ours, theirs) = both(&FloatKeys(f64::NAN));
    assert!(ours.is_err() && theirs.is_err(), "{ours:?} {theirs:?}");
    let (ours, theirs) = both(&BTreeMap::from([((), 1)]));
    assert_eq!(ours.unwrap_err(), "key must be a string");
    assert!(theirs.is_err());
    let (ours, theirs) = both(&BTreeMap::from([(vec![1], 1)]));
    assert!(ours.is_err() && theirs.is_err());
}

fn value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
        any::<f64>().prop_map(Value::from),
        any::<String>().prop_map(Value::String),
        "[\\x00-\\x7f]{0,40}".prop_map(Value::String),
    ];
    leaf.prop_recursive(4, 64, 8, |inner| {
        prop_oneof![
            proptest::collection::vec(inner.clone(), 0..8).prop_map(Value::Array),
            proptest::collection::btree_map(any::<String>(), inner, 0..8)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn random_values_are_written_as_serde_json_writes_them(v in value()) {
        let (ours, theirs) = both(&v);
        prop_assert_eq!(ours, theirs);
    }

    #[test]
    fn random_strings_are_written_as_serde_json_writes_them(s in any::<String>(), ascii in "[\\x00-\\x7f]{0,64}") {
        let (ours, theirs) = both(&s);
        prop_assert_eq!(ours, theirs);
        let (ours, theirs) = both(&ascii);
        prop_assert_eq!(ours, theirs);
    }
}
