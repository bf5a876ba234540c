//! GeneratingToolCall and GeneratingRunResult: what the machine makes of a model's answer.
//!
//! Owns the reading of a [`Generation`] (tool calls sorted mcp -> delegate -> interactive,
//! text-only answers that complete the run, the length and unknown finish reasons), the
//! retry policy for failed or empty generations (`retry` events up to `max_retries`, then
//! `stopRunByError`), and the expert message built from a generation. It never calls the
//! model itself: the run actor does, and hands back an [`Input::Generated`](super::Input).
//! Tool calls go on to `calls`; a retry ends the step through `step`.

use std::sync::Arc;

use serde_json::{Map, Value, json};

use super::{Machine, Output};
use crate::agent::failure::RunFailure;
use crate::agent::tools::ToolOwner;
use crate::llm::{FinishReason, Generation, GenerationError};
use crate::schema::{
    CallTools, EventPayload, Message, MessagePart, Retry, ThinkingPart, ToolCall, ToolCallPart,
    ToolResult, Usage, id::new_id,
};

impl Machine {
    // GeneratingToolCall
    pub(super) fn on_tool_generation(
        &mut self,
        now: u64,
        r: Result<Generation, GenerationError>,
    ) -> Output {
        let mut g = match r {
            Ok(g) => g,
            Err(e) => return self.generation_failed(now, e, Vec::new()),
        };
        if g.tool_calls.is_empty() {
            if !g.text.trim().is_empty() {
                let msg = Message::expert(expert_parts(&g, &[], &[]));
                return self.complete(now, vec![msg], g.text.clone(), g.usage);
            }
            return self.retry_or_stop(
                now,
                "Error: No tool call or text generated",
                "You must generate a tool call or provide a response. Try again.",
                "No tool call or text generated",
                Vec::new(),
                g.usage,
            );
        }
        match g.finish_reason {
            FinishReason::ToolCalls | FinishReason::Stop => {}
            FinishReason::Length => {
                let first = &g.tool_calls[0];
                let call = ToolCall::new(
                    first.id.clone(),
                    self.tools
                        .skill_name(&first.name)
                        .unwrap_or("unknown")
                        .to_string(),
                    first.name.clone(),
                    first.args.clone(),
                );
                let expert =
                    Message::expert(expert_parts(&g, &[0], std::slice::from_ref(&call.args)));
                let failed = ToolResult::new(
                    &call,
                    call.skill_name.clone(),
                    vec![MessagePart::text(
                        json!({"error":"Error: Tool call generation failed","message":"Generation length exceeded. Try again."})
                            .to_string(),
                    )],
                );
                let tool = Message::tool(std::slice::from_ref(&failed));
                return self.retry_or_stop(
                    now,
                    "Error: Tool call generation failed",
                    "Generation length exceeded. Try again.",
                    "Generation length exceeded",
                    vec![expert, tool],
                    g.usage,
                );
            }
            FinishReason::Other(ref reason) => {
                let reason = reason.clone();
                return self.stop_by_error(
                    now,
                    Vec::new(),
                    RunFailure::UnexpectedFinishReason { reason },
                );
            }
        }
        // Each call's arguments once, shared by its `ToolCall` (in the step, the events and the
        // plan) and its part in the expert message: the generation's own are not needed again.
        let args: Vec<Arc<Value>> = g
            .tool_calls
            .iter_mut()
            .map(|c| Arc::new(std::mem::take(&mut c.args)))
            .collect();
        // Sort mcp -> delegate -> interactive, as Perstack does.
        let mut calls: Vec<ToolCall> = g
            .tool_calls
            .iter()
            .zip(&args)
            .map(|(c, args)| {
                ToolCall::new(
                    c.id.clone(),
                    self.tools
                        .skill_name(&c.name)
                        .unwrap_or("unknown")
                        .to_string(),
                    c.name.clone(),
                    Arc::clone(args),
                )
            })
            .collect();
        calls.sort_by_key(|c| match self.tools.owner(&c.tool_name) {
            Some(ToolOwner::Skill(_)) | None => 0,
            Some(ToolOwner::Delegate(_)) => 1,
            Some(ToolOwner::Interactive(_)) => 2,
        });
        // The message's tool-call parts in the sorted order: for each call, the first
        // generated call with its id.
        let order: Vec<usize> = calls
            .iter()
            .filter_map(|c| g.tool_calls.iter().position(|x| x.id == c.id))
            .collect();
        let msg = Message::expert(expert_parts(&g, &order, &args));
        self.checkpoint.messages.push(msg.clone());
        self.checkpoint.usage += g.usage;
        self.checkpoint.retry_count = Some(0);
        self.update_context_window_usage();
        self.step.new_messages.push(msg.clone());
        self.step.tool_calls = Some(calls.clone());
        self.step.usage += g.usage;
        let events = vec![self.event(
            now,
            EventPayload::CallTools(CallTools {
                new_message: msg,
                tool_calls: calls.clone(),
                usage: g.usage,
                extra: Map::new(),
            }),
        )];
        let plan = self.plan(&calls);
        self.run_plan(now, events, plan)
    }

    // GeneratingRunResult
    pub(super) fn on_run_result(
        &mut self,
        now: u64,
        completion: ToolResult,
        skipped: Vec<ToolResult>,
        r: Result<Generation, GenerationError>,
    ) -> Output {
        let mut all = skipped;
        all.push(completion);
        let tool = Message::tool(&all);
        match r {
            Ok(g) if !g.text.trim().is_empty() => {
                let expert = Message::expert(expert_parts(&g, &[], &[]));
                self.complete(now, vec![tool, expert], g.text.clone(), g.usage)
            }
            Ok(g) => self.retry_or_stop(
                now,
                "Error: No text generated",
                "You must provide your final answer as text. Try again.",
                "No text generated for the run result",
                vec![tool],
                g.usage,
            ),
            Err(e) => self.generation_failed(now, e, vec![tool]),
        }
    }

    fn generation_failed(&mut self, now: u64, e: GenerationError, prefix: Vec<Message>) -> Output {
        let count = self.checkpoint.retry_count.unwrap_or(0);
        if !e.retryable {
            return self.stop_by_error(now, Vec::new(), RunFailure::generation(e));
        }
        if count >= self.setting.max_retries {
            return self.stop_by_error(
                now,
                Vec::new(),
                RunFailure::RetriesExhausted {
                    name: e.name,
                    message: e.message,
                    status_code: e.status_code,
                    max_retries: self.setting.max_retries,
                },
            );
        }
        let reason = json!({"error": e.name, "message": e.message}).to_string();
        self.retry_after = e.retry_after;
        self.retry(now, reason, prefix, Usage::default())
    }

    fn retry_or_stop(
        &mut self,
        now: u64,
        error: &str,
        message: &str,
        short: &str,
        prefix: Vec<Message>,
        usage: Usage,
    ) -> Output {
        let count = self.checkpoint.retry_count.unwrap_or(0);
        if count >= self.setting.max_retries {
            self.checkpoint.usage += usage;
            self.step.usage += usage;
            return self.stop_by_error(
                now,
                Vec::new(),
                RunFailure::MaxRetriesExceeded {
                    what: short.to_owned(),
                    max_retries: self.setting.max_retries,
                },
            );
        }
        let reason = json!({"error": error, "message": message}).to_string();
        self.retry(now, reason, prefix, usage)
    }

    fn retry(
        &mut self,
        now: u64,
        reason: String,
        mut new_messages: Vec<Message>,
        usage: Usage,
    ) -> Output {
        new_messages.push(Message::user(reason.clone()));
        let events = vec![self.event(
            now,
            EventPayload::Retry(Retry {
                reason,
                new_messages: new_messages.clone(),
                tool_calls: None,
                tool_results: None,
                usage,
                extra: Map::new(),
            }),
        )];
        self.checkpoint
            .messages
            .extend(new_messages.iter().cloned());
        self.checkpoint.usage += usage;
        self.checkpoint.retry_count = Some(self.checkpoint.retry_count.unwrap_or(0) + 1);
        self.step.new_messages.extend(new_messages);
        self.step.usage += usage;
        self.finish_step(now, events)
    }
}

/// Thinking parts, then the text part (when non-empty), then a tool-call part for each of
/// `g`'s calls at the positions `calls`, with `args[i]` the arguments of `g.tool_calls[i]`.
fn expert_parts(g: &Generation, calls: &[usize], args: &[Arc<Value>]) -> Vec<MessagePart> {
    // Exactly as many as there are: the message stays in the run's history for its life.
    let n = calls.len();
    let mut parts: Vec<MessagePart> =
        Vec::with_capacity(g.thinking.len() + usize::from(!g.text.is_empty()) + n);
    parts.extend(g.thinking.iter().map(|t| {
        MessagePart::ThinkingPart(ThinkingPart {
            id: new_id(),
            thinking: t.text.clone(),
            signature: t.signature.clone(),
            extra: Map::new(),
        })
    }));
    if !g.text.is_empty() {
        parts.push(MessagePart::text(g.text.clone()));
    }
    parts.extend(calls.iter().filter_map(|&i| {
        let c = g.tool_calls.get(i)?;
        Some(MessagePart::ToolCallPart(ToolCallPart {
            id: new_id(),
            tool_call_id: c.id.clone(),
            tool_name: c.name.clone(),
            args: Arc::clone(args.get(i)?),
            extra: Map::new(),
        }))
    }));
    parts
}
