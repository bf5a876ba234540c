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
//!
//! # Layout
//!
//! This file holds the public types and the entry points ([`Machine::start`],
//! [`Machine::handle`], [`Machine::abort`], [`Machine::resume_after_delegation`]); each
//! transition lives with its state:
//!
//! - `step`: PreparingForStep (`resumeToolCalls`, `startGeneration`) and FinishingStep
//!   (`continueToNextStep`, `stopRunByExceededMaxSteps`).
//! - `generation`: GeneratingToolCall (`callTools`), GeneratingRunResult and the retry policy
//!   (`retry`).
//! - `calls`: CallingTool (`attemptCompletion`), CallingDelegate, CallingInteractiveTool and
//!   ResolvingToolResult.
//! - `stop`: the ends reachable from any state, `completeRun` and `stopRunByError`.

use std::sync::Arc;
use std::time::Duration;

use serde_json::Map;

use super::delegation::{Delegation, Resumed};
use super::failure::RunFailure;
use super::tools::ToolIndex;
use crate::llm::{Generation, GenerationError};
use crate::schema::{
    Checkpoint, CheckpointStatus, Envelope, Event, EventPayload, ExpertRef,
    InteractiveToolCallResult, Message, MessagePart, StartRun, Step, ToolCall, ToolResult, Usage,
    id::new_id,
};
use calls::Plan;

mod calls;
mod generation;
mod step;
mod stop;

/// Limits and identity of one run.
#[derive(Debug, Clone)]
pub(crate) struct MachineSetting {
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

/// How a run starts: the one start type of the engine, for a new job, a continued one, a
/// delegated child and crash recovery alike (see [`Resumption::into_start`]).
///
/// [`Resumption::into_start`]: super::Resumption::into_start
#[derive(Debug, Clone)]
pub(crate) enum Start {
    /// A query: a fresh run (instruction + user message) or a continued one (user message).
    Query(String),
    /// The answer to the pending interactive call.
    Answer(InteractiveToolCallResult),
    /// Pick up a stored mid-run checkpoint (after a crash): no new input, the loop goes on
    /// with the step after the stored one.
    Resume,
    /// Resume a `stoppedByDelegate` checkpoint: run the children that have not reported, then
    /// go on with all their results.
    AfterDelegation(Box<Delegation>),
}

/// What the actor must do next.
#[derive(Debug, Clone)]
pub(crate) enum Effect {
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
    /// Run the children this delegation names (each report goes back into it); once it
    /// [`is done`](Delegation::is_done), resume with [`Machine::resume_after_delegation`].
    Delegate(Box<Delegation>),
    /// The run ended; [`Machine::checkpoint`] is final.
    Stop,
}

/// An outcome fed back to the machine.
#[derive(Debug, Clone)]
pub(crate) enum Input {
    /// The model call finished.
    Generated(Result<Generation, GenerationError>),
    /// The calls of [`Effect::CallTools`] finished, results in call order.
    ToolsDone(Vec<ToolResult>),
}

/// Events to publish (in order) and the next effect.
#[derive(Debug)]
pub(crate) struct Output {
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

/// The state of one run.
#[derive(Debug, Clone)]
pub(crate) struct Machine {
    setting: MachineSetting,
    /// Shared with the run actor (and, through [`ToolLists`](super::ToolLists), with the
    /// engine's other runs of the Expert).
    tools: Arc<ToolIndex>,
    checkpoint: Checkpoint,
    step: Step,
    phase: Phase,
    /// `Retry-After` of the last failed generation, for the next [`Effect::Generate`].
    retry_after: Option<Duration>,
}

impl Machine {
    /// A machine positioned at `Init` on `checkpoint` (fresh, continued or delegated).
    pub(crate) fn new(
        setting: MachineSetting,
        tools: impl Into<Arc<ToolIndex>>,
        checkpoint: Checkpoint,
    ) -> Self {
        let step = Step::new(checkpoint.step_number, 0);
        Machine {
            setting,
            tools: tools.into(),
            checkpoint,
            step,
            phase: Phase::Init,
            retry_after: None,
        }
    }

    /// A fresh `init` checkpoint for a new run.
    pub(crate) fn fresh_checkpoint(setting: &MachineSetting, step_number: u32) -> Checkpoint {
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
            job_seq: None,
            extra: Map::new(),
        }
    }

    /// Replace the tool index (the run actor builds it once its skills are up).
    pub(crate) fn set_tools(&mut self, tools: Arc<ToolIndex>) {
        self.tools = tools;
    }

    /// The current checkpoint (final once the effect is [`Effect::Stop`]).
    pub(crate) fn checkpoint(&self) -> &Checkpoint {
        &self.checkpoint
    }

    /// The run's setting.
    pub(crate) fn setting(&self) -> &MachineSetting {
        &self.setting
    }

    /// Whether the machine reached `Stopped`.
    pub(crate) fn is_stopped(&self) -> bool {
        matches!(self.phase, Phase::Stopped)
    }

    /// Whether the current generation is the run-result one (its text is streamed).
    pub(crate) fn is_generating_run_result(&self) -> bool {
        matches!(self.phase, Phase::GeneratingRunResult { .. })
    }

    /// The envelope of this run's current step (`expertKey`, `stepNumber` from the checkpoint).
    pub(crate) fn envelope(&self) -> Envelope {
        Envelope::step(
            self.setting.job_id.as_str(),
            self.setting.run_id.as_str(),
            self.setting.expert.key.as_str(),
            self.checkpoint.step_number,
        )
    }

    /// An event of this run's current step.
    pub(crate) fn event(&self, now: u64, payload: EventPayload) -> Event {
        self.envelope().into_event(now, payload)
    }

    /// Init: build the input messages and emit `startRun`, then prepare the first step.
    /// `instruction` is used only when the checkpoint is `init` and the start is a query.
    /// [`Start::AfterDelegation`] emits nothing: the run goes straight to its children
    /// ([`Effect::Delegate`]) and starts its next segment once they reported.
    pub(crate) fn start(&mut self, now: u64, start: Start, instruction: String) -> Output {
        let mut cp = self.checkpoint.clone();
        let input_messages = match start {
            Start::Query(text) => {
                if cp.status == CheckpointStatus::Init {
                    vec![Message::instruction(instruction), Message::user(text)]
                } else {
                    vec![Message::user(text)]
                }
            }
            Start::Answer(answer) => {
                let call = cp
                    .pending_tool_calls
                    .as_ref()
                    .and_then(|p| p.iter().find(|c| c.id == answer.tool_call_id));
                let result = ToolResult {
                    id: answer.tool_call_id.clone(),
                    skill_name: answer.skill_name.clone(),
                    tool_name: call.map_or(answer.tool_name.clone(), |c| c.tool_name.clone()),
                    result: vec![MessagePart::text(answer.text)],
                    is_error: false,
                    extra: Map::new(),
                };
                absorb_results(&mut cp, vec![result]);
                Vec::new()
            }
            Start::Resume => Vec::new(),
            Start::AfterDelegation(delegation) => {
                self.phase = Phase::Delegating;
                return Output {
                    events: Vec::new(),
                    effect: Effect::Delegate(delegation),
                };
            }
        };
        self.begin_segment(now, cp, input_messages)
    }

    /// Resume after delegation as a new segment: new run id, step after the children's last,
    /// usage plus the children's, delegate results absorbed.
    pub(crate) fn resume_after_delegation(
        &mut self,
        now: u64,
        new_run_id: String,
        resumed: Resumed,
    ) -> Output {
        self.setting.run_id = new_run_id.clone();
        let cp = &mut self.checkpoint;
        cp.id = new_id();
        cp.run_id = new_run_id;
        cp.step_number = resumed.last_step.max(cp.step_number) + 1;
        cp.usage += resumed.usage;
        cp.delegate_to = None;
        cp.status = CheckpointStatus::StoppedByDelegate;
        self.phase = Phase::Init;
        let mut cp = self.checkpoint.clone();
        absorb_results(&mut cp, resumed.results);
        self.begin_segment(now, cp, Vec::new())
    }

    /// `startRun` on `cp` with `input_messages`, then the first step of the segment.
    fn begin_segment(
        &mut self,
        now: u64,
        mut cp: Checkpoint,
        input_messages: Vec<Message>,
    ) -> Output {
        let events = vec![self.event(
            now,
            EventPayload::StartRun(Box::new(StartRun {
                initial_checkpoint: cp.clone(),
                input_messages: input_messages.clone(),
                extra: Map::new(),
            })),
        )];
        cp.status = CheckpointStatus::Proceeding;
        cp.messages.extend(input_messages.iter().cloned());
        self.checkpoint = cp;
        self.step = Step::new(self.checkpoint.step_number, now);
        self.step.input_messages = Some(input_messages);
        self.prepare(now, events)
    }

    /// Feed an outcome.
    pub(crate) fn handle(&mut self, now: u64, input: Input) -> Output {
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
                    RunFailure::Engine(format!(
                        "unexpected input in this state: {}",
                        char_prefix(&what, 80)
                    )),
                )
            }
        }
    }

    /// Stop the run with an error from outside the loop (cancellation, an engine fault).
    pub(crate) fn abort(&mut self, now: u64, failure: RunFailure) -> Output {
        if self.is_stopped() {
            return Output {
                events: Vec::new(),
                effect: Effect::Stop,
            };
        }
        self.stop_by_error(now, Vec::new(), failure)
    }

    /// Stop the run with `failure` whatever state it is in, even stopped: the end it reached
    /// could not be made durable or shown (its storage failed), so this stop replaces it.
    pub(crate) fn fail(&mut self, now: u64, failure: RunFailure) -> Output {
        self.stop_by_error(now, Vec::new(), failure)
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

/// The first `max` characters of `s`: a cut on a character boundary, never inside one.
fn char_prefix(s: &str, max: usize) -> &str {
    s.char_indices().nth(max).map_or(s, |(i, _)| &s[..i])
}
