//! What "the same history" means: the one normalisation of events, checkpoints and tool results
//! that replay compares, and the per-run comparison of a recording with its replay.
//!
//! Ids (of events, messages, parts, checkpoints and runs), timestamps, usage and the instruction
//! message (it holds the date and the workspace path, and Perstack's template differs from this
//! engine's) are left out; everything else that describes a state change is kept: the event
//! type, Expert and step, the tool calls and their results, retry reasons, result texts, errors,
//! and each carried checkpoint's status, step and messages (the results inside one tool message
//! in call-id order). Runs are compared one by one, since
//! children interleave differently from one execution to the next: a run is known by its Expert,
//! the delegate call that started it (tool-call ids are the model's, so a replay reproduces
//! them) and its place among that lineage's segments. A run the recording leaves unfinished (a
//! crash) is compared up to its last recorded event. Talks to nothing; `replay` calls it.

use serde_json::{Map, Value, json};

use crate::schema::{Checkpoint, Event, EventPayload, Message, MessagePart, ToolCall, ToolResult};

/// Whether `e` is one of the 17 state events (not streaming, not runtime).
pub(crate) fn is_state(e: &Event) -> bool {
    e.is_run_event()
        && !matches!(
            e.payload,
            EventPayload::StartStreamingReasoning(_)
                | EventPayload::StreamReasoning(_)
                | EventPayload::CompleteStreamingReasoning(_)
                | EventPayload::StartStreamingRunResult(_)
                | EventPayload::StreamRunResult(_)
                | EventPayload::CompleteStreamingRunResult(_)
        )
}

/// The comparable form of a state event.
pub(crate) fn normalise(e: &Event) -> Value {
    let mut out = Map::new();
    out.insert("type".into(), json!(e.kind()));
    out.insert("expertKey".into(), json!(e.expert_key));
    out.insert("stepNumber".into(), json!(e.step_number));
    let mut put = |k: &str, v: Value| {
        out.insert(k.into(), v);
    };
    match &e.payload {
        EventPayload::StartRun(p) => {
            put("status", json!(p.initial_checkpoint.status.as_str()));
            put("inputMessages", messages(&p.input_messages));
        }
        EventPayload::CallTools(p) => {
            put("toolCalls", calls(&p.tool_calls));
            put("newMessage", messages(std::slice::from_ref(&p.new_message)));
        }
        EventPayload::CallDelegate(p) => {
            put("toolCalls", calls(&p.tool_calls));
            put("newMessage", messages(std::slice::from_ref(&p.new_message)));
        }
        EventPayload::CallInteractiveTool(p) => {
            put("toolCall", call(&p.tool_call));
            put("newMessage", messages(std::slice::from_ref(&p.new_message)));
        }
        EventPayload::ResolveToolResults(p) => {
            put(
                "toolResults",
                json!(p.tool_results.iter().map(tool_result).collect::<Vec<_>>()),
            );
        }
        EventPayload::AttemptCompletion(p) => put("toolResult", tool_result(&p.tool_result)),
        EventPayload::Retry(p) => {
            put("reason", json!(p.reason));
            put("newMessages", messages(&p.new_messages));
        }
        EventPayload::CompleteRun(p) => put("text", json!(p.text)),
        EventPayload::StopRunByError(p) => {
            put(
                "error",
                json!({"name": p.error.name, "message": p.error.message}),
            );
        }
        _ => {}
    }
    if let Some(cp) = e.checkpoint() {
        out.insert("checkpoint".into(), checkpoint(cp));
    }
    Value::Object(out)
}

/// The comparable form of a checkpoint: status, step, Expert, messages.
pub(crate) fn checkpoint(cp: &Checkpoint) -> Value {
    json!({
        "status": cp.status.as_str(),
        "stepNumber": cp.step_number,
        "expertKey": cp.expert.key,
        "messages": messages(&cp.messages),
    })
}

/// The comparable form of a tool result: skill, tool and contents without part ids.
pub(crate) fn tool_result(r: &ToolResult) -> Value {
    json!({
        "toolCallId": r.id,
        "skillName": r.skill_name,
        "toolName": r.tool_name,
        "result": parts(&r.result),
    })
}

fn calls(cs: &[ToolCall]) -> Value {
    Value::Array(cs.iter().map(call).collect())
}

fn call(c: &ToolCall) -> Value {
    json!({"id": c.id, "skillName": c.skill_name, "toolName": c.tool_name, "args": c.args})
}

/// Messages without ids; the instruction message is left out (see the module docs).
fn messages(ms: &[Message]) -> Value {
    Value::Array(
        ms.iter()
            .filter(|m| !matches!(m, Message::InstructionMessage(_)))
            .map(|m| {
                let kind = match m {
                    Message::InstructionMessage(_) => "instructionMessage",
                    Message::UserMessage(_) => "userMessage",
                    Message::ExpertMessage(_) => "expertMessage",
                    Message::ToolMessage(_) => "toolMessage",
                };
                let mut contents = parts(&m.body().contents);
                // Results in one tool message answer distinct calls: their order carries no
                // state (and Perstack's delegation results come in another order than ours).
                if let (Message::ToolMessage(_), Value::Array(items)) = (m, &mut contents) {
                    items.sort_by(|a, b| {
                        a.get("toolCallId")
                            .and_then(Value::as_str)
                            .cmp(&b.get("toolCallId").and_then(Value::as_str))
                    });
                }
                json!({"type": kind, "contents": contents})
            })
            .collect(),
    )
}

fn parts(ps: &[MessagePart]) -> Value {
    Value::Array(ps.iter().map(part).collect())
}

fn part(p: &MessagePart) -> Value {
    match p {
        MessagePart::TextPart(t) => json!({"text": t.text}),
        MessagePart::ThinkingPart(t) => json!({"thinking": t.thinking}),
        MessagePart::ToolCallPart(c) => {
            json!({"toolCallId": c.tool_call_id, "toolName": c.tool_name, "args": c.args})
        }
        MessagePart::ToolResultPart(r) => json!({
            "toolCallId": r.tool_call_id,
            "toolName": r.tool_name,
            "contents": parts(&r.contents),
        }),
        other => {
            let mut v = serde_json::to_value(other).unwrap_or(Value::Null);
            if let Value::Object(o) = &mut v {
                o.remove("id");
            }
            v
        }
    }
}

/// The state events of one run id, in order.
#[derive(Debug)]
pub(crate) struct Segment<'a> {
    /// The run id.
    pub run_id: String,
    /// The Expert.
    pub expert: String,
    /// The delegate call that started the lineage (empty for the coordinator).
    pub lineage: String,
    /// The place of this segment among its lineage's.
    pub index: usize,
    /// Its state events.
    pub events: Vec<&'a Event>,
}

impl Segment<'_> {
    /// How a run is named in messages.
    pub(crate) fn describe(&self) -> String {
        let by = if self.lineage.is_empty() {
            "the coordinator".to_owned()
        } else {
            format!("delegated by call {}", self.lineage)
        };
        format!(
            "run {} (Expert \"{}\", {by}, segment {})",
            self.run_id,
            self.expert,
            self.index + 1
        )
    }
}

/// Group state events by run id, in order of first appearance.
pub(crate) fn segments<'a>(events: impl IntoIterator<Item = &'a Event>) -> Vec<Segment<'a>> {
    let mut out: Vec<Segment<'a>> = Vec::new();
    for e in events.into_iter().filter(|e| is_state(e)) {
        if let Some(seg) = out.iter_mut().find(|s| s.run_id == e.run_id) {
            seg.events.push(e);
            continue;
        }
        let expert = e.expert_key.clone().unwrap_or_default();
        let lineage = match &e.payload {
            EventPayload::StartRun(p) => p
                .initial_checkpoint
                .delegated_by
                .as_ref()
                .map(|d| d.tool_call_id.clone())
                .unwrap_or_default(),
            _ => String::new(),
        };
        let index = out
            .iter()
            .filter(|s| s.expert == expert && s.lineage == lineage)
            .count();
        out.push(Segment {
            run_id: e.run_id.clone(),
            expert,
            lineage,
            index,
            events: vec![e],
        });
    }
    out
}

/// The first place where a replay differs from its recording.
#[derive(Debug)]
pub(crate) struct Divergence {
    /// The recorded run, described (or the replayed one when the recording lacks it).
    pub run: String,
    /// The step, when known.
    pub step: Option<u32>,
    /// What differs: `state event` or `stored checkpoints`.
    pub what: &'static str,
    /// The recorded version (`None`: the recording has nothing there).
    pub expected: Option<Value>,
    /// The replayed version (`None`: the replay has nothing there).
    pub replayed: Option<Value>,
}

/// What was compared, when everything matched.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Identical {
    /// Run segments.
    pub runs: usize,
    /// State events.
    pub events: usize,
    /// Stored checkpoints.
    pub checkpoints: usize,
    /// Recorded runs that end mid-run (compared up to their last recorded event).
    pub unfinished: usize,
}

/// Compare per run: the state events one by one, then the stored checkpoints' statuses.
pub(crate) fn compare(
    recorded: &[Event],
    recorded_checkpoints: &[Checkpoint],
    replayed: &[Event],
    replayed_checkpoints: &[Checkpoint],
) -> Result<Identical, Box<Divergence>> {
    let theirs = segments(recorded);
    let ours = segments(replayed);
    let mut events = 0;
    let mut checkpoints = 0;
    let mut unfinished = 0;
    for rec in &theirs {
        let rep = ours
            .iter()
            .find(|s| s.expert == rec.expert && s.lineage == rec.lineage && s.index == rec.index);
        let mut rep_events: Vec<&Event> = rep.map(|s| s.events.clone()).unwrap_or_default();
        // A recording cut mid-run (a crash, a job still running) says nothing about what came
        // after its last event: the replay is compared up to there.
        let cut = !rec.events.last().is_some_and(|e| ends_segment(e));
        if cut {
            unfinished += 1;
            rep_events.truncate(rec.events.len());
        }
        for i in 0..rec.events.len().max(rep_events.len()) {
            let a = rec.events.get(i).map(|e| normalise(e));
            let b = rep_events.get(i).map(|e| normalise(e));
            if a != b {
                let step = rec
                    .events
                    .get(i)
                    .or(rep_events.get(i))
                    .and_then(|e| e.step_number);
                return Err(Box::new(Divergence {
                    run: rec.describe(),
                    step,
                    what: "state event",
                    expected: a,
                    replayed: b,
                }));
            }
            events += 1;
        }
        let statuses = |cps: &[Checkpoint], run: Option<&str>| -> Vec<Value> {
            cps.iter()
                .filter(|c| Some(c.run_id.as_str()) == run)
                .map(|c| json!(format!("{}@{}", c.status.as_str(), c.step_number)))
                .collect()
        };
        let a = statuses(recorded_checkpoints, Some(&rec.run_id));
        let mut b = statuses(replayed_checkpoints, rep.map(|s| s.run_id.as_str()));
        if cut {
            b.truncate(a.len());
        }
        if a != b {
            return Err(Box::new(Divergence {
                run: rec.describe(),
                step: None,
                what: "stored checkpoints (status@step)",
                expected: Some(Value::Array(a)),
                replayed: Some(Value::Array(b)),
            }));
        }
        checkpoints += a.len();
    }
    if let Some(extra) = ours.iter().filter(|_| unfinished == 0).find(|s| {
        !theirs
            .iter()
            .any(|r| r.expert == s.expert && r.lineage == s.lineage && r.index == s.index)
    }) {
        return Err(Box::new(Divergence {
            run: format!("replayed {}", extra.describe()),
            step: extra.events.first().and_then(|e| e.step_number),
            what: "state event",
            expected: None,
            replayed: extra.events.first().map(|e| normalise(e)),
        }));
    }
    Ok(Identical {
        runs: theirs.len(),
        events,
        checkpoints,
        unfinished,
    })
}

/// Whether `e` ends its run segment (a stop or the completion).
fn ends_segment(e: &Event) -> bool {
    matches!(
        e.payload,
        EventPayload::StopRunByInteractiveTool(_)
            | EventPayload::StopRunByDelegate(_)
            | EventPayload::StopRunByExceededMaxSteps(_)
            | EventPayload::StopRunByError(_)
            | EventPayload::CompleteRun(_)
    )
}

#[cfg(test)]
mod tests {
    use serde_json::Value;

    use super::{compare, normalise};
    use crate::schema::Event;

    const S05: &str =
        include_str!("../../tests/fixtures/perstack-traces/s05-parallel-delegation/events.jsonl");

    fn events(edit: impl Fn(&mut Value)) -> Vec<Event> {
        S05.lines()
            .map(|l| {
                let mut v: Value = serde_json::from_str(l).unwrap();
                edit(&mut v);
                serde_json::from_value(v).unwrap()
            })
            .collect()
    }

    /// Every id the engine makes (of events, runs, checkpoints, messages and parts: objects
    /// with a `type` or a `stepNumber`) and every timestamp changed; tool-call ids (the model's)
    /// are kept.
    fn rename_ids(v: &mut Value) {
        match v {
            Value::Object(o) => {
                let own = o.contains_key("type") || o.contains_key("stepNumber");
                for (k, x) in o.iter_mut() {
                    match (k.as_str(), &*x) {
                        ("id", Value::String(s)) if own => *x = Value::from(format!("other-{s}")),
                        ("runId" | "checkpointId", Value::String(s)) => {
                            *x = Value::from(format!("other-{s}"));
                        }
                        ("timestamp" | "startedAt" | "finishedAt", Value::Number(_)) => {
                            *x = Value::from(1);
                        }
                        _ => rename_ids(x),
                    }
                }
            }
            Value::Array(a) => a.iter_mut().for_each(rename_ids),
            _ => {}
        }
    }

    #[test]
    fn ids_and_timestamps_are_not_compared_but_a_tool_result_text_is() {
        let a = events(|_| {});
        let b = events(rename_ids);
        assert!(a.iter().zip(&b).all(|(x, y)| normalise(x) == normalise(y)));
        let same = compare(&a, &[], &b, &[]).unwrap();
        assert_eq!(same.runs, 4);
        let c = events(|v| {
            if v["type"] == "resolveToolResults" {
                v["toolResults"][0]["result"][0]["text"] = Value::from("edited");
            }
        });
        let d = compare(&a, &[], &c, &[]).unwrap_err();
        assert_eq!(d.step, Some(2));
        assert!(d.run.contains("helper-a"), "{}", d.run);
    }

    #[test]
    fn children_are_matched_by_the_delegate_call_whatever_order_they_ran_in() {
        let a = events(|_| {});
        let mut b = a.clone();
        // helper-b's events first, then the rest: another interleaving of the same runs.
        b.sort_by_key(|e| e.expert_key.as_deref() != Some("@org/helper-b"));
        assert!(compare(&a, &[], &b, &[]).is_ok());
    }
}
