//! Tool calls and tool results as they travel in steps, events and checkpoints.

use std::sync::Arc;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use super::MessagePart;

/// The name of Perstack's base skill: its key in an Expert's `skills`, the `skillName` of its
/// tool calls, and the name its MCP server reports. The one copy of this string in the engine.
pub const BASE_SKILL: &str = "@perstack/base";

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
    /// The arguments object. Shared: a call is copied into the step, the events and the
    /// checkpoint, and its `toolCallPart` in the expert message holds the same arguments;
    /// serialised as the object itself.
    pub args: Arc<Value>,
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
    /// Whether the tool reported an error (an MCP result with `isError: true`).
    ///
    /// Perstack's `ToolResult` has no such field, so it is never serialised: it travels in
    /// memory to the tool message, where it becomes the `toolResultPart`'s `isError` (a field of
    /// Perstack's part type) that providers pass on (Anthropic's `is_error`). A result read back
    /// from a stored checkpoint (`partialToolResults` after an interactive stop or a crash)
    /// has lost it and reaches the model as an ordinary result, as in Perstack.
    #[serde(skip)]
    pub is_error: bool,
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
        args: impl Into<Arc<Value>>,
    ) -> Self {
        ToolCall {
            id: id.into(),
            skill_name: skill_name.into(),
            tool_name: tool_name.into(),
            args: args.into(),
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
            is_error: false,
            extra: Map::new(),
        }
    }

    /// The same result, marked as an error when `is_error` (see [`ToolResult::is_error`]).
    pub fn with_error(mut self, is_error: bool) -> Self {
        self.is_error = is_error;
        self
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::schema::Message;
    use serde_json::json;

    #[test]
    fn an_error_result_marks_its_tool_result_part_and_stays_off_the_tool_result_wire() {
        let call = ToolCall::new("c1", "fixture", "huge", json!({}));
        let failed =
            ToolResult::new(&call, "fixture", vec![MessagePart::text("too big")]).with_error(true);
        let fine = ToolResult::new(&call, "fixture", vec![MessagePart::text("ok")]);
        // Perstack's `ToolResult` wire type has no `isError`.
        let wire = serde_json::to_value(&failed).unwrap();
        assert!(wire.get("isError").is_none(), "{wire}");
        let Message::ToolMessage(body) = Message::tool(&[failed, fine]) else {
            panic!("not a tool message")
        };
        let parts = serde_json::to_value(&body.contents).unwrap();
        assert_eq!(parts[0]["isError"], json!(true), "{parts}");
        // Perstack's parts never carry `isError: false`.
        assert!(parts[1].get("isError").is_none(), "{parts}");
    }
}
