//! The view model of `perstack start`: what the screen shows about one job, built from its
//! events as they come.
//!
//! Owns the event → screen-state mapping: the runs as a tree (children under the run that
//! delegated to them, in delegation call order), each run's status, step, tokens and times, the
//! streamed reasoning and result text (capped), tool calls with their arguments and results,
//! the pending interactive call and the status panel's settings. It never does I/O and never
//! blocks: [`ViewModel::apply`] is called by the task that drains the job's event stream and
//! takes microseconds, so the engine never waits for the screen. The views only read it.

use std::collections::{HashMap, VecDeque};

use crate::schema::{Event, EventPayload, ToolCall, ToolResult, Usage};

/// Text kept per run and stream (reasoning, result): the tail of a longer text is kept.
pub(crate) const TEXT_CAP: usize = 16 * 1024;
/// Tool calls kept per run: older ones are dropped first.
pub(crate) const TOOL_CAP: usize = 200;
/// Event kinds kept per run for the events view.
pub(crate) const EVENT_CAP: usize = 200;
/// Characters of a tool call's arguments or result kept for display.
const SUMMARY_CAP: usize = 300;

/// Where a run stands, as the tree shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum RunStatus {
    /// Started, not stopped yet.
    Running,
    /// Waiting for the Experts it delegated to.
    Delegating,
    /// Waiting for the user's answer to an interactive call.
    WaitingForUser,
    /// Finished with a result.
    Completed,
    /// The job-wide step limit stopped it.
    MaxSteps,
    /// An error stopped it (the error's message).
    Error(String),
}

impl RunStatus {
    /// A short label for the tree.
    pub(crate) fn label(&self) -> &'static str {
        match self {
            RunStatus::Running => "run",
            RunStatus::Delegating => "wait",
            RunStatus::WaitingForUser => "ask",
            RunStatus::Completed => "done",
            RunStatus::MaxSteps => "max",
            RunStatus::Error(_) => "error",
        }
    }
}

/// Text that keeps its last [`TEXT_CAP`] bytes.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct CappedText {
    text: String,
}

impl CappedText {
    /// Append `s`, dropping the oldest text beyond the cap (at a character boundary).
    pub(crate) fn push(&mut self, s: &str) {
        self.text.push_str(s);
        if self.text.len() > TEXT_CAP {
            let mut cut = self.text.len() - TEXT_CAP;
            while !self.text.is_char_boundary(cut) {
                cut += 1;
            }
            self.text.drain(..cut);
        }
    }

    /// Replace the text with `s` (a stream's complete text), capped the same way.
    pub(crate) fn set(&mut self, s: &str) {
        self.text.clear();
        self.push(s);
    }

    /// The kept text.
    pub(crate) fn as_str(&self) -> &str {
        &self.text
    }
}

/// One tool call of a run, with its result once in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ToolLine {
    /// The call id.
    pub id: String,
    /// The tool's name.
    pub name: String,
    /// The arguments as compact JSON (shortened).
    pub args: String,
    /// The result text (shortened), once in.
    pub result: Option<String>,
}

/// One run of the job.
#[derive(Debug, Clone)]
pub(crate) struct RunNode {
    /// The Expert.
    pub expert_key: String,
    /// The run that delegated to this one.
    pub parent: Option<usize>,
    /// The parent's delegate call id that started this run.
    pub delegate_call: Option<String>,
    /// The query it got (fresh runs and delegates).
    pub query: Option<String>,
    /// Status.
    pub status: RunStatus,
    /// The latest step number.
    pub step: u32,
    /// Tokens of this run's generations.
    pub usage: Usage,
    /// `startRun`'s timestamp (epoch ms).
    pub started_ms: u64,
    /// The terminal event's timestamp.
    pub finished_ms: Option<u64>,
    /// Streamed reasoning.
    pub reasoning: CappedText,
    /// Streamed result text (and the final `completeRun` text).
    pub result: CappedText,
    /// Tool calls, oldest first, at most [`TOOL_CAP`].
    pub tools: VecDeque<ToolLine>,
    /// The last event kinds (step, type), at most [`EVENT_CAP`].
    pub events: VecDeque<(u32, &'static str)>,
    /// The delegate call ids in the order the model made them (orders the children).
    delegate_calls: Vec<String>,
    /// Child runs, in arrival order.
    children: Vec<usize>,
}

impl RunNode {
    /// Milliseconds since the run started, up to its end or `now_ms`.
    pub(crate) fn elapsed_ms(&self, now_ms: u64) -> u64 {
        self.finished_ms
            .unwrap_or(now_ms)
            .saturating_sub(self.started_ms)
    }
}

/// The interactive call the job waits on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct PendingCall {
    /// The coordinator's Expert key (the continuation must name it).
    pub expert_key: String,
    /// The call.
    pub tool_call_id: String,
    /// Its tool.
    pub tool_name: String,
    /// Its skill.
    pub skill_name: String,
    /// The arguments (compact JSON).
    pub args: String,
}

impl PendingCall {
    /// The answer in Perstack's JSON form `{"toolCallId","toolName","skillName","text"}`,
    /// which names the call exactly (plain text would let the engine guess).
    pub(crate) fn answer(&self, text: &str) -> String {
        serde_json::json!({
            "toolCallId": self.tool_call_id,
            "toolName": self.tool_name,
            "skillName": self.skill_name,
            "text": text,
        })
        .to_string()
    }
}

/// The status panel's settings, from `initializeRuntime` and the checkpoints.
#[derive(Debug, Clone, Default, PartialEq)]
pub(crate) struct Settings {
    /// Model id.
    pub model: String,
    /// Provider name (set by the session: events do not carry it).
    pub provider: String,
    /// Runtime (`local`, `docker`).
    pub runtime: String,
    /// Job-wide step limit.
    pub max_steps: Option<u32>,
    /// Retry limit.
    pub max_retries: u32,
    /// Per-generation timeout, ms.
    pub timeout_ms: u64,
    /// The model's context window, when known.
    pub context_window: Option<u64>,
    /// The latest context-window usage (0..1).
    pub context_usage: Option<f64>,
}

/// Everything the screen shows about one job.
#[derive(Debug, Default)]
pub(crate) struct ViewModel {
    /// The job id (from the first event).
    pub job_id: Option<String>,
    /// The status panel.
    pub settings: Settings,
    /// Runs in arrival order.
    pub runs: Vec<RunNode>,
    /// Run id → index in `runs`.
    index: HashMap<String, usize>,
    /// Tokens of the whole job.
    pub usage: Usage,
    /// The highest step number seen.
    pub step: u32,
    /// The interactive call waiting for an answer.
    pub pending: Option<PendingCall>,
    /// Events applied so far (the redraw loop compares it to decide whether to draw).
    pub events: u64,
}

impl ViewModel {
    /// An empty view model whose status panel names `provider`.
    pub(crate) fn new(provider: &str) -> Self {
        let mut vm = ViewModel::default();
        vm.settings.provider = provider.to_owned();
        vm
    }

    /// Fold one event in.
    pub(crate) fn apply(&mut self, event: &Event) {
        self.events += 1;
        if self.job_id.is_none() {
            self.job_id = Some(event.job_id.clone());
        }
        if let Some(step) = event.step_number {
            self.step = self.step.max(step);
        }
        if let EventPayload::InitializeRuntime(p) = &event.payload {
            let s = &mut self.settings;
            s.model.clone_from(&p.model);
            s.runtime = p.runtime.clone().unwrap_or_else(|| "local".into());
            s.max_steps = p.max_steps;
            s.max_retries = p.max_retries;
            s.timeout_ms = p.timeout;
            return;
        }
        if let EventPayload::StartRun(p) = &event.payload {
            self.start_run(event, p);
        }
        if let Some(cp) = event.checkpoint() {
            if cp.context_window.is_some() {
                self.settings.context_window = cp.context_window;
            }
            if cp.context_window_usage.is_some() {
                self.settings.context_usage = cp.context_window_usage;
            }
        }
        let Some(&i) = self.index.get(&event.run_id) else {
            return;
        };
        let kind = event.kind();
        let run = &mut self.runs[i];
        if let Some(step) = event.step_number {
            run.step = run.step.max(step);
            if !kind.starts_with("stream") {
                if run.events.len() == EVENT_CAP {
                    run.events.pop_front();
                }
                run.events.push_back((step, kind));
            }
        }
        let mut usage = Usage::default();
        let mut child_result = None;
        match &event.payload {
            EventPayload::StartStreamingReasoning(_) => run.reasoning.set(""),
            EventPayload::StreamReasoning(d) => run.reasoning.push(&d.delta),
            EventPayload::CompleteStreamingReasoning(t) => run.reasoning.set(&t.text),
            EventPayload::StartStreamingRunResult(_) => run.result.set(""),
            EventPayload::StreamRunResult(d) => run.result.push(&d.delta),
            EventPayload::CompleteStreamingRunResult(t) => run.result.set(&t.text),
            EventPayload::CallTools(p) => {
                usage = p.usage;
                for call in &p.tool_calls {
                    push_tool(run, call);
                }
            }
            EventPayload::CallDelegate(p) => {
                run.delegate_calls = p.tool_calls.iter().map(|c| c.id.clone()).collect();
            }
            EventPayload::CallInteractiveTool(p) => {
                self.pending = Some(PendingCall {
                    expert_key: run.expert_key.clone(),
                    tool_call_id: p.tool_call.id.clone(),
                    tool_name: p.tool_call.tool_name.clone(),
                    skill_name: p.tool_call.skill_name.clone(),
                    args: shorten(&p.tool_call.args.to_string()),
                });
            }
            EventPayload::Retry(p) => {
                usage = p.usage;
                run.result.set(&format!("retrying: {}", p.reason));
            }
            EventPayload::ResolveToolResults(p) => {
                for r in &p.tool_results {
                    set_result(run, r);
                }
            }
            EventPayload::AttemptCompletion(p) => set_result(run, &p.tool_result),
            EventPayload::ResumeToolCalls(p) => {
                for r in &p.partial_tool_results {
                    set_result(run, r);
                }
            }
            EventPayload::StopRunByDelegate(_) => self.stop(i, RunStatus::Delegating, event),
            EventPayload::StopRunByInteractiveTool(_) => {
                self.stop(i, RunStatus::WaitingForUser, event);
            }
            EventPayload::StopRunByExceededMaxSteps(_) => {
                self.stop(i, RunStatus::MaxSteps, event);
            }
            EventPayload::StopRunByError(p) => {
                self.stop(i, RunStatus::Error(p.error.message.clone()), event);
            }
            EventPayload::CompleteRun(p) => {
                usage = p.usage;
                let run = &mut self.runs[i];
                if run.result.as_str() != p.text {
                    run.result.set(&p.text);
                }
                child_result = Some(p.text.clone());
                self.stop(i, RunStatus::Completed, event);
            }
            _ => {}
        }
        let run = &mut self.runs[i];
        run.usage += usage;
        self.usage += usage;
        // A finished child's result is its parent's delegate call result.
        if let (Some(text), Some(parent), Some(call)) =
            (child_result, run.parent, run.delegate_call.clone())
        {
            let parent = &mut self.runs[parent];
            if let Some(line) = parent.tools.iter_mut().find(|t| t.id == call) {
                line.result = Some(shorten(&text));
            }
        }
    }

    fn start_run(&mut self, event: &Event, p: &crate::schema::StartRun) {
        if self.index.contains_key(&event.run_id) {
            return;
        }
        // A new run continues the job: the interactive call it answers is no longer pending.
        self.pending = None;
        let by = p.initial_checkpoint.delegated_by.as_ref();
        let parent = by.and_then(|b| self.index.get(&b.run_id).copied());
        let query = p
            .input_messages
            .iter()
            .rev()
            .find(|m| matches!(m, crate::schema::Message::UserMessage(_)))
            .and_then(|m| m.first_text())
            .map(str::to_owned);
        let i = self.runs.len();
        self.runs.push(RunNode {
            expert_key: event.expert_key.clone().unwrap_or_default(),
            parent,
            delegate_call: by.map(|b| b.tool_call_id.clone()),
            query,
            status: RunStatus::Running,
            step: event.step_number.unwrap_or(0),
            usage: Usage::default(),
            started_ms: event.timestamp,
            finished_ms: None,
            reasoning: CappedText::default(),
            result: CappedText::default(),
            tools: VecDeque::new(),
            events: VecDeque::new(),
            delegate_calls: Vec::new(),
            children: Vec::new(),
        });
        self.index.insert(event.run_id.clone(), i);
        if let Some(parent) = parent {
            self.runs[parent].children.push(i);
        }
    }

    fn stop(&mut self, i: usize, status: RunStatus, event: &Event) {
        let run = &mut self.runs[i];
        run.status = status;
        run.finished_ms = Some(event.timestamp);
    }

    /// The runs in tree order with their depth: top-level runs in arrival order, each followed
    /// by its children in delegation call order (then arrival order), depth first.
    pub(crate) fn tree(&self) -> Vec<(usize, usize)> {
        let mut out = Vec::with_capacity(self.runs.len());
        let mut stack: Vec<(usize, usize)> = self
            .runs
            .iter()
            .enumerate()
            .filter(|(_, r)| r.parent.is_none())
            .map(|(i, _)| (i, 0))
            .rev()
            .collect();
        while let Some((i, depth)) = stack.pop() {
            out.push((i, depth));
            let run = &self.runs[i];
            let mut children = run.children.clone();
            children.sort_by_key(|&c| {
                let call = self.runs[c].delegate_call.as_deref();
                let order = run
                    .delegate_calls
                    .iter()
                    .position(|id| Some(id.as_str()) == call)
                    .unwrap_or(usize::MAX);
                (order, c)
            });
            stack.extend(children.into_iter().rev().map(|c| (c, depth + 1)));
        }
        out
    }

    /// How many runs are running now.
    pub(crate) fn running(&self) -> usize {
        self.runs
            .iter()
            .filter(|r| r.status == RunStatus::Running)
            .count()
    }
}

fn push_tool(run: &mut RunNode, call: &ToolCall) {
    if run.tools.len() == TOOL_CAP {
        run.tools.pop_front();
    }
    run.tools.push_back(ToolLine {
        id: call.id.clone(),
        name: call.tool_name.clone(),
        args: shorten(&call.args.to_string()),
        result: None,
    });
}

fn set_result(run: &mut RunNode, result: &ToolResult) {
    let text: Vec<&str> = result.result.iter().filter_map(|p| p.as_text()).collect();
    let text = if text.is_empty() {
        "(no text)".to_owned()
    } else {
        text.join(" ")
    };
    if let Some(line) = run.tools.iter_mut().find(|t| t.id == result.id) {
        line.result = Some(shorten(&text));
    }
}

/// `s` on one line, at most [`SUMMARY_CAP`] characters.
pub(crate) fn shorten(s: &str) -> String {
    let one_line: String = s
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect();
    if one_line.chars().count() <= SUMMARY_CAP {
        return one_line;
    }
    let mut out: String = one_line.chars().take(SUMMARY_CAP - 1).collect();
    out.push('…');
    out
}

#[cfg(test)]
#[path = "view_model_tests.rs"]
mod tests;
