//! Property tests: any checkpoint or event the engine can build serialises to JSON and back to
//! an equal value, and an unknown field added anywhere at the top level survives.

use proptest::prelude::*;
use serde_json::{Map, Value, json};

use super::*;

fn id() -> impl Strategy<Value = String> {
    "[a-z][a-z0-9]{0,23}"
}

fn text() -> impl Strategy<Value = String> {
    // Arbitrary Unicode, including quotes, escapes and newlines.
    any::<String>().prop_map(|s| s.chars().take(40).collect())
}

fn args() -> impl Strategy<Value = Value> {
    prop_oneof![
        Just(json!({})),
        (text(), any::<i32>()).prop_map(|(s, n)| json!({"query": s, "n": n})),
        proptest::collection::vec(any::<bool>(), 0..3)
            .prop_map(|v| json!({"flags": v, "nested": {"x": null}})),
    ]
}

fn part() -> impl Strategy<Value = MessagePart> {
    let extra = Map::new;
    prop_oneof![
        (id(), text()).prop_map(move |(id, text)| MessagePart::TextPart(TextPart {
            id,
            text,
            extra: extra()
        })),
        (id(), text(), prop::option::of(text())).prop_map(move |(id, thinking, signature)| {
            MessagePart::ThinkingPart(ThinkingPart {
                id,
                thinking,
                signature,
                extra: extra(),
            })
        }),
        (id(), id(), text(), args()).prop_map(move |(id, tool_call_id, tool_name, args)| {
            MessagePart::ToolCallPart(ToolCallPart {
                id,
                tool_call_id,
                tool_name,
                args: args.into(),
                extra: extra(),
            })
        }),
        (id(), "[A-Za-z0-9+/]{0,16}").prop_map(move |(id, encoded_data)| {
            MessagePart::ImageInlinePart(InlinePart {
                id,
                encoded_data,
                mime_type: "image/png".into(),
                extra: extra(),
            })
        }),
        (id(), id(), text(), prop::option::of(any::<bool>())).prop_map(
            move |(id, call, t, is_error)| {
                MessagePart::ToolResultPart(ToolResultPart {
                    id,
                    tool_call_id: call,
                    tool_name: "tool".into(),
                    contents: vec![MessagePart::text(t)],
                    is_error,
                    extra: extra(),
                })
            }
        ),
    ]
}

fn message() -> impl Strategy<Value = Message> {
    (
        0..4u8,
        id(),
        proptest::collection::vec(part(), 0..4),
        prop::option::of(any::<bool>()),
    )
        .prop_map(|(kind, id, contents, cache)| {
            let body = MessageBody {
                id,
                contents,
                cache,
                extra: Map::new(),
            };
            match kind {
                0 => Message::InstructionMessage(std::sync::Arc::new(body)),
                1 => Message::UserMessage(std::sync::Arc::new(body)),
                2 => Message::ExpertMessage(std::sync::Arc::new(body)),
                _ => Message::ToolMessage(std::sync::Arc::new(body)),
            }
        })
}

fn usage() -> impl Strategy<Value = Usage> {
    (0..1_000_000u64, 0..1_000_000u64, 0..1000u64, 0..1000u64).prop_map(|(i, o, r, c)| Usage {
        input_tokens: i,
        output_tokens: o,
        reasoning_tokens: r,
        total_tokens: i + o,
        cached_input_tokens: c,
    })
}

fn status() -> impl Strategy<Value = CheckpointStatus> {
    prop_oneof![
        Just(CheckpointStatus::Init),
        Just(CheckpointStatus::Proceeding),
        Just(CheckpointStatus::Completed),
        Just(CheckpointStatus::StoppedByInteractiveTool),
        Just(CheckpointStatus::StoppedByDelegate),
        Just(CheckpointStatus::StoppedByExceededMaxSteps),
        Just(CheckpointStatus::StoppedByError),
    ]
}

fn call() -> impl Strategy<Value = ToolCall> {
    (id(), id(), args()).prop_map(|(i, t, a)| ToolCall::new(i, "@perstack/base", t, a))
}

fn checkpoint() -> impl Strategy<Value = Checkpoint> {
    (
        (
            id(),
            id(),
            status(),
            1..10_000u32,
            proptest::collection::vec(message(), 0..5),
            usage(),
        ),
        (
            prop::option::of(0..1_000_000u64),
            prop::option::of(0.0..1.0f64),
            prop::option::of(proptest::collection::vec(call(), 0..3)),
            prop::option::of((text(), prop::option::of(100..600u16), any::<bool>())),
            prop::option::of(0..10u32),
            prop::option::of(id()),
        ),
    )
        .prop_map(
            |(
                (id, run, status, step, messages, usage),
                (cw, cwu, pending, error, retry, parent),
            )| {
                Checkpoint {
                    id,
                    job_id: "job".into(),
                    run_id: run.clone(),
                    status,
                    step_number: step,
                    messages,
                    expert: ExpertRef {
                        key: "@org/x".into(),
                        name: "@org/x".into(),
                        version: "1.0.0".into(),
                    },
                    delegate_to: None,
                    delegated_by: parent.map(|p| DelegatedBy {
                        expert: ExpertRef {
                            key: "p".into(),
                            name: "p".into(),
                            version: "2.0.0".into(),
                        },
                        tool_call_id: "c".into(),
                        tool_name: "x".into(),
                        checkpoint_id: p,
                        run_id: run,
                    }),
                    usage,
                    context_window: cw,
                    context_window_usage: cwu,
                    pending_tool_calls: pending,
                    partial_tool_results: None,
                    metadata: None,
                    error: error.map(|(message, status_code, is_retryable)| RunError {
                        name: "E".into(),
                        message,
                        status_code,
                        is_retryable,
                    }),
                    retry_count: retry,
                    job_seq: None,
                    extra: Map::new(),
                }
            },
        )
}

fn round_trip<T>(v: &T) -> T
where
    T: serde::Serialize + serde::de::DeserializeOwned,
{
    let text = serde_json::to_string(v).expect("serialise");
    serde_json::from_str(&text).expect("deserialise")
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(128))]

    #[test]
    fn checkpoints_round_trip(cp in checkpoint()) {
        prop_assert_eq!(round_trip(&cp), cp);
    }

    #[test]
    fn checkpoint_events_round_trip_and_keep_unknown_fields(cp in checkpoint(), t in text(), ts in any::<u64>()) {
        let event = Event {
            id: "e".into(),
            timestamp: ts,
            job_id: cp.job_id.clone(),
            run_id: cp.run_id.clone(),
            expert_key: Some(cp.expert.key.clone()),
            step_number: Some(cp.step_number),
            job_seq: None,
            payload: EventPayload::CompleteRun(Box::new(CompleteRun {
                step: Step::new(cp.step_number, ts),
                checkpoint: cp,
                text: t,
                usage: Usage::default(),
                extra: Map::new(),
            })),
        };
        prop_assert_eq!(&round_trip(&event), &event);
        let mut value = serde_json::to_value(&event).expect("value");
        value["someFutureField"] = json!({"a": [1, 2.5, "x"]});
        let back: Event = serde_json::from_value(value.clone()).expect("with unknown field");
        prop_assert_eq!(serde_json::to_value(&back).expect("value"), value);
    }

    #[test]
    fn messages_round_trip(m in message()) {
        prop_assert_eq!(round_trip(&m), m);
    }
}
