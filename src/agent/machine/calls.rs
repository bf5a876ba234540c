//! CallingTool, CallingDelegate, CallingInteractiveTool and ResolvingToolResult: one turn's
//! tool calls, from the sorted `Plan` to the tool message.
//!
//! Owns how a turn's calls are split (skill calls run now, delegates stop the run with
//! `stopRunByDelegate`, interactive calls with `stopRunByInteractiveTool`), the
//! `attemptCompletion` path (other calls in the same turn get a "not executed" result; open
//! todos send the result back to the model, otherwise the run-result generation follows), and
//! the `resolveToolResults` / `finishToolCall` events. It never executes a call: the run actor
//! does, for [`Effect::CallTools`] and [`Effect::Delegate`]. Resolved results end the step
//! through `step`.

use serde_json::{Map, Value, json};

use super::{Effect, Machine, Output, Phase};
use crate::agent::delegation::Delegation;
use crate::agent::failure::RunFailure;
use crate::agent::tools::{ATTEMPT_COMPLETION, BASE_SKILL, ToolOwner};
use crate::schema::{
    AttemptCompletion, CallDelegate, CallInteractiveTool, CheckpointStatus, DelegateTo, Event,
    EventPayload, Message, MessagePart, NewMessages, ResolveToolResults, StopRun, ToolCall,
    ToolResult, Usage,
};

/// The calls of one turn, sorted as Perstack sorts them.
#[derive(Debug, Clone, Default)]
pub(super) struct Plan {
    mcp: Vec<ToolCall>,
    delegates: Vec<ToolCall>,
    interactive: Vec<ToolCall>,
}

impl Machine {
    pub(super) fn plan(&self, calls: &[ToolCall]) -> Plan {
        let mut plan = Plan::default();
        for c in calls {
            match self.tools.owner(&c.tool_name) {
                Some(ToolOwner::Delegate(_)) => plan.delegates.push(c.clone()),
                Some(ToolOwner::Interactive(_)) => plan.interactive.push(c.clone()),
                Some(ToolOwner::Skill(_)) | None => plan.mcp.push(c.clone()),
            }
        }
        plan
    }

    // CallingTool
    pub(super) fn run_plan(&mut self, _now: u64, events: Vec<Event>, plan: Plan) -> Output {
        if let Some(completion) = plan
            .mcp
            .iter()
            .find(|c| c.tool_name == ATTEMPT_COMPLETION && c.skill_name == BASE_SKILL)
            .cloned()
        {
            // Perstack executes only the completion call and leaves the others without results
            // (an invalid transcript); they get a "not executed" result here instead.
            let skipped = plan
                .mcp
                .iter()
                .chain(&plan.delegates)
                .chain(&plan.interactive)
                .filter(|c| c.id != completion.id)
                .map(|c| {
                    ToolResult::new(
                        c,
                        c.skill_name.clone(),
                        vec![MessagePart::text(
                            json!({"error":"NotExecuted","message":format!("Tool {} was not executed because attemptCompletion was called in the same turn.", c.tool_name)}).to_string(),
                        )],
                    )
                })
                .collect();
            self.phase = Phase::CallingCompletion { skipped };
            return Output {
                events,
                effect: Effect::CallTools(vec![completion]),
            };
        }
        if plan.mcp.is_empty() {
            let phase_plan = plan.clone();
            self.phase = Phase::CallingTools(phase_plan);
            return self.on_tool_results(_now, plan, Vec::new()).prepend(events);
        }
        let calls = plan.mcp.clone();
        self.phase = Phase::CallingTools(plan);
        Output {
            events,
            effect: Effect::CallTools(calls),
        }
    }

    pub(super) fn on_completion_result(
        &mut self,
        now: u64,
        skipped: Vec<ToolResult>,
        results: Vec<ToolResult>,
    ) -> Output {
        let Some(result) = results.into_iter().next() else {
            return self.stop_by_error(
                now,
                Vec::new(),
                RunFailure::Engine("attemptCompletion returned no result".into()),
            );
        };
        let remaining = serde_json::from_str::<Value>(&result.text())
            .ok()
            .and_then(|v| {
                v.get("remainingTodos")
                    .and_then(Value::as_array)
                    .map(|a| !a.is_empty())
            })
            .unwrap_or(false);
        if remaining {
            let mut all = skipped;
            all.push(result);
            let events = vec![self.event(
                now,
                EventPayload::ResolveToolResults(ResolveToolResults {
                    tool_results: all.clone(),
                    extra: Map::new(),
                }),
            )];
            self.step.tool_results = Some(all.clone());
            return self.resolve(now, events, all);
        }
        let last_text = self
            .checkpoint
            .messages
            .iter()
            .rev()
            .find(|m| m.is_expert())
            .and_then(|m| m.first_text())
            .filter(|t| !t.trim().is_empty())
            .map(str::to_owned);
        let mut all = skipped.clone();
        all.push(result.clone());
        self.step.tool_results = Some(all.clone());
        if let Some(text) = last_text {
            let tool = Message::tool(&all);
            let expert = Message::expert(vec![MessagePart::text(text.clone())]);
            return self.complete(now, vec![tool, expert], text, Usage::default());
        }
        let events = vec![self.event(
            now,
            EventPayload::AttemptCompletion(AttemptCompletion {
                tool_result: result.clone(),
                extra: Map::new(),
            }),
        )];
        let mut messages = self.checkpoint.messages.clone();
        messages.push(Message::tool(&all));
        self.phase = Phase::GeneratingRunResult {
            completion: result,
            skipped,
        };
        Output {
            events,
            effect: Effect::Generate {
                messages,
                with_tools: false,
                retry_count: 0,
                retry_after: None,
            },
        }
    }

    pub(super) fn on_tool_results(
        &mut self,
        now: u64,
        plan: Plan,
        results: Vec<ToolResult>,
    ) -> Output {
        let mut events = Vec::new();
        if !plan.delegates.is_empty() {
            let last = self
                .checkpoint
                .messages
                .last()
                .cloned()
                .unwrap_or_else(|| Message::expert(Vec::new()));
            events.push(self.event(
                now,
                EventPayload::CallDelegate(CallDelegate {
                    new_message: last,
                    tool_calls: plan.delegates.clone(),
                    usage: self.step.usage,
                    extra: Map::new(),
                }),
            ));
            let mut delegate_to = Vec::new();
            let mut bad = Vec::new();
            for c in &plan.delegates {
                let query = c.args.get("query").and_then(Value::as_str);
                match (self.tools.owner(&c.tool_name), query) {
                    (Some(ToolOwner::Delegate(expert)), Some(q)) => delegate_to.push(DelegateTo {
                        expert: expert.clone(),
                        tool_call_id: c.id.clone(),
                        tool_name: c.tool_name.clone(),
                        query: q.to_string(),
                    }),
                    _ => bad.push(ToolResult::new(
                        c,
                        c.skill_name.clone(),
                        vec![MessagePart::text(
                            json!({"error":"InvalidArguments","message":"A delegate call needs a string `query` argument."})
                                .to_string(),
                        )],
                    )),
                }
            }
            let mut partial = self
                .checkpoint
                .partial_tool_results
                .clone()
                .unwrap_or_default();
            partial.extend(results);
            partial.extend(bad);
            let pending: Vec<ToolCall> = plan
                .delegates
                .iter()
                .chain(&plan.interactive)
                .cloned()
                .collect();
            self.checkpoint.status = CheckpointStatus::StoppedByDelegate;
            self.checkpoint.delegate_to = Some(delegate_to.clone());
            self.checkpoint.pending_tool_calls = if plan.interactive.is_empty() {
                None
            } else {
                Some(plan.interactive)
            };
            self.checkpoint.partial_tool_results = Some(partial.clone());
            self.step.pending_tool_calls = Some(pending);
            self.step.partial_tool_results = Some(partial);
            self.step.finished_at = Some(now);
            events.push(self.event(
                now,
                EventPayload::StopRunByDelegate(Box::new(StopRun {
                    checkpoint: self.checkpoint.clone(),
                    step: self.step.clone(),
                    extra: Map::new(),
                })),
            ));
            // Every delegate call may have been malformed: then the delegation is done at once
            // and the run resumes without children.
            self.phase = Phase::Delegating;
            return Output {
                events,
                effect: Effect::Delegate(Box::new(Delegation::new(delegate_to, &self.checkpoint))),
            };
        }
        if let Some(first) = plan.interactive.first().cloned() {
            let last = self
                .checkpoint
                .messages
                .iter()
                .rev()
                .find(|m| m.is_expert())
                .cloned()
                .unwrap_or_else(|| Message::expert(Vec::new()));
            let mut partial = self
                .checkpoint
                .partial_tool_results
                .clone()
                .unwrap_or_default();
            partial.extend(results);
            events.push(self.event(
                now,
                EventPayload::CallInteractiveTool(CallInteractiveTool {
                    new_message: last,
                    tool_call: first,
                    usage: self.step.usage,
                    extra: Map::new(),
                }),
            ));
            self.checkpoint.status = CheckpointStatus::StoppedByInteractiveTool;
            self.checkpoint.pending_tool_calls = Some(plan.interactive.clone());
            self.checkpoint.partial_tool_results = Some(partial.clone());
            self.step.pending_tool_calls = Some(plan.interactive);
            self.step.partial_tool_results = Some(partial);
            self.step.finished_at = Some(now);
            events.push(self.event(
                now,
                EventPayload::StopRunByInteractiveTool(Box::new(StopRun {
                    checkpoint: self.checkpoint.clone(),
                    step: self.step.clone(),
                    extra: Map::new(),
                })),
            ));
            self.phase = Phase::Stopped;
            return Output {
                events,
                effect: Effect::Stop,
            };
        }
        let mut all = self
            .checkpoint
            .partial_tool_results
            .take()
            .unwrap_or_default();
        all.extend(results);
        self.checkpoint.pending_tool_calls = None;
        events.push(self.event(
            now,
            EventPayload::ResolveToolResults(ResolveToolResults {
                tool_results: all.clone(),
                extra: Map::new(),
            }),
        ));
        self.step.tool_results = Some(all.clone());
        self.resolve(now, events, all)
    }

    // ResolvingToolResult
    fn resolve(&mut self, now: u64, mut events: Vec<Event>, results: Vec<ToolResult>) -> Output {
        let msg = Message::tool(&results);
        events.push(self.event(
            now,
            EventPayload::FinishToolCall(NewMessages {
                new_messages: vec![msg.clone()],
                extra: Map::new(),
            }),
        ));
        self.checkpoint.messages.push(msg.clone());
        self.step.new_messages.push(msg);
        self.finish_step(now, events)
    }
}
