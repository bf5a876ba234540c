//! Wire types: messages, tool calls, checkpoints, steps, events, jobs and run settings.
//!
//! Field names, `type` tags and omission rules are Perstack's (taken from its zod schemas, not
//! its docs): camelCase, optional fields omitted rather than `null`. Every struct that Perstack
//! might extend keeps unknown fields in `extra`, so a checkpoint or event written by Perstack
//! survives a round trip through this engine unchanged. This module does no I/O.

mod checkpoint;
mod event;
mod expert;
pub(crate) mod id;
mod job;
mod jsnum;
mod message;
mod run_setting;
mod step;
mod tool;
mod usage;

#[cfg(test)]
mod proptests;

pub use checkpoint::{Checkpoint, CheckpointStatus, DelegateTo, DelegatedBy, ExpertRef, RunError};
pub use event::*;
pub use expert::{Expert, InteractiveSkill, InteractiveTool, McpSseSkill, McpStdioSkill, Skill};
pub use job::{Job, JobStatus};
pub use message::{
    BinaryPart, InlinePart, Message, MessageBody, MessagePart, TextPart, ThinkingPart,
    ToolCallPart, ToolResultPart, UrlPart,
};
pub use run_setting::{
    InteractiveToolCallResult, ProviderConfig, ReasoningBudget, ReasoningLevel, RunInput,
    RunSetting,
};
pub use step::Step;
pub use tool::{BASE_SKILL, ToolCall, ToolResult};
pub use usage::Usage;
