//! Fuzzing the pure machine (issue 9, item 6): random model outputs (text, reasoning, tool
//! calls to known and unknown tools, delegate and interactive calls, empty answers, cut-off and
//! unknown finish reasons, errors retryable or not), random tool results, delegation results
//! and cancellations, under random `maxSteps` and `maxRetries`. Whatever comes in, the machine
//! never panics, every run segment ends with exactly one terminal event (REFERENCE §1.2:
//! `completeRun`, `stopRunByError`, `stopRunByExceededMaxSteps`, `stopRunByInteractiveTool`,
//! `stopRunByDelegate`) and nothing after it, its effect then agrees with it, and step numbers
//! follow REFERENCE §1.3: they start at the segment's step and grow by exactly one, right after
//! each `continueToNextStep`, never past `maxSteps`.

use proptest::prelude::*;
use serde_json::{Value, json};

use super::*;
use crate::llm::{FinishReason, GeneratedToolCall, Generation, GenerationError, Thinking};
use crate::schema::{CheckpointStatus, Event, ExpertRef, MessagePart, ToolResult, Usage};

const TERMINAL: [&str; 5] = [
    "completeRun",
    "stopRunByError",
    "stopRunByExceededMaxSteps",
    "stopRunByInteractiveTool",
    "stopRunByDelegate",
];

/// Tool names the model may call: base tools, a delegate, an interactive tool, unknown ones.
const NAMES: [&str; 8] = [
    "attemptCompletion",
    "todo",
    "readTextFile",
    "helper",
    "askUser",
    "inventedTool",
    "",
    "日本語ツール",
];

fn expert(key: &str) -> ExpertRef {
    ExpertRef {
        key: key.into(),
        name: key.into(),
        version: "1.0.0".into(),
    }
}

fn index() -> ToolIndex {
    let mut t = ToolIndex::new();
    for name in ["attemptCompletion", "todo", "readTextFile"] {
        t.insert(name, ToolOwner::Skill(BASE_SKILL.into()));
    }
    t.insert("helper", ToolOwner::Delegate(expert("helper")));
    t.insert("askUser", ToolOwner::Interactive("ui".into()));
    t
}

/// One model answer.
#[derive(Debug, Clone)]
enum Answer {
    Generated(Generation),
    Failed(GenerationError),
}

fn text() -> impl Strategy<Value = String> {
    prop_oneof![
        Just(String::new()),
        Just("   ".to_owned()),
        Just("done".to_owned()),
        Just("日本語の答え".to_owned()),
        "[a-z ]{0,12}",
    ]
}

fn args() -> impl Strategy<Value = Value> {
    prop_oneof![
        Just(json!({})),
        Just(json!({"query": "do it"})),
        Just(json!({"query": 7})),
        Just(Value::Null),
        Just(json!({"newTodos": ["a"]})),
    ]
}

fn call() -> impl Strategy<Value = GeneratedToolCall> {
    (prop::sample::select(NAMES.to_vec()), args(), 0u8..4).prop_map(|(name, args, id)| {
        GeneratedToolCall {
            // Ids repeat now and then, as a confused model's may.
            id: format!("call_{id}_{name}"),
            name: name.to_owned(),
            args,
        }
    })
}

fn finish_reason() -> impl Strategy<Value = FinishReason> {
    prop_oneof![
        6 => Just(FinishReason::ToolCalls),
        3 => Just(FinishReason::Stop),
        1 => Just(FinishReason::Length),
        1 => Just(FinishReason::Other("content-filter".into())),
    ]
}

fn answer() -> impl Strategy<Value = Answer> {
    let generated = (
        prop::collection::vec(text(), 0..2),
        text(),
        prop::collection::vec(call(), 0..4),
        finish_reason(),
        0u64..500,
    )
        .prop_map(|(thinking, text, tool_calls, finish_reason, tokens)| {
            Answer::Generated(Generation {
                thinking: thinking
                    .into_iter()
                    .map(|text| Thinking {
                        text,
                        signature: None,
                    })
                    .collect(),
                text,
                tool_calls,
                finish_reason,
                usage: Usage {
                    input_tokens: tokens,
                    output_tokens: tokens / 10,
                    reasoning_tokens: 0,
                    total_tokens: tokens + tokens / 10,
                    cached_input_tokens: 0,
                },
            })
        });
    let failed = (any::<bool>(), prop::option::of(400u16..600)).prop_map(|(retryable, status)| {
        Answer::Failed(GenerationError {
            name: "APICallError".into(),
            message: "the provider said no: 失敗".into(),
            status_code: status,
            retryable,
            retry_after: None,
        })
    });
    prop_oneof![4 => generated, 1 => failed]
}

/// What the outside world does at one effect.
#[derive(Debug, Clone)]
struct World {
    /// Model answers, in order; when they run out the model answers "done".
    answers: Vec<Answer>,
    /// Tool result texts, taken in turn for every call.
    tool_texts: Vec<String>,
    /// Per batch of tool calls: answer every call (true) or none at all (false).
    full_batches: Vec<bool>,
    /// Per delegation: the children's last step, past the parent's.
    child_steps: Vec<u32>,
    /// Abort (cancel) the run after this many effects, if at all.
    abort_after: Option<usize>,
}

fn world() -> impl Strategy<Value = World> {
    (
        prop::collection::vec(answer(), 0..14),
        prop::collection::vec(
            prop_oneof![
                Just("{}".to_owned()),
                Just(
                    json!({"remainingTodos": [{"id": 0, "title": "x", "completed": false}]})
                        .to_string()
                ),
                Just(json!({"remainingTodos": []}).to_string()),
                Just("結果".to_owned()),
                Just(String::new()),
            ],
            1..6,
        ),
        prop::collection::vec(prop::bool::weighted(0.9), 1..6),
        prop::collection::vec(0u32..4, 1..4),
        prop::option::of(0usize..30),
    )
        .prop_map(
            |(answers, tool_texts, full_batches, child_steps, abort_after)| World {
                answers,
                tool_texts,
                full_batches,
                child_steps,
                abort_after,
            },
        )
}

/// The events of one run segment and how it ended.
struct Segment {
    start_step: u32,
    events: Vec<Event>,
}

/// Drives a machine through `world`; returns its run segments.
fn play(world: &World, max_steps: u32, max_retries: u32) -> Vec<Segment> {
    let setting = MachineSetting {
        job_id: "job".into(),
        run_id: "run-0".into(),
        expert: expert("coord"),
        max_steps,
        max_retries,
        context_window: Some(1000),
    };
    let cp = Machine::fresh_checkpoint(&setting, 1);
    let mut m = Machine::new(setting, index(), cp);
    let mut segments = vec![Segment {
        start_step: 1,
        events: Vec::new(),
    }];
    let mut answers = world.answers.iter();
    let (mut tool_n, mut batch_n, mut delegation_n, mut effects) = (0usize, 0usize, 0usize, 0usize);
    let mut out = m.start(0, Start::Query("go".into()), "be good".into());
    loop {
        let ended = {
            let segment = segments.last_mut().unwrap_or_else(|| unreachable!());
            segment.events.append(&mut out.events);
            let ended = segment
                .events
                .iter()
                .filter(|e| TERMINAL.contains(&e.kind()))
                .count();
            assert!(
                ended <= 1,
                "two terminal events in one segment: {:?}",
                kinds(&segment.events)
            );
            ended
        };
        effects += 1;
        assert!(effects < 1_000, "the run never ends");
        // Cancellation reaches a run between effects, as the run actor checks it: never while
        // it waits for its children (its segment already ended with `stopRunByDelegate`).
        let waiting = matches!(out.effect, Effect::Generate { .. } | Effect::CallTools(_));
        if world.abort_after == Some(effects) && waiting {
            out = m.abort(effects as u64, RunFailure::Cancelled);
            assert!(matches!(out.effect, Effect::Stop));
            continue;
        }
        let now = effects as u64;
        out = match out.effect {
            Effect::Generate { .. } => {
                assert_eq!(ended, 0, "a generation after the end");
                let input = match answers.next() {
                    Some(Answer::Generated(g)) => Ok(g.clone()),
                    Some(Answer::Failed(e)) => Err(e.clone()),
                    None => Ok(Generation {
                        thinking: Vec::new(),
                        text: "done".into(),
                        tool_calls: Vec::new(),
                        finish_reason: FinishReason::Stop,
                        usage: Usage::default(),
                    }),
                };
                m.handle(now, Input::Generated(input))
            }
            Effect::CallTools(calls) => {
                assert_eq!(ended, 0, "tool calls after the end");
                let full = world.full_batches[batch_n % world.full_batches.len()];
                batch_n += 1;
                let results = if full {
                    calls
                        .iter()
                        .map(|c| {
                            let t = &world.tool_texts[tool_n % world.tool_texts.len()];
                            tool_n += 1;
                            ToolResult::new(c, c.skill_name.clone(), vec![MessagePart::text(t)])
                        })
                        .collect()
                } else {
                    Vec::new()
                };
                m.handle(now, Input::ToolsDone(results))
            }
            Effect::Delegate(to) => {
                let segment = segments.last().unwrap_or_else(|| unreachable!());
                let last = segment.events.last().map(Event::kind);
                assert_eq!(
                    last,
                    Some("stopRunByDelegate"),
                    "{:?}",
                    kinds(&segment.events)
                );
                assert!(!m.is_stopped());
                let parent_step = m.checkpoint().step_number;
                let extra = world.child_steps[delegation_n % world.child_steps.len()];
                delegation_n += 1;
                let last_child_step = parent_step + extra;
                let results = to
                    .calls()
                    .iter()
                    .map(|d| ToolResult {
                        id: d.tool_call_id.clone(),
                        skill_name: d.expert.key.clone(),
                        tool_name: d.tool_name.clone(),
                        result: vec![MessagePart::text("child says hi")],
                        is_error: false,
                        extra: serde_json::Map::new(),
                    })
                    .collect();
                let run_id = format!("run-{}", segments.len());
                segments.push(Segment {
                    start_step: last_child_step.max(parent_step) + 1,
                    events: Vec::new(),
                });
                m.resume_after_delegation(
                    now,
                    run_id,
                    Resumed {
                        last_step: last_child_step,
                        usage: Usage::default(),
                        results,
                    },
                )
            }
            Effect::Stop => break,
        };
    }
    assert!(m.is_stopped());
    segments
}

fn kinds(events: &[Event]) -> Vec<&'static str> {
    events.iter().map(Event::kind).collect()
}

/// One segment's invariants.
fn check(segment: &Segment, max_steps: u32) {
    let k = kinds(&segment.events);
    assert_eq!(k.first(), Some(&"startRun"), "{k:?}");
    let terminal: Vec<usize> = k
        .iter()
        .enumerate()
        .filter(|(_, kind)| TERMINAL.contains(kind))
        .map(|(i, _)| i)
        .collect();
    assert_eq!(terminal.len(), 1, "not exactly one terminal event: {k:?}");
    assert_eq!(
        terminal[0],
        k.len() - 1,
        "events after the terminal one: {k:?}"
    );
    let mut step = segment.start_step;
    let mut after_continue = false;
    for e in &segment.events {
        let n = e
            .step_number
            .unwrap_or_else(|| panic!("{} without a step", e.kind()));
        if after_continue {
            assert_eq!(n, step + 1, "the step after continueToNextStep: {k:?}");
            step = n;
        } else {
            assert_eq!(n, step, "{} changed the step: {k:?}", e.kind());
        }
        after_continue = e.kind() == "continueToNextStep";
        if let Some(cp) = e.checkpoint() {
            assert_eq!(cp.step_number, n, "{} carries another step", e.kind());
        }
    }
    assert!(
        step <= max_steps.max(segment.start_step),
        "step {step} past maxSteps {max_steps}: {k:?}"
    );
    let last = segment.events.last().unwrap_or_else(|| unreachable!());
    let status = last.checkpoint().map(|c| c.status);
    let expected = match last.kind() {
        "completeRun" => CheckpointStatus::Completed,
        "stopRunByError" => CheckpointStatus::StoppedByError,
        "stopRunByExceededMaxSteps" => CheckpointStatus::StoppedByExceededMaxSteps,
        "stopRunByInteractiveTool" => CheckpointStatus::StoppedByInteractiveTool,
        _ => CheckpointStatus::StoppedByDelegate,
    };
    assert_eq!(status, Some(expected), "{k:?}");
    if expected == CheckpointStatus::StoppedByError {
        assert!(last.checkpoint().and_then(|c| c.error.as_ref()).is_some());
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    #[test]
    fn any_model_tool_and_delegation_outcomes_end_every_run_once(
        world in world(),
        max_steps in 1u32..8,
        max_retries in 0u32..4,
    ) {
        let segments = play(&world, max_steps, max_retries);
        let n = segments.len();
        for (i, segment) in segments.iter().enumerate() {
            check(segment, max_steps);
            if i + 1 < n {
                prop_assert_eq!(segment.events.last().map(Event::kind), Some("stopRunByDelegate"));
            } else {
                prop_assert_ne!(segment.events.last().map(Event::kind), Some("stopRunByDelegate"));
            }
        }
    }
}
