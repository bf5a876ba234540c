//! Every recorded Perstack event and checkpoint deserialises into the typed wire schema and
//! re-serialises to an equal JSON value.

use std::path::PathBuf;

use perstack::schema::{Checkpoint, Event};
use serde_json::Value;

fn traces() -> Vec<PathBuf> {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/perstack-traces");
    let mut v: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    v.sort();
    v
}

#[test]
fn every_recorded_event_round_trips_to_an_equal_json_value() {
    let mut count = 0;
    for dir in traces() {
        let text = std::fs::read_to_string(dir.join("events.jsonl")).unwrap();
        for (n, line) in text.lines().enumerate() {
            let original: Value = serde_json::from_str(line).unwrap();
            let event: Event = serde_json::from_str(line)
                .unwrap_or_else(|e| panic!("{}:{}: {e}", dir.display(), n + 1));
            let again = serde_json::to_value(&event).unwrap();
            assert_eq!(
                original,
                again,
                "{}:{} ({})",
                dir.display(),
                n + 1,
                event.kind()
            );
            count += 1;
        }
    }
    assert!(count > 100, "only {count} events read");
}

#[test]
fn every_recorded_final_checkpoint_round_trips_to_an_equal_json_value() {
    for dir in traces() {
        let text = std::fs::read_to_string(dir.join("result.json")).unwrap();
        let original: Value = serde_json::from_str(&text).unwrap();
        let cp: Checkpoint = serde_json::from_value(original.clone()).unwrap();
        assert_eq!(
            original,
            serde_json::to_value(&cp).unwrap(),
            "{}",
            dir.display()
        );
    }
}

#[test]
fn unknown_fields_survive_a_round_trip() {
    let line = r#"{"type":"streamRunResult","id":"a","expertKey":"e","timestamp":1,"jobId":"j","runId":"r","stepNumber":1,"delta":"x","futureField":{"k":[1,2]}}"#;
    let original: Value = serde_json::from_str(line).unwrap();
    let event: Event = serde_json::from_str(line).unwrap();
    assert_eq!(original, serde_json::to_value(&event).unwrap());
    let first_key = serde_json::to_string(&event).unwrap();
    assert!(
        first_key.starts_with(r#"{"type":"streamRunResult""#),
        "{first_key}"
    );
}
