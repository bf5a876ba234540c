//! The step: what one turn of the agent loop did. Steps travel inside events only.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use super::{Message, ToolCall, ToolResult, Usage};

/// One turn of the agent loop.
#[serde_with::skip_serializing_none]
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Step {
    /// Job-wide step number.
    pub step_number: u32,
    /// Messages that started the run (first step of a segment only).
    pub input_messages: Option<Vec<Message>>,
    /// Messages added during this step.
    pub new_messages: Vec<Message>,
    /// Calls the model made.
    pub tool_calls: Option<Vec<ToolCall>>,
    /// Results of those calls.
    pub tool_results: Option<Vec<ToolResult>>,
    /// Calls still pending when the step stopped.
    pub pending_tool_calls: Option<Vec<ToolCall>>,
    /// Results gathered when the step stopped.
    pub partial_tool_results: Option<Vec<ToolResult>>,
    /// This step's usage only.
    pub usage: Usage,
    /// Epoch ms.
    pub started_at: u64,
    /// Epoch ms.
    pub finished_at: Option<u64>,
    /// Unknown fields.
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

impl Step {
    /// An empty step.
    pub fn new(step_number: u32, started_at: u64) -> Self {
        Step {
            step_number,
            input_messages: None,
            new_messages: Vec::new(),
            tool_calls: None,
            tool_results: None,
            pending_tool_calls: None,
            partial_tool_results: None,
            usage: Usage::default(),
            started_at,
            finished_at: None,
            extra: Map::new(),
        }
    }
}
