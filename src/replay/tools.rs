//! The tool side of a replay, plugged into the run's tool-call task and skill set-up
//! (`actor::run`): [`ToolReplay`] answers every tool call from the recording (playback: no
//! skill starts, no process, no network), or lets the real skill answer and notes each result
//! that differs from the recorded one (live).
//!
//! A recorded result is found by the calling Expert, the tool-call id (the model's, which the
//! replayed model reproduces) and the tool name; results with the same key are handed out in
//! recorded order; a result no event shows comes from the checkpoints' tool messages. In playback each skill of an Expert offers the tools the recording shows it
//! was called with, so the run's tool index (and the skill name of each call) is the recorded
//! one.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::Mutex;

use serde_json::json;

use super::Recording;
use super::compare::{segments, tool_result};
use crate::agent::Machine;
use crate::schema::{EventPayload, Message, MessagePart, ToolCall, ToolResult};
use crate::skill::ToolDefinition;

/// Who makes a tool call: the run segment, its Expert and the step.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Caller {
    /// The replayed run id.
    pub run_id: String,
    /// The Expert.
    pub expert_key: String,
    /// The step.
    pub step: u32,
}

impl Caller {
    /// The caller running `machine`.
    pub(crate) fn of(machine: &Machine) -> Self {
        Caller {
            run_id: machine.setting().run_id.clone(),
            expert_key: machine.setting().expert.key.clone(),
            step: machine.checkpoint().step_number,
        }
    }
}

/// How a replay treats tools.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ToolMode {
    /// Answer every call with the recorded result.
    Playback,
    /// Call the real skill, compare its result with the recorded one.
    Live,
}

/// A live result that differs from the recorded one (or has none).
#[derive(Debug, Clone)]
pub(crate) struct ToolDiff {
    /// Who called.
    pub caller: Caller,
    /// The call.
    pub call: ToolCall,
    /// The recorded run that made the call, and its result, when there is one.
    pub expected: Option<(String, ToolResult)>,
    /// What the tool returned now.
    pub live: ToolResult,
}

type Key = (String, String, String);

/// Recorded tool results for one replay (see the module docs).
#[derive(Debug)]
pub(crate) struct ToolReplay {
    mode: ToolMode,
    /// Recorded results by (Expert, call id, tool), in recorded order; each is handed out once.
    recorded: Mutex<HashMap<Key, VecDeque<(String, ToolResult)>>>,
    /// The tools each (Expert, skill) was called with in the recording.
    tools: BTreeMap<(String, String), Vec<ToolDefinition>>,
    /// Live results that differ from the recording, in the order they came.
    diffs: Mutex<Vec<ToolDiff>>,
}

impl ToolReplay {
    /// The recorded results and tools of `rec`.
    pub(crate) fn new(rec: &Recording, mode: ToolMode) -> Self {
        let mut recorded: HashMap<Key, VecDeque<(String, ToolResult)>> = HashMap::new();
        let mut tools: BTreeMap<(String, String), Vec<ToolDefinition>> = BTreeMap::new();
        for seg in segments(&rec.events) {
            for e in &seg.events {
                let results: Vec<&ToolResult> = match &e.payload {
                    EventPayload::ResolveToolResults(p) => p.tool_results.iter().collect(),
                    EventPayload::AttemptCompletion(p) => vec![&p.tool_result],
                    EventPayload::CallTools(p) => {
                        for c in &p.tool_calls {
                            let known = tools
                                .entry((seg.expert.clone(), c.skill_name.clone()))
                                .or_default();
                            if !known.iter().any(|t| t.name == c.tool_name) {
                                known.push(ToolDefinition {
                                    skill_name: c.skill_name.clone(),
                                    name: c.tool_name.clone(),
                                    description: None,
                                    input_schema: json!({"type": "object"}),
                                });
                            }
                        }
                        Vec::new()
                    }
                    _ => Vec::new(),
                };
                for r in results {
                    recorded
                        .entry((seg.expert.clone(), r.id.clone(), r.tool_name.clone()))
                        .or_default()
                        .push_back((seg.run_id.clone(), r.clone()));
                }
            }
        }
        // A result no event shows (Perstack's completion in the same turn as other calls
        // emits no `attemptCompletion`) is taken from the checkpoints' tool messages.
        for cp in &rec.checkpoints {
            for m in &cp.messages {
                let Message::ToolMessage(body) = m else {
                    continue;
                };
                for part in &body.contents {
                    let MessagePart::ToolResultPart(p) = part else {
                        continue;
                    };
                    let key = (
                        cp.expert.key.clone(),
                        p.tool_call_id.clone(),
                        p.tool_name.clone(),
                    );
                    recorded.entry(key).or_insert_with(|| {
                        VecDeque::from([(
                            cp.run_id.clone(),
                            ToolResult {
                                id: p.tool_call_id.clone(),
                                skill_name: String::new(),
                                tool_name: p.tool_name.clone(),
                                result: p.contents.clone(),
                                is_error: p.is_error.unwrap_or(false),
                                extra: serde_json::Map::new(),
                            },
                        )])
                    });
                }
            }
        }
        ToolReplay {
            mode,
            recorded: Mutex::new(recorded),
            tools,
            diffs: Mutex::new(Vec::new()),
        }
    }

    /// Whether calls are answered from the recording (no skill starts).
    pub(crate) fn plays_back(&self) -> bool {
        self.mode == ToolMode::Playback
    }

    /// The tools `expert`'s skill `skill` offers in playback: those the recording called.
    pub(crate) fn tools_of(&self, expert: &str, skill: &str) -> Vec<ToolDefinition> {
        self.tools
            .get(&(expert.to_owned(), skill.to_owned()))
            .cloned()
            .unwrap_or_default()
    }

    /// In playback, the recorded result of `call` (an error result naming the call when the
    /// recording has none, so the replay shows where it left the recording); `None` in live
    /// mode, where the skill answers.
    pub(crate) fn played(&self, caller: &Caller, call: &ToolCall) -> Option<ToolResult> {
        if !self.plays_back() {
            return None;
        }
        Some(self.take(caller, call).map(|(_, r)| r).unwrap_or_else(|| {
            ToolResult::new(
                call,
                call.skill_name.clone(),
                vec![MessagePart::text(
                    json!({
                        "error": "NotRecorded",
                        "message": format!("The recording has no result for tool call {} ({}).", call.id, call.tool_name),
                    })
                    .to_string(),
                )],
            )
        }))
    }

    /// In live mode, compare `live` with the recorded result of `call`; a difference is kept
    /// for [`ToolReplay::diffs`].
    pub(crate) fn observe(&self, caller: &Caller, call: &ToolCall, live: &ToolResult) {
        let expected = self.take(caller, call);
        if expected.as_ref().map(|(_, r)| tool_result(r)) != Some(tool_result(live)) {
            let diff = ToolDiff {
                caller: caller.clone(),
                call: call.clone(),
                expected,
                live: live.clone(),
            };
            if let Ok(mut diffs) = self.diffs.lock() {
                diffs.push(diff);
            }
        }
    }

    /// The live results that differed, in the order they came.
    pub(crate) fn diffs(&self) -> Vec<ToolDiff> {
        self.diffs.lock().map(|d| d.clone()).unwrap_or_default()
    }

    fn take(&self, caller: &Caller, call: &ToolCall) -> Option<(String, ToolResult)> {
        let key = (
            caller.expert_key.clone(),
            call.id.clone(),
            call.tool_name.clone(),
        );
        let mut found = self
            .recorded
            .lock()
            .ok()?
            .get_mut(&key)
            .and_then(VecDeque::pop_front)?;
        if found.1.skill_name.is_empty() {
            found.1.skill_name.clone_from(&call.skill_name); // a checkpoint's part names no skill
        }
        Some(found)
    }
}
