//! Unit tests of the pure machine: event sequences, step numbers and checkpoint statuses for
//! the recorded Perstack scenarios, driven without any I/O.

use serde_json::json;

use super::*;
use crate::llm::{FinishReason, GeneratedToolCall, Generation, GenerationError};
use crate::schema::{CheckpointStatus, ExpertRef, MessagePart, ToolCall, ToolResult, Usage};

fn expert(key: &str) -> ExpertRef {
    ExpertRef {
        key: key.into(),
        name: key.into(),
        version: "1.0.0".into(),
    }
}

fn setting(max_steps: u32, max_retries: u32) -> MachineSetting {
    MachineSetting {
        job_id: "job".into(),
        run_id: "run1".into(),
        expert: expert("coord"),
        max_steps,
        max_retries,
        context_window: Some(200_000),
    }
}

fn index() -> ToolIndex {
    let mut t = ToolIndex::new();
    for name in ["attemptCompletion", "todo", "healthCheck", "readTextFile"] {
        t.insert(name, ToolOwner::Skill(BASE_SKILL.into()));
    }
    t.insert("helper-a", ToolOwner::Delegate(expert("helper-a")));
    t.insert("helper-b", ToolOwner::Delegate(expert("@org/helper-b")));
    t.insert("askUser", ToolOwner::Interactive("ui".into()));
    t
}

fn usage() -> Usage {
    Usage {
        input_tokens: 100,
        output_tokens: 10,
        reasoning_tokens: 0,
        total_tokens: 110,
        cached_input_tokens: 5,
    }
}

fn text(t: &str) -> Generation {
    Generation {
        thinking: vec![],
        text: t.into(),
        tool_calls: vec![],
        finish_reason: FinishReason::Stop,
        usage: usage(),
    }
}

fn calls(names: &[(&str, serde_json::Value)]) -> Generation {
    Generation {
        thinking: vec![],
        text: String::new(),
        tool_calls: names
            .iter()
            .enumerate()
            .map(|(i, (n, a))| GeneratedToolCall {
                id: format!("call_{n}_{i}"),
                name: (*n).into(),
                args: a.clone(),
            })
            .collect(),
        finish_reason: FinishReason::ToolCalls,
        usage: usage(),
    }
}

/// Drives a machine: answers generations from `gens` and tool calls with `tool_answer`.
struct Driver {
    m: Machine,
    log: Vec<String>,
}

impl Driver {
    fn new(max_steps: u32, max_retries: u32) -> Self {
        let s = setting(max_steps, max_retries);
        let cp = Machine::fresh_checkpoint(&s, 1);
        Driver {
            m: Machine::new(s, index(), cp),
            log: Vec::new(),
        }
    }

    fn record(&mut self, out: &Output) {
        for e in &out.events {
            self.log
                .push(format!("{}@{}", e.kind(), e.step_number.unwrap_or(0)));
        }
    }

    /// Runs until Stop or Delegate; returns the last effect.
    fn run(
        &mut self,
        mut out: Output,
        gens: &mut Vec<Result<Generation, GenerationError>>,
        todos: &mut Vec<bool>,
    ) -> Effect {
        loop {
            self.record(&out);
            match out.effect {
                Effect::Generate { .. } => {
                    let g = gens.remove(0);
                    out = self.m.handle(1, Input::Generated(g));
                }
                Effect::CallTools(calls) => {
                    let results = calls.iter().map(|c| answer(c, todos)).collect();
                    out = self.m.handle(1, Input::ToolsDone(results));
                }
                other => return other,
            }
        }
    }
}

fn answer(c: &ToolCall, todos: &mut Vec<bool>) -> ToolResult {
    let text = match c.tool_name.as_str() {
        "todo" => {
            if let Some(new) = c.args.get("newTodos").and_then(|v| v.as_array()) {
                todos.extend(new.iter().map(|_| false));
            }
            if let Some(done) = c.args.get("completedTodos").and_then(|v| v.as_array()) {
                for d in done {
                    todos[usize::try_from(d.as_u64().unwrap()).unwrap()] = true;
                }
            }
            "{}".to_string()
        }
        "attemptCompletion" => {
            if todos.iter().any(|d| !d) {
                json!({"remainingTodos":[{"id":0,"title":"x","completed":false}]}).to_string()
            } else {
                "{}".into()
            }
        }
        _ => "{\"status\":\"ok\"}".into(),
    };
    ToolResult::new(c, c.skill_name.clone(), vec![MessagePart::text(text)])
}

fn start(d: &mut Driver) -> Output {
    d.m.start(
        0,
        Start::Query("please do the thing".into()),
        "be good".into(),
    )
}

#[test]
fn s01_attempt_completion_without_text_generates_the_run_result() {
    let mut d = Driver::new(100, 0);
    let out = start(&mut d);
    let mut gens = vec![
        Ok(calls(&[("attemptCompletion", json!({}))])),
        Ok(text("Final answer.")),
    ];
    assert!(matches!(d.run(out, &mut gens, &mut vec![]), Effect::Stop));
    assert_eq!(
        d.log,
        [
            "startRun@1",
            "startGeneration@1",
            "callTools@1",
            "attemptCompletion@1",
            "completeRun@1"
        ]
    );
    let cp = d.m.checkpoint();
    assert_eq!(cp.status, CheckpointStatus::Completed);
    assert_eq!(cp.usage.input_tokens, 200);
    assert_eq!(
        cp.messages.len(),
        5,
        "instruction, user, expert(call), tool, expert(text)"
    );
    assert_eq!(cp.context_window_usage, Some(0.00115));
}

#[test]
fn s02_text_only_is_an_implicit_completion() {
    let mut d = Driver::new(100, 0);
    let out = start(&mut d);
    d.run(out, &mut vec![Ok(text("Just text."))], &mut vec![]);
    assert_eq!(d.log, ["startRun@1", "startGeneration@1", "completeRun@1"]);
}

#[test]
fn s03_text_with_attempt_completion_completes_without_another_generation() {
    let mut d = Driver::new(100, 0);
    let out = start(&mut d);
    let mut with_text = calls(&[("attemptCompletion", json!({}))]);
    with_text.text = "Summary text.".into();
    let mut gens = vec![
        Ok(calls(&[
            ("healthCheck", json!({})),
            ("readTextFile", json!({"path":"nope.txt"})),
        ])),
        Ok(with_text),
    ];
    d.run(out, &mut gens, &mut vec![]);
    assert_eq!(
        d.log,
        [
            "startRun@1",
            "startGeneration@1",
            "callTools@1",
            "resolveToolResults@1",
            "finishToolCall@1",
            "continueToNextStep@1",
            "startGeneration@2",
            "callTools@2",
            "completeRun@2"
        ]
    );
    assert!(gens.is_empty());
}

#[test]
fn s09_max_steps_stops_after_the_third_tool_step() {
    let mut d = Driver::new(3, 0);
    let out = start(&mut d);
    let mut gens: Vec<_> = (0..3)
        .map(|_| Ok(calls(&[("healthCheck", json!({}))])))
        .collect();
    d.run(out, &mut gens, &mut vec![]);
    assert_eq!(d.log.last().unwrap(), "stopRunByExceededMaxSteps@3");
    assert_eq!(
        d.log
            .iter()
            .filter(|l| l.starts_with("continueToNextStep"))
            .count(),
        2
    );
    assert_eq!(
        d.m.checkpoint().status,
        CheckpointStatus::StoppedByExceededMaxSteps
    );
}

#[test]
fn s10_empty_generation_is_retried_then_stops_with_max_retries_exceeded() {
    let mut d = Driver::new(100, 1);
    let out = start(&mut d);
    d.run(out, &mut vec![Ok(text("")), Ok(text(""))], &mut vec![]);
    assert_eq!(
        d.log,
        [
            "startRun@1",
            "startGeneration@1",
            "retry@1",
            "continueToNextStep@1",
            "startGeneration@2",
            "stopRunByError@2"
        ]
    );
    let err = d.m.checkpoint().error.clone().unwrap();
    assert_eq!(err.name, "MaxRetriesExceeded");
    assert_eq!(
        err.message,
        "Max retries (1) exceeded: No tool call or text generated"
    );
}

#[test]
fn s15_attempt_completion_is_refused_while_todos_remain() {
    let mut d = Driver::new(100, 0);
    let out = start(&mut d);
    let mut gens = vec![
        Ok(calls(&[("todo", json!({"newTodos":["a"]}))])),
        Ok(calls(&[("attemptCompletion", json!({}))])),
        Ok(calls(&[("todo", json!({"completedTodos":[0]}))])),
        Ok(calls(&[("attemptCompletion", json!({}))])),
        Ok(text("Done.")),
    ];
    d.run(out, &mut gens, &mut vec![]);
    assert_eq!(
        d.log
            .iter()
            .filter(|l| l.starts_with("resolveToolResults"))
            .count(),
        3
    );
    assert!(d.log.contains(&"attemptCompletion@4".to_string()));
    assert_eq!(d.log.last().unwrap(), "completeRun@4");
}

#[test]
fn parallel_delegation_stops_then_resumes_as_a_new_segment_after_the_children() {
    let mut d = Driver::new(100, 0);
    let out = start(&mut d);
    let mut gens = vec![Ok(calls(&[
        ("helper-a", json!({"query":"do A"})),
        ("helper-b", json!({"query":"do B"})),
    ]))];
    let Effect::Delegate(delegation) = d.run(out, &mut gens, &mut vec![]) else {
        panic!("expected delegation")
    };
    let to = delegation.calls();
    assert_eq!(to.len(), 2);
    assert_eq!(to[1].expert.key, "@org/helper-b");
    assert_eq!(d.m.checkpoint().status, CheckpointStatus::StoppedByDelegate);
    let results: Vec<ToolResult> = to
        .iter()
        .map(|t| ToolResult {
            id: t.tool_call_id.clone(),
            skill_name: format!("delegate/{}", t.expert.key),
            tool_name: t.tool_name.clone(),
            result: vec![MessagePart::text("done")],
            is_error: false,
            extra: Default::default(),
        })
        .collect();
    d.log.clear();
    let out = d.m.resume_after_delegation(
        2,
        "run2".into(),
        Resumed {
            last_step: 3,
            usage: usage(),
            results,
        },
    );
    let mut gens = vec![Ok(text("All done."))];
    d.run(out, &mut gens, &mut vec![]);
    assert_eq!(
        d.log,
        [
            "startRun@4",
            "finishAllToolCalls@4",
            "continueToNextStep@4",
            "startGeneration@5",
            "completeRun@5"
        ]
    );
    let cp = d.m.checkpoint();
    assert_eq!(cp.run_id, "run2");
    assert!(cp.delegate_to.is_none());
    assert_eq!(
        cp.usage.input_tokens, 300,
        "parent + children + final generation"
    );
}

#[test]
fn a_mixed_turn_runs_tools_then_delegates_then_stops_for_the_interactive_call() {
    let mut d = Driver::new(100, 0);
    let out = start(&mut d);
    let mut gens = vec![Ok(calls(&[
        ("askUser", json!({})),
        ("helper-a", json!({"query":"q"})),
        ("healthCheck", json!({})),
    ]))];
    let Effect::Delegate(delegation) = d.run(out, &mut gens, &mut vec![]) else {
        panic!()
    };
    let to = delegation.calls();
    let cp = d.m.checkpoint();
    assert_eq!(
        cp.pending_tool_calls.as_ref().unwrap()[0].tool_name,
        "askUser"
    );
    assert_eq!(
        cp.partial_tool_results.as_ref().unwrap()[0].tool_name,
        "healthCheck"
    );
    let r = ToolResult {
        id: to[0].tool_call_id.clone(),
        skill_name: "delegate/helper-a".into(),
        tool_name: "helper-a".into(),
        result: vec![MessagePart::text("A")],
        is_error: false,
        extra: Default::default(),
    };
    d.log.clear();
    let out = d.m.resume_after_delegation(
        2,
        "run2".into(),
        Resumed {
            last_step: 2,
            usage: Usage::default(),
            results: vec![r],
        },
    );
    assert!(matches!(d.run(out, &mut vec![], &mut vec![]), Effect::Stop));
    assert_eq!(
        d.log,
        [
            "startRun@3",
            "resumeToolCalls@3",
            "callInteractiveTool@3",
            "stopRunByInteractiveTool@3"
        ]
    );
    let cp = d.m.checkpoint();
    assert_eq!(cp.status, CheckpointStatus::StoppedByInteractiveTool);
    assert_eq!(cp.partial_tool_results.as_ref().unwrap().len(), 2);
}

#[test]
fn an_unknown_tool_name_is_classified_for_an_error_result_not_a_crash() {
    let mut d = Driver::new(100, 0);
    let out = start(&mut d);
    let out = {
        d.record(&out);
        d.m.handle(
            1,
            Input::Generated(Ok(calls(&[("inventedTool", json!({}))]))),
        )
    };
    let Effect::CallTools(c) = &out.effect else {
        panic!()
    };
    assert_eq!(c[0].tool_name, "inventedTool");
    assert_eq!(c[0].skill_name, "unknown");
}

#[test]
fn a_non_retryable_api_error_stops_the_run_with_its_status() {
    let mut d = Driver::new(100, 5);
    let out = start(&mut d);
    let err = GenerationError {
        name: "APICallError".into(),
        message: "bad".into(),
        status_code: Some(400),
        retryable: false,
        retry_after: None,
    };
    d.run(out, &mut vec![Err(err)], &mut vec![]);
    assert_eq!(d.log.last().unwrap(), "stopRunByError@1");
    assert_eq!(
        d.m.checkpoint().error.as_ref().unwrap().status_code,
        Some(400)
    );
}

#[test]
fn a_retryable_api_error_is_retried_as_a_visible_step() {
    let mut d = Driver::new(100, 2);
    let out = start(&mut d);
    let err = GenerationError {
        name: "APICallError".into(),
        message: "overloaded".into(),
        status_code: Some(529),
        retryable: true,
        retry_after: None,
    };
    d.run(out, &mut vec![Err(err), Ok(text("ok"))], &mut vec![]);
    assert_eq!(
        d.log,
        [
            "startRun@1",
            "startGeneration@1",
            "retry@1",
            "continueToNextStep@1",
            "startGeneration@2",
            "completeRun@2"
        ]
    );
}

#[test]
fn an_unexpected_input_with_multi_byte_text_stops_the_run_without_a_panic() {
    // Waiting for a generation, the machine gets tool results. Their Debug text starts with
    // the call id; with 0, 1 and 2 bytes in front of three-byte characters, byte 80 falls
    // inside a character at least once.
    for pad in 0..3 {
        let mut d = Driver::new(100, 5);
        let _ = start(&mut d);
        let id = format!("{}{}", "x".repeat(pad), "日本語".repeat(20));
        let call = ToolCall::new(id, BASE_SKILL, "todo", json!({}));
        let result = ToolResult::new(&call, BASE_SKILL, vec![MessagePart::text("é")]);
        let out = d.m.handle(1, Input::ToolsDone(vec![result]));
        d.record(&out);
        assert_eq!(d.log.last().unwrap(), "stopRunByError@1");
        let error = d.m.checkpoint().error.clone().unwrap();
        assert_eq!(error.name, "EngineError");
        assert!(
            error
                .message
                .starts_with("unexpected input in this state: ToolsDone"),
            "{}",
            error.message
        );
    }
}

/// A call's arguments are one allocation however many times the call is copied: into the step
/// (`toolCalls`, `pendingToolCalls`), the events and their checkpoints, and the expert
/// message's `toolCallPart`. A delegating run holds all of these while its children run (at
/// the peak of T3, every coordinator does); a one-key `serde_json` map is ~600 bytes.
#[test]
fn a_delegating_turn_keeps_one_copy_of_each_call_s_arguments() {
    use std::sync::Arc;

    use crate::schema::{EventPayload, Message};

    let mut d = Driver::new(100, 0);
    let Effect::Generate { .. } = start(&mut d).effect else {
        panic!("expected a generation")
    };
    let out = d.m.handle(
        1,
        Input::Generated(Ok(calls(&[
            ("helper-a", json!({"query":"do A"})),
            ("helper-b", json!({"query":"do B"})),
        ]))),
    );
    assert!(matches!(out.effect, Effect::Delegate(_)));
    let in_message: Vec<&Arc<serde_json::Value>> =
        d.m.checkpoint()
            .messages
            .iter()
            .filter_map(|m| match m {
                Message::ExpertMessage(b) => Some(b),
                _ => None,
            })
            .flat_map(|b| &b.contents)
            .filter_map(|p| match p {
                MessagePart::ToolCallPart(c) => Some(&c.args),
                _ => None,
            })
            .collect();
    assert_eq!(in_message.len(), 2);
    let mut copies = 0;
    for e in &out.events {
        let calls: Vec<&ToolCall> = match &e.payload {
            EventPayload::CallTools(c) => c.tool_calls.iter().collect(),
            EventPayload::CallDelegate(c) => c.tool_calls.iter().collect(),
            EventPayload::StopRunByDelegate(s) => s
                .step
                .tool_calls
                .iter()
                .chain(&s.step.pending_tool_calls)
                .flatten()
                .collect(),
            _ => Vec::new(),
        };
        for (i, c) in calls.iter().enumerate() {
            assert!(
                Arc::ptr_eq(&c.args, in_message[i % 2]),
                "{} copied the arguments of {}",
                e.kind(),
                c.id
            );
            copies += 1;
        }
    }
    assert_eq!(
        copies, 8,
        "callTools, callDelegate, the step's calls and pending calls"
    );
    // Shared, and serialised as the object itself.
    let call = serde_json::to_value(&d.m.checkpoint().messages[2]).unwrap();
    assert_eq!(call["contents"][0]["args"], json!({"query":"do A"}));
}
