//! Tool calls and tool results as they travel in steps, events and checkpoints.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use super::MessagePart;

/// A call the model made: `{id, skillName, toolName, args}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ToolCall {
    /// The provider's tool-call id.
    pub id: String,
    /// The owning skill (`@perstack/base`, a skill key, or a delegate Expert's name).
    pub skill_name: String,
    /// The tool's name as the model saw it.
    pub tool_name: String,
    /// The arguments object.
    pub args: Value,
    /// Fields this engine does not know, kept for round trips.
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

/// The result of one call: `{id, skillName, toolName, result}`; `id` is the call's id.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ToolResult {
    /// The tool-call id this answers.
    pub id: String,
    /// The skill that produced it (`delegate/<key>` for delegations).
    pub skill_name: String,
    /// The tool's name.
    pub tool_name: String,
    /// Result parts (text, inline image, inline file).
    pub result: Vec<MessagePart>,
    /// Fields this engine does not know, kept for round trips.
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

impl ToolCall {
    /// A call with no extra fields.
    pub fn new(
        id: impl Into<String>,
        skill_name: impl Into<String>,
        tool_name: impl Into<String>,
        args: Value,
    ) -> Self {
        ToolCall {
            id: id.into(),
            skill_name: skill_name.into(),
            tool_name: tool_name.into(),
            args,
            extra: Map::new(),
        }
    }
}

impl ToolResult {
    /// A result with no extra fields.
    pub fn new(call: &ToolCall, skill_name: impl Into<String>, result: Vec<MessagePart>) -> Self {
        ToolResult {
            id: call.id.clone(),
            skill_name: skill_name.into(),
            tool_name: call.tool_name.clone(),
            result,
            extra: Map::new(),
        }
    }

    /// The concatenated text of the result's text parts.
    pub fn text(&self) -> String {
        self.result
            .iter()
            .filter_map(MessagePart::as_text)
            .collect::<Vec<_>>()
            .join("")
    }
}
