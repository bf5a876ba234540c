//! Events: every state change of a job, as Perstack prints them on stdout.
//!
//! An [`Event`] is an envelope (`type, id, expertKey?, timestamp, jobId, runId, stepNumber?`)
//! plus one [`EventPayload`]. The 17 state events and 6 streaming events carry `expertKey` and
//! `stepNumber`; runtime events (`initializeRuntime`, `skill*`, `proxyAccess`) do not, except
//! `jobTakenOver`, which names the coordinator step the job goes on from so that it is stored
//! in the run's history. Serialisation writes
//! `type` first, then the envelope, then the payload fields, one compact JSON object per event.
//! Events are built by [`Envelope`] only.

use serde::{Deserialize, Serialize, Serializer};
use serde_json::{Map, Value};

mod envelope;

pub use envelope::Envelope;

use super::{
    Checkpoint, InteractiveToolCallResult, Message, RunError, Step, ToolCall, ToolResult, Usage,
};

/// One event.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Event {
    /// Event id.
    pub id: String,
    /// Epoch ms.
    pub timestamp: u64,
    /// Job id.
    pub job_id: String,
    /// Run id.
    pub run_id: String,
    /// Expert key (state and streaming events only).
    #[serde(default)]
    pub expert_key: Option<String>,
    /// Step number (state and streaming events only).
    #[serde(default)]
    pub step_number: Option<u32>,
    /// The event's place in its job's history, from 1, gapless across delegations and
    /// continuations; set by the event bus when it writes the event (`None` before). Never on
    /// stdout (Perstack has no such field); stored as `jobSeq` ([`Event::stored`]).
    #[serde(default)]
    pub job_seq: Option<u64>,
    /// The typed payload, discriminated on `type`.
    #[serde(flatten)]
    pub payload: EventPayload,
}

impl Event {
    /// Appends the event's line as the engine prints it (Perstack's JSON, compact, then
    /// `\n`) to `out`: the same bytes as `serde_json::to_writer` and a newline, written by
    /// the engine's own faster serializer. On an error (never for the engine's own events: a
    /// map with keys that are not strings in an unknown field's value), `out` is as it was.
    ///
    /// ```
    /// # fn main() -> Result<(), serde_json::Error> {
    /// let event: perstack::schema::Event = serde_json::from_str(
    ///     r#"{"type":"startStreamingReasoning","id":"e1","expertKey":"coordinator","timestamp":1,"jobId":"j","runId":"r","stepNumber":1}"#,
    /// )?;
    /// let mut line = Vec::new();
    /// event.write_line(&mut line)?;
    /// assert_eq!(line, [serde_json::to_vec(&event)?, b"\n".to_vec()].concat());
    /// # Ok(())
    /// # }
    /// ```
    pub fn write_line(&self, out: &mut Vec<u8>) -> Result<(), serde_json::Error> {
        let start = out.len();
        match crate::json::to_vec(out, self) {
            Ok(()) => {
                out.push(b'\n');
                Ok(())
            }
            Err(e) => {
                out.truncate(start);
                Err(serde::ser::Error::custom(e))
            }
        }
    }

    /// The wire `type`.
    pub fn kind(&self) -> &'static str {
        self.payload.kind()
    }

    /// The checkpoint carried by this event, for the six events that persist one.
    pub fn checkpoint(&self) -> Option<&Checkpoint> {
        match &self.payload {
            EventPayload::ContinueToNextStep(p) => Some(&p.checkpoint),
            EventPayload::StopRunByInteractiveTool(p)
            | EventPayload::StopRunByDelegate(p)
            | EventPayload::StopRunByExceededMaxSteps(p) => Some(&p.checkpoint),
            EventPayload::StopRunByError(p) => Some(&p.checkpoint),
            EventPayload::CompleteRun(p) => Some(&p.checkpoint),
            _ => None,
        }
    }

    /// The stored form: Perstack's JSON plus `jobSeq` when the bus gave one (Perstack's
    /// readers ignore unknown keys).
    pub fn stored(&self) -> impl Serialize + '_ {
        StoredEvent(self)
    }

    /// The carried checkpoint, to stamp it with the event's [`Event::job_seq`].
    pub(crate) fn checkpoint_mut(&mut self) -> Option<&mut Checkpoint> {
        match &mut self.payload {
            EventPayload::ContinueToNextStep(p) => Some(&mut p.checkpoint),
            EventPayload::StopRunByInteractiveTool(p)
            | EventPayload::StopRunByDelegate(p)
            | EventPayload::StopRunByExceededMaxSteps(p) => Some(&mut p.checkpoint),
            EventPayload::StopRunByError(p) => Some(&mut p.checkpoint),
            EventPayload::CompleteRun(p) => Some(&mut p.checkpoint),
            _ => None,
        }
    }

    /// Give the event (and the checkpoint it carries) its job sequence number.
    pub(crate) fn set_job_seq(&mut self, seq: u64) {
        self.job_seq = Some(seq);
        if let Some(cp) = self.checkpoint_mut() {
            cp.job_seq = Some(seq);
        }
    }

    /// Whether Perstack stores this event (it stores events that have a `stepNumber`).
    pub fn is_run_event(&self) -> bool {
        self.step_number.is_some()
    }
}

/// [`Event::stored`].
struct StoredEvent<'a>(&'a Event);

impl Serialize for StoredEvent<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        self.0.serialize_wire(s, self.0.job_seq)
    }
}

macro_rules! payloads {
    ($( $(#[$doc:meta])* $variant:ident($ty:ty) = $name:literal, )*) => {
        /// The payload of an event, one variant per Perstack event type.
        ///
        /// The variants that carry a checkpoint (and `initializeRuntime`) are boxed: an
        /// event is held inline wherever it waits (a batch on its way to the bus, the bus's
        /// mailbox, a subscriber's buffer, a store's `Arc`), and unboxed every event, a
        /// streaming delta too, took the size of the largest payload (1.6 KB for two
        /// checkpoints). Boxed, an event is a few hundred bytes (`events_stay_small`).
        #[derive(Debug, Clone, PartialEq, Deserialize)]
        #[serde(tag = "type", rename_all = "camelCase")]
        pub enum EventPayload {
            $( $(#[$doc])* $variant($ty), )*
        }

        impl EventPayload {
            /// The wire `type`.
            pub fn kind(&self) -> &'static str {
                match self { $( EventPayload::$variant(_) => $name, )* }
            }
        }

        /// Perstack's form, as printed on stdout: no `jobSeq`.
        impl Serialize for Event {
            fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                self.serialize_wire(s, None)
            }
        }

        impl Event {
            fn serialize_wire<S: Serializer>(&self, s: S, job_seq: Option<u64>) -> Result<S::Ok, S::Error> {
                match &self.payload {
                    $( EventPayload::$variant(p) => Wire::new($name, self, p, job_seq).serialize(s), )*
                }
            }
        }
    };
}

payloads! {
    /// A run segment starts.
    StartRun(Box<StartRun>) = "startRun",
    /// A generation with tools starts.
    StartGeneration(StartGeneration) = "startGeneration",
    /// A generation failed or was empty and will be retried in the next step.
    Retry(Retry) = "retry",
    /// The model called tools.
    CallTools(CallTools) = "callTools",
    /// The run stops for an interactive tool.
    CallInteractiveTool(CallInteractiveTool) = "callInteractiveTool",
    /// The run stops to delegate.
    CallDelegate(CallDelegate) = "callDelegate",
    /// Tool results are in.
    ResolveToolResults(ResolveToolResults) = "resolveToolResults",
    /// `attemptCompletion` succeeded; the result generation follows.
    AttemptCompletion(AttemptCompletion) = "attemptCompletion",
    /// The tool message of a step is added.
    FinishToolCall(NewMessages) = "finishToolCall",
    /// Pending calls resume after a stop.
    ResumeToolCalls(ResumeToolCalls) = "resumeToolCalls",
    /// All partial results become one tool message.
    FinishAllToolCalls(NewMessages) = "finishAllToolCalls",
    /// A step ends and the next begins.
    ContinueToNextStep(Box<ContinueToNextStep>) = "continueToNextStep",
    /// The run stopped for an interactive tool.
    StopRunByInteractiveTool(Box<StopRun>) = "stopRunByInteractiveTool",
    /// The run stopped to delegate.
    StopRunByDelegate(Box<StopRun>) = "stopRunByDelegate",
    /// The job-wide step limit stopped the run.
    StopRunByExceededMaxSteps(Box<StopRun>) = "stopRunByExceededMaxSteps",
    /// An error stopped the run.
    StopRunByError(Box<StopRunByError>) = "stopRunByError",
    /// The run completed.
    CompleteRun(Box<CompleteRun>) = "completeRun",
    /// Reasoning starts streaming.
    StartStreamingReasoning(Empty) = "startStreamingReasoning",
    /// A reasoning delta.
    StreamReasoning(Delta) = "streamReasoning",
    /// Reasoning finished streaming.
    CompleteStreamingReasoning(Text) = "completeStreamingReasoning",
    /// The run result starts streaming.
    StartStreamingRunResult(Empty) = "startStreamingRunResult",
    /// A run-result delta.
    StreamRunResult(Delta) = "streamRunResult",
    /// The run result finished streaming.
    CompleteStreamingRunResult(Text) = "completeStreamingRunResult",
    /// A run segment's runtime is set up.
    InitializeRuntime(Box<InitializeRuntime>) = "initializeRuntime",
    /// A stdio skill is being spawned.
    SkillStarting(SkillStarting) = "skillStarting",
    /// A skill connected.
    SkillConnected(SkillConnected) = "skillConnected",
    /// A skill wrote to stderr.
    SkillStderr(SkillStderr) = "skillStderr",
    /// A skill disconnected.
    SkillDisconnected(SkillDisconnected) = "skillDisconnected",
    /// The egress proxy let a sandboxed process through, or refused it.
    ProxyAccess(ProxyAccess) = "proxyAccess",
    /// A cluster worker took the job over from a worker that stopped mid-run (an addition:
    /// Perstack has no cluster); the steps that were in flight are repeated after it.
    JobTakenOver(JobTakenOver) = "jobTakenOver",
}

/// The serialised form: `type`, envelope, payload fields.
#[serde_with::skip_serializing_none]
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Wire<'a, P: Serialize> {
    #[serde(rename = "type")]
    kind: &'static str,
    id: &'a str,
    expert_key: Option<&'a str>,
    timestamp: u64,
    job_id: &'a str,
    run_id: &'a str,
    step_number: Option<u32>,
    job_seq: Option<u64>,
    #[serde(flatten)]
    payload: &'a P,
}

impl<'a, P: Serialize> Wire<'a, P> {
    fn new(kind: &'static str, e: &'a Event, payload: &'a P, job_seq: Option<u64>) -> Self {
        Wire {
            kind,
            id: &e.id,
            expert_key: e.expert_key.as_deref(),
            timestamp: e.timestamp,
            job_id: &e.job_id,
            run_id: &e.run_id,
            step_number: e.step_number,
            job_seq,
            payload,
        }
    }
}

macro_rules! payload_struct {
    ($(#[$doc:meta])* $name:ident { $( $(#[$fdoc:meta])* $field:ident : $ty:ty ),* $(,)? }) => {
        $(#[$doc])*
        #[serde_with::skip_serializing_none]
        #[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
        #[serde(rename_all = "camelCase")]
        pub struct $name {
            $( $(#[$fdoc])* pub $field: $ty, )*
            /// Unknown fields.
            #[serde(flatten)]
            pub extra: Map<String, Value>,
        }
    };
}

payload_struct!(
    /// `startRun`.
    StartRun {
        /// The checkpoint the segment starts from.
        initial_checkpoint: Checkpoint,
        /// Messages added at start.
        input_messages: Vec<Message>,
    }
);
payload_struct!(
    /// `startGeneration`.
    StartGeneration {
        /// The entire history sent to the model.
        messages: Vec<Message>,
    }
);
payload_struct!(
    /// `retry`.
    Retry {
        /// JSON text `{"error":..,"message":..}`.
        reason: String,
        /// Messages added by the retry.
        new_messages: Vec<Message>,
        /// Tool calls, when the retry came from a truncated tool call.
        tool_calls: Option<Vec<ToolCall>>,
        /// Synthetic tool results.
        tool_results: Option<Vec<ToolResult>>,
        /// Usage of the failed generation.
        usage: Usage,
    }
);
payload_struct!(
    /// `callTools`.
    CallTools {
        /// The expert message.
        new_message: Message,
        /// All calls, sorted mcp, delegate, interactive.
        tool_calls: Vec<ToolCall>,
        /// Usage of this generation.
        usage: Usage,
    }
);
payload_struct!(
    /// `callInteractiveTool`.
    CallInteractiveTool {
        /// The last expert message.
        new_message: Message,
        /// The interactive call.
        tool_call: ToolCall,
        /// Step usage.
        usage: Usage,
    }
);
payload_struct!(
    /// `callDelegate`.
    CallDelegate {
        /// The last message.
        new_message: Message,
        /// The delegate calls.
        tool_calls: Vec<ToolCall>,
        /// Step usage.
        usage: Usage,
    }
);
payload_struct!(
    /// `resolveToolResults`.
    ResolveToolResults {
        /// Results in call order.
        tool_results: Vec<ToolResult>,
    }
);
payload_struct!(
    /// `attemptCompletion`.
    AttemptCompletion {
        /// The completion tool's result.
        tool_result: ToolResult,
    }
);
payload_struct!(
    /// `finishToolCall` / `finishAllToolCalls`.
    NewMessages {
        /// The tool message.
        new_messages: Vec<Message>,
    }
);
payload_struct!(
    /// `resumeToolCalls`.
    ResumeToolCalls {
        /// Calls still to run.
        pending_tool_calls: Vec<ToolCall>,
        /// Results gathered so far.
        partial_tool_results: Vec<ToolResult>,
    }
);
payload_struct!(
    /// `continueToNextStep`.
    ContinueToNextStep {
        /// The finished step's checkpoint.
        checkpoint: Checkpoint,
        /// The finished step.
        step: Step,
        /// The next step's checkpoint (new id, step + 1).
        next_checkpoint: Checkpoint,
    }
);
payload_struct!(
    /// `stopRunByInteractiveTool` / `stopRunByDelegate` / `stopRunByExceededMaxSteps`.
    StopRun {
        /// The stored checkpoint.
        checkpoint: Checkpoint,
        /// The last step.
        step: Step,
    }
);
payload_struct!(
    /// `stopRunByError`.
    StopRunByError {
        /// The stored checkpoint.
        checkpoint: Checkpoint,
        /// The last step.
        step: Step,
        /// What went wrong.
        error: RunError,
    }
);
payload_struct!(
    /// `completeRun`.
    CompleteRun {
        /// The stored checkpoint.
        checkpoint: Checkpoint,
        /// The last step.
        step: Step,
        /// The run's result text.
        text: String,
        /// Usage of the final generation (zero for a direct completion).
        usage: Usage,
    }
);
payload_struct!(
    /// Streaming start events carry nothing.
    Empty {}
);
payload_struct!(
    /// A streaming delta.
    Delta {
        /// The delta text.
        delta: String,
    }
);
payload_struct!(
    /// A streaming completion.
    Text {
        /// Everything streamed.
        text: String,
    }
);
payload_struct!(
    /// `initializeRuntime`.
    InitializeRuntime {
        /// Engine version.
        runtime_version: String,
        /// `local`.
        runtime: Option<String>,
        /// The Expert of this segment.
        expert_name: String,
        /// Keys resolved for the segment.
        experts: Vec<String>,
        /// Model id.
        model: String,
        /// Job-wide step limit.
        max_steps: Option<u32>,
        /// Retry limit.
        max_retries: u32,
        /// Per-generation timeout, ms.
        timeout: u64,
        /// The query, for a fresh segment.
        query: Option<String>,
        /// The answer, for a resumed segment.
        interactive_tool_call: Option<InteractiveToolCallResult>,
    }
);
payload_struct!(
    /// `skillStarting`.
    SkillStarting {
        /// Skill name.
        skill_name: String,
        /// Command.
        command: String,
        /// Arguments.
        args: Vec<String>,
    }
);
payload_struct!(
    /// `skillConnected`.
    SkillConnected {
        /// Skill name.
        skill_name: String,
        /// The server's `{name, version}`.
        server_info: Option<Value>,
        /// Transport construction time.
        spawn_duration_ms: Option<u64>,
        /// `initialize` round trip.
        handshake_duration_ms: Option<u64>,
        /// `tools/list` time.
        tool_discovery_duration_ms: Option<u64>,
        /// Connect time.
        connect_duration_ms: Option<u64>,
        /// Total time.
        total_duration_ms: Option<u64>,
    }
);
payload_struct!(
    /// `skillStderr`.
    SkillStderr {
        /// Skill name.
        skill_name: String,
        /// A trimmed stderr chunk.
        message: String,
    }
);
payload_struct!(
    /// `skillDisconnected`.
    SkillDisconnected {
        /// Skill name.
        skill_name: String,
    }
);

/// What the egress proxy did with a connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum ProxyAction {
    /// The tunnel was opened.
    Allowed,
    /// The connection was refused.
    Blocked,
}

payload_struct!(
    /// `proxyAccess`: one decision of the egress proxy.
    ProxyAccess {
        /// `allowed` or `blocked`.
        action: ProxyAction,
        /// The requested host, as the client named it.
        domain: String,
        /// The requested port.
        port: u16,
        /// Why it was blocked.
        reason: Option<String>,
    }
);

payload_struct!(
    /// `jobTakenOver`: a cluster worker holds the job now, after the worker that ran it stopped
    /// mid-run (killed, paused or cut off past its lease, or handed the job back on shutdown).
    /// Emitted before anything the new holder runs; its envelope carries the coordinator's
    /// `expertKey` and the `stepNumber` the job goes on from, so it is stored with that run.
    JobTakenOver {
        /// The worker that holds the job now (`pid <pid> on <host>`).
        worker: String,
        /// What it means for the job's history.
        message: String,
    }
);

#[cfg(test)]
mod tests {
    use super::{Event, EventPayload};

    /// Every event, a streaming delta too, is as large as the largest payload wherever it
    /// waits (a batch for the bus, the bus's mailbox, a subscriber's buffer, a store): the
    /// checkpoint-carrying payloads are boxed so that this stays small. Unboxed, an event was
    /// 1,640 bytes (`continueToNextStep` holds two checkpoints).
    #[test]
    fn an_event_is_small_whatever_its_payload_carries() {
        let (event, payload) = (size_of::<Event>(), size_of::<EventPayload>());
        eprintln!("Event {event} bytes, EventPayload {payload} bytes");
        assert!(event <= 384, "Event: {event} bytes");
    }
}
