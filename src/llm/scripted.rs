//! The scripted provider: plays turns from a TOML file instead of calling a model.
//!
//! ```toml
//! [[turns]]
//! expert = "coordinator"            # the Expert key whose generation this answers
//! # query = "do A"                  # optional: only for the run whose first user message is this
//! reasoning = "Let me split this."  # optional reasoning block (streamed)
//! text = ""                         # optional text
//! usage = { inputTokens = 100, outputTokens = 10 }
//! toolCalls = [
//!   { id = "call_a", name = "child-a", args = { query = "do A" } },
//!   { id = "call_b", name = "child-b", args = { query = "do B" } },
//! ]
//!
//! [[turns]]
//! expert = "child-a"
//! error = { status = 529, message = "Overloaded", retryable = true }
//!
//! [[turns]]
//! expert = "child-b"
//! error = { status = 429, message = "Slow down", retryAfterMs = 2000 }
//! ```
//!
//! The turns that answer a run are those whose `expert` matches the calling Expert and whose
//! `query` (when given) equals the run's first user message, in file order; parallel children
//! with different queries are therefore deterministic. A run's n-th generation takes the n-th of
//! its turns, where n is the larger of the generations this process already answered for that
//! Expert and query and the number of model turns (expert messages) already in the history. The
//! second part makes a job continued in a new process (after a crash) pick up the right turn
//! without replaying finished ones. A run with no turn left gets a non-retryable error naming
//! the Expert.

use std::collections::HashMap;
use std::path::Path;
use std::sync::Mutex;
use std::time::Duration;

use serde::Deserialize;
use serde_json::{Map, Value};

use super::{
    FinishReason, GeneratedToolCall, GenerationError, GenerationRequest, LanguageModel, PartStream,
    StreamPart,
};
use crate::schema::{Message, Usage};

/// A script file's content.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Script {
    /// Turns in file order.
    #[serde(default)]
    pub turns: Vec<Turn>,
}

/// One scripted generation.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Turn {
    /// The Expert key this turn answers.
    pub expert: String,
    /// Only for the run whose first user message equals this.
    pub query: Option<String>,
    /// Reasoning text.
    pub reasoning: Option<String>,
    /// Reasoning signature.
    pub signature: Option<String>,
    /// Answer text (streamed in two deltas).
    pub text: Option<String>,
    /// Tool calls.
    #[serde(default)]
    pub tool_calls: Vec<ScriptedCall>,
    /// `stop`, `tool-calls`, `length` or anything else; default from the content.
    pub finish: Option<String>,
    /// Token usage (missing fields are 0; `totalTokens` defaults to input + output).
    pub usage: Option<ScriptedUsage>,
    /// Fail instead of answering.
    pub error: Option<ScriptedError>,
    /// Wait this long before answering (simulated model latency).
    pub delay_ms: Option<u64>,
}

/// A scripted tool call.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ScriptedCall {
    /// Call id; default `call_<name>_<n>`.
    pub id: Option<String>,
    /// Tool name.
    pub name: String,
    /// Arguments; default `{}`.
    #[serde(default)]
    pub args: Option<Value>,
}

/// Scripted usage numbers.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct ScriptedUsage {
    /// Prompt tokens.
    #[serde(default)]
    pub input_tokens: u64,
    /// Completion tokens.
    #[serde(default)]
    pub output_tokens: u64,
    /// Reasoning tokens.
    #[serde(default)]
    pub reasoning_tokens: u64,
    /// Total; default input + output.
    pub total_tokens: Option<u64>,
    /// Cached prompt tokens.
    #[serde(default)]
    pub cached_input_tokens: u64,
}

/// A scripted failure.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ScriptedError {
    /// HTTP status to report.
    pub status: Option<u16>,
    /// Error name; default `APICallError`.
    pub name: Option<String>,
    /// Message.
    pub message: String,
    /// Whether a retry may help; default: status is 429 or 5xx.
    pub retryable: Option<bool>,
    /// The wait the "server" asks for, as a `Retry-After` header would.
    #[serde(rename = "retryAfterMs")]
    pub retry_after_ms: Option<u64>,
}

/// Why a script could not be loaded.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ScriptError {
    /// The file could not be read.
    #[error("cannot read script file {path}: {source}")]
    Io {
        /// The file.
        path: String,
        /// The cause.
        source: std::io::Error,
    },
    /// The file is not a valid script.
    #[error("invalid script file {path}: {message}")]
    Invalid {
        /// The file.
        path: String,
        /// What is wrong, with line and column.
        message: String,
    },
}

/// Plays a [`Script`].
#[derive(Debug)]
pub struct ScriptedModel {
    turns: Vec<Turn>,
    /// Generations answered per (Expert, query) in this process.
    used: Mutex<HashMap<(String, Option<String>), usize>>,
}

impl ScriptedModel {
    /// A model playing `script`.
    pub fn new(script: Script) -> Self {
        ScriptedModel {
            turns: script.turns,
            used: Mutex::new(HashMap::new()),
        }
    }

    /// Parse a script from TOML text; `path` names it in errors.
    pub fn parse(text: &str, path: &str) -> Result<Self, ScriptError> {
        let script: Script = toml::from_str(text).map_err(|e| ScriptError::Invalid {
            path: path.into(),
            message: e.to_string(),
        })?;
        Ok(ScriptedModel::new(script))
    }

    /// Load a script file.
    pub fn load(path: &Path) -> Result<Self, ScriptError> {
        let text = std::fs::read_to_string(path).map_err(|source| ScriptError::Io {
            path: path.display().to_string(),
            source,
        })?;
        Self::parse(&text, &path.display().to_string())
    }

    fn take_turn(
        &self,
        expert: &str,
        query: Option<&str>,
        in_history: usize,
    ) -> Option<(usize, Turn)> {
        let mut used = self
            .used
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let count = used
            .entry((expert.to_string(), query.map(str::to_owned)))
            .or_insert(0);
        let n = (*count).max(in_history);
        let (i, turn) = self
            .turns
            .iter()
            .enumerate()
            .filter(|(_, t)| {
                t.expert == expert && t.query.as_deref().is_none_or(|q| Some(q) == query)
            })
            .nth(n)?;
        *count = n + 1;
        Some((i, turn.clone()))
    }
}

fn first_user_text(messages: &[Message]) -> Option<&str> {
    messages.iter().find_map(|m| match m {
        Message::UserMessage(_) => m.first_text(),
        _ => None,
    })
}

#[async_trait::async_trait]
impl LanguageModel for ScriptedModel {
    fn name(&self) -> &str {
        "scripted"
    }

    async fn stream(&self, request: GenerationRequest) -> Result<PartStream, GenerationError> {
        let query = first_user_text(&request.messages);
        let in_history = request.messages.iter().filter(|m| m.is_expert()).count();
        let Some((index, turn)) = self.take_turn(&request.expert_key, query, in_history) else {
            return Err(GenerationError {
                name: "ScriptExhausted".into(),
                message: format!(
                    "scripted provider: no turn left for expert \"{}\"{}",
                    request.expert_key,
                    query
                        .map(|q| format!(" with query {q:?}"))
                        .unwrap_or_default()
                ),
                status_code: None,
                retryable: false,
                retry_after: None,
            });
        };
        if let Some(ms) = turn.delay_ms {
            tokio::time::sleep(Duration::from_millis(ms)).await;
        }
        if let Some(e) = turn.error {
            let retryable = e
                .retryable
                .unwrap_or(matches!(e.status, Some(429) | Some(500..=599)));
            return Err(GenerationError {
                name: e.name.unwrap_or_else(|| "APICallError".into()),
                message: e.message,
                status_code: e.status,
                retryable,
                retry_after: e.retry_after_ms.map(Duration::from_millis),
            });
        }
        Ok(Box::pin(futures::stream::iter(
            turn_parts(index, turn).into_iter().map(Ok),
        )))
    }
}

fn turn_parts(index: usize, turn: Turn) -> Vec<StreamPart> {
    let mut parts = Vec::new();
    if let Some(r) = turn.reasoning.filter(|r| !r.is_empty()) {
        parts.push(StreamPart::ReasoningDelta(r));
        parts.push(StreamPart::ReasoningEnd {
            signature: turn.signature,
        });
    }
    if let Some(t) = turn.text.filter(|t| !t.is_empty()) {
        let mid = t
            .char_indices()
            .nth(t.chars().count() / 2)
            .map_or(t.len(), |(i, _)| i);
        let (a, b) = t.split_at(mid);
        for d in [a, b].into_iter().filter(|d| !d.is_empty()) {
            parts.push(StreamPart::TextDelta(d.to_string()));
        }
    }
    let has_calls = !turn.tool_calls.is_empty();
    for (n, c) in turn.tool_calls.into_iter().enumerate() {
        parts.push(StreamPart::ToolCall(GeneratedToolCall {
            id: c
                .id
                .unwrap_or_else(|| format!("call_{}_{index}_{n}", c.name)),
            name: c.name,
            args: c.args.unwrap_or_else(|| Value::Object(Map::new())),
        }));
    }
    let reason = match turn.finish.as_deref() {
        Some("stop") => FinishReason::Stop,
        Some("tool-calls") => FinishReason::ToolCalls,
        Some("length") => FinishReason::Length,
        Some(other) => FinishReason::Other(other.to_string()),
        None if has_calls => FinishReason::ToolCalls,
        None => FinishReason::Stop,
    };
    let u = turn.usage.unwrap_or_default();
    let usage = Usage {
        input_tokens: u.input_tokens,
        output_tokens: u.output_tokens,
        reasoning_tokens: u.reasoning_tokens,
        total_tokens: u.total_tokens.unwrap_or(u.input_tokens + u.output_tokens),
        cached_input_tokens: u.cached_input_tokens,
    };
    parts.push(StreamPart::Finish { reason, usage });
    parts
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use futures::StreamExt;

    use super::*;
    use crate::schema::ReasoningBudget;

    fn request(expert: &str, query: &str) -> GenerationRequest {
        GenerationRequest {
            expert_key: expert.into(),
            model: "m".into(),
            messages: vec![Message::user(query)],
            tools: Arc::new(Vec::new()),
            reasoning_budget: ReasoningBudget::default(),
        }
    }

    const SCRIPT: &str = r#"
        [[turns]]
        expert = "child"
        query = "do B"
        text = "B"
        [[turns]]
        expert = "child"
        query = "do A"
        text = "A"
        [[turns]]
        expert = "coord"
        error = { status = 429, message = "slow down" }
    "#;

    async fn text_of(m: &ScriptedModel, expert: &str, query: &str) -> String {
        let mut s = m.stream(request(expert, query)).await.unwrap();
        let mut text = String::new();
        while let Some(Ok(p)) = s.next().await {
            if let StreamPart::TextDelta(d) = p {
                text.push_str(&d);
            }
        }
        text
    }

    #[tokio::test]
    async fn turns_are_selected_by_expert_and_query() {
        let m = ScriptedModel::parse(SCRIPT, "t.toml").unwrap();
        assert_eq!(text_of(&m, "child", "do A").await, "A");
        assert_eq!(text_of(&m, "child", "do B").await, "B");
        let e = m.stream(request("coord", "q")).await.err().unwrap();
        assert_eq!(e.status_code, Some(429));
        assert!(e.retryable);
        let e = m.stream(request("coord", "q")).await.err().unwrap();
        assert_eq!(e.name, "ScriptExhausted");
        assert!(!e.retryable);
    }

    #[test]
    fn unknown_keys_in_a_script_are_errors_naming_the_file() {
        let e =
            ScriptedModel::parse("[[turns]]\nexpert = \"a\"\ntxt = \"x\"\n", "s.toml").unwrap_err();
        let msg = e.to_string();
        assert!(msg.contains("s.toml") && msg.contains("txt"), "{msg}");
    }
}
