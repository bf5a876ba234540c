//! The agent loop of one run as a pure state machine: `(state, input) -> (events, effect)`.
//!
//! States, events and transitions follow REFERENCE §1.2–1.7: Init → PreparingForStep →
//! GeneratingToolCall → CallingTool → ResolvingToolResult / GeneratingRunResult /
//! CallingDelegate / CallingInteractiveTool → FinishingStep → ... → Stopped. The machine never
//! does I/O: the run actor executes each [`Effect`] (call the model, call tools, run children)
//! and feeds the outcome back as an [`Input`]. Time comes in as an argument.
//!
//! Where Perstack crashes (unknown tool names, unexpected finish reasons), the machine turns the
//! problem into a tool result or a `stopRunByError`, so every run ends with a terminal event and
//! a stored checkpoint. See COMPATIBILITY.md.

use std::time::Duration;

use serde_json::{Map, Value, json};

use super::tools::{ATTEMPT_COMPLETION, BASE_SKILL, ToolIndex, ToolOwner};
use crate::llm::{FinishReason, Generation, GenerationError};
use crate::schema::{
    AttemptCompletion, CallDelegate, CallInteractiveTool, CallTools, Checkpoint, CheckpointStatus,
    CompleteRun, ContinueToNextStep, DelegateTo, Event, EventPayload, ExpertRef,
    InteractiveToolCallResult, Message, MessagePart, NewMessages, ResolveToolResults,
    ResumeToolCalls, Retry, RunError, StartGeneration, StartRun, Step, StopRun, StopRunByError,
    ThinkingPart, ToolCall, ToolCallPart, ToolResult, Usage, id::new_id,
};

/// Limits and identity of one run.
#[derive(Debug, Clone)]
pub struct MachineSetting {
    /// Job id.
    pub job_id: String,
    /// Run id of the current segment.
    pub run_id: String,
    /// The Expert running.
    pub expert: ExpertRef,
    /// Job-wide step limit; checked at every step end.
    pub max_steps: u32,
    /// Consecutive failed generations allowed before the run stops.
    pub max_retries: u32,
    /// The model's context window, when known.
    pub context_window: Option<u64>,
}

/// How a run segment starts.
#[derive(Debug, Clone)]
pub enum RunStart {
    /// A query: a fresh run (instruction + user message) or a continued one (user message).
    Query {
        /// The query text.
        text: String,
        /// The instruction text, used only when the checkpoint is `init`.
        instruction: String,
    },
    /// The answer to the pending interactive (or delegate) call.
    Answer(InteractiveToolCallResult),
    /// Results of delegated runs, resuming a `stoppedByDelegate` checkpoint.
    DelegateResults(Vec<ToolResult>),
    /// Pick up a stored mid-run checkpoint (after a crash): no new input, the loop goes on
    /// with the step after the stored one.
    Resume,
}

/// What the actor must do next.
#[derive(Debug, Clone)]
pub enum Effect {
    /// Call the model with `messages`; `with_tools` is false for the run-result generation.
    Generate {
        /// The whole history to send.
        messages: Vec<Message>,
        /// Offer tools (false after `attemptCompletion`).
        with_tools: bool,
        /// Consecutive failures so far, for the backoff before this call.
        retry_count: u32,
        /// The wait the provider asked for after the failure that caused this retry.
        retry_after: Option<Duration>,
    },
    /// Execute these skill calls concurrently and answer with [`Input::ToolsDone`] in the same
    /// order. Calls whose tool is unknown must be answered with an error result.
    CallTools(Vec<ToolCall>),
    /// Run these children; the run then resumes with [`RunStart::DelegateResults`].
    Delegate(Vec<DelegateTo>),
    /// The run ended; [`Machine::checkpoint`] is final.
    Stop,
}

/// An outcome fed back to the machine.
#[derive(Debug, Clone)]
pub enum Input {
    /// The model call finished.
    Generated(Result<Generation, GenerationError>),
    /// The calls of [`Effect::CallTools`] finished, results in call order.
    ToolsDone(Vec<ToolResult>),
}

/// Events to publish (in order) and the next effect.
#[derive(Debug)]
pub struct Output {
    /// Events, each already enveloped.
    pub events: Vec<Event>,
    /// What to do next.
    pub effect: Effect,
}

#[derive(Debug, Clone)]
enum Phase {
    Init,
    GeneratingToolCall,
    GeneratingRunResult {
        completion: ToolResult,
        skipped: Vec<ToolResult>,
    },
    CallingCompletion {
        skipped: Vec<ToolResult>,
    },
    CallingTools(Plan),
    Delegating,
    Stopped,
}

/// The calls of one turn, sorted as Perstack sorts them.
#[derive(Debug, Clone, Default)]
struct Plan {
    mcp: Vec<ToolCall>,
    delegates: Vec<ToolCall>,
    interactive: Vec<ToolCall>,
}

/// The state of one run.
#[derive(Debug, Clone)]
pub struct Machine {
    setting: MachineSetting,
    tools: ToolIndex,
    checkpoint: Checkpoint,
    step: Step,
    phase: Phase,
    /// `Retry-After` of the last failed generation, for the next [`Effect::Generate`].
    retry_after: Option<Duration>,
}

impl Machine {
    /// A machine positioned at `Init` on `checkpoint` (fresh, continued or delegated).
    pub fn new(setting: MachineSetting, tools: ToolIndex, checkpoint: Checkpoint) -> Self {
        let step = Step::new(checkpoint.step_number, 0);
        Machine {
            setting,
            tools,
            checkpoint,
            step,
            phase: Phase::Init,
            retry_after: None,
        }
    }

    /// A fresh `init` checkpoint for a new run.
    pub fn fresh_checkpoint(setting: &MachineSetting, step_number: u32) -> Checkpoint {
        Checkpoint {
            id: new_id(),
            job_id: setting.job_id.clone(),
            run_id: setting.run_id.clone(),
            status: CheckpointStatus::Init,
            step_number,
            messages: Vec::new(),
            expert: setting.expert.clone(),
            delegate_to: None,
            delegated_by: None,
            usage: Usage::default(),
            context_window: setting.context_window,
            context_window_usage: setting.context_window.map(|_| 0.0),
            pending_tool_calls: None,
            partial_tool_results: None,
            metadata: None,
            error: None,
            retry_count: None,
            extra: Map::new(),
        }
    }

    /// Replace the tool index (the run actor builds it once its skills are up).
    pub fn set_tools(&mut self, tools: ToolIndex) {
        self.tools = tools;
    }

    /// The current checkpoint (final once the effect is [`Effect::Stop`]).
    pub fn checkpoint(&self) -> &Checkpoint {
        &self.checkpoint
    }

    /// The run's setting.
    pub fn setting(&self) -> &MachineSetting {
        &self.setting
    }

    /// Whether the machine reached `Stopped`.
    pub fn is_stopped(&self) -> bool {
        matches!(self.phase, Phase::Stopped)
    }

    /// Whether the current generation is the run-result one (its text is streamed).
    pub fn is_generating_run_result(&self) -> bool {
        matches!(self.phase, Phase::GeneratingRunResult { .. })
    }

    /// Build an event with this run's envelope (`expertKey`, `stepNumber` from the checkpoint).
    pub fn event(&self, now: u64, payload: EventPayload) -> Event {
        Event {
            id: new_id(),
            timestamp: now,
            job_id: self.setting.job_id.clone(),
            run_id: self.setting.run_id.clone(),
            expert_key: Some(self.setting.expert.key.clone()),
            step_number: Some(self.checkpoint.step_number),
            payload,
        }
    }

    /// Init: build the input messages and emit `startRun`, then prepare the first step.
    pub fn start(&mut self, now: u64, start: RunStart) -> Output {
        let mut events = Vec::new();
        let mut cp = self.checkpoint.clone();
        let input_messages = match start {
            RunStart::Query { text, instruction } => {
                if cp.status == CheckpointStatus::Init {
                    vec![Message::instruction(instruction), Message::user(text)]
                } else {
                    vec![Message::user(text)]
                }
            }
            RunStart::Answer(answer) => {
                let call = cp
                    .pending_tool_calls
                    .as_ref()
                    .and_then(|p| p.iter().find(|c| c.id == answer.tool_call_id));
                let result = ToolResult {
                    id: answer.tool_call_id.clone(),
                    skill_name: answer.skill_name.clone(),
                    tool_name: call.map_or(answer.tool_name.clone(), |c| c.tool_name.clone()),
                    result: vec![MessagePart::text(answer.text)],
                    extra: Map::new(),
                };
                absorb_results(&mut cp, vec![result]);
                Vec::new()
            }
            RunStart::DelegateResults(results) => {
                absorb_results(&mut cp, results);
                Vec::new()
            }
            RunStart::Resume => Vec::new(),
        };
        events.push(self.event(
            now,
            EventPayload::StartRun(StartRun {
                initial_checkpoint: cp.clone(),
                input_messages: input_messages.clone(),
                extra: Map::new(),
            }),
        ));
        cp.status = CheckpointStatus::Proceeding;
        cp.messages.extend(input_messages.iter().cloned());
        self.checkpoint = cp;
        self.step = Step::new(self.checkpoint.step_number, now);
        self.step.input_messages = Some(input_messages);
        self.prepare(now, events)
    }

    /// Resume after delegation as a new segment: new run id, step after the children's last,
    /// usage plus the children's, delegate results absorbed.
    pub fn resume_after_delegation(
        &mut self,
        now: u64,
        new_run_id: String,
        last_child_step: u32,
        child_usage: Usage,
        results: Vec<ToolResult>,
    ) -> Output {
        self.setting.run_id = new_run_id.clone();
        let cp = &mut self.checkpoint;
        cp.id = new_id();
        cp.run_id = new_run_id;
        cp.step_number = last_child_step.max(cp.step_number) + 1;
        cp.usage += child_usage;
        cp.delegate_to = None;
        cp.status = CheckpointStatus::StoppedByDelegate;
        self.phase = Phase::Init;
        self.start(now, RunStart::DelegateResults(results))
    }

    /// Feed an outcome.
    pub fn handle(&mut self, now: u64, input: Input) -> Output {
        match (std::mem::replace(&mut self.phase, Phase::Stopped), input) {
            (Phase::GeneratingToolCall, Input::Generated(r)) => self.on_tool_generation(now, r),
            (
                Phase::GeneratingRunResult {
                    completion,
                    skipped,
                },
                Input::Generated(r),
            ) => self.on_run_result(now, completion, skipped, r),
            (Phase::CallingCompletion { skipped }, Input::ToolsDone(results)) => {
                self.on_completion_result(now, skipped, results)
            }
            (Phase::CallingTools(plan), Input::ToolsDone(results)) => {
                self.on_tool_results(now, plan, results)
            }
            (phase, input) => {
                let what = format!("{input:?}");
                self.phase = phase;
                self.stop_by_error(
                    now,
                    Vec::new(),
                    RunError {
                        name: "EngineError".into(),
                        message: format!(
                            "unexpected input in this state: {}",
                            &what[..what.len().min(80)]
                        ),
                        status_code: None,
                        is_retryable: false,
                    },
                )
            }
        }
    }

    /// Stop the run with an error from outside the loop (cancellation, an engine fault).
    pub fn abort(&mut self, now: u64, error: RunError) -> Output {
        if self.is_stopped() {
            return Output {
                events: Vec::new(),
                effect: Effect::Stop,
            };
        }
        self.stop_by_error(now, Vec::new(), error)
    }

    // PreparingForStep
    fn prepare(&mut self, now: u64, mut events: Vec<Event>) -> Output {
        let pending = self
            .checkpoint
            .pending_tool_calls
            .clone()
            .unwrap_or_default();
        let partial = self
            .checkpoint
            .partial_tool_results
            .clone()
            .unwrap_or_default();
        if !pending.is_empty() {
            events.push(self.event(
                now,
                EventPayload::ResumeToolCalls(ResumeToolCalls {
                    pending_tool_calls: pending.clone(),
                    partial_tool_results: partial.clone(),
                    extra: Map::new(),
                }),
            ));
            self.step.tool_results = Some(partial);
            self.step.pending_tool_calls = Some(pending.clone());
            let plan = self.plan(&pending);
            return self.run_plan(now, events, plan);
        }
        if !partial.is_empty() {
            let msg = Message::tool(&partial);
            events.push(self.event(
                now,
                EventPayload::FinishAllToolCalls(NewMessages {
                    new_messages: vec![msg.clone()],
                    extra: Map::new(),
                }),
            ));
            self.step.tool_results = Some(partial);
            self.checkpoint.messages.push(msg.clone());
            self.step.new_messages.push(msg);
            self.checkpoint.pending_tool_calls = None;
            self.checkpoint.partial_tool_results = None;
            return self.finish_step(now, events);
        }
        events.push(self.event(
            now,
            EventPayload::StartGeneration(StartGeneration {
                messages: self.checkpoint.messages.clone(),
                extra: Map::new(),
            }),
        ));
        self.phase = Phase::GeneratingToolCall;
        Output {
            events,
            effect: Effect::Generate {
                messages: self.checkpoint.messages.clone(),
                with_tools: true,
                retry_count: self.checkpoint.retry_count.unwrap_or(0),
                retry_after: self.retry_after.take(),
            },
        }
    }

    // GeneratingToolCall
    fn on_tool_generation(&mut self, now: u64, r: Result<Generation, GenerationError>) -> Output {
        let g = match r {
            Ok(g) => g,
            Err(e) => return self.generation_failed(now, e, Vec::new()),
        };
        if g.tool_calls.is_empty() {
            if !g.text.trim().is_empty() {
                let msg = Message::expert(expert_parts(&g, false));
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
                let partial = Generation {
                    tool_calls: vec![first.clone()],
                    ..g.clone()
                };
                let expert = Message::expert(expert_parts(&partial, true));
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
                    RunError {
                        name: "UnexpectedFinishReason".into(),
                        message: format!("The model stopped with finish reason {reason:?}"),
                        status_code: None,
                        is_retryable: false,
                    },
                );
            }
        }
        // Sort mcp -> delegate -> interactive, as Perstack does.
        let mut calls: Vec<ToolCall> = g
            .tool_calls
            .iter()
            .map(|c| {
                ToolCall::new(
                    c.id.clone(),
                    self.tools
                        .skill_name(&c.name)
                        .unwrap_or("unknown")
                        .to_string(),
                    c.name.clone(),
                    c.args.clone(),
                )
            })
            .collect();
        calls.sort_by_key(|c| match self.tools.owner(&c.tool_name) {
            Some(ToolOwner::Skill(_)) | None => 0,
            Some(ToolOwner::Delegate(_)) => 1,
            Some(ToolOwner::Interactive(_)) => 2,
        });
        let sorted = Generation {
            tool_calls: calls
                .iter()
                .filter_map(|c| g.tool_calls.iter().find(|x| x.id == c.id).cloned())
                .collect(),
            ..g.clone()
        };
        let msg = Message::expert(expert_parts(&sorted, true));
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

    fn plan(&self, calls: &[ToolCall]) -> Plan {
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
    fn run_plan(&mut self, _now: u64, events: Vec<Event>, plan: Plan) -> Output {
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

    fn on_completion_result(
        &mut self,
        now: u64,
        skipped: Vec<ToolResult>,
        results: Vec<ToolResult>,
    ) -> Output {
        let Some(result) = results.into_iter().next() else {
            return self.stop_by_error(
                now,
                Vec::new(),
                RunError {
                    name: "EngineError".into(),
                    message: "attemptCompletion returned no result".into(),
                    status_code: None,
                    is_retryable: false,
                },
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

    fn on_tool_results(&mut self, now: u64, plan: Plan, results: Vec<ToolResult>) -> Output {
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
                EventPayload::StopRunByDelegate(StopRun {
                    checkpoint: self.checkpoint.clone(),
                    step: self.step.clone(),
                    extra: Map::new(),
                }),
            ));
            if delegate_to.is_empty() {
                // Every delegate call was malformed: nothing to run, resume at once.
                self.phase = Phase::Delegating;
                return Output {
                    events,
                    effect: Effect::Delegate(Vec::new()),
                };
            }
            self.phase = Phase::Delegating;
            return Output {
                events,
                effect: Effect::Delegate(delegate_to),
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
                EventPayload::StopRunByInteractiveTool(StopRun {
                    checkpoint: self.checkpoint.clone(),
                    step: self.step.clone(),
                    extra: Map::new(),
                }),
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

    // GeneratingRunResult
    fn on_run_result(
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
                let expert = Message::expert(expert_parts(&g, false));
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
            return self.stop_by_error(
                now,
                Vec::new(),
                RunError {
                    name: e.name,
                    message: e.message,
                    status_code: e.status_code,
                    is_retryable: false,
                },
            );
        }
        if count >= self.setting.max_retries {
            return self.stop_by_error(
                now,
                Vec::new(),
                RunError {
                    name: e.name,
                    message: format!(
                        "Max retries ({}) exceeded: {}",
                        self.setting.max_retries, e.message
                    ),
                    status_code: e.status_code,
                    is_retryable: false,
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
                RunError {
                    name: "MaxRetriesExceeded".into(),
                    message: format!(
                        "Max retries ({}) exceeded: {short}",
                        self.setting.max_retries
                    ),
                    status_code: None,
                    is_retryable: false,
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

    fn complete(
        &mut self,
        now: u64,
        new_messages: Vec<Message>,
        text: String,
        usage: Usage,
    ) -> Output {
        self.checkpoint
            .messages
            .extend(new_messages.iter().cloned());
        self.checkpoint.usage += usage;
        self.checkpoint.status = CheckpointStatus::Completed;
        self.checkpoint.retry_count = Some(0);
        self.checkpoint.pending_tool_calls = None;
        self.checkpoint.partial_tool_results = None;
        self.update_context_window_usage();
        self.step.new_messages.extend(new_messages);
        self.step.usage += usage;
        self.step.finished_at = Some(now);
        let events = vec![self.event(
            now,
            EventPayload::CompleteRun(CompleteRun {
                checkpoint: self.checkpoint.clone(),
                step: self.step.clone(),
                text,
                usage,
                extra: Map::new(),
            }),
        )];
        self.phase = Phase::Stopped;
        Output {
            events,
            effect: Effect::Stop,
        }
    }

    fn stop_by_error(&mut self, now: u64, mut events: Vec<Event>, error: RunError) -> Output {
        self.checkpoint.status = CheckpointStatus::StoppedByError;
        // Perstack stores this checkpoint without `error`; it is kept here (COMPATIBILITY.md).
        self.checkpoint.error = Some(error.clone());
        self.step.finished_at = Some(now);
        events.push(self.event(
            now,
            EventPayload::StopRunByError(StopRunByError {
                checkpoint: self.checkpoint.clone(),
                step: self.step.clone(),
                error,
                extra: Map::new(),
            }),
        ));
        self.phase = Phase::Stopped;
        Output {
            events,
            effect: Effect::Stop,
        }
    }

    // FinishingStep
    fn finish_step(&mut self, now: u64, mut events: Vec<Event>) -> Output {
        self.step.finished_at = Some(now);
        if self.checkpoint.step_number >= self.setting.max_steps {
            self.checkpoint.status = CheckpointStatus::StoppedByExceededMaxSteps;
            events.push(self.event(
                now,
                EventPayload::StopRunByExceededMaxSteps(StopRun {
                    checkpoint: self.checkpoint.clone(),
                    step: self.step.clone(),
                    extra: Map::new(),
                }),
            ));
            self.phase = Phase::Stopped;
            return Output {
                events,
                effect: Effect::Stop,
            };
        }
        self.checkpoint.status = CheckpointStatus::Proceeding;
        let mut next = self.checkpoint.clone();
        next.id = new_id();
        next.step_number += 1;
        events.push(self.event(
            now,
            EventPayload::ContinueToNextStep(ContinueToNextStep {
                checkpoint: self.checkpoint.clone(),
                step: self.step.clone(),
                next_checkpoint: next.clone(),
                extra: Map::new(),
            }),
        ));
        self.checkpoint = next;
        self.step = Step::new(self.checkpoint.step_number, now);
        self.step.input_messages = Some(Vec::new());
        self.prepare(now, events)
    }

    fn update_context_window_usage(&mut self) {
        if let Some(window) = self.setting.context_window.filter(|w| *w > 0) {
            let u = self.checkpoint.usage;
            #[allow(clippy::cast_precision_loss)]
            let ratio =
                (u.input_tokens + u.cached_input_tokens + u.output_tokens) as f64 / window as f64;
            self.checkpoint.context_window_usage = Some(ratio);
        }
    }
}

impl Output {
    fn prepend(mut self, mut events: Vec<Event>) -> Output {
        events.append(&mut self.events);
        self.events = events;
        self
    }
}

/// Append results to `partialToolResults` and drop the answered calls from `pendingToolCalls`.
fn absorb_results(cp: &mut Checkpoint, results: Vec<ToolResult>) {
    let answered: Vec<String> = results.iter().map(|r| r.id.clone()).collect();
    cp.partial_tool_results
        .get_or_insert_with(Vec::new)
        .extend(results);
    if let Some(p) = cp.pending_tool_calls.as_mut() {
        p.retain(|c| !answered.contains(&c.id));
        if p.is_empty() {
            cp.pending_tool_calls = None;
        }
    }
}

/// Thinking parts, then the text part (when non-empty), then tool-call parts.
fn expert_parts(g: &Generation, with_calls: bool) -> Vec<MessagePart> {
    let mut parts: Vec<MessagePart> = g
        .thinking
        .iter()
        .map(|t| {
            MessagePart::ThinkingPart(ThinkingPart {
                id: new_id(),
                thinking: t.text.clone(),
                signature: t.signature.clone(),
                extra: Map::new(),
            })
        })
        .collect();
    if !g.text.is_empty() {
        parts.push(MessagePart::text(g.text.clone()));
    }
    if with_calls {
        parts.extend(g.tool_calls.iter().map(|c| {
            MessagePart::ToolCallPart(ToolCallPart {
                id: new_id(),
                tool_call_id: c.id.clone(),
                tool_name: c.name.clone(),
                args: c.args.clone(),
                extra: Map::new(),
            })
        }));
    }
    parts
}
