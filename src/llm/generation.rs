//! What one model call produced, assembled from its stream, and how it can fail.

use std::time::Duration;

use serde_json::Value;

use crate::schema::Usage;

/// Why the model stopped.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FinishReason {
    /// Natural end.
    Stop,
    /// It called tools.
    ToolCalls,
    /// The output limit cut it off.
    Length,
    /// Anything else (content filter, error, ...).
    Other(String),
}

/// One reasoning block.
#[derive(Debug, Clone, PartialEq)]
pub struct Thinking {
    /// Reasoning text.
    pub text: String,
    /// Provider signature, passed back on later turns.
    pub signature: Option<String>,
}

/// One tool call as the model made it.
#[derive(Debug, Clone, PartialEq)]
pub struct GeneratedToolCall {
    /// Provider's call id.
    pub id: String,
    /// Tool name.
    pub name: String,
    /// Arguments object.
    pub args: Value,
}

/// A finished generation.
#[derive(Debug, Clone, PartialEq)]
pub struct Generation {
    /// Reasoning blocks, in order.
    pub thinking: Vec<Thinking>,
    /// All text deltas concatenated.
    pub text: String,
    /// Tool calls, in the order the model made them.
    pub tool_calls: Vec<GeneratedToolCall>,
    /// Why it stopped.
    pub finish_reason: FinishReason,
    /// Tokens.
    pub usage: Usage,
}

/// A failed generation, classified once, where it happened.
#[derive(Debug, Clone, PartialEq)]
pub struct GenerationError {
    /// Error class (`APICallError`, `TimeoutError`, ...), written into `stopRunByError`.
    pub name: String,
    /// Message; never contains an API key.
    pub message: String,
    /// HTTP status, when there was one.
    pub status_code: Option<u16>,
    /// Whether trying again may succeed.
    pub retryable: bool,
    /// How long the server asked us to wait before trying again (`Retry-After`).
    pub retry_after: Option<Duration>,
}
