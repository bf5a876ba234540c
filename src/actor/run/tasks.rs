//! Work a run does off its mailbox: one model call (streaming events as it goes) and one batch
//! of tool calls. Each task ends with a tell back to the run actor; both watch the job's
//! cancellation token. Each runs inside its own `tracing` span (`generation`, `tool_call`),
//! created as a child of the span current at the call: the actor calls these functions inside
//! its run's span, and the spans go with the spawned task.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use futures::{FutureExt, StreamExt};
use kameo::prelude::*;
use serde_json::{Map, Value, json};
use tracing::Instrument;

use super::{Generated, RunActor, ToolsDone};
use crate::actor::context::{JobContext, now_ms};
use crate::actor::skill::{CallTool, SkillRef};
use crate::agent::{Machine, RunFailure, ToolIndex, ToolOwner};
use crate::llm::{
    Assembler, Generation, GenerationError, GenerationRequest, Signal, ToolSpec, retry,
};
use crate::schema::{
    Delta, Empty, Envelope, EventPayload, Message, MessagePart, Text, ToolCall, ToolResult,
};

/// Call the model in a task; stream reasoning (and, for the run result, text) events.
pub(super) fn spawn_generation(
    ctx: Arc<JobContext>,
    me: ActorRef<RunActor>,
    machine: &Machine,
    messages: Vec<Message>,
    tools: Arc<Vec<ToolSpec>>,
    retry_count: u32,
    retry_after: Option<Duration>,
) {
    let setting = machine.setting();
    let span = tracing::info_span!(
        "generation",
        jobId = %setting.job_id,
        runId = %setting.run_id,
        expertKey = %setting.expert.key,
        stepNumber = machine.checkpoint().step_number,
        retryCount = retry_count,
    );
    let envelope = machine.envelope();
    let run_result = machine.is_generating_run_result();
    // Boxed: the task holds it in its arguments and again in the model call's.
    let request = Box::new(GenerationRequest {
        expert_key: setting.expert.key.clone(),
        model: ctx.settings.model.clone(),
        messages,
        tools,
        reasoning_budget: ctx.settings.reasoning_budget,
    });
    tokio::spawn(
        generation(
            ctx,
            me,
            request,
            envelope,
            run_result,
            retry_count,
            retry_after,
        )
        .instrument(span),
    );
}

/// The task of [`spawn_generation`]: wait out the retry delay, call the model within the
/// timeout unless the job is cancelled, tell the run.
pub(super) async fn generation(
    ctx: Arc<JobContext>,
    me: ActorRef<RunActor>,
    request: Box<GenerationRequest>,
    envelope: Envelope,
    run_result: bool,
    retry_count: u32,
    retry_after: Option<Duration>,
) {
    let timeout = ctx.settings.timeout;
    let wait = retry::wait(retry_count, retry_after);
    let result = tokio::select! {
        () = ctx.cancel.cancelled() => Err(GenerationError {
            name: "Cancelled".into(),
            message: "The job was cancelled during a model call.".into(),
            status_code: None,
            retryable: false,
            retry_after: None,
        }),
        r = async {
            // Not `sleep(ZERO)`: tokio rounds every deadline up to its next 1 ms tick.
            if !wait.is_zero() {
                tokio::time::sleep(wait).await;
            }
            match tokio::time::timeout(timeout, generate(&ctx, request, &envelope, run_result)).await {
                Ok(r) => r,
                Err(_) => Err(GenerationError {
                    name: "TimeoutError".into(),
                    message: format!("The model call did not finish within {} ms.", timeout.as_millis()),
                    status_code: None,
                    retryable: true,
                    retry_after: None,
                }),
            }
        } => r,
    };
    let _ = me.tell(Generated(result)).await;
}

async fn generate(
    ctx: &JobContext,
    request: Box<GenerationRequest>,
    envelope: &Envelope,
    run_result: bool,
) -> Result<Generation, GenerationError> {
    let mut stream = ctx.model.stream(*request).await?;
    let mut asm = Assembler::new();
    let mut events = Vec::new();
    let mut ended = false;
    while !ended {
        // Wait for the next part, then take every part that is already there: their events
        // go to the bus in one message, in order (one ask per burst of the stream, not one per
        // event). A part that fails still publishes what came before it.
        let Some(item) = stream.next().await else {
            break;
        };
        let mut failed = None;
        let mut next = Some(item);
        while let Some(item) = next.take() {
            match item {
                Ok(part) => {
                    for signal in asm.push(part) {
                        events.extend(stream_event(envelope, run_result, signal));
                    }
                }
                Err(e) => {
                    failed = Some(e);
                    break;
                }
            }
            match stream.next().now_or_never() {
                Some(Some(item)) => next = Some(item),
                Some(None) => ended = true,
                None => {}
            }
        }
        publish_stream(ctx, &mut events).await;
        if let Some(e) = failed {
            return Err(e);
        }
    }
    let (signals, generation) = asm.finish();
    for signal in signals {
        events.extend(stream_event(envelope, run_result, signal));
    }
    publish_stream(ctx, &mut events).await;
    generation
}

/// Publish a burst of streaming events in one message. Their failures are not the model
/// call's: a failed bus or sink stops the job through the next state event.
async fn publish_stream(ctx: &JobContext, events: &mut Vec<crate::schema::Event>) {
    if !events.is_empty() {
        let mut batch = std::mem::take(events);
        // Held until the bus has taken it, which can be long on a busy bus: no spare slots.
        batch.shrink_to_fit();
        let _ = ctx.publish_batch(batch).await;
    }
}

/// Reasoning events may come in either generation; result events only for the run result.
fn stream_event(
    envelope: &Envelope,
    run_result: bool,
    signal: Signal,
) -> Option<crate::schema::Event> {
    let payload = match signal {
        Signal::ReasoningStart => {
            EventPayload::StartStreamingReasoning(Empty { extra: Map::new() })
        }
        Signal::ReasoningDelta(delta) => EventPayload::StreamReasoning(Delta {
            delta,
            extra: Map::new(),
        }),
        Signal::ReasoningComplete(text) => EventPayload::CompleteStreamingReasoning(Text {
            text,
            extra: Map::new(),
        }),
        Signal::TextStart if run_result => {
            EventPayload::StartStreamingRunResult(Empty { extra: Map::new() })
        }
        Signal::TextDelta(delta) if run_result => EventPayload::StreamRunResult(Delta {
            delta,
            extra: Map::new(),
        }),
        Signal::TextComplete(text) if run_result => {
            EventPayload::CompleteStreamingRunResult(Text {
                text,
                extra: Map::new(),
            })
        }
        _ => return None,
    };
    Some(envelope.event(now_ms(), payload))
}

/// Run skill calls concurrently; results come back in call order.
pub(super) fn spawn_tool_calls(
    ctx: Arc<JobContext>,
    me: ActorRef<RunActor>,
    machine: &Machine,
    index: Arc<ToolIndex>,
    skills: HashMap<String, SkillRef>,
    calls: Vec<ToolCall>,
) {
    let spans: Vec<tracing::Span> = calls
        .iter()
        .map(|c| {
            tracing::info_span!(
                "tool_call",
                toolName = %c.tool_name,
                toolCallId = %c.id,
                skillName = %c.skill_name,
            )
        })
        .collect();
    let caller = crate::replay::Caller::of(machine);
    tokio::spawn(async move {
        let work = futures::future::join_all(calls.iter().zip(spans).map(|(c, span)| {
            answer(ctx.replay.as_deref(), &caller, &index, &skills, c).instrument(span)
        }));
        let results = tokio::select! {
            () = ctx.cancel.cancelled() => Ok(calls.iter().map(|c| error_result(c, "Cancelled", "The job was cancelled during this tool call.")).collect()),
            r = work => r.into_iter().collect(),
        };
        let _ = me.tell(ToolsDone(results)).await;
    });
}

/// One call's result: from the skill, or from the recording when a replay plays tools back
/// (a replay with live tools calls the skill and checks the result against the recording).
async fn answer(
    replay: Option<&crate::replay::ToolReplay>,
    caller: &crate::replay::Caller,
    index: &ToolIndex,
    skills: &HashMap<String, SkillRef>,
    call: &ToolCall,
) -> Result<ToolResult, RunFailure> {
    let Some(replay) = replay else {
        return call_one(index, skills, call).await;
    };
    if let Some(recorded) = replay.played(caller, call) {
        return Ok(recorded);
    }
    let live = call_one(index, skills, call).await;
    if let Ok(result) = &live {
        replay.observe(caller, call, result);
    }
    live
}

/// One call's result, or the fault that stops the run.
async fn call_one(
    index: &ToolIndex,
    skills: &HashMap<String, SkillRef>,
    call: &ToolCall,
) -> Result<ToolResult, RunFailure> {
    let skill = match index.owner(&call.tool_name) {
        Some(ToolOwner::Skill(s)) => skills.get(s),
        _ => None,
    };
    let Some(skill) = skill else {
        return Ok(error_result(
            call,
            "ToolNotFound",
            &format!("Tool {} not found", call.tool_name),
        ));
    };
    match skill
        .call(CallTool {
            name: call.tool_name.clone(),
            args: Value::clone(&call.args),
        })
        .await
    {
        Ok(outcome) => match outcome.fault {
            Some(fault) => Err(fault),
            None => Ok(
                ToolResult::new(call, call.skill_name.clone(), outcome.parts)
                    .with_error(outcome.is_error),
            ),
        },
        Err(e) => Ok(error_result(
            call,
            "SkillUnavailable",
            &format!("Error calling tool {}: {e}", call.tool_name),
        )),
    }
}

fn error_result(call: &ToolCall, name: &str, message: &str) -> ToolResult {
    ToolResult::new(
        call,
        call.skill_name.clone(),
        vec![MessagePart::text(
            json!({"error": name, "message": message}).to_string(),
        )],
    )
}
