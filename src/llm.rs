//! Language models: the [`LanguageModel`] trait every provider implements (a model streams
//! [`StreamPart`]s for a [`GenerationRequest`]), and the [`scripted`] provider that plays turns
//! from a file (tests, examples, offline demos). Inside the crate, the stream `Assembler` turns
//! parts into a generation for the agent machine, and `retry` is the one retry policy.
//!
//! The HTTP providers ([`anthropic`], [`openai`] for OpenAI, DeepSeek and Azure, [`google`],
//! [`ollama`], [`bedrock`] (Converse over AWS's event stream, SigV4), and [`vertex`], which
//! reuses the Gemini and Anthropic wire formats) each own only their wire format: a request builder and a stream decoder. They
//! share one HTTP provider shell (`shell`: sending, credentials, signing, SSE and NDJSON
//! framing, secrets scrubbed from errors) and the error classification of `http`. [`select`]
//! builds the provider a configuration names.
//!
//! Providers are plain `Arc`'d structs, not actors. They never see checkpoints, only the
//! messages and tools of one call; they classify their own failures into [`GenerationError`]
//! (retryable or not) exactly once.

pub mod anthropic;
mod assemble;
pub mod bedrock;
mod generation;
pub mod google;
pub(crate) mod http;
pub(crate) mod models;
pub mod ollama;
pub mod openai;
pub(crate) mod retry;
pub mod scripted;
pub mod select;
mod shell;
pub mod vertex;

use std::pin::Pin;
use std::sync::Arc;

use futures::Stream;
use serde_json::Value;

pub(crate) use assemble::{Assembler, Signal};
pub use generation::{FinishReason, GeneratedToolCall, GenerationError};
pub(crate) use generation::{Generation, Thinking};

use crate::schema::{Message, ReasoningBudget, Usage};

/// One piece of a streamed answer.
#[derive(Debug, Clone, PartialEq)]
pub enum StreamPart {
    /// A reasoning delta.
    ReasoningDelta(String),
    /// The end of a reasoning block, with its signature.
    ReasoningEnd {
        /// Provider signature.
        signature: Option<String>,
    },
    /// A text delta.
    TextDelta(String),
    /// A complete tool call.
    ToolCall(GeneratedToolCall),
    /// The end of the answer.
    Finish {
        /// Why it stopped.
        reason: FinishReason,
        /// Tokens.
        usage: Usage,
    },
}

/// A tool as offered to the model.
#[derive(Debug, Clone, PartialEq)]
pub struct ToolSpec {
    /// Tool name.
    pub name: String,
    /// Description.
    pub description: Option<String>,
    /// JSON Schema of the input.
    pub input_schema: Value,
}

/// One model call.
#[derive(Debug, Clone)]
pub struct GenerationRequest {
    /// The Expert calling (the scripted provider selects turns by it).
    pub expert_key: String,
    /// Model id.
    pub model: String,
    /// The whole history.
    pub messages: Vec<Message>,
    /// Tools offered; empty for the run-result generation.
    pub tools: Arc<Vec<ToolSpec>>,
    /// Reasoning budget.
    pub reasoning_budget: ReasoningBudget,
}

/// A stream of parts; the first error ends it.
pub type PartStream = Pin<Box<dyn Stream<Item = Result<StreamPart, GenerationError>> + Send>>;

/// A provider.
#[async_trait::async_trait]
pub trait LanguageModel: Send + Sync + 'static {
    /// Provider name for logs (`anthropic`, `scripted`, ...).
    fn name(&self) -> &str;

    /// Start one generation. Errors before the first part (connection refused, 4xx) come
    /// back here; errors mid-stream come as stream items.
    async fn stream(&self, request: GenerationRequest) -> Result<PartStream, GenerationError>;
}
